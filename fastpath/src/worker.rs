//! A worker: one thread pinned to one core, owning the sockets of the (interface, queue)
//! pairs it serves, deciding every packet they receive.
//!
//! The loop, per round: take the current snapshot (one consistent policy for the round), then
//! for each socket an RX burst → parse → decide → rewrite MACs and queue for TX on the
//! egress socket, or return the frame; flush TX (looping `sendto()` while copy mode has frames
//! pending), take completed frames back, refill the fill rings. Nothing on this path
//! allocates, locks or makes a system call besides the TX kicks. After
//! [`Scheduling::busy_poll_rounds`] empty rounds the worker parks its snapshot reader (so a
//! revocation barrier does not wait for it) and blocks in `epoll` on its sockets.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use identity_cache::publication::Reader;
use identity_cache::state::Snapshot;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use perf::CoreStats;
use xsk_rs::FrameDesc;

use crate::conntrack::{ConnTable, Recorded, Timeouts};
use crate::error::FastPathError;
use crate::flow::{EventKind, EventSettings, FlowEvent, FlowEventQueue, ObservationPoint};
use crate::pipeline::{self, Decision, Disposition};
use crate::sched::{self, Scheduling};
use crate::socket::{BindMode, PortSpec, RingSizes, SocketSet, UmemMode};
use crate::stats::{Counters, PUBLISH_INTERVAL_NS, SocketStats, WorkerStats, verdict_index};
use crate::wire::{self, Frame, PacketSummary};
use identity_cache::verdict::DropReason;

/// How often an idle worker removes expired connections from the next piece of its table.
const SWEEP_INTERVAL_NS: u64 = 10_000_000;

/// Connection slots (cache lines) looked at per sweep: 256 KiB, tens of microseconds, so a
/// worker sharing its core with NAPI never holds it long; the default table (131,072 slots)
/// is covered in about 0.3 s.
const SWEEP_SLOTS: usize = 4096;

/// Frames a worker takes from one RX ring per round unless configured otherwise. 32, not the
/// 64 NAPI hands over at once: a burst is decided and sent before the next is taken, so each
/// packet's time in the worker halves, and copy mode sends 32 frames per `sendto()` anyway
/// (BENCHMARKS.md, "Burst size": per-core p99 at half the maximum rate 47 µs instead of
/// 119 µs, throughput within the noise).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Everything one worker needs to start.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker number (names its snapshot reader and its statistics).
    pub index: usize,
    /// Core to pin to; `None` leaves the thread unpinned (tests, development).
    pub core: Option<usize>,
    /// The (interface, queue) pairs it serves; it forwards only between these.
    pub ports: Vec<PortSpec>,
    /// Shared or per-socket UMEM.
    pub umem: UmemMode,
    /// Ring and frame sizes.
    pub rings: RingSizes,
    /// Most frames taken from one RX ring per round.
    pub batch_size: usize,
    /// Core sharing with NAPI.
    pub scheduling: Scheduling,
    /// Connections the worker tracks at most.
    pub conntrack_capacity: usize,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// Which flows are reported.
    pub events: EventSettings,
    /// Capacity of the flow-event queue.
    pub event_queue: usize,
    /// Interfaces whose endpoints start in audit mode.
    pub audit: Vec<u32>,
}

impl WorkerConfig {
    /// A worker serving `ports` with the defaults: shared UMEM, 32-frame bursts,
    /// real-time priority 1 with a 16-round busy-poll window, 65,536 connections.
    pub fn new(index: usize, ports: Vec<PortSpec>) -> Self {
        WorkerConfig {
            index,
            core: None,
            ports,
            umem: UmemMode::Shared,
            rings: RingSizes::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            scheduling: Scheduling::default(),
            conntrack_capacity: 65_536,
            timeouts: Timeouts::default(),
            events: EventSettings::default(),
            event_queue: 8192,
            audit: Vec::new(),
        }
    }
}

/// Instructions to a running worker, applied between rounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Put the endpoint behind `ifindex` in audit mode (or back to enforcing).
    SetAudit {
        /// Host-side interface of the endpoint.
        ifindex: u32,
        /// Audit (true) or enforce (false).
        audit: bool,
    },
    /// Change which flows are reported.
    SetEvents(EventSettings),
    /// Fault injection for degradation drills: make the worker fail as a bug would.
    Fault(Fault),
}

