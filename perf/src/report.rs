//! [`LatencyReport`]: per-core statistics of one run with the machine they ran on, rendered as a
//! terminal table, Markdown or JSON.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::format::{group_thousands, micros};
use crate::histogram::LatencyHistogram;
use crate::stats::{ALL_CORES, CoreStats};

/// The machine a report was measured on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel release, e.g. `6.18.0-1-amd64`.
    pub kernel: String,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Number of CPUs online.
    pub cores: usize,
}

impl MachineInfo {
    /// Read the running machine's description from `/proc` (falling back to `unknown` for
    /// anything that cannot be read; never fails).
    pub fn detect() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = match count_processors(&cpuinfo) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self {
            hostname: read("/proc/sys/kernel/hostname")
                .or_else(|| read("/etc/hostname"))
                .unwrap_or_else(|| "unknown".into()),
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".into()),
            cores,
        }
    }
}

impl fmt::Display for MachineInfo {
    /// `host · Linux 6.18.0 · 2 × Intel(R) Xeon(R) …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} · Linux {} · {} × {}",
            self.hostname, self.kernel, self.cores, self.cpu_model
        )
    }
}

/// The first `model name` (x86) or `Processor`/`CPU part`-style line of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Processor", "cpu model", "cpu"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

fn count_processors(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count()
}

/// Per-core statistics of one measured run, with a title and the machine it ran on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyReport {
    /// What was measured, e.g. `fastpath forward, 64 B UDP, 1 flow`.
    pub title: String,
    /// Where it was measured.
    pub machine: MachineInfo,
    /// One entry per worker core, in display order.
    pub cores: Vec<CoreStats>,
}

const LATENCY_HEADERS: [&str; 9] = [
    "core",
    "name",
    "packets",
    "Mpps",
    "mean batch",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
];
const WAKEUP_HEADERS: [&str; 6] = ["core", "name", "wakeups", "p50 µs", "p99 µs", "max µs"];

impl LatencyReport {
    /// An empty report.
    pub fn new(title: impl Into<String>, machine: MachineInfo) -> Self {
        Self {
            title: title.into(),
            machine,
            cores: Vec::new(),
        }
    }

    /// Append one core's statistics.
    pub fn push(&mut self, core: CoreStats) {
        self.cores.push(core);
    }

    /// All cores as one: counters summed, histograms added, elapsed time the longest of any
    /// core (they ran side by side, so `pps()` is the aggregate rate). Its `core` is
    /// [`ALL_CORES`] and its name `all`.
    pub fn merged(&self) -> CoreStats {
        let mut all = CoreStats::new(ALL_CORES, "all");
        for c in &self.cores {
            all.merge(c);
        }
        all
    }

    /// A fixed-width table for a terminal: one row per core and a merged `all` row, with the
    /// processing-time percentiles in microseconds; a wakeup table follows when any core slept.
    pub fn to_table(&self) -> String {
        let merged = self.merged();
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&self.title);
            out.push('\n');
        }
        out.push_str(&self.machine.to_string());
        out.push_str("\n\n");
        let rows: Vec<_> = self.cores.iter().map(latency_row).collect();
        out.push_str(&text_table(&LATENCY_HEADERS, &rows, &latency_row(&merged)));
        if self.cores.iter().any(|c| c.wakeups > 0) {
            let rows: Vec<_> = self.cores.iter().map(wakeup_row).collect();
            out.push('\n');
            out.push_str(&text_table(&WAKEUP_HEADERS, &rows, &wakeup_row(&merged)));
        }
        out.push_str(&notes(&merged));
        out
    }

    /// The same tables in GitHub-flavoured Markdown, under a `##` heading.
    pub fn to_markdown(&self) -> String {
        let merged = self.merged();
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&format!("## {}\n\n", self.title));
        }
        out.push_str(&format!("{}\n\n", self.machine));
        let rows: Vec<_> = self.cores.iter().map(latency_row).collect();
        out.push_str(&markdown_table(
            &LATENCY_HEADERS,
            &rows,
            &latency_row(&merged),
        ));
        if self.cores.iter().any(|c| c.wakeups > 0) {
            let rows: Vec<_> = self.cores.iter().map(wakeup_row).collect();
            out.push('\n');
            out.push_str(&markdown_table(
                &WAKEUP_HEADERS,
                &rows,
                &wakeup_row(&merged),
            ));
        }
        let notes = notes(&merged);
        if !notes.is_empty() {
            out.push('\n');
            out.push_str(&notes);
        }
        out
    }

    /// A summary for machines to read: per core and merged counters, rates and histogram
    /// summaries (count, min, p50, p90, p99, p99.9, max, mean in ns). The complete report, full
    /// histograms included, is this type's serde form instead.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "title": self.title,
            "machine": self.machine,
            "cores": self.cores.iter().map(core_json).collect::<Vec<_>>(),
            "all": core_json(&self.merged()),
        })
    }
}

