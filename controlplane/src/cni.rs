//! `sluice-cni`: a CNI plugin (spec 1.0) chained after the main plugin (e.g. `ptp` with
//! `host-local` IPAM). On `ADD` it reads the main plugin's result (`prevResult`): the host-side
//! interface, the pod interface's MAC and the pod's addresses; tells the agent over its Unix
//! socket; and returns only once the agent has programmed the endpoint (XDP attached,
//! identity, policy) — or fails the ADD with a clear error after a timeout. Until then no
//! packet of the pod is forwarded: the endpoint does not exist for the dataplane. A pod the
//! agent knows no labels for yet gets the reserved `init` identity (default deny unless
//! policy allows `init`).
//!
//! Configuration (the plugin's entry in the conflist):
//! ```json
//! {"type": "sluice-cni", "agentSocket": "/run/sluice/agent.sock", "timeoutSeconds": 10}
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Client, CniAttachment, DEFAULT_SOCKET, Request, Response};

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// A CNI error: written to stdout as the spec's error object, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// Error code (spec: 1–99 reserved, 100+ plugin-specific).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Details.
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, version: &str) -> String {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
            .to_string()
    }
}

/// Error codes (CNI spec; 100 and up are sluice's).
pub mod code {
    /// The configuration's CNI version is not supported.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// An unsupported field or command.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// A `CNI_*` variable is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// The input could not be decoded.
    pub const DECODING: u32 = 6;
    /// The network configuration is not usable.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (the agent is not reachable).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The agent refused or failed to program the endpoint in time.
    pub const NOT_PROGRAMMED: u32 = 100;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    cni_version: String,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    agent_socket: Option<PathBuf>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct PrevInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct PrevIp {
    address: String,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct PrevResult {
    #[serde(default)]
    interfaces: Vec<PrevInterface>,
    #[serde(default)]
    ips: Vec<PrevIp>,
}

/// The `CNI_*` environment of one invocation.
#[derive(Clone, Debug, Default)]
pub struct CniEnv {
    /// `ADD`, `DEL`, `CHECK` or `VERSION`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, split.
    pub args: BTreeMap<String, String>,
}

impl CniEnv {
    /// Reads the process environment.
    pub fn from_process() -> CniEnv {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        CniEnv {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS")
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn pod(&self) -> Result<(String, String), CniError> {
        match (
            self.args.get("K8S_POD_NAMESPACE"),
            self.args.get("K8S_POD_NAME"),
        ) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Ok((ns.clone(), name.clone()))
            }
            _ => Err(CniError::new(
                code::INVALID_ENV,
                "CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME",
                "sluice identifies pods by namespace and name; the runtime must pass them",
            )),
        }
    }
}

/// The attachment in a main plugin's result: the pod interface (the one in a sandbox, named
/// `CNI_IFNAME` if several), the host-side interface (one not in a sandbox), and the pod
/// interface's addresses.
fn attachment_of(prev: &Value, env: &CniEnv) -> Result<(String, String, Vec<String>), CniError> {
    let prev: PrevResult = serde_json::from_value(prev.clone())
        .map_err(|e| CniError::new(code::DECODING, "cannot read prevResult", format!("{e}")))?;
    let pod_index = prev
        .interfaces
        .iter()
        .position(|i| i.sandbox.is_some() && i.name == env.ifname)
        .or_else(|| prev.interfaces.iter().position(|i| i.sandbox.is_some()))
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "prevResult has no pod interface",
                "sluice-cni must be chained after a plugin that creates the pod's interface",
            )
        })?;
    let host = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "prevResult has no host-side interface",
                "sluice-cni works with point-to-point veths (e.g. the ptp plugin)",
            )
        })?;
    let mac = prev.interfaces[pod_index].mac.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "the pod interface has no MAC in prevResult",
            "",
        )
    })?;
    let ips: Vec<String> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == pod_index))
        .map(|ip| ip.address.split('/').next().unwrap_or_default().to_owned())
        .collect();
    if ips.is_empty() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "prevResult gives the pod no address",
            "",
        ));
    }
    Ok((host.name.clone(), mac, ips))
}

