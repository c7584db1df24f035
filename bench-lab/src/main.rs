//! `bench-lab`: measures sluice side by side with the kernel paths it replaces.
//!
//! `bench-lab run` makes the full set of measurements and writes a report (JSON, Markdown,
//! SVG); `bench-lab quick` makes a short pass (under 3 minutes) and prints one JSON line per
//! system and rule count. Needs root.

use std::path::PathBuf;
use std::time::Duration;

use bench_lab::afxdp_gen::GeneratorKind;
use bench_lab::error::{LabError, Result};
use bench_lab::generator::{FlowMode, TrafficSpec};
use bench_lab::netns;
use bench_lab::report::Report;
use bench_lab::scenario::{Entry, Lab, LabConfig, Plan, Progress, planned};
use bench_lab::systems::{self, System};
use bench_lab::topology::TopologyConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fastpath::socket::UmemMode;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(
    name = "bench-lab",
    version,
    about = "sluice's packet-generator lab (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every scenario: throughput vs rules, new flows, loss-free rate, latency at 10/50/90 %.
    Run(RunArgs),
    /// A short pass (< 3 minutes): saturation at the lowest and highest rule count, one run;
    /// prints one JSON line per system and rule count.
    Quick(QuickArgs),
    /// Multi-core scaling: one worker and node core per generator → sink pair, for 1, 2, …
    /// workers; prints one JSON line per system, worker count and NAPI placement.
    Scale(bench_lab::scale::ScaleArgs),
    /// Policy update storm: 1,000 pod adds/removes a second in sluice's state while traffic
    /// flows through sluice-kernel and sluice-afxdp (two AF_XDP generators: an allowed and a
    /// denied pod); reports the throughput dip, update rate and apply latency, and verdict
    /// errors, which must be 0 (exit status 1 otherwise).
    Storm(bench_lab::storm::StormArgs),
    /// New connections: a real-socket TCP generator through each system (connections per
    /// second, handshake latency p50/p99, failed connects).
    NewConnections(bench_lab::tcp_gen::TcpArgs),
}

/// Which UMEM modes of sluice-afxdp to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Umem {
    Shared,
    PerSocket,
    Both,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Systems to measure (default: all).
    #[arg(long, value_delimiter = ',', value_parser = system_name)]
    systems: Vec<String>,
    /// sluice-afxdp's UMEM mode(s).
    #[arg(long, value_enum)]
    umem: Option<Umem>,
    /// sluice-afxdp's AF_XDP ring size(s): each is measured as a variant of its own (default:
    /// the fast path's default).
    #[arg(long, value_delimiter = ',', value_parser = ring_size)]
    ring_sizes: Vec<u32>,
    /// sluice-afxdp's RX burst size(s) (frames taken per ring per round, 1..=ring size): each
    /// is measured as a variant of its own (default: the fast path's default).
    #[arg(long, value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// sluice-afxdp's busy-poll window(s): empty rounds before the worker blocks on its
    /// sockets; each is measured as a variant of its own (default: the fast path's default).
    #[arg(long, value_delimiter = ',')]
    busy_polls: Vec<u32>,
    /// Frame length in bytes (raised to 62 for IPv4, 82 for IPv6).
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// IPv6 traffic instead of IPv4.
    #[arg(long)]
    ipv6: bool,
    /// Flows of the throughput scenario.
    #[arg(long, default_value = "many", value_parser = flow_mode)]
    flows: FlowMode,
    /// Source addresses the generator uses (1..=32; new-flow runs use at least 32).
    #[arg(long, default_value_t = 1)]
    src_ips: u32,
    /// Remote pods in sluice's state.
    #[arg(long, default_value_t = 100_000)]
    remote_pods: usize,
    /// Queues per veth (1 or 2).
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// The node's core.
    #[arg(long, default_value_t = 0)]
    node_cpu: usize,
    /// The generator's core.
    #[arg(long, default_value_t = 1)]
    gen_cpu: usize,
    /// Write the report (JSON, Markdown, SVG) into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The packet generator: `live-frames` (the XDP program under BPF_PROG_TEST_RUN) or
    /// `afxdp` (an AF_XDP socket's TX ring on the generator pod's veth).
    #[arg(long, default_value = "live-frames", value_parser = generator_kind)]
    generator: GeneratorKind,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Rule counts (policy entries for sluice).
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 1_000, 10_000])]
    rules: Vec<usize>,
    /// Measured seconds per measurement.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,
    /// Repetitions (medians are taken over them).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Warm-up seconds before each measured period.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Probes of the loss-free rate search per system (0: no search).
    #[arg(long, default_value_t = 5)]
    search_steps: usize,
    /// Seconds per search probe.
    #[arg(long, default_value_t = 2.0)]
    search_secs: f64,
    /// Load shares (of each system's saturation rate) for the latency scenario.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.1, 0.5, 0.9])]
    latency_loads: Vec<f64>,
    /// Skip the latency scenario.
    #[arg(long)]
    no_latency: bool,
    /// Skip the new-flow scenario.
    #[arg(long)]
    no_new_flows: bool,
}

