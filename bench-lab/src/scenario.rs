//! The lab and its scenarios: one measurement (set up, generate, sample, tear down), and the
//! sequences of them that answer each question: throughput against rules, new-connection
//! rate, the highest loss-free rate, latency at fractions of each system's maximum.
//!
//! One measurement ([`Lab::measure`]): the system is set up, the node's NAPI kthreads are
//! pinned, the generator starts (one long call), runs `warmup` seconds, then `secs` seconds are
//! measured between two samples of the sink, the generator, the CPU counters and the system's
//! own statistics; the generator stops, the sink drains for 100 ms and loss is counted exactly
//! (frames sent − lab frames received over the whole call, warm-up included); the system is
//! torn down.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::afxdp_gen::{ActiveGenerator, AfxdpGenConfig, AfxdpGenerator, GeneratorKind};
use crate::cpu::{self, CpuUse, Task};
use crate::error::{LabError, Result};
use crate::generator::{
    FlowMode, GenState, Generator, LAB_PORT, LabPrograms, SPORT_BASE, SinkCounters, TrafficSpec,
    frame_for, latency_histogram,
};
use crate::netns::{self, RemoveDir};
use crate::report::loadavg;
use crate::systems::{PeriodExtras, System};
use crate::topology::{Topology, TopologyConfig, v6_of};

/// How the lab runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabConfig {
    /// Namespaces, veths, cores.
    pub topology: TopologyConfig,
    /// Measured seconds per measurement.
    pub secs: f64,
    /// Warm-up seconds before each measured period (inside the same generator call).
    pub warmup: f64,
    /// Nice value of the generator thread.
    pub gen_nice: i32,
    /// Which generator sends the traffic.
    #[serde(default)]
    pub generator: GeneratorKind,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            topology: TopologyConfig::default(),
            secs: 4.0,
            warmup: 1.0,
            gen_nice: 0,
            generator: GeneratorKind::default(),
        }
    }
}

/// Which question a measurement answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// As fast as the generator goes (rate at saturation).
    Throughput,
    /// As fast as possible with every packet a new flow.
    NewFlows,
    /// Established flows: conntrack entries confirmed by a reply from the sink first.
    Established,
    /// A probe of the loss-free rate search.
    Search,
    /// Paced at a fraction of the system's saturation rate.
    Latency,
}

/// Everything measured in one period; every raw figure a report needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// System name.
    pub system: String,
    /// Variant (`conntrack-first`, `umem=shared`, …).
    pub variant: String,
    /// Rules (for systems without rules: the rule count of the pass it ran in).
    pub rules: usize,
    /// What was asked.
    pub scenario: Scenario,
    /// Repetition (0-based).
    pub run: usize,
    /// Traffic.
    pub traffic: TrafficSpec,
    /// The pacing target as a share of the system's saturation rate (latency scenario).
    pub load_share: Option<f64>,
    /// Measured seconds.
    pub secs: f64,
    /// Frames the generator sent per second over the period.
    pub offered_pps: f64,
    /// Lab frames at the sink per second over the period.
    pub forwarded_pps: f64,
    /// Lab bytes at the sink per second.
    pub forwarded_bps: f64,
    /// Frames sent over the whole generator call (warm-up included).
    pub sent_total: u64,
    /// Lab frames received over the whole call (after a 100 ms drain).
    pub received_total: u64,
    /// `sent_total − received_total`.
    pub lost_total: u64,
    /// Lab frames over the period whose sequence number was below the highest seen.
    pub reordered: u64,
    /// Share of the period's lab frames with TTL/hop limit 64 (no routing stack on the way).
    pub ttl_intact_share: f64,
    /// One-way latency (send stamp → sink), ns: p50, p90, p99, p99.9, max, mean.
    pub latency_ns: LatencyFigures,
    /// Non-empty sink latency buckets: (bucket lower bound ns, count).
    pub latency_buckets: Vec<(u64, u64)>,
    /// CPU over the period.
    pub cpu: CpuUse,
    /// Node core busy ns per forwarded packet (the fairest figure).
    pub ns_per_packet_core: f64,
    /// NAPI kthreads + the system's userspace threads, ns per forwarded packet.
    pub ns_per_packet_threads: f64,
    /// The generator's state at the end (pacing: `behind` restarts).
    pub generator: GenState,
    /// What the system reported (sockets, per-core statistics, counters).
    pub extras: PeriodExtras,
    /// 1/5/15-minute load average at the start.
    pub load: String,
}

