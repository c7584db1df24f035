//! The ipcache: IP prefix → security identity, with longest-prefix match for readers and
//! owner-checked updates for the writer.
//!
//! # Reader side
//!
//! [`IpCache`] lives inside published snapshots. A lookup probes one hash table per address
//! family, keyed by (masked address, prefix length), once for each prefix length that is present,
//! longest first: a bitmask of the lengths in use (33 bits for IPv4, 129 for IPv6) makes the
//! usual case (a pod's `/32` or `/128`) one probe. The tables are flat copy-on-write tables
//! (`cow_flat`): one packed record per entry (an IPv4 key, identity and owner take 17 bytes,
//! IPv6 29) found by linear probing, so a hit in a table far larger than the CPU's caches costs
//! one cache miss; the writer clones only the shard it touches and a clone of the whole cache
//! is cheap.
//!
//! The entry of a host prefix also carries a flag saying whether the address is a local
//! endpoint's (see [`IpCacheWriter::set_local`]), so that classifying a packet learns who the
//! peer is and whether to enforce its policy from one lookup.
//!
//! Owners are interned: one record per distinct (uid, source), shared by all the prefixes it
//! claims (a pod's IPv4 and IPv6 address), stored as string slices in chunked arenas. Readers
//! see an owner as an [`OwnerRef`], which borrows those strings. The writer's book of which
//! prefixes each record claims keeps a pod's two host addresses inline (24 bytes per owner).
//!
//! # Writer side
//!
//! [`IpCacheWriter`] keeps every claim on a prefix, at most one per [`Source`]: the visible one
//! is the claim of the highest source, the others are shadowed fallbacks kept writer-side. An
//! upsert by the owner (uid) already holding the prefix replaces its entry in place; an upsert
//! by another owner takes over when its source is at least as high (IP reuse: the new pod wins)
//! and is shadowed otherwise. A removal only ever removes the named owner's own claim, so a late
//! delete of an old pod cannot remove the entry of the new pod that took its address, and a
//! shadowed claim is revealed in the same update that removes the visible one (no gap).

use std::borrow::Borrow;
use std::fmt;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::cow_flat::{CowFlat, FlatEntry};
use crate::identity::Identity;

/// Where a claim on a prefix comes from. Higher sources take precedence:
/// `ApiServer` > `Local` > `File`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A static file (lowest precedence).
    File,
    /// This node's own knowledge (CNI, local endpoints).
    Local,
    /// The Kubernetes API server (highest precedence).
    ApiServer,
}

impl Source {
    /// Every source, lowest precedence first.
    pub const ALL: [Source; 3] = [Source::File, Source::Local, Source::ApiServer];

    fn index(self) -> usize {
        match self {
            Source::File => 0,
            Source::Local => 1,
            Source::ApiServer => 2,
        }
    }

    /// The lower-case name (`file`, `local`, `apiserver`).
    pub fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Local => "local",
            Source::ApiServer => "apiserver",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who claims a prefix. Two claims belong to the same owner when their `uid`s are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Where the claim comes from.
    pub source: Source,
    /// The pod UID, or e.g. `policy:<ns>/<name>` for policy CIDRs, `node:<name>` for nodes.
    pub uid: String,
    /// The owner's namespace (empty for cluster-scoped owners).
    pub namespace: String,
    /// The owner's name.
    pub name: String,
}

impl Owner {
    /// An owner from its parts.
    pub fn new(
        source: Source,
        uid: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Owner {
            source,
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A borrowed view of an interned owner record, as stored in an [`IpCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerRef<'a> {
    /// Where the claim comes from.
    pub source: Source,
    /// The owner's uid.
    pub uid: &'a str,
    /// The owner's namespace.
    pub namespace: &'a str,
    /// The owner's name.
    pub name: &'a str,
}

impl OwnerRef<'_> {
    /// An owned copy.
    pub fn to_owner(&self) -> Owner {
        Owner::new(self.source, self.uid, self.namespace, self.name)
    }
}

impl fmt::Display for OwnerRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} (uid {}, {})", self.name, self.uid, self.source)
        } else {
            write!(
                f,
                "{}/{} (uid {}, {})",
                self.namespace, self.name, self.uid, self.source
            )
        }
    }
}

/// The number of an interned owner record inside one cache (see [`IpCache::owner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerId(pub u32);

/// The result of a longest-prefix match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpCacheHit {
    /// The identity of the longest matching prefix.
    pub identity: Identity,
    /// That prefix's length.
    pub prefix_len: u8,
    /// Its visible owner; resolve with [`IpCache::owner`].
    pub owner: OwnerId,
}

/// The longest an owner's uid, namespace or name may be, in bytes.
pub const MAX_OWNER_FIELD: usize = u16::MAX as usize;

/// Why an upsert was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpCacheError {
    /// `Identity::UNKNOWN` means "no identity" and is never stored.
    #[error("cannot map {prefix} to the unknown identity (0)")]
    UnknownIdentity {
        /// The prefix of the refused upsert.
        prefix: IpNet,
    },
    /// An owner without a uid could not be told apart from any other, so deletes could not
    /// be owner-checked.
    #[error("the owner of {prefix} has an empty uid")]
    EmptyOwnerUid {
        /// The prefix of the refused upsert.
        prefix: IpNet,
    },
    /// One of the owner's strings is longer than [`MAX_OWNER_FIELD`] bytes.
    #[error("owner {field} is {len} bytes long (at most {max})")]
    OwnerFieldTooLong {
        /// `uid`, `namespace` or `name`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Every owner number is in use.
    #[error("too many distinct owners (at most {max})")]
    TooManyOwners {
        /// The limit.
        max: u64,
    },
}

/// What an upsert did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// Nobody claimed the prefix; it is now visible with the new identity.
    Inserted,
    /// The same owner held the visible entry; its identity was replaced in place.
    Replaced {
        /// The identity it had before.
        previous: Identity,
    },
    /// The same owner already held the visible entry with this identity; nothing changed
    /// (the owner's namespace and name are refreshed if they differ).
    Unchanged,
    /// Another owner of lower or equal precedence held the entry; the new owner is visible now.
    TookOver {
        /// The uid of the owner that held it.
        previous_owner: String,
        /// The identity it had.
        previous_identity: Identity,
        /// Whether the previous claim is kept as a shadowed fallback (it had a lower source)
        /// or was dropped (same source: the address was reused).
        previous_kept: bool,
    },
    /// An owner of higher precedence holds the entry; the claim is stored as a fallback and
    /// is not visible.
    Shadowed {
        /// The uid of the visible owner.
        visible_owner: String,
    },
}

/// What a removal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The owner's visible entry was removed and no fallback exists: the prefix is gone.
    Removed {
        /// The identity it had.
        identity: Identity,
    },
    /// The owner's visible entry was removed and a shadowed claim became visible in the same
    /// update.
    Revealed {
        /// The identity removed.
        removed: Identity,
        /// The identity visible now.
        identity: Identity,
        /// The uid of the owner visible now.
        owner: String,
    },
    /// The owner's shadowed claim was dropped; the visible entry is unchanged.
    RemovedShadowed {
        /// The identity of the dropped claim.
        identity: Identity,
    },
    /// Another owner holds the prefix and this owner has no claim on it: nothing changed.
    NotOwner {
        /// The uid of the visible owner.
        visible_owner: String,
    },
    /// Nobody claims the prefix.
    NotFound,
}

// ---------------------------------------------------------------------------------------------
// Packed keys and entries

/// 2^64 / φ, the multiplier of Fibonacci hashing.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;
/// A second odd multiplier (the murmur3 finaliser's) for the IPv6 fold.
const MIX: u64 = 0xff51_afd7_ed55_8ccd;
/// The prefix length of an empty table slot.
const EMPTY_LEN: u8 = u8::MAX;
/// The bit of a stored owner number that marks the address of a local endpoint.
const LOCAL_BIT: u32 = 1 << 31;
/// The highest owner number (the top bit of the stored number is [`LOCAL_BIT`]).
const MAX_OWNER_ID: u32 = LOCAL_BIT - 1;

/// An IPv4 prefix: masked address and prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct V4Key {
    addr: u32,
    len: u8,
}

impl V4Key {
    #[inline]
    fn new(addr: u32, len: u8) -> Self {
        V4Key { addr, len }
    }

    /// One multiply (Fibonacci hashing): the top bits of the product, which pick the shard
    /// and the slot, depend on every bit of the 40-bit packed key.
    #[inline]
    fn hash(&self) -> u64 {
        ((u64::from(self.addr) << 8) | u64::from(self.len)).wrapping_mul(FIBONACCI)
    }

    fn net(&self) -> Option<IpNet> {
        Ipv4Net::new(Ipv4Addr::from(self.addr), self.len)
            .ok()
            .map(IpNet::V4)
    }
}

/// An IPv6 prefix: masked address and prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct V6Key {
    addr: u128,
    len: u8,
}

impl V6Key {
    #[inline]
    fn new(addr: u128, len: u8) -> Self {
        V6Key { addr, len }
    }

