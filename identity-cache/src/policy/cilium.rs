//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (`cilium.io/v2`): the YAML schema
//! and its translation into [`Rule`]s.
//!
//! Semantics follow Cilium: a namespaced policy's endpoint selector, and every peer selector
//! that does not name `io.kubernetes.pod.namespace` itself, only select pods of the policy's
//! namespace; a rule section (`ingress`, `ingressDeny`, …) with at least one entry puts the
//! selected endpoints into default deny in that direction unless `enableDefaultDeny` says
//! otherwise; an entry with ports but no peers applies to every peer; an empty entry `{}`
//! matches nothing (the idiom for "default deny only").

use serde::{Deserialize, Serialize};

use super::error::{FieldPath, PolicyErrorKind, SpecError};
use super::fields::{IntOrString, parse_cidr, parse_cidr_peer, parse_port, port_spec};
use super::{Action, Direction, Entity, HttpRule, Peer, Peers, PortSpec, Ports, Rule};
use crate::labels::{LabelSource, NAMESPACE_LABEL};
use crate::protocol::Protocol;
use crate::selector::{LabelSelectorSpec, Requirement, Selector};

/// The `spec` of a CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumPolicySpec {
    /// Which endpoints the rules apply to.
    pub endpoint_selector: Option<LabelSelectorSpec>,
    /// Host policies (not supported).
    pub node_selector: Option<LabelSelectorSpec>,
    /// Ingress allow rules.
    pub ingress: Option<Vec<IngressRuleSpec>>,
    /// Ingress deny rules.
    pub ingress_deny: Option<Vec<IngressRuleSpec>>,
    /// Egress allow rules.
    pub egress: Option<Vec<EgressRuleSpec>>,
    /// Egress deny rules.
    pub egress_deny: Option<Vec<EgressRuleSpec>>,
    /// Whether the rules put selected endpoints into default deny (default: yes).
    pub enable_default_deny: Option<DefaultDenySpec>,
    /// Free text.
    pub description: Option<String>,
    /// Rule labels (kept for display only).
    pub labels: Option<serde_json::Value>,
    /// Policy logging settings (accepted, no effect at L3/L4).
    pub log: Option<serde_json::Value>,
}

/// `enableDefaultDeny`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDenySpec {
    /// Ingress default deny (default true).
    pub ingress: Option<bool>,
    /// Egress default deny (default true).
    pub egress: Option<bool>,
}

/// One ingress or ingressDeny entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRuleSpec {
    /// Peer endpoints.
    pub from_endpoints: Option<Vec<LabelSelectorSpec>>,
    /// Peer entities.
    pub from_entities: Option<Vec<String>>,
    /// Peer CIDRs.
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    /// Peer CIDRs with exceptions.
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRuleSpec>>,
    /// Ports.
    pub to_ports: Option<Vec<PortRuleSpec>>,
    /// ICMP types.
    pub icmps: Option<Vec<IcmpRuleSpec>>,
    /// Not supported.
    pub from_requires: Option<serde_json::Value>,
    /// Not supported.
    pub from_groups: Option<serde_json::Value>,
    /// Not supported.
    pub from_nodes: Option<serde_json::Value>,
    /// Not supported.
    pub authentication: Option<serde_json::Value>,
}

/// One egress or egressDeny entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRuleSpec {
    /// Peer endpoints.
    pub to_endpoints: Option<Vec<LabelSelectorSpec>>,
    /// Peer entities.
    pub to_entities: Option<Vec<String>>,
    /// Peer CIDRs.
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    /// Peer CIDRs with exceptions.
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRuleSpec>>,
    /// Ports.
    pub to_ports: Option<Vec<PortRuleSpec>>,
    /// ICMP types.
    pub icmps: Option<Vec<IcmpRuleSpec>>,
    /// Not supported.
    #[serde(rename = "toFQDNs")]
    pub to_fqdns: Option<serde_json::Value>,
    /// Not supported.
    pub to_services: Option<serde_json::Value>,
    /// Not supported.
    pub to_requires: Option<serde_json::Value>,
    /// Not supported.
    pub to_groups: Option<serde_json::Value>,
    /// Not supported.
    pub to_nodes: Option<serde_json::Value>,
    /// Not supported.
    pub authentication: Option<serde_json::Value>,
}

