//! sluice's two datapaths: `sluice-kernel` (the in-kernel XDP path, endpoints in kernel mode)
//! and `sluice-afxdp` (the AF_XDP fast path: one worker on the node core at `SCHED_FIFO` 1,
//! serving both node veths, their threaded NAPI on the same core; or, for `bench-lab scale`,
//! one such worker per generator → sink pair, see [`SluiceAfxdp::serve_pairs`]).
//!
//! The state ([`SluiceState`]): the generator and sink pods of every pair as local endpoints
//! (a generator with all of its pod's addresses and their IPv6 twins), `remote_pods` remote
//! pods (`10.128.1.0` onwards, or after the last generator's block when there are more than
//! seven, in the same `/15` as the endpoints), one policy per identity of
//! [`SluicePlan`] (N/10 identities carry policy), and the rule that lets the generator reach the
//! sink on UDP 9. The remote pods are spread round robin over max(N/10, [`MIN_REMOTE_GROUPS`])
//! label sets: the first N/10 are the policy's groups, the rest are identities no policy
//! selects. (identity-cache walks every member of an identity on each pod update, so 100,000
//! pods in one identity, as N = 10 would give, take quadratic time to build; see
//! BENCHMARKS.md, "Found in other files".) It is built once per rule count and shared by both
//! systems.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use fastpath::sched::Scheduling;
use fastpath::socket::{PortSpec, UmemMode};
use fastpath::supervisor::FastPath;
use fastpath::worker::WorkerConfig;
use identity_cache::identity::ClusterKey;
use identity_cache::ipcache::Source;
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{ParsedManifest, Policy, parse_manifest};
use identity_cache::state::{IdentityCache, LocalAttachment, Workload};
use identity_cache::tables::EnforcementConfig;
use xdp_redirect::abi;
use xdp_redirect::ipcache_map::InterfaceFacts;
use xdp_redirect::loader::{AttachMode, Counters, DatapathSettings, Dataplane};

use crate::cpu::{self, Task};
use crate::error::{LabError, Result};
use crate::generator::{LAB_PORT, TrafficSpec};
use crate::netns::{self, RemoveDir};
use crate::rules::{self, SluicePlan};
use crate::systems::{PeriodExtras, System};
use crate::topology::{Pod, Topology, v6_of};

/// The first remote pod's address; the others follow it.
pub const REMOTE_BASE: Ipv4Addr = Ipv4Addr::new(10, 128, 1, 0);
/// Fewest label sets the remote pods are spread over.
pub const MIN_REMOTE_GROUPS: usize = 1_000;
/// Most remote pods that fit in the `/15` after [`REMOTE_BASE`].
pub const MAX_REMOTE_PODS: usize = 131_072 - 256;

/// The compiled identity state for one rule count, with what it holds.
pub struct BuiltState {
    /// The rule count it was built for.
    pub rules: usize,
    /// The identity cache (published: the fast path's workers read it).
    pub cache: IdentityCache,
    /// Seconds it took to build.
    pub build_secs: f64,
}

/// Builds and caches sluice's state; shared by the two sluice systems.
pub struct SluiceState {
    remote_pods: usize,
    built: Option<BuiltState>,
}

/// A shared handle on [`SluiceState`].
pub type SharedState = Rc<RefCell<SluiceState>>;

fn policy(yaml: &str) -> Result<Policy> {
    match parse_manifest(yaml).map_err(|e| LabError::system("sluice", format!("policy: {e}")))? {
        ParsedManifest::Policy(p) => Ok(p),
        ParsedManifest::Empty => Err(LabError::system("sluice", "empty policy")),
    }
}

fn workload(
    uid: String,
    app: &str,
    ips: Vec<IpAddr>,
    source: Source,
    local: Option<LocalAttachment>,
) -> Workload {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    Workload {
        uid: uid.clone(),
        namespace: "bench".into(),
        name: uid,
        labels: workload_labels(
            &WorkloadMeta {
                namespace: "bench",
                pod_labels: Some(&labels),
                ..WorkloadMeta::default()
            },
            &LabelFilter::default(),
        ),
        ips,
        named_ports: Vec::new(),
        source,
        local,
    }
}

