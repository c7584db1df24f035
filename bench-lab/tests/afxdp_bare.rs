//! The plain AF_XDP forwarder (`afxdp-bare`), end to end on a real lab topology: frames from
//! the generator reach the sink through its sockets, in order and untouched but for their MAC
//! addresses, nothing is lost at the socket, and teardown leaves the node as it found it.
//!
//! Needs root (namespaces, BPF, AF_XDP); skipped with a message otherwise. The lab is torn down
//! by its guards on every exit path (the test checks that no namespace is left); the run is
//! bounded by count and time.

mod common;

use bench_lab::generator::TrafficSpec;
use bench_lab::scenario::{Lab, LabConfig};
use bench_lab::systems::System;
use bench_lab::systems::afxdp_bare::AfxdpBare;

#[test]
fn the_bare_forwarder_delivers_every_frame_in_order_through_its_sockets() {
    if !common::privileged("(namespaces, BPF, AF_XDP)") {
        return;
    }
    {
        let lab = Lab::new(LabConfig::default()).expect("lab");
        let mut system = AfxdpBare::new(lab.config.topology.node_cpu);
        let spec = TrafficSpec::few_small(Some(20_000.0));
        // Measurements follow each other: a setup right after a teardown finds the queues
        // the closed sockets held released (or waits until they are).
        for round in 0..2 {
            system
                .setup(&lab.topology, 0, &spec)
                .unwrap_or_else(|e| panic!("setup {round}: sockets bound, lab_xsk attached: {e}"));
            if round == 0 {
                system.teardown(&lab.topology).expect("first teardown");
            }
        }
        system.begin_period().expect("period");
        let common::Sent { state, got, .. } = common::send_afxdp(&lab, &spec, 2_000);
        let extras = system.end_period().expect("period");
        let node_dev = lab.topology.gens[0].host_dev.clone();
        system.teardown(&lab.topology).expect("teardown");
        let after = lab
            .topology
            .node
            .ip(&["link", "show", &node_dev])
            .expect("node veth");
        system.shutdown();

        assert!(got.lab >= 2_000, "the sink counted {} lab frames", got.lab);
        assert_eq!(
            got.lab, state.sent,
            "every frame the generator sent at 20 kpps was forwarded"
        );
        assert_eq!(got.reordered, 0, "sequence numbers arrive in order");
        assert_eq!(
            got.ttl_intact, got.lab,
            "the forwarder rewrites MACs only: every TTL arrives as sent"
        );
        assert_eq!(extras.socket_lost, Some(0), "nothing lost at the socket");
        assert!(
            extras.counters["bare_forwarded"] >= got.lab,
            "the forwarder counted {} of the {} frames the sink saw",
            extras.counters["bare_forwarded"],
            got.lab
        );
        assert!(!after.contains("xdp"), "teardown detached lab_xsk: {after}");
    }
    assert!(
        common::ours().is_empty(),
        "left behind: {:?}",
        common::ours()
    );
}
