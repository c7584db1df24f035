//! The node's policy state: the writer that keeps identities, the ipcache, endpoints and the
//! compiled policy consistent, and the [`Snapshot`] it publishes for workers.
//!
//! Every mutation edits the writer's copy; nothing is visible to readers until
//! [`IdentityCache::publish`], which swaps in one new snapshot. A pod's relabel or an IP's
//! reuse by a new pod is therefore applied atomically: readers see the old state or the new
//! one, never a gap. [`IdentityCache::wait_for_readers`] is the revocation barrier.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use ipnet::IpNet;

use crate::compiler::{PolicyCompiler, PortName, policy_prefixes};
use crate::cow_flat::prefetch;
use crate::endpoint::EndpointError;
use crate::endpoint::{Endpoint, EndpointId, EndpointTable, NamedPort};
use crate::identity::{ClusterKey, Identity, IdentityError, IdentityInfo, IdentityRegistry};
use crate::ipcache::{IpCache, IpCacheError, IpCacheWriter, Owner, Resolved, Source};
use crate::labels::LabelSet;
use crate::policy::{Action, Direction, Policy, PolicyKey};
use crate::protocol::Protocol;
use crate::publication::{BarrierError, Generation, Publisher, Reader};
use crate::tables::{EnforcementConfig, PolicyTables};
use crate::verdict::{DirectionVerdict, DropReason, Verdict};

/// Everything a worker needs to decide a packet, as one consistent, immutable value.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Addresses of workloads, nodes and other known hosts → identity.
    pub ipcache: IpCache,
    /// Prefixes named by policies → their CIDR identities.
    pub policy_cidrs: IpCache,
    /// Endpoints on this node.
    pub endpoints: EndpointTable,
    /// The compiled policy.
    pub policy: PolicyTables,
    /// `policy_cidrs` flattened into address ranges for [`Snapshot::world_identity_of`]; used
    /// only while it describes `policy_cidrs` (same number of prefixes), so a snapshot whose
    /// `policy_cidrs` was replaced by hand falls back to the hash-probe lookup.
    cidr_ranges: CidrRanges,
}

/// The policy prefixes flattened into disjoint address ranges, each with the identity of the
/// longest prefix covering it (`UNKNOWN` where none does).
///
/// A world address misses the ipcache and then needs the longest policy prefix containing it:
/// `IpCache::lookup` probes one hash table per prefix length in use, longest first, which for
/// policy CIDRs (typically every length from /8 to /32, and /32 to /128 for IPv6) is 20–100
/// probes for an address inside no prefix. Here it is one binary search over a few hundred
/// range starts. Policy prefixes change rarely, so the ranges are rebuilt whole.
#[derive(Clone, Default)]
struct CidrRanges {
    /// The number of prefixes the ranges were built from.
    prefixes: usize,
    /// IPv4 range starts, ascending, from 0.
    v4_starts: Arc<[u32]>,
    /// The identity of each IPv4 range.
    v4_ids: Arc<[Identity]>,
    /// IPv6 range starts, ascending, from 0.
    v6_starts: Arc<[u128]>,
    /// The identity of each IPv6 range.
    v6_ids: Arc<[Identity]>,
}

impl CidrRanges {
    /// Flattens every entry of `cidrs`.
    fn build(cidrs: &IpCache) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, hit) in cidrs.iter() {
            match net {
                IpNet::V4(n) => v4.push((
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                    hit.identity,
                )),
                IpNet::V6(n) => v6.push((
                    u128::from(n.network()),
                    u128::from(n.broadcast()),
                    hit.identity,
                )),
            }
        }
        let (v4_starts, v4_ids) = flatten(v4, u128::from(u32::MAX));
        let (v6_starts, v6_ids) = flatten(v6, u128::MAX);
        CidrRanges {
            prefixes: cidrs.len(),
            // Every IPv4 start came from a u32.
            v4_starts: v4_starts.iter().map(|s| *s as u32).collect(),
            v4_ids: v4_ids.into(),
            v6_starts: v6_starts.into(),
            v6_ids: v6_ids.into(),
        }
    }

    /// The identity of the longest prefix containing `ip`.
    #[inline]
    fn lookup(&self, ip: IpAddr) -> Option<Identity> {
        let id = match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let i = self.v4_starts.partition_point(|s| *s <= a);
                *self.v4_ids.get(i.checked_sub(1)?)?
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let i = self.v6_starts.partition_point(|s| *s <= a);
                *self.v6_ids.get(i.checked_sub(1)?)?
            }
        };
        (id != Identity::UNKNOWN).then_some(id)
    }
}

