//! `Snapshot::classify` and `Snapshot::classify_batch` against the plain way of deciding a
//! packet: `identity_of` for both addresses, the endpoint table for which directions to
//! enforce, then `decide`.
//!
//! `classify` takes the "is this a local endpoint" answer from a flag in the ipcache entry that
//! gives the identity, kept in step with the endpoint table by the writer. Random workloads
//! (local and remote, dual-stack, moving between nodes, reusing each other's addresses),
//! host entries with shorter prefixes over pod addresses, and refused endpoints exercise every
//! way the flag could go stale; every published state is checked on every address pair.

use std::collections::BTreeMap;
use std::net::IpAddr;

use identity_cache::identity::{ClusterKey, Identity};
use identity_cache::ipcache::{Owner, Source};
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{ParsedManifest, parse_manifest};
use identity_cache::protocol::Protocol;
use identity_cache::state::{
    Classification, Enforce, IdentityCache, LocalAttachment, PREFETCH_FROM, PacketKey, PeerRef,
    Snapshot, Workload,
};
use identity_cache::tables::EnforcementConfig;
use ipnet::IpNet;
use proptest::prelude::*;

/// Addresses the workloads draw from (a few per family, so that they collide often).
const ADDRESSES: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.1.4",
    "fd00::1",
    "fd00::2",
    "fd00::1:3",
];
/// Addresses that are never a workload's: inside a host prefix, inside a policy CIDR, outside.
const OTHERS: &[&str] = &[
    "10.0.2.9",
    "192.168.7.7",
    "8.8.8.8",
    "fd00::9:9",
    "2001:db8::5",
];
const APPS: &[&str] = &["web", "db", "cache"];
/// Host prefixes (with a reserved identity) that cover some workload addresses.
const HOST_PREFIXES: &[&str] = &["10.0.0.0/24", "10.0.0.2/32", "fd00::/112", "10.0.2.0/24"];

const POLICIES: &[&str] = &[
    r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: ns}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - fromCIDR: ["10.0.0.0/23"]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"#,
    r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: ns}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
  - toCIDRSet: [{cidr: "192.168.0.0/16", except: ["192.168.7.0/24"]}]
  egressDeny:
  - toEndpoints: [{matchLabels: {app: cache}}]
    toPorts: [{ports: [{port: "6379", protocol: TCP}]}]
"#,
    r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cache, namespace: ns}
spec:
  podSelector: {matchLabels: {app: cache}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    - ipBlock: {cidr: "fd00::/64"}
    ports: [{port: 6379}]
"#,
];

/// One step of the scenario.
#[derive(Clone, Debug)]
enum Op {
    /// Pod `pod` (0..6) with app `app`, addresses (indexes into [`ADDRESSES`]), local to this
    /// node or not (interface 100 + pod).
    Upsert {
        pod: usize,
        app: usize,
        ips: Vec<usize>,
        local: bool,
    },
    Remove(usize),
    Host(usize),
    RemoveHost(usize),
    Publish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..6, 0..APPS.len(), proptest::collection::vec(0..ADDRESSES.len(), 1..3), any::<bool>())
            .prop_map(|(pod, app, ips, local)| Op::Upsert { pod, app, ips, local }),
        2 => (0usize..6).prop_map(Op::Remove),
        1 => (0..HOST_PREFIXES.len()).prop_map(Op::Host),
        1 => (0..HOST_PREFIXES.len()).prop_map(Op::RemoveHost),
        1 => Just(Op::Publish),
    ]
}

fn workload(pod: usize, app: usize, ips: &[usize], local: bool) -> Workload {
    let labels = BTreeMap::from([("app".to_owned(), APPS[app].to_owned())]);
    let mut ips: Vec<IpAddr> = ips
        .iter()
        .map(|i| ADDRESSES[*i].parse().expect("address"))
        .collect();
    ips.sort();
    ips.dedup();
    Workload {
        uid: format!("pod-{pod}"),
        namespace: "ns".into(),
        name: format!("pod-{pod}"),
        labels: workload_labels(
            &WorkloadMeta {
                namespace: "ns",
                pod_labels: Some(&labels),
                namespace_labels: None,
                service_account: None,
                cluster: None,
            },
            &LabelFilter::default(),
        ),
        ips,
        named_ports: Vec::new(),
        // Pods alternate between two sources so that claims shadow one another.
        source: if pod.is_multiple_of(2) {
            Source::ApiServer
        } else {
            Source::Local
        },
        local: local.then(|| LocalAttachment {
            ifindex: 100 + pod as u32,
            mac: [2, 0, 0, 0, 0, pod as u8],
        }),
    }
}

