//! The memory behind a [`ConnTable`](super::ConnTable): open addressing with linear probing
//! over slots of one cache line each, holding key and state together.
//!
//! Every packet the fast path decides looks its connection up, at a random place in a table
//! of megabytes, so the lookup is a cache miss. Here it touches one line (the key's home slot,
//! and the next ones only on a collision), where a general-purpose map touches a control byte
//! group and a bucket; and because the home slot follows from the hash alone, the worker can
//! [`prefetch`](SlotTable::prefetch) a whole RX burst's lines before deciding the first packet,
//! so the misses overlap instead of queueing.
//!
//! The table is sized once: twice the connection capacity, rounded up to a power of two, so it
//! is at most half full and runs stay short. Removal shifts the rest of the run back (no
//! tombstones), so a lookup stops at the first empty slot.

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

use super::huge::HugeArray;

/// What identifies a connection in its slot: both ends' addresses (IPv4 mapped into IPv6, as
/// four words), ports (or echo identifier and 0), protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(super) struct PackedKey {
    /// First address (high then low half), second address.
    pub(super) addrs: [u64; 4],
    /// First end's port.
    pub(super) sport: u16,
    /// Second end's port.
    pub(super) dport: u16,
    /// IP protocol number.
    pub(super) protocol: u8,
}

impl PackedKey {
    /// The key of addresses `src`, `dst` (IPv6 bit patterns) and the rest.
    pub(super) fn new(src: u128, dst: u128, sport: u16, dport: u16, protocol: u8) -> Self {
        PackedKey {
            addrs: [
                (src >> 64) as u64,
                src as u64,
                (dst >> 64) as u64,
                dst as u64,
            ],
            sport,
            dport,
            protocol,
        }
    }
}

/// The state of a connection, as its slot keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) struct SlotState {
    /// When a packet of it was last seen.
    pub(super) last_seen_ns: u64,
    /// Identity of the side that opened it, when policy allowed it.
    pub(super) src_identity: u64,
    /// Identity of the other side then.
    pub(super) dst_identity: u64,
    /// The opener is the key's first end.
    pub(super) opened_by_first: bool,
    /// A FIN or RST was seen.
    pub(super) closing: bool,
}

const USED: u8 = 1;
const OPENED_BY_FIRST: u8 = 2;
const CLOSING: u8 = 4;

/// One cache line: a connection's key and state.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    addrs: [u64; 4],
    last_seen_ns: u64,
    src_identity: u64,
    dst_identity: u64,
    sport: u16,
    dport: u16,
    protocol: u8,
    /// `USED`, `OPENED_BY_FIRST`, `CLOSING`.
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    fn used(&self) -> bool {
        self.flags & USED != 0
    }

    fn key(&self) -> PackedKey {
        PackedKey {
            addrs: self.addrs,
            sport: self.sport,
            dport: self.dport,
            protocol: self.protocol,
        }
    }

    fn holds(&self, key: &PackedKey) -> bool {
        self.used()
            && self.addrs == key.addrs
            && self.sport == key.sport
            && self.dport == key.dport
            && self.protocol == key.protocol
    }

    fn state(&self) -> SlotState {
        SlotState {
            last_seen_ns: self.last_seen_ns,
            src_identity: self.src_identity,
            dst_identity: self.dst_identity,
            opened_by_first: self.flags & OPENED_BY_FIRST != 0,
            closing: self.flags & CLOSING != 0,
        }
    }

    fn fill(&mut self, key: &PackedKey, state: &SlotState) {
        *self = Slot {
            addrs: key.addrs,
            last_seen_ns: state.last_seen_ns,
            src_identity: state.src_identity,
            dst_identity: state.dst_identity,
            sport: key.sport,
            dport: key.dport,
            protocol: key.protocol,
            flags: USED
                | if state.opened_by_first {
                    OPENED_BY_FIRST
                } else {
                    0
                }
                | if state.closing { CLOSING } else { 0 },
        };
    }
}

/// Where a key is, or where it would go.
pub(super) enum Probe {
    /// The key's slot.
    Found(usize),
    /// The empty slot ending the key's run: where it is inserted.
    Vacant(usize),
}