/// Flattens prefixes, given as inclusive (first, last, identity) ranges of `0..=max` that are
/// nested or disjoint, into range starts (the first one 0) and the identity of the innermost
/// prefix covering each range (`UNKNOWN`: none).
fn flatten(mut prefixes: Vec<(u128, u128, Identity)>, max: u128) -> (Vec<u128>, Vec<Identity>) {
    /// Starts a range at `at` (replacing one that starts there already).
    fn set(ranges: &mut (Vec<u128>, Vec<Identity>), at: u128, id: Identity) {
        let (starts, ids) = ranges;
        match (starts.last(), ids.last_mut()) {
            (Some(last), Some(last_id)) if *last == at => *last_id = id,
            _ => {
                starts.push(at);
                ids.push(id);
            }
        }
    }
    /// Closes the open prefixes that end before `at` (all of them for `None`); after each,
    /// the next outer one (or none) covers the addresses again.
    fn close(
        ranges: &mut (Vec<u128>, Vec<Identity>),
        open: &mut Vec<(u128, Identity)>,
        at: Option<u128>,
        max: u128,
    ) {
        while let Some(&(last, _)) = open.last() {
            if at.is_some_and(|at| last >= at) {
                break;
            }
            open.pop();
            if let Some(after) = last.checked_add(1).filter(|a| *a <= max) {
                let outer = open.last().map_or(Identity::UNKNOWN, |o| o.1);
                set(ranges, after, outer);
            }
        }
    }
    // Outer prefixes first when two start together.
    prefixes.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut ranges = (vec![0u128], vec![Identity::UNKNOWN]);
    // The prefixes containing the current position, innermost last: (last address, identity).
    let mut open: Vec<(u128, Identity)> = Vec::new();
    for (first, last, id) in prefixes {
        close(&mut ranges, &mut open, Some(first), max);
        set(&mut ranges, first, id);
        open.push((last, id));
    }
    close(&mut ranges, &mut open, None, max);
    ranges
}

/// One side of a packet: its identity and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRef {
    /// The identity.
    pub identity: Identity,
    /// The address.
    pub ip: IpAddr,
}

/// Which directions to enforce: egress at the source endpoint, ingress at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforce {
    /// Check the source's egress policy (the source is a local endpoint).
    pub egress: bool,
    /// Check the destination's ingress policy (the destination is a local endpoint).
    pub ingress: bool,
}

