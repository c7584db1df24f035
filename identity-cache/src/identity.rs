//! Security identities: numbers derived from canonical label sets, the same on every node.
//!
//! A workload's identity is a keyed BLAKE3 hash (64 bits) of its canonical label set, so no
//! allocator and no coordination between nodes is needed. Numbers below 256 are reserved
//! (host, world, …). Two different label sets that hash to the same number are a collision:
//! it is recorded, reported, and both sets fail closed (every packet of that number drops).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use hashbrown::HashMap;
use ipnet::IpNet;

use crate::labels::{Label, LabelSet, LabelSource};

/// A numeric security identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Identity(pub u64);

impl Identity {
    /// No identity known (never stored in tables; lookups that miss say so instead).
    pub const UNKNOWN: Identity = Identity(0);
    /// The local node's host network namespace.
    pub const HOST: Identity = Identity(1);
    /// Anything outside the cluster.
    pub const WORLD: Identity = Identity(2);
    /// Pods on this node not managed by sluice.
    pub const UNMANAGED: Identity = Identity(3);
    /// Health-check endpoints.
    pub const HEALTH: Identity = Identity(4);
    /// An endpoint whose identity is not resolved yet (before CNI ADD completes).
    pub const INIT: Identity = Identity(5);
    /// Other nodes' host network namespaces.
    pub const REMOTE_NODE: Identity = Identity(6);
    /// The Kubernetes API server.
    pub const KUBE_APISERVER: Identity = Identity(7);
    /// IPv4 addresses outside the cluster matched by no policy CIDR.
    pub const WORLD_IPV4: Identity = Identity(9);
    /// IPv6 addresses outside the cluster matched by no policy CIDR.
    pub const WORLD_IPV6: Identity = Identity(10);
    /// Identities below this number are reserved.
    pub const FIRST_DERIVED: u64 = 256;

    /// Whether this is one of the reserved numbers.
    pub fn is_reserved(self) -> bool {
        self.0 < Self::FIRST_DERIVED
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_reserved() {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:016x}", self.0)
        }
    }
}

/// The reserved identities and their labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReservedIdentity {
    /// `reserved:host`
    Host,
    /// `reserved:world`
    World,
    /// `reserved:unmanaged`
    Unmanaged,
    /// `reserved:health`
    Health,
    /// `reserved:init`
    Init,
    /// `reserved:remote-node`
    RemoteNode,
    /// `reserved:kube-apiserver`
    KubeApiserver,
    /// `reserved:world-ipv4`
    WorldIpv4,
    /// `reserved:world-ipv6`
    WorldIpv6,
}

impl ReservedIdentity {
    /// Every reserved identity.
    pub const ALL: [ReservedIdentity; 9] = [
        ReservedIdentity::Host,
        ReservedIdentity::World,
        ReservedIdentity::Unmanaged,
        ReservedIdentity::Health,
        ReservedIdentity::Init,
        ReservedIdentity::RemoteNode,
        ReservedIdentity::KubeApiserver,
        ReservedIdentity::WorldIpv4,
        ReservedIdentity::WorldIpv6,
    ];

    /// Its number.
    pub fn identity(self) -> Identity {
        match self {
            ReservedIdentity::Host => Identity::HOST,
            ReservedIdentity::World => Identity::WORLD,
            ReservedIdentity::Unmanaged => Identity::UNMANAGED,
            ReservedIdentity::Health => Identity::HEALTH,
            ReservedIdentity::Init => Identity::INIT,
            ReservedIdentity::RemoteNode => Identity::REMOTE_NODE,
            ReservedIdentity::KubeApiserver => Identity::KUBE_APISERVER,
            ReservedIdentity::WorldIpv4 => Identity::WORLD_IPV4,
            ReservedIdentity::WorldIpv6 => Identity::WORLD_IPV6,
        }
    }

    /// Its name, as in `reserved:<name>`.
    pub fn name(self) -> &'static str {
        match self {
            ReservedIdentity::Host => "host",
            ReservedIdentity::World => "world",
            ReservedIdentity::Unmanaged => "unmanaged",
            ReservedIdentity::Health => "health",
            ReservedIdentity::Init => "init",
            ReservedIdentity::RemoteNode => "remote-node",
            ReservedIdentity::KubeApiserver => "kube-apiserver",
            ReservedIdentity::WorldIpv4 => "world-ipv4",
            ReservedIdentity::WorldIpv6 => "world-ipv6",
        }
    }

    /// The reserved identity with this number.
    pub fn from_identity(id: Identity) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.identity() == id)
    }

    /// Its label set. The world identities also carry `reserved:world`, so selecting the
    /// world entity selects both address families.
    pub fn labels(self) -> LabelSet {
        let mut labels = vec![Label::new(LabelSource::Reserved, self.name(), "")];
        if matches!(
            self,
            ReservedIdentity::WorldIpv4 | ReservedIdentity::WorldIpv6
        ) {
            labels.push(Label::new(LabelSource::Reserved, "world", ""));
        }
        LabelSet::new(labels)
    }
}

