//! The policy update storm: pod adds and removes applied to sluice's state at a set rate
//! (1,000 a second by default) while traffic flows, and what that does to the traffic.
//!
//! Traffic: two AF_XDP generators, each paced. Generator pod 0 is the `app=gen` endpoint the
//! sink's policy admits (UDP 9); generator pod 1 is registered for the storm as a local endpoint
//! labelled `app=denied`, which no policy admits to the sink, so each of its frames must be
//! dropped by policy. The sink counts lab frames per source address, so it can tell the two
//! apart. Verdict errors are frames of the denied pod that reached the sink, plus policy drops
//! beyond the denied pod's frames (frames of the allowed pod dropped by a verdict); both must be
//! 0. Frames of the allowed pod lost for other reasons (rings, a busy core) are reported apart.
//!
//! Updates: remote pods (`storm-N`, from `10.132.0.0`) are added and the oldest removed, in
//! alternation, keeping `window` of them alive; every tenth joins the allowed identity
//! (`app=gen`), every tenth the denied one, the rest a group of the rule plan's label sets. Each
//! tick (10 ms) applies the updates due since the start as one batch the way the node agent
//! applies an event batch: change the cache, publish, wait for the workers when something was
//! removed, sync the BPF maps by diff ([`LiveState`]). An update's apply latency runs from the
//! moment it was due (its slot in the schedule) to the end of the sync that applied it, so a
//! slow batch delays the updates queued behind it and shows.
//!
//! Throughput: the allowed pod's frames delivered per second in a window before the storm and
//! during it; the dip is their ratio.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::afxdp_gen::{AfxdpGenConfig, AfxdpGenerator, next_seq};
use crate::error::{LabError, Result};
use crate::generator::{GenState, TrafficSpec};
use crate::netns;
use crate::scenario::{Lab, LatencyFigures};
use crate::systems::System;
use crate::systems::sluice::{LiveState, MIN_REMOTE_GROUPS, lab_workload};
use crate::topology::{Topology, v6_of};

/// The first storm pod's address.
pub const STORM_BASE: Ipv4Addr = Ipv4Addr::new(10, 132, 0, 0);
/// Most storm pods one run may create (a /16).
pub const MAX_STORM_PODS: u64 = 65_536;
/// Seconds between update batches.
const TICK: Duration = Duration::from_millis(10);
/// uid of the denied endpoint (generator pod 1).
const DENIED_UID: &str = "storm-denied";
/// Offset of the denied generator's sequence numbers (kept apart from the allowed one's).
const DENIED_SEQ_OFFSET: u64 = 1 << 40;

/// What a storm does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StormSpec {
    /// Rule count of sluice's state.
    pub rules: usize,
    /// Pod updates (adds + removes) per second.
    pub rate: f64,
    /// Seconds of updates.
    pub secs: f64,
    /// Seconds of traffic before the storm (the baseline window).
    pub before_secs: f64,
    /// Storm pods alive at any time (added before the traffic starts).
    pub window: usize,
    /// Frames per second from the allowed pod.
    pub allowed_pps: f64,
    /// Frames per second from the denied pod.
    pub denied_pps: f64,
    /// Core the updates are applied on (`None`: the node's core, where a node agent competes
    /// with the dataplane; the generators keep their own core either way).
    #[serde(default)]
    pub updater_cpu: Option<usize>,
}

impl Default for StormSpec {
    fn default() -> Self {
        StormSpec {
            rules: 1_000,
            rate: 1_000.0,
            secs: 3.0,
            before_secs: 2.0,
            window: 500,
            allowed_pps: 100_000.0,
            denied_pps: 10_000.0,
            updater_cpu: None,
        }
    }
}

impl StormSpec {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |what, reason: String| Err(LabError::Invalid { what, reason });
        if !(self.rate > 0.0 && self.rate <= 100_000.0) {
            return bad(
                "update rate",
                format!("{} (0 < rate ≤ 100,000/s)", self.rate),
            );
        }
        if !(self.secs > 0.0 && self.secs <= 600.0 && self.before_secs > 0.0) {
            return bad(
                "storm duration",
                format!(
                    "{} s after {} s (both > 0, ≤ 600)",
                    self.secs, self.before_secs
                ),
            );
        }
        let pods = self.window as f64 + self.rate * self.secs / 2.0 + 1.0;
        if pods > MAX_STORM_PODS as f64 {
            return bad(
                "storm size",
                format!("{pods:.0} pods over the run (at most {MAX_STORM_PODS})"),
            );
        }
        if !(self.allowed_pps > 0.0 && self.denied_pps > 0.0) {
            return bad(
                "storm traffic",
                format!(
                    "{} and {} pps (both > 0)",
                    self.allowed_pps, self.denied_pps
                ),
            );
        }
        Ok(())
    }
}