    /// The address folded into one `u64` (the high half multiplied first, so that prefixes
    /// that differ only there, and host addresses that differ only in the low half, both
    /// spread), then one Fibonacci multiply as for IPv4.
    #[inline]
    fn hash(&self) -> u64 {
        let (hi, lo) = ((self.addr >> 64) as u64, self.addr as u64);
        (hi.wrapping_mul(MIX) ^ lo ^ u64::from(self.len)).wrapping_mul(FIBONACCI)
    }

    fn net(&self) -> Option<IpNet> {
        Ipv6Net::new(Ipv6Addr::from(self.addr), self.len)
            .ok()
            .map(IpNet::V6)
    }
}

/// A prefix as the writer tracks it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PrefixKey {
    V4(V4Key),
    V6(V6Key),
}

impl PrefixKey {
    /// The key of a prefix, truncated to its length first.
    fn of(prefix: IpNet) -> Self {
        match prefix.trunc() {
            IpNet::V4(n) => PrefixKey::V4(V4Key::new(u32::from(n.network()), n.prefix_len())),
            IpNet::V6(n) => PrefixKey::V6(V6Key::new(u128::from(n.network()), n.prefix_len())),
        }
    }

    /// The host prefix (`/32`, `/128`) of an address.
    fn host(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => PrefixKey::V4(V4Key::new(u32::from(a), 32)),
            IpAddr::V6(a) => PrefixKey::V6(V6Key::new(u128::from(a), 128)),
        }
    }

    fn net(&self) -> Option<IpNet> {
        match self {
            PrefixKey::V4(k) => k.net(),
            PrefixKey::V6(k) => k.net(),
        }
    }
}

/// What a visible entry maps to: identity and owner.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Slot {
    identity: Identity,
    owner: OwnerId,
}

impl Slot {
    #[inline]
    fn hit(&self, prefix_len: u8) -> IpCacheHit {
        IpCacheHit {
            identity: self.identity,
            prefix_len,
            owner: self.owner,
        }
    }
}

/// An IPv4 table entry: key, owner (with [`LOCAL_BIT`]) and identity, 17 bytes with no
/// padding, so a 64-byte cache line holds three or four.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct V4Entry {
    addr: u32,
    len: u8,
    owner: u32,
    identity: u64,
}

/// An IPv6 table entry, 29 bytes.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct V6Entry {
    addr: u128,
    len: u8,
    owner: u32,
    identity: u64,
}

/// The fields both entry kinds share.
trait Entry: FlatEntry {
    fn make(key: Self::Key, slot: Slot, local: bool) -> Self;
    fn stored_owner(&self) -> u32;
    fn identity(&self) -> Identity;
    fn len(&self) -> u8;
    #[inline]
    fn slot(&self) -> Slot {
        Slot {
            identity: self.identity(),
            owner: OwnerId(self.stored_owner() & MAX_OWNER_ID),
        }
    }
    #[inline]
    fn local(&self) -> bool {
        self.stored_owner() & LOCAL_BIT != 0
    }
    #[inline]
    fn hit(&self) -> IpCacheHit {
        self.slot().hit(self.len())
    }
}

/// The flat-table entry traits of an ipcache entry type (`$entry`, keyed by `$key`): IPv4 and
/// IPv6 entries differ only in the width of their address.
macro_rules! flat_ipcache_entry {
    ($entry:ident, $key:ident) => {
        impl FlatEntry for $entry {
            type Key = $key;
            const EMPTY: Self = $entry {
                addr: 0,
                len: EMPTY_LEN,
                owner: 0,
                identity: 0,
            };

            #[inline]
            fn is_empty(&self) -> bool {
                self.len == EMPTY_LEN
            }

            #[inline]
            fn has_key(&self, key: &$key) -> bool {
                let (addr, len) = (self.addr, self.len);
                addr == key.addr && len == key.len
            }

            #[inline]
            fn key(&self) -> $key {
                $key::new(self.addr, self.len)
            }

            #[inline]
            fn hash(key: &$key) -> u64 {
                key.hash()
            }
        }

        impl Entry for $entry {
            #[inline]
            fn make(key: $key, slot: Slot, local: bool) -> Self {
                $entry {
                    addr: key.addr,
                    len: key.len,
                    owner: slot.owner.0 | if local { LOCAL_BIT } else { 0 },
                    identity: slot.identity.0,
                }
            }

            #[inline]
            fn stored_owner(&self) -> u32 {
                self.owner
            }

            #[inline]
            fn identity(&self) -> Identity {
                Identity(self.identity)
            }

            #[inline]
            fn len(&self) -> u8 {
                self.len
            }
        }
    };
}

flat_ipcache_entry!(V4Entry, V4Key);
flat_ipcache_entry!(V6Entry, V6Key);

#[inline]
fn mask_v4(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

#[inline]
fn mask_v6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}
// ---------------------------------------------------------------------------------------------
// Interned owner records

/// Owner records per chunk; a chunk is the unit of copy-on-write.
const OWNER_CHUNK: usize = 128;

/// Where an owner's strings lie in its chunk's arena.
#[derive(Clone, Copy)]
struct OwnerSlot {
    start: u32,
    uid_len: u16,
    ns_len: u16,
    name_len: u16,
    source: Source,
}

impl OwnerSlot {
    fn text_len(&self) -> usize {
        usize::from(self.uid_len) + usize::from(self.ns_len) + usize::from(self.name_len)
    }
}

/// Up to [`OWNER_CHUNK`] owner records whose strings share one arena. Freed records leave
/// garbage in the arena that is squeezed out when it outgrows the live text, and whenever the
/// chunk is copied (a clone is always compact).
struct OwnerChunk {
    slots: Vec<Option<OwnerSlot>>,
    arena: String,
    garbage: usize,
}

impl Default for OwnerChunk {
    fn default() -> Self {
        OwnerChunk {
            slots: vec![None; OWNER_CHUNK],
            arena: String::new(),
            garbage: 0,
        }
    }
}

impl Clone for OwnerChunk {
    fn clone(&self) -> Self {
        let live = self.arena.len().saturating_sub(self.garbage);
        let mut arena = String::with_capacity(live);
        let mut slots = self.slots.clone();
        for slot in slots.iter_mut().flatten() {
            let start = slot.start as usize;
            let text = self.arena.get(start..start + slot.text_len()).unwrap_or("");
            slot.start = arena.len() as u32;
            arena.push_str(text);
        }
        OwnerChunk {
            slots,
            arena,
            garbage: 0,
        }
    }
}

impl OwnerChunk {
    fn get(&self, index: usize) -> Option<OwnerRef<'_>> {
        let slot = self.slots.get(index)?.as_ref()?;
        let uid_at = slot.start as usize;
        let ns_at = uid_at + usize::from(slot.uid_len);
        let name_at = ns_at + usize::from(slot.ns_len);
        let end = name_at + usize::from(slot.name_len);
        Some(OwnerRef {
            source: slot.source,
            uid: self.arena.get(uid_at..ns_at)?,
            namespace: self.arena.get(ns_at..name_at)?,
            name: self.arena.get(name_at..end)?,
        })
    }

    fn clear(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index).and_then(Option::take) {
            self.garbage += slot.text_len();
        }
        if self.slots.iter().all(Option::is_none) {
            self.arena = String::new();
            self.garbage = 0;
        }
    }

    /// Stores an owner whose fields were checked against [`MAX_OWNER_FIELD`].
    fn put(&mut self, index: usize, owner: &Owner) {
        if index >= self.slots.len() {
            return;
        }
        self.clear(index);
        if self.garbage > 4096 && self.garbage > self.arena.len() / 2 {
            *self = self.clone();
        }
        let need = owner.uid.len() + owner.namespace.len() + owner.name.len();
        if self.arena.capacity() - self.arena.len() < need {
            // Grow by a quarter rather than doubling: arenas are long-lived and memory counts.
            self.arena.reserve_exact(need.max(self.arena.len() / 4));
        }
        let start = self.arena.len() as u32;
        self.arena.push_str(&owner.uid);
        self.arena.push_str(&owner.namespace);
        self.arena.push_str(&owner.name);
        self.slots[index] = Some(OwnerSlot {
            start,
            uid_len: owner.uid.len() as u16,
            ns_len: owner.namespace.len() as u16,
            name_len: owner.name.len() as u16,
            source: owner.source,
        });
        // Ids are handed out densely, so a full chunk rarely grows again: drop the slack.
        let slack = self.arena.capacity() - self.arena.len();
        if slack > self.arena.len() / 16 && self.slots.iter().all(Option::is_some) {
            self.arena.shrink_to_fit();
        }
    }

    fn memory_bytes(&self) -> usize {
        size_of::<OwnerChunk>()
            + 2 * size_of::<usize>()
            + self.slots.capacity() * size_of::<Option<OwnerSlot>>()
            + self.arena.capacity()
    }
}

/// Owner records by [`OwnerId`], copy-on-write per chunk. Cloning is one reference count.
#[derive(Clone, Default)]
struct OwnerTable {
    chunks: Arc<Vec<Arc<OwnerChunk>>>,
}