impl SluiceState {
    /// A state builder with `remote_pods` remote pods.
    pub fn shared(remote_pods: usize) -> Result<SharedState> {
        if remote_pods > MAX_REMOTE_PODS {
            return Err(LabError::Invalid {
                what: "remote pods",
                reason: format!("{remote_pods} (at most {MAX_REMOTE_PODS})"),
            });
        }
        Ok(Rc::new(RefCell::new(SluiceState {
            remote_pods,
            built: None,
        })))
    }

    /// The state for `rules` rules, built on first use (a different rule count rebuilds).
    pub fn get(&mut self, topology: &Topology, rules: usize) -> Result<&mut BuiltState> {
        if self.built.as_ref().is_none_or(|b| b.rules != rules) {
            self.built = None;
            self.built = Some(self.build(topology, rules)?);
        }
        self.built
            .as_mut()
            .ok_or_else(|| LabError::system("sluice", "state missing"))
    }

    fn build(&self, topology: &Topology, rules: usize) -> Result<BuiltState> {
        let mut locals = Vec::new();
        for i in 0..topology.pairs() {
            let (generator, sink) = topology
                .pair(i)
                .ok_or_else(|| LabError::system("sluice", format!("pair {i} missing")))?;
            let suffix = if i == 0 {
                String::new()
            } else {
                format!("-{i}")
            };
            locals.push(LocalPod::of(format!("gen{suffix}"), "gen", generator));
            locals.push(LocalPod::of(format!("sink{suffix}"), "sink", sink));
        }
        // Remote pods start after the generators' blocks (more than seven generators reach
        // into 10.128.1.0), on a /24 boundary.
        let gens_end = u32::from(crate::topology::gen_base(topology.gens.len()));
        let remote_base = u32::from(REMOTE_BASE).max(gens_end.div_ceil(256) * 256);
        build_state(
            &locals,
            rules,
            self.remote_pods,
            Ipv4Addr::from(remote_base),
        )
    }
}

/// A pod on the node as sluice's state sees it: its name, `app` label, addresses (each IPv4
/// address also gets its IPv6 twin) and the host side of its veth.
#[derive(Clone, Debug)]
pub struct LocalPod {
    /// Pod name (and uid).
    pub uid: String,
    /// Its `app` label (`gen` or `sink`: the lab's policies select these).
    pub app: &'static str,
    /// Its IPv4 addresses.
    pub v4: Vec<Ipv4Addr>,
    /// Index of the node side of its veth.
    pub ifindex: u32,
    /// MAC of the pod side of its veth.
    pub mac: [u8; 6],
}

impl LocalPod {
    /// `pod` of the lab topology, named `uid` with label `app`.
    pub fn of(uid: String, app: &'static str, pod: &Pod) -> Self {
        LocalPod {
            uid,
            app,
            v4: pod.v4.clone(),
            ifindex: pod.host_ifindex,
            mac: pod.mac,
        }
    }
}

