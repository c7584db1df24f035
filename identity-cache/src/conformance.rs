//! Conformance cases: policy scenarios transcribed from upstream test suites (Kubernetes'
//! network-policy e2e suite, Cilium's connectivity and unit tests, …) with the verdicts those
//! suites assert. [`run_case`] builds the case's endpoints and policies through the same
//! parsing and compilation path the agent uses and decides every probe from the compiled
//! tables.
//!
//! The format is described in the corpus README (`shared/conformance/README.md`). This
//! module does no I/O: callers pass the case text.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::endpoint::NamedPort;
use crate::identity::{ClusterKey, Identity};
use crate::ipcache::Source;
use crate::labels::{LabelFilter, WorkloadMeta, workload_labels};
use crate::policy::{Action, ParsedManifest, parse_manifest};
use crate::protocol::Protocol;
use crate::state::{Enforce, IdentityCache, PeerRef, Snapshot, Workload};
use crate::tables::EnforcementConfig;
use crate::verdict::Verdict;

/// One case file.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// Case id (the file name without extension).
    pub id: String,
    /// `kubernetes-networkpolicy` or `cilium`.
    pub engine: String,
    /// Namespace name → labels.
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Cilium agent settings.
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// Pods.
    pub pods: Vec<PodSpec>,
    /// Policy manifests, one YAML object each.
    pub policies: Vec<String>,
    /// Probes with expected verdicts.
    pub probes: Vec<Probe>,
}

/// Cilium agent settings of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Cluster name (the `io.cilium.k8s.policy.cluster` label).
    pub name: Option<String>,
}

/// A pod of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: Option<String>,
    /// Address.
    pub ip: IpAddr,
    /// Named container ports.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

/// A container port.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Port name.
    pub name: Option<String>,
    /// Number.
    pub container_port: u16,
    /// Protocol (TCP default).
    pub protocol: Option<String>,
}

/// A probe endpoint: a pod (`ns/name`) or a non-pod peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProbePeer {
    /// `namespace/pod`.
    Pod(String),
    /// An address, entity or both.
    Other {
        /// Address outside the cluster.
        cidr: Option<IpAddr>,
        /// Entity name (`host`, `remote-node`, `world`, `kube-apiserver`).
        entity: Option<String>,
        /// Address of a node.
        ip: Option<IpAddr>,
    },
}

/// A probe: a new connection and the verdict upstream asserts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Source.
    pub from: ProbePeer,
    /// Destination.
    pub to: ProbePeer,
    /// Destination port (`null` for ICMP).
    pub port: Option<u16>,
    /// TCP, UDP, SCTP or ICMP.
    pub protocol: String,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// `allow` or `deny`.
    pub expect: String,
}

/// Why a case could not be run.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The case JSON does not parse.
    #[error("case does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// A policy manifest is rejected.
    #[error("policy {index} rejected: {error}")]
    Policy {
        /// Index in `policies`.
        index: usize,
        /// The error.
        error: Box<crate::policy::PolicyError>,
    },
    /// A probe names an unknown pod or peer.
    #[error("probe {index}: {reason}")]
    Probe {
        /// Index in `probes`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A pod could not be applied.
    #[error("pod: {0}")]
    Workload(#[from] crate::state::StateError),
}

/// The outcome of one probe.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Index in `probes`.
    pub index: usize,
    /// Human-readable `from -> to port/proto`.
    pub description: String,
    /// Expected verdict.
    pub expected: Action,
    /// Verdict decided.
    pub got: Action,
    /// The deciding rule, if any (`ns/name ingress[0]`).
    pub rule: Option<String>,
    /// The drop reason, if denied.
    pub reason: Option<String>,
}

impl ProbeResult {
    /// Whether the verdict matches upstream.
    pub fn passed(&self) -> bool {
        self.expected == self.got
    }
}

/// The case's pods as workloads, labelled as the agent labels them (namespace, service
/// account, cluster, namespace labels), with their named ports; uid `namespace/name`, not
/// attached to this node.
pub fn workloads(case: &Case) -> Vec<Workload> {
    let cluster = case
        .cluster
        .as_ref()
        .map(|c| c.name.clone().unwrap_or_else(|| "default".to_owned()));
    let filter = LabelFilter::default();
    case.pods
        .iter()
        .map(|pod| {
            let labels = workload_labels(
                &WorkloadMeta {
                    namespace: &pod.namespace,
                    pod_labels: Some(&pod.labels),
                    namespace_labels: case.namespaces.get(&pod.namespace),
                    service_account: Some(pod.service_account.as_deref().unwrap_or("default")),
                    cluster: cluster.as_deref(),
                },
                &filter,
            );
            let named_ports = pod
                .ports
                .iter()
                .filter_map(|p| {
                    let protocol = p
                        .protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .parse::<Protocol>()
                        .ok()?;
                    Some(NamedPort {
                        name: p.name.clone()?,
                        port: p.container_port,
                        protocol,
                    })
                })
                .collect();
            Workload {
                uid: format!("{}/{}", pod.namespace, pod.name),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                labels,
                ips: vec![pod.ip],
                named_ports,
                source: Source::ApiServer,
                local: None,
            }
        })
        .collect()
}

