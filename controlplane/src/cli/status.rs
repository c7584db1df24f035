//! `sluice status`: what the agent enforces and how it is doing.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use perf::LatencyReport;

use super::format::{Table, age, identity_full, thousands};
use super::{CliError, Exit, SocketArgs, TextOrJson, query, response_kind};
use crate::api::{Request, Response, StatusReport};

pub(crate) const EXAMPLES: &str = "\
Examples:
  sluice status                                    the agent's state
  sluice status --latency                          plus per-core latency of the workers
  sluice status --latency-report latency.json      also save that report as JSON
  sluice status -o json | jq '.rejected'           why files or policies were refused";

/// A map this full (percent) is flagged in the text output.
pub const MAP_PRESSURE_WARN_PERCENT: f64 = 80.0;

/// `sluice status`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Also show the workers' per-core latency report (packets, rates, p50/p99/p99.9/max)
    #[arg(long)]
    pub latency: bool,
    /// Write the latency report as JSON to FILE (implies --latency)
    #[arg(long, value_name = "FILE")]
    pub latency_report: Option<PathBuf>,
    /// Output format. JSON is the API's status report; with --latency, an object with
    /// `status` and `latency`
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// The agent to ask.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Runs `sluice status`.
pub fn run(args: &StatusArgs, out: &mut impl Write) -> Result<Exit, CliError> {
    let report = match query(&args.socket, &Request::Status)? {
        Response::Status(report) => report,
        other => {
            return Err(CliError::UnexpectedResponse {
                request: "status",
                got: response_kind(&other),
            });
        }
    };
    let latency = if args.latency || args.latency_report.is_some() {
        match query(&args.socket, &Request::Latency)? {
            Response::Latency(latency) => Some(latency),
            other => {
                return Err(CliError::UnexpectedResponse {
                    request: "latency",
                    got: response_kind(&other),
                });
            }
        }
    } else {
        None
    };
    if let (Some(path), Some(latency)) = (&args.latency_report, &latency) {
        let json = serde_json::to_string_pretty(latency.as_ref())
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|mut s| {
                s.push('\n');
                std::fs::write(path, s)
            });
        json.map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
    }
    match args.output {
        TextOrJson::Text => {
            write!(out, "{}", render(&report))?;
            if let Some(latency) = &latency {
                writeln!(out, "\nLatency:")?;
                write!(out, "{}", latency.to_table())?;
            }
        }
        TextOrJson::Json => {
            let value = to_json(&report, latency.as_deref())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            writeln!(out, "{value}")?;
        }
    }
    Ok(Exit::Success)
}

/// `-o json`: the status report, or `{"status": …, "latency": …}` with a latency report.
pub fn to_json(
    report: &StatusReport,
    latency: Option<&LatencyReport>,
) -> Result<serde_json::Value, serde_json::Error> {
    let status = serde_json::to_value(report)?;
    Ok(match latency {
        None => status,
        Some(latency) => {
            let mut object = serde_json::Map::new();
            object.insert("status".into(), status);
            object.insert("latency".into(), serde_json::to_value(latency)?);
            serde_json::Value::Object(object)
        }
    })
}

fn yes_no(enforced: bool) -> &'static str {
    if enforced { "enforced" } else { "open" }
}

