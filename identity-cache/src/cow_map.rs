//! A hash map split into copy-on-write shards, the storage behind the policy tables a worker
//! reads (the ipcache uses a flat variant, `cow_flat`).
//!
//! Readers hold an `Arc` of a whole snapshot and look entries up without any lock. The writer
//! owns a [`ShardedMap`] too (the next snapshot's), and a mutation clones only the one shard it
//! touches when that shard is still shared with a published snapshot, so an update costs
//! `O(len / SHARDS)` instead of `O(len)` and readers never see a half-applied change.
//!
//! The key computes one well-mixed hash ([`ShardKey::shard_hash`]); its top bits pick the
//! shard and the rest serve the shard's `hashbrown` table, so a lookup hashes once.

use std::sync::Arc;

use hashbrown::HashTable;

/// Number of shards of a large map; a power of two so the shard index is a shift. A map
/// below [`MERGE_AT`] entries is one shard (see [`ShardedMap`]).
pub const SHARDS: usize = 256;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// A one-shard map splits into [`SHARDS`] shards when it reaches this many entries…
pub const SPLIT_AT: usize = 2048;
/// …and a split map merges back into one shard below this many.
pub const MERGE_AT: usize = 1024;

/// Keys stored in a [`ShardedMap`] hash themselves.
pub trait ShardKey: Eq + Clone {
    /// A well-mixed 64-bit hash of the key: every bit must depend on the whole key (the top
    /// bits pick the shard, the others the slot inside it).
    fn shard_hash(&self) -> u64;
}

/// One copy-on-write shard.
type Shard<K, V> = Arc<HashTable<(K, V)>>;

/// A hash map of copy-on-write shards: one while it is small (a compact table that stays in
/// the CPU's caches), [`SHARDS`] once it holds [`SPLIT_AT`] entries (so that a change copies a
/// 256th of it). Moving between the two rebuilds at most [`SPLIT_AT`] entries. Cloning the map
/// clones one `Arc` per shard.
#[derive(Clone)]
pub struct ShardedMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// Bits of the hash that pick the shard: 0 (one shard) or `SHARD_BITS`.
    bits: u32,
    len: usize,
}

impl<K: ShardKey, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// (shard index from the top `bits` bits, the hash the shard's table uses).
#[inline]
fn split(hash: u64, bits: u32) -> (usize, u64) {
    // The table takes its slot from the low bits and its tag from the top seven: rotate so that
    // neither is the shard index, which is the same for every key of the shard. Two shifts so
    // that `bits == 0` needs no special case.
    (((hash >> 1) >> (63 - bits)) as usize, hash.rotate_left(32))
}

