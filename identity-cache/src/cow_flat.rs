//! A flat open-addressing hash table split into copy-on-write shards: the storage of the
//! ipcache, where a lookup on a 1,000,000-entry table must cost one cache miss, not two.
//!
//! Compared with the `hashbrown` tables behind [`crate::cow_map::ShardedMap`]:
//!
//! - each entry is one packed record (key and value together, 17 bytes for an IPv4 prefix),
//!   with no separate control bytes: a hit is usually one cache line, found at a position the
//!   caller can compute in advance and [`prefetch`](CowFlat::prefetch);
//! - a shard's capacity is any number, not a power of two (the position is a multiply-shift of
//!   the hash), so the load stays between [`MIN_LOAD`] and [`MAX_LOAD`] percent whatever the
//!   size, instead of falling to 44 % after a doubling.
//!
//! Collisions are resolved by linear probing, and removal shifts the following entries back
//! (no tombstones), so a lookup ends at the first empty slot. Readers share the shards with
//! the writer; a mutation clones only the shard it touches when a published snapshot still
//! holds it, as in `ShardedMap`.

use std::sync::Arc;

/// Shards per table (the top bits of the hash pick one) once it holds [`SPLIT_AT`] entries;
/// below [`MERGE_AT`] it is one shard, so that a small table is one compact array.
pub(crate) const FLAT_SHARDS: usize = 256;
const SHARD_BITS: u32 = FLAT_SHARDS.trailing_zeros();
/// A one-shard table splits into [`FLAT_SHARDS`] shards when it reaches this many entries…
const SPLIT_AT: usize = 2048;
/// …and a split table merges back into one shard below this many.
const MERGE_AT: usize = 1024;
/// A shard grows when an insert would take it above this load (percent)…
pub(crate) const MAX_LOAD: usize = 85;
/// …to this load (percent).
const GROW_TO: usize = 62;
/// A shard shrinks when a removal takes it below this load (percent).
pub(crate) const MIN_LOAD: usize = 25;
/// The smallest non-empty shard.
const MIN_CAPACITY: usize = 8;

/// A record stored in a [`CowFlat`]: a key, its value, and an empty marker.
pub(crate) trait FlatEntry: Copy {
    /// What the table is looked up by.
    type Key: Copy;
    /// The empty slot.
    const EMPTY: Self;
    /// Whether this is the empty slot.
    fn is_empty(&self) -> bool;
    /// Whether this (non-empty) entry has `key`.
    fn has_key(&self, key: &Self::Key) -> bool;
    /// The entry's key.
    fn key(&self) -> Self::Key;
    /// A well-mixed 64-bit hash: its top bits pick the shard, the rest the position.
    fn hash(key: &Self::Key) -> u64;
}

/// The slots of a shard holding `entries` (distinct keys) at [`GROW_TO`] load, in a table
/// whose shard index takes `bits` bits of the hash.
fn build<E: FlatEntry>(entries: impl Iterator<Item = E>, len: usize, bits: u32) -> Arc<[E]> {
    if len == 0 {
        return Arc::new([]);
    }
    let capacity = (len * 100).div_ceil(GROW_TO).max(MIN_CAPACITY);
    let mut slots = vec![E::EMPTY; capacity];
    for e in entries {
        let (_, rest) = split(E::hash(&e.key()), bits);
        let mut i = home(rest, capacity);
        while !slots[i].is_empty() {
            i = next(i, capacity);
        }
        slots[i] = e;
    }
    slots.into()
}

fn live<E: FlatEntry>(slots: &[E]) -> impl Iterator<Item = E> + '_ {
    slots.iter().filter(|e| !e.is_empty()).copied()
}

/// The slot holding `key`, or the empty slot where it would go; `Err(None)` when there are
/// no slots.
#[inline]
fn find<E: FlatEntry>(slots: &[E], key: &E::Key, rest: u64) -> Result<usize, Option<usize>> {
    let capacity = slots.len();
    if capacity == 0 {
        return Err(None);
    }
    let mut i = home(rest, capacity);
    loop {
        let e = &slots[i];
        if e.is_empty() {
            return Err(Some(i));
        }
        if e.has_key(key) {
            return Ok(i);
        }
        i = next(i, capacity);
    }
}

