//! `sluice observe`: the agent's recent flows, then (with `--follow`) live ones, filtered as
//! `hubble observe` filters them.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::format::{FlowFormat, FlowPrinter};
use super::identity::parse_identity;
use super::{CliError, Exit, QUERY_TIMEOUT, SocketArgs, response_kind};
use crate::api::{Client, ClientError, Request, Response};
use crate::flows::FlowFilter;

pub(crate) const EXAMPLES: &str = "\
Examples:
  # The last 20 flows
  sluice observe
  # Follow drops, each with the rule that dropped it
  sluice observe -f --verdict DROPPED
  # Frontend pods to one API pod on 8080
  sluice observe --from-label app=frontend --to-pod shop/api-5d8 --port 8080
  # Everything in namespace shop over the last 5 minutes
  sluice observe --namespace shop --since 5m --last 0
  # Machine-readable
  sluice observe --drop-reason POLICY_DENIED -o json | jq .destination.pod

Compact output, one line per flow:
  Nov 28 03:12:01.123: shop/web-7c9:40312 (id 1a2b3c4d) -> shop/api-5d8:8080 (id 3c4d5e6f)
      TCP SYN DROPPED (POLICY_DENIED) by shop/api-policy[policyTypes]
Identities show their first 8 hex digits (`sluice identity get 1a2b3c4d` shows the rest)
or a reserved name; `reply` marks replies of tracked connections, `[kernel]` flows decided
by the in-kernel path, and `AUDIT (would drop: …)` what audit mode let through.";

/// How many recent flows are shown when neither `--last` nor `--follow` is given.
pub const DEFAULT_LAST: usize = 20;

/// `--since`: a duration before now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `5m`, `1h 30m`: this long before the command runs.
    Ago(Duration),
    /// An RFC 3339 time.
    At(SystemTime),
}

impl Since {
    /// Nanoseconds since the Unix epoch, relative to `now` for [`Since::Ago`] (never before
    /// the epoch).
    pub fn to_ns(self, now: SystemTime) -> u64 {
        let t = match self {
            Since::Ago(d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
            Since::At(t) => t,
        };
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Parses `--since`: a duration (`30s`, `5m`, `2h`, `1h 30m`, …) or an RFC 3339 time
/// (`2024-11-28T03:12:01Z`, `2024-11-28T04:12:01.5+01:00`, `2024-11-28 03:12:01` as UTC).
pub fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Since::Ago(d));
    }
    parse_rfc3339(s).map(Since::At).map_err(|e| {
        format!(
            "{s:?} is neither a duration like 5m or 1h30m nor a time like \
             2024-11-28T03:12:01Z ({e})"
        )
    })
}

/// RFC 3339 with a `Z`, a numeric offset, or none (UTC).
fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bytes = s.as_bytes();
    let n = bytes.len();
    // A trailing `+HH:MM` / `-HH:MM` after the time part.
    let offset = (n > 16 && (bytes[n - 6] == b'+' || bytes[n - 6] == b'-') && bytes[n - 3] == b':')
        .then(|| {
            let hours: u64 = s[n - 5..n - 3].parse().ok()?;
            let minutes: u64 = s[n - 2..].parse().ok()?;
            (hours < 24 && minutes < 60)
                .then_some((bytes[n - 6] == b'+', hours * 3600 + minutes * 60))
        })
        .flatten();
    let (base, offset) = match offset {
        Some(o) => (&s[..n - 6], Some(o)),
        None => (s, None),
    };
    let t = humantime::parse_rfc3339_weak(base).map_err(|e| e.to_string())?;
    Ok(match offset {
        // Local time ahead of UTC: UTC is earlier.
        Some((true, secs)) => t - Duration::from_secs(secs),
        Some((false, secs)) => t + Duration::from_secs(secs),
        None => t,
    })
}

