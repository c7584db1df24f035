//! Reports: every raw figure as JSON, a Markdown summary with the targets, SVG plots (through
//! `perf::plot`), the machine (`perf::MachineInfo`) and the exact command line.
//!
//! Medians are over repetitions; every ratio is taken between measurements of the same
//! repetition (same pass, minutes apart at most) and the median of those ratios is reported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use perf::plot::{LineChart, Scale};
use perf::{CoreStats, MachineInfo};
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::generator::FlowMode;
use crate::scenario::{LabConfig, Measurement, Scenario};

/// A directory that report files are written into, and the files written so far.
pub(crate) struct ReportDir<'a> {
    dir: &'a Path,
    /// The paths written, in order.
    pub(crate) files: Vec<String>,
}

impl<'a> ReportDir<'a> {
    /// Creates `dir` (and its parents) if missing.
    pub(crate) fn create(dir: &'a Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir.display().to_string(), e))?;
        Ok(ReportDir {
            dir,
            files: Vec::new(),
        })
    }

    /// Writes `text` into the file `name` of the directory and notes its path.
    pub(crate) fn put(&mut self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| LabError::io(path.display().to_string(), e))?;
        self.files.push(path.display().to_string());
        Ok(())
    }
}

/// A system that could not be measured, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// System label.
    pub system: String,
    /// Scenario.
    pub scenario: Scenario,
    /// Rules.
    pub rules: usize,
    /// The error.
    pub reason: String,
}

/// One lab invocation's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The exact command line.
    pub command: String,
    /// Where it ran.
    pub machine: MachineInfo,
    /// Start and end (Unix seconds).
    pub started_unix: u64,
    /// See `started_unix`.
    pub finished_unix: u64,
    /// Load average at the start and end.
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
    /// Lab settings.
    pub config: Option<LabConfig>,
    /// Remote pods in sluice's state.
    pub remote_pods: usize,
    /// Seconds to build sluice's state, by rule count.
    pub state_build_secs: BTreeMap<usize, f64>,
    /// Systems that failed.
    pub failures: Vec<Failure>,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
    /// TCP generator runs (new connections).
    #[serde(default)]
    pub tcp: Vec<crate::tcp_gen::TcpMeasurement>,
    /// Policy update storms.
    #[serde(default)]
    pub storms: Vec<crate::storm::StormResult>,
}

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians of one (scenario, system, rules, flows) group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// System label.
    pub label: String,
    /// System name.
    pub system: String,
    /// Rules.
    pub rules: usize,
    /// Flows.
    pub flows: FlowMode,
    /// Measurements in the group.
    pub runs: usize,
    /// Median forwarded rate, packets/s.
    pub pps: f64,
    /// Median node-core ns per packet.
    pub ns_core: f64,
    /// Median NAPI + userspace thread ns per packet.
    pub ns_threads: f64,
    /// Median one-way p99 latency, ns.
    pub p99_ns: f64,
    /// Median loss share.
    pub loss: f64,
    /// Median node-core busy share.
    pub node_busy: f64,
    /// Median offered rate.
    pub offered_pps: f64,
}

/// Now, in Unix seconds (0 if the clock is before 1970): a report's start and end stamps.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`'s first three fields; empty when
/// unreadable), as a measurement or a scaling report records them.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn kpps(pps: f64) -> String {
    if pps.is_nan() {
        "–".into()
    } else {
        format!("{:.0}", pps / 1e3)
    }
}

fn ns(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.0}")
    }
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{:.1}", v / 1e3)
    }
}

impl Report {
    /// An empty report for `command`, stamped now.
    pub fn new(command: String) -> Self {
        Report {
            command,
            machine: MachineInfo::detect(),
            started_unix: now_unix(),
            load_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
            ..Report::default()
        }
    }

    /// An empty report for `command` of runs in the lab `config` describes, with
    /// `remote_pods` remote pods in sluice's state, stamped now.
    pub fn for_lab(command: String, config: &LabConfig, remote_pods: usize) -> Self {
        Report {
            config: Some(config.clone()),
            remote_pods,
            ..Report::new(command)
        }
    }

