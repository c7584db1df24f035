//! Control-plane latencies of the identity cache, printed as one JSON line:
//!
//! - full compile: the whole state (nodes, 1,000 policies, the pods of 10,000 identities)
//!   built from scratch, policies first and workloads first (median of `--compile-runs`);
//! - incremental pod add and pod remove on the full state, each followed by `publish()`
//!   (p50/p99 over `--updates` operations): a replica of an existing identity, and a pod with a
//!   label set nobody has (a new identity, removed again with its last pod);
//! - the revocation barrier: `publish()` then `wait_for_readers` while reader threads loop on
//!   `begin_batch()` + one `classify` (p50/p99 over `--barriers` barriers), with two busy readers
//!   and, for comparison, one and three;
//! - ipcache memory with `--memory-entries` entries (default 1,000,000): the pods' and nodes'
//!   entries in a standalone `IpCacheWriter`, as `IpCacheWriter::memory_bytes`,
//!   `IpCache::memory_bytes` of its snapshot, the RSS growth while filling it, and the whole
//!   process's resident and peak resident size right after (`VmRSS`, `VmHWM`: this is done
//!   first, so the process then holds only the program, the generator and the ipcache).
//!
//! Durations are wall-clock per operation: on a shared machine the tails include preemption.
//! The full compile is also reported as on-CPU time of the thread (`*_cpu_s`, from
//! `CLOCK_THREAD_CPUTIME_ID`), which leaves out time spent waiting for a CPU.
//!
//! `cargo run --release -p identity-cache --example update_latency -- [--entries 100000]
//! [--compile-runs 3] [--updates 1000] [--barriers 1000] [--memory-entries 1000000]`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use identity_cache::ipcache::IpCacheWriter;
use identity_cache::state::IdentityCache;

#[path = "../benches/support/mod.rs"]
mod support;

