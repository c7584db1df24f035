//! `sluice policy conformance DIR`: the policy conformance corpus, decided locally by
//! [`identity_cache::conformance::run_case`] (the agent's parser and compiler; no agent
//! needed).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use identity_cache::conformance::run_case;
use identity_cache::policy::Action;
use serde::Serialize;

use super::{CliError, Exit, TextOrJson};

pub(crate) const EXAMPLES: &str = "\
Examples:
  sluice policy conformance /usr/share/sluice/conformance/cases
  sluice policy conformance ../shared/conformance/cases --verbose
  sluice policy conformance ./cases -o json | jq '.results[] | select(.passed | not)'";

/// `sluice policy conformance`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct ConformanceArgs {
    /// Directory of case files (`*.json`, one case each)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print every probe, not only the failing ones
    #[arg(long, short)]
    pub verbose: bool,
    /// Output format (JSON: one object with the counts, the reported probes and broken cases)
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

/// One probe's outcome, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeOutcome {
    /// Case id.
    pub case: String,
    /// Index of the probe in the case.
    pub probe: usize,
    /// `from -> to port/proto`.
    pub description: String,
    /// `allow` or `deny`, as upstream asserts.
    pub expected: &'static str,
    /// `allow` or `deny`, as decided.
    pub got: &'static str,
    /// The deciding rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The drop reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether `got` is `expected`.
    pub passed: bool,
}

/// A case file that could not be run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenCase {
    /// The file.
    pub file: String,
    /// Why.
    pub error: String,
}

/// The corpus' outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Cases run.
    pub cases: usize,
    /// Probes decided.
    pub probes: usize,
    /// Probes whose verdict matches upstream.
    pub passed: usize,
    /// Probes whose verdict does not.
    pub failed: usize,
    /// Cases that could not be run.
    pub broken_cases: usize,
    /// The failing probes (every probe when verbose).
    pub results: Vec<ProbeOutcome>,
    /// The cases that could not be run.
    pub broken: Vec<BrokenCase>,
}

impl Summary {
    /// Whether every probe passed and every case ran.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.broken_cases == 0
    }
}

fn verdict(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

/// The `*.json` files of `dir`, sorted.
pub fn case_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the corpus directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::Usage(format!(
            "{} holds no *.json case files",
            dir.display()
        )));
    }
    Ok(files)
}

/// Runs every case file; `all` reports passing probes in [`Summary::results`] too.
pub fn run_corpus(files: &[PathBuf], all: bool) -> Summary {
    let mut summary = Summary::default();
    for file in files {
        let broken = |error: String| BrokenCase {
            file: file.display().to_string(),
            error,
        };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                summary.broken.push(broken(format!("cannot read: {e}")));
                continue;
            }
        };
        match run_case(&text) {
            Ok((case, results)) => {
                summary.cases += 1;
                for r in results {
                    summary.probes += 1;
                    let passed = r.passed();
                    if passed {
                        summary.passed += 1;
                    } else {
                        summary.failed += 1;
                    }
                    if !passed || all {
                        summary.results.push(ProbeOutcome {
                            case: case.id.clone(),
                            probe: r.index,
                            description: r.description,
                            expected: verdict(r.expected),
                            got: verdict(r.got),
                            rule: r.rule,
                            reason: r.reason,
                            passed,
                        });
                    }
                }
            }
            Err(e) => summary.broken.push(broken(e.to_string())),
        }
    }
    summary.broken_cases = summary.broken.len();
    summary
}

/// The text form: a line per reported probe and broken case, then the counts.
pub fn render(summary: &Summary) -> String {
    let mut s = String::new();
    for p in &summary.results {
        s.push_str(&format!(
            "{} {} probe {}: {}: expected {}, got {} (rule {}, reason {})\n",
            if p.passed { "PASS" } else { "FAIL" },
            p.case,
            p.probe,
            p.description,
            p.expected,
            p.got,
            p.rule.as_deref().unwrap_or("-"),
            p.reason.as_deref().unwrap_or("-"),
        ));
    }
    for b in &summary.broken {
        s.push_str(&format!("BROKEN {}: {}\n", b.file, b.error));
    }
    s.push_str(&format!(
        "{} cases, {} probes: {} passed, {} failed; {} cases could not be run: {}\n",
        summary.cases,
        summary.probes,
        summary.passed,
        summary.failed,
        summary.broken_cases,
        if summary.ok() { "PASS" } else { "FAIL" }
    ));
    s
}

/// Runs `sluice policy conformance`: exits 1 when a probe fails or a case cannot be run.
pub fn run(args: &ConformanceArgs, out: &mut impl Write) -> Result<Exit, CliError> {
    let files = case_files(&args.dir)?;
    let summary = run_corpus(&files, args.verbose);
    match args.output {
        TextOrJson::Text => write!(out, "{}", render(&summary))?,
        TextOrJson::Json => {
            let json = serde_json::to_string(&summary)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            writeln!(out, "{json}")?;
        }
    }
    Ok(if summary.ok() {
        Exit::Success
    } else {
        Exit::Failure
    })
}
