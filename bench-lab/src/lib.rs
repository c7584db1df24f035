//! The packet-generator lab: network-namespace topologies, an XDP live-frames generator and
//! sink, side-by-side baselines (kernel forwarding, iptables, nftables, Open vSwitch AF_XDP,
//! bare XDP redirect, sluice's two datapaths) and reports.
//!
//! | module | concept |
//! |---|---|
//! | [`netns`] | namespace guards, commands, the orderly stop on SIGINT/SIGTERM |
//! | [`topology`] | generator pods and a sink pod on veths into a node namespace |
//! | [`afxdp_gen`] | the AF_XDP TX generator (same wire format as the live-frames one) |
//! | [`generator`] | the live-frames XDP generator and the XDP sink (loss, reordering, latency) |
//! | [`cpu`] | node CPU accounting (NAPI kthreads, worker/PMD threads, the node core) |
//! | [`rules`] | "N rules" for each system: iptables, nftables, OpenFlow, sluice policies |
//! | [`systems`] | the systems under test: setup and teardown on the same topology |
//! | [`scenario`] | one measurement, and the plans of measurements a run makes |
//! | [`scale`] | multi-core scaling: one worker and core per generator → sink pair |
//! | [`tcp_gen`] | the TCP generator: real sockets, connection rate and handshake latency |
//! | [`storm`] | the policy update storm: pod churn in sluice's state during traffic |
//! | [`report`] | JSON with every raw figure, Markdown, SVG plots, targets |
//!
//! Everything needs root; [`scenario::Lab::new`] refuses otherwise.

pub mod afxdp_gen;
pub mod cpu;
pub mod error;
pub mod generator;
pub mod netns;
pub mod report;
pub mod rules;
pub mod scale;
pub mod scenario;
pub mod storm;
pub mod systems;
pub mod tcp_gen;
pub mod topology;

pub use error::{LabError, Result};