/// The outcome of classifying a packet by its addresses.
#[derive(Clone, Copy, Debug)]
pub struct Classification<'a> {
    /// Source identity and address.
    pub source: PeerRef,
    /// Destination identity and address.
    pub destination: PeerRef,
    /// The destination endpoint, if local.
    pub destination_endpoint: Option<&'a Endpoint>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Snapshot {
    /// The identity of an address: a workload or node entry of the ipcache, else the CIDR
    /// identity of the longest policy prefix containing it, else `world`.
    #[inline]
    pub fn identity_of(&self, ip: IpAddr) -> Identity {
        if let Some(hit) = self.ipcache.lookup(ip) {
            return hit.identity;
        }
        self.world_identity_of(ip)
    }

    /// The identity an address has as seen by CIDR rules: its policy-prefix identity or world.
    #[inline]
    pub fn world_identity_of(&self, ip: IpAddr) -> Identity {
        match self.policy_cidr_identity(ip) {
            Some(id) => id,
            None if ip.is_ipv4() => Identity::WORLD_IPV4,
            None => Identity::WORLD_IPV6,
        }
    }

    /// The identity of the longest policy prefix containing `ip`.
    #[inline]
    fn policy_cidr_identity(&self, ip: IpAddr) -> Option<Identity> {
        if self.cidr_ranges.prefixes == self.policy_cidrs.len() {
            self.cidr_ranges.lookup(ip)
        } else {
            self.policy_cidrs.lookup(ip).map(|hit| hit.identity)
        }
    }

    /// Decides a packet between two known peers.
    #[inline]
    pub fn decide(
        &self,
        source: PeerRef,
        destination: PeerRef,
        protocol: Protocol,
        port: u16,
        enforce: Enforce,
    ) -> Verdict {
        let tables = &self.policy;
        if tables.is_collided(source.identity) || tables.is_collided(destination.identity) {
            return Verdict::dropped(DropReason::IdentityCollision);
        }
        let egress = enforce.egress.then(|| {
            let remotes = self.remote_candidates(destination);
            tables.decide_direction(
                source.identity,
                Direction::Egress,
                remotes.as_slice(),
                protocol,
                port,
            )
        });
        if let Some(v) = egress.filter(|v| v.action == Action::Deny) {
            return denied(Direction::Egress, egress, None, v);
        }
        let ingress = enforce.ingress.then(|| {
            let remotes = self.remote_candidates(source);
            tables.decide_direction(
                destination.identity,
                Direction::Ingress,
                remotes.as_slice(),
                protocol,
                port,
            )
        });
        if let Some(v) = ingress.filter(|v| v.action == Action::Deny) {
            return denied(Direction::Ingress, egress, ingress, v);
        }
        Verdict {
            action: Action::Allow,
            direction: if ingress.is_some() {
                Some(Direction::Ingress)
            } else if egress.is_some() {
                Some(Direction::Egress)
            } else {
                None
            },
            egress,
            ingress,
            drop_reason: None,
        }
    }

    /// The identities a peer is matched as: its own, plus (Kubernetes semantics) the CIDR
    /// identity of its address when it is a workload.
    #[inline]
    fn remote_candidates(&self, peer: PeerRef) -> Candidates {
        let mut c = Candidates {
            ids: [peer.identity, Identity::UNKNOWN],
            len: 1,
        };
        if self.policy.config.cidr_selects_endpoints
            && !peer.identity.is_reserved()
            && let Some(cidr) = self.policy_cidr_identity(peer.ip)
            && cidr != peer.identity
        {
            c.ids[1] = cidr;
            c.len = 2;
        }
        c
    }

    /// Classifies a packet by its addresses: identities from the ipcache, egress enforced when
    /// the source is a local endpoint, ingress when the destination is.
    #[inline]
    pub fn classify(
        &self,
        src: IpAddr,
        dst: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Classification<'_> {
        let stamp = self.endpoints.stamp();
        let s = self.ipcache.resolve(src, stamp);
        let d = self.ipcache.resolve(dst, stamp);
        self.classify_resolved(src, dst, s, d, protocol, port)
    }

    /// Classifies a batch of packets, as a worker holding one snapshot per batch does, and
    /// appends one [`Classification`] per packet to `out`, in order. The result is exactly
    /// [`classify`](Self::classify)'s for each packet.
    ///
    /// From [`PREFETCH_FROM`] ipcache entries, packets go through in groups of
    /// [`CLASSIFY_GROUP`]: first the ipcache slots of every address of the group are
    /// prefetched, then the addresses are resolved, then the local sides' policies and their
    /// tables for the peers are prefetched, and only then is each packet decided. The cache
    /// misses of a large ipcache (one per remote address) and of the policy tables then overlap
    /// instead of following one another. Below that size everything is in the CPU's caches and
    /// the packets are simply classified one by one.
    pub fn classify_batch<'a>(&'a self, packets: &[PacketKey], out: &mut Vec<Classification<'a>>) {
        let stamp = self.endpoints.stamp();
        out.reserve(packets.len());
        if self.ipcache.len() < PREFETCH_FROM {
            // Everything is in the CPU's caches: prefetching would only add work.
            out.extend(
                packets
                    .iter()
                    .map(|p| self.classify(p.src, p.dst, p.protocol, p.port)),
            );
            return;
        }
        for group in packets.chunks(CLASSIFY_GROUP) {
            for p in group {
                self.ipcache.prefetch(p.src);
                self.ipcache.prefetch(p.dst);
            }
            let mut resolved = [(Resolved::NONE, Resolved::NONE); CLASSIFY_GROUP];
            for (r, p) in resolved.iter_mut().zip(group) {
                *r = (
                    self.ipcache.resolve(p.src, stamp),
                    self.ipcache.resolve(p.dst, stamp),
                );
            }
            // The local sides' policies, then their tables for the peer: two more rounds of
            // independent loads that would otherwise miss one after the other.
            for (s, d) in &resolved[..group.len()] {
                for side in [s, d] {
                    if side.local == Some(true)
                        && let Some(id) = side.identity
                        && let Some(policy) = self.policy.locals.get(&id)
                    {
                        prefetch(&**policy);
                    }
                }
            }
            for (s, d) in &resolved[..group.len()] {
                for (side, peer, direction) in
                    [(s, d, Direction::Egress), (d, s, Direction::Ingress)]
                {
                    if side.local == Some(true)
                        && let (Some(id), Some(remote)) = (side.identity, peer.identity)
                        && let Some(policy) = self.policy.locals.get(&id)
                    {
                        policy.direction(direction).peers.prefetch(remote);
                    }
                }
            }
            for ((s, d), p) in resolved.into_iter().zip(group) {
                out.push(self.classify_resolved(p.src, p.dst, s, d, p.protocol, p.port));
            }
        }
    }

    /// The rest of a classification once both addresses are resolved.
    #[inline]
    fn classify_resolved(
        &self,
        src: IpAddr,
        dst: IpAddr,
        s: Resolved,
        d: Resolved,
        protocol: Protocol,
        port: u16,
    ) -> Classification<'_> {
        let source = PeerRef {
            identity: s.identity.unwrap_or_else(|| self.world_identity_of(src)),
            ip: src,
        };
        let destination = PeerRef {
            identity: d.identity.unwrap_or_else(|| self.world_identity_of(dst)),
            ip: dst,
        };
        // The flags of the ipcache entries say which side is a local endpoint; the endpoint
        // table is asked only for the destination endpoint itself, or when the flags cannot
        // tell (see `IpCache::resolve`).
        let destination_endpoint = match d.local {
            Some(false) => None,
            _ => self.endpoints.by_ip(dst),
        };
        let enforce = Enforce {
            egress: s
                .local
                .unwrap_or_else(|| self.endpoints.by_ip(src).is_some()),
            ingress: destination_endpoint.is_some(),
        };
        let verdict = self.decide(source, destination, protocol, port, enforce);
        Classification {
            source,
            destination,
            destination_endpoint,
            verdict,
        }
    }
}

