//! The set of workers on a node: starting them, steering their queues into their sockets, and
//! degrading to the in-kernel path when one fails.
//!
//! Invariant 5 (DESIGN.md): a crashed or stalled worker degrades to in-kernel enforcement,
//! never to "allow all". A worker whose thread ends closes its sockets, and the kernel takes
//! them out of the XDP program's socket map by itself, so its queues are decided by the
//! in-kernel path at once; [`FastPath::check`] then clears the map slots and restarts it. A
//! worker that stops going round its loop for longer than the stall threshold still holds its
//! sockets: `check` unregisters them, so the kernel path enforces until the worker beats
//! again, and then steers the queues back to it.

use std::time::Duration;

use identity_cache::publication::Reader;
use identity_cache::state::Snapshot;
use xdp_redirect::loader::Dataplane;

use crate::error::FastPathError;
use crate::flow::FlowEvent;
use crate::worker::{Command, WorkerConfig, WorkerHandle, now_monotonic_ns};

/// What [`FastPath::check`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// The worker stopped beating; its queues were handed to the in-kernel path.
    Stalled {
        /// Worker index.
        worker: usize,
        /// How long since its last beat.
        silent_for: Duration,
    },
    /// A stalled worker beats again; its queues are steered back to it.
    Recovered {
        /// Worker index.
        worker: usize,
    },
    /// The worker's thread ended; the in-kernel path enforces its queues.
    Died {
        /// Worker index.
        worker: usize,
        /// Why it ended.
        reason: String,
    },
    /// A dead worker was started again and serves its queues.
    Restarted {
        /// Worker index.
        worker: usize,
    },
    /// Starting a dead worker again failed; the in-kernel path keeps enforcing.
    RestartFailed {
        /// Worker index.
        worker: usize,
        /// Why.
        reason: String,
    },
}

/// Where a worker stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Serving its queues.
    Running,
    /// Not beating; its queues are on the in-kernel path.
    Stalled,
    /// Not running; its queues are on the in-kernel path.
    Down {
        /// Why it ended, or why it could not start again.
        reason: String,
    },
}

struct Slot {
    config: WorkerConfig,
    handle: Option<WorkerHandle>,
    state: WorkerState,
    restarts: u32,
    last_restart_ns: u64,
}

/// The workers of one node.
pub struct FastPath {
    slots: Vec<Slot>,
    stall_threshold: Duration,
    restart_interval: Duration,
}

/// A source of snapshot readers, one per worker start (the identity cache's `reader`).
pub trait ReaderSource {
    /// A new reader named `name`.
    fn reader(&self, name: &str) -> Reader<Snapshot>;
}

impl ReaderSource for identity_cache::state::IdentityCache {
    fn reader(&self, name: &str) -> Reader<Snapshot> {
        identity_cache::state::IdentityCache::reader(self, name)
    }
}

