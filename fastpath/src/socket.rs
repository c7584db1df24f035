//! AF_XDP sockets and their memory: one socket per (interface, queue) a worker serves, its
//! fill/completion rings, and the UMEM frames behind them.
//!
//! Two ways to forward between interfaces (see BENCHMARKS.md for which is faster on veth):
//! - [`UmemMode::Shared`]: one UMEM per worker, shared by all its sockets
//!   (`XDP_SHARED_UMEM`); a received frame is sent on another socket as it is, with only
//!   its MAC addresses rewritten;
//! - [`UmemMode::PerSocket`]: one UMEM per socket; forwarding copies the frame into a free
//!   frame of the egress socket's UMEM.
//!
//! Sockets are created with libxdp's program loading inhibited: sluice's own XDP program
//! (`xdp-redirect`) steers into them through its XSKMAP. Zero-copy is tried first and copy mode
//! taken where the driver has none (veth).

use std::ffi::CString;
use std::io::Write;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::error::FastPathError;

/// How forwarding moves a frame between a worker's sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UmemMode {
    /// One UMEM shared by all of a worker's sockets; frames move without a copy.
    #[default]
    Shared,
    /// One UMEM per socket; forwarding copies the frame.
    PerSocket,
}

impl std::str::FromStr for UmemMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(UmemMode::Shared),
            "per-socket" => Ok(UmemMode::PerSocket),
            _ => Err(format!(
                "unknown UMEM mode {s:?} (expected shared or per-socket)"
            )),
        }
    }
}

/// Whether the kernel copies frames into the socket or the NIC writes them in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy: the driver supports AF_XDP natively.
    ZeroCopy,
    /// Copy mode (veth, and drivers without zero-copy).
    Copy,
}

/// Ring and frame sizes of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSizes {
    /// Entries in each of the RX, TX, fill and completion rings (a power of two).
    pub ring: u32,
    /// UMEM frames per socket (at least twice `ring`).
    pub frames_per_socket: u32,
    /// Bytes per frame (2048 or 4096).
    pub frame_size: u32,
}

/// A ring size no socket takes: rings are a power of two in [`RingSizes::RING_RANGE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a power of two in 64..=8192")]
pub struct RingSizeError(pub u32);

impl RingSizes {
    /// Ring sizes an operator may choose.
    pub const RING_RANGE: std::ops::RangeInclusive<u32> = 64..=8192;

    /// Rings of `ring` entries, twice as many UMEM frames per socket (so the fill ring stays
    /// full while a ring of frames is in flight) and the default frame size; the one rule the
    /// agent's configuration and the lab both apply.
    pub fn with_ring(ring: u32) -> Result<Self, RingSizeError> {
        if !ring.is_power_of_two() || !Self::RING_RANGE.contains(&ring) {
            return Err(RingSizeError(ring));
        }
        Ok(RingSizes {
            ring,
            frames_per_socket: 2 * ring,
            ..RingSizes::default()
        })
    }
}

impl Default for RingSizes {
    /// 512-entry rings and 1,024 frames per socket. Small on purpose: the kernel takes fill
    /// ring frames in order, so every frame in circulation is touched once per cycle, along
    /// with its kernel-side descriptor; with 2,048-entry rings that working set no longer
    /// stays in cache next to NAPI's, and the rate fell (BENCHMARKS.md, "Ring size"). 512
    /// lost nothing at the sockets in those runs; 128 did.
    fn default() -> Self {
        RingSizes {
            ring: 512,
            frames_per_socket: 1024,
            frame_size: 2048,
        }
    }
}

/// One (interface, queue) a worker serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// Interface name (the host side of a pod's veth, or an uplink).
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// RX queue.
    pub queue: u32,
}

/// A pool of free UMEM frames and the UMEM they belong to.
pub(crate) struct FramePool {
    pub(crate) umem: Umem,
    pub(crate) free: Vec<FrameDesc>,
}

/// A bound socket and its rings.
pub(crate) struct Port {
    pub(crate) spec: PortSpec,
    pub(crate) host_mac: [u8; 6],
    pub(crate) bind_mode: BindMode,
    /// Index of the pool whose UMEM this socket uses.
    pub(crate) pool: usize,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxQueue,
    pub(crate) fill: FillQueue,
    pub(crate) comp: CompQueue,
    /// Frames waiting to go on the TX ring, from this worker's pools.
    pub(crate) tx_pending: Vec<FrameDesc>,
    /// Frames on the TX ring whose completion has not come back.
    pub(crate) tx_outstanding: u32,
    pub(crate) fd: RawFd,
}