/// Builds the case's state (pods before policies, or after with `policies_first`) and returns
/// the snapshot with each pod's identity and address by `namespace/name`.
pub fn build(
    case: &Case,
    policies_first: bool,
) -> Result<(Snapshot, BTreeMap<String, PeerRef>), CaseError> {
    let cilium = case.engine == "cilium";
    let config = EnforcementConfig {
        allow_from_host: true,
        cidr_selects_endpoints: !cilium,
        init_default_deny: true,
    };
    let mut cache = IdentityCache::new(ClusterKey::default(), config);
    let mut policies = Vec::new();
    for (index, text) in case.policies.iter().enumerate() {
        match parse_manifest(text).map_err(|error| CaseError::Policy {
            index,
            error: Box::new(error),
        })? {
            ParsedManifest::Policy(p) => policies.push(p),
            ParsedManifest::Empty => {}
        }
    }
    if policies_first {
        for p in policies.clone() {
            cache.upsert_policy(p);
        }
    }
    let mut pods = BTreeMap::new();
    for workload in workloads(case) {
        let (uid, ip) = (workload.uid.clone(), workload.ips[0]);
        let identity = cache.upsert_workload(workload)?;
        pods.insert(uid, PeerRef { identity, ip });
    }
    if !policies_first {
        for p in policies {
            cache.upsert_policy(p);
        }
    }
    Ok((cache.pending(), pods))
}

/// Resolves a probe peer: its identity and address, whether it is a pod (so its policy is
/// enforced), and a printable name.
pub fn resolve(
    peer: &ProbePeer,
    snapshot: &Snapshot,
    pods: &BTreeMap<String, PeerRef>,
) -> Result<(PeerRef, bool, String), String> {
    match peer {
        ProbePeer::Pod(name) => pods
            .get(name)
            .map(|p| (*p, true, name.clone()))
            .ok_or_else(|| format!("unknown pod {name}")),
        ProbePeer::Other { cidr, entity, ip } => {
            let addr = cidr.or(*ip).unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let identity = match entity.as_deref() {
                Some("host") => Identity::HOST,
                Some("remote-node") => Identity::REMOTE_NODE,
                Some("kube-apiserver") => Identity::KUBE_APISERVER,
                Some("world") | None => snapshot.identity_of(addr),
                Some(other) => return Err(format!("unknown entity {other}")),
            };
            let label = match entity {
                Some(e) => format!("{e}({addr})"),
                None => addr.to_string(),
            };
            Ok((PeerRef { identity, ip: addr }, false, label))
        }
    }
}

fn attribution(snapshot: &Snapshot, verdict: &Verdict) -> (Option<String>, Option<String>) {
    let deciding = verdict.deciding();
    let rule = deciding
        .and_then(|d| d.rule)
        .and_then(|r| snapshot.policy.rule(r))
        .map(|info| info.to_string());
    let reason = verdict.drop_reason.map(|r| r.name().to_owned());
    (rule, reason)
}

/// Runs a case from its JSON text. Every probe is decided twice, once with the policies
/// compiled before the pods arrive and once after (the incremental paths), and a probe
/// passes only if both agree with upstream.
pub fn run_case(text: &str) -> Result<(Case, Vec<ProbeResult>), CaseError> {
    let case: Case = serde_json::from_str(text)?;
    let (snapshot, pods) = build(&case, false)?;
    let (snapshot_pf, pods_pf) = build(&case, true)?;
    let mut results = Vec::with_capacity(case.probes.len());
    for (index, probe) in case.probes.iter().enumerate() {
        let bad = |reason: String| CaseError::Probe { index, reason };
        let protocol: Protocol = probe.protocol.parse().map_err(|e| bad(format!("{e}")))?;
        let port = match protocol {
            Protocol::Icmp | Protocol::IcmpV6 => u16::from(probe.icmp_type.unwrap_or(8)),
            _ => probe.port.ok_or_else(|| bad("port missing".to_owned()))?,
        };
        let expected = match probe.expect.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => return Err(bad(format!("expect {other:?}"))),
        };
        let mut verdicts = Vec::new();
        let mut description = String::new();
        for (snap, pods) in [(&snapshot, &pods), (&snapshot_pf, &pods_pf)] {
            let (src, src_local, src_name) = resolve(&probe.from, snap, pods).map_err(&bad)?;
            let (dst, dst_local, dst_name) = resolve(&probe.to, snap, pods).map_err(&bad)?;
            description = format!("{src_name} -> {dst_name} {port}/{protocol}");
            let enforce = Enforce {
                egress: src_local,
                ingress: dst_local,
            };
            verdicts.push(snap.decide(src, dst, protocol, port, enforce));
        }
        let (rule, reason) = attribution(&snapshot, &verdicts[0]);
        let got = if verdicts[0].action == verdicts[1].action {
            verdicts[0].action
        } else {
            // Order-dependent compilation is a bug: report the probe as failed.
            if expected == Action::Allow {
                Action::Deny
            } else {
                Action::Allow
            }
        };
        results.push(ProbeResult {
            index,
            description,
            expected,
            got,
            rule,
            reason,
        });
    }
    Ok((case, results))
}
