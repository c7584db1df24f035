//! The policy compiler: turns policies and the identities in use into [`PolicyTables`],
//! incrementally.
//!
//! A selector cache keeps, for every distinct subject and peer matcher, the set of identities
//! it matches. A new identity is tested once against every matcher; a new policy's matchers
//! are evaluated once against every identity (narrowed by namespace where the selector names
//! one). Only what a change touches is recomputed:
//! - identity added: its own tables (if a policy selects it) and the (local, new) tables of
//!   the locals whose rules now match it as a peer — one shard of the pair map;
//! - identity removed: its own tables and every (·, removed) table — again one shard;
//! - policy changed: the tables of the identities its old or new rules select.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use crate::identity::{Identity, IdentityInfo, IdentityKind, ReservedIdentity};
use crate::labels::NAMESPACE_LABEL;
use crate::policy::{
    CidrPeer, Direction, Entity, Peer, Peers, Policy, PolicyKey, PortSpec, Ports, Rule,
};
use crate::protocol::Protocol;
use crate::selector::{Operator, Selector};
use crate::tables::{
    EnforcementConfig, LocalPolicy, PROTO_ALL, PROTO_ANY_L4, PairKey, PolicyTables, PortEntry,
    RuleInfo, port_table,
};
use crate::verdict::RuleId;

/// A named container port of an identity's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortName {
    /// The name.
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The number.
    pub port: u16,
}

/// Something that matches a set of identities: a subject selector or a peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Matcher {
    Subject(Selector),
    Peer(Peer),
}

type MatcherId = u32;

struct MatcherEntry {
    matcher: Matcher,
    users: u32,
    members: HashSet<Identity>,
}

struct CompiledRule {
    info: RuleInfo,
    rule: Rule,
    subject: MatcherId,
    peers: Option<Vec<MatcherId>>,
}

struct IdentityFacts {
    info: IdentityInfo,
    named_ports: Vec<PortName>,
}

/// The writer side of policy: the repository of policies and the incremental compiler.
pub struct PolicyCompiler {
    config: EnforcementConfig,
    policies: BTreeMap<PolicyKey, (Arc<Policy>, Vec<RuleId>)>,
    rules: BTreeMap<RuleId, CompiledRule>,
    next_rule: u32,
    matchers: HashMap<MatcherId, MatcherEntry>,
    matcher_ids: HashMap<Matcher, MatcherId>,
    next_matcher: MatcherId,
    subject_rules: HashMap<MatcherId, BTreeSet<RuleId>>,
    peer_rules: HashMap<MatcherId, BTreeSet<RuleId>>,
    identities: HashMap<Identity, IdentityFacts>,
    by_namespace: HashMap<String, HashSet<Identity>>,
    /// Subject matchers each identity belongs to.
    subject_of: HashMap<Identity, BTreeSet<MatcherId>>,
    tables: PolicyTables,
}

impl PolicyCompiler {
    /// An empty compiler with the reserved identities known.
    pub fn new(config: EnforcementConfig) -> Self {
        let mut c = PolicyCompiler {
            config,
            policies: BTreeMap::new(),
            rules: BTreeMap::new(),
            next_rule: 0,
            matchers: HashMap::new(),
            matcher_ids: HashMap::new(),
            next_matcher: 0,
            subject_rules: HashMap::new(),
            peer_rules: HashMap::new(),
            identities: HashMap::new(),
            by_namespace: HashMap::new(),
            subject_of: HashMap::new(),
            tables: PolicyTables {
                config,
                ..PolicyTables::default()
            },
        };
        for r in ReservedIdentity::ALL {
            let info = IdentityInfo {
                labels: Arc::new(r.labels()),
                kind: IdentityKind::Reserved(r),
            };
            c.upsert_identity(r.identity(), info, Vec::new());
        }
        c
    }

    /// The enforcement settings.
    pub fn config(&self) -> EnforcementConfig {
        self.config
    }

    /// The tables to publish (cheap clone).
    pub fn tables(&self) -> PolicyTables {
        self.tables.clone()
    }

