//! Multi-core scaling (`bench-lab scale`): how a datapath's rate grows with the cores that
//! serve it.
//!
//! The topology is N independent pairs ([`TopologyConfig::pairs`]): generator pod `i` → node
//! namespace → sink pod `i`, each on veths of its own. A measurement with W workers drives
//! pairs `0..W`: generator `i` runs its live-frames `BPF_PROG_TEST_RUN` loop pinned to
//! `gen_cpus[i]`, pair `i` is served by node core `node_cpus[i]`, and pair `i`'s node-side
//! threaded-NAPI kthreads sit where the [`Placement`] says:
//!
//! - [`Placement::Shared`]: on the pair's node core. For `sluice-afxdp` that is one fast-path
//!   worker per pair on the same core at `SCHED_FIFO` 1 (DESIGN.md, "Facts about this
//!   platform"); for the systems without a worker (`kernel-forward`, `xdp-redirect-bare`,
//!   `sluice-kernel`), whose whole node work runs in NAPI, it is the only placement.
//! - [`Placement::Split`] (`sluice-afxdp` only): the worker on `node_cpus[i]`, the pair's NAPI
//!   on a core of its own, `napi_cpus[i]`. Measured only where such cores exist
//!   ([`CpuPlan::split_napi`]); skipped with the reason otherwise.
//!
//! Each pair has its own generator and sink programs (own maps), so every pair's sink count,
//! loss and latency are exact. The figures: the forwarded rate summed over pairs and per pair
//! (pair `i` = node core `i`), node CPU per packet (busy time of the node cores, NAPI cores
//! included, over forwarded packets; and the on-CPU time of the NAPI kthreads and the system's
//! threads), one-way p99 over all pairs, and loss. Where the generators share the node's
//! cores (a 2-core machine) the busy-time figure includes the generators' time, and the rates
//! are not a clean scaling figure: the report says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use perf::MachineInfo;
use perf::plot::{LineChart, Scale};
use serde::{Deserialize, Serialize};

use crate::cpu::{self, Task};
use crate::error::{LabError, Result};
use crate::generator::{
    FlowMode, GenState, Generator, LabPrograms, SinkCounters, TrafficSpec, frame_between,
    latency_histogram,
};
use crate::netns;
use crate::report::{ReportDir, loadavg, median, now_unix};
use crate::scenario::{Lab, LabConfig, LatencyFigures, Progress};
use crate::systems::{self, PeriodExtras, System};
use crate::topology::{MAX_PAIRS, TopologyConfig};

/// The systems `bench-lab scale` measures, in the order it runs them.
pub const SCALE_SYSTEMS: [&str; 4] = [
    "kernel-forward",
    "xdp-redirect-bare",
    "sluice-kernel",
    "sluice-afxdp",
];

/// Why a scaling run cannot be made as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    /// A CPU on the command line is not one this process may run on.
    #[error("{role} cpu {cpu} is not available here (this process may run on cpus {available})")]
    UnknownCpu {
        /// Which list named it (`node`, `generator`, `NAPI`).
        role: &'static str,
        /// The CPU.
        cpu: usize,
        /// The CPUs this process may run on.
        available: String,
    },
    /// A CPU list is shorter than the largest worker count needs.
    #[error("{role} cpus: {have} given or available, {need} needed for {workers} workers")]
    TooFewCpus {
        /// Which list (`node`, `generator`, or `available` for the machine).
        role: &'static str,
        /// CPUs in it.
        have: usize,
        /// CPUs needed.
        need: usize,
        /// The largest worker count.
        workers: usize,
    },
    /// A CPU is listed twice in one role (each pair needs its own).
    #[error("{role} cpu {cpu} is listed twice (each pair needs a core of its own)")]
    DuplicateCpu {
        /// Which list.
        role: &'static str,
        /// The CPU.
        cpu: usize,
    },
    /// A worker count is 0 or more than the topology's pairs allow.
    #[error("worker count {workers} is out of range (1..={max})")]
    Workers {
        /// The count given.
        workers: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A system `scale` does not measure.
    #[error("system {0:?} is not measured by scale (one of {systems})", systems = SCALE_SYSTEMS.join(", "))]
    UnknownSystem(String),
    /// A placement name that is neither `shared` nor `split`.
    #[error("unknown placement {0:?} (shared or split)")]
    UnknownPlacement(String),
    /// An empty list where at least one entry is needed.
    #[error("no {0} given")]
    Empty(&'static str),
    /// Seconds or repetitions out of range.
    #[error("{what} must be {range}, got {value}")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The allowed range.
        range: &'static str,
        /// The value given.
        value: String,
    },
    /// The CPUs this process may run on cannot be read.
    #[error("reading this process's CPU affinity: {0}")]
    Affinity(String),
}

/// Where a pair's node-side NAPI kthreads run relative to its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// On the pair's node core (with the worker, for `sluice-afxdp`).
    Shared,
    /// On a core of their own (`napi_cpus[i]`); `sluice-afxdp` only.
    Split,
}

