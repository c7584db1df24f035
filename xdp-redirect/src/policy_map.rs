//! Translating identity-cache's compiled policy into the kernel's policy LPM trie.
//!
//! The trie answers one longest-prefix match per (local, remote, direction, protocol, port).
//! A longest match alone cannot express "deny beats allow", so each port table is first
//! resolved into disjoint port intervals per protocol, each carrying its effective action
//! (a matching deny wins over any allow), and only then cut into prefixes. The kernel then
//! looks up the remote-specific key and the any-peer key (remote 0) and lets a deny from
//! either win — the same answer as [`PolicyTables::decide_direction`].

use std::collections::BTreeMap;

use identity_cache::identity::Identity;
use identity_cache::policy::{Action, Direction};
use identity_cache::protocol::Protocol;
use identity_cache::tables::{LocalPolicy, PROTO_ALL, PROTO_ANY_L4, PolicyTables, PortEntry};

use crate::abi::{
    ACTION_ALLOW, ACTION_DENY, DIR_CIDR_ONLY, DIR_EGRESS, DIR_INGRESS, LocalPolicyValue,
    POLICY_FULL_PREFIX, POLICY_PREFIX_PORT_BASE, POLICY_PREFIX_PROTO_ALL, PolicyKeyData,
    PolicyValue,
};

/// The direction code used in keys.
pub fn direction_code(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    }
}

/// The policy cookie of a rule: its id + 1, so 0 means "no rule".
pub fn cookie(entry: &PortEntry) -> u32 {
    entry.rule.0.wrapping_add(1)
}

fn value(entry: &PortEntry, specific: bool) -> PolicyValue {
    PolicyValue {
        action: if entry.action == Action::Deny {
            ACTION_DENY
        } else {
            ACTION_ALLOW
        },
        match_kind: entry.match_kind(specific) as u8,
        pad: 0,
        rule: cookie(entry),
    }
}

/// The protocols an entry's protocol code covers among `candidates`.
fn covers(entry: &PortEntry, protocol: u8) -> bool {
    match entry.protocol {
        PROTO_ALL => true,
        PROTO_ANY_L4 => Protocol::from_number(protocol).is_some_and(Protocol::has_ports),
        p => p == protocol,
    }
}

/// Cuts an inclusive range into aligned power-of-two blocks: (first port, prefix bits).
pub fn range_to_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let mut start = u32::from(first);
    let end = u32::from(last);
    while start <= end {
        // Largest block aligned at `start` that fits in [start, end].
        let mut size = if start == 0 {
            1u32 << 16
        } else {
            1u32 << start.trailing_zeros().min(16)
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        out.push((start as u16, 16 - size.trailing_zeros()));
        start += size;
    }
    out
}

/// The trie entries of one port table for (local, remote, direction).
pub fn table_entries(
    local: Identity,
    remote: Identity,
    direction: Direction,
    cidr_only: bool,
    table: &[PortEntry],
    out: &mut BTreeMap<PolicyKeyOrd, PolicyValue>,
) {
    if table.is_empty() {
        return;
    }
    let specific = remote != Identity::UNKNOWN;
    let key = |protocol: u8, port: u16, prefixlen: u32| PolicyKey {
        prefixlen,
        data: PolicyKeyData {
            local: local.0,
            remote: remote.0,
            direction: direction_code(direction) | if cidr_only { DIR_CIDR_ONLY } else { 0 },
            protocol,
            port_be: port.to_be(),
        },
    };
    // Every-protocol entry: deny if any every-protocol deny, else the first allow.
    let all: Vec<&PortEntry> = table.iter().filter(|e| e.protocol == PROTO_ALL).collect();
    if let Some(e) = all
        .iter()
        .find(|e| e.action == Action::Deny)
        .or_else(|| all.first())
    {
        out.insert(
            PolicyKeyOrd(key(0, 0, POLICY_PREFIX_PROTO_ALL)),
            value(e, specific),
        );
    }
    // Protocols with entries of their own get full interval coverage, folding in the
    // every-protocol and any-L4 entries so the longer prefixes keep deny precedence.
    let mut protocols: Vec<u8> = Vec::new();
    for e in table {
        match e.protocol {
            PROTO_ALL => {}
            PROTO_ANY_L4 => protocols
                .extend([Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(Protocol::number)),
            p => protocols.push(p),
        }
    }
    protocols.sort_unstable();
    protocols.dedup();
    for protocol in protocols {
        let relevant: Vec<&PortEntry> = table.iter().filter(|e| covers(e, protocol)).collect();
        let mut bounds: Vec<u32> = Vec::new();
        for e in &relevant {
            let (first, last) = if e.protocol == PROTO_ALL {
                (0, u16::MAX)
            } else {
                (e.first, e.last)
            };
            bounds.push(u32::from(first));
            bounds.push(u32::from(last) + 1);
        }
        bounds.sort_unstable();
        bounds.dedup();
        let mut intervals: Vec<(u16, u16, &PortEntry)> = Vec::new();
        for pair in bounds.windows(2) {
            let (a, b) = (pair[0], pair[1] - 1);
            let port = a as u16;
            let hit =
                |e: &&&PortEntry| e.protocol == PROTO_ALL || (e.first <= port && port <= e.last);
            let effective = relevant
                .iter()
                .filter(|e| e.action == Action::Deny)
                .find(hit)
                .or_else(|| relevant.iter().find(hit));
            let Some(e) = effective else { continue };
            match intervals.last_mut() {
                Some((_, last, prev))
                    if u32::from(*last) + 1 == a
                        && prev.rule == e.rule
                        && prev.action == e.action =>
                {
                    *last = b as u16;
                }
                _ => intervals.push((a as u16, b as u16, e)),
            }
        }
        for (first, last, e) in intervals {
            for (port, bits) in range_to_prefixes(first, last) {
                out.insert(
                    PolicyKeyOrd(key(protocol, port, POLICY_PREFIX_PORT_BASE + bits)),
                    value(e, specific),
                );
            }
        }
    }
}

/// The kernel's per-identity enforcement value.
pub fn local_value(policy: &LocalPolicy, collided: bool) -> LocalPolicyValue {
    LocalPolicyValue {
        ingress_enforced: u8::from(policy.ingress.enforced),
        egress_enforced: u8::from(policy.egress.enforced),
        collided: u8::from(collided),
        pad: 0,
        ingress_rule: policy
            .ingress
            .enforced_by
            .map_or(0, |r| r.0.wrapping_add(1)),
        egress_rule: policy.egress.enforced_by.map_or(0, |r| r.0.wrapping_add(1)),
        pad2: 0,
    }
}

/// A full policy LPM key: prefix length and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    /// Prefix length in bits, counted from `data.local`.
    pub prefixlen: u32,
    /// The key data.
    pub data: PolicyKeyData,
}