impl fmt::Display for LatencyReport {
    /// The terminal table ([`LatencyReport::to_table`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table())
    }
}

fn core_json(c: &CoreStats) -> serde_json::Value {
    let mut v = json!({
        "name": c.name,
        "packets": c.packets,
        "bytes": c.bytes,
        "batches": c.batches,
        "elapsed_ns": c.elapsed_ns,
        "pps": c.pps(),
        "bits_per_second": c.bits_per_second(),
        "mean_batch": c.mean_batch(),
        "wakeups": c.wakeups,
        "latency_ns": c.latency.summary(),
        "latency_saturated": c.latency.saturated(),
        "batch_size": c.batch_sizes.summary(),
        "wakeup_latency_ns": c.wakeup_latency.summary(),
    });
    if c.core != ALL_CORES {
        v["core"] = json!(c.core);
    }
    v
}

fn core_cell(c: &CoreStats) -> String {
    if c.core == ALL_CORES {
        "all".into()
    } else {
        c.core.to_string()
    }
}

/// A latency quantile in µs, or a dash for an empty histogram.
fn quantile_cell(h: &LatencyHistogram, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        micros(h.value_at_quantile(q))
    }
}

fn latency_row(c: &CoreStats) -> Vec<String> {
    vec![
        core_cell(c),
        if c.core == ALL_CORES {
            String::new()
        } else {
            c.name.clone()
        },
        group_thousands(c.packets),
        format!("{:.3}", c.pps() / 1e6),
        format!("{:.1}", c.mean_batch()),
        quantile_cell(&c.latency, 0.5),
        quantile_cell(&c.latency, 0.99),
        quantile_cell(&c.latency, 0.999),
        quantile_cell(&c.latency, 1.0),
    ]
}

fn wakeup_row(c: &CoreStats) -> Vec<String> {
    vec![
        core_cell(c),
        if c.core == ALL_CORES {
            String::new()
        } else {
            c.name.clone()
        },
        group_thousands(c.wakeups),
        quantile_cell(&c.wakeup_latency, 0.5),
        quantile_cell(&c.wakeup_latency, 0.99),
        quantile_cell(&c.wakeup_latency, 1.0),
    ]
}

fn notes(merged: &CoreStats) -> String {
    let mut out = String::new();
    for (what, h) in [
        ("processing-time", &merged.latency),
        ("wakeup-latency", &merged.wakeup_latency),
    ] {
        if h.saturated() > 0 {
            out.push_str(&format!(
                "note: {} {what} samples were above {} µs and were counted as {} µs\n",
                group_thousands(h.saturated()),
                micros(h.highest()),
                micros(h.highest()),
            ));
        }
    }
    out
}