impl Placement {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::Split => "split",
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Placement {
    type Err = ScaleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(Placement::Shared),
            "split" => Ok(Placement::Split),
            _ => Err(ScaleError::UnknownPlacement(s.to_owned())),
        }
    }
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn available_cpus() -> Result<Vec<usize>, ScaleError> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its size.
    let (rc, set) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set);
        (rc, set)
    };
    if rc != 0 {
        return Err(ScaleError::Affinity(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    // SAFETY: CPU_ISSET reads inside the set for every index below CPU_SETSIZE.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(ScaleError::Affinity("the affinity mask is empty".into()));
    }
    Ok(cpus)
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Which cores do what in a scaling run (for the largest worker count; a run with W workers
/// uses the first W entries of each list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuPlan {
    /// The CPUs this process may run on.
    pub available: Vec<usize>,
    /// Pair `i`'s node core: its worker, and its NAPI kthreads in the shared placement.
    pub node_cpus: Vec<usize>,
    /// Generator `i`'s core (its thread and its pods' NAPI kthreads).
    pub gen_cpus: Vec<usize>,
    /// NAPI cores for the split placement as given (`None`: chosen per worker count, see
    /// [`CpuPlan::split_napi`]).
    pub napi_cpus: Option<Vec<usize>>,
    /// Where the lab's own thread (sampling, setup) runs.
    pub lab_cpu: usize,
}

impl CpuPlan {
    /// The plan for up to `max_workers` workers on `available` CPUs, from the lists given on
    /// the command line (`None`: the default).
    ///
    /// Defaults: with at least 2·W + 1 CPUs, node cores are the 2nd to (W+1)th available CPU
    /// and generator cores the W after them (the first CPU is left to the lab and the
    /// system); with 2·W CPUs, node cores are the first W and generators the next W;
    /// otherwise the node cores are the first W and generator `i` runs on node core `i + 1`
    /// (mod W), sharing the node's cores (a 2-core machine: node 0,1; generators 1,0).
    pub fn resolve(
        available: &[usize],
        max_workers: usize,
        node: Option<Vec<usize>>,
        gens: Option<Vec<usize>>,
        napi: Option<Vec<usize>>,
    ) -> Result<Self, ScaleError> {
        let w = max_workers;
        if w == 0 || w > MAX_PAIRS {
            return Err(ScaleError::Workers {
                workers: w,
                max: MAX_PAIRS,
            });
        }
        let mut available = available.to_vec();
        available.sort_unstable();
        available.dedup();
        if available.len() < w {
            return Err(ScaleError::TooFewCpus {
                role: "available",
                have: available.len(),
                need: w,
                workers: w,
            });
        }
        let listed = cpu_list(&available);
        let check = |role: &'static str, cpus: &[usize]| -> Result<(), ScaleError> {
            let mut seen = BTreeSet::new();
            for &cpu in cpus {
                if !available.contains(&cpu) {
                    return Err(ScaleError::UnknownCpu {
                        role,
                        cpu,
                        available: listed.clone(),
                    });
                }
                if !seen.insert(cpu) {
                    return Err(ScaleError::DuplicateCpu { role, cpu });
                }
            }
            Ok(())
        };
        let n = available.len();
        let node_default = if n > 2 * w {
            available[1..=w].to_vec()
        } else {
            available[..w].to_vec()
        };
        let node_cpus = node.unwrap_or(node_default);
        check("node", &node_cpus)?;
        if node_cpus.len() < w {
            return Err(ScaleError::TooFewCpus {
                role: "node",
                have: node_cpus.len(),
                need: w,
                workers: w,
            });
        }
        let gen_cpus = match gens {
            Some(g) => g,
            None => {
                let free: Vec<usize> = available
                    .iter()
                    .copied()
                    .filter(|c| !node_cpus[..w].contains(c))
                    .collect();
                let free: Vec<usize> = if n > 2 * w && free.first() == Some(&available[0]) {
                    // The first CPU stays the lab's when there is room.
                    free[1..].to_vec()
                } else {
                    free
                };
                if free.len() >= w {
                    free[..w].to_vec()
                } else {
                    (0..w).map(|i| node_cpus[(i + 1) % w]).collect()
                }
            }
        };
        check("generator", &gen_cpus)?;
        if gen_cpus.len() < w {
            return Err(ScaleError::TooFewCpus {
                role: "generator",
                have: gen_cpus.len(),
                need: w,
                workers: w,
            });
        }
        if let Some(napi) = &napi {
            check("NAPI", napi)?;
        }
        let busy: BTreeSet<usize> = node_cpus[..w]
            .iter()
            .chain(&gen_cpus[..w])
            .copied()
            .collect();
        let lab_cpu = available
            .iter()
            .copied()
            .find(|c| !busy.contains(c))
            .unwrap_or(gen_cpus[0]);
        Ok(CpuPlan {
            available,
            node_cpus: node_cpus[..w].to_vec(),
            gen_cpus: gen_cpus[..w].to_vec(),
            napi_cpus: napi,
            lab_cpu,
        })
    }

    /// Whether, with `workers` workers, any generator runs on a core that also serves the
    /// node (so the node's figures include generator time).
    pub fn generators_share_node_cores(&self, workers: usize) -> bool {
        let node = &self.node_cpus[..workers.min(self.node_cpus.len())];
        self.gen_cpus.iter().take(workers).any(|g| node.contains(g))
    }

    /// The NAPI cores of the split placement with `workers` workers, or why there are none.
    ///
    /// Given ones: the first `workers` of `napi_cpus`, none of them a node core in use.
    /// Otherwise: the CPUs that are neither node nor generator cores (nor the lab's), then the
    /// node cores this worker count leaves idle.
    pub fn split_napi(&self, workers: usize) -> Result<Vec<usize>, String> {
        let node = &self.node_cpus[..workers.min(self.node_cpus.len())];
        if let Some(given) = &self.napi_cpus {
            if given.len() < workers {
                return Err(format!(
                    "split placement with {workers} workers needs {workers} NAPI cores; \
                     --napi-cpus gives {}",
                    given.len()
                ));
            }
            let napi = given[..workers].to_vec();
            if let Some(c) = napi.iter().find(|c| node.contains(c)) {
                return Err(format!(
                    "NAPI cpu {c} is a node core with {workers} workers, so NAPI would not be \
                     split from the workers"
                ));
            }
            return Ok(napi);
        }
        let mut candidates: Vec<usize> = self
            .available
            .iter()
            .copied()
            .filter(|c| {
                !self.node_cpus.contains(c) && !self.gen_cpus.contains(c) && *c != self.lab_cpu
            })
            .collect();
        candidates.extend(self.node_cpus.iter().skip(workers).copied());
        if candidates.len() < workers {
            return Err(format!(
                "split placement with {workers} workers needs {workers} cores for NAPI besides \
                 the {workers} node cores (cpus {}); this process may use {} cpus ({}), and only \
                 {} are left (choose them with --napi-cpus)",
                cpu_list(node),
                self.available.len(),
                cpu_list(&self.available),
                candidates.len()
            ));
        }
        Ok(candidates[..workers].to_vec())
    }
}

/// What a scaling run measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleConfig {
    /// Systems (a subset of [`SCALE_SYSTEMS`]), run in that order.
    pub systems: Vec<String>,
    /// Worker (pair) counts, ascending.
    pub workers: Vec<usize>,
    /// Placements of `sluice-afxdp` (the other systems have only [`Placement::Shared`]).
    pub placements: Vec<Placement>,
    /// The cores.
    pub cpus: CpuPlan,
    /// Measured seconds per measurement.
    pub secs: f64,
    /// Warm-up seconds before each measured period.
    pub warmup: f64,
    /// Repetitions (medians are reported).
    pub runs: usize,
    /// Remote pods in sluice's state.
    pub remote_pods: usize,
    /// Rules (policy entries for sluice).
    pub rules: usize,
    /// What each generator sends.
    pub traffic: TrafficSpec,
}