/// `struct ethtool_value` (linux/ethtool.h).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;

/// Sets one ethtool flag of `ifname` in the calling thread's network namespace.
fn ethtool_set(ifname: &str, cmd: u32, data: u32) -> std::io::Result<()> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: socket() has no memory preconditions; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL reads the name and the ethtool_value, both alive for the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 { Err(err) } else { Ok(()) }
}

/// Prepares the pod's interface for the datapaths (DESIGN.md: frames that cross AF_XDP or an
/// XDP redirect lose checksum offload, and a veth accepts redirected frames only with GRO on):
/// full checksums from the pod, GRO on its end; GRO on the host end too.
fn prepare_interfaces(netns: &str, pod_if: &str, host_if: &str) -> Result<(), CniError> {
    let fail =
        |what: String, e: std::io::Error| CniError::new(code::INVALID_CONFIG, what, e.to_string());
    let _ = ethtool_set(host_if, ETHTOOL_SGRO, 1);
    let (netns, pod_if) = (netns.to_owned(), pod_if.to_owned());
    std::thread::spawn(move || -> Result<(), CniError> {
        let file = std::fs::File::open(&netns)
            .map_err(|e| fail(format!("cannot open the pod's netns {netns}"), e))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold, on a thread of our own.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(fail(
                format!("cannot enter the pod's netns {netns}"),
                std::io::Error::last_os_error(),
            ));
        }
        ethtool_set(&pod_if, ETHTOOL_STXCSUM, 0)
            .map_err(|e| fail(format!("turning off TX checksum offload on {pod_if}"), e))?;
        let _ = ethtool_set(&pod_if, ETHTOOL_SGRO, 1);
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(CniError::new(
            code::INVALID_CONFIG,
            "pod interface setup panicked",
            "",
        ))
    })
}

fn ask(
    socket: &std::path::Path,
    timeout: Duration,
    request: &Request,
) -> Result<Response, CniError> {
    let mut client = Client::connect(socket).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            "the sluice agent is not reachable",
            e.to_string(),
        )
    })?;
    client
        .set_timeout(Some(timeout))
        .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, "agent socket", e.to_string()))?;
    client.call(request).map_err(|e| match e {
        crate::api::ClientError::Timeout { .. } => CniError::new(
            code::NOT_PROGRAMMED,
            format!(
                "the agent did not program the endpoint within {} s",
                timeout.as_secs()
            ),
            e.to_string(),
        ),
        other => CniError::new(
            code::NOT_PROGRAMMED,
            "the agent refused the endpoint",
            other.to_string(),
        ),
    })
}

/// Runs one invocation: `stdin` is the network configuration. Returns what to print on
/// stdout on success.
pub fn run(env: &CniEnv, stdin: &str) -> Result<String, CniError> {
    if env.command == "VERSION" {
        return Ok(
            json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}).to_string(),
        );
    }
    let conf: NetConf = serde_json::from_str(stdin).map_err(|e| {
        CniError::new(
            code::DECODING,
            "cannot read the network configuration",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CNI version {} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let socket = conf
        .agent_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let timeout = Duration::from_secs(conf.timeout_seconds.unwrap_or(10).max(1));
    let (namespace, pod) = env.pod()?;
    match env.command.as_str() {
        "ADD" => {
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "no prevResult: sluice-cni is a chained plugin",
                    "list it after the main plugin (e.g. ptp) in the conflist",
                )
            })?;
            let (interface, mac, ips) = attachment_of(prev, env)?;
            prepare_interfaces(&env.netns, &env.ifname, &interface)?;
            let request = Request::CniAdd(CniAttachment {
                container_id: env.container_id.clone(),
                namespace,
                pod,
                uid: env.args.get("K8S_POD_UID").cloned(),
                interface,
                ips,
                mac,
                netns: env.netns.clone(),
            });
            match ask(&socket, timeout, &request)? {
                Response::Cni(Some(_)) => {
                    let mut result = prev.clone();
                    result["cniVersion"] = Value::String(conf.cni_version.clone());
                    Ok(result.to_string())
                }
                other => Err(CniError::new(
                    code::NOT_PROGRAMMED,
                    "the agent did not program the endpoint",
                    format!("{other:?}"),
                )),
            }
        }
        "DEL" => {
            let request = Request::CniDel {
                container_id: env.container_id.clone(),
                namespace,
                pod,
            };
            // DEL must succeed when there is nothing left to delete, and must not wedge a
            // pod's teardown while the agent is down (it forgets the endpoint when the pod
            // and its interface are gone).
            match ask(&socket, timeout, &request) {
                Ok(_) => Ok(String::new()),
                Err(e) if e.code == code::TRY_AGAIN_LATER => Ok(String::new()),
                Err(e) => Err(e),
            }
        }
        "CHECK" => match ask(&socket, timeout, &Request::CniCheck { namespace, pod })? {
            Response::Cni(Some(_)) => Ok(String::new()),
            other => Err(CniError::new(
                code::NOT_PROGRAMMED,
                "the endpoint is not programmed",
                format!("{other:?}"),
            )),
        },
        other => Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            format!("unknown CNI_COMMAND {other:?}"),
            "expected ADD, DEL, CHECK or VERSION",
        )),
    }
}