/// What the plain path decides.
fn plain<'a>(
    s: &'a Snapshot,
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Classification<'a> {
    let source = PeerRef {
        identity: s.identity_of(src),
        ip: src,
    };
    let destination = PeerRef {
        identity: s.identity_of(dst),
        ip: dst,
    };
    let destination_endpoint = s.endpoints.by_ip(dst);
    let enforce = Enforce {
        egress: s.endpoints.by_ip(src).is_some(),
        ingress: destination_endpoint.is_some(),
    };
    Classification {
        source,
        destination,
        destination_endpoint,
        verdict: s.decide(source, destination, protocol, port, enforce),
    }
}

fn same(a: &Classification<'_>, b: &Classification<'_>) -> bool {
    a.source == b.source
        && a.destination == b.destination
        && a.destination_endpoint.map(|e| e.id) == b.destination_endpoint.map(|e| e.id)
        && a.verdict == b.verdict
}

fn check(s: &Snapshot, stage: &str) -> Result<(), TestCaseError> {
    let addresses: Vec<IpAddr> = ADDRESSES
        .iter()
        .chain(OTHERS)
        .map(|a| a.parse().expect("address"))
        .collect();
    let mut keys = Vec::new();
    for &src in &addresses {
        for &dst in &addresses {
            for (protocol, port) in [
                (Protocol::Tcp, 5432),
                (Protocol::Tcp, 6379),
                (Protocol::Tcp, 22),
            ] {
                let want = plain(s, src, dst, protocol, port);
                let got = s.classify(src, dst, protocol, port);
                prop_assert!(
                    same(&got, &want),
                    "[{stage}] {src} -> {dst} {protocol}/{port}: classify {got:?}, plain {want:?}"
                );
                keys.push(PacketKey {
                    src,
                    dst,
                    protocol,
                    port,
                });
            }
        }
    }
    let mut batch = Vec::new();
    s.classify_batch(&keys, &mut batch);
    prop_assert_eq!(batch.len(), keys.len());
    for (k, got) in keys.iter().zip(&batch) {
        let want = s.classify(k.src, k.dst, k.protocol, k.port);
        prop_assert!(same(got, &want), "[{stage}] batch differs for {k:?}");
    }
    Ok(())
}

fn run(ops: &[Op], cidr_selects_endpoints: bool) -> Result<(), TestCaseError> {
    let mut cache = IdentityCache::new(
        ClusterKey::default(),
        EnforcementConfig {
            cidr_selects_endpoints,
            ..EnforcementConfig::default()
        },
    );
    for text in POLICIES {
        match parse_manifest(text) {
            Ok(ParsedManifest::Policy(p)) => cache.upsert_policy(p),
            other => panic!("policy does not parse: {other:?}"),
        }
    }
    let mut published: Vec<Snapshot> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Upsert {
                pod,
                app,
                ips,
                local,
            } => {
                // Refusals (an address held by another local endpoint) change nothing.
                let _ = cache.upsert_workload(workload(*pod, *app, ips, *local));
            }
            Op::Remove(pod) => {
                cache.remove_workload(&format!("pod-{pod}"));
            }
            Op::Host(i) => {
                let prefix: IpNet = HOST_PREFIXES[*i].parse().expect("prefix");
                let owner = Owner::new(Source::File, format!("host-{i}"), "", "host");
                cache
                    .upsert_host(prefix, Identity::REMOTE_NODE, owner)
                    .expect("host entry");
            }
            Op::RemoveHost(i) => {
                let prefix: IpNet = HOST_PREFIXES[*i].parse().expect("prefix");
                cache.remove_host(prefix, &format!("host-{i}"));
            }
            Op::Publish => {
                cache.publish();
                published.push(cache.pending());
            }
        }
        check(&cache.pending(), &format!("after op {n} {op:?}"))?;
    }
    // Snapshots taken earlier still agree with themselves (the writer's later changes to the
    // flags never reach them).
    for (i, s) in published.iter().enumerate() {
        check(s, &format!("published snapshot {i}"))?;
    }
    // An endpoint table swapped in by hand: the flags no longer describe it, and classify
    // falls back to asking the table.
    if let (Some(first), Some(last)) = (published.first(), published.last()) {
        let mut mixed = last.clone();
        mixed.endpoints = first.endpoints.clone();
        check(&mixed, "endpoint table swapped")?;
        let mut mixed = first.clone();
        mixed.endpoints = last.endpoints.clone();
        check(&mixed, "endpoint table swapped back")?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn classify_matches_the_plain_path(
        ops in proptest::collection::vec(op(), 1..40),
        cidr_selects_endpoints in any::<bool>(),
    ) {
        run(&ops, cidr_selects_endpoints)?;
    }
}

