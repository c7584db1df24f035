//! Policy semantics, end to end: YAML manifests and workloads in, verdicts out of the
//! published snapshot. One test per rule a user relies on.

use std::collections::BTreeMap;
use std::net::IpAddr;

use identity_cache::endpoint::NamedPort;
use identity_cache::identity::{ClusterKey, Identity};
use identity_cache::ipcache::{Owner, Source};
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{Action, ParsedManifest, PolicyKey, PolicyKind, parse_manifest};
use identity_cache::protocol::Protocol;
use identity_cache::state::{Enforce, IdentityCache, PeerRef, Workload};
use identity_cache::tables::EnforcementConfig;
use identity_cache::verdict::{DropReason, MatchKind};

struct Cluster {
    cache: IdentityCache,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: BTreeMap<String, PeerRef>,
}

impl Cluster {
    fn new(config: EnforcementConfig) -> Self {
        Cluster {
            cache: IdentityCache::new(ClusterKey::default(), config),
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
        }
    }

    fn cilium() -> Self {
        Self::new(EnforcementConfig::default())
    }

    fn kubernetes() -> Self {
        Self::new(EnforcementConfig {
            cidr_selects_endpoints: true,
            ..EnforcementConfig::default()
        })
    }

    fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) -> &mut Self {
        self.namespaces.insert(
            name.into(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    fn pod(&mut self, id: &str, labels: &[(&str, &str)], ip: &str) -> &mut Self {
        self.pod_with(id, labels, ip, "default", &[])
    }

    fn pod_with(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        ip: &str,
        sa: &str,
        ports: &[(&str, u16)],
    ) -> &mut Self {
        let (ns, name) = id.split_once('/').expect("ns/name");
        let pod_labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let set = workload_labels(
            &WorkloadMeta {
                namespace: ns,
                pod_labels: Some(&pod_labels),
                namespace_labels: self.namespaces.get(ns),
                service_account: Some(sa),
                cluster: Some("default"),
            },
            &LabelFilter::default(),
        );
        let ip: IpAddr = ip.parse().expect("ip");
        let identity = self
            .cache
            .upsert_workload(Workload {
                uid: format!("uid-{id}"),
                namespace: ns.into(),
                name: name.into(),
                labels: set,
                ips: vec![ip],
                named_ports: ports
                    .iter()
                    .map(|(n, p)| NamedPort {
                        name: n.to_string(),
                        port: *p,
                        protocol: Protocol::Tcp,
                    })
                    .collect(),
                source: Source::ApiServer,
                local: None,
            })
            .expect("pod applies");
        self.pods.insert(id.into(), PeerRef { identity, ip });
        self
    }

    fn policy(&mut self, yaml: &str) -> &mut Self {
        match parse_manifest(yaml) {
            Ok(ParsedManifest::Policy(p)) => self.cache.upsert_policy(p),
            other => panic!("policy does not parse: {other:?}"),
        }
        self
    }

    fn peer(&self, who: &str) -> (PeerRef, bool) {
        if let Some(p) = self.pods.get(who) {
            return (*p, true);
        }
        let snapshot = self.cache.pending();
        match who {
            "host" => (
                PeerRef {
                    identity: Identity::HOST,
                    ip: "192.168.0.1".parse().expect("ip"),
                },
                false,
            ),
            "remote-node" => (
                PeerRef {
                    identity: Identity::REMOTE_NODE,
                    ip: "192.168.0.2".parse().expect("ip"),
                },
                false,
            ),
            ip => {
                let ip: IpAddr = ip.parse().expect("pod or address");
                (
                    PeerRef {
                        identity: snapshot.identity_of(ip),
                        ip,
                    },
                    false,
                )
            }
        }
    }

    fn verdict(
        &self,
        from: &str,
        to: &str,
        proto: Protocol,
        port: u16,
    ) -> identity_cache::verdict::Verdict {
        let (src, src_local) = self.peer(from);
        let (dst, dst_local) = self.peer(to);
        self.cache.pending().decide(
            src,
            dst,
            proto,
            port,
            Enforce {
                egress: src_local,
                ingress: dst_local,
            },
        )
    }

    fn allows(&self, from: &str, to: &str, port: u16) -> bool {
        self.verdict(from, to, Protocol::Tcp, port).allowed()
    }
}

#[test]
fn no_policy_allows_everything() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    let v = c.verdict("x/a", "x/b", Protocol::Tcp, 80);
    assert!(v.allowed());
    assert!(!v.ingress.expect("checked").enforced);
}

#[test]
fn selected_endpoint_is_default_deny_only_in_the_direction_of_the_rule() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    c.policy(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: c}}]\n",
    );
    let v = c.verdict("x/a", "x/b", Protocol::Tcp, 80);
    assert!(!v.allowed());
    assert_eq!(v.drop_reason, Some(DropReason::PolicyDenied));
    // b's egress is not selected by any egress rule: still open.
    assert!(c.allows("x/b", "x/a", 80));
}