/// Percentiles of a latency distribution, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl LatencyFigures {
    /// Figures of a histogram.
    pub fn of(h: &perf::LatencyHistogram) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        LatencyFigures {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

impl Measurement {
    /// `system (variant)`.
    pub fn label(&self) -> String {
        crate::systems::label(&self.system, &self.variant)
    }

    /// Share of the frames sent that were lost.
    pub fn loss_share(&self) -> f64 {
        if self.sent_total == 0 {
            0.0
        } else {
            self.lost_total as f64 / self.sent_total as f64
        }
    }
}

/// The lab: topology, generator and sink, work directory.
pub struct Lab {
    /// How it runs.
    pub config: LabConfig,
    /// The loaded generator and sink (dropped before the topology).
    pub programs: LabPrograms,
    /// The namespaces.
    pub topology: Topology,
    /// Scratch files (OVS's database and sockets), removed on drop.
    pub work: RemoveDir,
}

impl Lab {
    /// Checks privileges, removes namespaces left by killed labs, builds the topology and
    /// loads the generator and sink. The calling thread moves to the generator core.
    pub fn new(config: LabConfig) -> Result<Self> {
        if !netns::is_root() {
            return Err(LabError::NotRoot);
        }
        for name in netns::remove_stale() {
            eprintln!("removed namespace {name} left by a lab that was killed");
        }
        netns::ensure_bpffs()?;
        netns::pin_to_cpu(0, config.topology.gen_cpu)?;
        let work = std::env::temp_dir().join(format!("{}{}", netns::PREFIX, std::process::id()));
        std::fs::create_dir_all(&work).map_err(|e| LabError::io(work.display().to_string(), e))?;
        let work = RemoveDir(work);
        let topology = Topology::build(config.topology.clone())?;
        let programs = LabPrograms::load(&topology)?;
        Ok(Lab {
            config,
            programs,
            topology,
            work,
        })
    }

    /// Ends a lab command: shuts `systems` down (daemons, BPF objects), then the lab itself
    /// (its programs, then its namespaces).
    pub fn close(self, systems: &mut [Box<dyn System>]) {
        for system in systems {
            system.shutdown();
        }
    }

    /// The work directory.
    pub fn work_dir(&self) -> PathBuf {
        self.work.0.clone()
    }

    /// Sets `system` up, measures it once, tears it down (also when the measurement fails).
    pub fn measure(
        &mut self,
        system: &mut dyn System,
        rules: usize,
        spec: &TrafficSpec,
        scenario: Scenario,
        run: usize,
        load_share: Option<f64>,
    ) -> Result<Measurement> {
        crate::systems::measure_once(
            self,
            |lab| &lab.topology,
            system,
            rules,
            spec,
            |lab, system| lab.measure_set_up(system, rules, spec, scenario, run, load_share),
        )
    }

    fn measure_set_up(
        &mut self,
        system: &mut dyn System,
        rules: usize,
        spec: &TrafficSpec,
        scenario: Scenario,
        run: usize,
        load_share: Option<f64>,
    ) -> Result<Measurement> {
        let name = system.name();
        let napi: Vec<Task> = self
            .topology
            .place_napi(system.napi_nice())?
            .into_iter()
            .map(Task::kthread)
            .collect();
        let user = system.user_threads();
        let (node_cpu, gen_cpu) = (self.topology.config.node_cpu, self.topology.config.gen_cpu);
        self.programs.configure(spec, &self.topology.gens[0])?;
        let frame = frame_for(&self.topology, spec);
        let load = loadavg();
        let kind = self.config.generator;
        let gen0 = ActiveGenerator::baseline(kind, &self.programs)?;
        let sink0 = self.programs.sink()?;
        let mut generator = match kind {
            GeneratorKind::LiveFrames => ActiveGenerator::LiveFrames(Generator::start(
                self.programs.gen_fd()?,
                self.topology.gens[0].ns.path(),
                self.topology.gens[0].ifindex,
                frame,
                gen_cpu,
                self.config.gen_nice,
            )?),
            GeneratorKind::Afxdp => {
                ActiveGenerator::Afxdp(AfxdpGenerator::start(AfxdpGenConfig::for_pod(
                    &self.topology.gens[0],
                    &self.topology.sink,
                    spec,
                    gen_cpu,
                    self.config.gen_nice,
                    crate::afxdp_gen::next_seq(&self.programs)?,
                )?)?)
            }
        };
        netns::sleep_checked(Duration::from_secs_f64(self.config.warmup))?;
        if scenario == Scenario::Established {
            prime_replies(&self.topology, spec)?;
            netns::sleep_checked(Duration::from_millis(300))?;
        }
        system.begin_period()?;
        let t0 = Instant::now();
        let gen_a = generator.state(&self.programs)?;
        let sink_a = self.programs.sink()?;
        let cpu_a = cpu::sample(&napi, &user, node_cpu, gen_cpu);
        netns::sleep_checked(Duration::from_secs_f64(self.config.secs))?;
        let gen_b = generator.state(&self.programs)?;
        let sink_b = self.programs.sink()?;
        let cpu_b = cpu::sample(&napi, &user, node_cpu, gen_cpu);
        let dt = t0.elapsed().as_secs_f64();
        let extras = system.end_period()?;
        generator.stop()?;
        std::thread::sleep(Duration::from_millis(100));
        let gen_end = generator.state(&self.programs)?;
        let sink_end = self.programs.sink()?;

        let period: SinkCounters = sink_b.since(&sink_a);
        if period.lab == 0 {
            return Err(LabError::Measurement {
                system: name.into(),
                reason: format!(
                    "nothing reached the sink ({} frames offered)",
                    gen_b.sent - gen_a.sent
                ),
            });
        }
        let fwd = period.lab as f64;
        let cpu = CpuUse::between(&cpu_a, &cpu_b, dt);
        let hist = latency_histogram(&period.latency);
        let sent_total = gen_end.sent - gen0.sent;
        let received_total = sink_end.lab - sink0.lab;
        Ok(Measurement {
            system: name.into(),
            variant: system.variant(),
            rules,
            scenario,
            run,
            traffic: spec.clone(),
            load_share,
            secs: dt,
            offered_pps: (gen_b.sent - gen_a.sent) as f64 / dt,
            forwarded_pps: fwd / dt,
            forwarded_bps: period.bytes as f64 * 8.0 / dt,
            sent_total,
            received_total,
            lost_total: sent_total.saturating_sub(received_total),
            reordered: period.reordered,
            ttl_intact_share: period.ttl_intact as f64 / fwd,
            latency_ns: LatencyFigures::of(&hist),
            latency_buckets: period
                .latency
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (crate::generator::latency_bucket_bounds(i).0, *n))
                .collect(),
            ns_per_packet_core: cpu.node_core_ns as f64 / fwd,
            ns_per_packet_threads: (cpu.napi_ns + cpu.user_ns) as f64 / fwd,
            cpu,
            generator: gen_end,
            extras,
            load,
        })
    }
}

