//! Control-plane costs on the generated cluster (`support/mod.rs`, 100,000 ipcache entries,
//! 10,000 identities, 1,000 policies), and the choice of publication mechanism.
//!
//! - `full_compile/{policies_first,workloads_first}`: the whole state built from scratch (inputs
//!   prebuilt and cloned outside the timing), 10 samples of one build each;
//! - `pod/{add_replica,remove_replica,add_new_identity,remove_last_of_identity}`: one pod applied
//!   incrementally on the full state, including `publish()`; the inverse operation runs untimed
//!   between iterations so the state stays the same size (p50/p99: `examples/update_latency`);
//! - `barrier/{1,2}_busy_readers`: `publish()` untimed, then `wait_for_readers` timed, while
//!   reader threads loop on `begin_batch()` + one `classify`;
//! - `publication/<mechanism>/<n>_writers`: a reader's cost per batch to get the current
//!   snapshot: `publication::Reader::begin_batch` (arc-swap `Cache`), a plain
//!   `ArcSwap::load_full`, `RwLock<Arc<T>>` read + clone, `Mutex<Arc<T>>` lock + clone; with no
//!   writer and with one writer thread publishing in a tight loop.
//!
//! `cargo bench -p identity-cache --bench update`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_main};
use identity_cache::publication::Publisher;
use identity_cache::state::IdentityCache;

#[path = "support/mod.rs"]
mod support;

use support::{Cluster, Order, Packet, Params, SEED, build_from};

/// ipcache entries of the state the update benches run on.
const ENTRIES: usize = 100_000;

fn full_compile(c: &mut Criterion) {
    let cluster = Cluster::generate(Params::with_entries(ENTRIES));
    let inputs = cluster.inputs();
    let mut group = c.benchmark_group("full_compile");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));
    for (name, order) in [
        ("policies_first", Order::PoliciesFirst),
        ("workloads_first", Order::WorkloadsFirst),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let inputs = inputs.clone();
                    let t = Instant::now();
                    let cache = build_from(inputs, order);
                    total += t.elapsed();
                    drop(cache);
                }
                total
            });
        });
    }
    group.finish();
}

fn pod_updates(c: &mut Criterion) {
    let cluster = Cluster::generate(Params::with_entries(ENTRIES));
    let mut cache = cluster.build(Order::PoliciesFirst);
    let pending = cache.pending();
    eprintln!(
        "state: ipcache {} entries, identities {}, policy pairs {}",
        pending.ipcache.len(),
        cache.registry().len(),
        pending.policy.pairs.len()
    );
    drop(pending);
    let mut group = c.benchmark_group("pod");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut n = 0usize;
    let like = |n: usize| n * 7919 % cluster.pods;
    for new_identity in [false, true] {
        let make = |n: usize| match new_identity {
            false => cluster.extra_pod(n, like(n)),
            true => cluster.extra_pod_new_identity(n, like(n)),
        };
        let (add, remove) = match new_identity {
            false => ("add_replica", "remove_replica"),
            true => ("add_new_identity", "remove_last_of_identity"),
        };
        group.bench_function(add, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let w = make(n);
                    let uid = w.uid.clone();
                    let t = Instant::now();
                    cache.upsert_workload(w).expect("pod add");
                    cache.publish();
                    total += t.elapsed();
                    cache.remove_workload(&uid);
                    cache.publish();
                }
                total
            });
        });
        group.bench_function(remove, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let w = make(n);
                    let uid = w.uid.clone();
                    cache.upsert_workload(w).expect("pod add");
                    cache.publish();
                    let t = Instant::now();
                    cache.remove_workload(&uid);
                    cache.publish();
                    total += t.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

fn barrier(c: &mut Criterion) {
    let cluster = Cluster::generate(Params::with_entries(ENTRIES));
    let mut cache = cluster.build(Order::PoliciesFirst);
    let packets = cluster.packets(1 << 16, SEED ^ 3);
    let mut group = c.benchmark_group("barrier");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for readers in [1usize, 2] {
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            for r in 0..readers {
                spawn_busy_reader(s, &cache, &packets, &stop, r);
            }
            group.bench_function(BenchmarkId::new("busy_readers", readers), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let generation = cache.publish();
                        let t = Instant::now();
                        cache
                            .wait_for_readers(generation, Duration::from_secs(5))
                            .expect("busy readers reach every generation");
                        total += t.elapsed();
                    }
                    total
                });
            });
            stop.store(true, Ordering::Relaxed);
        });
    }
    group.finish();
}