/// A failure to inject into a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The worker thread panics (its sockets close; the kernel path takes over).
    Panic,
    /// The worker stops going round its loop for this long without closing its sockets.
    Stall(Duration),
}

/// State shared between a worker and its owner.
pub struct WorkerShared {
    /// Counters, heartbeat and histograms.
    pub stats: WorkerStats,
    /// Flow events.
    pub events: FlowEventQueue,
    stop: AtomicBool,
}

/// The owner's handle on a running worker.
pub struct WorkerHandle {
    config: WorkerConfig,
    shared: Arc<WorkerShared>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<Result<(), FastPathError>>>,
    sockets: Vec<(u32, u32, RawFd)>,
    bind_modes: Vec<BindMode>,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec; CLOCK_MONOTONIC always exists (vDSO, no
    // system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds of the monotonic clock the worker heartbeats use.
pub fn now_monotonic_ns() -> u64 {
    monotonic_ns()
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl WorkerHandle {
    /// Opens the worker's sockets in the calling thread's network namespace, then starts its
    /// thread (which inherits that namespace). The sockets are not steered into yet: pass
    /// [`sockets`](Self::sockets) to the XDP program's socket map.
    pub fn start(config: WorkerConfig, reader: Reader<Snapshot>) -> Result<Self, FastPathError> {
        if config.batch_size == 0 || config.batch_size > config.rings.ring as usize {
            return Err(FastPathError::Config(format!(
                "batch size {} must be between 1 and the ring size {}",
                config.batch_size, config.rings.ring
            )));
        }
        let sockets = SocketSet::open(&config.ports, config.umem, config.rings)?;
        let descriptors = sockets.descriptors();
        let bind_modes = sockets.ports.iter().map(|p| p.bind_mode).collect();
        let shared = Arc::new(WorkerShared {
            stats: WorkerStats::default(),
            events: FlowEventQueue::new(config.event_queue),
            stop: AtomicBool::new(false),
        });
        let (commands, inbox) = crossbeam::channel::bounded(64);
        let (ready_tx, ready_rx) = crossbeam::channel::bounded(1);
        let thread_config = config.clone();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("sluice-worker-{}", config.index))
            .spawn(move || {
                let setup = prepare_thread(&thread_config);
                let _ = ready_tx.send(setup.as_ref().err().map(|e| e.to_string()));
                setup?;
                run(thread_config, sockets, reader, thread_shared, inbox)
            })
            .map_err(|e| FastPathError::Worker {
                index: config.index,
                reason: format!("cannot start its thread: {e}"),
            })?;
        // The thread reports whether pinning and priority worked before it takes packets.
        let failure = match ready_rx.recv() {
            Ok(None) => None,
            Ok(Some(reason)) => Some(Err(reason)),
            Err(_) => Some(Ok(())),
        };
        if let Some(failure) = failure {
            let reason = match failure {
                Err(reason) => {
                    let _ = thread.join();
                    reason
                }
                Ok(()) => reason_of(thread),
            };
            return Err(FastPathError::Worker {
                index: config.index,
                reason,
            });
        }
        Ok(WorkerHandle {
            config,
            shared,
            commands,
            thread: Some(thread),
            sockets: descriptors,
            bind_modes,
        })
    }

    /// The worker's configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// (ifindex, queue, socket descriptor) of each socket, for the XDP program's socket map.
    /// The descriptors stay valid while the worker runs.
    pub fn sockets(&self) -> &[(u32, u32, RawFd)] {
        &self.sockets
    }

    /// Whether each socket was bound zero-copy or copy mode, in port order.
    pub fn bind_modes(&self) -> &[BindMode] {
        &self.bind_modes
    }

    /// Counters, heartbeat and histograms.
    pub fn stats(&self) -> &WorkerStats {
        &self.shared.stats
    }

    /// The worker's flow events.
    pub fn events(&self) -> &FlowEventQueue {
        &self.shared.events
    }

    /// Shared state, for readers on other threads.
    pub fn shared(&self) -> Arc<WorkerShared> {
        Arc::clone(&self.shared)
    }

    /// Sends an instruction; false when the worker is gone or its inbox is full.
    pub fn send(&self, command: Command) -> bool {
        self.commands.try_send(command).is_ok()
    }

    /// Whether the thread has ended (stopped, failed or panicked).
    pub fn has_exited(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Why the worker ended, once it has: `None` while it runs.
    pub fn exit_reason(&mut self) -> Option<String> {
        if !self.has_exited() {
            return None;
        }
        self.thread.take().map(reason_of)
    }

    /// Stops the worker and waits for it; its sockets close (the kernel removes them from
    /// the socket map, so its traffic falls back to the in-kernel path).
    pub fn stop(mut self) -> Result<(), FastPathError> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(result) => result,
                Err(_) => Err(FastPathError::Worker {
                    index: self.config.index,
                    reason: "panicked".into(),
                }),
            },
            None => Ok(()),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reason_of(thread: JoinHandle<Result<(), FastPathError>>) -> String {
    match thread.join() {
        Ok(Ok(())) => "stopped".into(),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => match panic.downcast_ref::<&str>() {
            Some(s) => format!("panicked: {s}"),
            None => match panic.downcast_ref::<String>() {
                Some(s) => format!("panicked: {s}"),
                None => "panicked".into(),
            },
        },
    }
}

/// Pinning, real-time priority and NAPI placement, on the worker's own thread.
fn prepare_thread(config: &WorkerConfig) -> Result<(), FastPathError> {
    if let Some(core) = config.core {
        sched::pin_current_thread(core)?;
        if config.scheduling.place_napi {
            for port in &config.ports {
                // Threaded NAPI is switched on by the agent where sysfs shows the interface;
                // here its kthreads (if any) join the worker's core.
                sched::place_napi(&port.ifname, core)?;
            }
        }
    }
    if let Some(priority) = config.scheduling.realtime_priority {
        sched::set_current_realtime(priority)?;
    }
    Ok(())
}

/// The per-worker mutable state of the loop.
struct Loop {
    index: u16,
    core: u16,
    conntrack: ConnTable,
    audit: hashbrown::HashSet<u32>,
    events: EventSettings,
    drop_sample: u32,
    counters: Counters,
    interval: CoreStats,
    interval_start_ns: u64,
    last_publish_ns: u64,
    last_sweep_ns: u64,
}

fn run(
    config: WorkerConfig,
    mut sockets: SocketSet,
    mut reader: Reader<Snapshot>,
    shared: Arc<WorkerShared>,
    inbox: Receiver<Command>,
) -> Result<(), FastPathError> {
    let template = sockets.pools[0].free.first().copied().ok_or_else(|| {
        FastPathError::Config("the UMEM has no frame left after filling the rings".into())
    })?;
    let mut rx_descs: Vec<FrameDesc> = vec![template; config.batch_size];
    let mut summaries: Vec<Option<PacketSummary>> = vec![None; config.batch_size];
    let mut scratch: Vec<FrameDesc> = vec![template; config.rings.ring as usize];
    let ports = PortIndex::new(&sockets);
    let mut touched = vec![false; sockets.ports.len()];
    let mut socket_stats: Vec<SocketStats> = Vec::with_capacity(sockets.ports.len());

    let mut poll = Poll::new()?;
    for (i, port) in sockets.ports.iter().enumerate() {
        poll.registry()
            .register(&mut SourceFd(&port.fd), Token(i), Interest::READABLE)?;
    }
    let mut poll_events = Events::with_capacity(sockets.ports.len().max(1));

    let name = config
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.ifname, p.queue))
        .collect::<Vec<_>>()
        .join(",");
    let now = monotonic_ns();
    let mut state = Loop {
        index: config.index as u16,
        core: config.core.map_or(u16::MAX, |c| c as u16),
        conntrack: ConnTable::new(config.conntrack_capacity, config.timeouts),
        audit: config.audit.iter().copied().collect(),
        events: config.events,
        drop_sample: 0,
        counters: Counters::default(),
        interval: CoreStats::new(config.core.unwrap_or(usize::MAX), name),
        interval_start_ns: now,
        last_publish_ns: now,
        last_sweep_ns: now,
    };
    let mut idle_rounds = 0u32;
    let block = Duration::from_millis(config.scheduling.block_timeout_ms.max(1));

    while !shared.stop.load(Ordering::Relaxed) {
        while let Ok(command) = inbox.try_recv() {
            match command {
                Command::SetAudit { ifindex, audit } => {
                    if audit {
                        state.audit.insert(ifindex);
                    } else {
                        state.audit.remove(&ifindex);
                    }
                }
                Command::SetEvents(settings) => state.events = settings,
                Command::Fault(Fault::Panic) => {
                    panic!("fault injected into worker {}", config.index)
                }
                Command::Fault(Fault::Stall(d)) => std::thread::sleep(d),
            }
        }
        let now = monotonic_ns();
        shared.stats.beat(now);
        let snapshot = reader.begin_batch();
        let snapshot = snapshot.value();
        let mut work = 0usize;
        for i in 0..sockets.ports.len() {
            // SAFETY: the descriptors come back from this socket's RX ring, so they are
            // frames of its UMEM, now owned by the worker.
            let n = unsafe { sockets.ports[i].rx.consume(&mut rx_descs) };
            if n == 0 {
                continue;
            }
            work += n;
            let burst_start = monotonic_ns();
            let wall = realtime_ns();
            let mut bytes = 0u64;
            // Read the whole burst first and ask for each packet's connection slot: the
            // decisions below then find them in cache instead of waiting on each in turn.
            for (summary, desc) in summaries.iter_mut().zip(&rx_descs[..n]) {
                *summary = summarize_frame(&sockets, i, desc);
                if let Some(p) = summary {
                    state.conntrack.prefetch(p);
                }
            }
            for (summary, desc) in summaries.iter().zip(&rx_descs[..n]) {
                let desc = *desc;
                bytes += desc.lengths().data() as u64;
                let (decision, len) = decide_frame(
                    &mut sockets,
                    &ports,
                    i,
                    desc,
                    *summary,
                    snapshot,
                    &mut state,
                    burst_start,
                );
                dispose(
                    &mut sockets,
                    &ports,
                    &mut touched,
                    i,
                    desc,
                    decision,
                    len,
                    snapshot,
                    &mut state,
                    &shared,
                    wall,
                    burst_start,
                );
            }
            for (out, t) in touched.iter_mut().enumerate() {
                if *t {
                    state.counters.tx_kicks += u64::from(sockets.flush(out, &mut scratch, 64));
                    *t = false;
                }
            }
            let done = monotonic_ns();
            state.interval.count_batch(n as u64, bytes);
            state
                .interval
                .latency
                .record_n(done.saturating_sub(burst_start), n as u64);
        }
        for i in 0..sockets.ports.len() {
            if sockets.tx_unfinished(i) {
                state.counters.tx_kicks += u64::from(sockets.flush(i, &mut scratch, 64));
            }
            sockets.reap(i, &mut scratch);
            sockets.refill(i);
        }

        let now = monotonic_ns();
        if work > 0 {
            idle_rounds = 0;
            if now.saturating_sub(state.last_publish_ns) >= PUBLISH_INTERVAL_NS {
                publish(&mut state, &sockets, &shared, &mut socket_stats, now);
            }
            continue;
        }
        idle_rounds += 1;
        if idle_rounds < config.scheduling.busy_poll_rounds {
            continue;
        }
        // Idle: publish and tidy the connection table (each at most at its interval: a worker
        // that shares its core with NAPI sleeps after nearly every burst, and both cost tens
        // of microseconds), then park and block on the sockets.
        if now.saturating_sub(state.last_publish_ns) >= PUBLISH_INTERVAL_NS {
            publish(&mut state, &sockets, &shared, &mut socket_stats, now);
        }
        if now.saturating_sub(state.last_sweep_ns) >= SWEEP_INTERVAL_NS {
            state.last_sweep_ns = now;
            state.conntrack.sweep_some(now, SWEEP_SLOTS);
        }
        reader.park();
        shared.stats.set_sleeping(true);
        state.counters.sleeps += 1;
        let blocked_at = monotonic_ns();
        match poll.poll(&mut poll_events, Some(block)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FastPathError::Io(e)),
        }
        shared.stats.set_sleeping(false);
        if !poll_events.is_empty() {
            state
                .interval
                .record_wakeup(monotonic_ns().saturating_sub(blocked_at));
            idle_rounds = 0;
        }
    }
    let now = monotonic_ns();
    publish(&mut state, &sockets, &shared, &mut socket_stats, now);
    reader.park();
    Ok(())
}

