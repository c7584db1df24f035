//! The packet-generator lab: network-namespace topologies, generators, scenarios and
//! side-by-side baselines (kernel forwarding, iptables, nftables, Open vSwitch AF_XDP, bare
//! XDP redirect, sluice's two datapaths), with per-core latency reports.
//!
//! Planned here (issue "bench-lab and perf"). Nothing is implemented yet; this crate exists so
//! the workspace layout is fixed.