/// Packets per group in [`Snapshot::classify_batch`]: enough independent cache misses in
/// flight to cover a DRAM access, few enough that the prefetched lines are still there.
pub const CLASSIFY_GROUP: usize = 16;

/// The ipcache size from which [`Snapshot::classify_batch`] prefetches: below it the tables
/// stay in the CPU's caches (a few hundred kilobytes), and the prefetch passes only add work.
pub const PREFETCH_FROM: usize = 16_384;

/// A packet as [`Snapshot::classify_batch`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// L4 protocol.
    pub protocol: Protocol,
    /// Destination port (ICMP: type).
    pub port: u16,
}

struct Candidates {
    ids: [Identity; 2],
    len: usize,
}

impl Candidates {
    fn as_slice(&self) -> &[Identity] {
        &self.ids[..self.len]
    }
}

fn denied(
    direction: Direction,
    egress: Option<DirectionVerdict>,
    ingress: Option<DirectionVerdict>,
    deciding: DirectionVerdict,
) -> Verdict {
    Verdict {
        action: Action::Deny,
        direction: Some(direction),
        egress,
        ingress,
        drop_reason: deciding.drop_reason,
    }
}

/// Where a workload's endpoint is attached, when it runs on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAttachment {
    /// Host-side interface index.
    pub ifindex: u32,
    /// The pod interface's MAC address.
    pub mac: [u8; 6],
}

