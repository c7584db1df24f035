//! The agent's configuration: a YAML file and command-line flags (flags win), with defaults
//! that work on a node as they are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::DEFAULT_SOCKET;

/// Which datapath serves the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatapathMode {
    /// AF_XDP workers decide every packet; the in-kernel path is the fallback.
    Fastpath,
    /// The in-kernel XDP path only (no workers).
    Kernel,
}

/// Where endpoints and policies come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The YAML files of `--state-dir`.
    Files,
    /// The Kubernetes API server (`--kubeconfig`, or in-cluster credentials).
    Kubernetes,
}

/// `sluice agent` flags. Every flag also has a key in the `--config` file (same name with
/// dashes); a flag given on the command line overrides the file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AgentArgs {
    /// YAML configuration file (keys as the long flags, e.g. `state-dir: /etc/sluice/state`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where endpoints and policies come from: `files` (`--state-dir`) or `kubernetes`.
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// kubeconfig for `--source kubernetes` (default: in-cluster credentials, then
    /// $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, as pods' `spec.nodeName` says it (default $NODE_NAME, then the host
    /// name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Directory of YAML files holding endpoints and policies (CiliumNetworkPolicy,
    /// CiliumClusterwideNetworkPolicy, NetworkPolicy); watched for changes.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Unix socket of the local API used by the `sluice` CLI (created root-only).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// bpffs directory for the XDP program's pinned maps and links.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Prometheus metrics address (loopback only unless --metrics-allow-remote); `off` to
    /// disable.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Allow a non-loopback metrics address.
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// `fastpath` (AF_XDP workers, kernel fallback) or `kernel` (in-kernel path only).
    #[arg(long, value_enum)]
    pub datapath: Option<DatapathMode>,
    /// Cores to run fast-path workers on, one worker each (e.g. `0` or `2,3`).
    #[arg(long, value_delimiter = ',', value_name = "CORES")]
    pub cores: Option<Vec<usize>>,
    /// SCHED_FIFO priority of the workers (0: normal priority; see DESIGN.md on sharing a
    /// core with NAPI).
    #[arg(long, value_name = "PRIO")]
    pub realtime_priority: Option<i32>,
    /// Empty polls before an idle worker blocks.
    #[arg(long, value_name = "N")]
    pub busy_poll_rounds: Option<u32>,
    /// Entries in each AF_XDP ring of a socket (a power of two, 64..=8192); each socket gets
    /// twice as many UMEM frames. See BENCHMARKS.md for why the default is small.
    #[arg(long, value_name = "N")]
    pub ring_size: Option<u32>,
    /// Frames a worker takes from one socket's RX ring per round (1..=ring size); each burst
    /// is decided and sent before the next. See BENCHMARKS.md ("Burst size").
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Flows kept in memory for `sluice observe`.
    #[arg(long, value_name = "N")]
    pub flow_buffer: Option<usize>,
    /// Also append every flow as a JSON line to this file (rotated by size).
    #[arg(long, value_name = "FILE")]
    pub flow_export: Option<PathBuf>,
    /// Rotate the flow export file at this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub flow_export_max_bytes: Option<u64>,
    /// Report one of every N dropped packets per worker (1: all).
    #[arg(long, value_name = "N")]
    pub drop_sample_every: Option<u32>,
    /// Run the dataplane side (XDP attachment, workers) in this network namespace (a name
    /// under /var/run/netns): for labs where the node is itself a namespace. The API socket,
    /// metrics and the Kubernetes client stay in the agent's own namespace.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// With no worker serving a queue, pass traffic without policy instead of enforcing in
    /// the kernel (not recommended).
    #[arg(long)]
    pub fail_open: bool,
    /// Detach the XDP program and remove the pins on exit (default: leave the in-kernel
    /// path enforcing until the next agent takes over).
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Log format: `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// File holding the cluster's identity key (at least 16 bytes; surrounding whitespace is
    /// ignored, so `openssl rand -hex 32 > key` works). Every node of a cluster must use the
    /// same key to derive the same identity numbers; without one, a fixed public default is
    /// used and numbers are predictable.
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,
}

/// The least number of key bytes `--cluster-key` accepts.
pub const MIN_CLUSTER_KEY_BYTES: usize = 16;

/// The agent's effective configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the state comes from.
    pub source: SourceKind,
    /// kubeconfig path.
    pub kubeconfig: Option<PathBuf>,
    /// Node name.
    pub node_name: Option<String>,
    /// Directory of YAML state files.
    pub state_dir: PathBuf,
    /// Local API socket.
    pub socket: PathBuf,
    /// bpffs pin directory.
    pub pin_dir: PathBuf,
    /// Metrics address; `None` disables metrics.
    pub metrics: Option<SocketAddr>,
    /// Allow a non-loopback metrics address.
    pub metrics_allow_remote: bool,
    /// Datapath.
    pub datapath: DatapathMode,
    /// Worker cores.
    pub cores: Vec<usize>,
    /// Worker SCHED_FIFO priority (0 = normal).
    pub realtime_priority: i32,
    /// Busy-poll rounds before blocking.
    pub busy_poll_rounds: u32,
    /// AF_XDP ring entries per socket.
    pub ring_size: u32,
    /// RX burst size of the workers.
    pub batch_size: usize,
    /// Flow buffer size.
    pub flow_buffer: usize,
    /// Flow export file.
    pub flow_export: Option<PathBuf>,
    /// Flow export rotation size.
    pub flow_export_max_bytes: u64,
    /// Drop sampling.
    pub drop_sample_every: u32,
    /// Network namespace to enter.
    pub netns: Option<String>,
    /// Kernel path fail-open.
    pub fail_open: bool,
    /// Detach on exit.
    pub detach_on_exit: bool,
    /// Log format.
    pub log_format: String,
    /// File holding the cluster's identity key (`None`: the public default key).
    pub cluster_key: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            source: SourceKind::Files,
            kubeconfig: None,
            node_name: None,
            state_dir: PathBuf::from("/etc/sluice/state"),
            socket: PathBuf::from(DEFAULT_SOCKET),
            pin_dir: PathBuf::from("/sys/fs/bpf/sluice"),
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9962))),
            metrics_allow_remote: false,
            datapath: DatapathMode::Fastpath,
            cores: vec![0],
            realtime_priority: 1,
            busy_poll_rounds: 16,
            ring_size: fastpath::socket::RingSizes::default().ring,
            batch_size: fastpath::worker::DEFAULT_BATCH_SIZE,
            flow_buffer: 10_000,
            flow_export: None,
            flow_export_max_bytes: 64 << 20,
            drop_sample_every: 1,
            netns: None,
            fail_open: false,
            detach_on_exit: false,
            log_format: "text".into(),
            cluster_key: None,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("{path}: {reason}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong (with line and field).
        reason: String,
    },
    /// The cluster key file cannot be read or is too short.
    #[error("cluster key {path}: {reason}")]
    ClusterKey {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl AgentConfig {
    /// The file's settings (if any) with the flags given on top, checked.
    pub fn load(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => AgentConfig::default(),
        };
        if let Some(v) = args.source {
            config.source = v;
        }
        if let Some(v) = &args.kubeconfig {
            config.kubeconfig = Some(v.clone());
        }
        if let Some(v) = &args.node_name {
            config.node_name = Some(v.clone());
        }
        if let Some(v) = &args.state_dir {
            config.state_dir = v.clone();
        }
        if let Some(v) = &args.socket {
            config.socket = v.clone();
        }
        if let Some(v) = &args.pin_dir {
            config.pin_dir = v.clone();
        }
        if let Some(v) = &args.metrics {
            config.metrics = if v == "off" {
                None
            } else {
                Some(v.parse().map_err(|e| ConfigError::Invalid {
                    field: "metrics",
                    reason: format!("{v:?} is not an address like 127.0.0.1:9962: {e}"),
                })?)
            };
        }
        config.metrics_allow_remote |= args.metrics_allow_remote;
        if let Some(v) = args.datapath {
            config.datapath = v;
        }
        if let Some(v) = &args.cores {
            config.cores = v.clone();
        }
        if let Some(v) = args.realtime_priority {
            config.realtime_priority = v;
        }
        if let Some(v) = args.busy_poll_rounds {
            config.busy_poll_rounds = v;
        }
        if let Some(v) = args.ring_size {
            config.ring_size = v;
        }
        if let Some(v) = args.batch_size {
            config.batch_size = v;
        }
        if let Some(v) = args.flow_buffer {
            config.flow_buffer = v;
        }
        if let Some(v) = &args.flow_export {
            config.flow_export = Some(v.clone());
        }
        if let Some(v) = args.flow_export_max_bytes {
            config.flow_export_max_bytes = v;
        }
        if let Some(v) = args.drop_sample_every {
            config.drop_sample_every = v;
        }
        if let Some(v) = &args.netns {
            config.netns = Some(v.clone());
        }
        config.fail_open |= args.fail_open;
        config.detach_on_exit |= args.detach_on_exit;
        if let Some(v) = &args.log_format {
            config.log_format = v.clone();
        }
        if let Some(v) = &args.cluster_key {
            config.cluster_key = Some(v.clone());
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let de = serde_yaml::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let line = e
                .inner()
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_owned(),
                reason: format!("{line}{}: {}", e.path(), e.inner()),
            }
        })
    }

    /// The identity key: read from [`cluster_key`](Self::cluster_key) (surrounding
    /// whitespace trimmed, at least [`MIN_CLUSTER_KEY_BYTES`] bytes), or the public default.
    pub fn identity_key(&self) -> Result<identity_cache::identity::ClusterKey, ConfigError> {
        let Some(path) = &self.cluster_key else {
            return Ok(identity_cache::identity::ClusterKey::default());
        };
        let err = |reason: String| ConfigError::ClusterKey {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        let secret = bytes.trim_ascii();
        if secret.len() < MIN_CLUSTER_KEY_BYTES {
            return Err(err(format!(
                "holds {} bytes; a key needs at least {MIN_CLUSTER_KEY_BYTES} (for example \
                 `openssl rand -hex 32 > {}`)",
                secret.len(),
                path.display()
            )));
        }
        Ok(identity_cache::identity::ClusterKey::from_secret(secret))
    }

    /// Checks ranges and the loopback rule for metrics.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = self.metrics
            && !addr.ip().is_loopback()
            && !self.metrics_allow_remote
        {
            return Err(ConfigError::Invalid {
                field: "metrics",
                reason: format!(
                    "{addr} is not a loopback address; pass --metrics-allow-remote to expose \
                     metrics on the network"
                ),
            });
        }
        if !(0..=99).contains(&self.realtime_priority) {
            return Err(ConfigError::Invalid {
                field: "realtime-priority",
                reason: format!("{} is outside 0..=99", self.realtime_priority),
            });
        }
        if self.datapath == DatapathMode::Fastpath && self.cores.is_empty() {
            return Err(ConfigError::Invalid {
                field: "cores",
                reason: "the fast path needs at least one core".into(),
            });
        }
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(c) = self.cores.iter().find(|c| **c >= online) {
            return Err(ConfigError::Invalid {
                field: "cores",
                reason: format!("core {c} does not exist (this machine has {online})"),
            });
        }
        if let Err(e) = fastpath::socket::RingSizes::with_ring(self.ring_size) {
            return Err(ConfigError::Invalid {
                field: "ring-size",
                reason: e.to_string(),
            });
        }
        if self.batch_size == 0 || self.batch_size > self.ring_size as usize {
            return Err(ConfigError::Invalid {
                field: "batch-size",
                reason: format!(
                    "{} is not between 1 and the ring size {}",
                    self.batch_size, self.ring_size
                ),
            });
        }
        if self.flow_buffer == 0 {
            return Err(ConfigError::Invalid {
                field: "flow-buffer",
                reason: "must hold at least one flow".into(),
            });
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(ConfigError::Invalid {
                field: "log-format",
                reason: format!("{:?} is neither text nor json", self.log_format),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("sluice-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("agent.yaml");
        std::fs::write(&file, "state-dir: /srv/state\nflow-buffer: 5\n").expect("write");
        let args = AgentArgs {
            config: Some(file.clone()),
            flow_buffer: Some(7),
            ..AgentArgs::default()
        };
        let c = AgentConfig::load(&args).expect("valid");
        assert_eq!(c.state_dir, PathBuf::from("/srv/state"));
        assert_eq!(c.flow_buffer, 7);

        std::fs::write(&file, "state-dir: /srv/state\nflow-bufer: 5\n").expect("write");
        let err = AgentConfig::load(&args).expect_err("typo").to_string();
        assert!(
            err.contains("flow-bufer") && err.contains("line 2"),
            "{err}"
        );

        let remote = AgentArgs {
            metrics: Some("0.0.0.0:9962".into()),
            ..AgentArgs::default()
        };
        let err = AgentConfig::load(&remote).expect_err("remote").to_string();
        assert!(err.contains("--metrics-allow-remote"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cluster_key_file_sets_the_identity_numbers_and_a_bad_one_is_named() {
        use identity_cache::identity::derive_identity;
        use identity_cache::labels::{Label, LabelSet, LabelSource};
        let dir = std::env::temp_dir().join(format!("sluice-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b, short) = (dir.join("a"), dir.join("b"), dir.join("short"));
        std::fs::write(&a, "0123456789abcdef0123456789abcdef\n").expect("write");
        std::fs::write(&b, "fedcba9876543210fedcba9876543210").expect("write");
        std::fs::write(&short, "tooshort\n").expect("write");
        let key_of = |path: &Path| {
            AgentConfig::load(&AgentArgs {
                cluster_key: Some(path.to_owned()),
                ..AgentArgs::default()
            })
            .expect("valid")
            .identity_key()
        };
        let labels = LabelSet::new([Label::new(LabelSource::K8s, "app", "web")]);
        let id = |path: &Path| derive_identity(&key_of(path).expect("key"), &labels);
        // The trailing newline is not part of the key.
        std::fs::write(dir.join("a2"), "0123456789abcdef0123456789abcdef").expect("write");
        assert_eq!(id(&a), id(&dir.join("a2")));
        assert_ne!(id(&a), id(&b));
        let default = AgentConfig::default().identity_key().expect("default");
        assert_ne!(id(&a), derive_identity(&default, &labels));

        let err = key_of(&short).expect_err("short").to_string();
        assert!(
            err.contains("8 bytes") && err.contains("at least 16"),
            "{err}"
        );
        let err = key_of(&dir.join("missing"))
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("cannot read") && err.contains("missing"),
            "{err}"
        );

        let file = dir.join("agent.yaml");
        std::fs::write(&file, format!("cluster-key: {}\n", b.display())).expect("write");
        let from_file = AgentConfig::load(&AgentArgs {
            config: Some(file),
            ..AgentArgs::default()
        })
        .expect("valid");
        assert_eq!(from_file.cluster_key.as_deref(), Some(b.as_path()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_ring_size_must_be_a_power_of_two_in_range() {
        let with = |ring_size| {
            AgentConfig::load(&AgentArgs {
                ring_size: Some(ring_size),
                ..AgentArgs::default()
            })
        };
        assert_eq!(with(1024).expect("valid").ring_size, 1024);
        for bad in [0, 32, 1000, 16384] {
            let err = with(bad).expect_err("out of range").to_string();
            assert!(
                err.contains("ring-size") && err.contains(&bad.to_string()),
                "{err}"
            );
        }
        assert_eq!(AgentConfig::default().ring_size, 512);
    }

    #[test]
    fn the_batch_size_must_fit_the_ring() {
        let with = |batch_size, ring_size| {
            AgentConfig::load(&AgentArgs {
                batch_size: Some(batch_size),
                ring_size: Some(ring_size),
                ..AgentArgs::default()
            })
        };
        assert_eq!(with(64, 512).expect("valid").batch_size, 64);
        for (batch, ring) in [(0, 512), (1024, 512)] {
            let err = with(batch, ring).expect_err("out of range").to_string();
            assert!(
                err.contains("batch-size") && err.contains(&batch.to_string()),
                "{err}"
            );
        }
        assert_eq!(AgentConfig::default().batch_size, 32);
    }
}
