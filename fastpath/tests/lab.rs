//! The fast path with real packets: three pods (frontend, backend, intruder) on veth pairs into
//! a node namespace; sluice's XDP program on the three host-side veths steers their traffic
//! into AF_XDP sockets served by one worker, which decides and forwards every packet.
//!
//! Policy, as in the user's example: `app=frontend` → `app=backend` on TCP 8080 (plus UDP 5353
//! and ICMP echo, to show every tracked protocol); the frontend itself accepts no ingress at
//! all, so every reply it receives is let through by connection tracking alone; pods labelled
//! `app=db` accept no ingress either.
//!
//! Needs root (namespaces, BPF, AF_XDP); skipped with a message otherwise. Every namespace is
//! created here with a unique name and deleted on every exit path (the `Netns` guard).

#[path = "../../xdp-redirect/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fastpath::flow::{FlowEvent, FlowVerdict};
use fastpath::socket::PortSpec;
use fastpath::supervisor::{FastPath, HealthEvent, WorkerState};
use fastpath::worker::{Command, Fault, WorkerConfig};
use identity_cache::identity::{ClusterKey, Identity};
use identity_cache::policy::{ParsedManifest, parse_manifests};
use identity_cache::state::IdentityCache;
use identity_cache::tables::EnforcementConfig;
use identity_cache::verdict::DropReason;
use support::{HostFacts, Netns, Pod, RemoveDir};
use xdp_redirect::loader::{DatapathSettings, Dataplane};

