//! Classify cost against a plain hash lookup, in one process.
//!
//! Builds the generated cluster (see `benches/support/mod.rs`) with `--entries N` ipcache
//! entries, then alternates rounds of `Snapshot::classify` over a pre-generated array of random
//! packets, rounds of `Snapshot::classify_batch` over the same packets in batches of
//! `--batch` (64, a worker's receive batch), and rounds of one random
//! `hashbrown::HashMap<u64, u64>` lookup in a table of the same size, and prints one JSON line
//! with the medians per operation (packet or lookup):
//!
//! `{"entries":N,"classify_ns":…,"hashbrown_ns":…,"ratio":…,"classify_batch_ns":…,"batch_ratio":…,
//! "classify_cpu_ns":…,"classify_batch_cpu_ns":…,"hashbrown_cpu_ns":…,"cpu_ratio":…,"batch_cpu_ratio":…}`
//!
//! The first four are the figures: one packet at a time, wall clock. `*_cpu_*` are the
//! same rounds timed with the thread's CPU clock, which leaves out time the thread spent
//! waiting for a CPU held by another process (this machine is shared, so those are the steadier
//! figures).
//!
//! `--entries` also takes a comma-separated list (`1000,100000,1000000`): every size is built
//! first, the rounds then go through all sizes in turn (so that a noisy neighbour slows every
//! size alike, which makes the growth between sizes comparable), and one line is printed per
//! size. `--breakdown` adds timing splits per packet class. Progress, the state's shape and the
//! per-round figures go to stderr.
//!
//! `cargo run --release -p identity-cache --example classify -- --entries 1000000 [--rounds 7]
//! [--lookups 1000000] [--batch 64] [--breakdown]`

use std::hint::black_box;
use std::time::Instant;

use identity_cache::state::{Classification, PacketKey, Snapshot};

#[path = "../benches/support/mod.rs"]
mod support;

use support::{Cluster, Order, Packet, Params, SEED, hashbrown_baseline, median, thread_cpu};

/// Packets (and hash probes) pre-generated; a power of two so the index wraps with a mask.
const PACKETS: usize = 1 << 20;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
        .unwrap_or(default)
}

/// Per-round results of one kind of operation: wall and thread-CPU ns per operation.
#[derive(Default)]
struct Timings {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Timings {
    /// Times `f`, which performs `ops` operations.
    fn time(&mut self, ops: usize, f: impl FnOnce()) {
        let (c, t) = (thread_cpu(), Instant::now());
        f();
        self.wall.push(t.elapsed().as_nanos() as f64 / ops as f64);
        if let (Some(c0), Some(c1)) = (c, thread_cpu()) {
            self.cpu.push((c1 - c0).as_nanos() as f64 / ops as f64);
        }
    }