impl ScaleConfig {
    /// A configuration with the lab's usual traffic (64 B UDP, many flows, one source
    /// address per generator), 10 rules and 1 s of warm-up; checks every value.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        systems: Vec<String>,
        workers: Vec<usize>,
        placements: Vec<Placement>,
        cpus: CpuPlan,
        secs: f64,
        runs: usize,
        remote_pods: usize,
    ) -> Result<Self, ScaleError> {
        let mut config = ScaleConfig {
            systems,
            workers,
            placements,
            cpus,
            secs,
            warmup: 1.0,
            runs,
            remote_pods,
            rules: 10,
            traffic: TrafficSpec {
                flows: FlowMode::Many,
                frame_len: 64,
                ipv6: false,
                src_ips: 1,
                rate_pps: None,
            },
        };
        config.workers.sort_unstable();
        config.workers.dedup();
        config.placements.sort_unstable();
        config.placements.dedup();
        config.validate()?;
        Ok(config)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ScaleError> {
        if self.systems.is_empty() {
            return Err(ScaleError::Empty("systems"));
        }
        if let Some(s) = self
            .systems
            .iter()
            .find(|s| !SCALE_SYSTEMS.contains(&s.as_str()))
        {
            return Err(ScaleError::UnknownSystem(s.clone()));
        }
        if self.placements.is_empty() {
            return Err(ScaleError::Empty("placements"));
        }
        let Some(&max) = self.workers.iter().max() else {
            return Err(ScaleError::Empty("worker counts"));
        };
        let limit = self.cpus.node_cpus.len().min(MAX_PAIRS);
        if let Some(&w) = self.workers.iter().find(|&&w| w == 0 || w > limit) {
            return Err(ScaleError::Workers {
                workers: w,
                max: limit,
            });
        }
        if self.cpus.gen_cpus.len() < max {
            return Err(ScaleError::TooFewCpus {
                role: "generator",
                have: self.cpus.gen_cpus.len(),
                need: max,
                workers: max,
            });
        }
        for (what, v, lo, hi, range) in [
            (
                "measured seconds",
                self.secs,
                0.2,
                3600.0,
                "between 0.2 and 3600",
            ),
            (
                "warm-up seconds",
                self.warmup,
                0.0,
                60.0,
                "between 0 and 60",
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(ScaleError::OutOfRange {
                    what,
                    range,
                    value: v.to_string(),
                });
            }
        }
        if !(1..=1_000_000).contains(&self.rules) {
            return Err(ScaleError::OutOfRange {
                what: "rules",
                range: "between 1 and 1,000,000",
                value: self.rules.to_string(),
            });
        }
        if !(1..=100).contains(&self.runs) {
            return Err(ScaleError::OutOfRange {
                what: "runs",
                range: "between 1 and 100",
                value: self.runs.to_string(),
            });
        }
        Ok(())
    }

    /// The largest worker count (pairs in the topology).
    pub fn max_workers(&self) -> usize {
        self.workers.iter().copied().max().unwrap_or(1)
    }

    /// The placements `system` is measured in.
    pub fn placements_of(&self, system: &str) -> Vec<Placement> {
        if system == "sluice-afxdp" {
            self.placements.clone()
        } else {
            vec![Placement::Shared]
        }
    }

    /// Measurements (made or skipped) of the whole run, for a progress bar.
    pub fn planned(&self) -> usize {
        let per_w: usize = self
            .systems
            .iter()
            .map(|s| self.placements_of(s).len())
            .sum();
        per_w * self.workers.len() * self.runs
    }
}

fn scale_system(s: &str) -> Result<String, ScaleError> {
    if SCALE_SYSTEMS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(ScaleError::UnknownSystem(s.to_owned()))
    }
}

/// `bench-lab scale`'s command line.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ScaleArgs {
    /// Systems to measure (default: kernel-forward, xdp-redirect-bare, sluice-kernel,
    /// sluice-afxdp).
    #[arg(long, value_delimiter = ',', value_parser = scale_system)]
    pub systems: Vec<String>,
    /// Worker counts: a run with W workers drives W generator → sink pairs on W node cores.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2])]
    pub workers: Vec<usize>,
    /// Node core of each pair (default: see `CpuPlan::resolve`; a 2-core machine: 0,1).
    #[arg(long, value_delimiter = ',')]
    pub node_cpus: Option<Vec<usize>>,
    /// Generator core of each pair (default: separate cores where there are enough, else
    /// shared with the node; a 2-core machine: 1,0).
    #[arg(long, value_delimiter = ',')]
    pub gen_cpus: Option<Vec<usize>>,
    /// NAPI core of each pair in the split placement (default: free cores, then the node
    /// cores a worker count leaves idle).
    #[arg(long, value_delimiter = ',')]
    pub napi_cpus: Option<Vec<usize>>,
    /// sluice-afxdp's placements: `shared` (worker and NAPI on the node core) and/or `split`
    /// (NAPI on a core of its own).
    #[arg(long, value_delimiter = ',', default_value = "shared,split")]
    pub placement: Vec<Placement>,
    /// Measured seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Warm-up seconds before each measured period.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Remote pods in sluice's state.
    #[arg(long, default_value_t = 100_000)]
    pub remote_pods: usize,
    /// Rules (policy entries for sluice).
    #[arg(long, default_value_t = 10)]
    pub rules: usize,
    /// Write scale.json, scale.md and scale.svg into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl ScaleArgs {
    /// The checked configuration on the CPUs this process may run on.
    pub fn config(&self) -> Result<ScaleConfig, ScaleError> {
        self.config_on(&available_cpus()?)
    }

    /// The checked configuration on `available` CPUs.
    pub fn config_on(&self, available: &[usize]) -> Result<ScaleConfig, ScaleError> {
        let max = self
            .workers
            .iter()
            .copied()
            .max()
            .ok_or(ScaleError::Empty("worker counts"))?;
        let cpus = CpuPlan::resolve(
            available,
            max,
            self.node_cpus.clone(),
            self.gen_cpus.clone(),
            self.napi_cpus.clone(),
        )?;
        let systems = if self.systems.is_empty() {
            SCALE_SYSTEMS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.systems.clone()
        };
        let mut config = ScaleConfig::new(
            systems,
            self.workers.clone(),
            self.placement.clone(),
            cpus,
            self.secs,
            self.runs,
            self.remote_pods,
        )?;
        config.warmup = self.warmup;
        config.rules = self.rules;
        config.validate()?;
        Ok(config)
    }
}

/// One measurement of one system with W workers in one placement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleMeasurement {
    /// System name.
    pub system: String,
    /// Workers (= pairs driven = node cores).
    pub workers: usize,
    /// Where the pairs' NAPI ran.
    pub placement: Placement,
    /// Repetition (0-based).
    pub run: usize,
    /// Node core of each pair.
    pub node_cpus: Vec<usize>,
    /// Generator core of each pair.
    pub gen_cpus: Vec<usize>,
    /// Core of each pair's node-side NAPI kthreads.
    pub napi_cpus: Vec<usize>,
    /// Whether a generator shared a core with the node's work.
    pub generators_share_node_cores: bool,
    /// Measured seconds.
    pub secs: f64,
    /// Frames the generators sent per second over the period (all pairs).
    pub offered_pps: f64,
    /// Lab frames at the sinks per second over the period (all pairs).
    pub forwarded_pps: f64,
    /// Lab frames per second at each pair's sink (pair `i` is node core `i`).
    pub pair_pps: Vec<f64>,
    /// Lab frames each pair's sink received over the period.
    pub pair_received: Vec<u64>,
    /// Frames sent over the whole generator calls (warm-up included), all pairs.
    pub sent_total: u64,
    /// Lab frames received over the whole calls (after a 100 ms drain), all pairs.
    pub received_total: u64,
    /// `sent_total − received_total`.
    pub lost_total: u64,
    /// One-way latency over all pairs, ns.
    pub latency_ns: LatencyFigures,
    /// Busy share of each node core (node cores, then split NAPI cores) over the period.
    pub core_busy: Vec<(usize, f64)>,
    /// Busy time of those cores over the period, ns.
    pub node_core_ns: u64,
    /// On-CPU time (schedstat) of the node's NAPI kthreads and the system's threads, ns.
    pub thread_ns: u64,
    /// `node_core_ns` per forwarded packet.
    pub ns_per_packet: f64,
    /// `thread_ns` per forwarded packet.
    pub ns_per_packet_threads: f64,
    /// What the system reported.
    pub extras: PeriodExtras,
    /// 1/5/15-minute load average at the start.
    pub load: String,
}

