//! The lab's error type.

use std::io;

/// Anything that stops a lab step.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An external command (`ip`, `ethtool`, `iptables-restore`, `ovs-vsctl`, …) failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard output and error.
        output: String,
    },
    /// An external command could not be started (not installed?).
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Loading, attaching or reading a BPF object failed.
    #[error("BPF: {0}")]
    Bpf(String),
    /// A system under test could not be set up, measured or torn down.
    #[error("system {system}: {reason}")]
    System {
        /// The system's name.
        system: String,
        /// What went wrong.
        reason: String,
    },
    /// A measurement saw something that makes its figures meaningless.
    #[error("measurement of {system}: {reason}")]
    Measurement {
        /// The system's name.
        system: String,
        /// What was wrong.
        reason: String,
    },
    /// The lab needs root (namespaces, BPF, sysfs).
    #[error("bench-lab needs root (network namespaces, BPF, sysfs)")]
    NotRoot,
    /// An argument or configuration value is out of range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// SIGINT or SIGTERM arrived: the lab stops in order and tears everything down.
    #[error("interrupted by a signal; everything set up was torn down")]
    Interrupted,
    /// An AF_XDP socket or its UMEM (the AF_XDP generator) could not be set up.
    #[error("AF_XDP on {interface}: {reason}")]
    Xsk {
        /// The interface.
        interface: String,
        /// What failed.
        reason: String,
    },
    /// The TCP generator or its server failed.
    #[error("TCP generator: {what}: {source}")]
    Tcp {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the report failed.
    #[error("report: {0}")]
    Report(String),
    /// `bench-lab scale` was asked for something this machine or its cores cannot do.
    #[error("scale: {0}")]
    Scale(#[from] crate::scale::ScaleError),
}

impl LabError {
    /// An [`LabError::Io`] for `what`.
    pub fn io(what: String, source: io::Error) -> Self {
        LabError::Io { what, source }
    }

    /// A [`LabError::System`] for `system`.
    pub fn system(system: impl Into<String>, reason: impl Into<String>) -> Self {
        LabError::System {
            system: system.into(),
            reason: reason.into(),
        }
    }
}

/// The lab's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
