//! The AF_XDP TX generator: an AF_XDP socket (copy mode on veth) on a generator pod's veth that
//! sends frames in the live-frames generator's wire format, so the sink measures it unchanged.
//!
//! Each frame is the template of [`crate::generator::build_frame`] with, written per frame as
//! `lab_gen` in `bpf/lab.c` does: the sequence number, the send time (`CLOCK_MONOTONIC`, the
//! clock of `bpf_ktime_get_ns`), the source port and source address chosen from the sequence
//! number by [`FlowMode`], and the checksums (IPv4 header; IPv6 UDP). Frames are stamped just
//! before they go on the TX ring; copy-mode TX moves them only on `sendto()` (up to 32 per
//! call), which the generator issues after every batch, and it stamps no new frames while 64
//! still wait on the ring, so a stamp is at most one batch (64 frames) early.
//!
//! Pacing is open-loop like `lab_gen`'s: every frame has a send slot `interval` after the last;
//! the generator sends every frame whose slot has come, sleeps (or spins, when the next slot is
//! under 50 µs away) until the next one, and restarts its schedule from now when it falls more
//! than 1 ms behind (counted in [`GenState::behind`]). "Sent" counts frames whose TX completion
//! came back: the kernel took them off the ring and handed them to the veth.
//!
//! The socket is made the way `fastpath::socket` makes its own (xsk-rs 0.11, libxdp program
//! loading inhibited, zero-copy tried first and copy mode taken on veth); fastpath keeps its
//! socket types crate-private, so the generator holds a TX-only socket of its own.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{FrameDesc, Socket, Umem};

use crate::error::{LabError, Result};
use crate::generator::{
    FlowMode, GenState, Generator, LabPrograms, PAYLOAD_LEN, SPORT_BASE, TrafficSpec, build_frame,
};
use crate::netns;
use crate::topology::{Pod, v6_of};

/// Which generator drives a measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorKind {
    /// `lab_gen` under `BPF_PROG_TEST_RUN` with live frames (3–12 Mpps here).
    #[default]
    LiveFrames,
    /// An AF_XDP socket's TX ring ([`AfxdpGenerator`]).
    Afxdp,
}

impl GeneratorKind {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            GeneratorKind::LiveFrames => "live-frames",
            GeneratorKind::Afxdp => "afxdp",
        }
    }
}

impl std::fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GeneratorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live-frames" => Ok(GeneratorKind::LiveFrames),
            "afxdp" => Ok(GeneratorKind::Afxdp),
            _ => Err(format!("unknown generator {s:?} (live-frames or afxdp)")),
        }
    }
}

/// TX ring (and completion ring) entries.
const RING: u32 = 2048;
/// UMEM frames: the TX ring's worth in flight and as many again being stamped.
const FRAMES: u32 = 2 * RING;
/// Frames stamped and put on the ring per `sendto()`.
const BATCH: usize = 64;
/// A paced generator further behind its schedule than this restarts it from now.
const BEHIND_NS: u64 = 1_000_000;
/// Below this gap to the next slot a paced generator spins instead of sleeping.
const SPIN_NS: u64 = 50_000;

/// What one AF_XDP generator sends, and from where.
#[derive(Clone, Debug)]
pub struct AfxdpGenConfig {
    /// The generator pod's namespace file.
    pub ns_path: String,
    /// The pod-side interface the socket binds.
    pub ifname: String,
    /// Queue to bind (0: veth has one by default).
    pub queue: u32,
    /// Core of the generator thread.
    pub cpu: usize,
    /// Nice value of the generator thread.
    pub nice: i32,
    /// The frame template ([`build_frame`]): MACs, addresses, `SPORT_BASE`, the payload.
    pub template: Vec<u8>,
    /// IPv6 frames (the template's family).
    pub ipv6: bool,
    /// Flows, as `lab_gen` picks them.
    pub flows: FlowMode,
    /// Source addresses (consecutive from `src_base`), ≥ 1.
    pub nsrc: u32,
    /// First source address (IPv4; for IPv6, the low 32 bits of the `fd00::` twin).
    pub src_base: Ipv4Addr,
    /// Frames per second; `None`: as fast as the socket goes.
    pub rate_pps: Option<f64>,
    /// First sequence number (continue above what the sink has seen, so it counts no
    /// reordering across measurements).
    pub seq_start: u64,
}