/// Sends one UDP datagram per generator flow from the sink back to the generator (sink:9 →
/// gen:sport), so that conntrack sees a reply on every flow and later packets are ESTABLISHED.
/// Only for fixed flow modes.
pub fn prime_replies(topology: &Topology, spec: &TrafficSpec) -> Result<()> {
    if spec.flows == FlowMode::New {
        return Ok(());
    }
    let generator = &topology.gens[0];
    let sources: Vec<IpAddr> = generator
        .v4
        .iter()
        .take(spec.src_ips.max(1) as usize)
        .map(|a| {
            if spec.ipv6 {
                IpAddr::V6(v6_of(*a))
            } else {
                IpAddr::V4(*a)
            }
        })
        .collect();
    let bind: SocketAddr = if spec.ipv6 {
        SocketAddr::new(IpAddr::V6(v6_of(topology.sink.v4[0])), LAB_PORT)
    } else {
        SocketAddr::new(IpAddr::V4(topology.sink.v4[0]), LAB_PORT)
    };
    let flows = spec.flows.flows();
    topology.sink.ns.run(|| {
        let socket = UdpSocket::bind(bind)
            .map_err(|e| LabError::io("binding the sink's reply socket".into(), e))?;
        for src in &sources {
            for f in 0..flows {
                let to = SocketAddr::new(*src, SPORT_BASE + f as u16);
                socket
                    .send_to(b"reply", to)
                    .map_err(|e| LabError::io(format!("reply to {to}"), e))?;
            }
        }
        Ok(())
    })
}

