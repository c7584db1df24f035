//! The verdict pipeline: one parsed packet and one snapshot in, forward or drop out, with the
//! identities, the deciding rule and the reason.
//!
//! The order follows the in-kernel path (`xdp-redirect/bpf/steer.c`) so both datapaths give
//! the same verdicts:
//! 1. source: a packet from an endpoint's interface must carry one of that endpoint's
//!    addresses (else `SPOOFED_SOURCE`), and has the endpoint's identity; other sources are
//!    looked up in the ipcache (then policy CIDRs, then `world`);
//! 2. destination: the local endpoint with that address; a destination that is not one (the
//!    XDP program steers only traffic for local endpoints here, so this means the endpoint
//!    went away in between) is dropped as `STALE_OR_UNROUTABLE_IP`;
//! 3. identity collisions fail closed; a reply of a tracked connection between the same
//!    identities is allowed without policy;
//! 4. egress policy of a local source, then ingress policy of the destination, deny first;
//! 5. an allowed packet opens or refreshes its connection; a denied one whose deciding
//!    endpoint is in audit mode is forwarded with verdict AUDIT.

use identity_cache::endpoint::Endpoint;
use identity_cache::identity::Identity;
use identity_cache::policy::{Action, Direction};
use identity_cache::protocol::Protocol;
use identity_cache::state::{Enforce, PeerRef, Snapshot};
use identity_cache::verdict::{DropReason, MatchKind, Verdict};

use crate::conntrack::{ConnTable, Recorded, ReplyMatch};
use crate::flow::{FlowPeer, FlowVerdict};
use crate::wire::PacketSummary;

/// Where the packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Out of the destination endpoint's host-side interface, to the pod's MAC.
    Forward {
        /// Interface to send it on.
        egress_ifindex: u32,
        /// The destination pod's MAC address.
        dst_mac: [u8; 6],
    },
    /// Dropped.
    Drop(DropReason),
}

/// The outcome for one packet, with everything a flow event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Forward or drop.
    pub disposition: Disposition,
    /// FORWARDED, DROPPED or AUDIT.
    pub verdict: FlowVerdict,
    /// Why policy denied it (also set for AUDIT: what enforcement would have done).
    pub drop_reason: Option<DropReason>,
    /// The sender as decided.
    pub source: FlowPeer,
    /// The receiver as decided.
    pub destination: FlowPeer,
    /// The policy verdict, when policy was consulted.
    pub policy: Option<Verdict>,
    /// Allowed as a reply of a tracked connection.
    pub is_reply: bool,
    /// What connection tracking did with it.
    pub tracked: Recorded,
}

impl Decision {
    /// The direction that decided, if policy did.
    pub fn direction(&self) -> Option<Direction> {
        self.policy.and_then(|v| v.direction)
    }

    /// How specific the deciding match was.
    pub fn match_kind(&self) -> MatchKind {
        self.policy
            .and_then(|v| v.deciding().map(|d| d.match_kind))
            .unwrap_or(MatchKind::None)
    }
}

/// Per-endpoint enforcement mode, looked up by the endpoint's host-side interface.
pub trait AuditModes {
    /// Whether the endpoint behind `ifindex` is in audit mode (decide and report, forward).
    fn is_audit(&self, ifindex: u32) -> bool;
}

impl AuditModes for hashbrown::HashSet<u32> {
    fn is_audit(&self, ifindex: u32) -> bool {
        !self.is_empty() && self.contains(&ifindex)
    }
}

fn peer(ip: std::net::IpAddr, port: u16, identity: Identity, ep: Option<&Endpoint>) -> FlowPeer {
    FlowPeer {
        ip,
        port,
        identity,
        endpoint: ep.map(|e| e.id),
    }
}

fn dropped(reason: DropReason, source: FlowPeer, destination: FlowPeer) -> Decision {
    Decision {
        disposition: Disposition::Drop(reason),
        verdict: FlowVerdict::Dropped,
        drop_reason: Some(reason),
        source,
        destination,
        policy: None,
        is_reply: false,
        tracked: Recorded::Untracked,
    }
}

