//! The AF_XDP fast path: packet parsing, sockets and UMEM, workers pinned to cores, the verdict
//! pipeline, forwarding, flow events and per-core latency recording.
//!
//! Planned here (issue "fastpath"). Nothing is implemented yet; this crate exists so the
//! workspace layout is fixed.
