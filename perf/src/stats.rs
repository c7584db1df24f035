//! [`CoreStats`]: what one worker (one pinned core) did over a measurement period.

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;

/// The `core` number of a [`CoreStats`] that merges several cores (see
/// [`LatencyReport::merged`](crate::LatencyReport::merged)).
pub const ALL_CORES: usize = usize::MAX;

/// Counters and histograms of one worker thread on one core.
///
/// A worker owns its `CoreStats` and records into it without synchronisation; a reporter takes
/// a copy (or the worker hands it over) and merges copies with [`merge`](Self::merge). The
/// derived rates use `elapsed_ns`, which the owner sets to the length of the measured period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreStats {
    /// CPU the worker is pinned to ([`ALL_CORES`] for a merged total).
    pub core: usize,
    /// Worker name, e.g. the interface and queue it serves.
    pub name: String,
    /// Packets processed.
    pub packets: u64,
    /// Bytes processed (frame lengths).
    pub bytes: u64,
    /// Non-empty batches processed.
    pub batches: u64,
    /// Length of the measured period in nanoseconds.
    pub elapsed_ns: u64,
    /// Per-packet processing time in nanoseconds.
    pub latency: LatencyHistogram,
    /// Packets per batch (a count, not a time).
    pub batch_sizes: LatencyHistogram,
    /// Times the worker went to sleep in `poll()` and was woken.
    pub wakeups: u64,
    /// Time from blocking in `poll()` to running again with work, in nanoseconds.
    pub wakeup_latency: LatencyHistogram,
}

impl CoreStats {
    /// Empty statistics for the worker `name` on CPU `core`.
    pub fn new(core: usize, name: impl Into<String>) -> Self {
        Self {
            core,
            name: name.into(),
            ..Self::default()
        }
    }

    /// Count one batch of `packets` packets totalling `bytes` bytes (counters and batch size
    /// only). An empty batch (`packets == 0`) is not a batch and is ignored.
    #[inline]
    pub fn count_batch(&mut self, packets: u64, bytes: u64) {
        if packets == 0 {
            return;
        }
        self.batches += 1;
        self.packets += packets;
        self.bytes += bytes;
        self.batch_sizes.record(packets);
    }

    /// Count one batch (as [`count_batch`](Self::count_batch)) that took `batch_ns` to process,
    /// recording `batch_ns / packets` as the processing time of each of its packets.
    #[inline]
    pub fn record_batch(&mut self, packets: u64, bytes: u64, batch_ns: u64) {
        if packets == 0 {
            return;
        }
        self.count_batch(packets, bytes);
        self.latency.record_n(batch_ns / packets, packets);
    }

    /// Count one wakeup from a blocking wait that took `latency_ns` to come back with work.
    #[inline]
    pub fn record_wakeup(&mut self, latency_ns: u64) {
        self.wakeups += 1;
        self.wakeup_latency.record(latency_ns);
    }

    /// Packets per second over `elapsed_ns`; 0.0 when no time has elapsed.
    pub fn pps(&self) -> f64 {
        rate(self.packets, self.elapsed_ns)
    }

    /// Bits per second (frame bytes × 8) over `elapsed_ns`; 0.0 when no time has elapsed.
    pub fn bits_per_second(&self) -> f64 {
        rate(self.bytes.saturating_mul(8), self.elapsed_ns)
    }

    /// Mean packets per batch; 0.0 when there were no batches.
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.packets as f64 / self.batches as f64
        }
    }

    /// Fold `other` into these statistics: counters add up, histograms merge, and the elapsed
    /// time is the longer of the two (the cores ran side by side). `core` and `name` are kept.
    pub fn merge(&mut self, other: &CoreStats) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.batches = self.batches.saturating_add(other.batches);
        self.elapsed_ns = self.elapsed_ns.max(other.elapsed_ns);
        self.latency.add(&other.latency);
        self.batch_sizes.add(&other.batch_sizes);
        self.wakeups = self.wakeups.saturating_add(other.wakeups);
        self.wakeup_latency.add(&other.wakeup_latency);
    }

    /// Zero every counter and histogram, keeping `core` and `name`.
    pub fn reset(&mut self) {
        self.packets = 0;
        self.bytes = 0;
        self.batches = 0;
        self.elapsed_ns = 0;
        self.latency.reset();
        self.batch_sizes.reset();
        self.wakeups = 0;
        self.wakeup_latency.reset();
    }
}

fn rate(count: u64, elapsed_ns: u64) -> f64 {
    if elapsed_ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / elapsed_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_drive_counters_and_histograms() {
        let mut s = CoreStats::new(3, "veth0/q0");
        s.record_batch(64, 64 * 64, 6_400);
        s.record_batch(32, 32 * 1500, 6_400);
        s.record_batch(0, 0, 1_000); // an empty poll is not a batch
        s.elapsed_ns = 1_000_000; // 1 ms
        assert_eq!(
            (s.packets, s.bytes, s.batches),
            (96, 64 * 64 + 32 * 1500, 2)
        );
        assert_eq!(s.pps(), 96_000.0);
        assert_eq!(
            s.bits_per_second(),
            (64.0 * 64.0 + 32.0 * 1500.0) * 8.0 * 1_000.0
        );
        assert_eq!(s.mean_batch(), 48.0);
        assert_eq!(s.batch_sizes.len(), 2);
        assert_eq!(s.batch_sizes.min(), 32);
        // 64 packets at 100 ns and 32 at 200 ns.
        assert_eq!(s.latency.len(), 96);
        assert_eq!(s.latency.value_at_quantile(0.5), 100);
        assert_eq!(s.latency.value_at_quantile(0.9), 200);
        s.record_wakeup(5_000);
        // 5,000 ns reads back as the highest value of its 4 ns wide bucket.
        assert_eq!((s.wakeups, s.wakeup_latency.max()), (1, 5_003));
    }

    #[test]
    fn rates_of_an_empty_period_are_zero() {
        let s = CoreStats::new(0, "idle");
        assert_eq!(
            (s.pps(), s.bits_per_second(), s.mean_batch()),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn merge_sums_counters_and_takes_the_longest_period() {
        let mut a = CoreStats::new(0, "a");
        a.record_batch(10, 640, 1_000);
        a.record_wakeup(700);
        a.elapsed_ns = 2_000;
        let mut b = CoreStats::new(1, "b");
        b.record_batch(30, 1_920, 9_000);
        b.elapsed_ns = 3_000;
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!((m.core, m.name.as_str()), (0, "a"));
        assert_eq!(
            (m.packets, m.bytes, m.batches, m.wakeups),
            (40, 2_560, 2, 1)
        );
        assert_eq!(m.elapsed_ns, 3_000);
        assert_eq!(m.latency.len(), 40);
        assert_eq!(m.latency.value_at_quantile(0.25), 100);
        assert_eq!(m.latency.value_at_quantile(1.0), 300);
        assert_eq!(m.mean_batch(), 20.0);
        m.reset();
        assert_eq!(m, CoreStats::new(0, "a"));
    }

    #[test]
    fn serde_round_trip() {
        let mut s = CoreStats::new(1, "lxc12");
        s.record_batch(64, 4_096, 12_800);
        s.record_wakeup(3_300);
        s.elapsed_ns = 1_000_000_000;
        let back: CoreStats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // Missing fields default (older or partial reports still load).
        let partial: CoreStats = serde_json::from_str(r#"{"core":2,"packets":5}"#).unwrap();
        assert_eq!(
            (partial.core, partial.packets, partial.latency.len()),
            (2, 5, 0)
        );
    }
}
