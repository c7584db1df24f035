//! Kubernetes `networking.k8s.io/v1` NetworkPolicy: the YAML schema and its translation into
//! [`Rule`]s.
//!
//! Semantics follow the upstream API: `policyTypes` defaults to `Ingress`, plus `Egress` when
//! the `egress` list is non-empty; each listed type puts the selected pods into default deny;
//! a rule without `from`/`to` allows every peer and one without `ports` every port; a peer's
//! `podSelector` alone selects pods of the policy's namespace, `namespaceSelector` alone all
//! pods of the matching namespaces, both together the pods matching both (AND); a port
//! without `protocol` is TCP.

use serde::{Deserialize, Serialize};

use super::error::{FieldPath, PolicyErrorKind, SpecError};
use super::fields::{IntOrString, PortValue, parse_cidr_peer, parse_port, port_spec};
use super::{Action, Direction, Peer, Peers, PortSpec, Ports, Rule};
use crate::labels::{LabelSource, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use crate::protocol::Protocol;
use crate::selector::{LabelSelectorSpec, Operator, Requirement, Selector};

/// The `spec` of a NetworkPolicy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// The pods the policy applies to, in its namespace.
    pub pod_selector: Option<LabelSelectorSpec>,
    /// Ingress rules.
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
    /// Egress rules.
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
    /// `Ingress` and/or `Egress`.
    pub policy_types: Option<Vec<String>>,
}

/// One ingress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    /// Peers, ORed; absent or empty means every peer.
    pub from: Option<Vec<NetworkPolicyPeer>>,
    /// Ports, ORed; absent or empty means every port.
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// One egress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    /// Peers, ORed; absent or empty means every peer.
    pub to: Option<Vec<NetworkPolicyPeer>>,
    /// Ports, ORed; absent or empty means every port.
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// One peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    /// Pods (in the policy's namespace unless `namespaceSelector` is set).
    pub pod_selector: Option<LabelSelectorSpec>,
    /// Namespaces.
    pub namespace_selector: Option<LabelSelectorSpec>,
    /// Addresses.
    pub ip_block: Option<IpBlock>,
}

/// An `ipBlock` peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    /// The prefix.
    pub cidr: String,
    /// Prefixes inside it to leave out.
    pub except: Option<Vec<String>>,
}

/// One port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// TCP (default), UDP or SCTP.
    pub protocol: Option<String>,
    /// Number or named port; absent means every port.
    pub port: Option<IntOrString>,
    /// Last port of a range.
    pub end_port: Option<i64>,
}

/// The peers and ports of one rule, whichever direction.
type RuleParts<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

fn parse_selector(spec: &LabelSelectorSpec, path: &FieldPath) -> Result<Selector, SpecError> {
    Selector::parse(spec).map_err(|(sub, e)| SpecError::at(&path.join(&sub), e))
}

/// Rewrites a namespace selector onto the namespace labels that pods carry.
fn namespace_selector(sel: &Selector) -> Selector {
    let requirements = sel
        .requirements()
        .iter()
        .map(|r| Requirement {
            source: Some(LabelSource::K8s),
            key: format!("{NAMESPACE_LABELS_PREFIX}{}", r.key),
            operator: r.operator,
            values: r.values.clone(),
        })
        .collect();
    Selector::from_requirements(requirements)
}

/// A requirement that restricts a selector to pods (identities with a namespace).
fn is_pod() -> Requirement {
    Requirement {
        source: Some(LabelSource::K8s),
        key: NAMESPACE_LABEL.to_owned(),
        operator: Operator::Exists,
        values: Vec::new(),
    }
}