impl ScaleMeasurement {
    /// Share of the frames sent that were lost.
    pub fn loss_share(&self) -> f64 {
        if self.sent_total == 0 {
            0.0
        } else {
            self.lost_total as f64 / self.sent_total as f64
        }
    }
}

/// A (system, workers, placement) that was not measured, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotMeasured {
    /// System name.
    pub system: String,
    /// Workers.
    pub workers: usize,
    /// Placement.
    pub placement: Placement,
    /// Why.
    pub reason: String,
}

/// Medians over the repetitions of one (system, workers, placement).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleRow {
    /// System name.
    pub system: String,
    /// Workers.
    pub workers: usize,
    /// Placement.
    pub placement: Placement,
    /// Measurements in the group.
    pub runs: usize,
    /// Median forwarded rate, Mpps.
    pub mpps: f64,
    /// Lowest and highest forwarded rate over the repetitions, Mpps (the noise).
    pub mpps_range: (f64, f64),
    /// Median forwarded rate of each pair (= node core), Mpps.
    pub per_core_mpps: Vec<f64>,
    /// `mpps` over the same system and placement's median with one worker.
    pub speedup: Option<f64>,
    /// Median node-core busy ns per packet.
    pub ns_per_packet: f64,
    /// Median NAPI + system thread on-CPU ns per packet.
    pub ns_per_packet_threads: f64,
    /// Median one-way p99, µs.
    pub p99_us: f64,
    /// Median loss share.
    pub loss: f64,
    /// Whether a generator shared a core with the node's work.
    pub generators_share_node_cores: bool,
}

