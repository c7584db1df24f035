//! Per-packet classify cost against one hash lookup, at 1,000 / 100,000 / 1,000,000 ipcache
//! entries, in one run.
//!
//! For each size the generated cluster (`support/mod.rs`: 10,000 identities when there are
//! enough pods, 1,000 policies, ≈ 110,000 policy pair tables) is built once, then:
//!
//! - `classify/<entries>`: `Snapshot::classify(src, dst, proto, port)` over a pre-generated
//!   array of 2^20 random packets (a local endpoint on one side, a random pod, node or world
//!   address on the other, 60 % IPv4), one packet per iteration;
//! - `classify_batch/<entries>`: `Snapshot::classify_batch` over the same packets in batches of
//!   64 (a worker's receive batch); the time reported per iteration is per *packet* (each
//!   iteration is timed as a 64th of a batch, with `iter_custom`);
//! - `hashbrown_lookup/<entries>`: one `hashbrown::HashMap<u64, u64>` lookup per iteration, in a
//!   table of as many random keys as the ipcache has entries, over an array of 2^20 random
//!   present keys (the same access pattern).
//!
//! Criterion's time per iteration is the time per operation. The targets: classify
//! median ≤ 4× the hash lookup at the same size, and ≤ 2× growth from 1k to 1M entries.
//!
//! `cargo bench -p identity-cache --bench classify`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_main};

#[path = "support/mod.rs"]
mod support;

use identity_cache::state::PacketKey;
use support::{Cluster, Order, Params, SEED, hashbrown_baseline};

/// Pre-generated packets and probe keys per size; a power of two so the index wraps with a
/// mask.
const PACKETS: usize = 1 << 20;
/// Packets per `classify_batch` call.
const BATCH: usize = 64;

fn classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for entries in [1_000, 100_000, 1_000_000] {
        let cluster = Cluster::generate(Params::with_entries(entries));
        let cache = cluster.build(Order::PoliciesFirst);
        let snapshot = cache.pending();
        eprintln!(
            "{entries} entries: ipcache {}, policy CIDRs {}, identities {}, local endpoints {}, policies {}, policy pairs {}",
            snapshot.ipcache.len(),
            snapshot.policy_cidrs.len(),
            cache.registry().len(),
            snapshot.endpoints.len(),
            cluster.policies.len(),
            snapshot.policy.pairs.len(),
        );
        let packets = cluster.packets(PACKETS, SEED ^ 1);
        let (map, keys) = hashbrown_baseline(snapshot.ipcache.len(), PACKETS, SEED ^ 2);
        drop(cluster);

        group.bench_with_input(BenchmarkId::new("classify", entries), &entries, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let p = &packets[i & (PACKETS - 1)];
                i = i.wrapping_add(1);
                black_box(snapshot.classify(black_box(p.src), black_box(p.dst), p.protocol, p.port))
                    .verdict
            });
        });
        let batch_keys: Vec<PacketKey> = packets
            .iter()
            .map(|p| PacketKey {
                src: p.src,
                dst: p.dst,
                protocol: p.protocol,
                port: p.port,
            })
            .collect();
        group.bench_with_input(
            BenchmarkId::new("classify_batch", entries),
            &entries,
            |b, _| {
                let mut out = Vec::with_capacity(BATCH);
                let mut at = 0usize;
                b.iter_custom(|packets| {
                    let batches = packets.div_ceil(BATCH as u64);
                    let t = Instant::now();
                    for _ in 0..batches {
                        out.clear();
                        snapshot.classify_batch(black_box(&batch_keys[at..at + BATCH]), &mut out);
                        black_box(&out);
                        at = (at + BATCH) & (PACKETS - 1);
                    }
                    // `packets` packets' share of the whole batches run.
                    t.elapsed()
                        .mul_f64(packets as f64 / (batches as f64 * BATCH as f64).max(1.0))
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("hashbrown_lookup", entries),
            &entries,
            |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    let k = &keys[i & (PACKETS - 1)];
                    i = i.wrapping_add(1);
                    black_box(map.get(black_box(k)).copied())
                });
            },
        );
    }
    group.finish();
}

/// Runs every benchmark of this file (what `criterion_group!` would generate, documented).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    classify(&mut c);
}

criterion_main!(benches);