#[test]
fn deny_beats_allow_from_any_policy() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: a}}]\n");
    assert!(c.allows("x/a", "x/b", 80));
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: deny}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingressDeny:\n  - fromEntities: [all]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n");
    let v = c.verdict("x/a", "x/b", Protocol::Tcp, 80);
    assert_eq!(v.drop_reason, Some(DropReason::PolicyDenyRule));
    assert!(c.allows("x/a", "x/b", 81), "the deny is port-specific");
    c.cache.remove_policy(&PolicyKey {
        kind: PolicyKind::CiliumClusterwideNetworkPolicy,
        namespace: None,
        name: "deny".into(),
    });
    assert!(
        c.allows("x/a", "x/b", 80),
        "removing the deny restores the allow"
    );
}

#[test]
fn namespaced_policy_selects_only_its_namespace() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("y/a", &[("app", "a")], "10.0.1.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2")
        .pod("y/b", &[("app", "b")], "10.0.1.2");
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: a}}]\n");
    assert!(c.allows("x/a", "x/b", 80));
    assert!(
        !c.allows("y/a", "x/b", 80),
        "peer selector is scoped to the policy namespace"
    );
    assert!(
        c.allows("x/a", "y/b", 80),
        "subject selector is scoped: y/b is not selected"
    );
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: a, k8s:io.kubernetes.pod.namespace: y}}]\n");
    assert!(
        c.allows("y/a", "x/b", 80),
        "naming the namespace label crosses namespaces"
    );
    assert!(
        !c.allows("x/a", "x/b", 80),
        "the updated policy replaced the old one"
    );
}

#[test]
fn network_policy_peer_selectors_and_or() {
    let mut c = Cluster::kubernetes();
    c.namespace("x", &[("team", "a")])
        .namespace("y", &[("team", "b")]);
    c.pod("x/web", &[("app", "web")], "10.0.0.1")
        .pod("x/db", &[("app", "db")], "10.0.0.2")
        .pod("y/web", &[("app", "web")], "10.0.1.1")
        .pod("y/other", &[("app", "other")], "10.0.1.2");
    // One peer with both selectors: AND.
    c.policy("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: and, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: b}}\n      podSelector: {matchLabels: {app: web}}\n");
    assert!(c.allows("y/web", "x/db", 5432));
    assert!(!c.allows("y/other", "x/db", 5432));
    assert!(!c.allows("x/web", "x/db", 5432));
    // Two peers: OR.
    c.policy("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: and, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: b}}\n    - podSelector: {matchLabels: {app: web}}\n");
    assert!(c.allows("y/other", "x/db", 5432));
    assert!(c.allows("x/web", "x/db", 5432));
    assert!(
        !c.allows("203.0.113.9", "x/db", 5432),
        "selectors never match outside addresses"
    );
}

#[test]
fn network_policy_types_default_and_empty_rules() {
    let mut c = Cluster::kubernetes();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    // No policyTypes, no egress section: ingress only.
    c.policy("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n");
    assert!(!c.allows("x/a", "x/b", 80));
    let v = c.verdict("x/a", "x/b", Protocol::Tcp, 80);
    assert!(
        v.egress.expect("checked").action == Action::Allow,
        "egress untouched"
    );
    // An empty ingress rule allows everything, whatever else denies.
    c.policy("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: all, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: b}}\n  ingress: [{}]\n");
    assert!(c.allows("x/a", "x/b", 80));
    assert!(c.allows("198.51.100.7", "x/b", 22));
}