/// Empties slot `hole` and shifts back the entries after it that may move closer to their
/// home, so that no lookup meets an empty slot before its key.
fn remove_at<E: FlatEntry>(slots: &mut [E], mut hole: usize, bits: u32) {
    let capacity = slots.len();
    slots[hole] = E::EMPTY;
    let mut i = next(hole, capacity);
    while !slots[i].is_empty() {
        let (_, rest) = split(E::hash(&slots[i].key()), bits);
        let home = home(rest, capacity);
        // Distance from home to the entry, and from home to the hole, cyclically: the entry
        // may fill the hole when the hole lies between its home and itself.
        let to_entry = (i + capacity - home) % capacity;
        let to_hole = (hole + capacity - home) % capacity;
        if to_hole < to_entry {
            slots[hole] = slots[i];
            slots[i] = E::EMPTY;
            hole = i;
        }
        i = next(i, capacity);
    }
}

/// The slots of a shard, writable: copied first if a snapshot still shares them.
fn unshare<E: FlatEntry>(slots: &mut Arc<[E]>) -> &mut [E] {
    if Arc::get_mut(slots).is_none() {
        *slots = Arc::from(&slots[..]);
    }
    Arc::get_mut(slots).unwrap_or(&mut [])
}

/// (shard index from the top `bits` bits, the remaining hash bits, left-aligned).
#[inline]
fn split(hash: u64, bits: u32) -> (usize, u64) {
    // Two shifts so that `bits == 0` (one shard) needs no special case.
    (((hash >> 1) >> (63 - bits)) as usize, hash << bits)
}

/// The first slot to probe for a hash in a shard of `capacity` slots.
#[inline]
fn home(rest: u64, capacity: usize) -> usize {
    ((u128::from(rest) * capacity as u128) >> 64) as usize
}

#[inline]
fn next(i: usize, capacity: usize) -> usize {
    if i + 1 == capacity { 0 } else { i + 1 }
}

/// A hash table of copy-on-write shards of packed entries: one shard while small,
/// [`FLAT_SHARDS`] once large. Cloning it clones that many `Arc`s, never an entry.
///
/// The top-level array holds each shard's slots directly (`Arc<[E]>`: pointer and length), so
/// a lookup reads that array, then the slot: two dependent loads.
#[derive(Clone)]
pub(crate) struct CowFlat<E> {
    shards: Box<[Arc<[E]>]>,
    /// Entries per shard.
    lens: Box<[u32]>,
    /// Bits of the hash that pick the shard: 0 (one shard) or [`SHARD_BITS`].
    bits: u32,
    len: usize,
}

impl<E: FlatEntry> Default for CowFlat<E> {
    fn default() -> Self {
        CowFlat {
            shards: Box::new([Arc::new([])]),
            lens: Box::new([0]),
            bits: 0,
            len: 0,
        }
    }
}

impl<E: FlatEntry> CowFlat<E> {
    /// Redistributes every entry (plus `extra`) over `2^bits` shards: how a table moves
    /// between one shard and [`FLAT_SHARDS`] (at most [`SPLIT_AT`] entries are moved).
    fn reshard(&mut self, bits: u32, extra: Option<E>, drop: Option<&E::Key>) {
        let mut groups: Vec<Vec<E>> = vec![Vec::new(); 1 << bits];
        let entries = self
            .iter()
            .filter(|e| drop.is_none_or(|k| !e.has_key(k)))
            .chain(extra);
        for e in entries {
            groups[split(E::hash(&e.key()), bits).0].push(e);
        }
        self.len = groups.iter().map(Vec::len).sum();
        self.lens = groups.iter().map(|g| g.len() as u32).collect();
        self.shards = groups
            .into_iter()
            .map(|g| {
                let n = g.len();
                build(g.into_iter(), n, bits)
            })
            .collect();
        self.bits = bits;
    }

    /// The entry with `key`.
    #[inline]
    pub(crate) fn get(&self, key: &E::Key) -> Option<&E> {
        let (s, rest) = split(E::hash(key), self.bits);
        let slots = &self.shards[s];
        find(slots, key, rest).ok().map(|i| &slots[i])
    }