/// Traffic counted over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StormWindow {
    /// Seconds.
    pub secs: f64,
    /// Allowed-pod frames sent per second.
    pub allowed_offered_pps: f64,
    /// Allowed-pod frames at the sink per second.
    pub allowed_delivered_pps: f64,
    /// Denied-pod frames at the sink (must be 0).
    pub denied_delivered: u64,
}

/// What a storm measured on one system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StormResult {
    /// System name.
    pub system: String,
    /// Variant.
    pub variant: String,
    /// What was asked.
    pub spec: StormSpec,
    /// Remote pods in the state besides the storm's.
    pub remote_pods: usize,
    /// The window before the storm.
    pub before: StormWindow,
    /// The window of the storm.
    pub during: StormWindow,
    /// `during.allowed_delivered_pps / before.allowed_delivered_pps`.
    pub throughput_ratio: f64,
    /// Updates applied (adds + removes) during the storm.
    pub updates: u64,
    /// Of which adds.
    pub adds: u64,
    /// Batches they were applied in.
    pub batches: u64,
    /// Updates per second achieved.
    pub achieved_rate: f64,
    /// Per update: from its slot in the schedule to the end of the sync that applied it, ns.
    pub apply_ns: LatencyFigures,
    /// Per batch: the time to apply it (change, publish, barrier, sync), ns.
    pub batch_ns: LatencyFigures,
    /// Per batch: the BPF map sync's share, ns.
    pub sync_ns: LatencyFigures,
    /// BPF map entries written or deleted by the storm's syncs.
    pub map_writes: u64,
    /// Allowed-pod frames sent over the whole run.
    pub allowed_sent: u64,
    /// Allowed-pod frames at the sink over the whole run.
    pub allowed_received: u64,
    /// Denied-pod frames sent over the whole run.
    pub denied_sent: u64,
    /// Denied-pod frames at the sink over the whole run (verdict errors).
    pub denied_delivered: u64,
    /// Drops the dataplane counted over the whole run (in-kernel drops + worker drops).
    pub dataplane_drops: u64,
    /// Allowed-pod frames dropped by a verdict: dataplane drops beyond the denied frames sent.
    pub allowed_dropped_by_verdict: u64,
    /// `denied_delivered + allowed_dropped_by_verdict`: must be 0.
    pub verdict_errors: u64,
}

/// The sink's and generators' counters at one instant.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    allowed_gen: GenState,
    denied_gen: GenState,
    allowed_rx: u64,
    denied_rx: u64,
}

/// The storm pod `n`: uid, labels, address.
fn storm_pod(n: u64, label_sets: usize) -> (String, String, Ipv4Addr) {
    let app = match n % 10 {
        0 => "gen".to_owned(),
        1 => "denied".to_owned(),
        _ => format!("r{}", n as usize % label_sets),
    };
    (
        format!("storm-{n}"),
        app,
        Ipv4Addr::from(u32::from(STORM_BASE) + n as u32),
    )
}

fn slot_of(addr: Ipv4Addr) -> usize {
    addr.octets()[3] as usize
}

/// Applies a batch of pod changes through `live`, timing it.
fn apply(
    live: &mut dyn LiveState,
    topology: &Topology,
    adds: &[u64],
    removes: &[u64],
    label_sets: usize,
) -> Result<crate::systems::sluice::UpdateTiming> {
    let addresses: Vec<ipnet::IpNet> = adds
        .iter()
        .chain(removes)
        .map(|&n| ipnet::IpNet::from(IpAddr::V4(storm_pod(n, label_sets).2)))
        .collect();
    live.update(topology, !removes.is_empty(), &addresses, &mut |cache| {
        for &n in adds {
            let (uid, app, ip) = storm_pod(n, label_sets);
            cache
                .upsert_workload(lab_workload(uid, &app, vec![IpAddr::V4(ip)], None))
                .map_err(|e| LabError::system("storm", format!("adding storm-{n}: {e}")))?;
        }
        for &n in removes {
            cache.remove_workload(&format!("storm-{n}"));
        }
        Ok(())
    })
}