/// The worker's ports by interface: a handful at most, so a linear scan of one short array
/// beats hashing on the per-packet path.
struct PortIndex {
    /// (ifindex, port index in the socket set, the host-side MAC of that interface).
    entries: Vec<(u32, usize, [u8; 6])>,
}

impl PortIndex {
    fn new(sockets: &SocketSet) -> Self {
        PortIndex {
            entries: sockets
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| (p.spec.ifindex, i, p.host_mac))
                .collect(),
        }
    }

    /// The port serving `ifindex` and its interface's MAC, if this worker serves it.
    #[inline]
    fn get(&self, ifindex: u32) -> Option<(usize, [u8; 6])> {
        self.entries
            .iter()
            .find(|e| e.0 == ifindex)
            .map(|&(_, port, mac)| (port, mac))
    }
}

/// Reads a received frame of `port`: its summary if it is an IP packet the fast path decides,
/// `None` if it is not IP or malformed.
fn summarize_frame(sockets: &SocketSet, port: usize, desc: &FrameDesc) -> Option<PacketSummary> {
    let pool = sockets.ports[port].pool;
    // SAFETY: the frame came off this port's RX ring and belongs to its pool's UMEM; the
    // worker owns it until it is queued for TX or returned to the pool, and nothing writes it
    // while this view lives.
    let data = unsafe { sockets.pools[pool].umem.data(desc) };
    match wire::summarize(data.contents()) {
        Ok(Frame::Ip(summary)) => Some(summary),
        Ok(Frame::NotIp(_)) | Err(_) => None,
    }
}

