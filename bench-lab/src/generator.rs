//! The live-frames XDP generator and the XDP sink (`bpf/lab.c`).
//!
//! The generator is `lab_gen` run by `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` on
//! the generator pod's veth: the kernel runs it on frames initialised from a template and
//! transmits every frame it returns `XDP_TX` for, towards the node. One long call (repeat =
//! `u32::MAX`) per measurement, ended by SIGUSR1 (every call waits in `synchronize_rcu`, so
//! many short calls would leave the node idle). The program writes into each frame a sequence
//! number and the send time (`bpf_ktime_get_ns`, CLOCK_MONOTONIC), picks its source port and
//! source address from the sequence number ([`FlowMode`]), and fixes the IPv4 header and UDP
//! checksums incrementally. With a rate it paces itself: it returns `XDP_DROP` (nothing is
//! sent) until the next send slot, and a generator more than 1 ms behind (descheduled) starts
//! again from the current time rather than sending a burst. It never waits for the system under
//! test, so there is no coordinated omission to correct: every frame carries the time it left.
//!
//! The sink is `lab_sink` on the sink pod's veth: per CPU it counts lab frames (by a magic
//! word), bytes, frames whose TTL/hop limit is still 64 (forwarded without a routing stack),
//! frames whose sequence number is below the highest seen (reordered or duplicated), and
//! records `now − send time` in a log-linear histogram (8 sub-buckets per power of two, ≤ 12.5 %
//! wide). Loss over a period is offered − received.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, Pod as AyaPod};
use serde::{Deserialize, Serialize};
use xdp_redirect::test_run::{BPF_F_TEST_XDP_LIVE_FRAMES, xdp_test_run};

use crate::error::{LabError, Result};
use crate::netns;
use crate::topology::{Pod, Topology};

/// The compiled generator and sink.
pub static LAB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab.o"));

/// UDP destination port of every generated frame (what the policies allow).
pub const LAB_PORT: u16 = 9;
/// The payload's magic word (`LAB_MAGIC` in `lab.c`).
pub const LAB_MAGIC: u32 = 0x51ce_1ab5;
/// Payload bytes: magic, sequence number, send time.
pub const PAYLOAD_LEN: usize = 20;
/// First source port of fixed flows.
pub const SPORT_BASE: u16 = 10_000;
/// Slots of the sink's per-source counters (one per last address byte).
pub const SINK_SOURCES: usize = 256;
/// Buckets of the sink's latency histogram.
pub const LATENCY_BUCKETS: usize = 64 << LATENCY_SUB_BITS;
const LATENCY_SUB_BITS: u32 = 3;

/// How many flows (5-tuples) the generator's frames belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowMode {
    /// 4 flows (source ports), round robin.
    Few,
    /// 10,000 flows, round robin.
    Many,
    /// Every frame a new flow: source port 1024 + seq mod 64,512, and the source address
    /// steps after each round of ports (64,512 × source addresses distinct tuples).
    New,
}

impl FlowMode {
    /// Flows in fixed mode (0 for [`FlowMode::New`]).
    pub fn flows(self) -> u32 {
        match self {
            FlowMode::Few => 4,
            FlowMode::Many => 10_000,
            FlowMode::New => 0,
        }
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FlowMode::Few => "few",
            FlowMode::Many => "many",
            FlowMode::New => "new",
        }
    }
}

impl std::fmt::Display for FlowMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FlowMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "few" => Ok(FlowMode::Few),
            "many" => Ok(FlowMode::Many),
            "new" => Ok(FlowMode::New),
            _ => Err(format!("unknown flow mode {s:?} (few, many or new)")),
        }
    }
}

/// What the generator sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficSpec {
    /// Flows.
    pub flows: FlowMode,
    /// Frame length without FCS (raised to the family's minimum: 62 B IPv4, 82 B IPv6).
    pub frame_len: usize,
    /// IPv6 instead of IPv4.
    pub ipv6: bool,
    /// Source addresses used (from the generator pod's block).
    pub src_ips: u32,
    /// Frames per second; `None`: as fast as the generator goes.
    pub rate_pps: Option<f64>,
}

