//! The AF_XDP fast path: packet parsing, sockets and UMEM, workers pinned to cores, the verdict
//! pipeline, forwarding, flow events and per-core latency recording.
//!
//! | module | concept |
//! |---|---|
//! | [`wire`] | zero-copy checked views of Ethernet/VLAN, IPv4, IPv6, TCP/UDP/SCTP, ICMP |
//! | [`socket`] | AF_XDP sockets per (interface, queue), UMEM frames, fill/completion rings |
//! | [`pipeline`] | one packet + one snapshot → forward or drop, with attribution |
//! | [`conntrack`] | per-worker connection table: replies need no inverse rule |
//! | [`flow`] | flow events on bounded lock-free queues |
//! | [`stats`] | per-worker counters, socket statistics, heartbeat, histograms |
//! | [`sched`] | pinning, real-time priority, threaded NAPI placement |
//! | [`worker`] | the pinned worker thread and its loop |
//! | [`supervisor`] | the set of workers, socket steering, and degradation to the kernel path |

pub mod conntrack;
pub mod error;
pub mod flow;
pub mod pipeline;
pub mod sched;
pub mod socket;
pub mod stats;
pub mod supervisor;
pub mod wire;
pub mod worker;

pub use error::FastPathError;
