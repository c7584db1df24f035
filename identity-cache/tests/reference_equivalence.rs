//! Property tests holding the compiled policy tables equal to the reference evaluator
//! (`identity_cache::reference`): random worlds of pods, random CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy and NetworkPolicy manifests, and probes between pods,
//! external addresses and reserved entities, under both CIDR semantics. A second property
//! checks that the order of updates, and removing then re-adding policies and pods, does not
//! change any verdict.
//!
//! Fixed scenarios at the end reproduce, deterministically, disagreements the properties
//! found.
//!
//! Both properties stop generating new cases once their time budget is spent, so the suite
//! stays bounded on a slow machine. `PROPTEST_CASES`, `REFERENCE_BUDGET_SECS` and
//! `PROPTEST_RNG_SEED` widen or pin a run.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use identity_cache::endpoint::NamedPort;
use identity_cache::identity::{ClusterKey, ReservedIdentity};
use identity_cache::ipcache::Source;
use identity_cache::labels::{LabelFilter, LabelSet, WorkloadMeta, workload_labels};
use identity_cache::policy::cilium::{
    CidrRuleSpec, CiliumPolicySpec, DefaultDenySpec, EgressRuleSpec, HttpRuleSpec, IcmpFieldSpec,
    IcmpRuleSpec, IngressRuleSpec, L7RulesSpec, PortProtocolSpec, PortRuleSpec,
};
use identity_cache::policy::k8s::{
    IpBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use identity_cache::policy::{IntOrString, ParsedManifest, Policy, parse_manifest};
use identity_cache::protocol::Protocol;
use identity_cache::reference::{self, RefPeer, RefPod, RefWorld};
use identity_cache::selector::{ExpressionSpec, LabelSelectorSpec};
use identity_cache::state::{Enforce, IdentityCache, PeerRef, Workload};
use identity_cache::tables::EnforcementConfig;
use ipnet::IpNet;
use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::TestCaseError;
use serde::Serialize;

/// Wall-clock budget of one property in seconds (`REFERENCE_BUDGET_SECS` overrides); later
/// cases pass without running once it is spent.
const BUDGET_SECS: u64 = 90;

/// Cases of the main property (`PROPTEST_CASES` overrides; the churn property runs a quarter).
const CASES: u32 = 256;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Vocab = &'static [(&'static str, &'static [&'static str])];

const NAMESPACES: [&str; 3] = ["a", "b", "c"];

/// Pod label keys and values (tiny, so selectors hit).
const POD_VOCAB: Vocab = &[
    ("app", &["web", "db", "api"]),
    ("tier", &["front", "back"]),
    ("env", &["prod", "dev"]),
];

/// Namespace label keys and values.
const NS_VOCAB: Vocab = &[("team", &["x", "y"]), ("env", &["prod", "dev"])];

/// Keys a NetworkPolicy namespaceSelector can name.
const K8S_NS_SELECTOR_VOCAB: Vocab = &[
    ("team", &["x", "y"]),
    ("env", &["prod", "dev"]),
    ("kubernetes.io/metadata.name", &["a", "b", "c"]),
];

/// Keys a Cilium endpointSelector can name.
const SUBJECT_VOCAB: Vocab = &[
    ("app", &["web", "db", "api"]),
    ("tier", &["front", "back"]),
    ("env", &["prod", "dev"]),
    ("k8s:app", &["web", "db"]),
    ("io.kubernetes.pod.namespace", &["a", "b", "c"]),
    ("io.cilium.k8s.namespace.labels.team", &["x", "y"]),
    ("reserved:host", &[""]),
];

/// Keys a Cilium fromEndpoints/toEndpoints selector can name, reserved labels included.
const PEER_VOCAB: Vocab = &[
    ("app", &["web", "db", "api"]),
    ("tier", &["front", "back"]),
    ("env", &["prod", "dev"]),
    ("any:tier", &["front", "back"]),
    ("io.kubernetes.pod.namespace", &["a", "b", "c"]),
    ("io.cilium.k8s.namespace.labels.team", &["x", "y"]),
    ("reserved:host", &[""]),
    ("reserved:world", &[""]),
    ("reserved:kube-apiserver", &[""]),
];

const ENTITIES: &[&str] = &[
    "world",
    "cluster",
    "host",
    "remote-node",
    "init",
    "health",
    "unmanaged",
    "kube-apiserver",
    "all",
];

/// Prefixes policies name (bare addresses are host prefixes).
const CIDRS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.1.0/24",
    "10.0.1.128/25",
    "10.0.0.7",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.168.0.0/16",
    "192.168.1.0/24",
    "8.8.8.8/32",
    "::/0",
    "fd00::/8",
    "fd00:1::/32",
];

/// Addresses pods get (all inside 10.0.0.0/16).
const POD_IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "10.0.0.7",
    "10.0.0.9",
    "10.0.1.1",
    "10.0.1.2",
    "10.0.1.5",
    "10.0.1.130",
    "10.0.1.131",
    "10.0.1.140",
];

