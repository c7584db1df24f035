//! The identity-cache showcase: a small shop cluster, its policies, and the verdicts sluice's
//! core derives — with the rule that decided each one, an IP reused by a pod with another
//! identity, and a revocation barrier with a live reader thread.
//!
//! `cargo run --release -p identity-cache --example showcase`

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use identity_cache::endpoint::NamedPort;
use identity_cache::identity::{ClusterKey, Identity};
use identity_cache::ipcache::Source;
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{Action, ParsedManifest, parse_manifests};
use identity_cache::protocol::Protocol;
use identity_cache::state::{IdentityCache, LocalAttachment, Snapshot, Workload};
use identity_cache::tables::EnforcementConfig;

const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api-from-web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: data}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: shop}}
      podSelector: {matchLabels: {app: api}}
    ports: [{port: pg}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-telnet-anywhere}
spec:
  endpointSelector: {}
  enableDefaultDeny: {egress: false}
  egressDeny:
  - toPorts: [{ports: [{port: "23", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
  - toCIDRSet: [{cidr: 203.0.113.0/24, except: [203.0.113.66/32]}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: app, operator: Maybe}]}]
"#;

struct Pod {
    uid: &'static str,
    ns: &'static str,
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    ip: &'static str,
    ports: &'static [(&'static str, u16)],
}

const PODS: &[Pod] = &[
    Pod {
        uid: "u-web-1",
        ns: "shop",
        name: "web-7c9f",
        labels: &[("app", "web"), ("pod-template-hash", "7c9f")],
        ip: "10.0.1.10",
        ports: &[],
    },
    Pod {
        uid: "u-web-2",
        ns: "shop",
        name: "web-5d2a",
        labels: &[("app", "web"), ("pod-template-hash", "5d2a")],
        ip: "10.0.1.11",
        ports: &[],
    },
    Pod {
        uid: "u-api-1",
        ns: "shop",
        name: "api-6b1e",
        labels: &[("app", "api")],
        ip: "10.0.1.20",
        ports: &[("http", 8080)],
    },
    Pod {
        uid: "u-db-1",
        ns: "data",
        name: "db-0",
        labels: &[("app", "db")],
        ip: "10.0.2.30",
        ports: &[("pg", 5432)],
    },
    Pod {
        uid: "u-tool",
        ns: "ops",
        name: "toolbox",
        labels: &[("app", "api")],
        ip: "10.0.3.40",
        ports: &[],
    },
];

fn namespaces() -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let team = |t: &str| BTreeMap::from([("team".to_owned(), t.to_owned())]);
    BTreeMap::from([
        ("shop", team("shop")),
        ("data", team("data")),
        ("ops", team("ops")),
    ])
}

fn workload(pod: &Pod, ifindex: u32) -> Workload {
    let ns_labels = namespaces();
    let pod_labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let labels = workload_labels(
        &WorkloadMeta {
            namespace: pod.ns,
            pod_labels: Some(&pod_labels),
            namespace_labels: ns_labels.get(pod.ns),
            service_account: Some("default"),
            cluster: Some("demo"),
        },
        &LabelFilter::default(),
    );
    Workload {
        uid: pod.uid.to_owned(),
        namespace: pod.ns.to_owned(),
        name: pod.name.to_owned(),
        labels,
        ips: vec![pod.ip.parse().expect("literal address")],
        named_ports: pod
            .ports
            .iter()
            .map(|(n, p)| NamedPort {
                name: n.to_string(),
                port: *p,
                protocol: Protocol::Tcp,
            })
            .collect(),
        source: Source::ApiServer,
        local: Some(LocalAttachment {
            ifindex,
            mac: [0x02, 0, 0, 0, 0, ifindex as u8],
        }),
    }
}

fn show(snapshot: &Snapshot, from: &str, to: &str, protocol: Protocol, port: u16) {
    let src: IpAddr = from.parse().expect("literal address");
    let dst: IpAddr = to.parse().expect("literal address");
    let c = snapshot.classify(src, dst, protocol, port);
    let name = |ip: IpAddr, id: Identity| match snapshot
        .ipcache
        .lookup(ip)
        .and_then(|h| snapshot.ipcache.owner(h.owner))
    {
        Some(o) => format!("{}/{} (id {})", o.namespace, o.name, short(id)),
        None => format!("{ip} (id {})", short(id)),
    };
    let v = c.verdict;
    let rule = v
        .deciding()
        .and_then(|d| d.rule)
        .and_then(|r| snapshot.policy.rule(r))
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".to_owned());
    let kind = v.deciding().map(|d| d.match_kind.name()).unwrap_or("NONE");
    let what = match v.action {
        Action::Allow => "FORWARDED".to_owned(),
        Action::Deny => format!(
            "DROPPED ({})",
            v.drop_reason.map(|r| r.name()).unwrap_or("-")
        ),
    };
    println!(
        "  {:<34} -> {:<34} {:>5}/{:<4} {:<32} by {} [{}]",
        name(src, c.source.identity),
        name(dst, c.destination.identity),
        port,
        protocol.name(),
        what,
        rule,
        kind
    );
}

