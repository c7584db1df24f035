//! The agent's local API: JSON lines over a Unix stream socket that only root can open.
//!
//! One request per connection: the client writes one [`Request`] line; the agent answers with
//! [`Response`] lines: one for a query, or a stream of [`Response::Flow`] ending with
//! [`Response::End`] (never, while following, until the client hangs up) and closes the
//! connection. Nothing is exposed on the network.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::flows::{FlowFilter, FlowRecord, PolicyRef};

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/sluice/agent.sock";

/// A request to the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Recent flows matching a filter, then (with `follow`) new ones as they come.
    Observe {
        /// Which flows.
        filter: FlowFilter,
        /// At most this many recent flows first (0: none, `usize::MAX`: all the buffer holds).
        last: usize,
        /// Keep streaming new flows.
        follow: bool,
    },
    /// The agent's state.
    Status,
    /// The verdict for a hypothetical packet, from the compiled tables.
    Trace(TraceRequest),
    /// Every identity in use, with its labels.
    Identities,
    /// The per-core latency report of the fast-path workers.
    Latency,
    /// From the CNI plugin: a pod was attached; program its endpoint and answer once done.
    CniAdd(CniAttachment),
    /// From the CNI plugin: a pod's network is being torn down.
    CniDel {
        /// Runtime container id.
        container_id: String,
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// From the CNI plugin: is the pod's endpoint programmed?
    CniCheck {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
}

/// A pod's attachment as the CNI plugin saw it in the main plugin's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    /// Runtime container id.
    pub container_id: String,
    /// Pod namespace (`K8S_POD_NAMESPACE`).
    pub namespace: String,
    /// Pod name (`K8S_POD_NAME`).
    pub pod: String,
    /// Pod UID (`K8S_POD_UID`), when the runtime passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Host-side interface of the pod's veth.
    pub interface: String,
    /// The pod's addresses.
    pub ips: Vec<String>,
    /// The pod interface's MAC.
    pub mac: String,
    /// The pod's network namespace path.
    pub netns: String,
}

/// One line of the agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Response {
    /// A flow.
    Flow(Box<FlowRecord>),
    /// The end of a flow listing: flows the agent lost (queue overflow, buffer eviction)
    /// so far.
    End {
        /// Flow events lost before reaching the buffer.
        lost: u64,
        /// Flows pushed out of the buffer by newer ones.
        evicted: u64,
    },
    /// The agent's state.
    Status(Box<StatusReport>),
    /// A trace's answer.
    Trace(Box<TraceResult>),
    /// Identities.
    Identities(Vec<IdentityEntry>),
    /// The latency report.
    Latency(Box<perf::LatencyReport>),
    /// A CNI request was carried out; the endpoint as programmed (absent after a DEL).
    Cni(Option<Box<EndpointStatus>>),
    /// The request could not be served.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// One side of a traced packet: a pod by name, or a label set in a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePeer {
    /// Pod labels (`key=value`), when not naming a pod.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Namespace of the labels (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A known endpoint, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// An address (identity from the ipcache; CIDR rules match it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `sluice policy trace`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Sender.
    pub from: TracePeer,
    /// Receiver.
    pub to: TracePeer,
    /// Destination port (ICMP: type).
    pub port: u16,
    /// Protocol name.
    pub protocol: String,
}

/// One direction's decision in a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceDirection {
    /// `ingress` or `egress`.
    pub direction: String,
    /// `ALLOW` or `DENY`.
    pub action: String,
    /// Whether a policy selects the endpoint in this direction.
    pub enforced: bool,
    /// The deciding rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<PolicyRef>,
    /// The match type.
    pub match_type: String,
    /// Drop reason when denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
}

/// `sluice policy trace`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceResult {
    /// Source identity and its labels.
    pub from_identity: u64,
    /// Source labels.
    pub from_labels: Vec<String>,
    /// Destination identity.
    pub to_identity: u64,
    /// Destination labels.
    pub to_labels: Vec<String>,
    /// `FORWARDED` or `DROPPED`.
    pub verdict: String,
    /// Drop reason when dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// The direction that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding_direction: Option<String>,
    /// The deciding rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<PolicyRef>,
    /// Egress of the source, when checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<TraceDirection>,
    /// Ingress of the destination, when checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<TraceDirection>,
}

/// An identity in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    /// Its number.
    pub identity: u64,
    /// Its labels, or its reserved name.
    pub labels: Vec<String>,
    /// Local endpoints that have it (`namespace/name`).
    pub endpoints: Vec<String>,
    /// Whether it is reserved (below 256).
    pub reserved: bool,
}

