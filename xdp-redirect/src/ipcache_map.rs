//! Translating identity-cache's ipcache, policy CIDRs and endpoints into kernel map contents.

use std::collections::BTreeMap;

use identity_cache::state::Snapshot;
use ipnet::IpNet;

use aya::maps::lpm_trie::Key;

use crate::abi::{ENDPOINT_F_KERNEL_MODE, EndpointValue, IpcacheValue};

/// An LPM key of either family, ordered for deterministic diffs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrefixKey {
    /// IPv4: (prefix length, address).
    V4(u32, [u8; 4]),
    /// IPv6: (prefix length, address).
    V6(u32, [u8; 16]),
}

impl PrefixKey {
    /// The key of a prefix.
    pub fn of(prefix: IpNet) -> Self {
        match prefix.trunc() {
            IpNet::V4(n) => PrefixKey::V4(u32::from(n.prefix_len()), n.addr().octets()),
            IpNet::V6(n) => PrefixKey::V6(u32::from(n.prefix_len()), n.addr().octets()),
        }
    }

    /// The IPv4 map key, if IPv4.
    pub fn v4(&self) -> Option<Key<[u8; 4]>> {
        match *self {
            PrefixKey::V4(prefixlen, addr) => Some(Key::new(prefixlen, addr)),
            PrefixKey::V6(..) => None,
        }
    }

    /// The IPv6 map key, if IPv6.
    pub fn v6(&self) -> Option<Key<[u8; 16]>> {
        match *self {
            PrefixKey::V6(prefixlen, addr) => Some(Key::new(prefixlen, addr)),
            PrefixKey::V4(..) => None,
        }
    }
}

/// Contents of the ipcache tries (both families).
pub fn ipcache_entries(snapshot: &Snapshot) -> BTreeMap<PrefixKey, IpcacheValue> {
    let mut out = BTreeMap::new();
    for (prefix, hit) in snapshot.ipcache.iter() {
        out.insert(
            PrefixKey::of(prefix),
            ipcache_value(snapshot, prefix, hit.identity.0),
        );
    }
    out
}

/// The ipcache entry of exactly `prefix`, if the snapshot has one (what
/// [`ipcache_entries`] holds for that key).
pub fn ipcache_entry(snapshot: &Snapshot, prefix: IpNet) -> Option<IpcacheValue> {
    let (identity, _) = snapshot.ipcache.get(prefix)?;
    Some(ipcache_value(snapshot, prefix, identity.0))
}

fn ipcache_value(snapshot: &Snapshot, prefix: IpNet, identity: u64) -> IpcacheValue {
    let endpoint_ifindex = match prefix {
        IpNet::V4(n) if n.prefix_len() == 32 => snapshot.endpoints.by_ip(n.addr().into()),
        IpNet::V6(n) if n.prefix_len() == 128 => snapshot.endpoints.by_ip(n.addr().into()),
        _ => None,
    }
    .map_or(0, |e| e.ifindex);
    IpcacheValue {
        identity,
        endpoint_ifindex,
        flags: 0,
    }
}

/// Contents of the policy-CIDR tries.
pub fn cidr_entries(snapshot: &Snapshot) -> BTreeMap<PrefixKey, IpcacheValue> {
    snapshot
        .policy_cidrs
        .iter()
        .map(|(prefix, hit)| {
            (
                PrefixKey::of(prefix),
                IpcacheValue {
                    identity: hit.identity.0,
                    endpoint_ifindex: 0,
                    flags: 0,
                },
            )
        })
        .collect()
}

/// Per-interface settings the snapshot does not carry: the host-side MAC of each endpoint's
/// veth and whether the operator chose kernel mode for it.
pub trait InterfaceFacts {
    /// The MAC address of interface `ifindex` on the host side.
    fn host_mac(&self, ifindex: u32) -> [u8; 6];
    /// Whether interface `ifindex` is in kernel-enforcement mode.
    fn kernel_mode(&self, ifindex: u32) -> bool;
}

/// Contents of the endpoints map.
pub fn endpoint_entries(
    snapshot: &Snapshot,
    facts: &dyn InterfaceFacts,
) -> BTreeMap<u32, EndpointValue> {
    snapshot
        .endpoints
        .iter()
        .map(|e| {
            let flags = if facts.kernel_mode(e.ifindex) {
                ENDPOINT_F_KERNEL_MODE
            } else {
                0
            };
            (
                e.ifindex,
                EndpointValue {
                    identity: e.identity.0,
                    ifindex: e.ifindex,
                    pod_mac: e.mac,
                    host_mac: facts.host_mac(e.ifindex),
                    flags,
                    pad: 0,
                },
            )
        })
        .collect()
}
