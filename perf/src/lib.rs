//! Measurement support shared by the dataplane and the lab: latency histograms, per-core
//! counters, report rendering (terminal table, Markdown, JSON, SVG plots) and Prometheus
//! exposition.
//!
//! This crate sits at the bottom of the workspace and depends on no other sluice crate.
//!
//! - [`LatencyHistogram`]: an HDR histogram of nanoseconds (1 ns .. 60 s, 3 significant digits)
//!   that never allocates while recording, with coordinated-omission correction and exact
//!   serde transport.
//! - [`CoreStats`]: what one pinned worker did (packets, bytes, batches, wakeups and their
//!   histograms); [`LatencyReport`] gathers them with the [`MachineInfo`] and renders them.
//! - [`prometheus`]: a text-exposition (0.0.4) writer; [`plot`]: SVG charts.
//!
//! ```
//! use perf::{CoreStats, LatencyReport, MachineInfo};
//! let mut worker = CoreStats::new(0, "veth0/q0");
//! worker.record_batch(64, 64 * 64, 64 * 250); // 64 packets in 16 µs
//! worker.elapsed_ns = 1_000_000;
//! let mut report = LatencyReport::new("forward", MachineInfo::detect());
//! report.push(worker);
//! assert_eq!(report.merged().packets, 64);
//! println!("{}", report.to_table());
//! ```

mod format;
mod histogram;
pub mod plot;
pub mod prometheus;
mod report;
mod stats;

pub use histogram::{
    DEFAULT_HIGHEST_NS, DEFAULT_LOWEST_NS, DEFAULT_SIGNIFICANT_DIGITS, HistogramError,
    LatencyHistogram, LatencySummary,
};
pub use report::{LatencyReport, MachineInfo};
pub use stats::{ALL_CORES, CoreStats};
