//! What the agent tests share: the `sluice agent` process guard, a harness that starts it in a
//! node namespace and talks to it with the CLI, and traffic helpers run inside namespaces.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use controlplane::flows::FlowRecord;

use crate::support::{self, Netns};

/// The `sluice` binary under test.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// A running agent, killed on drop.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill sends a signal to a process we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where an agent of a test runs and keeps its files.
pub struct Harness<'a> {
    /// The node namespace.
    pub node: &'a Netns,
    /// Work directory (logs).
    pub dir: &'a Path,
    /// State directory.
    pub state: &'a Path,
    /// API socket.
    pub socket: &'a Path,
    /// bpffs pin directory.
    pub pins: &'a Path,
}

impl Harness<'_> {
    /// Starts `sluice agent` in the node namespace with `extra` flags and waits until its
    /// `status -o json` satisfies `ready`.
    pub fn agent(&self, extra: &[&str], ready: impl Fn(&serde_json::Value) -> bool) -> Agent {
        let log = self.dir.join(format!("agent-{}.log", support::unique("")));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(SLUICE)
            .args(["agent", "--netns", &self.node.name])
            .args(extra)
            .arg("--state-dir")
            .arg(self.state)
            .arg("--socket")
            .arg(self.socket)
            .arg("--pin-dir")
            .arg(self.pins)
            .args(["--realtime-priority", "0", "--cores", "0"])
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start sluice agent");
        let agent = Agent {
            child: Some(child),
            log,
        };
        let up = support::wait_for(Duration::from_secs(20), || {
            let v: serde_json::Value =
                serde_json::from_str(&self.cli(&["status", "-o", "json"])).ok()?;
            ready(&v).then_some(())
        });
        assert!(up.is_some(), "agent not ready; log:\n{}", agent.log());
        agent
    }

    /// Runs the CLI against the agent; returns stdout (stderr on failure is appended).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(SLUICE)
            .args(args)
            .arg("--socket")
            .arg(self.socket)
            .output()
            .expect("run sluice");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        text
    }

    /// Every buffered flow matching `filter` (CLI flags), as JSON records.
    pub fn flows(&self, filter: &[&str]) -> Vec<FlowRecord> {
        let mut args = vec!["observe", "-o", "json", "--last", "0"];
        args.extend_from_slice(filter);
        self.cli(&args)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let name = ns.name.clone();
    std::thread::spawn(move || support::in_netns(&name, f))
}

/// A TCP exchange from `ns` to `to`: whether "ping" got "pong" back within 1.5 s.
pub fn tcp_ok(ns: &Netns, to: SocketAddrV4) -> bool {
    spawn_in(ns, move || {
        let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&to.into(), Duration::from_millis(1500))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
        if s.write_all(b"ping").is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).is_ok() && &buf == b"pong"
    })
    .join()
    .expect("client")
}

/// A TCP server answering "pong" to each connection, until `stop`.
pub fn tcp_server(ns: &Netns, addr: SocketAddrV4, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = support::bind_tcp(addr);
        l.set_nonblocking(true).expect("nonblocking");
        tx.send(()).expect("ready");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).is_ok() {
                        let _ = s.write_all(b"pong");
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    h
}

/// Sends numbered UDP datagrams from `ns` to `to` every 500 µs until `stop`.
pub fn udp_stream(
    ns: &Netns,
    to: SocketAddrV4,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> JoinHandle<()> {
    spawn_in(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let n = sent.fetch_add(1, Ordering::Relaxed);
            let _ = s.send_to(&n.to_be_bytes(), to);
            std::thread::sleep(Duration::from_micros(500));
        }
    })
}

/// Counts datagrams arriving at `addr` in `ns` until `stop`.
pub fn udp_counter(
    ns: &Netns,
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    got: Arc<AtomicU64>,
) -> JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        let s = support::bind_udp(addr);
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        tx.send(()).expect("ready");
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if s.recv_from(&mut buf).is_ok() {
                got.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("counter ready");
    h
}

/// Runs a CNI plugin inside the node namespace, per the spec. Returns (exit ok, stdout).
pub fn cni(
    node: &Netns,
    plugin: &str,
    command: &str,
    pod: &Netns,
    name: &str,
    conf: &Value,
) -> (bool, Value) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.name, plugin])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("ctr-{name}"))
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.name))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name};K8S_POD_UID=uid-{name}"
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{plugin}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write conf");
    let out = child.wait_with_output().expect("plugin");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    (out.status.success(), value)
}
