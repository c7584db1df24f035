//! A deliberately simple, slow reference evaluator for L3/L4 policy, written from the policy
//! model's semantics and independently of the compiler.
//!
//! It works on [`Policy`] values and plain descriptions of the peers (labels, addresses, named
//! ports), with no identities, no caches and no precomputed tables: every call walks every
//! rule of every policy. Property tests hold the compiled tables ([`crate::state::Snapshot`])
//! equal to it.
//!
//! Semantics, in order:
//! 1. A packet passes iff the source's egress verdict (when the source is a pod) and the
//!    destination's ingress verdict (when the destination is a pod) both allow.
//! 2. For one direction at a local pod `L` against a remote peer `R`, the rules considered are
//!    those of that direction whose subject selects `L`. A matching deny rule denies; else a
//!    matching allow rule allows; else, at ingress with `allow_from_host`, the `host` entity
//!    is allowed; else the direction is denied iff some considered rule enables default deny.
//! 3. CIDR peers match an external address through the longest prefix, among all prefixes
//!    named by all policies, that contains it (the address's CIDR identity); pod addresses
//!    only with `cidr_selects_endpoints`; reserved entities never.
//! 4. Named ports resolve against the destination's named ports: the local pod at ingress,
//!    the remote pod at egress, every pod of the world for egress rules with any peer.
//!
//! Pods with the same label set share an identity, so the named ports of a pod are taken to
//! be the union of the named ports of every pod of the world with its label set.
//! `init_default_deny` has no effect here: the reference has no pods in the `init` identity.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::endpoint::NamedPort;
use crate::identity::{ReservedIdentity, cidr_labels};
use crate::labels::LabelSet;
use crate::policy::{
    Action, CidrPeer, Direction, Entity, Peer, Peers, Policy, PortSpec, Ports, Rule,
};
use crate::protocol::Protocol;
use crate::tables::EnforcementConfig;

/// A pod as the reference sees it: its canonical labels, address and named ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefPod {
    /// Canonical labels (as [`crate::labels::workload_labels`] makes them).
    pub labels: LabelSet,
    /// Its address.
    pub ip: IpAddr,
    /// Its named container ports.
    pub named_ports: Vec<NamedPort>,
}

/// Every pod that exists (for named-port resolution and shared identities).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefWorld {
    /// The pods.
    pub pods: Vec<RefPod>,
}

/// One side of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefPeer {
    /// A pod (policy is enforced at it).
    Pod(RefPod),
    /// An address outside the cluster.
    External(IpAddr),
    /// A reserved entity (`host`, `remote-node`, `kube-apiserver`, …) at an address.
    Reserved(ReservedIdentity, IpAddr),
}

impl RefPeer {
    /// The peer's address.
    pub fn ip(&self) -> IpAddr {
        match self {
            RefPeer::Pod(pod) => pod.ip,
            RefPeer::External(ip) | RefPeer::Reserved(_, ip) => *ip,
        }
    }
}

/// Decides a packet from `src` to `dst`: allowed iff the egress verdict of `src` (when it is
/// a pod) and the ingress verdict of `dst` (when it is a pod) both allow. For ICMP, `port` is
/// the ICMP type.
pub fn decide(
    world: &RefWorld,
    policies: &[Policy],
    config: &EnforcementConfig,
    src: &RefPeer,
    dst: &RefPeer,
    protocol: Protocol,
    port: u16,
) -> Action {
    if let RefPeer::Pod(local) = src {
        let egress = decide_direction(
            world,
            policies,
            config,
            local,
            dst,
            Direction::Egress,
            protocol,
            port,
        );
        if egress == Action::Deny {
            return Action::Deny;
        }
    }
    if let RefPeer::Pod(local) = dst {
        let ingress = decide_direction(
            world,
            policies,
            config,
            local,
            src,
            Direction::Ingress,
            protocol,
            port,
        );
        if ingress == Action::Deny {
            return Action::Deny;
        }
    }
    Action::Allow
}

