//! Rendering shared by the commands: flows (compact, table, JSON), aligned tables, times,
//! identities, rules and numbers.

use std::fmt::Write as _;
use std::io::Write;

use clap::ValueEnum;
use identity_cache::identity::{Identity, ReservedIdentity};

use crate::flows::{FlowEndpoint, FlowRecord, PolicyRef};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 28 03:12:01.123` (UTC; the day space-padded, as `hubble observe` prints it) for a time
/// in nanoseconds since the Unix epoch.
pub fn flow_time(time_ns: u64) -> String {
    let secs = time_ns / 1_000_000_000;
    let millis = (time_ns % 1_000_000_000) / 1_000_000;
    let (_, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{} {:>2} {:02}:{:02}:{:02}.{:03}",
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis
    )
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// An identity in full: the reserved number in decimal, a derived one as 16 hex digits (as
/// `identity_cache::identity::Identity` prints it).
pub fn identity_full(id: u64) -> String {
    Identity(id).to_string()
}

/// An identity for a flow line: a reserved identity's name (`world`, `host`, …) or its
/// number, a derived identity's first 8 hex digits (`sluice identity get` accepts them).
pub fn identity_short(id: u64) -> String {
    if let Some(reserved) = ReservedIdentity::from_identity(Identity(id)) {
        return reserved.name().to_owned();
    }
    if id < Identity::FIRST_DERIVED {
        return id.to_string();
    }
    format!("{id:016x}")[..8].to_owned()
}

/// `ns/pod`, else the address; with `:port` when `port` is set (IPv6 addresses bracketed).
pub fn endpoint(end: &FlowEndpoint, with_port: bool) -> String {
    let name = end.display_name();
    if !with_port || end.port == 0 {
        name
    } else if end.pod.is_none() && end.ip.contains(':') {
        format!("[{name}]:{}", end.port)
    } else {
        format!("{name}:{}", end.port)
    }
}

/// Whether the flow's protocol has ports (TCP, UDP, SCTP).
fn has_ports(protocol: &str) -> bool {
    ["TCP", "UDP", "SCTP"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

fn icmp_type_name(protocol: &str, t: u8) -> Option<&'static str> {
    let v6 = protocol.eq_ignore_ascii_case("ICMPv6");
    Some(match (v6, t) {
        (false, 0) | (true, 129) => "echo-reply",
        (false, 8) | (true, 128) => "echo-request",
        (false, 3) | (true, 1) => "destination-unreachable",
        (false, 11) | (true, 3) => "time-exceeded",
        (true, 2) => "packet-too-big",
        (true, 135) => "neighbor-solicitation",
        (true, 136) => "neighbor-advertisement",
        _ => return None,
    })
}

/// `TCP SYN,ACK`, `UDP`, `ICMP echo-request`, `ICMP type 13`.
pub fn protocol_summary(flow: &FlowRecord) -> String {
    let mut s = flow.protocol.clone();
    if let Some(flags) = flow.tcp_flags.as_deref().filter(|f| !f.is_empty()) {
        let _ = write!(s, " {flags}");
    }
    if let Some(t) = flow.icmp_type {
        match icmp_type_name(&flow.protocol, t) {
            Some(name) => {
                let _ = write!(s, " {name}");
            }
            None => {
                let _ = write!(s, " type {t}");
            }
        }
    }
    s
}

/// `FORWARDED`, `DROPPED (POLICY_DENIED)`, `AUDIT (would drop: POLICY_DENIED)`.
pub fn verdict_summary(flow: &FlowRecord) -> String {
    match (
        flow.verdict.to_ascii_uppercase().as_str(),
        &flow.drop_reason,
    ) {
        ("DROPPED", Some(reason)) => format!("DROPPED ({reason})"),
        ("AUDIT", Some(reason)) => format!("AUDIT (would drop: {reason})"),
        _ => flow.verdict.clone(),
    }
}

fn is_forwarded(flow: &FlowRecord) -> bool {
    flow.verdict.eq_ignore_ascii_case("FORWARDED")
}

/// One `sluice observe` compact line:
///
/// `Nov 28 03:12:01.123: shop/web-7c9:40312 (id 1a2b3c4d) -> shop/api-5d8:8080 (id 3c4d5e6f)
/// TCP SYN DROPPED (POLICY_DENIED) by shop/api-policy[policyTypes]`
///
/// Ports are shown on both ends (as hubble does) for TCP/UDP/SCTP. ` reply` follows the
/// protocol for replies of tracked connections. The deciding rule follows ` by ` for every
/// drop and audit, and for forwarded flows with `print_policy_names`. `[kernel]` ends flows
/// decided by the in-kernel path.
pub fn flow_compact(flow: &FlowRecord, print_policy_names: bool) -> String {
    let ports = has_ports(&flow.protocol);
    let mut line = format!(
        "{}: {} (id {}) -> {} (id {}) {}",
        flow_time(flow.time_ns),
        endpoint(&flow.source, ports),
        identity_short(flow.source.identity),
        endpoint(&flow.destination, ports),
        identity_short(flow.destination.identity),
        protocol_summary(flow),
    );
    if flow.is_reply {
        line.push_str(" reply");
    }
    line.push(' ');
    line.push_str(&verdict_summary(flow));
    if let Some(policy) = &flow.policy
        && (print_policy_names || !is_forwarded(flow))
    {
        let _ = write!(line, " by {policy}");
    }
    if flow.observation_point.eq_ignore_ascii_case("kernel") {
        line.push_str(" [kernel]");
    }
    line
}

