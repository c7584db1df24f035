//! The TCP generator: real sockets, for connection rate and handshake latency.
//!
//! A server in the sink pod accepts on [`TCP_PORT`] (backlog raised to 4,096) and closes each
//! connection at once. Client threads in the generator pod connect through the system under
//! test, each timing its `connect()` (SYN out → SYN-ACK in: one round trip through the node in
//! each direction, plus both stacks), then close with `SO_LINGER` 0 (an RST: no TIME_WAIT, so
//! the ephemeral ports are reused and a run can make hundreds of thousands of connections).
//! Every run is bounded by a connection count and by time. TX checksum offload is off on both
//! pods' veths for every system ([`full_checksums`]) unless `--checksum-offload` keeps the
//! default, with which sluice's datapaths deliver segments with partial checksums and every
//! handshake through them fails (BENCHMARKS.md).
//!
//! The systems' policies admit the lab's UDP traffic only; for this scenario each system is
//! given the matching TCP rule in both directions (the handshake's replies cross the node too):
//! iptables and nftables get them appended after their N rules (so every packet still walks
//! them), sluice gets a policy admitting `app=gen` to `app=sink` on TCP [`TCP_PORT`] through
//! [`crate::systems::sluice::LiveState`] (removed afterwards), kernel forwarding needs nothing. Open vSwitch and the bare
//! redirect forward one direction only and are not measured.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::generator::TrafficSpec;
use crate::netns;
use crate::scenario::{Lab, LatencyFigures};
use crate::systems::System;
use crate::systems::sluice::lab_policy;
use crate::topology::Topology;

/// The TCP port the sink's server listens on.
pub const TCP_PORT: u16 = 9;
/// Name of the policy that admits the TCP generator in sluice.
const TCP_POLICY: &str = "sink-from-gen-tcp";
/// The systems the TCP scenario measures.
pub const TCP_SYSTEMS: [&str; 5] = [
    "kernel-forward",
    "iptables",
    "nftables",
    "sluice-kernel",
    "sluice-afxdp",
];

/// How much the TCP generator does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpSpec {
    /// Most connections to attempt (over all client threads).
    pub max_connections: u64,
    /// Most seconds to run.
    pub secs: f64,
    /// Client threads, each with one connection in flight.
    pub concurrency: usize,
    /// Give up on one `connect()` after this many milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for TcpSpec {
    fn default() -> Self {
        TcpSpec {
            max_connections: 200_000,
            secs: 3.0,
            concurrency: 4,
            connect_timeout_ms: 1_000,
        }
    }
}

/// What one TCP run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpMeasurement {
    /// System name.
    pub system: String,
    /// Variant.
    pub variant: String,
    /// Rules.
    pub rules: usize,
    /// What was asked.
    pub spec: TcpSpec,
    /// Seconds the clients ran.
    pub secs: f64,
    /// `connect()` calls made.
    pub attempted: u64,
    /// Connections established.
    pub established: u64,
    /// Connects that failed (refused, reset, unreachable, timed out).
    pub failed: u64,
    /// Of `failed`, the ones that timed out.
    pub timed_out: u64,
    /// Connections the server accepted.
    pub accepted: u64,
    /// Established connections per second.
    pub conns_per_sec: f64,
    /// Handshake (`connect()`) latency of the established connections, ns.
    pub connect_ns: LatencyFigures,
}

/// The server in the sink pod: accepts and closes until stopped.
struct Server {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    fn start(topology: &Topology, cpu: usize) -> Result<Self> {
        let addr = SocketAddr::new(IpAddr::V4(topology.sink.v4[0]), TCP_PORT);
        let ns = topology.sink.ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, a) = (Arc::clone(&stop), Arc::clone(&accepted));
        let handle = std::thread::Builder::new()
            .name("lab-tcp-server".into())
            .spawn(move || -> Result<()> {
                let listener = (|| {
                    netns::enter(&ns)?;
                    netns::pin_to_cpu(0, cpu)?;
                    let tcp = |what: &str| {
                        let what = what.to_owned();
                        move |source| LabError::Tcp { what, source }
                    };
                    let l = TcpListener::bind(addr).map_err(tcp(&format!("binding {addr}")))?;
                    // Listening again only raises the backlog (std uses 128).
                    // SAFETY: listen() on a socket we own.
                    if unsafe { libc::listen(l.as_raw_fd(), 4096) } != 0 {
                        return Err(tcp("raising the backlog")(std::io::Error::last_os_error()));
                    }
                    l.set_nonblocking(true)
                        .map_err(tcp("non-blocking listener"))?;
                    Ok(l)
                })();
                let listener = match listener {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let mut poll = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                while !s.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            a.fetch_add(1, Ordering::Relaxed);
                            drop(conn);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // SAFETY: one pollfd that outlives the call.
                            unsafe { libc::poll(&mut poll, 1, 20) };
                        }
                        // A connection reset before it was accepted, and the like.
                        Err(_) => {}
                    }
                }
                Ok(())
            })
            .map_err(|e| LabError::io("starting the TCP server thread".into(), e))?;
        let mut server = Server {
            stop,
            accepted,
            handle: Some(handle),
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => {
                server.stop()?;
                Err(e)
            }
            Err(_) => {
                server.stop()?;
                Err(LabError::Tcp {
                    what: "the server thread".into(),
                    source: std::io::Error::other("ended before listening"),
                })
            }
        }
    }

    fn stop(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?;
        }
        Ok(self.accepted.load(Ordering::Relaxed))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One client thread's tally.