/// The secret that keys identity derivation. Every node of a cluster must use the same key.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Derives a key from a cluster-wide secret (any length).
    pub fn from_secret(secret: &[u8]) -> Self {
        ClusterKey(blake3::derive_key(
            "sluice 2026 identity derivation v1",
            secret,
        ))
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

impl Default for ClusterKey {
    /// The key of a cluster that configured no secret.
    fn default() -> Self {
        Self::from_secret(b"")
    }
}

/// Derives the identity of a label set: keyed BLAKE3, first 8 bytes little-endian, moved out
/// of the reserved range.
pub fn derive_identity(key: &ClusterKey, labels: &LabelSet) -> Identity {
    let hash = blake3::keyed_hash(&key.0, &labels.canonical_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let n = u64::from_le_bytes(first);
    Identity(if n < Identity::FIRST_DERIVED {
        n + Identity::FIRST_DERIVED
    } else {
        n
    })
}

/// What kind of thing an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    /// A reserved identity.
    Reserved(ReservedIdentity),
    /// Workloads with this label set.
    Workload,
    /// Addresses outside the cluster inside this prefix (and in no longer policy prefix).
    Cidr(IpNet),
}

/// An identity's labels and kind.
#[derive(Clone, Debug)]
pub struct IdentityInfo {
    /// The canonical labels.
    pub labels: Arc<LabelSet>,
    /// What it stands for.
    pub kind: IdentityKind,
}

/// Errors from the identity registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Two different label sets derive the same number; both now fail closed.
    #[error(
        "identity collision on {identity}: labels [{existing}] and [{new}] derive the same number; both fail closed"
    )]
    Collision {
        /// The contested number.
        identity: Identity,
        /// The label set that held it first.
        existing: String,
        /// The label set that collided.
        new: String,
    },
}

/// Identities in use, with reference counts and collision tracking.
#[derive(Debug)]
pub struct IdentityRegistry {
    key: ClusterKey,
    entries: HashMap<Identity, (IdentityInfo, u32)>,
    collided: BTreeMap<Identity, Vec<Arc<LabelSet>>>,
}

impl IdentityRegistry {
    /// A registry holding the reserved identities.
    pub fn new(key: ClusterKey) -> Self {
        let mut entries = HashMap::new();
        for r in ReservedIdentity::ALL {
            let info = IdentityInfo {
                labels: Arc::new(r.labels()),
                kind: IdentityKind::Reserved(r),
            };
            entries.insert(r.identity(), (info, 1));
        }
        IdentityRegistry {
            key,
            entries,
            collided: BTreeMap::new(),
        }
    }

    /// The key identities are derived with.
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// Takes a reference on the identity of a workload label set.
    ///
    /// Returns whether the identity is new, or a collision error (the number is then poisoned
    /// for every label set that derives it until all of them are released).
    ///
    /// A workload whose label set is exactly `reserved:init` (a pod whose labels are not known
    /// yet, e.g. between its CNI ADD and the API server's pod event) gets the reserved `init`
    /// identity, which policy can name (`fromEntities: [init]`) and which is default-deny.
    pub fn acquire(&mut self, labels: &LabelSet) -> Result<(Identity, bool), IdentityError> {
        if *labels == ReservedIdentity::Init.labels() {
            return Ok((Identity::INIT, false));
        }
        let id = derive_identity(&self.key, labels);
        self.acquire_as(id, labels, IdentityKind::Workload)
    }

    /// Takes a reference on the identity of a policy CIDR prefix (labels `cidr:<prefix>` and
    /// `reserved:world`).
    pub fn acquire_cidr(&mut self, prefix: IpNet) -> Result<(Identity, bool), IdentityError> {
        let labels = cidr_labels(prefix);
        let id = derive_identity(&self.key, &labels);
        self.acquire_as(id, &labels, IdentityKind::Cidr(prefix))
    }

    fn acquire_as(
        &mut self,
        id: Identity,
        labels: &LabelSet,
        kind: IdentityKind,
    ) -> Result<(Identity, bool), IdentityError> {
        if let Some(holders) = self.collided.get_mut(&id) {
            holders.push(Arc::new(labels.clone()));
            return Err(IdentityError::Collision {
                identity: id,
                existing: holders[0].to_string(),
                new: labels.to_string(),
            });
        }
        match self.entries.get_mut(&id) {
            Some((info, refs)) if *info.labels == *labels => {
                *refs += 1;
                Ok((id, false))
            }
            Some((info, refs)) => {
                let existing = info.labels.clone();
                let mut holders = vec![existing.clone(); *refs as usize];
                holders.push(Arc::new(labels.clone()));
                self.collided.insert(id, holders);
                Err(IdentityError::Collision {
                    identity: id,
                    existing: existing.to_string(),
                    new: labels.to_string(),
                })
            }
            None => {
                let info = IdentityInfo {
                    labels: Arc::new(labels.clone()),
                    kind,
                };
                self.entries.insert(id, (info, 1));
                Ok((id, true))
            }
        }
    }

