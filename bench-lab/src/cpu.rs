//! Node CPU accounting: the CPU time of the node's NAPI kthreads and of a system's userspace
//! threads (`/proc/PID/task/TID/stat`, utime + stime; `schedstat` on-CPU time), and the node
//! core's busy time (`/proc/stat`).

use serde::{Deserialize, Serialize};

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// utime + stime (ns, from the tick counts in `stat`) and on-CPU time (ns, `schedstat`) of a
/// task given by its `/proc` directory.
fn task_ns(dir: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line; `fields` starts at field 3.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat_ns = (ticks(11) + ticks(12)) * 1_000_000_000 / clock_ticks();
    let sched_ns = std::fs::read_to_string(format!("{dir}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    (stat_ns, sched_ns)
}

/// A thread (or single-threaded process) to account for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Process id.
    pub pid: i32,
    /// Thread id (equal to `pid` for a kthread or a process's main thread).
    pub tid: i32,
    /// What it is (e.g. `napi/h12g0-9`, `sluice-worker-0`, `pmd-c00/id:7`).
    pub name: String,
}

impl Task {
    /// A kernel thread or process.
    pub fn kthread(pid: i32) -> Self {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        Task {
            pid,
            tid: pid,
            name,
        }
    }

    /// (stat ns, schedstat ns) so far.
    pub fn cpu_ns(&self) -> (u64, u64) {
        task_ns(&format!("/proc/{}/task/{}", self.pid, self.tid))
    }
}

/// Threads of process `pid` whose name starts with `prefix`.
pub fn threads_named(pid: i32, prefix: &str) -> Vec<Task> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<Task> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|tid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            let name = name.trim_end().to_owned();
            name.starts_with(prefix).then_some(Task { pid, tid, name })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// (busy, total) jiffies of one CPU from `/proc/stat` (busy = all but idle and iowait).
pub fn cpu_jiffies(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_cpu_jiffies(&stat, cpu)
}

/// [`cpu_jiffies`] from the text of `/proc/stat`.
pub fn parse_cpu_jiffies(stat: &str, cpu: usize) -> (u64, u64) {
    let tag = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&tag)) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU time sampled at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// Node NAPI kthreads: (stat ns, schedstat ns) summed.
    pub napi: (u64, u64),
    /// The system's userspace threads: (stat ns, schedstat ns) summed.
    pub user: (u64, u64),
    /// Node core (busy, total) jiffies.
    pub node_core: (u64, u64),
    /// Generator core (busy, total) jiffies.
    pub gen_core: (u64, u64),
}

/// Samples the given tasks and cores.
pub fn sample(napi: &[Task], user: &[Task], node_cpu: usize, gen_cpu: usize) -> CpuSample {
    let sum = |tasks: &[Task]| {
        tasks.iter().fold((0, 0), |(a, b), t| {
            let (x, y) = t.cpu_ns();
            (a + x, b + y)
        })
    };
    CpuSample {
        napi: sum(napi),
        user: sum(user),
        node_core: cpu_jiffies(node_cpu),
        gen_core: cpu_jiffies(gen_cpu),
    }
}

/// CPU used over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Node NAPI kthreads, ns (utime + stime).
    pub napi_ns: u64,
    /// Node NAPI kthreads, ns on CPU (schedstat).
    pub napi_sched_ns: u64,
    /// The system's userspace threads (worker, PMD), ns (utime + stime).
    pub user_ns: u64,
    /// The same, ns on CPU (schedstat).
    pub user_sched_ns: u64,
    /// Share of the node core that was busy (0..1).
    pub node_core_busy: f64,
    /// Node core busy time, ns (busy share × period).
    pub node_core_ns: u64,
    /// Share of the generator core that was busy.
    pub gen_core_busy: f64,
}

impl CpuUse {
    /// The use between `a` and `b`, `secs` apart.
    pub fn between(a: &CpuSample, b: &CpuSample, secs: f64) -> Self {
        let share = |x: (u64, u64), y: (u64, u64)| {
            let total = y.1.saturating_sub(x.1);
            if total == 0 {
                0.0
            } else {
                y.0.saturating_sub(x.0) as f64 / total as f64
            }
        };
        let busy = share(a.node_core, b.node_core);
        CpuUse {
            napi_ns: b.napi.0.saturating_sub(a.napi.0),
            napi_sched_ns: b.napi.1.saturating_sub(a.napi.1),
            user_ns: b.user.0.saturating_sub(a.user.0),
            user_sched_ns: b.user.1.saturating_sub(a.user.1),
            node_core_busy: busy,
            node_core_ns: (busy * secs * 1e9) as u64,
            gen_core_busy: share(a.gen_core, b.gen_core),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_give_busy_and_total() {
        let stat =
            "cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 4 1 2 50 3 1 1 0 0 0\ncpu1 6 0 8 50 2 0 0 0 0 0\n";
        assert_eq!(parse_cpu_jiffies(stat, 0), (9, 62));
        assert_eq!(parse_cpu_jiffies(stat, 1), (14, 66));
        assert_eq!(parse_cpu_jiffies(stat, 7), (0, 0));
        let a = CpuSample {
            node_core: (0, 100),
            ..CpuSample::default()
        };
        let b = CpuSample {
            node_core: (50, 200),
            ..CpuSample::default()
        };
        let u = CpuUse::between(&a, &b, 2.0);
        assert!((u.node_core_busy - 0.5).abs() < 1e-9);
        assert_eq!(u.node_core_ns, 1_000_000_000);
    }
}
