//! The local endpoint table: the pods on this node, by IP, by id and by interface.
//!
//! Workers read it inside published snapshots: `by_ip` is on the hot path (is this address a
//! local pod, and which?), `by_ifindex` serves anti-spoofing (a packet from a pod's interface
//! must carry one of that pod's addresses). A node holds a few hundred endpoints, so the whole
//! table is copy-on-write: cloning it is one reference count, and a mutation copies the maps
//! (of `Arc`s) once per published snapshot.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;

use crate::identity::Identity;
use crate::protocol::Protocol;

/// The number of a local endpoint, unique on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(pub u32);

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {}", self.0)
    }
}

/// A container port with a name, which policies can refer to instead of a number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    /// The port's name (`http`, `metrics`, …).
    pub name: String,
    /// Its number.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// A pod on this node, as the dataplane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its number on this node.
    pub id: EndpointId,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The host-side interface of the pod's veth.
    pub ifindex: u32,
    /// The pod-side MAC address.
    pub mac: [u8; 6],
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
    /// The pod's security identity.
    pub identity: Identity,
    /// The pod's named container ports.
    pub named_ports: Vec<NamedPort>,
}

impl Endpoint {
    /// Whether `ip` is one of the endpoint's addresses.
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip)
    }

    /// The number of the named port `name` for `protocol`.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// Why an endpoint was not stored. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Another endpoint already has this address; remove it first (a late delete must not
    /// leave two pods answering for one address).
    #[error(
        "{ip} of {namespace}/{name} ({id}) is already used by {holder_namespace}/{holder_name} ({holder})"
    )]
    IpInUse {
        /// The contested address.
        ip: IpAddr,
        /// The endpoint being stored.
        id: EndpointId,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The endpoint holding the address.
        holder: EndpointId,
        /// The holder's namespace.
        holder_namespace: String,
        /// The holder's name.
        holder_name: String,
    },
    /// Another endpoint already uses this interface.
    #[error("interface {ifindex} of {namespace}/{name} ({id}) is already used by {holder}")]
    IfindexInUse {
        /// The contested interface index.
        ifindex: u32,
        /// The endpoint being stored.
        id: EndpointId,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The endpoint holding the interface.
        holder: EndpointId,
    },
}

/// Hashes the integer keys of the endpoint indexes with one multiply (a node has a few
/// hundred endpoints and their addresses are not chosen by packets, so no seed is needed; the
/// lookup is on every packet's path).
#[derive(Clone, Copy, Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        // The table takes its slot from the low bits: fold the well-mixed high ones in.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        let (hi, lo) = ((n >> 64) as u64, n as u64);
        self.write_u64(hi.wrapping_mul(0xff51_afd7_ed55_8ccd) ^ lo);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[derive(Clone, Default)]
struct Tables {
    /// See [`EndpointTable::stamp`].
    stamp: u64,
    by_id: BTreeMap<EndpointId, Arc<Endpoint>>,
    by_v4: IntMap<u32, Arc<Endpoint>>,
    by_v6: IntMap<u128, Arc<Endpoint>>,
    by_ifindex: IntMap<u32, Arc<Endpoint>>,
}

/// The local endpoints, indexed by IP, id and interface. Cloning is one reference count.
#[derive(Clone, Default)]
pub struct EndpointTable {
    tables: Arc<Tables>,
}

impl fmt::Debug for EndpointTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|e| (e.id, &e.namespace, &e.name)))
            .finish()
    }
}