#[derive(Default)]
struct Tally {
    attempted: u64,
    established: u64,
    failed: u64,
    timed_out: u64,
    hist: perf::LatencyHistogram,
}

/// Closes `stream` with an RST (`SO_LINGER` 0): no TIME_WAIT on the client.
fn abort(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one linger struct that outlives the call, on our socket.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(stream);
}

/// Runs the clients against the server already listening in `topology`'s sink pod; the
/// clients live in generator pod 0 on `cpu`. Returns the tallies and the seconds they ran.
fn clients(topology: &Topology, spec: &TcpSpec, cpu: usize) -> Result<(Tally, f64)> {
    let to = SocketAddr::new(IpAddr::V4(topology.sink.v4[0]), TCP_PORT);
    let ns = topology.gens[0].ns.path();
    let budget = Arc::new(AtomicU64::new(spec.max_connections));
    let timeout = Duration::from_millis(spec.connect_timeout_ms.max(1));
    let deadline = Instant::now() + Duration::from_secs_f64(spec.secs.max(0.0));
    let started = Instant::now();
    let tallies: Vec<Result<Tally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.concurrency.max(1))
            .map(|_| {
                let (ns, budget) = (&ns, &budget);
                scope.spawn(move || -> Result<Tally> {
                    netns::enter(ns)?;
                    netns::pin_to_cpu(0, cpu)?;
                    let mut t = Tally::default();
                    while Instant::now() < deadline && !netns::stop_requested() {
                        // Take one connection from the shared budget.
                        if budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                b.checked_sub(1)
                            })
                            .is_err()
                        {
                            break;
                        }
                        t.attempted += 1;
                        let t0 = Instant::now();
                        match TcpStream::connect_timeout(&to, timeout) {
                            Ok(stream) => {
                                t.hist.record(t0.elapsed().as_nanos() as u64);
                                t.established += 1;
                                abort(stream);
                            }
                            Err(e) => {
                                t.failed += 1;
                                if e.kind() == std::io::ErrorKind::TimedOut {
                                    t.timed_out += 1;
                                } else {
                                    // Refused or unreachable come back at once: do not spin.
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                            }
                        }
                    }
                    Ok(t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        let t = t?;
        all.attempted += t.attempted;
        all.established += t.established;
        all.failed += t.failed;
        all.timed_out += t.timed_out;
        all.hist.add(&t.hist);
    }
    Ok((all, secs))
}

/// Switches TX checksum offload off on the generator's and the sink's pod veths, for every
/// system alike: a real socket's segments leave a veth with a partial checksum, which an XDP
/// redirect (sluice) does not complete, so the far stack would drop them (DESIGN.md, "Facts
/// about this platform"); kernel forwarding carries the offload state along.
pub fn full_checksums(topology: &Topology) -> Result<()> {
    for pod in [&topology.gens[0], &topology.sink] {
        pod.ns.exec(&["ethtool", "-K", &pod.dev, "tx", "off"])?;
    }
    Ok(())
}

/// Lets the TCP generator's connections through `system` (set up already).
fn allow_tcp(system: &mut dyn System, topology: &Topology) -> Result<()> {
    let (g, k) = (topology.gens[0].v4[0], topology.sink.v4[0]);
    match system.name() {
        "kernel-forward" => Ok(()),
        "iptables" => {
            for rule in [
                format!("-s {g}/32 -d {k}/32 -p tcp --dport {TCP_PORT} -j ACCEPT"),
                format!("-s {k}/32 -d {g}/32 -p tcp --sport {TCP_PORT} -j ACCEPT"),
            ] {
                let mut args = vec!["iptables", "-A", "FORWARD"];
                args.extend(rule.split_whitespace());
                topology.node.exec(&args)?;
            }
            Ok(())
        }
        "nftables" => {
            let table = crate::rules::NFT_TABLE;
            let script = format!(
                "add rule inet {table} forward ip saddr {g} ip daddr {k} tcp dport {TCP_PORT} accept\n\
                 add rule inet {table} forward ip saddr {k} ip daddr {g} tcp sport {TCP_PORT} accept\n"
            );
            topology
                .node
                .exec_with_input(&["nft", "-f", "-"], &script)
                .map(drop)
        }
        name => {
            let Some(live) = system.live_state() else {
                return Err(LabError::system(
                    name.to_owned(),
                    "forwards one direction only: not measured with TCP",
                ));
            };
            let policy = lab_policy(&tcp_policy())?;
            live.update(topology, false, &[], &mut |cache| {
                cache.upsert_policy(policy.clone());
                Ok(())
            })
            .map(drop)
        }
    }
}

/// Takes back what [`allow_tcp`] gave sluice (the others' rules go with their teardown).
fn revoke_tcp(system: &mut dyn System, topology: &Topology) -> Result<()> {
    let Some(live) = system.live_state() else {
        return Ok(());
    };
    let key = lab_policy(&tcp_policy())?.key;
    live.update(topology, true, &[], &mut |cache| {
        cache.remove_policy(&key);
        Ok(())
    })
    .map(drop)
}

/// The policy admitting `app=gen` to `app=sink` on TCP [`TCP_PORT`].
pub fn tcp_policy() -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {TCP_POLICY}, namespace: bench}}
spec:
  endpointSelector: {{matchLabels: {{app: sink}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: gen}}}}]
    toPorts: [{{ports: [{{port: \"{TCP_PORT}\", protocol: TCP}}]}}]
"
    )
}

/// Sets `system` up with `rules` rules, admits TCP, runs the TCP generator, and tears the
/// system down on every path.
pub fn measure(
    lab: &Lab,
    system: &mut dyn System,
    rules: usize,
    spec: &TcpSpec,
) -> Result<TcpMeasurement> {
    netns::check_interrupted()?;
    let topology = &lab.topology;
    let traffic = TrafficSpec::few_small(None);
    let result = system
        .setup(topology, rules, &traffic)
        .and_then(|()| allow_tcp(system, topology))
        .and_then(|()| {
            topology.place_napi(system.napi_nice())?;
            generate(topology, spec, (system.name(), system.variant(), rules))
        });
    let revoked = revoke_tcp(system, topology);
    let down = system.teardown(topology);
    let m = result?;
    revoked?;
    down?;
    Ok(m)
}

/// Runs the TCP generator across the node as it is, with no system set up (nothing should get
/// through: a check of the lab itself). Reported as system `none`.
pub fn measure_without_setup(lab: &Lab, spec: &TcpSpec) -> Result<TcpMeasurement> {
    netns::check_interrupted()?;
    generate(&lab.topology, spec, ("none", String::new(), 0))
}

/// Server and clients for one measurement of `who` (system, variant, rules).
fn generate(
    topology: &Topology,
    spec: &TcpSpec,
    who: (&str, String, usize),
) -> Result<TcpMeasurement> {
    let mut server = Server::start(topology, topology.config.gen_cpu)?;
    let run = clients(topology, spec, topology.config.gen_cpu);
    // Let the last handshakes reach the server before counting its accepts.
    std::thread::sleep(Duration::from_millis(50));
    let accepted = server.stop()?;
    let (t, secs) = run?;
    Ok(TcpMeasurement {
        system: who.0.into(),
        variant: who.1,
        rules: who.2,
        spec: spec.clone(),
        secs,
        attempted: t.attempted,
        established: t.established,
        failed: t.failed,
        timed_out: t.timed_out,
        accepted,
        conns_per_sec: t.established as f64 / secs.max(1e-9),
        connect_ns: LatencyFigures::of(&t.hist),
    })
}

/// One line per measurement, for progress output.
pub fn summary(m: &TcpMeasurement) -> String {
    format!(
        "{:<32} {:>6} rules  {:>8.0} conn/s  connect p50 {:>7.1} µs p99 {:>7.1} µs  failed {} of {}",
        crate::systems::label(&m.system, &m.variant),
        m.rules,
        m.conns_per_sec,
        m.connect_ns.p50 as f64 / 1e3,
        m.connect_ns.p99 as f64 / 1e3,
        m.failed,
        m.attempted
    )
}

/// The Markdown section of the TCP measurements (nothing when there are none).
pub fn markdown(ms: &[TcpMeasurement], out: &mut String) {
    if ms.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### New connections (TCP handshakes through the node, real sockets)\n\n\
         | system | rules | conn/s | connect p50 µs | p99 µs | p99.9 µs | failed / attempted | accepted |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    for m in ms {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} / {} | {} |",
            crate::systems::label(&m.system, &m.variant),
            m.rules,
            m.conns_per_sec,
            us(m.connect_ns.p50),
            us(m.connect_ns.p99),
            us(m.connect_ns.p999),
            m.failed,
            m.attempted,
            m.accepted
        );
    }
    out.push('\n');
}

/// `bench-lab new-connections`' command line.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct TcpArgs {
    /// Systems to measure (default: kernel-forward, iptables, nftables, sluice-kernel,
    /// sluice-afxdp).
    #[arg(long, value_delimiter = ',', value_parser = tcp_system)]
    pub systems: Vec<String>,
    /// Rule counts.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 10_000])]
    pub rules: Vec<usize>,
    /// Most seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Most connections per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub connections: u64,
    /// Client threads (one connection in flight each).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Timeout of one connect, ms.
    #[arg(long, default_value_t = 1_000)]
    pub connect_timeout_ms: u64,
    /// Leave TX checksum offload on on the pods' veths (as a pod's veth has it by default);
    /// segments then leave the generator with partial checksums.
    #[arg(long)]
    pub checksum_offload: bool,
    /// Remote pods in sluice's state.
    #[arg(long, default_value_t = 10_000)]
    pub remote_pods: usize,
    /// The node's core.
    #[arg(long, default_value_t = 0)]
    pub node_cpu: usize,
    /// The clients' and the server's core.
    #[arg(long, default_value_t = 1)]
    pub gen_cpu: usize,
    /// Write the report (JSON, Markdown, SVG) into this directory.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

fn tcp_system(s: &str) -> std::result::Result<String, String> {
    if TCP_SYSTEMS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not measured with TCP; one of {}",
            TCP_SYSTEMS.join(", ")
        ))
    }
}

