//! Sharing a core with NAPI: pinning, real-time priority and threaded NAPI.
//!
//! Measured here (DESIGN.md): in copy mode a worker shares its core with the NAPI of the
//! interfaces it serves. A worker at real-time priority (`SCHED_FIFO`) that blocks when idle
//! strictly alternates with a normal-priority threaded NAPI kthread and loses nothing; at
//! normal priority the two fight and most frames are lost at the socket; a real-time worker
//! that never blocks starves NAPI. So: threaded NAPI on every served interface, its kthreads
//! pinned to the worker's core at normal priority, and the worker at a low `SCHED_FIFO`
//! priority with a short busy-poll window before it blocks.

use std::fs;
use std::path::Path;

use crate::error::FastPathError;

/// How a worker shares its core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduling {
    /// `SCHED_FIFO` priority of the worker (1–99); `None` leaves it at normal priority.
    pub realtime_priority: Option<i32>,
    /// Turn on threaded NAPI for the served interfaces and pin its kthreads to the worker's
    /// core.
    pub place_napi: bool,
    /// Empty polls before the worker blocks on its sockets.
    pub busy_poll_rounds: u32,
    /// Longest block, in milliseconds, before the worker looks at its control channel and
    /// heartbeat again.
    pub block_timeout_ms: u64,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            realtime_priority: Some(1),
            place_napi: true,
            busy_poll_rounds: 16,
            block_timeout_ms: 50,
        }
    }
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<(), FastPathError> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(FastPathError::Scheduling(format!(
            "cannot pin the worker to core {core} (is it online and in this cpuset?)"
        )))
    }
}

/// Gives the calling thread `SCHED_FIFO` priority `priority`.
pub fn set_current_realtime(priority: i32) -> Result<(), FastPathError> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads `param`; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(FastPathError::Scheduling(format!(
            "SCHED_FIFO priority {priority}: {} (needs CAP_SYS_NICE)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Turns on threaded NAPI for `ifname` through sysfs (`/sys/class/net/IF/threaded`). The
/// interface must be visible in this process's sysfs mount, i.e. in its network namespace.
pub fn enable_threaded_napi(ifname: &str) -> Result<(), FastPathError> {
    let path = Path::new("/sys/class/net").join(ifname).join("threaded");
    fs::write(&path, "1").map_err(|e| {
        FastPathError::Scheduling(format!(
            "threaded NAPI for {ifname} ({}): {e}; the interface must be in the sysfs of this \
             process's network namespace",
            path.display()
        ))
    })
}

/// The process ids of `ifname`'s threaded-NAPI kthreads (`napi/IF-ID`; the kernel truncates
/// thread names to 15 bytes, so very long interface names can match their prefix twins).
pub fn napi_threads(ifname: &str) -> Vec<i32> {
    let want = format!("napi/{ifname}-");
    let want = &want.as_bytes()[..want.len().min(15)];
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(want)))
        .collect()
}

/// Pins thread `pid` to `core`.
pub fn pin_thread(pid: i32, core: usize) -> Result<(), FastPathError> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; core is checked against the set's size by CPU_SET's bound.
    unsafe {
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
    }
    // SAFETY: sched_setaffinity reads `set` of the given size.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(FastPathError::Scheduling(format!(
            "pinning thread {pid} to core {core}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Pins every NAPI kthread of `ifname` to `core`; returns how many it pinned.
pub fn place_napi(ifname: &str, core: usize) -> Result<usize, FastPathError> {
    let threads = napi_threads(ifname);
    for pid in &threads {
        pin_thread(*pid, core)?;
    }
    Ok(threads.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let err = enable_threaded_napi("sluice-no-such-if").expect_err("no such interface");
        assert!(err.to_string().contains("sluice-no-such-if"), "{err}");
        assert!(napi_threads("sluice-no-such-if").is_empty());
    }
}
