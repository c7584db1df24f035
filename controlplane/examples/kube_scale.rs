//! The Kubernetes control plane at scale: how fast `sluice agent --source kubernetes` takes in
//! a cluster of 10,000 pods and 1,000 policies, how soon a new pod's identity is in the
//! dataplane, and how much memory the agent needs for it. A benchmark, not a test: it prints
//! numbers (text, and one JSON line) and asserts nothing about them.
//!
//! ```text
//! cargo build --release -p controlplane --bins --examples
//! sudo SLUICE_TESTAPI_NO_BUILD=1 target/release/examples/kube_scale [--pods 10000] \
//!      [--policies 1000] [--probes 300]
//! ```
//!
//! What it does:
//! 1. starts the test API server (`controlplane/testapi`, loopback) and creates namespaces,
//!    pods (each created, then given `status.podIP` as a kubelet would; all but `--local` of
//!    them on other nodes, so they are remote ipcache entries) and policies (SluicePolicy and
//!    NetworkPolicy, label selectors and ports), many requests at a time;
//! 2. starts the agent (the `sluice` binary next to this one, as a process, in a node network
//!    namespace of its own, in-kernel datapath) and measures **initial sync**: agent start →
//!    every pod's address is in the pinned BPF ipcache map with the identity its labels derive;
//! 3. attaches the local pods (veth pairs in the node namespace, announced over the agent's
//!    API as the CNI plugin does), then creates `--probes` new pods one at a time and measures
//!    **add → enforced**: the pod's status write (the moment it has an address) returning →
//!    its address carries its identity in the pinned `ipcache_v4` map, the map the in-kernel
//!    path decides by (read with aya from this process, polled every 100 µs);
//! 4. reads the agent's peak resident memory (`VmHWM`).
//!
//! Needs root, bpffs and a built test API server (`controlplane/testapi/build.sh`). Everything
//! it creates (API server, node namespace, pins, temporary files) is removed on every exit.

#[path = "../tests/support/apiserver.rs"]
mod apiserver;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use identity_cache::identity::{ClusterKey, derive_identity};
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use xdp_redirect::abi::IpcacheValue;

use apiserver::TestApiServer;
use controlplane::api::{Client as AgentClient, CniAttachment, Request, Response};
use controlplane::crd::SluicePolicy;

/// The node the agent runs as.
const NODE: &str = "bench-node";
/// How long the agent may take to list and apply the cluster before the run is abandoned.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one probe pod may take to appear in the dataplane before it counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight while populating the cluster.
const CONCURRENCY: usize = 64;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Kubernetes control plane at scale: initial sync, pod add → enforced, memory")]
struct Options {
    /// Pods in the cluster before the agent starts.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Policies (half SluicePolicy, half NetworkPolicy).
    #[arg(long, default_value_t = 1_000)]
    policies: usize,
    /// Namespaces the pods and policies are spread over.
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Of the pods, this many are on the agent's node (attached through its API).
    #[arg(long, default_value_t = 20)]
    local: usize,
    /// New pods created one at a time after the initial sync, each timed.
    #[arg(long, default_value_t = 300)]
    probes: usize,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// Not root, or no `ip`.
    #[error("needs root and iproute2")]
    Privileges,
    /// The test API server did not start.
    #[error("test API server: {0}")]
    ApiServer(String),
    /// A Kubernetes request failed.
    #[error("{what}: {source}")]
    Kube {
        /// The request.
        what: String,
        /// Cause.
        source: kube::Error,
    },
    /// A host command (ip) failed.
    #[error("{0}")]
    Command(String),
    /// The agent did not start or did not converge.
    #[error("agent: {0}")]
    Agent(String),
    /// Reading the pinned map failed.
    #[error("pinned map {path}: {reason}")]
    Map {
        /// Pin path.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Kube { what, source }
}

/// A pod of the synthetic cluster.
#[derive(Clone, Debug)]
struct PodPlan {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    node: String,
    ip: Ipv4Addr,
}

/// The cluster: namespaces with team labels, deployments of ten replicas (`app`, `tier`),
/// one policy per deployment.
struct Cluster {
    namespaces: Vec<(String, BTreeMap<String, String>)>,
    pods: Vec<PodPlan>,
    policies: Vec<Value>,
}

const TIERS: [&str; 3] = ["web", "api", "db"];

fn namespace_of(k: usize) -> (String, BTreeMap<String, String>) {
    (
        format!("ns-{k}"),
        BTreeMap::from([("team".to_owned(), format!("t{}", k % 10))]),
    )
}

fn apps_per_namespace(o: &Options) -> usize {
    (o.pods / o.namespaces / 10).max(1)
}

/// Pod `i` of the cluster (probes continue the numbering).
fn pod_plan(o: &Options, i: usize) -> PodPlan {
    let apps = apps_per_namespace(o);
    let deployment = i / 10;
    let ns = deployment / apps % o.namespaces;
    let app = deployment % apps;
    let local = i < o.local;
    let labels = BTreeMap::from([
        ("app".to_owned(), format!("app-{app}")),
        ("tier".to_owned(), TIERS[app % 3].to_owned()),
    ]);
    let ip = if local {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 89, 0, 10)) + i as u32)
    } else {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i as u32)
    };
    PodPlan {
        namespace: format!("ns-{ns}"),
        name: format!("app-{app}-{i}"),
        labels,
        node: if local {
            NODE.to_owned()
        } else {
            format!("node-{}", i % 100)
        },
        ip,
    }
}