/// Connections in cache-line slots, at most half of them used.
pub(super) struct SlotTable {
    slots: HugeArray<Slot>,
    mask: usize,
    len: usize,
    hasher: DefaultHashBuilder,
}

impl SlotTable {
    /// A table for at least `capacity` keys (`2 × capacity` slots, a power of two, at least
    /// 16), allocated here and never again.
    pub(super) fn new(capacity: usize) -> Self {
        let slots = capacity.saturating_mul(2).max(16).next_power_of_two();
        SlotTable {
            slots: HugeArray::new(slots),
            mask: slots - 1,
            len: 0,
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, key: &PackedKey) -> usize {
        self.hasher.hash_one(key) as usize & self.mask
    }

    /// Asks the CPU to load `key`'s home slot into cache: a later [`probe`](Self::probe) of it
    /// then finds the line there (or on its way).
    #[inline]
    pub(super) fn prefetch(&self, key: &PackedKey) {
        let slot: *const Slot = &self.slots[self.home(key)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint with no architectural effect; the address is a slot of
        // this table.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Finds `key`, or the slot it would take. The table always has an empty slot (it is at
    /// most half full), so the walk ends.
    pub(super) fn probe(&self, key: &PackedKey) -> Probe {
        let mut i = self.home(key);
        for _ in 0..=self.mask {
            let slot = &self.slots[i];
            if !slot.used() {
                return Probe::Vacant(i);
            }
            if slot.holds(key) {
                return Probe::Found(i);
            }
            i = (i + 1) & self.mask;
        }
        unreachable!("a table at most half full has an empty slot")
    }

    /// The state in slot `i` (a [`Probe::Found`]).
    pub(super) fn state(&self, i: usize) -> SlotState {
        self.slots[i].state()
    }

    /// The key in slot `i` (a [`Probe::Found`]).
    #[cfg(test)]
    pub(super) fn key(&self, i: usize) -> PackedKey {
        self.slots[i].key()
    }

    /// Overwrites the state of found slot `i`.
    pub(super) fn set_state(&mut self, i: usize, state: &SlotState) {
        let key = self.slots[i].key();
        self.slots[i].fill(&key, state);
    }

    /// Puts `key` in vacant slot `i` (from a [`Probe::Vacant`] of this key, with no change to
    /// the table since). The caller keeps the table at most half full.
    pub(super) fn insert_at(&mut self, i: usize, key: &PackedKey, state: &SlotState) {
        debug_assert!(!self.slots[i].used());
        debug_assert!(self.len < self.slots.len() / 2);
        self.slots[i].fill(key, state);
        self.len += 1;
    }

    /// Empties slot `i` and shifts the rest of its run back, so every key stays reachable
    /// from its home slot without gaps.
    fn remove_at(&mut self, i: usize) {
        let mut hole = i;
        let mut j = i;
        for _ in 0..self.mask {
            j = (j + 1) & self.mask;
            if !self.slots[j].used() {
                break;
            }
            let home = self.home(&self.slots[j].key());
            // Slot j may fill the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }

    /// Removes every key whose state `expired` says so; returns how many. One pass over the
    /// slots; allocation-free.
    pub(super) fn remove_where(
        &mut self,
        expired: impl FnMut(&PackedKey, &SlotState) -> bool,
    ) -> usize {
        self.remove_where_in(0, self.slots.len(), expired)
    }

    /// Like [`remove_where`](Self::remove_where), over the `count` slots from `start` (wrapping
    /// at the end): a bounded piece of work. Keys that a removal shifts into the range are
    /// looked at too.
    pub(super) fn remove_where_in(
        &mut self,
        start: usize,
        count: usize,
        mut expired: impl FnMut(&PackedKey, &SlotState) -> bool,
    ) -> usize {
        let before = self.len;
        let count = count.min(self.slots.len());
        let mut done = 0;
        // Each step either advances or removes a key, so this ends.
        while done < count {
            let i = (start + done) & self.mask;
            let slot = &self.slots[i];
            if slot.used() && expired(&slot.key(), &slot.state()) {
                // The run's next key may have moved into slot i: look at it again.
                self.remove_at(i);
            } else {
                done += 1;
            }
        }
        before - self.len
    }

    /// Slots in the table.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Removes every key.
    pub(super) fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> PackedKey {
        PackedKey::new(u128::from(n), 7, n as u16, 80, 6)
    }

    fn state(n: u64) -> SlotState {
        SlotState {
            last_seen_ns: n,
            src_identity: n + 1,
            dst_identity: n + 2,
            opened_by_first: n.is_multiple_of(2),
            closing: n.is_multiple_of(3),
        }
    }

    fn insert(t: &mut SlotTable, k: &PackedKey, s: &SlotState) {
        match t.probe(k) {
            Probe::Vacant(i) => t.insert_at(i, k, s),
            Probe::Found(_) => panic!("{k:?} already there"),
        }
    }

    fn get(t: &SlotTable, k: &PackedKey) -> Option<SlotState> {
        match t.probe(k) {
            Probe::Found(i) => Some(t.state(i)),
            Probe::Vacant(_) => None,
        }
    }

    #[test]
    fn keys_and_states_round_trip_until_removed() {
        let mut t = SlotTable::new(1000);
        assert_eq!(t.slot_count(), 2048);
        for n in 0..1000 {
            insert(&mut t, &key(n), &state(n));
        }
        assert_eq!(t.len(), 1000);
        for n in 0..1000 {
            assert_eq!(get(&t, &key(n)), Some(state(n)), "key {n}");
        }
        assert_eq!(get(&t, &key(5000)), None);
        // Remove the odd ones: every even one must still be reachable (the shifts closed the
        // gaps), no odd one is.
        let removed = t.remove_where(|k, _| k.sport % 2 == 1);
        assert_eq!(removed, 500);
        assert_eq!(t.len(), 500);
        for n in 0..1000 {
            assert_eq!(get(&t, &key(n)).is_some(), n.is_multiple_of(2), "key {n}");
        }
        t.clear();
        assert_eq!(t.len(), 0);
        assert_eq!(get(&t, &key(0)), None);
    }

    #[test]
    fn removal_keeps_every_survivor_reachable_in_a_crowded_small_table() {
        // A tiny table filled to half: 8 keys in 16 slots collide often, and with 50 key sets
        // some runs are likely (not certain: the hash is seeded per table) to wrap past the
        // last slot. Remove in several orders and check every survivor after each removal.
        for seed in 0..50u64 {
            let mut t = SlotTable::new(8); // 16 slots
            let keys: Vec<PackedKey> = (0..8).map(|n| key(seed * 100 + n)).collect();
            for (n, k) in keys.iter().enumerate() {
                insert(&mut t, k, &state(n as u64));
            }
            let mut alive: Vec<bool> = vec![true; keys.len()];
            for step in 0..keys.len() {
                let victim = (step * 5 + seed as usize) % keys.len();
                if !alive[victim] {
                    continue;
                }
                let target = keys[victim];
                t.remove_where(|k, _| *k == target);
                alive[victim] = false;
                for (n, k) in keys.iter().enumerate() {
                    assert_eq!(
                        get(&t, k).is_some(),
                        alive[n],
                        "seed {seed}, after removing {victim}: key {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn removal_in_pieces_covers_the_table_once_around() {
        let mut t = SlotTable::new(1000);
        for n in 0..1000 {
            insert(&mut t, &key(n), &state(n));
        }
        // Expire the multiples of 3, 256 slots at a time from an odd start, wrapping.
        let mut removed = 0;
        let mut cursor = 1000;
        for _ in 0..t.slot_count() / 256 {
            removed += t.remove_where_in(cursor, 256, |k, _| k.sport % 3 == 0);
            cursor = (cursor + 256) % t.slot_count();
        }
        assert_eq!(removed, 334);
        for n in 0..1000 {
            assert_eq!(get(&t, &key(n)).is_some(), n % 3 != 0, "key {n}");
        }
    }

    #[test]
    fn a_found_slot_takes_a_new_state_in_place() {
        let mut t = SlotTable::new(4);
        insert(&mut t, &key(1), &state(1));
        let Probe::Found(i) = t.probe(&key(1)) else {
            panic!("not found")
        };
        t.set_state(i, &state(9));
        assert_eq!(get(&t, &key(1)), Some(state(9)));
        assert_eq!(t.key(i), key(1));
        t.prefetch(&key(1));
        t.prefetch(&key(2));
    }
}
