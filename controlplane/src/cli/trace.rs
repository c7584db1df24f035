//! `sluice policy trace`: the verdict for a hypothetical packet from the agent's compiled
//! tables, with the deciding direction and rule (like `cilium policy trace`).

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;

use clap::{ArgGroup, Args};
use identity_cache::protocol::Protocol;

use super::format::{identity_full, rule_description};
use super::{CliError, Exit, SocketArgs, TextOrJson, query, response_kind};
use crate::api::{Request, Response, TraceDirection, TracePeer, TraceRequest, TraceResult};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Labels in namespace `default` on both ends
  sluice policy trace --from-labels app=frontend --to-labels app=backend --port 8080/TCP
  # Labels in a namespace to an existing pod
  sluice policy trace --from-labels app=web,tier=front --from-namespace shop \\
      --to-pod shop/api-5d8 --port 53/UDP
  # An outside address (its identity comes from the ipcache, so CIDR rules apply)
  sluice policy trace --from-ip 203.0.113.7 --to-labels app=api --to-namespace shop --port 443
  # A ping between two pods, as JSON
  sluice policy trace --from-pod shop/web-7c9 --to-pod db/pg-0 --port ICMP -o json";

/// A destination port with its protocol, from `8080/TCP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortProtocol {
    /// The port (ICMP: the type).
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// Parses `--port`: `PORT[/PROTOCOL]` (TCP when no protocol is given; for ICMP and ICMPv6
/// the number is the type), or `ICMP` / `ICMPv6` alone for an echo request.
pub fn parse_port(s: &str) -> Result<PortProtocol, String> {
    let s = s.trim();
    if let Ok(protocol @ (Protocol::Icmp | Protocol::IcmpV6)) = s.parse::<Protocol>() {
        let port = if protocol == Protocol::Icmp { 8 } else { 128 };
        return Ok(PortProtocol { port, protocol });
    }
    let (number, protocol) = match s.split_once('/') {
        Some((n, p)) => (n.trim(), p.parse::<Protocol>().map_err(|e| e.to_string())?),
        None => (s, Protocol::Tcp),
    };
    let port: u16 = number.parse().map_err(|_| {
        format!("{number:?} is not a port number (expected PORT[/PROTOCOL], e.g. 8080/TCP)")
    })?;
    if protocol.has_ports() && port == 0 {
        return Err("port 0 cannot be a destination port (expected 1 to 65535)".into());
    }
    if !protocol.has_ports() && port > 255 {
        return Err(format!(
            "{protocol} type {port} is out of range (expected 0 to 255)"
        ));
    }
    Ok(PortProtocol { port, protocol })
}

/// Parses one `key=value` label of `--from-labels` / `--to-labels`.
pub fn parse_label(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "{s:?} is not a label: expected key=value (several: key=value,key2=value2)"
        )),
    }
}

/// Parses a `namespace/name` pod reference.
pub fn parse_pod(s: &str) -> Result<String, String> {
    match s.trim().split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.trim().to_owned())
        }
        _ => Err(format!("{s:?} is not a pod: expected namespace/name")),
    }
}

/// `sluice policy trace`'s arguments.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("from")
    .required(true)
    .multiple(true)
    .args(["from_labels", "from_namespace", "from_pod", "from_ip"])))]
#[command(group(ArgGroup::new("to")
    .required(true)
    .multiple(true)
    .args(["to_labels", "to_namespace", "to_pod", "to_ip"])))]
#[command(override_usage = "\
sluice policy trace FROM TO --port PORT[/PROTO] [-o text|json]
  FROM: --from-labels K=V[,K=V] [--from-namespace NS] | --from-pod NS/NAME | --from-ip IP
  TO:   --to-labels K=V[,K=V] [--to-namespace NS] | --to-pod NS/NAME | --to-ip IP")]
pub struct TraceArgs {
    /// Labels of the sender (`key=value[,key=value]`)
    #[arg(long, help_heading = "Sender (FROM)", value_name = "LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub from_labels: Vec<String>,
    /// Namespace of the sender's labels [default: default]
    #[arg(
        long,
        help_heading = "Sender (FROM)",
        value_name = "NAMESPACE",
        conflicts_with = "from_pod"
    )]
    pub from_namespace: Option<String>,
    /// The sender is this existing pod (`namespace/name`)
    #[arg(long, help_heading = "Sender (FROM)", value_name = "NS/NAME", value_parser = parse_pod,
          conflicts_with_all = ["from_labels", "from_ip"])]
    pub from_pod: Option<String>,
    /// The sender's address
    #[arg(long, help_heading = "Sender (FROM)", value_name = "IP")]
    pub from_ip: Option<IpAddr>,
    /// Labels of the receiver (`key=value[,key=value]`)
    #[arg(long, help_heading = "Receiver (TO)", value_name = "LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub to_labels: Vec<String>,
    /// Namespace of the receiver's labels [default: default]
    #[arg(
        long,
        help_heading = "Receiver (TO)",
        value_name = "NAMESPACE",
        conflicts_with = "to_pod"
    )]
    pub to_namespace: Option<String>,
    /// The receiver is this existing pod (`namespace/name`)
    #[arg(long, help_heading = "Receiver (TO)", value_name = "NS/NAME", value_parser = parse_pod,
          conflicts_with_all = ["to_labels", "to_ip"])]
    pub to_pod: Option<String>,
    /// The receiver's address
    #[arg(long, help_heading = "Receiver (TO)", value_name = "IP")]
    pub to_ip: Option<IpAddr>,
    /// Destination port and protocol: `8080/TCP`, `53/UDP`, `8080` (TCP), `8/ICMP` (ICMP
    /// type), `ICMP` (echo request)
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = parse_port)]
    pub port: PortProtocol,
    /// Output format (JSON: the API's trace result)
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// The agent to ask.
    #[command(flatten)]
    pub socket: SocketArgs,
}

