//! Speed of the in-kernel path against a bare devmap `XDP_REDIRECT`, side by side in one run.
//!
//! The method of DESIGN.md ("Facts about this platform"): three network namespaces of our own,
//! `gen` ─veth─ `node` ─veth─ `sink`; the node forwards gen → sink with the XDP program under
//! test on its gen-facing veth. Every veth has GRO on and threaded NAPI; the node's NAPI
//! kthreads are pinned to CPU 0 (the node's core), the generator thread and the other NAPI
//! kthreads to CPU 1.
//!
//! - Generator: `gen_tx` (`bench-bpf/bench.c`, compiled here at run time with clang-14) driven
//!   by `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` from a thread inside gen's
//!   namespace: one long call per run (repeat = `u32::MAX`) of a 64-byte UDP frame addressed to
//!   the node's veth, stopped by `SIGUSR1` (a no-op handler, so the call returns `EINTR`).
//! - Sink: `sink_count` on the sink's veth counts frames in a per-CPU array and drops them;
//!   it also counts the benchmark frames that still carry TTL 64 (not routed by a stack).
//! - Systems: `bare_redirect` (`BARE_REDIRECT_OBJECT`, one devmap entry gen-veth → sink-veth)
//!   and `sluice_steer` (`Dataplane::open/sync/attach`) with an identity-cache state of the two
//!   endpoints plus 100,000 remote pods (ipcache entries), and policies giving ≥ 10,000 policy
//!   map entries, one of them allowing gen → sink UDP on the benchmark port (sink ingress).
//!   Both are attached to both of the node's veths, in native mode.
//! - Runs alternate bare, sluice, bare, … (3 each by default). Each run: attach, 1 s warm-up
//!   inside the generator's one long call, then a measured period (5 s): packets counted at
//!   the sink, CPU time (utime + stime, `/proc/PID/stat`) of the node's NAPI kthreads. The node
//!   stack cannot forward (no addresses, `ip_forward=0`), the sink checks the TTL, and for
//!   sluice `CNT_KERNEL_REDIRECT` must account for the sink's count.
//! - Diagnostics after the runs: each program's own cost through a plain (not live)
//!   `BPF_PROG_TEST_RUN` of the same frame in the node's namespace, and the same with sluice's
//!   maps cut to the two endpoints and their one policy entry.
//!
//! Prints a Markdown table (stdout) and one JSON line (last line of stdout); progress on stderr.
//!
//! `cargo run --release -p xdp-redirect --example kernel_bench [-- --runs 3 --secs 5
//! --remote-pods 100000 --fallback --gen-nice 0 --node-nice -20 --sink-nice -20 --hold]`
//! (root). `--fallback`: gen's endpoint is not in kernel mode, so the program also probes the
//! (empty) XSKMAP first, as when a worker is gone. The nice values shield the measurement from
//! other load on a shared machine: the sink's NAPI kthread must win its core over the
//! generator (a sink that drops makes the node look slower than it is), and the node's NAPI
//! kthreads get the node's core. `--hold`: set everything up, print where, wait for Ctrl-C
//! (to test-run program variants against the same maps).
//!
//! Namespaces, pins and links are removed on every exit path: guards on return and panic,
//! SIGINT/SIGTERM turn into an orderly stop.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Map, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use identity_cache::identity::ClusterKey;
use identity_cache::ipcache::Source;
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{ParsedManifest, parse_manifest};
use identity_cache::state::{IdentityCache, LocalAttachment, Snapshot, Workload};
use identity_cache::tables::EnforcementConfig;
use xdp_redirect::abi::{CNT_KERNEL_REDIRECT, CNT_REDIRECT_FAILED};
use xdp_redirect::ipcache_map::InterfaceFacts;
use xdp_redirect::loader::{AttachMode, Counters, DatapathSettings, Dataplane};
use xdp_redirect::test_run::{BPF_F_TEST_XDP_LIVE_FRAMES, xdp_test_run};

/// UDP destination port of the benchmark frames (what the sink's policy allows).
const BENCH_PORT: u16 = 9;
/// Remote identities (label groups) the remote pods are spread over.
const REMOTE_GROUPS: usize = 1000;
/// Peers each group's policy admits (policy entries = groups × peers × 2 ports).
const PEERS_PER_GROUP: usize = 5;
/// Node core and the generator/sink core.
const NODE_CPU: usize = 0;
const GEN_CPU: usize = 1;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr1(_: c_int) {}

type Result<T> = std::result::Result<T, String>;

fn interrupted() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn install_handlers() {
    for (sig, handler) in [
        (libc::SIGINT, on_stop as extern "C" fn(c_int)),
        (libc::SIGTERM, on_stop),
        (libc::SIGUSR1, on_usr1),
    ] {
        // SAFETY: a zeroed sigaction is valid; the handlers only touch an atomic (async-signal
        // safe); no SA_RESTART, so a blocking BPF_PROG_TEST_RUN returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

// ---- processes, namespaces, guards --------------------------------------------------------

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace of ours, deleted on drop (its veths go with it).
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Result<Self> {
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn ifindex(&self, dev: &str) -> Result<u32> {
        let out = self.ip(&["-o", "link", "show", "dev", dev])?;
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("ifindex of {dev}: {out}"))
    }

    fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", dev])?;
        let text = out
            .split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .ok_or_else(|| format!("MAC of {dev}: {out}"))?;
        let mut mac = [0u8; 6];
        for (i, part) in text.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).map_err(|e| format!("MAC {text}: {e}"))?;
        }
        Ok(mac)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Removes a pin directory tree on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Enters `ns` on the calling thread (network namespace only).
fn enter_netns(path: &str) -> Result<()> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a namespace descriptor we hold; it changes only this thread's network
    // namespace, and only threads spawned for that purpose call it.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a scoped thread inside the namespace at `path` (borrows allowed).
