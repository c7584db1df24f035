//! The agent's controller: the one thread that owns the identity cache, the XDP dataplane and
//! the fast-path workers. It applies the source's desired state, keeps the BPF maps and the
//! workers current, watches worker health, collects flows, and answers queries.
//!
//! Order of changes (so that enforcement never lapses and no packet is judged by a stale
//! identity):
//! - a new endpoint: identity and policy published, BPF maps synced, *then* the XDP program
//!   attached to its interface (the kernel path enforces from its first packet), then the
//!   workers restarted to serve it (the kernel path enforces meanwhile);
//! - a removed or re-labelled endpoint: published, then the revocation barrier (every worker
//!   past the snapshot that still held the old identity), then the maps synced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath::socket::PortSpec;
use fastpath::supervisor::{FastPath, HealthEvent, WorkerState};
use fastpath::worker::{Command, WorkerConfig};
use identity_cache::identity::{ClusterKey, Identity, ReservedIdentity, derive_identity};
use identity_cache::ipcache::Source as IpSource;
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{Action, PolicyKey};
use identity_cache::protocol::Protocol;
use identity_cache::state::{Enforce, IdentityCache, LocalAttachment, PeerRef, Workload};
use identity_cache::tables::EnforcementConfig;
use identity_cache::verdict::DirectionVerdict;
use xdp_redirect::ipcache_map::InterfaceFacts;
use xdp_redirect::loader::{DatapathSettings, Dataplane, EventStream};

use super::config::{AgentConfig, DatapathMode};
use super::enrich::{Directory, identity_labels, policy_ref};
use super::hub::FlowHub;
use crate::api::{
    CniAttachment, EndpointStatus, IdentityEntry, MapStatus, PolicyStatus, Rejection, Request,
    Response, StatusReport, TraceDirection, TracePeer, TraceRequest, TraceResult, WorkerStatus,
};
use crate::source::kube::KubeChanges;
use crate::source::{Desired, EndpointMode, EndpointSpec, RemoteWorkload, Source};

/// Messages to the controller.
pub enum ControlMsg {
    /// A query from the local API; the answer goes back on the channel.
    Query(Box<Request>, tokio::sync::oneshot::Sender<Response>),
    /// The Prometheus exposition.
    Metrics(tokio::sync::oneshot::Sender<String>),
    /// Stop.
    Shutdown,
}

/// Host-side facts of the endpoints' interfaces, for the BPF maps.
#[derive(Default)]
struct Facts {
    host_mac: BTreeMap<u32, [u8; 6]>,
    kernel_mode: BTreeSet<u32>,
}

impl InterfaceFacts for Facts {
    fn host_mac(&self, ifindex: u32) -> [u8; 6] {
        self.host_mac.get(&ifindex).copied().unwrap_or_default()
    }
    fn kernel_mode(&self, ifindex: u32) -> bool {
        self.kernel_mode.contains(&ifindex)
    }
}

/// An endpoint as applied.
struct Applied {
    spec: EndpointSpec,
    ifindex: u32,
    identity: Identity,
    namespace_labels: BTreeMap<String, String>,
}

/// A pod on another node as applied: the pod, and its namespace's labels then (they are part
/// of its identity too).
#[derive(Clone, Debug, PartialEq)]
struct AppliedRemote {
    pod: RemoteWorkload,
    namespace_labels: BTreeMap<String, String>,
}

/// Counters the metrics report besides the workers' own.
#[derive(Default)]
struct Totals {
    policy_hits: BTreeMap<String, u64>,
    kernel_events: u64,
    health_events: u64,
}

/// The controller's state.
pub struct Controller {
    config: AgentConfig,
    source: Source,
    cache: IdentityCache,
    plane: Dataplane,
    fast: Option<FastPath>,
    kernel_events: Option<EventStream>,
    applied: BTreeMap<(String, String), Applied>,
    policies: BTreeMap<PolicyKey, (String, identity_cache::policy::Policy)>,
    rejected: Vec<Rejection>,
    apply_rejected: Vec<Rejection>,
    /// Pods on other nodes refused by the identity cache, by UID (kept apart so that an
    /// incremental update can settle one pod's refusal without the others).
    remote_rejected: BTreeMap<String, Rejection>,
    /// The desired state was read whole at least once (incremental updates build on it).
    have_desired: bool,
    facts: Facts,
    hub: Arc<FlowHub>,
    started: Instant,
    last_sync: Instant,
    served: BTreeSet<u32>,
    /// Per-core statistics of workers stopped by a restart, so the latency report covers the
    /// agent's whole run.
    retired: BTreeMap<usize, perf::CoreStats>,
    /// Pods on other nodes as applied, by UID.
    remote: BTreeMap<String, AppliedRemote>,
    /// Pods the CNI plugin attached, by (namespace, name).
    cni: BTreeMap<(String, String), CniAttachment>,
    /// The source's desired state as last read (CNI requests are merged into it).
    desired: Desired,
    totals: Totals,
    boot_ns: u64,
}

fn ifindex_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => None,
        n => Some(n),
    }
}