impl TraceArgs {
    /// The request these flags describe.
    pub fn request(&self) -> TraceRequest {
        TraceRequest {
            from: TracePeer {
                labels: self.from_labels.clone(),
                namespace: self.from_namespace.clone(),
                pod: self.from_pod.clone(),
                ip: self.from_ip.map(|ip| ip.to_string()),
            },
            to: TracePeer {
                labels: self.to_labels.clone(),
                namespace: self.to_namespace.clone(),
                pod: self.to_pod.clone(),
                ip: self.to_ip.map(|ip| ip.to_string()),
            },
            port: self.port.port,
            protocol: self.port.protocol.name().to_owned(),
        }
    }
}

/// Runs `sluice policy trace`.
pub fn run(args: &TraceArgs, out: &mut impl Write) -> Result<Exit, CliError> {
    let result = match query(&args.socket, &Request::Trace(args.request()))? {
        Response::Trace(result) => result,
        other => {
            return Err(CliError::UnexpectedResponse {
                request: "trace",
                got: response_kind(&other),
            });
        }
    };
    match args.output {
        TextOrJson::Text => write!(out, "{}", render(&result))?,
        TextOrJson::Json => {
            let json = serde_json::to_string(result.as_ref())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            writeln!(out, "{json}")?;
        }
    }
    Ok(Exit::Success)
}

fn direction_name(direction: &str) -> String {
    match direction {
        "egress" => "egress of the source".into(),
        "ingress" => "ingress of the destination".into(),
        other => other.to_owned(),
    }
}

fn direction_line(d: Option<&TraceDirection>, end: &str) -> String {
    let Some(d) = d else {
        return format!("not checked (the {end} is not a local endpoint)");
    };
    let mut s = d.action.clone();
    if let Some(reason) = &d.drop_reason {
        let _ = write!(s, " ({reason})");
    }
    if d.enforced {
        let _ = write!(s, "; a policy selects the {end}");
    } else {
        let _ = write!(s, "; no policy selects the {end} (allowed by default)");
    }
    match &d.rule {
        Some(rule) => {
            let _ = write!(s, "; rule {} [{rule}]", rule_description(rule));
        }
        None => s.push_str("; no rule"),
    }
    let _ = write!(s, "; match {}", d.match_type);
    s
}

/// `identity N`, then one label per line under it.
fn identity_lines(identity: u64, labels: &[String]) -> String {
    let mut s = format!("identity {}", identity_full(identity));
    for label in labels {
        let _ = write!(s, "\n             {label}");
    }
    s
}

/// The text form of a trace result: verdict, deciding direction and rule, both ends'
/// identities, and each direction's decision.
pub fn render(r: &TraceResult) -> String {
    let mut s = String::new();
    let verdict = match &r.drop_reason {
        Some(reason) => format!("{} ({reason})", r.verdict),
        None => r.verdict.clone(),
    };
    let _ = writeln!(s, "Verdict:     {verdict}");
    let decided = match &r.deciding_direction {
        Some(d) => direction_name(d),
        None => "-".into(),
    };
    let _ = writeln!(s, "Decided by:  {decided}");
    match &r.rule {
        Some(rule) => {
            let _ = writeln!(s, "Rule:        {} [{rule}]", rule_description(rule));
        }
        None => {
            let _ = writeln!(s, "Rule:        none");
        }
    }
    let _ = writeln!(
        s,
        "From:        {}",
        identity_lines(r.from_identity, &r.from_labels)
    );
    let _ = writeln!(
        s,
        "To:          {}",
        identity_lines(r.to_identity, &r.to_labels)
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Egress of the source:        {}",
        direction_line(r.egress.as_ref(), "source")
    );
    let _ = writeln!(
        s,
        "Ingress of the destination:  {}",
        direction_line(r.ingress.as_ref(), "destination")
    );
    s
}