/// Decides one direction at the local pod `local` against the remote peer `remote`.
#[allow(clippy::too_many_arguments)]
pub fn decide_direction(
    world: &RefWorld,
    policies: &[Policy],
    config: &EnforcementConfig,
    local: &RefPod,
    remote: &RefPeer,
    direction: Direction,
    protocol: Protocol,
    port: u16,
) -> Action {
    let prefixes = policy_prefixes(policies);
    let considered: Vec<&Rule> = policies
        .iter()
        .flat_map(|p| p.rules.iter())
        .filter(|r| r.direction == direction && r.subject.matches(&local.labels))
        .collect();
    let hits = |r: &Rule| {
        peers_match(&r.peers, remote, &prefixes, config)
            && ports_match(world, local, remote, r, protocol, port, &prefixes, config)
    };
    if considered
        .iter()
        .any(|r| r.action == Action::Deny && hits(r))
    {
        return Action::Deny;
    }
    if considered
        .iter()
        .any(|r| r.action == Action::Allow && hits(r))
    {
        return Action::Allow;
    }
    if direction == Direction::Ingress
        && config.allow_from_host
        && matches!(remote, RefPeer::Reserved(ReservedIdentity::Host, _))
    {
        return Action::Allow;
    }
    if considered.iter().any(|r| r.enables_default_deny) {
        Action::Deny
    } else {
        Action::Allow
    }
}

