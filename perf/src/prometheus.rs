//! A small writer of the Prometheus text exposition format (version 0.0.4).
//!
//! Samples are grouped by metric family whatever order they are added in, with `# HELP` and
//! `# TYPE` once per family; names are validated and label values escaped.
//!
//! ```
//! use perf::prometheus::Exposition;
//! let mut e = Exposition::new();
//! e.counter("sluice_packets_total", "Packets decided.", &[("core", "0")], 42.0)?;
//! e.counter("sluice_packets_total", "Packets decided.", &[("core", "1")], 7.0)?;
//! let text = e.render();
//! assert_eq!(text.lines().next(), Some("# HELP sluice_packets_total Packets decided."));
//! assert_eq!(text.lines().nth(1), Some("# TYPE sluice_packets_total counter"));
//! assert_eq!(text.lines().nth(2), Some(r#"sluice_packets_total{core="0"} 42"#));
//! assert_eq!(text.lines().nth(3), Some(r#"sluice_packets_total{core="1"} 7"#));
//! # Ok::<(), perf::prometheus::ExpositionError>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::histogram::LatencyHistogram;
use crate::stats::CoreStats;

/// The `Content-Type` of a rendered exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Quantiles [`Exposition::core_stats`] reports for its summaries.
pub const DEFAULT_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Quantiles, sum and count of observations.
    Summary,
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
        })
    }
}

/// A sample that cannot be written.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExpositionError {
    /// A metric name outside `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {0:?}: it must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    /// A label name outside `[a-zA-Z_][a-zA-Z0-9_]*`, or starting with the reserved `__`.
    #[error(
        "invalid label name {label:?} on metric {metric}: it must match [a-zA-Z_][a-zA-Z0-9_]* \
         and not start with __"
    )]
    InvalidLabelName {
        /// The metric the label was given for.
        metric: String,
        /// The offending label name.
        label: String,
    },
    /// The same label name given twice for one sample.
    #[error("label {label:?} is given twice on metric {metric}")]
    DuplicateLabel {
        /// The metric the labels were given for.
        metric: String,
        /// The repeated label name.
        label: String,
    },
    /// A label name the format reserves for the metric's type (`quantile` on a summary).
    #[error("label {label:?} is reserved on {kind} metric {metric}")]
    ReservedLabel {
        /// The metric the label was given for.
        metric: String,
        /// The reserved label name.
        label: String,
        /// The metric's type.
        kind: MetricType,
    },
    /// A family already declared with another type.
    #[error("metric {metric} is already a {existing} and cannot also be a {requested}")]
    TypeConflict {
        /// The family name.
        metric: String,
        /// The type it was first declared with.
        existing: MetricType,
        /// The type asked for now.
        requested: MetricType,
    },
    /// A family name that clashes with a sample name of another family (`x_sum` and `x_count`
    /// belong to summary `x`).
    #[error("metric name {metric} clashes with the samples of another metric family")]
    NameClash {
        /// The clashing name.
        metric: String,
    },
    /// A second sample with the same labels in one family.
    #[error("metric {metric} already has a sample with labels {{{labels}}}")]
    DuplicateSeries {
        /// The family name.
        metric: String,
        /// The rendered label set.
        labels: String,
    },
    /// A quantile outside 0 ..= 1.
    #[error("quantile {quantile} of metric {metric} is outside 0..=1")]
    InvalidQuantile {
        /// The summary's name.
        metric: String,
        /// The offending quantile.
        quantile: f64,
    },
    /// A negative or NaN counter value.
    #[error("counter {metric} cannot be {value}")]
    InvalidCounterValue {
        /// The counter's name.
        metric: String,
        /// The offending value.
        value: f64,
    },
}

struct Family {
    name: String,
    help: String,
    kind: MetricType,
    /// Rendered sample lines, each ending in a newline.
    lines: String,
    /// Rendered label sets already present (to reject duplicates).
    series: HashSet<String>,
}

