//! Errors of the fast path. Each names what is wrong and where.

/// Why the fast path could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// A setting is out of range or inconsistent.
    #[error("invalid fast-path configuration: {0}")]
    Config(String),
    /// No interface of that name in this network namespace.
    #[error("unknown interface {0}")]
    UnknownInterface(String),
    /// The UMEM could not be created (memory locking limits, out of memory).
    #[error("cannot create the AF_XDP UMEM: {0}")]
    Umem(String),
    /// An AF_XDP socket could not be bound.
    #[error("cannot bind an AF_XDP socket to {ifname} queue {queue}: {reason}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// What the kernel said.
        reason: String,
    },
    /// The XDP program's socket map refused the socket.
    #[error("cannot steer {ifname} queue {queue} into its socket: {source}")]
    Steering {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// The loader's error.
        #[source]
        source: Box<xdp_redirect::loader::LoaderError>,
    },
    /// Scheduling setup (pinning, real-time priority, threaded NAPI) failed.
    #[error("scheduling: {0}")]
    Scheduling(String),
    /// The worker thread could not be started or died while starting.
    #[error("worker {index}: {reason}")]
    Worker {
        /// Worker index.
        index: usize,
        /// What happened.
        reason: String,
    },
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