fn ifname_of(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf, which we own.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Nanoseconds between CLOCK_MONOTONIC's zero and the Unix epoch now (to date kernel events).
fn monotonic_to_realtime_offset() -> u64 {
    let mono = fastpath::worker::now_monotonic_ns();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    real.saturating_sub(mono)
}

/// Adds a worker's statistics to those of its core (periods of one core add up).
fn merge_core(cores: &mut BTreeMap<usize, perf::CoreStats>, stats: perf::CoreStats) {
    match cores.get_mut(&stats.core) {
        Some(total) => {
            let elapsed = total.elapsed_ns + stats.elapsed_ns;
            total.merge(&stats);
            total.elapsed_ns = elapsed;
            total.name = stats.name;
        }
        None => {
            cores.insert(stats.core, stats);
        }
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The XDP program could not be loaded.
    #[error("loading the XDP program (pins in {pin_dir}): {source}")]
    Load {
        /// Pin directory.
        pin_dir: String,
        /// The loader's error.
        source: Box<xdp_redirect::loader::LoaderError>,
    },
}

impl Controller {
    /// Loads (or re-adopts) the dataplane; identities are derived with `identity_key`.
    pub fn new(
        config: AgentConfig,
        hub: Arc<FlowHub>,
        source: Source,
        identity_key: ClusterKey,
    ) -> Result<Controller, ControllerError> {
        let settings = DatapathSettings {
            fail_open: config.fail_open,
            events_for_allowed: true,
            ..DatapathSettings::default()
        };
        let mut plane =
            Dataplane::open(&config.pin_dir, settings).map_err(|e| ControllerError::Load {
                pin_dir: config.pin_dir.display().to_string(),
                source: Box::new(e),
            })?;
        let kernel_events = match plane.take_events() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("kernel-path flow events unavailable: {e}");
                None
            }
        };
        Ok(Controller {
            cache: IdentityCache::new(identity_key, EnforcementConfig::default()),
            source,
            plane,
            fast: None,
            kernel_events,
            applied: BTreeMap::new(),
            policies: BTreeMap::new(),
            rejected: Vec::new(),
            apply_rejected: Vec::new(),
            remote_rejected: BTreeMap::new(),
            have_desired: false,
            facts: Facts::default(),
            hub,
            started: Instant::now(),
            last_sync: Instant::now(),
            served: BTreeSet::new(),
            cni: BTreeMap::new(),
            remote: BTreeMap::new(),
            retired: BTreeMap::new(),
            desired: Desired::default(),
            totals: Totals::default(),
            boot_ns: monotonic_to_realtime_offset(),
            config,
        })
    }

    /// Runs until [`ControlMsg::Shutdown`] or the channel closes.
    pub fn run(mut self, inbox: crossbeam::channel::Receiver<ControlMsg>) {
        let watch = self.source.changes();
        self.reconcile(true);
        let mut last_scan = Instant::now();
        let tick = Duration::from_millis(50);
        // Without notifications the source is only rescanned; a channel that never fires
        // stands in for the missing one.
        let (_never_tx, never) = crossbeam::channel::bounded::<()>(1);
        let changes = watch.as_ref().unwrap_or(&never);
        let settle = self.source.settle_time();
        loop {
            let mut changed = false;
            crossbeam::channel::select! {
                recv(inbox) -> msg => match msg {
                    Ok(ControlMsg::Shutdown) | Err(_) => break,
                    Ok(ControlMsg::Query(request, reply)) => {
                        let _ = reply.send(self.answer(*request));
                    }
                    Ok(ControlMsg::Metrics(reply)) => {
                        let _ = reply.send(self.metrics());
                    }
                },
                recv(changes) -> _ => changed = true,
                default(tick) => {}
            }
            changed |= changes.try_recv().is_ok();
            if changed || last_scan.elapsed() >= Duration::from_secs(2) {
                if changed && !settle.is_zero() {
                    // Let an editor finish writing (several events per save).
                    std::thread::sleep(settle);
                    while changes.try_recv().is_ok() {}
                }
                last_scan = Instant::now();
                self.reconcile(false);
            }
            self.health();
            self.collect_flows();
        }
        self.shutdown();
    }

    fn shutdown(mut self) {
        if let Some(mut fast) = self.fast.take() {
            // Unsteered first: the in-kernel path enforces their queues from here on.
            fast.stop(&mut self.plane);
        }
        if self.config.detach_on_exit {
            match self.plane.destroy() {
                Ok(()) => tracing::info!("XDP program detached and pins removed"),
                Err(e) => tracing::error!("detaching: {e}"),
            }
        } else {
            tracing::info!(
                "leaving the XDP program attached: the in-kernel path enforces until the next \
                 agent takes over (pins in {})",
                self.config.pin_dir.display()
            );
        }
    }

    /// Reads the source and applies what changed.
    fn reconcile(&mut self, force: bool) {
        if !self.source.is_ready() {
            // Nothing is applied before the source has its complete state: the dataplane
            // keeps enforcing what it had (pinned maps from a previous agent included).
            return;
        }
        let changes = self.source.take_changes();
        let unresolved = self
            .apply_rejected
            .iter()
            .any(|r| r.reason.contains("interface"));
        match changes {
            KubeChanges::Pods(touched) if self.have_desired && !force => {
                // Only pods changed: the desired state is updated for them alone, and pods on
                // other nodes are applied alone (this node's endpoints take the whole diff).
                let update = self.source.update_pods(&touched, &mut self.desired);
                if update.local || unresolved {
                    self.apply();
                } else if !update.remote.is_empty() {
                    self.apply_remote(&update.remote);
                }
            }
            KubeChanges::None if !(force || unresolved) => {}
            KubeChanges::None if self.have_desired => self.apply(),
            _ => {
                self.desired = self.source.desired();
                self.have_desired = true;
                self.apply();
            }
        }
    }

    /// The endpoints to enforce: the source's, with the CNI plugin's attachments filled in
    /// (the runtime knows where a pod is attached); a pod attached before any source described
    /// it gets the reserved `init` identity.
    fn endpoints_with_cni(&self, desired: &Desired) -> BTreeMap<(String, String), EndpointSpec> {
        let mut endpoints = desired.endpoints.clone();
        for (key, att) in &self.cni {
            let base = endpoints
                .get(key)
                .or_else(|| desired.awaiting_cni.get(key))
                .cloned();
            let mut spec = base.unwrap_or_else(|| EndpointSpec {
                namespace: att.namespace.clone(),
                name: att.pod.clone(),
                uid: att
                    .uid
                    .clone()
                    .unwrap_or_else(|| format!("cni:{}", att.container_id)),
                labels: BTreeMap::new(),
                service_account: "default".into(),
                interface: String::new(),
                ips: Vec::new(),
                mac: [0; 6],
                ports: Vec::new(),
                mode: EndpointMode::Enforce,
                init: true,
            });
            spec.interface = att.interface.clone();
            spec.ips = att.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            spec.mac = crate::source::files::parse_mac(&att.mac).unwrap_or_default();
            endpoints.insert(key.clone(), spec);
        }
        endpoints
    }

    /// Carries out a CNI request: records the attachment, applies, and reports the endpoint
    /// as programmed (or why it is not).
    fn cni_add(&mut self, att: CniAttachment) -> Response {
        let key = (att.namespace.clone(), att.pod.clone());
        if att.ips.iter().any(|ip| ip.parse::<IpAddr>().is_err())
            || crate::source::files::parse_mac(&att.mac).is_none()
        {
            return Response::Error {
                message: format!(
                    "CNI ADD for {}/{}: bad addresses {:?} or MAC {:?}",
                    att.namespace, att.pod, att.ips, att.mac
                ),
            };
        }
        self.cni.insert(key.clone(), att);
        self.apply();
        self.cni_check(&key)
    }

    fn cni_check(&mut self, key: &(String, String)) -> Response {
        let programmed = self
            .applied
            .get(key)
            .is_some_and(|a| self.plane.attachments().any(|(i, _)| i == a.ifindex));
        if programmed {
            let status = self.status();
            let ep = status
                .endpoints
                .into_iter()
                .find(|e| e.namespace == key.0 && e.name == key.1);
            return Response::Cni(ep.map(Box::new));
        }
        let why: Vec<String> = self
            .rejected
            .iter()
            .filter(|r| {
                r.reason.contains(&format!("{}/{}", key.0, key.1)) || r.origin.contains(&key.1)
            })
            .map(|r| r.reason.clone())
            .collect();
        Response::Error {
            message: format!(
                "endpoint {}/{} is not programmed{}",
                key.0,
                key.1,
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.join("; "))
                }
            ),
        }
    }

    fn workload_of(
        &self,
        spec: &EndpointSpec,
        ns_labels: &BTreeMap<String, String>,
        ifindex: u32,
    ) -> Workload {
        Workload {
            uid: spec.uid.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            labels: if spec.init {
                ReservedIdentity::Init.labels()
            } else {
                workload_labels(
                    &WorkloadMeta {
                        namespace: &spec.namespace,
                        pod_labels: Some(&spec.labels),
                        namespace_labels: Some(ns_labels),
                        service_account: Some(&spec.service_account),
                        cluster: Some("default"),
                    },
                    &LabelFilter::default(),
                )
            },
            ips: spec.ips.clone(),
            named_ports: spec.ports.clone(),
            source: IpSource::File,
            local: Some(LocalAttachment {
                ifindex,
                mac: spec.mac,
            }),
        }
    }

    fn apply(&mut self) {
        let desired = std::mem::take(&mut self.desired);
        self.apply_desired(&desired);
        self.desired = desired;
    }

    fn apply_desired(&mut self, desired: &Desired) {
        let endpoints = self.endpoints_with_cni(desired);
        let mut rejected = Vec::new();
        let mut revoked = false;

        // Policies.
        let stale: Vec<PolicyKey> = self
            .policies
            .keys()
            .filter(|k| !desired.policies.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            self.cache.remove_policy(&key);
            self.policies.remove(&key);
            revoked = true;
        }
        for (key, policy) in &desired.policies {
            let origin = desired
                .origins
                .get(&format!("{:?} {}", key.kind, key))
                .cloned()
                .unwrap_or_default();
            // Re-applying an unchanged policy is cheap but not free: skip it.
            let known = self
                .policies
                .get(key)
                .is_some_and(|(o, p)| *o == origin && p == policy);
            if !known {
                self.cache.upsert_policy(policy.clone());
                self.policies.insert(key.clone(), (origin, policy.clone()));
                revoked = true;
            }
        }

        // Pods on other nodes: ipcache entries, owner-checked by pod UID.
        let stale: Vec<String> = self
            .remote
            .keys()
            .filter(|uid| !desired.remote.contains_key(*uid))
            .cloned()
            .collect();
        self.remote_rejected
            .retain(|uid, _| desired.remote.contains_key(uid));
        for uid in stale {
            revoked |= self.apply_remote_pod(&uid, desired);
        }
        for uid in desired.remote.keys() {
            revoked |= self.apply_remote_pod(uid, desired);
        }

        // Endpoints gone, or moved to another interface / identity.
        let gone: Vec<(String, String)> = self
            .applied
            .keys()
            .filter(|k| !endpoints.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(a) = self.applied.remove(&key) {
                self.cache.remove_workload(&a.spec.uid);
                revoked = true;
            }
        }
        for (key, spec) in &endpoints {
            let ns_labels = desired
                .namespaces
                .get(&spec.namespace)
                .cloned()
                .unwrap_or_default();
            let Some(ifindex) = ifindex_of(&spec.interface) else {
                rejected.push(Rejection {
                    origin: desired
                        .origins
                        .get(&format!("Endpoint {}/{}", spec.namespace, spec.name))
                        .cloned()
                        .unwrap_or_default(),
                    line: None,
                    reason: format!(
                        "Endpoint {}/{}: spec.interface: no interface {} on this node (retried \
                         every 2 s)",
                        spec.namespace, spec.name, spec.interface
                    ),
                });
                if let Some(a) = self.applied.remove(key) {
                    self.cache.remove_workload(&a.spec.uid);
                    revoked = true;
                }
                continue;
            };
            let unchanged = self.applied.get(key).is_some_and(|a| {
                a.spec == *spec && a.ifindex == ifindex && a.namespace_labels == ns_labels
            });
            if unchanged {
                continue;
            }
            if let Some(old) = self.applied.get(key)
                && old.spec.uid != spec.uid
            {
                self.cache.remove_workload(&old.spec.uid);
            }
            let workload = self.workload_of(spec, &ns_labels, ifindex);
            match self.cache.upsert_workload(workload) {
                Ok(identity) => {
                    if self
                        .applied
                        .get(key)
                        .is_some_and(|a| a.identity != identity)
                    {
                        revoked = true;
                    }
                    self.applied.insert(
                        key.clone(),
                        Applied {
                            spec: spec.clone(),
                            ifindex,
                            identity,
                            namespace_labels: ns_labels,
                        },
                    );
                }
                Err(e) => rejected.push(Rejection {
                    origin: spec.interface.clone(),
                    line: None,
                    reason: format!("Endpoint {}/{}: {e}", spec.namespace, spec.name),
                }),
            }
        }

        // Interface facts, then publication (revocations wait for every worker to move past
        // the old snapshot) and the maps, then attachments.
        self.facts = Facts::default();
        for a in self.applied.values() {
            let mac = fastpath::socket::interface_mac(&a.spec.interface).unwrap_or_default();
            self.facts.host_mac.insert(a.ifindex, mac);
            if a.spec.mode == EndpointMode::Kernel || self.config.datapath == DatapathMode::Kernel {
                self.facts.kernel_mode.insert(a.ifindex);
            }
        }
        if let Err(reason) = self.publish_and_sync(revoked, None) {
            rejected.push(Rejection {
                origin: "dataplane".into(),
                line: None,
                reason,
            });
        }
        let wanted: BTreeSet<u32> = self.applied.values().map(|a| a.ifindex).collect();
        let attached: BTreeSet<u32> = self.plane.attachments().map(|(i, _)| i).collect();
        for &ifindex in wanted.difference(&attached) {
            match self.plane.attach(ifindex) {
                Ok(mode) => tracing::info!("XDP attached to {} ({mode})", ifname_of(ifindex)),
                Err(e) => rejected.push(Rejection {
                    origin: ifname_of(ifindex),
                    line: None,
                    reason: format!("cannot attach the XDP program: {e}"),
                }),
            }
        }
        for &ifindex in attached.difference(&wanted) {
            if let Err(e) = self.plane.detach(ifindex) {
                tracing::warn!("detaching from {}: {e}", ifname_of(ifindex));
            }
        }

        self.restart_workers_if_needed();
        for a in self.applied.values() {
            if let Some(fast) = &self.fast {
                fast.broadcast(&Command::SetAudit {
                    ifindex: a.ifindex,
                    audit: a.spec.mode == EndpointMode::Audit,
                });
            }
        }

        self.apply_rejected = rejected;
        self.collect_rejected(desired);
    }

    /// Everything refused: the source's, the endpoints', the remote pods'. Logged when it
    /// changes.
    fn collect_rejected(&mut self, desired: &Desired) {
        let mut all = desired.rejected.clone();
        all.extend(self.apply_rejected.iter().cloned());
        all.extend(self.remote_rejected.values().cloned());
        if all != self.rejected {
            for r in all.iter().filter(|r| !self.rejected.contains(r)) {
                tracing::warn!(origin = %r.origin, line = ?r.line, "rejected: {}", r.reason);
            }
        }
        self.rejected = all;
    }

    /// Brings one pod on another node in line with `desired`: upserts its ipcache entries,
    /// or removes them (owner-checked by UID) when it is no longer there. Whether an identity
    /// was revoked (the caller waits for the workers before the maps change).
    fn apply_remote_pod(&mut self, uid: &str, desired: &Desired) -> bool {
        let Some(pod) = desired.remote.get(uid) else {
            self.remote_rejected.remove(uid);
            if self.remote.remove(uid).is_some() {
                self.cache.remove_workload(uid);
                return true;
            }
            return false;
        };
        let no_labels = BTreeMap::new();
        let ns_labels = desired.namespaces.get(&pod.namespace).unwrap_or(&no_labels);
        let unchanged = self
            .remote
            .get(uid)
            .is_some_and(|a| a.pod == *pod && a.namespace_labels == *ns_labels);
        if unchanged {
            return false;
        }
        let ns_labels = ns_labels.clone();
        let previous = self.cache.workload_identity(uid);
        let workload = Workload {
            uid: uid.to_owned(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: workload_labels(
                &WorkloadMeta {
                    namespace: &pod.namespace,
                    pod_labels: Some(&pod.labels),
                    namespace_labels: Some(&ns_labels),
                    service_account: Some(&pod.service_account),
                    cluster: Some("default"),
                },
                &LabelFilter::default(),
            ),
            ips: pod.ips.clone(),
            named_ports: pod.ports.clone(),
            source: IpSource::ApiServer,
            local: None,
        };
        match self.cache.upsert_workload(workload) {
            Ok(identity) => {
                self.remote_rejected.remove(uid);
                self.remote.insert(
                    uid.to_owned(),
                    AppliedRemote {
                        pod: pod.clone(),
                        namespace_labels: ns_labels,
                    },
                );
                // A pod whose identity changed (its labels or its namespace's did) is revoked
                // from the old one.
                previous.is_some_and(|p| p != identity)
            }
            Err(e) => {
                self.remote_rejected.insert(
                    uid.to_owned(),
                    Rejection {
                        origin: format!("Pod {}/{}", pod.namespace, pod.name),
                        line: None,
                        reason: e.to_string(),
                    },
                );
                false
            }
        }
    }

    /// Applies changes to pods on other nodes only (the common event in a large cluster):
    /// their ipcache entries, then publication and the map sync. Endpoints, attachments and
    /// workers are untouched.
    fn apply_remote(&mut self, uids: &[String]) {
        let desired = std::mem::take(&mut self.desired);
        let mut revoked = false;
        let identities_before = self.cache.registry().len();
        let mut old_identities = Vec::new();
        let mut addresses = Vec::new();
        let mut refused = false;
        for uid in uids {
            if let Some(id) = self.cache.workload_identity(uid) {
                old_identities.push(id);
            }
            let before = self.remote.get(uid).map(|a| a.pod.ips.clone());
            revoked |= self.apply_remote_pod(uid, &desired);
            refused |= self.remote_rejected.contains_key(uid);
            addresses.extend(before.into_iter().flatten());
            addresses.extend(
                desired
                    .remote
                    .get(uid)
                    .into_iter()
                    .flat_map(|p| p.ips.clone()),
            );
        }
        // With the same identities in use (none came, none went), the compiled policy is
        // what the maps hold, and only these addresses' ipcache entries can differ.
        let same_identities = !refused
            && self.cache.registry().len() == identities_before
            && old_identities
                .iter()
                .all(|id| self.cache.registry().get(*id).is_some());
        let prefixes: Vec<ipnet::IpNet> = addresses.into_iter().map(ipnet::IpNet::from).collect();
        let synced = self.publish_and_sync(revoked, same_identities.then_some(&prefixes[..]));
        self.apply_rejected.retain(|r| r.origin != "dataplane");
        if let Err(reason) = synced {
            self.apply_rejected.push(Rejection {
                origin: "dataplane".into(),
                line: None,
                reason,
            });
        }
        self.collect_rejected(&desired);
        self.desired = desired;
    }

    /// Publishes the pending state (revocations wait for every worker to move past the old
    /// snapshot) and syncs the BPF maps with it: all of them, or only the ipcache entries of
    /// `only` when the caller knows nothing else changed. Whether the sync succeeded.
    fn publish_and_sync(
        &mut self,
        revoked: bool,
        only: Option<&[ipnet::IpNet]>,
    ) -> Result<(), String> {
        let generation = self.cache.publish();
        if revoked
            && let Err(e) = self
                .cache
                .wait_for_readers(generation, Duration::from_secs(1))
        {
            tracing::warn!("revocation barrier: {e}; the slow workers are checked by health");
        }
        let snapshot = self.cache.pending();
        let synced = match only {
            Some(prefixes) => self.plane.sync_ipcache(&snapshot, prefixes),
            None => self.plane.sync(&snapshot, &self.facts),
        };
        match synced {
            Ok(_) => {
                self.last_sync = Instant::now();
                Ok(())
            }
            Err(e) => {
                tracing::error!("syncing the BPF maps: {e}");
                Err(format!("BPF maps not synced: {e}"))
            }
        }
    }

    fn restart_workers_if_needed(&mut self) {
        let served: BTreeSet<u32> = if self.config.datapath == DatapathMode::Fastpath {
            self.applied
                .values()
                .filter(|a| a.spec.mode != EndpointMode::Kernel)
                .map(|a| a.ifindex)
                .collect()
        } else {
            BTreeSet::new()
        };
        if served == self.served && (self.fast.is_some() || served.is_empty()) {
            return;
        }
        if let Some(mut fast) = self.fast.take() {
            for handle in fast.workers() {
                if let Some(stats) = handle.stats().core() {
                    merge_core(&mut self.retired, stats);
                }
            }
            fast.stop(&mut self.plane);
        }
        self.served = served.clone();
        if served.is_empty() {
            return;
        }
        // A worker forwards only between its own sockets, so every worker needs a socket on
        // every served interface: worker w takes the queues q with q % workers == w, and
        // there are at most as many workers as the fewest queues any interface has (veths
        // have one by default: one worker serves them all).
        let queues = served
            .iter()
            .map(|&i| fastpath::socket::queue_count(&ifname_of(i)).unwrap_or(1))
            .min()
            .unwrap_or(1);
        let workers = self.config.cores.len().clamp(1, queues as usize);
        if workers < self.config.cores.len() {
            tracing::info!(
                "{} cores configured but the interfaces have {queues} queue(s): {workers} \
                 worker(s)",
                self.config.cores.len()
            );
        }
        let mut configs = Vec::with_capacity(workers);
        for w in 0..workers {
            let ports: Vec<PortSpec> = served
                .iter()
                .flat_map(|&ifindex| {
                    (0..queues)
                        .filter(move |q| *q as usize % workers == w)
                        .map(move |queue| PortSpec {
                            ifname: ifname_of(ifindex),
                            ifindex,
                            queue,
                        })
                })
                .collect();
            let mut config = WorkerConfig::new(w, ports);
            config.core = self.config.cores.get(w).copied();
            config.scheduling.realtime_priority =
                (self.config.realtime_priority > 0).then_some(self.config.realtime_priority);
            config.scheduling.busy_poll_rounds = self.config.busy_poll_rounds;
            // Validated with the rest of the configuration.
            if let Ok(rings) = fastpath::socket::RingSizes::with_ring(self.config.ring_size) {
                config.rings = rings;
            }
            config.batch_size = self.config.batch_size;
            config.events.drop_sample_every = self.config.drop_sample_every;
            config.audit = self
                .applied
                .values()
                .filter(|a| a.spec.mode == EndpointMode::Audit)
                .map(|a| a.ifindex)
                .collect();
            configs.push(config);
        }
        for a in self.applied.values() {
            if self.served.contains(&a.ifindex)
                && let Err(e) = fastpath::sched::enable_threaded_napi(&a.spec.interface)
            {
                tracing::debug!("{e}");
            }
        }
        match FastPath::start(configs, &self.cache, &mut self.plane) {
            Ok(fast) => {
                tracing::info!("fast path serving {} interfaces", self.served.len());
                self.fast = Some(fast);
            }
            Err(e) => {
                tracing::error!("fast path not started ({e}); the in-kernel path enforces");
                self.served.clear();
            }
        }
    }

    fn health(&mut self) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        for event in fast.check(&self.cache, &mut self.plane) {
            self.totals.health_events += 1;
            match &event {
                HealthEvent::Recovered { .. } | HealthEvent::Restarted { .. } => {
                    tracing::info!("worker health: {event:?}");
                }
                _ => tracing::error!("worker health: {event:?}; the in-kernel path enforces"),
            }
        }
    }

    fn collect_flows(&mut self) {
        let mut events = Vec::new();
        let mut lost = 0;
        if let Some(fast) = &self.fast {
            fast.drain_events(&mut events);
            lost += fast.workers().map(|w| w.events().lost()).sum::<u64>();
        }
        let mut kernel = Vec::new();
        if let Some(stream) = self.kernel_events.as_mut() {
            while let Some(e) = stream.next_event() {
                kernel.push(e);
                if kernel.len() >= 4096 {
                    break;
                }
            }
        }
        if events.is_empty() && kernel.is_empty() {
            return;
        }
        let snapshot = self.cache.pending();
        let directory = Directory {
            snapshot: &snapshot,
            registry: self.cache.registry(),
            interface_name: &ifname_of,
        };
        let mut records: Vec<_> = events.iter().map(|e| directory.from_fastpath(e)).collect();
        records.extend(
            kernel
                .iter()
                .map(|e| directory.from_kernel(e, e.timestamp_ns + self.boot_ns)),
        );
        self.totals.kernel_events += kernel.len() as u64;
        for r in &records {
            if let Some(p) = &r.policy {
                *self
                    .totals
                    .policy_hits
                    .entry(format!("{}|{}|{}", p.kind, p.namespace, p.name))
                    .or_default() += 1;
            }
        }
        records.sort_by_key(|r| r.time_ns);
        self.hub.set_lost(lost);
        self.hub.push_all(records);
    }

    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Trace(t) => match self.trace(&t) {
                Ok(r) => Response::Trace(Box::new(r)),
                Err(message) => Response::Error { message },
            },
            Request::Identities => Response::Identities(self.identities()),
            Request::Latency => Response::Latency(Box::new(self.latency())),
            Request::CniAdd(att) => self.cni_add(att),
            Request::CniDel { namespace, pod, .. } => {
                let key = (namespace, pod);
                if self.cni.remove(&key).is_some() {
                    self.apply();
                }
                Response::Cni(None)
            }
            Request::CniCheck { namespace, pod } => self.cni_check(&(namespace, pod)),
            Request::Observe { .. } => Response::Error {
                message: "observe is served by the API front end".into(),
            },
        }
    }

    fn status(&mut self) -> StatusReport {
        let snapshot = self.cache.pending();
        let worker_states: BTreeMap<usize, (WorkerState, u32)> = self
            .fast
            .as_ref()
            .map(|f| {
                f.states()
                    .into_iter()
                    .map(|(i, s, r)| (i, (s, r)))
                    .collect()
            })
            .unwrap_or_default();
        let fallback_active = worker_states
            .values()
            .any(|(s, _)| *s != WorkerState::Running);
        let endpoints = self
            .applied
            .values()
            .map(|a| {
                let local = snapshot.policy.locals.get(&a.identity);
                let enforced = |d| local.is_some_and(|l| l.direction(d).enforced);
                let datapath = if self.facts.kernel_mode.contains(&a.ifindex)
                    || !self.served.contains(&a.ifindex)
                    || fallback_active
                {
                    "kernel"
                } else {
                    "fastpath"
                };
                EndpointStatus {
                    namespace: a.spec.namespace.clone(),
                    name: a.spec.name.clone(),
                    identity: a.identity.0,
                    ips: a.spec.ips.iter().map(IpAddr::to_string).collect(),
                    interface: a.spec.interface.clone(),
                    mode: a.spec.mode.as_str().into(),
                    ingress_enforced: enforced(identity_cache::policy::Direction::Ingress),
                    egress_enforced: enforced(identity_cache::policy::Direction::Egress),
                    datapath: datapath.into(),
                }
            })
            .collect();
        let policies = self
            .policies
            .iter()
            .map(|(k, (origin, _))| PolicyStatus {
                kind: format!("{:?}", k.kind),
                namespace: k.namespace.clone().unwrap_or_default(),
                name: k.name.clone(),
                origin: origin.clone(),
            })
            .collect();
        let mut workers = Vec::new();
        if let Some(fast) = &self.fast {
            for handle in fast.workers() {
                let c = handle.stats().counters();
                let core = handle.stats().core();
                let sockets = handle.stats().sockets();
                let index = handle.config().index;
                let (state, restarts) = worker_states
                    .get(&index)
                    .cloned()
                    .unwrap_or((WorkerState::Running, 0));
                workers.push(WorkerStatus {
                    index,
                    core: handle.config().core,
                    state: match state {
                        WorkerState::Running => "running".into(),
                        WorkerState::Stalled => "stalled".into(),
                        WorkerState::Down { reason } => format!("down: {reason}"),
                    },
                    restarts,
                    ports: handle
                        .config()
                        .ports
                        .iter()
                        .map(|p| format!("{}/{}", p.ifname, p.queue))
                        .collect(),
                    pps: core.as_ref().map_or(0.0, |c| c.pps()),
                    p50_us: core
                        .as_ref()
                        .map_or(0.0, |c| c.latency.value_at_quantile(0.5) as f64 / 1000.0),
                    p99_us: core
                        .as_ref()
                        .map_or(0.0, |c| c.latency.value_at_quantile(0.99) as f64 / 1000.0),
                    packets: c.packets,
                    socket_lost: sockets.iter().map(|s| s.lost()).sum(),
                    fill_ring_empty: sockets.iter().map(|s| s.rx_fill_ring_empty).sum(),
                    conntrack_full: c.conntrack_full,
                    events_lost: c.events_lost,
                });
            }
        }
        let maps = self
            .plane
            .pressure()
            .map(|ps| {
                ps.into_iter()
                    .map(|p| MapStatus {
                        name: p.map.into(),
                        entries: p.entries,
                        capacity: p.max as usize,
                    })
                    .collect()
            })
            .unwrap_or_default();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            source: self.source.describe(),
            last_sync_age_s: self.last_sync.elapsed().as_secs_f64(),
            datapath: match self.config.datapath {
                DatapathMode::Fastpath => "fastpath",
                DatapathMode::Kernel => "kernel",
            }
            .into(),
            fallback_active,
            endpoints,
            policies,
            rejected: self.rejected.clone(),
            workers,
            maps,
            identities: self.cache.registry().len(),
            flows: self.hub.counts(),
        }
    }

    /// Resolves one side of a trace to (identity, address, is a local endpoint, labels).
    fn trace_peer(
        &self,
        peer: &TracePeer,
        side: &str,
    ) -> Result<(Identity, IpAddr, bool, Vec<String>), String> {
        let snapshot = self.cache.pending();
        if let Some(pod) = &peer.pod {
            let (ns, name) = pod.split_once('/').unwrap_or(("default", pod.as_str()));
            let a = self
                .applied
                .get(&(ns.to_owned(), name.to_owned()))
                .ok_or_else(|| format!("--{side}-pod: no endpoint {ns}/{name} on this node"))?;
            let ip = a.spec.ips[0];
            return Ok((
                a.identity,
                ip,
                true,
                identity_labels(self.cache.registry(), a.identity),
            ));
        }
        if let Some(ip) = &peer.ip {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("--{side}-ip: {ip:?} is not an IP address"))?;
            let id = snapshot.identity_of(ip);
            let local = snapshot.endpoints.by_ip(ip).is_some();
            return Ok((id, ip, local, identity_labels(self.cache.registry(), id)));
        }
        if peer.labels.is_empty() {
            return Err(format!(
                "say who the {side} is: --{side}-labels, --{side}-pod or --{side}-ip"
            ));
        }
        let mut pod_labels = BTreeMap::new();
        for l in &peer.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("--{side}-labels: {l:?} is not key=value"))?;
            let k = k.split_once(':').map_or(k, |(_, k)| k);
            pod_labels.insert(k.to_owned(), v.to_owned());
        }
        let ns = peer.namespace.clone().unwrap_or_else(|| "default".into());
        let ns_labels = self
            .applied
            .values()
            .find(|a| a.spec.namespace == ns)
            .map(|a| a.namespace_labels.clone())
            .unwrap_or_default();
        let labels = workload_labels(
            &WorkloadMeta {
                namespace: &ns,
                pod_labels: Some(&pod_labels),
                namespace_labels: Some(&ns_labels),
                service_account: Some("default"),
                cluster: Some("default"),
            },
            &LabelFilter::default(),
        );
        let id = derive_identity(self.cache.registry().key(), &labels);
        let names = labels.iter().map(|l| l.to_string()).collect();
        Ok((id, IpAddr::from([0, 0, 0, 0]), true, names))
    }

    fn trace(&self, t: &TraceRequest) -> Result<TraceResult, String> {
        let protocol: Protocol = t.protocol.parse().map_err(|e| format!("{e}"))?;
        let (from_id, from_ip, from_local, from_labels) = self.trace_peer(&t.from, "from")?;
        let (to_id, to_ip, to_local, to_labels) = self.trace_peer(&t.to, "to")?;
        let snapshot = self.cache.pending();
        let verdict = snapshot.decide(
            PeerRef {
                identity: from_id,
                ip: from_ip,
            },
            PeerRef {
                identity: to_id,
                ip: to_ip,
            },
            protocol,
            t.port,
            Enforce {
                egress: from_local,
                ingress: to_local,
            },
        );
        let rule_of =
            |d: &DirectionVerdict| d.rule.and_then(|r| snapshot.policy.rule(r)).map(policy_ref);
        let direction = |name: &str, d: &DirectionVerdict| TraceDirection {
            direction: name.into(),
            action: match d.action {
                Action::Allow => "ALLOW",
                Action::Deny => "DENY",
            }
            .into(),
            enforced: d.enforced,
            rule: rule_of(d),
            match_type: d.match_kind.name().into(),
            drop_reason: d.drop_reason.map(|r| r.name().into()),
        };
        let deciding = verdict.deciding();
        Ok(TraceResult {
            from_identity: from_id.0,
            from_labels,
            to_identity: to_id.0,
            to_labels,
            verdict: if verdict.allowed() {
                "FORWARDED"
            } else {
                "DROPPED"
            }
            .into(),
            drop_reason: verdict.drop_reason.map(|r| r.name().into()),
            deciding_direction: verdict.direction.map(|d| d.as_str().into()),
            rule: deciding.and_then(rule_of),
            egress: verdict.egress.as_ref().map(|d| direction("egress", d)),
            ingress: verdict.ingress.as_ref().map(|d| direction("ingress", d)),
        })
    }

    fn identities(&self) -> Vec<IdentityEntry> {
        let registry = self.cache.registry();
        let mut out: Vec<IdentityEntry> = registry
            .iter()
            .map(|(id, _)| IdentityEntry {
                identity: id.0,
                labels: identity_labels(registry, id),
                endpoints: self
                    .applied
                    .values()
                    .filter(|a| a.identity == id)
                    .map(|a| format!("{}/{}", a.spec.namespace, a.spec.name))
                    .collect(),
                reserved: id.is_reserved(),
            })
            .collect();
        out.sort_by_key(|e| e.identity);
        out
    }

    fn latency(&self) -> perf::LatencyReport {
        let mut report =
            perf::LatencyReport::new("sluice fast-path workers", perf::MachineInfo::detect());
        let mut cores = self.retired.clone();
        if let Some(fast) = &self.fast {
            for handle in fast.workers() {
                if let Some(stats) = handle.stats().core() {
                    merge_core(&mut cores, stats);
                }
            }
        }
        for stats in cores.into_values() {
            report.push(stats);
        }
        report
    }

    fn metrics(&mut self) -> String {
        use identity_cache::verdict::DropReason;
        let mut e = perf::prometheus::Exposition::new();
        let mut packets = [0u64; 3];
        let mut drops = BTreeMap::new();
        let mut cores = Vec::new();
        let mut events_lost = 0;
        if let Some(fast) = &self.fast {
            for handle in fast.workers() {
                let c = handle.stats().counters();
                for (total, n) in packets.iter_mut().zip(c.packets) {
                    *total += n;
                }
                for r in DropReason::ALL {
                    *drops.entry(r.name()).or_insert(0u64) += c.dropped(r);
                }
                events_lost += c.events_lost;
                if let Some(core) = handle.stats().core() {
                    cores.push(core);
                }
            }
        }
        for (i, verdict) in ["FORWARDED", "DROPPED", "AUDIT"].iter().enumerate() {
            let _ = e.counter(
                "sluice_fastpath_packets_total",
                "Packets decided by the fast-path workers, by verdict.",
                &[("verdict", verdict)],
                packets[i] as f64,
            );
        }
        for (reason, n) in &drops {
            let _ = e.counter(
                "sluice_fastpath_drops_total",
                "Packets the fast-path workers dropped, by reason.",
                &[("reason", reason)],
                *n as f64,
            );
        }
        if let Ok(kc) = self.plane.counters() {
            for r in DropReason::ALL {
                let _ = e.counter(
                    "sluice_kernel_drops_total",
                    "Packets the in-kernel path dropped, by reason.",
                    &[("reason", r.name())],
                    kc.dropped(r) as f64,
                );
            }
            let _ = e.counter(
                "sluice_kernel_packets_total",
                "Packets the XDP program saw.",
                &[],
                kc.total() as f64,
            );
        }
        for (key, n) in &self.totals.policy_hits {
            let mut parts = key.splitn(3, '|');
            let (kind, ns, name) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let _ = e.counter(
                "sluice_policy_flows_total",
                "Flows attributed to a policy (new flows and drops).",
                &[("kind", kind), ("namespace", ns), ("name", name)],
                *n as f64,
            );
        }
        let _ = e.core_stats("sluice_worker", &cores);
        if let Ok(pressure) = self.plane.pressure() {
            for p in pressure {
                let _ = e.gauge(
                    "sluice_bpf_map_entries",
                    "Entries in a BPF map.",
                    &[("map", p.map)],
                    p.entries as f64,
                );
                let _ = e.gauge(
                    "sluice_bpf_map_capacity",
                    "Capacity of a BPF map.",
                    &[("map", p.map)],
                    f64::from(p.max),
                );
            }
        }
        let (seen, evicted, _) = self.hub.counts();
        let _ = e.counter(
            "sluice_flow_events_lost_total",
            "Flow events dropped before reaching the flow buffer.",
            &[],
            events_lost as f64,
        );
        let _ = e.counter(
            "sluice_flows_total",
            "Flows recorded in the flow buffer.",
            &[],
            seen as f64,
        );
        let _ = e.counter(
            "sluice_flows_evicted_total",
            "Flows pushed out of the flow buffer.",
            &[],
            evicted as f64,
        );
        let _ = e.gauge(
            "sluice_identities",
            "Identities in use.",
            &[],
            self.cache.registry().len() as f64,
        );
        let _ = e.gauge(
            "sluice_seconds_since_last_sync",
            "Seconds since the BPF maps were last synced with the source.",
            &[],
            self.last_sync.elapsed().as_secs_f64(),
        );
        let _ = e.gauge(
            "sluice_rejected_objects",
            "Files and objects the agent refused.",
            &[],
            self.rejected.len() as f64,
        );
        e.render()
    }
}
