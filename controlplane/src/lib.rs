//! The control plane: sources of truth (Kubernetes watches, a YAML directory for standalone
//! use), endpoint lifecycle (CNI chaining), the node agent, its local API and the `sluice` CLI.
//!
//! Planned here (issues "node agent" and "Kubernetes control plane"). Nothing is implemented
//! yet; this crate exists so the workspace layout is fixed.
