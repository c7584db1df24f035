//! `Dataplane::sync_ipcache`: the per-address update the agent makes when a pod on another
//! node comes, moves or goes, checked against the pinned map and against a full sync that
//! follows it (which must find nothing left to write).
//!
//! Needs root and bpffs (loads the steering program; no interfaces, no packets); skipped with
//! a message otherwise.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData};
use identity_cache::identity::ClusterKey;
use identity_cache::state::{IdentityCache, Workload};
use identity_cache::tables::EnforcementConfig;
use ipnet::IpNet;
use xdp_redirect::abi::IpcacheValue;
use xdp_redirect::ipcache_map::InterfaceFacts;
use xdp_redirect::loader::{DatapathSettings, Dataplane};

struct NoInterfaces;

impl InterfaceFacts for NoInterfaces {
    fn host_mac(&self, _ifindex: u32) -> [u8; 6] {
        [0; 6]
    }
    fn kernel_mode(&self, _ifindex: u32) -> bool {
        false
    }
}

/// A pin directory removed on drop.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remote(uid: &str, app: &str, ip: Ipv4Addr) -> Workload {
    support::workload_in_t(uid.into(), uid, app, vec![IpAddr::V4(ip)])
}

/// The identity the pinned `ipcache_v4` map holds for exactly `ip`/32 (the map is read from
/// its pin, as another process would).
fn pinned_identity(pins: &std::path::Path, ip: Ipv4Addr) -> Option<u64> {
    let data = MapData::from_pin(pins.join("ipcache_v4")).expect("pinned ipcache_v4");
    let trie: LpmTrie<MapData, [u8; 4], IpcacheValue> =
        LpmTrie::try_from(Map::LpmTrie(data)).expect("an LPM trie");
    trie.get(&Key::new(32, ip.octets()), 0)
        .ok()
        .map(|v| v.identity)
}

#[test]
fn an_address_update_writes_only_that_entry_and_leaves_nothing_for_a_full_sync() {
    if !support::privileged() {
        eprintln!("skipped: needs root");
        return;
    }
    support::ensure_bpffs();
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/{}",
        support::unique("sluice-ipsync-")
    )));
    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    let (a, b) = (Ipv4Addr::new(10, 70, 0, 1), Ipv4Addr::new(10, 70, 0, 2));
    let id_web = cache.upsert_workload(remote("w1", "web", a)).expect("w1");
    let mut plane = Dataplane::open(&pins.0, DatapathSettings::default()).expect("load");
    plane
        .sync(&cache.pending(), &NoInterfaces)
        .expect("full sync");
    assert_eq!(pinned_identity(&pins.0, a), Some(id_web.0));

    // A second replica (same identity) comes: only its entry is written.
    let id_b = cache.upsert_workload(remote("w2", "web", b)).expect("w2");
    assert_eq!(id_b, id_web);
    let stats = plane
        .sync_ipcache(&cache.pending(), &[IpNet::from(IpAddr::V4(b))])
        .expect("sync_ipcache");
    assert_eq!((stats.upserted, stats.deleted), (1, 0));
    assert_eq!(pinned_identity(&pins.0, b), Some(id_web.0));
    let full = plane
        .sync(&cache.pending(), &NoInterfaces)
        .expect("full sync");
    assert_eq!(
        (full.upserted, full.deleted),
        (0, 0),
        "the incremental update left the maps as a full sync has them"
    );

    // It goes: its entry is deleted, the other replica's stays.
    assert!(cache.remove_workload("w2"));
    let stats = plane
        .sync_ipcache(&cache.pending(), &[IpNet::from(IpAddr::V4(b))])
        .expect("sync_ipcache");
    assert_eq!((stats.upserted, stats.deleted), (0, 1));
    assert_eq!(pinned_identity(&pins.0, b), None);
    assert_eq!(pinned_identity(&pins.0, a), Some(id_web.0));
    let full = plane
        .sync(&cache.pending(), &NoInterfaces)
        .expect("full sync");
    assert_eq!((full.upserted, full.deleted), (0, 0));

    // An address that is in neither the map nor the snapshot: nothing to do.
    let stats = plane
        .sync_ipcache(
            &cache.pending(),
            &[IpNet::from(IpAddr::V4(Ipv4Addr::new(10, 70, 0, 9)))],
        )
        .expect("sync_ipcache");
    assert_eq!((stats.upserted, stats.deleted), (0, 0));
    plane.destroy().expect("destroy");
}