/// Decides one received frame from its `summary` ([`summarize_frame`]), rewriting its MACs
/// when it is forwarded.
#[allow(clippy::too_many_arguments)]
fn decide_frame(
    sockets: &mut SocketSet,
    ports: &PortIndex,
    port: usize,
    mut desc: FrameDesc,
    summary: Option<PacketSummary>,
    snapshot: &Snapshot,
    state: &mut Loop,
    now: u64,
) -> (Option<Decided>, usize) {
    let ingress = sockets.ports[port].spec.ifindex;
    let pool = sockets.ports[port].pool;
    let len = desc.lengths().data();
    let Some(summary) = summary else {
        return (None, len);
    };
    let decision = pipeline::decide(
        snapshot,
        &mut state.conntrack,
        &state.audit,
        ingress,
        &summary,
        now,
    );
    if let Disposition::Forward {
        egress_ifindex,
        dst_mac,
    } = decision.disposition
        && let Some((_, src_mac)) = ports.get(egress_ifindex)
    {
        // SAFETY: as above.
        let mut data = unsafe { sockets.pools[pool].umem.data_mut(&mut desc) };
        let _ = wire::rewrite_macs(data.contents_mut(), src_mac, dst_mac);
    }
    let decided = Decided {
        decision,
        protocol: summary.protocol,
        tcp_flags: summary.tcp_flags,
    };
    (Some(decided), len)
}

