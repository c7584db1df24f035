//! `sluice-demo`: the lab demo (README command 1).
//!
//! It builds a small node in network namespaces (pods frontend, backend and intruder on veths
//! into a node namespace), writes the user's example policy (`app=frontend` → `app=backend` on
//! TCP 8080) into a state directory, starts `sluice agent` on the node, sends real HTTP
//! requests, and shows what `sluice observe` saw: FORWARDED and DROPPED (policy denied) flows,
//! each with the identities and the rule. Then it replays the incident that motivates sluice:
//! the backend pod dies and a new pod with other labels takes its IP address; the first
//! packet to that address is decided by the new pod's identity. It ends with the fast path's
//! per-core latency table (`sluice status --latency`) and removes everything it created, also
//! when interrupted (Ctrl-C).
//!
//! Usage (root): `sluice-demo [--sluice PATH] [--keep-going]`; `./dev demo` builds and runs it.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bench_lab::netns::{self, Netns, RemoveDir};
use bench_lab::{LabError, Result};

/// The demo's namespace: everything it creates lives under it.
const SHOP: &str = "shop";

const POLICY: &str = "# The user's example: only the frontend may call the backend, on TCP 8080.
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-frontend
  namespace: shop
spec:
  endpointSelector:
    matchLabels: {app: backend}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: frontend}
    toPorts:
    - ports: [{port: \"8080\", protocol: TCP}]
---
# The ledger accepts only the billing service.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: ledger-from-billing
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: ledger}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: billing}
";

fn say(step: &str) {
    println!("\n\x1b[1m==> {step}\x1b[0m");
    let _ = std::io::stdout().flush();
}

fn note(text: &str) {
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

/// A pod: its namespace and the host side of its veth.
struct Pod {
    ns: Netns,
    name: String,
    app: String,
    host_dev: String,
    ip: String,
    mac: [u8; 6],
}

fn attach_pod(node: &Netns, role: &str, name: &str, app: &str, subnet: u8) -> Result<Pod> {
    let ns = Netns::new(role)?;
    let host_dev = format!("lxc{}{role}", std::process::id() % 10_000);
    let peer = format!("tmp{}{role}", std::process::id() % 10_000);
    node.ip(&[
        "link", "add", &host_dev, "type", "veth", "peer", "name", &peer,
    ])?;
    node.ip(&["link", "set", &peer, "netns", &ns.name])?;
    ns.ip(&["link", "set", &peer, "name", "eth0"])?;
    let gw = format!("10.200.{subnet}.1");
    let ip = format!("10.200.{subnet}.2");
    node.ip(&["addr", "add", &format!("{gw}/24"), "dev", &host_dev])?;
    node.ip(&["link", "set", &host_dev, "up"])?;
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["route", "add", "default", "via", &gw])?;
    // As a CNI plugin would set them up: full checksums from the pod (frames cross AF_XDP
    // without checksum offload), GRO on where frames are redirected in.
    let _ = ns.exec(&["ethtool", "-K", "eth0", "tx", "off", "gro", "on"]);
    let _ = node.exec(&["ethtool", "-K", &host_dev, "gro", "on"]);
    let mac = ns.mac("eth0")?;
    Ok(Pod {
        ns,
        name: name.into(),
        app: app.into(),
        host_dev,
        ip,
        mac,
    })
}

fn endpoint_yaml(pod: &Pod) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata:
  name: {}
  namespace: {SHOP}
  labels: {{app: {}}}
spec:
  interface: {}
  ips: [{}]
  mac: \"{}\"
  ports: [{{name: http, port: 8080, protocol: TCP}}]
",
        pod.name,
        pod.app,
        pod.host_dev,
        pod.ip,
        netns::mac_text(pod.mac)
    )
}

fn write_endpoints(state: &Path, pods: &[&Pod]) -> Result<()> {
    let text: Vec<String> = pods.iter().map(|p| endpoint_yaml(p)).collect();
    let tmp = state.join(".endpoints.yaml.tmp");
    std::fs::write(&tmp, text.join("---\n"))
        .map_err(|e| LabError::io(format!("writing {}", tmp.display()), e))?;
    // Renamed into place: the agent never reads a half-written file.
    std::fs::rename(&tmp, state.join("endpoints.yaml"))
        .map_err(|e| LabError::io("renaming endpoints.yaml".to_owned(), e))
}

/// The agent process, stopped (SIGTERM, so it detaches what it attached) on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill sends a signal to the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
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

