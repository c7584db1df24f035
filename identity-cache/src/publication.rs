//! Lock-free snapshot publication to workers, with a revocation barrier.
//!
//! The control plane builds the next state (policy tables, ipcache, endpoints) and
//! [`publish`](Publisher::publish)es it; each worker owns a [`Reader`] and decides a whole batch
//! of packets against the one snapshot [`begin_batch`](Reader::begin_batch) hands it. Readers
//! never lock and never see a half-applied update (invariant 4).
//!
//! Every published value is wrapped in a [`Snapshot`] that carries its [`Generation`]. A
//! revocation (an identity removed from the ipcache, a rule withdrawn) is complete only when no
//! worker can still use a snapshot from before it: [`wait_for_readers`](Publisher::wait_for_readers)
//! returns once every registered reader has moved to the given generation or later, or is
//! parked (holds no snapshot), and reports the readers still behind when it times out, so a
//! stalled worker is named rather than waited on forever (invariant 1).
//!
//! # Reader state
//!
//! Each reader has a slot with one atomic word, the generation it may still be using:
//!
//! - `ENTERING` (0): it may be about to load any snapshot, old or new (lower than every
//!   generation, so it always counts as behind);
//! - a generation `g`: it uses, or may use until its next batch, the snapshot of generation `g`;
//! - `PARKED` (`u64::MAX`): it holds no snapshot (higher than every generation, so it never
//!   holds a barrier up).
//!
//! A reader only ever records a generation it has already loaded, so the word never claims
//! more than the truth; the one dangerous step is leaving `PARKED`, which is why the reader
//! first stores `ENTERING` and then loads the pointer (see [`Reader::begin_batch`]).

use std::fmt;
use std::hint::spin_loop;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};

/// The number of a published snapshot; each publish gets a higher one than the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A published value together with its generation. Dereferences to the value.
#[derive(Debug)]
pub struct Snapshot<T> {
    generation: Generation,
    value: T,
}

impl<T> Snapshot<T> {
    /// The generation this value was published as.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The published value.
    pub fn value(&self) -> &T {
        &self.value
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// Why [`Publisher::wait_for_readers`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// Some readers were still behind when the timeout ran out (stalled or very slow workers).
    #[error("readers still behind generation {generation} at the timeout: {lagging:?}")]
    Timeout {
        /// The generation waited for.
        generation: Generation,
        /// The names of the readers still behind.
        lagging: Vec<String>,
    },
    /// The generation waited for has not been published, so no reader could reach it.
    #[error("generation {generation} has not been published (latest is {latest})")]
    NotPublished {
        /// The generation asked for.
        generation: Generation,
        /// The latest published generation.
        latest: Generation,
    },
}

/// A reader may be about to load any snapshot.
const ENTERING: u64 = 0;
/// A reader holds no snapshot.
const PARKED: u64 = u64::MAX;
/// Batches after picking up a new generation in which a reader yields its CPU while a barrier
/// waits: one lets a reader queued behind it run; a few cover several queued readers.
const HELP_YIELDS: u8 = 4;
/// Barrier polls that spin before yielding.
const SPINS: u32 = 128;
/// Barrier polls that yield before sleeping.
const YIELDS: u32 = 32;
/// The sleep between barrier polls after that: short, because a lagging reader is usually a
/// runnable thread waiting for a CPU, and a sleeping barrier frees one.
const SLEEP_POLL: Duration = Duration::from_micros(20);
/// Barrier polls after which a reader is taken to be stalled, and polled more slowly.
const SLOW_AFTER: u32 = 4096;
/// The sleep between barrier polls on the slow path (stalled readers).
const SLOW_POLL: Duration = Duration::from_micros(50);

struct ReaderSlot {
    name: String,
    state: AtomicU64,
}

struct Shared<T> {
    current: Arc<ArcSwap<Snapshot<T>>>,
    /// The latest published generation (stored after the snapshot).
    latest: AtomicU64,
    /// Serialises publishers so generations and snapshots go out in the same order.
    publish_lock: Mutex<()>,
    readers: Mutex<Vec<Arc<ReaderSlot>>>,
    /// Barriers waiting now (see [`Reader::begin_batch`]).
    waiting: AtomicU32,
}

/// Counts a barrier as waiting while it lives.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    // Nothing here leaves the data inconsistent on a panic, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The publishing side: stores snapshots, registers readers, waits for them.
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("generation", &self.generation())
            .field("readers", &self.reader_count())
            .finish()
    }
}