/// The columns of `sluice observe -o table`.
pub const FLOW_TABLE_HEADERS: [&str; 7] = [
    "TIME",
    "SOURCE",
    "DESTINATION",
    "PROTO",
    "VERDICT",
    "REASON",
    "POLICY",
];

/// Widths used while following, when later rows cannot be measured in advance.
const FLOW_TABLE_STREAM_WIDTHS: [usize; 7] = [19, 32, 32, 11, 9, 13, 0];

/// One `sluice observe -o table` row (`-` for an empty cell). `reply` and `[kernel]` are
/// appended to the verdict.
pub fn flow_row(flow: &FlowRecord) -> Vec<String> {
    let ports = has_ports(&flow.protocol);
    let mut verdict = flow.verdict.clone();
    if flow.is_reply {
        verdict.push_str(" reply");
    }
    if flow.observation_point.eq_ignore_ascii_case("kernel") {
        verdict.push_str(" [kernel]");
    }
    vec![
        flow_time(flow.time_ns),
        endpoint(&flow.source, ports),
        endpoint(&flow.destination, ports),
        protocol_summary(flow),
        verdict,
        flow.drop_reason.clone().unwrap_or_else(|| "-".into()),
        flow.policy
            .as_ref()
            .map_or_else(|| "-".into(), PolicyRef::to_string),
    ]
}

/// A flow as one JSON line: exactly [`FlowRecord`]'s serde form.
pub fn flow_json(flow: &FlowRecord) -> String {
    // A FlowRecord has only strings, numbers, options and vectors: it always serializes.
    serde_json::to_string(flow).unwrap_or_default()
}

/// `sluice observe`'s output formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum FlowFormat {
    /// One line per flow, like `hubble observe`.
    #[default]
    Compact,
    /// One JSON object per line (the API's FlowRecord), for scripts and `jq`.
    Json,
    /// Aligned columns: TIME SOURCE DESTINATION PROTO VERDICT REASON POLICY.
    Table,
}

/// Writes flows as they arrive. A table is aligned over all rows when the listing has an
/// end, and printed row by row with fixed widths while following.
#[derive(Debug)]
pub struct FlowPrinter {
    format: FlowFormat,
    print_policy_names: bool,
    streaming: bool,
    table: Table,
    started: bool,
}

