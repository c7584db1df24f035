//! Why a policy was rejected: which policy, which field, and what is wrong with it.

use std::fmt;

use crate::selector::SelectorError;

/// A rejected policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{policy}: {path}: {kind}")]
pub struct PolicyError {
    /// The policy as `Kind ns/name`, or `document N` when the name is unknown.
    pub policy: String,
    /// The field path inside the manifest (`spec.ingress[0].toPorts[0].ports[1].port`), or
    /// `-` where the whole document is wrong.
    pub path: String,
    /// 1-based line in the source text, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

/// What is wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyErrorKind {
    /// The text is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// A field has the wrong type, is unknown, or a required one is missing.
    #[error("{0}")]
    Schema(String),
    /// The document is not a policy kind sluice reads.
    #[error(
        "unsupported apiVersion/kind {api_version}/{kind} (expected cilium.io/v2 CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy, or networking.k8s.io/v1 NetworkPolicy)"
    )]
    UnsupportedKind {
        /// The `apiVersion` given.
        api_version: String,
        /// The `kind` given.
        kind: String,
    },
    /// `metadata.name` is missing or empty.
    #[error("metadata.name is required")]
    MissingName,
    /// A required field is absent.
    #[error("required field is missing")]
    Missing,
    /// A label selector is invalid.
    #[error("invalid selector: {0}")]
    Selector(#[from] SelectorError),
    /// A CIDR does not parse.
    #[error("invalid CIDR {value:?}: {reason}")]
    Cidr {
        /// The text given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An `except` prefix is not inside its CIDR.
    #[error("except {except} is not inside {cidr}")]
    ExceptOutsideCidr {
        /// The enclosing CIDR.
        cidr: String,
        /// The offending exception.
        except: String,
    },
    /// A port is not a number in 0..=65535 nor a valid port name.
    #[error(
        "invalid port {0:?} (expected 0-65535 or a port name of at most 15 lowercase letters, digits and '-')"
    )]
    Port(String),
    /// `endPort` is invalid for this port.
    #[error("invalid endPort {end_port}: {reason}")]
    EndPort {
        /// The endPort given.
        end_port: i64,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The protocol name is unknown here.
    #[error("unknown protocol {0:?} (expected TCP, UDP, SCTP or ANY)")]
    Protocol(String),
    /// The entity name is unknown.
    #[error(
        "unknown entity {0:?} (expected world, cluster, host, remote-node, init, health, unmanaged, kube-apiserver or all)"
    )]
    Entity(String),
    /// An ICMP type or family is invalid.
    #[error("invalid ICMP field: {0}")]
    Icmp(String),
    /// A `policyTypes` entry is not Ingress or Egress.
    #[error("invalid policy type {0:?} (expected Ingress or Egress)")]
    PolicyType(String),
    /// A field sluice parses but does not enforce yet; rejected rather than silently ignored.
    #[error("{0} is not supported by sluice")]
    Unsupported(&'static str),
    /// An ipBlock is combined with a selector in one peer.
    #[error("ipBlock cannot be combined with podSelector or namespaceSelector in one peer")]
    IpBlockWithSelector,
}

/// Builds field paths while walking a manifest.
#[derive(Clone, Debug)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    pub(crate) fn root(name: &str) -> Self {
        FieldPath(name.to_owned())
    }

    pub(crate) fn field(&self, name: &str) -> Self {
        FieldPath(format!("{}.{}", self.0, name))
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }

    pub(crate) fn join(&self, suffix: &str) -> Self {
        if suffix.is_empty() {
            self.clone()
        } else {
            self.field(suffix)
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error found while converting a spec: the path and the problem. The manifest layer adds
/// the policy name and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Field path inside the manifest.
    pub path: String,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

impl SpecError {
    pub(crate) fn at(path: &FieldPath, kind: impl Into<PolicyErrorKind>) -> Self {
        SpecError {
            path: path.to_string(),
            kind: kind.into(),
        }
    }
}
