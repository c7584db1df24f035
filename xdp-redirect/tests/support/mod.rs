//! Test support: network namespaces that remove themselves, and running code inside them.
//!
//! Every namespace and interface name carries the process id and a counter, so parallel test
//! runs never collide; [`Netns`] deletes its namespace on drop, which runs on every exit path
//! of a test, panics included. Only the namespaces' own interfaces are touched.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `prefix` + pid + counter (interface names must stay under 16 bytes).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// Runs a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether this process may create namespaces and load BPF (root with the tools present).
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure bpffs is mounted on /sys/fs/bpf (the host mount namespace).
pub fn ensure_bpffs() {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some("/sys/fs/bpf") && f.next() == Some("bpf")
        });
    if !mounted {
        run(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]);
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name under /var/run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `ip netns exec NAME args…`.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Runs `f` on a thread that has entered this namespace (network namespace only: the
    /// mount namespace, and so /sys/fs/bpf, stays the host's).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace file descriptor we hold; it changes only this
            // thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// The index of an interface in this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("ifindex of {dev}: {out}"))
    }

    /// The MAC address of an interface in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        let text = out
            .split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_default();
        let mut mac = [0u8; 6];
        for (i, part) in text.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).unwrap_or_default();
        }
        mac
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A pod attached to a node namespace by a veth pair: `eth0` in the pod, `host_dev` in the
/// node, a /24 per pod with the node side as gateway.
pub struct Pod {
    /// The pod's namespace.
    pub ns: Netns,
    /// Host-side veth name (in the node namespace).
    pub host_dev: String,
    /// The pod's address.
    pub ip: std::net::Ipv4Addr,
    /// The pod's eth0 MAC.
    pub mac: [u8; 6],
    /// Host-side veth index (in the node namespace).
    pub host_ifindex: u32,
    /// Host-side veth MAC.
    pub host_mac: [u8; 6],
}

impl Pod {
    /// Creates pod number `n` (1..=250) attached to `node`.
    pub fn attach(node: &Netns, n: u8) -> Pod {
        let ns = Netns::new("slp");
        let host_dev = unique("slv");
        let peer = unique("slq");
        node.ip(&[
            "link", "add", &host_dev, "type", "veth", "peer", "name", &peer,
        ]);
        node.ip(&["link", "set", &peer, "netns", &ns.name]);
        ns.ip(&["link", "set", &peer, "name", "eth0"]);
        let gw = format!("10.77.{n}.1");
        let ip = format!("10.77.{n}.2");
        node.ip(&["addr", "add", &format!("{gw}/24"), "dev", &host_dev]);
        node.ip(&["link", "set", &host_dev, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &gw]);
        // Frames redirected into a veth are dropped unless the receiving end has GRO on, and
        // a native-mode redirect loses checksum-offload state: the pod must send full
        // checksums (the CNI plugin sets both up the same way).
        let _ = ns.exec(&["ethtool", "-K", "eth0", "gro", "on"]);
        let _ = ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
        let _ = node.exec(&["ethtool", "-K", &host_dev, "gro", "on"]);
        let mac = ns.mac("eth0");
        let host_ifindex = node.ifindex(&host_dev);
        let host_mac = node.mac(&host_dev);
        Pod {
            ns,
            host_dev,
            ip: ip.parse().expect("ip"),
            mac,
            host_ifindex,
            host_mac,
        }
    }
}

