//! The Kubernetes source: watches (kube-runtime reflectors) of Pods (all of them: remote pods
//! feed the ipcache, this node's pods are endpoints once the CNI plugin attaches them),
//! Namespaces (their labels feed identities), NetworkPolicies, and sluice's own
//! `SluicePolicy`/`SluiceClusterPolicy`, turned into the same [`Desired`] state as the
//! standalone source.
//!
//! - The first [`Desired`] is built only after every watch has listed its objects
//!   ([`KubeSource::wait_ready`]), so the agent applies the cluster's state as one snapshot.
//! - A reflector keeps its last complete list while a watch restarts (410 Gone, disconnect)
//!   and swaps in the new list when it is complete: no lapse, nothing half-applied. While the
//!   API server is unreachable the last known state stays in force and
//!   [`KubeSource::staleness`] grows (status and metrics show it).
//! - A pod that is terminating (`deletionTimestamp`) or finished (phase Succeeded/Failed) is
//!   no longer in the desired state: the agent revokes its identity (owner-checked by pod
//!   UID, so a late delete of an old pod never removes a new pod's entry for the same IP).
//! - Each SluicePolicy/SluiceClusterPolicy gets a status condition `Accepted` (True, or False
//!   with the field path and reason), written only when it changes.
//! - Where the cluster serves `cilium.io/v2` CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy
//!   (discovery at start, [`CiliumKinds`]; status says which), their objects are watched and
//!   enforced too, read-only: a refused one is in the agent's status, never in the object's.
//! - A pod event updates the desired state for that pod alone ([`KubeSource::take_changes`],
//!   [`KubeSource::update_pods`]); anything else rebuilds it from the stores.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use identity_cache::endpoint::NamedPort;
use identity_cache::policy::{ParsedManifest, parse_document_at};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Desired, EndpointMode, EndpointSpec, RemoteWorkload};
use crate::api::Rejection;
use crate::crd::{Condition, PolicyStatus, SluiceClusterPolicy, SluicePolicy};

/// How the watches are doing.
#[derive(Default)]
struct Health {
    /// Monotonic ns of the last event or successful (re)list, 0 before the first.
    last_event_ns: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<String>,
    dirty: AtomicBool,
    /// Something other than a pod changed (or a watch re-listed): the desired state must be
    /// rebuilt from the stores.
    full: AtomicBool,
    /// Pods added, changed or deleted since the last [`KubeSource::take_changes`].
    pods: Mutex<Vec<PodTouch>>,
    /// Every watch has listed its objects once.
    ready: AtomicBool,
}

