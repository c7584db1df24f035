//! Network namespaces that remove themselves, running code inside them, external commands,
//! and the orderly stop on SIGINT/SIGTERM.
//!
//! Every namespace the lab makes is named [`PREFIX`] + process id + role, and [`Netns`]
//! deletes it on drop, which runs on every exit path: normal return, `?`, and panics (the
//! workspace builds with unwinding). SIGINT and SIGTERM only set a flag
//! ([`install_signal_handlers`]); long waits poll it ([`sleep_checked`]) and return
//! [`LabError::Interrupted`], so the stack unwinds through the guards. A lab killed with
//! SIGKILL leaves its namespaces behind: [`remove_stale`] deletes those whose process is gone.

use std::ffi::c_int;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// Prefix of every namespace the lab creates.
pub const PREFIX: &str = "blab";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr1(_: c_int) {}

/// Turns SIGINT and SIGTERM into an orderly stop (see [`check_interrupted`]) and gives SIGUSR1
/// a no-op handler without `SA_RESTART`, which is how the generator's blocking
/// `BPF_PROG_TEST_RUN` is ended (`EINTR`).
pub fn install_signal_handlers() {
    for (sig, handler) in [
        (libc::SIGINT, on_stop as extern "C" fn(c_int)),
        (libc::SIGTERM, on_stop),
        (libc::SIGUSR1, on_usr1),
    ] {
        // SAFETY: a zeroed sigaction is valid; the handlers only touch an atomic (async-signal
        // safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether SIGINT or SIGTERM has arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// [`LabError::Interrupted`] once SIGINT or SIGTERM has arrived.
pub fn check_interrupted() -> Result<()> {
    if stop_requested() {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps for `d`, waking every 50 ms to honour a stop request.
pub fn sleep_checked(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50).min(end - now));
    }
}

/// Runs a command and returns its standard output; a non-zero exit is an error carrying its
/// output.
pub fn run(args: &[&str]) -> Result<String> {
    run_with_input(args, None)
}

/// Runs a command with `input` on its standard input (e.g. `iptables-restore`, `nft -f -`).
pub fn run_with_input(args: &[&str], input: Option<&str>) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let command = args.join(" ");
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| LabError::io(format!("writing to `{command}`"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("waiting for `{command}`"), e))?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        output.truncate(2000);
        return Err(LabError::Command { command, output });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on the `PATH`.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A network namespace of the lab's, deleted (with its interfaces) on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under `/var/run/netns`.
    pub name: String,
}

impl Netns {
    /// Creates the namespace `PREFIX` + pid + `role`, with loopback up.
    pub fn new(role: &str) -> Result<Self> {
        let name = format!("{PREFIX}{}{role}", std::process::id());
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `ip netns exec NAME args…` (sysfs and `/proc/sys/net` are the namespace's there).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `ip netns exec NAME args…` with `input` on standard input.
    pub fn exec_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_with_input(&full, Some(input))
    }

    /// Sets a sysctl inside the namespace by writing its `/proc/sys` file (`net.ipv4.ip_forward`
    /// → `/proc/sys/net/ipv4/ip_forward`), so that no `sysctl` binary is needed: machines that
    /// carry only `ip` and `ethtool` run the lab too.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.write_file(&format!("/proc/sys/{}", key.replace('.', "/")), value)
    }

    /// Writes `value` to a sysfs/procfs file as seen from inside the namespace.
    pub fn write_file(&self, path: &str, value: &str) -> Result<()> {
        self.exec(&["sh", "-c", &format!("echo {value} > {path}")])
            .map(drop)
    }

    /// The namespace's file.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// The index of interface `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let out = self.ip(&["-o", "link", "show", "dev", dev])?;
        parse_ifindex(&out).ok_or_else(|| LabError::Command {
            command: format!("ip -n {} -o link show dev {dev}", self.name),
            output: format!("no interface index in {out:?}"),
        })
    }

    /// The MAC address of interface `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", dev])?;
        parse_mac(&out).ok_or_else(|| LabError::Command {
            command: format!("ip -n {} -o link show dev {dev}", self.name),
            output: format!("no MAC address in {out:?}"),
        })
    }

    /// Runs `f` on a scoped thread that has entered this namespace (network namespace only:
    /// the mount namespace, and so `/sys/fs/bpf`, stays the host's).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path)?;
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) -> Result<()> {
    let file = File::open(path).map_err(|e| LabError::io(format!("opening {path}"), e))?;
    // SAFETY: setns on a namespace descriptor we hold; it changes only this thread's network
    // namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(LabError::io(
            format!("setns {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The index at the start of an `ip -o link show` line (`7: name@peer: …`).
pub fn parse_ifindex(line: &str) -> Option<u32> {
    line.split(':').next()?.trim().parse().ok()
}

/// The `link/ether` address of an `ip -o link show` line.
pub fn parse_mac(line: &str) -> Option<[u8; 6]> {
    let text = line
        .split("link/ether ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The lab's namespaces that exist now (any process's).
pub fn lab_namespaces() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes lab namespaces whose creating process is gone (left by a lab killed with
/// SIGKILL); returns their names.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in lab_namespaces() {
        let digits: String = name[PREFIX.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            removed.push(name);
        }
    }
    removed
}

/// Pins thread (or process) `tid` to `cpu` (0: the calling thread).
pub fn pin_to_cpu(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(LabError::io(
            format!("sched_setaffinity({tid}, cpu {cpu})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sets the nice value of thread `tid` (0: the calling thread).
pub fn set_nice(tid: i32, nice: i32) -> Result<()> {
    // SAFETY: setpriority has no memory preconditions; a tid names one thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(LabError::io(
            format!("setpriority({tid}, {nice})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mounts bpffs on `/sys/fs/bpf` if it is not mounted.
pub fn ensure_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some("/sys/fs/bpf") && f.next() == Some("bpf")
        });
    if !mounted {
        run(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"])?;
    }
    Ok(())
}

/// Removes a directory tree (a bpffs pin directory, a work directory) on drop.
#[derive(Debug)]
pub struct RemoveDir(pub std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_link_lines_give_index_and_mac() {
        let line = "7: bs1234@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 3a:1f:00:be:ef:02 brd ff:ff:ff:ff:ff:ff link-netns blab1sink";
        assert_eq!(parse_ifindex(line), Some(7));
        assert_eq!(parse_mac(line), Some([0x3a, 0x1f, 0, 0xbe, 0xef, 2]));
        assert_eq!(
            mac_text([0x3a, 0x1f, 0, 0xbe, 0xef, 2]),
            "3a:1f:00:be:ef:02"
        );
        assert_eq!(parse_mac("1: lo: <LOOPBACK> link/loopback 00:00"), None);
    }
}