/// External addresses probed: inside and outside policy prefixes, both families.
const EXTERNALS: &[&str] = &[
    "10.0.1.200",
    "10.0.200.1",
    "10.1.2.3",
    "10.1.9.9",
    "10.200.0.1",
    "192.168.1.10",
    "192.168.7.7",
    "8.8.8.8",
    "1.1.1.1",
    "fd00::1",
    "fd00:1::5",
    "2001:db8::1",
];

/// Reserved entities probed, at addresses inside policy prefixes (CIDR rules must ignore them).
const RESERVED: &[(ReservedIdentity, &str)] = &[
    (ReservedIdentity::Host, "10.0.1.250"),
    (ReservedIdentity::RemoteNode, "10.0.0.250"),
    (ReservedIdentity::KubeApiserver, "10.1.2.250"),
    (ReservedIdentity::Health, "10.0.0.251"),
    (ReservedIdentity::Unmanaged, "192.168.1.251"),
    (ReservedIdentity::Init, "10.0.0.253"),
];

/// Protocols and ports (ICMP: types) probes draw from: numbers rules name, numbers named
/// ports get, and numbers next to range ends.
fn probe_ports() -> Vec<(Protocol, u16)> {
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for port in [53, 80, 443, 5000, 5002, 5003, 5005, 5006, 8080, 9090] {
            out.push((protocol, port));
        }
    }
    for (protocol, icmp_type) in [
        (Protocol::Icmp, 0),
        (Protocol::Icmp, 8),
        (Protocol::Icmp, 128),
        (Protocol::IcmpV6, 8),
        (Protocol::IcmpV6, 128),
        (Protocol::IcmpV6, 129),
    ] {
        out.push((protocol, icmp_type));
    }
    out
}

const PORT_NAMES: &[&str] = &["http", "metrics", "dns"];

// ---------------------------------------------------------------------------------------------
// Generated cases.

/// A generated pod: namespace index, pod labels, named ports; `twin` copies the namespace
/// and labels of an earlier pod (so that the two share an identity).
#[derive(Clone, Debug)]
struct PodGen {
    twin: Option<Index>,
    ns: usize,
    labels: BTreeMap<String, String>,
    ports: Vec<(String, Protocol, u16)>,
}

/// A generated policy.
#[derive(Clone, Debug)]
enum PolicyGen {
    Cnp(usize, CiliumPolicySpec),
    Ccnp(CiliumPolicySpec),
    Knp(usize, NetworkPolicySpec),
}

/// One generated world.
#[derive(Clone, Debug)]
struct Case {
    ns_labels: Vec<BTreeMap<String, String>>,
    pods: Vec<(PodGen, IpAddr)>,
    policies: Vec<PolicyGen>,
    allow_from_host: bool,
    ports: Vec<(Protocol, u16)>,
}

fn selector(vocab: Vocab) -> BoxedStrategy<LabelSelectorSpec> {
    let label = (0..vocab.len(), any::<Index>()).prop_map(move |(k, v)| {
        let (key, values) = vocab[k];
        (key.to_owned(), v.get(values).to_string())
    });
    let expr =
        (0..vocab.len(), 0..4usize, vec(any::<Index>(), 1..=2)).prop_map(move |(k, op, vs)| {
            let (key, values) = vocab[k];
            let operator = ["In", "NotIn", "Exists", "DoesNotExist"][op];
            let values = (op < 2).then(|| vs.iter().map(|i| i.get(values).to_string()).collect());
            ExpressionSpec {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values,
            }
        });
    (
        weighted(0.6, vec(label, 1..=2)),
        weighted(0.35, vec(expr, 1..=2)),
    )
        .prop_map(|(labels, exprs)| LabelSelectorSpec {
            match_labels: labels.map(|l| l.into_iter().collect()),
            match_expressions: exprs,
        })
        .boxed()
}

fn parse_net(text: &str) -> IpNet {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .expect("vocabulary prefix")
        .trunc()
}

/// A CIDR with exceptions drawn from the vocabulary prefixes it contains.
fn cidr_with_except() -> BoxedStrategy<(String, Option<Vec<String>>)> {
    (0..CIDRS.len(), weighted(0.5, vec(0..CIDRS.len(), 1..=2)))
        .prop_map(|(c, except)| {
            let net = parse_net(CIDRS[c]);
            let except = except.map(|list| {
                list.into_iter()
                    .filter(|e| net.contains(&parse_net(CIDRS[*e])))
                    .map(|e| CIDRS[e].to_owned())
                    .collect()
            });
            (CIDRS[c].to_owned(), except)
        })
        .boxed()
}

fn cilium_port_value() -> BoxedStrategy<Option<IntOrString>> {
    select(vec![
        None,
        Some(IntOrString::Int(0)),
        Some(IntOrString::Int(80)),
        Some(IntOrString::Int(443)),
        Some(IntOrString::Int(8080)),
        Some(IntOrString::Int(5000)),
        Some(IntOrString::Int(5002)),
        Some(IntOrString::String("80".into())),
        Some(IntOrString::String("".into())),
        Some(IntOrString::String("http".into())),
        Some(IntOrString::String("metrics".into())),
        Some(IntOrString::String("dns".into())),
    ])
    .boxed()
}