/// Runs the storm on `system` (a sluice datapath) and tears it down on every path. The lab's
/// topology needs two generator pods.
pub fn run(
    lab: &Lab,
    system: &mut dyn System,
    spec: &StormSpec,
    remote_pods: usize,
) -> Result<StormResult> {
    spec.validate()?;
    netns::check_interrupted()?;
    let topology = &lab.topology;
    if topology.gens.len() < 2 {
        return Err(LabError::Invalid {
            what: "storm topology",
            reason: "needs two generator pods (allowed and denied)".into(),
        });
    }
    let traffic = traffic_of(spec);
    let mut live_pods: VecDeque<u64> = VecDeque::new();
    let result = system
        .setup(topology, spec.rules, &traffic)
        .and_then(|()| storm_set_up(lab, system, spec, remote_pods, &mut live_pods));
    // Undo the storm's changes to the shared state, then the system.
    let cleanup = match system.live_state() {
        Some(live) if result.is_ok() || !live_pods.is_empty() => {
            let removes: Vec<u64> = live_pods.drain(..).collect();
            live.update(topology, true, &[], &mut |cache| {
                for n in &removes {
                    cache.remove_workload(&format!("storm-{n}"));
                }
                cache.remove_workload(DENIED_UID);
                Ok(())
            })
            .map(drop)
        }
        Some(live) => live
            .update(topology, true, &[], &mut |cache| {
                cache.remove_workload(DENIED_UID);
                Ok(())
            })
            .map(drop),
        None => Ok(()),
    };
    let down = system.teardown(topology);
    let r = result?;
    cleanup?;
    down?;
    Ok(r)
}