/// `sluice observe`'s arguments.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Filters (repeat a flag for any of its values)")]
pub struct ObserveArgs {
    /// Flows whose source has these labels (`key=value[,key=value]`: all of them; `key`
    /// alone: any value).
    #[arg(long, value_name = "LABELS")]
    pub from_label: Vec<String>,
    /// Flows whose destination has these labels (as --from-label)
    #[arg(long, value_name = "LABELS")]
    pub to_label: Vec<String>,
    /// Flows from this pod (`namespace/name`, or `name` in any namespace; a trailing `*`
    /// matches a prefix)
    #[arg(long, value_name = "POD")]
    pub from_pod: Vec<String>,
    /// Flows to this pod (as --from-pod)
    #[arg(long, value_name = "POD")]
    pub to_pod: Vec<String>,
    /// Flows with either end in this namespace
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Vec<String>,
    /// Flows from this identity (decimal, 0x-hex, the 16-digit hex `sluice identity list`
    /// prints, or a reserved name like `world`)
    #[arg(long, value_name = "ID", value_parser = parse_identity)]
    pub from_identity: Vec<u64>,
    /// Flows to this identity (as --from-identity)
    #[arg(long, value_name = "ID", value_parser = parse_identity)]
    pub to_identity: Vec<u64>,
    /// Flows with this verdict: FORWARDED, DROPPED or AUDIT
    #[arg(long, value_name = "VERDICT")]
    pub verdict: Vec<String>,
    /// Flows dropped (or audited) for this reason, e.g. POLICY_DENIED, POLICY_DENY_RULE,
    /// UNKNOWN_IDENTITY, SPOOFED_SOURCE (case and `-`/`_` do not matter)
    #[arg(long, value_name = "REASON")]
    pub drop_reason: Vec<String>,
    /// Flows of this protocol: TCP, UDP, SCTP, ICMP or ICMPv6
    #[arg(long, value_name = "PROTO")]
    pub protocol: Vec<String>,
    /// Flows with this port on either end
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Flows at or after this time: a duration before now (`30s`, `5m`, `1h30m`) or an RFC
    /// 3339 time (`2024-11-28T03:12:01Z`)
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Show the last N matching flows first; 0 shows every one the agent holds [default: 20;
    /// none with --follow]
    #[arg(long, value_name = "N", help_heading = "Output")]
    pub last: Option<usize>,
    /// Keep printing new flows as they happen (Ctrl-C to stop)
    #[arg(long, short, help_heading = "Output")]
    pub follow: bool,
    /// Output format
    #[arg(long, short, value_enum, default_value_t = FlowFormat::Compact, help_heading = "Output")]
    pub output: FlowFormat,
    /// Name the deciding policy for forwarded flows too (drops and audits always name it)
    #[arg(long, help_heading = "Output")]
    pub print_policy_names: bool,
    /// The agent to ask.
    #[command(flatten, next_help_heading = "Agent")]
    pub socket: SocketArgs,
}

impl ObserveArgs {
    /// The filter these flags describe (`--since` taken relative to `now`), checked.
    pub fn filter(&self, now: SystemTime) -> Result<FlowFilter, CliError> {
        let filter = FlowFilter {
            from_label: self.from_label.clone(),
            to_label: self.to_label.clone(),
            from_pod: self.from_pod.clone(),
            to_pod: self.to_pod.clone(),
            namespace: self.namespace.clone(),
            from_identity: self.from_identity.clone(),
            to_identity: self.to_identity.clone(),
            verdict: self.verdict.clone(),
            drop_reason: self.drop_reason.clone(),
            protocol: self.protocol.clone(),
            port: self.port.clone(),
            since_ns: self.since.map(|s| s.to_ns(now)),
        };
        filter.validate().map_err(CliError::Usage)?;
        Ok(filter)
    }

    /// The `last` to ask the agent for: `--last N`, with 0 meaning every flow held;
    /// without `--last`, [`DEFAULT_LAST`], or none when following.
    pub fn last(&self) -> usize {
        match (self.last, self.follow) {
            (Some(0), _) => usize::MAX,
            (Some(n), _) => n,
            (None, false) => DEFAULT_LAST,
            (None, true) => 0,
        }
    }
}

/// Runs `sluice observe`: flows to `out` (flushed line by line), buffer losses to `err`.
pub fn run(
    args: &ObserveArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Exit, CliError> {
    let filter = args.filter(SystemTime::now())?;
    let request = Request::Observe {
        filter,
        last: args.last(),
        follow: args.follow,
    };
    let mut client = Client::connect(&args.socket.socket)?;
    if !args.follow {
        client.set_timeout(Some(QUERY_TIMEOUT))?;
    }
    client.send(&request)?;
    let mut printer = FlowPrinter::new(args.output, args.print_policy_names, args.follow);
    printer.start(out)?;
    loop {
        match client.next_response()? {
            Some(Response::Flow(flow)) => printer.flow(&flow, out)?,
            Some(Response::End { lost, evicted }) => {
                printer.finish(out)?;
                if lost > 0 || evicted > 0 {
                    writeln!(
                        err,
                        "note: the agent lost {lost} flow events before its buffer and \
                         evicted {evicted} older flows from it (a bigger --flow-buffer keeps more)"
                    )?;
                }
                return Ok(Exit::Success);
            }
            Some(other) => {
                return Err(CliError::UnexpectedResponse {
                    request: "observe",
                    got: response_kind(&other),
                });
            }
            None => {
                printer.finish(out)?;
                return Err(ClientError::Protocol {
                    path: args.socket.socket.clone(),
                    reason: "the agent closed the connection before the end of the flows".into(),
                }
                .into());
            }
        }
    }
}
