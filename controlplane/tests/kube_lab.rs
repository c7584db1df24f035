//! The agent against a real Kubernetes API server (`controlplane/testapi`, started and stopped
//! by the harness, loopback only): `sluice agent --source kubernetes` on node `node-a` of a
//! node namespace, pods created through the API as a user would (with `status.podIP` set as a
//! kubelet would), this node's pods attached by the real `ptp` plugin chained with
//! `sluice-cni`, policies as SluicePolicy and NetworkPolicy objects.
//!
//! Needs root, `/usr/lib/cni/ptp` and the test API server (`controlplane/testapi/build.sh`,
//! run by the harness the first time); skipped with a message otherwise.

#[path = "../../xdp-redirect/tests/support/mod.rs"]
mod support;

#[path = "support/apiserver.rs"]
mod apiserver;

mod common;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apiserver::TestApiServer;
use common::{Agent, Harness, cni, tcp_ok, tcp_server};
use serde_json::{Value, json};
use support::{Netns, RemoveDir};

const PTP: &str = "/usr/lib/cni/ptp";
const SLUICE_CNI: &str = env!("CARGO_BIN_EXE_sluice-cni");
const NODE: &str = "node-a";

struct KubeLab {
    api: TestApiServer,
    node: Netns,
    dir: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    pins: RemoveDir,
    network: String,
    _tmp: RemoveDir,
}