/// A [`PolicyKey`] with a total order, for deterministic diffs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyKeyOrd(pub PolicyKey);

impl PolicyKeyOrd {
    fn tuple(&self) -> (u64, u64, u8, u8, u16, u32) {
        let k = self.0.data;
        (
            k.local,
            k.remote,
            k.direction,
            k.protocol,
            u16::from_be(k.port_be),
            self.0.prefixlen,
        )
    }
}

impl PartialOrd for PolicyKeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PolicyKeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

/// Every policy trie entry and local-policy value of a compiled table set.
pub struct KernelPolicy {
    /// The policy LPM trie contents.
    pub entries: BTreeMap<PolicyKeyOrd, PolicyValue>,
    /// The local-policy hash contents.
    pub locals: BTreeMap<u64, LocalPolicyValue>,
}

/// Translates the compiled tables into kernel map contents.
pub fn kernel_policy(tables: &PolicyTables) -> KernelPolicy {
    let mut entries = BTreeMap::new();
    let mut locals = BTreeMap::new();
    for (local, policy) in tables.locals.iter() {
        locals.insert(local.0, local_value(policy, tables.is_collided(*local)));
        for direction in [Direction::Ingress, Direction::Egress] {
            let any = &policy.direction(direction).any_peer;
            table_entries(
                *local,
                Identity::UNKNOWN,
                direction,
                false,
                any,
                &mut entries,
            );
        }
    }
    for (key, table) in tables.pairs.iter() {
        table_entries(
            key.local,
            key.remote,
            key.direction,
            key.cidr_only,
            table,
            &mut entries,
        );
    }
    for id in tables.collided.iter() {
        locals.entry(id.0).or_insert(LocalPolicyValue {
            collided: 1,
            ..LocalPolicyValue::default()
        });
    }
    KernelPolicy { entries, locals }
}

