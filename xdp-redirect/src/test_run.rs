//! Running an XDP program on a crafted frame with `BPF_PROG_TEST_RUN`: how the tests decide
//! probes through the real program, and how the benchmark generates load (live frames).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_PROG_TEST_RUN` (`enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program returns XDP_TX/XDP_REDIRECT for are really
/// transmitted (load generation).
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `struct xdp_md` as the run's context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// What a run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action of the (last) run.
    pub retval: u32,
    /// Kernel-measured nanoseconds per repetition.
    pub duration_ns: u32,
}

/// Runs an XDP program `repeat` times on `frame` as received on `ifindex`, RX queue 0 (the
/// index is resolved in the calling thread's network namespace). `flags` may carry
/// [`BPF_F_TEST_XDP_LIVE_FRAMES`]; a live run stopped by a signal returns `EINTR`.
pub fn xdp_test_run(
    program: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    flags: u32,
) -> io::Result<TestRunOutcome> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: (&raw const ctx) as u64,
        flags,
        ..TestRunAttr::default()
    };
    // SAFETY: the kernel reads `attr` (size given), `data_size_in` bytes of `frame` and
    // `ctx_size_in` bytes of `ctx`, all of which outlive the call, and writes only into `attr`
    // (no data_out / ctx_out buffers are given).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TestRunOutcome {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}