    /// Records that `system` could not be measured at `rules` rules in `scenario`: prints
    /// `<label>: FAILED: <error>` to stderr and keeps `<what>: <error>` as the reason.
    pub fn fail(
        &mut self,
        system: &dyn crate::systems::System,
        scenario: Scenario,
        rules: usize,
        what: &str,
        error: &LabError,
    ) {
        let label = crate::systems::label(system.name(), &system.variant());
        eprintln!("{label}: FAILED: {error}");
        self.failures.push(Failure {
            system: label,
            scenario,
            rules,
            reason: format!("{what}: {error}"),
        });
    }

    /// Stamps the end.
    pub fn finish(&mut self) {
        self.finished_unix = now_unix();
        self.load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    }

    fn of<'a>(
        &'a self,
        scenario: Scenario,
        label: &'a str,
        rules: usize,
    ) -> impl Iterator<Item = &'a Measurement> + 'a {
        self.measurements
            .iter()
            .filter(move |m| m.scenario == scenario && m.label() == label && m.rules == rules)
    }

    /// Median rows of `scenario`, by label then rules.
    pub fn rows(&self, scenario: Scenario) -> Vec<Row> {
        let mut groups: BTreeMap<(String, usize, String), Vec<&Measurement>> = BTreeMap::new();
        for m in self.measurements.iter().filter(|m| m.scenario == scenario) {
            groups
                .entry((m.label(), m.rules, m.traffic.flows.name().to_owned()))
                .or_default()
                .push(m);
        }
        groups
            .into_values()
            .map(|ms| {
                let f = |g: fn(&Measurement) -> f64| {
                    median(&ms.iter().map(|m| g(m)).collect::<Vec<_>>())
                };
                Row {
                    label: ms[0].label(),
                    system: ms[0].system.clone(),
                    rules: ms[0].rules,
                    flows: ms[0].traffic.flows,
                    runs: ms.len(),
                    pps: f(|m| m.forwarded_pps),
                    ns_core: f(|m| m.ns_per_packet_core),
                    ns_threads: f(|m| m.ns_per_packet_threads),
                    p99_ns: f(|m| m.latency_ns.p99 as f64),
                    loss: f(|m| m.loss_share()),
                    node_busy: f(|m| m.cpu.node_core_busy),
                    offered_pps: f(|m| m.offered_pps),
                }
            })
            .collect()
    }

    /// Labels in first-measured order.
    fn labels(&self, scenario: Scenario) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self.measurements.iter().filter(|m| m.scenario == scenario) {
            if !out.contains(&m.label()) {
                out.push(m.label());
            }
        }
        out
    }

    fn rule_counts(&self, scenario: Scenario) -> Vec<usize> {
        let mut r: Vec<usize> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == scenario)
            .map(|m| m.rules)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Median over runs of `a / b`, where `a` and `b` are the forwarded rates of the same run.
    pub fn ratio(
        &self,
        scenario_a: Scenario,
        label_a: &str,
        scenario_b: Scenario,
        label_b: &str,
        rules: usize,
    ) -> Option<(f64, Vec<f64>)> {
        let b: BTreeMap<usize, f64> = self
            .of(scenario_b, label_b, rules)
            .map(|m| (m.run, m.forwarded_pps))
            .collect();
        let ratios: Vec<f64> = self
            .of(scenario_a, label_a, rules)
            .filter_map(|m| b.get(&m.run).map(|x| m.forwarded_pps / x))
            .collect();
        (!ratios.is_empty()).then(|| (median(&ratios), ratios))
    }

    /// The faster UMEM mode of sluice-afxdp at `rules` (its label), by median throughput.
    pub fn best_afxdp(&self, rules: usize) -> Option<String> {
        self.rows(Scenario::Throughput)
            .into_iter()
            .filter(|r| r.system == "sluice-afxdp" && r.rules == rules)
            .max_by(|a, b| a.pps.total_cmp(&b.pps))
            .map(|r| r.label)
    }

    /// The target checks: (target, measured, met).
    pub fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut out = Vec::new();
        let rules = self.rule_counts(Scenario::Throughput);
        let (Some(&lo), Some(&hi)) = (rules.first(), rules.last()) else {
            return out;
        };
        let afxdp = self.best_afxdp(hi);
        let mut ratio_target = |name: String,
                                a: (Scenario, &str),
                                b: (Scenario, &str),
                                at: usize,
                                min: f64| {
            match self.ratio(a.0, a.1, b.0, b.1, at) {
                Some((r, all)) => out.push((
                    name,
                    format!(
                        "{r:.2}× (runs: {})",
                        all.iter()
                            .map(|x| format!("{x:.2}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(r >= min),
                )),
                None => out.push((name, "not measured".into(), None)),
            }
        };
        let mut sluice = vec!["sluice-kernel".to_owned()];
        sluice.extend(afxdp.clone());
        for s in &sluice {
            ratio_target(
                format!("{s} ≥ 10× iptables at {hi} rules (no conntrack shortcut)"),
                (Scenario::Throughput, s),
                (Scenario::Throughput, "iptables"),
                hi,
                10.0,
            );
            ratio_target(
                format!("{s} ≥ 10× iptables (conntrack-first) at {hi} rules, new flows"),
                (Scenario::NewFlows, s),
                (Scenario::NewFlows, "iptables (conntrack-first)"),
                hi,
                10.0,
            );
        }
        ratio_target(
            format!("sluice-kernel ≥ 0.9× xdp-redirect-bare ({hi} rules)"),
            (Scenario::Throughput, "sluice-kernel"),
            (Scenario::Throughput, "xdp-redirect-bare"),
            hi,
            0.9,
        );
        if let Some(a) = &afxdp {
            ratio_target(
                format!("{a} ≥ 1.5× ovs-afxdp ({hi} rules)"),
                (Scenario::Throughput, a),
                (Scenario::Throughput, "ovs-afxdp"),
                hi,
                1.5,
            );
            ratio_target(
                format!("{a} ≥ 1.0× kernel-forward ({hi} rules)"),
                (Scenario::Throughput, a),
                (Scenario::Throughput, "kernel-forward"),
                hi,
                1.0,
            );
            ratio_target(
                format!("{a} ≥ 0.9× afxdp-bare ({hi} rules)"),
                (Scenario::Throughput, a),
                (Scenario::Throughput, "afxdp-bare"),
                hi,
                0.9,
            );
        }
        ratio_target(
            "afxdp-bare ≥ 1.0× kernel-forward (the floor; DESIGN.md measured 1.15–1.5×)".to_owned(),
            (Scenario::Throughput, "afxdp-bare"),
            (Scenario::Throughput, "kernel-forward"),
            hi,
            1.0,
        );
        let rows = self.rows(Scenario::Throughput);
        let pps = |label: &str, r: usize| {
            rows.iter()
                .find(|x| x.label == label && x.rules == r)
                .map(|x| x.pps)
        };
        for s in &sluice {
            let name = format!("{s} at {hi} rules within 10% of itself at {lo} rules");
            match (pps(s, hi), pps(s, lo)) {
                (Some(a), Some(b)) if lo != hi => out.push((
                    name,
                    format!("{:.0} / {:.0} kpps = {:.2}×", a / 1e3, b / 1e3, a / b),
                    Some(a / b >= 0.9),
                )),
                _ => out.push((name, "not measured".into(), None)),
            }
        }
        let latency: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Latency && m.system == "sluice-afxdp")
            .collect();
        for label in latency
            .iter()
            .map(|m| m.label())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let mine: Vec<&&Measurement> = latency.iter().filter(|m| m.label() == label).collect();
            let lost: Vec<String> = mine
                .iter()
                .map(|m| {
                    format!(
                        "{:.0}%: {}",
                        m.load_share.unwrap_or(0.0) * 100.0,
                        m.extras.socket_lost.unwrap_or(0)
                    )
                })
                .collect();
            let below: Vec<&&&Measurement> = mine
                .iter()
                .filter(|m| m.load_share.is_some_and(|s| s < 0.95))
                .collect();
            out.push((
                format!("{label}: zero frames lost at the sockets below saturation"),
                format!("lost by load: {}", lost.join(", ")),
                (!below.is_empty()).then(|| below.iter().all(|m| m.extras.socket_lost == Some(0))),
            ));
            let half = mine
                .iter()
                .find(|m| m.load_share.is_some_and(|s| (s - 0.5).abs() < 0.01));
            let p99 = half
                .and_then(|m| m.extras.core.as_ref())
                .map(|c| c.latency.value_at_quantile(0.99));
            out.push((
                format!("{label}: per-core p99 < 50 µs at half the max rate"),
                p99.map_or("not measured".into(), |v| {
                    format!("{:.1} µs", v as f64 / 1e3)
                }),
                p99.map(|v| v < 50_000),
            ));
        }
        out
    }

    /// The JSON document (every raw figure).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| LabError::Report(e.to_string()))
    }

    /// The Markdown summary.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "**Command**: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "**Machine**: {} ({} CPUs online); load average at start `{}`, at end `{}`; {} s in all.\n",
            self.machine,
            self.machine.cores,
            self.load_start.trim(),
            self.load_end.trim(),
            self.finished_unix.saturating_sub(self.started_unix)
        );
        if let Some(c) = &self.config {
            let _ = writeln!(
                s,
                "**Settings**: {} generator; {} s measured after {} s warm-up per measurement; node core {}, generator core {}; sluice state: {} remote pods; sluice state build: {}.\n",
                c.generator,
                c.secs,
                c.warmup,
                c.topology.node_cpu,
                c.topology.gen_cpu,
                self.remote_pods,
                self.state_build_secs
                    .iter()
                    .map(|(r, t)| format!("{r} rules {t:.1} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.throughput_table(
            &mut s,
            Scenario::Throughput,
            "Throughput at saturation (flows=many)",
        );
        self.throughput_table(
            &mut s,
            Scenario::NewFlows,
            "New flows (every packet a new 5-tuple)",
        );
        self.throughput_table(
            &mut s,
            Scenario::Established,
            "Established flows (conntrack confirmed by a reply first)",
        );
        self.search_table(&mut s);
        self.latency_table(&mut s);
        crate::tcp_gen::markdown(&self.tcp, &mut s);
        crate::storm::markdown(&self.storms, &mut s);
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(
                s,
                "### Targets\n\n| target | measured | met |\n|---|---|---|"
            );
            for (t, m, ok) in targets {
                let ok = match ok {
                    Some(true) => "**yes**",
                    Some(false) => "**no**",
                    None => "–",
                };
                let _ = writeln!(s, "| {t} | {m} | {ok} |");
            }
            s.push('\n');
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "### Failures\n");
            for f in &self.failures {
                let _ = writeln!(
                    s,
                    "- {} ({:?}, {} rules): {}",
                    f.system, f.scenario, f.rules, f.reason
                );
            }
            s.push('\n');
        }
        s
    }

    fn throughput_table(&self, s: &mut String, scenario: Scenario, title: &str) {
        let rows = self.rows(scenario);
        if rows.is_empty() {
            return;
        }
        let rules = self.rule_counts(scenario);
        let _ = writeln!(
            s,
            "### {title}\n\nMedian of runs: forwarded kpps · node-core ns/packet · NAPI+worker-thread ns/packet · one-way p99 µs.\n"
        );
        let mut header = "| system |".to_owned();
        let mut sep = "|---|".to_owned();
        for r in &rules {
            let _ = write!(header, " {r} rules |");
            sep.push_str("---|");
        }
        let _ = writeln!(s, "{header}\n{sep}");
        for label in self.labels(scenario) {
            let mut line = format!("| {label} |");
            for r in &rules {
                match rows.iter().find(|x| x.label == label && x.rules == *r) {
                    Some(x) => {
                        let _ = write!(
                            line,
                            " **{}** · {} · {} · {} |",
                            kpps(x.pps),
                            ns(x.ns_core),
                            ns(x.ns_threads),
                            us(x.p99_ns)
                        );
                    }
                    None => line.push_str(" – |"),
                }
            }
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }

    fn search_table(&self, s: &mut String) {
        let probes: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Search)
            .collect();
        if probes.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "### Highest loss-free rate\n\nBisection of the paced rate; loss-free = at most 0.001 % of the frames sent lost (counted exactly after a drain).\n\n| system | rules | saturation kpps | highest loss-free kpps | probes (target kpps: lost) |\n|---|---|---|---|---|"
        );
        let rows = self.rows(Scenario::Throughput);
        let mut labels: Vec<String> = Vec::new();
        for m in &probes {
            if !labels.contains(&m.label()) {
                labels.push(m.label());
            }
        }
        for label in labels {
            let mine: Vec<&&Measurement> = probes.iter().filter(|m| m.label() == label).collect();
            let rules = mine[0].rules;
            let sat = rows
                .iter()
                .find(|r| r.label == label && r.rules == rules)
                .map_or(f64::NAN, |r| r.pps);
            let best = mine
                .iter()
                .filter(|m| m.loss_share() <= LOSS_FREE)
                .map(|m| m.forwarded_pps)
                .fold(f64::NAN, f64::max);
            let list: Vec<String> = mine
                .iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        kpps(m.traffic.rate_pps.unwrap_or(f64::NAN)),
                        m.lost_total
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "| {label} | {rules} | {} | **{}** | {} |",
                kpps(sat),
                kpps(best),
                list.join("; ")
            );
        }
        s.push('\n');
    }

    fn latency_table(&self, s: &mut String) {
        let ms: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Latency)
            .collect();
        if ms.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "### Latency at a share of each system's saturation rate\n\nOne-way latency from the generator's send stamp to the sink (both `bpf_ktime_get_ns`), and for sluice-afxdp the worker's per-core processing time (burst RX → TX).\n\n| system | rules | load | target kpps | forwarded kpps | one-way p50 / p99 / p99.9 µs | lost | lost at sockets | per-core p50 / p99 / p99.9 µs | node core busy |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for m in ms {
            let core = m
                .extras
                .core
                .as_ref()
                .filter(|c| !c.latency.is_empty())
                .map_or("–".to_owned(), |c| {
                    format!(
                        "{} / {} / {}",
                        us(c.latency.value_at_quantile(0.5) as f64),
                        us(c.latency.value_at_quantile(0.99) as f64),
                        us(c.latency.value_at_quantile(0.999) as f64)
                    )
                });
            let _ = writeln!(
                s,
                "| {} | {} | {:.0}% | {} | {} | {} / {} / {} | {} | {} | {} | {:.0}% |",
                m.label(),
                m.rules,
                m.load_share.unwrap_or(0.0) * 100.0,
                kpps(m.traffic.rate_pps.unwrap_or(f64::NAN)),
                kpps(m.forwarded_pps),
                us(m.latency_ns.p50 as f64),
                us(m.latency_ns.p99 as f64),
                us(m.latency_ns.p999 as f64),
                m.lost_total,
                m.extras
                    .socket_lost
                    .map_or("–".to_owned(), |v| v.to_string()),
                core,
                m.cpu.node_core_busy * 100.0
            );
        }
        s.push('\n');
    }

    /// Writes `report.json`, `report.md` and the SVG plots into `dir`; returns the files.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>> {
        let mut out = ReportDir::create(dir)?;
        out.put("report.json", &self.to_json()?)?;
        out.put("report.md", &self.to_markdown())?;
        for (name, svg) in self.plots() {
            out.put(&name, &svg)?;
        }
        Ok(out.files)
    }

    /// The SVG plots: (file name, document). A plot without data is left out.
    pub fn plots(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let rows = self.rows(Scenario::Throughput);
        let series = |value: fn(&Row) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            self.labels(Scenario::Throughput)
                .into_iter()
                .map(|label| {
                    let pts = rows
                        .iter()
                        .filter(|r| r.label == label && value(r).is_finite() && value(r) > 0.0)
                        .map(|r| (r.rules as f64, value(r)))
                        .collect();
                    (label, pts)
                })
                .collect()
        };
        let charts = [
            (
                "throughput_vs_rules.svg",
                LineChart::new(
                    "Forwarded rate at saturation vs rules (64 B UDP, 1 node core)",
                    "rules (policy entries for sluice)",
                    "forwarded Mpps",
                )
                .x_scale(Scale::Log)
                .y_scale(Scale::Log),
                series(|r| r.pps / 1e6),
            ),
            (
                "ns_per_packet_vs_rules.svg",
                LineChart::new(
                    "Node core time per forwarded packet vs rules",
                    "rules (policy entries for sluice)",
                    "node core ns / packet",
                )
                .x_scale(Scale::Log)
                .y_scale(Scale::Log),
                series(|r| r.ns_core),
            ),
        ];
        for (name, chart, data) in charts {
            if let Ok(svg) = chart.to_svg(&data) {
                out.push((name.to_owned(), svg));
            }
        }
        let lat: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Latency)
            .collect();
        let mut labels: Vec<String> = Vec::new();
        for m in &lat {
            if !labels.contains(&m.label()) {
                labels.push(m.label());
            }
        }
        let data: Vec<(String, Vec<(f64, f64)>)> = labels
            .iter()
            .map(|l| {
                let mut pts: Vec<(f64, f64)> = lat
                    .iter()
                    .filter(|m| &m.label() == l && m.latency_ns.p99 > 0)
                    .map(|m| {
                        (
                            m.load_share.unwrap_or(0.0) * 100.0,
                            m.latency_ns.p99 as f64 / 1e3,
                        )
                    })
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (l.clone(), pts)
            })
            .collect();
        if let Ok(svg) = LineChart::new(
            "One-way p99 latency vs load (share of each system's saturation rate)",
            "load (% of the system's saturation rate)",
            "one-way p99 µs",
        )
        .x_scale(Scale::Linear)
        .y_scale(Scale::Log)
        .to_svg(&data)
        {
            out.push(("latency_p99_vs_load.svg".into(), svg));
        }
        let cores = self.afxdp_cores();
        if !cores.is_empty() {
            if let Ok(svg) = perf::plot::core_bars_svg(
                "sluice-afxdp per-core rate and processing time (one worker, node core)",
                &cores,
            ) {
                out.push(("afxdp_core_bars.svg".into(), svg));
            }
            if let Ok(svg) =
                perf::plot::latency_cdf_svg("sluice-afxdp per-core processing time", &cores)
            {
                out.push(("afxdp_core_latency_cdf.svg".into(), svg));
            }
        }
        out
    }

    /// sluice-afxdp's per-core statistics from the latency scenario (one per mode and load)
    /// and from its saturation runs at the highest rule count, named by what they were.
    pub fn afxdp_cores(&self) -> Vec<CoreStats> {
        let hi = self.rule_counts(Scenario::Throughput).last().copied();
        let mut out = Vec::new();
        for m in &self.measurements {
            if m.system != "sluice-afxdp" {
                continue;
            }
            let what = match m.scenario {
                Scenario::Latency => format!("{:.0}%", m.load_share.unwrap_or(0.0) * 100.0),
                Scenario::Throughput if Some(m.rules) == hi && m.run == 0 => "max".into(),
                _ => continue,
            };
            if let Some(c) = &m.extras.core {
                let mut c = c.clone();
                c.name = format!("{} {what}", m.variant.trim_start_matches("umem="));
                out.push(c);
            }
        }
        out
    }

    /// One JSON line per (system, rules, flows) of the throughput-like scenarios: `system`,
    /// `variant`, `rules`, `flows`, `mpps`, `ns_per_packet` (node core), `ns_per_packet_threads`,
    /// `p99_us` (one-way, at saturation), `loss`.
    pub fn quick_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for scenario in [
            Scenario::Throughput,
            Scenario::NewFlows,
            Scenario::Established,
        ] {
            for r in self.rows(scenario) {
                let variant = self
                    .measurements
                    .iter()
                    .find(|m| m.label() == r.label)
                    .map(|m| m.variant.clone())
                    .unwrap_or_default();
                out.push(
                    serde_json::json!({
                        "system": r.system,
                        "variant": variant,
                        "rules": r.rules,
                        "flows": r.flows.name(),
                        "mpps": (r.pps / 1e4).round() / 1e2,
                        "ns_per_packet": r.ns_core.round(),
                        "ns_per_packet_threads": r.ns_threads.round(),
                        "p99_us": (r.p99_ns / 1e2).round() / 10.0,
                        "loss": r.loss,
                        "offered_mpps": (r.offered_pps / 1e4).round() / 1e2,
                        "generator": self.config.as_ref().map(|c| c.generator.name()),
                    })
                    .to_string(),
                );
            }
        }
        out
    }
}