/// Decides one packet that arrived on `ingress_ifindex`. Allocation-free.
pub fn decide(
    snapshot: &Snapshot,
    conntrack: &mut ConnTable,
    audit: &impl AuditModes,
    ingress_ifindex: u32,
    p: &PacketSummary,
    now_ns: u64,
) -> Decision {
    let endpoints = &snapshot.endpoints;
    let (src_port, dst_port) = (p.src_port, p.dst_port);

    // 1. Source, with anti-spoofing on an endpoint's interface.
    let rx_endpoint = endpoints.by_ifindex(ingress_ifindex);
    let (src_identity, src_endpoint) = match rx_endpoint {
        Some(ep) => (ep.identity, Some(ep)),
        None => (snapshot.identity_of(p.src), endpoints.by_ip(p.src)),
    };
    let source = peer(p.src, src_port, src_identity, src_endpoint);
    if let Some(ep) = rx_endpoint
        && !ep.has_ip(p.src)
    {
        let destination = peer(p.dst, dst_port, snapshot.identity_of(p.dst), None);
        return dropped(DropReason::SpoofedSource, source, destination);
    }

    // 2. Destination: a local endpoint, or nothing this path can deliver to.
    let Some(dst_endpoint) = endpoints.by_ip(p.dst) else {
        let destination = peer(p.dst, dst_port, snapshot.identity_of(p.dst), None);
        return dropped(DropReason::StaleOrUnroutableIp, source, destination);
    };
    let destination = peer(p.dst, dst_port, dst_endpoint.identity, Some(dst_endpoint));
    let forward = Disposition::Forward {
        egress_ifindex: dst_endpoint.ifindex,
        dst_mac: dst_endpoint.mac,
    };

    // 3. Collisions fail closed, before the connection-tracking shortcut.
    if snapshot.policy.is_collided(source.identity)
        || snapshot.policy.is_collided(destination.identity)
    {
        return dropped(DropReason::IdentityCollision, source, destination);
    }
    if conntrack.lookup_reply(p, source.identity, destination.identity, now_ns) == ReplyMatch::Reply
    {
        return Decision {
            disposition: forward,
            verdict: FlowVerdict::Forwarded,
            drop_reason: None,
            source,
            destination,
            policy: None,
            is_reply: true,
            tracked: Recorded::Existing,
        };
    }

    // 4. Policy: the XDP program steers only protocols policy can name.
    let Some(protocol) = Protocol::from_number(p.protocol) else {
        return dropped(DropReason::Malformed, source, destination);
    };
    let verdict = snapshot.decide(
        PeerRef {
            identity: source.identity,
            ip: p.src,
        },
        PeerRef {
            identity: destination.identity,
            ip: p.dst,
        },
        protocol,
        dst_port,
        Enforce {
            egress: src_endpoint.is_some_and(|e| e.has_ip(p.src)),
            ingress: true,
        },
    );

    // 5. Allowed: track; denied: drop, or forward as AUDIT.
    if verdict.action == Action::Allow {
        let tracked = conntrack.record(p, source.identity, destination.identity, now_ns);
        return Decision {
            disposition: forward,
            verdict: FlowVerdict::Forwarded,
            drop_reason: None,
            source,
            destination,
            policy: Some(verdict),
            is_reply: false,
            tracked,
        };
    }
    let reason = verdict.drop_reason.unwrap_or(DropReason::PolicyDenied);
    let deciding_ifindex = match verdict.direction {
        Some(Direction::Egress) => src_endpoint.map(|e| e.ifindex),
        _ => Some(dst_endpoint.ifindex),
    };
    let auditable = matches!(
        reason,
        DropReason::PolicyDenied | DropReason::PolicyDenyRule
    );
    if auditable && deciding_ifindex.is_some_and(|i| audit.is_audit(i)) {
        return Decision {
            disposition: forward,
            verdict: FlowVerdict::Audit,
            drop_reason: Some(reason),
            source,
            destination,
            policy: Some(verdict),
            is_reply: false,
            tracked: Recorded::Untracked,
        };
    }
    Decision {
        disposition: Disposition::Drop(reason),
        verdict: FlowVerdict::Dropped,
        drop_reason: Some(reason),
        source,
        destination,
        policy: Some(verdict),
        is_reply: false,
        tracked: Recorded::Untracked,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    use identity_cache::identity::ClusterKey;
    use identity_cache::ipcache::Source;
    use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
    use identity_cache::policy::{ParsedManifest, parse_manifest};
    use identity_cache::state::{IdentityCache, LocalAttachment, Workload};
    use identity_cache::tables::EnforcementConfig;

    use super::*;
    use crate::conntrack::Timeouts;
    use crate::wire::Fragment;

    const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-frontend, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: \"8080\", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: \"9999\", protocol: TCP}]}]
";

    const FE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
    const BE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const FE_IF: u32 = 11;
    const BE_IF: u32 = 12;

    fn workload(name: &str, ip: Ipv4Addr, ifindex: u32) -> Workload {
        let labels = BTreeMap::from([("app".to_owned(), name.to_owned())]);
        Workload {
            uid: name.into(),
            namespace: "t".into(),
            name: name.into(),
            labels: workload_labels(
                &WorkloadMeta {
                    namespace: "t",
                    pod_labels: Some(&labels),
                    ..WorkloadMeta::default()
                },
                &LabelFilter::default(),
            ),
            ips: vec![ip.into()],
            named_ports: Vec::new(),
            source: Source::Local,
            local: Some(LocalAttachment {
                ifindex,
                mac: [2, 0, 0, 0, 0, ifindex as u8],
            }),
        }
    }

    fn snapshot() -> Snapshot {
        let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
        cache
            .upsert_workload(workload("frontend", FE, FE_IF))
            .expect("fe");
        cache
            .upsert_workload(workload("backend", BE, BE_IF))
            .expect("be");
        match parse_manifest(POLICY).expect("policy") {
            ParsedManifest::Policy(p) => cache.upsert_policy(p),
            ParsedManifest::Empty => unreachable!(),
        }
        cache.pending()
    }

    fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> PacketSummary {
        PacketSummary {
            l3_offset: 14,
            vlan: None,
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            protocol: 6,
            src_port: sport,
            dst_port: dport,
            icmp_type: None,
            icmp_code: None,
            icmp_echo_id: None,
            tcp_flags: 0x02,
            fragment: Fragment::None,
            ip_len: 40,
            frag_id: 0,
            frag_proto: 6,
        }
    }

    fn run(
        s: &Snapshot,
        ct: &mut ConnTable,
        audit: &hashbrown::HashSet<u32>,
        ifindex: u32,
        p: PacketSummary,
    ) -> Decision {
        decide(s, ct, audit, ifindex, &p, 1)
    }

    #[test]
    fn policy_conntrack_spoofing_and_audit_decide_as_the_kernel_does() {
        let s = snapshot();
        let mut ct = ConnTable::new(64, Timeouts::default());
        let none = hashbrown::HashSet::new();

        let allowed = run(&s, &mut ct, &none, FE_IF, tcp(FE, BE, 40000, 8080));
        assert_eq!(allowed.verdict, FlowVerdict::Forwarded);
        assert_eq!(
            allowed.disposition,
            Disposition::Forward {
                egress_ifindex: BE_IF,
                dst_mac: [2, 0, 0, 0, 0, BE_IF as u8]
            }
        );
        assert_eq!(allowed.tracked, Recorded::New);

        // The reply needs no rule (the backend's egress is not enforced anyway, but the
        // frontend is not selected either: it goes through conntrack first).
        let reply = run(&s, &mut ct, &none, BE_IF, tcp(BE, FE, 8080, 40000));
        assert!(reply.is_reply && reply.verdict == FlowVerdict::Forwarded);

        let other_port = run(&s, &mut ct, &none, FE_IF, tcp(FE, BE, 40001, 9090));
        assert_eq!(
            other_port.disposition,
            Disposition::Drop(DropReason::PolicyDenied)
        );
        let deny = run(&s, &mut ct, &none, FE_IF, tcp(FE, BE, 40002, 9999));
        assert_eq!(
            deny.disposition,
            Disposition::Drop(DropReason::PolicyDenyRule)
        );

        // A packet from the frontend's interface with someone else's address.
        let spoofed = run(
            &s,
            &mut ct,
            &none,
            FE_IF,
            tcp(Ipv4Addr::new(10, 9, 9, 9), BE, 1, 8080),
        );
        assert_eq!(
            spoofed.disposition,
            Disposition::Drop(DropReason::SpoofedSource)
        );
        let posing = run(&s, &mut ct, &none, BE_IF, tcp(FE, BE, 1, 8080));
        assert_eq!(
            posing.disposition,
            Disposition::Drop(DropReason::SpoofedSource)
        );

        // A destination that is no endpoint here.
        let gone = run(
            &s,
            &mut ct,
            &none,
            FE_IF,
            tcp(FE, Ipv4Addr::new(10, 0, 7, 7), 1, 80),
        );
        assert_eq!(
            gone.disposition,
            Disposition::Drop(DropReason::StaleOrUnroutableIp)
        );

        // Audit mode on the backend: the denied packet is forwarded and reported as AUDIT.
        let audit: hashbrown::HashSet<u32> = [BE_IF].into_iter().collect();
        let audited = run(&s, &mut ct, &audit, FE_IF, tcp(FE, BE, 40003, 9090));
        assert_eq!(audited.verdict, FlowVerdict::Audit);
        assert_eq!(audited.drop_reason, Some(DropReason::PolicyDenied));
        assert!(matches!(audited.disposition, Disposition::Forward { .. }));
    }
}
