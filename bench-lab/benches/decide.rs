//! What sluice-afxdp's worker does per packet in userspace, away from the kernel's noise:
//! the lab's traffic decided against the lab's state, on one core, side by side with what the
//! plain forwarder (`afxdp-bare`) does.
//!
//! State: `bench-lab`'s sluice state for 10,000 policy entries and 100,000 remote pods
//! (`systems::sluice::build_state`, as a lab run builds it), a generator and a sink pod, and a
//! worker's connection table (65,536 connections). Traffic: 64-byte UDP frames generator →
//! sink port 9 over 10,000 source ports, round robin (the lab's `flows=many`), taken in
//! bursts of 32 (the worker's default) and copied into a burst buffer first, as the kernel
//! copies them into the UMEM. Criterion reports time per burst and packets per second:
//!
//! - `per_packet/bare_rewrite`: copy + MAC rewrite, all `afxdp-bare` does per frame;
//! - `per_packet/decide_prefetched`: copy, parse the whole burst and prefetch each packet's
//!   connection slot, then decide each (ipcache, anti-spoofing, connection table, policy) and
//!   rewrite its MACs: the worker's path (`fastpath::worker`);
//! - `per_packet/decide_in_order`: the same without the prefetch pass (parse and decide one
//!   packet after another), to show what the prefetch buys.
//!
//! `cargo bench -p bench-lab --bench decide`

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bench_lab::generator::{LAB_PORT, SPORT_BASE, build_frame};
use bench_lab::systems::sluice::{LocalPod, REMOTE_BASE, build_state};
use bench_lab::topology::{gen_base, sink_v4};
use criterion::{Criterion, Throughput, criterion_main};
use fastpath::conntrack::{ConnTable, Timeouts};
use fastpath::pipeline::{self, Disposition};
use fastpath::wire::{self, Frame};
use identity_cache::state::Snapshot;

/// Flows of the lab's `flows=many`.
const FLOWS: usize = 10_000;
/// The worker's default burst.
const BURST: usize = 32;
/// Frame buffer stride (a UMEM frame).
const FRAME: usize = 2048;
const GEN_IF: u32 = 2;
const SINK_IF: u32 = 3;
const GEN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 3];
const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];

struct Setup {
    snapshot: Snapshot,
    frames: Vec<Vec<u8>>,
}

fn setup() -> Setup {
    let gen_ip = gen_base(0);
    let sink_ip = sink_v4(0);
    let locals = [
        LocalPod {
            uid: "gen".into(),
            app: "gen",
            v4: vec![gen_ip],
            ifindex: GEN_IF,
            mac: GEN_MAC,
        },
        LocalPod {
            uid: "sink".into(),
            app: "sink",
            v4: vec![sink_ip],
            ifindex: SINK_IF,
            mac: SINK_MAC,
        },
    ];
    let built = build_state(&locals, 10_000, 100_000, REMOTE_BASE).expect("sluice state");
    let frames = (0..FLOWS)
        .map(|i| {
            let mut f = build_frame(
                NODE_MAC,
                GEN_MAC,
                IpAddr::V4(gen_ip),
                IpAddr::V4(sink_ip),
                SPORT_BASE + i as u16,
                64,
            );
            // build_frame's destination port is the lab's.
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), LAB_PORT);
            f.resize(64, 0);
            f
        })
        .collect();
    Setup {
        snapshot: built.cache.pending(),
        frames,
    }
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Copies the next burst of frames into `buf` (one frame per `FRAME` bytes).
fn take_burst(frames: &[Vec<u8>], next: &mut usize, buf: &mut [u8]) {
    for k in 0..BURST {
        let f = &frames[*next];
        buf[k * FRAME..k * FRAME + f.len()].copy_from_slice(f);
        *next = (*next + 1) % frames.len();
    }
}

fn rewrite(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
}

fn per_packet(c: &mut Criterion) {
    let Setup { snapshot, frames } = setup();
    let audit: hashbrown::HashSet<u32> = hashbrown::HashSet::new();
    let mut group = c.benchmark_group("per_packet");
    group
        .throughput(Throughput::Elements(BURST as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let len = frames[0].len();
    let mut buf = vec![0u8; BURST * FRAME];
    let clock = Instant::now();

    let mut next = 0;
    group.bench_function("bare_rewrite", |b| {
        b.iter(|| {
            take_burst(&frames, &mut next, &mut buf);
            for k in 0..BURST {
                rewrite(&mut buf[k * FRAME..k * FRAME + len], NODE_MAC, SINK_MAC);
            }
            black_box(&buf);
        })
    });

    for prefetch in [true, false] {
        let name = if prefetch {
            "decide_prefetched"
        } else {
            "decide_in_order"
        };
        let mut conntrack = ConnTable::new(65_536, Timeouts::default());
        let mut next = 0;
        let mut forwarded = 0u64;
        let mut summaries = vec![None; BURST];
        group.bench_function(name, |b| {
            b.iter(|| {
                take_burst(&frames, &mut next, &mut buf);
                let now = now_ns(clock);
                if prefetch {
                    for (k, s) in summaries.iter_mut().enumerate() {
                        *s = match wire::summarize(&buf[k * FRAME..k * FRAME + len]) {
                            Ok(Frame::Ip(p)) => Some(p),
                            _ => None,
                        };
                        if let Some(p) = s {
                            conntrack.prefetch(p);
                        }
                    }
                }
                for k in 0..BURST {
                    let frame = &mut buf[k * FRAME..k * FRAME + len];
                    let summary = if prefetch {
                        summaries[k]
                    } else {
                        match wire::summarize(frame) {
                            Ok(Frame::Ip(p)) => Some(p),
                            _ => None,
                        }
                    };
                    let Some(p) = summary else { continue };
                    let d = pipeline::decide(&snapshot, &mut conntrack, &audit, GEN_IF, &p, now);
                    if let Disposition::Forward { dst_mac, .. } = d.disposition {
                        rewrite(frame, NODE_MAC, dst_mac);
                        forwarded += 1;
                    }
                }
                black_box(&buf);
            })
        });
        assert!(forwarded > 0, "{name}: the lab's traffic is allowed");
    }
    group.finish();
}

/// Runs every benchmark of this file (what `criterion_group!` would generate, documented).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    per_packet(&mut c);
}

criterion_main!(benches);