/// Builds sluice's identity state for `rules` policy entries ([`SluicePlan`]): the local
/// `locals`, the policy admitting the generator to the sink on the lab port, and
/// `remote_pods` remote pods from `remote_base` up over `max(groups, 1,000)` label sets. The
/// remote pods must stay inside `10.128.0.0/15`.
pub fn build_state(
    locals: &[LocalPod],
    rules: usize,
    remote_pods: usize,
    remote_base: Ipv4Addr,
) -> Result<BuiltState> {
    let started = Instant::now();
    let plan = SluicePlan::for_rules(rules);
    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    let err =
        |what: &str, e: &dyn std::fmt::Display| LabError::system("sluice", format!("{what}: {e}"));
    let block_end = u32::from(REMOTE_BASE) - 256 + 131_072;
    if u32::from(remote_base) as u64 + remote_pods as u64 > block_end as u64 {
        return Err(LabError::Invalid {
            what: "remote pods",
            reason: format!("{remote_pods} from {remote_base} do not fit in 10.128.0.0/15"),
        });
    }
    for pod in locals {
        let mut ips: Vec<IpAddr> = pod.v4.iter().map(|a| IpAddr::V4(*a)).collect();
        ips.extend(pod.v4.iter().map(|a| IpAddr::V6(v6_of(*a))));
        cache
            .upsert_workload(workload(
                pod.uid.clone(),
                pod.app,
                ips,
                Source::Local,
                Some(LocalAttachment {
                    ifindex: pod.ifindex,
                    mac: pod.mac,
                }),
            ))
            .map_err(|e| err(&pod.uid, &e))?;
    }
    cache.upsert_policy(policy(&rules::sink_policy(LAB_PORT))?);
    for g in 0..plan.groups {
        cache.upsert_policy(policy(&plan.group_policy(g))?);
    }
    let label_sets = plan.groups.max(MIN_REMOTE_GROUPS);
    for i in 0..remote_pods {
        if i % 4096 == 0 {
            netns::check_interrupted()?;
        }
        let ip = Ipv4Addr::from(u32::from(remote_base) + i as u32);
        cache
            .upsert_workload(workload(
                format!("remote-{i}"),
                &format!("r{}", i % label_sets),
                vec![ip.into()],
                Source::ApiServer,
                None,
            ))
            .map_err(|e| err(&format!("remote pod {i}"), &e))?;
    }
    cache.publish();
    Ok(BuiltState {
        rules,
        cache,
        build_secs: started.elapsed().as_secs_f64(),
    })
}

/// Host MACs and kernel mode of the node's interfaces.
struct Facts {
    macs: BTreeMap<u32, [u8; 6]>,
    kernel_mode: bool,
}

impl Facts {
    /// The host-side MACs of `pods`' veths, by ifindex, and the datapath's mode.
    fn of<'a>(pods: impl Iterator<Item = &'a Pod>, kernel_mode: bool) -> Self {
        Facts {
            macs: pods.map(|p| (p.host_ifindex, p.host_mac)).collect(),
            kernel_mode,
        }
    }
}

impl InterfaceFacts for Facts {
    fn host_mac(&self, ifindex: u32) -> [u8; 6] {
        self.macs.get(&ifindex).copied().unwrap_or_default()
    }

    fn kernel_mode(&self, _ifindex: u32) -> bool {
        self.kernel_mode
    }
}

/// The loaded steering program with its maps synced for one rule count.
struct Plane {
    plane: Dataplane,
    synced_rules: Option<usize>,
    attached: Vec<u32>,
    _pins: RemoveDir,
}

/// Map sizes after the last sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapSizes {
    /// `ipcache_v4` + `ipcache_v6` entries.
    pub ipcache: usize,
    /// `policy` entries.
    pub policy: usize,
    /// `local_policy` entries.
    pub local_policy: usize,
}

fn counters_delta(a: &Counters, b: &Counters) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (slot, name) in [
        (abi::CNT_TO_SOCKET, "to_socket"),
        (abi::CNT_KERNEL_REDIRECT, "kernel_redirect"),
        (abi::CNT_KERNEL_PASS, "kernel_pass"),
        (abi::CNT_NOT_MANAGED, "not_managed"),
        (abi::CNT_REDIRECT_FAILED, "redirect_failed"),
    ] {
        out.insert(
            format!("xdp_{name}"),
            b.packets(slot).saturating_sub(a.packets(slot)),
        );
    }
    let drops: u64 = (abi::CNT_DROP_BASE..abi::CNT_MAX)
        .map(|s| b.packets(s).saturating_sub(a.packets(s)))
        .sum();
    out.insert("xdp_dropped".into(), drops);
    out
}