/// A CIDR with exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrRuleSpec {
    /// The prefix.
    pub cidr: Option<String>,
    /// Prefixes inside it to leave out.
    pub except: Option<Vec<String>>,
    /// Not supported.
    pub cidr_group_ref: Option<String>,
}

/// One `toPorts` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRuleSpec {
    /// Ports, ORed.
    pub ports: Option<Vec<PortProtocolSpec>>,
    /// L7 rules.
    pub rules: Option<L7RulesSpec>,
    /// Not supported.
    pub server_names: Option<serde_json::Value>,
    /// Not supported.
    pub terminating_tls: Option<serde_json::Value>,
    /// Not supported.
    #[serde(rename = "originatingTLS")]
    pub originating_tls: Option<serde_json::Value>,
    /// Not supported.
    pub listener: Option<serde_json::Value>,
}

/// One port with protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocolSpec {
    /// Number or name; 0 or absent means every port.
    pub port: Option<IntOrString>,
    /// Last port of a range.
    pub end_port: Option<i64>,
    /// TCP, UDP, SCTP or ANY (default ANY).
    pub protocol: Option<String>,
}

/// L7 rules attached to ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7RulesSpec {
    /// HTTP rules.
    pub http: Option<Vec<HttpRuleSpec>>,
    /// Not supported.
    pub dns: Option<serde_json::Value>,
    /// Not supported.
    pub kafka: Option<serde_json::Value>,
}

/// One HTTP rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRuleSpec {
    /// Method regex.
    pub method: Option<String>,
    /// Path regex.
    pub path: Option<String>,
    /// Host regex (kept, not enforced).
    pub host: Option<String>,
    /// Header matches (kept, not enforced).
    pub headers: Option<Vec<String>>,
}

/// One `icmps` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpRuleSpec {
    /// ICMP fields, ORed.
    pub fields: Option<Vec<IcmpFieldSpec>>,
}

/// One ICMP type with its family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpFieldSpec {
    /// Type number or name (`EchoRequest`).
    #[serde(rename = "type")]
    pub icmp_type: IntOrString,
    /// `IPv4` (default) or `IPv6`.
    pub family: Option<String>,
}

/// The peer half of an entry, shared by ingress and egress.
struct PeerFields<'a> {
    endpoints: Option<&'a Vec<LabelSelectorSpec>>,
    entities: Option<&'a Vec<String>>,
    cidrs: Option<&'a Vec<String>>,
    cidr_sets: Option<&'a Vec<CidrRuleSpec>>,
    names: [&'static str; 4],
}

/// Translation context for one policy.
struct Translator<'a> {
    namespace: Option<&'a str>,
    subject: Selector,
    rules: Vec<Rule>,
}

/// Translates a Cilium spec into rules. `namespace` is `Some` for a CiliumNetworkPolicy.
pub fn translate(spec: &CiliumPolicySpec, namespace: Option<&str>) -> Result<Vec<Rule>, SpecError> {
    let spec_path = FieldPath::root("spec");
    if spec.node_selector.is_some() {
        return Err(SpecError::at(
            &spec_path.field("nodeSelector"),
            PolicyErrorKind::Unsupported("host policy (nodeSelector)"),
        ));
    }
    let selector_path = spec_path.field("endpointSelector");
    let selector_spec = spec
        .endpoint_selector
        .as_ref()
        .ok_or_else(|| SpecError::at(&selector_path, PolicyErrorKind::Missing))?;
    let mut subject = parse_selector(selector_spec, &selector_path)?;
    if let Some(ns) = namespace {
        subject = subject.and(Requirement::equals(
            Some(LabelSource::K8s),
            NAMESPACE_LABEL,
            ns,
        ));
    }
    let default_deny = spec.enable_default_deny.clone().unwrap_or_default();
    let mut t = Translator {
        namespace,
        subject,
        rules: Vec::new(),
    };
    let sections: [(&str, Direction, Action); 4] = [
        ("ingress", Direction::Ingress, Action::Allow),
        ("ingressDeny", Direction::Ingress, Action::Deny),
        ("egress", Direction::Egress, Action::Allow),
        ("egressDeny", Direction::Egress, Action::Deny),
    ];
    for (name, direction, action) in sections {
        let enables = match direction {
            Direction::Ingress => default_deny.ingress.unwrap_or(true),
            Direction::Egress => default_deny.egress.unwrap_or(true),
        };
        let path = spec_path.field(name);
        let entries: Vec<EntryParts<'_>> = match (direction, action) {
            (Direction::Ingress, _) => {
                let list = if action == Action::Allow {
                    &spec.ingress
                } else {
                    &spec.ingress_deny
                };
                list.iter().flatten().map(ingress_parts).collect()
            }
            (Direction::Egress, _) => {
                let list = if action == Action::Allow {
                    &spec.egress
                } else {
                    &spec.egress_deny
                };
                list.iter().flatten().map(egress_parts).collect()
            }
        };
        for (i, (peers, ports, unsupported)) in entries.into_iter().enumerate() {
            let entry_path = path.index(i);
            if let Some((field, _)) = unsupported.iter().find(|(_, present)| *present) {
                return Err(SpecError::at(
                    &entry_path.field(field),
                    PolicyErrorKind::Unsupported(field),
                ));
            }
            t.entry(
                i as u32,
                direction,
                action,
                enables,
                &peers,
                &ports,
                &entry_path,
            )?;
        }
    }
    Ok(t.rules)
}