    /// (median wall, median CPU).
    fn medians(&mut self) -> (f64, f64) {
        (median(&mut self.wall), median(&mut self.cpu))
    }
}

/// One size's state, packets and baseline table, with its per-round results.
struct Size {
    snapshot: Snapshot,
    packets: Vec<Packet>,
    batch_packets: Vec<PacketKey>,
    map: hashbrown::HashMap<u64, u64>,
    keys: Vec<u64>,
    classify: Timings,
    batch: Timings,
    hashbrown: Timings,
}

fn setup(entries: usize, breakdown_too: bool) -> Size {
    let start = Instant::now();
    let cluster = Cluster::generate(Params::with_entries(entries));
    let cache = cluster.build(Order::PoliciesFirst);
    // Readers hold exactly this (what `Reader::begin_batch` hands out); the writer-side
    // bookkeeping is dropped to keep several sizes in memory at once.
    let snapshot = cache.pending();
    eprintln!(
        "{entries}: built in {:.2} s: ipcache {} entries, policy CIDRs {}, identities {}, pods {}, local endpoints {}, policies {}, policy pairs {}, locals {}",
        start.elapsed().as_secs_f64(),
        snapshot.ipcache.len(),
        snapshot.policy_cidrs.len(),
        cache.registry().len(),
        cluster.pods,
        snapshot.endpoints.len(),
        cluster.policies.len(),
        snapshot.policy.pairs.len(),
        snapshot.policy.locals.len(),
    );
    drop(cache);
    let packets = cluster.packets(PACKETS, SEED ^ 1);
    drop(cluster);
    let (map, keys) = hashbrown_baseline(snapshot.ipcache.len(), PACKETS, SEED ^ 2);

    let allowed = packets
        .iter()
        .filter(|p| {
            snapshot
                .classify(p.src, p.dst, p.protocol, p.port)
                .verdict
                .action
                == identity_cache::policy::Action::Allow
        })
        .count();
    eprintln!(
        "{entries}: verdict mix {:.1} % allowed",
        100.0 * allowed as f64 / packets.len() as f64
    );
    if breakdown_too {
        breakdown(&snapshot, &packets);
    }
    let batch_packets = packets.iter().map(key).collect();
    Size {
        snapshot,
        packets,
        batch_packets,
        map,
        keys,
        classify: Timings::default(),
        batch: Timings::default(),
        hashbrown: Timings::default(),
    }
}

fn key(p: &Packet) -> PacketKey {
    PacketKey {
        src: p.src,
        dst: p.dst,
        protocol: p.protocol,
        port: p.port,
    }
}

/// One round of `lookups` classifies, one of `lookups` packets classified in batches of
/// `batch`, and one of `lookups` hash lookups.
fn round(size: &mut Size, lookups: usize, batch: usize) {
    let mask = PACKETS - 1;
    let (snapshot, packets) = (&size.snapshot, &size.packets);
    size.classify.time(lookups, || {
        for i in 0..lookups {
            let p = &packets[i & mask];
            black_box(snapshot.classify(black_box(p.src), black_box(p.dst), p.protocol, p.port));
        }
    });

    let keys = &size.batch_packets;
    let mut out: Vec<Classification<'_>> = Vec::with_capacity(batch);
    let batches = lookups.div_ceil(batch);
    size.batch.time(batches * batch, || {
        for b in 0..batches {
            let start = (b * batch) & mask;
            let end = (start + batch).min(PACKETS);
            out.clear();
            snapshot.classify_batch(black_box(&keys[start..end]), &mut out);
            black_box(&out);
        }
    });

    let (map, keys) = (&size.map, &size.keys);
    size.hashbrown.time(lookups, || {
        for i in 0..lookups {
            black_box(map.get(black_box(&keys[i & mask])));
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: Vec<usize> = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || vec![100_000],
            |list| {
                list.split(',')
                    .map(|v| {
                        v.replace('_', "")
                            .parse()
                            .unwrap_or_else(|_| panic!("--entries takes numbers, got {v}"))
                    })
                    .collect()
            },
        );
    let rounds = arg(&args, "--rounds", 7).max(1);
    let lookups = arg(&args, "--lookups", 1_000_000).max(1);
    let batch = arg(&args, "--batch", 64).clamp(1, PACKETS);
    let breakdown_too = args.iter().any(|a| a == "--breakdown");

    let mut sizes: Vec<Size> = entries.iter().map(|n| setup(*n, breakdown_too)).collect();
    for _ in 0..rounds {
        for size in &mut sizes {
            round(size, lookups, batch);
        }
    }
    for size in &mut sizes {
        let n = size.snapshot.ipcache.len();
        for (name, t) in [
            ("classify", &size.classify),
            ("classify_batch", &size.batch),
            ("hashbrown", &size.hashbrown),
        ] {
            eprintln!(
                "{n}: {name} ns/op per round: wall {:.1?}, cpu {:.1?}",
                t.wall, t.cpu
            );
        }
        let (c, c_cpu) = size.classify.medians();
        let (b, b_cpu) = size.batch.medians();
        let (h, h_cpu) = size.hashbrown.medians();
        println!(
            "{{\"entries\":{n},\"classify_ns\":{c:.1},\"hashbrown_ns\":{h:.1},\"ratio\":{:.2},\
             \"classify_batch_ns\":{b:.1},\"batch_ratio\":{:.2},\
             \"classify_cpu_ns\":{c_cpu:.1},\"classify_batch_cpu_ns\":{b_cpu:.1},\
             \"hashbrown_cpu_ns\":{h_cpu:.1},\"cpu_ratio\":{:.2},\"batch_cpu_ratio\":{:.2}}}",
            c / h,
            b / h,
            c_cpu / h_cpu,
            b_cpu / h_cpu,
        );
    }
}

/// Timing splits by packet class (stderr): ipcache lookups of both addresses, `identity_of`
/// of both (adds the policy-CIDR fallback for world addresses), the two endpoint lookups,
/// and the whole `classify`.
fn breakdown(snapshot: &Snapshot, packets: &[Packet]) {
    use std::net::IpAddr;
    let world = |ip: IpAddr| snapshot.ipcache.lookup(ip).is_none();
    type Class<'a> = (&'static str, Box<dyn Fn(&Packet) -> bool + 'a>);
    let classes: [Class<'_>; 4] = [
        (
            "known v4",
            Box::new(|p| p.src.is_ipv4() && !world(p.src) && !world(p.dst)),
        ),
        (
            "known v6",
            Box::new(|p| p.src.is_ipv6() && !world(p.src) && !world(p.dst)),
        ),
        (
            "world v4",
            Box::new(|p| p.src.is_ipv4() && (world(p.src) || world(p.dst))),
        ),
        (
            "world v6",
            Box::new(|p| p.src.is_ipv6() && (world(p.src) || world(p.dst))),
        ),
    ];
    for (name, pick) in classes {
        let subset: Vec<Packet> = packets.iter().filter(|p| pick(p)).copied().collect();
        let n = subset.len().max(1);
        let time = |f: &dyn Fn(&Packet)| {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for p in &subset {
                    f(p);
                }
                best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
            }
            best
        };
        let ipcache = time(&|p| {
            black_box(snapshot.ipcache.lookup(black_box(p.src)));
            black_box(snapshot.ipcache.lookup(black_box(p.dst)));
        });
        let identity = time(&|p| {
            black_box(snapshot.identity_of(black_box(p.src)));
            black_box(snapshot.identity_of(black_box(p.dst)));
        });
        let endpoints = time(&|p| {
            black_box(snapshot.endpoints.by_ip(black_box(p.src)));
            black_box(snapshot.endpoints.by_ip(black_box(p.dst)));
        });
        let classify = time(&|p| {
            black_box(snapshot.classify(black_box(p.src), black_box(p.dst), p.protocol, p.port));
        });
        let keys: Vec<PacketKey> = subset.iter().map(key).collect();
        let mut batched = f64::MAX;
        let mut out = Vec::with_capacity(64);
        for _ in 0..3 {
            let t = Instant::now();
            for chunk in keys.chunks(64) {
                out.clear();
                snapshot.classify_batch(chunk, &mut out);
                black_box(&out);
            }
            batched = batched.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        eprintln!(
            "{name:>9}: {:>5.1} % of packets; ns/packet: 2 ipcache lookups {ipcache:.1}, 2 identity_of {identity:.1}, 2 endpoint lookups {endpoints:.1}, classify {classify:.1}, classify_batch {batched:.1}",
            100.0 * subset.len() as f64 / packets.len() as f64
        );
    }
}