impl KubeLab {
    fn harness(&self) -> Harness<'_> {
        Harness {
            node: &self.node,
            dir: &self.dir,
            state: &self.state,
            socket: &self.socket,
            pins: &self.pins.0,
        }
    }

    /// The cluster's identity key file (every node's agent is given it).
    fn cluster_key(&self) -> String {
        self.dir.join("cluster.key").display().to_string()
    }

    fn agent(&self) -> Agent {
        let kubeconfig = self.api.kubeconfig_path().display().to_string();
        self.harness().agent(
            &[
                "--metrics",
                "off",
                "--source",
                "kubernetes",
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                NODE,
                "--cluster-key",
                &self.cluster_key(),
            ],
            |v| v["source"].as_str().is_some_and(|s| s.contains("synced")),
        )
    }

    /// `kubectl create -f` of one object; panics with the server's answer on failure.
    fn create(&self, path: &str, object: Value) -> Value {
        let (code, body) = self
            .api
            .curl(
                "POST",
                path,
                Some("application/json"),
                Some(&object.to_string()),
            )
            .expect("curl");
        assert!(code == 201 || code == 200, "POST {path}: {code} {body}");
        serde_json::from_str(&body).expect("json")
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = self.api.curl("GET", path, None, None).expect("curl");
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json")
    }

    fn delete(&self, path: &str) {
        let (code, body) = self.api.curl("DELETE", path, None, None).expect("curl");
        assert!(code == 200 || code == 202, "DELETE {path}: {code} {body}");
    }

    /// Creates pod `name` (labels `app`) on `node`, and sets its address as a kubelet would.
    fn pod(&self, name: &str, app: &str, node: &str, ip: &str) {
        let path = "/api/v1/namespaces/shop/pods";
        self.create(
            path,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
                   "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none",
                            "ports": [{"name": "http", "containerPort": 8080}]}]}}),
        );
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
        let (code, body) = self
            .api
            .curl(
                "PATCH",
                &format!("{path}/{name}/status"),
                Some("application/merge-patch+json"),
                Some(&status.to_string()),
            )
            .expect("curl");
        assert_eq!(code, 200, "status of {name}: {body}");
    }

    fn ptp_conf(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": self.network, "type": "ptp", "ipMasq": false,
               "ipam": {"type": "host-local", "subnet": "10.89.0.0/24",
                        "dataDir": self.dir.join("ipam").display().to_string()}})
    }

    /// The runtime's part: ptp ADD, then sluice-cni ADD; returns the pod's address.
    fn attach(&self, pod: &Netns, name: &str) -> String {
        let (ok, prev) = cni(&self.node, PTP, "ADD", pod, name, &self.ptp_conf());
        assert!(ok, "ptp ADD: {prev}");
        let conf = json!({"cniVersion": "1.0.0", "name": self.network, "type": "sluice-cni",
                          "agentSocket": self.socket.display().to_string(), "prevResult": prev});
        let (ok, out) = cni(&self.node, SLUICE_CNI, "ADD", pod, name, &conf);
        assert!(ok, "sluice-cni ADD: {out}");
        prev["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .expect("address")
            .to_owned()
    }

    fn trace(&self, args: &[&str]) -> Value {
        let mut all = vec!["policy", "trace"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.harness().cli(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The labels the agent gives the address `ip`.
    fn labels_of(&self, ip: &str) -> Vec<String> {
        let t = self.trace(&["--from-ip", ip, "--to-ip", ip, "--port", "80/TCP"]);
        t["from_labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().expect("ip"), port)
}

fn lab() -> Option<KubeLab> {
    if !support::privileged() || !Path::new(PTP).exists() {
        eprintln!("skipped: needs root and {PTP}");
        return None;
    }
    let api = match TestApiServer::start() {
        Ok(api) => api,
        Err(e) => {
            eprintln!("skipped: no test API server ({e})");
            return None;
        }
    };
    support::ensure_bpffs();
    let node = support::node();
    let dir = std::env::temp_dir().join(support::unique("sluice-kube-"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("dir");
    std::fs::write(
        dir.join("cluster.key"),
        "5f1c0e7d9a2b4c6e8f0a1b3c5d7e9f21\n",
    )
    .expect("key");
    std::fs::write(dir.join("other.key"), "c0ffee00c0ffee00c0ffee00c0ffee00\n").expect("key");
    let lab = KubeLab {
        api,
        node,
        socket: dir.join("agent.sock"),
        pins: RemoveDir(PathBuf::from(format!(
            "/sys/fs/bpf/{}",
            support::unique("sluice-kube-")
        ))),
        network: support::unique("sluicekube"),
        _tmp: RemoveDir(dir.clone()),
        dir,
        state,
    };
    // The project's CRDs, as deploy/crds.yaml has them.
    let crds = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml"))
        .expect("deploy/crds.yaml");
    for (_, doc) in identity_cache::policy::split_documents(&crds) {
        let Ok(Some(v)) = serde_yaml::from_str::<Option<Value>>(&doc) else {
            continue;
        };
        lab.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", v);
    }
    for plural in ["sluicepolicies", "sluiceclusterpolicies"] {
        let ready = support::wait_for(Duration::from_secs(20), || {
            let (code, _) = lab
                .api
                .curl(
                    "GET",
                    &format!("/apis/sluice.dev/v1alpha1/{plural}"),
                    None,
                    None,
                )
                .ok()?;
            (code == 200).then_some(())
        });
        assert!(ready.is_some(), "CRD {plural} not served");
    }
    lab.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    );
    Some(lab)
}

/// A minimal `cilium.io/v2` CRD (schema left open), as the Cilium chart installs it.
fn cilium_crd(kind: &str, plural: &str, scope: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": format!("{plural}.cilium.io")},
           "spec": {"group": "cilium.io", "scope": scope,
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                              "listKind": format!("{kind}List")},
                    "versions": [{"name": "v2", "served": true, "storage": true,
                                  "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                      "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

const ALLOW: &str = r#"{"apiVersion": "sluice.dev/v1alpha1", "kind": "SluicePolicy",
  "metadata": {"name": "allow-frontend", "namespace": "shop"},
  "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}},
           "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}],
                        "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}}"#;

#[test]
fn the_agent_converges_on_the_api_servers_state_and_survives_its_outage() {
    let Some(lab) = lab() else {
        return;
    };
    let policies = "/apis/sluice.dev/v1alpha1/namespaces/shop/sluicepolicies";
    lab.create(policies, serde_json::from_str(ALLOW).expect("json"));
    lab.create(
        policies,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluicePolicy",
               "metadata": {"name": "broken", "namespace": "shop"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}},
                        "ingress": [{"fromEndpointz": []}]}}),
    );
    lab.pod("web", "frontend", NODE, "10.89.0.250");
    lab.pod("api", "backend", NODE, "10.89.0.251");
    lab.pod("far", "remote", "node-b", "10.99.0.7");
    let _agent = lab.agent();
    // No Cilium CRDs in this cluster: nothing to watch, and the agent says so.
    let status: Value =
        serde_json::from_str(&lab.harness().cli(&["status", "-o", "json"])).expect("status");
    assert!(
        status["source"]
            .as_str()
            .is_some_and(|s| s.contains("no cilium.io/v2 policy CRDs")),
        "{status}"
    );

    // This node's pods, attached by the runtime's CNI chain.
    let web = Netns::new("skw");
    let api = Netns::new("ska");
    let web_ip = lab.attach(&web, "web");
    let api_ip = lab.attach(&api, "api");

    // The verdicts the agent computes, and the packets, follow the API objects.
    let t = lab.trace(&[
        "--from-pod",
        "shop/web",
        "--to-pod",
        "shop/api",
        "--port",
        "8080/TCP",
    ]);
    assert_eq!(t["verdict"], "FORWARDED", "{t}");
    assert_eq!(t["rule"]["name"], "allow-frontend", "{t}");
    let t = lab.trace(&[
        "--from-pod",
        "shop/web",
        "--to-pod",
        "shop/api",
        "--port",
        "9090/TCP",
    ]);
    assert_eq!(t["verdict"], "DROPPED", "{t}");
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = tcp_server(&api, addr(&api_ip, 8080), Arc::clone(&stop));
    let s2 = tcp_server(&api, addr(&api_ip, 9090), Arc::clone(&stop));
    assert!(tcp_ok(&web, addr(&api_ip, 8080)), "web -> api:8080");
    assert!(
        !tcp_ok(&web, addr(&api_ip, 9090)),
        "web -> api:9090 dropped"
    );

    // A second node's agent given the same cluster key derives the same identity numbers
    // without coordination (the frontend is a local endpoint here and a remote pod, by its
    // status address, there); an agent of another cluster (another key) derives others.
    for (node_name, key, same) in [
        ("node-b", lab.cluster_key(), true),
        (
            "node-c",
            lab.dir.join("other.key").display().to_string(),
            false,
        ),
    ] {
        let node_b = support::node();
        let socket_b = lab.dir.join(format!("agent-{node_name}.sock"));
        let pins_b = RemoveDir(PathBuf::from(format!(
            "/sys/fs/bpf/{}",
            support::unique("sluice-kube-b-")
        )));
        let other = Harness {
            node: &node_b,
            dir: &lab.dir,
            state: &lab.state,
            socket: &socket_b,
            pins: &pins_b.0,
        };
        let kubeconfig = lab.api.kubeconfig_path().display().to_string();
        let _agent_b = other.agent(
            &[
                "--metrics",
                "off",
                "--source",
                "kubernetes",
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                node_name,
                "--cluster-key",
                &key,
            ],
            |v| v["source"].as_str().is_some_and(|s| s.contains("synced")),
        );
        let here = lab.trace(&[
            "--from-pod",
            "shop/web",
            "--to-pod",
            "shop/api",
            "--port",
            "80/TCP",
        ]);
        let text = other.cli(&[
            "policy",
            "trace",
            "--from-ip",
            "10.89.0.250",
            "--to-ip",
            "10.89.0.251",
            "--port",
            "80/TCP",
            "-o",
            "json",
        ]);
        let there: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(
            there["from_identity"].as_u64().is_some_and(|n| n >= 256),
            "{there}"
        );
        if same {
            assert_eq!(
                here["from_identity"], there["from_identity"],
                "{here}\n{there}"
            );
            assert_eq!(here["to_identity"], there["to_identity"]);
        } else {
            assert_ne!(
                here["from_identity"], there["from_identity"],
                "{here}\n{there}"
            );
            assert_ne!(here["to_identity"], there["to_identity"]);
        }
    }
    // An unreadable key file stops the agent before it touches anything, and says why.
    let out = std::process::Command::new(common::SLUICE)
        .args(["agent", "--source", "kubernetes", "--cluster-key"])
        .arg(lab.dir.join("no-such.key"))
        .arg("--socket")
        .arg(lab.dir.join("unused.sock"))
        .output()
        .expect("run sluice agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no-such.key") && err.contains("cannot read"),
        "{err}"
    );

    // The remote pod's address carries its identity.
    assert!(
        lab.labels_of("10.99.0.7")
            .iter()
            .any(|l| l == "k8s:app=remote")
    );
    // Its namespace's labels are part of it: relabelling the namespace re-derives it.
    let (code, body) = lab
        .api
        .curl(
            "PATCH",
            "/api/v1/namespaces/shop",
            Some("application/merge-patch+json"),
            Some(r#"{"metadata": {"labels": {"tier": "gold"}}}"#),
        )
        .expect("curl");
    assert_eq!(code, 200, "labelling the namespace: {body}");
    let relabelled = support::wait_for(Duration::from_secs(10), || {
        lab.labels_of("10.99.0.7")
            .iter()
            .any(|l| l.ends_with("namespace.labels.tier=gold"))
            .then_some(())
    });
    assert!(
        relabelled.is_some(),
        "the remote pod's identity follows its namespace's labels: {:?}",
        lab.labels_of("10.99.0.7")
    );

    // Status conditions: accepted, and rejected with the field path.
    let ok = lab.get(&format!("{policies}/allow-frontend"));
    let bad = support::wait_for(Duration::from_secs(10), || {
        let v = lab.get(&format!("{policies}/broken"));
        let has = v["status"]["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
        has.then_some(v)
    })
    .expect("the broken policy gets a status");
    let cond = &bad["status"]["conditions"][0];
    assert_eq!(cond["type"], "Accepted");
    assert_eq!(cond["status"], "False", "{cond}");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("fromEndpointz")),
        "{cond}"
    );
    let ok_cond = support::wait_for(Duration::from_secs(10), || {
        let v = lab.get(&format!("{policies}/allow-frontend"));
        v["status"]["conditions"].get(0).cloned()
    })
    .unwrap_or_else(|| panic!("no status on the valid policy: {ok}"));
    assert_eq!(ok_cond["status"], "True", "{ok_cond}");

    // IP reuse: the remote pod dies and another pod with other labels takes its address.
    lab.delete("/api/v1/namespaces/shop/pods/far");
    lab.pod("far2", "other", "node-b", "10.99.0.7");
    let reused = support::wait_for(Duration::from_secs(10), || {
        lab.labels_of("10.99.0.7")
            .iter()
            .any(|l| l == "k8s:app=other")
            .then_some(())
    });
    assert!(reused.is_some(), "the new pod's identity is in force");
    // A late delete of an old pod does not disturb a new one: the new pod is created while
    // the old one still holds the address, then the old one goes.
    lab.pod("old", "old", "node-b", "10.99.0.8");
    lab.pod("new", "new", "node-b", "10.99.0.8");
    std::thread::sleep(Duration::from_millis(500));
    lab.delete("/api/v1/namespaces/shop/pods/old");
    std::thread::sleep(Duration::from_millis(800));
    let labels = lab.labels_of("10.99.0.8");
    assert!(labels.iter().any(|l| l == "k8s:app=new"), "{labels:?}");

    // The API server goes away: enforcement continues with the last known state.
    let mut api_server = lab.api;
    api_server.stop().expect("stop the API server");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        tcp_ok(&web, addr(&api_ip, 8080)),
        "still allowed during the outage"
    );
    assert!(
        !tcp_ok(&web, addr(&api_ip, 9090)),
        "still dropped during the outage"
    );
    api_server.restart().expect("restart the API server");
    let lab = KubeLab {
        api: api_server,
        ..lab
    };
    // A change made after the outage is applied once the watches resync.
    lab.create(
        policies,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluicePolicy",
               "metadata": {"name": "allow-9090", "namespace": "shop"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}},
                        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}],
                                     "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]}]}}),
    );
    let applied = support::wait_for(Duration::from_secs(30), || {
        let t = lab.trace(&[
            "--from-pod",
            "shop/web",
            "--to-pod",
            "shop/api",
            "--port",
            "9090/TCP",
        ]);
        (t["verdict"] == "FORWARDED").then_some(())
    });
    assert!(
        applied.is_some(),
        "the change made after the outage was applied"
    );
    assert!(
        tcp_ok(&web, addr(&api_ip, 9090)),
        "web -> api:9090 now allowed"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = (s1.join(), s2.join());
    let _ = web_ip;
    for (pod, name) in [(&web, "web"), (&api, "api")] {
        let conf = json!({"cniVersion": "1.0.0", "name": lab.network, "type": "sluice-cni",
                          "agentSocket": lab.socket.display().to_string()});
        let _ = cni(&lab.node, SLUICE_CNI, "DEL", pod, name, &conf);
        let _ = cni(&lab.node, PTP, "DEL", pod, name, &lab.ptp_conf());
    }
}

#[test]
fn cilium_policies_in_the_cluster_are_enforced_and_never_written() {
    let Some(lab) = lab() else {
        return;
    };
    for (kind, plural, scope) in [
        ("CiliumNetworkPolicy", "ciliumnetworkpolicies", "Namespaced"),
        (
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
            "Cluster",
        ),
    ] {
        lab.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            cilium_crd(kind, plural, scope),
        );
        let served = support::wait_for(Duration::from_secs(20), || {
            let (code, _) = lab
                .api
                .curl("GET", &format!("/apis/cilium.io/v2/{plural}"), None, None)
                .ok()?;
            (code == 200).then_some(())
        });
        assert!(served.is_some(), "CRD {plural} not served");
    }
    let cnps = "/apis/cilium.io/v2/namespaces/shop/ciliumnetworkpolicies";
    lab.create(
        cnps,
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "cnp-allow-7070", "namespace": "shop"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}},
                        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}],
                                     "toPorts": [{"ports": [{"port": "7070", "protocol": "TCP"}]}]}]}}),
    );
    lab.pod("web", "frontend", NODE, "10.89.0.250");
    lab.pod("api", "backend", NODE, "10.89.0.251");
    let _agent = lab.agent();
    let status: Value =
        serde_json::from_str(&lab.harness().cli(&["status", "-o", "json"])).expect("status");
    assert!(
        status["source"].as_str().is_some_and(|s| s
            .contains("cilium.io/v2 CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy watched")),
        "{status}"
    );
    let web = Netns::new("scw");
    let api = Netns::new("sca");
    lab.attach(&web, "web");
    let api_ip = lab.attach(&api, "api");
    let trace = |port: &str| {
        lab.trace(&[
            "--from-pod",
            "shop/web",
            "--to-pod",
            "shop/api",
            "--port",
            port,
        ])
    };
    let t = trace("7070/TCP");
    assert_eq!(t["verdict"], "FORWARDED", "{t}");
    assert_eq!(t["rule"]["name"], "cnp-allow-7070", "{t}");
    assert_eq!(trace("9090/TCP")["verdict"], "DROPPED");
    let stop = Arc::new(AtomicBool::new(false));
    let server = tcp_server(&api, addr(&api_ip, 7070), Arc::clone(&stop));
    assert!(tcp_ok(&web, addr(&api_ip, 7070)), "web -> api:7070 allowed");

    // A cluster-wide policy created while the agent runs is watched too.
    lab.create(
        "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies",
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "ccnp-allow-9090"},
               "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}},
                        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}],
                                     "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]}]}}),
    );
    let allowed = support::wait_for(Duration::from_secs(10), || {
        (trace("9090/TCP")["verdict"] == "FORWARDED").then_some(())
    });
    assert!(allowed.is_some(), "the CCNP is enforced");
    let status: Value =
        serde_json::from_str(&lab.harness().cli(&["status", "-o", "json"])).expect("status");
    let origins: Vec<&str> = status["policies"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["origin"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        origins.contains(&"CiliumNetworkPolicy shop/cnp-allow-7070")
            && origins.contains(&"CiliumClusterwideNetworkPolicy ccnp-allow-9090"),
        "{origins:?}"
    );
    // Cilium's objects are read-only to sluice: no status written, ever.
    std::thread::sleep(Duration::from_millis(500));
    let cnp = lab.get(&format!("{cnps}/cnp-allow-7070"));
    assert!(cnp.get("status").is_none_or(Value::is_null), "{cnp}");
    let ccnp = lab.get("/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies/ccnp-allow-9090");
    assert!(ccnp.get("status").is_none_or(Value::is_null), "{ccnp}");

    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    for (pod, name) in [(&web, "web"), (&api, "api")] {
        let conf = json!({"cniVersion": "1.0.0", "name": lab.network, "type": "sluice-cni",
                          "agentSocket": lab.socket.display().to_string()});
        let _ = cni(&lab.node, SLUICE_CNI, "DEL", pod, name, &conf);
        let _ = cni(&lab.node, PTP, "DEL", pod, name, &lab.ptp_conf());
    }
}
