//! The agent and the CLI as a user runs them: `sluice agent` as a process inside a node
//! namespace, three pods (frontend, backend, intruder) on veths, endpoints and policies in a
//! state directory, and `sluice observe/status/policy trace` asking it over its socket.
//!
//! Needs root (namespaces, BPF, AF_XDP); skipped with a message otherwise. Namespaces, pins
//! and the agent process are removed on every exit path (guards).

#[path = "../../xdp-redirect/tests/support/mod.rs"]
mod support;

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Agent, Harness, tcp_ok, tcp_server, udp_counter, udp_stream};
use controlplane::flows::FlowRecord;
use support::{Netns, Pod, RemoveDir};

const ALLOW_FRONTEND: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: \"8080\", protocol: TCP}, {port: \"5353\", protocol: UDP}]}]
";

struct Lab {
    dir: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    pins: RemoveDir,
    frontend: Pod,
    backend: Pod,
    intruder: Pod,
    node: Netns,
    _tmp: RemoveDir,
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn endpoint_yaml(pod: &Pod, name: &str, app: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec:
  interface: {}
  ips: [{}]
  mac: \"{}\"
",
        pod.host_dev,
        pod.ip,
        mac_text(pod.mac)
    )
}

impl Lab {
    fn new() -> Lab {
        support::ensure_bpffs();
        let node = support::node();
        let frontend = Pod::attach(&node, 1);
        let backend = Pod::attach(&node, 2);
        let intruder = Pod::attach(&node, 3);
        let dir = std::env::temp_dir().join(support::unique("sluice-agent-"));
        let state = dir.join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let endpoints = [
            endpoint_yaml(&frontend, "web-7c9", "frontend"),
            endpoint_yaml(&backend, "api-5d8", "backend"),
            endpoint_yaml(&intruder, "rogue-1", "intruder"),
        ]
        .join("---\n");
        std::fs::write(state.join("endpoints.yaml"), endpoints).expect("endpoints");
        std::fs::write(state.join("policy.yaml"), ALLOW_FRONTEND).expect("policy");
        let pins = RemoveDir(PathBuf::from(format!(
            "/sys/fs/bpf/{}",
            support::unique("sluice-agent-")
        )));
        Lab {
            socket: dir.join("agent.sock"),
            _tmp: RemoveDir(dir.clone()),
            dir,
            state,
            pins,
            frontend,
            backend,
            intruder,
            node,
        }
    }

    fn harness(&self) -> Harness<'_> {
        Harness {
            node: &self.node,
            dir: &self.dir,
            state: &self.state,
            socket: &self.socket,
            pins: &self.pins.0,
        }
    }

    /// Starts `sluice agent` in the node namespace and waits until it serves the three pods.
    fn agent(&self) -> Agent {
        self.agent_with(&["--metrics", "off"])
    }

    /// The same with extra flags.
    fn agent_with(&self, extra: &[&str]) -> Agent {
        self.harness().agent(extra, |v| {
            v["endpoints"].as_array().is_some_and(|eps| {
                eps.len() == 3 && eps.iter().all(|e| e["datapath"] == "fastpath")
            })
        })
    }

    fn cli(&self, args: &[&str]) -> String {
        self.harness().cli(args)
    }

    fn flows(&self, filter: &[&str]) -> Vec<FlowRecord> {
        self.harness().flows(filter)
    }
}

fn with_lab(body: impl FnOnce(&Lab)) {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces, load BPF and open AF_XDP sockets");
        return;
    }
    let lab = Lab::new();
    body(&lab);
}

