//! The policy compiler: turns policies and the identities in use into [`PolicyTables`],
//! incrementally.
//!
//! A selector cache keeps, for every distinct subject and peer matcher, the set of identities
//! it matches. A new identity is tested once against every matcher; a new policy's matchers
//! are evaluated once against every identity (narrowed by namespace where the selector names
//! one). Only what a change touches is recomputed:
//! - identity added: its own tables (if a policy selects it) and the (local, new) tables of
//!   the locals whose rules now match it as a peer — one entry in each of their peer maps;
//! - identity removed: its own tables and every (·, removed) table — again one entry per
//!   local that saw it;
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
    EnforcementConfig, LocalPolicy, PROTO_ALL, PROTO_ANY_L4, PairTables, PeerTables, PolicyTables,
    PortEntry, RuleInfo, sort_port_entries,
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
    /// Matchers that pin namespaces (see [`pinned_namespaces`]), by namespace: only identities
    /// of those namespaces can be their members.
    pinned_matchers: HashMap<String, HashSet<MatcherId>>,
    /// Matchers that pin no namespace: any identity may be a member.
    unpinned_matchers: HashSet<MatcherId>,
    /// Egress rules for every peer that name a port (see
    /// [`refresh_any_peer_named_ports`](Self::refresh_any_peer_named_ports)).
    any_peer_named: BTreeSet<RuleId>,
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
            pinned_matchers: HashMap::new(),
            unpinned_matchers: HashSet::new(),
            any_peer_named: BTreeSet::new(),
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
        PolicyTables {
            pairs: PairTables::of(&self.tables.locals),
            ..self.tables.clone()
        }
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
        let namespace = info.labels.get(None, NAMESPACE_LABEL).map(str::to_owned);
        if let Some(ns) = &namespace {
            self.by_namespace.entry(ns.clone()).or_default().insert(id);
        }
        self.identities
            .insert(id, IdentityFacts { info, named_ports });
        let mut newly_peer = Vec::new();
        let mut subjects = BTreeSet::new();
        // Only the matchers that can select this namespace (as `evaluate` narrows the other way).
        let facts = &self.identities[&id];
        for mid in self.candidate_matchers(namespace.as_deref()) {
            let Some(entry) = self.matchers.get_mut(&mid) else {
                continue;
            };
            if matches(&entry.matcher, id, &facts.info, self.config) {
                entry.members.insert(id);
                match entry.matcher {
                    Matcher::Subject(_) => {
                        subjects.insert(mid);
                    }
                    Matcher::Peer(_) => newly_peer.push(mid),
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
        if !self.identities[&id].named_ports.is_empty() {
            self.refresh_any_peer_named_ports();
        }
    }

    /// Reinstalls the locals of egress rules that apply to every peer and name a port: those
    /// resolve the name against every known identity's ports, so they follow identities
    /// (with named ports) coming and going.
    fn refresh_any_peer_named_ports(&mut self) {
        let mut locals = BTreeSet::new();
        for rid in &self.any_peer_named {
            let subject = self.rules[rid].subject;
            locals.extend(self.matchers[&subject].members.iter().copied());
        }
        for local in locals {
            self.install_local(local);
        }
    }

    /// Removes an identity and every table entry that mentions it.
    pub fn remove_identity(&mut self, id: Identity) {
        let Some(facts) = self.identities.get(&id) else {
            return;
        };
        let had_named_ports = !facts.named_ports.is_empty();
        let namespace = facts
            .info
            .labels
            .get(None, NAMESPACE_LABEL)
            .map(str::to_owned);
        self.uninstall_local(id);
        // Only these matchers can have `id` as a member.
        let candidates = self.candidate_matchers(namespace.as_deref());
        // The (·, id) tables: (local, id) for every local selected by a rule that has `id` as a
        // peer (the same membership invariant as `uninstall_local`): one entry in each of
        // those locals' peer maps.
        let mut seen_by: BTreeSet<Identity> = BTreeSet::new();
        for mid in &candidates {
            let entry = &self.matchers[mid];
            if !matches!(entry.matcher, Matcher::Peer(_)) || !entry.members.contains(&id) {
                continue;
            }
            for rid in self.peer_rules.get(mid).into_iter().flatten() {
                let rule = &self.rules[rid];
                seen_by.extend(self.matchers[&rule.subject].members.iter().copied());
            }
        }
        for local in seen_by {
            self.set_pair_tables(local, id, Default::default());
        }
        debug_assert!(
            self.tables
                .locals
                .iter()
                .all(
                    |(_, policy)| [&policy.ingress, &policy.egress].iter().all(|d| d
                        .peers
                        .get(id)
                        .is_none()
                        && d.cidr_peers.get(id).is_none())
                ),
            "a (·, {id:?}) table outlived its identity"
        );
        for mid in candidates {
            if let Some(entry) = self.matchers.get_mut(&mid) {
                entry.members.remove(&id);
            }
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
        if had_named_ports {
            self.refresh_any_peer_named_ports();
        }
    }

    /// The matchers that may select an identity of namespace `namespace` (`None`: an identity
    /// without a namespace label): the unpinned ones and those pinning that namespace.
    fn candidate_matchers(&self, namespace: Option<&str>) -> Vec<MatcherId> {
        let pinned = namespace.and_then(|ns| self.pinned_matchers.get(ns));
        self.unpinned_matchers
            .iter()
            .chain(pinned.into_iter().flatten())
            .copied()
            .collect()
    }

    fn is_local_candidate(&self, id: Identity) -> bool {
        self.subject_of.contains_key(&id) || (id == Identity::INIT && self.config.init_default_deny)
    }

    // ---- policies ---------------------------------------------------------------------

    /// Adds or replaces a policy (by key). Recomputes the identities its old and new rules
    /// select.
    pub fn upsert_policy(&mut self, policy: Policy) {
        let key = policy.key.clone();
        let old_ids = self.rule_ids_of(&key);
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
            let named = matches!(&rule.ports, Ports::Only(specs)
                if specs.iter().any(|s| matches!(s, PortSpec::Named { .. })));
            if peers.is_none() && rule.direction == Direction::Egress && named {
                self.any_peer_named.insert(rid);
            }
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
        self.update_rule_infos(&old_ids, &ids);
        self.policies.insert(key, (policy, ids));
        for local in affected {
            self.install_local(local);
        }
    }

    /// Removes a policy. Returns whether it existed.
    pub fn remove_policy(&mut self, key: &PolicyKey) -> bool {
        if !self.policies.contains_key(key) {
            return false;
        }
        let old_ids = self.rule_ids_of(key);
        let affected = self.remove_policy_rules(key);
        self.update_rule_infos(&old_ids, &[]);
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
            self.any_peer_named.remove(&rid);
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

    /// The rule ids of a loaded policy.
    fn rule_ids_of(&self, key: &PolicyKey) -> Vec<RuleId> {
        self.policies
            .get(key)
            .map(|(_, ids)| ids.clone())
            .unwrap_or_default()
    }

    /// Brings the published rule attribution up to date with one policy's change: drops the
    /// `removed` rules and adds the `added` ones (compiled already). The map is cloned only when
    /// a published snapshot still shares it, not rebuilt from every rule on each change.
    fn update_rule_infos(&mut self, removed: &[RuleId], added: &[RuleId]) {
        let infos = Arc::make_mut(&mut self.tables.rules);
        for id in removed {
            infos.remove(id);
        }
        for id in added {
            if let Some(rule) = self.rules.get(id) {
                infos.insert(*id, rule.info.clone());
            }
        }
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
        match pinned_namespaces(&matcher) {
            Some(namespaces) => {
                for ns in namespaces {
                    self.pinned_matchers
                        .entry(ns.clone())
                        .or_default()
                        .insert(id);
                }
            }
            None => {
                self.unpinned_matchers.insert(id);
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
            match pinned_namespaces(&entry.matcher) {
                Some(namespaces) => {
                    for ns in namespaces {
                        if let Some(set) = self.pinned_matchers.get_mut(ns) {
                            set.remove(&id);
                            if set.is_empty() {
                                self.pinned_matchers.remove(ns);
                            }
                        }
                    }
                }
                None => {
                    self.unpinned_matchers.remove(&id);
                }
            }
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
        let pinned = pinned_namespaces(matcher);
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

    /// Whether a peer matcher's members also get cidr-only tables: CIDR peers, when CIDR
    /// rules select pods by their addresses (Kubernetes semantics).
    fn cidr_only_matcher(&self, mid: MatcherId) -> bool {
        self.config.cidr_selects_endpoints
            && matches!(
                self.matchers.get(&mid).map(|m| &m.matcher),
                Some(Matcher::Peer(Peer::Cidr(_)))
            )
    }

    /// Writes the local policy of `local` with all its (local, ·) tables.
    fn install_local(&mut self, local: Identity) {
        if !self.identities.contains_key(&local) || !self.is_local_candidate(local) {
            self.uninstall_local(local);
            return;
        }
        let rules = self.rules_of(local);
        let mut policy = LocalPolicy::default();
        if local == Identity::INIT && self.config.init_default_deny {
            policy.ingress.enforced = true;
            policy.egress.enforced = true;
        }
        // (remote, direction, cidr-only) → entries.
        let mut pairs: HashMap<(Identity, Direction, bool), Vec<PortEntry>> = HashMap::new();
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
                    // remote -> whether a CIDR peer matched it (for the cidr-only table).
                    let mut remotes: HashMap<Identity, bool> = HashMap::new();
                    for mid in peer_ids {
                        let cidr = self.cidr_only_matcher(*mid);
                        for m in &self.matchers[mid].members {
                            *remotes.entry(*m).or_default() |= cidr;
                        }
                    }
                    for (remote, cidr) in remotes {
                        let entries = self.port_entries(*rid, local, Some(remote));
                        if entries.is_empty() {
                            continue;
                        }
                        if cidr {
                            pairs
                                .entry((remote, rule.rule.direction, true))
                                .or_default()
                                .extend(entries.iter().copied());
                        }
                        pairs
                            .entry((remote, rule.rule.direction, false))
                            .or_default()
                            .extend(entries);
                    }
                }
            }
        }
        // [ingress, egress] x [any peer kind, cidr-only]
        let mut tables: [[PeerList; 2]; 2] = Default::default();
        for ((remote, direction, cidr_only), mut entries) in pairs {
            sort_port_entries(&mut entries);
            tables[direction_slot(direction)][usize::from(cidr_only)].push((remote, entries));
        }
        for (slot, dir) in [&mut policy.ingress, &mut policy.egress]
            .into_iter()
            .enumerate()
        {
            sort_port_entries(&mut dir.any_peer);
            let [peers, cidr_peers] = std::mem::take(&mut tables[slot]);
            dir.peers = PeerTables::from_tables(peers);
            dir.cidr_peers = PeerTables::from_tables(cidr_peers);
        }
        self.tables.locals.insert(local, Arc::new(policy));
    }

    /// Removes the local policy of `local`, and with it its (local, ·) tables.
    fn uninstall_local(&mut self, local: Identity) {
        self.tables.locals.remove(&local);
    }

    /// Recomputes the (local, remote) tables of both directions.
    fn refresh_pair(&mut self, local: Identity, remote: Identity) {
        if !self.tables.locals.contains_key(&local) {
            return;
        }
        // [ingress, egress] x [any peer kind, cidr-only]
        let mut by_dir: [[Vec<PortEntry>; 2]; 2] = Default::default();
        for rid in self.rules_of(local) {
            let rule = &self.rules[&rid];
            let Some(peer_ids) = &rule.peers else {
                continue;
            };
            let matching: Vec<&MatcherId> = peer_ids
                .iter()
                .filter(|mid| self.matchers[*mid].members.contains(&remote))
                .collect();
            if matching.is_empty() {
                continue;
            }
            let slot = direction_slot(rule.rule.direction);
            let entries = self.port_entries(rid, local, Some(remote));
            if matching.iter().any(|mid| self.cidr_only_matcher(**mid)) {
                by_dir[slot][1].extend(entries.iter().copied());
            }
            by_dir[slot][0].extend(entries);
        }
        for tables in by_dir.iter_mut().flatten() {
            sort_port_entries(tables);
        }
        self.set_pair_tables(local, remote, by_dir);
    }

    /// Sets the (local, remote) tables, `[ingress, egress] x [any peer kind, cidr-only]`
    /// (sorted; empty ones are removed). The local's policy is copied (if a published
    /// snapshot shares it) only when a table actually changes.
    fn set_pair_tables(
        &mut self,
        local: Identity,
        remote: Identity,
        tables: [[Vec<PortEntry>; 2]; 2],
    ) {
        let Some(current) = self.tables.locals.get(&local) else {
            return;
        };
        let unchanged =
            [&current.ingress, &current.egress]
                .iter()
                .zip(&tables)
                .all(|(dir, [all, cidr])| {
                    dir.peers.get(remote).unwrap_or_default() == all.as_slice()
                        && dir.cidr_peers.get(remote).unwrap_or_default() == cidr.as_slice()
                });
        if unchanged {
            return;
        }
        let Some(policy) = self.tables.locals.get_mut(&local) else {
            return;
        };
        let policy = Arc::make_mut(policy);
        for (dir, [all, cidr]) in [&mut policy.ingress, &mut policy.egress]
            .into_iter()
            .zip(&tables)
        {
            dir.peers.set(remote, all);
            dir.cidr_peers.set(remote, cidr);
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

/// Port tables by peer, before they go into a [`PeerTables`].
type PeerList = Vec<(Identity, Vec<PortEntry>)>;

/// The index of a direction in `[ingress, egress]` arrays.
fn direction_slot(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The namespaces a matcher's selector pins with `io.kubernetes.pod.namespace In (…)`: only
/// identities whose namespace label is one of them can match. `None` when it pins none.
fn pinned_namespaces(matcher: &Matcher) -> Option<&[String]> {
    let selector = match matcher {
        Matcher::Subject(s) | Matcher::Peer(Peer::Endpoints(s)) => s,
        _ => return None,
    };
    selector
        .requirements()
        .iter()
        .find(|r| r.key == NAMESPACE_LABEL && r.operator == Operator::In)
        .map(|r| r.values.as_slice())
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