fn cilium_port_rule() -> BoxedStrategy<PortRuleSpec> {
    let port = (
        cilium_port_value(),
        weighted(0.15, select(vec![5003i64, 5005, 8080])),
        select(vec![
            None,
            Some("TCP"),
            Some("UDP"),
            Some("SCTP"),
            Some("ANY"),
            Some("tcp"),
        ]),
    )
        .prop_map(|(port, end_port, protocol)| PortProtocolSpec {
            port,
            end_port,
            protocol: protocol.map(str::to_owned),
        });
    let http = L7RulesSpec {
        http: Some(vec![HttpRuleSpec {
            method: Some("GET".into()),
            ..HttpRuleSpec::default()
        }]),
        dns: None,
        kafka: None,
    };
    (weighted(0.9, vec(port, 0..=2)), weighted(0.1, Just(http)))
        .prop_map(|(ports, rules)| PortRuleSpec {
            ports,
            rules,
            ..PortRuleSpec::default()
        })
        .boxed()
}

fn icmp_rule() -> BoxedStrategy<IcmpRuleSpec> {
    let field = (
        select(vec![
            IntOrString::Int(8),
            IntOrString::Int(0),
            IntOrString::Int(128),
            IntOrString::String("8".into()),
            IntOrString::String("EchoRequest".into()),
            IntOrString::String("EchoReply".into()),
        ]),
        select(vec![None, Some("IPv4"), Some("IPv6")]),
    )
        .prop_map(|(icmp_type, family)| IcmpFieldSpec {
            icmp_type,
            family: family.map(str::to_owned),
        });
    vec(field, 1..=2)
        .prop_map(|fields| IcmpRuleSpec {
            fields: Some(fields),
        })
        .boxed()
}

/// The parts of a Cilium rule entry, shared by ingress and egress.
type CiliumEntry = (
    Option<Vec<LabelSelectorSpec>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<CidrRuleSpec>>,
    Option<Vec<PortRuleSpec>>,
    Option<Vec<IcmpRuleSpec>>,
);

fn cilium_entry() -> BoxedStrategy<CiliumEntry> {
    let cidr_set = cidr_with_except().prop_map(|(cidr, except)| CidrRuleSpec {
        cidr: Some(cidr),
        except,
        cidr_group_ref: None,
    });
    (
        weighted(0.4, vec(selector(PEER_VOCAB), 0..=2)),
        weighted(0.25, vec(select(ENTITIES).prop_map(str::to_owned), 0..=2)),
        weighted(0.2, vec(select(CIDRS).prop_map(str::to_owned), 0..=2)),
        weighted(0.2, vec(cidr_set, 0..=2)),
        weighted(0.4, vec(cilium_port_rule(), 0..=2)),
        weighted(0.15, vec(icmp_rule(), 0..=1)),
    )
        .boxed()
}

fn strip_l7(ports: Option<Vec<PortRuleSpec>>) -> Option<Vec<PortRuleSpec>> {
    ports.map(|list| {
        list.into_iter()
            .map(|p| PortRuleSpec { rules: None, ..p })
            .collect()
    })
}

fn ingress(entry: CiliumEntry, deny: bool) -> IngressRuleSpec {
    let (endpoints, entities, cidrs, cidr_sets, to_ports, icmps) = entry;
    IngressRuleSpec {
        from_endpoints: endpoints,
        from_entities: entities,
        from_cidr: cidrs,
        from_cidr_set: cidr_sets,
        to_ports: if deny { strip_l7(to_ports) } else { to_ports },
        icmps,
        ..IngressRuleSpec::default()
    }
}

fn egress(entry: CiliumEntry, deny: bool) -> EgressRuleSpec {
    let (endpoints, entities, cidrs, cidr_sets, to_ports, icmps) = entry;
    EgressRuleSpec {
        to_endpoints: endpoints,
        to_entities: entities,
        to_cidr: cidrs,
        to_cidr_set: cidr_sets,
        to_ports: if deny { strip_l7(to_ports) } else { to_ports },
        icmps,
        ..EgressRuleSpec::default()
    }
}

fn cilium_spec() -> BoxedStrategy<CiliumPolicySpec> {
    let section = || weighted(0.5, vec(cilium_entry(), 0..=2));
    let default_deny = weighted(
        0.3,
        (weighted(0.6, any::<bool>()), weighted(0.6, any::<bool>()))
            .prop_map(|(ingress, egress)| DefaultDenySpec { ingress, egress }),
    );
    (
        selector(SUBJECT_VOCAB),
        section(),
        section(),
        section(),
        section(),
        default_deny,
    )
        .prop_map(
            |(subject, ing, ing_deny, eg, eg_deny, default_deny)| CiliumPolicySpec {
                endpoint_selector: Some(subject),
                ingress: ing.map(|l| l.into_iter().map(|e| ingress(e, false)).collect()),
                ingress_deny: ing_deny.map(|l| l.into_iter().map(|e| ingress(e, true)).collect()),
                egress: eg.map(|l| l.into_iter().map(|e| egress(e, false)).collect()),
                egress_deny: eg_deny.map(|l| l.into_iter().map(|e| egress(e, true)).collect()),
                enable_default_deny: default_deny,
                ..CiliumPolicySpec::default()
            },
        )
        .boxed()
}

