//! A real Kubernetes API server for the control plane's tests: `sluice-testapi` (the
//! generic Kubernetes API server with etcd3 storage, CRDs, server-side apply, watch with
//! bookmarks; see `controlplane/testapi/README.md`) backed by an etcd of its own, both on
//! free loopback ports, with their data, certificates and logs in a temporary directory.
//!
//! ```ignore
//! let api = TestApiServer::start()?;          // builds the server first if needed
//! let kubeconfig = api.kubeconfig_path();     // or url() + token() + ca_pem_path()
//! api.stop()?; /* outage */ api.restart()?;   // same port, same etcd, same CA
//! ```
//!
//! The binaries come from `controlplane/testapi/build.sh` (output in `target/testapi/`, or
//! `$SLUICE_TESTAPI_DIR`). [`TestApiServer::start`] runs that script once per test process
//! (seconds when everything is built; minutes and a network connection the first time),
//! unless `SLUICE_TESTAPI_NO_BUILD=1`, in which case a missing binary is an error that says
//! to run the script. Both processes are killed, and the directory removed, when the value
//! is dropped (on every exit path, panics included); if the test process itself dies they
//! get SIGKILL from the kernel (parent-death signal).
//!
//! Plain std plus libc; needs `curl` on the PATH (readiness checks and [`TestApiServer::curl`]).

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the API server may take to answer `/readyz` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long etcd may take to accept connections.
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long build.sh may run (a first build downloads ~340 MB and compiles for minutes).
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How many times start() picks new ports when one turns out to be taken.
const START_ATTEMPTS: u32 = 3;

/// What to start: authorization mode and extra users with tokens of their own.
#[derive(Clone, Debug, Default)]
pub struct ApiServerOptions {
    /// `--authorization-mode=RBAC` (bootstrap roles: cluster-admin for system:masters,
    /// discovery for system:authenticated) instead of AlwaysAllow.
    pub rbac: bool,
    /// Extra users `(name, groups)`, each given a bearer token ([`TestApiServer::token_for`]).
    pub users: Vec<(String, Vec<String>)>,
    /// Run etcd and the API server inside this network namespace (a name under
    /// /var/run/netns; its loopback is brought up), so that a process in that namespace
    /// reaches them at `127.0.0.1:PORT`. The harness's own requests (readiness, `curl`,
    /// `watch`) go there too (`ip netns exec`). Needs root.
    pub netns: Option<String>,
}

/// A running API server and its etcd. See the module documentation.
pub struct TestApiServer {
    dir: PathBuf,
    bin_dir: PathBuf,
    options: ApiServerOptions,
    port: u16,
    etcd_client_port: u16,
    etcd_peer_port: u16,
    token: String,
    user_tokens: Vec<(String, String)>,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

impl TestApiServer {
    /// Starts etcd and the API server (AlwaysAllow authorization, one admin token in
    /// `system:masters`) and waits until `/readyz` answers 200.
    pub fn start() -> Result<TestApiServer, String> {
        Self::start_with(&ApiServerOptions::default())
    }

