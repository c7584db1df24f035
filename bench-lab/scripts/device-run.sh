#!/bin/bash
# The run on the borrowed 16-core machine (BENCHMARKS.md): scaling, the side-by-side run
# without OVS, and a profile of the AF_XDP path's node core, from the kit carry-kit.sh makes.
# Every step is bounded; results are copied to $OUT (the device tool's output folder).
cd "$(dirname "$0")/../.."
K=$PWD/.devkit
export PATH=$K/bin:$PATH LD_LIBRARY_PATH=$K/lib XTABLES_LIBDIR=$K/xtables
echo $$ > /sys/fs/cgroup/cgroup.procs
B=$K/bin/bench-lab
W=/tmp/dev; mkdir -p $W
{ uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; date -u; } > $OUT/machine.txt
echo "=== scale"; date -u
timeout ${SCALE_S:-220} $B scale --systems kernel-forward,xdp-redirect-bare,sluice-kernel,sluice-afxdp \
  --workers 1,2,4 --placement shared,split --runs 2 --secs 2 --warmup 0.5 --remote-pods 10000 \
  --out $W/scale > $W/scale.jsonl 2> $W/scale.err; echo "scale rc=$?"
cp $W/scale/scale.json $W/scale/scale.md $W/scale/scale.svg $OUT/ 2>/dev/null; grep -v "^{" $W/scale.err | tail -25
echo "=== run"; date -u
timeout ${RUN_S:-230} $B run --systems kernel-forward,iptables,nftables,xdp-redirect-bare,sluice-kernel,sluice-afxdp \
  --umem shared --rules 10,10000 --runs 1 --secs 2 --warmup 0.5 --search-steps 0 --latency-loads 0.5 \
  --node-cpu 2 --gen-cpu 3 --remote-pods 100000 --out $W/run > $W/run.out 2>&1; echo "run rc=$?"
cp $W/run/report.json $OUT/run.json 2>/dev/null; cp $W/run/report.md $OUT/run.md 2>/dev/null
grep -v "^{" $W/run.out | tail -30
echo "=== profile"; date -u
( timeout 60 $B quick --systems sluice-afxdp --umem shared --remote-pods 1000 --node-cpu 2 --gen-cpu 3 > $W/prof.out 2>&1 & )
for i in $(seq 1 60); do grep -qs sluice-worker /proc/[0-9]*/task/*/comm && break; sleep 0.5; done
sleep 2
LD_LIBRARY_PATH=$K/lib:$K/perflib timeout 20 $K/bin/perf record -e cpu-clock -F 2000 -C 2 -o $W/perf.data -- sleep 4 > $W/perf.rec 2>&1
LD_LIBRARY_PATH=$K/lib:$K/perflib timeout 60 $K/bin/perf report -i $W/perf.data --sort comm,sym --stdio -g none 2>/dev/null | grep "%" | head -150 > $W/perf.txt
LD_LIBRARY_PATH=$K/lib:$K/perflib timeout 60 $K/bin/perf report -i $W/perf.data --sort comm --stdio -g none 2>/dev/null | grep "%" | head -20 >> $W/perf.txt
cat $W/perf.rec; sleep 2; cat $W/prof.out | grep -v "^{" | tail -5 >> $W/perf.txt
cp $W/perf.txt $OUT/ ; head -60 $W/perf.txt
date -u
