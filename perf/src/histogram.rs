//! [`LatencyHistogram`]: an HDR histogram of nanoseconds that never allocates while recording.
//!
//! Values from 1 ns to 60 s are kept to 3 significant digits (so every value below 2,048 ns is
//! exact and larger ones are within 0.1%). Recording a value above the top clamps it to the top
//! and counts it in [`LatencyHistogram::saturated`], so an outlier is never silently lost and
//! recording never fails or resizes. The same type counts small integers too (batch sizes).
//!
//! For transport between processes a histogram serializes (serde) as its configuration and the
//! list of non-empty buckets, `(value, count)`, each value being the highest value equivalent to
//! its bucket; deserializing records each bucket back into the same bucket, so the round trip
//! is exact.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest value the default histogram tells apart: 1 ns.
pub const DEFAULT_LOWEST_NS: u64 = 1;
/// Highest value the default histogram tracks: 60 s in nanoseconds. Larger values are clamped.
pub const DEFAULT_HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits the default histogram keeps.
pub const DEFAULT_SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram configuration or serialized histogram that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// The bounds or precision are not ones an HDR histogram can be built with
    /// (`lowest >= 1`, `highest >= 2 * lowest`, `significant_digits <= 5`).
    #[error(
        "invalid histogram bounds lowest={lowest} highest={highest} \
         significant_digits={significant_digits}: {reason}"
    )]
    InvalidBounds {
        /// The requested lowest discernible value.
        lowest: u64,
        /// The requested highest trackable value.
        highest: u64,
        /// The requested number of significant digits.
        significant_digits: u8,
        /// What the histogram library objected to.
        reason: String,
    },
    /// A serialized bucket lies above the bucket holding the histogram's own highest trackable
    /// value.
    #[error("serialized bucket value {value} is above the histogram's highest value {highest}")]
    BucketOutOfRange {
        /// The bucket's value.
        value: u64,
        /// The histogram's highest trackable value.
        highest: u64,
    },
}

/// A latency histogram in nanoseconds (or a histogram of any small non-negative quantity).
///
/// Recording is constant time and never allocates. Two histograms with the same bounds merge
/// exactly with [`add`](Self::add); histograms with different bounds merge bucket by bucket.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
    saturated: u64,
}

/// The headline numbers of a [`LatencyHistogram`], in the histogram's unit (nanoseconds).
///
/// Quantile values are the highest value equivalent to the bucket holding that quantile, so they
/// are within the histogram's precision (0.1%) above the true value. All fields are 0 for an
/// empty histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of recorded values.
    pub count: u64,
    /// Lowest recorded value.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Highest recorded value.
    pub max_ns: u64,
    /// Mean of the recorded values (computed from the buckets).
    pub mean_ns: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for LatencyHistogram {
    /// Equal when bounds, every bucket count, min, max and the saturation count are equal.
    fn eq(&self, other: &Self) -> bool {
        self.saturated == other.saturated
            && self.highest() == other.highest()
            && self.inner == other.inner
    }
}

impl LatencyHistogram {
    /// An empty histogram for 1 ns .. 60 s at 3 significant digits (about 220 KiB).
    pub fn new() -> Self {
        Self::with_bounds(
            DEFAULT_LOWEST_NS,
            DEFAULT_HIGHEST_NS,
            DEFAULT_SIGNIFICANT_DIGITS,
        )
        .expect("the default bounds are valid")
    }

    /// An empty histogram with its own bounds: `lowest` discernible value (at least 1),
    /// `highest` trackable value (at least `2 * lowest`) and `significant_digits` (0..=5).
    pub fn with_bounds(
        lowest: u64,
        highest: u64,
        significant_digits: u8,
    ) -> Result<Self, HistogramError> {
        let mut inner =
            Histogram::new_with_bounds(lowest, highest, significant_digits).map_err(|e| {
                HistogramError::InvalidBounds {
                    lowest,
                    highest,
                    significant_digits,
                    reason: e.to_string(),
                }
            })?;
        inner.auto(false);
        Ok(Self {
            inner,
            saturated: 0,
        })
    }