/// A workload (pod) as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Pod UID: owner of its ipcache entries.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Canonical labels (see [`crate::labels::workload_labels`]).
    pub labels: LabelSet,
    /// Addresses.
    pub ips: Vec<IpAddr>,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
    /// Where the information came from.
    pub source: Source,
    /// Set when the workload runs on this node.
    pub local: Option<LocalAttachment>,
}

/// Why a workload or address was not (fully) applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The workload has no UID, so its entries could not be owner-checked.
    #[error("workload {namespace}/{name} has an empty uid")]
    EmptyUid {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The label set's identity collides with another label set; the workload is recorded
    /// and fails closed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The local endpoint conflicts with another one; nothing was changed.
    #[error(transparent)]
    Endpoint(#[from] Box<EndpointError>),
    /// An ipcache entry was refused.
    #[error(transparent)]
    IpCache(#[from] IpCacheError),
}

struct WorkloadState {
    workload: Workload,
    identity: Identity,
    endpoint: Option<EndpointId>,
}

/// The writer side of the node's policy state.
pub struct IdentityCache {
    registry: IdentityRegistry,
    compiler: PolicyCompiler,
    ipcache: IpCacheWriter,
    policy_cidrs: IpCacheWriter,
    /// `policy_cidrs` flattened, rebuilt after each policy change that adds or drops a prefix.
    cidr_ranges: CidrRanges,
    /// Whether `policy_cidrs` changed since `cidr_ranges` was built.
    cidr_ranges_stale: bool,
    cidr_refs: BTreeMap<IpNet, (Identity, u32)>,
    policy_prefixes: HashMap<PolicyKey, BTreeSet<IpNet>>,
    endpoints: EndpointTable,
    next_endpoint: u32,
    workloads: HashMap<String, WorkloadState>,
    identity_members: HashMap<Identity, BTreeSet<String>>,
    publisher: Publisher<Snapshot>,
}

impl IdentityCache {
    /// An empty state with a published empty snapshot.
    pub fn new(key: ClusterKey, config: EnforcementConfig) -> Self {
        let compiler = PolicyCompiler::new(config);
        let initial = Snapshot {
            policy: compiler.tables(),
            ..Snapshot::default()
        };
        IdentityCache {
            registry: IdentityRegistry::new(key),
            compiler,
            ipcache: IpCacheWriter::default(),
            policy_cidrs: IpCacheWriter::default(),
            cidr_ranges: CidrRanges::default(),
            cidr_ranges_stale: false,
            cidr_refs: BTreeMap::new(),
            policy_prefixes: HashMap::new(),
            endpoints: EndpointTable::default(),
            next_endpoint: 1,
            workloads: HashMap::new(),
            identity_members: HashMap::new(),
            publisher: Publisher::new(initial),
        }
    }

    /// Registers a reader (a worker) for snapshots.
    pub fn reader(&self, name: &str) -> Reader<Snapshot> {
        self.publisher.register_reader(name)
    }

    /// The identity registry.
    pub fn registry(&self) -> &IdentityRegistry {
        &self.registry
    }

    /// The policy compiler.
    pub fn compiler(&self) -> &PolicyCompiler {
        &self.compiler
    }

    /// The snapshot the next publish would make (for tools that decide without workers).
    pub fn pending(&self) -> Snapshot {
        #[cfg(debug_assertions)]
        self.check_local_flags();
        Snapshot {
            // The flags were kept in step with exactly this endpoint table.
            ipcache: self
                .ipcache
                .snapshot()
                .with_local_stamp(self.endpoints.stamp()),
            policy_cidrs: self.policy_cidrs.snapshot(),
            endpoints: self.endpoints.clone(),
            policy: self.compiler.tables(),
            cidr_ranges: self.cidr_ranges.clone(),
        }
    }

    /// Publishes the pending state to readers.
    pub fn publish(&mut self) -> Generation {
        self.publisher.publish(self.pending())
    }

    /// Waits until every active reader decides against `generation` or later.
    pub fn wait_for_readers(
        &self,
        generation: Generation,
        timeout: Duration,
    ) -> Result<(), BarrierError> {
        self.publisher.wait_for_readers(generation, timeout)
    }

    /// The identity of a workload, if known.
    pub fn workload_identity(&self, uid: &str) -> Option<Identity> {
        self.workloads.get(uid).map(|w| w.identity)
    }

    /// Adds or updates a workload. Its new identity, addresses and endpoint replace the old
    /// ones in one step (published by the next [`publish`](Self::publish)).
    ///
    /// A label set whose identity collides with another is still recorded (so its packets
    /// are attributed and dropped) and the collision is returned as an error.
    pub fn upsert_workload(&mut self, workload: Workload) -> Result<Identity, StateError> {
        if workload.uid.is_empty() {
            return Err(StateError::EmptyUid {
                namespace: workload.namespace.clone(),
                name: workload.name.clone(),
            });
        }
        let acquired = self.registry.acquire(&workload.labels);
        let identity = match &acquired {
            Ok((id, _)) => *id,
            Err(IdentityError::Collision { identity, .. }) => *identity,
        };
        let previous_endpoint = self.workloads.get(&workload.uid).and_then(|p| p.endpoint);
        let endpoint = match &workload.local {
            Some(attachment) => {
                let id = previous_endpoint.unwrap_or(EndpointId(self.next_endpoint));
                let stored = self.endpoints.upsert(Endpoint {
                    id,
                    namespace: workload.namespace.clone(),
                    name: workload.name.clone(),
                    pod_uid: workload.uid.clone(),
                    ifindex: attachment.ifindex,
                    mac: attachment.mac,
                    ips: workload.ips.clone(),
                    identity,
                    named_ports: workload.named_ports.clone(),
                });
                let previous = match stored {
                    Ok(previous) => previous,
                    Err(e) => {
                        self.registry.release(identity, &workload.labels);
                        return Err(Box::new(e).into());
                    }
                };
                if let Some(previous) = previous {
                    self.sync_local(&previous.ips);
                }
                self.sync_local(&workload.ips);
                if previous_endpoint.is_none() {
                    self.next_endpoint += 1;
                }
                Some(id)
            }
            None => None,
        };
        let previous = self.workloads.remove(&workload.uid);
        self.identity_members
            .entry(identity)
            .or_default()
            .insert(workload.uid.clone());
        let owner = Owner {
            source: workload.source,
            uid: workload.uid.clone(),
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        let mut refused = None;
        for ip in &workload.ips {
            if let Err(e) = self.ipcache.upsert(IpNet::from(*ip), identity, &owner) {
                refused.get_or_insert(e);
            }
        }
        let uid = workload.uid.clone();
        self.workloads.insert(
            uid.clone(),
            WorkloadState {
                workload,
                identity,
                endpoint,
            },
        );
        if let Some(prev) = previous {
            let stale: Vec<IpAddr> = prev
                .workload
                .ips
                .iter()
                .filter(|ip| !self.workloads[&uid].workload.ips.contains(ip))
                .copied()
                .collect();
            for ip in stale {
                self.ipcache.remove(IpNet::from(ip), &uid);
            }
            if let Some(id) = prev.endpoint
                && self.workloads[&uid].endpoint.is_none()
                && let Some(gone) = self.endpoints.remove(id)
            {
                self.sync_local(&gone.ips);
            }
            self.release_identity(
                prev.identity,
                &prev.workload.labels,
                &uid,
                prev.identity != identity,
            );
        }
        self.sync_identity(identity);
        self.compiler.set_collided(self.registry.collided());
        if let Some(e) = refused {
            return Err(e.into());
        }
        acquired.map(|_| identity).map_err(StateError::from)
    }

    /// Removes a workload: its ipcache entries (only those it owns), endpoint and identity
    /// reference.
    pub fn remove_workload(&mut self, uid: &str) -> bool {
        let Some(state) = self.workloads.remove(uid) else {
            return false;
        };
        self.ipcache.remove_owner(uid);
        if let Some(id) = state.endpoint
            && let Some(gone) = self.endpoints.remove(id)
        {
            self.sync_local(&gone.ips);
        }
        self.release_identity(state.identity, &state.workload.labels, uid, true);
        self.compiler.set_collided(self.registry.collided());
        true
    }

    /// Brings the local-endpoint flags of `ips` in the ipcache in line with the endpoint
    /// table, after it gained or lost them (see [`IpCacheWriter::set_local`]).
    fn sync_local(&mut self, ips: &[IpAddr]) {
        for ip in ips {
            let local = self.endpoints.by_ip(*ip).is_some();
            self.ipcache.set_local(*ip, local);
        }
    }

    /// Debug builds: the ipcache's local flags name exactly the endpoint table's addresses.
    #[cfg(debug_assertions)]
    fn check_local_flags(&self) {
        let mut addresses = 0;
        for endpoint in self.endpoints.iter() {
            for ip in &endpoint.ips {
                addresses += 1;
                assert!(self.ipcache.is_local(*ip), "{ip} is not flagged local");
            }
        }
        assert_eq!(
            self.ipcache.local_count(),
            addresses,
            "stale local flags in the ipcache"
        );
    }

    fn release_identity(
        &mut self,
        identity: Identity,
        labels: &LabelSet,
        uid: &str,
        drop_member: bool,
    ) {
        if drop_member && let Some(members) = self.identity_members.get_mut(&identity) {
            members.remove(uid);
        }
        if self.registry.release(identity, labels) || self.registry.get(identity).is_none() {
            self.identity_members.remove(&identity);
            self.compiler.remove_identity(identity);
        } else {
            self.sync_identity(identity);
        }
    }

    /// Pushes an identity's labels and the union of its workloads' named ports to the
    /// compiler.
    fn sync_identity(&mut self, identity: Identity) {
        let Some(info) = self.registry.get(identity).cloned() else {
            return;
        };
        let mut ports = BTreeSet::new();
        for uid in self.identity_members.get(&identity).into_iter().flatten() {
            if let Some(w) = self.workloads.get(uid) {
                for p in &w.workload.named_ports {
                    ports.insert(PortName {
                        name: p.name.clone(),
                        protocol: p.protocol,
                        port: p.port,
                    });
                }
            }
        }
        self.compiler
            .upsert_identity(identity, info, ports.into_iter().collect());
    }

    /// Adds a non-workload address (a node's host, the API server) with a reserved identity.
    pub fn upsert_host(
        &mut self,
        prefix: IpNet,
        identity: Identity,
        owner: Owner,
    ) -> Result<(), StateError> {
        self.ipcache.upsert(prefix, identity, owner)?;
        Ok(())
    }

    /// Removes a non-workload address claim of `owner_uid`.
    pub fn remove_host(&mut self, prefix: IpNet, owner_uid: &str) {
        self.ipcache.remove(prefix, owner_uid);
    }

    /// Adds or replaces a policy, creating CIDR identities for the prefixes it names.
    pub fn upsert_policy(&mut self, policy: Policy) {
        let key = policy.key.clone();
        let prefixes = policy_prefixes(&policy);
        for prefix in &prefixes {
            self.acquire_prefix(*prefix);
        }
        self.compiler.upsert_policy(policy);
        if let Some(old) = self.policy_prefixes.insert(key, prefixes) {
            for prefix in old {
                self.release_prefix(prefix);
            }
        }
        self.refresh_cidr_ranges();
    }

    /// Removes a policy. Returns whether it existed.
    pub fn remove_policy(&mut self, key: &PolicyKey) -> bool {
        let existed = self.compiler.remove_policy(key);
        if let Some(old) = self.policy_prefixes.remove(key) {
            for prefix in old {
                self.release_prefix(prefix);
            }
        }
        self.refresh_cidr_ranges();
        existed
    }

    fn refresh_cidr_ranges(&mut self) {
        if std::mem::take(&mut self.cidr_ranges_stale) {
            self.cidr_ranges = CidrRanges::build(self.policy_cidrs.cache());
        }
    }

    fn acquire_prefix(&mut self, prefix: IpNet) {
        if let Some((_, refs)) = self.cidr_refs.get_mut(&prefix) {
            *refs += 1;
            return;
        }
        // A CIDR identity collision would need two prefixes hashing alike; fail closed by
        // still mapping the prefix to the contested number.
        let identity = match self.registry.acquire_cidr(prefix) {
            Ok((id, _)) => id,
            Err(IdentityError::Collision { identity, .. }) => identity,
        };
        if let Some(info) = self.registry.get(identity).cloned() {
            self.compiler
                .upsert_identity(identity, IdentityInfo { ..info }, Vec::new());
        }
        let owner = Owner {
            source: Source::Local,
            uid: format!("policy-cidr:{prefix}"),
            namespace: String::new(),
            name: prefix.to_string(),
        };
        // The owner is well-formed and the identity derived, so the upsert cannot be refused.
        let _ = self.policy_cidrs.upsert(prefix, identity, owner);
        self.cidr_refs.insert(prefix, (identity, 1));
        self.cidr_ranges_stale = true;
    }

    fn release_prefix(&mut self, prefix: IpNet) {
        let Some((identity, refs)) = self.cidr_refs.get_mut(&prefix) else {
            return;
        };
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        let identity = *identity;
        self.cidr_refs.remove(&prefix);
        self.policy_cidrs
            .remove(prefix, &format!("policy-cidr:{prefix}"));
        self.cidr_ranges_stale = true;
        let labels = crate::identity::cidr_labels(prefix);
        if self.registry.release(identity, &labels) {
            self.compiler.remove_identity(identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipcache::Owner;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random nested and disjoint prefixes of both families, then random addresses (many of
    /// them on prefix boundaries): the flattened ranges answer what the hash-probe LPM answers.
    #[test]
    fn cidr_ranges_agree_with_the_ipcache_longest_prefix_match() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..40 {
            let mut writer = IpCacheWriter::new();
            let mut nets = Vec::new();
            let count = rng.gen_range(0..60);
            for i in 0..count {
                // A few base blocks so prefixes nest often.
                let base: u32 = [0x0a00_0000, 0xc0a8_0000, 0xcb00_7100, 0][rng.gen_range(0..4)];
                let v4 = base | (rng.r#gen::<u32>() & 0x00ff_ffff);
                let net = if rng.gen_bool(0.7) {
                    IpNet::new(IpAddr::from(v4.to_be_bytes()), rng.gen_range(0..=32))
                } else {
                    let v6 =
                        (0x2001_0db8_u128 << 96) | u128::from(v4) << 40 | rng.r#gen::<u128>() >> 90;
                    IpNet::new(IpAddr::from(v6.to_be_bytes()), rng.gen_range(0..=128))
                }
                .expect("valid length")
                .trunc();
                let owner = Owner::new(Source::Local, format!("p{round}-{i}"), "", "");
                let id = Identity(Identity::FIRST_DERIVED + i as u64);
                if writer.upsert(net, id, &owner).is_ok() {
                    nets.push(net);
                }
            }
            let cache = writer.snapshot();
            let ranges = CidrRanges::build(&cache);
            let mut probes: Vec<IpAddr> = Vec::new();
            for net in &nets {
                probes.extend([net.network(), net.broadcast()]);
                for edge in [net.network(), net.broadcast()] {
                    let (down, up) = match edge {
                        IpAddr::V4(a) => {
                            let a = u32::from(a);
                            (
                                IpAddr::from(a.wrapping_sub(1).to_be_bytes()),
                                IpAddr::from(a.wrapping_add(1).to_be_bytes()),
                            )
                        }
                        IpAddr::V6(a) => {
                            let a = u128::from(a);
                            (
                                IpAddr::from(a.wrapping_sub(1).to_be_bytes()),
                                IpAddr::from(a.wrapping_add(1).to_be_bytes()),
                            )
                        }
                    };
                    probes.extend([down, up]);
                }
            }
            for _ in 0..200 {
                probes.push(IpAddr::from(rng.r#gen::<u32>().to_be_bytes()));
                probes.push(IpAddr::from(
                    ((0x2001_0db8_u128 << 96) | rng.r#gen::<u128>() >> 32).to_be_bytes(),
                ));
            }
            for ip in probes {
                assert_eq!(
                    ranges.lookup(ip),
                    cache.lookup(ip).map(|h| h.identity),
                    "round {round}, {ip}, prefixes {nets:?}"
                );
            }
        }
    }
}
