//! The policy model: what CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Kubernetes
//! NetworkPolicy manifests mean, normalised into one rule form the compiler understands.
//!
//! Parsing lives in [`cilium`] and [`k8s`]; [`parse_manifests`] reads multi-document YAML and
//! dispatches on `apiVersion`/`kind`. Every rule keeps where it came from (policy and rule
//! index) so each verdict can name the rule that made it.

pub mod cilium;
pub mod error;
mod fields;
pub mod k8s;
mod manifest;

use std::fmt;

use ipnet::IpNet;

pub use error::{PolicyError, PolicyErrorKind};
pub use fields::IntOrString;
pub use manifest::{
    ParsedManifest, parse_document_at, parse_manifest, parse_manifests, split_documents,
};

use crate::protocol::Protocol;
use crate::selector::Selector;

/// Which API a policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `cilium.io/v2` CiliumNetworkPolicy (namespaced).
    CiliumNetworkPolicy,
    /// `cilium.io/v2` CiliumClusterwideNetworkPolicy.
    CiliumClusterwideNetworkPolicy,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
}

impl PolicyKind {
    /// The short name used in flow output (`cnp`, `ccnp`, `knp`).
    pub fn short(self) -> &'static str {
        match self {
            PolicyKind::CiliumNetworkPolicy => "cnp",
            PolicyKind::CiliumClusterwideNetworkPolicy => "ccnp",
            PolicyKind::NetworkPolicy => "knp",
        }
    }
}

/// A policy's identity: kind, namespace (none for cluster-wide) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The API kind.
    pub kind: PolicyKind,
    /// The namespace, `None` for cluster-wide policies.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}", ns, self.name),
            None => write!(f, "{}:{}", self.kind.short(), self.name),
        }
    }
}

/// Traffic direction, from the point of view of the selected (local) endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic arriving at the endpoint.
    Ingress,
    /// Traffic leaving the endpoint.
    Egress,
}

impl Direction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Permit the traffic (unless a deny also matches).
    Allow,
    /// Drop the traffic, whatever allows it.
    Deny,
}

/// Cilium entities: named groups of identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    /// Everything outside the cluster (world identities and CIDR identities).
    World,
    /// Everything inside the cluster: workloads and the reserved non-world identities.
    Cluster,
    /// The local node's host.
    Host,
    /// Other nodes' hosts.
    RemoteNode,
    /// Endpoints whose identity is not resolved yet.
    Init,
    /// Health endpoints.
    Health,
    /// Unmanaged pods.
    Unmanaged,
    /// The Kubernetes API server.
    KubeApiserver,
    /// Every identity.
    All,
}

impl Entity {
    /// Parses the name used in `fromEntities`/`toEntities`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "world" => Entity::World,
            "cluster" => Entity::Cluster,
            "host" => Entity::Host,
            "remote-node" => Entity::RemoteNode,
            "init" => Entity::Init,
            "health" => Entity::Health,
            "unmanaged" => Entity::Unmanaged,
            "kube-apiserver" => Entity::KubeApiserver,
            "all" => Entity::All,
            _ => return None,
        })
    }
}

/// A CIDR peer with exceptions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidrPeer {
    /// The prefix (truncated).
    pub net: IpNet,
    /// Prefixes inside `net` that are not matched.
    pub except: Vec<IpNet>,
}

impl CidrPeer {
    /// Whether `prefix` lies inside `net` and inside none of the exceptions.
    pub fn covers_prefix(&self, prefix: &IpNet) -> bool {
        self.net.contains(prefix) && !self.except.iter().any(|e| e.contains(prefix))
    }

    /// Whether the address lies inside `net` and inside none of the exceptions.
    pub fn covers_addr(&self, addr: &std::net::IpAddr) -> bool {
        self.net.contains(addr) && !self.except.iter().any(|e| e.contains(addr))
    }
}

/// The other side of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// Identities whose labels the selector matches (already namespace-scoped as needed).
    Endpoints(Selector),
    /// A named entity.
    Entity(Entity),
    /// Addresses in a prefix.
    Cidr(CidrPeer),
}

/// Which peers a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peers {
    /// Every peer, inside or outside the cluster.
    Any,
    /// Only these peers (ORed). An empty list matches nothing.
    Only(Vec<Peer>),
}

/// A port or ICMP-type condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    /// A protocol (`None`: TCP, UDP and SCTP) and an inclusive port range (1..=65535: all).
    Range {
        /// The protocol, `None` for any of TCP/UDP/SCTP.
        protocol: Option<Protocol>,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// A named container port of the destination pod.
    Named {
        /// The protocol, `None` for any.
        protocol: Option<Protocol>,
        /// The port name.
        name: String,
    },
    /// An ICMP or ICMPv6 type.
    IcmpType {
        /// `Icmp` or `IcmpV6`.
        protocol: Protocol,
        /// The ICMP type.
        icmp_type: u8,
    },
}

/// Which ports a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ports {
    /// Every protocol and port.
    Any,
    /// Only these (ORed).
    Only(Vec<PortSpec>),
}

/// An L7 HTTP rule, parsed and kept; enforced by a later L7 stage, not at L3/L4.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpRule {
    /// Method regex, if any.
    pub method: Option<String>,
    /// Path regex, if any.
    pub path: Option<String>,
}

/// One normalised rule: subject, direction, action, peers and ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Index of the rule inside its policy, in the order written (for attribution).
    pub index: u32,
    /// Which local endpoints the rule applies to.
    pub subject: Selector,
    /// Ingress or egress.
    pub direction: Direction,
    /// Allow or deny.
    pub action: Action,
    /// The other side.
    pub peers: Peers,
    /// The ports.
    pub ports: Ports,
    /// Whether this rule puts its subjects into default deny in its direction.
    pub enables_default_deny: bool,
    /// L7 HTTP rules attached to the ports (kept, not enforced at L3/L4).
    pub http: Vec<HttpRule>,
}

/// A parsed, validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Kind, namespace and name.
    pub key: PolicyKey,
    /// The normalised rules.
    pub rules: Vec<Rule>,
    /// The `description` field, if any.
    pub description: Option<String>,
}
