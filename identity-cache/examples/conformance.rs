//! Runs the policy conformance corpus: one line per failing probe, then a JSON summary.
//!
//! `cargo run --release -p identity-cache --example conformance -- DIR [--verbose]`
//! Exits 1 when any probe fails or a case cannot be run.

use std::path::PathBuf;
use std::process::ExitCode;

use identity_cache::conformance::run_case;
use identity_cache::policy::Action;

fn verdict(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn main() -> ExitCode {
    let mut dir = None;
    let mut verbose = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--verbose" | "-v" => verbose = true,
            "--help" | "-h" => {
                println!("usage: conformance DIR [--verbose]");
                return ExitCode::SUCCESS;
            }
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: conformance DIR [--verbose]  (DIR holds the corpus' *.json case files)");
        return ExitCode::from(2);
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    files.sort();
    let (mut cases, mut probes, mut passed, mut failed, mut broken) = (0, 0, 0, 0, 0);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                println!("{}: cannot read: {e}", file.display());
                broken += 1;
                continue;
            }
        };
        match run_case(&text) {
            Ok((case, results)) => {
                cases += 1;
                for r in results {
                    probes += 1;
                    if r.passed() {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                    if !r.passed() || verbose {
                        println!(
                            "{} {} probe {}: {} expected {} got {} rule {} reason {}",
                            if r.passed() { "PASS" } else { "FAIL" },
                            case.id,
                            r.index,
                            r.description,
                            verdict(r.expected),
                            verdict(r.got),
                            r.rule.as_deref().unwrap_or("-"),
                            r.reason.as_deref().unwrap_or("-"),
                        );
                    }
                }
            }
            Err(e) => {
                broken += 1;
                println!("BROKEN {}: {e}", file.display());
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"cases": cases, "probes": probes, "passed": passed, "failed": failed, "broken_cases": broken})
    );
    if failed == 0 && broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