/// A scaling run's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
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
    /// What was asked.
    pub config: ScaleConfig,
    /// Seconds to build sluice's state (if built).
    pub state_build_secs: Option<f64>,
    /// Skipped combinations (not enough cores).
    pub skipped: Vec<NotMeasured>,
    /// Failed measurements.
    pub failures: Vec<NotMeasured>,
    /// Every measurement.
    pub measurements: Vec<ScaleMeasurement>,
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn fmt_or_dash(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

impl ScaleReport {
    /// An empty report of `config` for `command`, stamped now.
    pub fn new(command: String, config: ScaleConfig) -> Self {
        ScaleReport {
            command,
            machine: MachineInfo::detect(),
            started_unix: now_unix(),
            finished_unix: 0,
            load_start: loadavg(),
            load_end: String::new(),
            config,
            state_build_secs: None,
            skipped: Vec::new(),
            failures: Vec::new(),
            measurements: Vec::new(),
        }
    }

    /// Stamps the end.
    pub fn finish(&mut self) {
        self.finished_unix = now_unix();
        self.load_end = loadavg();
    }

    /// Median rows by system (in run order), placement, workers.
    pub fn rows(&self) -> Vec<ScaleRow> {
        let order = |s: &str| SCALE_SYSTEMS.iter().position(|n| *n == s).unwrap_or(9);
        let mut groups: BTreeMap<(usize, String, Placement, usize), Vec<&ScaleMeasurement>> =
            BTreeMap::new();
        for m in &self.measurements {
            groups
                .entry((order(&m.system), m.system.clone(), m.placement, m.workers))
                .or_default()
                .push(m);
        }
        let mut rows: Vec<ScaleRow> = groups
            .into_iter()
            .map(|((_, system, placement, workers), ms)| {
                let med = |f: &dyn Fn(&ScaleMeasurement) -> f64| {
                    median(&ms.iter().map(|m| f(m)).collect::<Vec<_>>())
                };
                ScaleRow {
                    system,
                    workers,
                    placement,
                    runs: ms.len(),
                    mpps: med(&|m| m.forwarded_pps / 1e6),
                    mpps_range: ms
                        .iter()
                        .map(|m| m.forwarded_pps / 1e6)
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                            (lo.min(v), hi.max(v))
                        }),
                    per_core_mpps: (0..workers)
                        .map(|i| med(&|m| m.pair_pps.get(i).copied().unwrap_or(f64::NAN) / 1e6))
                        .collect(),
                    speedup: None,
                    ns_per_packet: med(&|m| m.ns_per_packet),
                    ns_per_packet_threads: med(&|m| m.ns_per_packet_threads),
                    p99_us: med(&|m| m.latency_ns.p99 as f64 / 1e3),
                    loss: med(&|m| m.loss_share()),
                    generators_share_node_cores: ms.iter().any(|m| m.generators_share_node_cores),
                }
            })
            .collect();
        let base: BTreeMap<(String, Placement), f64> = rows
            .iter()
            .filter(|r| r.workers == 1)
            .map(|r| ((r.system.clone(), r.placement), r.mpps))
            .collect();
        for r in &mut rows {
            r.speedup = base
                .get(&(r.system.clone(), r.placement))
                .filter(|b| **b > 0.0 && b.is_finite())
                .map(|b| r.mpps / b);
        }
        rows
    }

    /// One JSON line per (system, workers, placement): `system`, `workers`, `placement`,
    /// `mpps`, `ns_per_packet` (node-core busy time summed over the node cores, per forwarded
    /// packet), `per_core_mpps`, `p99_us`, `loss`, and `ns_per_packet_threads`, `speedup`,
    /// `mpps_range` (lowest, highest over the runs), `generators_share_node_cores`, `runs`.
    pub fn json_lines(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "system": r.system,
                    "workers": r.workers,
                    "placement": r.placement.name(),
                    "mpps": round(r.mpps, 3),
                    "ns_per_packet": r.ns_per_packet.round(),
                    "per_core_mpps": r.per_core_mpps.iter().map(|v| round(*v, 3)).collect::<Vec<_>>(),
                    "p99_us": round(r.p99_us, 1),
                    "loss": r.loss,
                    "ns_per_packet_threads": r.ns_per_packet_threads.round(),
                    "speedup": r.speedup.map(|s| round(s, 2)),
                    "mpps_range": [round(r.mpps_range.0, 3), round(r.mpps_range.1, 3)],
                    "generators_share_node_cores": r.generators_share_node_cores,
                    "runs": r.runs,
                })
                .to_string()
            })
            .collect()
    }

    /// The Markdown summary: command, machine, cores, the table, what was skipped or failed.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(s, "**Command**: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "**Machine**: {} CPUs online; kernel {}; CPU {}; host {}. Load average at start `{}`, at end `{}`; {} s in all.\n",
            self.machine.cores,
            self.machine.kernel,
            self.machine.cpu_model,
            self.machine.hostname,
            self.load_start,
            self.load_end,
            self.finished_unix.saturating_sub(self.started_unix)
        );
        let napi = match &c.cpus.napi_cpus {
            Some(n) => cpu_list(n),
            None => "chosen per worker count (free cores, then idle node cores)".into(),
        };
        let _ = writeln!(
            s,
            "**Cores**: pair i's node core `node_cpus[i]` = {}, its generator `gen_cpus[i]` = {}, split NAPI cores {napi}; the lab's own thread on cpu {}. {} s measured after {} s warm-up, {} run(s), median reported; {} rules, {} remote pods in sluice's state{}.\n",
            cpu_list(&c.cpus.node_cpus),
            cpu_list(&c.cpus.gen_cpus),
            c.cpus.lab_cpu,
            c.secs,
            c.warmup,
            c.runs,
            c.rules,
            c.remote_pods,
            self.state_build_secs
                .map(|t| format!(" (built in {t:.1} s)"))
                .unwrap_or_default()
        );
        let rows = self.rows();
        let mut shared: Vec<String> = Vec::new();
        for r in rows.iter().filter(|r| r.generators_share_node_cores) {
            let what = format!("{} worker(s) {}", r.workers, r.placement);
            if !shared.contains(&what) {
                shared.push(what);
            }
        }
        if !shared.is_empty() {
            let _ = writeln!(
                s,
                "**Generators share the node's cores** ({}): the generators' time competes with \
                 the node's and is counted in the node ns/packet column (the threads column \
                 counts only the node's NAPI kthreads and the system's threads), and sluice-afxdp's \
                 workers run at normal priority there (a busy real-time worker would starve the \
                 generator on its core). These rates are not a clean scaling figure.\n",
                shared.join("; ")
            );
        }
        let _ = writeln!(
            s,
            "| system | placement | workers | Mpps | Mpps min–max | speedup vs 1 worker | per-core Mpps | node ns/packet | threads ns/packet | p99 µs | loss |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {}–{} | {} | {} | {} | {} | {} | {:.2} % |",
                r.system,
                r.placement,
                r.workers,
                fmt_or_dash(r.mpps, 3),
                fmt_or_dash(r.mpps_range.0, 3),
                fmt_or_dash(r.mpps_range.1, 3),
                r.speedup
                    .map(|v| format!("{v:.2}×"))
                    .unwrap_or_else(|| "–".into()),
                r.per_core_mpps
                    .iter()
                    .map(|v| fmt_or_dash(*v, 3))
                    .collect::<Vec<_>>()
                    .join(" / "),
                fmt_or_dash(r.ns_per_packet, 0),
                fmt_or_dash(r.ns_per_packet_threads, 0),
                fmt_or_dash(r.p99_us, 1),
                r.loss * 100.0
            );
        }
        s.push('\n');
        for (title, list) in [("Skipped", &self.skipped), ("Failed", &self.failures)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(s, "**{title}**:\n");
            for n in list {
                let _ = writeln!(
                    s,
                    "- {} ({}, {} workers): {}",
                    n.system, n.placement, n.workers, n.reason
                );
            }
            s.push('\n');
        }
        s
    }

    /// The chart: forwarded Mpps against workers, one line per system (and placement).
    pub fn to_svg(&self) -> Result<String> {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in self.rows() {
            if !r.mpps.is_finite() || r.mpps <= 0.0 {
                continue;
            }
            let label = if r.system == "sluice-afxdp" {
                format!("{} ({})", r.system, r.placement)
            } else {
                r.system.clone()
            };
            match series.iter_mut().find(|(l, _)| *l == label) {
                Some((_, pts)) => pts.push((r.workers as f64, r.mpps)),
                None => series.push((label, vec![(r.workers as f64, r.mpps)])),
            }
        }
        LineChart::new(
            format!(
                "Forwarded rate vs workers (64 B UDP, one pair per node core; {} CPUs)",
                self.machine.cores
            ),
            "workers (node cores, one generator → sink pair each)",
            "forwarded Mpps",
        )
        .x_scale(Scale::Linear)
        .y_scale(Scale::Linear)
        .to_svg(&series)
        .map_err(|e| LabError::Report(e.to_string()))
    }

    /// Writes `scale.json` (every raw figure), `scale.md` and `scale.svg` into `dir` (the
    /// chart only when something was measured); returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>> {
        let mut out = ReportDir::create(dir)?;
        let json =
            serde_json::to_string_pretty(self).map_err(|e| LabError::Report(e.to_string()))?;
        out.put("scale.json", &json)?;
        out.put("scale.md", &self.to_markdown())?;
        if !self.measurements.is_empty() {
            out.put("scale.svg", &self.to_svg()?)?;
        }
        Ok(out.files)
    }
}

/// A system of the scaling run: sluice's fast path is kept by type (its workers are laid out
/// per measurement), the others as any system.
enum ScaleSystem {
    Afxdp(Box<systems::sluice::SluiceAfxdp>),
    Other(Box<dyn System>),
}

impl ScaleSystem {
    fn system(&mut self) -> &mut dyn System {
        match self {
            ScaleSystem::Afxdp(s) => s.as_mut(),
            ScaleSystem::Other(s) => s.as_mut(),
        }
    }
}

/// A system of the scaling run and the placements it has failed in.
struct ScaleEntry {
    system: ScaleSystem,
    failed: BTreeSet<Placement>,
}

/// The scaling lab: the pair topology, pair 0's programs (inside [`Lab`]) and the other
/// pairs'. The other pairs' programs drop first (their sinks detach), then the lab
/// (namespaces).
pub struct ScaleLab {
    more_programs: Vec<LabPrograms>,
    lab: Lab,
}

/// One pair's generator and sink counters at one instant.
struct PairSample {
    generator: GenState,
    sink: SinkCounters,
}

impl ScaleLab {
    /// Checks privileges, builds `pairs` pairs (their node cores and the lab's core from
    /// `cpus`) and loads a generator and sink per pair. The calling thread moves to the lab's
    /// core.
    pub fn new(pairs: usize, cpus: &CpuPlan, warmup: f64, secs: f64) -> Result<Self> {
        let lab = Lab::new(LabConfig {
            topology: TopologyConfig {
                gen_pods: pairs,
                pairs,
                src_ips: 32,
                node_cpu: cpus.node_cpus[0],
                gen_cpu: cpus.lab_cpu,
                ..TopologyConfig::default()
            },
            secs,
            warmup,
            ..LabConfig::default()
        })?;
        let mut more_programs = Vec::with_capacity(pairs.saturating_sub(1));
        for i in 1..pairs {
            let (_, sink) = lab.topology.pair(i).ok_or_else(|| LabError::Invalid {
                what: "pair",
                reason: format!("{i} missing from the topology"),
            })?;
            more_programs.push(LabPrograms::load_for(sink)?);
        }
        Ok(ScaleLab { more_programs, lab })
    }