#[derive(Args, Debug)]
struct QuickArgs {
    #[command(flatten)]
    common: Common,
}

fn system_name(s: &str) -> std::result::Result<String, String> {
    if systems::ALL.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown system {s:?}; one of {}",
            systems::ALL.join(", ")
        ))
    }
}

fn ring_size(s: &str) -> std::result::Result<u32, String> {
    let n = s
        .parse::<u32>()
        .map_err(|e| format!("ring size {s:?}: {e}"))?;
    fastpath::socket::RingSizes::with_ring(n)
        .map(|sizes| sizes.ring)
        .map_err(|e| format!("ring size {e}"))
}

fn flow_mode(s: &str) -> std::result::Result<FlowMode, String> {
    s.parse()
}

fn generator_kind(s: &str) -> std::result::Result<GeneratorKind, String> {
    s.parse()
}

/// Progress shown as a bar on stderr, each finished measurement printed above it.
struct Bar(ProgressBar);

impl Bar {
    /// A bar over `total` measurements that ticks on its own (the elapsed time moves while
    /// one measurement runs).
    fn new(total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, what: &str) {
        self.0.set_message(what.to_owned());
    }

    fn done(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
        self.0.inc(1);
    }
}

fn entries(
    c: &Common,
    default_umem: Umem,
    lab: &Lab,
    state: &systems::sluice::SharedState,
) -> Vec<Entry> {
    let names: Vec<&str> = if c.systems.is_empty() {
        systems::ALL.to_vec()
    } else {
        systems::ALL
            .iter()
            .copied()
            .filter(|n| c.systems.iter().any(|s| s == n))
            .collect()
    };
    let node_cpu = c.node_cpu;
    let mut out = Vec::new();
    let mut push = |system: Box<dyn System>, main: bool| {
        out.push(Entry {
            system,
            main,
            failed: false,
        })
    };
    for name in names {
        match name {
            "kernel-forward" => push(Box::new(systems::kernel::KernelForward), true),
            "iptables" => {
                push(Box::new(systems::kernel::Iptables::new(false)), true);
                push(Box::new(systems::kernel::Iptables::new(true)), false);
            }
            "nftables" => push(Box::new(systems::kernel::Nftables), true),
            "ovs-afxdp" => push(
                Box::new(systems::ovs::OvsAfxdp::new(node_cpu, &lab.work_dir())),
                true,
            ),
            "xdp-redirect-bare" => push(Box::<systems::bare::BareRedirect>::default(), true),
            "afxdp-bare" => push(
                Box::new(systems::afxdp_bare::AfxdpBare::new(node_cpu)),
                true,
            ),
            "sluice-kernel" => push(
                Box::new(systems::sluice::SluiceKernel::new(state.clone())),
                true,
            ),
            "sluice-afxdp" => {
                let modes = match c.umem.unwrap_or(default_umem) {
                    Umem::Shared => vec![UmemMode::Shared],
                    Umem::PerSocket => vec![UmemMode::PerSocket],
                    Umem::Both => vec![UmemMode::Shared, UmemMode::PerSocket],
                };
                let rings = if c.ring_sizes.is_empty() {
                    vec![fastpath::socket::RingSizes::default().ring]
                } else {
                    c.ring_sizes.clone()
                };
                let batches = if c.batch_sizes.is_empty() {
                    vec![fastpath::worker::DEFAULT_BATCH_SIZE]
                } else {
                    c.batch_sizes.clone()
                };
                let busy_polls = if c.busy_polls.is_empty() {
                    vec![fastpath::sched::Scheduling::default().busy_poll_rounds]
                } else {
                    c.busy_polls.clone()
                };
                let mut variants = Vec::new();
                for &mode in &modes {
                    for &ring in &rings {
                        for &batch in &batches {
                            for &busy in &busy_polls {
                                variants.push((mode, ring, batch, busy));
                            }
                        }
                    }
                }
                for (mode, ring, batch, busy) in variants {
                    push(
                        Box::new(
                            systems::sluice::SluiceAfxdp::new(state.clone(), mode, node_cpu)
                                .with_ring_size(ring)
                                .with_batch_size(batch)
                                .with_busy_poll_rounds(busy),
                        ),
                        true,
                    );
                }
            }
            _ => {}
        }
    }
    out
}

