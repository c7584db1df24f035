//! The compiled policy tables workers read: per-local-identity enforcement state and
//! (local, remote, direction) port tables, answering a verdict with its deciding rule.
//!
//! Each local identity's [`LocalPolicy`] holds its own port tables, by peer identity, in a
//! small open-addressing map ([`PeerTables`]) whose entries lie in one arena. Lookup cost per
//! direction: one hash probe for the local identity, one probe in its peer map per remote
//! identity candidate (usually the same cache lines for every packet of a local endpoint),
//! then a scan of a short sorted port list (denies first).
//!
//! Keeping a local's tables together also bounds what a change copies: a new identity adds
//! its own `LocalPolicy` and one entry to the peer maps of the locals that see it, and each
//! copy-on-write clone is of one local's maps, not of a shard of every local's tables.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use crate::cow_map::{ShardKey, ShardedMap, mix64};
use crate::identity::Identity;
use crate::policy::{Action, Direction, PolicyKey};
use crate::protocol::Protocol;
use crate::verdict::{DirectionVerdict, DropReason, MatchKind, RuleId};

/// Protocol code in a [`PortEntry`] matching TCP, UDP and SCTP (Cilium's `ANY`).
pub const PROTO_ANY_L4: u8 = 0;
/// Protocol code in a [`PortEntry`] matching every protocol, ICMP included.
pub const PROTO_ALL: u8 = 255;

/// One compiled port condition with its action and rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortEntry {
    /// Deny entries sort first.
    pub action: Action,
    /// IP protocol number, [`PROTO_ANY_L4`] or [`PROTO_ALL`].
    pub protocol: u8,
    /// First port (ICMP: type).
    pub first: u16,
    /// Last port.
    pub last: u16,
    /// The rule this entry came from.
    pub rule: RuleId,
}

impl PortEntry {
    /// Whether a packet's protocol and port (ICMP: type) fall under this entry.
    #[inline]
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        let proto_ok = match self.protocol {
            PROTO_ALL => return true,
            PROTO_ANY_L4 => protocol.has_ports(),
            p => p == protocol.number(),
        };
        proto_ok && self.first <= port && port <= self.last
    }

    /// Whether the entry spans every port of its protocol(s).
    fn all_ports(&self) -> bool {
        self.protocol == PROTO_ALL
            || (self.first == 0 && self.last == u16::MAX)
            || (self.first <= 1 && self.last == u16::MAX && self.protocol != Protocol::Icmp as u8)
    }

    /// The match kind for a hit on this entry, given whether the peer was specific.
    pub fn match_kind(&self, specific_peer: bool) -> MatchKind {
        match (specific_peer, self.protocol == PROTO_ALL, self.all_ports()) {
            (true, true, _) => MatchKind::L3Only,
            (true, false, true) => MatchKind::L3Proto,
            (true, false, false) => MatchKind::L3L4,
            (false, true, _) => MatchKind::All,
            (false, false, true) => MatchKind::ProtoOnly,
            (false, false, false) => MatchKind::L4Only,
        }
    }
}

/// A sorted list of port entries: denies first, then allows from most to least specific.
pub type PortTable = Arc<[PortEntry]>;

/// Sorts and deduplicates entries into a table.
pub fn port_table(mut entries: Vec<PortEntry>) -> PortTable {
    sort_port_entries(&mut entries);
    entries.into()
}

/// Sorts entries as a port table keeps them (denies first, then allows from most to least
/// specific) and drops duplicates.
pub(crate) fn sort_port_entries(entries: &mut Vec<PortEntry>) {
    entries.sort_by_key(|e| {
        (
            e.action == Action::Allow,
            e.all_ports(),
            e.protocol == PROTO_ALL,
            e.first,
            e.last,
            e.rule,
        )
    });
    entries.dedup();
}

