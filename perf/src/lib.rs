//! Measurement support shared by the dataplane and the lab: latency histograms, counters,
//! report rendering (text, JSON, plots) and Prometheus exposition.
//!
//! Planned here (issue "bench-lab and perf"). Nothing is implemented yet; this crate exists so
//! the workspace layout is fixed.