fn main() {
    netns::install_signal_handlers();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench-lab: {e}");
            std::process::exit(if matches!(e, LabError::Interrupted) {
                130
            } else {
                1
            });
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (common, plan, config, default_umem, quick) = match &cli.command {
        Cmd::Scale(a) => return scale_main(a, command),
        Cmd::Storm(a) => {
            let report = bench_lab::storm::run_all(a, command)?;
            write_report(&report, a.out.as_deref())?;
            let errors: u64 = report.storms.iter().map(|r| r.verdict_errors).sum();
            return if errors > 0 {
                Err(LabError::Measurement {
                    system: "sluice".into(),
                    reason: format!("{errors} verdict errors during the update storm"),
                })
            } else {
                Ok(())
            };
        }
        Cmd::NewConnections(a) => {
            let report = bench_lab::tcp_gen::run_all(a, command)?;
            return write_report(&report, a.out.as_deref());
        }
        Cmd::Run(a) => {
            let mut rules = a.rules.clone();
            rules.sort_unstable();
            rules.dedup();
            (
                a.common.clone(),
                Plan {
                    rules,
                    runs: a.runs.max(1),
                    traffic: traffic(&a.common),
                    new_flows: !a.no_new_flows,
                    established: !a.no_new_flows,
                    search_steps: a.search_steps,
                    search_secs: a.search_secs,
                    latency_loads: if a.no_latency {
                        Vec::new()
                    } else {
                        a.latency_loads.clone()
                    },
                },
                (a.secs, a.warmup),
                Umem::Both,
                false,
            )
        }
        Cmd::Quick(a) => (
            a.common.clone(),
            Plan {
                rules: vec![10, 10_000],
                runs: 1,
                traffic: traffic(&a.common),
                new_flows: true,
                established: false,
                search_steps: 0,
                search_secs: 0.0,
                latency_loads: Vec::new(),
            },
            (2.0, 0.5),
            Umem::Shared,
            true,
        ),
    };
    let config = LabConfig {
        topology: TopologyConfig {
            queues: common.queues,
            src_ips: 32,
            node_cpu: common.node_cpu,
            gen_cpu: common.gen_cpu,
            ..TopologyConfig::default()
        },
        secs: config.0,
        warmup: config.1,
        gen_nice: 0,
        generator: common.generator,
    };
    let mut report = Report::for_lab(command, &config, common.remote_pods);
    let state = systems::sluice::SluiceState::shared(common.remote_pods)?;
    let mut lab = Lab::new(config)?;
    let mut entries = entries(&common, default_umem, &lab, &state);
    // The iptables conntrack-first variant only runs in new-flow passes.
    let total = planned(&plan, &entries);
    let progress = Bar::new(total);
    let outcome = lab.execute(&plan, &mut entries, &mut report, &progress);
    let build = systems::sluice::build_secs(&state);
    Lab::shutdown(&mut entries);
    progress.0.finish_and_clear();
    if let Some(secs) = build {
        report
            .state_build_secs
            .insert(plan.rules.last().copied().unwrap_or(0), secs);
    }
    report.finish();
    drop(lab);
    if quick {
        for line in report.quick_lines() {
            println!("{line}");
        }
    }
    let out = common
        .out
        .clone()
        .or_else(|| (!quick).then(|| PathBuf::from("bench-lab/results")));
    if let Some(dir) = out {
        for file in report.write(&dir)? {
            eprintln!("wrote {file}");
        }
    }
    if !quick {
        println!("{}", report.to_markdown());
    }
    outcome
}

