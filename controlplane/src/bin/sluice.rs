//! `sluice`: the node agent and the CLI that talks to it. The commands live in
//! [`controlplane::cli`]; this only parses the command line and sets the exit status.

use std::process::ExitCode;

use clap::Parser;
use controlplane::cli::{Cli, run};

fn main() -> ExitCode {
    // Usage errors (exit 2), --help and --version are handled by clap here.
    let cli = Cli::parse();
    // Not locked: the agent's threads print too.
    ExitCode::from(run(cli, &mut std::io::stdout(), &mut std::io::stderr()))
}
