//! The `sluice` command line: the agent, and the commands that talk to it over its local API
//! ([`crate::api`]) or run on their own (`policy conformance`).
//!
//! | module | command |
//! |---|---|
//! | [`observe`] | `sluice observe`: recent and live flows, filtered, in three formats |
//! | [`status`] | `sluice status`: endpoints, policies, rejections, workers, maps, latency |
//! | [`trace`] | `sluice policy trace`: the verdict for a hypothetical packet, and the rule |
//! | [`conformance`] | `sluice policy conformance`: the policy conformance corpus, locally |
//! | [`identity`] | `sluice identity list` / `get` |
//! | [`format`](mod@format) | rendering shared by the commands (flows, tables, times, identities) |
//!
//! Every command is a `run` function that writes to the `out` it is given and returns an
//! [`Exit`] or a [`CliError`], so it can be tested without a terminal; [`run`] dispatches
//! and turns errors into `error: …` lines and exit codes (1: the agent or the connection
//! failed, or a check failed; 2: a usage error).

pub mod conformance;
pub mod format;
pub mod identity;
pub mod observe;
pub mod status;
pub mod trace;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::agent::{AgentArgs, AgentError};
use crate::api::{Client, ClientError, DEFAULT_SOCKET, Request, Response};

/// How long a query waits for the agent's answer before giving up.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

const MAIN_EXAMPLES: &str = "\
Examples:
  # Run the node agent
  sluice agent --state-dir /etc/sluice/state
  # What the agent enforces, and how it is doing
  sluice status
  # Follow dropped packets, each with the rule that dropped it
  sluice observe --verdict DROPPED -f
  # Would frontend reach backend on 8080/TCP, and which rule says so?
  sluice policy trace --from-labels app=frontend --to-labels app=backend --port 8080/TCP

Commands that talk to the agent use its root-only socket (--socket, or $SLUICE_SOCKET;
default /run/sluice/agent.sock). Exit status: 0 success, 1 the agent or a check failed,
2 a usage error.";

/// sluice: an identity-aware AF_XDP dataplane for Kubernetes nodes.
///
/// `sluice agent` runs the node agent; the other commands ask it what it sees and decides
/// (or, for `policy conformance`, run on their own).
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    arg_required_else_help = true,
    after_help = MAIN_EXAMPLES
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `sluice`'s commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent (dataplane, policy sync, local API)
    ///
    /// Attaches the XDP program, starts the AF_XDP workers, keeps identities and policies in
    /// step with the state directory, and answers the other `sluice` commands on a root-only
    /// Unix socket. Every flag also has a key in the --config file; flags win. Runs until
    /// SIGTERM or SIGINT.
    #[command(after_help = "\
Examples:
  # Standalone: endpoints and policies from YAML files
  sluice agent --state-dir /etc/sluice/state
  # Settings from a file, two workers
  sluice agent --config /etc/sluice/agent.yaml --cores 2,3
  # A lab node that is a network namespace, in-kernel path only
  sluice agent --netns node1 --datapath kernel --socket /tmp/sluice.sock")]
    Agent(AgentArgs),
    /// Show flows: each packet's verdict and the rule behind it, recent or live
    ///
    /// Like `hubble observe`. Prints the agent's most recent flows that match the filters
    /// (20 unless --last says otherwise), then, with --follow, new ones as they happen.
    /// Repeating a filter flag matches any of its values; different flags must all match.
    /// Drops and audits always name the deciding policy; --print-policy-names names it for
    /// forwarded flows too. Times are UTC.
    #[command(after_help = observe::EXAMPLES)]
    Observe(observe::ObserveArgs),
    /// Show the agent's state: endpoints, policies, rejections, workers, maps
    ///
    /// Endpoints with their identity and enforcement, the policies loaded and those
    /// rejected (file, line, reason), the workers with packet rates and latency, BPF map
    /// use, whether the kernel fallback is active, flow counters and the age of the last
    /// sync. --latency adds the workers' per-core latency report.
    #[command(after_help = status::EXAMPLES)]
    Status(status::StatusArgs),
    /// Ask how policy decides: trace a packet, or run the conformance corpus
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List the security identities in use, or show one
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Print the CustomResourceDefinitions of SluicePolicy and SluiceClusterPolicy
    ///
    /// The YAML is generated from the Rust types the agent reads; `deploy/crds.yaml` holds
    /// this output and a test keeps it current.
    #[command(after_help = "\
Examples:
  sluice crds > deploy/crds.yaml
  sluice crds | kubectl apply -f -")]
    Crds,
}