impl EndpointTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoint that has address `ip`.
    #[inline]
    pub fn by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        match ip {
            IpAddr::V4(a) => self.tables.by_v4.get(&u32::from(a)),
            IpAddr::V6(a) => self.tables.by_v6.get(&u128::from(a)),
        }
        .map(|e| &**e)
    }

    /// The endpoint with this id.
    pub fn by_id(&self, id: EndpointId) -> Option<&Endpoint> {
        self.tables.by_id.get(&id).map(|e| &**e)
    }

    /// The endpoint behind this interface.
    #[inline]
    pub fn by_ifindex(&self, ifindex: u32) -> Option<&Endpoint> {
        self.tables.by_ifindex.get(&ifindex).map(|e| &**e)
    }

    /// Anti-spoofing: whether a packet that arrived from interface `ifindex` may carry source
    /// address `ip`, i.e. `ip` belongs to the endpoint behind that interface.
    #[inline]
    pub fn is_valid_source(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.by_ip(ip).is_some_and(|e| e.ifindex == ifindex)
    }

    /// Every endpoint, by ascending id.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.tables.by_id.values().map(|e| &**e)
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.tables.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tables.by_id.is_empty()
    }

    /// A number that changes with every change of the table and is never reused by another
    /// table in this process (0 for a table that was never changed, which is empty): two
    /// tables with the same stamp hold the same endpoints. The ipcache's local-endpoint flags
    /// name the stamp of the table they were kept in step with, so that a lookup can trust
    /// them only for that table.
    pub fn stamp(&self) -> u64 {
        self.tables.stamp
    }

    /// Stores `endpoint`, replacing the one with the same id (all its indexes at once: its
    /// old addresses and interface stop resolving in the same update its new ones start).
    /// Returns the endpoint it replaced.
    ///
    /// Refused when another endpoint holds one of its addresses or its interface.
    pub fn upsert(&mut self, endpoint: Endpoint) -> Result<Option<Arc<Endpoint>>, EndpointError> {
        let id = endpoint.id;
        for &ip in &endpoint.ips {
            if let Some(holder) = self.by_ip(ip).filter(|h| h.id != id) {
                return Err(EndpointError::IpInUse {
                    ip,
                    id,
                    namespace: endpoint.namespace.clone(),
                    name: endpoint.name.clone(),
                    holder: holder.id,
                    holder_namespace: holder.namespace.clone(),
                    holder_name: holder.name.clone(),
                });
            }
        }
        if let Some(holder) = self.by_ifindex(endpoint.ifindex).filter(|h| h.id != id) {
            return Err(EndpointError::IfindexInUse {
                ifindex: endpoint.ifindex,
                id,
                namespace: endpoint.namespace.clone(),
                name: endpoint.name.clone(),
                holder: holder.id,
            });
        }
        let tables = Arc::make_mut(&mut self.tables);
        tables.stamp = next_stamp();
        let previous = tables.unindex(id);
        let endpoint = Arc::new(endpoint);
        for &ip in &endpoint.ips {
            match ip {
                IpAddr::V4(a) => tables.by_v4.insert(u32::from(a), endpoint.clone()),
                IpAddr::V6(a) => tables.by_v6.insert(u128::from(a), endpoint.clone()),
            };
        }
        tables.by_ifindex.insert(endpoint.ifindex, endpoint.clone());
        tables.by_id.insert(id, endpoint);
        Ok(previous)
    }

    /// Removes the endpoint with this id and all its indexes; returns it.
    pub fn remove(&mut self, id: EndpointId) -> Option<Arc<Endpoint>> {
        if !self.tables.by_id.contains_key(&id) {
            return None;
        }
        let tables = Arc::make_mut(&mut self.tables);
        tables.stamp = next_stamp();
        tables.unindex(id)
    }
}