/// The text form of a status report.
pub fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let uptime = humantime::format_duration(std::time::Duration::from_secs(r.uptime_s));
    let _ = writeln!(s, "Agent:       sluice {}, up {uptime}", r.version);
    let _ = writeln!(
        s,
        "Source:      {} (last sync {} ago)",
        r.source,
        age(r.last_sync_age_s)
    );
    let on_kernel: Vec<String> = r
        .endpoints
        .iter()
        .filter(|e| e.datapath == "kernel")
        .map(|e| format!("{}/{}", e.namespace, e.name))
        .collect();
    let fallback = if r.datapath == "kernel" {
        "kernel path only (no workers)".to_owned()
    } else if r.fallback_active {
        format!(
            "kernel fallback ACTIVE for {} endpoint(s): {}",
            on_kernel.len(),
            on_kernel.join(", ")
        )
    } else {
        "kernel fallback inactive".to_owned()
    };
    let _ = writeln!(s, "Datapath:    {}; {fallback}", r.datapath);
    let _ = writeln!(s, "Identities:  {} in use", thousands(r.identities as u64));
    let (seen, evicted, lost) = r.flows;
    let _ = writeln!(
        s,
        "Flows:       {} seen, {} evicted from the buffer, {} lost",
        thousands(seen),
        thousands(evicted),
        thousands(lost)
    );

    let _ = writeln!(s, "\nEndpoints ({}):", r.endpoints.len());
    if r.endpoints.is_empty() {
        let _ = writeln!(s, "  none");
    } else {
        let mut t = Table::new(&[
            "ENDPOINT",
            "IDENTITY",
            "IPS",
            "INTERFACE",
            "MODE",
            "INGRESS",
            "EGRESS",
            "DATAPATH",
        ]);
        for e in &r.endpoints {
            t.row(vec![
                format!("{}/{}", e.namespace, e.name),
                identity_full(e.identity),
                e.ips.join(","),
                e.interface.clone(),
                e.mode.clone(),
                yes_no(e.ingress_enforced).into(),
                yes_no(e.egress_enforced).into(),
                e.datapath.clone(),
            ]);
        }
        s.push_str(&t.render("  "));
    }

    let _ = writeln!(s, "\nPolicies ({} loaded):", r.policies.len());
    if r.policies.is_empty() {
        let _ = writeln!(s, "  none (every endpoint allows all traffic)");
    } else {
        let mut t = Table::new(&["KIND", "POLICY", "ORIGIN"]);
        for p in &r.policies {
            let name = if p.namespace.is_empty() {
                p.name.clone()
            } else {
                format!("{}/{}", p.namespace, p.name)
            };
            t.row(vec![p.kind.clone(), name, p.origin.clone()]);
        }
        s.push_str(&t.render("  "));
    }

    let _ = writeln!(s, "\nRejected ({}):", r.rejected.len());
    if r.rejected.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for j in &r.rejected {
        match j.line {
            Some(line) => {
                let _ = writeln!(s, "  {}:{line}: {}", j.origin, j.reason);
            }
            None => {
                let _ = writeln!(s, "  {}: {}", j.origin, j.reason);
            }
        }
    }

    let _ = writeln!(s, "\nWorkers ({}):", r.workers.len());
    if r.workers.is_empty() {
        let _ = writeln!(s, "  none");
    } else {
        let mut t = Table::new(&[
            "WORKER",
            "CORE",
            "STATE",
            "RESTARTS",
            "PPS",
            "P50 µs",
            "P99 µs",
            "FORWARDED",
            "DROPPED",
            "AUDITED",
            "SOCKET-LOST",
            "FILL-EMPTY",
            "CT-FULL",
            "EVENTS-LOST",
            "PORTS",
        ]);
        for w in &r.workers {
            t.row(vec![
                w.index.to_string(),
                w.core.map_or_else(|| "-".into(), |c| c.to_string()),
                w.state.clone(),
                w.restarts.to_string(),
                thousands(w.pps.max(0.0).round() as u64),
                format!("{:.1}", w.p50_us),
                format!("{:.1}", w.p99_us),
                thousands(w.packets[0]),
                thousands(w.packets[1]),
                thousands(w.packets[2]),
                thousands(w.socket_lost),
                thousands(w.fill_ring_empty),
                thousands(w.conntrack_full),
                thousands(w.events_lost),
                w.ports.join(","),
            ]);
        }
        s.push_str(&t.render("  "));
    }

    let _ = writeln!(s, "\nMaps ({}):", r.maps.len());
    if r.maps.is_empty() {
        let _ = writeln!(s, "  none");
    } else {
        let mut t = Table::new(&["MAP", "ENTRIES", "CAPACITY", "USE"]);
        for m in &r.maps {
            let percent = if m.capacity == 0 {
                0.0
            } else {
                m.entries as f64 * 100.0 / m.capacity as f64
            };
            let mut use_ = format!("{percent:.1}%");
            if percent >= MAP_PRESSURE_WARN_PERCENT {
                use_.push_str(" (nearly full)");
            }
            t.row(vec![
                m.name.clone(),
                thousands(m.entries as u64),
                thousands(m.capacity as u64),
                use_,
            ]);
        }
        s.push_str(&t.render("  "));
    }
    s
}