struct EntryPorts<'a> {
    to_ports: Option<&'a Vec<PortRuleSpec>>,
    icmps: Option<&'a Vec<IcmpRuleSpec>>,
}

type EntryParts<'a> = (PeerFields<'a>, EntryPorts<'a>, Vec<(&'static str, bool)>);

fn ingress_parts(r: &IngressRuleSpec) -> EntryParts<'_> {
    (
        PeerFields {
            endpoints: r.from_endpoints.as_ref(),
            entities: r.from_entities.as_ref(),
            cidrs: r.from_cidr.as_ref(),
            cidr_sets: r.from_cidr_set.as_ref(),
            names: ["fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet"],
        },
        EntryPorts {
            to_ports: r.to_ports.as_ref(),
            icmps: r.icmps.as_ref(),
        },
        vec![
            ("fromRequires", r.from_requires.is_some()),
            ("fromGroups", r.from_groups.is_some()),
            ("fromNodes", r.from_nodes.is_some()),
            ("authentication", r.authentication.is_some()),
        ],
    )
}

fn egress_parts(r: &EgressRuleSpec) -> EntryParts<'_> {
    (
        PeerFields {
            endpoints: r.to_endpoints.as_ref(),
            entities: r.to_entities.as_ref(),
            cidrs: r.to_cidr.as_ref(),
            cidr_sets: r.to_cidr_set.as_ref(),
            names: ["toEndpoints", "toEntities", "toCIDR", "toCIDRSet"],
        },
        EntryPorts {
            to_ports: r.to_ports.as_ref(),
            icmps: r.icmps.as_ref(),
        },
        vec![
            ("toFQDNs", r.to_fqdns.is_some()),
            ("toServices", r.to_services.is_some()),
            ("toRequires", r.to_requires.is_some()),
            ("toGroups", r.to_groups.is_some()),
            ("toNodes", r.to_nodes.is_some()),
            ("authentication", r.authentication.is_some()),
        ],
    )
}

fn parse_selector(spec: &LabelSelectorSpec, path: &FieldPath) -> Result<Selector, SpecError> {
    Selector::parse(spec).map_err(|(sub, e)| SpecError::at(&path.join(&sub), e))
}