fn policy_plan(o: &Options, p: usize) -> Value {
    let apps = apps_per_namespace(o);
    let ns = format!("ns-{}", p / apps % o.namespaces);
    let app = p % apps;
    let peer = (app + 1) % apps;
    let port = 8000 + (p % 100) as i32;
    if p.is_multiple_of(2) {
        let mut spec = json!({
            "endpointSelector": {"matchLabels": {"app": format!("app-{app}")}},
            "ingress": [{
                "fromEndpoints": [{"matchLabels": {"app": format!("app-{peer}")}}],
                "toPorts": [{"ports": [{"port": port.to_string(), "protocol": "TCP"}]}]
            }]
        });
        if p.is_multiple_of(10) {
            spec["egress"] = json!([
                {"toEndpoints": [{"matchLabels": {"tier": "db"}}],
                 "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]},
                {"toCIDR": ["192.168.0.0/16"],
                 "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
            ]);
        }
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluicePolicy",
               "metadata": {"name": format!("allow-{p}"), "namespace": ns}, "spec": spec})
    } else {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("np-{p}"), "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app-{app}")}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"tier": "web"}},
                          "namespaceSelector": {"matchLabels": {"team": format!("t{}", p % 10)}}}],
                "ports": [{"port": port, "protocol": "TCP"}]
            }]
        }})
    }
}

fn cluster(o: &Options) -> Cluster {
    Cluster {
        namespaces: (0..o.namespaces).map(namespace_of).collect(),
        pods: (0..o.pods).map(|i| pod_plan(o, i)).collect(),
        policies: (0..o.policies).map(|p| policy_plan(o, p)).collect(),
    }
}

/// The identity the agent must derive for a pod (default cluster key, as the agent runs).
fn expected_identity(pod: &PodPlan, ns_labels: &BTreeMap<String, String>) -> u64 {
    let labels = workload_labels(
        &WorkloadMeta {
            namespace: &pod.namespace,
            pod_labels: Some(&pod.labels),
            namespace_labels: Some(ns_labels),
            service_account: Some("default"),
            cluster: Some("default"),
        },
        &LabelFilter::default(),
    );
    derive_identity(&ClusterKey::default(), &labels).0
}

