//! What a worker publishes about itself: packet and byte counters by verdict and drop reason,
//! socket statistics, connection-table use, its heartbeat, and its per-core latency
//! histograms for the `perf` crate.
//!
//! The worker counts in plain local variables and publishes them every
//! [`PUBLISH_INTERVAL_NS`] (and before it blocks) with relaxed atomic stores and one `try_lock`
//! of the histogram slot, so the per-packet path touches no shared cache line and never waits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use identity_cache::verdict::DropReason;
use perf::CoreStats;

use crate::flow::FlowVerdict;

/// How often a busy worker publishes its counters and histograms.
pub const PUBLISH_INTERVAL_NS: u64 = 100_000_000;

/// Index of a verdict in the per-verdict counters.
pub(crate) fn verdict_index(v: FlowVerdict) -> usize {
    match v {
        FlowVerdict::Forwarded => 0,
        FlowVerdict::Dropped => 1,
        FlowVerdict::Audit => 2,
    }
}

/// Slots of the per-reason drop counters: the reason's number (1..=9); slot 0 unused.
pub const DROP_SLOTS: usize = 16;

/// An AF_XDP socket's kernel-side counters (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Interface index.
    pub ifindex: u32,
    /// Queue.
    pub queue: u32,
    /// Frames dropped by the kernel for a reason other than a full ring.
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full (the worker is too slow).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty (the worker returned frames too slowly).
    pub rx_fill_ring_empty: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty: u64,
}

impl SocketStats {
    /// Frames the socket lost before the worker saw them.
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full
    }
}

/// Counters a worker keeps locally and publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets by verdict: forwarded, dropped, audit.
    pub packets: [u64; 3],
    /// Bytes by verdict.
    pub bytes: [u64; 3],
    /// Drops by reason number.
    pub drops: [u64; DROP_SLOTS],
    /// Frames that were not IP or failed parsing (dropped as malformed).
    pub unparsed: u64,
    /// Forwarded packets dropped because the egress socket's ring or frames ran out.
    pub egress_full: u64,
    /// Packets allowed as replies of tracked connections.
    pub replies: u64,
    /// New flows not tracked because the connection table was full.
    pub conntrack_full: u64,
    /// Connections in the table.
    pub conntrack_entries: u64,
    /// Flow events dropped because the event queue was full.
    pub events_lost: u64,
    /// Times the worker blocked waiting for packets.
    pub sleeps: u64,
    /// `sendto()` kicks made for TX.
    pub tx_kicks: u64,
}

impl Counters {
    /// Packets seen.
    pub fn total_packets(&self) -> u64 {
        self.packets.iter().sum()
    }

    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

/// The shared side of one worker's statistics.
#[derive(Default)]
pub struct WorkerStats {
    packets: [AtomicU64; 3],
    bytes: [AtomicU64; 3],
    drops: [AtomicU64; DROP_SLOTS],
    unparsed: AtomicU64,
    egress_full: AtomicU64,
    replies: AtomicU64,
    conntrack_full: AtomicU64,
    conntrack_entries: AtomicU64,
    events_lost: AtomicU64,
    sleeps: AtomicU64,
    tx_kicks: AtomicU64,
    heartbeat_ns: AtomicU64,
    sleeping: AtomicBool,
    sockets: Mutex<Vec<SocketStats>>,
    core: Mutex<Option<CoreStats>>,
}

impl WorkerStats {
    /// Publishes the worker's counters.
    pub(crate) fn publish(&self, c: &Counters) {
        let store = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        for i in 0..3 {
            store(&self.packets[i], c.packets[i]);
            store(&self.bytes[i], c.bytes[i]);
        }
        for i in 0..DROP_SLOTS {
            store(&self.drops[i], c.drops[i]);
        }
        store(&self.unparsed, c.unparsed);
        store(&self.egress_full, c.egress_full);
        store(&self.replies, c.replies);
        store(&self.conntrack_full, c.conntrack_full);
        store(&self.conntrack_entries, c.conntrack_entries);
        store(&self.events_lost, c.events_lost);
        store(&self.sleeps, c.sleeps);
        store(&self.tx_kicks, c.tx_kicks);
    }

    /// The counters as last published.
    pub fn counters(&self) -> Counters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut c = Counters::default();
        for i in 0..3 {
            c.packets[i] = load(&self.packets[i]);
            c.bytes[i] = load(&self.bytes[i]);
        }
        for i in 0..DROP_SLOTS {
            c.drops[i] = load(&self.drops[i]);
        }
        c.unparsed = load(&self.unparsed);
        c.egress_full = load(&self.egress_full);
        c.replies = load(&self.replies);
        c.conntrack_full = load(&self.conntrack_full);
        c.conntrack_entries = load(&self.conntrack_entries);
        c.events_lost = load(&self.events_lost);
        c.sleeps = load(&self.sleeps);
        c.tx_kicks = load(&self.tx_kicks);
        c
    }

    /// Marks the worker alive at `now_ns` (monotonic clock).
    #[inline]
    pub(crate) fn beat(&self, now_ns: u64) {
        self.heartbeat_ns.store(now_ns, Ordering::Relaxed);
    }

    /// When the worker last went round its loop (monotonic nanoseconds).
    pub fn heartbeat_ns(&self) -> u64 {
        self.heartbeat_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::Relaxed);
    }

    /// Whether the worker is blocked waiting for packets (a blocked worker beats at its
    /// block timeout).
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    pub(crate) fn publish_sockets(&self, stats: &[SocketStats]) {
        if let Ok(mut slot) = self.sockets.try_lock() {
            slot.clear();
            slot.extend_from_slice(stats);
        }
    }

    /// The sockets' kernel counters as last published.
    pub fn sockets(&self) -> Vec<SocketStats> {
        self.sockets.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Merges the worker's histograms and counters since its last publication into the
    /// published slot; returns false (and the caller keeps them) when a reader holds it.
    pub(crate) fn publish_core(&self, interval: &CoreStats) -> bool {
        match self.core.try_lock() {
            Ok(mut slot) => {
                match slot.as_mut() {
                    Some(total) => {
                        // Periods of one core follow each other: their lengths add up.
                        let elapsed = total.elapsed_ns + interval.elapsed_ns;
                        total.merge(interval);
                        total.elapsed_ns = elapsed;
                    }
                    None => *slot = Some(interval.clone()),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Per-core statistics since the worker started (or since the last
    /// [`take_core`](Self::take_core)).
    pub fn core(&self) -> Option<CoreStats> {
        self.core.lock().ok().and_then(|s| s.clone())
    }

    /// Takes the per-core statistics, starting a new period.
    pub fn take_core(&self) -> Option<CoreStats> {
        self.core.lock().ok().and_then(|mut s| s.take())
    }
}