/// A decision with the packet facts its flow event needs.
struct Decided {
    decision: Decision,
    protocol: u8,
    tcp_flags: u8,
}

/// Sends the frame on or returns it, counts it, and reports the flow when it should be.
#[allow(clippy::too_many_arguments)]
fn dispose(
    sockets: &mut SocketSet,
    ports: &PortIndex,
    touched: &mut [bool],
    port: usize,
    desc: FrameDesc,
    decided: Option<Decided>,
    len: usize,
    snapshot: &Snapshot,
    state: &mut Loop,
    shared: &WorkerShared,
    wall_ns: u64,
    burst_start: u64,
) {
    let pool = sockets.ports[port].pool;
    let Some(Decided {
        mut decision,
        protocol,
        tcp_flags,
    }) = decided
    else {
        state.counters.unparsed += 1;
        state.counters.packets[1] += 1;
        state.counters.bytes[1] += len as u64;
        state.counters.drops[DropReason::Malformed as usize] += 1;
        sockets.pools[pool].free.push(desc);
        return;
    };
    if let Disposition::Forward { egress_ifindex, .. } = decision.disposition {
        match ports.get(egress_ifindex) {
            Some((out, _)) => {
                if sockets.forward(pool, desc, out) {
                    touched[out] = true;
                } else {
                    state.counters.egress_full += 1;
                }
            }
            None => {
                // The destination's interface is served by no socket of this worker.
                decision.disposition = Disposition::Drop(DropReason::NoWorker);
                decision.verdict = crate::flow::FlowVerdict::Dropped;
                decision.drop_reason = Some(DropReason::NoWorker);
                sockets.pools[pool].free.push(desc);
            }
        }
    } else {
        sockets.pools[pool].free.push(desc);
    }
    let v = verdict_index(decision.verdict);
    state.counters.packets[v] += 1;
    state.counters.bytes[v] += len as u64;
    if decision.is_reply {
        state.counters.replies += 1;
    }
    if decision.tracked == Recorded::Full {
        state.counters.conntrack_full += 1;
    }
    if let Disposition::Drop(reason) = decision.disposition {
        state.counters.drops[reason as usize] += 1;
    }
    let kind = match (decision.disposition, decision.tracked) {
        (Disposition::Drop(_), _) => {
            let every = state.events.drop_sample_every;
            if every == 0 {
                return;
            }
            state.drop_sample += 1;
            if state.drop_sample < every {
                return;
            }
            state.drop_sample = 0;
            EventKind::Drop
        }
        _ if decision.verdict == crate::flow::FlowVerdict::Audit => EventKind::VerdictChanged,
        (_, Recorded::New) if state.events.allowed_flows => EventKind::NewFlow,
        (_, Recorded::Untracked | Recorded::Full)
            if state.events.allowed_flows && !decision.is_reply =>
        {
            EventKind::Untracked
        }
        _ => return,
    };
    let rule = decision
        .policy
        .and_then(|v| v.deciding().and_then(|d| d.rule))
        .and_then(|id| snapshot.policy.rule(id).cloned());
    let egress_ifindex = match decision.disposition {
        Disposition::Forward { egress_ifindex, .. } => egress_ifindex,
        Disposition::Drop(_) => 0,
    };
    shared.events.offer(FlowEvent {
        time_ns: wall_ns,
        kind,
        source: decision.source,
        destination: decision.destination,
        protocol,
        tcp_flags,
        direction: decision.direction(),
        verdict: decision.verdict,
        drop_reason: decision.drop_reason,
        rule,
        match_kind: decision.match_kind(),
        is_reply: decision.is_reply,
        observation: ObservationPoint::FastPath,
        ingress_ifindex: sockets.ports[port].spec.ifindex,
        egress_ifindex,
        worker: state.index,
        core: state.core,
        latency_ns: monotonic_ns().saturating_sub(burst_start) as u32,
        bytes: len as u16,
    });
}