impl TrafficSpec {
    /// A few flows of the smallest IPv4 frames from one source address at `rate_pps`: traffic
    /// that checks what passes (storm, TCP, generator checks) rather than loads the node.
    pub fn few_small(rate_pps: Option<f64>) -> Self {
        TrafficSpec {
            flows: FlowMode::Few,
            frame_len: 64,
            ipv6: false,
            src_ips: 1,
            rate_pps,
        }
    }

    /// The frame length actually sent.
    pub fn effective_len(&self) -> usize {
        self.frame_len.max(min_frame_len(self.ipv6))
    }
}

/// Smallest frame that holds the headers and the lab payload.
pub fn min_frame_len(ipv6: bool) -> usize {
    14 + if ipv6 { 40 } else { 20 } + 8 + PAYLOAD_LEN
}

/// `struct gen_config` of `lab.c`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GenConfig {
    interval_ns: u64,
    ipv6: u32,
    flow_mode: u32,
    nflows: u32,
    nsrc: u32,
    sport_base: u16,
    pad: u16,
    src_base: u32,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    pad2: u32,
}

// SAFETY: plain old data with no padding holes the kernel could read (explicit pad fields; the
// struct is 48 bytes, 8-aligned, as in lab.c).
unsafe impl AyaPod for GenConfig {}

/// `struct gen_state` of `lab.c`: the generator's own counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenState {
    /// Next sequence number.
    pub seq: u64,
    /// Next send slot (paced mode), monotonic ns.
    pub next_ns: u64,
    /// Frames sent (returned `XDP_TX`).
    pub sent: u64,
    /// Program runs that sent nothing because the slot had not come.
    pub paced_out: u64,
    /// Times the paced generator fell more than 1 ms behind and restarted its schedule.
    pub behind: u64,
}

// SAFETY: five u64 fields, no padding.
unsafe impl AyaPod for GenState {}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    checksum_fold(checksum_add(0, bytes))
}

/// A lab frame: Ethernet, IPv4 (TTL 64, UDP checksum 0 = none) or IPv6 (hop limit 64, full
/// UDP checksum), UDP `sport` → [`LAB_PORT`], the lab payload (sequence 0, time 0), zero
/// padding to `len`. The generator program rewrites source address, port, sequence and time.
pub fn build_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    len: usize,
) -> Vec<u8> {
    let v6 = matches!(src, IpAddr::V6(_));
    let len = len.max(min_frame_len(v6));
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    let udp_at = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let ip_len = (len - 14) as u16;
            f[14] = 0x45;
            f[16..18].copy_from_slice(&ip_len.to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&s.octets());
            f[30..34].copy_from_slice(&d.octets());
            let sum = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&sum.to_be_bytes());
            34
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[14] = 0x60;
            f[18..20].copy_from_slice(&((len - 54) as u16).to_be_bytes());
            f[20] = 17;
            f[21] = 64;
            f[22..38].copy_from_slice(&s.octets());
            f[38..54].copy_from_slice(&d.octets());
            54
        }
        _ => unreachable!("source and destination of one family"),
    };
    let udp_len = (len - udp_at) as u16;
    f[udp_at..udp_at + 2].copy_from_slice(&sport.to_be_bytes());
    f[udp_at + 2..udp_at + 4].copy_from_slice(&LAB_PORT.to_be_bytes());
    f[udp_at + 4..udp_at + 6].copy_from_slice(&udp_len.to_be_bytes());
    f[udp_at + 8..udp_at + 12].copy_from_slice(&LAB_MAGIC.to_ne_bytes());
    if v6 {
        let sum = udp6_checksum(&f);
        f[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
    }
    f
}

