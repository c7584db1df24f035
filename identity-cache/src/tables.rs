//! The compiled policy tables workers read: per-local-identity enforcement state and
//! (local, remote, direction) port tables, answering a verdict with its deciding rule.
//!
//! Lookup cost per direction: one hash probe for the local identity and one per remote
//! identity candidate, then a scan of a short sorted port list (denies first).

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
    entries.into()
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

impl ShardKey for Identity {
    fn shard_hash(&self) -> u64 {
        mix64(self.0)
    }
}

/// Key of a (local, remote, direction) port table; shards by the remote identity so that
/// adding or removing one identity touches one shard.
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

impl ShardKey for PairKey {
    fn shard_hash(&self) -> u64 {
        mix64(self.remote.0)
    }
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

/// The compiled policy, as published to workers. Cheap to clone.
#[derive(Clone)]
pub struct PolicyTables {
    /// Per local identity enforcement.
    pub locals: ShardedMap<Identity, Arc<LocalPolicy>>,
    /// Per (local, remote, direction) port tables.
    pub pairs: ShardedMap<PairKey, PortTable>,
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
            pairs: ShardedMap::new(),
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
        let state = policy.direction(direction);
        let mut pair_tables: [Option<&PortTable>; 2] = [None, None];
        for (i, (slot, remote)) in pair_tables.iter_mut().zip(remotes.iter()).enumerate() {
            *slot = self.pairs.get(&PairKey {
                local,
                remote: *remote,
                direction,
                cidr_only: i > 0,
            });
        }
        let deny = |entry: &PortEntry, specific: bool| DirectionVerdict {
            action: Action::Deny,
            rule: Some(entry.rule),
            match_kind: entry.match_kind(specific),
            drop_reason: Some(DropReason::PolicyDenyRule),
            enforced: true,
        };
        // Deny beats allow, whichever policy says it.
        for table in pair_tables.iter().flatten() {
            for e in table.iter().take_while(|e| e.action == Action::Deny) {
                if e.matches(protocol, port) {
                    return deny(e, true);
                }
            }
        }
        for e in state
            .any_peer
            .iter()
            .take_while(|e| e.action == Action::Deny)
        {
            if e.matches(protocol, port) {
                return deny(e, false);
            }
        }
        for table in pair_tables.iter().flatten() {
            for e in table.iter().filter(|e| e.action == Action::Allow) {
                if e.matches(protocol, port) {
                    return allow(e, true, state.enforced);
                }
            }
        }
        for e in state.any_peer.iter().filter(|e| e.action == Action::Allow) {
            if e.matches(protocol, port) {
                return allow(e, false, state.enforced);
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