struct Cli {
    sluice: PathBuf,
    socket: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.sluice)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .map_err(|source| LabError::Spawn {
                command: format!("{} {}", self.sluice.display(), args.join(" ")),
                source,
            })?;
        if !out.status.success() {
            return Err(LabError::Command {
                command: format!("sluice {}", args.join(" ")),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Prints a CLI command and its output, indented.
    fn show(&self, args: &[&str]) -> Result<String> {
        println!("    $ sluice {}", args.join(" "));
        let out = self.run(args)?;
        for line in out.lines() {
            println!("      {line}");
        }
        let _ = std::io::stdout().flush();
        Ok(out)
    }

    /// Waits until `sluice status` lists exactly `pods` as endpoints on the fast path.
    fn wait_for_endpoints(&self, pods: &[&str], agent: &Agent) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            netns::check_interrupted()?;
            if let Ok(text) = self.run(&["status", "-o", "json"])
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(eps) = v["endpoints"].as_array()
            {
                let mut names: Vec<&str> = eps.iter().filter_map(|e| e["name"].as_str()).collect();
                names.sort_unstable();
                let mut want = pods.to_vec();
                want.sort_unstable();
                if names == want && eps.iter().all(|e| e["datapath"] == "fastpath") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::System {
            system: "sluice agent".into(),
            reason: format!(
                "did not serve {pods:?} within 30 s; its log:\n{}",
                std::fs::read_to_string(&agent.log).unwrap_or_default()
            ),
        })
    }
}

/// A small HTTP service in `ns` on `addr` until `stop`.
fn http_service(
    ns: &Netns,
    addr: SocketAddrV4,
    who: &'static str,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let path = ns.path();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let listener = netns::enter(&path).and_then(|()| {
            TcpListener::bind(addr).map_err(|e| LabError::io(format!("binding {addr}"), e))
        });
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = listener.set_nonblocking(true);
        let _ = ready_tx.send(Ok(()));
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let body = format!("hello from {who}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| LabError::System {
            system: "http service".into(),
            reason: "did not start".into(),
        })??;
    Ok(handle)
}

/// `GET /` from `ns` to `addr`: the status line, or why there was none.
fn http_get(ns: &Netns, addr: SocketAddrV4) -> Result<std::result::Result<String, String>> {
    ns.run(move || {
        let attempt = || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(1500))?;
            s.set_read_timeout(Some(Duration::from_millis(1500)))?;
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            let status = reply.lines().next().unwrap_or_default().to_owned();
            let body = reply
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or_default()
                .trim()
                .to_owned();
            Ok(format!("{status} \"{body}\""))
        };
        Ok(attempt().map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                "no answer (timed out)".to_owned()
            }
            _ => e.to_string(),
        }))
    })
}

fn request(client: &Pod, to: &Pod, port: u16) -> Result<()> {
    let addr = SocketAddrV4::new(to.ip.parse().expect("pod address"), port);
    let outcome = http_get(&client.ns, addr)?;
    let text = match outcome {
        Ok(status) => format!("\x1b[32m{status}\x1b[0m"),
        Err(why) => format!("\x1b[31m{why}\x1b[0m"),
    };
    note(&format!(
        "{:<9} -> http://{}:{port}/  {text}",
        client.name, to.ip
    ));
    Ok(())
}

fn sluice_binary(args: &[String]) -> PathBuf {
    if let Some(i) = args.iter().position(|a| a == "--sluice")
        && let Some(p) = args.get(i + 1)
    {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("sluice")))
        .unwrap_or_else(|| PathBuf::from("sluice"))
}