impl Translator<'_> {
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        index: u32,
        direction: Direction,
        action: Action,
        enables_default_deny: bool,
        peer_fields: &PeerFields<'_>,
        port_fields: &EntryPorts<'_>,
        path: &FieldPath,
    ) -> Result<(), SpecError> {
        let mut peers = Vec::new();
        let mut any_peer_field = false;
        if let Some(list) = peer_fields.endpoints.filter(|l| !l.is_empty()) {
            any_peer_field = true;
            for (i, spec) in list.iter().enumerate() {
                let mut sel = parse_selector(spec, &path.field(peer_fields.names[0]).index(i))?;
                if let Some(ns) = self.namespace {
                    let names_namespace = sel.mentions_key(NAMESPACE_LABEL);
                    let names_reserved = sel
                        .requirements()
                        .iter()
                        .any(|r| r.source == Some(LabelSource::Reserved));
                    if !names_namespace && !names_reserved {
                        sel = sel.and(Requirement::equals(
                            Some(LabelSource::K8s),
                            NAMESPACE_LABEL,
                            ns,
                        ));
                    }
                }
                peers.push(Peer::Endpoints(sel));
            }
        }
        if let Some(list) = peer_fields.entities.filter(|l| !l.is_empty()) {
            any_peer_field = true;
            for (i, name) in list.iter().enumerate() {
                let entity = Entity::parse(name).ok_or_else(|| {
                    SpecError::at(
                        &path.field(peer_fields.names[1]).index(i),
                        PolicyErrorKind::Entity(name.clone()),
                    )
                })?;
                peers.push(Peer::Entity(entity));
            }
        }
        if let Some(list) = peer_fields.cidrs.filter(|l| !l.is_empty()) {
            any_peer_field = true;
            for (i, cidr) in list.iter().enumerate() {
                let net = parse_cidr(cidr, &path.field(peer_fields.names[2]).index(i))?;
                peers.push(Peer::Cidr(super::CidrPeer {
                    net,
                    except: Vec::new(),
                }));
            }
        }
        if let Some(list) = peer_fields.cidr_sets.filter(|l| !l.is_empty()) {
            any_peer_field = true;
            for (i, set) in list.iter().enumerate() {
                let set_path = path.field(peer_fields.names[3]).index(i);
                if set.cidr_group_ref.is_some() {
                    return Err(SpecError::at(
                        &set_path.field("cidrGroupRef"),
                        PolicyErrorKind::Unsupported("cidrGroupRef"),
                    ));
                }
                let cidr = set.cidr.as_deref().ok_or_else(|| {
                    SpecError::at(&set_path.field("cidr"), PolicyErrorKind::Missing)
                })?;
                let except = set.except.clone().unwrap_or_default();
                peers.push(Peer::Cidr(parse_cidr_peer(
                    cidr,
                    &except,
                    &set_path.field("cidr"),
                    &set_path.field("except"),
                )?));
            }
        }
        let (ports, http, any_port_field) = self.ports(action, port_fields, path)?;
        let peers = if any_peer_field {
            Peers::Only(peers)
        } else if any_port_field {
            Peers::Any
        } else {
            // `{}`: the entry turns default deny on and allows nothing.
            Peers::Only(Vec::new())
        };
        self.rules.push(Rule {
            index,
            subject: self.subject.clone(),
            direction,
            action,
            peers,
            ports,
            enables_default_deny,
            http,
        });
        Ok(())
    }

    fn ports(
        &self,
        action: Action,
        fields: &EntryPorts<'_>,
        path: &FieldPath,
    ) -> Result<(Ports, Vec<HttpRule>, bool), SpecError> {
        let mut specs = Vec::new();
        let mut http = Vec::new();
        let mut any_field = false;
        let mut all_ports = false;
        for (i, rule) in fields.to_ports.iter().flat_map(|l| l.iter()).enumerate() {
            any_field = true;
            let rule_path = path.field("toPorts").index(i);
            for (field, present) in [
                ("serverNames", rule.server_names.is_some()),
                ("terminatingTLS", rule.terminating_tls.is_some()),
                ("originatingTLS", rule.originating_tls.is_some()),
                ("listener", rule.listener.is_some()),
            ] {
                if present {
                    return Err(SpecError::at(
                        &rule_path.field(field),
                        PolicyErrorKind::Unsupported(field),
                    ));
                }
            }
            if let Some(l7) = &rule.rules {
                let l7_path = rule_path.field("rules");
                if action == Action::Deny {
                    return Err(SpecError::at(
                        &l7_path,
                        PolicyErrorKind::Unsupported("L7 rules in a deny section"),
                    ));
                }
                if l7.dns.is_some() {
                    return Err(SpecError::at(
                        &l7_path.field("dns"),
                        PolicyErrorKind::Unsupported("L7 DNS rules"),
                    ));
                }
                if l7.kafka.is_some() {
                    return Err(SpecError::at(
                        &l7_path.field("kafka"),
                        PolicyErrorKind::Unsupported("L7 Kafka rules"),
                    ));
                }
                for h in l7.http.iter().flatten() {
                    http.push(HttpRule {
                        method: h.method.clone(),
                        path: h.path.clone(),
                    });
                }
            }
            let ports = rule.ports.as_deref().unwrap_or_default();
            if ports.is_empty() {
                all_ports = true;
            }
            for (j, p) in ports.iter().enumerate() {
                let port_path = rule_path.field("ports").index(j);
                let protocol = match p
                    .protocol
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .as_deref()
                {
                    None | Some("ANY") | Some("") => None,
                    Some("TCP") => Some(Protocol::Tcp),
                    Some("UDP") => Some(Protocol::Udp),
                    Some("SCTP") => Some(Protocol::Sctp),
                    Some(_) => {
                        return Err(SpecError::at(
                            &port_path.field("protocol"),
                            PolicyErrorKind::Protocol(p.protocol.clone().unwrap_or_default()),
                        ));
                    }
                };
                let value = match &p.port {
                    Some(v) => parse_port(v, &port_path.field("port"))?,
                    None => super::fields::PortValue::Any,
                };
                specs.push(port_spec(protocol, value, p.end_port, &port_path)?);
            }
        }
        for (i, rule) in fields.icmps.iter().flat_map(|l| l.iter()).enumerate() {
            any_field = true;
            for (j, f) in rule.fields.iter().flatten().enumerate() {
                let field_path = path.field("icmps").index(i).field("fields").index(j);
                specs.push(icmp_spec(f, &field_path)?);
            }
        }
        let ports = if !any_field || all_ports {
            Ports::Any
        } else {
            Ports::Only(specs)
        };
        Ok((ports, http, any_field))
    }
}