/// The UDP checksum of an IPv6 lab frame (pseudo-header + UDP header and payload), with the
/// checksum field taken as zero; 0 is sent as 0xffff.
pub fn udp6_checksum(frame: &[u8]) -> u16 {
    let udp = &frame[54..];
    let mut sum = checksum_add(0, &frame[22..54]);
    sum += udp.len() as u32;
    sum += 17;
    let mut copy = udp.to_vec();
    copy[6] = 0;
    copy[7] = 0;
    match checksum_fold(checksum_add(sum, &copy)) {
        0 => 0xffff,
        s => s,
    }
}

/// Lower bound and width (ns) of sink latency bucket `i`.
pub fn latency_bucket_bounds(i: usize) -> (u64, u64) {
    let sub = 1usize << LATENCY_SUB_BITS;
    if i < sub {
        return (i as u64, 1);
    }
    let msb = (i >> LATENCY_SUB_BITS) as u32;
    let low = (i & (sub - 1)) as u64;
    let shift = msb - LATENCY_SUB_BITS;
    ((1u64 << msb) | (low << shift), 1u64 << shift)
}

/// The sink bucket of a latency (`lat_bucket` in `lab.c`), for tests.
pub fn latency_bucket(ns: u64) -> usize {
    if ns < (1 << LATENCY_SUB_BITS) {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    ((msb << LATENCY_SUB_BITS) as usize)
        | ((ns >> (msb - LATENCY_SUB_BITS)) & ((1 << LATENCY_SUB_BITS) - 1)) as usize
}

/// A histogram of sink bucket counts, each recorded at its bucket's midpoint.
pub fn latency_histogram(buckets: &[u64]) -> perf::LatencyHistogram {
    let mut h = perf::LatencyHistogram::new();
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 {
            let (lo, width) = latency_bucket_bounds(i);
            h.record_n(lo + width / 2, n);
        }
    }
    h
}

/// What the sink has counted so far (sums over CPUs; `max_seq` is the highest over CPUs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Every frame that reached the sink.
    pub all: u64,
    /// Lab frames.
    pub lab: u64,
    /// Lab frames with TTL / hop limit 64 (not routed by a stack).
    pub ttl_intact: u64,
    /// Lab frames with a sequence number below the highest seen.
    pub reordered: u64,
    /// Bytes of lab frames.
    pub bytes: u64,
    /// Highest sequence number seen + 1 (0: none).
    pub max_seq: u64,
    /// Sum of latencies (ns).
    pub latency_sum_ns: u64,
    /// Latency histogram buckets.
    pub latency: Vec<u64>,
}

impl SinkCounters {
    /// Counts from `earlier` to `self`.
    pub fn since(&self, earlier: &SinkCounters) -> SinkCounters {
        SinkCounters {
            all: self.all.saturating_sub(earlier.all),
            lab: self.lab.saturating_sub(earlier.lab),
            ttl_intact: self.ttl_intact.saturating_sub(earlier.ttl_intact),
            reordered: self.reordered.saturating_sub(earlier.reordered),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            max_seq: self.max_seq.saturating_sub(earlier.max_seq),
            latency_sum_ns: self.latency_sum_ns.saturating_sub(earlier.latency_sum_ns),
            latency: self
                .latency
                .iter()
                .zip(earlier.latency.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }
}

/// The loaded generator and sink programs; the sink is attached to the sink pod's veth.
pub struct LabPrograms {
    ebpf: Ebpf,
}

fn bpf(what: &str) -> impl Fn(&dyn std::fmt::Display) -> LabError + '_ {
    move |e| LabError::Bpf(format!("{what}: {e}"))
}

impl LabPrograms {
    /// Loads `lab_gen` and `lab_sink` and attaches the sink (native mode) in the sink pod.
    pub fn load(topology: &Topology) -> Result<Self> {
        Self::load_for(&topology.sink)
    }