/// Largest loss share that still counts as loss-free in the rate search.
pub const LOSS_FREE: f64 = 1e-5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuUse;
    use crate::generator::{GenState, TrafficSpec};
    use crate::scenario::LatencyFigures;
    use crate::systems::PeriodExtras;

    fn m(system: &str, variant: &str, rules: usize, run: usize, pps: f64) -> Measurement {
        Measurement {
            system: system.into(),
            variant: variant.into(),
            rules,
            scenario: Scenario::Throughput,
            run,
            traffic: TrafficSpec {
                flows: FlowMode::Many,
                frame_len: 64,
                ipv6: false,
                src_ips: 1,
                rate_pps: None,
            },
            load_share: None,
            secs: 4.0,
            offered_pps: pps * 1.1,
            forwarded_pps: pps,
            forwarded_bps: pps * 512.0,
            sent_total: 100,
            received_total: 100,
            lost_total: 0,
            reordered: 0,
            ttl_intact_share: 1.0,
            latency_ns: LatencyFigures {
                p99: 20_000,
                ..LatencyFigures::default()
            },
            latency_buckets: Vec::new(),
            cpu: CpuUse::default(),
            ns_per_packet_core: 1e9 / pps,
            ns_per_packet_threads: 1e9 / pps,
            generator: GenState::default(),
            extras: PeriodExtras::default(),
            load: "0.1 0.1 0.1".into(),
        }
    }

    fn sample() -> Report {
        let mut r = Report::new("bench-lab run".into());
        for run in 0..3 {
            for rules in [10, 10_000] {
                let slow = if rules == 10 { 480e3 } else { 28e3 };
                r.measurements.push(m("iptables", "", rules, run, slow));
                r.measurements
                    .push(m("sluice-kernel", "", rules, run, 2.0e6 + run as f64));
                r.measurements
                    .push(m("xdp-redirect-bare", "", rules, run, 2.1e6));
                r.measurements
                    .push(m("sluice-afxdp", "umem=shared", rules, run, 1.0e6));
                r.measurements
                    .push(m("sluice-afxdp", "umem=per-socket", rules, run, 0.9e6));
            }
        }
        r.finish();
        r
    }

    #[test]
    fn medians_and_same_run_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let r = sample();
        let (ratio, all) = r
            .ratio(
                Scenario::Throughput,
                "sluice-kernel",
                Scenario::Throughput,
                "iptables",
                10_000,
            )
            .expect("both measured");
        assert_eq!(all.len(), 3);
        assert!((ratio - 2.0e6 / 28e3).abs() < 0.1, "{ratio}");
        assert_eq!(
            r.best_afxdp(10_000).as_deref(),
            Some("sluice-afxdp (umem=shared)")
        );
    }

    #[test]
    fn markdown_json_plots_and_quick_lines_render() {
        let r = sample();
        let md = r.to_markdown();
        assert!(md.contains("| sluice-kernel | **2000** ·"), "{md}");
        assert!(
            md.contains("sluice-kernel ≥ 10× iptables at 10000 rules"),
            "{md}"
        );
        assert!(
            md.contains("| sluice-kernel ≥ 0.9× xdp-redirect-bare (10000 rules) | 0.95×"),
            "{md}"
        );
        let json = r.to_json().expect("json");
        let back: Report = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.measurements.len(), r.measurements.len());
        let plots = r.plots();
        assert!(
            plots
                .iter()
                .any(|(n, svg)| n == "throughput_vs_rules.svg" && svg.contains("<svg"))
        );
        let lines = r.quick_lines();
        assert_eq!(lines.len(), 10);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json line");
        for key in [
            "system",
            "rules",
            "flows",
            "mpps",
            "ns_per_packet",
            "p99_us",
        ] {
            assert!(first.get(key).is_some(), "{key} in {first}");
        }
    }
}