    /// The policies loaded, by key.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values().map(|(p, _)| p)
    }

    /// The policy with this key.
    pub fn policy(&self, key: &PolicyKey) -> Option<&Arc<Policy>> {
        self.policies.get(key).map(|(p, _)| p)
    }

    /// Number of identities known.
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// Sets the poisoned identities (from the registry's collision tracking).
    pub fn set_collided(&mut self, collided: impl IntoIterator<Item = Identity>) {
        self.tables.collided = Arc::new(collided.into_iter().collect());
    }

    // ---- identities -------------------------------------------------------------------

    /// Adds an identity, or updates its named ports. Recomputes what it touches.
    pub fn upsert_identity(
        &mut self,
        id: Identity,
        info: IdentityInfo,
        named_ports: Vec<PortName>,
    ) {
        if let Some(existing) = self.identities.get(&id) {
            if existing.named_ports == named_ports && *existing.info.labels == *info.labels {
                return;
            }
            self.remove_identity(id);
        }
        if let Some(ns) = info.labels.get(None, NAMESPACE_LABEL) {
            self.by_namespace
                .entry(ns.to_owned())
                .or_default()
                .insert(id);
        }
        self.identities
            .insert(id, IdentityFacts { info, named_ports });
        let mut newly_peer = Vec::new();
        let mut subjects = BTreeSet::new();
        for (mid, entry) in self.matchers.iter_mut() {
            let facts = &self.identities[&id];
            if matches(&entry.matcher, id, &facts.info, self.config) {
                entry.members.insert(id);
                match entry.matcher {
                    Matcher::Subject(_) => {
                        subjects.insert(*mid);
                    }
                    Matcher::Peer(_) => newly_peer.push(*mid),
                }
            }
        }
        if !subjects.is_empty() {
            self.subject_of.insert(id, subjects);
        }
        if self.is_local_candidate(id) {
            self.install_local(id);
        }
        // Locals whose rules now see `id` as a peer get their (local, id) tables.
        let mut locals = BTreeSet::new();
        for mid in newly_peer {
            for rid in self.peer_rules.get(&mid).into_iter().flatten() {
                let subject = self.rules[rid].subject;
                locals.extend(self.matchers[&subject].members.iter().copied());
            }
        }
        for local in locals {
            if local != id {
                self.refresh_pair(local, id);
            }
        }
    }

    /// Removes an identity and every table entry that mentions it.
    pub fn remove_identity(&mut self, id: Identity) {
        if !self.identities.contains_key(&id) {
            return;
        }
        self.uninstall_local(id);
        // Every (·, id) table lives in the one shard of `id`.
        self.tables.pairs.retain(|k, _| k.remote != id);
        for entry in self.matchers.values_mut() {
            entry.members.remove(&id);
        }
        self.subject_of.remove(&id);
        if let Some(facts) = self.identities.remove(&id)
            && let Some(ns) = facts.info.labels.get(None, NAMESPACE_LABEL)
            && let Some(set) = self.by_namespace.get_mut(ns)
        {
            set.remove(&id);
            if set.is_empty() {
                self.by_namespace.remove(ns);
            }
        }
    }

    fn is_local_candidate(&self, id: Identity) -> bool {
        self.subject_of.contains_key(&id) || (id == Identity::INIT && self.config.init_default_deny)
    }

    // ---- policies ---------------------------------------------------------------------

    /// Adds or replaces a policy (by key). Recomputes the identities its old and new rules
    /// select.
    pub fn upsert_policy(&mut self, policy: Policy) {
        let key = policy.key.clone();
        let mut affected = self.remove_policy_rules(&key);
        let policy = Arc::new(policy);
        let key_arc = Arc::new(key.clone());
        let mut ids = Vec::with_capacity(policy.rules.len());
        for rule in &policy.rules {
            let rid = RuleId(self.next_rule);
            self.next_rule += 1;
            let subject = self.acquire_matcher(Matcher::Subject(rule.subject.clone()));
            let peers: Option<Vec<MatcherId>> = match &rule.peers {
                Peers::Any => None,
                Peers::Only(list) => Some(
                    list.iter()
                        .map(|p| self.acquire_matcher(Matcher::Peer(p.clone())))
                        .collect(),
                ),
            };
            self.subject_rules.entry(subject).or_default().insert(rid);
            for mid in peers.iter().flatten() {
                self.peer_rules.entry(*mid).or_default().insert(rid);
            }
            affected.extend(self.matchers[&subject].members.iter().copied());
            let info = RuleInfo {
                policy: key_arc.clone(),
                direction: rule.direction,
                action: rule.action,
                index: (rule.index != u32::MAX).then_some(rule.index),
            };
            self.rules.insert(
                rid,
                CompiledRule {
                    info,
                    rule: rule.clone(),
                    subject,
                    peers,
                },
            );
            ids.push(rid);
        }
        self.policies.insert(key, (policy, ids));
        self.publish_rule_infos();
        for local in affected {
            self.install_local(local);
        }
    }

    /// Removes a policy. Returns whether it existed.
    pub fn remove_policy(&mut self, key: &PolicyKey) -> bool {
        if !self.policies.contains_key(key) {
            return false;
        }
        let affected = self.remove_policy_rules(key);
        self.publish_rule_infos();
        for local in affected {
            self.install_local(local);
        }
        true
    }

    /// Uninstalls the tables of every identity the policy's rules select, drops its rules,
    /// and returns those identities for reinstallation.
    fn remove_policy_rules(&mut self, key: &PolicyKey) -> BTreeSet<Identity> {
        let Some((_, ids)) = self.policies.get(key) else {
            return BTreeSet::new();
        };
        let ids = ids.clone();
        let mut affected = BTreeSet::new();
        for rid in &ids {
            let subject = self.rules[rid].subject;
            affected.extend(self.matchers[&subject].members.iter().copied());
        }
        for local in &affected {
            self.uninstall_local(*local);
        }
        for rid in ids {
            if let Some(rule) = self.rules.remove(&rid) {
                if let Some(set) = self.subject_rules.get_mut(&rule.subject) {
                    set.remove(&rid);
                }
                self.release_matcher(rule.subject);
                for mid in rule.peers.into_iter().flatten() {
                    if let Some(set) = self.peer_rules.get_mut(&mid) {
                        set.remove(&rid);
                    }
                    self.release_matcher(mid);
                }
            }
        }
        self.policies.remove(key);
        affected
    }

    fn publish_rule_infos(&mut self) {
        let infos = self
            .rules
            .iter()
            .map(|(id, r)| (*id, r.info.clone()))
            .collect();
        self.tables.rules = Arc::new(infos);
    }

    fn acquire_matcher(&mut self, matcher: Matcher) -> MatcherId {
        if let Some(id) = self.matcher_ids.get(&matcher) {
            if let Some(entry) = self.matchers.get_mut(id) {
                entry.users += 1;
            }
            return *id;
        }
        let id = self.next_matcher;
        self.next_matcher += 1;
        let members = self.evaluate(&matcher);
        if matches!(matcher, Matcher::Subject(_)) {
            for m in &members {
                self.subject_of.entry(*m).or_default().insert(id);
            }
        }
        self.matcher_ids.insert(matcher.clone(), id);
        self.matchers.insert(
            id,
            MatcherEntry {
                matcher,
                users: 1,
                members,
            },
        );
        id
    }

    fn release_matcher(&mut self, id: MatcherId) {
        let Some(entry) = self.matchers.get_mut(&id) else {
            return;
        };
        entry.users -= 1;
        if entry.users > 0 {
            return;
        }
        if let Some(entry) = self.matchers.remove(&id) {
            self.matcher_ids.remove(&entry.matcher);
            if matches!(entry.matcher, Matcher::Subject(_)) {
                for m in entry.members {
                    if let Some(set) = self.subject_of.get_mut(&m) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.subject_of.remove(&m);
                        }
                    }
                }
            }
        }
        self.subject_rules.remove(&id);
        self.peer_rules.remove(&id);
    }

    /// The identities a matcher selects, narrowed by namespace where the selector pins one.
    fn evaluate(&self, matcher: &Matcher) -> HashSet<Identity> {
        let selector = match matcher {
            Matcher::Subject(s) | Matcher::Peer(Peer::Endpoints(s)) => Some(s),
            _ => None,
        };
        let pinned = selector.and_then(|s| {
            s.requirements()
                .iter()
                .find(|r| r.key == NAMESPACE_LABEL && r.operator == Operator::In)
                .map(|r| r.values.clone())
        });
        let test = |id: &Identity| {
            let facts = &self.identities[id];
            matches(matcher, *id, &facts.info, self.config)
        };
        match pinned {
            Some(namespaces) => namespaces
                .iter()
                .filter_map(|ns| self.by_namespace.get(ns))
                .flatten()
                .filter(|id| test(id))
                .copied()
                .collect(),
            None => self
                .identities
                .keys()
                .filter(|id| test(id))
                .copied()
                .collect(),
        }
    }

    // ---- table computation ------------------------------------------------------------

    /// The rules whose subject selects `local`, in rule order.
    fn rules_of(&self, local: Identity) -> Vec<RuleId> {
        let mut out = BTreeSet::new();
        for mid in self.subject_of.get(&local).into_iter().flatten() {
            out.extend(self.subject_rules.get(mid).into_iter().flatten().copied());
        }
        out.into_iter().collect()
    }

    /// Writes the local policy of `local` and all its (local, ·) tables.
    fn install_local(&mut self, local: Identity) {
        self.uninstall_local(local);
        if !self.identities.contains_key(&local) || !self.is_local_candidate(local) {
            return;
        }
        let rules = self.rules_of(local);
        let mut policy = LocalPolicy::default();
        if local == Identity::INIT && self.config.init_default_deny {
            policy.ingress.enforced = true;
            policy.egress.enforced = true;
        }
        let mut pairs: HashMap<(Identity, Direction), Vec<PortEntry>> = HashMap::new();
        for rid in &rules {
            let rule = &self.rules[rid];
            let dir = policy.direction_mut(rule.rule.direction);
            if rule.rule.enables_default_deny {
                dir.enforced = true;
                dir.enforced_by = Some(dir.enforced_by.map_or(*rid, |r| r.min(*rid)));
            }
            match &rule.peers {
                None => {
                    let entries = self.port_entries(*rid, local, None);
                    dir.any_peer.extend(entries);
                }
                Some(peer_ids) => {
                    let mut remotes: HashSet<Identity> = HashSet::new();
                    for mid in peer_ids {
                        remotes.extend(self.matchers[mid].members.iter().copied());
                    }
                    for remote in remotes {
                        let entries = self.port_entries(*rid, local, Some(remote));
                        if !entries.is_empty() {
                            pairs
                                .entry((remote, rule.rule.direction))
                                .or_default()
                                .extend(entries);
                        }
                    }
                }
            }
        }
        for dir in [&mut policy.ingress, &mut policy.egress] {
            dir.any_peer = port_table(std::mem::take(&mut dir.any_peer)).to_vec();
        }
        for ((remote, direction), entries) in pairs {
            self.tables.pairs.insert(
                PairKey {
                    local,
                    remote,
                    direction,
                },
                port_table(entries),
            );
        }
        self.tables.locals.insert(local, Arc::new(policy));
    }

    /// Removes the local policy of `local` and its (local, ·) tables.
    fn uninstall_local(&mut self, local: Identity) {
        if self.tables.locals.remove(&local).is_none() {
            return;
        }
        let rules = self.rules_of(local);
        let mut keys = HashSet::new();
        for rid in rules {
            let rule = &self.rules[&rid];
            for mid in rule.peers.iter().flatten() {
                for remote in &self.matchers[mid].members {
                    keys.insert(PairKey {
                        local,
                        remote: *remote,
                        direction: rule.rule.direction,
                    });
                }
            }
        }
        // Membership only changes together with the matching pair tables (refresh_pair on
        // add, the remote's shard on removal), so these keys are exactly the installed ones.
        for key in keys {
            self.tables.pairs.remove(&key);
        }
    }

    /// Recomputes the (local, remote) tables of both directions.
    fn refresh_pair(&mut self, local: Identity, remote: Identity) {
        if !self.tables.locals.contains_key(&local) {
            return;
        }
        let mut by_dir: [Vec<PortEntry>; 2] = [Vec::new(), Vec::new()];
        for rid in self.rules_of(local) {
            let rule = &self.rules[&rid];
            let Some(peer_ids) = &rule.peers else {
                continue;
            };
            if peer_ids
                .iter()
                .any(|mid| self.matchers[mid].members.contains(&remote))
            {
                let slot = match rule.rule.direction {
                    Direction::Ingress => 0,
                    Direction::Egress => 1,
                };
                by_dir[slot].extend(self.port_entries(rid, local, Some(remote)));
            }
        }
        for (slot, direction) in [(0, Direction::Ingress), (1, Direction::Egress)] {
            let key = PairKey {
                local,
                remote,
                direction,
            };
            let entries = std::mem::take(&mut by_dir[slot]);
            if entries.is_empty() {
                self.tables.pairs.remove(&key);
            } else {
                self.tables.pairs.insert(key, port_table(entries));
            }
        }
    }

    /// The port entries of one rule for (local, remote); named ports resolve against the
    /// destination: the local identity for ingress, the remote one for egress (every known
    /// identity when the rule applies to any peer).
    fn port_entries(
        &self,
        rid: RuleId,
        local: Identity,
        remote: Option<Identity>,
    ) -> Vec<PortEntry> {
        let rule = &self.rules[&rid].rule;
        let action = rule.action;
        let entry = |protocol: u8, first: u16, last: u16| PortEntry {
            action,
            protocol,
            first,
            last,
            rule: rid,
        };
        let specs = match &rule.ports {
            Ports::Any => return vec![entry(PROTO_ALL, 0, u16::MAX)],
            Ports::Only(specs) => specs,
        };
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            match spec {
                PortSpec::Range {
                    protocol,
                    first,
                    last,
                } => {
                    let proto = protocol.map_or(PROTO_ANY_L4, Protocol::number);
                    out.push(entry(proto, *first, *last));
                }
                PortSpec::IcmpType {
                    protocol,
                    icmp_type,
                } => {
                    out.push(entry(
                        protocol.number(),
                        u16::from(*icmp_type),
                        u16::from(*icmp_type),
                    ));
                }
                PortSpec::Named { protocol, name } => {
                    let destination = match rule.direction {
                        Direction::Ingress => Some(local),
                        Direction::Egress => remote,
                    };
                    let mut resolve = |facts: &IdentityFacts| {
                        for p in facts.named_ports.iter().filter(|p| &p.name == name) {
                            if protocol.is_none_or(|want| want == p.protocol) {
                                out.push(entry(p.protocol.number(), p.port, p.port));
                            }
                        }
                    };
                    match destination {
                        Some(id) => {
                            if let Some(facts) = self.identities.get(&id) {
                                resolve(facts);
                            }
                        }
                        None => self.identities.values().for_each(&mut resolve),
                    }
                }
            }
        }
        out
    }
}