/// `sluice policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the verdict, and the rule behind it, for a hypothetical packet
    ///
    /// Like `cilium policy trace`. Describes each end by labels (with a namespace), by an
    /// existing pod, or by an address; the agent decides a new connection to the port from
    /// its compiled tables and names the deciding direction and rule (policy, section,
    /// index), with each direction's decision.
    #[command(after_help = trace::EXAMPLES)]
    Trace(trace::TraceArgs),
    /// Run the policy conformance corpus locally (no agent needed)
    ///
    /// Each case file holds pods, policies and probes with the verdicts upstream test suites
    /// assert. Every probe is decided by the same parser and compiler the agent uses, with
    /// policies compiled before and after the pods. Prints failing probes (all with
    /// --verbose) and a summary; exits 1 if any probe fails or a case cannot be run.
    #[command(after_help = conformance::EXAMPLES)]
    Conformance(conformance::ConformanceArgs),
    /// Convert CiliumNetworkPolicy YAML into SluicePolicy YAML
    ///
    /// CiliumNetworkPolicy becomes SluicePolicy and CiliumClusterwideNetworkPolicy becomes
    /// SluiceClusterPolicy (same spec, server-set metadata and status dropped); other
    /// documents pass through unchanged. Reads FILE (or standard input with `-`), writes
    /// standard output.
    #[command(after_help = "\
Examples:
  sluice policy import cnp.yaml > sluice-policies.yaml
  kubectl get cnp -A -o yaml | sluice policy import - | kubectl apply -f -")]
    Import {
        /// The YAML file (`-` for standard input)
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
}

/// `--socket`, shared by the commands that talk to the agent.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// The agent's API socket
    #[arg(
        long,
        value_name = "PATH",
        env = "SLUICE_SOCKET",
        hide_env_values = true,
        default_value = DEFAULT_SOCKET
    )]
    pub socket: PathBuf,
}

/// `-o text|json`, for commands with a human and a machine form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    /// For people.
    #[default]
    Text,
    /// One JSON document (the API's serde form), for scripts.
    Json,
}

/// How a command ended when nothing went wrong running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit status 0.
    Success,
    /// Exit status 1: the command ran, but what it checked failed (a conformance probe).
    Failure,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument's value is not acceptable (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The agent could not be reached, or said no.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent answered with something other than what the request asks for.
    #[error(
        "the agent answered {request} with {got} (is it the same version as this CLI, {}?)",
        env!("CARGO_PKG_VERSION")
    )]
    UnexpectedResponse {
        /// The request.
        request: &'static str,
        /// The kind of answer.
        got: &'static str,
    },
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing to the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The agent stopped with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl CliError {
    /// The process exit status for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// `error`'s message followed by its sources, `: `-separated, skipping a source whose text
/// the message already contains.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Runs a parsed command line, writing results to `out` and errors to `err`; returns the
/// process exit status. A closed output pipe (`sluice observe | head`) ends quietly with 0.
pub fn run(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let result = match cli.command {
        Command::Agent(args) => crate::agent::run(args)
            .map(|()| Exit::Success)
            .map_err(CliError::from),
        Command::Observe(args) => observe::run(&args, out, err),
        Command::Status(args) => status::run(&args, out),
        Command::Policy(PolicyCommand::Trace(args)) => trace::run(&args, out),
        Command::Policy(PolicyCommand::Conformance(args)) => conformance::run(&args, out),
        Command::Identity(command) => identity::run(&command, out),
        Command::Crds => write!(out, "{}", crate::crd::crd_yaml())
            .map(|()| Exit::Success)
            .map_err(CliError::from),
        Command::Policy(PolicyCommand::Import { file }) => import(&file, out),
    };
    let result = result.and_then(|exit| out.flush().map(|()| exit).map_err(CliError::from));
    match result {
        Ok(exit) => exit.code(),
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {}", error_chain(&e));
            e.exit_code()
        }
    }
}

/// `sluice policy import FILE`.
fn import(file: &std::path::Path, out: &mut impl Write) -> Result<Exit, CliError> {
    let text = if file == std::path::Path::new("-") {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
        t
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?
    };
    let converted = crate::crd::import(&text).map_err(CliError::Usage)?;
    write!(out, "{converted}")?;
    Ok(Exit::Success)
}

/// The name of a response's kind, for error messages.
pub(crate) fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Flow(_) => "a flow",
        Response::End { .. } => "the end of a flow listing",
        Response::Status(_) => "a status report",
        Response::Trace(_) => "a trace",
        Response::Identities(_) => "an identity list",
        Response::Latency(_) => "a latency report",
        Response::Cni(_) => "a CNI result",
        Response::Error { .. } => "an error",
    }
}

/// Connects, sends one query and reads its one answer (with [`QUERY_TIMEOUT`]).
pub(crate) fn query(socket: &SocketArgs, request: &Request) -> Result<Response, CliError> {
    let mut client = Client::connect(&socket.socket)?;
    client.set_timeout(Some(QUERY_TIMEOUT))?;
    Ok(client.call(request)?)
}