impl OwnerTable {
    fn get(&self, id: OwnerId) -> Option<OwnerRef<'_>> {
        let index = id.0 as usize;
        self.chunks
            .get(index / OWNER_CHUNK)?
            .get(index % OWNER_CHUNK)
    }

    fn put(&mut self, id: OwnerId, owner: &Owner) {
        let index = id.0 as usize;
        let chunks = Arc::make_mut(&mut self.chunks);
        while chunks.len() <= index / OWNER_CHUNK {
            chunks.push(Arc::new(OwnerChunk::default()));
        }
        if let Some(chunk) = chunks.get_mut(index / OWNER_CHUNK) {
            Arc::make_mut(chunk).put(index % OWNER_CHUNK, owner);
        }
    }

    fn clear(&mut self, id: OwnerId) {
        let index = id.0 as usize;
        if self.get(id).is_none() {
            return;
        }
        let chunks = Arc::make_mut(&mut self.chunks);
        if let Some(chunk) = chunks.get_mut(index / OWNER_CHUNK) {
            Arc::make_mut(chunk).clear(index % OWNER_CHUNK);
        }
    }

    fn memory_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Arc<OwnerChunk>>()
            + self.chunks.iter().map(|c| c.memory_bytes()).sum::<usize>()
    }
}

// ---------------------------------------------------------------------------------------------
// Reader side

/// IP prefix → identity for readers: an immutable snapshot with longest-prefix match.
/// Cloning it clones a few hundred reference counts, never the entries.
#[derive(Clone, Default)]
pub struct IpCache {
    v4: CowFlat<V4Entry>,
    v6: CowFlat<V6Entry>,
    /// Bit `n` set when some IPv4 prefix of length `n` is present.
    v4_lens: u64,
    /// Bit `n % 64` of word `n / 64` set when some IPv6 prefix of length `n` is present.
    v6_lens: [u64; 3],
    owners: OwnerTable,
    /// The [`EndpointTable::stamp`](crate::endpoint::EndpointTable::stamp) of the endpoint
    /// table whose addresses the local flags of the host entries describe (0: none).
    local_stamp: u64,
    /// Whether some local endpoint address has no host entry (its flag is then nowhere, and
    /// a miss or a shorter prefix cannot say "not local").
    local_orphans: bool,
}

/// An address as [`IpCache::resolve`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The identity of the longest prefix containing it, if any.
    pub(crate) identity: Option<Identity>,
    /// Whether it is a local endpoint's address, as the flags say; `None` when they cannot
    /// tell (the caller then asks the endpoint table).
    pub(crate) local: Option<bool>,
}

impl Resolved {
    /// Nothing resolved yet.
    pub(crate) const NONE: Resolved = Resolved {
        identity: None,
        local: None,
    };
}

impl fmt::Debug for IpCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpCache")
            .field("ipv4_entries", &self.v4.len())
            .field("ipv6_entries", &self.v6.len())
            .finish_non_exhaustive()
    }
}

