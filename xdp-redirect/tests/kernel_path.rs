//! The in-kernel path with real packets: two pods on veth pairs into a node namespace, the
//! steering program attached to both host-side veths, policy synced from identity-cache.
//!
//! Needs root (namespaces, BPF); skipped with a message otherwise.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use identity_cache::endpoint::NamedPort;
use identity_cache::identity::ClusterKey;
use identity_cache::ipcache::Source;
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{ParsedManifest, parse_manifest};
use identity_cache::state::{IdentityCache, LocalAttachment, Workload};
use identity_cache::tables::EnforcementConfig;
use identity_cache::verdict::DropReason;
use support::Pod;
use xdp_redirect::abi::{CNT_KERNEL_PASS, CNT_KERNEL_REDIRECT, CNT_NON_IP};
use xdp_redirect::ipcache_map::InterfaceFacts;
use xdp_redirect::loader::{DatapathSettings, Dataplane, SyncStats};

struct Facts(BTreeMap<u32, [u8; 6]>);

impl InterfaceFacts for Facts {
    fn host_mac(&self, ifindex: u32) -> [u8; 6] {
        self.0.get(&ifindex).copied().unwrap_or_default()
    }
    fn kernel_mode(&self, _ifindex: u32) -> bool {
        false
    }
}

fn workload(pod: &Pod, name: &str, app: &str) -> Workload {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    Workload {
        uid: format!("uid-{name}"),
        namespace: "t".into(),
        name: name.into(),
        labels: workload_labels(
            &WorkloadMeta {
                namespace: "t",
                pod_labels: Some(&labels),
                ..WorkloadMeta::default()
            },
            &LabelFilter::default(),
        ),
        ips: vec![pod.ip.into()],
        named_ports: Vec::<NamedPort>::new(),
        source: Source::Local,
        local: Some(LocalAttachment {
            ifindex: pod.host_ifindex,
            mac: pod.mac,
        }),
    }
}

const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-a, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: \"5000\", protocol: UDP}, {port: \"8080\", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: a}}]
    icmps: [{fields: [{type: 8}]}]
";

/// Sends one UDP datagram from `from` to `to:port` and reports whether it arrived.
fn udp_delivered(from: &Pod, to: &Pod, port: u16) -> bool {
    udp_delivered_from(from, 0, to, port)
}