/// Enforcement state of one direction of a local identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalDirection {
    /// Whether the identity is in default deny in this direction.
    pub enforced: bool,
    /// The first rule that turned default deny on.
    pub enforced_by: Option<RuleId>,
    /// Entries that apply to every peer.
    pub any_peer: Vec<PortEntry>,
    /// Port tables by peer identity.
    pub peers: PeerTables,
    /// Entries made only by CIDR peers, by the CIDR identity of a *pod's* address (see
    /// [`PairKey::cidr_only`]); empty unless [`EnforcementConfig::cidr_selects_endpoints`].
    pub cidr_peers: PeerTables,
}

/// Enforcement state of a local identity (one selected by at least one policy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalPolicy {
    /// Ingress.
    pub ingress: LocalDirection,
    /// Egress.
    pub egress: LocalDirection,
}

impl LocalPolicy {
    /// The state of one direction.
    pub fn direction(&self, direction: Direction) -> &LocalDirection {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Mutable state of one direction.
    pub fn direction_mut(&mut self, direction: Direction) -> &mut LocalDirection {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// A slot of a [`PeerTables`] map: a peer identity and where its port table lies in the
/// arena. Empty when `start` is `u32::MAX`.
#[derive(Clone, Copy)]
struct PeerSlot {
    remote: u64,
    start: u32,
    len: u32,
}

impl PeerSlot {
    const EMPTY: PeerSlot = PeerSlot {
        remote: 0,
        start: u32::MAX,
        len: 0,
    };

    #[inline]
    fn is_empty(&self) -> bool {
        self.start == u32::MAX
    }
}

/// The port tables of one local identity in one direction, by peer identity.
///
/// A linear-probing hash map (power-of-two capacity, at most 3/4 full) of 16-byte slots that
/// point into one arena of [`PortEntry`]s. A lookup is a multiply, usually one cache line of
/// slots and one of entries; cloning the map (copy-on-write of a [`LocalPolicy`]) copies two
/// flat arrays and touches no reference count.
#[derive(Clone, Default)]
pub struct PeerTables {
    slots: Box<[PeerSlot]>,
    entries: Vec<PortEntry>,
    len: u32,
    /// Arena entries no slot points at any more.
    garbage: u32,
}

impl PeerTables {
    /// A map holding `tables` (peer identities distinct, each table sorted).
    pub(crate) fn from_tables(tables: Vec<(Identity, Vec<PortEntry>)>) -> Self {
        let mut map = PeerTables::default();
        if tables.is_empty() {
            return map;
        }
        map.slots = vec![PeerSlot::EMPTY; capacity_for(tables.len())].into_boxed_slice();
        map.entries
            .reserve_exact(tables.iter().map(|(_, t)| t.len()).sum());
        for (remote, table) in tables {
            map.insert(remote, &table);
        }
        map
    }

    /// The port table for `remote`.
    #[inline]
    pub fn get(&self, remote: Identity) -> Option<&[PortEntry]> {
        let slot = &self.slots[self.find(remote).ok()?];
        let start = slot.start as usize;
        self.entries.get(start..start + slot.len as usize)
    }

    /// Starts loading the slot where the lookup of `remote` begins.
    #[inline]
    pub(crate) fn prefetch(&self, remote: Identity) {
        if let Some(slot) = self.slots.get(self.home(remote)) {
            crate::cow_flat::prefetch(slot);
        }
    }

    /// Number of peers with a table.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no peer has a table.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (peer, table), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Identity, &[PortEntry])> + '_ {
        self.slots.iter().filter(|s| !s.is_empty()).map(|s| {
            let start = s.start as usize;
            (
                Identity(s.remote),
                &self.entries[start..start + s.len as usize],
            )
        })
    }

    #[inline]
    fn home(&self, remote: Identity) -> usize {
        let bits = self.slots.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (remote.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// The slot of `remote`, or the empty slot where it would go (`Err(usize::MAX)` when the
    /// map has no slots).
    #[inline]
    fn find(&self, remote: Identity) -> Result<usize, usize> {
        let mask = self.slots.len().wrapping_sub(1);
        if self.slots.is_empty() {
            return Err(usize::MAX);
        }
        let mut i = self.home(remote);
        loop {
            let s = &self.slots[i];
            if s.is_empty() {
                return Err(i);
            }
            if s.remote == remote.0 {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Sets the table of `remote` (already sorted; an empty table removes it). Returns whether
    /// anything changed.
    pub(crate) fn set(&mut self, remote: Identity, table: &[PortEntry]) -> bool {
        if table.is_empty() {
            return self.remove(remote);
        }
        if self.get(remote) == Some(table) {
            return false;
        }
        self.insert(remote, table);
        true
    }

    fn insert(&mut self, remote: Identity, table: &[PortEntry]) {
        if (self.len as usize + 1) * 4 > self.slots.len() * 3 {
            self.rehash(capacity_for(self.len as usize + 1));
        }
        let start = self.entries.len() as u32;
        self.entries.extend_from_slice(table);
        let slot = PeerSlot {
            remote: remote.0,
            start,
            len: table.len() as u32,
        };
        match self.find(remote) {
            Ok(i) => {
                self.garbage += self.slots[i].len;
                self.slots[i] = slot;
            }
            Err(i) => {
                self.slots[i] = slot;
                self.len += 1;
            }
        }
        self.compact_if_wasteful();
    }

    /// Removes the table of `remote`; returns whether there was one.
    pub(crate) fn remove(&mut self, remote: Identity) -> bool {
        let Ok(mut hole) = self.find(remote) else {
            return false;
        };
        self.garbage += self.slots[hole].len;
        self.len -= 1;
        self.slots[hole] = PeerSlot::EMPTY;
        // Shift back the entries after the hole that may move closer to their home.
        let mask = self.slots.len() - 1;
        let mut i = (hole + 1) & mask;
        while !self.slots[i].is_empty() {
            let home = self.home(Identity(self.slots[i].remote));
            // The entry may fill the hole when the hole lies between its home and itself.
            if (hole.wrapping_sub(home) & mask) < (i.wrapping_sub(home) & mask) {
                self.slots[hole] = self.slots[i];
                self.slots[i] = PeerSlot::EMPTY;
                hole = i;
            }
            i = (i + 1) & mask;
        }
        if self.len == 0 {
            *self = PeerTables::default();
        } else if self.len as usize * 8 < self.slots.len() && self.slots.len() > 8 {
            self.rehash(capacity_for(self.len as usize));
        } else {
            self.compact_if_wasteful();
        }
        true
    }

    fn rehash(&mut self, capacity: usize) {
        let old = std::mem::replace(
            &mut self.slots,
            vec![PeerSlot::EMPTY; capacity].into_boxed_slice(),
        );
        for s in old.iter().filter(|s| !s.is_empty()) {
            if let Err(i) = self.find(Identity(s.remote)) {
                self.slots[i] = *s;
            }
        }
    }

    /// Rewrites the arena without garbage once garbage is most of it.
    fn compact_if_wasteful(&mut self) {
        if self.garbage < 64 || (self.garbage as usize) * 2 < self.entries.len() {
            return;
        }
        let mut entries = Vec::with_capacity(self.entries.len() - self.garbage as usize);
        for s in self.slots.iter_mut().filter(|s| !s.is_empty()) {
            let start = s.start as usize;
            s.start = entries.len() as u32;
            entries.extend_from_slice(&self.entries[start..start + s.len as usize]);
        }
        self.entries = entries;
        self.garbage = 0;
    }

    /// Heap bytes (slots and arena at capacity).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * size_of::<PeerSlot>() + self.entries.capacity() * size_of::<PortEntry>()
    }
}

/// The power-of-two capacity that keeps `len` peers at most 3/4 full (at least 4 slots).
fn capacity_for(len: usize) -> usize {
    (len * 4).div_ceil(3).next_power_of_two().max(4)
}

impl PartialEq for PeerTables {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(r, t)| other.get(r) == Some(t))
    }
}

impl Eq for PeerTables {}

impl std::fmt::Debug for PeerTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sorted: Vec<_> = self.iter().collect();
        sorted.sort_by_key(|(r, _)| *r);
        f.debug_map().entries(sorted).finish()
    }
}

impl ShardKey for Identity {
    fn shard_hash(&self) -> u64 {
        mix64(self.0)
    }
}

/// Key of a (local, remote, direction) port table, as [`PairTables`] names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// The endpoint's identity.
    pub local: Identity,
    /// The peer's identity.
    pub remote: Identity,
    /// The direction, from the local endpoint's side.
    pub direction: Direction,
    /// Entries made only by CIDR peers, for the CIDR identity of a *pod's* address
    /// (Kubernetes semantics, [`EnforcementConfig::cidr_selects_endpoints`]): selectors and
    /// entities that happen to match a CIDR identity (`{}`, `NotIn`, `world`) stand for
    /// addresses outside the cluster and must not match a pod through its address.
    pub cidr_only: bool,
}

/// What a rule id stands for, for attribution in flows and traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// The policy.
    pub policy: Arc<PolicyKey>,
    /// The rule's direction.
    pub direction: Direction,
    /// Allow or deny.
    pub action: Action,
    /// Index within its section (`ingress[i]`), `None` for the default-deny marker of a
    /// NetworkPolicy's `policyTypes`.
    pub index: Option<u32>,
}