    /// Record one value. A value above [`highest`](Self::highest) is recorded as `highest` and
    /// counted in [`saturated`](Self::saturated).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Record `count` occurrences of one value (clamped like [`record`](Self::record)).
    #[inline]
    pub fn record_n(&mut self, ns: u64, count: u64) {
        if ns > self.inner.high() {
            self.saturated = self.saturated.saturating_add(count);
        }
        self.inner.saturating_record_n(ns, count);
    }

    /// Record one value measured by a sender that paces itself at one request every
    /// `expected_interval_ns`, correcting for coordinated omission.
    ///
    /// A sample that took longer than the interval delayed the requests that should have been
    /// sent meanwhile, so their latencies are added as synthetic samples: `ns - interval`,
    /// `ns - 2 * interval`, … down to (and including) `interval`. The result is bucket for bucket
    /// what hdrhistogram's `record_correct` gives, but it costs one step per histogram bucket
    /// touched rather than one per synthetic sample, so a long stall with a short interval stays
    /// cheap. An interval of 0 records the value alone.
    pub fn record_paced(&mut self, ns: u64, expected_interval_ns: u64) {
        self.record(ns);
        let interval = expected_interval_ns;
        let value = ns.min(self.inner.high());
        if interval == 0 || value <= interval {
            return;
        }
        // Synthetic samples form the progression value - k*interval >= interval, k = 1, 2, ...
        // Walk it from the top, taking every term that falls in the current bucket at once.
        let mut x = value - interval;
        while x >= interval {
            let floor = self.inner.lowest_equivalent(x).max(interval);
            let terms = (x - floor) / interval + 1;
            self.inner.saturating_record_n(x, terms);
            match x.checked_sub(terms * interval) {
                Some(next) => x = next,
                None => break,
            }
        }
    }

    /// Merge `other` into this histogram: afterwards it is as if every value recorded into
    /// `other` had been recorded here too. Saturation counts add up. With equal bounds this is an
    /// exact bucket-wise sum; otherwise each of `other`'s buckets is re-recorded here (clamped).
    pub fn add(&mut self, other: &LatencyHistogram) {
        let before = self.saturated;
        if self.same_bounds(other) && self.inner.add(&other.inner).is_ok() {
            self.saturated = before.saturating_add(other.saturated);
            return;
        }
        for (value, count) in other.buckets() {
            // The bucket's lowest value: its highest may lie above `other`'s top (and so read as
            // saturated here) even when no sample in it was clamped.
            self.record_n(other.inner.lowest_equivalent(value), count);
        }
        // `other`'s saturated samples sit in its top bucket: if that bucket was clamped again
        // here they are already among the newly saturated ones, so count them once.
        let newly = self.saturated - before;
        self.saturated = before.saturating_add(newly.max(other.saturated));
    }