/// A worker thread deciding one packet per batch until `stop`.
fn spawn_busy_reader<'scope>(
    s: &'scope thread::Scope<'scope, '_>,
    cache: &IdentityCache,
    packets: &'scope [Packet],
    stop: &'scope AtomicBool,
    r: usize,
) {
    let mut reader = cache.reader(&format!("worker-{r}"));
    s.spawn(move || {
        let mut i = r * 997;
        while !stop.load(Ordering::Relaxed) {
            let snapshot = reader.begin_batch();
            let p = &packets[i % packets.len()];
            black_box(snapshot.classify(p.src, p.dst, p.protocol, p.port));
            i += 1;
        }
    });
}

/// The published value in the mechanism comparison (its size does not matter: every mechanism
/// hands out an `Arc`).
type Value = [u64; 4];

fn publication(c: &mut Criterion) {
    let mut group = c.benchmark_group("publication");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for writers in [0usize, 1] {
        let label = format!("{writers}_writers");
        let stop = AtomicBool::new(false);

        // What publication.rs does: an arc-swap `Cache` revalidated per batch, plus the reader's
        // generation record.
        let publisher = Publisher::new([0u64; 4]);
        let mut reader = publisher.register_reader("bench");
        thread::scope(|s| {
            if writers == 1 {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        publisher.publish([n; 4]);
                    }
                });
            }
            group.bench_function(BenchmarkId::new("reader_begin_batch", &label), |b| {
                b.iter(|| black_box(reader.begin_batch().value()[0]));
            });
            stop.store(true, Ordering::Relaxed);
        });
        drop(reader);

        stop.store(false, Ordering::Relaxed);
        let swap: ArcSwap<Value> = ArcSwap::from_pointee([0; 4]);
        thread::scope(|s| {
            if writers == 1 {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        swap.store(Arc::new([n; 4]));
                    }
                });
            }
            group.bench_function(BenchmarkId::new("arc_swap_load_full", &label), |b| {
                b.iter(|| {
                    let snapshot = swap.load_full();
                    black_box(snapshot[0])
                });
            });
            stop.store(true, Ordering::Relaxed);
        });

        stop.store(false, Ordering::Relaxed);
        let rwlock = RwLock::new(Arc::new([0u64; 4]));
        thread::scope(|s| {
            if writers == 1 {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let next = Arc::new([n; 4]);
                        *rwlock.write().expect("not poisoned") = next;
                    }
                });
            }
            group.bench_function(BenchmarkId::new("rwlock_read_clone", &label), |b| {
                b.iter(|| {
                    let snapshot = Arc::clone(&rwlock.read().expect("not poisoned"));
                    black_box(snapshot[0])
                });
            });
            stop.store(true, Ordering::Relaxed);
        });

        stop.store(false, Ordering::Relaxed);
        let mutex = Mutex::new(Arc::new([0u64; 4]));
        thread::scope(|s| {
            if writers == 1 {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let next = Arc::new([n; 4]);
                        *mutex.lock().expect("not poisoned") = next;
                    }
                });
            }
            group.bench_function(BenchmarkId::new("mutex_clone", &label), |b| {
                b.iter(|| {
                    let snapshot = Arc::clone(&mutex.lock().expect("not poisoned"));
                    black_box(snapshot[0])
                });
            });
            stop.store(true, Ordering::Relaxed);
        });
    }
    group.finish();
}

/// Runs every benchmark of this file (what `criterion_group!` would generate, documented).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    publication(&mut c);
    barrier(&mut c);
    pod_updates(&mut c);
    full_compile(&mut c);
}

criterion_main!(benches);