    /// Loads a generator and sink of their own (own maps: counters per pair) and attaches the
    /// sink (native mode) in `sink`'s pod.
    pub fn load_for(sink: &Pod) -> Result<Self> {
        let mut ebpf = Ebpf::load(LAB_OBJECT).map_err(|e| bpf("loading lab.o")(&e))?;
        for name in ["lab_gen", "lab_sink"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| LabError::Bpf(format!("{name} missing from lab.o")))?
                .try_into()
                .map_err(|e| bpf(name)(&e))?;
            p.load().map_err(|e| bpf(name)(&e))?;
        }
        let p: &mut Xdp = ebpf
            .program_mut("lab_sink")
            .ok_or_else(|| LabError::Bpf("lab_sink missing".into()))?
            .try_into()
            .map_err(|e| bpf("lab_sink")(&e))?;
        let ifindex = sink.ifindex;
        sink.ns.run(|| {
            p.attach_to_if_index(ifindex, XdpMode::Driver)
                .map_err(|e| bpf("attaching lab_sink")(&e))
        })?;
        Ok(LabPrograms { ebpf })
    }

    /// The generator program's descriptor (valid while `self` lives).
    pub fn gen_fd(&self) -> Result<RawFd> {
        let p: &Xdp = self
            .ebpf
            .program("lab_gen")
            .ok_or_else(|| LabError::Bpf("lab_gen missing".into()))?
            .try_into()
            .map_err(|e| bpf("lab_gen")(&e))?;
        Ok(p.fd()
            .map_err(|e| bpf("lab_gen fd")(&e))?
            .as_fd()
            .as_raw_fd())
    }

    /// Writes the generator's configuration for `spec` from `pod`'s addresses, and restarts
    /// its pacing schedule (the sequence goes on).
    pub fn configure(&mut self, spec: &TrafficSpec, pod: &Pod) -> Result<()> {
        let base = pod
            .v4
            .first()
            .copied()
            .ok_or_else(|| LabError::Bpf("generator pod without an address".into()))?;
        let nsrc = spec.src_ips.clamp(1, pod.v4.len() as u32);
        let config = GenConfig {
            interval_ns: spec
                .rate_pps
                .filter(|r| *r > 0.0)
                .map_or(0, |r| (1e9 / r).round().max(1.0) as u64),
            ipv6: u32::from(spec.ipv6),
            flow_mode: u32::from(spec.flows == FlowMode::New),
            nflows: spec.flows.flows().max(1),
            nsrc,
            sport_base: SPORT_BASE,
            pad: 0,
            src_base: u32::from(base),
            dst_mac: pod.host_mac,
            src_mac: pod.mac,
            pad2: 0,
        };
        {
            let mut map: Array<&mut MapData, GenConfig> = Array::try_from(
                self.ebpf
                    .map_mut("gen_config_map")
                    .ok_or_else(|| LabError::Bpf("gen_config_map missing".into()))?,
            )
            .map_err(|e| bpf("gen_config_map")(&e))?;
            map.set(0, config, 0)
                .map_err(|e| bpf("gen_config_map")(&e))?;
        }
        let mut state = self.gen_state()?;
        state.next_ns = 0;
        let mut map: Array<&mut MapData, GenState> = Array::try_from(
            self.ebpf
                .map_mut("gen_state_map")
                .ok_or_else(|| LabError::Bpf("gen_state_map missing".into()))?,
        )
        .map_err(|e| bpf("gen_state_map")(&e))?;
        map.set(0, state, 0).map_err(|e| bpf("gen_state_map")(&e))
    }

    /// The generator's counters.
    pub fn gen_state(&self) -> Result<GenState> {
        let map: Array<&MapData, GenState> = Array::try_from(
            self.ebpf
                .map("gen_state_map")
                .ok_or_else(|| LabError::Bpf("gen_state_map missing".into()))?,
        )
        .map_err(|e| bpf("gen_state_map")(&e))?;
        map.get(&0, 0).map_err(|e| bpf("gen_state_map")(&e))
    }

