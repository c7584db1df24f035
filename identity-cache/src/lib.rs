//! sluice's deterministic core: labels, identities, selectors, the policy model and its
//! compiler, the ipcache, and lock-free snapshot publication to workers.
//!
//! No I/O, no clocks, no threads of its own: everything here is a pure function of the
//! inputs the control plane feeds it, which is what makes verdicts reproducible and testable.

pub mod compiler;
pub mod conformance;
mod cow_flat;
pub mod cow_map;
pub mod endpoint;
pub mod identity;
pub mod ipcache;
pub mod labels;
pub mod policy;
pub mod protocol;
pub mod publication;
pub mod reference;
pub mod selector;
pub mod state;
pub mod tables;
pub mod verdict;