fn demo(args: &[String]) -> Result<()> {
    if !netns::is_root() {
        return Err(LabError::NotRoot);
    }
    netns::install_signal_handlers();
    netns::ensure_bpffs()?;
    let sluice = sluice_binary(args);
    if !sluice.is_file() {
        return Err(LabError::Invalid {
            what: "--sluice",
            reason: format!(
                "{} does not exist (build it: cargo build --release -p controlplane)",
                sluice.display()
            ),
        });
    }

    say("1/7 building a node with three pods (network namespaces and veths)");
    let node = Netns::new("node")?;
    node.sysctl("net.ipv4.ip_forward", "1")?;
    let frontend = attach_pod(&node, "fe", "web-7c9", "frontend", 1)?;
    let backend = attach_pod(&node, "be", "api-5d8", "backend", 2)?;
    let intruder = attach_pod(&node, "in", "rogue-1", "intruder", 3)?;
    for p in [&frontend, &backend, &intruder] {
        note(&format!(
            "{SHOP}/{:<8} app={:<9} {:<11} on {}",
            p.name, p.app, p.ip, p.host_dev
        ));
    }

    say("2/7 writing endpoints and the policy into the agent's state directory");
    let work = RemoveDir(std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id())));
    let state = work.0.join("state");
    std::fs::create_dir_all(&state)
        .map_err(|e| LabError::io("creating the state directory".into(), e))?;
    write_endpoints(&state, &[&frontend, &backend, &intruder])?;
    std::fs::write(state.join("policy.yaml"), POLICY)
        .map_err(|e| LabError::io("writing policy.yaml".into(), e))?;
    for line in POLICY.lines().take(14) {
        note(line);
    }

    say("3/7 starting the agent: XDP on the pods' veths, an AF_XDP worker deciding every packet");
    let pins = RemoveDir(PathBuf::from(format!(
        "/sys/fs/bpf/sluice-demo-{}",
        std::process::id()
    )));
    let socket = work.0.join("agent.sock");
    let log = work.0.join("agent.log");
    let log_file = std::fs::File::create(&log).map_err(|e| LabError::io("agent log".into(), e))?;
    let child = Command::new(&sluice)
        .args([
            "agent",
            "--netns",
            &node.name,
            "--metrics",
            "off",
            "--detach-on-exit",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .arg("--pin-dir")
        .arg(&pins.0)
        .args(["--cores", "0"])
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| LabError::io("agent log".into(), e))?,
        )
        .stderr(log_file)
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: format!("{} agent", sluice.display()),
            source,
        })?;
    let agent = Agent { child, log };
    let cli = Cli { sluice, socket };
    cli.wait_for_endpoints(&["web-7c9", "api-5d8", "rogue-1"], &agent)?;
    cli.show(&["status"])?;

    say(
        "4/7 real traffic: an HTTP service in the backend, clients in the frontend and the intruder",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let backend_addr = SocketAddrV4::new(backend.ip.parse().expect("ip"), 8080);
    let svc = http_service(
        &backend.ns,
        backend_addr,
        "api-5d8 (backend)",
        Arc::clone(&stop),
    )?;
    request(&frontend, &backend, 8080)?;
    request(&intruder, &backend, 8080)?;
    request(&frontend, &backend, 9090)?;
    std::thread::sleep(Duration::from_millis(300));

    say("5/7 what sluice saw (sluice observe): who talked to whom, the verdict, the rule");
    cli.show(&["observe", "--last", "12", "--print-policy-names"])?;
    cli.show(&[
        "policy",
        "trace",
        "--from-labels",
        "app=intruder",
        "--from-namespace",
        SHOP,
        "--to-labels",
        "app=backend",
        "--to-namespace",
        SHOP,
        "--port",
        "8080/TCP",
    ])?;

    say("6/7 the incident: the backend pod dies and a new pod with other labels gets its IP");
    stop.store(true, Ordering::Relaxed);
    let _ = svc.join();
    let old_ip = backend.ip.clone();
    drop(backend);
    note(&format!("{SHOP}/api-5d8 deleted; {old_ip} is free"));
    let ledger = attach_pod(&node, "lg", "ledger-9f1", "ledger", 2)?;
    write_endpoints(&state, &[&frontend, &ledger, &intruder])?;
    note(&format!(
        "{SHOP}/ledger-9f1 app=ledger starts with the same address {} on {}",
        ledger.ip, ledger.host_dev
    ));
    cli.wait_for_endpoints(&["web-7c9", "ledger-9f1", "rogue-1"], &agent)?;
    let stop = Arc::new(AtomicBool::new(false));
    let svc = http_service(&ledger.ns, backend_addr, "ledger-9f1", Arc::clone(&stop))?;
    note("the frontend, still configured with the old backend's address, calls it again:");
    request(&frontend, &ledger, 8080)?;
    std::thread::sleep(Duration::from_millis(300));
    note("an IP allowlist would have let this through; sluice decided by the new pod's identity:");
    cli.show(&[
        "observe",
        "--to-pod",
        &format!("{SHOP}/ledger-9f1"),
        "--last",
        "3",
        "--print-policy-names",
    ])?;
    stop.store(true, Ordering::Relaxed);
    let _ = svc.join();

    say("7/7 per-core latency of the fast path (sluice status --latency)");
    let status = cli.run(&["status", "--latency"])?;
    let table: Vec<&str> = status
        .lines()
        .skip_while(|l| !l.to_ascii_lowercase().contains("latency"))
        .collect();
    for line in if table.is_empty() {
        status.lines().collect()
    } else {
        table
    } {
        println!("      {line}");
    }

    say("cleaning up: stopping the agent (it detaches), deleting the namespaces");
    drop(agent);
    drop(pins);
    drop((frontend, ledger, intruder, node, work));
    note("done");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "sluice-demo: builds a three-pod lab in network namespaces, runs the sluice agent on it, \
             sends real traffic and shows the flows, replays a pod-IP reuse incident, prints the \
             per-core latency table, and removes everything.\n\nUsage (root): sluice-demo \
             [--sluice PATH-TO-sluice]"
        );
        return ExitCode::SUCCESS;
    }
    match demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(LabError::Interrupted) => {
            eprintln!("interrupted: everything the demo created was removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