#[test]
fn a_batch_longer_than_one_group_keeps_packet_order() {
    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    cache
        .upsert_workload(workload(0, 0, &[0, 4], true))
        .expect("web");
    cache
        .upsert_workload(workload(1, 1, &[1, 5], false))
        .expect("db");
    for text in POLICIES {
        if let Ok(ParsedManifest::Policy(p)) = parse_manifest(text) {
            cache.upsert_policy(p);
        }
    }
    let s = cache.pending();
    let addresses: Vec<IpAddr> = ADDRESSES
        .iter()
        .chain(OTHERS)
        .map(|a| a.parse().expect("address"))
        .collect();
    let keys: Vec<PacketKey> = (0..100)
        .map(|i| PacketKey {
            src: addresses[i % addresses.len()],
            dst: addresses[(i * 7 + 3) % addresses.len()],
            protocol: Protocol::Tcp,
            port: [5432, 22, 6379][i % 3],
        })
        .collect();
    let mut out = vec![s.classify(addresses[0], addresses[1], Protocol::Udp, 53)];
    s.classify_batch(&keys, &mut out);
    assert_eq!(out.len(), 101, "appends");
    for (k, got) in keys.iter().zip(&out[1..]) {
        assert!(same(got, &s.classify(k.src, k.dst, k.protocol, k.port)));
    }
}

/// The prefetching path of `classify_batch` (a large ipcache) decides exactly as `classify`.
#[test]
fn a_large_ipcache_batch_prefetches_and_decides_the_same() {
    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    for text in POLICIES {
        if let Ok(ParsedManifest::Policy(p)) = parse_manifest(text) {
            cache.upsert_policy(p);
        }
    }
    for pod in 0..6 {
        let ips = [pod % ADDRESSES.len(), (pod + 4) % ADDRESSES.len()];
        let _ = cache.upsert_workload(workload(pod, pod % APPS.len(), &ips, pod % 3 != 1));
    }
    let mut extra = Vec::new();
    for i in 0..PREFETCH_FROM as u32 / 2 + 1 {
        for ip in [
            IpAddr::from((0x0a10_0000u32 + i).to_be_bytes()),
            IpAddr::from((0xfd01_u128 << 112 | u128::from(i)).to_be_bytes()),
        ] {
            let owner = Owner::new(Source::ApiServer, format!("host-{i}"), "", "host");
            cache
                .upsert_host(IpNet::from(ip), Identity::REMOTE_NODE, owner)
                .expect("host entry");
            extra.push(ip);
        }
    }
    cache.publish();
    let s = cache.pending();
    assert!(s.ipcache.len() >= PREFETCH_FROM);
    let addresses: Vec<IpAddr> = ADDRESSES
        .iter()
        .chain(OTHERS)
        .map(|a| a.parse().expect("address"))
        .chain(extra.iter().step_by(997).copied())
        .collect();
    let mut keys = Vec::new();
    for &src in &addresses {
        for &dst in &addresses {
            for port in [5432, 6379, 22] {
                keys.push(PacketKey {
                    src,
                    dst,
                    protocol: Protocol::Tcp,
                    port,
                });
            }
        }
    }
    let mut out = Vec::new();
    s.classify_batch(&keys, &mut out);
    assert_eq!(out.len(), keys.len());
    for (k, got) in keys.iter().zip(&out) {
        let want = plain(&s, k.src, k.dst, k.protocol, k.port);
        assert!(same(got, &want), "{k:?}: batch {got:?}, plain {want:?}");
    }
}