fn knp_peer() -> BoxedStrategy<NetworkPolicyPeer> {
    prop_oneof![
        selector(POD_VOCAB).prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        selector(K8S_NS_SELECTOR_VOCAB).prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (selector(POD_VOCAB), selector(K8S_NS_SELECTOR_VOCAB)).prop_map(|(p, n)| {
            NetworkPolicyPeer {
                pod_selector: Some(p),
                namespace_selector: Some(n),
                ip_block: None,
            }
        }),
        cidr_with_except().prop_map(|(cidr, except)| NetworkPolicyPeer {
            ip_block: Some(IpBlock { cidr, except }),
            ..Default::default()
        }),
    ]
    .boxed()
}

fn knp_port() -> BoxedStrategy<NetworkPolicyPort> {
    (
        select(vec![None, Some("TCP"), Some("UDP"), Some("SCTP")]),
        select(vec![
            None,
            Some(IntOrString::Int(80)),
            Some(IntOrString::Int(443)),
            Some(IntOrString::Int(5000)),
            Some(IntOrString::Int(8080)),
            Some(IntOrString::String("http".into())),
            Some(IntOrString::String("dns".into())),
            Some(IntOrString::String("metrics".into())),
        ]),
        weighted(0.15, select(vec![5003i64, 5005])),
    )
        .prop_map(|(protocol, port, end_port)| NetworkPolicyPort {
            protocol: protocol.map(str::to_owned),
            port,
            end_port,
        })
        .boxed()
}

fn knp_spec() -> BoxedStrategy<NetworkPolicySpec> {
    let rule = || {
        (
            weighted(0.7, vec(knp_peer(), 0..=2)),
            weighted(0.5, vec(knp_port(), 0..=2)),
        )
    };
    let types = weighted(
        0.5,
        select(vec![
            vec![],
            vec!["Ingress"],
            vec!["Egress"],
            vec!["Ingress", "Egress"],
        ])
        .prop_map(|t| t.into_iter().map(str::to_owned).collect::<Vec<_>>()),
    );
    (
        selector(POD_VOCAB),
        weighted(0.7, vec(rule(), 0..=2)),
        weighted(0.5, vec(rule(), 0..=2)),
        types,
    )
        .prop_map(|(subject, ing, eg, policy_types)| NetworkPolicySpec {
            pod_selector: Some(subject),
            ingress: ing.map(|l| {
                l.into_iter()
                    .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                    .collect()
            }),
            egress: eg.map(|l| {
                l.into_iter()
                    .map(|(to, ports)| NetworkPolicyEgressRule { to, ports })
                    .collect()
            }),
            policy_types,
        })
        .boxed()
}

fn policy_gen() -> BoxedStrategy<PolicyGen> {
    prop_oneof![
        3 => (0..NAMESPACES.len(), cilium_spec()).prop_map(|(ns, s)| PolicyGen::Cnp(ns, s)),
        1 => cilium_spec().prop_map(PolicyGen::Ccnp),
        3 => (0..NAMESPACES.len(), knp_spec()).prop_map(|(ns, s)| PolicyGen::Knp(ns, s)),
    ]
    .boxed()
}

fn labels_from(vocab: Vocab) -> BoxedStrategy<BTreeMap<String, String>> {
    vec((0..vocab.len(), any::<Index>()), 0..=vocab.len())
        .prop_map(move |pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let (key, values) = vocab[k];
                    (key.to_owned(), v.get(values).to_string())
                })
                .collect()
        })
        .boxed()
}

fn pod_gen() -> BoxedStrategy<PodGen> {
    let port = (
        select(PORT_NAMES),
        select(vec![Protocol::Tcp, Protocol::Udp]),
        select(vec![80u16, 443, 8080, 9090, 53, 5002]),
    );
    (
        weighted(0.2, any::<Index>()),
        0..NAMESPACES.len(),
        labels_from(POD_VOCAB),
        vec(port, 0..=2),
    )
        .prop_map(|(twin, ns, labels, ports)| {
            let mut named: Vec<(String, Protocol, u16)> = Vec::new();
            for (name, proto, number) in ports {
                // Port names are unique within a pod.
                if !named.iter().any(|(n, _, _)| n == name) {
                    named.push((name.to_owned(), proto, number));
                }
            }
            PodGen {
                twin,
                ns,
                labels,
                ports: named,
            }
        })
        .boxed()
}