/// Whether a matcher selects an identity.
fn matches(
    matcher: &Matcher,
    id: Identity,
    info: &IdentityInfo,
    config: EnforcementConfig,
) -> bool {
    match matcher {
        Matcher::Subject(selector) => {
            let candidate = matches!(info.kind, IdentityKind::Workload)
                || (id == Identity::INIT && !selector.is_wildcard());
            candidate && selector.matches(&info.labels)
        }
        Matcher::Peer(Peer::Endpoints(selector)) => selector.matches(&info.labels),
        Matcher::Peer(Peer::Entity(entity)) => entity_matches(*entity, &info.kind),
        Matcher::Peer(Peer::Cidr(cidr)) => cidr_matches(cidr, &info.kind, config),
    }
}

/// Whether an entity covers an identity of this kind.
pub fn entity_matches(entity: Entity, kind: &IdentityKind) -> bool {
    use ReservedIdentity as R;
    match (entity, kind) {
        (Entity::All, _) => true,
        (Entity::World, IdentityKind::Cidr(_)) => true,
        (Entity::World, IdentityKind::Reserved(r)) => {
            matches!(r, R::World | R::WorldIpv4 | R::WorldIpv6)
        }
        (Entity::Cluster, IdentityKind::Workload) => true,
        (Entity::Cluster, IdentityKind::Reserved(r)) => matches!(
            r,
            R::Host | R::RemoteNode | R::Init | R::Health | R::Unmanaged | R::KubeApiserver
        ),
        (Entity::Host, IdentityKind::Reserved(R::Host)) => true,
        (Entity::RemoteNode, IdentityKind::Reserved(R::RemoteNode)) => true,
        (Entity::Init, IdentityKind::Reserved(R::Init)) => true,
        (Entity::Health, IdentityKind::Reserved(R::Health)) => true,
        (Entity::Unmanaged, IdentityKind::Reserved(R::Unmanaged)) => true,
        (Entity::KubeApiserver, IdentityKind::Reserved(R::KubeApiserver)) => true,
        _ => false,
    }
}

/// Whether a CIDR peer covers an identity: CIDR identities inside it, and the world identity
/// of its family when it is the whole address space.
fn cidr_matches(cidr: &CidrPeer, kind: &IdentityKind, _config: EnforcementConfig) -> bool {
    match kind {
        IdentityKind::Cidr(prefix) => cidr.covers_prefix(prefix),
        IdentityKind::Reserved(r) if cidr.net.prefix_len() == 0 => match r {
            ReservedIdentity::WorldIpv4 => cidr.net.addr().is_ipv4(),
            ReservedIdentity::WorldIpv6 => cidr.net.addr().is_ipv6(),
            ReservedIdentity::World => true,
            _ => false,
        },
        _ => false,
    }
}

/// Every distinct prefix a policy names (CIDRs and their exceptions): each needs a CIDR
/// identity and an ipcache entry.
pub fn policy_prefixes(policy: &Policy) -> BTreeSet<ipnet::IpNet> {
    let mut out = BTreeSet::new();
    for rule in &policy.rules {
        if let Peers::Only(peers) = &rule.peers {
            for peer in peers {
                if let Peer::Cidr(c) = peer {
                    out.insert(c.net);
                    out.extend(c.except.iter().copied());
                }
            }
        }
    }
    out
}
