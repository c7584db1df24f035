//! Sources of truth: what the agent should enforce, as desired state.
//!
//! A source describes endpoints (pods on this node), namespaces (their labels feed
//! identities) and policies. The standalone source ([`files::DirectorySource`]) reads them from
//! a directory of YAML files; the Kubernetes source (a later issue) produces the same
//! [`Desired`] state from API watches, so the agent does not care where it came from.

pub mod files;
pub mod kube;

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

/// A pod on another node: its addresses carry its identity in the ipcache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteWorkload {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Addresses.
    pub ips: Vec<IpAddr>,
    /// Named ports.
    pub ports: Vec<NamedPort>,
}

/// Everything a source says should be enforced, with what it refused.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Endpoints by (namespace, name).
    pub endpoints: BTreeMap<(String, String), EndpointSpec>,
    /// Pods known by their metadata whose attachment (interface, addresses, MAC) the CNI
    /// plugin reports (their `interface` is empty until then).
    pub awaiting_cni: BTreeMap<(String, String), EndpointSpec>,
    /// Pods on other nodes, by UID.
    pub remote: BTreeMap<String, RemoteWorkload>,
    /// Namespace labels by namespace.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Policies by key.
    pub policies: BTreeMap<PolicyKey, Policy>,
    /// Where each object came from (file path), for status.
    pub origins: BTreeMap<String, String>,
    /// Files or objects refused, with the reason.
    pub rejected: Vec<Rejection>,
}

/// Where the agent's desired state comes from.
pub enum Source {
    /// A directory of YAML files, watched.
    Files {
        /// The directory reader.
        dir: files::DirectorySource,
        /// The file watcher, once started.
        watcher: Option<notify::RecommendedWatcher>,
    },
    /// Kubernetes watches.
    Kube(Box<kube::KubeSource>),
}

impl Source {
    /// A directory source.
    pub fn files(dir: &std::path::Path) -> Source {
        Source::Files {
            dir: files::DirectorySource::new(dir),
            watcher: None,
        }
    }

    /// Change notifications, if the source has them (the caller also polls).
    pub fn changes(&mut self) -> Option<crossbeam::channel::Receiver<()>> {
        match self {
            Source::Files { dir, watcher } => match dir.watch() {
                Ok((w, rx)) => {
                    *watcher = Some(w);
                    Some(rx)
                }
                Err(e) => {
                    tracing::warn!("{e}; the directory is rescanned every 2 s instead");
                    None
                }
            },
            Source::Kube(k) => Some(k.changes()),
        }
    }

    /// Re-reads what changed; whether anything did.
    pub fn refresh(&mut self) -> bool {
        match self {
            Source::Files { dir, .. } => dir.scan(),
            Source::Kube(k) => k.take_dirty(),
        }
    }

    /// What changed since the last call (the incremental form of [`refresh`](Self::refresh)):
    /// a directory rescan is always whole; the Kubernetes source says which pods changed when
    /// nothing else did.
    pub fn take_changes(&mut self) -> kube::KubeChanges {
        match self {
            Source::Files { dir, .. } => {
                if dir.scan() {
                    kube::KubeChanges::Full
                } else {
                    kube::KubeChanges::None
                }
            }
            Source::Kube(k) => k.take_changes(),
        }
    }

    /// Updates `desired` for the pods in `touched` only (see
    /// [`kube::KubeSource::update_pods`]); a directory source has no pods to touch.
    pub fn update_pods(
        &self,
        touched: &[kube::PodTouch],
        desired: &mut Desired,
    ) -> kube::PodUpdate {
        match self {
            Source::Files { .. } => kube::PodUpdate::default(),
            Source::Kube(k) => k.update_pods(touched, desired),
        }
    }

    /// How long to wait after a change notification for the rest of its burst (an editor
    /// writes a file in several steps; a watch event is complete as it comes).
    pub fn settle_time(&self) -> std::time::Duration {
        match self {
            Source::Files { .. } => std::time::Duration::from_millis(30),
            Source::Kube(_) => std::time::Duration::ZERO,
        }
    }

    /// Whether the source has its complete state (until then nothing is applied, and the
    /// dataplane keeps enforcing what it had).
    pub fn is_ready(&self) -> bool {
        match self {
            Source::Files { .. } => true,
            Source::Kube(k) => k.is_ready(),
        }
    }

    /// The desired state.
    pub fn desired(&self) -> Desired {
        match self {
            Source::Files { dir, .. } => dir.desired(),
            Source::Kube(k) => k.desired(),
        }
    }

    /// A one-line description for status.
    pub fn describe(&self) -> String {
        match self {
            Source::Files { dir, .. } => format!("directory {}", dir.dir().display()),
            Source::Kube(k) => {
                let (errors, last) = k.errors();
                let age = k.staleness().map_or("no event yet".to_owned(), |d| {
                    format!("last event {:.1} s ago", d.as_secs_f64())
                });
                let ready = if k.is_ready() {
                    "synced"
                } else {
                    "waiting for the initial lists"
                };
                let cilium = k.cilium();
                if errors > 0 {
                    format!(
                        "kubernetes (node {}, {ready}, {age}, {cilium}, {errors} watch errors, \
                         last: {last})",
                        k.node()
                    )
                } else {
                    format!("kubernetes (node {}, {ready}, {age}, {cilium})", k.node())
                }
            }
        }
    }

    /// Seconds since the source last heard from its origin (Kubernetes only).
    pub fn staleness(&self) -> Option<std::time::Duration> {
        match self {
            Source::Files { .. } => None,
            Source::Kube(k) => k.staleness(),
        }
    }
}