    /// Lab frames the sink counted per source address, indexed by the address's last byte
    /// (sums over CPUs; every lab pod address differs in its last byte).
    pub fn sink_by_source(&self) -> Result<Vec<u64>> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("sink_by_src")
                .ok_or_else(|| LabError::Bpf("sink_by_src missing".into()))?,
        )
        .map_err(|e| bpf("sink_by_src")(&e))?;
        (0..SINK_SOURCES as u32)
            .map(|i| {
                Ok(map
                    .get(&i, 0)
                    .map_err(|e| bpf("sink_by_src")(&e))?
                    .iter()
                    .sum())
            })
            .collect()
    }

    /// The sink's counters.
    pub fn sink(&self) -> Result<SinkCounters> {
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("sink_counters")
                .ok_or_else(|| LabError::Bpf("sink_counters missing".into()))?,
        )
        .map_err(|e| bpf("sink_counters")(&e))?;
        let slot = |i: u32| -> Result<Vec<u64>> {
            Ok(counters
                .get(&i, 0)
                .map_err(|e| bpf("sink_counters")(&e))?
                .iter()
                .copied()
                .collect())
        };
        let sum = |i: u32| -> Result<u64> { Ok(slot(i)?.iter().sum()) };
        let latency_map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("sink_latency")
                .ok_or_else(|| LabError::Bpf("sink_latency missing".into()))?,
        )
        .map_err(|e| bpf("sink_latency")(&e))?;
        let mut latency = Vec::with_capacity(LATENCY_BUCKETS);
        for (i, values) in latency_map.iter().enumerate() {
            if i >= LATENCY_BUCKETS {
                break;
            }
            latency.push(values.map_err(|e| bpf("sink_latency")(&e))?.iter().sum());
        }
        Ok(SinkCounters {
            all: sum(0)?,
            lab: sum(1)?,
            ttl_intact: sum(2)?,
            reordered: sum(3)?,
            bytes: sum(4)?,
            max_seq: slot(5)?.into_iter().max().unwrap_or(0),
            latency_sum_ns: sum(6)?,
            latency,
        })
    }
}

/// The generator thread: one long live-frames `BPF_PROG_TEST_RUN` inside the generator pod's
/// namespace, pinned to the generator core; stopped (and joined) by [`Generator::stop`] or on
/// drop.
pub struct Generator {
    handle: Option<JoinHandle<Result<()>>>,
    stop: Arc<AtomicBool>,
}