    /// The underlying lab (topology, pair 0's programs).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    fn programs(&self, i: usize) -> &LabPrograms {
        if i == 0 {
            &self.lab.programs
        } else {
            &self.more_programs[i - 1]
        }
    }

    fn sample_pairs(&self, w: usize) -> Result<Vec<PairSample>> {
        (0..w)
            .map(|i| {
                let p = self.programs(i);
                Ok(PairSample {
                    generator: p.gen_state()?,
                    sink: p.sink()?,
                })
            })
            .collect()
    }

    /// Sets `system` up for `workers` pairs, measures it once, tears it down (also when the
    /// measurement fails). `napi` is each pair's NAPI core.
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &mut self,
        system: &mut dyn System,
        config: &ScaleConfig,
        workers: usize,
        placement: Placement,
        napi: &[usize],
        run: usize,
    ) -> Result<ScaleMeasurement> {
        systems::measure_once(
            self,
            |scale| &scale.lab.topology,
            system,
            config.rules,
            &config.traffic,
            |scale, system| scale.measure_set_up(system, config, workers, placement, napi, run),
        )
    }

    fn measure_set_up(
        &mut self,
        system: &mut dyn System,
        config: &ScaleConfig,
        w: usize,
        placement: Placement,
        napi: &[usize],
        run: usize,
    ) -> Result<ScaleMeasurement> {
        let name = system.name();
        let cpus = &config.cpus;
        let mut napi_tasks = Vec::new();
        for (i, &napi_cpu) in napi.iter().enumerate().take(w) {
            let pids = self.lab.topology.place_pair_napi(
                i,
                napi_cpu,
                cpus.gen_cpus[i],
                system.napi_nice(),
            )?;
            napi_tasks.extend(pids.into_iter().map(Task::kthread));
        }
        let user = system.user_threads();
        let mut frames = Vec::with_capacity(w);
        for i in 0..w {
            let ScaleLab { more_programs, lab } = &mut *self;
            let (generator, sink) = lab.topology.pair(i).ok_or_else(|| LabError::Invalid {
                what: "pair",
                reason: format!("{i} missing from the topology"),
            })?;
            let programs = match i {
                0 => &mut lab.programs,
                _ => &mut more_programs[i - 1],
            };
            programs.configure(&config.traffic, generator)?;
            frames.push((
                frame_between(generator, sink, &config.traffic),
                generator.ns.path(),
                generator.ifindex,
            ));
        }
        let load = loadavg();
        let start = self.sample_pairs(w)?;
        let mut generators = Vec::with_capacity(w);
        for (i, (frame, ns_path, ifindex)) in frames.into_iter().enumerate() {
            generators.push(Generator::start(
                self.programs(i).gen_fd()?,
                ns_path,
                ifindex,
                frame,
                cpus.gen_cpus[i],
                self.lab.config.gen_nice,
            )?);
        }
        netns::sleep_checked(Duration::from_secs_f64(config.warmup))?;
        let mut cores: Vec<usize> = cpus.node_cpus[..w].to_vec();
        for c in napi.iter().take(w) {
            if !cores.contains(c) {
                cores.push(*c);
            }
        }
        let threads = |tasks: &[Task]| -> u64 { tasks.iter().map(|t| t.cpu_ns().1).sum() };
        let jiffies = |cores: &[usize]| -> Vec<(u64, u64)> {
            let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
            cores
                .iter()
                .map(|&c| cpu::parse_cpu_jiffies(&stat, c))
                .collect()
        };
        system.begin_period()?;
        let t0 = Instant::now();
        let a = self.sample_pairs(w)?;
        let (cores_a, threads_a) = (jiffies(&cores), threads(&napi_tasks) + threads(&user));
        netns::sleep_checked(Duration::from_secs_f64(config.secs))?;
        let b = self.sample_pairs(w)?;
        let (cores_b, threads_b) = (jiffies(&cores), threads(&napi_tasks) + threads(&user));
        let dt = t0.elapsed().as_secs_f64();
        let extras = system.end_period()?;
        let mut stopped = Ok(());
        for mut g in generators {
            let r = g.stop();
            if stopped.is_ok() {
                stopped = r;
            }
        }
        stopped?;
        std::thread::sleep(Duration::from_millis(100));
        let end = self.sample_pairs(w)?;

        let mut pair_received = Vec::with_capacity(w);
        let mut latency: Vec<u64> = Vec::new();
        let (mut offered, mut sent_total, mut received_total) = (0u64, 0u64, 0u64);
        for i in 0..w {
            let period = b[i].sink.since(&a[i].sink);
            let sent = b[i].generator.sent - a[i].generator.sent;
            if period.lab == 0 {
                return Err(LabError::Measurement {
                    system: name.into(),
                    reason: format!(
                        "nothing reached pair {i}'s sink with {w} workers ({sent} frames offered)"
                    ),
                });
            }
            offered += sent;
            pair_received.push(period.lab);
            if latency.len() < period.latency.len() {
                latency.resize(period.latency.len(), 0);
            }
            for (sum, n) in latency.iter_mut().zip(&period.latency) {
                *sum += n;
            }
            sent_total += end[i].generator.sent - start[i].generator.sent;
            received_total += end[i].sink.lab - start[i].sink.lab;
        }
        let fwd: u64 = pair_received.iter().sum();
        let core_busy: Vec<(usize, f64)> = cores
            .iter()
            .zip(cores_a.iter().zip(&cores_b))
            .map(|(&c, (x, y))| {
                let total = y.1.saturating_sub(x.1);
                let busy = if total == 0 {
                    0.0
                } else {
                    y.0.saturating_sub(x.0) as f64 / total as f64
                };
                (c, busy)
            })
            .collect();
        let node_core_ns = core_busy.iter().map(|(_, b)| b * dt * 1e9).sum::<f64>() as u64;
        let thread_ns = threads_b.saturating_sub(threads_a);
        Ok(ScaleMeasurement {
            system: name.into(),
            workers: w,
            placement,
            run,
            node_cpus: cpus.node_cpus[..w].to_vec(),
            gen_cpus: cpus.gen_cpus[..w].to_vec(),
            napi_cpus: napi[..w].to_vec(),
            generators_share_node_cores: cpus.gen_cpus[..w].iter().any(|g| cores.contains(g)),
            secs: dt,
            offered_pps: offered as f64 / dt,
            forwarded_pps: fwd as f64 / dt,
            pair_pps: pair_received.iter().map(|n| *n as f64 / dt).collect(),
            pair_received,
            sent_total,
            received_total,
            lost_total: sent_total.saturating_sub(received_total),
            latency_ns: LatencyFigures::of(&latency_histogram(&latency)),
            core_busy,
            node_core_ns,
            thread_ns,
            ns_per_packet: node_core_ns as f64 / fwd as f64,
            ns_per_packet_threads: thread_ns as f64 / fwd as f64,
            extras,
            load,
        })
    }
}