    /// The value at quantile `q` (0.0 ..= 1.0; out-of-range values are clamped, NaN reads as 0).
    /// Returns 0 for an empty histogram.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        self.inner.value_at_quantile(q)
    }

    /// The fraction (0.0 ..= 1.0) of recorded values at or below `ns`; 0 for an empty histogram.
    pub fn quantile_below(&self, ns: u64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.inner.quantile_below(ns)
    }

    /// Number of values recorded (synthetic coordinated-omission samples included).
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Lowest recorded value (to the histogram's precision); 0 when empty.
    pub fn min(&self) -> u64 {
        self.inner.min()
    }

    /// Highest recorded value (to the histogram's precision); 0 when empty.
    pub fn max(&self) -> u64 {
        if self.is_empty() { 0 } else { self.inner.max() }
    }

    /// Mean of the recorded values, computed from the buckets; 0.0 when empty.
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.inner.mean()
        }
    }

    /// Standard deviation of the recorded values, computed from the buckets; 0.0 when empty.
    pub fn stdev(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.inner.stdev()
        }
    }

    /// Number of recorded values that were above [`highest`](Self::highest) and were clamped.
    pub fn saturated(&self) -> u64 {
        self.saturated
    }

    /// Forget everything recorded (the allocation is kept).
    pub fn reset(&mut self) {
        self.inner.reset();
        self.saturated = 0;
    }

    /// Lowest discernible value of this histogram.
    pub fn lowest(&self) -> u64 {
        self.inner.low()
    }

    /// Highest trackable value of this histogram; larger values are clamped to it.
    pub fn highest(&self) -> u64 {
        self.inner.high()
    }

    /// Significant decimal digits this histogram keeps.
    pub fn significant_digits(&self) -> u8 {
        self.inner.sigfig()
    }

    /// The non-empty buckets in ascending order, as `(value, count)`, where `value` is the
    /// highest value equivalent to the bucket.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.inner
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
    }

    /// The headline numbers: count, min, p50, p90, p99, p99.9, max and mean.
    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.len(),
            min_ns: self.min(),
            p50_ns: self.value_at_quantile(0.5),
            p90_ns: self.value_at_quantile(0.9),
            p99_ns: self.value_at_quantile(0.99),
            p999_ns: self.value_at_quantile(0.999),
            max_ns: self.max(),
            mean_ns: self.mean(),
        }
    }

    fn same_bounds(&self, other: &LatencyHistogram) -> bool {
        self.lowest() == other.lowest()
            && self.highest() == other.highest()
            && self.significant_digits() == other.significant_digits()
    }
}

/// The serialized form: configuration plus non-empty buckets.
#[derive(Serialize, Deserialize)]
struct HistogramWire {
    lowest: u64,
    highest: u64,
    significant_digits: u8,
    saturated: u64,
    buckets: Vec<(u64, u64)>,
}

impl TryFrom<HistogramWire> for LatencyHistogram {
    type Error = HistogramError;

    fn try_from(wire: HistogramWire) -> Result<Self, HistogramError> {
        let mut h = Self::with_bounds(wire.lowest, wire.highest, wire.significant_digits)?;
        for (value, count) in wire.buckets {
            // The top bucket's highest value may exceed `highest`; its lowest may not.
            let lowest = h.inner.lowest_equivalent(value);
            if lowest > h.highest() {
                return Err(HistogramError::BucketOutOfRange {
                    value,
                    highest: h.highest(),
                });
            }
            h.inner.saturating_record_n(lowest, count);
        }
        h.saturated = wire.saturated;
        Ok(h)
    }
}

impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        HistogramWire {
            lowest: self.lowest(),
            highest: self.highest(),
            significant_digits: self.significant_digits(),
            saturated: self.saturated,
            buckets: self.buckets().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = HistogramWire::deserialize(deserializer)?;
        LatencyHistogram::try_from(wire).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative precision of the default histogram.
    fn close(actual: u64, expected: u64) -> bool {
        let tolerance = (expected as f64 * 0.001).max(1.0);
        (actual as f64 - expected as f64).abs() <= tolerance
    }

    #[test]
    fn uniform_distribution_quantiles() {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.len(), 10_000);
        assert_eq!(h.min(), 1);
        assert!(close(h.max(), 10_000), "max {}", h.max());
        assert!(close(h.value_at_quantile(0.5), 5_000));
        assert!(close(h.value_at_quantile(0.9), 9_000));
        assert!(close(h.value_at_quantile(0.99), 9_900));
        assert!(close(h.value_at_quantile(0.999), 9_990));
        assert!((h.mean() - 5_000.5).abs() < 5.0, "mean {}", h.mean());
        // Out-of-range quantiles clamp instead of panicking.
        assert_eq!(h.value_at_quantile(-1.0), h.value_at_quantile(0.0));
        assert_eq!(h.value_at_quantile(7.0), h.max());
        assert_eq!(h.value_at_quantile(f64::NAN), h.value_at_quantile(0.0));
        assert!((h.quantile_below(5_000) - 0.5).abs() < 0.001);
    }

    #[test]
    fn small_values_are_exact_and_bimodal_tail_is_found() {
        let mut h = LatencyHistogram::new();
        h.record_n(300, 990);
        h.record_n(1_000_000, 10);
        assert_eq!(h.value_at_quantile(0.5), 300);
        assert_eq!(h.value_at_quantile(0.99), 300);
        assert!(close(h.value_at_quantile(0.991), 1_000_000));
        assert!(close(h.max(), 1_000_000));
        let s = h.summary();
        assert_eq!(s.count, 1_000);
        assert_eq!(s.min_ns, 300);
        assert_eq!(s.p50_ns, 300);
        assert_eq!(s.p90_ns, 300);
        assert_eq!(s.p99_ns, 300);
        assert!(close(s.p999_ns, 1_000_000));
        assert!((s.mean_ns - (300.0 * 0.99 + 1_000_000.0 * 0.01)).abs() < 20.0);
    }

    #[test]
    fn empty_histogram_reads_as_zero() {
        let h = LatencyHistogram::new();
        assert!(h.is_empty());
        assert_eq!((h.len(), h.min(), h.max()), (0, 0, 0));
        assert_eq!(h.mean(), 0.0);
        assert_eq!(h.value_at_quantile(0.99), 0);
        assert_eq!(h.quantile_below(10), 0.0);
        assert_eq!(h.summary(), LatencySummary::default());
    }

    #[test]
    fn values_above_the_top_are_clamped_and_counted() {
        let mut h = LatencyHistogram::new();
        h.record(5);
        h.record(DEFAULT_HIGHEST_NS + 1);
        h.record_n(u64::MAX, 3);
        assert_eq!(h.len(), 5);
        assert_eq!(h.saturated(), 4);
        assert!(close(h.max(), DEFAULT_HIGHEST_NS));
        h.reset();
        assert!(h.is_empty());
        assert_eq!(h.saturated(), 0);
    }

    #[test]
    fn merge_equals_recording_everything_into_one() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        let mut all = LatencyHistogram::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20_000u64 {
            // xorshift: a spread of values from 1 ns to ~1 s.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 1 + (x % (1 << (1 + i % 30)));
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.record(DEFAULT_HIGHEST_NS * 2);
        all.record(DEFAULT_HIGHEST_NS * 2);
        let mut merged = a.clone();
        merged.add(&b);
        assert_eq!(merged, all);
        assert_eq!(merged.saturated(), 1);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), all.value_at_quantile(q));
        }
        // Adding an empty histogram changes nothing; adding into an empty one copies.
        let before = merged.clone();
        merged.add(&LatencyHistogram::new());
        assert_eq!(merged, before);
        let mut empty = LatencyHistogram::new();
        empty.add(&all);
        assert_eq!(empty, all);
    }

    #[test]
    fn merge_across_different_bounds_rerecords_buckets() {
        let mut small = LatencyHistogram::with_bounds(1, 1 << 16, 3).unwrap();
        for v in [1u64, 2, 64, 64, 1_000, 65_000, 1_000_000] {
            small.record(v);
        }
        assert_eq!(small.saturated(), 1);
        let mut big = LatencyHistogram::new();
        big.add(&small);
        assert_eq!(big.len(), 7);
        assert_eq!(big.saturated(), 1);
        assert_eq!(big.value_at_quantile(0.5), 64);
        // And the other way round: big values clamp into the small histogram and are counted.
        let mut other = LatencyHistogram::new();
        other.record(10_000_000);
        small.add(&other);
        assert_eq!(small.len(), 8);
        assert_eq!(small.saturated(), 2);
        // A sample saturated in `other` and clamped again here is counted once.
        let mut top = LatencyHistogram::new();
        top.record(DEFAULT_HIGHEST_NS * 2);
        let mut tiny = LatencyHistogram::with_bounds(1, 1_000, 3).unwrap();
        tiny.add(&top);
        assert_eq!((tiny.len(), tiny.saturated()), (1, 1));
    }

    #[test]
    fn paced_recording_adds_the_missing_samples() {
        // A 1 ms stall in a sender pacing every 100 µs hides 9 requests: 900, 800, ... 100 µs.
        let mut h = LatencyHistogram::new();
        h.record_paced(1_000_000, 100_000);
        assert_eq!(h.len(), 10);
        let mut expected = LatencyHistogram::new();
        for k in 1..=10u64 {
            expected.record(k * 100_000);
        }
        assert_eq!(h, expected);

        // A sample within the interval adds nothing; interval 0 disables the correction.
        let mut h = LatencyHistogram::new();
        h.record_paced(50, 100);
        h.record_paced(100, 100);
        h.record_paced(10_000, 0);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn paced_recording_matches_hdrhistogram_record_correct() {
        for &(value, interval) in &[
            (1_000_000u64, 100_000u64),
            (1_234_567, 1_000),
            (5_000, 7),
            (3_000_000, 1),
            (2_047, 2),
            (10_000_000, 9_999),
            (DEFAULT_HIGHEST_NS / 1_000, 12_345),
        ] {
            let mut ours = LatencyHistogram::new();
            ours.record_paced(value, interval);
            let mut reference = Histogram::<u64>::new_with_bounds(
                DEFAULT_LOWEST_NS,
                DEFAULT_HIGHEST_NS,
                DEFAULT_SIGNIFICANT_DIGITS,
            )
            .unwrap();
            reference.record_correct(value, interval).unwrap();
            assert_eq!(ours.inner, reference, "value {value} interval {interval}");
            assert_eq!(
                ours.len(),
                value / interval,
                "value {value} interval {interval}"
            );
        }
    }

    #[test]
    fn paced_recording_of_a_huge_stall_is_cheap_and_clamped() {
        let mut h = LatencyHistogram::new();
        // 2 minutes at 1 ns pacing would be 1.2e11 loop iterations the naive way.
        h.record_paced(120_000_000_000, 1);
        assert_eq!(h.saturated(), 1);
        assert_eq!(h.len(), DEFAULT_HIGHEST_NS);
        assert!(close(h.value_at_quantile(0.5), DEFAULT_HIGHEST_NS / 2));
    }

    #[test]
    fn serde_round_trip_is_exact() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        for v in [1u64, 2, 3, 2_048, 2_049, 123_456, 7_654_321, 59_999_999_999] {
            h.record_n(v, v % 7 + 1);
        }
        h.record(DEFAULT_HIGHEST_NS * 3);
        let json = serde_json::to_string(&h).unwrap();
        let back: LatencyHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.saturated(), 1);
        assert_eq!(back.summary(), h.summary());
        assert_eq!(
            back.buckets().collect::<Vec<_>>(),
            h.buckets().collect::<Vec<_>>()
        );

        let mut counts = LatencyHistogram::with_bounds(1, 4_096, 2).unwrap();
        counts.record_n(64, 10);
        let back: LatencyHistogram =
            serde_json::from_str(&serde_json::to_string(&counts).unwrap()).unwrap();
        assert_eq!(back, counts);
        assert_eq!(back.highest(), counts.highest());
    }

    #[test]
    fn bad_serialized_histograms_are_rejected() {
        let bad_bounds =
            r#"{"lowest":0,"highest":10,"significant_digits":3,"saturated":0,"buckets":[]}"#;
        let err = serde_json::from_str::<LatencyHistogram>(bad_bounds).unwrap_err();
        assert!(
            err.to_string().contains("invalid histogram bounds"),
            "{err}"
        );
        let bad_bucket = concat!(
            r#"{"lowest":1,"highest":1000,"significant_digits":3,"saturated":0,"#,
            r#""buckets":[[5000000,1]]}"#
        );
        let err = serde_json::from_str::<LatencyHistogram>(bad_bucket).unwrap_err();
        assert!(
            err.to_string().contains("above the histogram's highest"),
            "{err}"
        );
        assert!(matches!(
            LatencyHistogram::with_bounds(10, 11, 3),
            Err(HistogramError::InvalidBounds { .. })
        ));
    }
}