fn publish(
    state: &mut Loop,
    sockets: &SocketSet,
    shared: &WorkerShared,
    socket_stats: &mut Vec<SocketStats>,
    now: u64,
) {
    state.last_publish_ns = now;
    state.counters.conntrack_entries = state.conntrack.len() as u64;
    state.counters.events_lost = shared.events.lost();
    shared.stats.publish(&state.counters);
    state.interval.elapsed_ns = now.saturating_sub(state.interval_start_ns);
    if shared.stats.publish_core(&state.interval) {
        state.interval.reset();
        state.interval_start_ns = now;
    }
    socket_stats.clear();
    for port in &sockets.ports {
        if let Ok(s) = port.rx.fd().xdp_statistics() {
            socket_stats.push(SocketStats {
                ifindex: port.spec.ifindex,
                queue: port.spec.queue,
                rx_dropped: s.rx_dropped(),
                rx_invalid_descs: s.rx_invalid_descs(),
                tx_invalid_descs: s.tx_invalid_descs(),
                rx_ring_full: s.rx_ring_full(),
                rx_fill_ring_empty: s.rx_fill_ring_empty_descs(),
                tx_ring_empty: s.tx_ring_empty_descs(),
            });
        }
    }
    shared.stats.publish_sockets(socket_stats);
}