/// Columns separated by two spaces; the second column (names) left-aligned, the rest right.
fn text_table(headers: &[&str], rows: &[Vec<String>], total: &[String]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows.iter().map(Vec::as_slice).chain([total]) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w - cell.chars().count();
            if i == 1 {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            } else {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(cell);
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let rule: String = {
        let total_width = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        let mut r: String = "─".repeat(total_width);
        r.push('\n');
        r
    };
    let mut out = line(&mut headers.iter().copied());
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out.push_str(&rule);
    out.push_str(&line(&mut total.iter().map(String::as_str)));
    out
}

fn markdown_table(headers: &[&str], rows: &[Vec<String>], total: &[String]) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let mut out = format!("| {} |\n|", headers.join(" | "));
    for i in 0..headers.len() {
        out.push_str(if i == 1 { ":---|" } else { "---:|" });
    }
    out.push('\n');
    for row in rows {
        let cells: Vec<_> = row.iter().map(|c| escape(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    let cells: Vec<_> = total
        .iter()
        .map(|c| {
            if c.is_empty() {
                String::new()
            } else {
                format!("**{}**", escape(c))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", cells.join(" | ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineInfo {
        MachineInfo {
            hostname: "node-1".into(),
            kernel: "6.18.0".into(),
            cpu_model: "Test CPU @ 2.0GHz".into(),
            cores: 2,
        }
    }

    /// Core 0: 1,000,000 packets in 1 s, 900k at 400 ns and 100k at 2,000 ns, batches of 50.
    /// Core 1: 3,000,000 packets in 2 s, all at 1,000 ns, batches of 60, 10 wakeups.
    fn report() -> LatencyReport {
        let mut r = LatencyReport::new("forward, 64 B", machine());
        let mut a = CoreStats::new(0, "veth0/q0");
        for _ in 0..18_000 {
            a.record_batch(50, 50 * 64, 50 * 400);
        }
        for _ in 0..2_000 {
            a.record_batch(50, 50 * 64, 50 * 2_000);
        }
        a.elapsed_ns = 1_000_000_000;
        let mut b = CoreStats::new(1, "veth1/q0");
        for _ in 0..50_000 {
            b.record_batch(60, 60 * 64, 60 * 1_000);
        }
        for _ in 0..10 {
            b.record_wakeup(20_000);
        }
        b.elapsed_ns = 2_000_000_000;
        r.push(a);
        r.push(b);
        r
    }

    #[test]
    fn merged_sums_counters_and_adds_histograms() {
        let r = report();
        let m = r.merged();
        assert_eq!((m.core, m.name.as_str()), (ALL_CORES, "all"));
        assert_eq!(m.packets, 4_000_000);
        assert_eq!(m.batches, 70_000);
        assert_eq!(m.elapsed_ns, 2_000_000_000);
        assert_eq!(m.pps(), 2_000_000.0);
        let mut all = r.cores[0].latency.clone();
        all.add(&r.cores[1].latency);
        assert_eq!(m.latency, all);
        // 900k at 400, 3M at 1000, 100k at 2000: p50 and p90 are 1000 ns, p99 2000 ns.
        assert_eq!(m.latency.value_at_quantile(0.5), 1_000);
        assert_eq!(m.latency.value_at_quantile(0.2), 400);
        assert_eq!(m.latency.value_at_quantile(0.99), 2_000);
    }

    #[test]
    fn table_has_the_right_numbers() {
        let t = report().to_table();
        print!("{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "forward, 64 B");
        assert_eq!(lines[1], "node-1 · Linux 6.18.0 · 2 × Test CPU @ 2.0GHz");
        let header = lines[3];
        for h in LATENCY_HEADERS {
            assert!(header.contains(h), "{h} missing from {header}");
        }
        let row = |prefix: &str| {
            lines
                .iter()
                .find(|l| l.trim_start().starts_with(prefix))
                .unwrap_or_else(|| panic!("no row {prefix} in\n{t}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        // core name packets Mpps batch p50 p99 p99.9 max
        assert_eq!(
            row("0 "),
            [
                "0",
                "veth0/q0",
                "1,000,000",
                "1.000",
                "50.0",
                "0.40",
                "2.00",
                "2.00",
                "2.00"
            ]
        );
        assert_eq!(
            row("1 "),
            [
                "1",
                "veth1/q0",
                "3,000,000",
                "1.500",
                "60.0",
                "1.00",
                "1.00",
                "1.00",
                "1.00"
            ]
        );
        assert_eq!(
            row("all"),
            [
                "all",
                "4,000,000",
                "2.000",
                "57.1",
                "1.00",
                "2.00",
                "2.00",
                "2.00"
            ]
        );
        // Wakeups table: core 1 slept 10 times, 20 µs each, read back as the highest value of
        // the 16 ns wide bucket that holds 20,000 ns.
        assert_eq!(row("1 ").len(), 9);
        let wake = lines
            .iter()
            .rfind(|l| l.trim_start().starts_with("1 "))
            .unwrap();
        assert_eq!(
            wake.split_whitespace().collect::<Vec<_>>(),
            ["1", "veth1/q0", "10", "20.02", "20.02", "20.02"]
        );
        // Every body line of the first table has the header's width (fixed-width columns).
        let width = header.chars().count();
        assert!(lines[4].chars().count() == width && lines[4].starts_with('─'));
        assert_eq!(lines[5].chars().count(), width);
        assert_eq!(lines[6].chars().count(), width);
    }

    #[test]
    fn table_without_wakeups_or_cores() {
        let mut r = report();
        r.cores[1].wakeups = 0;
        assert!(!r.to_table().contains("wakeups"));
        let empty = LatencyReport::new("", machine());
        let t = empty.to_table();
        assert!(t.contains("all"));
        assert!(t.lines().last().unwrap().contains('-'), "{t}");
    }

    #[test]
    fn saturation_is_noted() {
        let mut r = report();
        r.cores[0].latency.record(120_000_000_000);
        let t = r.to_table();
        assert!(
            t.contains("note: 1 processing-time samples were above 60,000,000 µs"),
            "{t}"
        );
    }

    #[test]
    fn markdown_table() {
        let md = report().to_markdown();
        assert!(md.starts_with("## forward, 64 B\n\n"));
        assert!(md.contains("| core | name | packets | Mpps |"));
        assert!(md.contains("|---:|:---|---:|"));
        assert!(
            md.contains("| 0 | veth0/q0 | 1,000,000 | 1.000 | 50.0 | 0.40 | 2.00 | 2.00 | 2.00 |")
        );
        assert!(
            md.contains("| **all** |  | **4,000,000** | **2.000** |"),
            "{md}"
        );
        let mut r = report();
        r.cores[0].name = "a|b".into();
        assert!(r.to_markdown().contains("| a\\|b |"));
    }

    #[test]
    fn json_summary() {
        let v = report().to_json();
        assert_eq!(v["title"], "forward, 64 B");
        assert_eq!(v["machine"]["cores"], 2);
        assert_eq!(v["cores"][0]["core"], 0);
        assert_eq!(v["cores"][1]["packets"], 3_000_000);
        assert_eq!(v["cores"][1]["pps"], 1_500_000.0);
        assert_eq!(v["cores"][0]["latency_ns"]["p50_ns"], 400);
        assert_eq!(v["cores"][0]["latency_ns"]["p99_ns"], 2_000);
        assert_eq!(v["cores"][0]["batch_size"]["p50_ns"], 50);
        assert_eq!(v["cores"][1]["wakeup_latency_ns"]["count"], 10);
        assert_eq!(v["all"]["packets"], 4_000_000);
        assert!(v["all"].get("core").is_none());
    }

    #[test]
    fn full_report_round_trips_through_serde() {
        let r = report();
        let back: LatencyReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.to_table(), r.to_table());
    }

    #[test]
    fn cpuinfo_parsing() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                   CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(count_processors(x86), 2);
        let arm =
            "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nModel\t: Raspberry Pi 4\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("Raspberry Pi 4"));
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn detect_reads_this_machine() {
        let m = MachineInfo::detect();
        assert!(m.cores >= 1);
        assert!(!m.hostname.is_empty() && !m.kernel.is_empty() && !m.cpu_model.is_empty());
    }
}