/// Creates the pod, then writes its status as a kubelet does. Returns the instants at which
/// the create and the status write returned.
async fn create_pod(
    client: &kube::Client,
    pod: &PodPlan,
) -> Result<(Instant, Instant), BenchError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let object: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels},
        "spec": {"nodeName": pod.node, "containers": [{"name": "c", "image": "registry.invalid/app",
                 "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .map_err(|e| BenchError::Command(format!("pod object: {e}")))?;
    api.create(&PostParams::default(), &object)
        .await
        .map_err(kube_err(format!(
            "creating pod {}/{}",
            pod.namespace, pod.name
        )))?;
    let created = Instant::now();
    let ip = pod.ip.to_string();
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(kube_err(format!(
            "status of pod {}/{}",
            pod.namespace, pod.name
        )))?;
    Ok((created, Instant::now()))
}

async fn populate(client: &kube::Client, c: &Cluster) -> Result<(), BenchError> {
    let crds =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml"))?;
    let crd_api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (_, doc) in identity_cache::policy::split_documents(&crds) {
        let Ok(Some(v)) = serde_yaml::from_str::<Option<Value>>(&doc) else {
            continue;
        };
        let crd =
            serde_json::from_value(v).map_err(|e| BenchError::Command(format!("CRD: {e}")))?;
        crd_api
            .create(&PostParams::default(), &crd)
            .await
            .map_err(kube_err("creating the sluice CRDs"))?;
    }
    let sluice_all: Api<SluicePolicy> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sluice_all.list(&Default::default()).await.is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Command(
                "the SluicePolicy CRD is not served".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(c.namespaces.iter().map(|(name, labels)| {
        let ns_api = ns_api.clone();
        async move {
            let ns: Namespace =
                serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": name, "labels": labels}}))
                .map_err(|e| BenchError::Command(format!("namespace: {e}")))?;
            ns_api
                .create(&PostParams::default(), &ns)
                .await
                .map_err(kube_err(format!("creating namespace {name}")))
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;

    let started = Instant::now();
    futures::stream::iter(c.pods.iter().map(|p| create_pod(client, p)))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "created {} pods (with status) in {:.1} s",
        c.pods.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    futures::stream::iter(c.policies.iter().map(|p| {
        let client = client.clone();
        async move {
            let ns = p["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if p["kind"] == "SluicePolicy" {
                let obj: SluicePolicy = serde_json::from_value(p.clone())
                    .map_err(|e| BenchError::Command(format!("policy {name}: {e}")))?;
                Api::<SluicePolicy>::namespaced(client, &ns)
                    .create(&PostParams::default(), &obj)
                    .await
                    .map(|_| ())
                    .map_err(kube_err(format!("creating SluicePolicy {ns}/{name}")))
            } else {
                let obj: NetworkPolicy = serde_json::from_value(p.clone())
                    .map_err(|e| BenchError::Command(format!("policy {name}: {e}")))?;
                Api::<NetworkPolicy>::namespaced(client, &ns)
                    .create(&PostParams::default(), &obj)
                    .await
                    .map(|_| ())
                    .map_err(kube_err(format!("creating NetworkPolicy {ns}/{name}")))
            }
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    eprintln!(
        "created {} policies in {:.1} s",
        c.policies.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `ip` with `args`; an error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), BenchError> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(BenchError::Command(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The node's network namespace, deleted on drop.
struct NodeNetns(String);

impl NodeNetns {
    fn create() -> Result<NodeNetns, BenchError> {
        let name = format!("sluice-scale-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NodeNetns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// A directory removed (recursively) on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent process: SIGTERM (then SIGKILL) on drop.
struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The pinned IPv4 ipcache trie, read from this process.
struct Ipcache {
    trie: LpmTrie<MapData, [u8; 4], IpcacheValue>,
}

impl Ipcache {
    fn open(path: &Path) -> Result<Ipcache, BenchError> {
        let err = |reason: String| BenchError::Map {
            path: path.to_owned(),
            reason,
        };
        let data = MapData::from_pin(path).map_err(|e| err(e.to_string()))?;
        let trie = LpmTrie::try_from(Map::LpmTrie(data)).map_err(|e| err(e.to_string()))?;
        Ok(Ipcache { trie })
    }

    /// The identity the dataplane gives `ip` (longest-prefix match, as the program looks up).
    fn identity(&self, ip: Ipv4Addr) -> Option<u64> {
        self.trie
            .get(&Key::new(32, ip.octets()), 0)
            .ok()
            .map(|v| v.identity)
    }
}

/// The `sluice` binary built beside this example.
fn sluice_binary() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| BenchError::Agent("cannot locate the target directory".into()))?;
    let bin = dir.join("sluice");
    if !bin.exists() {
        return Err(BenchError::Agent(format!(
            "{} is missing: cargo build --release -p controlplane --bins",
            bin.display()
        )));
    }
    Ok(bin)
}

fn agent_status(socket: &Path) -> Option<controlplane::api::StatusReport> {
    let mut client = AgentClient::connect(socket).ok()?;
    client.set_timeout(Some(Duration::from_secs(5))).ok()?;
    match client.call(&Request::Status).ok()? {
        Response::Status(s) => Some(*s),
        _ => None,
    }
}

/// Percentile of sorted samples (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let options = Options::parse();
    if let Err(e) = run(&options) {
        eprintln!("kube_scale: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Options) -> Result<(), BenchError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
        return Err(BenchError::Privileges);
    }
    let sluice = sluice_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let api = TestApiServer::start().map_err(BenchError::ApiServer)?;
    let kubeconfig = api.kubeconfig_path();
    let client = runtime.block_on(async {
        let file = kube::config::Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| BenchError::ApiServer(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .map_err(|e| BenchError::ApiServer(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| BenchError::ApiServer(e.to_string()))
    })?;

    let c = cluster(o);
    runtime.block_on(populate(&client, &c))?;
    let ns_labels: BTreeMap<String, BTreeMap<String, String>> =
        c.namespaces.iter().cloned().collect();
    let expected: Vec<(Ipv4Addr, u64)> = c
        .pods
        .iter()
        .map(|p| (p.ip, expected_identity(p, &ns_labels[&p.namespace])))
        .collect();

    // The node: a namespace with one veth pair per local pod (host side `lxbN`).
    let node = NodeNetns::create()?;
    let local: Vec<&PodPlan> = c.pods.iter().filter(|p| p.node == NODE).collect();
    for (i, _) in local.iter().enumerate() {
        let (host, peer) = (format!("lxb{i}"), format!("lxbp{i}"));
        ip(&[
            "-n", &node.0, "link", "add", &host, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&[
            "-n",
            &node.0,
            "link",
            "set",
            &peer,
            "address",
            &format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
        ])?;
        ip(&["-n", &node.0, "link", "set", &host, "up"])?;
        ip(&["-n", &node.0, "link", "set", &peer, "up"])?;
    }

    let work = TempDir(std::env::temp_dir().join(format!("sluice-scale-{}", std::process::id())));
    std::fs::create_dir_all(work.0.join("state"))?;
    let pins = TempDir(PathBuf::from(format!(
        "/sys/fs/bpf/sluice-scale-{}",
        std::process::id()
    )));
    let socket = work.0.join("agent.sock");
    let log = std::fs::File::create(work.0.join("agent.log"))?;
    let started = Instant::now();
    let mut agent = AgentProcess {
        child: Command::new(&sluice)
            .args(["agent", "--source", "kubernetes", "--node-name", NODE])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--netns",
                &node.0,
                "--datapath",
                "kernel",
                "--metrics",
                "off",
            ])
            .args(["--detach-on-exit", "--log-format", "text"])
            .arg("--state-dir")
            .arg(work.0.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--pin-dir")
            .arg(&pins.0)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    };
    let agent_log = || std::fs::read_to_string(work.0.join("agent.log")).unwrap_or_default();

    // (a) Initial sync: every remote pod's address carries its identity in the pinned map.
    let map_path = pins.0.join("ipcache_v4");
    let remote: Vec<(Ipv4Addr, u64)> = expected
        .iter()
        .zip(&c.pods)
        .filter(|(_, p)| p.node != NODE)
        .map(|(e, _)| *e)
        .collect();
    let mut ipcache = None;
    let mut next = 0;
    let mut synced_status = None;
    let initial = loop {
        if started.elapsed() > SYNC_TIMEOUT {
            return Err(BenchError::Agent(format!(
                "not synced within {SYNC_TIMEOUT:?} ({next} of {} addresses); log:\n{}",
                remote.len(),
                agent_log()
            )));
        }
        if let Ok(Some(status)) = agent.child.try_wait() {
            return Err(BenchError::Agent(format!(
                "exited ({status}):\n{}",
                agent_log()
            )));
        }
        if ipcache.is_none() && map_path.exists() {
            ipcache = Ipcache::open(&map_path).ok();
        }
        if let Some(map) = &ipcache {
            // Resume where the last poll stopped: entries only get added during the sync.
            while next < remote.len() && map.identity(remote[next].0) == Some(remote[next].1) {
                next += 1;
            }
            if next == remote.len() {
                break started.elapsed();
            }
        }
        if synced_status.is_none()
            && agent_status(&socket).is_some_and(|s| s.source.contains("synced"))
        {
            synced_status = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let synced_status = synced_status.unwrap_or(initial);
    let ipcache = ipcache.ok_or_else(|| BenchError::Agent("no ipcache map".into()))?;
    let (hwm_sync, _) = memory_kib(agent.pid());
    eprintln!(
        "initial sync: {:.2} s to every address in the dataplane (status said synced at {:.2} s)",
        initial.as_secs_f64(),
        synced_status.as_secs_f64()
    );

    // The local pods, attached as the CNI plugin does once the runtime made their veths.
    for (i, pod) in local.iter().enumerate() {
        let uid = runtime
            .block_on(Api::<Pod>::namespaced(client.clone(), &pod.namespace).get(&pod.name))
            .map_err(kube_err(format!("reading pod {}", pod.name)))?
            .metadata
            .uid;
        let att = CniAttachment {
            container_id: format!("ctr-{i}"),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            uid,
            interface: format!("lxb{i}"),
            ips: vec![pod.ip.to_string()],
            mac: format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
            netns: format!("/var/run/netns/{}", node.0),
        };
        // One connection per request, as the CNI plugin makes.
        let mut api_client =
            AgentClient::connect(&socket).map_err(|e| BenchError::Agent(e.to_string()))?;
        api_client
            .set_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| BenchError::Agent(e.to_string()))?;
        api_client
            .call(&Request::CniAdd(att))
            .map_err(|e| BenchError::Agent(format!("CNI ADD of {}: {e}", pod.name)))?;
    }
    let status = agent_status(&socket).ok_or_else(|| BenchError::Agent("no status".into()))?;
    let policies_applied = status.policies.len();
    let rejected = status.rejected.len();
    let endpoints = status.endpoints.len();

    // (b) Add → enforced, one pod at a time.
    let mut from_status = Vec::with_capacity(o.probes);
    let mut from_create = Vec::with_capacity(o.probes);
    let mut lost = 0;
    for k in 0..o.probes {
        let mut pod = pod_plan(o, o.pods + k);
        pod.node = format!("node-{}", k % 100);
        pod.ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + k as u32);
        let want = expected_identity(&pod, &ns_labels[&pod.namespace]);
        let (created, written) = runtime.block_on(create_pod(&client, &pod))?;
        let deadline = written + PROBE_TIMEOUT;
        loop {
            if ipcache.identity(pod.ip) == Some(want) {
                let now = Instant::now();
                from_status.push((now - written).as_secs_f64() * 1e3);
                from_create.push((now - created).as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > deadline {
                lost += 1;
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        // A pause between pods, as pods arrive in a real cluster.
        std::thread::sleep(Duration::from_millis(10));
    }
    from_status.sort_by(f64::total_cmp);
    from_create.sort_by(f64::total_cmp);

    // (c) Memory.
    let (hwm, rss) = memory_kib(agent.pid());
    agent.stop();

    let p = |v: &[f64], q: f64| percentile(v, q);
    println!(
        "Kubernetes control plane at scale (agent: {}, release build)",
        sluice.display()
    );
    println!(
        "cluster: {} pods ({} on this node, attached: {endpoints}), {} namespaces, {} policies \
         ({policies_applied} applied, {rejected} rejected)",
        c.pods.len(),
        local.len(),
        c.namespaces.len(),
        c.policies.len()
    );
    println!(
        "initial sync (agent start -> every address in the pinned ipcache): {:.2} s \
         (status 'synced' at {:.2} s)",
        initial.as_secs_f64(),
        synced_status.as_secs_f64()
    );
    println!(
        "pod add -> enforced ({} pods one at a time, {lost} not seen within {PROBE_TIMEOUT:?}):",
        o.probes
    );
    println!(
        "  from the status write (pod has its IP): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        p(&from_status, 50.0),
        p(&from_status, 99.0),
        from_status.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  from the pod create:                    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        p(&from_create, 50.0),
        p(&from_create, 99.0),
        from_create.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "agent memory: peak {:.1} MiB (after the initial sync {:.1} MiB), resident at the end {:.1} MiB",
        hwm as f64 / 1024.0,
        hwm_sync as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!(
        "{}",
        json!({
            "pods": c.pods.len(), "policies": c.policies.len(), "namespaces": c.namespaces.len(),
            "local": local.len(), "policies_applied": policies_applied, "rejected": rejected,
            "initial_sync_s": initial.as_secs_f64(), "status_synced_s": synced_status.as_secs_f64(),
            "probes": o.probes, "lost": lost,
            "add_to_enforced_ms": {"p50": p(&from_status, 50.0), "p99": p(&from_status, 99.0),
                                   "max": from_status.last()},
            "create_to_enforced_ms": {"p50": p(&from_create, 50.0), "p99": p(&from_create, 99.0),
                                      "max": from_create.last()},
            "agent_vmhwm_kib": hwm, "agent_vmhwm_after_sync_kib": hwm_sync, "agent_vmrss_kib": rss,
        })
    );
    drop(node);
    drop(api);
    Ok(())
}
