//! `afxdp-bare`: a plain AF_XDP forwarder, the floor under any userspace datapath on these
//! veths, as `xdp-redirect-bare` is the floor under sluice's in-kernel path.
//!
//! `lab_xsk` (`bpf/lab.c`) steers every frame arriving on the generator's node-side veth into
//! the AF_XDP socket of its queue. One thread, pinned to the node core at `SCHED_FIFO` 1 (the
//! scheduling DESIGN.md measured and sluice's workers use), takes bursts of up to 64 frames,
//! rewrites their MAC addresses and sends them on a socket bound to the sink's node-side veth,
//! sharing the UMEM (no copy in userspace); completed frames go back to the fill ring. After 16
//! empty rounds it blocks in `poll()` on the RX socket. Nothing is parsed, looked up or
//! counted per packet: what `sluice-afxdp` costs above this is the cost of deciding by
//! identity (steering program, parsing, policy, connection table, statistics).

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use aya::Ebpf;
use aya::maps::XskMap;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
use xsk_rs::{FillQueue, FrameDesc, Umem};

use crate::cpu::{self, Task};
use crate::error::{LabError, Result};
use crate::generator::{LAB_OBJECT, TrafficSpec};
use crate::netns;
use crate::systems::{PeriodExtras, System};
use crate::topology::Topology;

/// Entries in every ring (sluice's default).
const RING: u32 = 512;
/// UMEM frames: twice the ring, so the fill ring stays full while a ring of frames is in
/// flight.
const FRAMES: u32 = 2 * RING;
/// Most frames taken from the RX ring per round (what NAPI hands over at once).
const BURST: usize = 64;
/// Empty rounds before the thread blocks on its socket.
const BUSY_POLL_ROUNDS: u32 = 16;
/// Longest block in `poll()`, so a stop request is seen.
const BLOCK_MS: i32 = 10;
/// Most `sendto()` kicks per burst before the next RX burst is taken.
const MAX_KICKS: u32 = 64;
/// Name of the forwarding thread (CPU accounting finds it by this prefix).
const THREAD_NAME: &str = "lab-afxdp-fwd";

fn err(e: impl std::fmt::Display) -> LabError {
    LabError::system("afxdp-bare", e.to_string())
}

/// What the forwarding thread needs: where it runs and what it forwards between.
#[derive(Clone, Debug)]
struct ForwarderConfig {
    /// The node namespace, entered by the thread before it binds.
    ns_path: String,
    /// The node core.
    cpu: usize,
    /// Node-side veth of the generator (RX).
    rx_dev: String,
    /// Node-side veth of the sink (TX).
    tx_dev: String,
    /// MACs written into each forwarded frame: the sink's, then the node side of its veth.
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
}

/// State shared with the forwarding thread.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    forwarded: AtomicU64,
    kicks: AtomicU64,
    sleeps: AtomicU64,
}

/// The running forwarding thread.
struct Forwarder {
    thread: Option<JoinHandle<Result<()>>>,
    shared: Arc<Shared>,
    /// The RX socket (valid while the thread runs).
    rx_fd: RawFd,
}

