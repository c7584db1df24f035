//! sluice's deterministic core: labels, identities, selectors, the policy model and its
//! compiler, the ipcache, and lock-free snapshot publication to workers.
//!
//! No I/O, no clocks, no threads of its own: everything here is a pure function of the
//! inputs the control plane feeds it, which is what makes verdicts reproducible and testable.

pub mod cow_map;
pub mod identity;
pub mod labels;
pub mod endpoint;
pub mod ipcache;
pub mod protocol;
pub mod publication;