/// A node namespace forwarding between its pods.
pub fn node() -> Netns {
    let node = Netns::new("sln");
    let _ = node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` on the current thread after entering the namespace `name` (for threads spawned
/// by the caller).
pub fn in_netns<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let path = format!("/var/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a namespace file descriptor we hold; it changes only this thread's
    // network namespace, and callers only do so on threads they spawned for it.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    f()
}

/// Retries `bind` for up to two seconds while its address is still in use.
///
/// A socket a test has just closed stays bound while a child process that another test
/// thread is spawning holds a copy of its descriptor (between fork and exec): close-on-exec
/// releases it only at exec. A listener re-bound on the same port right after the previous
/// one was dropped can therefore see `EADDRINUSE` for a moment.
fn bind_retrying<T>(addr: SocketAddrV4, bind: impl Fn(SocketAddrV4) -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..400 {
        match bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.unwrap_or_else(|e| panic!("bind {addr}: {e}")),
        }
    }
    bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// A UDP socket bound on `addr` (see [`bind_retrying`] for why it may wait).
pub fn bind_udp(addr: SocketAddrV4) -> UdpSocket {
    bind_retrying(addr, UdpSocket::bind)
}

/// A TCP listener bound on `addr` (see [`bind_retrying`] for why it may wait).
pub fn bind_tcp(addr: SocketAddrV4) -> TcpListener {
    bind_retrying(addr, TcpListener::bind)
}

/// Removes a directory tree (pins) on drop.
pub struct RemoveDir(pub std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Added for socket_steering.rs and malformed.rs: snapshots, IPv6, raw sockets, AF_XDP.
// ---------------------------------------------------------------------------------------------

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use identity_cache::endpoint::NamedPort;
use identity_cache::identity::ClusterKey;
use identity_cache::ipcache::Source;
use identity_cache::labels::{LabelFilter, WorkloadMeta, workload_labels};
use identity_cache::policy::{ParsedManifest, parse_manifest};
use identity_cache::state::{IdentityCache, LocalAttachment, Snapshot, Workload};
use identity_cache::tables::EnforcementConfig;
use xdp_redirect::ipcache_map::InterfaceFacts;

/// Host-side MACs by ifindex; no interface in kernel mode.
pub struct HostFacts(pub BTreeMap<u32, [u8; 6]>);

impl HostFacts {
    /// The facts of these pods' host-side veths.
    pub fn of(pods: &[&Pod]) -> Self {
        HostFacts(pods.iter().map(|p| (p.host_ifindex, p.host_mac)).collect())
    }
}

impl InterfaceFacts for HostFacts {
    fn host_mac(&self, ifindex: u32) -> [u8; 6] {
        self.0.get(&ifindex).copied().unwrap_or_default()
    }
    fn kernel_mode(&self, _ifindex: u32) -> bool {
        false
    }
}

/// A local workload `t/name` labelled `app: app` on `pod`'s veth with addresses `ips`
/// (built as kernel_path.rs does).
pub fn local_workload(pod: &Pod, name: &str, app: &str, ips: Vec<IpAddr>) -> Workload {
    Workload {
        source: Source::Local,
        local: Some(LocalAttachment {
            ifindex: pod.host_ifindex,
            mac: pod.mac,
        }),
        ..workload_in_t(format!("uid-{name}"), name, app, ips)
    }
}

/// A pod `name` (uid `uid`) in namespace `t` with label `app`, on another node: what the
/// API server reports, no local interface.
pub fn workload_in_t(uid: String, name: &str, app: &str, ips: Vec<IpAddr>) -> Workload {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    Workload {
        uid,
        namespace: "t".into(),
        name: name.into(),
        labels: workload_labels(
            &WorkloadMeta {
                namespace: "t",
                pod_labels: Some(&labels),
                ..WorkloadMeta::default()
            },
            &LabelFilter::default(),
        ),
        ips,
        named_ports: Vec::<NamedPort>::new(),
        source: Source::ApiServer,
        local: None,
    }
}

/// The snapshot of `workloads` under one policy manifest.
pub fn snapshot_of(workloads: Vec<Workload>, policy: &str) -> Snapshot {
    let mut cache = IdentityCache::new(ClusterKey::default(), EnforcementConfig::default());
    for w in workloads {
        let name = w.name.clone();
        cache
            .upsert_workload(w)
            .unwrap_or_else(|e| panic!("workload {name}: {e:?}"));
    }
    match parse_manifest(policy).expect("policy") {
        ParsedManifest::Policy(p) => cache.upsert_policy(p),
        ParsedManifest::Empty => panic!("policy text is empty"),
    }
    cache.pending()
}

/// Gives pod number `n` the address `fd77:n::2/64` on eth0 and its host veth `fd77:n::1/64`
/// (both `nodad`, so they are usable at once), a default IPv6 route via the host side, and
/// turns IPv6 forwarding on in the node. Returns the pod's address.
pub fn add_ipv6(node: &Netns, pod: &Pod, n: u8) -> Ipv6Addr {
    let _ = node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let gw = format!("fd77:{n}::1");
    let ip = format!("fd77:{n}::2");
    node.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{gw}/64"),
        "dev",
        &pod.host_dev,
        "nodad",
    ]);
    pod.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ip}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    pod.ns
        .ip(&["-6", "route", "add", "default", "via", &gw, "dev", "eth0"]);
    ip.parse().expect("ipv6")
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The index of `dev` in the calling thread's network namespace.
pub fn ifindex_here(dev: &str) -> io::Result<u32> {
    let name =
        std::ffi::CString::new(dev).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        n => Ok(n),
    }
}

/// An AF_PACKET SOCK_RAW socket bound to one interface, in the namespace of the thread that
/// opened it: sends whole Ethernet frames, and (when opened with `ETH_P_ALL`) captures the
/// interface's frames, outgoing ones included.
pub struct PacketSocket {
    fd: OwnedFd,
    /// The interface it is bound to.
    pub ifindex: u32,
}

/// `sll_pkttype` of a frame this host sent.
pub const PACKET_OUTGOING: u8 = 4;

impl PacketSocket {
    /// Opens a socket on `ifindex` for `protocol` (host order; 0 = send only, receives nothing,
    /// `libc::ETH_P_ALL` = capture everything).
    pub fn open(ifindex: u32, protocol: u16) -> io::Result<Self> {
        // SAFETY: socket() has no memory preconditions.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        })?;
        // SAFETY: raw is a descriptor socket() just returned and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind reads exactly size_of::<sockaddr_ll>() bytes from `sll`, which we own.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one whole frame (Ethernet header included) out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: send reads frame.len() bytes from a slice we borrow.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "short send: {n} of {}",
                frame.len()
            )));
        }
        Ok(())
    }

    /// Frames already queued, without blocking (at most `max`): (sll_pkttype, frame) of
    /// those seen on the bound interface.
    pub fn drain(&self, max: usize) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..max {
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom writes at most buf.len() bytes into buf and at most `len` bytes
            // into sll; both are ours and live across the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut sll).cast::<libc::sockaddr>(),
                    &mut len,
                )
            };
            if n < 0 {
                break;
            }
            if sll.sll_ifindex as u32 == self.ifindex {
                out.push((sll.sll_pkttype, buf[..n as usize].to_vec()));
            }
        }
        out
    }

    /// The frames this host sent on the bound interface that are queued now (at most `max`).
    pub fn drain_outgoing(&self, max: usize) -> Vec<Vec<u8>> {
        self.drain(max)
            .into_iter()
            .filter(|(t, _)| *t == PACKET_OUTGOING)
            .map(|(_, f)| f)
            .collect()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An anonymous or socket-backed memory mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, flags: libc::c_int, fd: RawFd, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL); it aliases nothing of ours.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping mmap returned; nothing borrows it any more
        // (every accessor borrows the owner, which is being dropped).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One AF_XDP ring (fill, completion, RX or TX) mapped from the socket.
struct Ring {
    map: Mapping,
    producer: usize,
    consumer: usize,
    desc: usize,
    size: u32,
}

impl Ring {
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        pgoff: u64,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * entry;
        let map = Mapping::new(
            len,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff as libc::off_t,
        )?;
        for o in [off.producer, off.consumer] {
            if !(o as usize).is_multiple_of(4) || o as usize + 4 > len {
                return Err(io::Error::other(format!("ring offset {o} unusable")));
            }
        }
        Ok(Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            desc: off.desc as usize,
            size,
        })
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offset is the kernel's producer or consumer offset, checked in `map` to be
        // 4-aligned and inside the mapping (which is page-aligned); the kernel and we access
        // it only atomically, and the borrow cannot outlive the mapping owned by self.
        unsafe { AtomicU32::from_ptr(self.map.ptr.as_ptr().add(offset).cast::<u32>()) }
    }

    fn producer(&self) -> &AtomicU32 {
        self.index(self.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.index(self.consumer)
    }

    /// Pointer to entry `i` (masked) of type T.
    fn entry<T>(&self, i: u32) -> *mut T {
        let slot = (i & (self.size - 1)) as usize;
        // SAFETY: slot < size and the mapping is desc + size * size_of::<T>() bytes long (T is
        // the entry type the ring was mapped with), so the pointer stays inside it.
        unsafe {
            self.map
                .ptr
                .as_ptr()
                .add(self.desc + slot * std::mem::size_of::<T>())
                .cast::<T>()
        }
    }
}

/// Frames in the UMEM and their size (one page each, aligned chunk mode).
const XSK_FRAME_SIZE: usize = 4096;
/// Entries of each ring (a power of two). Frames `0..XSK_RING` feed the fill ring; frames
/// `XSK_RING..2*XSK_RING` are for TX.
const XSK_RING: u32 = 64;

/// A minimal AF_XDP socket in copy mode (XDP_COPY) on one interface queue: a page-aligned
/// mmap'd UMEM of 128 one-page frames, fill/completion/RX/TX rings of 64 entries mapped from
/// the socket, the fill ring filled before bind. Created in the network namespace of the
/// calling thread (the ifindex is resolved there).
///
/// Dropping it unmaps the rings, then closes the socket, then unmaps the UMEM (field order).
/// The ring mappings hold references to the socket's file: only once they are gone does the
/// close release the socket, which is also when the kernel removes it from every XSKMAP.
pub struct Xsk {
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    fd: OwnedFd,
    umem: Mapping,
    tx_free: Vec<u64>,
    /// The interface it is bound to.
    pub ifindex: u32,
    /// The queue it is bound to.
    pub queue: u32,
}

// SAFETY: the raw pointers in Xsk's mappings point into memory owned by the Xsk itself; no
// thread-local state is involved, so moving it to another thread is sound (it is not Sync:
// ring indices are updated without locking through &mut self).
unsafe impl Send for Xsk {}

fn xdp_setsockopt<T>(fd: RawFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: setsockopt reads size_of::<T>() bytes from `value`, which we borrow.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl Xsk {
    /// Creates the socket, registers the UMEM, sizes and maps the rings, fills the fill ring
    /// and binds to `queue` of interface `ifindex` with XDP_COPY.
    pub fn bind(ifindex: u32, queue: u32) -> io::Result<Self> {
        // SAFETY: socket() has no memory preconditions.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: raw is a descriptor socket() just returned and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let frames = 2 * XSK_RING as usize;
        let umem = Mapping::new(
            frames * XSK_FRAME_SIZE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: XSK_FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        xdp_setsockopt(fd.as_raw_fd(), libc::XDP_UMEM_REG, &reg)?;
        let size = XSK_RING as libc::c_int;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            xdp_setsockopt(fd.as_raw_fd(), opt, &size)?;
        }
        // SAFETY: xdp_mmap_offsets is plain old data; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `optlen` bytes into `off`, which we own.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &mut optlen,
            )
        })?;
        if optlen as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::other(format!(
                "XDP_MMAP_OFFSETS returned {optlen} bytes (pre-5.4 layout)"
            )));
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let fill = Ring::map(
            fd.as_raw_fd(),
            &off.fr,
            XSK_RING,
            8,
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )?;
        let comp = Ring::map(
            fd.as_raw_fd(),
            &off.cr,
            XSK_RING,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let rx = Ring::map(
            fd.as_raw_fd(),
            &off.rx,
            XSK_RING,
            desc,
            libc::XDP_PGOFF_RX_RING as u64,
        )?;
        let tx = Ring::map(
            fd.as_raw_fd(),
            &off.tx,
            XSK_RING,
            desc,
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let mut xsk = Xsk {
            fill,
            comp,
            rx,
            tx,
            fd,
            umem,
            tx_free: (XSK_RING as u64..2 * XSK_RING as u64)
                .map(|i| i * XSK_FRAME_SIZE as u64)
                .collect(),
            ifindex,
            queue,
        };
        xsk.give_to_fill((0..XSK_RING as u64).map(|i| i * XSK_FRAME_SIZE as u64));
        // SAFETY: sockaddr_xdp is plain old data; all-zero is a valid value.
        let mut sxdp: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sxdp.sxdp_family = libc::AF_XDP as u16;
        sxdp.sxdp_flags = libc::XDP_COPY;
        sxdp.sxdp_ifindex = ifindex;
        sxdp.sxdp_queue_id = queue;
        // SAFETY: bind reads exactly size_of::<sockaddr_xdp>() bytes from `sxdp`, which we own.
        cvt(unsafe {
            libc::bind(
                xsk.fd.as_raw_fd(),
                (&raw const sxdp).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })?;
        Ok(xsk)
    }

    /// Hands frame addresses to the kernel through the fill ring. The fill ring has room for
    /// every RX frame, and only addresses taken out of the RX ring come back here.
    fn give_to_fill(&mut self, addrs: impl Iterator<Item = u64>) {
        let mut prod = self.fill.producer().load(Ordering::Relaxed);
        for addr in addrs {
            // SAFETY: entry() points inside the fill ring mapping; the kernel does not read
            // entries between the consumer and our unpublished producer index.
            unsafe { self.fill.entry::<u64>(prod).write_volatile(addr) };
            prod = prod.wrapping_add(1);
        }
        self.fill.producer().store(prod, Ordering::Release);
    }

    /// Frames received so far, without waiting (at most one ring's worth); their UMEM frames
    /// go back to the fill ring.
    pub fn poll_rx(&mut self) -> Vec<Vec<u8>> {
        let prod = self.rx.producer().load(Ordering::Acquire);
        let mut cons = self.rx.consumer().load(Ordering::Relaxed);
        let mut frames = Vec::new();
        let mut recycled = Vec::new();
        for _ in 0..XSK_RING {
            if cons == prod {
                break;
            }
            // SAFETY: entries between consumer and producer were published by the kernel
            // (the Acquire load above orders our read after its write).
            let desc = unsafe { self.rx.entry::<libc::xdp_desc>(cons).read_volatile() };
            let (addr, len) = (desc.addr as usize, desc.len as usize);
            if addr
                .checked_add(len)
                .is_some_and(|end| end <= self.umem.len)
            {
                // SAFETY: addr..addr+len is inside the UMEM (checked); the kernel wrote it
                // before publishing the descriptor and does not touch it until the frame is
                // back in the fill ring.
                let bytes =
                    unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(addr), len) };
                frames.push(bytes.to_vec());
            }
            recycled.push(desc.addr & !(XSK_FRAME_SIZE as u64 - 1));
            cons = cons.wrapping_add(1);
        }
        self.rx.consumer().store(cons, Ordering::Release);
        self.give_to_fill(recycled.into_iter());
        frames
    }

    /// Polls the RX ring until `done(frames so far)` or `timeout`.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        for _ in 0..100_000 {
            frames.extend(self.poll_rx());
            if done(&frames) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        frames
    }

    /// Transmits one frame (copy mode: the kernel builds an skb and hands it to the driver),
    /// waiting up to 1 s for its completion.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() > XSK_FRAME_SIZE {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.reclaim_tx();
        let addr = self
            .tx_free
            .pop()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        // SAFETY: addr is the start of one of our TX frames (not in the fill ring, not in
        // flight: it came back through the completion ring or was never used), and the frame
        // fits in it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.umem.ptr.as_ptr().add(addr as usize),
                frame.len(),
            );
        }
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let desc = libc::xdp_desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        };
        // SAFETY: entry() points inside the TX ring; at most XSK_RING frames are ever in
        // flight (tx_free holds the rest), so this slot is not one the kernel still reads.
        unsafe { self.tx.entry::<libc::xdp_desc>(prod).write_volatile(desc) };
        self.tx
            .producer()
            .store(prod.wrapping_add(1), Ordering::Release);
        let outstanding = XSK_RING as usize - self.tx_free.len();
        let deadline = Instant::now() + Duration::from_secs(1);
        for _ in 0..1000 {
            // SAFETY: a zero-length sendto with no buffer only kicks TX processing.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                ) {
                    return Err(e);
                }
            }
            self.reclaim_tx();
            if XSK_RING as usize - self.tx_free.len() < outstanding || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if XSK_RING as usize - self.tx_free.len() < outstanding {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no TX completion within 1 s",
            ))
        }
    }

    fn reclaim_tx(&mut self) {
        let prod = self.comp.producer().load(Ordering::Acquire);
        let mut cons = self.comp.consumer().load(Ordering::Relaxed);
        for _ in 0..XSK_RING {
            if cons == prod {
                break;
            }
            // SAFETY: entries between consumer and producer were published by the kernel.
            let addr = unsafe { self.comp.entry::<u64>(cons).read_volatile() };
            self.tx_free.push(addr & !(XSK_FRAME_SIZE as u64 - 1));
            cons = cons.wrapping_add(1);
        }
        self.comp.consumer().store(cons, Ordering::Release);
    }

    /// The kernel's statistics for this socket (XDP_STATISTICS).
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: xdp_statistics is plain old data; all-zero is a valid value.
        let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `stats`, which we own.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        })?;
        Ok(stats)
    }
}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Whether the steering program's rule 1 classes `frame` as not IP (CNT_NON_IP): shorter
/// than an Ethernet header or its tag, a second tag, an ethertype other than IPv4/IPv6, or
/// IPv6 ND / router / redirect / MLD (ICMPv6 130-137, 143) after at most 8 extension headers.
/// A mirror of bpf/parse.h for predicting which slot background frames land in.
pub fn steer_classes_non_ip(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return true;
    }
    let mut proto = u16::from_be_bytes([frame[12], frame[13]]);
    let mut l3 = 14;
    if proto == 0x8100 || proto == 0x88a8 {
        if frame.len() < 18 {
            return true;
        }
        proto = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    if proto != 0x0800 && proto != 0x86dd {
        return true;
    }
    if proto == 0x0800 || frame.len() < l3 + 40 || frame[l3] >> 4 != 6 {
        return false;
    }
    let mut nh = frame[l3 + 6];
    let mut off = l3 + 40;
    for _ in 0..8 {
        if !matches!(nh, 0 | 43 | 60 | 51) || frame.len() < off + 8 {
            break;
        }
        let len = if nh == 51 {
            (usize::from(frame[off + 1]) + 2) * 4
        } else {
            (usize::from(frame[off + 1]) + 1) * 8
        };
        nh = frame[off];
        off += len;
    }
    nh == 58 && frame.len() >= off + 8 && matches!(frame[off], 130..=137 | 143)
}

/// The Internet checksum (RFC 1071) of `bytes`, for crafting IPv4 headers.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