/// What both sluice systems share: the state and a dataplane of their own.
struct Common {
    state: SharedState,
    plane: Option<Plane>,
    kernel_mode: bool,
    tag: &'static str,
    counters_at_start: Option<Counters>,
    sizes: MapSizes,
}

impl Common {
    fn setup(&mut self, topology: &Topology, rules: usize) -> Result<()> {
        let name = self.tag;
        let err = move |e: &dyn std::fmt::Display| LabError::system(name, e.to_string());
        if self.plane.is_none() {
            netns::ensure_bpffs()?;
            let dir = PathBuf::from(format!(
                "/sys/fs/bpf/{}{}-{}",
                netns::PREFIX,
                std::process::id(),
                self.tag
            ));
            let pins = RemoveDir(dir.clone());
            let plane = Dataplane::open(&dir, DatapathSettings::default()).map_err(|e| err(&e))?;
            self.plane = Some(Plane {
                plane,
                synced_rules: None,
                attached: Vec::new(),
                _pins: pins,
            });
        }
        let facts = Facts::of(topology.pods(), self.kernel_mode);
        let mut state = self.state.borrow_mut();
        let built = state.get(topology, rules)?;
        let plane = self.plane.as_mut().ok_or_else(|| err(&"no dataplane"))?;
        let devs: Vec<u32> = topology.node_devs().iter().map(|d| d.1).collect();
        let snapshot = built.cache.pending();
        let resync = plane.synced_rules != Some(rules);
        let sizes = topology.node.run(|| {
            if resync {
                plane.plane.sync(&snapshot, &facts).map_err(|e| err(&e))?;
            }
            for &i in &devs {
                let mode = plane.plane.attach(i).map_err(|e| err(&e))?;
                plane.attached.push(i);
                if mode != AttachMode::Driver {
                    return Err(err(&format!("attached in {mode} mode, not native")));
                }
            }
            let pressure = plane.plane.pressure().map_err(|e| err(&e))?;
            let held = |m: &str| {
                pressure
                    .iter()
                    .find(|p| p.map == m)
                    .map_or(0, |p| p.entries)
            };
            Ok(MapSizes {
                ipcache: held("ipcache_v4") + held("ipcache_v6"),
                policy: held("policy"),
                local_policy: held("local_policy"),
            })
        })?;
        plane.synced_rules = Some(rules);
        self.sizes = sizes;
        Ok(())
    }

    fn begin(&mut self) -> Result<()> {
        self.counters_at_start = match &self.plane {
            Some(p) => Some(
                p.plane
                    .counters()
                    .map_err(|e| LabError::system(self.tag, e.to_string()))?,
            ),
            None => None,
        };
        Ok(())
    }

    fn end(&mut self) -> Result<BTreeMap<String, u64>> {
        let (Some(p), Some(a)) = (&self.plane, self.counters_at_start.take()) else {
            return Ok(BTreeMap::new());
        };
        let b = p
            .plane
            .counters()
            .map_err(|e| LabError::system(self.tag, e.to_string()))?;
        let mut out = counters_delta(&a, &b);
        out.insert("policy_entries".into(), self.sizes.policy as u64);
        out.insert("ipcache_entries".into(), self.sizes.ipcache as u64);
        out.insert(
            "local_policy_entries".into(),
            self.sizes.local_policy as u64,
        );
        Ok(out)
    }