/// What a `run` (or `quick`) measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Rule counts, ascending.
    pub rules: Vec<usize>,
    /// Repetitions of the throughput and new-flow measurements.
    pub runs: usize,
    /// Traffic of the throughput scenario (its rate is ignored).
    pub traffic: TrafficSpec,
    /// Measure every system with flows=new at the highest rule count (and iptables with the
    /// conntrack rule first).
    pub new_flows: bool,
    /// Measure iptables (conntrack-first) with established flows at the highest rule count.
    pub established: bool,
    /// Probes of the loss-free rate search per system (0: none).
    pub search_steps: usize,
    /// Seconds per search probe.
    pub search_secs: f64,
    /// Load shares for the latency scenario (empty: none).
    pub latency_loads: Vec<f64>,
}

/// A system under test with the scenarios it takes part in.
pub struct Entry {
    /// The system.
    pub system: Box<dyn System>,
    /// In the throughput, search and latency scenarios (iptables conntrack-first is not: it
    /// is measured with new and established flows only).
    pub main: bool,
    /// Set after a failure: skipped from then on.
    pub failed: bool,
}

/// Progress reporting (a progress bar in the binary).
pub trait Progress {
    /// Starting a measurement.
    fn start(&self, what: &str);
    /// A measurement finished (or failed) with this one-line summary.
    fn done(&self, line: &str);
}

fn summary(m: &Measurement) -> String {
    format!(
        "{:<32} {:>6} rules {:>4} {:>13} {:>8.0} kpps {:>7.0} ns/pkt core {:>7.0} ns/pkt thr  p99 {:>8.1} µs  lost {}{}",
        m.label(),
        m.rules,
        m.traffic.flows.name(),
        format!("{:?}", m.scenario),
        m.forwarded_pps / 1e3,
        m.ns_per_packet_core,
        m.ns_per_packet_threads,
        m.latency_ns.p99 as f64 / 1e3,
        m.lost_total,
        m.extras
            .socket_lost
            .map(|l| format!(" (sockets {l})"))
            .unwrap_or_default()
    )
}

/// Number of measurements `plan` makes with `entries` (for a progress bar).
pub fn planned(plan: &Plan, entries: &[Entry]) -> usize {
    let main = entries.iter().filter(|e| e.main).count();
    let all = entries.len();
    let ct = all - main;
    main * plan.rules.len() * plan.runs
        + if plan.new_flows { all * plan.runs } else { 0 }
        + if plan.established { ct * plan.runs } else { 0 }
        + main * plan.search_steps
        + main * plan.latency_loads.len()
}

impl Lab {
    fn attempt(
        &mut self,
        entry: &mut Entry,
        report: &mut crate::report::Report,
        progress: &dyn Progress,
        args: (usize, &TrafficSpec, Scenario, usize, Option<f64>),
    ) -> Result<Option<Measurement>> {
        let (rules, spec, scenario, run, share) = args;
        let label = crate::systems::label(entry.system.name(), &entry.system.variant());
        progress.start(&format!(
            "{label} · {rules} rules · {scenario:?} · run {}",
            run + 1
        ));
        if entry.failed {
            return Ok(None);
        }
        match self.measure(entry.system.as_mut(), rules, spec, scenario, run, share) {
            Ok(m) => {
                progress.done(&summary(&m));
                report.measurements.push(m.clone());
                Ok(Some(m))
            }
            Err(LabError::Interrupted) => Err(LabError::Interrupted),
            Err(e) => {
                progress.done(&format!("{label}: FAILED: {e}"));
                report.failures.push(crate::report::Failure {
                    system: label,
                    scenario,
                    rules,
                    reason: e.to_string(),
                });
                // A system that cannot be set up will not be next time either; a failed
                // measurement of a working system is retried at the next point.
                if matches!(e, LabError::System { .. } | LabError::Spawn { .. }) {
                    entry.failed = true;
                }
                Ok(None)
            }
        }
    }