    /// Asks the CPU to start loading the slot where a lookup of `key` begins (a batch of
    /// lookups issues these first, so that their cache misses overlap).
    #[inline]
    pub(crate) fn prefetch(&self, key: &E::Key) {
        let (s, rest) = split(E::hash(key), self.bits);
        let slots = &self.shards[s];
        if let Some(slot) = slots.get(home(rest, slots.len())) {
            prefetch(slot);
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Inserts or replaces the entry with `entry`'s key; returns the one replaced.
    pub(crate) fn insert(&mut self, entry: E) -> Option<E> {
        let key = entry.key();
        let bits = self.bits;
        let (s, rest) = split(E::hash(&key), bits);
        let slots = &mut self.shards[s];
        let at = match find(slots, &key, rest) {
            Ok(i) => return Some(std::mem::replace(&mut unshare(slots)[i], entry)),
            Err(at) => at,
        };
        if bits == 0 && self.len + 1 >= SPLIT_AT {
            self.reshard(SHARD_BITS, Some(entry), None);
            return None;
        }
        let needed = self.lens[s] as usize + 1;
        match at {
            Some(i) if needed * 100 <= slots.len() * MAX_LOAD => unshare(slots)[i] = entry,
            // Rehash straight from the (possibly shared) old slots: no copy-then-grow.
            _ => *slots = build(live(slots).chain(std::iter::once(entry)), needed, bits),
        }
        self.lens[s] += 1;
        self.len += 1;
        None
    }

    /// Removes the entry with `key`; a missing key leaves every shard shared.
    pub(crate) fn remove(&mut self, key: &E::Key) -> Option<E> {
        let bits = self.bits;
        let (s, rest) = split(E::hash(key), bits);
        let slots = &mut self.shards[s];
        let Ok(i) = find(slots, key, rest) else {
            return None;
        };
        let old = slots[i];
        if bits != 0 && self.len - 1 < MERGE_AT {
            self.reshard(0, None, Some(key));
            return Some(old);
        }
        let remaining = self.lens[s] as usize - 1;
        if remaining * 100 < slots.len() * MIN_LOAD && slots.len() > MIN_CAPACITY {
            let keep = live(slots).filter(|e| !e.has_key(key));
            *slots = build(keep, remaining, bits);
        } else {
            remove_at(unshare(slots), i, bits);
        }
        self.lens[s] -= 1;
        self.len -= 1;
        Some(old)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = E> + '_ {
        self.shards.iter().flat_map(|s| live(s))
    }

    /// Heap bytes of the slots (at capacity) and the shard records.
    pub(crate) fn memory_bytes(&self) -> usize {
        let per_shard = size_of::<Arc<[E]>>() + 2 * size_of::<usize>() + size_of::<u32>();
        self.shards
            .iter()
            .map(|s| s.len() * size_of::<E>() + per_shard)
            .sum()
    }

    /// The load of the fullest and emptiest non-empty shards, in percent (for tests).
    #[cfg(test)]
    pub(crate) fn load_range(&self) -> (usize, usize) {
        let (mut lo, mut hi) = (100, 0);
        for (slots, len) in self.shards.iter().zip(self.lens.iter()) {
            if *len > 0 {
                let load = *len as usize * 100 / slots.len();
                lo = lo.min(load);
                hi = hi.max(load);
            }
        }
        (lo, hi)
    }
}

/// Starts loading the cache line of `value` (a hint; it never faults).
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache and cannot fault; SSE is part of the
    // x86_64 baseline every target of this crate has.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct E {
        key: u32,
        value: u32,
    }