fn icmp_spec(field: &IcmpFieldSpec, path: &FieldPath) -> Result<PortSpec, SpecError> {
    let protocol = match field
        .family
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("ipv4") => Protocol::Icmp,
        Some("ipv6") => Protocol::IcmpV6,
        Some(other) => {
            return Err(SpecError::at(
                &path.field("family"),
                PolicyErrorKind::Icmp(format!("family {other:?} (expected IPv4 or IPv6)")),
            ));
        }
    };
    let icmp_type = match &field.icmp_type {
        IntOrString::Int(n) if (0..=255).contains(n) => *n as u8,
        IntOrString::String(s) if s.parse::<u8>().is_ok() => s.parse::<u8>().unwrap_or_default(),
        IntOrString::String(name) => icmp_type_by_name(protocol, name).ok_or_else(|| {
            SpecError::at(
                &path.field("type"),
                PolicyErrorKind::Icmp(format!("unknown type name {name:?}")),
            )
        })?,
        IntOrString::Int(n) => {
            return Err(SpecError::at(
                &path.field("type"),
                PolicyErrorKind::Icmp(format!("type {n} is outside 0-255")),
            ));
        }
    };
    Ok(PortSpec::IcmpType {
        protocol,
        icmp_type,
    })
}

/// ICMP type names as Cilium accepts them.
fn icmp_type_by_name(protocol: Protocol, name: &str) -> Option<u8> {
    let v4 = [
        ("EchoReply", 0),
        ("DestinationUnreachable", 3),
        ("Redirect", 5),
        ("Echo", 8),
        ("EchoRequest", 8),
        ("RouterAdvertisement", 9),
        ("RouterSelection", 10),
        ("TimeExceeded", 11),
        ("ParameterProblem", 12),
        ("Timestamp", 13),
        ("TimestampReply", 14),
    ];
    let v6 = [
        ("DestinationUnreachable", 1),
        ("PacketTooBig", 2),
        ("TimeExceeded", 3),
        ("ParameterProblem", 4),
        ("EchoRequest", 128),
        ("EchoReply", 129),
        ("MulticastListenerQuery", 130),
        ("MulticastListenerReport", 131),
        ("MulticastListenerDone", 132),
        ("RouterSolicitation", 133),
        ("RouterAdvertisement", 134),
        ("NeighborSolicitation", 135),
        ("NeighborAdvertisement", 136),
        ("RedirectMessage", 137),
    ];
    let table: &[(&str, u8)] = if protocol == Protocol::IcmpV6 {
        &v6
    } else {
        &v4
    };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