impl IpCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The identity of the longest prefix containing `ip`. IPv4 and IPv6 are separate: an
    /// IPv4-mapped IPv6 address is looked up as IPv6.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<IpCacheHit> {
        match ip {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// Longest-prefix match of an IPv4 address.
    #[inline]
    pub fn lookup_v4(&self, ip: Ipv4Addr) -> Option<IpCacheHit> {
        self.entry_v4(u32::from(ip)).map(|e| e.hit())
    }

    /// Longest-prefix match of an IPv6 address.
    #[inline]
    pub fn lookup_v6(&self, ip: Ipv6Addr) -> Option<IpCacheHit> {
        self.entry_v6(u128::from(ip)).map(|e| e.hit())
    }

    #[inline]
    fn entry_v4(&self, addr: u32) -> Option<V4Entry> {
        let mut lens = self.v4_lens;
        while lens != 0 {
            let len = (63 - lens.leading_zeros()) as u8;
            lens &= !(1u64 << len);
            if let Some(e) = self.v4.get(&V4Key::new(addr & mask_v4(len), len)) {
                return Some(*e);
            }
        }
        None
    }

    #[inline]
    fn entry_v6(&self, addr: u128) -> Option<V6Entry> {
        for word in (0..3u8).rev() {
            let mut bits = self.v6_lens[usize::from(word)];
            while bits != 0 {
                let bit = (63 - bits.leading_zeros()) as u8;
                bits &= !(1u64 << bit);
                let len = word * 64 + bit;
                if let Some(e) = self.v6.get(&V6Key::new(addr & mask_v6(len), len)) {
                    return Some(*e);
                }
            }
        }
        None
    }

    /// The identity of `ip` (longest prefix) and, from the same entry, whether it is a local
    /// endpoint's address: the flag of its host entry, valid for the endpoint table stamped
    /// `endpoints_stamp` only.
    #[inline]
    pub(crate) fn resolve(&self, ip: IpAddr, endpoints_stamp: u64) -> Resolved {
        let (identity, host, flag) = match ip {
            IpAddr::V4(a) => match self.entry_v4(u32::from(a)) {
                Some(e) => (Some(e.identity()), e.len == 32, e.local()),
                None => (None, false, false),
            },
            IpAddr::V6(a) => match self.entry_v6(u128::from(a)) {
                Some(e) => (Some(e.identity()), e.len == 128, e.local()),
                None => (None, false, false),
            },
        };
        let local = if self.local_stamp != endpoints_stamp {
            None
        } else if host {
            Some(flag)
        } else if self.local_orphans {
            None
        } else {
            Some(false)
        };
        Resolved { identity, local }
    }

    /// Starts loading the slot where the lookup of `ip`'s host prefix (`/32`, `/128`, the
    /// usual hit) begins; see [`Snapshot::classify_batch`](crate::state::Snapshot::classify_batch).
    #[inline]
    pub(crate) fn prefetch(&self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => self.v4.prefetch(&V4Key::new(u32::from(a), 32)),
            IpAddr::V6(a) => self.v6.prefetch(&V6Key::new(u128::from(a), 128)),
        }
    }

    /// This snapshot with its local flags declared valid for the endpoint table `stamp`.
    pub(crate) fn with_local_stamp(mut self, stamp: u64) -> Self {
        self.local_stamp = stamp;
        self
    }

    /// Whether the host entry of `ip` carries the local-endpoint flag (for tests).
    #[cfg(test)]
    pub(crate) fn local_flag(&self, ip: IpAddr) -> Option<bool> {
        match PrefixKey::host(ip) {
            PrefixKey::V4(k) => self.v4.get(&k).map(Entry::local),
            PrefixKey::V6(k) => self.v6.get(&k).map(Entry::local),
        }
    }

    /// The owner record behind a hit.
    pub fn owner(&self, id: OwnerId) -> Option<OwnerRef<'_>> {
        self.owners.get(id)
    }

    /// The visible entry for exactly this prefix (truncated first), with its owner.
    pub fn get(&self, prefix: IpNet) -> Option<(Identity, OwnerRef<'_>)> {
        let slot = self.slot(PrefixKey::of(prefix))?;
        Some((slot.identity, self.owners.get(slot.owner)?))
    }

    /// Number of visible entries.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every visible entry, IPv4 first, in no particular order within a family.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, IpCacheHit)> + '_ {
        let v4 = self
            .v4
            .iter()
            .filter_map(|e| Some((e.key().net()?, e.hit())));
        let v6 = self
            .v6
            .iter()
            .filter_map(|e| Some((e.key().net()?, e.hit())));
        v4.chain(v6)
    }

    /// Heap bytes held by this snapshot: the tables' slots at their actual capacity, the shard
    /// records, and the interned owner records. Memory shared with other snapshots is counted
    /// in full.
    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes() + self.v6.memory_bytes() + self.owners.memory_bytes()
    }

    #[inline]
    fn slot(&self, key: PrefixKey) -> Option<Slot> {
        match key {
            PrefixKey::V4(k) => self.v4.get(&k).map(Entry::slot),
            PrefixKey::V6(k) => self.v6.get(&k).map(Entry::slot),
        }
    }

    /// Stores `slot` at `key` (or removes the entry), with the local flag; returns whether
    /// an entry was there before.
    fn store(&mut self, key: PrefixKey, slot: Option<Slot>, local: bool) -> bool {
        match (key, slot) {
            (PrefixKey::V4(k), Some(s)) => self.v4.insert(V4Entry::make(k, s, local)).is_some(),
            (PrefixKey::V4(k), None) => self.v4.remove(&k).is_some(),
            (PrefixKey::V6(k), Some(s)) => self.v6.insert(V6Entry::make(k, s, local)).is_some(),
            (PrefixKey::V6(k), None) => self.v6.remove(&k).is_some(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer side

/// A claim on a prefix: what it maps to and who says so.
type Claim = Slot;

/// The prefixes of an owner record beyond its inline host addresses (see [`OwnerBook`]).
enum ExtraPrefixes {
    Heap(Vec<PrefixKey>),
    Set(HashSet<PrefixKey>),
}

/// Above this many extra prefixes an owner's list becomes a hash set.
const PREFIX_LIST_SET_AT: usize = 32;

impl ExtraPrefixes {
    fn insert(&mut self, key: PrefixKey) {
        match self {
            ExtraPrefixes::Heap(v) => {
                if v.contains(&key) {
                    return;
                }
                if v.len() >= PREFIX_LIST_SET_AT {
                    let mut set: HashSet<PrefixKey> = v.drain(..).collect();
                    set.insert(key);
                    *self = ExtraPrefixes::Set(set);
                } else {
                    v.push(key);
                }
            }
            ExtraPrefixes::Set(s) => {
                s.insert(key);
            }
        }
    }

    /// Removes `key`; returns whether it was there.
    fn remove(&mut self, key: PrefixKey) -> bool {
        match self {
            ExtraPrefixes::Heap(v) => {
                let before = v.len();
                v.retain(|k| *k != key);
                v.len() != before
            }
            ExtraPrefixes::Set(s) => s.remove(&key),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            ExtraPrefixes::Heap(v) => v.is_empty(),
            ExtraPrefixes::Set(s) => s.is_empty(),
        }
    }

    fn keys(&self) -> Vec<PrefixKey> {
        match self {
            ExtraPrefixes::Heap(v) => v.clone(),
            ExtraPrefixes::Set(s) => s.iter().copied().collect(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ExtraPrefixes::Heap(v) => v.capacity() * size_of::<PrefixKey>(),
            ExtraPrefixes::Set(s) => s.capacity() * (size_of::<PrefixKey>() + 1),
        }
    }
}

/// [`OwnerBook::flags`]: the inline IPv4 host address is claimed.
const BOOK_V4: u8 = 1;
/// [`OwnerBook::flags`]: the inline IPv6 host address is claimed.
const BOOK_V6: u8 = 2;
/// [`OwnerBook::flags`]: the record has [`ExtraPrefixes`].
const BOOK_EXTRA: u8 = 4;

/// Writer-side bookkeeping for one owner record: the prefixes it claims (visible or
/// shadowed). A pod claims one IPv4 and one IPv6 host address, which are stored inline (24
/// bytes); anything else goes to the writer's `extra` map.
#[derive(Clone, Copy, Default)]
struct OwnerBook {
    v4: u32,
    v6: [u32; 4],
    flags: u8,
}

impl OwnerBook {
    fn v6(&self) -> u128 {
        self.v6
            .iter()
            .fold(0u128, |acc, w| (acc << 32) | u128::from(*w))
    }

    fn set_v6(&mut self, addr: u128) {
        for (i, w) in self.v6.iter_mut().enumerate() {
            *w = (addr >> (96 - 32 * i)) as u32;
        }
    }

    /// Records `key` inline if it fits; returns whether it is recorded inline now.
    fn insert_inline(&mut self, key: PrefixKey) -> bool {
        match key {
            PrefixKey::V4(k) if k.len == 32 => {
                if self.flags & BOOK_V4 == 0 {
                    self.v4 = k.addr;
                    self.flags |= BOOK_V4;
                    return true;
                }
                self.v4 == k.addr
            }
            PrefixKey::V6(k) if k.len == 128 => {
                if self.flags & BOOK_V6 == 0 {
                    self.set_v6(k.addr);
                    self.flags |= BOOK_V6;
                    return true;
                }
                self.v6() == k.addr
            }
            _ => false,
        }
    }

    /// Drops `key` if recorded inline; returns whether it was.
    fn remove_inline(&mut self, key: PrefixKey) -> bool {
        match key {
            PrefixKey::V4(k) if k.len == 32 && self.flags & BOOK_V4 != 0 && self.v4 == k.addr => {
                self.flags &= !BOOK_V4;
                true
            }
            PrefixKey::V6(k)
                if k.len == 128 && self.flags & BOOK_V6 != 0 && self.v6() == k.addr =>
            {
                self.flags &= !BOOK_V6;
                true
            }
            _ => false,
        }
    }

    fn inline_keys(&self) -> impl Iterator<Item = PrefixKey> {
        let v4 = (self.flags & BOOK_V4 != 0).then(|| PrefixKey::V4(V4Key::new(self.v4, 32)));
        let v6 = (self.flags & BOOK_V6 != 0).then(|| PrefixKey::V6(V6Key::new(self.v6(), 128)));
        v4.into_iter().chain(v6)
    }
}

/// Owner books per chunk: the book table grows a chunk at a time instead of doubling (a
/// million owners would otherwise hold up to twice their books' memory).
const BOOK_CHUNK: usize = 4096;

/// Every owner record's book, indexed by [`OwnerId`].
#[derive(Default)]
struct Books {
    chunks: Vec<Box<[OwnerBook]>>,
    len: usize,
}

impl Books {
    fn get(&self, id: u32) -> Option<&OwnerBook> {
        let i = id as usize;
        if i >= self.len {
            return None;
        }
        self.chunks.get(i / BOOK_CHUNK)?.get(i % BOOK_CHUNK)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut OwnerBook> {
        let i = id as usize;
        if i >= self.len {
            return None;
        }
        self.chunks.get_mut(i / BOOK_CHUNK)?.get_mut(i % BOOK_CHUNK)
    }

    /// Adds an empty book; returns its number.
    fn push(&mut self) -> usize {
        let i = self.len;
        if i / BOOK_CHUNK == self.chunks.len() {
            self.chunks
                .push(vec![OwnerBook::default(); BOOK_CHUNK].into_boxed_slice());
        }
        self.len += 1;
        i
    }

    fn len(&self) -> usize {
        self.len
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Box<[OwnerBook]>>()
            + self.chunks.len() * BOOK_CHUNK * size_of::<OwnerBook>()
    }
}

/// All claims on one prefix, indexed by [`Source::index`]; at most one per source.
type ClaimSet = [Option<Claim>; 3];

/// The writer of an [`IpCache`]: holds the next snapshot and the bookkeeping that enforces
/// ownership (shadowed claims, each owner's prefixes). Publish with [`snapshot`](Self::snapshot).
pub struct IpCacheWriter {
    next: IpCache,
    v4_counts: [usize; 33],
    v6_counts: [usize; 129],
    /// Claims hidden behind a higher source's visible claim, by prefix.
    shadowed: HashMap<PrefixKey, ClaimSet>,
    /// Per owner record, indexed by [`OwnerId`].
    books: Books,
    /// Prefixes of owner records that do not fit their book, by owner number.
    extra: HashMap<u32, ExtraPrefixes>,
    free_ids: Vec<u32>,
    /// Owner records by uid (hash of the uid → ids; several per uid, one per source).
    by_uid: HashTable<u32>,
    uid_hasher: DefaultHashBuilder,
    /// Host prefixes of the local endpoints' addresses (see [`set_local`](Self::set_local)).
    local: HashSet<PrefixKey>,
    /// How many of them have no visible entry to carry their flag.
    orphans: usize,
}

impl Default for IpCacheWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for IpCacheWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpCacheWriter")
            .field("entries", &self.next.len())
            .field("shadowed_prefixes", &self.shadowed.len())
            .field("owners", &self.by_uid.len())
            .field("local_addresses", &self.local.len())
            .finish_non_exhaustive()
    }
}

impl IpCacheWriter {
    /// An empty writer.
    pub fn new() -> Self {
        IpCacheWriter {
            next: IpCache::new(),
            v4_counts: [0; 33],
            v6_counts: [0; 129],
            shadowed: HashMap::new(),
            books: Books::default(),
            extra: HashMap::new(),
            free_ids: Vec::new(),
            by_uid: HashTable::new(),
            uid_hasher: DefaultHashBuilder::default(),
            local: HashSet::new(),
            orphans: 0,
        }
    }

    /// The cache as it stands, to publish (a cheap clone; later writes do not affect it).
    pub fn snapshot(&self) -> IpCache {
        self.next.clone()
    }

    /// The cache as it stands, borrowed.
    pub fn cache(&self) -> &IpCache {
        &self.next
    }

    /// Number of visible entries.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// The visible entry for exactly this prefix (truncated first), with its owner.
    pub fn get(&self, prefix: IpNet) -> Option<(Identity, OwnerRef<'_>)> {
        self.next.get(prefix)
    }

    /// Every visible entry (see [`IpCache::iter`]).
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, IpCacheHit)> + '_ {
        self.next.iter()
    }

    /// Every claim on exactly this prefix, visible one first, then shadowed ones by falling
    /// precedence.
    pub fn claims(&self, prefix: IpNet) -> Vec<(Identity, OwnerRef<'_>)> {
        let claims = self.claim_set(PrefixKey::of(prefix));
        claims
            .iter()
            .rev()
            .flatten()
            .filter_map(|c| Some((c.identity, self.next.owners.get(c.owner)?)))
            .collect()
    }

    /// Number of prefixes with a shadowed claim.
    pub fn shadowed_len(&self) -> usize {
        self.shadowed.len()
    }

    /// Marks `ip` as the address of a local endpoint, or no longer one. The flag rides in the
    /// visible entry of its host prefix (`/32`, `/128`), whoever owns it, so that one lookup
    /// gives both the identity and whether to enforce; it survives the entry being replaced,
    /// taken over or removed and added again. Published snapshots learn which endpoint table
    /// the flags describe from the endpoint table's stamp (`EndpointTable::stamp`), which
    /// `IdentityCache` records in each snapshot it publishes.
    pub fn set_local(&mut self, ip: IpAddr, local: bool) {
        let key = PrefixKey::host(ip);
        let changed = if local {
            self.local.insert(key)
        } else {
            self.local.remove(&key)
        };
        if !changed {
            return;
        }
        match self.next.slot(key) {
            Some(slot) => {
                self.next.store(key, Some(slot), local);
            }
            None if local => self.orphans += 1,
            None => self.orphans -= 1,
        }
        self.next.local_orphans = self.orphans > 0;
    }

    /// Whether `ip` is marked as a local endpoint's address.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local.contains(&PrefixKey::host(ip))
    }

    /// Number of addresses marked local.
    pub fn local_count(&self) -> usize {
        self.local.len()
    }

    /// Heap bytes of the next snapshot ([`IpCache::memory_bytes`]) plus the writer-only
    /// bookkeeping.
    pub fn memory_bytes(&self) -> usize {
        let books = self.books.heap_bytes()
            + self.extra.capacity() * (size_of::<(u32, ExtraPrefixes)>() + 1)
            + self.extra.values().map(|e| e.heap_bytes()).sum::<usize>();
        let shadowed = self.shadowed.capacity() * (size_of::<(PrefixKey, ClaimSet)>() + 1);
        let by_uid = self.by_uid.capacity() * (size_of::<u32>() + 1);
        let local = self.local.capacity() * (size_of::<PrefixKey>() + 1);
        self.next.memory_bytes()
            + books
            + shadowed
            + by_uid
            + local
            + self.free_ids.capacity() * size_of::<u32>()
    }

    /// Maps `prefix` (truncated first) to `identity` on behalf of `owner`.
    ///
    /// The same owner (uid) replaces its claim in place. Another owner whose source is at
    /// least as high takes the prefix over: the previous claim is dropped when its source is
    /// the same (the address was reused) and kept as a shadowed fallback when lower. Another
    /// owner of lower source is stored as a shadowed fallback and is not visible.
    pub fn upsert(
        &mut self,
        prefix: IpNet,
        identity: Identity,
        owner: impl Borrow<Owner>,
    ) -> Result<UpsertOutcome, IpCacheError> {
        let owner = owner.borrow();
        let prefix = prefix.trunc();
        validate(prefix, identity, owner)?;
        let key = PrefixKey::of(prefix);
        let new_id = self.intern(owner)?;

        let mut claims = self.claim_set(key);
        let visible = self.next.slot(key);

        // This owner's previous claim (any source), taken out before the new one goes in.
        let mut previous_own = None;
        for claim in claims.iter_mut() {
            if let Some(c) = *claim
                && self.uid_of(c.owner) == owner.uid
            {
                previous_own = Some(c);
                *claim = None;
            }
        }
        let new = Claim {
            identity,
            owner: new_id,
        };
        let displaced = claims[owner.source.index()].replace(new);
        let top = top_claim(&claims);

        let outcome = if top == Some(new) {
            match (previous_own, visible) {
                (Some(p), Some(v)) if p == v => {
                    if p == new {
                        UpsertOutcome::Unchanged
                    } else {
                        UpsertOutcome::Replaced {
                            previous: p.identity,
                        }
                    }
                }
                (_, Some(v)) => UpsertOutcome::TookOver {
                    previous_owner: self.uid_of(v.owner).to_owned(),
                    previous_identity: v.identity,
                    previous_kept: displaced != Some(v),
                },
                (_, None) => UpsertOutcome::Inserted,
            }
        } else {
            let visible_owner = top
                .map(|t| self.uid_of(t.owner).to_owned())
                .unwrap_or_default();
            UpsertOutcome::Shadowed { visible_owner }
        };

        self.store_claims(key, &claims);
        match previous_own {
            Some(p) if p.owner == new_id => {}
            Some(p) => {
                self.add_ref(new_id, key);
                self.drop_ref(p.owner, key);
            }
            None => self.add_ref(new_id, key),
        }
        if let Some(d) = displaced {
            self.drop_ref(d.owner, key);
        }
        Ok(outcome)
    }

    /// Removes the claim of the owner `owner_uid` on `prefix` (truncated first). Claims of
    /// other owners are never touched: a delete by anyone but the visible owner leaves the
    /// visible entry as it is. When the visible claim goes and a shadowed one exists, the
    /// shadowed one becomes visible in the same update.
    pub fn remove(&mut self, prefix: IpNet, owner_uid: &str) -> RemoveOutcome {
        let key = PrefixKey::of(prefix);
        let Some(visible) = self.next.slot(key) else {
            return RemoveOutcome::NotFound;
        };
        let mut claims = self.claim_set(key);
        let Some(position) = claims
            .iter()
            .position(|c| c.is_some_and(|c| self.uid_of(c.owner) == owner_uid))
        else {
            return RemoveOutcome::NotOwner {
                visible_owner: self.uid_of(visible.owner).to_owned(),
            };
        };
        let Some(removed) = claims[position].take() else {
            return RemoveOutcome::NotFound;
        };
        let outcome = if removed == visible {
            match top_claim(&claims) {
                Some(t) => RemoveOutcome::Revealed {
                    removed: removed.identity,
                    identity: t.identity,
                    owner: self.uid_of(t.owner).to_owned(),
                },
                None => RemoveOutcome::Removed {
                    identity: removed.identity,
                },
            }
        } else {
            RemoveOutcome::RemovedShadowed {
                identity: removed.identity,
            }
        };
        self.store_claims(key, &claims);
        self.drop_ref(removed.owner, key);
        outcome
    }

    /// Removes every claim of the owner `owner_uid`, from every source (the pod is gone).
    /// Returns the prefixes it had claimed, visible or shadowed, sorted.
    pub fn remove_owner(&mut self, owner_uid: &str) -> Vec<IpNet> {
        let hash = self.uid_hasher.hash_one(owner_uid);
        let owners = &self.next.owners;
        let ids: Vec<u32> = self
            .by_uid
            .iter_hash(hash)
            .copied()
            .filter(|&id| owners.get(OwnerId(id)).is_some_and(|o| o.uid == owner_uid))
            .collect();
        let mut removed = Vec::new();
        for id in ids {
            let keys = self.keys_of(id);
            for key in keys {
                let mut claims = self.claim_set(key);
                let mut found = false;
                for claim in claims.iter_mut() {
                    if claim.is_some_and(|c| c.owner.0 == id) {
                        *claim = None;
                        found = true;
                    }
                }
                if found {
                    self.store_claims(key, &claims);
                    removed.extend(key.net());
                }
                self.drop_ref(OwnerId(id), key);
            }
        }
        removed.sort();
        removed.dedup();
        removed
    }

    // --- internals ---

    fn uid_of(&self, id: OwnerId) -> &str {
        self.next.owners.get(id).map_or("", |o| o.uid)
    }

    fn source_of(&self, id: OwnerId) -> Source {
        self.next.owners.get(id).map_or(Source::File, |o| o.source)
    }

    /// Every claim on `key`, visible and shadowed, by source.
    fn claim_set(&self, key: PrefixKey) -> ClaimSet {
        let mut claims = self.shadowed.get(&key).copied().unwrap_or_default();
        if let Some(slot) = self.next.slot(key) {
            claims[self.source_of(slot.owner).index()] = Some(slot);
        }
        claims
    }

    /// Makes the highest claim visible and keeps the rest as shadowed.
    fn store_claims(&mut self, key: PrefixKey, claims: &ClaimSet) {
        let mut rest = *claims;
        let top = rest.iter_mut().rev().find_map(Option::take);
        self.set_visible(key, top);
        if rest.iter().any(Option::is_some) {
            self.shadowed.insert(key, rest);
        } else {
            self.shadowed.remove(&key);
        }
    }

    fn set_visible(&mut self, key: PrefixKey, slot: Option<Slot>) {
        if slot == self.next.slot(key) {
            // Nothing visible changes: leave the shards shared with published snapshots (a
            // relist that upserts everything again must not copy the whole table).
            return;
        }
        let local = !self.local.is_empty() && self.local.contains(&key);
        let existed = self.next.store(key, slot, local);
        if local {
            match (existed, slot.is_some()) {
                (false, true) => self.orphans -= 1,
                (true, false) => self.orphans += 1,
                _ => {}
            }
            self.next.local_orphans = self.orphans > 0;
        }
        let (count, bit, word) = match key {
            PrefixKey::V4(k) => {
                let len = usize::from(k.len).min(32);
                (
                    &mut self.v4_counts[len],
                    1u64 << len,
                    &mut self.next.v4_lens,
                )
            }
            PrefixKey::V6(k) => {
                let len = usize::from(k.len).min(128);
                (
                    &mut self.v6_counts[len],
                    1u64 << (len % 64),
                    &mut self.next.v6_lens[len / 64],
                )
            }
        };
        match (existed, slot.is_some()) {
            (false, true) => *count += 1,
            (true, false) => *count = count.saturating_sub(1),
            _ => {}
        }
        if *count > 0 {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// The record for (uid, source), created if new; namespace and name are refreshed.
    fn intern(&mut self, owner: &Owner) -> Result<OwnerId, IpCacheError> {
        let hash = self.uid_hasher.hash_one(owner.uid.as_str());
        let owners = &self.next.owners;
        let found = self.by_uid.find(hash, |&id| {
            owners
                .get(OwnerId(id))
                .is_some_and(|o| o.uid == owner.uid && o.source == owner.source)
        });
        if let Some(&id) = found {
            let id = OwnerId(id);
            let stale = self
                .next
                .owners
                .get(id)
                .is_some_and(|o| o.namespace != owner.namespace || o.name != owner.name);
            if stale {
                self.next.owners.put(id, owner);
            }
            return Ok(id);
        }
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.books.len())
                    .ok()
                    .filter(|id| *id <= MAX_OWNER_ID)
                    .ok_or(IpCacheError::TooManyOwners {
                        max: u64::from(MAX_OWNER_ID) + 1,
                    })?;
                self.books.push();
                id
            }
        };
        if let Some(book) = self.books.get_mut(id) {
            *book = OwnerBook::default();
        }
        self.next.owners.put(OwnerId(id), owner);
        let (owners, hasher) = (&self.next.owners, &self.uid_hasher);
        self.by_uid.insert_unique(hash, id, |&x| {
            hasher.hash_one(owners.get(OwnerId(x)).map_or("", |o| o.uid))
        });
        Ok(OwnerId(id))
    }

    /// Every prefix the record `id` claims.
    fn keys_of(&self, id: u32) -> Vec<PrefixKey> {
        let Some(book) = self.books.get(id) else {
            return Vec::new();
        };
        let mut keys: Vec<PrefixKey> = book.inline_keys().collect();
        if book.flags & BOOK_EXTRA != 0
            && let Some(extra) = self.extra.get(&id)
        {
            keys.extend(extra.keys());
        }
        keys
    }

    fn add_ref(&mut self, id: OwnerId, key: PrefixKey) {
        let Some(book) = self.books.get_mut(id.0) else {
            return;
        };
        if book.insert_inline(key) {
            return;
        }
        book.flags |= BOOK_EXTRA;
        self.extra
            .entry(id.0)
            .or_insert_with(|| ExtraPrefixes::Heap(Vec::new()))
            .insert(key);
    }

    /// Drops `id`'s claim on `key` from its book and frees the record when it has no claims.
    fn drop_ref(&mut self, id: OwnerId, key: PrefixKey) {
        let Some(book) = self.books.get_mut(id.0) else {
            return;
        };
        if !book.remove_inline(key)
            && book.flags & BOOK_EXTRA != 0
            && let Some(extra) = self.extra.get_mut(&id.0)
        {
            extra.remove(key);
            if extra.is_empty() {
                self.extra.remove(&id.0);
                book.flags &= !BOOK_EXTRA;
            }
        }
        if book.flags != 0 || self.next.owners.get(id).is_none() {
            return;
        }
        *book = OwnerBook::default();
        let hash = self.uid_hasher.hash_one(self.uid_of(id));
        if let Ok(entry) = self.by_uid.find_entry(hash, |&x| x == id.0) {
            entry.remove();
        }
        self.next.owners.clear(id);
        self.free_ids.push(id.0);
    }
}