fn summary(m: &ScaleMeasurement) -> String {
    format!(
        "{:<18} {:<6} {} workers {:>8.3} Mpps (per core {}) {:>6.0} ns/pkt cores {:>6.0} ns/pkt threads  p99 {:>8.1} µs  lost {}",
        m.system,
        m.placement.name(),
        m.workers,
        m.forwarded_pps / 1e6,
        m.pair_pps
            .iter()
            .map(|p| format!("{:.3}", p / 1e6))
            .collect::<Vec<_>>()
            .join("/"),
        m.ns_per_packet,
        m.ns_per_packet_threads,
        m.latency_ns.p99 as f64 / 1e3,
        m.lost_total
    )
}

fn entries(config: &ScaleConfig, state: &systems::sluice::SharedState) -> Vec<ScaleEntry> {
    SCALE_SYSTEMS
        .iter()
        .filter(|n| config.systems.iter().any(|s| s == *n))
        .filter_map(|&name| {
            let system = match name {
                "kernel-forward" => ScaleSystem::Other(Box::new(systems::kernel::KernelForward)),
                "xdp-redirect-bare" => {
                    ScaleSystem::Other(Box::<systems::bare::BareRedirect>::default())
                }
                "sluice-kernel" => {
                    ScaleSystem::Other(Box::new(systems::sluice::SluiceKernel::new(state.clone())))
                }
                "sluice-afxdp" => ScaleSystem::Afxdp(Box::new(systems::sluice::SluiceAfxdp::new(
                    state.clone(),
                    fastpath::socket::UmemMode::Shared,
                    config.cpus.node_cpus[0],
                ))),
                _ => return None,
            };
            Some(ScaleEntry {
                system,
                failed: BTreeSet::new(),
            })
        })
        .collect()
}

/// Runs `report.config`: builds the pairs, measures every (repetition, workers, system,
/// placement), fills `report` as it goes (so an interrupted run keeps what it measured) and
/// tears everything down. Needs root.
pub fn run(report: &mut ScaleReport, progress: &dyn Progress) -> Result<()> {
    let config = report.config.clone();
    config.validate()?;
    let state = systems::sluice::SluiceState::shared(config.remote_pods)?;
    let mut lab = ScaleLab::new(
        config.max_workers(),
        &config.cpus,
        config.warmup,
        config.secs,
    )?;
    let mut entries = entries(&config, &state);
    let outcome = execute(&mut lab, &config, &mut entries, report, progress);
    report.state_build_secs = systems::sluice::build_secs(&state);
    for e in &mut entries {
        e.system.system().shutdown();
    }
    drop(entries);
    drop(lab);
    report.finish();
    outcome
}