/// Translates a NetworkPolicy spec in `namespace` into rules.
pub fn translate(spec: &NetworkPolicySpec, namespace: &str) -> Result<Vec<Rule>, SpecError> {
    let spec_path = FieldPath::root("spec");
    let selector_path = spec_path.field("podSelector");
    let selector_spec = spec
        .pod_selector
        .as_ref()
        .ok_or_else(|| SpecError::at(&selector_path, PolicyErrorKind::Missing))?;
    let in_namespace = Requirement::equals(Some(LabelSource::K8s), NAMESPACE_LABEL, namespace);
    let subject = parse_selector(selector_spec, &selector_path)?.and(in_namespace.clone());

    let (mut ingress_on, mut egress_on) = (false, false);
    match &spec.policy_types {
        Some(types) if !types.is_empty() => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress_on = true,
                    "Egress" => egress_on = true,
                    _ => {
                        return Err(SpecError::at(
                            &spec_path.field("policyTypes").index(i),
                            PolicyErrorKind::PolicyType(t.clone()),
                        ));
                    }
                }
            }
        }
        _ => {
            ingress_on = true;
            egress_on = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
    }

    let mut rules = Vec::new();
    let sections = [
        (Direction::Ingress, ingress_on, "ingress", "from"),
        (Direction::Egress, egress_on, "egress", "to"),
    ];
    for (direction, on, section, peer_field) in sections {
        if !on {
            continue;
        }
        // The marker that turns default deny on even when no rule follows.
        rules.push(Rule {
            index: u32::MAX,
            subject: subject.clone(),
            direction,
            action: Action::Allow,
            peers: Peers::Only(Vec::new()),
            ports: Ports::Any,
            enables_default_deny: true,
            http: Vec::new(),
        });
        let entries: Vec<RuleParts<'_>> = match direction {
            Direction::Ingress => spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
            Direction::Egress => spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        };
        for (i, (peer_list, port_list)) in entries.into_iter().enumerate() {
            let path = spec_path.field(section).index(i);
            let peers = match peer_list.filter(|l| !l.is_empty()) {
                None => Peers::Any,
                Some(list) => {
                    let mut peers = Vec::with_capacity(list.len());
                    for (j, p) in list.iter().enumerate() {
                        peers.push(peer(p, &in_namespace, &path.field(peer_field).index(j))?);
                    }
                    Peers::Only(peers)
                }
            };
            let ports = match port_list.filter(|l| !l.is_empty()) {
                None => Ports::Any,
                Some(list) => {
                    let mut specs = Vec::with_capacity(list.len());
                    for (j, p) in list.iter().enumerate() {
                        specs.push(port(p, &path.field("ports").index(j))?);
                    }
                    Ports::Only(specs)
                }
            };
            rules.push(Rule {
                index: i as u32,
                subject: subject.clone(),
                direction,
                action: Action::Allow,
                peers,
                ports,
                enables_default_deny: true,
                http: Vec::new(),
            });
        }
    }
    Ok(rules)
}

fn peer(
    p: &NetworkPolicyPeer,
    in_namespace: &Requirement,
    path: &FieldPath,
) -> Result<Peer, SpecError> {
    if let Some(block) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(SpecError::at(path, PolicyErrorKind::IpBlockWithSelector));
        }
        let block_path = path.field("ipBlock");
        let except = block.except.clone().unwrap_or_default();
        return Ok(Peer::Cidr(parse_cidr_peer(
            &block.cidr,
            &except,
            &block_path.field("cidr"),
            &block_path.field("except"),
        )?));
    }
    let pods = match &p.pod_selector {
        Some(s) => Some(parse_selector(s, &path.field("podSelector"))?),
        None => None,
    };
    let namespaces = match &p.namespace_selector {
        Some(s) => Some(namespace_selector(&parse_selector(
            s,
            &path.field("namespaceSelector"),
        )?)),
        None => None,
    };
    let selector = match (pods, namespaces) {
        (Some(pods), None) => pods.and(in_namespace.clone()),
        (None, Some(ns)) => ns.and(is_pod()),
        (Some(pods), Some(ns)) => {
            let mut reqs = pods.requirements().to_vec();
            reqs.extend(ns.requirements().iter().cloned());
            reqs.push(is_pod());
            Selector::from_requirements(reqs)
        }
        (None, None) => {
            return Err(SpecError::at(
                path,
                PolicyErrorKind::Schema(
                    "a peer needs podSelector, namespaceSelector or ipBlock".to_owned(),
                ),
            ));
        }
    };
    Ok(Peer::Endpoints(selector))
}

fn port(p: &NetworkPolicyPort, path: &FieldPath) -> Result<PortSpec, SpecError> {
    let protocol = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(name) => match name.parse::<Protocol>() {
            Ok(proto) if proto.has_ports() => proto,
            _ => {
                return Err(SpecError::at(
                    &path.field("protocol"),
                    PolicyErrorKind::Protocol(name.to_owned()),
                ));
            }
        },
    };
    let value = match &p.port {
        Some(v) => parse_port(v, &path.field("port"))?,
        None => PortValue::Any,
    };
    port_spec(Some(protocol), value, p.end_port, path)
}
