//! sluice's XDP steering program and its loader.
//!
//! The C program (`bpf/steer.c`, one header per concern) parses every frame, steers managed
//! pod traffic into the AF_XDP socket bound for the receiving queue, and — when no socket is
//! bound, or the operator chose kernel mode for an interface — enforces the same policy
//! itself from BPF maps that mirror identity-cache's compiled tables, redirecting permitted
//! pod-to-pod packets straight to the destination veth.
//!
//! - [`abi`]: the map ABI (`#[repr(C)]` twins of `bpf/abi.h`, checked at compile time);
//! - [`policy_map`] and [`ipcache_map`]: identity-cache snapshots → map contents (pure);
//! - [`loader`]: load, pin, attach (native, else generic), re-adopt, sockets, sync, counters
//!   and events;
//! - [`test_run`]: running the program on a crafted frame (`BPF_PROG_TEST_RUN`).

pub mod abi;
pub mod ipcache_map;
pub mod loader;
pub mod policy_map;
pub mod test_run;

/// The steering program, compiled by `build.rs`.
pub const STEER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.o"));
/// The bare devmap redirect program (the benchmark baseline), compiled by `build.rs`.
pub const BARE_REDIRECT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bare_redirect.o"));