impl std::fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let section = match (self.direction, self.action) {
            (Direction::Ingress, Action::Allow) => "ingress",
            (Direction::Ingress, Action::Deny) => "ingressDeny",
            (Direction::Egress, Action::Allow) => "egress",
            (Direction::Egress, Action::Deny) => "egressDeny",
        };
        match self.index {
            Some(i) => write!(f, "{} {}[{}]", self.policy, section, i),
            None => write!(f, "{} policyTypes {}", self.policy, self.direction.as_str()),
        }
    }
}

/// Settings that change verdicts without being part of any policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnforcementConfig {
    /// Traffic from the local host to a local endpoint is always allowed at ingress (Cilium's
    /// `allow-localhost`, needed for kubelet probes). Deny rules still apply.
    pub allow_from_host: bool,
    /// CIDR peers (`ipBlock`, `toCIDR`) also match pod addresses (Kubernetes semantics);
    /// Cilium semantics match only addresses outside the cluster.
    pub cidr_selects_endpoints: bool,
    /// Endpoints still in the `init` identity are default deny in both directions.
    pub init_default_deny: bool,
}

impl Default for EnforcementConfig {
    fn default() -> Self {
        EnforcementConfig {
            allow_from_host: true,
            cidr_selects_endpoints: false,
            init_default_deny: true,
        }
    }
}