/// What the kernel's longest-prefix lookup returns for one key (a reference model of the
/// trie, used by tests and by `sluice policy trace --kernel`).
pub fn lpm_lookup(
    entries: &BTreeMap<PolicyKeyOrd, PolicyValue>,
    local: Identity,
    remote: Identity,
    direction: Direction,
    protocol: u8,
    port: u16,
) -> Option<PolicyValue> {
    let dir = direction_code(direction);
    let mut best: Option<(u32, PolicyValue)> = None;
    let data = |protocol: u8, port: u16| PolicyKeyData {
        local: local.0,
        remote: remote.0,
        direction: dir,
        protocol,
        port_be: port.to_be(),
    };
    let range = PolicyKeyOrd(PolicyKey {
        prefixlen: 0,
        data: data(0, 0),
    })..=PolicyKeyOrd(PolicyKey {
        prefixlen: u32::MAX,
        data: data(u8::MAX, u16::MAX),
    });
    for (k, v) in entries.range(range) {
        let (prefixlen, k) = (k.0.prefixlen, k.0.data);
        let matches = match prefixlen {
            POLICY_PREFIX_PROTO_ALL => true,
            len if (POLICY_PREFIX_PORT_BASE..=POLICY_FULL_PREFIX).contains(&len) => {
                let bits = len - POLICY_PREFIX_PORT_BASE;
                let mask: u16 = if bits == 0 {
                    0
                } else {
                    u16::MAX << (16 - bits)
                };
                k.protocol == protocol && (u16::from_be(k.port_be) & mask) == (port & mask)
            }
            _ => false,
        };
        if matches && best.is_none_or(|(b, _)| prefixlen > b) {
            best = Some((prefixlen, *v));
        }
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity_cache::verdict::RuleId;

    #[test]
    fn ranges_cut_into_aligned_prefixes() {
        assert_eq!(range_to_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(range_to_prefixes(0, u16::MAX), vec![(0, 0)]);
        assert_eq!(range_to_prefixes(4096, 8191), vec![(4096, 4)]);
        let cut = range_to_prefixes(1, u16::MAX);
        assert_eq!(cut.len(), 16);
        let covered: u32 = cut.iter().map(|(_, bits)| 1u32 << (16 - bits)).sum();
        assert_eq!(covered, 65535);
        for first in [0u16, 1, 5, 1000, 65000] {
            for len in [1u16, 2, 3, 100, 535] {
                let last = first.saturating_add(len - 1);
                let blocks = range_to_prefixes(first, last);
                let mut next = u32::from(first);
                for (start, bits) in blocks {
                    assert_eq!(u32::from(start), next, "contiguous");
                    next += 1 << (16 - bits);
                }
                assert_eq!(next, u32::from(last) + 1);
            }
        }
    }

    fn entry(action: Action, protocol: u8, first: u16, last: u16, rule: u32) -> PortEntry {
        PortEntry {
            action,
            protocol,
            first,
            last,
            rule: RuleId(rule),
        }
    }

    fn verdict(table: &[PortEntry], protocol: Protocol, port: u16) -> Option<u8> {
        let mut out = BTreeMap::new();
        table_entries(
            Identity(300),
            Identity(400),
            Direction::Ingress,
            false,
            table,
            &mut out,
        );
        lpm_lookup(
            &out,
            Identity(300),
            Identity(400),
            Direction::Ingress,
            protocol.number(),
            port,
        )
        .map(|v| v.action)
    }

    #[test]
    fn deny_precedence_survives_longest_prefix_match() {
        // Allow everything, deny TCP 23: the broad allow must not reach port 23.
        let table = vec![
            entry(Action::Deny, 6, 23, 23, 1),
            entry(Action::Allow, PROTO_ALL, 0, u16::MAX, 2),
        ];
        assert_eq!(verdict(&table, Protocol::Tcp, 23), Some(ACTION_DENY));
        assert_eq!(verdict(&table, Protocol::Tcp, 22), Some(ACTION_ALLOW));
        assert_eq!(verdict(&table, Protocol::Udp, 23), Some(ACTION_ALLOW));
        assert_eq!(verdict(&table, Protocol::Icmp, 8), Some(ACTION_ALLOW));
        // Deny everything, allow TCP 80: the narrow allow must not win.
        let table = vec![
            entry(Action::Deny, PROTO_ALL, 0, u16::MAX, 1),
            entry(Action::Allow, 6, 80, 80, 2),
        ];
        assert_eq!(verdict(&table, Protocol::Tcp, 80), Some(ACTION_DENY));
        // Any-L4 range with a deny hole.
        let table = vec![
            entry(Action::Deny, 17, 5000, 5001, 1),
            entry(Action::Allow, PROTO_ANY_L4, 4000, 6000, 2),
        ];
        assert_eq!(verdict(&table, Protocol::Udp, 5001), Some(ACTION_DENY));
        assert_eq!(verdict(&table, Protocol::Udp, 5002), Some(ACTION_ALLOW));
        assert_eq!(verdict(&table, Protocol::Sctp, 4000), Some(ACTION_ALLOW));
        assert_eq!(verdict(&table, Protocol::Tcp, 3999), None);
        assert_eq!(verdict(&table, Protocol::Icmp, 5000), None);
    }

    #[test]
    fn exhaustive_agreement_with_table_scan_on_small_tables() {
        // Random small tables over a small port space: the trie answer equals the scan.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let protos = [PROTO_ALL, PROTO_ANY_L4, 6, 17, 132, 1];
        for _ in 0..300 {
            let mut table = Vec::new();
            for r in 0..(1 + next(5)) {
                let first = next(40) as u16;
                let last = first + next(20) as u16;
                let action = if next(3) == 0 {
                    Action::Deny
                } else {
                    Action::Allow
                };
                table.push(entry(
                    action,
                    protos[next(6) as usize],
                    first,
                    last,
                    r as u32,
                ));
            }
            let table = identity_cache::tables::port_table(table);
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp] {
                for port in 0..70u16 {
                    let deny = table
                        .iter()
                        .any(|e| e.action == Action::Deny && e.matches(proto, port));
                    let allow = table
                        .iter()
                        .any(|e| e.action == Action::Allow && e.matches(proto, port));
                    let expect = if deny {
                        Some(ACTION_DENY)
                    } else if allow {
                        Some(ACTION_ALLOW)
                    } else {
                        None
                    };
                    assert_eq!(
                        verdict(&table, proto, port),
                        expect,
                        "{table:?} {proto} {port}"
                    );
                }
            }
        }
    }
}