fn storm_set_up(
    lab: &Lab,
    system: &mut dyn System,
    spec: &StormSpec,
    remote_pods: usize,
    live_pods: &mut VecDeque<u64>,
) -> Result<StormResult> {
    let topology = &lab.topology;
    let name = system.name();
    let variant = system.variant();
    let label_sets = crate::rules::SluicePlan::for_rules(spec.rules)
        .groups
        .max(MIN_REMOTE_GROUPS);
    let (allowed_pod, denied_pod) = (&topology.gens[0], &topology.gens[1]);
    {
        let live = system.live_state().ok_or_else(|| {
            LabError::system(
                name,
                "has no identity state to update (not a sluice datapath)",
            )
        })?;
        // The denied endpoint, and the storm's standing pods.
        let mut ips: Vec<IpAddr> = denied_pod.v4.iter().map(|a| IpAddr::V4(*a)).collect();
        ips.extend(denied_pod.v4.iter().map(|a| IpAddr::V6(v6_of(*a))));
        live.update(topology, false, &[], &mut |cache| {
            cache
                .upsert_workload(lab_workload(
                    DENIED_UID.into(),
                    "denied",
                    ips.clone(),
                    Some(denied_pod),
                ))
                .map(drop)
                .map_err(|e| LabError::system("storm", format!("denied endpoint: {e}")))
        })?;
        let standing: Vec<u64> = (0..spec.window as u64).collect();
        apply(live, topology, &standing, &[], label_sets)?;
        live_pods.extend(standing);
    }
    topology.place_napi(system.napi_nice())?;
    let (gen_cpu, nice) = (topology.config.gen_cpu, lab.config.gen_nice);
    let seq = next_seq(&lab.programs)?;
    let denied_traffic = TrafficSpec::few_small(Some(spec.denied_pps));
    let (a_slot, d_slot) = (slot_of(allowed_pod.v4[0]), slot_of(denied_pod.v4[0]));
    let sample = |a: &AfxdpGenerator, d: &AfxdpGenerator| -> Result<Sample> {
        let by_src = lab.programs.sink_by_source()?;
        Ok(Sample {
            at: Instant::now(),
            allowed_gen: a.state(),
            denied_gen: d.state(),
            allowed_rx: by_src[a_slot],
            denied_rx: by_src[d_slot],
        })
    };
    let by_src0 = lab.programs.sink_by_source()?;
    system.begin_period()?;
    let mut allowed = AfxdpGenerator::start(AfxdpGenConfig::for_pod(
        allowed_pod,
        &topology.sink,
        &traffic_of(spec),
        gen_cpu,
        nice,
        seq,
    )?)?;
    let mut denied = AfxdpGenerator::start(AfxdpGenConfig::for_pod(
        denied_pod,
        &topology.sink,
        &denied_traffic,
        gen_cpu,
        nice,
        seq + DENIED_SEQ_OFFSET,
    )?)?;
    netns::sleep_checked(Duration::from_millis(500))?;
    let s_a = sample(&allowed, &denied)?;
    netns::sleep_checked(Duration::from_secs_f64(spec.before_secs))?;
    let s_b = sample(&allowed, &denied)?;

    // The storm, applied from the updater's core.
    netns::pin_to_cpu(0, spec.updater_cpu.unwrap_or(topology.config.node_cpu))?;
    let storm = storm_loop(system, topology, spec, label_sets, live_pods);
    netns::pin_to_cpu(0, gen_cpu)?;
    let (tally, storm_secs) = storm?;
    let s_c = sample(&allowed, &denied)?;
    allowed.stop()?;
    denied.stop()?;
    std::thread::sleep(Duration::from_millis(100));
    let s_d = sample(&allowed, &denied)?;
    let extras = system.end_period()?;
    let dataplane_drops = ["xdp_dropped", "worker_dropped"]
        .iter()
        .filter_map(|k| extras.counters.get(*k))
        .sum::<u64>();

    let window = |x: &Sample, y: &Sample| {
        let secs = y.at.duration_since(x.at).as_secs_f64().max(1e-9);
        StormWindow {
            secs,
            allowed_offered_pps: (y.allowed_gen.sent - x.allowed_gen.sent) as f64 / secs,
            allowed_delivered_pps: y.allowed_rx.saturating_sub(x.allowed_rx) as f64 / secs,
            denied_delivered: y.denied_rx.saturating_sub(x.denied_rx),
        }
    };
    let (before, during) = (window(&s_a, &s_b), window(&s_b, &s_c));
    let allowed_received = s_d.allowed_rx.saturating_sub(by_src0[a_slot]);
    let denied_delivered = s_d.denied_rx.saturating_sub(by_src0[d_slot]);
    let denied_sent = s_d.denied_gen.sent;
    let allowed_dropped_by_verdict = dataplane_drops.saturating_sub(denied_sent);
    Ok(StormResult {
        system: name.into(),
        variant,
        spec: spec.clone(),
        remote_pods,
        before,
        during,
        throughput_ratio: during.allowed_delivered_pps / before.allowed_delivered_pps.max(1e-9),
        updates: tally.done,
        adds: tally.adds,
        batches: tally.batches,
        achieved_rate: tally.done as f64 / storm_secs,
        apply_ns: LatencyFigures::of(&tally.apply),
        batch_ns: LatencyFigures::of(&tally.batch),
        sync_ns: LatencyFigures::of(&tally.sync),
        map_writes: tally.writes,
        allowed_sent: s_d.allowed_gen.sent,
        allowed_received,
        denied_sent,
        denied_delivered,
        dataplane_drops,
        allowed_dropped_by_verdict,
        verdict_errors: denied_delivered + allowed_dropped_by_verdict,
    })
}

/// What the storm's update loop did.
#[derive(Default)]
struct Tally {
    done: u64,
    adds: u64,
    batches: u64,
    writes: u64,
    apply: perf::LatencyHistogram,
    batch: perf::LatencyHistogram,
    sync: perf::LatencyHistogram,
}