/// Every (local, remote, direction) port table of a [`PolicyTables`], as a view of its
/// `locals` (each local identity's [`LocalPolicy`] holds its own tables).
#[derive(Clone, Default)]
pub struct PairTables {
    locals: ShardedMap<Identity, Arc<LocalPolicy>>,
}

impl PairTables {
    /// The view of `locals`' tables.
    pub(crate) fn of(locals: &ShardedMap<Identity, Arc<LocalPolicy>>) -> Self {
        PairTables {
            locals: locals.clone(),
        }
    }

    /// Every table with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (PairKey, &[PortEntry])> + '_ {
        self.locals.iter().flat_map(|(local, policy)| {
            let local = *local;
            [Direction::Ingress, Direction::Egress]
                .into_iter()
                .flat_map(move |direction| {
                    let state = policy.direction(direction);
                    [(false, &state.peers), (true, &state.cidr_peers)]
                        .into_iter()
                        .flat_map(move |(cidr_only, peers)| {
                            peers.iter().map(move |(remote, table)| {
                                let key = PairKey {
                                    local,
                                    remote,
                                    direction,
                                    cidr_only,
                                };
                                (key, table)
                            })
                        })
                })
        })
    }

    /// The table for `key`.
    pub fn get(&self, key: &PairKey) -> Option<&[PortEntry]> {
        let state = self.locals.get(&key.local)?.direction(key.direction);
        let peers = if key.cidr_only {
            &state.cidr_peers
        } else {
            &state.peers
        };
        peers.get(key.remote)
    }

    /// Whether there is a table for `key`.
    pub fn contains_key(&self, key: &PairKey) -> bool {
        self.get(key).is_some()
    }

    /// Number of tables (sums over the local identities: O(locals)).
    pub fn len(&self) -> usize {
        self.locals
            .iter()
            .map(|(_, p)| {
                [&p.ingress, &p.egress]
                    .iter()
                    .map(|d| d.peers.len() + d.cidr_peers.len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The compiled policy, as published to workers. Cheap to clone.
#[derive(Clone)]
pub struct PolicyTables {
    /// Per local identity enforcement, with its port tables by peer.
    pub locals: ShardedMap<Identity, Arc<LocalPolicy>>,
    /// Per (local, remote, direction) port tables: a view of `locals`.
    pub pairs: PairTables,
    /// Attribution for rule ids.
    pub rules: Arc<HashMap<RuleId, RuleInfo>>,
    /// Identities poisoned by a collision.
    pub collided: Arc<HashSet<Identity>>,
    /// Enforcement settings.
    pub config: EnforcementConfig,
}

impl Default for PolicyTables {
    fn default() -> Self {
        PolicyTables {
            locals: ShardedMap::new(),
            pairs: PairTables::default(),
            rules: Arc::new(HashMap::new()),
            collided: Arc::new(HashSet::new()),
            config: EnforcementConfig::default(),
        }
    }
}

impl PolicyTables {
    /// Decides one direction for `local` against the peer's identity candidates: the peer's
    /// own identity first, then, in Kubernetes mode, the CIDR identity of a pod's address,
    /// which only entries made by CIDR peers match.
    #[inline]
    pub fn decide_direction(
        &self,
        local: Identity,
        direction: Direction,
        remotes: &[Identity],
        protocol: Protocol,
        port: u16,
    ) -> DirectionVerdict {
        let Some(policy) = self.locals.get(&local) else {
            return DirectionVerdict::NOT_ENFORCED;
        };
        self.decide_local(policy, direction, remotes, protocol, port)
    }

    /// [`decide_direction`](Self::decide_direction) with the local's policy looked up already.
    #[inline]
    pub(crate) fn decide_local(
        &self,
        policy: &LocalPolicy,
        direction: Direction,
        remotes: &[Identity],
        protocol: Protocol,
        port: u16,
    ) -> DirectionVerdict {
        let state = policy.direction(direction);
        let none: &[PortEntry] = &[];
        let own = remotes.first().and_then(|r| state.peers.get(*r));
        let cidr = remotes.get(1).and_then(|r| state.cidr_peers.get(*r));
        // The peer's tables first, then the entries for every peer; each sorted denies first.
        let tables = [
            (own.unwrap_or(none), true),
            (cidr.unwrap_or(none), true),
            (state.any_peer.as_slice(), false),
        ];
        // Deny beats allow, whichever policy says it.
        for (table, specific) in tables {
            for e in table {
                if e.action != Action::Deny {
                    break;
                }
                if e.matches(protocol, port) {
                    return DirectionVerdict {
                        action: Action::Deny,
                        rule: Some(e.rule),
                        match_kind: e.match_kind(specific),
                        drop_reason: Some(DropReason::PolicyDenyRule),
                        enforced: true,
                    };
                }
            }
        }
        for (table, specific) in tables {
            for e in table {
                if e.action == Action::Allow && e.matches(protocol, port) {
                    return allow(e, specific, state.enforced);
                }
            }
        }
        if direction == Direction::Ingress
            && self.config.allow_from_host
            && remotes.first() == Some(&Identity::HOST)
        {
            return DirectionVerdict {
                action: Action::Allow,
                rule: None,
                match_kind: MatchKind::L3Only,
                drop_reason: None,
                enforced: state.enforced,
            };
        }
        if state.enforced {
            DirectionVerdict {
                action: Action::Deny,
                rule: state.enforced_by,
                match_kind: MatchKind::None,
                drop_reason: Some(DropReason::PolicyDenied),
                enforced: true,
            }
        } else {
            DirectionVerdict::NOT_ENFORCED
        }
    }

    /// Attribution for a rule id.
    pub fn rule(&self, id: RuleId) -> Option<&RuleInfo> {
        self.rules.get(&id)
    }

    /// Whether an identity is poisoned by a collision.
    #[inline]
    pub fn is_collided(&self, id: Identity) -> bool {
        !self.collided.is_empty() && self.collided.contains(&id)
    }
}

fn allow(entry: &PortEntry, specific: bool, enforced: bool) -> DirectionVerdict {
    DirectionVerdict {
        action: Action::Allow,
        rule: Some(entry.rule),
        match_kind: entry.match_kind(specific),
        drop_reason: None,
        enforced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn table(rule: u32, len: usize) -> Vec<PortEntry> {
        (0..len)
            .map(|i| PortEntry {
                action: Action::Allow,
                protocol: PROTO_ANY_L4,
                first: i as u16,
                last: i as u16,
                rule: RuleId(rule),
            })
            .collect()
    }

    proptest! {
        /// Inserts, replacements and removals (with the rehashes and arena compactions they
        /// cause) against a plain map; identities collide on purpose (few distinct values,
        /// reserved ones included).
        #[test]
        fn peer_tables_behave_like_a_map(
            initial in proptest::collection::btree_map(0u64..40, 1usize..4, 0..20),
            ops in proptest::collection::vec((0u64..40, 0usize..5, any::<u32>()), 1..300),
        ) {
            let id = |k: u64| Identity(if k < 10 { k } else { k.wrapping_mul(0x1234_5678_9abc_def1) });
            let mut model: BTreeMap<u64, Vec<PortEntry>> = BTreeMap::new();
            let mut tables = Vec::new();
            for (k, len) in &initial {
                model.insert(id(*k).0, table(*len as u32, *len));
                tables.push((id(*k), table(*len as u32, *len)));
            }
            let mut map = PeerTables::from_tables(tables);
            let mut frozen = Vec::new();
            for (n, (k, len, rule)) in ops.into_iter().enumerate() {
                let t = table(rule, len);
                let changed = map.set(id(k), &t);
                let before = model.get(&id(k).0).cloned();
                if t.is_empty() {
                    model.remove(&id(k).0);
                } else {
                    model.insert(id(k).0, t.clone());
                }
                prop_assert_eq!(changed, before != model.get(&id(k).0).cloned());
                prop_assert_eq!(map.len(), model.len());
                if n % 41 == 0 {
                    frozen.push((map.clone(), model.clone()));
                }
            }
            frozen.push((map, model));
            for (map, model) in frozen {
                for k in 0..40 {
                    prop_assert_eq!(map.get(id(k)), model.get(&id(k).0).map(Vec::as_slice));
                }
                let mut all: Vec<(u64, Vec<PortEntry>)> =
                    map.iter().map(|(r, t)| (r.0, t.to_vec())).collect();
                all.sort();
                prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
                prop_assert!(map.garbage as usize <= map.entries.len());
            }
        }
    }

    #[test]
    fn an_emptied_map_frees_its_memory() {
        let mut map = PeerTables::from_tables(
            (1..=100u64)
                .map(|k| (Identity(k << 20), table(1, 3)))
                .collect(),
        );
        assert!(map.heap_bytes() > 0);
        for k in 1..=100u64 {
            assert!(map.remove(Identity(k << 20)));
        }
        assert!(map.is_empty());
        assert_eq!(map.heap_bytes(), 0);
        assert_eq!(map.get(Identity(1 << 20)), None);
    }
}