    /// Drops a reference taken by [`acquire`](Self::acquire) with these labels. Returns true
    /// when the identity is gone (last reference).
    pub fn release(&mut self, id: Identity, labels: &LabelSet) -> bool {
        if id.is_reserved() {
            return false;
        }
        if let Some(holders) = self.collided.get_mut(&id) {
            if let Some(pos) = holders.iter().position(|l| **l == *labels) {
                holders.remove(pos);
            }
            if holders.is_empty() {
                self.collided.remove(&id);
                self.entries.remove(&id);
                return true;
            }
            // The collision clears once only one label set still holds the number.
            let first = holders[0].clone();
            if holders.iter().all(|l| *l == first) {
                let refs = holders.len() as u32;
                self.collided.remove(&id);
                if let Some((info, r)) = self.entries.get_mut(&id) {
                    info.labels = first;
                    *r = refs;
                }
            }
            return false;
        }
        match self.entries.get_mut(&id) {
            Some((_, refs)) if *refs > 1 => {
                *refs -= 1;
                false
            }
            Some(_) => {
                self.entries.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Labels and kind of an identity.
    pub fn get(&self, id: Identity) -> Option<&IdentityInfo> {
        self.entries.get(&id).map(|(info, _)| info)
    }

    /// Whether `id` is poisoned by a collision.
    pub fn is_collided(&self, id: Identity) -> bool {
        self.collided.contains_key(&id)
    }

    /// The poisoned identities.
    pub fn collided(&self) -> impl Iterator<Item = Identity> + '_ {
        self.collided.keys().copied()
    }

    /// Every identity in use, reserved ones included.
    pub fn iter(&self) -> impl Iterator<Item = (Identity, &IdentityInfo)> {
        self.entries.iter().map(|(id, (info, _))| (*id, info))
    }

    /// Number of identities in use.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether only reserved identities exist (never true: they are always present).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The labels of a CIDR identity.
pub fn cidr_labels(prefix: IpNet) -> LabelSet {
    LabelSet::new([
        Label::new(LabelSource::Cidr, prefix.trunc().to_string(), ""),
        Label::new(LabelSource::Reserved, "world", ""),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(
            pairs
                .iter()
                .map(|(k, v)| Label::new(LabelSource::K8s, *k, *v)),
        )
    }

    #[test]
    fn derivation_is_deterministic_keyed_and_outside_reserved_range() {
        let key = ClusterKey::from_secret(b"cluster-a");
        let labels = set(&[("app", "web")]);
        let a = derive_identity(&key, &labels);
        assert_eq!(
            a,
            derive_identity(&ClusterKey::from_secret(b"cluster-a"), &labels)
        );
        assert_ne!(
            a,
            derive_identity(&ClusterKey::from_secret(b"cluster-b"), &labels)
        );
        assert_ne!(a, derive_identity(&key, &set(&[("app", "api")])));
        assert!(!a.is_reserved());
    }

    #[test]
    fn reference_counting_releases_on_last_holder() {
        let mut reg = IdentityRegistry::new(ClusterKey::default());
        let labels = set(&[("app", "web")]);
        let (id, new) = reg.acquire(&labels).unwrap();
        assert!(new);
        assert_eq!(reg.acquire(&labels).unwrap(), (id, false));
        assert!(!reg.release(id, &labels));
        assert!(reg.get(id).is_some());
        assert!(reg.release(id, &labels));
        assert!(reg.get(id).is_none());
    }

    #[test]
    fn collision_poisons_the_number_until_one_holder_remains() {
        let mut reg = IdentityRegistry::new(ClusterKey::default());
        let a = set(&[("app", "a")]);
        let b = set(&[("app", "b")]);
        let id = Identity(4242);
        reg.acquire_as(id, &a, IdentityKind::Workload).unwrap();
        let err = reg.acquire_as(id, &b, IdentityKind::Workload).unwrap_err();
        assert!(matches!(err, IdentityError::Collision { identity, .. } if identity == id));
        assert!(err.to_string().contains("k8s:app=a") && err.to_string().contains("k8s:app=b"));
        assert!(reg.is_collided(id));
        assert!(!reg.release(id, &b));
        assert!(
            !reg.is_collided(id),
            "only one label set holds the number again"
        );
        assert_eq!(*reg.get(id).unwrap().labels, a);
    }

    #[test]
    fn reserved_identities_are_present_and_world_families_carry_world() {
        let reg = IdentityRegistry::new(ClusterKey::default());
        let v4 = reg.get(Identity::WORLD_IPV4).unwrap();
        assert!(v4.labels.has(Some(LabelSource::Reserved), "world"));
        assert!(reg.get(Identity::HOST).unwrap().labels.has(None, "host"));
        assert_eq!(
            ReservedIdentity::from_identity(Identity(6)),
            Some(ReservedIdentity::RemoteNode)
        );
    }
}
