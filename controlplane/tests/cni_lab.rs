//! CNI chaining with the real reference plugins: Debian's `ptp` with `host-local` IPAM creates
//! each pod's veth (host side in a node namespace of the test's own), then `sluice-cni`,
//! chained after it, tells the running agent where the pod is attached and returns only once
//! the endpoint is programmed. Invoked per the CNI spec (configuration on stdin, `CNI_*`
//! variables), as a runtime would.
//!
//! Needs root and `/usr/lib/cni/ptp` (Debian's containernetworking-plugins); skipped with a
//! message otherwise.

#[path = "../../xdp-redirect/tests/support/mod.rs"]
mod support;

mod common;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Harness, cni, tcp_ok, tcp_server};
use serde_json::{Value, json};
use support::{Netns, RemoveDir};

const SLUICE_CNI: &str = env!("CARGO_BIN_EXE_sluice-cni");
const PTP: &str = "/usr/lib/cni/ptp";

const STATE: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: \"8080\", protocol: TCP}]}]
---
# Pods the runtime will attach: their labels are known, their interfaces are not.
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {name: web, namespace: shop, labels: {app: frontend}}
spec: {}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {name: api, namespace: shop, labels: {app: backend}}
spec: {}
";

struct CniLab {
    node: Netns,
    dir: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    pins: RemoveDir,
    network: String,
    _tmp: RemoveDir,
}

impl CniLab {
    fn harness(&self) -> Harness<'_> {
        Harness {
            node: &self.node,
            dir: &self.dir,
            state: &self.state,
            socket: &self.socket,
            pins: &self.pins.0,
        }
    }

    fn ptp_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.network,
            "type": "ptp",
            "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": "10.88.0.0/24",
                     "dataDir": self.dir.join("ipam").display().to_string()}
        })
    }

    fn sluice_conf(&self, prev: &Value) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.network,
            "type": "sluice-cni",
            "agentSocket": self.socket.display().to_string(),
            "timeoutSeconds": 10,
            "prevResult": prev,
        })
    }

    /// ptp ADD then sluice-cni ADD, as a conflist chain; returns (sluice-cni ok, its output,
    /// the pod's address).
    fn add(&self, pod: &Netns, name: &str) -> (bool, Value, String) {
        let (ok, prev) = cni(&self.node, PTP, "ADD", pod, name, &self.ptp_conf());
        assert!(ok, "ptp ADD failed: {prev}");
        let ip = prev["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .expect("an address")
            .to_owned();
        let (ok, out) = cni(
            &self.node,
            SLUICE_CNI,
            "ADD",
            pod,
            name,
            &self.sluice_conf(&prev),
        );
        (ok, out, ip)
    }

    fn endpoint(&self, name: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(&self.harness().cli(&["status", "-o", "json"])).ok()?;
        v["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    }
}

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().expect("ip"), port)
}