    impl FlatEntry for E {
        type Key = u32;
        const EMPTY: Self = E {
            key: u32::MAX,
            value: 0,
        };
        fn is_empty(&self) -> bool {
            self.key == u32::MAX
        }
        fn has_key(&self, key: &u32) -> bool {
            self.key == *key
        }
        fn key(&self) -> u32 {
            self.key
        }
        fn hash(key: &u32) -> u64 {
            // A deliberately poor hash for small keys, so that probe runs are long and wrap.
            u64::from(*key % 7).wrapping_mul(0x9e37_79b9_7f4a_7c15) | u64::from(*key & 1) << 63
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_map_and_old_clones_keep_their_view(
            ops in proptest::collection::vec((0u32..300, any::<bool>(), any::<u32>()), 1..400),
        ) {
            let mut t: CowFlat<E> = CowFlat::default();
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            let mut frozen: Vec<(CowFlat<E>, BTreeMap<u32, u32>)> = Vec::new();
            for (n, (key, insert, value)) in ops.into_iter().enumerate() {
                if insert {
                    let old = t.insert(E { key, value }).map(|e| e.value);
                    prop_assert_eq!(old, model.insert(key, value));
                } else {
                    let old = t.remove(&key).map(|e| e.value);
                    prop_assert_eq!(old, model.remove(&key));
                }
                prop_assert_eq!(t.len(), model.len());
                if n % 37 == 0 {
                    frozen.push((t.clone(), model.clone()));
                }
            }
            frozen.push((t, model));
            for (table, model) in frozen {
                for key in 0..300 {
                    prop_assert_eq!(table.get(&key).map(|e| e.value), model.get(&key).copied());
                }
                let mut all: Vec<(u32, u32)> = table.iter().map(|e| (e.key, e.value)).collect();
                all.sort();
                prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
            }
        }
    }

    /// A bare u64 key (0 is the empty slot).
    #[derive(Clone, Copy)]
    struct K(u64);
    impl FlatEntry for K {
        type Key = u64;
        const EMPTY: Self = K(0);
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
        fn has_key(&self, key: &u64) -> bool {
            self.0 == *key
        }
        fn key(&self) -> u64 {
            self.0
        }
        fn hash(key: &u64) -> u64 {
            crate::cow_map::mix64(*key)
        }
    }

    #[test]
    fn load_stays_within_bounds_while_growing_and_shrinking() {
        let mut t: CowFlat<K> = CowFlat::default();
        for k in 1..=200_000u64 {
            t.insert(K(k));
        }
        let (lo, hi) = t.load_range();
        assert!(lo >= 40 && hi <= MAX_LOAD, "loads {lo}..{hi} %");
        for k in 1..=190_000u64 {
            assert!(t.remove(&k).is_some());
        }
        let (lo, hi) = t.load_range();
        assert!(lo >= MIN_LOAD - 1 && hi <= MAX_LOAD, "loads {lo}..{hi} %");
        assert_eq!(t.len(), 10_000);
        assert!((190_001..=200_000u64).all(|k| t.get(&k).is_some()));
    }

    #[test]
    fn small_tables_are_one_shard_and_split_and_merge_at_the_thresholds() {
        let mut t: CowFlat<K> = CowFlat::default();
        let present = |t: &CowFlat<K>, lo: u64, hi: u64| {
            (1..=4000u64).all(|k| t.get(&k).is_some() == (lo..=hi).contains(&k))
        };
        for round in 0..2 {
            for k in 1..SPLIT_AT as u64 {
                t.insert(K(k));
            }
            assert_eq!((t.bits, t.shards.len()), (0, 1), "round {round}");
            let one_shard = t.clone();
            t.insert(K(SPLIT_AT as u64));
            assert_eq!((t.bits, t.shards.len()), (SHARD_BITS, FLAT_SHARDS));
            assert!(present(&t, 1, SPLIT_AT as u64));
            assert!(
                present(&one_shard, 1, SPLIT_AT as u64 - 1),
                "clones keep their view"
            );
            for k in 1..=(SPLIT_AT - MERGE_AT) as u64 {
                assert!(t.remove(&k).is_some());
            }
            assert_eq!(t.len(), MERGE_AT);
            assert_eq!(t.bits, SHARD_BITS);
            assert!(t.remove(&4000).is_none(), "a missing key changes nothing");
            let last = (SPLIT_AT - MERGE_AT + 1) as u64;
            assert!(t.remove(&last).is_some());
            assert_eq!((t.bits, t.len()), (0, MERGE_AT - 1));
            assert!(present(&t, last + 1, SPLIT_AT as u64));
            for k in last + 1..=SPLIT_AT as u64 {
                assert!(t.remove(&k).is_some());
            }
            assert_eq!(t.len(), 0);
        }
    }
}