impl FlowPrinter {
    /// A printer for `format`; `streaming` when the listing has no end (`--follow`).
    pub fn new(format: FlowFormat, print_policy_names: bool, streaming: bool) -> Self {
        FlowPrinter {
            format,
            print_policy_names,
            streaming,
            table: Table::new(&FLOW_TABLE_HEADERS),
            started: false,
        }
    }

    /// Starts the listing: a streamed table prints its header at once.
    pub fn start(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.format == FlowFormat::Table && self.streaming && !self.started {
            let header = FLOW_TABLE_HEADERS.map(str::to_owned);
            writeln!(out, "{}", fixed_row(&header, &FLOW_TABLE_STREAM_WIDTHS))?;
            self.started = true;
            out.flush()?;
        }
        Ok(())
    }

    /// Prints (or, for a table with an end, keeps) one flow, flushing after each line.
    pub fn flow(&mut self, flow: &FlowRecord, out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            FlowFormat::Compact => {
                writeln!(out, "{}", flow_compact(flow, self.print_policy_names))?
            }
            FlowFormat::Json => writeln!(out, "{}", flow_json(flow))?,
            FlowFormat::Table if self.streaming => {
                self.start(out)?;
                writeln!(
                    out,
                    "{}",
                    fixed_row(&flow_row(flow), &FLOW_TABLE_STREAM_WIDTHS)
                )?;
            }
            FlowFormat::Table => {
                self.table.row(flow_row(flow));
                return Ok(());
            }
        }
        out.flush()
    }

    /// Ends the listing: prints a kept table (its header alone when there were no flows).
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.format == FlowFormat::Table && !self.streaming {
            write!(out, "{}", self.table.render(""))?;
        }
        out.flush()
    }
}

fn fixed_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<w$}  ");
        }
    }
    line
}

/// Left-aligned columns separated by two spaces, no trailing blanks.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header and rows, each line starting with `indent` and ending with a newline.
    pub fn render(&self, indent: &str) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut s = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(indent);
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let pad = width - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }
}

/// `CiliumNetworkPolicy shop/allow-frontend, section ingress, rule 0` (no namespace for a
/// cluster-wide policy; no rule number when the reference has none).
pub fn rule_description(rule: &PolicyRef) -> String {
    let mut s = if rule.namespace.is_empty() {
        format!("{} {}", rule.kind, rule.name)
    } else {
        format!("{} {}/{}", rule.kind, rule.namespace, rule.name)
    };
    let _ = write!(s, ", section {}", rule.section);
    if let Some(i) = rule.index {
        let _ = write!(s, ", rule {i}");
    }
    s
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// An age in seconds: `0.4s`, `12s`, `3m 4s`, `2h 5m`; `unknown` for a negative or
/// non-finite value.
pub fn age(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "unknown".into();
    }
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        // 2024-11-28T03:12:01.123Z
        assert_eq!(flow_time(1_732_763_521_123_456_789), "Nov 28 03:12:01.123");
        assert_eq!(flow_time(0), "Jan  1 00:00:00.000");
        // 2024-02-29T23:59:59.999Z (leap day)
        assert_eq!(flow_time(1_709_251_199_999_000_000), "Feb 29 23:59:59.999");
    }

    #[test]
    fn identities_print_short_and_full() {
        assert_eq!(identity_short(2), "world");
        assert_eq!(identity_short(200), "200");
        assert_eq!(identity_short(0x1a2b_3c4d_5e6f_7081), "1a2b3c4d");
        assert_eq!(identity_short(0x1234), "00000000");
        assert_eq!(identity_full(0x1234), "0000000000001234");
        assert_eq!(identity_full(6), "6");
    }

    #[test]
    fn tables_align_without_trailing_blanks() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["xxxx".into(), "y".into(), "z".into()]);
        t.row(vec!["q".into(), String::new(), String::new()]);
        assert_eq!(
            t.render("  "),
            "  A     LONGER  C\n  xxxx  y       z\n  q\n"
        );
    }

    #[test]
    fn numbers_and_ages() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(age(0.42), "0.4s");
        assert_eq!(age(184.0), "3m 4s");
        assert_eq!(age(-1.0), "unknown");
    }
}
