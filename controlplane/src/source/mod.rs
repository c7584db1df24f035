//! Sources of truth: what the agent should enforce, as desired state.
//!
//! A source describes endpoints (pods on this node), namespaces (their labels feed
//! identities) and policies. The standalone source ([`files::DirectorySource`]) reads them from
//! a directory of YAML files; the Kubernetes source (a later issue) produces the same
//! [`Desired`] state from API watches, so the agent does not care where it came from.

pub mod files;

use std::collections::BTreeMap;
use std::net::IpAddr;

use identity_cache::endpoint::NamedPort;
use identity_cache::policy::{Policy, PolicyKey};

use crate::api::Rejection;

/// How an endpoint's traffic is enforced.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// Decided and enforced (by the fast path, the kernel path as fallback).
    #[default]
    Enforce,
    /// Decided and reported (verdict AUDIT) but forwarded.
    Audit,
    /// Decided and enforced by the in-kernel path only.
    Kernel,
}

impl EndpointMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Enforce => "enforce",
            EndpointMode::Audit => "audit",
            EndpointMode::Kernel => "kernel",
        }
    }
}

/// A pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod UID (owner of its ipcache entries).
    pub uid: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Host-side interface name.
    pub interface: String,
    /// Addresses.
    pub ips: Vec<IpAddr>,
    /// The pod interface's MAC.
    pub mac: [u8; 6],
    /// Named ports.
    pub ports: Vec<NamedPort>,
    /// Enforcement mode.
    pub mode: EndpointMode,
    /// The pod's labels are not known yet (attached by CNI before any source described it):
    /// it has the reserved `init` identity, default-deny unless policy allows `init`.
    pub init: bool,
}

/// Everything a source says should be enforced, with what it refused.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Endpoints by (namespace, name).
    pub endpoints: BTreeMap<(String, String), EndpointSpec>,
    /// Pods known by their metadata whose attachment (interface, addresses, MAC) the CNI
    /// plugin reports (their `interface` is empty until then).
    pub awaiting_cni: BTreeMap<(String, String), EndpointSpec>,
    /// Namespace labels by namespace.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Policies by key.
    pub policies: BTreeMap<PolicyKey, Policy>,
    /// Where each object came from (file path), for status.
    pub origins: BTreeMap<String, String>,
    /// Files or objects refused, with the reason.
    pub rejected: Vec<Rejection>,
}