/// A stamp no table in this process had before.
fn next_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Tables {
    /// Removes endpoint `id` from every index, touching only entries that point at it.
    fn unindex(&mut self, id: EndpointId) -> Option<Arc<Endpoint>> {
        let old = self.by_id.remove(&id)?;
        for &ip in &old.ips {
            match ip {
                IpAddr::V4(a) => {
                    if self.by_v4.get(&u32::from(a)).is_some_and(|e| e.id == id) {
                        self.by_v4.remove(&u32::from(a));
                    }
                }
                IpAddr::V6(a) => {
                    if self.by_v6.get(&u128::from(a)).is_some_and(|e| e.id == id) {
                        self.by_v6.remove(&u128::from(a));
                    }
                }
            }
        }
        if self
            .by_ifindex
            .get(&old.ifindex)
            .is_some_and(|e| e.id == id)
        {
            self.by_ifindex.remove(&old.ifindex);
        }
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: u32, ifindex: u32, ips: &[&str]) -> Endpoint {
        Endpoint {
            id: EndpointId(id),
            namespace: "default".into(),
            name: format!("pod-{id}"),
            pod_uid: format!("uid-{id}"),
            ifindex,
            mac: [0x02, 0, 0, 0, 0, id as u8],
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            identity: Identity(1000 + u64::from(id)),
            named_ports: vec![NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn endpoints_resolve_by_ip_id_and_interface() {
        let mut t = EndpointTable::new();
        t.upsert(ep(1, 11, &["10.0.0.1", "fd00::1"])).unwrap();
        t.upsert(ep(2, 12, &["10.0.0.2"])).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.by_ip(ip("10.0.0.1")).unwrap().id, EndpointId(1));
        assert_eq!(t.by_ip(ip("fd00::1")).unwrap().name, "pod-1");
        assert_eq!(t.by_ip(ip("10.0.0.3")), None);
        assert_eq!(t.by_id(EndpointId(2)).unwrap().ifindex, 12);
        assert_eq!(t.by_ifindex(12).unwrap().identity, Identity(1002));
        assert_eq!(t.by_ifindex(13), None);
        assert_eq!(t.iter().map(|e| e.id.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            t.by_id(EndpointId(1))
                .unwrap()
                .named_port("http", Protocol::Tcp),
            Some(8080)
        );
        assert_eq!(
            t.by_id(EndpointId(1))
                .unwrap()
                .named_port("http", Protocol::Udp),
            None
        );
    }

    #[test]
    fn anti_spoofing_accepts_only_the_interfaces_own_addresses() {
        let mut t = EndpointTable::new();
        t.upsert(ep(1, 11, &["10.0.0.1", "fd00::1"])).unwrap();
        t.upsert(ep(2, 12, &["10.0.0.2"])).unwrap();
        assert!(t.is_valid_source(11, ip("10.0.0.1")));
        assert!(t.is_valid_source(11, ip("fd00::1")));
        assert!(
            !t.is_valid_source(11, ip("10.0.0.2")),
            "pod 1 spoofing pod 2"
        );
        assert!(!t.is_valid_source(11, ip("8.8.8.8")));
        assert!(!t.is_valid_source(99, ip("10.0.0.1")));
    }

    #[test]
    fn upsert_reindexes_atomically_and_old_snapshots_are_untouched() {
        let mut t = EndpointTable::new();
        t.upsert(ep(1, 11, &["10.0.0.1"])).unwrap();
        let before = t.clone();
        let mut moved = ep(1, 21, &["10.0.0.9"]);
        moved.identity = Identity(5000);
        let previous = t.upsert(moved).unwrap().unwrap();
        assert_eq!(previous.ips, [ip("10.0.0.1")]);
        assert_eq!(t.by_ip(ip("10.0.0.1")), None);
        assert_eq!(t.by_ifindex(11), None);
        assert_eq!(t.by_ip(ip("10.0.0.9")).unwrap().identity, Identity(5000));
        assert_eq!(t.by_ifindex(21).unwrap().id, EndpointId(1));
        assert_eq!(t.len(), 1);
        assert_eq!(
            before.by_ip(ip("10.0.0.1")).unwrap().identity,
            Identity(1001)
        );
        assert_eq!(before.by_ip(ip("10.0.0.9")), None);
    }

    #[test]
    fn conflicting_addresses_or_interfaces_are_refused_without_changes() {
        let mut t = EndpointTable::new();
        t.upsert(ep(1, 11, &["10.0.0.1"])).unwrap();
        let err = t.upsert(ep(2, 12, &["10.0.0.2", "10.0.0.1"])).unwrap_err();
        assert!(matches!(
            err,
            EndpointError::IpInUse {
                holder: EndpointId(1),
                ..
            }
        ));
        assert!(err.to_string().contains("10.0.0.1") && err.to_string().contains("pod-1"));
        let err = t.upsert(ep(2, 11, &["10.0.0.2"])).unwrap_err();
        assert!(matches!(
            err,
            EndpointError::IfindexInUse { ifindex: 11, .. }
        ));
        assert_eq!(t.len(), 1);
        assert_eq!(t.by_ip(ip("10.0.0.2")), None);
    }

    #[test]
    fn remove_drops_every_index() {
        let mut t = EndpointTable::new();
        t.upsert(ep(1, 11, &["10.0.0.1", "fd00::1"])).unwrap();
        t.upsert(ep(2, 12, &["10.0.0.2"])).unwrap();
        let snapshot = t.clone();
        assert_eq!(t.remove(EndpointId(1)).unwrap().id, EndpointId(1));
        assert_eq!(t.remove(EndpointId(1)), None);
        assert_eq!(t.by_ip(ip("10.0.0.1")), None);
        assert_eq!(t.by_ip(ip("fd00::1")), None);
        assert_eq!(t.by_ifindex(11), None);
        assert_eq!(t.len(), 1);
        assert!(snapshot.by_ip(ip("fd00::1")).is_some());
        // The freed address and interface can be taken by a new pod.
        t.upsert(ep(3, 11, &["10.0.0.1"])).unwrap();
        assert_eq!(t.by_ip(ip("10.0.0.1")).unwrap().id, EndpointId(3));
    }
}