#[test]
fn observe_trace_and_status_tell_what_the_dataplane_did() {
    with_lab(|lab| {
        let export = lab.dir.join("flows.jsonl");
        let export_arg = export.display().to_string();
        let _agent =
            lab.agent_with(&["--metrics", "127.0.0.1:19962", "--flow-export", &export_arg]);
        let stop = Arc::new(AtomicBool::new(false));
        let b = lab.backend.ip;
        let s1 = tcp_server(
            &lab.backend.ns,
            SocketAddrV4::new(b, 8080),
            Arc::clone(&stop),
        );
        let s2 = tcp_server(
            &lab.backend.ns,
            SocketAddrV4::new(b, 9090),
            Arc::clone(&stop),
        );
        assert!(
            tcp_ok(&lab.frontend.ns, SocketAddrV4::new(b, 8080)),
            "frontend -> backend:8080"
        );
        assert!(
            !tcp_ok(&lab.intruder.ns, SocketAddrV4::new(b, 8080)),
            "intruder -> backend:8080"
        );
        assert!(
            !tcp_ok(&lab.frontend.ns, SocketAddrV4::new(b, 9090)),
            "frontend -> backend:9090"
        );
        stop.store(true, Ordering::Relaxed);
        let _ = (s1.join(), s2.join());
        std::thread::sleep(Duration::from_millis(300));

        // observe: the filters select exactly the right flows.
        let dropped = lab.flows(&["--verdict", "DROPPED", "--to-label", "app=backend"]);
        assert!(!dropped.is_empty(), "no DROPPED flows");
        assert!(dropped.iter().all(|f| {
            f.verdict == "DROPPED"
                && f.destination
                    .labels
                    .iter()
                    .any(|l| l.ends_with("app=backend"))
        }));
        let from_intruder = lab.flows(&["--from-label", "app=intruder", "--port", "8080"]);
        assert!(!from_intruder.is_empty());
        for f in &from_intruder {
            assert_eq!(f.verdict, "DROPPED", "{f:?}");
            assert_eq!(f.drop_reason.as_deref(), Some("POLICY_DENIED"));
            assert_eq!(f.source.pod.as_deref(), Some("rogue-1"));
            assert_eq!(f.destination.pod.as_deref(), Some("api-5d8"));
            assert_eq!(
                f.policy.as_ref().map(|p| p.name.as_str()),
                Some("allow-frontend")
            );
        }
        let forwarded = lab.flows(&["--from-pod", "shop/web-7c9", "--verdict", "FORWARDED"]);
        assert!(forwarded.iter().any(|f| f.destination.port == 8080));
        assert!(
            forwarded
                .iter()
                .all(|f| f.source.pod.as_deref() == Some("web-7c9"))
        );
        assert!(
            forwarded.iter().all(|f| f.destination.port != 9090),
            "9090 was never forwarded"
        );
        let to_9090 = lab.flows(&["--from-pod", "web-7c9", "--port", "9090"]);
        assert!(!to_9090.is_empty() && to_9090.iter().all(|f| f.verdict == "DROPPED"));

        // policy trace agrees with what the dataplane did, rule included.
        let trace = |from: &str, port: &str| -> serde_json::Value {
            let text = lab.cli(&[
                "policy",
                "trace",
                "--from-labels",
                from,
                "--from-namespace",
                "shop",
                "--to-labels",
                "app=backend",
                "--to-namespace",
                "shop",
                "--port",
                port,
                "-o",
                "json",
            ]);
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        let t = trace("app=frontend", "8080/TCP");
        assert_eq!(t["verdict"], "FORWARDED", "{t}");
        assert_eq!(t["rule"]["name"], "allow-frontend", "{t}");
        let t = trace("app=intruder", "8080/TCP");
        assert_eq!(t["verdict"], "DROPPED", "{t}");
        assert_eq!(t["drop_reason"], "POLICY_DENIED", "{t}");
        let t = trace("app=frontend", "9090/TCP");
        assert_eq!(t["verdict"], "DROPPED", "{t}");

        // The audit trail and the metrics say the same.
        let exported: Vec<FlowRecord> = std::fs::read_to_string(&export)
            .expect("flow export")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON flow per line"))
            .collect();
        assert!(
            exported
                .iter()
                .any(|f| f.verdict == "DROPPED" && f.source.pod.as_deref() == Some("rogue-1"))
        );
        assert!(
            exported
                .iter()
                .any(|f| f.verdict == "FORWARDED" && f.destination.port == 8080)
        );
        // Metrics are served in the agent's own namespace (here the host's), on loopback.
        let metrics = {
            let mut s = std::net::TcpStream::connect("127.0.0.1:19962").expect("metrics port");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("request");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        };
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
        };
        assert!(value("sluice_fastpath_packets_total{verdict=\"FORWARDED\"}") > 0.0);
        assert!(value("sluice_fastpath_drops_total{reason=\"POLICY_DENIED\"}") >= 2.0);
        assert!(
            value(
                "sluice_policy_flows_total{kind=\"CiliumNetworkPolicy\",namespace=\"shop\",name=\"allow-frontend\"}"
            ) > 0.0
        );
        assert!(value("sluice_identities") >= 3.0);

        // status reflects a rejected policy file, and keeps enforcing.
        std::fs::write(
            lab.state.join("broken.yaml"),
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {app: backend}}\n  ingress: [{fromEndpointz: []}]\n",
        )
        .expect("write");
        let rejected = support::wait_for(Duration::from_secs(5), || {
            let v: serde_json::Value =
                serde_json::from_str(&lab.cli(&["status", "-o", "json"])).ok()?;
            let r = v["rejected"].as_array()?.clone();
            (!r.is_empty()).then_some(r)
        })
        .expect("the broken file shows in status");
        let r = &rejected[0];
        assert!(
            r["origin"]
                .as_str()
                .is_some_and(|o| o.ends_with("broken.yaml")),
            "{r}"
        );
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("fromEndpointz")),
            "{r}"
        );
        assert_eq!(r["line"], 6, "{r}");
    });
}

