//! `sluice identity list` and `sluice identity get`: the security identities in use.

use std::io::Write;

use clap::{Args, Subcommand};
use identity_cache::identity::{Identity, ReservedIdentity};

use super::format::{Table, identity_full};
use super::{CliError, Exit, SocketArgs, TextOrJson, query, response_kind};
use crate::api::{IdentityEntry, Request, Response};

/// Parses an identity as typed on the command line: a reserved name (`world`,
/// `reserved:host`, …), `0x`-prefixed hex, exactly 16 hex digits (the form `sluice identity
/// list` prints for derived identities), or a decimal number.
pub fn parse_identity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let name = s.strip_prefix("reserved:").unwrap_or(s);
    if let Some(r) = ReservedIdentity::ALL
        .into_iter()
        .find(|r| r.name().eq_ignore_ascii_case(name))
    {
        return Ok(r.identity().0);
    }
    let bad = || {
        format!(
            "{s:?} is not an identity: expected a decimal number, 0x-prefixed hex, the 16 hex \
             digits `sluice identity list` prints, or a reserved name (host, world, …)"
        )
    };
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| bad());
    }
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u64::from_str_radix(s, 16).map_err(|_| bad());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    Err(bad())
}

/// `sluice identity …`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// List the identities in use, with their labels and local endpoints
    ///
    /// Every identity the agent knows: the reserved ones (below 256: host, world, …) and
    /// those derived from a workload's labels (a keyed 64-bit hash, the same on every node,
    /// printed as 16 hex digits).
    #[command(after_help = "\
Examples:
  sluice identity list
  sluice identity list -o json | jq '.[] | select(.endpoints != [])'")]
    List(ListArgs),
    /// Show one identity: its labels and the local endpoints that have it
    ///
    /// ID is a decimal number, 0x-prefixed hex, the 16 hex digits `sluice identity list`
    /// prints, a reserved name (`world`), or the first hex digits of a derived identity as
    /// `sluice observe` shows them (at least 4).
    #[command(after_help = "\
Examples:
  sluice identity get world
  sluice identity get 0x1a2b3c4d5e6f7081
  # The short form `sluice observe` prints
  sluice identity get 1a2b3c4d")]
    Get(GetArgs),
}

/// `sluice identity list`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format (JSON: the API's identity entries)
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// The agent to ask.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `sluice identity get`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The identity (decimal, 0x-hex, 16 hex digits, a reserved name, or a hex prefix)
    #[arg(value_name = "ID")]
    pub id: String,
    /// Output format (JSON: the API's identity entry)
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// The agent to ask.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Runs `sluice identity list` or `get`.
pub fn run(command: &IdentityCommand, out: &mut impl Write) -> Result<Exit, CliError> {
    match command {
        IdentityCommand::List(args) => {
            let mut entries = fetch(&args.socket)?;
            entries.sort_by_key(|e| e.identity);
            match args.output {
                TextOrJson::Text => write!(out, "{}", render_list(&entries))?,
                TextOrJson::Json => writeln!(out, "{}", to_json(&entries)?)?,
            }
        }
        IdentityCommand::Get(args) => {
            // A value that can be neither a number nor a prefix is refused before connecting.
            if let Err(e) = parse_identity(&args.id)
                && !is_prefix(&args.id)
            {
                return Err(CliError::Usage(e));
            }
            let entries = fetch(&args.socket)?;
            let entry = find(&entries, &args.id)?;
            match args.output {
                TextOrJson::Text => write!(out, "{}", render_one(entry))?,
                TextOrJson::Json => writeln!(out, "{}", to_json(entry)?)?,
            }
        }
    }
    Ok(Exit::Success)
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> std::io::Result<String> {
    serde_json::to_string(value).map_err(|e| std::io::Error::other(e.to_string()))
}

fn fetch(socket: &SocketArgs) -> Result<Vec<IdentityEntry>, CliError> {
    match query(socket, &Request::Identities)? {
        Response::Identities(entries) => Ok(entries),
        other => Err(CliError::UnexpectedResponse {
            request: "identities",
            got: response_kind(&other),
        }),
    }
}

fn is_prefix(s: &str) -> bool {
    (4..16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The entry `wanted` names: by number first, then (for 4 to 15 hex digits) as the unique
/// derived identity whose 16-digit form starts with it.
pub fn find<'a>(entries: &'a [IdentityEntry], wanted: &str) -> Result<&'a IdentityEntry, CliError> {
    let number = parse_identity(wanted);
    if let Ok(n) = number
        && let Some(entry) = entries.iter().find(|e| e.identity == n)
    {
        return Ok(entry);
    }
    if is_prefix(wanted) {
        let prefix = wanted.to_ascii_lowercase();
        let matches: Vec<&IdentityEntry> = entries
            .iter()
            .filter(|e| {
                !Identity(e.identity).is_reserved()
                    && identity_full(e.identity).starts_with(&prefix)
            })
            .collect();
        match matches.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                let names: Vec<String> = many.iter().map(|e| identity_full(e.identity)).collect();
                return Err(CliError::Usage(format!(
                    "{wanted} matches {} identities ({}): give more digits",
                    many.len(),
                    names.join(", ")
                )));
            }
        }
    }
    if let Err(e) = number
        && !is_prefix(wanted)
    {
        return Err(CliError::Usage(e));
    }
    Err(CliError::NotFound(format!(
        "identity {wanted} is not in use on this node (`sluice identity list` shows those that are)"
    )))
}

/// `sluice identity list`'s text: one row per label, the identity and its endpoints on the
/// first.
pub fn render_list(entries: &[IdentityEntry]) -> String {
    let mut t = Table::new(&["IDENTITY", "LABELS", "ENDPOINTS"]);
    for e in entries {
        let mut labels = e.labels.iter();
        t.row(vec![
            identity_full(e.identity),
            labels.next().cloned().unwrap_or_else(|| "-".into()),
            e.endpoints.join(", "),
        ]);
        for label in labels {
            t.row(vec![String::new(), label.clone(), String::new()]);
        }
    }
    let mut s = t.render("");
    s.push_str(&format!("{} identities\n", entries.len()));
    s
}

/// `sluice identity get`'s text.
pub fn render_one(e: &IdentityEntry) -> String {
    let kind = if e.reserved {
        "reserved"
    } else {
        "derived from labels"
    };
    let mut s = format!(
        "Identity:   {} (decimal {}, {kind})\n",
        identity_full(e.identity),
        e.identity
    );
    let mut first = true;
    for label in &e.labels {
        let head = if first {
            "Labels:     "
        } else {
            "            "
        };
        s.push_str(&format!("{head}{label}\n"));
        first = false;
    }
    if e.labels.is_empty() {
        s.push_str("Labels:     none\n");
    }
    let endpoints = if e.endpoints.is_empty() {
        "none on this node".to_owned()
    } else {
        e.endpoints.join(", ")
    };
    s.push_str(&format!("Endpoints:  {endpoints}\n"));
    s
}