impl Generator {
    /// Starts sending `frame` from interface `ifindex` of the namespace at `ns_path`. `fd` is
    /// `lab_gen`'s descriptor and must stay open until the generator is stopped.
    pub fn start(
        fd: RawFd,
        ns_path: String,
        ifindex: u32,
        frame: Vec<u8>,
        cpu: usize,
        nice: i32,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("lab-generator".into())
            .spawn(move || -> Result<()> {
                let setup = netns::enter(&ns_path)
                    .and_then(|()| netns::pin_to_cpu(0, cpu))
                    .and_then(|()| netns::set_nice(netns::gettid(), nice));
                let failed = setup.is_err();
                let _ = tx.send(setup);
                if failed {
                    return Ok(());
                }
                // SAFETY: the caller keeps the program open until the generator is stopped.
                let program = unsafe { BorrowedFd::borrow_raw(fd) };
                while !thread_stop.load(Ordering::SeqCst) {
                    match xdp_test_run(
                        program,
                        &frame,
                        ifindex,
                        u32::MAX,
                        BPF_F_TEST_XDP_LIVE_FRAMES,
                    ) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => {
                            return Err(LabError::io("BPF_PROG_TEST_RUN (live frames)".into(), e));
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| LabError::io("starting the generator thread".into(), e))?;
        let generator = Generator {
            handle: Some(handle),
            stop,
        };
        rx.recv()
            .map_err(|_| LabError::Bpf("the generator thread died".into()))??;
        Ok(generator)
    }

    /// Stops the generator and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::SeqCst);
        // A signal that lands just before the call starts is lost: repeat until it ends.
        while !handle.is_finished() {
            // SAFETY: the thread is alive (not finished, not joined), so its pthread_t is
            // valid; SIGUSR1 has a no-op handler (netns::install_signal_handlers).
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

/// The frame generator pod 0 sends for `spec`, addressed to the node's MAC.
pub fn frame_for(topology: &Topology, spec: &TrafficSpec) -> Vec<u8> {
    frame_between(&topology.gens[0], &topology.sink, spec)
}

/// The frame generator pod `pod` sends to sink pod `sink` for `spec`, addressed to the node's
/// MAC (a pair of `bench-lab scale`).
pub fn frame_between(pod: &Pod, sink: &Pod, spec: &TrafficSpec) -> Vec<u8> {
    let src = pod.v4[0];
    let (s, d): (IpAddr, IpAddr) = if spec.ipv6 {
        (
            crate::topology::v6_of(src).into(),
            crate::topology::v6_of(sink.v4[0]).into(),
        )
    } else {
        (src.into(), sink.v4[0].into())
    };
    build_frame(
        pod.host_mac,
        pod.mac,
        s,
        d,
        SPORT_BASE,
        spec.effective_len(),
    )
}

/// The source address block generator pod 0 uses for `spec` (`addr/len` covering
/// `src_ips` addresses), for rules that allow "the generator's flows".
pub fn source_block(pod: &Pod, spec: &TrafficSpec) -> (Ipv4Addr, u8) {
    let n = spec
        .src_ips
        .clamp(1, pod.v4.len() as u32)
        .next_power_of_two();
    (pod.v4[0], 32 - n.trailing_zeros() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_frame_has_a_valid_header_checksum_and_the_payload() {
        let f = build_frame(
            [2; 6],
            [4; 6],
            Ipv4Addr::new(10, 128, 0, 32).into(),
            Ipv4Addr::new(10, 128, 0, 2).into(),
            SPORT_BASE,
            64,
        );
        assert_eq!(f.len(), 64);
        assert_eq!(checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(&f[36..38], &LAB_PORT.to_be_bytes());
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
        assert_eq!(&f[42..46], &LAB_MAGIC.to_ne_bytes());
    }

    #[test]
    fn ipv6_frame_has_a_valid_udp_checksum_and_grows_to_its_minimum() {
        let f = build_frame(
            [2; 6],
            [4; 6],
            crate::topology::v6_of(Ipv4Addr::new(10, 128, 0, 32)).into(),
            crate::topology::v6_of(Ipv4Addr::new(10, 128, 0, 2)).into(),
            SPORT_BASE,
            64,
        );
        assert_eq!(f.len(), min_frame_len(true));
        let stored = u16::from_be_bytes([f[60], f[61]]);
        assert_eq!(stored, udp6_checksum(&f));
        // Verifying over the whole datagram with the stored checksum gives 0.
        let mut sum = checksum_add(0, &f[22..54]);
        sum += (f.len() - 54) as u32 + 17;
        assert_eq!(checksum_fold(checksum_add(sum, &f[54..])), 0);
    }

    #[test]
    fn latency_buckets_round_trip() {
        for ns in [0u64, 7, 8, 9, 15, 16, 100, 1_000, 12_345, 1 << 40] {
            let (lo, width) = latency_bucket_bounds(latency_bucket(ns));
            assert!(lo <= ns && ns < lo + width, "{ns} in [{lo}, +{width})");
            assert!(width as f64 <= (lo as f64 / 8.0).max(1.0));
        }
        let mut buckets = vec![0u64; LATENCY_BUCKETS];
        buckets[latency_bucket(10_000)] = 99;
        buckets[latency_bucket(1_000_000)] = 1;
        let h = latency_histogram(&buckets);
        assert_eq!(h.len(), 100);
        let p50 = h.value_at_quantile(0.5);
        assert!((9_000..11_000).contains(&p50), "{p50}");
    }

    #[test]
    fn flow_modes_parse_and_source_blocks_cover_the_addresses() {
        assert_eq!("new".parse::<FlowMode>(), Ok(FlowMode::New));
        assert!("lots".parse::<FlowMode>().is_err());
        assert_eq!(FlowMode::Many.flows(), 10_000);
    }
}