#[test]
fn policy_files_reload_live_and_a_broken_file_keeps_the_previous_policy() {
    with_lab(|lab| {
        let _agent = lab.agent();
        let b = lab.backend.ip;
        let delivered = |from: &Netns, port: u16| -> bool {
            let stop = Arc::new(AtomicBool::new(false));
            let got = Arc::new(AtomicU64::new(0));
            let counter = udp_counter(
                &lab.backend.ns,
                SocketAddrV4::new(b, port),
                Arc::clone(&stop),
                Arc::clone(&got),
            );
            let from = from.name.clone();
            std::thread::spawn(move || {
                support::in_netns(&from, || {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    for _ in 0..5 {
                        let _ = s.send_to(b"x", SocketAddrV4::new(b, port));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .join()
            .expect("sender");
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            counter.join().expect("counter");
            got.load(Ordering::Relaxed) > 0
        };
        assert!(delivered(&lab.frontend.ns, 5353));
        assert!(!delivered(&lab.intruder.ns, 5353));

        // Change: the intruder is allowed too (a second rule in the same file).
        let widened = ALLOW_FRONTEND.replace(
            "  - fromEndpoints: [{matchLabels: {app: frontend}}]\n",
            "  - fromEndpoints: [{matchLabels: {app: frontend}}]\n    toPorts: [{ports: [{port: \"5353\", protocol: UDP}]}]\n  - fromEndpoints: [{matchLabels: {app: intruder}}]\n",
        );
        std::fs::write(lab.state.join("policy.yaml"), &widened).expect("write");
        let applied = support::wait_for(Duration::from_secs(5), || {
            delivered(&lab.intruder.ns, 5353).then_some(())
        });
        assert!(applied.is_some(), "the changed policy was not applied");

        // A broken version keeps the previous policy in force.
        std::fs::write(
            lab.state.join("policy.yaml"),
            widened.replace("toPorts", "toPortz"),
        )
        .expect("write");
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            delivered(&lab.intruder.ns, 5353),
            "the previous policy stays"
        );
        assert!(delivered(&lab.frontend.ns, 5353));

        // Removing the file: the backend is no longer selected by any policy: default allow.
        // Then an added file selecting it with no rule for the frontend: dropped.
        std::fs::remove_file(lab.state.join("policy.yaml")).expect("rm");
        std::fs::write(
            lab.state.join("only-intruder.yaml"),
            ALLOW_FRONTEND
                .replace("app: frontend", "app: intruder")
                .replace("allow-frontend", "allow-intruder"),
        )
        .expect("write");
        let applied = support::wait_for(Duration::from_secs(5), || {
            (!delivered(&lab.frontend.ns, 5353)).then_some(())
        });
        assert!(
            applied.is_some(),
            "removing and adding files changes verdicts"
        );
        assert!(delivered(&lab.intruder.ns, 5353));
    });
}

#[test]
fn restarting_the_agent_under_traffic_never_lapses_enforcement() {
    with_lab(|lab| {
        let mut agent = lab.agent();
        let b = lab.backend.ip;
        let stop = Arc::new(AtomicBool::new(false));
        let (forbidden_sent, forbidden_got) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (allowed_sent, allowed_got) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        // The intruder streams to a port only it would use (5354: no rule allows anyone).
        let c1 = udp_counter(
            &lab.backend.ns,
            SocketAddrV4::new(b, 5354),
            Arc::clone(&stop),
            Arc::clone(&forbidden_got),
        );
        let c2 = udp_counter(
            &lab.backend.ns,
            SocketAddrV4::new(b, 5353),
            Arc::clone(&stop),
            Arc::clone(&allowed_got),
        );
        let s1 = udp_stream(
            &lab.intruder.ns,
            SocketAddrV4::new(b, 5354),
            Arc::clone(&stop),
            Arc::clone(&forbidden_sent),
        );
        let s2 = udp_stream(
            &lab.frontend.ns,
            SocketAddrV4::new(b, 5353),
            Arc::clone(&stop),
            Arc::clone(&allowed_sent),
        );
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..2 {
            agent.stop();
            std::thread::sleep(Duration::from_millis(300));
            agent = lab.agent();
            std::thread::sleep(Duration::from_millis(300));
        }
        stop.store(true, Ordering::Relaxed);
        for h in [s1, s2, c1, c2] {
            h.join().expect("traffic thread");
        }
        let (fs, fg) = (
            forbidden_sent.load(Ordering::Relaxed),
            forbidden_got.load(Ordering::Relaxed),
        );
        let (as_, ag) = (
            allowed_sent.load(Ordering::Relaxed),
            allowed_got.load(Ordering::Relaxed),
        );
        assert!(fs > 500, "the forbidden stream ran ({fs} sent)");
        assert_eq!(
            fg, 0,
            "{fg} of {fs} forbidden datagrams got through during restarts"
        );
        assert!(
            ag * 10 >= as_ * 9,
            "the allowed stream kept flowing: {ag} of {as_}"
        );
    });
}