/// A set of metric families being assembled for one scrape.
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    /// Every sample name that a family owns (summaries own `name`, `name_sum`, `name_count`).
    sample_names: HashMap<String, usize>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition")
            .field(
                "families",
                &self.families.iter().map(|f| &f.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one counter sample. The family's help text is the first one given.
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), ExpositionError> {
        if value.is_nan() || value < 0.0 {
            return Err(ExpositionError::InvalidCounterValue {
                metric: name.into(),
                value,
            });
        }
        self.simple(MetricType::Counter, name, help, labels, value)
    }

    /// Add one gauge sample. The family's help text is the first one given.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), ExpositionError> {
        self.simple(MetricType::Gauge, name, help, labels, value)
    }

    /// Add one summary from a histogram: a `{quantile="q"}` sample for each of `quantiles`,
    /// then `name_sum` and `name_count`. Values are multiplied by `unit_scale` (`1e-9` turns
    /// nanoseconds into the seconds Prometheus expects). The sum is computed from the buckets
    /// (mean × count), so it carries the histogram's precision.
    pub fn summary_from_histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        histogram: &LatencyHistogram,
        quantiles: &[f64],
        unit_scale: f64,
    ) -> Result<(), ExpositionError> {
        let kind = MetricType::Summary;
        if let Some(&quantile) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(ExpositionError::InvalidQuantile {
                metric: name.into(),
                quantile,
            });
        }
        if labels.iter().any(|(k, _)| *k == "quantile") {
            return Err(ExpositionError::ReservedLabel {
                metric: name.into(),
                label: "quantile".into(),
                kind,
            });
        }
        let rendered = render_labels(name, labels)?;
        let index = self.family(kind, name, help)?;
        let family = &mut self.families[index];
        if !family.series.insert(rendered.clone()) {
            return Err(ExpositionError::DuplicateSeries {
                metric: name.into(),
                labels: rendered,
            });
        }
        let sep = if rendered.is_empty() { "" } else { "," };
        for &q in quantiles {
            let v = histogram.value_at_quantile(q) as f64 * unit_scale;
            family.lines.push_str(&format!(
                "{name}{{{rendered}{sep}quantile=\"{q}\"}} {}\n",
                value(v)
            ));
        }
        let braces = braced(&rendered);
        let sum = histogram.mean() * histogram.len() as f64 * unit_scale;
        family
            .lines
            .push_str(&format!("{name}_sum{braces} {}\n", value(sum)));
        family
            .lines
            .push_str(&format!("{name}_count{braces} {}\n", histogram.len()));
        Ok(())
    }

    /// Add the standard per-core worker metrics, labelled `core` and `worker`:
    /// `{prefix}_packets_total`, `_bytes_total`, `_batches_total`, `_wakeups_total` (counters)
    /// and `{prefix}_packet_processing_seconds`, `_wakeup_latency_seconds` (summaries at
    /// [`DEFAULT_QUANTILES`]).
    pub fn core_stats(&mut self, prefix: &str, cores: &[CoreStats]) -> Result<(), ExpositionError> {
        for c in cores {
            let core = c.core.to_string();
            let labels = [("core", core.as_str()), ("worker", c.name.as_str())];
            let counters = [
                (
                    "packets_total",
                    "Packets processed by the worker.",
                    c.packets,
                ),
                (
                    "bytes_total",
                    "Frame bytes processed by the worker.",
                    c.bytes,
                ),
                (
                    "batches_total",
                    "Non-empty batches processed by the worker.",
                    c.batches,
                ),
                (
                    "wakeups_total",
                    "Times the worker was woken from a blocking wait.",
                    c.wakeups,
                ),
            ];
            for (suffix, help, v) in counters {
                self.counter(&format!("{prefix}_{suffix}"), help, &labels, v as f64)?;
            }
            self.summary_from_histogram(
                &format!("{prefix}_packet_processing_seconds"),
                "Per-packet processing time.",
                &labels,
                &c.latency,
                &DEFAULT_QUANTILES,
                1e-9,
            )?;
            self.summary_from_histogram(
                &format!("{prefix}_wakeup_latency_seconds"),
                "Time from a blocking wait to running with work.",
                &labels,
                &c.wakeup_latency,
                &DEFAULT_QUANTILES,
                1e-9,
            )?;
        }
        Ok(())
    }

    /// Whether no sample has been added.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The exposition text: families in the order first added, each with its `# HELP` and
    /// `# TYPE` lines followed by its samples in the order added.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            out.push_str(&format!("# HELP {} {}\n", f.name, escape_help(&f.help)));
            out.push_str(&format!("# TYPE {} {}\n", f.name, f.kind));
            out.push_str(&f.lines);
        }
        out
    }

    fn simple(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        v: f64,
    ) -> Result<(), ExpositionError> {
        let rendered = render_labels(name, labels)?;
        let index = self.family(kind, name, help)?;
        let family = &mut self.families[index];
        if !family.series.insert(rendered.clone()) {
            return Err(ExpositionError::DuplicateSeries {
                metric: name.into(),
                labels: rendered,
            });
        }
        family
            .lines
            .push_str(&format!("{name}{} {}\n", braced(&rendered), value(v)));
        Ok(())
    }

    /// The index of family `name`, declared now if new.
    fn family(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
    ) -> Result<usize, ExpositionError> {
        if !valid_metric_name(name) {
            return Err(ExpositionError::InvalidMetricName(name.into()));
        }
        if let Some(&i) = self.by_name.get(name) {
            let existing = self.families[i].kind;
            if existing != kind {
                return Err(ExpositionError::TypeConflict {
                    metric: name.into(),
                    existing,
                    requested: kind,
                });
            }
            return Ok(i);
        }
        let owned: Vec<String> = match kind {
            MetricType::Summary => {
                vec![name.into(), format!("{name}_sum"), format!("{name}_count")]
            }
            _ => vec![name.into()],
        };
        if owned.iter().any(|n| self.sample_names.contains_key(n)) {
            return Err(ExpositionError::NameClash {
                metric: name.into(),
            });
        }
        let i = self.families.len();
        for n in owned {
            self.sample_names.insert(n, i);
        }
        self.by_name.insert(name.into(), i);
        self.families.push(Family {
            name: name.into(),
            help: help.into(),
            kind,
            lines: String::new(),
            series: HashSet::new(),
        });
        Ok(i)
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a="x",b="y"` (without braces), validated and escaped.
fn render_labels(metric: &str, labels: &[(&str, &str)]) -> Result<String, ExpositionError> {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if !valid_label_name(k) {
            return Err(ExpositionError::InvalidLabelName {
                metric: metric.into(),
                label: (*k).into(),
            });
        }
        if labels[..i].iter().any(|(prev, _)| prev == k) {
            return Err(ExpositionError::DuplicateLabel {
                metric: metric.into(),
                label: (*k).into(),
            });
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    Ok(out)
}

fn braced(rendered: &str) -> String {
    if rendered.is_empty() {
        String::new()
    } else {
        format!("{{{rendered}}}")
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it (`NaN`, `+Inf`, `-Inf`, or a decimal).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// One parsed sample: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// A strict little parser of the text format: checks that every family's HELP and TYPE come
    /// once, before its samples, and that a family's samples are contiguous.
    fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, (String, String)>) {
        let mut samples = Vec::new();
        let mut meta: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut finished: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!meta.contains_key(name), "HELP for {name} twice");
                if let Some(prev) = current.replace(name.to_owned()) {
                    finished.push(prev);
                }
                let help = help.replace("\\n", "\n").replace("\\\\", "\\");
                meta.insert(name.to_owned(), (help, String::new()));
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let entry = meta.get_mut(name).expect("TYPE after HELP");
                assert!(entry.1.is_empty(), "TYPE for {name} twice");
                entry.1 = kind.to_owned();
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().unwrap(),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    (name.to_owned(), parse_labels(body))
                }
            };
            let family = current.as_deref().unwrap();
            assert!(
                name == family
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count"),
                "sample {name} outside its family {family}"
            );
            assert!(!finished.contains(&name), "{name} not contiguous");
            samples.push((name, labels, value));
        }
        (samples, meta)
    }

    fn parse_labels(body: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        labels
    }

    fn get<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
    }

    #[test]
    fn counters_and_gauges_round_trip() {
        let mut e = Exposition::new();
        e.counter("pkts_total", "Packets.", &[("core", "0")], 10.0)
            .unwrap();
        e.gauge("rate_pps", "Rate.", &[], 1.5e6).unwrap();
        e.counter("pkts_total", "ignored second help", &[("core", "1")], 32.0)
            .unwrap();
        e.gauge("temp", "Odd values.", &[("k", "nan")], f64::NAN)
            .unwrap();
        e.gauge("temp", "Odd values.", &[("k", "inf")], f64::INFINITY)
            .unwrap();
        e.gauge("temp", "Odd values.", &[("k", "neg")], -0.25)
            .unwrap();
        let text = e.render();
        let (samples, meta) = parse(&text);
        assert_eq!(meta["pkts_total"], ("Packets.".into(), "counter".into()));
        assert_eq!(meta["rate_pps"].1, "gauge");
        assert_eq!(get(&samples, "pkts_total", &[("core", "0")]), Some(&10.0));
        assert_eq!(get(&samples, "pkts_total", &[("core", "1")]), Some(&32.0));
        assert_eq!(get(&samples, "rate_pps", &[]), Some(&1.5e6));
        assert!(get(&samples, "temp", &[("k", "nan")]).unwrap().is_nan());
        assert_eq!(get(&samples, "temp", &[("k", "inf")]), Some(&f64::INFINITY));
        assert_eq!(get(&samples, "temp", &[("k", "neg")]), Some(&-0.25));
        assert!(text.contains("rate_pps 1500000\n"), "{text}");
        assert_eq!(text.matches("# TYPE pkts_total").count(), 1);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        let nasty = "a\\b \"quoted\"\nnext line";
        e.gauge(
            "g",
            "Help with \\ and\nnewline.",
            &[("path", nasty), ("x", "")],
            1.0,
        )
        .unwrap();
        let text = e.render();
        assert!(
            text.contains(r#"g{path="a\\b \"quoted\"\nnext line",x=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP g Help with \\\\ and\\nnewline.\n"),
            "{text}"
        );
        let (samples, meta) = parse(&text);
        assert_eq!(meta["g"].0, "Help with \\ and\nnewline.");
        assert_eq!(
            get(&samples, "g", &[("path", nasty), ("x", "")]),
            Some(&1.0)
        );
    }

    #[test]
    fn summary_from_histogram_round_trips() {
        let mut h = LatencyHistogram::new();
        for v in 1..=1_000u64 {
            h.record(v * 1_000); // 1 µs .. 1 ms
        }
        let mut e = Exposition::new();
        let q = [0.5, 0.99, 0.999];
        e.summary_from_histogram("lat_seconds", "Latency.", &[("core", "3")], &h, &q, 1e-9)
            .unwrap();
        e.summary_from_histogram("lat_seconds", "Latency.", &[("core", "4")], &h, &[], 1e-9)
            .unwrap();
        let text = e.render();
        let (samples, meta) = parse(&text);
        assert_eq!(meta["lat_seconds"].1, "summary");
        assert_eq!(text.matches("# HELP").count(), 1);
        for quantile in q {
            let got = get(
                &samples,
                "lat_seconds",
                &[("core", "3"), ("quantile", &quantile.to_string())],
            )
            .unwrap_or_else(|| panic!("no quantile {quantile} in\n{text}"));
            let want = h.value_at_quantile(quantile) as f64 * 1e-9;
            assert!((got - want).abs() < 1e-12, "q {quantile}: {got} vs {want}");
        }
        assert!(text.contains(r#"lat_seconds{core="3",quantile="0.99"} "#));
        assert_eq!(
            get(&samples, "lat_seconds_count", &[("core", "3")]),
            Some(&1_000.0)
        );
        assert_eq!(
            get(&samples, "lat_seconds_count", &[("core", "4")]),
            Some(&1_000.0)
        );
        // sum of 1..=1000 µs = 0.5005 s, to the histogram's precision.
        let sum = get(&samples, "lat_seconds_sum", &[("core", "3")]).unwrap();
        assert!((sum - 0.5005).abs() < 0.5005 * 0.001, "sum {sum}");
    }

    #[test]
    fn core_stats_metrics() {
        let mut a = CoreStats::new(0, "veth0");
        a.record_batch(64, 4_096, 6_400);
        let mut b = CoreStats::new(1, "veth1");
        b.record_batch(32, 2_048, 6_400);
        b.record_wakeup(2_000);
        let mut e = Exposition::new();
        e.core_stats("sluice_worker", &[a, b]).unwrap();
        let (samples, meta) = parse(&e.render());
        assert_eq!(meta.len(), 6);
        let l1 = [("core", "1"), ("worker", "veth1")];
        assert_eq!(
            get(&samples, "sluice_worker_packets_total", &l1),
            Some(&32.0)
        );
        assert_eq!(
            get(&samples, "sluice_worker_bytes_total", &l1),
            Some(&2_048.0)
        );
        assert_eq!(
            get(&samples, "sluice_worker_wakeups_total", &l1),
            Some(&1.0)
        );
        let p50 = [("core", "0"), ("worker", "veth0"), ("quantile", "0.5")];
        let got = get(&samples, "sluice_worker_packet_processing_seconds", &p50).unwrap();
        assert!((got - 1e-7).abs() < 1e-18, "p50 {got}");
        assert_eq!(
            get(&samples, "sluice_worker_wakeup_latency_seconds_count", &l1),
            Some(&1.0)
        );
    }

    #[test]
    fn invalid_input_is_rejected() {
        let mut e = Exposition::new();
        let h = LatencyHistogram::new();
        use ExpositionError as E;
        assert!(matches!(
            e.gauge("1abc", "", &[], 1.0),
            Err(E::InvalidMetricName(_))
        ));
        assert!(matches!(
            e.gauge("a-b", "", &[], 1.0),
            Err(E::InvalidMetricName(_))
        ));
        assert!(matches!(
            e.gauge("", "", &[], 1.0),
            Err(E::InvalidMetricName(_))
        ));
        assert!(e.gauge("ns:ok_1", "", &[], 1.0).is_ok());
        assert!(matches!(
            e.gauge("g", "", &[("bad-name", "x")], 1.0),
            Err(E::InvalidLabelName { .. })
        ));
        assert!(matches!(
            e.gauge("g", "", &[("__reserved", "x")], 1.0),
            Err(E::InvalidLabelName { .. })
        ));
        assert!(matches!(
            e.gauge("g", "", &[("a", "x"), ("a", "y")], 1.0),
            Err(E::DuplicateLabel { .. })
        ));
        e.gauge("g", "", &[("a", "x")], 1.0).unwrap();
        assert!(matches!(
            e.gauge("g", "", &[("a", "x")], 2.0),
            Err(E::DuplicateSeries { .. })
        ));
        assert!(matches!(
            e.counter("g", "", &[("a", "y")], 1.0),
            Err(E::TypeConflict {
                existing: MetricType::Gauge,
                ..
            })
        ));
        assert!(matches!(
            e.counter("c", "", &[], -1.0),
            Err(E::InvalidCounterValue { .. })
        ));
        assert!(matches!(
            e.summary_from_histogram("s", "", &[("quantile", "x")], &h, &[0.5], 1.0),
            Err(E::ReservedLabel { .. })
        ));
        assert!(matches!(
            e.summary_from_histogram("s", "", &[], &h, &[1.5], 1.0),
            Err(E::InvalidQuantile { .. })
        ));
        e.summary_from_histogram("s", "", &[], &h, &[0.5], 1.0)
            .unwrap();
        assert!(matches!(
            e.gauge("s_count", "", &[], 1.0),
            Err(E::NameClash { .. })
        ));
        // Failed calls leave nothing half-written behind.
        let (samples, meta) = parse(&e.render());
        assert_eq!(meta.keys().collect::<Vec<_>>(), ["g", "ns:ok_1", "s"]);
        assert_eq!(samples.len(), 2 + 3);
        assert!(e.render().contains("s{quantile=\"0.5\"} 0\n"));
    }
}