impl<K: ShardKey, V: Clone> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            shards: Box::new([Arc::new(HashTable::new())]),
            bits: 0,
            len: 0,
        }
    }

    fn rehash(entry: &(K, V)) -> u64 {
        split(entry.0.shard_hash(), 0).1
    }

    /// Redistributes every entry over `2^bits` shards.
    fn reshard(&mut self, bits: u32) {
        let mut shards: Vec<HashTable<(K, V)>> =
            (0..1usize << bits).map(|_| HashTable::new()).collect();
        for (k, v) in self.iter() {
            let (s, hash) = split(k.shard_hash(), bits);
            shards[s].insert_unique(hash, (k.clone(), v.clone()), Self::rehash);
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
        self.bits = bits;
    }

    /// Splits or merges the shards after the length changed.
    fn rebalance(&mut self) {
        if self.bits == 0 && self.len >= SPLIT_AT {
            self.reshard(SHARD_BITS);
        } else if self.bits != 0 && self.len < MERGE_AT {
            self.reshard(0);
        }
    }

    /// The value stored for `key`.
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        let (s, hash) = split(key.shard_hash(), self.bits);
        self.shards[s].find(hash, |e| e.0 == *key).map(|e| &e.1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts or replaces the value for `key`, returning the old one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let (s, hash) = split(key.shard_hash(), self.bits);
        let shard = Arc::make_mut(&mut self.shards[s]);
        match shard.find_mut(hash, |e| e.0 == key) {
            Some(e) => Some(std::mem::replace(&mut e.1, value)),
            None => {
                shard.insert_unique(hash, (key, value), Self::rehash);
                self.len += 1;
                self.rebalance();
                None
            }
        }
    }

    /// Removes `key`, returning its value. A missing key leaves every shard shared.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains_key(key) {
            return None;
        }
        let (s, hash) = split(key.shard_hash(), self.bits);
        let shard = Arc::make_mut(&mut self.shards[s]);
        let (entry, _) = shard.find_entry(hash, |e| e.0 == *key).ok()?.remove();
        self.len -= 1;
        self.rebalance();
        Some(entry.1)
    }

    /// A mutable reference to the value for `key`, cloning its shard if it is shared.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if !self.contains_key(key) {
            return None;
        }
        let (s, hash) = split(key.shard_hash(), self.bits);
        Arc::make_mut(&mut self.shards[s])
            .find_mut(hash, |e| e.0 == *key)
            .map(|e| &mut e.1)
    }

    /// The value for `key`, inserting `make()` first if absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if self.bits == 0 && self.len + 1 >= SPLIT_AT && !self.contains_key(&key) {
            // Split first, so that the new entry lands in its final shard.
            self.reshard(SHARD_BITS);
        }
        let (s, hash) = split(key.shard_hash(), self.bits);
        let shard = Arc::make_mut(&mut self.shards[s]);
        let entry = shard.entry(hash, |e| e.0 == key, Self::rehash);
        let inserted = matches!(entry, hashbrown::hash_table::Entry::Vacant(_));
        let value = &mut entry.or_insert_with(|| (key, make())).into_mut().1;
        if inserted {
            self.len += 1;
        }
        value
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|e| (&e.0, &e.1)))
    }

    /// Keeps only the entries for which `keep` returns true, cloning only shards that change.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in self.shards.iter_mut() {
            if shard.iter().all(|(k, v)| keep(k, v)) {
                continue;
            }
            let shard = Arc::make_mut(shard);
            let before = shard.len();
            shard.retain(|e| keep(&e.0, &e.1));
            self.len -= before - shard.len();
        }
        self.rebalance();
    }

    /// Approximate heap bytes held by the tables (buckets and control bytes), not counting
    /// what values own on the heap themselves.
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.capacity() * (std::mem::size_of::<(K, V)>() + 1))
            .sum()
    }
}

/// Mixes a 64-bit value into a well-distributed hash (the murmur3 finaliser).
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl ShardKey for u64 {
        fn shard_hash(&self) -> u64 {
            mix64(*self)
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_map_and_clones_are_unaffected(
            ops in proptest::collection::vec((0u64..200, 0u8..4, any::<u32>()), 1..300),
            bulk in 0u64..3000,
        ) {
            let mut map: ShardedMap<u64, u32> = ShardedMap::new();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let mut frozen = Vec::new();
            // Enough keys beyond the probed ones to cross the split and merge thresholds.
            for k in 1000..1000 + bulk {
                map.insert(k, 1);
                model.insert(k, 1);
            }
            for (n, (key, op, value)) in ops.into_iter().enumerate() {
                if n == 150 {
                    for k in 1000..1000 + bulk {
                        prop_assert_eq!(map.remove(&k), model.remove(&k));
                    }
                }
                match op {
                    0 => prop_assert_eq!(map.insert(key, value), model.insert(key, value)),
                    1 => prop_assert_eq!(map.remove(&key), model.remove(&key)),
                    2 => {
                        if let Some(v) = map.get_mut(&key) {
                            *v = value;
                        }
                        if let Some(v) = model.get_mut(&key) {
                            *v = value;
                        }
                    }
                    _ => {
                        *map.get_or_insert_with(key, || value) += 1;
                        *model.entry(key).or_insert(value) += 1;
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                if n % 29 == 0 {
                    frozen.push((map.clone(), model.clone()));
                }
            }
            map.retain(|k, _| k % 3 != 0);
            model.retain(|k, _| k % 3 != 0);
            frozen.push((map, model));
            for (map, model) in frozen {
                let mut all: Vec<(u64, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
                all.sort();
                prop_assert_eq!(&all, &model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
                for key in (0..200).chain(1000..4000) {
                    prop_assert_eq!(map.get(&key), model.get(&key));
                }
                prop_assert_eq!(map.shards.len(), if map.bits == 0 { 1 } else { SHARDS });
            }
        }
    }
}
