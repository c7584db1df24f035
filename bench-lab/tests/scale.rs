//! Runs `bench-lab scale` for kernel-forward and sluice-afxdp with one and two workers (about
//! a second each) and checks that every pair's sink received frames, that the report has one
//! per-core entry per worker, and that no namespace or BPF pin of the lab is left behind.
//!
//! Needs root (namespaces, BPF, sysfs) and two CPUs; skipped with a message otherwise.

mod common;

use bench_lab::netns::{self, PREFIX};
use bench_lab::scale::{self, CpuPlan, Placement, ScaleConfig, ScaleReport, available_cpus};
use bench_lab::scenario::Progress;

fn our_pins() -> Vec<String> {
    let mine = format!("{PREFIX}{}-", std::process::id());
    std::fs::read_dir("/sys/fs/bpf")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints each finished measurement (visible with `--nocapture`).
struct Lines;

impl Progress for Lines {
    fn start(&self, _what: &str) {}

    fn done(&self, line: &str) {
        eprintln!("{line}");
    }
}

#[test]
fn every_pair_is_served_and_each_worker_has_its_core() {
    if !common::privileged("to create namespaces") {
        return;
    }
    let available = available_cpus().expect("affinity mask");
    if available.len() < 2 {
        eprintln!("skipped: two workers need two CPUs, this process may use {available:?}");
        return;
    }
    netns::install_signal_handlers();
    let cpus = CpuPlan::resolve(&available, 2, None, None, None).expect("CPU plan");
    let mut config = ScaleConfig::new(
        vec!["kernel-forward".into(), "sluice-afxdp".into()],
        vec![1, 2],
        vec![Placement::Shared],
        cpus,
        1.0,
        1,
        100,
    )
    .expect("configuration");
    config.warmup = 0.3;
    let mut report = ScaleReport::new("tests/scale.rs".into(), config);
    let outcome = scale::run(&mut report, &Lines);
    assert!(
        common::ours().is_empty(),
        "namespaces left behind: {:?}",
        common::ours()
    );
    assert!(
        our_pins().is_empty(),
        "BPF pins left behind: {:?}",
        our_pins()
    );
    outcome.expect("scale run");
    assert!(
        report.failures.is_empty(),
        "failed measurements: {:?}",
        report.failures
    );
    assert_eq!(
        report.measurements.len(),
        4,
        "two systems × two worker counts"
    );
    for m in &report.measurements {
        assert_eq!(
            m.pair_received.len(),
            m.workers,
            "{} {}",
            m.system,
            m.workers
        );
        for (pair, &n) in m.pair_received.iter().enumerate() {
            assert!(
                n > 0,
                "{} with {} workers: pair {pair}'s sink got nothing",
                m.system,
                m.workers
            );
        }
        assert!(m.sent_total >= m.received_total);
    }
    let rows = report.rows();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(r.per_core_mpps.len(), r.workers, "{r:?}");
        assert!(r.per_core_mpps.iter().all(|v| *v > 0.0), "{r:?}");
    }
    for line in report.json_lines() {
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        let workers = v["workers"].as_u64().expect("workers") as usize;
        assert_eq!(
            v["per_core_mpps"].as_array().map(Vec::len),
            Some(workers),
            "{line}"
        );
    }
    let dir = std::env::temp_dir().join(format!("{PREFIX}{}-scale-report", std::process::id()));
    let files = report.write(&dir).expect("report files");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
}