/// Every prefix named by any policy: each CIDR peer's prefix and each of its exceptions.
pub fn policy_prefixes(policies: &[Policy]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for rule in policies.iter().flat_map(|p| p.rules.iter()) {
        if let Peers::Only(list) = &rule.peers {
            for peer in list {
                if let Peer::Cidr(c) = peer {
                    out.push(c.net.trunc());
                    out.extend(c.except.iter().map(IpNet::trunc));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The longest prefix of `prefixes` that contains `ip`.
pub fn longest_prefix(prefixes: &[IpNet], ip: IpAddr) -> Option<IpNet> {
    prefixes
        .iter()
        .filter(|p| p.contains(&ip))
        .max_by_key(|p| p.prefix_len())
        .copied()
}

/// The labels an Endpoints selector sees on a remote peer: a pod's own labels, a reserved
/// entity's reserved labels, and for an external address the labels of its CIDR identity
/// (the longest policy prefix containing it), or of `world-ipv4`/`world-ipv6` when none does.
pub fn peer_labels(remote: &RefPeer, prefixes: &[IpNet]) -> LabelSet {
    match remote {
        RefPeer::Pod(pod) => pod.labels.clone(),
        RefPeer::Reserved(r, _) => r.labels(),
        RefPeer::External(ip) => match longest_prefix(prefixes, *ip) {
            Some(p) => cidr_labels(p),
            None if ip.is_ipv4() => ReservedIdentity::WorldIpv4.labels(),
            None => ReservedIdentity::WorldIpv6.labels(),
        },
    }
}

fn peers_match(
    peers: &Peers,
    remote: &RefPeer,
    prefixes: &[IpNet],
    config: &EnforcementConfig,
) -> bool {
    match peers {
        Peers::Any => true,
        Peers::Only(list) => list
            .iter()
            .any(|p| peer_matches(p, remote, prefixes, config)),
    }
}

/// Whether one peer of a rule matches the remote peer.
pub fn peer_matches(
    peer: &Peer,
    remote: &RefPeer,
    prefixes: &[IpNet],
    config: &EnforcementConfig,
) -> bool {
    match peer {
        Peer::Endpoints(sel) => sel.matches(&peer_labels(remote, prefixes)),
        Peer::Entity(e) => entity_matches(*e, remote),
        Peer::Cidr(c) => match remote {
            RefPeer::External(ip) => cidr_matches(c, prefixes, *ip),
            RefPeer::Pod(pod) => config.cidr_selects_endpoints && cidr_matches(c, prefixes, pod.ip),
            RefPeer::Reserved(..) => false,
        },
    }
}

fn entity_matches(entity: Entity, remote: &RefPeer) -> bool {
    use ReservedIdentity as R;
    let reserved = match remote {
        RefPeer::Reserved(r, _) => Some(*r),
        _ => None,
    };
    match entity {
        Entity::All => true,
        Entity::World => {
            matches!(remote, RefPeer::External(_))
                || matches!(reserved, Some(R::World | R::WorldIpv4 | R::WorldIpv6))
        }
        Entity::Cluster => {
            matches!(remote, RefPeer::Pod(_))
                || matches!(
                    reserved,
                    Some(
                        R::Host
                            | R::RemoteNode
                            | R::Init
                            | R::Health
                            | R::Unmanaged
                            | R::KubeApiserver
                    )
                )
        }
        Entity::Host => reserved == Some(R::Host),
        Entity::RemoteNode => reserved == Some(R::RemoteNode),
        Entity::Init => reserved == Some(R::Init),
        Entity::Health => reserved == Some(R::Health),
        Entity::Unmanaged => reserved == Some(R::Unmanaged),
        Entity::KubeApiserver => reserved == Some(R::KubeApiserver),
    }
}

/// Whether a CIDR peer matches an address: through the longest policy prefix containing it,
/// which must lie inside the peer's prefix and inside none of its exceptions; with no policy
/// prefix containing the address, only a `/0` of the address's family matches.
pub fn cidr_matches(c: &CidrPeer, prefixes: &[IpNet], ip: IpAddr) -> bool {
    match longest_prefix(prefixes, ip) {
        Some(p) => c.net.contains(&p) && !c.except.iter().any(|e| e.contains(&p)),
        None => c.net.prefix_len() == 0 && c.net.addr().is_ipv4() == ip.is_ipv4(),
    }
}

#[allow(clippy::too_many_arguments)] // the reference spells every input out
fn ports_match(
    world: &RefWorld,
    local: &RefPod,
    remote: &RefPeer,
    rule: &Rule,
    protocol: Protocol,
    port: u16,
    prefixes: &[IpNet],
    config: &EnforcementConfig,
) -> bool {
    let specs = match &rule.ports {
        Ports::Any => return true,
        Ports::Only(specs) => specs,
    };
    specs.iter().any(|spec| match spec {
        PortSpec::Range {
            protocol: None,
            first,
            last,
        } => protocol.has_ports() && (*first..=*last).contains(&port),
        PortSpec::Range {
            protocol: Some(p),
            first,
            last,
        } => *p == protocol && (*first..=*last).contains(&port),
        PortSpec::IcmpType {
            protocol: p,
            icmp_type,
        } => *p == protocol && u16::from(*icmp_type) == port,
        PortSpec::Named { protocol: p, name } => {
            destination_ports(world, local, remote, rule, prefixes, config)
                .iter()
                .any(|np| {
                    np.name == *name
                        && p.is_none_or(|p| p == np.protocol)
                        && np.protocol == protocol
                        && np.port == port
                })
        }
    })
}

/// The named ports a named-port condition of `rule` resolves against.
///
/// A pod that an egress rule reaches only through its address (a CIDR peer, Kubernetes
/// semantics) offers no port names to that rule: the match goes through the address's CIDR
/// identity, which has no container ports (a documented deviation, see CONFORMANCE.md).
fn destination_ports(
    world: &RefWorld,
    local: &RefPod,
    remote: &RefPeer,
    rule: &Rule,
    prefixes: &[IpNet],
    config: &EnforcementConfig,
) -> Vec<NamedPort> {
    if let (Direction::Egress, Peers::Only(list), RefPeer::Pod(_)) =
        (rule.direction, &rule.peers, remote)
        && !list
            .iter()
            .any(|p| !matches!(p, Peer::Cidr(_)) && peer_matches(p, remote, prefixes, config))
    {
        return Vec::new();
    }
    match (rule.direction, &rule.peers, remote) {
        (Direction::Ingress, _, _) => identity_ports(world, local),
        (Direction::Egress, Peers::Any, _) => world
            .pods
            .iter()
            .flat_map(|p| p.named_ports.iter().cloned())
            .collect(),
        (Direction::Egress, Peers::Only(_), RefPeer::Pod(pod)) => identity_ports(world, pod),
        (Direction::Egress, Peers::Only(_), _) => Vec::new(),
    }
}

/// A pod's named ports together with those of every pod of the world sharing its labels.
fn identity_ports(world: &RefWorld, pod: &RefPod) -> Vec<NamedPort> {
    let mut out = pod.named_ports.clone();
    for other in world.pods.iter().filter(|p| p.labels == pod.labels) {
        out.extend(other.named_ports.iter().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Label, LabelFilter, LabelSource, WorkloadMeta, workload_labels};
    use crate::policy::{ParsedManifest, parse_manifest};
    use std::collections::BTreeMap;

    const TCP: Protocol = Protocol::Tcp;

    fn pod(ns: &str, labels: &[(&str, &str)], ip: &str, ports: &[(&str, Protocol, u16)]) -> RefPod {
        let map: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let meta = WorkloadMeta {
            namespace: ns,
            pod_labels: Some(&map),
            ..WorkloadMeta::default()
        };
        RefPod {
            labels: workload_labels(&meta, &LabelFilter::default()),
            ip: ip.parse().unwrap(),
            named_ports: ports
                .iter()
                .map(|(n, p, port)| NamedPort {
                    name: n.to_string(),
                    port: *port,
                    protocol: *p,
                })
                .collect(),
        }
    }

    fn policy(yaml: &str) -> Policy {
        match parse_manifest(yaml).unwrap() {
            ParsedManifest::Policy(p) => p,
            ParsedManifest::Empty => panic!("empty"),
        }
    }

    fn cnp(name: &str, spec: &str) -> Policy {
        policy(&format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: a}}\nspec:\n{spec}"
        ))
    }

    fn knp(name: &str, spec: &str) -> Policy {
        policy(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: a}}\nspec:\n{spec}"
        ))
    }

    fn ext(ip: &str) -> RefPeer {
        RefPeer::External(ip.parse().unwrap())
    }

    fn host() -> RefPeer {
        RefPeer::Reserved(ReservedIdentity::Host, "10.0.1.250".parse().unwrap())
    }

    struct Fixture {
        world: RefWorld,
        web: RefPeer,
        db: RefPeer,
        api: RefPeer,
    }

    fn fixture() -> Fixture {
        let web = pod("a", &[("app", "web")], "10.0.0.1", &[("http", TCP, 8080)]);
        let db = pod("a", &[("app", "db")], "10.0.0.2", &[("sql", TCP, 5432)]);
        let api = pod("a", &[("app", "api")], "10.0.1.3", &[("http", TCP, 9090)]);
        Fixture {
            world: RefWorld {
                pods: vec![web.clone(), db.clone(), api.clone()],
            },
            web: RefPeer::Pod(web),
            db: RefPeer::Pod(db),
            api: RefPeer::Pod(api),
        }
    }

    fn cfg() -> EnforcementConfig {
        EnforcementConfig {
            allow_from_host: true,
            cidr_selects_endpoints: false,
            init_default_deny: true,
        }
    }

    fn verdict(
        f: &Fixture,
        ps: &[Policy],
        src: &RefPeer,
        dst: &RefPeer,
        proto: Protocol,
        port: u16,
    ) -> Action {
        decide(&f.world, ps, &cfg(), src, dst, proto, port)
    }

    use Action::{Allow, Deny};

    #[test]
    fn no_policy_allows_everything() {
        let f = fixture();
        assert_eq!(verdict(&f, &[], &f.web, &f.db, TCP, 1), Allow);
        assert_eq!(
            verdict(&f, &[], &ext("8.8.8.8"), &f.db, Protocol::Icmp, 8),
            Allow
        );
    }

    #[test]
    fn subjects_select_local_pods_and_default_deny_applies_to_them_only() {
        let f = fixture();
        let p = cnp(
            "p",
            "  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: db}}]}]",
        );
        let ps = [p];
        assert_eq!(verdict(&f, &ps, &f.db, &f.web, TCP, 80), Allow);
        assert_eq!(verdict(&f, &ps, &f.api, &f.web, TCP, 80), Deny);
        // db is not selected: its ingress is not enforced; web's egress neither.
        assert_eq!(verdict(&f, &ps, &f.web, &f.db, TCP, 80), Allow);
        assert_eq!(verdict(&f, &ps, &ext("8.8.8.8"), &f.api, TCP, 80), Allow);
    }

    #[test]
    fn both_directions_must_allow() {
        let f = fixture();
        let egress = cnp(
            "e",
            "  endpointSelector: {matchLabels: {app: db}}\n  egress: [{toEndpoints: [{matchLabels: {app: api}}]}]",
        );
        let ingress = cnp(
            "i",
            "  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{}]}]",
        );
        let ps = [egress, ingress];
        assert_eq!(
            verdict(&f, &ps, &f.db, &f.web, TCP, 80),
            Deny,
            "db egress denies"
        );
        assert_eq!(verdict(&f, &ps, &f.db, &f.api, TCP, 80), Allow);
        assert_eq!(verdict(&f, &ps, &f.api, &f.web, TCP, 80), Allow);
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = fixture();
        let allow = cnp(
            "allow",
            "  endpointSelector: {}\n  ingress: [{fromEntities: [all]}]",
        );
        let deny = cnp(
            "deny",
            "  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny: [{fromEndpoints: [{matchLabels: {app: db}}], toPorts: [{ports: [{port: '80'}]}]}]",
        );
        let ps = [allow, deny];
        assert_eq!(verdict(&f, &ps, &f.db, &f.web, TCP, 80), Deny);
        assert_eq!(verdict(&f, &ps, &f.db, &f.web, TCP, 81), Allow);
        assert_eq!(verdict(&f, &ps, &f.api, &f.web, TCP, 80), Allow);
    }

    #[test]
    fn allow_from_host_admits_host_unless_denied() {
        let f = fixture();
        let lock = knp("lock", "  podSelector: {}\n  policyTypes: [Ingress]");
        let ps = [lock.clone()];
        assert_eq!(verdict(&f, &ps, &host(), &f.web, TCP, 80), Allow);
        let no_host = EnforcementConfig {
            allow_from_host: false,
            ..cfg()
        };
        assert_eq!(
            decide(&f.world, &ps, &no_host, &host(), &f.web, TCP, 80),
            Deny
        );
        // Egress from a pod to the host gets no such exception.
        let egress = knp("eg", "  podSelector: {}\n  policyTypes: [Egress]");
        assert_eq!(verdict(&f, &[egress], &f.web, &host(), TCP, 80), Deny);
        let deny = cnp(
            "d",
            "  endpointSelector: {}\n  ingressDeny: [{fromEntities: [host]}]",
        );
        assert_eq!(verdict(&f, &[lock, deny], &host(), &f.web, TCP, 80), Deny);
    }

    #[test]
    fn enable_default_deny_false_leaves_unmatched_traffic_allowed() {
        let f = fixture();
        let p = cnp(
            "p",
            "  endpointSelector: {}\n  enableDefaultDeny: {ingress: false}\n  ingress: [{fromEndpoints: [{matchLabels: {app: db}}]}]",
        );
        assert_eq!(
            verdict(&f, std::slice::from_ref(&p), &f.api, &f.web, TCP, 80),
            Allow
        );
        let on = cnp("q", "  endpointSelector: {}\n  ingress: [{}]");
        assert_eq!(
            verdict(&f, &[p.clone(), on.clone()], &f.api, &f.web, TCP, 80),
            Deny
        );
        assert_eq!(verdict(&f, &[p, on], &f.db, &f.web, TCP, 80), Allow);
    }

    #[test]
    fn entities_match_their_peers() {
        let f = fixture();
        let with = |entity: &str| {
            vec![cnp(
                "p",
                &format!("  endpointSelector: {{}}\n  egress: [{{toEntities: [{entity}]}}]"),
            )]
        };
        let kube = RefPeer::Reserved(ReservedIdentity::KubeApiserver, "10.1.0.1".parse().unwrap());
        let remote = RefPeer::Reserved(ReservedIdentity::RemoteNode, "10.1.0.2".parse().unwrap());
        let world = with("world");
        assert_eq!(verdict(&f, &world, &f.web, &ext("8.8.8.8"), TCP, 80), Allow);
        assert_eq!(verdict(&f, &world, &f.web, &ext("fd00::1"), TCP, 80), Allow);
        assert_eq!(verdict(&f, &world, &f.web, &f.db, TCP, 80), Deny);
        assert_eq!(verdict(&f, &world, &f.web, &host(), TCP, 80), Deny);
        let cluster = with("cluster");
        assert_eq!(verdict(&f, &cluster, &f.web, &f.db, TCP, 80), Allow);
        assert_eq!(verdict(&f, &cluster, &f.web, &host(), TCP, 80), Allow);
        assert_eq!(verdict(&f, &cluster, &f.web, &kube, TCP, 80), Allow);
        assert_eq!(
            verdict(&f, &cluster, &f.web, &ext("8.8.8.8"), TCP, 80),
            Deny
        );
        let all = with("all");
        for peer in [&f.db, &host(), &kube, &ext("1.1.1.1")] {
            assert_eq!(verdict(&f, &all, &f.web, peer, TCP, 80), Allow);
        }
        let apiserver = with("kube-apiserver");
        assert_eq!(verdict(&f, &apiserver, &f.web, &kube, TCP, 443), Allow);
        assert_eq!(verdict(&f, &apiserver, &f.web, &remote, TCP, 443), Deny);
        assert_eq!(verdict(&f, &apiserver, &f.web, &host(), TCP, 443), Deny);
        assert_eq!(
            verdict(&f, &with("remote-node"), &f.web, &remote, TCP, 443),
            Allow
        );
    }

    #[test]
    fn endpoint_selectors_see_reserved_and_cidr_labels() {
        let f = fixture();
        let any = [cnp(
            "p",
            "  endpointSelector: {}\n  egress: [{toEndpoints: [{}]}]",
        )];
        // Cilium namespaces the empty peer selector: it then matches only pods of `a`.
        assert_eq!(verdict(&f, &any, &f.web, &ext("8.8.8.8"), TCP, 80), Deny);
        let ccnp = policy(
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec:\n  endpointSelector: {}\n  egress: [{toEndpoints: [{}]}]",
        );
        assert_eq!(
            verdict(
                &f,
                std::slice::from_ref(&ccnp),
                &f.web,
                &ext("8.8.8.8"),
                TCP,
                80
            ),
            Allow
        );
        assert_eq!(verdict(&f, &[ccnp], &f.web, &host(), TCP, 80), Allow);
        let host_sel = [cnp(
            "h",
            "  endpointSelector: {}\n  egress: [{toEndpoints: [{matchLabels: {'reserved:host': ''}}]}]",
        )];
        assert_eq!(verdict(&f, &host_sel, &f.web, &host(), TCP, 80), Allow);
        assert_eq!(verdict(&f, &host_sel, &f.web, &f.db, TCP, 80), Deny);
        let world_sel = [cnp(
            "w",
            "  endpointSelector: {}\n  egress: [{toEndpoints: [{matchLabels: {'reserved:world': ''}}], toCIDR: [192.168.0.0/16]}]",
        )];
        assert_eq!(
            verdict(&f, &world_sel, &f.web, &ext("8.8.8.8"), TCP, 80),
            Allow
        );
        assert_eq!(
            verdict(&f, &world_sel, &f.web, &ext("192.168.3.3"), TCP, 80),
            Allow
        );
        let prefixes = policy_prefixes(&world_sel);
        let labels = peer_labels(&ext("192.168.3.3"), &prefixes);
        assert!(labels.has(Some(LabelSource::Cidr), "192.168.0.0/16"));
        assert!(labels.has(Some(LabelSource::Reserved), "world"));
        let v6 = peer_labels(&ext("fd00::1"), &prefixes);
        assert!(v6.has(Some(LabelSource::Reserved), "world-ipv6"));
        assert_eq!(
            peer_labels(&host(), &prefixes),
            LabelSet::new([Label::new(LabelSource::Reserved, "host", "")])
        );
    }

    #[test]
    fn cidr_peers_go_through_the_longest_policy_prefix() {
        let f = fixture();
        let allow = cnp(
            "p",
            "  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]}]",
        );
        let other = cnp(
            "q",
            "  endpointSelector: {matchLabels: {app: none}}\n  egress: [{toCIDR: [10.1.2.0/24, 10.2.0.0/16]}]",
        );
        let ps = [allow, other];
        assert_eq!(verdict(&f, &ps, &f.web, &ext("10.3.0.1"), TCP, 80), Allow);
        assert_eq!(verdict(&f, &ps, &f.web, &ext("10.2.0.1"), TCP, 80), Allow);
        assert_eq!(verdict(&f, &ps, &f.web, &ext("10.1.0.1"), TCP, 80), Deny);
        assert_eq!(
            verdict(&f, &ps, &f.web, &ext("10.1.2.3"), TCP, 80),
            Deny,
            "inside except"
        );
        assert_eq!(verdict(&f, &ps, &f.web, &ext("11.0.0.1"), TCP, 80), Deny);
        // Pods only in Kubernetes mode; reserved entities never.
        assert_eq!(verdict(&f, &ps, &f.web, &f.db, TCP, 80), Deny);
        let k8s = EnforcementConfig {
            cidr_selects_endpoints: true,
            ..cfg()
        };
        assert_eq!(decide(&f.world, &ps, &k8s, &f.web, &f.db, TCP, 80), Allow);
        assert_eq!(decide(&f.world, &ps, &k8s, &f.web, &host(), TCP, 80), Deny);
        let prefixes = policy_prefixes(&ps);
        assert_eq!(prefixes.len(), 4);
        let c = CidrPeer {
            net: "0.0.0.0/0".parse().unwrap(),
            except: Vec::new(),
        };
        assert!(cidr_matches(&c, &[], "1.2.3.4".parse().unwrap()));
        assert!(!cidr_matches(&c, &[], "fd00::1".parse().unwrap()));
    }

    #[test]
    fn knp_ip_block_except_and_pod_addresses() {
        let f = fixture();
        let p = knp(
            "p",
            "  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]",
        );
        let k8s = EnforcementConfig {
            cidr_selects_endpoints: true,
            ..cfg()
        };
        let ps = [p];
        assert_eq!(decide(&f.world, &ps, &k8s, &f.db, &f.web, TCP, 80), Allow);
        assert_eq!(
            decide(&f.world, &ps, &k8s, &f.api, &f.web, TCP, 80),
            Deny,
            "10.0.1.3 excepted"
        );
        assert_eq!(decide(&f.world, &ps, &cfg(), &f.db, &f.web, TCP, 80), Deny);
        assert_eq!(
            decide(&f.world, &ps, &cfg(), &ext("10.0.7.7"), &f.web, TCP, 80),
            Allow
        );
    }

    #[test]
    fn port_conditions() {
        let f = fixture();
        let any_port = [cnp(
            "p",
            "  endpointSelector: {}\n  ingress: [{fromEntities: [all]}]",
        )];
        assert_eq!(
            verdict(&f, &any_port, &f.db, &f.web, Protocol::Icmp, 8),
            Allow
        );
        let ranges = [cnp(
            "p",
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: '5000', endPort: 5003}, {port: '53', protocol: UDP}]}], icmps: [{fields: [{type: 8}]}]}]",
        )];
        assert_eq!(verdict(&f, &ranges, &f.db, &f.web, TCP, 5000), Allow);
        assert_eq!(
            verdict(&f, &ranges, &f.db, &f.web, Protocol::Sctp, 5003),
            Allow
        );
        assert_eq!(verdict(&f, &ranges, &f.db, &f.web, TCP, 5004), Deny);
        assert_eq!(
            verdict(&f, &ranges, &f.db, &f.web, Protocol::Icmp, 5000),
            Deny
        );
        assert_eq!(
            verdict(&f, &ranges, &f.db, &f.web, Protocol::Udp, 53),
            Allow
        );
        assert_eq!(verdict(&f, &ranges, &f.db, &f.web, TCP, 53), Deny);
        assert_eq!(
            verdict(&f, &ranges, &f.db, &f.web, Protocol::Icmp, 8),
            Allow
        );
        assert_eq!(
            verdict(&f, &ranges, &f.db, &f.web, Protocol::IcmpV6, 8),
            Deny
        );
        assert_eq!(verdict(&f, &ranges, &f.db, &f.web, Protocol::Icmp, 0), Deny);
    }

    #[test]
    fn named_ports_resolve_against_the_destination() {
        let f = fixture();
        let ingress = [cnp(
            "p",
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: http}]}]}]",
        )];
        assert_eq!(verdict(&f, &ingress, &f.db, &f.web, TCP, 8080), Allow);
        assert_eq!(
            verdict(&f, &ingress, &f.db, &f.web, TCP, 9090),
            Deny,
            "api's http, not web's"
        );
        assert_eq!(verdict(&f, &ingress, &f.db, &f.api, TCP, 9090), Allow);
        assert_eq!(
            verdict(&f, &ingress, &f.db, &f.web, Protocol::Udp, 8080),
            Deny
        );
        let to_pods = [cnp(
            "p",
            "  endpointSelector: {}\n  egress: [{toEndpoints: [{}], toEntities: [world], toPorts: [{ports: [{port: http}]}]}]",
        )];
        assert_eq!(verdict(&f, &to_pods, &f.db, &f.web, TCP, 8080), Allow);
        assert_eq!(verdict(&f, &to_pods, &f.db, &f.web, TCP, 9090), Deny);
        assert_eq!(
            verdict(&f, &to_pods, &f.db, &ext("8.8.8.8"), TCP, 8080),
            Deny,
            "no ports outside"
        );
        let any_peer = [cnp(
            "p",
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: http}]}]}]",
        )];
        assert_eq!(
            verdict(&f, &any_peer, &f.db, &f.web, TCP, 9090),
            Allow,
            "any pod's http"
        );
        assert_eq!(
            verdict(&f, &any_peer, &f.db, &ext("8.8.8.8"), TCP, 8080),
            Allow
        );
        assert_eq!(
            verdict(&f, &any_peer, &f.db, &ext("8.8.8.8"), TCP, 5432),
            Deny
        );
        let knp_udp = [knp(
            "k",
            "  podSelector: {}\n  ingress: [{ports: [{port: http, protocol: UDP}]}]",
        )];
        assert_eq!(verdict(&f, &knp_udp, &f.db, &f.web, TCP, 8080), Deny);
    }

    #[test]
    fn pods_sharing_labels_share_named_ports() {
        let mut f = fixture();
        let twin = pod("a", &[("app", "web")], "10.0.0.9", &[("http", TCP, 8081)]);
        f.world.pods.push(twin);
        let ingress = [cnp(
            "p",
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: http}]}]}]",
        )];
        assert_eq!(verdict(&f, &ingress, &f.db, &f.web, TCP, 8081), Allow);
        assert_eq!(verdict(&f, &ingress, &f.db, &f.web, TCP, 8080), Allow);
    }
}