fn steer(dataplane: &mut Dataplane, handle: &WorkerHandle) -> Result<(), FastPathError> {
    for (i, &(ifindex, queue, fd)) in handle.sockets().iter().enumerate() {
        let fd = RawSocket(fd);
        dataplane
            .register_socket(ifindex, queue, &fd)
            .map_err(|source| FastPathError::Steering {
                ifname: handle.config().ports[i].ifname.clone(),
                queue,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

fn unsteer(dataplane: &mut Dataplane, config: &WorkerConfig) {
    for port in &config.ports {
        if let Err(e) = dataplane.unregister_socket(port.ifindex, port.queue) {
            log::error!(
                "worker {}: cannot unsteer {} queue {}: {e}",
                config.index,
                port.ifname,
                port.queue
            );
        }
    }
}

struct RawSocket(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

impl FastPath {
    /// Starts one worker per configuration and steers their queues into their sockets. On
    /// error, the workers already started are stopped and unsteered.
    pub fn start(
        configs: Vec<WorkerConfig>,
        readers: &impl ReaderSource,
        dataplane: &mut Dataplane,
    ) -> Result<FastPath, FastPathError> {
        let mut fast = FastPath {
            slots: Vec::with_capacity(configs.len()),
            stall_threshold: Duration::from_millis(500),
            restart_interval: Duration::from_secs(1),
        };
        for config in configs {
            let started = WorkerHandle::start(
                config.clone(),
                readers.reader(&format!("worker-{}", config.index)),
            )
            .and_then(|h| steer(dataplane, &h).map(|()| h));
            match started {
                Ok(handle) => fast.slots.push(Slot {
                    config,
                    handle: Some(handle),
                    state: WorkerState::Running,
                    restarts: 0,
                    last_restart_ns: 0,
                }),
                Err(e) => {
                    unsteer(dataplane, &config);
                    fast.stop(dataplane);
                    return Err(e);
                }
            }
        }
        Ok(fast)
    }

    /// Changes how long a worker may go without beating before its queues go to the kernel.
    pub fn set_stall_threshold(&mut self, threshold: Duration) {
        self.stall_threshold = threshold;
    }

    /// The running workers' handles (a dead worker has none until restarted).
    pub fn workers(&self) -> impl Iterator<Item = &WorkerHandle> {
        self.slots.iter().filter_map(|s| s.handle.as_ref())
    }

    /// Each worker's state and restart count, by index.
    pub fn states(&self) -> Vec<(usize, WorkerState, u32)> {
        self.slots
            .iter()
            .map(|s| (s.config.index, s.state.clone(), s.restarts))
            .collect()
    }

    /// Sends a command to every running worker.
    pub fn broadcast(&self, command: &Command) {
        for handle in self.workers() {
            handle.send(command.clone());
        }
    }

    /// Moves every waiting flow event into `out`; returns how many.
    pub fn drain_events(&self, out: &mut Vec<FlowEvent>) -> usize {
        let before = out.len();
        for handle in self.workers() {
            while let Some(e) = handle.events().take() {
                out.push(e);
            }
        }
        out.len() - before
    }

    /// Looks at every worker: hands the queues of a stalled or dead worker to the in-kernel
    /// path, steers a recovered worker's queues back, restarts dead workers (at most once per
    /// second each). Call it periodically (the agent does, every 100 ms).
    pub fn check(
        &mut self,
        readers: &impl ReaderSource,
        dataplane: &mut Dataplane,
    ) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        let now = now_monotonic_ns();
        for slot in &mut self.slots {
            let worker = slot.config.index;
            if let Some(handle) = slot.handle.as_mut() {
                if handle.has_exited() {
                    let reason = handle.exit_reason().unwrap_or_else(|| "ended".into());
                    unsteer(dataplane, &slot.config);
                    slot.handle = None;
                    slot.state = WorkerState::Down {
                        reason: reason.clone(),
                    };
                    events.push(HealthEvent::Died { worker, reason });
                } else {
                    let silent =
                        Duration::from_nanos(now.saturating_sub(handle.stats().heartbeat_ns()));
                    let stalled = silent > self.stall_threshold;
                    match (&slot.state, stalled) {
                        (WorkerState::Running, true) => {
                            unsteer(dataplane, &slot.config);
                            slot.state = WorkerState::Stalled;
                            events.push(HealthEvent::Stalled {
                                worker,
                                silent_for: silent,
                            });
                        }
                        (WorkerState::Stalled, false) => match steer(dataplane, handle) {
                            Ok(()) => {
                                slot.state = WorkerState::Running;
                                events.push(HealthEvent::Recovered { worker });
                            }
                            Err(e) => log::error!("worker {worker}: {e}"),
                        },
                        _ => {}
                    }
                }
            }
            let due =
                now.saturating_sub(slot.last_restart_ns) >= self.restart_interval.as_nanos() as u64;
            if slot.handle.is_none() && due {
                slot.last_restart_ns = now;
                slot.restarts += 1;
                let started = WorkerHandle::start(
                    slot.config.clone(),
                    readers.reader(&format!("worker-{worker}")),
                )
                .and_then(|h| steer(dataplane, &h).map(|()| h));
                match started {
                    Ok(handle) => {
                        slot.handle = Some(handle);
                        slot.state = WorkerState::Running;
                        events.push(HealthEvent::Restarted { worker });
                    }
                    Err(e) => {
                        unsteer(dataplane, &slot.config);
                        let reason = e.to_string();
                        slot.state = WorkerState::Down {
                            reason: reason.clone(),
                        };
                        events.push(HealthEvent::RestartFailed { worker, reason });
                    }
                }
            }
        }
        events
    }

    /// Stops every worker after taking its queues out of the socket map (the in-kernel path
    /// enforces them from then on).
    pub fn stop(&mut self, dataplane: &mut Dataplane) {
        for slot in &mut self.slots {
            unsteer(dataplane, &slot.config);
            if let Some(handle) = slot.handle.take()
                && let Err(e) = handle.stop()
            {
                log::warn!("worker {}: {e}", slot.config.index);
            }
        }
        self.slots.clear();
    }
}