#[test]
fn a_chained_add_returns_once_the_endpoint_is_programmed_and_policy_applies_from_the_first_packet()
{
    if !support::privileged() || !Path::new(PTP).exists() {
        eprintln!("skipped: needs root and {PTP} (apt-get install containernetworking-plugins)");
        return;
    }
    support::ensure_bpffs();
    let node = support::node();
    let dir = std::env::temp_dir().join(support::unique("sluice-cni-"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    std::fs::write(state.join("shop.yaml"), STATE).expect("state file");
    let lab = CniLab {
        socket: dir.join("agent.sock"),
        pins: RemoveDir(PathBuf::from(format!(
            "/sys/fs/bpf/{}",
            support::unique("sluice-cni-")
        ))),
        network: support::unique("sluicecni"),
        _tmp: RemoveDir(dir.clone()),
        dir,
        state,
        node,
    };
    let _agent = lab
        .harness()
        .agent(&["--metrics", "off"], |v| v["endpoints"].is_array());
    let web = Netns::new("slw");
    let api = Netns::new("sla");
    let ghost = Netns::new("slg");

    // ADD returns the main plugin's result, and by then the endpoint is programmed.
    let (ok, out, web_ip) = lab.add(&web, "web");
    assert!(ok, "sluice-cni ADD failed: {out}");
    assert_eq!(
        out["ips"][0]["address"]
            .as_str()
            .map(|a| a.starts_with(&web_ip)),
        Some(true),
        "{out}"
    );
    let ep = lab
        .endpoint("web")
        .expect("web is an endpoint as soon as ADD returns");
    assert_eq!(ep["datapath"], "fastpath", "{ep}");
    assert_ne!(ep["identity"], 5, "web's labels are known: not init");
    let (ok, out, api_ip) = lab.add(&api, "api");
    assert!(ok, "{out}");
    // A pod no source describes yet: the reserved init identity, default deny.
    let (ok, out, ghost_ip) = lab.add(&ghost, "ghost");
    assert!(ok, "{out}");
    assert_eq!(
        lab.endpoint("ghost").expect("ghost")["identity"],
        5,
        "init identity"
    );

    // Policy applies: web -> api:8080 allowed; the unknown pod may not talk to api, and
    // nothing may talk to it.
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = tcp_server(&api, addr(&api_ip, 8080), Arc::clone(&stop));
    let s2 = tcp_server(&ghost, addr(&ghost_ip, 8080), Arc::clone(&stop));
    assert!(tcp_ok(&web, addr(&api_ip, 8080)), "web -> api:8080");
    assert!(
        !tcp_ok(&ghost, addr(&api_ip, 8080)),
        "init pod -> api dropped"
    );
    assert!(!tcp_ok(&api, addr(&ghost_ip, 8080)), "-> init pod dropped");
    stop.store(true, Ordering::Relaxed);
    let _ = (s1.join(), s2.join());

    // CHECK passes for a programmed pod and fails for one the agent does not have.
    let (ok, _) = cni(
        &lab.node,
        SLUICE_CNI,
        "CHECK",
        &web,
        "web",
        &lab.sluice_conf(&Value::Null),
    );
    assert!(ok, "CHECK web");
    let (ok, err) = cni(
        &lab.node,
        SLUICE_CNI,
        "CHECK",
        &web,
        "nobody",
        &lab.sluice_conf(&Value::Null),
    );
    assert!(!ok);
    assert_eq!(err["code"], 100, "{err}");

    // An attachment the agent cannot program fails the ADD with the reason.
    let bogus = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "nosuchveth0"}, {"name": "eth0", "mac": "02:00:00:00:00:99", "sandbox": "/x"}],
        "ips": [{"address": "10.88.0.250/24", "interface": 1}]});
    let (ok, err) = cni(
        &lab.node,
        SLUICE_CNI,
        "ADD",
        &web,
        "bogus",
        &lab.sluice_conf(&bogus),
    );
    assert!(!ok, "{err}");
    assert_eq!(err["code"], 100, "{err}");
    assert!(err.to_string().contains("nosuchveth0"), "{err}");

    // DEL removes the endpoint (and then the main plugin's DEL removes the veth).
    let (ok, out) = cni(
        &lab.node,
        SLUICE_CNI,
        "DEL",
        &web,
        "web",
        &lab.sluice_conf(&Value::Null),
    );
    assert!(ok, "{out}");
    assert!(lab.endpoint("web").is_none(), "web is gone after DEL");
    let (ok, out) = cni(&lab.node, PTP, "DEL", &web, "web", &lab.ptp_conf());
    assert!(ok, "ptp DEL: {out}");
    for (pod, name) in [(&api, "api"), (&ghost, "ghost")] {
        let _ = cni(
            &lab.node,
            SLUICE_CNI,
            "DEL",
            pod,
            name,
            &lab.sluice_conf(&Value::Null),
        );
        let _ = cni(&lab.node, PTP, "DEL", pod, name, &lab.ptp_conf());
    }
}