/// An endpoint in `sluice status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Identity.
    pub identity: u64,
    /// Addresses.
    pub ips: Vec<String>,
    /// Host-side interface.
    pub interface: String,
    /// `enforce`, `audit` or `kernel`.
    pub mode: String,
    /// Whether a policy selects it for ingress.
    pub ingress_enforced: bool,
    /// Whether a policy selects it for egress.
    pub egress_enforced: bool,
    /// Which path decides its traffic now: `fastpath`, `kernel`.
    pub datapath: String,
}

/// A loaded policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-wide).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Where it came from (file path or API object).
    pub origin: String,
}

/// Something the agent refused, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// File (or object) that holds it.
    pub origin: String,
    /// Line in the file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong, naming the field.
    pub reason: String,
}

/// A worker in `sluice status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Index.
    pub index: usize,
    /// Core it is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<usize>,
    /// `running`, `stalled`, `down: reason`.
    pub state: String,
    /// Times it was restarted.
    pub restarts: u32,
    /// The (interface/queue) pairs it serves.
    pub ports: Vec<String>,
    /// Packets per second over the last status period.
    pub pps: f64,
    /// Per-packet latency p50 in microseconds.
    pub p50_us: f64,
    /// p99 in microseconds.
    pub p99_us: f64,
    /// Packets forwarded, dropped, audited.
    pub packets: [u64; 3],
    /// Frames lost at its sockets (`XDP_STATISTICS`: dropped + RX ring full).
    pub socket_lost: u64,
    /// Times a fill ring ran empty.
    pub fill_ring_empty: u64,
    /// New flows not tracked because its connection table was full.
    pub conntrack_full: u64,
    /// Flow events it could not queue.
    pub events_lost: u64,
}

/// A BPF map's use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStatus {
    /// Map name.
    pub name: String,
    /// Entries.
    pub entries: usize,
    /// Capacity.
    pub capacity: usize,
}

/// `sluice status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Agent version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Where its state comes from (`directory /etc/sluice`, `kubernetes`).
    pub source: String,
    /// Seconds since the dataplane was last synced with the source.
    pub last_sync_age_s: f64,
    /// `fastpath` (workers serve the endpoints, the kernel path is the fallback) or `kernel`.
    pub datapath: String,
    /// Whether any endpoint's traffic is on the kernel fallback because of a worker.
    pub fallback_active: bool,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
    /// Loaded policies.
    pub policies: Vec<PolicyStatus>,
    /// Rejected files, policies and endpoints.
    pub rejected: Vec<Rejection>,
    /// Workers.
    pub workers: Vec<WorkerStatus>,
    /// BPF maps.
    pub maps: Vec<MapStatus>,
    /// Identities in use.
    pub identities: usize,
    /// Flows seen, evicted, lost.
    pub flows: (u64, u64, u64),
}

/// Why the CLI could not talk to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent listens on the socket.
    #[error(
        "no agent at {path}: is `sluice agent` running? (start it, or pass --socket PATH): {source}"
    )]
    NotRunning {
        /// Socket path.
        path: PathBuf,
        /// What connect said.
        source: std::io::Error,
    },
    /// The socket exists but this user may not open it.
    #[error("permission denied on {path}: the agent's socket is root-only (run as root)")]
    PermissionDenied {
        /// Socket path.
        path: PathBuf,
    },
    /// The connection broke or the answer was not understood.
    #[error("talking to the agent at {path}: {reason}")]
    Protocol {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The agent did not answer in time.
    #[error("the agent at {path} did not answer in time (is it stuck? see its log)")]
    Timeout {
        /// Socket path.
        path: PathBuf,
    },
    /// The agent answered with an error.
    #[error("the agent says: {0}")]
    Agent(String),
}

/// A connection to the agent.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the agent's socket.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_owned(),
            },
            _ => ClientError::NotRunning {
                path: path.to_owned(),
                source: e,
            },
        })?;
        let writer = stream.try_clone().map_err(|e| ClientError::Protocol {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends a request.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|e| self.protocol(e))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.protocol(e))
    }

    /// Reads the next answer line; `None` when the agent closed the connection.
    pub fn next_response(&mut self) -> Result<Option<Response>, ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    ClientError::Timeout {
                        path: self.path.clone(),
                    }
                }
                _ => self.protocol(e),
            })?;
        if n == 0 {
            return Ok(None);
        }
        let response: Response = serde_json::from_str(&line).map_err(|e| self.protocol(e))?;
        if let Response::Error { message } = response {
            return Err(ClientError::Agent(message));
        }
        Ok(Some(response))
    }

    /// Sends a request and reads its one answer.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.send(request)?;
        self.next_response()?
            .ok_or_else(|| self.protocol("the agent closed the connection"))
    }

    /// Sets a read timeout (for tests and `--follow` with a deadline).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|e| self.protocol(e))
    }
}
