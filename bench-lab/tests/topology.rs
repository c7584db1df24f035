//! Builds a small lab topology (two generator pods, two queues per veth, a sink), checks its
//! interfaces, routes and NAPI kthreads, tears it down, and checks that no namespace with the
//! lab's prefix is left behind, also after a panic inside a lab scope.
//!
//! Needs root (namespaces, sysfs); skipped with a message otherwise.

mod common;

use bench_lab::topology::{Topology, TopologyConfig};

#[test]
fn a_topology_is_built_and_leaves_nothing_behind() {
    if !common::privileged("to create namespaces") {
        return;
    }
    {
        let t = Topology::build(TopologyConfig {
            gen_pods: 2,
            queues: 2,
            src_ips: 4,
            ..TopologyConfig::default()
        })
        .expect("topology");
        assert_eq!(
            common::ours().len(),
            4,
            "node, two generator pods and the sink: {:?}",
            common::ours()
        );
        assert_eq!(t.gens.len(), 2);
        assert_eq!(t.gens[1].v4.len(), 4);
        assert_eq!(t.node_devs().len(), 3);
        // Every pod address is routed to its pod's veth in the node.
        let routes = t.node.ip(&["route", "show"]).expect("routes");
        for pod in t.gens.iter().chain(std::iter::once(&t.sink)) {
            for a in &pod.v4 {
                assert!(
                    routes.contains(&format!("{a} dev {}", pod.host_dev)),
                    "{a} via {} in {routes}",
                    pod.host_dev
                );
            }
        }
        // Two queues: numrxqueues took effect on the node side.
        let rx = t
            .node
            .exec(&[
                "ls",
                &format!("/sys/class/net/{}/queues", t.gens[0].host_dev),
            ])
            .expect("queues");
        assert_eq!(
            rx.lines().filter(|l| l.starts_with("rx-")).count(),
            2,
            "{rx}"
        );
        let napi = t.place_napi(None).expect("NAPI kthreads");
        assert!(
            !napi.is_empty(),
            "threaded NAPI kthreads exist for the node's veths"
        );
        t.set_forwarding(true).expect("forwarding on");
        t.set_forwarding(false).expect("forwarding off");
    }
    assert!(
        common::ours().is_empty(),
        "left behind: {:?}",
        common::ours()
    );

    // A panic while the topology is up unwinds through its guards.
    let result = std::panic::catch_unwind(|| {
        let _t = Topology::build(TopologyConfig::default()).expect("topology");
        panic!("a failing lab step");
    });
    assert!(result.is_err());
    assert!(
        common::ours().is_empty(),
        "left behind after a panic: {:?}",
        common::ours()
    );
}