/// Applies the updates due every tick for `spec.secs`; returns the tally and the seconds.
fn storm_loop(
    system: &mut dyn System,
    topology: &Topology,
    spec: &StormSpec,
    label_sets: usize,
    live_pods: &mut VecDeque<u64>,
) -> Result<(Tally, f64)> {
    let name = system.name();
    let mut apply_hist = perf::LatencyHistogram::new();
    let mut batch_hist = perf::LatencyHistogram::new();
    let mut sync_hist = perf::LatencyHistogram::new();
    let (mut done, mut adds_done, mut batches, mut writes) = (0u64, 0u64, 0u64, 0u64);
    let mut next_pod = spec.window as u64;
    let start = Instant::now();
    let length = Duration::from_secs_f64(spec.secs);
    let slot = |k: u64| start + Duration::from_secs_f64(k as f64 / spec.rate);
    while start.elapsed() < length {
        netns::check_interrupted()?;
        let due = ((start.elapsed().as_secs_f64() * spec.rate) as u64).saturating_sub(done);
        if due > 0 {
            let (mut adds, mut removes) = (Vec::new(), Vec::new());
            for k in done..done + due {
                if k % 2 == 0 || live_pods.is_empty() {
                    adds.push(next_pod);
                    next_pod += 1;
                } else if let Some(n) = live_pods.pop_front() {
                    removes.push(n);
                }
            }
            let live = system
                .live_state()
                .ok_or_else(|| LabError::system(name, "lost its identity state"))?;
            let applied = apply(live, topology, &adds, &removes, label_sets);
            // Whatever happened, the cleanup must find every storm pod that may exist.
            live_pods.extend(adds.iter().copied());
            let timing = applied.inspect_err(|_| live_pods.extend(removes.iter().copied()))?;
            let end = Instant::now();
            for k in done..done + due {
                apply_hist.record(end.saturating_duration_since(slot(k)).as_nanos() as u64);
            }
            batch_hist.record((timing.publish + timing.sync).as_nanos() as u64);
            sync_hist.record(timing.sync.as_nanos() as u64);
            writes += timing.map_writes as u64;
            adds_done += adds.len() as u64;
            done += due;
            batches += 1;
        }
        // Sleep to the next tick boundary (a slow batch is caught up at once).
        let ticks = (start.elapsed().as_nanos() / TICK.as_nanos()) as u32 + 1;
        let next = start + TICK * ticks;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    let storm_secs = start.elapsed().as_secs_f64();
    Ok((
        Tally {
            done,
            adds: adds_done,
            batches,
            writes,
            apply: apply_hist,
            batch: batch_hist,
            sync: sync_hist,
        },
        storm_secs,
    ))
}

/// The allowed pod's traffic around a storm.
fn traffic_of(spec: &StormSpec) -> TrafficSpec {
    TrafficSpec::few_small(Some(spec.allowed_pps))
}

/// One line per storm, for progress output.
pub fn summary(r: &StormResult) -> String {
    format!(
        "{:<32} storm: {} updates at {:.0}/s, apply p50 {:.2} ms p99 {:.2} ms; allowed {:.0} → {:.0} kpps ({:.2}×); verdict errors {}",
        crate::systems::label(&r.system, &r.variant),
        r.updates,
        r.achieved_rate,
        r.apply_ns.p50 as f64 / 1e6,
        r.apply_ns.p99 as f64 / 1e6,
        r.before.allowed_delivered_pps / 1e3,
        r.during.allowed_delivered_pps / 1e3,
        r.throughput_ratio,
        r.verdict_errors
    )
}

/// The Markdown section of the storms (nothing when there are none).
pub fn markdown(rs: &[StormResult], out: &mut String) {
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Policy update storm (pod adds/removes during traffic)\n\n\
         | system | rules | remote pods | updates/s asked → achieved | batches | apply p50 / p99 / max ms | sync p50 ms | allowed kpps offered / delivered, before | during | ratio | allowed lost | denied delivered | verdict errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let ms = |ns: u64| format!("{:.2}", ns as f64 / 1e6);
    for r in rs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} → {:.0} | {} | {} / {} / {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.3} | {} of {} | {} of {} | **{}** |",
            crate::systems::label(&r.system, &r.variant),
            r.spec.rules,
            r.remote_pods,
            r.spec.rate,
            r.achieved_rate,
            r.batches,
            ms(r.apply_ns.p50),
            ms(r.apply_ns.p99),
            ms(r.apply_ns.max),
            ms(r.sync_ns.p50),
            r.before.allowed_offered_pps / 1e3,
            r.before.allowed_delivered_pps / 1e3,
            r.during.allowed_offered_pps / 1e3,
            r.during.allowed_delivered_pps / 1e3,
            r.throughput_ratio,
            r.allowed_sent.saturating_sub(r.allowed_received),
            r.allowed_sent,
            r.denied_delivered,
            r.denied_sent,
            r.verdict_errors
        );
    }
    out.push('\n');
}

/// `bench-lab storm`'s command line.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct StormArgs {
    /// Systems to storm (sluice-kernel, sluice-afxdp; default both).
    #[arg(long, value_delimiter = ',', value_parser = storm_system)]
    pub systems: Vec<String>,
    /// Pod updates (adds + removes, alternating) per second.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of updates.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Seconds of traffic before the storm (the baseline).
    #[arg(long, default_value_t = 2.0)]
    pub before: f64,
    /// Storm pods alive at any time.
    #[arg(long, default_value_t = 500)]
    pub window: usize,
    /// Frames per second from the allowed pod.
    #[arg(long, default_value_t = 100_000.0)]
    pub allowed_pps: f64,
    /// Frames per second from the denied pod.
    #[arg(long, default_value_t = 10_000.0)]
    pub denied_pps: f64,
    /// Core the updates are applied on (default: the node's core).
    #[arg(long)]
    pub updater_cpu: Option<usize>,
    /// Rules (policy entries) in sluice's state.
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// Remote pods in sluice's state besides the storm's.
    #[arg(long, default_value_t = 10_000)]
    pub remote_pods: usize,
    /// The node's core.
    #[arg(long, default_value_t = 0)]
    pub node_cpu: usize,
    /// The generators' core.
    #[arg(long, default_value_t = 1)]
    pub gen_cpu: usize,
    /// Write the report (JSON, Markdown, SVG) into this directory.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