#[test]
fn cidr_except_and_ipblock_on_pods_depend_on_semantics() {
    for (mut c, pods_match) in [(Cluster::kubernetes(), true), (Cluster::cilium(), false)] {
        c.pod("x/a", &[("app", "a")], "10.0.0.1")
            .pod("x/b", &[("app", "b")], "10.0.5.5");
        c.policy("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: out, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.9.0.0/16]}\n");
        assert!(c.allows("x/a", "10.1.2.3", 443));
        assert!(!c.allows("x/a", "10.9.1.1", 443), "inside except");
        assert!(!c.allows("x/a", "11.0.0.1", 443), "outside cidr");
        assert_eq!(
            c.allows("x/a", "x/b", 443),
            pods_match,
            "ipBlock on a pod address"
        );
    }
}

#[test]
fn port_ranges_protocols_and_named_ports() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1");
    c.pod_with(
        "x/b",
        &[("app", "b")],
        "10.0.0.2",
        "default",
        &[("web", 8443)],
    );
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - toPorts: [{ports: [{port: \"4000\", endPort: 4010, protocol: TCP}, {port: web}, {port: \"53\", protocol: UDP}]}]\n");
    assert!(c.allows("x/a", "x/b", 4000));
    assert!(c.allows("x/a", "x/b", 4010));
    assert!(!c.allows("x/a", "x/b", 4011));
    assert!(
        c.allows("x/a", "x/b", 8443),
        "named port resolved from the pod"
    );
    assert!(c.verdict("x/a", "x/b", Protocol::Udp, 53).allowed());
    assert!(!c.verdict("x/a", "x/b", Protocol::Tcp, 53).allowed());
    assert!(!c.verdict("x/a", "x/b", Protocol::Icmp, 8).allowed());
    let v = c.verdict("x/a", "x/b", Protocol::Tcp, 4005);
    assert_eq!(v.ingress.expect("checked").match_kind, MatchKind::L4Only);
}

#[test]
fn icmp_rules_match_types() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{}]\n    icmps: [{fields: [{type: EchoRequest, family: IPv4}]}]\n");
    assert!(c.verdict("x/a", "x/b", Protocol::Icmp, 8).allowed());
    assert!(!c.verdict("x/a", "x/b", Protocol::Icmp, 13).allowed());
    assert!(!c.verdict("x/a", "x/b", Protocol::Tcp, 8).allowed());
}

#[test]
fn entities_and_reserved_identities() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEntities: [remote-node, world]\n");
    assert!(c.allows("remote-node", "x/b", 80));
    assert!(c.allows("8.8.8.8", "x/b", 80), "world");
    assert!(!c.allows("x/a", "x/b", 80), "a pod is not world");
    assert!(
        c.allows("host", "x/b", 80),
        "the local host is always allowed (allow-localhost)"
    );
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEntities: [cluster]\n");
    assert!(c.allows("x/a", "x/b", 80));
    assert!(c.allows("remote-node", "x/b", 80));
    assert!(!c.allows("8.8.8.8", "x/b", 80));
    let s = c.cache.pending();
    assert_eq!(
        s.identity_of("8.8.8.8".parse().expect("ip")),
        Identity::WORLD_IPV4
    );
    assert_eq!(
        s.identity_of("2001:db8::1".parse().expect("ip")),
        Identity::WORLD_IPV6
    );
}