    /// [`TestApiServer::start`] with options.
    pub fn start_with(options: &ApiServerOptions) -> Result<TestApiServer, String> {
        let bin_dir = ensure_built()?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin_dir, options) {
                Ok(server) => return Ok(server),
                // A port taken between choosing and binding it: choose again.
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn try_start(bin_dir: &Path, options: &ApiServerOptions) -> Result<TestApiServer, String> {
        let dir = make_temp_dir()?;
        let [port, etcd_client_port, etcd_peer_port] = free_ports()?;
        let token = random_hex(16)?;
        let mut server = TestApiServer {
            dir,
            bin_dir: bin_dir.to_path_buf(),
            options: options.clone(),
            port,
            etcd_client_port,
            etcd_peer_port,
            token,
            user_tokens: Vec::new(),
            etcd: None,
            apiserver: None,
        };
        // From here on, Drop cleans up whatever was started.
        server.write_tokens()?;
        if let Some(ns) = &server.options.netns {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ip", "link", "set", "lo", "up"])
                .output()
                .map_err(|e| format!("running ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "bringing up loopback in network namespace {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        server.start_etcd()?;
        server.start_apiserver()?;
        server.write_kubeconfig(&server.kubeconfig_path(), &server.token.clone())?;
        Ok(server)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The API server's port (the same across [`TestApiServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin bearer token (user `admin`, group `system:masters`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The bearer token of an extra user given in [`ApiServerOptions::users`].
    pub fn token_for(&self, user: &str) -> Option<&str> {
        self.user_tokens
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, t)| t.as_str())
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.join("pki").join("ca.crt")
    }

    /// A kubeconfig for the admin user (server, CA file, token).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Writes (once) and returns a kubeconfig for an extra user.
    pub fn kubeconfig_for(&self, user: &str) -> Result<PathBuf, String> {
        let token = self
            .token_for(user)
            .ok_or_else(|| format!("no user {user:?} in ApiServerOptions::users"))?;
        let path = self.dir.join(format!("kubeconfig-{user}"));
        self.write_kubeconfig(&path, token)?;
        Ok(path)
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client_port)
    }

    /// The temporary directory (logs: `apiserver.log`, `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the API server process is running (false after [`TestApiServer::stop`]).
    pub fn is_running(&mut self) -> bool {
        matches!(
            self.apiserver.as_mut().map(|c| c.try_wait()),
            Some(Ok(None))
        )
    }

    /// Stops the API server process (SIGTERM, then SIGKILL after 10 s); etcd keeps running.
    /// Clients see connection errors until [`TestApiServer::restart`].
    pub fn stop(&mut self) -> Result<(), String> {
        stop_child(self.apiserver.take(), "sluice-testapi")
    }

    /// Stops the API server if it runs, starts it again on the same port with the same etcd,
    /// certificates and tokens, and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        self.start_apiserver()
    }

    /// The last `lines` lines of the API server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("apiserver.log"), lines)
    }

    /// One request with curl as the admin user: returns (HTTP status, body). `body` is sent
    /// with `content_type` (for example `application/json`, `application/apply-patch+yaml`).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut cmd = self.curl_command(path);
        cmd.args(["--max-time", "30", "-X", method, "-w", "\n%{http_code}"]);
        if let Some(ct) = content_type {
            cmd.args(["-H", &format!("Content-Type: {ct}")]);
        }
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running curl: {e} (is curl installed?)"))?;
        if let Some(b) = body {
            let mut stdin = child.stdin.take().ok_or("curl stdin")?;
            stdin
                .write_all(b.as_bytes())
                .map_err(|e| format!("writing to curl: {e}"))?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        match code.trim().parse::<u16>() {
            Ok(code) if code != 0 => Ok((code, body.to_string())),
            _ => Err(format!(
                "curl {method} {path} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// Starts a watch (`path` should carry `watch=1` and usually `resourceVersion=`) with
    /// curl as the admin user; read events with [`WatchStream::next_line`]. curl exits after
    /// `max_time`.
    pub fn watch(&self, path: &str, max_time: Duration) -> Result<WatchStream, String> {
        let mut cmd = self.curl_command(path);
        cmd.args(["-N", "--max-time", &max_time.as_secs().max(1).to_string()]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running curl: {e} (is curl installed?)"))?;
        let stdout = child.stdout.take().ok_or("curl stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_lines(stdout, tx));
        Ok(WatchStream { child, lines: rx })
    }

    /// `program`, run inside [`ApiServerOptions::netns`] if one is given.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.options.netns {
            Some(ns) => {
                // `ip netns exec` execs the program (no fork): the pid is the program's.
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn curl_command(&self, path: &str) -> Command {
        let mut cmd = self.command("curl");
        cmd.arg("-sS")
            .arg("--cacert")
            .arg(self.ca_pem_path())
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .arg(format!("{}{}", self.url(), path));
        cmd
    }

    fn write_tokens(&mut self) -> Result<(), String> {
        let mut csv = format!("{},admin,admin,\"system:masters\"\n", self.token);
        for (name, groups) in &self.options.users {
            if name.contains([',', '"', '\n'])
                || groups.iter().any(|g| g.contains([',', '"', '\n']))
            {
                return Err(format!(
                    "user {name:?} or its groups contain ',', '\"' or a newline"
                ));
            }
            let token = random_hex(16)?;
            let _ = writeln!(csv, "{token},{name},{name},\"{}\"", groups.join(","));
            self.user_tokens.push((name.clone(), token));
        }
        write_file(&self.dir.join("tokens.csv"), &csv)
    }

    fn write_kubeconfig(&self, path: &Path, token: &str) -> Result<(), String> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sluice-testapi\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {}\ncontexts:\n- name: sluice-testapi\n  context:\n    cluster: sluice-testapi\n    user: user\ncurrent-context: sluice-testapi\n",
            self.url(),
            self.ca_pem_path().display(),
            token
        );
        write_file(path, &text)
    }

    fn start_etcd(&mut self) -> Result<(), String> {
        let client = self.etcd_url();
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let mut cmd = self.command(self.bin_dir.join("etcd"));
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .args([
                "--log-level=warn",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
            ]);
        self.etcd = Some(spawn_logged(cmd, &self.dir.join("etcd.log"))?);
        let deadline = Instant::now() + ETCD_TIMEOUT;
        loop {
            if self.etcd_listening() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.etcd.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "etcd exited ({status}):\n{}",
                    tail(&self.dir.join("etcd.log"), 20)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not listen within {ETCD_TIMEOUT:?}:\n{}",
                    tail(&self.dir.join("etcd.log"), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn etcd_listening(&self) -> bool {
        if self.options.netns.is_none() {
            let addr = ([127, 0, 0, 1], self.etcd_client_port).into();
            return TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        }
        self.command("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "1"])
            .arg(format!("{}/health", self.etcd_url()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start_apiserver(&mut self) -> Result<(), String> {
        let log = self.dir.join("apiserver.log");
        let mut cmd = self.command(self.bin_dir.join("sluice-testapi"));
        cmd.arg(format!("--secure-port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--etcd-servers={}", self.etcd_url()))
            .arg(format!("--cert-dir={}", self.dir.join("pki").display()))
            .arg(format!(
                "--token-file={}",
                self.dir.join("tokens.csv").display()
            ))
            .arg(format!(
                "--authorization-mode={}",
                if self.options.rbac {
                    "RBAC"
                } else {
                    "AlwaysAllow"
                }
            ));
        self.apiserver = Some(spawn_logged(cmd, &log)?);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        loop {
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(|c| c.try_wait()) {
                self.apiserver = None;
                return Err(format!(
                    "sluice-testapi exited ({status}):\n{}",
                    tail(&log, 30)
                ));
            }
            if self.ca_pem_path().exists() {
                match self.curl("GET", "/readyz", None, None) {
                    Ok((200, _)) => return Ok(()),
                    Ok((code, body)) => last = format!("/readyz answered {code}: {}", body.trim()),
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sluice-testapi was not ready within {READY_TIMEOUT:?} ({last}):\n{}",
                    tail(&log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        let _ = stop_child(self.apiserver.take(), "sluice-testapi");
        let _ = stop_child(self.etcd.take(), "etcd");
        if std::env::var_os("SLUICE_TESTAPI_KEEP").is_some() {
            eprintln!("SLUICE_TESTAPI_KEEP: leaving {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Lines of a watch (one JSON event each), read by a thread; curl is killed on drop.
pub struct WatchStream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl WatchStream {
    /// The next line, or None when `timeout` passes first or the stream has ended.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads lines until one contains every one of `needles`, for at most `timeout`.
    pub fn wait_for(&mut self, needles: &[&str], timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_line(left) {
                Some(line) if needles.iter().all(|n| line.contains(n)) => return Ok(line),
                Some(_) => seen += 1,
                None => break,
            }
        }
        Err(format!(
            "no watch event containing {needles:?} within {timeout:?} ({seen} other lines)"
        ))
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(stdout: ChildStdout, tx: mpsc::Sender<String>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        if tx.send(line).is_err() {
            return;
        }
    }
}

/// The directory build.sh writes to.
pub fn testapi_dir() -> PathBuf {
    match std::env::var_os("SLUICE_TESTAPI_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("target").join("testapi"),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs build.sh once per process (unless SLUICE_TESTAPI_NO_BUILD is set) and returns the
/// directory holding `sluice-testapi` and `etcd`.
fn ensure_built() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = testapi_dir();
            let bin = dir.join("bin");
            let script = repo_root().join("controlplane/testapi/build.sh");
            let present = bin.join("sluice-testapi").exists() && bin.join("etcd").exists();
            if std::env::var_os("SLUICE_TESTAPI_NO_BUILD").is_some() {
                return if present {
                    Ok(bin)
                } else {
                    Err(format!(
                        "sluice-testapi is not built in {}: run controlplane/testapi/build.sh (SLUICE_TESTAPI_NO_BUILD is set)",
                        bin.display()
                    ))
                };
            }
            fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let log = dir.join("build.log");
            if !present {
                eprintln!(
                    "sluice-testapi is not built yet: running {} (log: {}; the first build takes minutes)",
                    script.display(),
                    log.display()
                );
            }
            let mut cmd = Command::new("bash");
            cmd.arg(&script);
            let mut child = spawn_logged_truncate(cmd, &log)?;
            let deadline = Instant::now() + BUILD_TIMEOUT;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("{} ran longer than {BUILD_TIMEOUT:?}; killed", script.display()));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                    Err(e) => return Err(format!("waiting for build.sh: {e}")),
                }
            };
            if !status.success() {
                return Err(format!(
                    "{} failed ({status}); run it by hand to see why. Last lines of {}:\n{}",
                    script.display(),
                    log.display(),
                    tail(&log, 15)
                ));
            }
            Ok(bin)
        })
        .clone()
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from one long-lived thread with a parent-death signal (SIGKILL), so that the
/// servers die with the test process even when it is killed. (The signal follows the thread
/// that forked, hence the dedicated thread that lives as long as the process.)
fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testapi-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the testapi-spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("testapi-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testapi-spawner thread is gone"))?
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child, String> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(err);
    let program = cmd.get_program().to_string_lossy().into_owned();
    spawn(cmd).map_err(|e| format!("starting {program}: {e}"))
}

fn spawn_logged_truncate(cmd: Command, log: &Path) -> Result<Child, String> {
    let _ = fs::remove_file(log);
    spawn_logged(cmd, log)
}

/// SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
fn stop_child(child: Option<Child>, what: &str) -> Result<(), String> {
    let Some(mut child) = child else {
        return Ok(());
    };
    if let Ok(Some(_)) = child.try_wait() {
        return Ok(());
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    }
    let _ = child.kill();
    child
        .wait()
        .map(|_| ())
        .map_err(|e| format!("waiting for {what}: {e}"))
}

fn make_temp_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "sluice-testapi-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    Err("could not create a temporary directory".into())
}

/// Three distinct free loopback ports (held together while chosen, then released).
fn free_ports() -> Result<[u16; 3], String> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("finding a free port: {e}"))?;
    let mut ports = [0u16; 3];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l
            .local_addr()
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
    }
    Ok(ports)
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