impl AfxdpGenConfig {
    /// The configuration for `spec` sent from `pod` to `dst` (the sink's pod).
    pub fn for_pod(
        pod: &Pod,
        dst: &Pod,
        spec: &TrafficSpec,
        cpu: usize,
        nice: i32,
        seq_start: u64,
    ) -> Result<Self> {
        let (Some(&src), Some(&to)) = (pod.v4.first(), dst.v4.first()) else {
            return Err(LabError::Invalid {
                what: "generator pod",
                reason: "a pod without an address".into(),
            });
        };
        let template = if spec.ipv6 {
            build_frame(
                pod.host_mac,
                pod.mac,
                v6_of(src).into(),
                v6_of(to).into(),
                SPORT_BASE,
                spec.effective_len(),
            )
        } else {
            build_frame(
                pod.host_mac,
                pod.mac,
                src.into(),
                to.into(),
                SPORT_BASE,
                spec.effective_len(),
            )
        };
        Ok(AfxdpGenConfig {
            ns_path: pod.ns.path(),
            ifname: pod.dev.clone(),
            queue: 0,
            cpu,
            nice,
            template,
            ipv6: spec.ipv6,
            flows: spec.flows,
            nsrc: spec.src_ips.clamp(1, pod.v4.len() as u32),
            src_base: src,
            rate_pps: spec.rate_pps.filter(|r| *r > 0.0),
            seq_start,
        })
    }
}

/// Counters the generator thread publishes.
#[derive(Debug, Default)]
struct Shared {
    seq: AtomicU64,
    next_ns: AtomicU64,
    sent: AtomicU64,
    paced_out: AtomicU64,
    behind: AtomicU64,
    wakeups: AtomicU64,
}

/// What an AF_XDP generator did, besides [`GenState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AfxdpGenStats {
    /// `sendto()` calls that kicked the TX ring.
    pub wakeups: u64,
    /// Copy mode (`true` on veth) or zero-copy.
    pub copy_mode: bool,
}

/// A running AF_XDP TX generator (one thread, one socket); stopped on drop.
pub struct AfxdpGenerator {
    handle: Option<JoinHandle<Result<()>>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    copy_mode: bool,
}

/// The monotonic clock in ns (`bpf_ktime_get_ns`'s clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which outlives the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sum16(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes sequence number `seq`, send time `now_ns`, and the flow `seq` selects (source port
/// and address) into `frame`, a copy of the template, and fixes its checksums: what `lab_gen`
/// does to each frame.
pub fn stamp(
    frame: &mut [u8],
    ipv6: bool,
    flows: FlowMode,
    nsrc: u32,
    src_base: u32,
    seq: u64,
    now_ns: u64,
) {
    let nsrc = u64::from(nsrc.max(1));
    let (sport, src_idx) = match flows {
        FlowMode::New => ((1024 + seq % 64_512) as u16, (seq / 64_512) % nsrc),
        fixed => {
            let n = u64::from(fixed.flows().max(1));
            (SPORT_BASE.wrapping_add((seq % n) as u16), seq % nsrc)
        }
    };
    let src = src_base.wrapping_add(src_idx as u32).to_be_bytes();
    let (src_at, udp_at) = if ipv6 { (34, 54) } else { (26, 34) };
    frame[src_at..src_at + 4].copy_from_slice(&src);
    frame[udp_at..udp_at + 2].copy_from_slice(&sport.to_be_bytes());
    let pl = udp_at + 8;
    frame[pl + 4..pl + 12].copy_from_slice(&seq.to_ne_bytes());
    frame[pl + 12..pl + 20].copy_from_slice(&now_ns.to_ne_bytes());
    if ipv6 {
        frame[udp_at + 6..udp_at + 8].copy_from_slice(&[0, 0]);
        let udp_len = (frame.len() - udp_at) as u32;
        let sum = sum16(sum16(udp_len + 17, &frame[22..54]), &frame[udp_at..]);
        let sum = match fold(sum) {
            0 => 0xffff,
            s => s,
        };
        frame[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
    } else {
        frame[24..26].copy_from_slice(&[0, 0]);
        let sum = fold(sum16(0, &frame[14..34]));
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
    }
}

fn xsk_err(ifname: &str) -> impl Fn(String) -> LabError + '_ {
    move |reason| LabError::Xsk {
        interface: ifname.to_owned(),
        reason,
    }
}

fn queue_size(n: u32, ifname: &str) -> Result<QueueSize> {
    QueueSize::new(n).map_err(|e| xsk_err(ifname)(format!("ring size {n}: {e}")))
}

