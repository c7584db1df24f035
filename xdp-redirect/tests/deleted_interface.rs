//! A pod's veth deleted before the agent syncs: the kernel has already removed the interface's
//! `redirect_devmap` entry, and the sync that drops the endpoint must still succeed (it used to
//! fail on the delete, and the agent then refused every later state).
//!
//! Needs root (namespaces, BPF); skipped with a message otherwise. The namespaces are created
//! here with unique names and removed on every exit path.

mod support;

use identity_cache::identity::ClusterKey;
use identity_cache::state::IdentityCache;
use identity_cache::tables::EnforcementConfig;
use support::{HostFacts, Pod};
use xdp_redirect::loader::{DatapathSettings, Dataplane};

#[test]
fn an_endpoint_whose_veth_is_already_gone_is_removed_without_error() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces and load BPF");
        return;
    }
    support::ensure_bpffs();
    let node = support::node();
    let a = Pod::attach(&node, 1);
    let b = Pod::attach(&node, 2);
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-gone-")));
    let _pins = support::RemoveDir(pin_dir.clone());

    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    cache
        .upsert_workload(support::local_workload(&a, "a", "a", vec![a.ip.into()]))
        .expect("a");
    cache
        .upsert_workload(support::local_workload(&b, "b", "b", vec![b.ip.into()]))
        .expect("b");
    let facts = HostFacts::of(&[&a, &b]);
    let both = cache.pending();
    let mut plane = node.run({
        let pin_dir = pin_dir.clone();
        move || {
            let mut plane = Dataplane::open(&pin_dir, DatapathSettings::default()).expect("load");
            plane.sync(&both, &facts).expect("sync with both endpoints");
            plane
        }
    });

    // B's veth goes away first (the pod died); the kernel drops its devmap entry itself.
    node.ip(&["link", "del", &b.host_dev]);
    assert!(cache.remove_workload("uid-b"), "b was there");
    let only_a = cache.pending();
    let facts = HostFacts::of(&[&a]);
    let (plane, result) = node.run(move || {
        let result = plane.sync(&only_a, &facts).map_err(|e| e.to_string());
        (plane, result)
    });
    let stats = result.expect("the sync that drops an endpoint whose veth is gone succeeds");
    assert!(stats.deleted > 0, "b's entries were removed: {stats:?}");
    node.run(move || plane.destroy().expect("destroy"));
}