fn storm_system(s: &str) -> std::result::Result<String, String> {
    match s {
        "sluice-kernel" | "sluice-afxdp" => Ok(s.to_owned()),
        _ => Err(format!(
            "{s:?}: the storm changes sluice's state (sluice-kernel or sluice-afxdp)"
        )),
    }
}

impl StormArgs {
    /// The storm they ask for.
    pub fn spec(&self) -> StormSpec {
        StormSpec {
            rules: self.rules,
            rate: self.rate,
            secs: self.secs,
            before_secs: self.before,
            window: self.window,
            allowed_pps: self.allowed_pps,
            denied_pps: self.denied_pps,
            updater_cpu: self.updater_cpu,
        }
    }
}

/// `bench-lab storm`: builds a lab with two generator pods, storms each sluice datapath once,
/// and returns the report (storms in [`crate::report::Report::storms`]). Each result is also
/// printed to stderr as it comes. A system that fails is recorded in the report's failures.
pub fn run_all(args: &StormArgs, command: String) -> Result<crate::report::Report> {
    use crate::systems::sluice::{SluiceAfxdp, SluiceKernel, SluiceState, build_secs};
    let spec = args.spec();
    spec.validate()?;
    let config = crate::scenario::LabConfig {
        topology: crate::topology::TopologyConfig {
            gen_pods: 2,
            node_cpu: args.node_cpu,
            gen_cpu: args.gen_cpu,
            ..crate::topology::TopologyConfig::default()
        },
        secs: args.secs,
        warmup: 0.5,
        gen_nice: 0,
        generator: crate::afxdp_gen::GeneratorKind::Afxdp,
    };
    let mut report = crate::report::Report::for_lab(command, &config, args.remote_pods);
    let state = SluiceState::shared(args.remote_pods)?;
    let lab = Lab::new(config)?;
    let wanted = |n: &str| args.systems.is_empty() || args.systems.iter().any(|s| s == n);
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    if wanted("sluice-kernel") {
        systems.push(Box::new(SluiceKernel::new(state.clone())));
    }
    if wanted("sluice-afxdp") {
        systems.push(Box::new(SluiceAfxdp::new(
            state.clone(),
            fastpath::socket::UmemMode::Shared,
            args.node_cpu,
        )));
    }
    let mut outcome = Ok(());
    for system in &mut systems {
        match run(&lab, system.as_mut(), &spec, args.remote_pods) {
            Ok(r) => {
                eprintln!("{}", summary(&r));
                report.storms.push(r);
            }
            Err(LabError::Interrupted) => {
                outcome = Err(LabError::Interrupted);
                break;
            }
            Err(e) => report.fail(
                system.as_ref(),
                crate::scenario::Scenario::Throughput,
                spec.rules,
                "storm",
                &e,
            ),
        }
    }
    if let Some(secs) = build_secs(&state) {
        report.state_build_secs.insert(spec.rules, secs);
    }
    lab.close(&mut systems);
    report.finish();
    outcome.map(|()| report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_pods_cycle_through_the_identities_and_specs_are_checked() {
        assert_eq!(storm_pod(0, 1000).1, "gen");
        assert_eq!(storm_pod(11, 1000).1, "denied");
        assert_eq!(storm_pod(1234, 1000).1, "r234");
        assert_eq!(storm_pod(257, 1000).2, Ipv4Addr::new(10, 132, 1, 1));
        assert!(StormSpec::default().validate().is_ok());
        let huge = StormSpec {
            rate: 100_000.0,
            secs: 600.0,
            ..StormSpec::default()
        };
        assert!(huge.validate().is_err());
        assert!(
            StormSpec {
                rate: 0.0,
                ..StormSpec::default()
            }
            .validate()
            .is_err()
        );
    }
}