fn short(id: Identity) -> String {
    let s = id.to_string();
    if s.len() > 8 {
        format!("{}…", &s[..8])
    } else {
        s
    }
}

fn main() {
    let mut cache = IdentityCache::new(
        ClusterKey::from_secret(b"showcase"),
        EnforcementConfig::default(),
    );
    println!("== policies");
    for parsed in parse_manifests(POLICIES) {
        match parsed {
            Ok(ParsedManifest::Policy(p)) => {
                println!("  accepted {} ({} rules)", p.key, p.rules.len());
                cache.upsert_policy(p);
            }
            Ok(ParsedManifest::Empty) => {}
            Err(e) => println!("  rejected {e}"),
        }
    }
    println!(
        "== workloads and their identities (noise labels like pod-template-hash are filtered)"
    );
    for (i, pod) in PODS.iter().enumerate() {
        match cache.upsert_workload(workload(pod, 10 + i as u32)) {
            Ok(id) => println!(
                "  {}/{:<10} {:<10} identity {}",
                pod.ns, pod.name, pod.ip, id
            ),
            Err(e) => println!("  {}/{}: {e}", pod.ns, pod.name),
        }
    }
    let generation = cache.publish();
    let snapshot = cache.pending();
    println!("== verdicts (generation {})", generation.0);
    show(&snapshot, "10.0.1.10", "10.0.1.20", Protocol::Tcp, 8080);
    show(&snapshot, "10.0.1.11", "10.0.1.20", Protocol::Tcp, 9090);
    show(&snapshot, "10.0.3.40", "10.0.1.20", Protocol::Tcp, 8080);
    show(&snapshot, "10.0.1.20", "10.0.2.30", Protocol::Tcp, 5432);
    show(&snapshot, "10.0.3.40", "10.0.2.30", Protocol::Tcp, 5432);
    show(&snapshot, "10.0.1.10", "203.0.113.5", Protocol::Tcp, 443);
    show(&snapshot, "10.0.1.10", "203.0.113.66", Protocol::Tcp, 443);
    show(&snapshot, "10.0.1.20", "198.51.100.1", Protocol::Tcp, 23);
    show(&snapshot, "10.0.2.30", "10.0.1.20", Protocol::Tcp, 8080);

    println!(
        "== IP reuse: db-0 dies, a toolbox pod gets 10.0.2.30, then db-0's late delete arrives"
    );
    let reader = cache.reader("worker-0");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        let mut reader = reader;
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let snap = reader.begin_batch();
                let src: IpAddr = "10.0.1.20".parse().expect("literal");
                let dst: IpAddr = "10.0.2.30".parse().expect("literal");
                std::hint::black_box(snap.classify(src, dst, Protocol::Tcp, 5432));
                batches += 1;
            }
            batches
        })
    };
    let mut reuse = workload(&PODS[4], 30);
    reuse.uid = "u-tool-2".into();
    reuse.name = "toolbox-2".into();
    reuse.ips = vec!["10.0.2.30".parse().expect("literal")];
    reuse.local = None; // scheduled on another node
    if let Err(e) = cache.upsert_workload(reuse) {
        println!("  toolbox-2 rejected: {e}");
    }
    let generation = cache.publish();
    let started = Instant::now();
    match cache.wait_for_readers(generation, Duration::from_secs(1)) {
        Ok(()) => println!(
            "  every worker is past generation {} after {:?}",
            generation.0,
            started.elapsed()
        ),
        Err(e) => println!("  barrier: {e}"),
    }
    cache.remove_workload("u-db-1");
    cache.publish();
    println!("  after db-0's late delete, 10.0.2.30 still belongs to toolbox-2:");
    let snapshot = cache.pending();
    show(&snapshot, "10.0.1.20", "10.0.2.30", Protocol::Tcp, 5432);
    stop.store(true, Ordering::Relaxed);
    let batches = worker.join().unwrap_or(0);
    println!("  (the reader thread decided {batches} batches meanwhile, never blocked)");
}
