//! The SVG charts, written to files as bench-lab and the agent will write them.

use std::path::PathBuf;

use perf::plot::{self, LineChart, PlotError, Scale};
use perf::{CoreStats, LatencyReport, MachineInfo};

/// A directory under the system temp dir, removed when dropped; or, to look at the charts, the
/// directory named by `PERF_PLOT_DIR`, kept.
struct TempDir(PathBuf, bool);

impl TempDir {
    fn new(tag: &str) -> Self {
        let (dir, keep) = match std::env::var_os("PERF_PLOT_DIR") {
            Some(dir) => (PathBuf::from(dir), true),
            None => {
                let name = format!("perf-{tag}-{}", std::process::id());
                (std::env::temp_dir().join(name), false)
            }
        };
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir, keep)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Two cores with different latency distributions (a deterministic spread, no RNG).
fn cores() -> Vec<CoreStats> {
    let mut out = Vec::new();
    for (core, base) in [(0usize, 300u64), (1, 900)] {
        let mut c = CoreStats::new(core, format!("veth{core}/q0"));
        let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ core as u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly near `base`, with a long tail up to ~1000×.
            let tail = 1u64 << (x % 64).saturating_sub(54);
            c.record_batch(32, 32 * 64, 32 * (base + x % base) * tail);
        }
        c.record_wakeup(12_000);
        c.elapsed_ns = 1_000_000_000;
        out.push(c);
    }
    out
}

/// The document is one `<svg …>…</svg>` element, balanced, and mentions every `needle`.
fn assert_svg(text: &str, needles: &[&str]) {
    assert!(
        text.starts_with("<svg"),
        "does not start with <svg: {:?}",
        &text[..40]
    );
    assert!(text.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
    assert!(text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<svg").count(), 1);
    assert_eq!(
        text.matches("<text").count(),
        text.matches("</text>").count()
    );
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from the SVG");
    }
}

/// The contents of the `<text>` elements, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_owned())
        })
        .collect()
}

#[test]
fn latency_cdf_file() {
    let dir = TempDir::new("cdf");
    let path = dir.0.join("cdf.svg");
    plot::latency_cdf(&path, "per-core processing time", &cores()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_svg(
        &text,
        &[
            "per-core processing time",
            "veth0/q0 (0)",
            "veth1/q0 (1)",
            "latency (µs)",
            "percentile",
        ],
    );
    // The nines scale is labelled with percentiles: 90, 99, 99.9.
    let labels = texts(&text);
    for label in ["0", "90", "99", "99.9", "99.99"] {
        assert!(
            labels.iter().any(|l| l == label),
            "{label} missing from {labels:?}"
        );
    }
    // One polyline per core.
    assert!(text.matches("<polyline").count() >= 2);
}

#[test]
fn core_bars_file() {
    let dir = TempDir::new("bars");
    let path = dir.0.join("bars.svg");
    let mut cs = cores();
    cs.push(CoreStats::new(2, "idle")); // no samples: no latency bars, a zero rate bar
    plot::core_bars(&path, "per-core rate and latency", &cs).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_svg(
        &text,
        &[
            "per-core rate and latency",
            "packet rate (Mpps)",
            "processing time (µs)",
            "p50",
            "p99",
            "p99.9",
            "veth0/q0 (0)",
            "idle (2)",
        ],
    );
    assert!(text.matches("<rect").count() >= 3 + 2 * 3);
}

#[test]
fn throughput_line_chart_file() {
    let dir = TempDir::new("lines");
    let path = dir.0.join("rules.svg");
    let series = vec![
        (
            "iptables".to_owned(),
            vec![(10.0, 481.0), (1_000.0, 155.0), (10_000.0, 28.0)],
        ),
        (
            "nftables set".to_owned(),
            vec![(10.0, 617.0), (10_000.0, 564.0)],
        ),
        (
            "sluice <fast> & co".to_owned(),
            vec![(10.0, 1_107.0), (1_000.0, 1_100.0), (10_000.0, 1_090.0)],
        ),
    ];
    plot::line_chart(&path, "throughput vs rules", "rules", "kpps", &series).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_svg(
        &text,
        &[
            "throughput vs rules",
            "iptables",
            "nftables set",
            "sluice &lt;fast&gt; &amp; co",
            "rules",
            "kpps",
        ],
    );
    // Rules span three decades: the x axis is logarithmic, ticks at 10, 100, 1000, 10k.
    let labels = texts(&text);
    for label in ["10", "100", "1000", "10k"] {
        assert!(
            labels.iter().any(|l| l == label),
            "{label} missing from {labels:?}"
        );
    }

    // A linear x axis on request, and the string form equals the file form.
    let chart = LineChart::new("t", "x", "y")
        .x_scale(Scale::Linear)
        .size(640, 400);
    let svg = chart.to_svg(&series).unwrap();
    assert_svg(&svg, &["iptables", r#"width="640""#]);
    chart.write(dir.0.join("linear.svg"), &series).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.0.join("linear.svg")).unwrap(),
        svg
    );
}

#[test]
fn unwritable_path_is_a_write_error() {
    let err = plot::line_chart(
        "/nonexistent-dir/x.svg",
        "t",
        "x",
        "y",
        &[("s".to_owned(), vec![(1.0, 1.0)])],
    )
    .unwrap_err();
    assert!(matches!(err, PlotError::Write { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent-dir/x.svg"));
}

#[test]
fn report_renders_everything() {
    let mut report = LatencyReport::new("lab run", MachineInfo::detect());
    for c in cores() {
        report.push(c);
    }
    let table = report.to_table();
    assert!(table.contains("veth1/q0") && table.contains("all"));
    let json: LatencyReport =
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json, report);
    let svg = plot::latency_cdf_svg(&report.title, &report.cores).unwrap();
    assert_svg(&svg, &["lab run"]);
}