/// Every socket of one worker, with its frame pools.
pub(crate) struct SocketSet {
    pub(crate) ports: Vec<Port>,
    pub(crate) pools: Vec<FramePool>,
    pub(crate) sizes: RingSizes,
    pub(crate) mode: UmemMode,
}

fn queue_size(n: u32) -> Result<QueueSize, FastPathError> {
    QueueSize::new(n)
        .map_err(|_| FastPathError::Config(format!("ring size {n} is not a power of two")))
}

fn umem_config(sizes: RingSizes) -> Result<UmemConfig, FastPathError> {
    let frame_size = FrameSize::new(sizes.frame_size).map_err(|_| {
        FastPathError::Config(format!("frame size {} is not supported", sizes.frame_size))
    })?;
    UmemConfig::builder()
        .frame_size(frame_size)
        .fill_queue_size(queue_size(sizes.ring)?)
        .comp_queue_size(queue_size(sizes.ring)?)
        .build()
        .map_err(|e| FastPathError::Config(format!("UMEM configuration: {e}")))
}

fn new_umem(sizes: RingSizes, frames: u32) -> Result<(Umem, Vec<FrameDesc>), FastPathError> {
    let count = NonZeroU32::new(frames)
        .ok_or_else(|| FastPathError::Config("a worker needs at least one frame".into()))?;
    Umem::new(umem_config(sizes)?, count, false).map_err(|e| FastPathError::Umem(e.to_string()))
}

/// The MAC address of interface `ifname` in the calling thread's network namespace.
pub fn interface_mac(ifname: &str) -> Result<[u8; 6], FastPathError> {
    let name = CString::new(ifname).map_err(|_| FastPathError::UnknownInterface(ifname.into()))?;
    // SAFETY: socket() has no memory preconditions; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(FastPathError::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > req.ifr_name.len() {
        // SAFETY: fd is ours and open.
        unsafe { libc::close(fd) };
        return Err(FastPathError::UnknownInterface(ifname.into()));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr within `req`.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(FastPathError::UnknownInterface(format!("{ifname}: {err}")));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// A bound socket's rings: TX, RX, and the fill/completion pair when this (interface, queue)
/// is new to the UMEM; and how it was bound.
pub type BoundRings = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>, BindMode);

/// `ethtool_channels` (linux/ethtool.h), for `ETHTOOL_GCHANNELS`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// The number of RX queues of `ifname` in the calling thread's network namespace (the
/// larger of its RX and combined channels; 1 when the driver does not say).
pub fn queue_count(ifname: &str) -> Result<u32, FastPathError> {
    let name = CString::new(ifname).map_err(|_| FastPathError::UnknownInterface(ifname.into()))?;
    // SAFETY: socket() has no memory preconditions; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(FastPathError::Io(std::io::Error::last_os_error()));
    }
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > req.ifr_name.len() {
        // SAFETY: fd is ours and open.
        unsafe { libc::close(fd) };
        return Err(FastPathError::UnknownInterface(ifname.into()));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut channels).cast();
    // SAFETY: SIOCETHTOOL reads ifr_name and the command in `channels`, and writes at most
    // size_of::<EthtoolChannels>() bytes into it; both outlive the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(1),
            Some(libc::ENODEV) => Err(FastPathError::UnknownInterface(ifname.into())),
            _ => Err(FastPathError::Io(err)),
        };
    }
    Ok(channels.rx_count.max(channels.combined_count).max(1))
}

/// How long a bind waits for a queue that a just-closed socket still holds.
const BIND_BUSY_WAIT: Duration = Duration::from_secs(2);