/// Sends one UDP datagram from `from`'s source port `sport` (0: any) to `to:port` and reports
/// whether it arrived. With a fixed `sport`, every call sends a packet of the same flow.
fn udp_delivered_from(from: &Pod, sport: u16, to: &Pod, port: u16) -> bool {
    let dst = SocketAddrV4::new(to.ip, port);
    let src_ip = from.ip;
    let receiver = {
        let path = to.ns.name.clone();
        std::thread::spawn(move || {
            support::in_netns(&path, move || {
                let sock = support::bind_udp(dst);
                sock.set_read_timeout(Some(Duration::from_millis(700)))
                    .expect("timeout");
                let mut buf = [0u8; 64];
                sock.recv_from(&mut buf)
                    .is_ok_and(|(n, _)| &buf[..n] == b"sluice")
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    from.ns.run(move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(src_ip, sport)).expect("bind");
        sock.send_to(b"sluice", dst).expect("send");
    });
    receiver.join().expect("receiver")
}

fn tcp_connects(from: &Pod, to: &Pod, port: u16) -> bool {
    let dst = SocketAddrV4::new(to.ip, port);
    let listener = {
        let path = to.ns.name.clone();
        std::thread::spawn(move || {
            support::in_netns(&path, move || {
                let l = support::bind_tcp(dst);
                l.set_nonblocking(true).expect("nonblocking");
                support::wait_for(Duration::from_millis(1500), || l.accept().ok()).is_some()
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let connected = from
        .ns
        .run(move || TcpStream::connect_timeout(&dst.into(), Duration::from_millis(700)).is_ok());
    let accepted = listener.join().expect("listener");
    connected && accepted
}

fn ping(from: &Pod, to: Ipv4Addr) -> bool {
    from.ns
        .exec(&["ping", "-c", "1", "-W", "1", &to.to_string()])
        .status
        .success()
}

#[test]
fn kernel_path_enforces_policy_with_real_packets() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces and load BPF");
        return;
    }
    support::ensure_bpffs();
    let node = support::node();
    let a = Pod::attach(&node, 1);
    let b = Pod::attach(&node, 2);
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-test-")));
    let _pins = support::RemoveDir(pin_dir.clone());

    // Without the program: plain forwarding works both ways.
    assert!(udp_delivered(&a, &b, 5001), "baseline forwarding");

    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    cache.upsert_workload(workload(&a, "a", "a")).expect("a");
    cache.upsert_workload(workload(&b, "b", "b")).expect("b");
    match parse_manifest(POLICY).expect("policy") {
        ParsedManifest::Policy(p) => cache.upsert_policy(p),
        ParsedManifest::Empty => unreachable!("policy text is not empty"),
    }
    let snapshot = cache.pending();
    let facts = Facts(BTreeMap::from([
        (a.host_ifindex, a.host_mac),
        (b.host_ifindex, b.host_mac),
    ]));
    let (ai, bi) = (a.host_ifindex, b.host_ifindex);
    let settings = DatapathSettings {
        events_per_sec: 10_000,
        ..DatapathSettings::default()
    };
    let mut plane = node.run({
        let pin_dir = pin_dir.clone();
        move || {
            let mut plane = Dataplane::open(&pin_dir, settings).expect("load");
            plane.sync(&snapshot, &facts).expect("sync");
            let mode = plane.attach(ai).expect("attach a");
            plane.attach(bi).expect("attach b");
            eprintln!("attached in {mode} mode");
            plane
        }
    });
    let mut events = plane.take_events().expect("events").expect("ring");

    assert!(udp_delivered(&a, &b, 5000), "allowed UDP is delivered");
    assert!(
        !udp_delivered(&a, &b, 5001),
        "UDP to another port is dropped"
    );
    assert!(
        tcp_connects(&a, &b, 8080),
        "allowed TCP connects (replies pass: b's egress is open)"
    );
    assert!(
        !tcp_connects(&a, &b, 8081),
        "TCP to another port is refused"
    );
    assert!(ping(&a, b.ip), "allowed ICMP echo");
    assert!(ping(&b, a.ip), "b -> a is not enforced");

    // A permitted packet for a destination that is not a local endpoint (here the node's own
    // address) is passed to the kernel stack, which delivers it.
    let before_pass = plane.counters().expect("counters").packets(CNT_KERNEL_PASS);
    let gateway = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1), 6000);
    let node_rx = {
        let path = node.name.clone();
        std::thread::spawn(move || {
            support::in_netns(&path, move || {
                let sock = support::bind_udp(gateway);
                sock.set_read_timeout(Some(Duration::from_millis(700)))
                    .expect("timeout");
                let mut buf = [0u8; 64];
                sock.recv_from(&mut buf)
                    .is_ok_and(|(n, _)| &buf[..n] == b"to-node")
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let a_ip = a.ip;
    a.ns.run(move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(a_ip, 0)).expect("bind");
        sock.send_to(b"to-node", gateway).expect("send");
    });
    assert!(
        node_rx.join().expect("node receiver"),
        "pod -> node passed to the stack"
    );
    assert!(
        plane.counters().expect("counters").packets(CNT_KERNEL_PASS) > before_pass,
        "counted as allowed in the kernel and passed"
    );

    let counters = plane.counters().expect("counters");
    assert!(
        counters.packets(CNT_KERNEL_REDIRECT) > 0,
        "allowed pod-to-pod traffic was redirected: {counters:?}"
    );
    assert!(
        counters.dropped(DropReason::PolicyDenied) >= 2,
        "drops counted: {counters:?}"
    );
    assert!(counters.packets(CNT_NON_IP) > 0, "ARP passed untouched");
    let mut drop_events = Vec::new();
    while let Some(e) = events.next_event() {
        if e.drop_reason().is_some() {
            drop_events.push(e);
        }
    }
    assert!(
        drop_events
            .iter()
            .any(|e| e.dst_port == 5001 && e.drop_reason() == Some(DropReason::PolicyDenied)),
        "a drop event names the port and reason: {drop_events:?}"
    );

    node.run(move || plane.destroy().expect("destroy"));
    assert!(
        udp_delivered(&a, &b, 5001),
        "detached: forwarding is plain again"
    );
}

/// `POLICY` with UDP 5001 allowed instead of 5000 (same name: it replaces `POLICY`).
const POLICY_5001: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-a, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: \"5001\", protocol: UDP}, {port: \"8080\", protocol: TCP}]}]
";

fn upsert_policy(cache: &mut IdentityCache, manifest: &str) {
    match parse_manifest(manifest).expect("policy") {
        ParsedManifest::Policy(p) => cache.upsert_policy(p),
        ParsedManifest::Empty => unreachable!("policy text is not empty"),
    }
}

/// The program caches each flow's verdict (bpf/flowcache.h) under the config generation that
/// `sync` and `set_settings` bump: a policy change reaches flows already decided at their next
/// packet, both ways. (These packets are too far apart to be sure each meets its flow's cached
/// verdict rather than a revalidation; prog_test_run.py checks the hits themselves.)
#[test]
fn a_policy_change_reaches_flows_whose_verdicts_are_cached() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces and load BPF");
        return;
    }
    support::ensure_bpffs();
    let node = support::node();
    let a = Pod::attach(&node, 1);
    let b = Pod::attach(&node, 2);
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-test-")));
    let _pins = support::RemoveDir(pin_dir.clone());

    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    cache.upsert_workload(workload(&a, "a", "a")).expect("a");
    cache.upsert_workload(workload(&b, "b", "b")).expect("b");
    upsert_policy(&mut cache, POLICY);
    let snapshot = cache.pending();
    let facts = Facts(BTreeMap::from([
        (a.host_ifindex, a.host_mac),
        (b.host_ifindex, b.host_mac),
    ]));
    let (ai, bi) = (a.host_ifindex, b.host_ifindex);
    let (mut plane, facts) = node.run({
        let pin_dir = pin_dir.clone();
        move || {
            let mut plane = Dataplane::open(&pin_dir, DatapathSettings::default()).expect("load");
            plane.sync(&snapshot, &facts).expect("sync");
            plane.attach(ai).expect("attach a");
            plane.attach(bi).expect("attach b");
            (plane, facts)
        }
    });

    // Several packets of two flows, decided once and then (mostly) from the cache.
    for i in 0..3 {
        assert!(
            udp_delivered_from(&a, 40000, &b, 5000),
            "allowed flow, packet {i}"
        );
        assert!(
            !udp_delivered_from(&a, 40001, &b, 5001),
            "denied flow, packet {i}"
        );
    }
    let generation = plane.generation();
    let snapshot = cache.pending();
    let (mut plane, facts) = node.run(move || {
        let stats = plane.sync(&snapshot, &facts).expect("sync");
        assert_eq!(stats, SyncStats::default(), "nothing changed");
        (plane, facts)
    });
    assert_eq!(
        plane.generation(),
        generation,
        "a sync that writes nothing keeps the generation (and the cached verdicts)"
    );

    // 5000 revoked, 5001 allowed: the sync bumps the generation after writing the maps.
    upsert_policy(&mut cache, POLICY_5001);
    let snapshot = cache.pending();
    let mut plane = node.run(move || {
        plane.sync(&snapshot, &facts).expect("sync");
        plane
    });
    assert!(
        plane.generation() > generation,
        "the sync bumped the generation"
    );
    assert!(
        !udp_delivered_from(&a, 40000, &b, 5000),
        "the cached allow is gone at the flow's next packet"
    );
    assert!(
        udp_delivered_from(&a, 40001, &b, 5001),
        "the cached drop is gone at the flow's next packet"
    );
    let counters = plane.counters().expect("counters");
    assert!(
        counters.dropped(DropReason::PolicyDenied) >= 4,
        "every denied packet counted, cached or not: {counters:?}"
    );
    let generation = plane.generation();
    plane
        .set_settings(DatapathSettings {
            events_per_sec: 5,
            ..DatapathSettings::default()
        })
        .expect("settings");
    assert!(plane.generation() > generation, "set_settings bumps it too");
    // Another loader on the same pins goes on from the generation it finds there.
    let generation = plane.generation();
    let second = node.run(move || Dataplane::open(&pin_dir, DatapathSettings::default()));
    assert!(
        second.expect("reopen").generation() > generation,
        "a reopened loader never reuses a generation"
    );
    node.run(move || plane.destroy().expect("destroy"));
}

#[test]
fn a_restarted_loader_readopts_pinned_state_and_enforcement_never_lapses() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces and load BPF");
        return;
    }
    support::ensure_bpffs();
    let node = support::node();
    let a = Pod::attach(&node, 1);
    let b = Pod::attach(&node, 2);
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-test-")));
    let _pins = support::RemoveDir(pin_dir.clone());

    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    cache.upsert_workload(workload(&a, "a", "a")).expect("a");
    cache.upsert_workload(workload(&b, "b", "b")).expect("b");
    match parse_manifest(POLICY).expect("policy") {
        ParsedManifest::Policy(p) => cache.upsert_policy(p),
        ParsedManifest::Empty => unreachable!("policy text is not empty"),
    }
    let snapshot = cache.pending();
    let facts = Facts(BTreeMap::from([
        (a.host_ifindex, a.host_mac),
        (b.host_ifindex, b.host_mac),
    ]));
    let (ai, bi) = (a.host_ifindex, b.host_ifindex);
    // First loader: sync, attach, then exit without detaching (a crash or an upgrade).
    node.run({
        let pin_dir = pin_dir.clone();
        move || {
            let mut plane = Dataplane::open(&pin_dir, DatapathSettings::default()).expect("load");
            plane.sync(&snapshot, &facts).expect("sync");
            plane.attach(ai).expect("attach a");
            plane.attach(bi).expect("attach b");
            drop(plane);
        }
    });
    // No loader runs: the pinned links and maps keep enforcing.
    assert!(udp_delivered(&a, &b, 5000), "allowed while no loader runs");
    assert!(!udp_delivered(&a, &b, 5001), "denied while no loader runs");

    // A second process re-adopts maps and links (swapping its program in atomically).
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.name))
        .arg(env!("CARGO_BIN_EXE_sluice-xdp"))
        .args(["attach", "--pin-dir"])
        .arg(&pin_dir)
        .args([ai.to_string(), bi.to_string()])
        .output()
        .expect("run sluice-xdp");
    assert!(
        out.status.success(),
        "second loader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("attached"), "{text}");

    assert!(udp_delivered(&a, &b, 5000), "allowed after re-adoption");
    assert!(
        !udp_delivered(&a, &b, 5001),
        "still denied after re-adoption: maps kept their contents"
    );
    let counters = node.run({
        let pin_dir = pin_dir.clone();
        move || {
            let plane = Dataplane::open(&pin_dir, DatapathSettings::default()).expect("reopen");
            let counters = plane.counters().expect("counters");
            let mut plane = plane;
            plane.attach(ai).expect("adopt a");
            plane.attach(bi).expect("adopt b");
            plane.destroy().expect("destroy");
            counters
        }
    });
    assert!(
        counters.dropped(DropReason::PolicyDenied) >= 2,
        "the pinned counters span both loaders: {counters:?}"
    );
    assert!(
        udp_delivered(&a, &b, 5001),
        "destroyed: plain forwarding again"
    );
}