    fn detach(&mut self) -> Result<()> {
        if let Some(p) = self.plane.as_mut() {
            for i in std::mem::take(&mut p.attached) {
                p.plane
                    .detach(i)
                    .map_err(|e| LabError::system(self.tag, e.to_string()))?;
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(p) = self.plane.take()
            && let Err(e) = p.plane.destroy()
        {
            eprintln!("{}: destroying the dataplane: {e}", self.tag);
        }
    }
}

/// sluice's in-kernel XDP path.
pub struct SluiceKernel {
    common: Common,
}

impl SluiceKernel {
    /// The in-kernel path over `state`.
    pub fn new(state: SharedState) -> Self {
        SluiceKernel {
            common: Common {
                state,
                plane: None,
                kernel_mode: true,
                tag: "sluice-kernel",
                counters_at_start: None,
                sizes: MapSizes::default(),
            },
        }
    }
}

impl System for SluiceKernel {
    fn name(&self) -> &'static str {
        "sluice-kernel"
    }

    fn live_state(&mut self) -> Option<&mut dyn LiveState> {
        Some(&mut self.common)
    }

    fn setup(&mut self, topology: &Topology, rules: usize, _spec: &TrafficSpec) -> Result<()> {
        self.common.setup(topology, rules)
    }

    fn begin_period(&mut self) -> Result<()> {
        self.common.begin()
    }

    fn end_period(&mut self) -> Result<PeriodExtras> {
        Ok(PeriodExtras {
            counters: self.common.end()?,
            ..PeriodExtras::default()
        })
    }

    fn teardown(&mut self, _topology: &Topology) -> Result<()> {
        self.common.detach()
    }

    fn shutdown(&mut self) {
        self.common.shutdown();
    }
}

/// Where the workers of a multi-pair run go: worker `i` serves pair `i` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairWorkers {
    /// Worker `i`'s core (one worker per entry).
    pub cores: Vec<usize>,
    /// Whether each worker pins its pair's NAPI kthreads to its own core (`false`: the lab
    /// places them elsewhere).
    pub napi_on_worker_core: bool,
    /// Workers at `SCHED_FIFO` (the fast path's default). Off where generators share the
    /// workers' cores: a busy real-time worker would starve the generator of another pair on
    /// its core, and that pair would see no traffic at all.
    pub realtime: bool,
}

/// sluice's AF_XDP fast path: one worker pinned to the node core (or one per pair).
pub struct SluiceAfxdp {
    common: Common,
    umem: UmemMode,
    ring_size: u32,
    batch_size: usize,
    busy_poll_rounds: u32,
    node_cpu: usize,
    pairs: Option<PairWorkers>,
    fast: Option<FastPath>,
    sockets_at_start: u64,
    worker_at_start: fastpath::stats::Counters,
}

fn umem_name(mode: UmemMode) -> &'static str {
    match mode {
        UmemMode::Shared => "shared",
        UmemMode::PerSocket => "per-socket",
    }
}

impl SluiceAfxdp {
    /// The fast path over `state` with `umem` mode, its worker on `node_cpu`.
    pub fn new(state: SharedState, umem: UmemMode, node_cpu: usize) -> Self {
        SluiceAfxdp {
            common: Common {
                state,
                plane: None,
                kernel_mode: false,
                tag: match umem {
                    UmemMode::Shared => "sluice-afxdp-shared",
                    UmemMode::PerSocket => "sluice-afxdp-per-socket",
                },
                counters_at_start: None,
                sizes: MapSizes::default(),
            },
            umem,
            ring_size: fastpath::socket::RingSizes::default().ring,
            batch_size: fastpath::worker::DEFAULT_BATCH_SIZE,
            busy_poll_rounds: Scheduling::default().busy_poll_rounds,
            node_cpu,
            pairs: None,
            fast: None,
            sockets_at_start: 0,
            worker_at_start: fastpath::stats::Counters::default(),
        }
    }

    /// AF_XDP rings of `ring` entries and twice as many UMEM frames per socket (the fast
    /// path's default otherwise); a size other than the default shows in the variant.
    pub fn with_ring_size(mut self, ring: u32) -> Self {
        self.ring_size = ring;
        self
    }