fn in_ns<T: Send>(path: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(path)?;
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn pin_to_cpu(pid: libc::pid_t, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity({pid}, cpu {cpu}): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_nice(tid: libc::pid_t, nice: i32) -> Result<()> {
    // SAFETY: setpriority has no memory preconditions; a tid names one thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(format!(
            "setpriority({tid}, {nice}): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

// ---- raw bpf(2) ---------------------------------------------------------------------------

/// One BPF_PROG_TEST_RUN of an XDP program on `frame` arriving at `ifindex` (resolved in the
/// calling thread's namespace). Returns (retval, duration ns per repeat).
fn prog_test_run(
    prog_fd: RawFd,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    flags: u32,
) -> io::Result<(u32, u32)> {
    // SAFETY: callers pass the fd of a program they hold open for the whole call.
    let program = unsafe { std::os::fd::BorrowedFd::borrow_raw(prog_fd) };
    xdp_test_run(program, frame, ifindex, repeat, flags).map(|o| (o.retval, o.duration_ns))
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Updates a map with a u32 → u32 element (bare_devmap's value is a plain ifindex, which
/// aya's DevMapHash does not accept on kernels with devmap programs).
fn map_update_u32(map_fd: RawFd, key: u32, value: u32) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map_fd as u32,
        pad: 0,
        key: (&raw const key) as u64,
        value: (&raw const value) as u64,
        flags: 0,
    };
    // SAFETY: key and value outlive the call and have the map's key and value sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &raw const attr,
            size_of::<MapElemAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---- the frame ----------------------------------------------------------------------------

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 64-byte Ethernet/IPv4/UDP frame (no FCS), TTL 64, UDP checksum 0 (none).
fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (64 - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    let sum = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&BENCH_PORT.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

// ---- the generator ------------------------------------------------------------------------

/// The live-frames generator: one long BPF_PROG_TEST_RUN on a thread in gen's namespace,
/// pinned to the generator core; stopped (and joined) by `stop` or on drop.
struct Generator {
    handle: Option<JoinHandle<Result<()>>>,
    stop: Arc<AtomicBool>,
}

impl Generator {
    fn start(
        prog_fd: RawFd,
        ns_path: String,
        ifindex: u32,
        frame: Vec<u8>,
        nice: i32,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || -> Result<()> {
            let setup = enter_netns(&ns_path)
                .and_then(|()| pin_to_cpu(0, GEN_CPU))
                // SAFETY: gettid has no preconditions.
                .and_then(|()| set_nice(unsafe { libc::gettid() }, nice));
            let failed = setup.is_err();
            let _ = tx.send(setup);
            if failed {
                return Ok(());
            }
            while !thread_stop.load(Ordering::SeqCst) {
                match prog_test_run(
                    prog_fd,
                    &frame,
                    ifindex,
                    u32::MAX,
                    BPF_F_TEST_XDP_LIVE_FRAMES,
                ) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err(format!("BPF_PROG_TEST_RUN (live frames): {e}")),
                }
            }
            Ok(())
        });
        let generator = Generator {
            handle: Some(handle),
            stop,
        };
        rx.recv()
            .map_err(|_| "generator thread died".to_owned())??;
        Ok(generator)
    }

    fn stop(&mut self) -> Result<()> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::SeqCst);
        // A signal that lands just before the call starts is lost: repeat until it ends.
        while !handle.is_finished() {
            // SAFETY: the thread is alive (not finished, not joined), so its pthread_t is
            // valid; SIGUSR1 has a no-op handler.
            unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(5));
        }
        handle
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// ---- measurements -------------------------------------------------------------------------

/// The NAPI kthreads of a device: `napi/DEV-ID` (comm is cut at 15 bytes; names are short).
fn napi_threads(dev: &str) -> Vec<libc::pid_t> {
    let prefix = format!("napi/{dev}-");
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            && comm.trim_end().starts_with(&prefix)
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// utime + stime of a task in ns (`/proc/PID/stat`), and its on-CPU ns (`schedstat`).
fn task_cpu_ns(pid: libc::pid_t) -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of the line; `fields` starts at field 3.
    let stat_ns = (ticks(11) + ticks(12)) * 1_000_000_000 / hz;
    let sched_ns = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    (stat_ns, sched_ns)
}

/// (busy, total) jiffies of one CPU from /proc/stat.
fn cpu_jiffies(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let tag = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&tag)) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A veth's `ethtool -S` counters.
fn veth_stats(ns: &Netns, dev: &str) -> Result<BTreeMap<String, u64>> {
    let out = ns.exec(&["ethtool", "-S", dev])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

/// The veth counters a run looks at: (gen's veth, node's gen-facing veth, node's sink-facing
/// veth).
type VethStats = [BTreeMap<String, u64>; 3];

fn all_veth_stats(t: &Topology) -> Result<VethStats> {
    Ok([
        veth_stats(&t.gen_ns, &t.gen_dev)?,
        veth_stats(&t.node, &t.node_gen_dev)?,
        veth_stats(&t.node, &t.node_sink_dev)?,
    ])
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn per_cpu_sum(ebpf: &Ebpf, map: &str, slot: u32) -> Result<u64> {
    let m = ebpf.map(map).ok_or_else(|| format!("map {map} missing"))?;
    let arr: PerCpuArray<&aya::maps::MapData, u64> =
        PerCpuArray::try_from(m).map_err(|e| format!("{map}: {e}"))?;
    let v = arr.get(&slot, 0).map_err(|e| format!("{map}: {e}"))?;
    Ok(v.iter().sum())
}

/// Everything sampled at the start and end of a measured period.
struct Sample {
    at: Instant,
    sink_all: u64,
    sink_fwd: u64,
    offered: u64,
    node_stat_ns: u64,
    node_sched_ns: u64,
    cpu: [(u64, u64); 2],
    sluice: Option<Counters>,
    veth: VethStats,
}

#[derive(Clone, Debug)]
struct RunResult {
    system: &'static str,
    secs: f64,
    sink_pps: f64,
    offered_pps: f64,
    ns_per_pkt: f64,
    sched_ns_per_pkt: f64,
    node_busy: f64,
    cpu_busy: [f64; 2],
    ttl_ok_share: f64,
    redirect_share: Option<f64>,
    load: String,
    /// Per second: accepted into the node's RX ring, seen by the node's program, redirected
    /// by it, enqueued to the sink, refused by the sink's full ring.
    node_in_pps: f64,
    node_xdp_pps: f64,
    node_redirect_pps: f64,
    to_sink_pps: f64,
    to_sink_err_pps: f64,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

// ---- the systems under test ---------------------------------------------------------------

struct Topology {
    gen_ns: Netns,
    node: Netns,
    sink_ns: Netns,
    /// gen's veth (in gen), node's gen-facing veth, node's sink-facing veth, sink's veth.
    gen_dev: String,
    node_gen_dev: String,
    node_sink_dev: String,
    sink_dev: String,
    gen_if: u32,
    node_gen_if: u32,
    node_sink_if: u32,
    sink_if: u32,
    gen_mac: [u8; 6],
    node_gen_mac: [u8; 6],
    node_sink_mac: [u8; 6],
    sink_mac: [u8; 6],
}

impl Topology {
    fn build() -> Result<Self> {
        let id = std::process::id() % 100_000;
        let gen_ns = Netns::new(format!("skbgen{id}"))?;
        let node = Netns::new(format!("skbnode{id}"))?;
        let sink_ns = Netns::new(format!("skbsink{id}"))?;
        // Short names: the NAPI kthread is `napi/DEV-ID`, cut at 15 bytes.
        let (gen_dev, node_gen_dev) = (format!("bG{id}"), format!("bg{id}"));
        let (sink_dev, node_sink_dev) = (format!("bS{id}"), format!("bs{id}"));
        node.ip(&[
            "link",
            "add",
            &node_gen_dev,
            "type",
            "veth",
            "peer",
            "name",
            &gen_dev,
            "netns",
            &gen_ns.name,
        ])?;
        node.ip(&[
            "link",
            "add",
            &node_sink_dev,
            "type",
            "veth",
            "peer",
            "name",
            &sink_dev,
            "netns",
            &sink_ns.name,
        ])?;
        // The node must not be able to forward by itself: no addresses, no forwarding.
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
        for (ns, dev) in [
            (&gen_ns, &gen_dev),
            (&node, &node_gen_dev),
            (&node, &node_sink_dev),
            (&sink_ns, &sink_dev),
        ] {
            ns.ip(&["link", "set", dev, "up"])?;
            // GRO keeps each veth's NAPI (and so its kthread) alive across XDP detach/attach,
            // and lets the veth accept frames redirected into it.
            ns.exec(&["ethtool", "-K", dev, "gro", "on"])?;
            ns.exec(&[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{dev}/threaded"),
            ])?;
        }
        let t = Topology {
            gen_if: gen_ns.ifindex(&gen_dev)?,
            node_gen_if: node.ifindex(&node_gen_dev)?,
            node_sink_if: node.ifindex(&node_sink_dev)?,
            sink_if: sink_ns.ifindex(&sink_dev)?,
            gen_mac: gen_ns.mac(&gen_dev)?,
            node_gen_mac: node.mac(&node_gen_dev)?,
            node_sink_mac: node.mac(&node_sink_dev)?,
            sink_mac: sink_ns.mac(&sink_dev)?,
            gen_ns,
            node,
            sink_ns,
            gen_dev,
            node_gen_dev,
            node_sink_dev,
            sink_dev,
        };
        Ok(t)
    }

    /// Pins the NAPI kthreads (node's to the node core, the others to the generator core)
    /// and sets their nice values; returns the node's.
    fn pin_napi(&self, opt: &Options) -> Result<Vec<libc::pid_t>> {
        let mut node = Vec::new();
        for dev in [&self.node_gen_dev, &self.node_sink_dev] {
            let pids = napi_threads(dev);
            if pids.is_empty() {
                return Err(format!("no threaded NAPI kthread for {dev}"));
            }
            for pid in &pids {
                pin_to_cpu(*pid, NODE_CPU)?;
                set_nice(*pid, opt.node_nice)?;
            }
            node.extend(pids);
        }
        for dev in [&self.gen_dev, &self.sink_dev] {
            for pid in napi_threads(dev) {
                pin_to_cpu(pid, GEN_CPU)?;
                set_nice(pid, opt.sink_nice)?;
            }
        }
        Ok(node)
    }
}

struct Facts {
    macs: BTreeMap<u32, [u8; 6]>,
    kernel_mode: bool,
}

impl InterfaceFacts for Facts {
    fn host_mac(&self, ifindex: u32) -> [u8; 6] {
        self.macs.get(&ifindex).copied().unwrap_or_default()
    }
    fn kernel_mode(&self, _ifindex: u32) -> bool {
        self.kernel_mode
    }
}

/// The endpoints' addresses sit in the same dense block as the remote pods' (10.128.0.0/15),
/// as pod addresses on one cluster do, so their ipcache lookups walk as deep a trie path.
const GEN_IP: [u8; 4] = [10, 128, 0, 1];
const SINK_IP: [u8; 4] = [10, 128, 0, 2];
/// The first remote pod's address (as a number); the others follow it.
const REMOTE_BASE: u32 = u32::from_be_bytes([10, 128, 0, 16]);

fn workload(
    uid: String,
    app: &str,
    ip: [u8; 4],
    source: Source,
    local: Option<LocalAttachment>,
) -> Workload {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    Workload {
        uid: uid.clone(),
        namespace: "bench".into(),
        name: uid,
        labels: workload_labels(
            &WorkloadMeta {
                namespace: "bench",
                pod_labels: Some(&labels),
                ..WorkloadMeta::default()
            },
            &LabelFilter::default(),
        ),
        ips: vec![std::net::Ipv4Addr::from(ip).into()],
        named_ports: Vec::new(),
        source,
        local,
    }
}

fn policy(yaml: &str) -> Result<identity_cache::policy::Policy> {
    match parse_manifest(yaml).map_err(|e| format!("policy: {e}\n{yaml}"))? {
        ParsedManifest::Policy(p) => Ok(p),
        ParsedManifest::Empty => Err(format!("empty policy:\n{yaml}")),
    }
}

/// The node's state: gen and sink as local endpoints, `remote_pods` remote pods over
/// REMOTE_GROUPS identities, one policy per group (ingress from the next PEERS_PER_GROUP
/// groups on TCP 8080 and UDP 53) and the sink's (ingress from gen on UDP BENCH_PORT).
fn build_state(t: &Topology, remote_pods: usize, with_bulk: bool) -> Result<Snapshot> {
    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    cache
        .upsert_workload(workload(
            "gen".into(),
            "gen",
            GEN_IP,
            Source::Local,
            Some(LocalAttachment {
                ifindex: t.node_gen_if,
                mac: t.gen_mac,
            }),
        ))
        .map_err(|e| format!("gen: {e}"))?;
    cache
        .upsert_workload(workload(
            "sink".into(),
            "sink",
            SINK_IP,
            Source::Local,
            Some(LocalAttachment {
                ifindex: t.node_sink_if,
                mac: t.sink_mac,
            }),
        ))
        .map_err(|e| format!("sink: {e}"))?;
    cache.upsert_policy(policy(&format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: sink-from-gen, namespace: bench}}
spec:
  endpointSelector: {{matchLabels: {{app: sink}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: gen}}}}]
    toPorts: [{{ports: [{{port: \"{BENCH_PORT}\", protocol: UDP}}]}}]
"
    ))?);
    if !with_bulk {
        return Ok(cache.pending());
    }
    for g in 0..REMOTE_GROUPS {
        let peers: Vec<String> = (1..=PEERS_PER_GROUP)
            .map(|k| format!("r{}", (g + k) % REMOTE_GROUPS))
            .collect();
        cache.upsert_policy(policy(&format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: group-{g}, namespace: bench}}
spec:
  endpointSelector: {{matchLabels: {{app: r{g}}}}}
  ingress:
  - fromEndpoints: [{{matchExpressions: [{{key: app, operator: In, values: [{}]}}]}}]
    toPorts: [{{ports: [{{port: \"8080\", protocol: TCP}}, {{port: \"53\", protocol: UDP}}]}}]
",
            peers.join(", ")
        ))?);
    }
    for i in 0..remote_pods {
        interrupted()?;
        let ip = (REMOTE_BASE + i as u32).to_be_bytes();
        cache
            .upsert_workload(workload(
                format!("remote-{i}"),
                &format!("r{}", i % REMOTE_GROUPS),
                ip,
                Source::ApiServer,
                None,
            ))
            .map_err(|e| format!("remote pod {i}: {e}"))?;
    }
    Ok(cache.pending())
}

/// What is attached to the node's veths.
enum Attached {
    Nothing,
    Bare(aya::programs::xdp::XdpLinkId, aya::programs::xdp::XdpLinkId),
    Sluice,
}

struct Systems {
    bare: Ebpf,
    plane: Option<Dataplane>,
    attached: Attached,
}

impl Systems {
    fn bare_prog(&mut self) -> Result<&mut Xdp> {
        self.bare
            .program_mut("bare_redirect")
            .ok_or("bare_redirect missing")?
            .try_into()
            .map_err(|e| format!("bare_redirect: {e}"))
    }

    fn detach(&mut self, t: &Topology) -> Result<()> {
        match std::mem::replace(&mut self.attached, Attached::Nothing) {
            Attached::Nothing => {}
            Attached::Bare(a, b) => {
                let prog = self.bare_prog()?;
                prog.detach(a).map_err(|e| format!("detach bare: {e}"))?;
                prog.detach(b).map_err(|e| format!("detach bare: {e}"))?;
            }
            Attached::Sluice => {
                let plane = self.plane.as_mut().ok_or("no dataplane")?;
                for ifindex in [t.node_gen_if, t.node_sink_if] {
                    plane
                        .detach(ifindex)
                        .map_err(|e| format!("detach sluice: {e}"))?;
                }
            }
        }
        Ok(())
    }

    fn attach(&mut self, system: &str, t: &Topology) -> Result<()> {
        self.detach(t)?;
        let (gi, si) = (t.node_gen_if, t.node_sink_if);
        match system {
            "bare" => {
                let prog = self.bare_prog()?;
                let (a, b) = in_ns(&t.node.path(), || {
                    let a = prog
                        .attach_to_if_index(gi, XdpMode::Driver)
                        .map_err(|e| format!("attach bare: {e}"))?;
                    let b = prog
                        .attach_to_if_index(si, XdpMode::Driver)
                        .map_err(|e| format!("attach bare: {e}"))?;
                    Ok((a, b))
                })?;
                self.attached = Attached::Bare(a, b);
            }
            _ => {
                let plane = self.plane.as_mut().ok_or("no dataplane")?;
                in_ns(&t.node.path(), || {
                    for ifindex in [gi, si] {
                        let mode = plane
                            .attach(ifindex)
                            .map_err(|e| format!("attach sluice: {e}"))?;
                        if mode != AttachMode::Driver {
                            return Err(format!("sluice attached in {mode} mode"));
                        }
                    }
                    Ok(())
                })?;
                self.attached = Attached::Sluice;
            }
        }
        Ok(())
    }
}

fn sample(
    bench: &Ebpf,
    t: &Topology,
    node_pids: &[libc::pid_t],
    plane: Option<&Dataplane>,
) -> Result<Sample> {
    let (mut stat_ns, mut sched_ns) = (0, 0);
    for pid in node_pids {
        let (a, b) = task_cpu_ns(*pid);
        stat_ns += a;
        sched_ns += b;
    }
    Ok(Sample {
        at: Instant::now(),
        sink_all: per_cpu_sum(bench, "sink_count_map", 0)?,
        sink_fwd: per_cpu_sum(bench, "sink_count_map", 1)?,
        offered: per_cpu_sum(bench, "gen_count", 0)?,
        node_stat_ns: stat_ns,
        node_sched_ns: sched_ns,
        cpu: [cpu_jiffies(0), cpu_jiffies(1)],
        sluice: match plane {
            Some(p) => Some(p.counters().map_err(|e| format!("counters: {e}"))?),
            None => None,
        },
        veth: all_veth_stats(t)?,
    })
}

fn sleep_checked(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        interrupted()?;
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    Ok(())
}

/// Knobs of a run.
struct Options {
    secs: f64,
    /// Nice value of the generator thread: it shares its core with the sink's NAPI kthread,
    /// which must win (a sink that drops would make the node look slower than it is).
    gen_nice: i32,
    /// Nice value of the node's NAPI kthreads (0: as the kernel makes them). -20 by default:
    /// this 2-core VM is shared, and the method wants the node's core for the node's work.
    node_nice: i32,
    /// Nice value of the sink's (and gen's) NAPI kthreads, on the generator's core: -20, so
    /// that other load there never makes the sink the bottleneck.
    sink_nice: i32,
}

fn measure(
    system: &'static str,
    sys: &mut Systems,
    bench: &Ebpf,
    t: &Topology,
    frame: &[u8],
    opt: &Options,
) -> Result<RunResult> {
    let secs = opt.secs;
    sys.attach(system, t)?;
    let node_pids = t.pin_napi(opt)?;
    let gen_fd = {
        let p: &Xdp = bench
            .program("gen_tx")
            .ok_or("gen_tx missing")?
            .try_into()
            .map_err(|e| format!("gen_tx: {e}"))?;
        p.fd()
            .map_err(|e| format!("gen_tx fd: {e}"))?
            .as_fd()
            .as_raw_fd()
    };
    let load = loadavg();
    let mut generator = Generator::start(
        gen_fd,
        t.gen_ns.path(),
        t.gen_if,
        frame.to_vec(),
        opt.gen_nice,
    )?;
    sleep_checked(Duration::from_secs(1))?;
    let plane = if system == "sluice" {
        sys.plane.as_ref()
    } else {
        None
    };
    let a = sample(bench, t, &node_pids, plane)?;
    sleep_checked(Duration::from_secs_f64(secs))?;
    let b = sample(bench, t, &node_pids, plane)?;
    generator.stop()?;
    sys.detach(t)?;

    let dt = (b.at - a.at).as_secs_f64();
    let fwd = b.sink_all - a.sink_all;
    if fwd == 0 {
        return Err(format!("{system}: nothing reached the sink"));
    }
    let busy = |i: usize| {
        let (b1, t1) = b.cpu[i];
        let (b0, t0) = a.cpu[i];
        if t1 > t0 {
            (b1 - b0) as f64 / (t1 - t0) as f64
        } else {
            f64::NAN
        }
    };
    let redirect_share = match (&a.sluice, &b.sluice) {
        (Some(ca), Some(cb)) => {
            let red = cb.packets(CNT_KERNEL_REDIRECT) - ca.packets(CNT_KERNEL_REDIRECT);
            let failed = cb.packets(CNT_REDIRECT_FAILED) - ca.packets(CNT_REDIRECT_FAILED);
            let seen = cb.total() - ca.total();
            eprintln!(
                "  sluice counters over the period: seen {seen}, CNT_KERNEL_REDIRECT {red}, CNT_REDIRECT_FAILED {failed}, sink {fwd}"
            );
            Some(red as f64 / fwd as f64)
        }
        _ => None,
    };
    let d = |i: usize, k: &str| {
        (b.veth[i].get(k).copied().unwrap_or(0) as f64
            - a.veth[i].get(k).copied().unwrap_or(0) as f64)
            / dt
    };
    Ok(RunResult {
        node_in_pps: d(0, "tx_queue_0_xdp_xmit"),
        node_xdp_pps: d(1, "rx_queue_0_xdp_packets"),
        node_redirect_pps: d(1, "rx_queue_0_xdp_redirect"),
        to_sink_pps: d(2, "tx_queue_0_xdp_xmit"),
        to_sink_err_pps: d(2, "tx_queue_0_xdp_xmit_errors"),
        system,
        secs: dt,
        sink_pps: fwd as f64 / dt,
        offered_pps: (b.offered - a.offered) as f64 / dt,
        ns_per_pkt: (b.node_stat_ns - a.node_stat_ns) as f64 / fwd as f64,
        sched_ns_per_pkt: (b.node_sched_ns - a.node_sched_ns) as f64 / fwd as f64,
        node_busy: (b.node_sched_ns - a.node_sched_ns) as f64 / 1e9 / dt,
        cpu_busy: [busy(0), busy(1)],
        ttl_ok_share: (b.sink_fwd - a.sink_fwd) as f64 / fwd as f64,
        redirect_share,
        load,
    })
}

/// Each program's own cost: plain BPF_PROG_TEST_RUN (no live frames: the redirect is decided
/// but not carried out) of `frame` as if it arrived on the node's gen-facing veth. Median of
/// 5 rounds of `repeat` runs, ns per run.
fn prog_only_ns(prog_fd: RawFd, t: &Topology, frame: &[u8]) -> Result<(f64, u32)> {
    let ifindex = t.node_gen_if;
    in_ns(&t.node.path(), || {
        pin_to_cpu(0, GEN_CPU)?;
        let mut v = Vec::new();
        let mut ret = 0;
        for _ in 0..5 {
            let (r, d) = prog_test_run(prog_fd, frame, ifindex, 2_000_000, 0)
                .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
            ret = r;
            v.push(f64::from(d));
        }
        Ok((median(&v), ret))
    })
}

fn compile_helpers(dir: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-bpf/bench.c");
    let obj = dir.join("bench.o");
    run(&[
        "clang-14",
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-Wall",
        "-Werror",
        "-I/usr/include/x86_64-linux-gnu",
        &format!("-DBENCH_PORT={BENCH_PORT}"),
        "-c",
        src.to_str().ok_or("non-UTF-8 path")?,
        "-o",
        obj.to_str().ok_or("non-UTF-8 path")?,
    ])?;
    Ok(obj)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{name} takes a number")),
    }
}

fn main() {
    install_handlers();
    if let Err(e) = real_main() {
        eprintln!("kernel_bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = arg(&args, "--runs", 3)?;
    let secs: f64 = arg(&args, "--secs", 5.0)?;
    let remote_pods: usize = arg(&args, "--remote-pods", 100_000)?;
    if remote_pods > 131_000 {
        return Err("--remote-pods: at most 131000 (they live in 10.128.0.0/15)".into());
    }
    let fallback = args.iter().any(|a| a == "--fallback");
    let opt = Options {
        secs,
        gen_nice: arg(&args, "--gen-nice", 0)?,
        node_nice: arg(&args, "--node-nice", -20)?,
        sink_nice: arg(&args, "--sink-nice", -20)?,
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (namespaces, BPF, sysfs)".into());
    }
    if !std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        run(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"])?;
    }
    // The main thread waits on the generator core, off the node's core.
    pin_to_cpu(0, GEN_CPU)?;

    let id = std::process::id();
    let work = std::env::temp_dir().join(format!("sluice-kernel-bench-{id}"));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let _work_guard = RemoveDir(work.clone());
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/sluice-kernel-bench-{id}"));
    let _pin_guard = RemoveDir(pin_dir.clone());

    let load_start = loadavg();
    eprintln!("load average at start: {load_start}");
    let t = Topology::build()?;
    interrupted()?;

    // Helpers: generator and sink.
    let obj = compile_helpers(&work)?;
    let mut bench = EbpfLoader::new()
        .load_file(&obj)
        .map_err(|e| format!("loading {}: {e}", obj.display()))?;
    for name in ["gen_tx", "sink_count"] {
        let p: &mut Xdp = bench
            .program_mut(name)
            .ok_or(format!("{name} missing"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        p.load().map_err(|e| format!("load {name}: {e}"))?;
    }
    {
        let sink_if = t.sink_if;
        let p: &mut Xdp = bench
            .program_mut("sink_count")
            .ok_or("sink_count missing")?
            .try_into()
            .map_err(|e| format!("sink_count: {e}"))?;
        in_ns(&t.sink_ns.path(), || {
            p.attach_to_if_index(sink_if, XdpMode::Driver)
                .map_err(|e| format!("attach sink_count: {e}"))
        })?;
    }

    // Baseline: bare devmap redirect, gen-facing veth -> sink-facing veth.
    let mut bare = Ebpf::load(xdp_redirect::BARE_REDIRECT_OBJECT)
        .map_err(|e| format!("loading bare_redirect: {e}"))?;
    {
        let p: &mut Xdp = bare
            .program_mut("bare_redirect")
            .ok_or("bare_redirect missing")?
            .try_into()
            .map_err(|e| format!("bare_redirect: {e}"))?;
        p.load().map_err(|e| format!("load bare_redirect: {e}"))?;
        let fd = match bare.map("bare_devmap") {
            Some(Map::DevMapHash(d)) => d.fd().as_fd().as_raw_fd(),
            _ => return Err("bare_devmap missing or not a DEVMAP_HASH".into()),
        };
        let (gi, si) = (t.node_gen_if, t.node_sink_if);
        // A devmap resolves ifindex values in the updater's namespace: update from the node.
        in_ns(&t.node.path(), || {
            map_update_u32(fd, gi, si).map_err(|e| format!("bare_devmap update: {e}"))
        })?;
    }

    // sluice: the state, synced from the node's namespace.
    let started = Instant::now();
    let snapshot = build_state(&t, remote_pods, true)?;
    eprintln!(
        "identity-cache state built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let facts = Facts {
        macs: BTreeMap::from([
            (t.node_gen_if, t.node_gen_mac),
            (t.node_sink_if, t.node_sink_mac),
        ]),
        kernel_mode: !fallback,
    };
    let settings = DatapathSettings::default();
    let started = Instant::now();
    let (plane, pressure) = in_ns(&t.node.path(), || {
        let mut plane =
            Dataplane::open(&pin_dir, settings).map_err(|e| format!("Dataplane::open: {e}"))?;
        plane
            .sync(&snapshot, &facts)
            .map_err(|e| format!("sync: {e}"))?;
        let pressure = plane.pressure().map_err(|e| format!("pressure: {e}"))?;
        Ok((plane, pressure))
    })?;
    eprintln!("maps synced in {:.1} s", started.elapsed().as_secs_f64());
    let held = |m: &str| {
        pressure
            .iter()
            .find(|p| p.map == m)
            .map_or(0, |p| p.entries)
    };
    let (ipcache_entries, policy_entries) =
        (held("ipcache_v4") + held("ipcache_v6"), held("policy"));
    eprintln!(
        "sluice maps: ipcache {ipcache_entries}, policy {policy_entries}, local_policy {}, endpoints {}, redirect_devmap {}",
        held("local_policy"),
        held("endpoints"),
        held("redirect_devmap")
    );
    if remote_pods >= 100_000 && (ipcache_entries < 100_000 || policy_entries < 10_000) {
        return Err(format!(
            "state too small: {ipcache_entries} ipcache / {policy_entries} policy entries"
        ));
    }
    let mut sys = Systems {
        bare,
        plane: Some(plane),
        attached: Attached::Nothing,
    };

    let frame = udp_frame(t.node_gen_mac, t.gen_mac, GEN_IP, SINK_IP);
    if args.iter().any(|a| a == "--hold") {
        // For inspection (bpftool, variants of the program test-run against the same maps):
        // keep everything as set up, nothing attached, until Ctrl-C.
        std::fs::write(work.join("frame.bin"), &frame).map_err(|e| e.to_string())?;
        println!(
            "holding: node netns {} (gen-facing veth {} ifindex {}, sink-facing {} ifindex {}), sluice pins {}, frame {}; Ctrl-C ends",
            t.node.name,
            t.node_gen_dev,
            t.node_gen_if,
            t.node_sink_dev,
            t.node_sink_if,
            pin_dir.display(),
            work.join("frame.bin").display()
        );
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }
    let mut results: Vec<RunResult> = Vec::new();
    let outcome = (|| -> Result<()> {
        for i in 0..runs {
            for system in ["bare", "sluice"] {
                eprintln!("run {}/{runs}: {system} …", i + 1);
                let r = measure(system, &mut sys, &bench, &t, &frame, &opt)?;
                eprintln!(
                    "  node: {:.0} kpps into its ring, {:.0} seen by XDP, {:.0} redirected, {:.0} enqueued to the sink, {:.0} refused by the sink's full ring",
                    r.node_in_pps / 1e3,
                    r.node_xdp_pps / 1e3,
                    r.node_redirect_pps / 1e3,
                    r.to_sink_pps / 1e3,
                    r.to_sink_err_pps / 1e3
                );
                eprintln!(
                    "  {:.0} kpps at the sink (offered {:.0} kpps), {:.1} ns/packet (schedstat {:.1}), node kthreads {:.0} % busy, CPU0 {:.0} %, CPU1 {:.0} %, TTL-intact share {:.4}{}",
                    r.sink_pps / 1e3,
                    r.offered_pps / 1e3,
                    r.ns_per_pkt,
                    r.sched_ns_per_pkt,
                    r.node_busy * 100.0,
                    r.cpu_busy[0] * 100.0,
                    r.cpu_busy[1] * 100.0,
                    r.ttl_ok_share,
                    r.redirect_share
                        .map(|s| format!(", CNT_KERNEL_REDIRECT/sink {s:.4}"))
                        .unwrap_or_default()
                );
                if r.ttl_ok_share < 0.999 {
                    return Err(format!(
                        "{system}: {:.4} of the sink's frames are not the generator's untouched frames",
                        r.ttl_ok_share
                    ));
                }
                if let Some(s) = r.redirect_share
                    && s < 0.999
                {
                    return Err(format!(
                        "sluice: CNT_KERNEL_REDIRECT covers only {s:.4} of the sink's count"
                    ));
                }
                results.push(r);
            }
        }
        Ok(())
    })();
    sys.detach(&t)?;
    outcome?;
    let load_end = loadavg();

    // Diagnostics: the programs' own cost (no veth work), big and small sluice maps.
    let bare_fd = sys
        .bare_prog()?
        .fd()
        .map_err(|e| e.to_string())?
        .as_fd()
        .as_raw_fd();
    let (bare_prog_ns, bare_ret) = prog_only_ns(bare_fd, &t, &frame)?;
    let steer_fd = steer_prog_fd(&pin_dir)?;
    let (steer_prog_ns, steer_ret) = prog_only_ns(steer_fd.as_fd().as_raw_fd(), &t, &frame)?;
    let small = build_state(&t, 0, false)?;
    {
        let plane = sys.plane.as_mut().ok_or("no dataplane")?;
        in_ns(&t.node.path(), || {
            plane.sync(&small, &facts).map_err(|e| format!("sync: {e}"))
        })?;
    }
    let (small_prog_ns, _) = prog_only_ns(steer_fd.as_fd().as_raw_fd(), &t, &frame)?;
    eprintln!(
        "program only (BPF_PROG_TEST_RUN, ns/run): bare {bare_prog_ns:.1} (ret {bare_ret}), sluice {steer_prog_ns:.1} (ret {steer_ret}), sluice with 2 ipcache / 1 policy entries {small_prog_ns:.1}"
    );
    let small_run = measure("sluice", &mut sys, &bench, &t, &frame, &opt)?;
    eprintln!(
        "sluice with small maps: {:.0} kpps, {:.1} ns/packet",
        small_run.sink_pps / 1e3,
        small_run.ns_per_pkt
    );
    drop(steer_fd);
    if let Some(plane) = sys.plane.take() {
        plane.destroy().map_err(|e| format!("destroy: {e}"))?;
    }

    report(
        &results,
        &Report {
            runs,
            secs,
            ipcache_entries,
            policy_entries,
            fallback,
            load_start,
            load_end,
            bare_prog_ns,
            steer_prog_ns,
            small_prog_ns,
            small_run,
        },
    );
    Ok(())
}

/// A descriptor of this process's `sluice_steer` for test runs: the loaded program of that
/// name whose maps include the `counters` map pinned in our pin directory (other processes may
/// have their own `sluice_steer` loaded).
fn steer_prog_fd(pin_dir: &Path) -> Result<aya::programs::ProgramFd> {
    let counters = aya::maps::MapData::from_pin(pin_dir.join("counters"))
        .map_err(|e| format!("pinned counters: {e}"))?;
    let map_id = counters
        .info()
        .map_err(|e| format!("counters info: {e}"))?
        .id();
    for info in aya::programs::loaded_programs().flatten() {
        if info.name_as_str() == Some("sluice_steer")
            && info
                .map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&map_id))
        {
            return info.fd().map_err(|e| format!("sluice_steer fd: {e}"));
        }
    }
    Err("this process's sluice_steer is not among the loaded programs".into())
}

struct Report {
    runs: usize,
    secs: f64,
    ipcache_entries: usize,
    policy_entries: usize,
    fallback: bool,
    load_start: String,
    load_end: String,
    bare_prog_ns: f64,
    steer_prog_ns: f64,
    small_prog_ns: f64,
    small_run: RunResult,
}

fn report(results: &[RunResult], r: &Report) {
    let of = |s: &str, f: fn(&RunResult) -> f64| -> Vec<f64> {
        results.iter().filter(|x| x.system == s).map(f).collect()
    };
    let fmt = |v: &[f64], scale: f64, digits: usize| {
        v.iter()
            .map(|x| format!("{:.*}", digits, x * scale))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| node program | sink kpps (runs) | median kpps | node CPU ns/packet (runs) | median ns/packet | node NAPI busy (median) | offered kpps (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut med = BTreeMap::new();
    for (s, label) in [
        ("bare", "bare devmap `XDP_REDIRECT` (`bare_redirect`)"),
        ("sluice", "sluice in-kernel path (`sluice_steer`)"),
    ] {
        let pps = of(s, |x| x.sink_pps);
        let ns = of(s, |x| x.ns_per_pkt);
        let busy = of(s, |x| x.node_busy);
        let offered = of(s, |x| x.offered_pps);
        let (mp, mn) = (median(&pps), median(&ns));
        med.insert(s, (mp, mn, median(&of(s, |x| x.sched_ns_per_pkt))));
        println!(
            "| {label} | {} | **{:.0}** | {} | **{:.0}** | {:.0} % | {:.0} |",
            fmt(&pps, 1e-3, 0),
            mp / 1e3,
            fmt(&ns, 1.0, 0),
            mn,
            median(&busy) * 100.0,
            median(&offered) / 1e3
        );
    }
    let (bp, bn, bs) = med["bare"];
    let (sp, sn, ss) = med["sluice"];
    let (rate_ratio, ns_ratio) = (sp / bp, sn / bn);
    println!(
        "| **sluice / bare** | | **{rate_ratio:.2}×** (target ≥ 0.90×) | | **{ns_ratio:.2}×** (target ≤ 1.30×) | | |"
    );
    println!();
    println!(
        "Program alone (plain `BPF_PROG_TEST_RUN`, ns/run): bare {:.1}, sluice {:.1}, sluice with 2 ipcache / 1 policy entries {:.1}. Sluice with those small maps on the veth path: {:.0} kpps, {:.0} ns/packet.",
        r.bare_prog_ns,
        r.steer_prog_ns,
        r.small_prog_ns,
        r.small_run.sink_pps / 1e3,
        r.small_run.ns_per_pkt
    );
    println!();
    println!(
        "| run | node program | s | offered kpps | into node ring kpps | sink kpps | refused by sink ring kpps | node CPU ns/packet | schedstat ns/packet | node NAPI busy | CPU0 busy | CPU1 busy | load (1/5/15 min) at start |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, x) in results.iter().enumerate() {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} % | {:.0} % | {:.0} % | {} |",
            i / 2 + 1,
            x.system,
            x.secs,
            x.offered_pps / 1e3,
            x.node_in_pps / 1e3,
            x.sink_pps / 1e3,
            x.to_sink_err_pps / 1e3,
            x.ns_per_pkt,
            x.sched_ns_per_pkt,
            x.node_busy * 100.0,
            x.cpu_busy[0] * 100.0,
            x.cpu_busy[1] * 100.0,
            x.load
        );
    }
    println!();
    let rate_ok = rate_ratio >= 0.9;
    let ns_ok = ns_ratio <= 1.3;
    println!(
        "{{\"bench\":\"xdp_redirect_kernel_path\",\"runs\":{},\"secs\":{},\"frame_bytes\":64,\"ipcache_entries\":{},\"policy_entries\":{},\"kernel_mode\":{},\"load_start\":\"{}\",\"load_end\":\"{}\",\"bare\":{{\"kpps\":[{}],\"ns_per_pkt\":[{}],\"median_kpps\":{:.1},\"median_ns_per_pkt\":{:.1},\"median_schedstat_ns_per_pkt\":{:.1},\"prog_only_ns\":{:.1}}},\"sluice\":{{\"kpps\":[{}],\"ns_per_pkt\":[{}],\"median_kpps\":{:.1},\"median_ns_per_pkt\":{:.1},\"median_schedstat_ns_per_pkt\":{:.1},\"prog_only_ns\":{:.1},\"prog_only_small_maps_ns\":{:.1},\"small_maps_kpps\":{:.1},\"small_maps_ns_per_pkt\":{:.1}}},\"rate_ratio\":{:.3},\"ns_ratio\":{:.3},\"rate_target_met\":{},\"ns_target_met\":{}}}",
        r.runs,
        r.secs,
        r.ipcache_entries,
        r.policy_entries,
        !r.fallback,
        r.load_start,
        r.load_end,
        fmt(&of("bare", |x| x.sink_pps), 1e-3, 1),
        fmt(&of("bare", |x| x.ns_per_pkt), 1.0, 1),
        bp / 1e3,
        bn,
        bs,
        r.bare_prog_ns,
        fmt(&of("sluice", |x| x.sink_pps), 1e-3, 1),
        fmt(&of("sluice", |x| x.ns_per_pkt), 1.0, 1),
        sp / 1e3,
        sn,
        ss,
        r.steer_prog_ns,
        r.small_prog_ns,
        r.small_run.sink_pps / 1e3,
        r.small_run.ns_per_pkt,
        rate_ratio,
        ns_ratio,
        rate_ok,
        ns_ok
    );
}