impl Forwarder {
    fn start(config: ForwarderConfig) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<RawFd>>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || forward(config, &thread_shared, &ready_tx))
            .map_err(|e| LabError::io("starting the afxdp-bare thread".into(), e))?;
        let mut forwarder = Forwarder {
            thread: Some(thread),
            shared,
            rx_fd: -1,
        };
        match ready_rx.recv() {
            Ok(Ok(fd)) => {
                forwarder.rx_fd = fd;
                Ok(forwarder)
            }
            Ok(Err(e)) => {
                let _ = forwarder.stop();
                Err(e)
            }
            Err(_) => Err(forwarder
                .stop()
                .err()
                .unwrap_or_else(|| err("the forwarding thread ended before binding"))),
        }
    }

    fn stop(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(err("the forwarding thread panicked"))),
            None => Ok(()),
        }
    }

    /// Frames the kernel could not put on the RX socket (`rx_dropped` + `rx_ring_full`).
    fn socket_lost(&self) -> u64 {
        xdp_statistics(self.rx_fd).map_or(0, |s| s[0] + s[3])
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `struct xdp_statistics` (linux/if_xdp.h, all six fields since 5.9) of socket `fd`.
fn xdp_statistics(fd: RawFd) -> Option<[u64; 6]> {
    const SOL_XDP: libc::c_int = 283;
    const XDP_STATISTICS: libc::c_int = 7;
    let mut stats = [0u64; 6];
    let mut len = size_of_val(&stats) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `stats` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(stats)
}

fn queue_size(n: u32) -> Result<QueueSize> {
    QueueSize::new(n).map_err(|e| err(format!("ring size {n}: {e}")))
}

/// Binds queue 0 of `dev` over `umem` with the fast path's own bind (copy mode on veth,
/// `EBUSY` retried while the last measurement's closed socket still holds the queue).
fn bind(umem: &Umem, dev: &str) -> Result<fastpath::socket::BoundRings> {
    // SAFETY: the forwarder binds each of its two interfaces once over its UMEM.
    unsafe { fastpath::socket::bind(dev, 0, umem, RING) }.map_err(err)
}

/// Puts as many of `frames` on `fill` as fit; returns how many. A reservation is all or
/// nothing, so ask for no more than the ring has room for.
fn fill_from(fill: &mut FillQueue, frames: &[FrameDesc]) -> usize {
    let want = frames.len().min(RING as usize) as u32;
    let room = fill.nb_free(want).min(want) as usize;
    // SAFETY: the frames are free frames of the UMEM behind `fill`, on no ring.
    unsafe { fill.produce(&frames[..room]) }
}

/// The forwarding thread: set up, report the RX socket, forward until stopped.
fn forward(
    config: ForwarderConfig,
    shared: &Shared,
    ready: &std::sync::mpsc::Sender<Result<RawFd>>,
) -> Result<()> {
    let setup = (|| {
        netns::enter(&config.ns_path)?;
        fastpath::sched::pin_current_thread(config.cpu).map_err(err)?;
        fastpath::sched::set_current_realtime(1).map_err(err)?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(2048).map_err(|e| err(format!("frame size: {e}")))?)
            .fill_queue_size(queue_size(RING)?)
            .comp_queue_size(queue_size(RING)?)
            .build()
            .map_err(|e| err(format!("UMEM configuration: {e}")))?;
        let frames = NonZeroU32::new(FRAMES).ok_or_else(|| err("no frames"))?;
        let (umem, free) =
            Umem::new(umem_config, frames, false).map_err(|e| err(format!("UMEM: {e}")))?;
        let (_, rx, rx_rings, _) = bind(&umem, &config.rx_dev)?;
        let (tx, _, tx_rings, _) = bind(&umem, &config.tx_dev)?;
        let (Some((fill, _)), Some((_, comp))) = (rx_rings, tx_rings) else {
            return Err(err("the UMEM's rings were already taken"));
        };
        Ok((umem, free, rx, fill, tx, comp))
    })();
    let (umem, mut free, mut rx, mut fill, mut tx, mut comp) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let filled = fill_from(&mut fill, &free);
    free.drain(..filled);
    let rx_fd = rx.fd().as_raw_fd();
    let _ = ready.send(Ok(rx_fd));

    let template = free.first().copied().unwrap_or_default();
    let mut burst = vec![template; BURST];
    let mut completed = vec![template; RING as usize];
    let mut pending: Vec<FrameDesc> = Vec::with_capacity(FRAMES as usize);
    let mut idle = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        // SAFETY: RX descriptors are frames of this UMEM, now owned by this thread.
        let n = unsafe { rx.consume(&mut burst) };
        if n > 0 {
            idle = 0;
            for desc in &mut burst[..n] {
                // SAFETY: the frame came off the RX ring; nothing else reads or writes it.
                let mut data = unsafe { umem.data_mut(desc) };
                let bytes = data.contents_mut();
                if bytes.len() >= 12 {
                    bytes[..6].copy_from_slice(&config.dst_mac);
                    bytes[6..12].copy_from_slice(&config.src_mac);
                }
            }
            pending.extend_from_slice(&burst[..n]);
            shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Copy-mode TX moves only on sendto(): kick until the ring is empty (bounded).
        let mut kicks = 0;
        loop {
            if !pending.is_empty() {
                let want = pending.len() as u32;
                let room = tx.nb_free(want).min(want) as usize;
                // SAFETY: pending frames are frames of the UMEM behind `tx`, on no ring.
                let done = unsafe { tx.produce(&pending[..room]) };
                pending.drain(..done);
            }
            let on_ring = RING.saturating_sub(tx.nb_free_exact());
            if on_ring == 0 || kicks >= MAX_KICKS {
                break;
            }
            let _ = tx.wakeup();
            kicks += 1;
        }
        shared.kicks.fetch_add(u64::from(kicks), Ordering::Relaxed);
        // SAFETY: completions are frames of this UMEM the kernel is done with.
        let c = unsafe { comp.consume(&mut completed) };
        free.extend_from_slice(&completed[..c]);
        let filled = fill_from(&mut fill, &free);
        free.drain(..filled);
        if n > 0 || !pending.is_empty() {
            continue;
        }
        idle += 1;
        if idle < BUSY_POLL_ROUNDS {
            continue;
        }
        shared.sleeps.fetch_add(1, Ordering::Relaxed);
        let mut pfd = libc::pollfd {
            fd: rx_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, BLOCK_MS) };
    }
    Ok(())
}

/// The plain AF_XDP forwarder system.
#[derive(Default)]
pub struct AfxdpBare {
    node_cpu: usize,
    ebpf: Option<Ebpf>,
    link: Option<XdpLinkId>,
    forwarder: Option<Forwarder>,
    lost_at_start: u64,
    counters_at_start: [u64; 3],
}