/// A pod that an event touched: enough to find it in the store, or to know which entry to
/// remove when it is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTouch {
    /// Pod UID (the owner of its ipcache entries).
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What changed since the last [`KubeSource::take_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeChanges {
    /// Nothing.
    None,
    /// Namespaces or policies changed, or a watch re-listed: rebuild the desired state.
    Full,
    /// Only these pods changed: update the desired state for them alone.
    Pods(Vec<PodTouch>),
}

/// What [`KubeSource::update_pods`] changed in a desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodUpdate {
    /// A pod of this node was added, changed or removed (its endpoint must be re-applied).
    pub local: bool,
    /// UIDs of pods on other nodes whose entry was added, changed or removed.
    pub remote: Vec<String>,
}

/// A pod's place in the desired state.
enum PodEntry {
    /// On this node: an endpoint once the CNI plugin attaches it.
    Local(EndpointSpec),
    /// On another node, with addresses: an ipcache entry.
    Remote(String, RemoteWorkload),
}

fn now_ns() -> u64 {
    fastpath::worker::now_monotonic_ns()
}

/// The reflector stores.
#[derive(Clone)]
struct Stores {
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    netpols: Store<NetworkPolicy>,
    sluice: Store<SluicePolicy>,
    sluice_cluster: Store<SluiceClusterPolicy>,
    /// `cilium.io/v2` CiliumNetworkPolicy objects, when the cluster serves the kind.
    cilium: Option<Store<DynamicObject>>,
    /// `cilium.io/v2` CiliumClusterwideNetworkPolicy objects, when the cluster serves the kind.
    cilium_cluster: Option<Store<DynamicObject>>,
}

/// The `cilium.io/v2` policy kinds, as discovery found them when the agent started. Their
/// objects are read, never written (their status belongs to Cilium).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiliumKinds {
    /// These kinds are served and watched.
    Watched(Vec<&'static str>),
    /// The cluster serves neither kind (no Cilium CRDs): nothing to watch.
    NotInstalled,
    /// Discovery failed; the kinds are not watched (restart the agent to look again).
    Unknown(String),
}

impl std::fmt::Display for CiliumKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CiliumKinds::Watched(kinds) => write!(f, "cilium.io/v2 {} watched", kinds.join(", ")),
            CiliumKinds::NotInstalled => f.write_str("no cilium.io/v2 policy CRDs"),
            CiliumKinds::Unknown(why) => {
                write!(
                    f,
                    "cilium.io/v2 policies not watched (discovery failed: {why})"
                )
            }
        }
    }
}

/// CiliumNetworkPolicy's plural.
const CNP_PLURAL: &str = "ciliumnetworkpolicies";
/// CiliumClusterwideNetworkPolicy's plural.
const CCNP_PLURAL: &str = "ciliumclusterwidenetworkpolicies";
/// How long discovery may take at start.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which `cilium.io/v2` policy kinds the API server serves.
async fn discover_cilium(client: &Client) -> CiliumKinds {
    match tokio::time::timeout(
        DISCOVERY_TIMEOUT,
        client.list_api_group_resources("cilium.io/v2"),
    )
    .await
    {
        Err(_) => CiliumKinds::Unknown(format!(
            "no answer within {} s",
            DISCOVERY_TIMEOUT.as_secs()
        )),
        // An unserved group is a plain-text 404 (not a Status object).
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => CiliumKinds::NotInstalled,
        Ok(Err(e)) => CiliumKinds::Unknown(e.to_string()),
        Ok(Ok(list)) => {
            let served = |plural: &str| list.resources.iter().any(|r| r.name == plural);
            let kinds: Vec<&'static str> = [
                (CNP_PLURAL, "CiliumNetworkPolicy"),
                (CCNP_PLURAL, "CiliumClusterwideNetworkPolicy"),
            ]
            .into_iter()
            .filter(|(plural, _)| served(plural))
            .map(|(_, kind)| kind)
            .collect();
            if kinds.is_empty() {
                CiliumKinds::NotInstalled
            } else {
                CiliumKinds::Watched(kinds)
            }
        }
    }
}

/// The API resource of a `cilium.io/v2` kind.
fn cilium_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("cilium.io", "v2", kind), plural)
}

/// Watches of one cluster, seen from one node.
pub struct KubeSource {
    node: String,
    client: Client,
    runtime: tokio::runtime::Handle,
    stores: Stores,
    health: Arc<Health>,
    changes: crossbeam::channel::Receiver<()>,
    /// The condition last written per policy object, to write only changes.
    written: Arc<Mutex<BTreeMap<String, WrittenCondition>>>,
    /// The `cilium.io/v2` kinds found at start.
    cilium: CiliumKinds,
    /// Policies parsed before, by object UID with the resourceVersion they were parsed at:
    /// a pod event does not re-parse every policy.
    parsed: Mutex<BTreeMap<String, (String, ParseResult)>>,
}

type ParseResult = Result<identity_cache::policy::Policy, String>;

/// A condition as written: (observed generation, status, message).
type WrittenCondition = (Option<i64>, String, String);

/// Records a pod event: the touched pod for an incremental update, a re-list as a full one.
fn note_pod_event(health: &Health, event: &watcher::Event<Pod>) {
    match event {
        watcher::Event::Apply(pod) | watcher::Event::Delete(pod) => {
            if let (Some(uid), Some(namespace)) = (pod.uid(), pod.namespace())
                && let Ok(mut pods) = health.pods.lock()
            {
                pods.push(PodTouch {
                    uid,
                    namespace,
                    name: pod.name_any(),
                });
            } else {
                health.full.store(true, Ordering::SeqCst);
            }
        }
        // The store swaps in the new list at InitDone; nothing changed before.
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => health.full.store(true, Ordering::SeqCst),
    }
}

/// Records an event of any other kind: the desired state is rebuilt.
fn note_other_event<K>(health: &Health, event: &watcher::Event<K>) {
    if !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
        health.full.store(true, Ordering::SeqCst);
    }
}

fn spawn_watch<K>(
    runtime: &tokio::runtime::Handle,
    api: Api<K>,
    health: Arc<Health>,
    tx: crossbeam::channel::Sender<()>,
    note: fn(&Health, &watcher::Event<K>),
    dynamic: K::DynamicType,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let kind = K::kind(&dynamic).into_owned();
    let writer = reflector::store::Writer::new(dynamic);
    let store = writer.as_reader();
    runtime.spawn(async move {
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            // Nothing the agent reads is in the server-side-apply bookkeeping or in kubectl's
            // copy of the last applied object; in a large cluster they are most of the bytes.
            .modify(|object: &mut K| {
                object.meta_mut().managed_fields = None;
                if let Some(a) = object.meta_mut().annotations.as_mut() {
                    a.remove("kubectl.kubernetes.io/last-applied-configuration");
                }
            })
            .reflect(writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    note(&health, &event);
                    health.last_event_ns.store(now_ns(), Ordering::Relaxed);
                    health.dirty.store(true, Ordering::Relaxed);
                    let _ = tx.try_send(());
                }
                Err(e) => {
                    health.errors.fetch_add(1, Ordering::Relaxed);
                    let text = format!("watching {kind}: {e}");
                    tracing::warn!("{text}");
                    if let Ok(mut last) = health.last_error.lock() {
                        *last = text;
                    }
                }
            }
        }
    });
    store
}

fn named_ports(pod: &Pod) -> Vec<NamedPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").parse().ok()?,
            })
        })
        .collect()
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_ref().and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

fn is_gone(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
}

impl KubeSource {
    /// Asks the API server which `cilium.io/v2` policy kinds it serves (waits up to 10 s), then
    /// starts the watches on `runtime`. Call it from outside the runtime.
    pub fn start(runtime: &tokio::runtime::Handle, client: Client, node: &str) -> KubeSource {
        let cilium = runtime.block_on(discover_cilium(&client));
        match &cilium {
            CiliumKinds::Unknown(_) => tracing::warn!("{cilium}"),
            _ => tracing::info!("{cilium}"),
        }
        let health = Arc::new(Health::default());
        let (tx, changes) = crossbeam::channel::bounded(1);
        let stores = Stores {
            pods: spawn_watch(
                runtime,
                Api::all(client.clone()),
                health.clone(),
                tx.clone(),
                note_pod_event,
                (),
            ),
            namespaces: spawn_watch(
                runtime,
                Api::all(client.clone()),
                health.clone(),
                tx.clone(),
                note_other_event,
                (),
            ),
            netpols: spawn_watch(
                runtime,
                Api::all(client.clone()),
                health.clone(),
                tx.clone(),
                note_other_event,
                (),
            ),
            sluice: spawn_watch(
                runtime,
                Api::all(client.clone()),
                health.clone(),
                tx.clone(),
                note_other_event,
                (),
            ),
            sluice_cluster: spawn_watch(
                runtime,
                Api::all(client.clone()),
                health.clone(),
                tx.clone(),
                note_other_event,
                (),
            ),
            cilium: None,
            cilium_cluster: None,
        };
        let mut stores = stores;
        if let CiliumKinds::Watched(kinds) = &cilium {
            for kind in kinds {
                let (plural, namespaced) = match *kind {
                    "CiliumNetworkPolicy" => (CNP_PLURAL, true),
                    _ => (CCNP_PLURAL, false),
                };
                let resource = cilium_resource(kind, plural);
                let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                let store = spawn_watch(
                    runtime,
                    api,
                    health.clone(),
                    tx.clone(),
                    note_other_event,
                    resource,
                );
                if namespaced {
                    stores.cilium = Some(store);
                } else {
                    stores.cilium_cluster = Some(store);
                }
            }
        }
        let (ready_stores, ready_health) = (stores.clone(), Arc::clone(&health));
        runtime.spawn(async move {
            let tx = tx;
            let _ = ready_stores.pods.wait_until_ready().await;
            let _ = ready_stores.namespaces.wait_until_ready().await;
            let _ = ready_stores.netpols.wait_until_ready().await;
            let _ = ready_stores.sluice.wait_until_ready().await;
            let _ = ready_stores.sluice_cluster.wait_until_ready().await;
            for store in [&ready_stores.cilium, &ready_stores.cilium_cluster]
                .into_iter()
                .flatten()
            {
                let _ = store.wait_until_ready().await;
            }
            ready_health.full.store(true, Ordering::SeqCst);
            ready_health.ready.store(true, Ordering::SeqCst);
            ready_health.dirty.store(true, Ordering::SeqCst);
            // Wake the controller now: the last list's own event may have come before
            // `ready`, and the next periodic look is up to 2 s away.
            let _ = tx.try_send(());
        });
        KubeSource {
            node: node.to_owned(),
            client,
            runtime: runtime.clone(),
            stores,
            health,
            changes,
            written: Arc::new(Mutex::new(BTreeMap::new())),
            cilium,
            parsed: Mutex::new(BTreeMap::new()),
        }
    }

    /// The `cilium.io/v2` policy kinds found at start (and so watched, or not).
    pub fn cilium(&self) -> &CiliumKinds {
        &self.cilium
    }

    /// Whether every watch has listed its objects once (before that, the agent applies
    /// nothing and the dataplane keeps what it had).
    pub fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::SeqCst)
    }

    /// Waits until [`is_ready`](Self::is_ready), at most `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.is_ready() {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the Kubernetes watches did not list their objects within {} s: {}",
                    timeout.as_secs(),
                    self.errors().1
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Change notifications (at most one pending).
    pub fn changes(&self) -> crossbeam::channel::Receiver<()> {
        self.changes.clone()
    }

    /// Whether an event arrived since the last call.
    pub fn take_dirty(&self) -> bool {
        self.health.dirty.swap(false, Ordering::Relaxed)
    }

    /// What changed since the last call: nothing, only some pods (the common case: a pod
    /// scheduled, started or deleted), or something that needs the whole desired state.
    pub fn take_changes(&self) -> KubeChanges {
        self.health.dirty.store(false, Ordering::Relaxed);
        let pods = self
            .health
            .pods
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        if self.health.full.swap(false, Ordering::SeqCst) {
            KubeChanges::Full
        } else if pods.is_empty() {
            KubeChanges::None
        } else {
            KubeChanges::Pods(pods)
        }
    }

    /// Brings `desired` (built by [`desired`](Self::desired) and kept up to date by this
    /// function) in line with the stores for the touched pods only.
    pub fn update_pods(&self, touched: &[PodTouch], desired: &mut Desired) -> PodUpdate {
        let mut update = PodUpdate::default();
        for t in touched {
            let key = (t.namespace.clone(), t.name.clone());
            let current = self
                .stores
                .pods
                .get(&reflector::ObjectRef::new(&t.name).within(&t.namespace));
            let entry = current.as_deref().and_then(|pod| self.pod_entry(pod));
            // The touched UID's remote entry: replaced or gone.
            match entry {
                Some(PodEntry::Remote(uid, workload)) => {
                    if uid != t.uid && desired.remote.remove(&t.uid).is_some() {
                        update.remote.push(t.uid.clone());
                    }
                    if desired.remote.get(&uid) != Some(&workload) {
                        desired.remote.insert(uid.clone(), workload);
                        update.remote.push(uid);
                    }
                    if desired.awaiting_cni.remove(&key).is_some() {
                        desired
                            .origins
                            .remove(&format!("Endpoint {}/{}", t.namespace, t.name));
                        update.local = true;
                    }
                }
                Some(PodEntry::Local(spec)) => {
                    if desired.remote.remove(&t.uid).is_some() {
                        update.remote.push(t.uid.clone());
                    }
                    if desired.awaiting_cni.get(&key) != Some(&spec) {
                        desired.origins.insert(
                            format!("Endpoint {}/{}", t.namespace, t.name),
                            format!("Pod {}/{}", t.namespace, t.name),
                        );
                        desired.awaiting_cni.insert(key, spec);
                        update.local = true;
                    }
                }
                None => {
                    if desired.remote.remove(&t.uid).is_some() {
                        update.remote.push(t.uid.clone());
                    }
                    // Only the touched pod's own entry goes: a pod of the same name created
                    // since (another UID) keeps its place.
                    let own = current.is_none()
                        || desired
                            .awaiting_cni
                            .get(&key)
                            .is_some_and(|s| s.uid == t.uid);
                    if own && desired.awaiting_cni.remove(&key).is_some() {
                        desired
                            .origins
                            .remove(&format!("Endpoint {}/{}", t.namespace, t.name));
                        update.local = true;
                    }
                }
            }
        }
        update.remote.sort();
        update.remote.dedup();
        update
    }

    /// How long since the last watch event or list (`None` before the first).
    pub fn staleness(&self) -> Option<Duration> {
        match self.health.last_event_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_nanos(now_ns().saturating_sub(t))),
        }
    }

    /// Watch errors so far, and the last one.
    pub fn errors(&self) -> (u64, String) {
        (
            self.health.errors.load(Ordering::Relaxed),
            self.health
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        )
    }

    /// The node this agent runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The desired state from the stores; writes policy status conditions that changed.
    pub fn desired(&self) -> Desired {
        let mut d = Desired::default();
        for ns in self.stores.namespaces.state() {
            d.namespaces.insert(ns.name_any(), ns.labels().clone());
        }
        for pod in self.stores.pods.state() {
            match self.pod_entry(&pod) {
                Some(PodEntry::Local(spec)) => {
                    let (namespace, name) = (spec.namespace.clone(), spec.name.clone());
                    d.origins.insert(
                        format!("Endpoint {namespace}/{name}"),
                        format!("Pod {namespace}/{name}"),
                    );
                    d.awaiting_cni.insert((namespace, name), spec);
                }
                Some(PodEntry::Remote(uid, workload)) => {
                    d.remote.insert(uid, workload);
                }
                None => {}
            }
        }
        let mut parsed: Vec<(
            String,
            Option<i64>,
            Result<identity_cache::policy::Policy, String>,
        )> = Vec::new();
        for np in self.stores.netpols.state() {
            let origin = format!(
                "NetworkPolicy {}/{}",
                np.namespace().unwrap_or_default(),
                np.name_any()
            );
            let result = self.parse_cached(&*np, || {
                let mut doc = serde_json::to_value(&*np).unwrap_or(Value::Null);
                doc["apiVersion"] = json!("networking.k8s.io/v1");
                doc["kind"] = json!("NetworkPolicy");
                doc
            });
            parsed.push((origin, None, result));
        }
        for sp in self.stores.sluice.state() {
            let origin = format!(
                "SluicePolicy {}/{}",
                sp.namespace().unwrap_or_default(),
                sp.name_any()
            );
            let result = self.parse_cached(&*sp, || {
                json!({
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumNetworkPolicy",
                    "metadata": {"name": sp.name_any(), "namespace": sp.namespace()},
                    "spec": sp.spec.rules,
                })
            });
            let ns = sp.namespace().unwrap_or_default();
            self.write_status(
                Api::<SluicePolicy>::namespaced(self.client.clone(), &ns),
                format!("SluicePolicy/{ns}/{}", sp.name_any()),
                sp.meta().generation,
                &result,
                sp.status.as_ref(),
            );
            parsed.push((origin, sp.meta().generation, result));
        }
        for sp in self.stores.sluice_cluster.state() {
            let origin = format!("SluiceClusterPolicy {}", sp.name_any());
            let result = self.parse_cached(&*sp, || {
                json!({
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumClusterwideNetworkPolicy",
                    "metadata": {"name": sp.name_any()},
                    "spec": sp.spec.rules,
                })
            });
            self.write_status(
                Api::<SluiceClusterPolicy>::all(self.client.clone()),
                format!("SluiceClusterPolicy/{}", sp.name_any()),
                sp.meta().generation,
                &result,
                sp.status.as_ref(),
            );
            parsed.push((origin, sp.meta().generation, result));
        }
        // Cilium's own objects: parsed as they are, never written to.
        for (store, kind) in [
            (&self.stores.cilium, "CiliumNetworkPolicy"),
            (
                &self.stores.cilium_cluster,
                "CiliumClusterwideNetworkPolicy",
            ),
        ] {
            for object in store.iter().flat_map(|s| s.state()) {
                let origin = match object.namespace() {
                    Some(ns) => format!("{kind} {ns}/{}", object.name_any()),
                    None => format!("{kind} {}", object.name_any()),
                };
                let result = self.parse_cached(&*object, || {
                    let mut doc = object.data.clone();
                    match doc.as_object_mut() {
                        // Cilium's status is Cilium's; the parser reads the spec(s).
                        Some(fields) => {
                            fields.remove("status");
                        }
                        None => doc = json!({}),
                    }
                    doc["apiVersion"] = json!("cilium.io/v2");
                    doc["kind"] = json!(kind);
                    doc["metadata"] =
                        json!({"name": object.name_any(), "namespace": object.namespace()});
                    doc
                });
                parsed.push((origin, object.meta().generation, result));
            }
        }
        if let Ok(mut cache) = self.parsed.lock() {
            let cilium_uids: Vec<String> = [&self.stores.cilium, &self.stores.cilium_cluster]
                .into_iter()
                .flatten()
                .flat_map(|s| s.state())
                .filter_map(|o| o.uid())
                .collect();
            let live: std::collections::BTreeSet<String> = self
                .stores
                .netpols
                .state()
                .iter()
                .filter_map(|o| o.uid())
                .chain(self.stores.sluice.state().iter().filter_map(|o| o.uid()))
                .chain(
                    self.stores
                        .sluice_cluster
                        .state()
                        .iter()
                        .filter_map(|o| o.uid()),
                )
                .chain(cilium_uids)
                .collect();
            cache.retain(|uid, _| live.contains(uid));
        }
        for (origin, _, result) in parsed {
            match result {
                Ok(policy) => {
                    let id = format!("{:?} {}", policy.key.kind, policy.key);
                    if let Some(first) = d.origins.get(&id) {
                        d.rejected.push(Rejection {
                            origin: origin.clone(),
                            line: None,
                            reason: format!("{id} is already defined by {first}; ignored"),
                        });
                        continue;
                    }
                    d.origins.insert(id, origin);
                    d.policies.insert(policy.key.clone(), policy);
                }
                Err(reason) => d.rejected.push(Rejection {
                    origin,
                    line: None,
                    reason,
                }),
            }
        }
        d
    }

    /// Where `pod` belongs in the desired state, if anywhere (not when it is terminating,
    /// finished, on the host network, or on another node without an address yet).
    fn pod_entry(&self, pod: &Pod) -> Option<PodEntry> {
        if is_gone(pod) || pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            return None;
        }
        let ips = pod_ips(pod);
        let (uid, namespace) = (pod.uid()?, pod.namespace()?);
        let name = pod.name_any();
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let local = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.node);
        if local {
            Some(PodEntry::Local(EndpointSpec {
                namespace,
                name,
                uid,
                labels: pod.labels().clone(),
                service_account,
                interface: String::new(),
                ips,
                mac: [0; 6],
                ports: named_ports(pod),
                mode: EndpointMode::Enforce,
                init: false,
            }))
        } else if !ips.is_empty() {
            Some(PodEntry::Remote(
                uid,
                RemoteWorkload {
                    namespace,
                    name,
                    labels: pod.labels().clone(),
                    service_account,
                    ips,
                    ports: named_ports(pod),
                },
            ))
        } else {
            None
        }
    }

    /// Writes the `Accepted` condition of a sluice policy object through `api` when it differs
    /// from what the object shows (and from what this agent wrote last).
    fn write_status<K>(
        &self,
        api: Api<K>,
        key: String,
        generation: Option<i64>,
        result: &Result<identity_cache::policy::Policy, String>,
        current: Option<&PolicyStatus>,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (status, reason, message) = match result {
            Ok(_) => ("True", "Valid", "the policy is enforced".to_owned()),
            Err(why) => ("False", "InvalidPolicy", why.clone()),
        };
        let shown = current
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"))
            .map(|c| (c.observed_generation, c.status.clone(), c.message.clone()));
        let want = (generation, status.to_owned(), message.clone());
        if shown.as_ref() == Some(&want) {
            return;
        }
        {
            let Ok(mut written) = self.written.lock() else {
                return;
            };
            if written.get(&key) == Some(&want) {
                return;
            }
            written.insert(key.clone(), want);
        }
        let condition = Condition {
            type_: "Accepted".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
        };
        let name = key.rsplit('/').next().unwrap_or_default().to_owned();
        let body = json!({"status": PolicyStatus { conditions: vec![condition] }});
        self.runtime.spawn(async move {
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                tracing::warn!("writing the status of {name}: {e}");
            }
        });
    }
}

impl KubeSource {
    /// The parse of the document `doc` makes, from the cache when the object has not changed
    /// since (the document is then not even built).
    fn parse_cached<K: Resource>(&self, object: &K, doc: impl FnOnce() -> Value) -> ParseResult {
        let (Some(uid), Some(version)) = (object.uid(), object.resource_version()) else {
            return parse_policy(&doc());
        };
        if let Ok(cache) = self.parsed.lock()
            && let Some((v, result)) = cache.get(&uid)
            && *v == version
        {
            return result.clone();
        }
        let result = parse_policy(&doc());
        if let Ok(mut cache) = self.parsed.lock() {
            cache.insert(uid, (version, result.clone()));
        }
        result
    }
}

fn parse_policy(doc: &Value) -> Result<identity_cache::policy::Policy, String> {
    let text = serde_json::to_string(doc).map_err(|e| e.to_string())?;
    match parse_document_at(&text, 1, 1) {
        Ok(ParsedManifest::Policy(p)) => Ok(p),
        Ok(ParsedManifest::Empty) => Err("empty policy".into()),
        Err(e) => Err(format!("{}: {}", e.path, e.kind)),
    }
}
