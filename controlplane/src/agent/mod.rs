//! The node agent (`sluice agent`): runs the dataplane on a node.
//!
//! - [`config`]: flags and the configuration file;
//! - [`controller`]: the thread that owns the identity cache, the XDP dataplane and the
//!   workers, applies the source, watches health and collects flows;
//! - [`enrich`]: numeric flow events → readable [`crate::flows::FlowRecord`]s;
//! - [`hub`]: the recent-flow buffer, live followers and the JSON-lines export;
//! - [`server`]: the local API socket and the metrics endpoint.
//!
//! On SIGTERM/SIGINT the agent stops its workers (their queues fall back to the in-kernel
//! path) and exits, leaving the XDP program attached and its maps pinned so enforcement does
//! not lapse until the next agent re-adopts them; `--detach-on-exit` removes everything it
//! created instead.

pub mod config;
pub mod controller;
pub mod enrich;
pub mod hub;
pub mod server;

use std::sync::Arc;

pub use config::{AgentArgs, AgentConfig, DatapathMode, SourceKind};

use controller::{ControlMsg, Controller};
use hub::{FlowExport, FlowHub};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The network namespace to enter does not exist or cannot be entered.
    #[error("cannot enter network namespace {name}: {source}")]
    Netns {
        /// Its name.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
    /// bpffs is not mounted and could not be.
    #[error("cannot mount bpffs on {path}: {source}")]
    Bpffs {
        /// Mount point.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The flow export file cannot be opened.
    #[error("cannot open the flow export {path}: {source}")]
    Export {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The dataplane could not be loaded.
    #[error(transparent)]
    Controller(#[from] controller::ControllerError),
    /// A front end could not start.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The Kubernetes client could not be configured.
    #[error("Kubernetes client: {0}")]
    Kube(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn enter_netns(name: &str) -> Result<(), AgentError> {
    let path = if name.contains('/') {
        std::path::PathBuf::from(name)
    } else {
        std::path::Path::new("/var/run/netns").join(name)
    };
    let err = |source| AgentError::Netns {
        name: name.to_owned(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(err)?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace file we hold open; it moves only the calling thread (the
    // controller), and the threads it starts later (the workers) inherit it.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Mounts bpffs on the root of `pin_dir` (`/sys/fs/bpf`) when nothing is mounted there.
fn ensure_bpffs(pin_dir: &std::path::Path) -> Result<(), AgentError> {
    let root = std::path::Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) {
        return Ok(());
    }
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some("/sys/fs/bpf") && f.next() == Some("bpf")
        });
    if mounted {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("static string");
    let (src, target, fstype) = (c("bpf"), c("/sys/fs/bpf"), c("bpf"));
    // SAFETY: mount reads the NUL-terminated strings we own; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(AgentError::Bpffs {
            path: "/sys/fs/bpf".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted bpffs on /sys/fs/bpf");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// A client from `kubeconfig`, else in-cluster credentials or the default kubeconfig.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, AgentError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| AgentError::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| AgentError::Kube(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AgentError::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| AgentError::Kube(e.to_string()))
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: AgentArgs) -> Result<(), AgentError> {
    let config = AgentConfig::load(&args)?;
    let identity_key = config.identity_key()?;
    init_logging(&config.log_format);
    ensure_bpffs(&config.pin_dir)?;
    let export = match &config.flow_export {
        Some(path) => Some(
            FlowExport::open(path, config.flow_export_max_bytes).map_err(|source| {
                AgentError::Export {
                    path: path.display().to_string(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    let hub = Arc::new(FlowHub::new(config.flow_buffer, export));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    // The API socket first: a second agent must fail before touching the dataplane.
    let api = {
        let _guard = runtime.enter();
        server::bind_api(&config.socket)?
    };
    let source = match config.source {
        SourceKind::Files => crate::source::Source::files(&config.state_dir),
        SourceKind::Kubernetes => {
            let client = runtime.block_on(kube_client(config.kubeconfig.as_deref()))?;
            let node = config
                .node_name
                .clone()
                .or_else(|| std::env::var("NODE_NAME").ok())
                .unwrap_or_else(hostname);
            tracing::info!("watching the Kubernetes API as node {node}");
            crate::source::Source::Kube(Box::new(crate::source::kube::KubeSource::start(
                runtime.handle(),
                client,
                &node,
            )))
        }
    };
    // The dataplane side (the controller thread, and the workers it starts) lives in the
    // node's network namespace; the front ends and the Kubernetes client stay in the one the
    // agent was started in (with --netns, a lab node's loopback is not the host's).
    let (control, inbox) = crossbeam::channel::bounded::<ControlMsg>(256);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let thread_config = config.clone();
    let thread_hub = Arc::clone(&hub);
    let control_thread = std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn(move || {
            let controller = match &thread_config.netns {
                Some(name) => enter_netns(name),
                None => Ok(()),
            }
            .and_then(|()| {
                Controller::new(thread_config, thread_hub, source, identity_key)
                    .map_err(AgentError::from)
            });
            match controller {
                Ok(controller) => {
                    let _ = started_tx.send(Ok(()));
                    controller.run(inbox);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        })
        .map_err(AgentError::Runtime)?;
    match started_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = control_thread.join();
            let _ = std::fs::remove_file(&config.socket);
            return Err(e);
        }
        Err(_) => {
            let _ = std::fs::remove_file(&config.socket);
            return Err(AgentError::Runtime(std::io::Error::other(
                "the controller thread died while starting",
            )));
        }
    }
    tracing::info!(
        socket = %config.socket.display(),
        state_dir = %config.state_dir.display(),
        "sluice agent running"
    );
    let result: Result<(), AgentError> = runtime.block_on(async {
        tokio::spawn(server::serve_api(api, control.clone(), Arc::clone(&hub)));
        if let Some(addr) = config.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| server::ServerError::Listen {
                    path: addr.to_string(),
                    source,
                })?;
            tracing::info!("metrics on http://{addr}/metrics");
            tokio::spawn(server::serve_metrics(listener, control.clone()));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(AgentError::Runtime)?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        Ok(())
    });
    let _ = control.send(ControlMsg::Shutdown);
    let _ = control_thread.join();
    let _ = std::fs::remove_file(&config.socket);
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}