impl AfxdpGenerator {
    /// Starts the generator thread: it enters the pod's namespace, moves to its core, binds
    /// the socket and starts sending. Returns once the socket is bound (or failed to bind).
    pub fn start(config: AfxdpGenConfig) -> Result<Self> {
        if config.template.len() < 14 + 20 + 8 + PAYLOAD_LEN {
            return Err(LabError::Invalid {
                what: "frame template",
                reason: format!(
                    "{} bytes is shorter than a lab frame",
                    config.template.len()
                ),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        shared.seq.store(config.seq_start, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel::<Result<bool>>();
        let (thread_stop, thread_shared) = (Arc::clone(&stop), Arc::clone(&shared));
        let handle = std::thread::Builder::new()
            .name("lab-afxdp-gen".into())
            .spawn(move || run(config, &thread_stop, &thread_shared, &tx))
            .map_err(|e| LabError::io("starting the AF_XDP generator thread".into(), e))?;
        let mut generator = AfxdpGenerator {
            handle: Some(handle),
            stop,
            shared,
            copy_mode: true,
        };
        match rx.recv() {
            Ok(Ok(copy_mode)) => {
                generator.copy_mode = copy_mode;
                Ok(generator)
            }
            Ok(Err(e)) => {
                let _ = generator.stop();
                Err(e)
            }
            Err(_) => match generator.stop() {
                Err(e) => Err(e),
                Ok(()) => Err(LabError::Xsk {
                    interface: String::new(),
                    reason: "the generator thread ended before binding".into(),
                }),
            },
        }
    }

    /// The generator's counters in the live-frames generator's terms (`seq`: the next
    /// sequence number; `sent`: frames completed since the start).
    pub fn state(&self) -> GenState {
        let s = &self.shared;
        GenState {
            seq: s.seq.load(Ordering::Relaxed),
            next_ns: s.next_ns.load(Ordering::Relaxed),
            sent: s.sent.load(Ordering::Relaxed),
            paced_out: s.paced_out.load(Ordering::Relaxed),
            behind: s.behind.load(Ordering::Relaxed),
        }
    }

    /// Kicks and bind mode.
    pub fn stats(&self) -> AfxdpGenStats {
        AfxdpGenStats {
            wakeups: self.shared.wakeups.load(Ordering::Relaxed),
            copy_mode: self.copy_mode,
        }
    }

    /// Stops the generator and waits for it (its last completions are counted).
    pub fn stop(&mut self) -> Result<()> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::SeqCst);
        handle
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for AfxdpGenerator {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn bind(
    config: &AfxdpGenConfig,
    umem: &Umem,
) -> Result<(xsk_rs::TxQueue, xsk_rs::CompQueue, bool)> {
    let err = xsk_err(&config.ifname);
    let iface: Interface = config
        .ifname
        .parse()
        .map_err(|e| err(format!("interface name: {e}")))?;
    let mut last = String::new();
    for (flags, copy) in [
        (BindFlags::XDP_ZEROCOPY, false),
        (BindFlags::XDP_COPY, true),
    ] {
        let socket = SocketConfig::builder()
            .rx_queue_size(queue_size(RING, &config.ifname)?)
            .tx_queue_size(queue_size(RING, &config.ifname)?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        // SAFETY: program loading is inhibited (no XDP program is attached for the socket),
        // and the UMEM is this socket's alone: (interface, queue) is bound once.
        match unsafe { Socket::new(socket, umem, &iface, config.queue) } {
            Ok((tx, _rx, Some((_fill, comp)))) => return Ok((tx, comp, copy)),
            Ok(_) => return Err(err("the UMEM's rings were already taken".into())),
            Err(e) => last = e.to_string(),
        }
    }
    Err(err(format!("bind queue {}: {last}", config.queue)))
}

/// The generator thread: set up, report, send until stopped.
fn run(
    config: AfxdpGenConfig,
    stop: &AtomicBool,
    shared: &Shared,
    ready: &std::sync::mpsc::Sender<Result<bool>>,
) -> Result<()> {
    let setup = (|| {
        netns::enter(&config.ns_path)?;
        netns::pin_to_cpu(0, config.cpu)?;
        netns::set_nice(netns::gettid(), config.nice)?;
        let err = xsk_err(&config.ifname);
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(2048).map_err(|e| err(format!("frame size: {e}")))?)
            .fill_queue_size(queue_size(RING, &config.ifname)?)
            .comp_queue_size(queue_size(RING, &config.ifname)?)
            .build()
            .map_err(|e| err(format!("UMEM configuration: {e}")))?;
        let frames = NonZeroU32::new(FRAMES).ok_or_else(|| err("no frames".into()))?;
        let (umem, free) =
            Umem::new(umem_config, frames, false).map_err(|e| err(format!("UMEM: {e}")))?;
        let (tx, comp, copy) = bind(&config, &umem)?;
        Ok((umem, free, tx, comp, copy))
    })();
    let (umem, mut free, mut txq, mut comp, copy) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(copy));
    let interval = config.rate_pps.map(|r| (1e9 / r).round().max(1.0) as u64);
    let src_base = u32::from(config.src_base);
    let mut seq = config.seq_start;
    let mut next_ns = monotonic_ns();
    let mut outstanding = 0usize;
    let mut batch: Vec<FrameDesc> = Vec::with_capacity(BATCH);
    let mut done: Vec<FrameDesc> = vec![FrameDesc::default(); RING as usize];
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        // Completions: frames the kernel has sent (or dropped at the veth) come back.
        // SAFETY: completions of this socket are frames of its UMEM, no longer in use.
        let n = unsafe { comp.consume(&mut done) };
        if n > 0 {
            free.extend_from_slice(&done[..n]);
            outstanding -= n;
            shared.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Stamp no more while a batch still waits on the ring for the kernel: a frame's
        // stamp is then at most one batch older than its send.
        let queued = RING.saturating_sub(txq.nb_free_exact()) as usize;
        if queued >= BATCH {
            kick(&txq, shared, &mut result);
            if result.is_err() {
                break;
            }
            continue;
        }
        // How many frames to send now.
        let mut want = (BATCH - queued).min(free.len());
        if let Some(interval) = interval {
            let now = monotonic_ns();
            if now < next_ns {
                shared.paced_out.fetch_add(1, Ordering::Relaxed);
                if outstanding > 0 {
                    kick(&txq, shared, &mut result);
                }
                let gap = next_ns - now;
                if gap > SPIN_NS {
                    std::thread::sleep(Duration::from_nanos(gap - SPIN_NS / 2));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            if now - next_ns > BEHIND_NS {
                next_ns = now;
                shared.behind.fetch_add(1, Ordering::Relaxed);
            }
            let due = ((now - next_ns) / interval + 1) as usize;
            want = want.min(due);
        }
        batch.clear();
        for mut desc in free.drain(free.len() - want..) {
            let now = monotonic_ns();
            // SAFETY: `desc` is a free frame of this UMEM: on no ring, referenced nowhere
            // else.
            let mut data = unsafe { umem.data_mut(&mut desc) };
            let mut cursor = data.cursor();
            if cursor.write_all(&config.template).is_err() {
                result = Err(xsk_err(&config.ifname)(
                    "a frame larger than 2048 bytes".into(),
                ));
                break;
            }
            stamp(
                data.contents_mut(),
                config.ipv6,
                config.flows,
                config.nsrc,
                src_base,
                seq,
                now,
            );
            seq += 1;
            batch.push(desc);
        }
        if result.is_err() {
            break;
        }
        if let Some(interval) = interval {
            next_ns += interval * batch.len() as u64;
            shared.next_ns.store(next_ns, Ordering::Relaxed);
        }
        // Everything on the ring, retrying a partial reservation with what is left.
        let mut put = 0;
        while put < batch.len() && !stop.load(Ordering::Relaxed) {
            // SAFETY: the frames are this UMEM's, stamped above and held by nothing else.
            let k = unsafe { txq.produce(&batch[put..]) };
            put += k;
            outstanding += k;
            kick(&txq, shared, &mut result);
            if k == 0 {
                // The ring is full: take completions back to make room.
                // SAFETY: as above.
                let n = unsafe { comp.consume(&mut done) };
                free.extend_from_slice(&done[..n]);
                outstanding -= n;
                shared.sent.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        // Frames that never made it onto the ring (stopping) go back to the pool, and their
        // sequence numbers were never sent.
        free.extend_from_slice(&batch[put..]);
        seq -= (batch.len() - put) as u64;
        shared.seq.store(seq, Ordering::Relaxed);
        if result.is_err() {
            break;
        }
        if want == 0 && interval.is_none() {
            // No free frame: the kernel holds them all; kick it and let it work.
            kick(&txq, shared, &mut result);
            std::thread::yield_now();
        }
    }
    // Drain: kick until the ring is empty, for at most 100 ms.
    let end = monotonic_ns() + 100_000_000;
    while outstanding > 0 && monotonic_ns() < end {
        kick(&txq, shared, &mut result);
        // SAFETY: as above.
        let n = unsafe { comp.consume(&mut done) };
        outstanding -= n;
        shared.sent.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    shared.seq.store(seq, Ordering::Relaxed);
    result
}

fn kick(txq: &xsk_rs::TxQueue, shared: &Shared, result: &mut Result<()>) {
    shared.wakeups.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = txq.wakeup()
        && result.is_ok()
    {
        *result = Err(LabError::io("AF_XDP TX sendto()".into(), e));
    }
}

/// The generator a measurement runs: either kind, behind one interface.
pub enum ActiveGenerator {
    /// `lab_gen` under live frames.
    LiveFrames(Generator),
    /// An AF_XDP socket.
    Afxdp(AfxdpGenerator),
}

impl ActiveGenerator {
    /// The counters a measurement of `kind` starts from (live frames: the program's
    /// cumulative state; AF_XDP: zero, each generator counts from its start).
    pub fn baseline(kind: GeneratorKind, programs: &LabPrograms) -> Result<GenState> {
        match kind {
            GeneratorKind::LiveFrames => programs.gen_state(),
            GeneratorKind::Afxdp => Ok(GenState::default()),
        }
    }

    /// The counters now.
    pub fn state(&self, programs: &LabPrograms) -> Result<GenState> {
        match self {
            ActiveGenerator::LiveFrames(_) => programs.gen_state(),
            ActiveGenerator::Afxdp(g) => Ok(g.state()),
        }
    }

    /// Stops it.
    pub fn stop(&mut self) -> Result<()> {
        match self {
            ActiveGenerator::LiveFrames(g) => g.stop(),
            ActiveGenerator::Afxdp(g) => g.stop(),
        }
    }
}

/// The sequence number a new AF_XDP generator starts from: above everything the sink and the
/// live-frames generator have used, so the sink sees no regression.
pub fn next_seq(programs: &LabPrograms) -> Result<u64> {
    Ok(programs.sink()?.max_seq.max(programs.gen_state()?.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{LAB_MAGIC, checksum, udp6_checksum};

    fn frame(v6: bool) -> Vec<u8> {
        let (s, d) = (Ipv4Addr::new(10, 128, 0, 32), Ipv4Addr::new(10, 128, 0, 2));
        if v6 {
            build_frame(
                [2; 6],
                [4; 6],
                v6_of(s).into(),
                v6_of(d).into(),
                SPORT_BASE,
                64,
            )
        } else {
            build_frame([2; 6], [4; 6], s.into(), d.into(), SPORT_BASE, 64)
        }
    }

    #[test]
    fn stamped_ipv4_frames_carry_seq_time_flow_and_a_valid_header() {
        let mut f = frame(false);
        stamp(&mut f, false, FlowMode::Many, 4, 0x0a80_0020, 10_003, 77);
        assert_eq!(checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(&f[26..30], &[10, 128, 0, 35], "source 3 of 4");
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), SPORT_BASE + 3);
        assert_eq!(&f[42..46], &LAB_MAGIC.to_ne_bytes());
        assert_eq!(u64::from_ne_bytes(f[46..54].try_into().unwrap()), 10_003);
        assert_eq!(u64::from_ne_bytes(f[54..62].try_into().unwrap()), 77);
        let mut g = frame(false);
        stamp(&mut g, false, FlowMode::New, 2, 0x0a80_0020, 64_512 + 5, 1);
        assert_eq!(u16::from_be_bytes([g[34], g[35]]), 1029);
        assert_eq!(&g[26..30], &[10, 128, 0, 33], "the second round of ports");
    }

    #[test]
    fn stamped_ipv6_frames_have_a_valid_udp_checksum() {
        let mut f = frame(true);
        stamp(
            &mut f,
            true,
            FlowMode::Few,
            1,
            0x0a80_0020,
            123_456_789,
            987_654_321,
        );
        assert_eq!(u16::from_be_bytes([f[60], f[61]]), udp6_checksum(&f));
        assert_eq!(
            u64::from_ne_bytes(f[66..74].try_into().unwrap()),
            123_456_789
        );
    }

    #[test]
    fn generator_kinds_parse() {
        assert_eq!("afxdp".parse::<GeneratorKind>(), Ok(GeneratorKind::Afxdp));
        assert_eq!(
            "live-frames".parse::<GeneratorKind>(),
            Ok(GeneratorKind::LiveFrames)
        );
        assert!("pktgen".parse::<GeneratorKind>().is_err());
        assert!(monotonic_ns() > 0);
    }
}