fn case() -> BoxedStrategy<Case> {
    let pod_ips: Vec<IpAddr> = POD_IPS.iter().map(|s| s.parse().expect("pod ip")).collect();
    let pods = (2..=8usize).prop_flat_map(move |n| {
        (
            vec(pod_gen(), n),
            subsequence(pod_ips.clone(), n).prop_shuffle(),
        )
            .prop_map(|(mut pods, ips)| {
                for i in 1..pods.len() {
                    if let Some(twin) = pods[i].twin {
                        let of = twin.index(i);
                        pods[i].ns = pods[of].ns;
                        pods[i].labels = pods[of].labels.clone();
                    }
                }
                pods.into_iter().zip(ips).collect::<Vec<_>>()
            })
    });
    (
        vec(labels_from(NS_VOCAB), NAMESPACES.len()),
        pods,
        vec(policy_gen(), 1..=5),
        any::<bool>(),
        subsequence(probe_ports(), 6..=10),
    )
        .prop_map(|(ns_labels, pods, policies, allow_from_host, ports)| Case {
            ns_labels,
            pods,
            policies,
            allow_from_host,
            ports,
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Realising a case.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc<'a, S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: &'a S,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

fn yaml(policy: &PolicyGen, name: &str) -> String {
    let meta = |ns: Option<usize>| Metadata {
        name: name.to_owned(),
        namespace: ns.map(|i| NAMESPACES[i].to_owned()),
    };
    let text = match policy {
        PolicyGen::Cnp(ns, spec) => serde_yaml::to_string(&Doc {
            api_version: "cilium.io/v2",
            kind: "CiliumNetworkPolicy",
            metadata: meta(Some(*ns)),
            spec,
        }),
        PolicyGen::Ccnp(spec) => serde_yaml::to_string(&Doc {
            api_version: "cilium.io/v2",
            kind: "CiliumClusterwideNetworkPolicy",
            metadata: meta(None),
            spec,
        }),
        PolicyGen::Knp(ns, spec) => serde_yaml::to_string(&Doc {
            api_version: "networking.k8s.io/v1",
            kind: "NetworkPolicy",
            metadata: meta(Some(*ns)),
            spec,
        }),
    };
    text.expect("serialise policy")
}

/// A realised pod.
#[derive(Clone, Debug)]
struct Pod {
    uid: String,
    ns: String,
    labels: LabelSet,
    ip: IpAddr,
    named_ports: Vec<NamedPort>,
}

impl Pod {
    fn workload(&self) -> Workload {
        Workload {
            uid: self.uid.clone(),
            namespace: self.ns.clone(),
            name: self.uid.clone(),
            labels: self.labels.clone(),
            ips: vec![self.ip],
            named_ports: self.named_ports.clone(),
            source: Source::ApiServer,
            local: None,
        }
    }

    fn reference(&self) -> RefPod {
        RefPod {
            labels: self.labels.clone(),
            ip: self.ip,
            named_ports: self.named_ports.clone(),
        }
    }
}

fn pod_labels(
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> LabelSet {
    let meta = WorkloadMeta {
        namespace: ns,
        pod_labels: Some(labels),
        namespace_labels: Some(ns_labels),
        service_account: None,
        cluster: None,
    };
    workload_labels(&meta, &LabelFilter::default())
}

/// The realised world: pods, and the policies `parse_manifest` accepted (with their YAML).
struct World {
    pods: Vec<Pod>,
    policies: Vec<(String, Policy)>,
}

fn realise(case: &Case) -> World {
    let pods = case
        .pods
        .iter()
        .enumerate()
        .map(|(i, (p, ip))| {
            let ns = NAMESPACES[p.ns];
            Pod {
                uid: format!("pod-{i}"),
                ns: ns.to_owned(),
                labels: pod_labels(ns, &case.ns_labels[p.ns], &p.labels),
                ip: *ip,
                named_ports: p
                    .ports
                    .iter()
                    .map(|(name, protocol, port)| NamedPort {
                        name: name.clone(),
                        port: *port,
                        protocol: *protocol,
                    })
                    .collect(),
            }
        })
        .collect();
    let mut policies = Vec::new();
    for (i, gen_policy) in case.policies.iter().enumerate() {
        let text = yaml(gen_policy, &format!("p{i}"));
        if let Ok(ParsedManifest::Policy(p)) = parse_manifest(&text) {
            policies.push((text, p));
        }
    }
    World { pods, policies }
}

fn config(allow_from_host: bool, cidr_selects_endpoints: bool) -> EnforcementConfig {
    EnforcementConfig {
        allow_from_host,
        cidr_selects_endpoints,
        init_default_deny: true,
    }
}

fn out_of_time(start: &OnceLock<Instant>) -> bool {
    let budget = Duration::from_secs(env_or("REFERENCE_BUDGET_SECS", BUDGET_SECS));
    start.get_or_init(Instant::now).elapsed() > budget
}

/// Compares every probe of the cache's pending snapshot with the reference over `pods` and
/// `policies`. Returns the verdicts, in probe order, for comparisons between caches.
fn check(
    cache: &IdentityCache,
    pods: &[Pod],
    policies: &[(String, Policy)],
    config: &EnforcementConfig,
    ports: &[(Protocol, u16)],
    stage: &str,
) -> Result<Vec<(String, identity_cache::verdict::Verdict)>, TestCaseError> {
    let snapshot = cache.pending();
    let world = RefWorld {
        pods: pods.iter().map(Pod::reference).collect(),
    };
    let plain: Vec<Policy> = policies.iter().map(|(_, p)| p.clone()).collect();
    let mut peers: Vec<(String, RefPeer, PeerRef, bool)> = Vec::new();
    for pod in pods {
        let identity = cache
            .workload_identity(&pod.uid)
            .ok_or_else(|| TestCaseError::fail(format!("{} has no identity", pod.uid)))?;
        let name = format!("{}({} {})", pod.uid, pod.ip, pod.labels);
        peers.push((
            name,
            RefPeer::Pod(pod.reference()),
            PeerRef {
                identity,
                ip: pod.ip,
            },
            true,
        ));
    }
    for text in EXTERNALS {
        let ip: IpAddr = text.parse().expect("external");
        let identity = snapshot.identity_of(ip);
        peers.push((
            format!("external {ip} ({identity})"),
            RefPeer::External(ip),
            PeerRef { identity, ip },
            false,
        ));
    }
    for (r, text) in RESERVED {
        let ip: IpAddr = text.parse().expect("reserved");
        peers.push((
            format!("{} {ip}", r.name()),
            RefPeer::Reserved(*r, ip),
            PeerRef {
                identity: r.identity(),
                ip,
            },
            false,
        ));
    }
    let mut verdicts = Vec::new();
    for (src_name, src, src_ref, src_pod) in &peers {
        for (dst_name, dst, dst_ref, dst_pod) in &peers {
            if !src_pod && !dst_pod {
                continue;
            }
            for &(protocol, port) in ports {
                let want = reference::decide(&world, &plain, config, src, dst, protocol, port);
                let got = snapshot.decide(
                    *src_ref,
                    *dst_ref,
                    protocol,
                    port,
                    Enforce {
                        egress: *src_pod,
                        ingress: *dst_pod,
                    },
                );
                let probe = format!("{src_name} -> {dst_name} {protocol}/{port}");
                if got.action != want {
                    let texts: Vec<&str> = policies.iter().map(|(t, _)| t.as_str()).collect();
                    return Err(TestCaseError::fail(format!(
                        "[{stage}] {config:?}\nprobe {probe}: reference {want:?}, compiled {:?}\nverdict {got:?}\n\
                         policies:\n{}\nnormalised: {plain:?}",
                        got.action,
                        texts.join("---\n"),
                    )));
                }
                verdicts.push((probe, got));
            }
        }
    }
    Ok(verdicts)
}

/// Builds a cache with the pods first, then the policies, in the given order.
fn build(config: EnforcementConfig, world: &World) -> IdentityCache {
    let mut cache = IdentityCache::new(ClusterKey::default(), config);
    for pod in &world.pods {
        cache
            .upsert_workload(pod.workload())
            .expect("no identity collision");
    }
    for (_, policy) in &world.policies {
        cache.upsert_policy(policy.clone());
    }
    cache
}

fn equivalent(case: &Case) -> Result<(), TestCaseError> {
    let world = realise(case);
    for cidr_selects_endpoints in [false, true] {
        let config = config(case.allow_from_host, cidr_selects_endpoints);
        let cache = build(config, &world);
        check(
            &cache,
            &world.pods,
            &world.policies,
            &config,
            &case.ports,
            "built",
        )?;
    }
    Ok(())
}

/// Applies the same updates in another order, with removals and replacements on the way,
/// checking the reference at each stage and the final verdicts against an in-order build.
fn incremental(case: &Case, k: Index, j: Index, m: Index) -> Result<(), TestCaseError> {
    let world = realise(case);
    for cidr_selects_endpoints in [false, true] {
        let config = config(case.allow_from_host, cidr_selects_endpoints);
        let ports = &case.ports;
        let straight = build(config, &world);
        let expected = check(
            &straight,
            &world.pods,
            &world.policies,
            &config,
            ports,
            "in order",
        )?;

        let mut cache = IdentityCache::new(ClusterKey::default(), config);
        for (_, policy) in world.policies.iter().rev() {
            cache.upsert_policy(policy.clone());
        }
        for pod in world.pods.iter().rev() {
            cache
                .upsert_workload(pod.workload())
                .expect("no identity collision");
        }
        check(
            &cache,
            &world.pods,
            &world.policies,
            &config,
            ports,
            "policies first, reversed",
        )?;

        if !world.policies.is_empty() {
            let k = k.index(world.policies.len());
            let mut fewer = world.policies.clone();
            let (_, removed) = fewer.remove(k);
            prop_assert!(cache.remove_policy(&removed.key));
            check(
                &cache,
                &world.pods,
                &fewer,
                &config,
                ports,
                "policy removed",
            )?;
            cache.upsert_policy(removed.clone());
            check(
                &cache,
                &world.pods,
                &world.policies,
                &config,
                ports,
                "policy re-added",
            )?;

            // Replace policy k by another policy's rules under the same key, then restore it.
            let (other_text, other) = &world.policies[m.index(world.policies.len())];
            let replacement = Policy {
                key: removed.key.clone(),
                ..other.clone()
            };
            cache.upsert_policy(replacement.clone());
            let mut replaced = world.policies.clone();
            replaced[k] = (other_text.clone(), replacement);
            check(
                &cache,
                &world.pods,
                &replaced,
                &config,
                ports,
                "policy replaced",
            )?;
            cache.upsert_policy(removed);
        }

        let j = j.index(world.pods.len());
        let mut fewer = world.pods.clone();
        let removed = fewer.remove(j);
        prop_assert!(cache.remove_workload(&removed.uid));
        check(
            &cache,
            &fewer,
            &world.policies,
            &config,
            ports,
            "pod removed",
        )?;

        // Re-add the pod with another pod's labels (in its own namespace), then restore it.
        let donor = &case.pods[m.index(case.pods.len())].0;
        let own = &case.pods[j].0;
        let mut relabelled = removed.clone();
        relabelled.labels = pod_labels(&removed.ns, &case.ns_labels[own.ns], &donor.labels);
        cache
            .upsert_workload(relabelled.workload())
            .expect("no identity collision");
        let mut with_relabelled = world.pods.clone();
        with_relabelled[j] = relabelled;
        check(
            &cache,
            &with_relabelled,
            &world.policies,
            &config,
            ports,
            "pod relabelled",
        )?;
        cache
            .upsert_workload(removed.workload())
            .expect("no identity collision");

        let got = check(
            &cache,
            &world.pods,
            &world.policies,
            &config,
            ports,
            "restored",
        )?;
        prop_assert_eq!(got.len(), expected.len());
        for ((probe, a), (_, b)) in expected.iter().zip(&got) {
            prop_assert_eq!(
                (a.action, a.direction, a.drop_reason),
                (b.action, b.direction, b.drop_reason),
                "{}: in-order build and incremental build differ",
                probe
            );
        }
    }
    Ok(())
}

static EQUIVALENT_START: OnceLock<Instant> = OnceLock::new();
static INCREMENTAL_START: OnceLock<Instant> = OnceLock::new();

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_or("PROPTEST_CASES", CASES),
        max_shrink_time: 120_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_tables_match_the_reference(case in case()) {
        if !out_of_time(&EQUIVALENT_START) {
            equivalent(&case)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_or("PROPTEST_CASES", CASES) / 4,
        max_shrink_time: 120_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn update_order_and_churn_do_not_change_verdicts(
        case in case(),
        k in any::<Index>(),
        j in any::<Index>(),
        m in any::<Index>(),
    ) {
        if !out_of_time(&INCREMENTAL_START) {
            incremental(&case, k, j, m)?;
        }
    }
}

/// Sanity check of the generators: most generated policies parse, so the properties test
/// something.
#[test]
fn generated_policies_mostly_parse() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = policy_gen();
    let (mut ok, mut total) = (0, 0);
    for i in 0..200 {
        let policy = strategy.new_tree(&mut runner).expect("tree").current();
        total += 1;
        if matches!(
            parse_manifest(&yaml(&policy, &format!("p{i}"))),
            Ok(ParsedManifest::Policy(_))
        ) {
            ok += 1;
        }
    }
    assert!(
        ok * 10 >= total * 6,
        "only {ok} of {total} generated policies parse"
    );
}

// ---------------------------------------------------------------------------------------------
// Fixed scenarios: minimal reproductions of disagreements the properties found, kept so that
// they fail deterministically rather than on a lucky seed.

fn fixed_pod(uid: &str, ns: &str, labels: &[(&str, &str)], ip: &str, ports: &[(&str, u16)]) -> Pod {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Pod {
        uid: uid.to_owned(),
        ns: ns.to_owned(),
        labels: pod_labels(ns, &BTreeMap::new(), &labels),
        ip: ip.parse().expect("pod ip"),
        named_ports: ports
            .iter()
            .map(|(name, port)| NamedPort {
                name: name.to_string(),
                port: *port,
                protocol: Protocol::Tcp,
            })
            .collect(),
    }
}

fn fixed_policies(texts: &[&str]) -> Vec<(String, Policy)> {
    texts
        .iter()
        .map(|t| match parse_manifest(t) {
            Ok(ParsedManifest::Policy(p)) => (t.to_string(), p),
            other => panic!("fixture policy does not parse: {other:?}"),
        })
        .collect()
}

/// The reference verdict of one pod-to-pod probe.
fn reference_pod_to_pod(
    pods: &[Pod],
    policies: &[(String, Policy)],
    config: &EnforcementConfig,
    src: &Pod,
    dst: &Pod,
    port: u16,
) -> identity_cache::policy::Action {
    let world = RefWorld {
        pods: pods.iter().map(Pod::reference).collect(),
    };
    let plain: Vec<Policy> = policies.iter().map(|(_, p)| p.clone()).collect();
    let (src, dst) = (RefPeer::Pod(src.reference()), RefPeer::Pod(dst.reference()));
    reference::decide(&world, &plain, config, &src, &dst, Protocol::Tcp, port)
}

const PROBE_80: &[(Protocol, u16)] = &[(Protocol::Tcp, 80), (Protocol::Tcp, 9090)];

/// An unrelated policy naming 10.0.0.0/16, which gives every pod address a CIDR identity.
const NAMES_POD_PREFIX: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: names-prefix, namespace: z}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16}}]}]
";