/// Binds a socket with `ring`-entry rings to queue `queue` of `ifname` (in the calling
/// thread's network namespace) over `umem`, with libxdp's program loading inhibited (the
/// caller's XDP program steers into it): zero-copy first, then copy mode.
///
/// The kernel releases a closed socket's hold on its queue a little later, from a work queue:
/// a worker restarted on the same queues (the agent does so when the set of interfaces
/// changes) can find it still busy. `EBUSY` is retried for up to [`BIND_BUSY_WAIT`].
///
/// # Safety
///
/// As for `xsk_rs::Socket::new` with a shared UMEM: `(ifname, queue)` must not already be
/// bound over `umem`.
pub unsafe fn bind(
    ifname: &str,
    queue: u32,
    umem: &Umem,
    ring: u32,
) -> Result<BoundRings, FastPathError> {
    let iface: Interface = ifname
        .parse()
        .map_err(|_| FastPathError::UnknownInterface(ifname.to_owned()))?;
    let ring = queue_size(ring)?;
    let deadline = Instant::now() + BIND_BUSY_WAIT;
    loop {
        // SAFETY: the caller's contract.
        match unsafe { bind_once(&iface, queue, umem, ring) } {
            Err(BindAttempt::Busy(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(bound) => return Ok(bound),
            Err(BindAttempt::Busy(reason) | BindAttempt::Failed(reason)) => {
                return Err(FastPathError::Bind {
                    ifname: ifname.to_owned(),
                    queue,
                    reason,
                });
            }
        }
    }
}

/// Why one round of bind attempts failed (the last attempt's error, with its cause).
enum BindAttempt {
    /// The queue is held by another socket (`EBUSY`).
    Busy(String),
    /// Anything else.
    Failed(String),
}

/// # Safety
///
/// As for [`bind`].
unsafe fn bind_once(
    iface: &Interface,
    queue: u32,
    umem: &Umem,
    ring: QueueSize,
) -> Result<BoundRings, BindAttempt> {
    let mut last_err = BindAttempt::Failed("no bind mode tried".into());
    for (flags, mode) in [
        (BindFlags::XDP_ZEROCOPY, BindMode::ZeroCopy),
        (BindFlags::XDP_COPY, BindMode::Copy),
    ] {
        let config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        // SAFETY: program loading is inhibited, as `Socket::new` requires for shared UMEMs;
        // the caller binds each (interface, queue) once per UMEM.
        match unsafe { Socket::new(config, umem, iface, queue) } {
            Ok((tx, rx, rings)) => return Ok((tx, rx, rings, mode)),
            Err(e) => {
                let cause = std::error::Error::source(&e)
                    .and_then(|c| c.downcast_ref::<std::io::Error>())
                    .map(|io| (io.raw_os_error(), io.to_string()));
                last_err = match cause {
                    Some((Some(libc::EBUSY), io)) => BindAttempt::Busy(format!("{e}: {io}")),
                    Some((_, io)) => BindAttempt::Failed(format!("{e}: {io}")),
                    None => BindAttempt::Failed(e.to_string()),
                };
            }
        }
    }
    Err(last_err)
}

impl SocketSet {
    /// Creates and binds a socket for every port, in the calling thread's network namespace,
    /// and fills every fill ring.
    pub(crate) fn open(
        specs: &[PortSpec],
        mode: UmemMode,
        sizes: RingSizes,
    ) -> Result<SocketSet, FastPathError> {
        if specs.is_empty() {
            return Err(FastPathError::Config(
                "a worker needs at least one port".into(),
            ));
        }
        if sizes.frames_per_socket < 2 * sizes.ring {
            return Err(FastPathError::Config(format!(
                "{} frames per socket cannot keep a {}-entry fill ring full while frames are in \
                 flight: use at least {}",
                sizes.frames_per_socket,
                sizes.ring,
                2 * sizes.ring
            )));
        }
        for (i, a) in specs.iter().enumerate() {
            if specs[..i]
                .iter()
                .any(|b| b.ifindex == a.ifindex && b.queue == a.queue)
            {
                return Err(FastPathError::Config(format!(
                    "{} queue {} is listed twice",
                    a.ifname, a.queue
                )));
            }
        }
        let mut pools = Vec::new();
        if mode == UmemMode::Shared {
            let frames = sizes.frames_per_socket.saturating_mul(specs.len() as u32);
            let (umem, free) = new_umem(sizes, frames)?;
            pools.push(FramePool { umem, free });
        }
        let mut ports = Vec::with_capacity(specs.len());
        for spec in specs {
            let pool = match mode {
                UmemMode::Shared => 0,
                UmemMode::PerSocket => {
                    let (umem, free) = new_umem(sizes, sizes.frames_per_socket)?;
                    pools.push(FramePool { umem, free });
                    pools.len() - 1
                }
            };
            let host_mac = interface_mac(&spec.ifname)?;
            // SAFETY: `specs` lists each (interface, queue) once (checked above).
            let (tx, rx, rings, bind_mode) =
                unsafe { bind(&spec.ifname, spec.queue, &pools[pool].umem, sizes.ring)? };
            let Some((fill, comp)) = rings else {
                return Err(FastPathError::Bind {
                    ifname: spec.ifname.clone(),
                    queue: spec.queue,
                    reason: "the queue is already bound by this UMEM".into(),
                });
            };
            let fd = rx.fd().as_raw_fd();
            ports.push(Port {
                spec: spec.clone(),
                host_mac,
                bind_mode,
                pool,
                rx,
                tx,
                fill,
                comp,
                tx_pending: Vec::with_capacity(sizes.ring as usize),
                tx_outstanding: 0,
                fd,
            });
        }
        let mut set = SocketSet {
            ports,
            pools,
            sizes,
            mode,
        };
        for i in 0..set.ports.len() {
            set.refill(i);
        }
        Ok(set)
    }

    /// Tops up port `i`'s fill ring from its pool, as far as ring space and frames allow.
    /// Retries a partial reservation with what fits, so no frame is lost.
    pub(crate) fn refill(&mut self, i: usize) {
        let port = &mut self.ports[i];
        let pool = &mut self.pools[port.pool];
        // Keep frames back for TX copies in per-socket mode (they come from the same pool).
        let reserve = match self.mode {
            UmemMode::Shared => 0,
            UmemMode::PerSocket => self.sizes.ring as usize / 2,
        };
        let mut budget = pool.free.len().saturating_sub(reserve);
        while budget > 0 {
            let want = budget.min(self.sizes.ring as usize) as u32;
            let room = port.fill.nb_free(want).min(want) as usize;
            if room == 0 {
                break;
            }
            let start = pool.free.len() - room;
            // SAFETY: the frames come from this port's pool, i.e. its UMEM, and are free: not
            // on any ring and not referenced elsewhere.
            let done = unsafe { port.fill.produce(&pool.free[start..]) };
            if done == 0 {
                break;
            }
            pool.free.truncate(pool.free.len() - done);
            budget -= done;
        }
    }

    /// Takes completed TX frames of port `i` back into its pool.
    pub(crate) fn reap(&mut self, i: usize, scratch: &mut [FrameDesc]) -> usize {
        let port = &mut self.ports[i];
        if port.tx_outstanding == 0 {
            return 0;
        }
        let pool = &mut self.pools[port.pool];
        let mut total = 0;
        loop {
            // SAFETY: completions on this socket are frames of this socket's UMEM.
            let n = unsafe { port.comp.consume(scratch) };
            if n == 0 {
                break;
            }
            pool.free.extend_from_slice(&scratch[..n]);
            total += n;
            if n < scratch.len() {
                break;
            }
        }
        port.tx_outstanding = port.tx_outstanding.saturating_sub(total as u32);
        total
    }

    /// Whether port `i` has TX work left: frames waiting for ring room, or descriptors on the
    /// ring the kernel has not taken (copy mode moves them only on a kick, and a flush stops
    /// after its kick budget).
    pub(crate) fn tx_unfinished(&mut self, i: usize) -> bool {
        let ring = self.sizes.ring;
        let port = &mut self.ports[i];
        !port.tx_pending.is_empty() || port.tx.nb_free_exact() < ring
    }

    /// Puts port `i`'s pending frames on its TX ring and kicks the kernel until it has taken
    /// every descriptor off the ring (copy mode sends a bounded number per `sendto()`), at
    /// most `max_kicks` times. It does not wait for completions: in copy mode a frame
    /// completes when its skb is freed, which on veth can be on another CPU much later (the
    /// peer's NAPI), and kicking until then only burns syscalls; `reap` collects them in a
    /// later round. Frames that do not fit stay pending for the next round. Returns the kicks
    /// made.
    pub(crate) fn flush(&mut self, i: usize, scratch: &mut [FrameDesc], max_kicks: u32) -> u32 {
        let ring = self.sizes.ring;
        let mut kicks = 0;
        loop {
            let port = &mut self.ports[i];
            if !port.tx_pending.is_empty() {
                let want = port.tx_pending.len() as u32;
                let room = port.tx.nb_free(want).min(want) as usize;
                if room > 0 {
                    // SAFETY: pending frames belong to this socket's UMEM (the forwarder
                    // copies them there in per-socket mode) and are on no other ring.
                    let done = unsafe { port.tx.produce(&port.tx_pending[..room]) };
                    port.tx_pending.drain(..done);
                    port.tx_outstanding += done as u32;
                }
            }
            let on_ring = ring.saturating_sub(port.tx.nb_free_exact());
            if (on_ring == 0 && port.tx_pending.is_empty()) || kicks >= max_kicks {
                break;
            }
            // Errors other than "try again" mean the device went away; the frames come back
            // through completions or the socket is torn down with the worker.
            let _ = port.tx.wakeup();
            kicks += 1;
            // Completions free frames for the pending ones (per-socket mode) and room on the
            // completion ring.
            self.reap(i, scratch);
        }
        kicks
    }

    /// Forwards frame `desc` of pool `from` to port `out`: queued as it is when `out` uses
    /// the same UMEM, else copied into a free frame of `out`'s pool (and `desc` returned to
    /// `from`). Returns false when `out`'s pool has no free frame: the packet is dropped and
    /// its frame returned.
    pub(crate) fn forward(&mut self, from: usize, desc: FrameDesc, out: usize) -> bool {
        let to = self.ports[out].pool;
        let pending = &self.ports[out].tx_pending;
        if pending.len() == pending.capacity() {
            // The egress ring has been full for a whole ring of frames: drop rather than grow.
            self.pools[from].free.push(desc);
            return false;
        }
        if to == from {
            self.ports[out].tx_pending.push(desc);
            return true;
        }
        let (src_pool, dst_pool) = if from < to {
            let (a, b) = self.pools.split_at_mut(to);
            (&mut a[from], &mut b[0])
        } else {
            let (a, b) = self.pools.split_at_mut(from);
            (&mut b[0], &mut a[to])
        };
        let Some(mut copy) = dst_pool.free.pop() else {
            src_pool.free.push(desc);
            return false;
        };
        // SAFETY: `desc` was received on a socket of `src_pool`'s UMEM and is owned by the
        // worker until returned; `copy` is a free frame of `dst_pool`'s UMEM. They are in
        // different UMEMs, so the two views do not overlap.
        let written = unsafe {
            let src = src_pool.umem.data(&desc);
            let mut dst = dst_pool.umem.data_mut(&mut copy);
            let mut cursor = dst.cursor();
            cursor.set_pos(0);
            cursor.write_all(src.contents()).is_ok()
        };
        src_pool.free.push(desc);
        if !written {
            dst_pool.free.push(copy);
            return false;
        }
        self.ports[out].tx_pending.push(copy);
        true
    }

    /// The socket descriptors, for the XSKMAP, with their (ifindex, queue).
    pub(crate) fn descriptors(&self) -> Vec<(u32, u32, RawFd)> {
        self.ports
            .iter()
            .map(|p| (p.spec.ifindex, p.spec.queue, p.fd))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_in_range_with_twice_the_frames() {
        let sizes = RingSizes::with_ring(256).expect("256");
        assert_eq!((sizes.ring, sizes.frames_per_socket), (256, 512));
        assert_eq!(sizes.frame_size, RingSizes::default().frame_size);
        assert_eq!(
            RingSizes::with_ring(RingSizes::default().ring),
            Ok(RingSizes::default())
        );
        for bad in [0, 32, 100, 16_384] {
            let e = RingSizes::with_ring(bad).expect_err("rejected");
            assert_eq!(
                e.to_string(),
                format!("{bad} is not a power of two in 64..=8192")
            );
        }
    }

    #[test]
    fn interface_facts_name_a_missing_interface() {
        assert!(matches!(
            queue_count("sluice-nope0"),
            Err(FastPathError::UnknownInterface(_))
        ));
        assert!(matches!(
            interface_mac("sluice-nope0"),
            Err(FastPathError::UnknownInterface(_))
        ));
        // Loopback has no channels to report: one queue.
        assert_eq!(queue_count("lo").expect("lo"), 1);
    }
}