const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-frontend, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: \"8080\", protocol: TCP}, {port: \"5353\", protocol: UDP}]}]
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    icmps: [{fields: [{type: 8, family: IPv4}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-isolated, namespace: t}
spec:
  podSelector: {matchLabels: {app: frontend}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-isolated, namespace: t}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
";

/// The lab. Fields drop in order: workers, loader, pins, pods, node.
struct Lab {
    fast: Option<FastPath>,
    plane: Option<Dataplane>,
    cache: IdentityCache,
    facts: HostFacts,
    _pins: RemoveDir,
    frontend: Pod,
    backend: Pod,
    intruder: Pod,
    node: Netns,
}

impl Lab {
    /// Builds the namespaces and the identity state (on the calling thread; nothing here
    /// needs the node namespace).
    fn new() -> Lab {
        support::ensure_bpffs();
        let node = support::node();
        let frontend = Pod::attach(&node, 1);
        let backend = Pod::attach(&node, 2);
        let intruder = Pod::attach(&node, 3);
        let pin_dir =
            std::path::PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-fp-")));
        let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
        for (pod, name, app) in [
            (&frontend, "frontend", "frontend"),
            (&backend, "backend", "backend"),
            (&intruder, "intruder", "intruder"),
        ] {
            let w = support::local_workload(pod, name, app, vec![pod.ip.into()]);
            cache.upsert_workload(w).expect("workload");
        }
        for doc in parse_manifests(POLICY) {
            match doc.expect("policy") {
                ParsedManifest::Policy(p) => cache.upsert_policy(p),
                ParsedManifest::Empty => {}
            }
        }
        cache.publish();
        let facts = HostFacts::of(&[&frontend, &backend, &intruder]);
        Lab {
            fast: None,
            plane: None,
            cache,
            facts,
            _pins: RemoveDir(pin_dir),
            frontend,
            backend,
            intruder,
            node,
        }
    }

    /// Loads and attaches the XDP program, syncs the maps and starts one worker serving the
    /// three host veths. Runs in the node namespace.
    fn start(&mut self) {
        let settings = DatapathSettings {
            events_per_sec: 0,
            ..DatapathSettings::default()
        };
        let mut plane = Dataplane::open(&self._pins.0, settings).expect("load XDP program");
        plane
            .sync(&self.cache.pending(), &self.facts)
            .expect("sync maps");
        let mut ports = Vec::new();
        for pod in [&self.frontend, &self.backend, &self.intruder] {
            plane.attach(pod.host_ifindex).expect("attach");
            ports.push(PortSpec {
                ifname: pod.host_dev.clone(),
                ifindex: pod.host_ifindex,
                queue: 0,
            });
        }
        let mut config = WorkerConfig::new(0, ports);
        // Tests share two cores with the harness: no pinning, no real-time priority.
        config.scheduling.realtime_priority = None;
        let fast = FastPath::start(vec![config], &self.cache, &mut plane).expect("workers");
        self.plane = Some(plane);
        self.fast = Some(fast);
    }

    fn fast(&mut self) -> &mut FastPath {
        self.fast.as_mut().expect("fast path running")
    }

    fn identity(&self, uid: &str) -> Identity {
        self.cache.workload_identity(uid).expect("identity")
    }

    /// Flow events so far.
    fn events(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        self.fast().drain_events(&mut out);
        out
    }

    /// Packets the worker counted by verdict: (forwarded, dropped, audit).
    fn worker_packets(&mut self) -> [u64; 3] {
        // Counters are published every 100 ms (busy or idle; a blocked worker wakes every 50).
        std::thread::sleep(Duration::from_millis(300));
        let mut sum = [0u64; 3];
        for w in self.fast().workers() {
            let c = w.stats().counters();
            for (s, v) in sum.iter_mut().zip(c.packets) {
                *s += v;
            }
        }
        sum
    }

    fn kernel_drops(&self, reason: DropReason) -> u64 {
        self.plane
            .as_ref()
            .expect("plane")
            .counters()
            .expect("counters")
            .dropped(reason)
    }

    fn teardown(&mut self) {
        if let (Some(mut fast), Some(plane)) = (self.fast.take(), self.plane.as_mut()) {
            fast.stop(plane);
        }
        if let Some(plane) = self.plane.take() {
            plane.destroy().expect("destroy");
        }
    }
}

/// Runs `body` with a started lab on a thread inside the node namespace, then tears it down.
fn with_lab(body: impl FnOnce(&mut Lab) + Send + 'static) {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces, load BPF and open AF_XDP sockets");
        return;
    }
    let mut lab = Lab::new();
    let node = lab.node.name.clone();
    std::thread::spawn(move || {
        support::in_netns(&node, || {
            lab.start();
            body(&mut lab);
            lab.teardown();
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// Runs `f` on a new thread inside namespace `ns`.
fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let name = ns.name.clone();
    std::thread::spawn(move || support::in_netns(&name, f))
}

/// A TCP server in `ns` on `addr` that answers each message with "pong:" + message, for one
/// connection, until `deadline`. Returns what it received.
fn tcp_echo_server(ns: &Netns, addr: SocketAddrV4, within: Duration) -> JoinHandle<Vec<u8>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = spawn_in(ns, move || {
        let listener = support::bind_tcp(addr);
        listener.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).expect("blocking");
                    s.set_read_timeout(Some(Duration::from_millis(500)))
                        .expect("timeout");
                    let mut buf = [0u8; 256];
                    for _ in 0..2 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                got.extend_from_slice(&buf[..n]);
                                let mut reply = b"pong:".to_vec();
                                reply.extend_from_slice(&buf[..n]);
                                let _ = s.write_all(&reply);
                            }
                        }
                    }
                    return got;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        got
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    handle
}

/// Connects from `ns` to `to`, sends `msg`, returns the reply (None if the connection or the
/// reply did not come within 1.5 s).
fn tcp_exchange(ns: &Netns, to: SocketAddrV4, msg: &'static [u8]) -> Option<Vec<u8>> {
    spawn_in(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_millis(1500)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
        s.write_all(msg).ok()?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
    .join()
    .expect("client thread")
}

/// Sends one UDP datagram from `ns` to `to` and waits up to 800 ms for a reply.
fn udp_exchange(ns: &Netns, to: SocketAddrV4, msg: &'static [u8]) -> Option<Vec<u8>> {
    spawn_in(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(800))).ok()?;
        s.send_to(msg, to).ok()?;
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
    .join()
    .expect("client thread")
}

/// A UDP echo server in `ns` until `within` passes; returns the datagrams it got.
fn udp_echo_server(ns: &Netns, addr: SocketAddrV4, within: Duration) -> JoinHandle<Vec<Vec<u8>>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = spawn_in(ns, move || {
        let s = support::bind_udp(addr);
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                got.push(buf[..n].to_vec());
                let _ = s.send_to(&buf[..n], from);
            }
        }
        got
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    handle
}

/// Pings `to` once from `ns`; whether a reply came.
fn ping(ns: &Netns, to: Ipv4Addr) -> bool {
    ns.exec(&["ping", "-c", "1", "-W", "1", &to.to_string()])
        .status
        .success()
}

#[test]
fn policy_decides_tcp_udp_and_icmp_and_replies_need_no_inverse_rule() {
    with_lab(|lab| {
        let backend_ip = lab.backend.ip;
        let frontend_ip = lab.frontend.ip;
        let intruder_id = lab.identity("uid-intruder");

        // TCP frontend -> backend:8080 completes, data flows both ways (the replies reach a
        // frontend that accepts no ingress: connection tracking).
        let server = tcp_echo_server(
            &lab.backend.ns,
            SocketAddrV4::new(backend_ip, 8080),
            Duration::from_secs(4),
        );
        let reply = tcp_exchange(
            &lab.frontend.ns,
            SocketAddrV4::new(backend_ip, 8080),
            b"ping",
        );
        assert_eq!(
            reply.as_deref(),
            Some(&b"pong:ping"[..]),
            "TCP frontend -> backend:8080"
        );
        assert_eq!(server.join().expect("server"), b"ping");

        // The intruder gets nowhere on the same port.
        let server = tcp_echo_server(
            &lab.backend.ns,
            SocketAddrV4::new(backend_ip, 8080),
            Duration::from_secs(2),
        );
        let reply = tcp_exchange(&lab.intruder.ns, SocketAddrV4::new(backend_ip, 8080), b"x");
        assert_eq!(reply, None, "intruder -> backend:8080 must be dropped");
        assert!(server.join().expect("server").is_empty());

        // frontend -> backend:9090 is not in the policy.
        let server = tcp_echo_server(
            &lab.backend.ns,
            SocketAddrV4::new(backend_ip, 9090),
            Duration::from_secs(2),
        );
        let reply = tcp_exchange(&lab.frontend.ns, SocketAddrV4::new(backend_ip, 9090), b"y");
        assert_eq!(reply, None, "frontend -> backend:9090 must be dropped");
        assert!(server.join().expect("server").is_empty());

        // UDP: the same rules; the echo reply needs no rule into the frontend.
        let server = udp_echo_server(
            &lab.backend.ns,
            SocketAddrV4::new(backend_ip, 5353),
            Duration::from_secs(3),
        );
        let allowed = udp_exchange(&lab.frontend.ns, SocketAddrV4::new(backend_ip, 5353), b"u1");
        let denied = udp_exchange(&lab.intruder.ns, SocketAddrV4::new(backend_ip, 5353), b"u2");
        let got = server.join().expect("server");
        assert_eq!(
            allowed.as_deref(),
            Some(&b"u1"[..]),
            "UDP reply reached the frontend"
        );
        assert_eq!(denied, None);
        assert_eq!(
            got,
            vec![b"u1".to_vec()],
            "only the frontend's datagram arrived"
        );

        // ICMP echo: the frontend's ping is answered; the intruder's is not; and nothing may
        // open a connection *to* the isolated frontend, not even the backend.
        assert!(ping(&lab.frontend.ns, backend_ip), "frontend pings backend");
        assert!(
            !ping(&lab.intruder.ns, backend_ip),
            "intruder's ping dropped"
        );
        assert!(
            !ping(&lab.backend.ns, frontend_ip),
            "nothing may enter the frontend"
        );

        // What the worker reported.
        let events = lab.events();
        let intruder_drop = events
            .iter()
            .find(|e| {
                e.source.identity == intruder_id
                    && e.destination.ip == IpAddr::V4(backend_ip)
                    && e.destination.port == 8080
            })
            .unwrap_or_else(|| panic!("no event for intruder -> backend:8080 in {events:#?}"));
        assert_eq!(intruder_drop.verdict, FlowVerdict::Dropped);
        assert_eq!(intruder_drop.drop_reason, Some(DropReason::PolicyDenied));
        let rule = intruder_drop
            .rule
            .as_ref()
            .expect("the rule that made backend default-deny");
        assert_eq!(rule.policy.name, "allow-frontend", "{rule}");
        let forwarded = events
            .iter()
            .find(|e| e.destination.port == 8080 && e.verdict == FlowVerdict::Forwarded)
            .expect("a FORWARDED event for frontend -> backend:8080");
        assert_eq!(forwarded.source.identity, lab.identity("uid-frontend"));
        assert_eq!(
            forwarded.rule.as_ref().map(|r| r.policy.name.as_str()),
            Some("allow-frontend")
        );
        let [fwd, dropped, _] = lab.worker_packets();
        assert!(
            fwd >= 10 && dropped >= 3,
            "worker counters: {fwd} forwarded, {dropped} dropped"
        );
        let lost: u64 = lab
            .fast()
            .workers()
            .flat_map(|w| w.stats().sockets())
            .map(|s| s.lost())
            .sum();
        assert_eq!(lost, 0, "no frame lost at the sockets");
    });
}

#[test]
fn a_spoofed_source_is_dropped_as_spoofed() {
    with_lab(|lab| {
        let before = lab.kernel_drops(DropReason::SpoofedSource);
        let backend_ip = lab.backend.ip;
        let server = udp_echo_server(
            &lab.backend.ns,
            SocketAddrV4::new(backend_ip, 5353),
            Duration::from_millis(1500),
        );
        // The frontend sends from an address that is not its own (nobody's), from its veth.
        let frontend_ns = lab.frontend.ns.name.clone();
        let _ = lab
            .frontend
            .ns
            .exec(&["ip", "addr", "add", "10.77.1.99/32", "dev", "eth0"]);
        let sent = std::thread::spawn(move || {
            support::in_netns(&frontend_ns, || {
                let s = UdpSocket::bind("10.77.1.99:0").expect("bind forged address");
                s.send_to(b"forged", SocketAddrV4::new(backend_ip, 5353))
                    .is_ok()
            })
        })
        .join()
        .expect("sender");
        assert!(sent);
        let got = server.join().expect("server");
        assert!(
            got.is_empty(),
            "a forged source must not reach the backend: {got:?}"
        );
        let after = lab.kernel_drops(DropReason::SpoofedSource);
        assert!(
            after > before,
            "dropped as SPOOFED_SOURCE ({before} -> {after})"
        );
    });
}

#[test]
fn a_new_pod_on_a_reused_ip_is_decided_by_its_own_identity_once_the_barrier_returns() {
    with_lab(|lab| {
        let backend_ip = lab.backend.ip;
        let to = SocketAddrV4::new(backend_ip, 5353);
        let server = udp_echo_server(&lab.backend.ns, to, Duration::from_secs(6));
        // A numbered stream from the frontend, one datagram every 200 µs.
        let seq = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (Arc::clone(&seq), Arc::clone(&stop));
        let sender = spawn_in(&lab.frontend.ns, move || {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !st2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = s2.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = s.send_to(&n.to_be_bytes(), to);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        std::thread::sleep(Duration::from_millis(500));

        // The backend dies; a database pod, which accepts nothing from the frontend, takes
        // its address and interface.
        let old = lab.identity("uid-backend");
        assert!(lab.cache.remove_workload("uid-backend"));
        let reborn = support::local_workload(&lab.backend, "db", "db", vec![backend_ip.into()]);
        let new = lab.cache.upsert_workload(reborn).expect("new pod");
        assert_ne!(old, new);
        let generation = lab.cache.publish();
        lab.cache
            .wait_for_readers(generation, Duration::from_secs(2))
            .expect("every worker moved past the old snapshot");
        let last_before_barrier = seq.load(Ordering::SeqCst);
        let pending = lab.cache.pending();
        let facts = HostFacts::of(&[&lab.frontend, &lab.backend, &lab.intruder]);
        lab.plane
            .as_mut()
            .expect("plane")
            .sync(&pending, &facts)
            .expect("sync");

        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender");
        let got = server.join().expect("server");
        let numbers: Vec<u64> = got
            .iter()
            .filter_map(|d| Some(u64::from_be_bytes(d.as_slice().try_into().ok()?)))
            .collect();
        assert!(
            numbers.iter().any(|&n| n <= last_before_barrier),
            "the stream flowed before the change"
        );
        let late: Vec<u64> = numbers
            .iter()
            .copied()
            .filter(|&n| n > last_before_barrier)
            .collect();
        assert!(
            late.is_empty(),
            "{} datagrams sent after the barrier returned reached the new pod: {:?}",
            late.len(),
            &late[..late.len().min(10)]
        );
        let events = lab.events();
        let under_new: Vec<&FlowEvent> = events
            .iter()
            .filter(|e| e.destination.ip == IpAddr::V4(backend_ip) && e.destination.identity == new)
            .collect();
        assert!(
            under_new.iter().any(|e| e.verdict == FlowVerdict::Dropped
                && e.drop_reason == Some(DropReason::PolicyDenied)),
            "the stream is dropped under the new identity: {events:#?}"
        );
        assert!(
            under_new
                .iter()
                .all(|e| e.verdict != FlowVerdict::Forwarded),
            "nothing forwarded to the new pod"
        );
    });
}

#[test]
fn a_dead_or_stalled_worker_leaves_the_kernel_path_enforcing_the_same_verdicts() {
    with_lab(|lab| {
        let backend_ip = lab.backend.ip;
        let to = SocketAddrV4::new(backend_ip, 5353);
        let check_verdicts = |lab: &mut Lab, what: &str| {
            let server = udp_echo_server(&lab.backend.ns, to, Duration::from_millis(1500));
            let allowed = udp_exchange(&lab.frontend.ns, to, b"ok");
            let denied = udp_exchange(&lab.intruder.ns, to, b"no");
            let got = server.join().expect("server");
            assert_eq!(
                allowed.as_deref(),
                Some(&b"ok"[..]),
                "{what}: allowed flow answered"
            );
            assert_eq!(denied, None, "{what}: denied flow dropped");
            assert_eq!(
                got,
                vec![b"ok".to_vec()],
                "{what}: only the allowed datagram arrived"
            );
        };
        check_verdicts(lab, "worker running");
        let [fwd_before, ..] = lab.worker_packets();

        // Kill the worker: its sockets close, the kernel path takes its queues at once.
        lab.fast().broadcast(&Command::Fault(Fault::Panic));
        // The thread ends once the panic has unwound (printing a backtrace can take a while).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lab.fast().workers().all(|w| w.has_exited()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            lab.fast().workers().all(|w| w.has_exited()),
            "the worker died"
        );
        let kernel_denied = lab.kernel_drops(DropReason::PolicyDenied);
        check_verdicts(lab, "worker dead, kernel path");
        assert!(
            lab.kernel_drops(DropReason::PolicyDenied) > kernel_denied,
            "the kernel path dropped the denied flow"
        );

        // The supervisor notices, and starts it again.
        let mut plane = lab.plane.take().expect("plane");
        let events = lab
            .fast
            .as_mut()
            .expect("fast")
            .check(&lab.cache, &mut plane);
        lab.plane = Some(plane);
        assert!(
            matches!(events.first(), Some(HealthEvent::Died { worker: 0, reason }) if reason.contains("fault injected")),
            "{events:?}"
        );
        assert!(
            events.contains(&HealthEvent::Restarted { worker: 0 }),
            "{events:?}"
        );
        check_verdicts(lab, "worker restarted");
        let [fwd_after, ..] = lab.worker_packets();
        assert!(
            fwd_after > 0,
            "the restarted worker forwards ({fwd_before} before)"
        );

        // A stall: the worker keeps its sockets but stops serving; the supervisor hands its
        // queues to the kernel until it beats again.
        lab.fast().set_stall_threshold(Duration::from_millis(300));
        lab.fast()
            .broadcast(&Command::Fault(Fault::Stall(Duration::from_secs(3))));
        std::thread::sleep(Duration::from_millis(600));
        let mut plane = lab.plane.take().expect("plane");
        let events = lab
            .fast
            .as_mut()
            .expect("fast")
            .check(&lab.cache, &mut plane);
        lab.plane = Some(plane);
        assert!(
            matches!(events.as_slice(), [HealthEvent::Stalled { worker: 0, .. }]),
            "{events:?}"
        );
        assert_eq!(lab.fast().states()[0].1, WorkerState::Stalled);
        check_verdicts(lab, "worker stalled, kernel path");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut recovered = false;
        while Instant::now() < deadline && !recovered {
            std::thread::sleep(Duration::from_millis(200));
            let mut plane = lab.plane.take().expect("plane");
            let events = lab
                .fast
                .as_mut()
                .expect("fast")
                .check(&lab.cache, &mut plane);
            lab.plane = Some(plane);
            recovered = events.contains(&HealthEvent::Recovered { worker: 0 });
        }
        assert!(recovered, "the worker beats again and gets its queues back");
        check_verdicts(lab, "worker recovered");
    });
}

#[test]
fn an_endpoint_in_audit_mode_reports_what_would_be_dropped_and_forwards_it() {
    with_lab(|lab| {
        let backend_ip = lab.backend.ip;
        let to = SocketAddrV4::new(backend_ip, 5353);
        let backend_if = lab.backend.host_ifindex;
        lab.fast().broadcast(&Command::SetAudit {
            ifindex: backend_if,
            audit: true,
        });
        let server = udp_echo_server(&lab.backend.ns, to, Duration::from_millis(1500));
        let _ = udp_exchange(&lab.intruder.ns, to, b"audited");
        let got = server.join().expect("server");
        assert_eq!(got, vec![b"audited".to_vec()], "audit mode forwards");
        let events = lab.events();
        let audit = events
            .iter()
            .find(|e| e.verdict == FlowVerdict::Audit)
            .unwrap_or_else(|| panic!("no AUDIT event in {events:#?}"));
        assert_eq!(audit.drop_reason, Some(DropReason::PolicyDenied));
        assert_eq!(audit.source.identity, lab.identity("uid-intruder"));
    });
}