/// With `cidr_selects_endpoints`, a pod must still be matched by Endpoints selectors through
/// its own labels only: `env NotIn [prod]` does not select a prod pod.
#[test]
fn k8s_mode_endpoint_selector_does_not_match_pod_cidr_identity() {
    let pods = vec![
        fixed_pod("client", "a", &[("app", "client")], "10.0.0.1", &[]),
        fixed_pod("db", "a", &[("env", "prod")], "10.0.0.2", &[]),
    ];
    let policies = fixed_policies(&[
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: non-prod-only}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress: [{toEndpoints: [{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}]}]
",
        NAMES_POD_PREFIX,
    ]);
    let config = config(true, true);
    let want = reference_pod_to_pod(&pods, &policies, &config, &pods[0], &pods[1], 80);
    assert_eq!(want, identity_cache::policy::Action::Deny);
    let world = World { pods, policies };
    let cache = build(config, &world);
    check(
        &cache,
        &world.pods,
        &world.policies,
        &config,
        PROBE_80,
        "fixed",
    )
    .unwrap();
}

/// With `cidr_selects_endpoints`, the `world` entity still matches only addresses outside the
/// cluster, not pods whose address lies in a policy prefix.
#[test]
fn k8s_mode_world_entity_does_not_match_pods() {
    let pods = vec![
        fixed_pod("client", "a", &[("app", "client")], "10.0.0.1", &[]),
        fixed_pod("db", "b", &[("app", "db")], "10.0.0.2", &[]),
    ];
    let policies = fixed_policies(&[
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: world-only, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress: [{toEntities: [world]}]
",
        NAMES_POD_PREFIX,
    ]);
    let config = config(true, true);
    let want = reference_pod_to_pod(&pods, &policies, &config, &pods[0], &pods[1], 80);
    assert_eq!(want, identity_cache::policy::Action::Deny);
    let world = World { pods, policies };
    let cache = build(config, &world);
    check(
        &cache,
        &world.pods,
        &world.policies,
        &config,
        PROBE_80,
        "fixed",
    )
    .unwrap();
}