impl<T> Publisher<T> {
    /// A publisher whose first snapshot, `initial`, is generation 1.
    pub fn new(initial: T) -> Self {
        let first = Snapshot {
            generation: Generation(1),
            value: initial,
        };
        Publisher {
            shared: Arc::new(Shared {
                current: Arc::new(ArcSwap::from_pointee(first)),
                latest: AtomicU64::new(1),
                publish_lock: Mutex::new(()),
                readers: Mutex::new(Vec::new()),
                waiting: AtomicU32::new(0),
            }),
        }
    }

    /// Publishes `next` as the current snapshot and returns its generation. Readers pick it
    /// up at their next batch; wait for that with [`wait_for_readers`](Self::wait_for_readers).
    pub fn publish(&self, next: T) -> Generation {
        let _serial = lock(&self.shared.publish_lock);
        let generation = self
            .shared
            .latest
            .load(Ordering::Relaxed)
            .saturating_add(1)
            .min(PARKED - 1);
        self.shared.current.store(Arc::new(Snapshot {
            generation: Generation(generation),
            value: next,
        }));
        // Orders the pointer store before any barrier's reading of reader states (see
        // `Reader::begin_batch`); a barrier on another thread is ordered after this fence
        // through `latest`.
        fence(Ordering::SeqCst);
        self.shared.latest.store(generation, Ordering::SeqCst);
        Generation(generation)
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot<T>> {
        self.shared.current.load_full()
    }

    /// The latest published generation.
    pub fn generation(&self) -> Generation {
        Generation(self.shared.latest.load(Ordering::SeqCst))
    }

    /// A new reader, named for reports. It counts as behind every generation until its first
    /// [`begin_batch`](Reader::begin_batch) or [`park`](Reader::park).
    pub fn register_reader(&self, name: &str) -> Reader<T> {
        let slot = Arc::new(ReaderSlot {
            name: name.to_owned(),
            state: AtomicU64::new(ENTERING),
        });
        lock(&self.shared.readers).push(Arc::clone(&slot));
        Reader {
            shared: Arc::clone(&self.shared),
            slot,
            cache: None,
            recorded: ENTERING,
            help_left: 0,
        }
    }

    /// Number of registered readers.
    pub fn reader_count(&self) -> usize {
        lock(&self.shared.readers).len()
    }

    /// The names of the readers that may still use a snapshot older than `generation`.
    pub fn lagging(&self, generation: Generation) -> Vec<String> {
        fence(Ordering::SeqCst);
        lock(&self.shared.readers)
            .iter()
            .filter(|r| r.state.load(Ordering::SeqCst) < generation.0)
            .map(|r| r.name.clone())
            .collect()
    }

    /// Waits until every registered reader is past `generation` (uses a snapshot of that
    /// generation or later, or is parked), at most `timeout`.
    ///
    /// Spins briefly (a running reader moves on within one batch), yields a few times, then
    /// polls with short sleeps, and with longer ones once a reader has been behind for
    /// thousands of polls (a stalled worker). A reader that is behind while not running is a
    /// thread waiting for a CPU (more busy threads than CPUs): sleeping frees this thread's
    /// CPU for it, and a reader that picks up the new generation while a barrier waits yields
    /// a few times to let readers queued behind it on its CPU run (see
    /// [`Reader::begin_batch`]).
    /// Without both, such a barrier waited for the scheduler's next tick, 4 ms here.
    pub fn wait_for_readers(
        &self,
        generation: Generation,
        timeout: Duration,
    ) -> Result<(), BarrierError> {
        let latest = self.shared.latest.load(Ordering::SeqCst);
        if generation.0 > latest {
            return Err(BarrierError::NotPublished {
                generation,
                latest: Generation(latest),
            });
        }
        // Pairs with the reader's fence between announcing `ENTERING` and loading.
        fence(Ordering::SeqCst);
        // Readers registered after this point load the pointer after the publish (the mutex
        // orders them), so they cannot hold an older snapshot and need no waiting for.
        let mut pending: Vec<Arc<ReaderSlot>> = lock(&self.shared.readers).clone();
        let _waiting = Waiting::new(&self.shared.waiting);
        let start = Instant::now();
        let mut polls: u32 = 0;
        loop {
            pending.retain(|r| r.state.load(Ordering::SeqCst) < generation.0);
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                let lagging = pending.iter().map(|r| r.name.clone()).collect();
                return Err(BarrierError::Timeout {
                    generation,
                    lagging,
                });
            }
            if polls < SPINS {
                spin_loop();
            } else if polls < SPINS + YIELDS {
                thread::yield_now();
            } else if polls < SLOW_AFTER {
                thread::sleep(SLEEP_POLL);
            } else {
                thread::sleep(SLOW_POLL);
            }
            polls = polls.saturating_add(1);
        }
    }
}