#[test]
fn enable_default_deny_false_keeps_others_open() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {}\n  enableDefaultDeny: {egress: false}\n  egressDeny:\n  - toPorts: [{ports: [{port: \"23\", protocol: TCP}]}]\n");
    assert!(c.allows("x/a", "x/b", 80));
    assert!(!c.allows("x/a", "x/b", 23));
}

#[test]
fn init_identity_is_default_deny() {
    let c = Cluster::cilium();
    let s = c.cache.pending();
    let init = PeerRef {
        identity: Identity::INIT,
        ip: "10.0.0.9".parse().expect("ip"),
    };
    let world = PeerRef {
        identity: Identity::WORLD_IPV4,
        ip: "1.1.1.1".parse().expect("ip"),
    };
    assert!(
        !s.decide(
            init,
            world,
            Protocol::Tcp,
            80,
            Enforce {
                egress: true,
                ingress: false
            }
        )
        .allowed()
    );
    assert!(
        !s.decide(
            world,
            init,
            Protocol::Tcp,
            80,
            Enforce {
                egress: false,
                ingress: true
            }
        )
        .allowed()
    );
}

#[test]
fn late_delete_of_old_pod_keeps_new_pods_entry_and_identity() {
    let mut c = Cluster::cilium();
    c.pod("x/old", &[("app", "old")], "10.0.0.7");
    let old = c.pods["x/old"].identity;
    // A new pod with other labels gets the same IP before the old pod's delete arrives.
    c.pod("x/new", &[("app", "new")], "10.0.0.7");
    let new = c.pods["x/new"].identity;
    assert_ne!(old, new);
    let ip: IpAddr = "10.0.0.7".parse().expect("ip");
    assert_eq!(c.cache.pending().identity_of(ip), new);
    assert!(c.cache.remove_workload("uid-x/old"));
    assert_eq!(
        c.cache.pending().identity_of(ip),
        new,
        "late delete by the old owner is a no-op"
    );
    assert!(
        c.cache.registry().get(old).is_none(),
        "the old identity is released"
    );
}

#[test]
fn owner_checked_delete_of_host_entries() {
    let mut c = Cluster::cilium();
    let prefix: ipnet::IpNet = "192.168.9.9/32".parse().expect("prefix");
    c.cache
        .upsert_host(
            prefix,
            Identity::REMOTE_NODE,
            Owner::new(Source::ApiServer, "node:n2", "", "n2"),
        )
        .expect("upsert");
    c.cache.remove_host(prefix, "node:someone-else");
    assert_eq!(
        c.cache
            .pending()
            .identity_of("192.168.9.9".parse().expect("ip")),
        Identity::REMOTE_NODE
    );
    c.cache.remove_host(prefix, "node:n2");
    assert_eq!(
        c.cache
            .pending()
            .identity_of("192.168.9.9".parse().expect("ip")),
        Identity::WORLD_IPV4
    );
}

#[test]
fn relabel_moves_the_pod_between_identities_atomically() {
    let mut c = Cluster::cilium();
    c.pod("x/a", &[("app", "a")], "10.0.0.1")
        .pod("x/b", &[("app", "b")], "10.0.0.2");
    c.policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {role: trusted}}]\n");
    assert!(!c.allows("x/a", "x/b", 80));
    let before = c.cache.pending();
    c.pod("x/a", &[("app", "a"), ("role", "trusted")], "10.0.0.1");
    assert!(c.allows("x/a", "x/b", 80));
    // The snapshot taken before still decides by the old identity: no mixed state.
    let src = PeerRef {
        identity: before.identity_of("10.0.0.1".parse().expect("ip")),
        ip: "10.0.0.1".parse().expect("ip"),
    };
    let dst = PeerRef {
        identity: before.identity_of("10.0.0.2".parse().expect("ip")),
        ip: "10.0.0.2".parse().expect("ip"),
    };
    assert!(
        !before
            .decide(
                src,
                dst,
                Protocol::Tcp,
                80,
                Enforce {
                    egress: true,
                    ingress: true
                }
            )
            .allowed()
    );
}

#[test]
fn identities_are_the_same_on_two_independent_nodes() {
    let mut a = Cluster::cilium();
    let mut b = Cluster::cilium();
    a.pod(
        "x/p",
        &[("app", "p"), ("pod-template-hash", "abc")],
        "10.0.0.1",
    );
    b.pod(
        "x/q",
        &[("pod-template-hash", "xyz"), ("app", "p")],
        "10.0.0.2",
    );
    assert_eq!(a.pods["x/p"].identity, b.pods["x/q"].identity);
}