fn execute(
    lab: &mut ScaleLab,
    config: &ScaleConfig,
    entries: &mut [ScaleEntry],
    report: &mut ScaleReport,
    progress: &dyn Progress,
) -> Result<()> {
    // Repetitions outermost, then worker counts, then systems: each system is measured at
    // every count within minutes of the others.
    for run in 0..config.runs {
        for &w in &config.workers {
            for entry in entries.iter_mut() {
                let name = entry.system.system().name();
                for placement in config.placements_of(name) {
                    progress.start(&format!(
                        "{name} · {placement} · {w} workers · run {}",
                        run + 1
                    ));
                    let napi = match placement {
                        Placement::Shared => Ok(config.cpus.node_cpus[..w].to_vec()),
                        Placement::Split => config.cpus.split_napi(w),
                    };
                    let napi = match napi {
                        Ok(n) => n,
                        Err(reason) => {
                            if run == 0 {
                                progress.done(&format!(
                                    "{name} ({placement}, {w} workers): skipped: {reason}"
                                ));
                                report.skipped.push(NotMeasured {
                                    system: name.into(),
                                    workers: w,
                                    placement,
                                    reason,
                                });
                            } else {
                                progress
                                    .done(&format!("{name} ({placement}, {w} workers): skipped"));
                            }
                            continue;
                        }
                    };
                    if entry.failed.contains(&placement) {
                        progress.done(&format!(
                            "{name} ({placement}, {w} workers): not measured (failed before)"
                        ));
                        continue;
                    }
                    if let ScaleSystem::Afxdp(afxdp) = &mut entry.system {
                        afxdp.serve_pairs(Some(systems::sluice::PairWorkers {
                            cores: config.cpus.node_cpus[..w].to_vec(),
                            napi_on_worker_core: placement == Placement::Shared,
                            realtime: !config.cpus.generators_share_node_cores(w),
                        }));
                    }
                    let system = entry.system.system();
                    match lab.measure(system, config, w, placement, &napi, run) {
                        Ok(m) => {
                            progress.done(&summary(&m));
                            report.measurements.push(m);
                        }
                        Err(LabError::Interrupted) => return Err(LabError::Interrupted),
                        Err(e) => {
                            progress
                                .done(&format!("{name} ({placement}, {w} workers): FAILED: {e}"));
                            if matches!(e, LabError::System { .. } | LabError::Spawn { .. }) {
                                entry.failed.insert(placement);
                            }
                            report.failures.push(NotMeasured {
                                system: name.into(),
                                workers: w,
                                placement,
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cores_share_generators_with_the_node() {
        let plan = CpuPlan::resolve(&[0, 1], 2, None, None, None).expect("plan");
        assert_eq!(plan.node_cpus, [0, 1]);
        assert_eq!(plan.gen_cpus, [1, 0]);
        assert!(plan.generators_share_node_cores(2));
        assert!(
            !plan.generators_share_node_cores(1),
            "W=1: node 0, generator 1"
        );
        // Split with one worker puts NAPI on the idle node core; with two there is no room.
        assert_eq!(plan.split_napi(1), Ok(vec![1]));
        let err = plan
            .split_napi(2)
            .expect_err("no room for split with 2 workers");
        assert!(err.contains("needs 2 cores for NAPI"), "{err}");
    }

    #[test]
    fn a_big_machine_keeps_the_first_cpu_and_separates_generators() {
        let cpus: Vec<usize> = (0..16).collect();
        let plan = CpuPlan::resolve(&cpus, 4, None, None, None).expect("plan");
        assert_eq!(plan.node_cpus, [1, 2, 3, 4]);
        assert_eq!(plan.gen_cpus, [5, 6, 7, 8]);
        assert_eq!(plan.lab_cpu, 0);
        assert!(!plan.generators_share_node_cores(4));
        assert_eq!(plan.split_napi(4), Ok(vec![9, 10, 11, 12]));
        let plan = CpuPlan::resolve(&cpus, 8, None, None, None).expect("plan");
        assert_eq!(plan.node_cpus, (0..8).collect::<Vec<_>>());
        assert_eq!(plan.gen_cpus, (8..16).collect::<Vec<_>>());
        assert_eq!(plan.split_napi(4), Ok(vec![4, 5, 6, 7]), "idle node cores");
        assert!(plan.split_napi(8).is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScaleArgs,
    }

    #[test]
    fn arguments_parse_with_two_core_defaults() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["scale"]).expect("defaults parse");
        assert_eq!(cli.args.workers, [1, 2]);
        assert_eq!(cli.args.placement, [Placement::Shared, Placement::Split]);
        let config = cli.args.config_on(&[0, 1]).expect("2-core config");
        assert_eq!(config.systems, SCALE_SYSTEMS);
        assert_eq!(config.cpus.node_cpus, [0, 1]);
        assert_eq!(config.cpus.gen_cpus, [1, 0]);
        let cli = Cli::try_parse_from([
            "scale",
            "--systems",
            "kernel-forward,sluice-afxdp",
            "--workers",
            "1,2,4",
            "--node-cpus",
            "1,2,3,4",
            "--gen-cpus",
            "5,6,7,8",
            "--napi-cpus",
            "9,10,11,12",
            "--placement",
            "split",
            "--secs",
            "2",
            "--runs",
            "1",
        ])
        .expect("parses");
        let config = cli
            .args
            .config_on(&(0..16).collect::<Vec<_>>())
            .expect("config");
        assert_eq!(config.cpus.split_napi(4), Ok(vec![9, 10, 11, 12]));
        assert_eq!(config.placements_of("kernel-forward"), [Placement::Shared]);
        assert_eq!(config.placements_of("sluice-afxdp"), [Placement::Split]);
        assert!(matches!(
            cli.args.config_on(&[0, 1]),
            Err(ScaleError::TooFewCpus {
                role: "available",
                ..
            })
        ));
        assert!(matches!(
            cli.args.config_on(&(0..8).collect::<Vec<_>>()),
            Err(ScaleError::UnknownCpu {
                role: "generator",
                cpu: 8,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["scale", "--systems", "iptables"]).is_err());
        assert!(Cli::try_parse_from(["scale", "--placement", "apart"]).is_err());
        let zero = Cli::try_parse_from(["scale", "--workers", "0,1"]).expect("parses");
        assert!(matches!(
            zero.args.config_on(&[0, 1]),
            Err(ScaleError::Workers { workers: 0, .. })
        ));
    }

    #[test]
    fn bad_cpu_lists_are_named() {
        assert_eq!(
            CpuPlan::resolve(&[0, 1], 2, Some(vec![0, 5]), None, None),
            Err(ScaleError::UnknownCpu {
                role: "node",
                cpu: 5,
                available: "0,1".into()
            })
        );
        assert_eq!(
            CpuPlan::resolve(&[0, 1], 4, None, None, None),
            Err(ScaleError::TooFewCpus {
                role: "available",
                have: 2,
                need: 4,
                workers: 4
            })
        );
        assert_eq!(
            CpuPlan::resolve(&[0, 1, 2], 2, Some(vec![1]), None, None),
            Err(ScaleError::TooFewCpus {
                role: "node",
                have: 1,
                need: 2,
                workers: 2
            })
        );
        assert_eq!(
            CpuPlan::resolve(&[0, 1, 2], 2, None, Some(vec![2, 2]), None),
            Err(ScaleError::DuplicateCpu {
                role: "generator",
                cpu: 2
            })
        );
        let plan = CpuPlan::resolve(&[0, 1, 2, 3], 2, None, None, Some(vec![1, 3])).expect("plan");
        assert!(plan.split_napi(2).is_err(), "NAPI cpu 1 is a node core");
        assert!("sideways".parse::<Placement>().is_err());
        assert_eq!("split".parse::<Placement>(), Ok(Placement::Split));
    }

    fn measurement(system: &str, workers: usize, run: usize, pps: f64) -> ScaleMeasurement {
        ScaleMeasurement {
            system: system.into(),
            workers,
            placement: Placement::Shared,
            run,
            node_cpus: (0..workers).collect(),
            gen_cpus: (0..workers).rev().collect(),
            napi_cpus: (0..workers).collect(),
            generators_share_node_cores: workers > 1,
            secs: 1.0,
            offered_pps: pps,
            forwarded_pps: pps,
            pair_pps: vec![pps / workers as f64; workers],
            pair_received: vec![(pps / workers as f64) as u64; workers],
            sent_total: 100,
            received_total: 99,
            lost_total: 1,
            latency_ns: LatencyFigures {
                p99: 20_000,
                ..LatencyFigures::default()
            },
            core_busy: Vec::new(),
            node_core_ns: 1_000_000,
            thread_ns: 500_000,
            ns_per_packet: 1_000_000.0 / pps,
            ns_per_packet_threads: 500_000.0 / pps,
            extras: PeriodExtras::default(),
            load: String::new(),
        }
    }

    #[test]
    fn rows_take_medians_and_speedups_and_render() {
        let cpus = CpuPlan::resolve(&[0, 1], 2, None, None, None).expect("plan");
        let config = ScaleConfig::new(
            vec!["kernel-forward".into()],
            vec![2, 1],
            vec![Placement::Shared],
            cpus,
            1.0,
            3,
            100,
        )
        .expect("config");
        assert_eq!(config.workers, [1, 2]);
        assert_eq!(config.planned(), 6);
        let mut report = ScaleReport::new("bench-lab scale".into(), config);
        for (run, (one, two)) in [(1e6, 1.8e6), (1.2e6, 2.0e6), (0.9e6, 1.9e6)]
            .into_iter()
            .enumerate()
        {
            report
                .measurements
                .push(measurement("kernel-forward", 1, run, one));
            report
                .measurements
                .push(measurement("kernel-forward", 2, run, two));
        }
        let rows = report.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].workers, 1);
        assert!((rows[0].mpps - 1.0).abs() < 1e-9);
        assert_eq!(rows[1].per_core_mpps.len(), 2);
        assert!((rows[1].speedup.expect("speedup") - 1.9).abs() < 1e-9);
        let lines = report.json_lines();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
        for key in [
            "system",
            "workers",
            "placement",
            "mpps",
            "ns_per_packet",
            "per_core_mpps",
            "p99_us",
            "loss",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["per_core_mpps"].as_array().map(Vec::len), Some(2));
        let md = report.to_markdown();
        assert!(
            md.contains("| kernel-forward | shared | 2 | 1.900 | 1.800–2.000 | 1.90× |"),
            "{md}"
        );
        assert_eq!(rows[0].mpps_range, (0.9, 1.2));
        assert!(md.contains("Generators share the node's cores"), "{md}");
        assert!(report.to_svg().expect("svg").contains("<svg"));
        let bad = ScaleConfig::new(
            vec!["ovs-afxdp".into()],
            vec![1],
            vec![Placement::Shared],
            report.config.cpus.clone(),
            1.0,
            1,
            0,
        );
        assert_eq!(bad, Err(ScaleError::UnknownSystem("ovs-afxdp".into())));
    }
}