/// `bench-lab new-connections`: every chosen system at every rule count, once; returns the
/// report (runs in [`crate::report::Report::tcp`]), printing each result to stderr.
pub fn run_all(args: &TcpArgs, command: String) -> Result<crate::report::Report> {
    use crate::systems::kernel::{Iptables, KernelForward, Nftables};
    use crate::systems::sluice::{SluiceAfxdp, SluiceKernel, SluiceState};
    let spec = TcpSpec {
        max_connections: args.connections,
        secs: args.secs,
        concurrency: args.concurrency,
        connect_timeout_ms: args.connect_timeout_ms,
    };
    let config = crate::scenario::LabConfig {
        topology: crate::topology::TopologyConfig {
            node_cpu: args.node_cpu,
            gen_cpu: args.gen_cpu,
            ..crate::topology::TopologyConfig::default()
        },
        secs: args.secs,
        warmup: 0.0,
        gen_nice: 0,
        generator: crate::afxdp_gen::GeneratorKind::default(),
    };
    let mut report = crate::report::Report::for_lab(command, &config, args.remote_pods);
    let state = SluiceState::shared(args.remote_pods)?;
    let lab = Lab::new(config)?;
    if !args.checksum_offload {
        full_checksums(&lab.topology)?;
    }
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    for name in TCP_SYSTEMS {
        if !args.systems.is_empty() && !args.systems.iter().any(|s| s == name) {
            continue;
        }
        systems.push(match name {
            "kernel-forward" => Box::new(KernelForward),
            "iptables" => Box::new(Iptables::new(false)),
            "nftables" => Box::new(Nftables),
            "sluice-kernel" => Box::new(SluiceKernel::new(state.clone())),
            _ => Box::new(SluiceAfxdp::new(
                state.clone(),
                fastpath::socket::UmemMode::Shared,
                args.node_cpu,
            )),
        });
    }
    let mut rules = args.rules.clone();
    rules.sort_unstable();
    rules.dedup();
    let mut outcome = Ok(());
    'all: for &n in &rules {
        for system in &mut systems {
            match measure(&lab, system.as_mut(), n, &spec) {
                Ok(m) => {
                    eprintln!("{}", summary(&m));
                    report.tcp.push(m);
                }
                Err(LabError::Interrupted) => {
                    outcome = Err(LabError::Interrupted);
                    break 'all;
                }
                Err(e) => report.fail(
                    system.as_ref(),
                    crate::scenario::Scenario::NewFlows,
                    n,
                    "new connections",
                    &e,
                ),
            }
        }
    }
    lab.close(&mut systems);
    report.finish();
    outcome.map(|()| report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_policy_parses_and_markdown_renders() {
        let p = lab_policy(&tcp_policy()).expect("policy parses");
        assert_eq!(p.key.name, TCP_POLICY);
        let m = TcpMeasurement {
            system: "kernel-forward".into(),
            variant: String::new(),
            rules: 10,
            spec: TcpSpec::default(),
            secs: 1.0,
            attempted: 100,
            established: 99,
            failed: 1,
            timed_out: 0,
            accepted: 99,
            conns_per_sec: 99.0,
            connect_ns: LatencyFigures {
                p50: 40_000,
                p99: 90_000,
                ..LatencyFigures::default()
            },
        };
        let mut s = String::new();
        markdown(&[m], &mut s);
        assert!(
            s.contains("| kernel-forward | 10 | 99 | 40.0 | 90.0 |"),
            "{s}"
        );
    }
}