/// With `cidr_selects_endpoints`, an egress rule that reaches a pod only through an ipBlock
/// covering its address does not resolve a named port against that pod (the documented
/// deviation: the match goes through the address's CIDR identity, which has no ports).
#[test]
fn k8s_mode_ip_block_named_port_does_not_resolve_through_the_address() {
    let pods = vec![
        fixed_pod("client", "a", &[("app", "client")], "10.0.0.1", &[]),
        fixed_pod(
            "srv",
            "b",
            &[("app", "srv")],
            "10.0.0.3",
            &[("metrics", 9090)],
        ),
    ];
    let policies = fixed_policies(&["apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: metrics-out, namespace: a}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16}}], ports: [{port: metrics}]}]
"]);
    let config = config(true, true);
    // Deliberate deviation (CONFORMANCE.md): the pod is reached through its address's CIDR
    // identity, which has no container ports, so the name resolves to nothing.
    let want = reference_pod_to_pod(&pods, &policies, &config, &pods[0], &pods[1], 9090);
    assert_eq!(want, identity_cache::policy::Action::Deny);
    let world = World { pods, policies };
    let cache = build(config, &world);
    check(
        &cache,
        &world.pods,
        &world.policies,
        &config,
        PROBE_80,
        "fixed",
    )
    .unwrap();
}

/// An egress rule with any peer and a named port resolves the name against every pod, so a
/// pod that names the port after the rule was compiled counts, and one removed stops counting.
#[test]
fn any_peer_named_port_follows_pods_added_and_removed_later() {
    let client = fixed_pod("client", "a", &[("app", "client")], "10.0.0.1", &[]);
    let srv = fixed_pod("srv", "a", &[("app", "srv")], "10.0.0.3", &[("http", 9090)]);
    let policies = fixed_policies(&["apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: http-out, namespace: a}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}]}]
"]);
    let config = config(true, false);
    let both = vec![client.clone(), srv.clone()];
    let want = reference_pod_to_pod(&both, &policies, &config, &client, &srv, 9090);
    assert_eq!(want, identity_cache::policy::Action::Allow);

    // Policy, then the client, then the pod naming the port.
    let mut cache = IdentityCache::new(ClusterKey::default(), config);
    cache.upsert_policy(policies[0].1.clone());
    cache
        .upsert_workload(client.workload())
        .expect("no collision");
    cache.upsert_workload(srv.workload()).expect("no collision");
    let added = check(
        &cache,
        &both,
        &policies,
        &config,
        PROBE_80,
        "srv added last",
    );

    // In order, then the pod naming the port goes away.
    let mut cache = build(
        config,
        &World {
            pods: both.clone(),
            policies: policies.clone(),
        },
    );
    check(&cache, &both, &policies, &config, PROBE_80, "in order").unwrap();
    cache.remove_workload("srv");
    let removed = check(
        &cache,
        &[client],
        &policies,
        &config,
        PROBE_80,
        "srv removed",
    );
    let failures: Vec<String> = [added, removed]
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
