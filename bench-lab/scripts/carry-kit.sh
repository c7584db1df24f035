#!/bin/bash
# Assembles .devkit/: what bench-lab needs on a machine with no package manager and no network
# (the borrowed 16-core machine of BENCHMARKS.md): the stripped release bench-lab, and this
# machine's ip, ethtool, iptables (nft backend), nft and perf with the shared libraries they
# load. Run from the workspace root after `cargo build --release -p bench-lab`; then run
# bench-lab/scripts/device-run.sh there with .devkit carried along.
set -euo pipefail
kit=.devkit
rm -rf "$kit"
mkdir -p "$kit"/bin "$kit"/lib "$kit"/perflib
strip -o "$kit"/bin/bench-lab target/release/bench-lab
cp "$(command -v ip)" "$(command -v ethtool)" "$(command -v nft)" "$kit"/bin/
for name in iptables iptables-restore ip6tables ip6tables-restore; do
    cp "$(readlink -f "$(command -v iptables)")" "$kit/bin/$name"
done
cp "$(command -v perf)" "$kit"/bin/
libs_of() { ldd "$1" | awk '$3 ~ /^\// {print $3}'; }
# The tools' libraries, without the C library itself (the target has its own).
for bin in "$kit"/bin/ip "$kit"/bin/ethtool "$kit"/bin/nft "$kit"/bin/iptables; do
    for lib in $(libs_of "$bin"); do
        case "$(basename "$lib")" in libc.so.*|libm.so.*) ;; *) cp -L "$lib" "$kit"/lib/ ;; esac
    done
done
# perf's (libpython, libstdc++, ...) stay apart: only perf is run with them.
for lib in $(libs_of "$kit"/bin/perf); do
    base=$(basename "$lib")
    case "$base" in libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*) ;;
        *) [ -e "$kit/lib/$base" ] || cp -L "$lib" "$kit"/perflib/ ;; esac
done
cp -r /usr/lib/x86_64-linux-gnu/xtables "$kit"/xtables
du -sh "$kit"
