//! A hash map split into copy-on-write shards, the storage behind every table a worker reads.
//!
//! Readers hold an `Arc` of a whole snapshot and look entries up without any lock. The writer
//! owns a [`ShardedMap`] too (the next snapshot's), and a mutation clones only the one shard it
//! touches when that shard is still shared with a published snapshot, so an update costs
//! `O(len / SHARDS)` instead of `O(len)` and readers never see a half-applied change.
//!
//! The caller chooses which part of the key picks the shard (see [`ShardKey`]): the policy
//! table shards by *remote* identity, so adding or removing one identity touches one shard.

use std::hash::Hash;
use std::sync::Arc;

use hashbrown::HashMap;

/// Number of shards; a power of two so the shard index is a mask.
pub const SHARDS: usize = 256;

/// Keys stored in a [`ShardedMap`] say which shard they belong to.
pub trait ShardKey: Hash + Eq + Clone {
    /// A well-mixed value whose low bits select the shard.
    fn shard_hash(&self) -> u64;
}

/// A hash map of `SHARDS` copy-on-write shards. Cloning the map clones 256 `Arc`s.
#[derive(Clone)]
pub struct ShardedMap<K, V> {
    shards: Box<[Arc<HashMap<K, V>>]>,
    len: usize,
}

impl<K: ShardKey, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: ShardKey, V: Clone> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect();
        Self { shards, len: 0 }
    }

    fn shard_index(key: &K) -> usize {
        // Fold the high bits in so keys whose low bits are constant still spread.
        let h = key.shard_hash();
        ((h ^ (h >> 32) ^ (h >> 48)) as usize) & (SHARDS - 1)
    }

    /// The value stored for `key`.
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[Self::shard_index(key)].get(key)
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

    fn shard_mut(&mut self, key: &K) -> &mut HashMap<K, V> {
        Arc::make_mut(&mut self.shards[Self::shard_index(key)])
    }

    /// Inserts or replaces the value for `key`, returning the old one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.shard_mut(&key).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`, returning its value. A missing key leaves every shard shared.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains_key(key) {
            return None;
        }
        let old = self.shard_mut(key).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// A mutable reference to the value for `key`, cloning its shard if it is shared.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if !self.contains_key(key) {
            return None;
        }
        self.shard_mut(key).get_mut(key)
    }

    /// The value for `key`, inserting `make()` first if absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let index = Self::shard_index(&key);
        let shard = Arc::make_mut(&mut self.shards[index]);
        let mut inserted = false;
        let value = shard.entry(key).or_insert_with(|| {
            inserted = true;
            make()
        });
        if inserted {
            self.len += 1;
        }
        value
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Keeps only the entries for which `keep` returns true, cloning only shards that change.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in self.shards.iter_mut() {
            if shard.iter().all(|(k, v)| keep(k, v)) {
                continue;
            }
            let shard = Arc::make_mut(shard);
            let before = shard.len();
            shard.retain(|k, v| keep(k, v));
            self.len -= before - shard.len();
        }
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

/// Mixes a 64-bit value into a well-distributed shard hash (the murmur3 finaliser).
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}