fn validate(prefix: IpNet, identity: Identity, owner: &Owner) -> Result<(), IpCacheError> {
    if identity == Identity::UNKNOWN {
        return Err(IpCacheError::UnknownIdentity { prefix });
    }
    if owner.uid.is_empty() {
        return Err(IpCacheError::EmptyOwnerUid { prefix });
    }
    for (field, value) in [
        ("uid", &owner.uid),
        ("namespace", &owner.namespace),
        ("name", &owner.name),
    ] {
        if value.len() > MAX_OWNER_FIELD {
            return Err(IpCacheError::OwnerFieldTooLong {
                field,
                len: value.len(),
                max: MAX_OWNER_FIELD,
            });
        }
    }
    Ok(())
}

/// The claim of the highest source.
fn top_claim(claims: &ClaimSet) -> Option<Claim> {
    claims.iter().rev().flatten().next().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pod(uid: &str) -> Owner {
        Owner::new(Source::ApiServer, uid, "default", format!("pod-{uid}"))
    }

    fn id_at(cache: &IpCache, addr: &str) -> Option<u64> {
        cache.lookup(ip(addr)).map(|h| h.identity.0)
    }

    #[test]
    fn longest_prefix_wins_for_ipv4_including_default_and_host_routes() {
        let mut w = IpCacheWriter::new();
        w.upsert(net("0.0.0.0/0"), Identity(2), pod("world"))
            .unwrap();
        w.upsert(net("10.0.0.0/8"), Identity(300), pod("a"))
            .unwrap();
        w.upsert(net("10.1.0.0/16"), Identity(301), pod("b"))
            .unwrap();
        w.upsert(net("10.1.2.3/32"), Identity(302), pod("c"))
            .unwrap();
        let c = w.snapshot();
        assert_eq!(id_at(&c, "10.1.2.3"), Some(302));
        assert_eq!(id_at(&c, "10.1.2.4"), Some(301));
        assert_eq!(id_at(&c, "10.2.0.1"), Some(300));
        assert_eq!(id_at(&c, "192.168.0.1"), Some(2));
        let hit = c.lookup(ip("10.1.2.3")).unwrap();
        assert_eq!(hit.prefix_len, 32);
        assert_eq!(c.owner(hit.owner).unwrap().uid, "c");
        assert_eq!(c.lookup(ip("8.8.8.8")).unwrap().prefix_len, 0);
        // No IPv6 entries: an IPv6 address matches nothing, not the IPv4 default.
        assert_eq!(c.lookup(ip("::1")), None);
        assert_eq!(c.lookup(ip("::ffff:10.1.2.3")), None);
    }

    #[test]
    fn longest_prefix_wins_for_ipv6_including_default_and_host_routes() {
        let mut w = IpCacheWriter::new();
        w.upsert(net("::/0"), Identity(10), pod("world")).unwrap();
        w.upsert(net("fd00::/8"), Identity(400), pod("a")).unwrap();
        w.upsert(net("fd00:1::/64"), Identity(401), pod("b"))
            .unwrap();
        w.upsert(net("fd00:1::5/128"), Identity(402), pod("c"))
            .unwrap();
        w.upsert(net("fd00:1::4/127"), Identity(403), pod("d"))
            .unwrap();
        let c = w.snapshot();
        assert_eq!(id_at(&c, "fd00:1::5"), Some(402));
        assert_eq!(id_at(&c, "fd00:1::4"), Some(403));
        assert_eq!(id_at(&c, "fd00:1::6"), Some(401));
        assert_eq!(id_at(&c, "fd00:2::1"), Some(400));
        assert_eq!(id_at(&c, "2001:db8::1"), Some(10));
        assert_eq!(c.lookup(ip("fd00:1::5")).unwrap().prefix_len, 128);
        assert_eq!(c.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn prefixes_are_truncated_and_removing_the_last_of_a_length_stops_matching_it() {
        let mut w = IpCacheWriter::new();
        w.upsert(net("10.1.2.3/16"), Identity(300), pod("a"))
            .unwrap();
        assert_eq!(w.get(net("10.1.0.0/16")).unwrap().0, Identity(300));
        assert_eq!(id_at(w.cache(), "10.1.200.1"), Some(300));
        assert_eq!(
            w.remove(net("10.1.9.9/16"), "a"),
            RemoveOutcome::Removed {
                identity: Identity(300)
            }
        );
        assert_eq!(id_at(w.cache(), "10.1.200.1"), None);
        assert!(w.is_empty());
        assert_eq!(w.cache().v4_lens, 0);
    }

    #[test]
    fn upsert_by_same_owner_replaces_in_place_and_old_snapshots_keep_their_view() {
        let mut w = IpCacheWriter::new();
        assert_eq!(
            w.upsert(net("10.0.0.5/32"), Identity(300), pod("a")),
            Ok(UpsertOutcome::Inserted)
        );
        let before = w.snapshot();
        assert_eq!(
            w.upsert(net("10.0.0.5/32"), Identity(301), pod("a")),
            Ok(UpsertOutcome::Replaced {
                previous: Identity(300)
            })
        );
        assert_eq!(
            w.upsert(net("10.0.0.5/32"), Identity(301), pod("a")),
            Ok(UpsertOutcome::Unchanged)
        );
        assert_eq!(id_at(&before, "10.0.0.5"), Some(300));
        assert_eq!(id_at(w.cache(), "10.0.0.5"), Some(301));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn ip_reuse_by_a_new_pod_survives_the_old_pods_late_delete() {
        let mut w = IpCacheWriter::new();
        w.upsert(net("10.0.0.5/32"), Identity(300), pod("a"))
            .unwrap();
        let outcome = w
            .upsert(net("10.0.0.5/32"), Identity(500), pod("b"))
            .unwrap();
        assert_eq!(
            outcome,
            UpsertOutcome::TookOver {
                previous_owner: "a".into(),
                previous_identity: Identity(300),
                previous_kept: false,
            }
        );
        assert_eq!(
            w.remove(net("10.0.0.5/32"), "a"),
            RemoveOutcome::NotOwner {
                visible_owner: "b".into()
            }
        );
        assert_eq!(w.remove_owner("a"), Vec::<IpNet>::new());
        let (identity, owner) = w.get(net("10.0.0.5/32")).unwrap();
        assert_eq!(
            (identity, owner.uid, owner.name),
            (Identity(500), "b", "pod-b")
        );
        assert_eq!(id_at(w.cache(), "10.0.0.5"), Some(500));
    }

    #[test]
    fn lower_source_is_shadowed_and_revealed_when_the_visible_owner_goes() {
        let mut w = IpCacheWriter::new();
        let local = Owner::new(Source::Local, "cni-x", "default", "x");
        let api = Owner::new(Source::ApiServer, "pod-y", "default", "y");
        let file = Owner::new(Source::File, "file-z", "", "z");
        assert_eq!(
            w.upsert(net("10.0.0.7/32"), Identity(300), &local),
            Ok(UpsertOutcome::Inserted)
        );
        assert_eq!(
            w.upsert(net("10.0.0.7/32"), Identity(301), &api),
            Ok(UpsertOutcome::TookOver {
                previous_owner: "cni-x".into(),
                previous_identity: Identity(300),
                previous_kept: true,
            })
        );
        assert_eq!(
            w.upsert(net("10.0.0.7/32"), Identity(302), &file),
            Ok(UpsertOutcome::Shadowed {
                visible_owner: "pod-y".into()
            })
        );
        assert_eq!(id_at(w.cache(), "10.0.0.7"), Some(301));
        let claims: Vec<_> = w
            .claims(net("10.0.0.7/32"))
            .iter()
            .map(|c| c.1.uid)
            .collect();
        assert_eq!(claims, ["pod-y", "cni-x", "file-z"]);

        let before = w.snapshot();
        assert_eq!(
            w.remove(net("10.0.0.7/32"), "pod-y"),
            RemoveOutcome::Revealed {
                removed: Identity(301),
                identity: Identity(300),
                owner: "cni-x".into()
            }
        );
        // Readers go from one complete state to the next: there is no snapshot without an entry.
        assert_eq!(id_at(&before, "10.0.0.7"), Some(301));
        assert_eq!(id_at(w.cache(), "10.0.0.7"), Some(300));
        assert_eq!(
            w.remove(net("10.0.0.7/32"), "file-z"),
            RemoveOutcome::RemovedShadowed {
                identity: Identity(302)
            }
        );
        assert_eq!(
            w.remove(net("10.0.0.7/32"), "cni-x"),
            RemoveOutcome::Removed {
                identity: Identity(300)
            }
        );
        assert_eq!(
            w.remove(net("10.0.0.7/32"), "cni-x"),
            RemoveOutcome::NotFound
        );
        assert_eq!(w.shadowed_len(), 0);
    }

    #[test]
    fn same_source_newcomer_replaces_the_shadowed_claim_at_that_level() {
        let mut w = IpCacheWriter::new();
        w.upsert(net("10.0.0.8/32"), Identity(300), pod("api"))
            .unwrap();
        w.upsert(
            net("10.0.0.8/32"),
            Identity(301),
            Owner::new(Source::Local, "l1", "", ""),
        )
        .unwrap();
        w.upsert(
            net("10.0.0.8/32"),
            Identity(302),
            Owner::new(Source::Local, "l2", "", ""),
        )
        .unwrap();
        let claims: Vec<_> = w
            .claims(net("10.0.0.8/32"))
            .iter()
            .map(|c| c.1.uid)
            .collect();
        assert_eq!(claims, ["api", "l2"]);
        assert_eq!(
            w.remove(net("10.0.0.8/32"), "l1"),
            RemoveOutcome::NotOwner {
                visible_owner: "api".into()
            }
        );
    }

    #[test]
    fn remove_owner_drops_every_claim_and_reveals_fallbacks() {
        let mut w = IpCacheWriter::new();
        let a = pod("a");
        w.upsert(net("10.0.0.1/32"), Identity(300), &a).unwrap();
        w.upsert(net("fd00::1/128"), Identity(300), &a).unwrap();
        w.upsert(
            net("10.0.0.2/32"),
            Identity(301),
            Owner::new(Source::Local, "l", "", ""),
        )
        .unwrap();
        w.upsert(net("10.0.0.2/32"), Identity(300), &a).unwrap();
        w.upsert(net("10.0.0.3/32"), Identity(302), pod("b"))
            .unwrap();
        let hit = w.cache().lookup(ip("10.0.0.1")).unwrap();
        assert_eq!(
            hit.owner,
            w.cache().lookup(ip("fd00::1")).unwrap().owner,
            "one record"
        );

        let removed = w.remove_owner("a");
        assert_eq!(
            removed,
            vec![net("10.0.0.1/32"), net("10.0.0.2/32"), net("fd00::1/128")]
        );
        let c = w.snapshot();
        assert_eq!(id_at(&c, "10.0.0.1"), None);
        assert_eq!(id_at(&c, "fd00::1"), None);
        assert_eq!(id_at(&c, "10.0.0.2"), Some(301));
        assert_eq!(id_at(&c, "10.0.0.3"), Some(302));
        assert_eq!(
            c.owner(hit.owner),
            None,
            "the record is freed with its last claim"
        );
        assert_eq!(w.len(), 2);
        assert!(w.remove_owner("a").is_empty());
    }

    #[test]
    fn owner_records_are_reused_and_refreshed() {
        let mut w = IpCacheWriter::new();
        w.upsert(net("10.0.0.1/32"), Identity(300), pod("a"))
            .unwrap();
        w.upsert(
            net("10.0.0.1/32"),
            Identity(300),
            Owner::new(Source::ApiServer, "a", "ns2", "n2"),
        )
        .unwrap();
        let (_, owner) = w.get(net("10.0.0.1/32")).unwrap();
        assert_eq!((owner.namespace, owner.name), ("ns2", "n2"));
        w.remove_owner("a");
        w.upsert(net("10.0.0.9/32"), Identity(301), pod("c"))
            .unwrap();
        let hit = w.cache().lookup(ip("10.0.0.9")).unwrap();
        assert_eq!(hit.owner, OwnerId(0), "freed owner numbers are reused");
        assert_eq!(w.cache().owner(hit.owner).unwrap().to_owner(), pod("c"));
    }

    #[test]
    fn invalid_upserts_are_refused_and_change_nothing() {
        let mut w = IpCacheWriter::new();
        assert_eq!(
            w.upsert(net("10.0.0.1/32"), Identity::UNKNOWN, pod("a")),
            Err(IpCacheError::UnknownIdentity {
                prefix: net("10.0.0.1/32")
            })
        );
        assert_eq!(
            w.upsert(net("10.0.0.1/32"), Identity(300), pod("")),
            Err(IpCacheError::EmptyOwnerUid {
                prefix: net("10.0.0.1/32")
            })
        );
        let long = Owner::new(Source::File, "u", "", "x".repeat(MAX_OWNER_FIELD + 1));
        let err = w
            .upsert(net("10.0.0.1/32"), Identity(300), long)
            .unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        assert!(w.is_empty());
        assert_eq!(w.cache().owner(OwnerId(0)), None);
    }

    #[test]
    fn owner_chunks_compact_after_churn() {
        let mut w = IpCacheWriter::new();
        for round in 0..50u64 {
            for i in 0..200u32 {
                let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
                let o = Owner::new(
                    Source::ApiServer,
                    format!("{round}-{i}"),
                    "ns",
                    "n".repeat(40),
                );
                w.upsert(IpNet::from(addr), Identity(300 + round), o)
                    .unwrap();
            }
        }
        assert_eq!(w.len(), 200);
        assert_eq!(w.by_uid.len(), 200);
        let bytes = w.cache().owners.memory_bytes();
        assert!(
            bytes < 64 * 1024,
            "owner arenas hold {bytes} bytes for 200 owners"
        );
        for i in 0..200u32 {
            let hit = w
                .cache()
                .lookup(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                .unwrap();
            assert_eq!(hit.identity, Identity(349));
            assert_eq!(w.cache().owner(hit.owner).unwrap().uid, format!("49-{i}"));
        }
    }

    #[test]
    fn the_local_flag_follows_the_address_through_every_change_of_its_entry() {
        let mut w = IpCacheWriter::new();
        let a = ip("10.0.0.5");
        let (v6, cover) = (ip("fd00::5"), net("10.0.0.0/24"));
        let stamp = 7;
        let resolve = |c: &IpCache, addr| c.clone().with_local_stamp(stamp).resolve(addr, stamp);

        // Marked before any entry exists: an orphan, so misses cannot say "not local".
        w.set_local(a, true);
        assert_eq!(resolve(w.cache(), a).local, None);
        assert_eq!(resolve(w.cache(), ip("10.9.9.9")).local, None);
        w.upsert(net("10.0.0.5/32"), Identity(300), pod("p"))
            .unwrap();
        w.upsert(cover, Identity(301), pod("cover")).unwrap();
        assert_eq!(w.cache().local_flag(a), Some(true));
        assert_eq!(
            resolve(w.cache(), a),
            Resolved {
                identity: Some(Identity(300)),
                local: Some(true)
            }
        );
        // A shorter prefix's hit and a miss say "not local" once no local address is orphaned.
        assert_eq!(resolve(w.cache(), ip("10.0.0.6")).local, Some(false));
        assert_eq!(resolve(w.cache(), ip("8.8.8.8")).local, Some(false));
        // Another stamp: the flags say nothing.
        assert_eq!(
            w.cache()
                .clone()
                .with_local_stamp(stamp)
                .resolve(a, 8)
                .local,
            None
        );

        // Replaced in place, taken over by another owner, revealed again: the flag stays.
        let before = w.snapshot();
        w.upsert(net("10.0.0.5/32"), Identity(302), pod("p"))
            .unwrap();
        w.upsert(net("10.0.0.5/32"), Identity(303), pod("q"))
            .unwrap();
        assert_eq!(w.cache().local_flag(a), Some(true));
        w.remove(net("10.0.0.5/32"), "q");
        // Gone: an orphan again, and the covering prefix's hit cannot say "not local".
        assert_eq!(w.cache().local_flag(a), None);
        assert_eq!(
            resolve(w.cache(), a),
            Resolved {
                identity: Some(Identity(301)),
                local: None
            }
        );
        w.upsert(net("10.0.0.5/32"), Identity(304), pod("r"))
            .unwrap();
        assert_eq!(resolve(w.cache(), a).local, Some(true));

        // Cleared: the entry stays, without the flag; the old snapshot keeps its view.
        w.set_local(a, false);
        assert_eq!(w.cache().local_flag(a), Some(false));
        assert_eq!(resolve(w.cache(), a).local, Some(false));
        assert_eq!(before.local_flag(a), Some(true));
        assert_eq!(w.cache().lookup(a).unwrap().identity, Identity(304));

        // IPv6, and an owner record that carries the flag bit never leaks it.
        w.set_local(v6, true);
        w.upsert(net("fd00::5/128"), Identity(305), pod("r"))
            .unwrap();
        let hit = w.cache().lookup(v6).unwrap();
        assert_eq!(w.cache().owner(hit.owner).unwrap().uid, "r");
        assert_eq!(resolve(w.cache(), v6).local, Some(true));
        assert_eq!(w.local_count(), 1);
        w.remove_owner("r");
        assert_eq!(
            resolve(w.cache(), v6).local,
            None,
            "orphaned by the removal"
        );
        w.set_local(v6, false);
        assert_eq!(resolve(w.cache(), ip("fd00::6")).local, Some(false));
        assert_eq!(w.local_count(), 0);
    }

    #[test]
    fn a_million_entries_with_one_owner_per_two_fit_in_100_mb() {
        let mut w = IpCacheWriter::new();
        for i in 0..500_000u32 {
            let owner = Owner::new(
                Source::ApiServer,
                format!("{i:08x}-1c0e-4a7b-9f3d-5e6a7b8c9d0e"),
                "production",
                format!("frontend-5d8f7c9b6-{i:05x}"),
            );
            let v4 = IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            let v6 = IpNet::from(IpAddr::V6(Ipv6Addr::from(
                0xfd00_u128 << 112 | u128::from(i),
            )));
            w.upsert(v4, Identity(1000 + u64::from(i % 100)), &owner)
                .unwrap();
            w.upsert(v6, Identity(1000 + u64::from(i % 100)), &owner)
                .unwrap();
        }
        assert_eq!(w.len(), 1_000_000);
        let snapshot = w.cache().memory_bytes();
        let total = w.memory_bytes();
        assert!(snapshot < 100_000_000, "snapshot holds {snapshot} bytes");
        assert!(
            total < 100_000_000,
            "writer and snapshot hold {total} bytes"
        );
        let hit = w.cache().lookup(ip("10.7.161.31")).unwrap();
        assert_eq!(w.cache().owner(hit.owner).unwrap().namespace, "production");
    }

    /// A reference LPM: scan every prefix.
    fn naive(entries: &[(IpNet, u64)], addr: IpAddr) -> Option<(u64, u8)> {
        entries
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(n, id)| (*id, n.prefix_len()))
    }

    fn arb_v4() -> impl Strategy<Value = IpAddr> {
        // Addresses from a narrow pool so prefixes overlap and nest.
        (0u32..4, 0u32..4, any::<u8>()).prop_map(|(a, b, c)| {
            IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000 | a << 16 | b << 8 | u32::from(c % 8),
            ))
        })
    }

    fn arb_v6() -> impl Strategy<Value = IpAddr> {
        (0u128..4, 0u128..4, 0u128..8).prop_map(|(a, b, c)| {
            IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | a << 80 | b << 8 | c))
        })
    }

    fn arb_prefix() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (arb_v4(), 0u8..=32).prop_map(|(a, l)| IpNet::new(a, l).unwrap().trunc()),
            (arb_v4(), 20u8..=32).prop_map(|(a, l)| IpNet::new(a, l).unwrap().trunc()),
            (arb_v6(), 0u8..=128).prop_map(|(a, l)| IpNet::new(a, l).unwrap().trunc()),
            (arb_v6(), 100u8..=128).prop_map(|(a, l)| IpNet::new(a, l).unwrap().trunc()),
        ]
    }

    proptest! {
        #[test]
        fn lookup_matches_a_linear_scan(
            ops in proptest::collection::vec((arb_prefix(), 256u64..300, any::<bool>()), 1..60),
            probes in proptest::collection::vec(prop_oneof![arb_v4(), arb_v6()], 1..60),
        ) {
            let mut w = IpCacheWriter::new();
            let mut reference: Vec<(IpNet, u64)> = Vec::new();
            for (prefix, identity, insert) in ops {
                let uid = format!("owner-{prefix}");
                if insert {
                    w.upsert(prefix, Identity(identity), pod(&uid)).unwrap();
                    reference.retain(|(n, _)| *n != prefix);
                    reference.push((prefix, identity));
                } else {
                    w.remove(prefix, &uid);
                    reference.retain(|(n, _)| *n != prefix);
                }
            }
            let cache = w.snapshot();
            prop_assert_eq!(cache.len(), reference.len());
            for addr in probes {
                let got = cache.lookup(addr).map(|h| (h.identity.0, h.prefix_len));
                prop_assert_eq!(got, naive(&reference, addr), "address {}", addr);
            }
            for (prefix, _) in &reference {
                let got = cache.lookup(prefix.network()).map(|h| (h.identity.0, h.prefix_len));
                prop_assert_eq!(got, naive(&reference, prefix.network()));
            }
        }

        #[test]
        fn ownership_rules_match_a_plain_model(
            ops in proptest::collection::vec((0u8..3, 0usize..4, 0usize..3, 0usize..3, 256u64..260), 1..80),
        ) {
            const PREFIXES: [&str; 4] = ["10.0.0.1/32", "10.0.0.0/24", "fd00::1/128", "0.0.0.0/0"];
            const UIDS: [&str; 3] = ["a", "b", "c"];
            // prefix → claims (uid, source, identity), at most one per uid and one per source.
            let mut model: std::collections::BTreeMap<IpNet, Vec<(&str, Source, u64)>> =
                Default::default();
            let mut w = IpCacheWriter::new();
            for (op, p, u, src, identity) in ops {
                let (prefix, uid, source) = (net(PREFIXES[p]), UIDS[u], Source::ALL[src]);
                match op {
                    0 => {
                        let owner = Owner::new(source, uid, "ns", format!("pod-{uid}"));
                        w.upsert(prefix, Identity(identity), owner).unwrap();
                        let claims = model.entry(prefix).or_default();
                        claims.retain(|c| c.0 != uid && c.1 != source);
                        claims.push((uid, source, identity));
                    }
                    1 => {
                        w.remove(prefix, uid);
                        model.entry(prefix).or_default().retain(|c| c.0 != uid);
                    }
                    _ => {
                        w.remove_owner(uid);
                        for claims in model.values_mut() {
                            claims.retain(|c| c.0 != uid);
                        }
                    }
                }
            }
            model.retain(|_, claims| !claims.is_empty());
            prop_assert_eq!(w.len(), model.len());
            for p in PREFIXES {
                let mut expected = model.get(&net(p)).cloned().unwrap_or_default();
                expected.sort_by_key(|c| std::cmp::Reverse(c.1));
                let got: Vec<_> = w
                    .claims(net(p))
                    .iter()
                    .map(|(id, o)| (o.uid.to_owned(), o.source, id.0))
                    .collect();
                let expected: Vec<_> =
                    expected.iter().map(|c| (c.0.to_owned(), c.1, c.2)).collect();
                prop_assert_eq!(&got, &expected, "claims on {}", p);
                let visible = w.get(net(p)).map(|(id, o)| (o.uid.to_owned(), id.0));
                prop_assert_eq!(visible, expected.first().map(|c| (c.0.clone(), c.2)));
            }
            // Owner records are freed with their last claim.
            let records: std::collections::BTreeSet<_> =
                model.values().flatten().map(|c| (c.0, c.1)).collect();
            prop_assert_eq!(w.by_uid.len(), records.len());
        }
    }
}