use support::{
    Cluster, Order, Packet, Params, SEED, build_from, median, percentile, rss_bytes, status_bytes,
    thread_cpu,
};

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

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// p50 and p99 in microseconds.
fn p50_p99(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    (
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries = arg(&args, "--entries", 100_000);
    let compile_runs = arg(&args, "--compile-runs", 3).max(1);
    let updates = arg(&args, "--updates", 1_000).max(1);
    let barriers = arg(&args, "--barriers", 1_000).max(1);
    let memory_entries = arg(&args, "--memory-entries", 1_000_000);

    // First, while the heap is fresh, so that the RSS growth is the ipcache's own.
    let memory = memory(memory_entries);

    let cluster = Cluster::generate(Params::with_entries(entries));
    let inputs = cluster.inputs();

    // Full compile, both orders, inputs prebuilt (cloned outside the timing): wall and
    // on-CPU seconds.
    let compile = |order: Order| {
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..compile_runs {
            let inputs = inputs.clone();
            let c = thread_cpu();
            let t = Instant::now();
            let cache = build_from(inputs, order);
            wall.push(t.elapsed().as_secs_f64());
            if let (Some(c0), Some(c1)) = (c, thread_cpu()) {
                cpu.push((c1 - c0).as_secs_f64());
            }
            drop(cache);
        }
        eprintln!("compile {order:?}: wall {wall:.3?} s, on-CPU {cpu:.3?} s");
        (median(&mut wall), median(&mut cpu))
    };
    let (compile_pf, compile_pf_cpu) = compile(Order::PoliciesFirst);
    let (compile_wf, compile_wf_cpu) = compile(Order::WorkloadsFirst);
    let mut cache = build_from(inputs, Order::PoliciesFirst);
    let pending = cache.pending();
    eprintln!(
        "state: ipcache {} entries, identities {}, policies {}, policy pairs {}, local endpoints {}",
        pending.ipcache.len(),
        cache.registry().len(),
        cluster.policies.len(),
        pending.policy.pairs.len(),
        pending.endpoints.len(),
    );
    let identities = cache.registry().len();
    let mut json = Json::default();
    json.num("entries", pending.ipcache.len() as f64, 0);
    json.num("identities", identities as f64, 0);
    json.num("policies", cluster.policies.len() as f64, 0);
    json.num("policy_pairs", pending.policy.pairs.len() as f64, 0);
    drop(pending);
    json.num("compile_policies_first_s", compile_pf, 3);
    json.num("compile_workloads_first_s", compile_wf, 3);
    json.num("compile_policies_first_cpu_s", compile_pf_cpu, 3);
    json.num("compile_workloads_first_cpu_s", compile_wf_cpu, 3);

    // Incremental pod add / remove, each with its publish.
    let replica = updates_of(&mut cache, updates, "replica", |n| {
        cluster.extra_pod(n, n * 7919 % cluster.pods)
    });
    let new_identity = updates_of(&mut cache, updates, "new identity", |n| {
        cluster.extra_pod_new_identity(n, n * 7919 % cluster.pods)
    });
    assert_eq!(
        cache.registry().len(),
        identities,
        "the state is back where it was"
    );
    for (prefix, samples) in [
        ("pod_add", replica.add),
        ("pod_remove", replica.remove),
        ("pod_add_new_identity", new_identity.add),
        ("pod_remove_last_of_identity", new_identity.remove),
    ] {
        json.percentiles(prefix, samples);
    }

    let packets = cluster.packets(1 << 16, SEED ^ 3);
    json.percentiles(
        "barrier_2_readers",
        barrier(&mut cache, &packets, 2, barriers),
    );
    json.percentiles(
        "barrier_1_reader",
        barrier(&mut cache, &packets, 1, barriers),
    );
    // More busy readers than this machine has CPUs, with the publisher on top.
    json.percentiles(
        "barrier_3_readers",
        barrier(&mut cache, &packets, 3, barriers),
    );
    drop(cache);

    json.num("ipcache_memory_entries", memory.entries as f64, 0);
    json.num("ipcache_snapshot_bytes", memory.snapshot_bytes as f64, 0);
    json.num("ipcache_writer_bytes", memory.writer_bytes as f64, 0);
    json.num(
        "ipcache_rss_delta_bytes",
        memory.rss_delta.map_or(f64::NAN, |b| b as f64),
        0,
    );
    for (key, value) in [
        ("process_rss_before_bytes", memory.process_before),
        ("ipcache_process_rss_bytes", memory.process_rss),
        ("ipcache_process_peak_bytes", memory.process_peak),
    ] {
        json.num(key, value.map_or(f64::NAN, |b| b as f64), 0);
    }
    println!("{}", json.finish());
}

/// A flat JSON object of numbers, in insertion order.
#[derive(Default)]
struct Json {
    fields: Vec<String>,
}

impl Json {
    /// Adds a number with `decimals` decimals (`null` when not finite).
    fn num(&mut self, key: &str, value: f64, decimals: usize) {
        let value = if value.is_finite() {
            format!("{value:.decimals$}")
        } else {
            "null".to_owned()
        };
        self.fields.push(format!("\"{key}\":{value}"));
    }

    /// Adds `<prefix>_p50_us` and `<prefix>_p99_us`.
    fn percentiles(&mut self, prefix: &str, samples: Vec<Duration>) {
        let (p50, p99) = p50_p99(samples);
        self.num(&format!("{prefix}_p50_us"), p50, 1);
        self.num(&format!("{prefix}_p99_us"), p99, 1);
    }

    fn finish(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

/// Wall-clock latencies of pod adds and removes, each including its publish.
struct Updates {
    add: Vec<Duration>,
    remove: Vec<Duration>,
}

/// Adds and removes `updates` pods made by `make`, one at a time, each followed by
/// `publish()`. The share of the publish goes to stderr.
fn updates_of(
    cache: &mut IdentityCache,
    updates: usize,
    what: &str,
    make: impl Fn(usize) -> identity_cache::state::Workload,
) -> Updates {
    let mut out = Updates {
        add: Vec::with_capacity(updates),
        remove: Vec::with_capacity(updates),
    };
    let mut publish = [Vec::with_capacity(updates), Vec::with_capacity(updates)];
    for n in 0..updates {
        let w = make(n);
        let uid = w.uid.clone();
        let t = Instant::now();
        cache.upsert_workload(w).expect("pod add");
        let p = Instant::now();
        cache.publish();
        publish[0].push(p.elapsed());
        out.add.push(t.elapsed());
        let t = Instant::now();
        assert!(cache.remove_workload(&uid));
        let p = Instant::now();
        cache.publish();
        publish[1].push(p.elapsed());
        out.remove.push(t.elapsed());
    }
    for (name, total, publish) in [
        ("add", &out.add, &publish[0]),
        ("remove", &out.remove, &publish[1]),
    ] {
        let (t50, t99) = p50_p99(total.clone());
        let (p50, p99) = p50_p99(publish.clone());
        eprintln!(
            "{what} {name}: p50 {t50:.1} µs p99 {t99:.1} µs, of which publish() p50 {p50:.1} µs p99 {p99:.1} µs"
        );
    }
    out
}

/// Barrier latencies: `publish()` then `wait_for_readers`, with `readers` threads looping on
/// `begin_batch()` + one classify. The publish is outside the timing; a new generation is
/// published each time (the same pending state).
fn barrier(
    cache: &mut IdentityCache,
    packets: &[Packet],
    readers: usize,
    barriers: usize,
) -> Vec<Duration> {
    let stop = AtomicBool::new(false);
    let batches = AtomicU64::new(0);
    let mut samples = Vec::with_capacity(barriers);
    thread::scope(|s| {
        for r in 0..readers {
            let mut reader = cache.reader(&format!("worker-{r}"));
            let (stop, batches) = (&stop, &batches);
            s.spawn(move || {
                let mut i = r * 997;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = reader.begin_batch();
                    let p = &packets[i % packets.len()];
                    black_box(snapshot.classify(p.src, p.dst, p.protocol, p.port));
                    i += 1;
                    n += 1;
                }
                batches.fetch_add(n, Ordering::Relaxed);
            });
        }
        // Let the readers start.
        thread::sleep(Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..barriers {
            let generation = cache.publish();
            let t = Instant::now();
            cache
                .wait_for_readers(generation, Duration::from_secs(5))
                .expect("busy readers reach every generation");
            samples.push(t.elapsed());
            if Instant::now() > deadline {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "barrier with {readers} reader(s): {} barriers, {} reader batches",
        samples.len(),
        batches.load(Ordering::Relaxed)
    );
    samples
}

struct Memory {
    entries: usize,
    snapshot_bytes: usize,
    writer_bytes: usize,
    rss_delta: Option<usize>,
    process_before: Option<usize>,
    process_rss: Option<usize>,
    process_peak: Option<usize>,
}

/// Fills a standalone ipcache writer with the pods' and nodes' entries of a cluster of
/// `entries` entries (the same owners as the state's ipcache).
fn memory(entries: usize) -> Memory {
    let mut cluster = Cluster::generate(Params {
        policies: 0,
        ..Params::with_entries(entries)
    });
    // The owners need only the label sets' namespaces and names: free the label sets
    // themselves (10,000 of them, most of the generator's memory), so that the process holds
    // little besides the ipcache when its size is read.
    for choice in &mut cluster.label_sets {
        choice.labels = identity_cache::labels::LabelSet::default();
    }
    let process_before = status_bytes("VmRSS");
    let before = rss_bytes();
    let mut writer = IpCacheWriter::new();
    for k in 0..cluster.nodes {
        for (prefix, identity, owner) in cluster.node_entries(k) {
            writer.upsert(prefix, identity, owner).expect("node entry");
        }
    }
    for pod in 0..cluster.pods {
        let w = cluster.workload(pod);
        let owner = identity_cache::ipcache::Owner {
            source: w.source,
            uid: w.uid,
            namespace: w.namespace,
            name: w.name,
        };
        // The identity only has to be a derived one; the memory does not depend on it.
        let identity = identity_cache::identity::Identity(
            identity_cache::identity::Identity::FIRST_DERIVED + (pod % 10_000) as u64,
        );
        for ip in w.ips {
            writer
                .upsert(ipnet::IpNet::from(ip), identity, &owner)
                .expect("pod entry");
        }
    }
    let after = rss_bytes();
    let snapshot = writer.snapshot();
    eprintln!("ipcache memory: {snapshot:?}");
    let memory = Memory {
        entries: snapshot.len(),
        snapshot_bytes: snapshot.memory_bytes(),
        writer_bytes: writer.memory_bytes(),
        rss_delta: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        process_before,
        process_rss: status_bytes("VmRSS"),
        process_peak: status_bytes("VmHWM"),
    };
    drop(snapshot);

    // The ipcache's share of a pod update at this size: a new owner's two entries, then a
    // snapshot (as `publish()` takes one); then their removal and a snapshot. The previous
    // snapshot is dropped inside the timing, as a publish does.
    let mut published = Some(writer.snapshot());
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for n in 0..1_000u32 {
        let owner = identity_cache::ipcache::Owner::new(
            identity_cache::ipcache::Source::ApiServer,
            format!("extra-{n}"),
            "ns",
            format!("extra-{n}"),
        );
        let id =
            identity_cache::identity::Identity(identity_cache::identity::Identity::FIRST_DERIVED);
        let v4 = std::net::Ipv4Addr::from(0x0b00_0000 + n);
        let v6 = std::net::Ipv6Addr::from((0xfd00_0011_u128 << 96) + u128::from(n));
        let t = Instant::now();
        for ip in [std::net::IpAddr::V4(v4), std::net::IpAddr::V6(v6)] {
            writer
                .upsert(ipnet::IpNet::from(ip), id, &owner)
                .expect("extra entry");
        }
        drop(published.replace(writer.snapshot()));
        add.push(t.elapsed());
        let t = Instant::now();
        writer.remove_owner(&owner.uid);
        drop(published.replace(writer.snapshot()));
        remove.push(t.elapsed());
    }
    drop(published);
    let (a50, a99) = p50_p99(add);
    let (r50, r99) = p50_p99(remove);
    eprintln!(
        "ipcache alone at {} entries: 2 upserts + snapshot p50 {a50:.1} µs p99 {a99:.1} µs; remove_owner + snapshot p50 {r50:.1} µs p99 {r99:.1} µs",
        memory.entries
    );
    memory
}