    /// Bursts of at most `batch` frames per ring and round (the fast path's default
    /// otherwise); a size other than the default shows in the variant.
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch_size = batch;
        self
    }

    /// `rounds` empty polls before a worker blocks on its sockets (the fast path's default
    /// otherwise); a window other than the default shows in the variant.
    pub fn with_busy_poll_rounds(mut self, rounds: u32) -> Self {
        self.busy_poll_rounds = rounds;
        self
    }

    /// Ring and frame sizes of every worker's sockets.
    fn rings(&self) -> Result<fastpath::socket::RingSizes> {
        fastpath::socket::RingSizes::with_ring(self.ring_size)
            .map_err(|e| LabError::system(self.common.tag, format!("ring size {e}")))
    }

    /// From the next setup on: one worker per pair as `layout` says (`None`: back to one
    /// worker on the node core serving every node veth).
    pub fn serve_pairs(&mut self, layout: Option<PairWorkers>) {
        self.pairs = layout;
    }

    /// The worker configurations for `topology`.
    fn worker_configs(&self, topology: &Topology) -> Result<Vec<WorkerConfig>> {
        let ports_of = |pods: &[&crate::topology::Pod]| {
            let mut ports = Vec::new();
            for pod in pods {
                for queue in 0..topology.config.queues {
                    ports.push(PortSpec {
                        ifname: pod.host_dev.clone(),
                        ifindex: pod.host_ifindex,
                        queue,
                    });
                }
            }
            ports
        };
        let Some(layout) = &self.pairs else {
            let pods: Vec<_> = topology.pods().collect();
            let mut config = WorkerConfig::new(0, ports_of(&pods));
            config.core = Some(self.node_cpu);
            config.umem = self.umem;
            config.rings = self.rings()?;
            config.batch_size = self.batch_size;
            config.scheduling.busy_poll_rounds = self.busy_poll_rounds;
            return Ok(vec![config]);
        };
        if layout.cores.is_empty() || layout.cores.len() > topology.pairs() {
            return Err(LabError::system(
                self.common.tag,
                format!(
                    "{} workers for a topology of {} pairs",
                    layout.cores.len(),
                    topology.pairs()
                ),
            ));
        }
        let mut configs = Vec::with_capacity(layout.cores.len());
        for (i, &core) in layout.cores.iter().enumerate() {
            let (generator, sink) = topology
                .pair(i)
                .ok_or_else(|| LabError::system(self.common.tag, format!("pair {i} missing")))?;
            let mut config = WorkerConfig::new(i, ports_of(&[generator, sink]));
            config.core = Some(core);
            config.umem = self.umem;
            config.rings = self.rings()?;
            config.batch_size = self.batch_size;
            config.scheduling.busy_poll_rounds = self.busy_poll_rounds;
            config.scheduling.place_napi = layout.napi_on_worker_core;
            if !layout.realtime {
                config.scheduling.realtime_priority = None;
            }
            configs.push(config);
        }
        Ok(configs)
    }

    fn socket_lost(&self) -> u64 {
        self.fast
            .as_ref()
            .map(|f| {
                f.workers()
                    .flat_map(|w| w.stats().sockets())
                    .map(|s| s.lost())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The workers' counters, summed over workers (the fields the lab reports).
    fn worker_counters(&self) -> fastpath::stats::Counters {
        let mut sum = fastpath::stats::Counters::default();
        for c in self
            .fast
            .iter()
            .flat_map(|f| f.workers())
            .map(|w| w.stats().counters())
        {
            for (s, x) in sum.packets.iter_mut().zip(c.packets) {
                *s += x;
            }
            sum.egress_full += c.egress_full;
            sum.conntrack_full += c.conntrack_full;
            sum.sleeps += c.sleeps;
            sum.tx_kicks += c.tx_kicks;
            sum.unparsed += c.unparsed;
        }
        sum
    }
}

impl System for SluiceAfxdp {
    fn name(&self) -> &'static str {
        "sluice-afxdp"
    }

    fn variant(&self) -> String {
        let mut variant = format!("umem={}", umem_name(self.umem));
        if self.ring_size != fastpath::socket::RingSizes::default().ring {
            variant.push_str(&format!(",ring={}", self.ring_size));
        }
        if self.batch_size != fastpath::worker::DEFAULT_BATCH_SIZE {
            variant.push_str(&format!(",batch={}", self.batch_size));
        }
        if self.busy_poll_rounds != Scheduling::default().busy_poll_rounds {
            variant.push_str(&format!(",busy={}", self.busy_poll_rounds));
        }
        variant
    }

    fn live_state(&mut self) -> Option<&mut dyn LiveState> {
        Some(&mut self.common)
    }

    fn setup(&mut self, topology: &Topology, rules: usize, _spec: &TrafficSpec) -> Result<()> {
        self.common.setup(topology, rules)?;
        let configs = self.worker_configs(topology)?;
        let tag = self.common.tag;
        let state = self.common.state.borrow();
        let built = state
            .built
            .as_ref()
            .ok_or_else(|| LabError::system(tag, "state missing"))?;
        let plane = self
            .common
            .plane
            .as_mut()
            .ok_or_else(|| LabError::system(tag, "no dataplane"))?;
        let cache = &built.cache;
        let fast = topology.node.run(|| {
            FastPath::start(configs, cache, &mut plane.plane)
                .map_err(|e| LabError::system(tag, e.to_string()))
        })?;
        self.fast = Some(fast);
        Ok(())
    }

    fn user_threads(&self) -> Vec<Task> {
        cpu::threads_named(std::process::id() as i32, "sluice-worker")
    }

    fn begin_period(&mut self) -> Result<()> {
        self.common.begin()?;
        self.sockets_at_start = self.socket_lost();
        self.worker_at_start = self.worker_counters();
        if let Some(f) = &self.fast {
            for w in f.workers() {
                let _ = w.stats().take_core();
            }
        }
        Ok(())
    }

    fn end_period(&mut self) -> Result<PeriodExtras> {
        // The worker publishes its histograms every 100 ms and whenever it idles.
        std::thread::sleep(std::time::Duration::from_millis(120));
        let mut counters = self.common.end()?;
        let (a, b) = (&self.worker_at_start, self.worker_counters());
        for (name, x, y) in [
            ("worker_forwarded", a.packets[0], b.packets[0]),
            ("worker_dropped", a.packets[1], b.packets[1]),
            ("worker_egress_full", a.egress_full, b.egress_full),
            ("worker_conntrack_full", a.conntrack_full, b.conntrack_full),
            ("worker_sleeps", a.sleeps, b.sleeps),
            ("worker_tx_kicks", a.tx_kicks, b.tx_kicks),
            ("worker_unparsed", a.unparsed, b.unparsed),
        ] {
            counters.insert(name.into(), y.saturating_sub(x));
        }
        let core = self
            .fast
            .as_ref()
            .and_then(|f| f.workers().next().and_then(|w| w.stats().take_core()));
        Ok(PeriodExtras {
            socket_lost: Some(self.socket_lost().saturating_sub(self.sockets_at_start)),
            core,
            counters,
        })
    }

    fn teardown(&mut self, _topology: &Topology) -> Result<()> {
        if let (Some(mut fast), Some(plane)) = (self.fast.take(), self.common.plane.as_mut()) {
            fast.stop(&mut plane.plane);
        }
        self.common.detach()
    }

    fn shutdown(&mut self) {
        if let (Some(mut fast), Some(plane)) = (self.fast.take(), self.common.plane.as_mut()) {
            fast.stop(&mut plane.plane);
        }
        self.common.shutdown();
    }
}

/// The state's build time for reports (seconds), if built.
pub fn build_secs(state: &SharedState) -> Option<f64> {
    state.borrow().built.as_ref().map(|b| b.build_secs)
}

/// A lab workload: labels `app=<app>` in namespace `bench`; local (an endpoint on `pod`'s
/// node-side veth) when `pod` is given, else a remote pod known from the API server.
pub fn lab_workload(
    uid: String,
    app: &str,
    ips: Vec<IpAddr>,
    pod: Option<&crate::topology::Pod>,
) -> Workload {
    match pod {
        Some(p) => workload(
            uid,
            app,
            ips,
            Source::Local,
            Some(LocalAttachment {
                ifindex: p.host_ifindex,
                mac: p.mac,
            }),
        ),
        None => workload(uid, app, ips, Source::ApiServer, None),
    }
}

/// A policy from its YAML (a `CiliumNetworkPolicy` or `NetworkPolicy`).
pub fn lab_policy(yaml: &str) -> Result<Policy> {
    policy(yaml)
}

/// How long one live update took, by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateTiming {
    /// Changing the cache, publishing, and (for revocations) waiting for the workers.
    pub publish: std::time::Duration,
    /// Bringing the BPF maps in line.
    pub sync: std::time::Duration,
    /// BPF map entries written and deleted.
    pub map_writes: usize,
}