/// A reader's held snapshot, revalidated against the publisher's pointer.
type SnapshotCache<T> = Cache<Arc<ArcSwap<Snapshot<T>>>, Arc<Snapshot<T>>>;

/// One worker's handle on the published snapshots. Dropping it deregisters the worker.
pub struct Reader<T> {
    shared: Arc<Shared<T>>,
    slot: Arc<ReaderSlot>,
    /// The held snapshot, revalidated against the current pointer; `None` while parked.
    cache: Option<SnapshotCache<T>>,
    /// What was last stored in `slot.state`.
    recorded: u64,
    /// Batches left in which this reader yields its CPU to help a waiting barrier (see
    /// [`begin_batch`](Self::begin_batch)).
    help_left: u8,
}

impl<T> fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.slot.name)
            .field("generation", &self.generation())
            .finish()
    }
}

impl<T> Reader<T> {
    /// The snapshot to decide the next batch against; it stays the same until the next call
    /// (or [`park`](Self::park)). When nothing was published since the last batch this is a
    /// relaxed load and a compare, plus a relaxed load of the (rarely written) count of waiting
    /// barriers.
    ///
    /// In its batches after picking up a new generation, while a barrier is waiting, it yields
    /// the CPU (`sched_yield`) before returning, at most four times per generation:
    /// with more busy threads than CPUs, the reader the barrier waits for may be queued behind
    /// this one, and would otherwise wait for the end of this thread's time slice.
    pub fn begin_batch(&mut self) -> &Arc<Snapshot<T>> {
        if self.recorded == PARKED {
            // Leaving the parked state. A concurrent publish + barrier does, in this order:
            //   store(pointer = new); fence(SeqCst); load(our state)
            // and we do:
            //   store(our state = ENTERING); fence(SeqCst); load(pointer)
            // This is the store-buffering (Dekker) pattern: with SeqCst fences between each
            // store and load, at least one side sees the other's store. Either the barrier sees
            // ENTERING (and waits until we record what we loaded), or we load the new pointer.
            // Loading first and announcing afterwards would let the barrier read `PARKED`,
            // return, and leave us deciding packets against the revoked snapshot.
            self.slot.state.store(ENTERING, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            self.recorded = ENTERING;
        }
        // When not leaving `PARKED`, our state already names a generation no newer than
        // anything we can load now (loads of the pointer never go backwards), so it serves
        // as the "entering" mark itself and no store is needed before loading.
        let shared = &self.shared;
        let cache = self
            .cache
            .get_or_insert_with(|| Cache::new(Arc::clone(&shared.current)));
        let snapshot = cache.load();
        let generation = snapshot.generation.0;
        if generation != self.recorded {
            // Recorded only after loading: the state never claims a snapshot we do not hold.
            self.slot.state.store(generation, Ordering::SeqCst);
            self.recorded = generation;
            self.help_left = HELP_YIELDS;
        }
        if self.help_left > 0 && shared.waiting.load(Ordering::Relaxed) != 0 {
            // A barrier waits (it may start a little after the publish), maybe for a reader
            // that is runnable but queued behind this one on the same CPU (more busy threads
            // than CPUs): let it run now rather than at the end of our time slice. At most
            // `HELP_YIELDS` times per publish, also when a barrier waits long for a stalled
            // reader.
            self.help_left -= 1;
            thread::yield_now();
        }
        snapshot
    }

    /// Marks this reader idle (e.g. before blocking in `poll`): drops its snapshot, and no
    /// barrier waits for it until its next [`begin_batch`](Self::begin_batch).
    pub fn park(&mut self) {
        if self.recorded == PARKED {
            return;
        }
        // Release the snapshot first, so a barrier that sees PARKED knows it is gone.
        self.cache = None;
        self.slot.state.store(PARKED, Ordering::SeqCst);
        self.recorded = PARKED;
    }

    /// Whether the reader is parked.
    pub fn is_parked(&self) -> bool {
        self.recorded == PARKED
    }

    /// The generation of the snapshot it holds; `None` when parked or before its first batch.
    pub fn generation(&self) -> Option<Generation> {
        match self.recorded {
            ENTERING | PARKED => None,
            g => Some(Generation(g)),
        }
    }

    /// The name it was registered with.
    pub fn name(&self) -> &str {
        &self.slot.name
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.cache = None;
        self.slot.state.store(PARKED, Ordering::SeqCst);
        lock(&self.shared.readers).retain(|r| !Arc::ptr_eq(r, &self.slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn readers_never_see_a_torn_value() {
        let publisher = Publisher::new((0u64, 0u64));
        let stop = AtomicBool::new(false);
        let deadline = Instant::now() + Duration::from_secs(2);
        thread::scope(|s| {
            for name in ["reader-1", "reader-2"] {
                let mut reader = publisher.register_reader(name);
                let stop = &stop;
                s.spawn(move || {
                    let mut last = 0;
                    let mut batches = 0u32;
                    while !stop.load(Ordering::Relaxed) && batches < 2_000_000 {
                        let snap = reader.begin_batch();
                        let (a, b) = *snap.value();
                        assert_eq!(a, b, "torn value at generation {}", snap.generation());
                        assert!(snap.generation().0 >= last, "generation went backwards");
                        last = snap.generation().0;
                        batches += 1;
                    }
                });
            }
            for n in 1..=20_000u64 {
                if Instant::now() > deadline {
                    break;
                }
                publisher.publish((n, n));
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(
            publisher.reader_count(),
            0,
            "dropping a reader deregisters it"
        );
    }

    #[test]
    fn barrier_returns_only_after_busy_readers_loaded_the_generation() {
        let publisher = Publisher::new(0u64);
        let stop = AtomicBool::new(false);
        // The newest generation whose barrier has returned.
        let barrier_passed = AtomicU64::new(0);
        let batches = AtomicU64::new(0);
        thread::scope(|s| {
            for name in ["worker-a", "worker-b"] {
                let mut reader = publisher.register_reader(name);
                let (stop, barrier_passed, batches) = (&stop, &barrier_passed, &batches);
                s.spawn(move || {
                    let mut count = 0u64;
                    while !stop.load(Ordering::Relaxed) && count < 50_000_000 {
                        let used = reader.begin_batch().generation().0;
                        let passed = barrier_passed.load(Ordering::SeqCst);
                        assert!(
                            used >= passed,
                            "batch used generation {used} after barrier {passed}"
                        );
                        count += 1;
                        batches.fetch_add(1, Ordering::Relaxed);
                        if count.is_multiple_of(64) {
                            thread::yield_now();
                        }
                    }
                });
            }
            for n in 1..=200u64 {
                let generation = publisher.publish(n);
                publisher.wait_for_readers(generation, LONG).unwrap();
                barrier_passed.store(generation.0, Ordering::SeqCst);
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert!(batches.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_reader_mid_batch_on_an_old_snapshot_holds_the_barrier() {
        let publisher = Publisher::new("old");
        let mut reader = publisher.register_reader("worker-0");
        assert_eq!(reader.begin_batch().generation(), Generation(1));
        let g = publisher.publish("new");
        assert_eq!(g, Generation(2));
        let err = publisher
            .wait_for_readers(g, Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(
            err,
            BarrierError::Timeout {
                generation: g,
                lagging: vec!["worker-0".into()]
            }
        );
        assert_eq!(publisher.lagging(g), ["worker-0"]);
        assert_eq!(*reader.begin_batch().value(), "new");
        publisher.wait_for_readers(g, LONG).unwrap();
        assert_eq!(reader.generation(), Some(g));
    }

    #[test]
    fn a_parked_reader_does_not_hold_the_barrier_and_sees_new_snapshots_after() {
        let publisher = Publisher::new(1u32);
        let mut reader = publisher.register_reader("idle");
        reader.begin_batch();
        reader.park();
        assert!(reader.is_parked());
        assert_eq!(reader.generation(), None);
        let g = publisher.publish(2);
        publisher
            .wait_for_readers(g, Duration::from_millis(1))
            .unwrap();
        assert_eq!(*reader.begin_batch().value(), 2);
        assert!(!reader.is_parked());
    }

    #[test]
    fn parked_readers_release_their_snapshot() {
        let publisher = Publisher::new(Arc::new(()));
        let first = publisher.current();
        let mut reader = publisher.register_reader("r");
        reader.begin_batch();
        publisher.publish(Arc::new(()));
        assert_eq!(
            Arc::strong_count(&first),
            2,
            "the test and the reader hold generation 1"
        );
        reader.park();
        assert_eq!(Arc::strong_count(&first), 1);
    }

    #[test]
    fn a_stalled_reader_makes_the_barrier_time_out_naming_it() {
        let publisher = Publisher::new(());
        let _stalled = publisher.register_reader("stalled-worker");
        let mut busy = publisher.register_reader("busy-worker");
        let g = publisher.publish(());
        busy.begin_batch();
        let start = Instant::now();
        let err = publisher
            .wait_for_readers(g, Duration::from_millis(30))
            .unwrap_err();
        assert!(start.elapsed() < LONG);
        assert_eq!(
            err,
            BarrierError::Timeout {
                generation: g,
                lagging: vec!["stalled-worker".into()]
            }
        );
        assert!(err.to_string().contains("stalled-worker"));
        drop(_stalled);
        publisher.wait_for_readers(g, LONG).unwrap();
    }

    #[test]
    fn generations_increase_and_unpublished_ones_are_refused() {
        let publisher = Publisher::new('a');
        assert_eq!(publisher.generation(), Generation(1));
        assert_eq!(publisher.publish('b'), Generation(2));
        assert_eq!(publisher.publish('c'), Generation(3));
        assert_eq!(publisher.current().generation(), Generation(3));
        assert_eq!(*publisher.current().value(), 'c');
        assert_eq!(
            publisher.wait_for_readers(Generation(4), LONG),
            Err(BarrierError::NotPublished {
                generation: Generation(4),
                latest: Generation(3)
            })
        );
        let reader = publisher.register_reader("r");
        assert_eq!(publisher.reader_count(), 1);
        assert_eq!(reader.name(), "r");
        drop(reader);
        assert_eq!(publisher.reader_count(), 0);
    }
}