impl std::fmt::Debug for AfxdpBare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfxdpBare")
            .field("node_cpu", &self.node_cpu)
            .field("running", &self.forwarder.is_some())
            .finish()
    }
}

impl AfxdpBare {
    /// The forwarder with its thread on `node_cpu`.
    pub fn new(node_cpu: usize) -> Self {
        AfxdpBare {
            node_cpu,
            ..AfxdpBare::default()
        }
    }

    fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
        ebpf.program_mut("lab_xsk")
            .ok_or_else(|| err("lab_xsk missing from lab.o"))?
            .try_into()
            .map_err(err)
    }

    fn counters(&self) -> [u64; 3] {
        self.forwarder.as_ref().map_or([0; 3], |f| {
            let s = &f.shared;
            [
                s.forwarded.load(Ordering::Relaxed),
                s.kicks.load(Ordering::Relaxed),
                s.sleeps.load(Ordering::Relaxed),
            ]
        })
    }
}

impl System for AfxdpBare {
    fn name(&self) -> &'static str {
        "afxdp-bare"
    }

    fn has_rules(&self) -> bool {
        false
    }

    fn setup(&mut self, topology: &Topology, _rules: usize, _spec: &TrafficSpec) -> Result<()> {
        if topology.pairs() != 1 || topology.config.queues != 1 {
            return Err(err(format!(
                "forwards one generator → sink pair over one queue; this topology has {} pairs \
                 and {} queues",
                topology.pairs(),
                topology.config.queues
            )));
        }
        if self.ebpf.is_none() {
            let mut ebpf = Ebpf::load(LAB_OBJECT).map_err(err)?;
            Self::program(&mut ebpf)?.load().map_err(err)?;
            self.ebpf = Some(ebpf);
        }
        let generator = &topology.gens[0];
        let sink = &topology.sink;
        let forwarder = Forwarder::start(ForwarderConfig {
            ns_path: topology.node.path(),
            cpu: self.node_cpu,
            rx_dev: generator.host_dev.clone(),
            tx_dev: sink.host_dev.clone(),
            dst_mac: sink.mac,
            src_mac: sink.host_mac,
        })?;
        let ebpf = self.ebpf.as_mut().ok_or_else(|| err("not loaded"))?;
        let mut xsks: XskMap<&mut aya::maps::MapData> = ebpf
            .map_mut("bare_xsks")
            .ok_or_else(|| err("bare_xsks missing from lab.o"))?
            .try_into()
            .map_err(err)?;
        xsks.set(0, forwarder.rx_fd, 0)
            .map_err(|e| err(format!("bare_xsks[0]: {e}")))?;
        self.forwarder = Some(forwarder);
        let ifindex = generator.host_ifindex;
        let prog = Self::program(ebpf)?;
        let link = topology.node.run(|| {
            prog.attach_to_if_index(ifindex, XdpMode::Driver)
                .map_err(|e| err(format!("attaching lab_xsk to ifindex {ifindex}: {e}")))
        })?;
        self.link = Some(link);
        Ok(())
    }

    fn user_threads(&self) -> Vec<Task> {
        cpu::threads_named(std::process::id() as i32, THREAD_NAME)
    }

    fn begin_period(&mut self) -> Result<()> {
        self.lost_at_start = self.forwarder.as_ref().map_or(0, Forwarder::socket_lost);
        self.counters_at_start = self.counters();
        Ok(())
    }

    fn end_period(&mut self) -> Result<PeriodExtras> {
        let lost = self.forwarder.as_ref().map_or(0, Forwarder::socket_lost);
        let now = self.counters();
        let mut extras = PeriodExtras {
            socket_lost: Some(lost.saturating_sub(self.lost_at_start)),
            ..PeriodExtras::default()
        };
        for (name, (a, b)) in ["forwarded", "tx_kicks", "sleeps"]
            .into_iter()
            .zip(self.counters_at_start.into_iter().zip(now))
        {
            extras
                .counters
                .insert(format!("bare_{name}"), b.saturating_sub(a));
        }
        Ok(extras)
    }

    fn teardown(&mut self, _topology: &Topology) -> Result<()> {
        let mut result = Ok(());
        if let (Some(link), Some(ebpf)) = (self.link.take(), self.ebpf.as_mut()) {
            result = Self::program(ebpf).and_then(|p| p.detach(link).map_err(err));
        }
        if let Some(mut forwarder) = self.forwarder.take() {
            let stopped = forwarder.stop();
            result = result.and(stopped);
        }
        result
    }

    fn shutdown(&mut self) {
        if let Some(mut forwarder) = self.forwarder.take() {
            let _ = forwarder.stop();
        }
        self.ebpf = None;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn statistics_of_a_descriptor_that_is_no_xdp_socket_are_none() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert_eq!(xdp_statistics(socket.as_fd().as_raw_fd()), None);
    }
}
