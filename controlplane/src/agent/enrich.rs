//! Turning the datapaths' numeric flow events into [`FlowRecord`]s an operator can read:
//! identities get their labels, addresses their pods, rule ids their policies.

use std::net::IpAddr;

use fastpath::flow::{EventKind, FlowEvent, FlowPeer, FlowVerdict};
use identity_cache::identity::{Identity, IdentityRegistry, ReservedIdentity};
use identity_cache::policy::{Action, Direction};
use identity_cache::protocol::Protocol;
use identity_cache::state::Snapshot;
use identity_cache::tables::RuleInfo;
use identity_cache::verdict::{DropReason, RuleId};
use xdp_redirect::abi::{ACTION_ALLOW, DIR_EGRESS, VerdictEvent};

use crate::flows::{FlowEndpoint, FlowRecord, PolicyRef};

/// What enrichment looks things up in: the current snapshot and the identity registry.
pub struct Directory<'a> {
    /// The snapshot the agent last published.
    pub snapshot: &'a Snapshot,
    /// Identity → labels.
    pub registry: &'a IdentityRegistry,
    /// Interface index → name.
    pub interface_name: &'a dyn Fn(u32) -> String,
}

/// The labels of an identity as `source:key=value` strings, or `reserved:NAME`.
pub fn identity_labels(registry: &IdentityRegistry, id: Identity) -> Vec<String> {
    if let Some(r) = ReservedIdentity::from_identity(id) {
        return vec![format!("reserved:{}", r.name())];
    }
    match registry.get(id) {
        Some(info) => info.labels.iter().map(|l| l.to_string()).collect(),
        None => Vec::new(),
    }
}

/// The attribution of a compiled rule.
pub fn policy_ref(rule: &RuleInfo) -> PolicyRef {
    let section = match (rule.direction, rule.action, rule.index) {
        (_, _, None) => "policyTypes",
        (Direction::Ingress, Action::Allow, _) => "ingress",
        (Direction::Ingress, Action::Deny, _) => "ingressDeny",
        (Direction::Egress, Action::Allow, _) => "egress",
        (Direction::Egress, Action::Deny, _) => "egressDeny",
    };
    PolicyRef {
        kind: format!("{:?}", rule.policy.kind),
        namespace: rule.policy.namespace.clone().unwrap_or_default(),
        name: rule.policy.name.clone(),
        section: section.into(),
        index: rule.index,
    }
}

fn protocol_name(p: u8) -> String {
    Protocol::from_number(p).map_or_else(|| p.to_string(), |p| p.name().to_owned())
}

fn tcp_flag_names(flags: u8) -> Option<String> {
    const NAMES: [(u8, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

impl Directory<'_> {
    fn endpoint(&self, ip: IpAddr, port: u16, identity: Identity) -> FlowEndpoint {
        let local = self.snapshot.endpoints.by_ip(ip);
        FlowEndpoint {
            ip: ip.to_string(),
            port,
            identity: identity.0,
            namespace: local.map(|e| e.namespace.clone()),
            pod: local.map(|e| e.name.clone()),
            labels: identity_labels(self.registry, identity),
        }
    }

    fn peer(&self, p: &FlowPeer, is_icmp: bool) -> FlowEndpoint {
        self.endpoint(p.ip, if is_icmp { 0 } else { p.port }, p.identity)
    }

    /// A fast-path worker's event.
    pub fn from_fastpath(&self, e: &FlowEvent) -> FlowRecord {
        let is_icmp = matches!(e.protocol, 1 | 58);
        FlowRecord {
            time_ns: e.time_ns,
            verdict: e.verdict.name().to_owned(),
            drop_reason: e.drop_reason.map(|r| r.name().to_owned()),
            source: self.peer(&e.source, is_icmp),
            destination: self.peer(&e.destination, is_icmp),
            protocol: protocol_name(e.protocol),
            tcp_flags: (e.protocol == 6)
                .then(|| tcp_flag_names(e.tcp_flags))
                .flatten(),
            icmp_type: is_icmp.then_some(e.destination.port as u8),
            traffic_direction: e.direction.map(|d| d.as_str().to_owned()),
            policy: e.rule.as_ref().map(policy_ref),
            match_type: e.match_kind.name().to_owned(),
            is_reply: e.is_reply,
            observation_point: e.observation.name().to_owned(),
            interface: (self.interface_name)(e.ingress_ifindex),
            worker: Some(e.worker),
            core: (e.core != u16::MAX).then_some(e.core),
            latency_ns: Some(e.latency_ns),
            event: match e.kind {
                EventKind::NewFlow => "new-flow",
                EventKind::Drop => "drop",
                EventKind::VerdictChanged => "verdict-changed",
                EventKind::Untracked => "untracked",
            }
            .to_owned(),
        }
    }

    /// An in-kernel path's event (`time_ns` converts its monotonic timestamp).
    pub fn from_kernel(&self, e: &VerdictEvent, time_ns: u64) -> FlowRecord {
        let addr = |b: [u8; 16]| -> IpAddr {
            if e.family == 4 {
                IpAddr::from([b[0], b[1], b[2], b[3]])
            } else {
                IpAddr::from(b)
            }
        };
        let is_icmp = matches!(e.protocol, 1 | 58);
        let allowed = e.action == ACTION_ALLOW;
        let reason = DropReason::from_number(e.reason);
        let rule = (e.rule != 0)
            .then(|| self.snapshot.policy.rule(RuleId(e.rule)))
            .flatten();
        let direction = if u32::from(DIR_EGRESS) == e.direction {
            "egress"
        } else {
            "ingress"
        };
        FlowRecord {
            time_ns,
            verdict: if allowed {
                FlowVerdict::Forwarded
            } else {
                FlowVerdict::Dropped
            }
            .name()
            .to_owned(),
            drop_reason: if allowed {
                None
            } else {
                reason.map(|r| r.name().to_owned())
            },
            source: self.endpoint(
                addr(e.src_ip),
                if is_icmp { 0 } else { e.src_port },
                Identity(e.src_identity),
            ),
            destination: self.endpoint(
                addr(e.dst_ip),
                if is_icmp { 0 } else { e.dst_port },
                Identity(e.dst_identity),
            ),
            protocol: protocol_name(e.protocol),
            tcp_flags: None,
            icmp_type: is_icmp.then_some(e.dst_port as u8),
            traffic_direction: Some(direction.to_owned()),
            policy: rule.map(policy_ref),
            match_type: "NONE".into(),
            is_reply: false,
            observation_point: "kernel".into(),
            interface: (self.interface_name)(e.ifindex),
            worker: None,
            core: None,
            latency_ns: None,
            event: if allowed { "new-flow" } else { "drop" }.into(),
        }
    }
}
