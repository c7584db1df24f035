//! The XDP steering program (C, in `bpf/`) and its aya loader.
//!
//! Planned here (issue "xdp-redirect"): attaching the program, the XSKMAP that steers pod
//! traffic into AF_XDP sockets, the BPF maps that mirror `identity-cache`'s compiled tables for
//! the in-kernel fallback path, pinning, per-CPU counters and kernel-side verdict events.
//! Nothing is implemented yet; this crate exists so the workspace layout is fixed.