/// Writes `report` into `out` (when given) and prints its Markdown.
fn write_report(report: &Report, out: Option<&std::path::Path>) -> Result<()> {
    if let Some(dir) = out {
        for file in report.write(dir)? {
            eprintln!("wrote {file}");
        }
    }
    println!("{}", report.to_markdown());
    Ok(())
}

/// `bench-lab scale`: JSON lines on stdout, the report files with `--out`.
fn scale_main(args: &bench_lab::scale::ScaleArgs, command: String) -> Result<()> {
    use bench_lab::scale::{self, ScaleReport};
    let mut report = ScaleReport::new(command, args.config()?);
    let progress = Bar::new(report.config.planned());
    let outcome = scale::run(&mut report, &progress);
    progress.0.finish_and_clear();
    for line in report.json_lines() {
        println!("{line}");
    }
    if let Some(dir) = &args.out {
        for file in report.write(dir)? {
            eprintln!("wrote {file}");
        }
    }
    outcome
}

fn traffic(c: &Common) -> TrafficSpec {
    TrafficSpec {
        flows: c.flows,
        frame_len: c.frame_len,
        ipv6: c.ipv6,
        src_ips: c.src_ips.clamp(1, 32),
        rate_pps: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "bench-lab",
            "run",
            "--systems",
            "iptables,sluice-kernel",
            "--rules",
            "10,1000",
            "--secs",
            "3",
            "--runs",
            "5",
            "--umem",
            "per-socket",
        ])
        .expect("parses");
        let Cmd::Run(a) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(a.common.systems, ["iptables", "sluice-kernel"]);
        assert_eq!(a.rules, [10, 1000]);
        assert_eq!(a.runs, 5);
        assert_eq!(a.common.umem, Some(Umem::PerSocket));
        assert_eq!(a.latency_loads, [0.1, 0.5, 0.9]);
        assert!(Cli::try_parse_from(["bench-lab", "run", "--systems", "vpp"]).is_err());
        assert!(Cli::try_parse_from(["bench-lab", "quick", "--flows", "lots"]).is_err());
        let q = Cli::try_parse_from(["bench-lab", "quick", "--flows", "new"]).expect("quick");
        let Cmd::Quick(q) = q.command else {
            panic!("quick expected")
        };
        assert_eq!(q.common.flows, FlowMode::New);
        assert_eq!(q.common.generator, GeneratorKind::LiveFrames);
        let q = Cli::try_parse_from(["bench-lab", "quick", "--generator", "afxdp"]).expect("afxdp");
        let Cmd::Quick(q) = q.command else {
            panic!("quick expected")
        };
        assert_eq!(q.common.generator, GeneratorKind::Afxdp);
        assert!(Cli::try_parse_from(["bench-lab", "run", "--generator", "pktgen"]).is_err());
        let s = Cli::try_parse_from(["bench-lab", "storm", "--rate", "500", "--updater-cpu", "1"])
            .expect("storm");
        let Cmd::Storm(s) = s.command else {
            panic!("storm expected")
        };
        assert_eq!((s.rate, s.updater_cpu, s.rules), (500.0, Some(1), 1_000));
        assert!(Cli::try_parse_from(["bench-lab", "storm", "--systems", "iptables"]).is_err());
        let t = Cli::try_parse_from(["bench-lab", "new-connections", "--systems", "nftables"])
            .expect("new-connections");
        let Cmd::NewConnections(t) = t.command else {
            panic!("new-connections expected")
        };
        assert_eq!(
            (t.systems.as_slice(), t.rules.as_slice()),
            (&["nftables".to_owned()][..], &[10, 10_000][..])
        );
        assert!(
            Cli::try_parse_from(["bench-lab", "new-connections", "--systems", "ovs-afxdp"])
                .is_err()
        );
    }
}
