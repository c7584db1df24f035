//! The generators and the update storm, end to end on a real lab topology: the AF_XDP TX
//! generator's frames reach the sink in sequence; the TCP generator completes handshakes
//! through kernel forwarding; the update storm applies pod changes to sluice-kernel during
//! traffic with no verdict error.
//!
//! Needs root (namespaces, BPF, AF_XDP); skipped with a message otherwise. Every lab is torn
//! down by its guards on every exit path (the test checks that no namespace is left); every
//! run is bounded by count and time.

mod common;

use bench_lab::generator::TrafficSpec;
use bench_lab::scenario::{Lab, LabConfig};
use bench_lab::storm::{self, StormSpec};
use bench_lab::systems::System;
use bench_lab::systems::kernel::KernelForward;
use bench_lab::systems::sluice::{SluiceKernel, SluiceState};
use bench_lab::tcp_gen::{self, TcpSpec};
use bench_lab::topology::TopologyConfig;

/// The tests share the process's namespace prefix: one lab at a time.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lab(gen_pods: usize) -> Lab {
    Lab::new(LabConfig {
        topology: TopologyConfig {
            gen_pods,
            ..TopologyConfig::default()
        },
        ..LabConfig::default()
    })
    .expect("lab")
}

#[test]
fn the_afxdp_generator_delivers_sequenced_frames_the_sink_counts() {
    if !common::privileged("(namespaces, BPF, AF_XDP)") {
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    {
        let lab = lab(1);
        let mut system = KernelForward;
        let spec = TrafficSpec::few_small(Some(20_000.0));
        system.setup(&lab.topology, 0, &spec).expect("forwarding");
        let common::Sent {
            state,
            sink0,
            got,
            seq0,
            copy_mode,
        } = common::send_afxdp(&lab, &spec, 2_000);
        system.teardown(&lab.topology).expect("teardown");
        assert!(copy_mode, "veth has copy mode only");
        assert!(got.lab >= 2_000, "the sink counted {} lab frames", got.lab);
        assert_eq!(state.seq - seq0, state.sent, "every stamped frame was sent");
        assert!(
            got.lab <= state.sent,
            "{} received of {} sent",
            got.lab,
            state.sent
        );
        assert_eq!(got.reordered, 0, "sequence numbers arrive in order");
        assert!(
            got.max_seq > 0 && got.max_seq <= state.seq - sink0.max_seq,
            "the sink's highest sequence number is one the generator sent"
        );
        assert_eq!(got.ttl_intact, 0, "kernel forwarding decremented every TTL");
        let hist = bench_lab::generator::latency_histogram(&got.latency);
        assert_eq!(hist.len(), got.lab, "every frame carried a send time");
        let by_src = lab.programs.sink_by_source().expect("per source");
        assert!(by_src[lab.topology.gens[0].v4[0].octets()[3] as usize] >= got.lab);
    }
    assert!(
        common::ours().is_empty(),
        "left behind: {:?}",
        common::ours()
    );
}

#[test]
fn the_tcp_generator_completes_connections_through_kernel_forwarding() {
    if !common::privileged("(namespaces)") {
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    {
        let lab = lab(1);
        tcp_gen::full_checksums(&lab.topology).expect("checksum offload off");
        let spec = TcpSpec {
            max_connections: 500,
            secs: 5.0,
            concurrency: 2,
            connect_timeout_ms: 1_000,
        };
        let m = tcp_gen::measure(&lab, &mut KernelForward, 0, &spec).expect("measured");
        assert_eq!(m.attempted, 500, "bounded by the count: {m:?}");
        assert_eq!(m.failed, 0, "{m:?}");
        assert_eq!(m.established, 500);
        assert_eq!(m.accepted, 500, "the server accepted each one");
        assert!(m.connect_ns.p50 > 0 && m.connect_ns.p99 >= m.connect_ns.p50);
        assert!(m.conns_per_sec > 0.0);
        // The system was torn down: forwarding is off again, so nothing connects.
        let off = tcp_gen::measure_without_setup(
            &lab,
            &TcpSpec {
                max_connections: 1,
                connect_timeout_ms: 200,
                ..spec
            },
        )
        .expect("measured");
        assert_eq!((off.established, off.failed), (0, 1), "{off:?}");
    }
    assert!(
        common::ours().is_empty(),
        "left behind: {:?}",
        common::ours()
    );
}

#[test]
fn an_update_storm_on_sluice_kernel_makes_no_verdict_error() {
    if !common::privileged("(namespaces, BPF, AF_XDP)") {
        return;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    {
        let lab = lab(2);
        let state = SluiceState::shared(1_000).expect("state");
        let mut system = SluiceKernel::new(state);
        let spec = StormSpec {
            rules: 100,
            rate: 1_000.0,
            secs: 1.5,
            before_secs: 1.0,
            window: 100,
            allowed_pps: 20_000.0,
            denied_pps: 5_000.0,
            updater_cpu: None,
        };
        let r = storm::run(&lab, &mut system, &spec, 1_000);
        system.shutdown();
        let r = r.expect("storm");
        assert!(r.updates > 0 && r.batches > 0, "{r:?}");
        assert!(r.adds > 0 && r.adds < r.updates, "adds and removes: {r:?}");
        assert!(r.denied_sent > 0 && r.allowed_sent > 0, "{r:?}");
        assert!(r.allowed_received > 0, "allowed traffic flowed: {r:?}");
        assert!(
            r.dataplane_drops >= r.denied_sent.min(1),
            "the denied pod's frames were dropped by policy: {r:?}"
        );
        assert_eq!(r.denied_delivered, 0, "{r:?}");
        assert_eq!(r.verdict_errors, 0, "{r:?}");
    }
    assert!(
        common::ours().is_empty(),
        "left behind: {:?}",
        common::ours()
    );
}