/// The plugin's `main`: reads stdin and the environment, prints the result or the error
/// object, and returns the exit status.
pub fn main_with_io() -> i32 {
    let env = CniEnv::from_process();
    let mut stdin = String::new();
    if env.command != "VERSION"
        && let Err(e) = std::io::stdin().read_to_string(&mut stdin)
    {
        println!(
            "{}",
            CniError::new(code::DECODING, "cannot read stdin", e.to_string()).to_json("1.0.0")
        );
        return 1;
    }
    let version = serde_json::from_str::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".into());
    match run(&env, &stdin) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            println!("{}", e.to_json(&version));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> CniEnv {
        CniEnv {
            command: command.into(),
            container_id: "c1".into(),
            netns: "/var/run/netns/x".into(),
            ifname: "eth0".into(),
            args: [("K8S_POD_NAMESPACE", "shop"), ("K8S_POD_NAME", "web")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    const PTP_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1234","mac":"aa:bb:cc:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:05","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":1}],"routes":[{"dst":"0.0.0.0/0"}]}"#;

    #[test]
    fn the_attachment_is_read_from_a_ptp_result() {
        let prev: Value = serde_json::from_str(PTP_RESULT).expect("json");
        let (host, mac, ips) = attachment_of(&prev, &env("ADD")).expect("attachment");
        assert_eq!(host, "veth1234");
        assert_eq!(mac, "02:00:00:00:00:05");
        assert_eq!(ips, vec!["10.1.0.5".to_owned()]);
    }

    #[test]
    fn bad_input_gets_the_specs_error_codes() {
        let e = run(&env("ADD"), "{").unwrap_err();
        assert_eq!(e.code, code::DECODING);
        let e = run(&env("ADD"), r#"{"cniVersion":"9.9.9"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = run(
            &env("ADD"),
            r#"{"cniVersion":"1.0.0","name":"n","type":"sluice-cni"}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("chained"), "{e}");
        let mut no_pod = env("ADD");
        no_pod.args.clear();
        let e = run(&no_pod, r#"{"cniVersion":"1.0.0"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        let v: Value =
            serde_json::from_str(&run(&env("VERSION"), "").expect("version")).expect("json");
        assert!(
            v["supportedVersions"]
                .as_array()
                .expect("list")
                .iter()
                .any(|s| s == "1.0.0")
        );
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","agentSocket":"/nonexistent/sluice.sock","prevResult":{PTP_RESULT}}}"#
        );
        // The pod's namespace (`CNI_NETNS`) does not exist: named in the error.
        let e = run(&env("ADD"), &conf).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
        assert!(e.msg.contains("/var/run/netns/x"), "{e:?}");
        // CHECK with no agent: try again later, naming the socket.
        let e = run(&env("CHECK"), &conf).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER, "{e}");
        assert!(e.details.contains("/nonexistent/sluice.sock"), "{e:?}");
        // DEL with no agent succeeds: nothing to clean up here.
        assert_eq!(run(&env("DEL"), &conf).expect("del"), "");
    }
}
