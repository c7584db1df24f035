//! The control plane: sources of truth (a YAML directory for standalone use; Kubernetes
//! watches later behind the same interface), the node agent, its local API and the `sluice`
//! CLI.
//!
//! | module | concept |
//! |---|---|
//! | [`source`] | where endpoints and policies come from, as a stream of changes |
//! | [`agent`] | the node agent: dataplane, workers, sync, health, local API, metrics |
//! | [`api`] | the local API's protocol and client |
//! | [`flows`] | flow records, filters and the recent-flow buffer |
//! | [`cli`] | the `sluice` commands that talk to the agent, and their output |
//! | [`crd`] | `SluicePolicy` / `SluiceClusterPolicy`: the project's own policy kinds |
//! | [`cni`] | `sluice-cni`, the chained CNI plugin: a pod's endpoint before its first packet |

pub mod agent;
pub mod api;
pub mod cli;
pub mod cni;
pub mod crd;
pub mod flows;
pub mod source;