/// A sluice system whose identity state can change while traffic flows (the update storm,
/// the TCP scenario's extra policy). Each update is applied the way the node agent applies
/// one: change the cache, publish, wait for every worker to move past the old snapshot when
/// the change revokes something, then bring the BPF maps in line by diff.
pub trait LiveState {
    /// Applies `change` to the state (set up before, by [`System::setup`]). `revokes`: the
    /// change removes something a worker may still decide by. `addresses`: the addresses
    /// whose pods the change adds or removes, when that is all it does (empty: anything may
    /// have changed); then, if no identity came or went, only their ipcache entries are
    /// written to the BPF maps, as the agent does for pod events.
    fn update(
        &mut self,
        topology: &Topology,
        revokes: bool,
        addresses: &[ipnet::IpNet],
        change: &mut dyn FnMut(&mut IdentityCache) -> Result<()>,
    ) -> Result<UpdateTiming>;
}

impl LiveState for Common {
    fn update(
        &mut self,
        topology: &Topology,
        revokes: bool,
        addresses: &[ipnet::IpNet],
        change: &mut dyn FnMut(&mut IdentityCache) -> Result<()>,
    ) -> Result<UpdateTiming> {
        let tag = self.tag;
        let started = Instant::now();
        let mut state = self.state.borrow_mut();
        let built = state
            .built
            .as_mut()
            .ok_or_else(|| LabError::system(tag, "state not built (no setup)"))?;
        let identities_before: Vec<_> = if addresses.is_empty() {
            Vec::new()
        } else {
            built.cache.registry().iter().map(|(id, _)| id).collect()
        };
        change(&mut built.cache)?;
        // With the same identities in use, the compiled policy is what the maps hold and only
        // these addresses' ipcache entries can differ.
        let registry = built.cache.registry();
        let only_addresses = !addresses.is_empty()
            && registry.len() == identities_before.len()
            && identities_before
                .iter()
                .all(|id| registry.get(*id).is_some());
        let generation = built.cache.publish();
        if revokes {
            built
                .cache
                .wait_for_readers(generation, std::time::Duration::from_secs(1))
                .map_err(|e| LabError::system(tag, format!("revocation barrier: {e}")))?;
        }
        let published = started.elapsed();
        let plane = self
            .plane
            .as_mut()
            .ok_or_else(|| LabError::system(tag, "no dataplane"))?;
        let facts = Facts::of(
            topology.gens.iter().chain(std::iter::once(&topology.sink)),
            self.kernel_mode,
        );
        let pending = built.cache.pending();
        let stats = if only_addresses {
            plane.plane.sync_ipcache(&pending, addresses)
        } else {
            plane.plane.sync(&pending, &facts)
        }
        .map_err(|e| LabError::system(tag, format!("syncing the BPF maps: {e}")))?;
        Ok(UpdateTiming {
            publish: published,
            sync: started.elapsed() - published,
            map_writes: stats.upserted + stats.deleted,
        })
    }
}