    /// Runs `plan` over `entries`, appending to `report`.
    pub fn execute(
        &mut self,
        plan: &Plan,
        entries: &mut [Entry],
        report: &mut crate::report::Report,
        progress: &dyn Progress,
    ) -> Result<()> {
        let spec = TrafficSpec {
            rate_pps: None,
            ..plan.traffic.clone()
        };
        let Some(&top) = plan.rules.last() else {
            return Err(LabError::Invalid {
                what: "rules",
                reason: "no rule count".into(),
            });
        };
        // Rule counts outermost: sluice's state is built once per count. Systems alternate
        // inside each repetition.
        for &rules in &plan.rules {
            for run in 0..plan.runs {
                for entry in entries.iter_mut().filter(|e| e.main) {
                    self.attempt(
                        entry,
                        report,
                        progress,
                        (rules, &spec, Scenario::Throughput, run, None),
                    )?;
                }
            }
            if rules == top {
                if plan.new_flows {
                    let new = TrafficSpec {
                        flows: FlowMode::New,
                        src_ips: spec.src_ips.max(self.topology.config.src_ips),
                        ..spec.clone()
                    };
                    for run in 0..plan.runs {
                        for entry in entries.iter_mut() {
                            self.attempt(
                                entry,
                                report,
                                progress,
                                (rules, &new, Scenario::NewFlows, run, None),
                            )?;
                        }
                    }
                }
                if plan.established {
                    for run in 0..plan.runs {
                        for entry in entries.iter_mut().filter(|e| !e.main) {
                            self.attempt(
                                entry,
                                report,
                                progress,
                                (rules, &spec, Scenario::Established, run, None),
                            )?;
                        }
                    }
                }
            }
        }
        let rows = report.rows(Scenario::Throughput);
        let saturation = |label: &str| {
            rows.iter()
                .find(|r| r.label == label && r.rules == top)
                .map(|r| r.pps)
                .filter(|p| p.is_finite() && *p > 0.0)
        };
        if plan.search_steps > 0 {
            let secs = self.config.secs;
            self.config.secs = plan.search_secs;
            let result = self.search(plan, entries, report, progress, top, &spec, &saturation);
            self.config.secs = secs;
            result?;
        }
        for entry in entries.iter_mut().filter(|e| e.main) {
            let label = crate::systems::label(entry.system.name(), &entry.system.variant());
            let Some(sat) = saturation(&label) else {
                continue;
            };
            for &share in &plan.latency_loads {
                let paced = TrafficSpec {
                    rate_pps: Some(sat * share),
                    ..spec.clone()
                };
                self.attempt(
                    entry,
                    report,
                    progress,
                    (top, &paced, Scenario::Latency, 0, Some(share)),
                )?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn search(
        &mut self,
        plan: &Plan,
        entries: &mut [Entry],
        report: &mut crate::report::Report,
        progress: &dyn Progress,
        top: usize,
        spec: &TrafficSpec,
        saturation: &dyn Fn(&str) -> Option<f64>,
    ) -> Result<()> {
        for entry in entries.iter_mut().filter(|e| e.main) {
            let label = crate::systems::label(entry.system.name(), &entry.system.variant());
            let Some(sat) = saturation(&label) else {
                continue;
            };
            let (mut lo, mut hi) = (0.3 * sat, 1.05 * sat);
            for step in 0..plan.search_steps {
                let rate = if step == 0 { hi } else { (lo + hi) / 2.0 };
                let paced = TrafficSpec {
                    rate_pps: Some(rate),
                    ..spec.clone()
                };
                let m = self.attempt(
                    entry,
                    report,
                    progress,
                    (top, &paced, Scenario::Search, step, Some(rate / sat)),
                )?;
                match m {
                    Some(m) if m.loss_share() <= crate::report::LOSS_FREE => {
                        if step == 0 {
                            break;
                        }
                        lo = rate;
                    }
                    Some(_) => hi = rate,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Releases every system (daemons, BPF objects).
    pub fn shutdown(entries: &mut [Entry]) {
        for e in entries {
            e.system.shutdown();
        }
    }
}
