//! Loading, pinning, attaching and feeding the steering program.
//!
//! Maps are pinned by name under a per-instance directory of `/sys/fs/bpf`, and so is each
//! interface's XDP link; a restarted agent re-opens the pinned maps (their contents stay in
//! force meanwhile) and swaps its freshly loaded program into the pinned links atomically, so
//! enforcement never lapses across a restart. Map contents are synced from identity-cache
//! snapshots as a diff against what the kernel holds: upserts first, then deletions, never a
//! clear-and-refill.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray, RingBuf, XskMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use identity_cache::state::Snapshot;
use ipnet::IpNet;

use crate::abi::{
    CFG_ALLOW_FROM_HOST, CFG_CIDR_SELECTS_PODS, CFG_EVENTS_ALLOWED, CFG_FAIL_OPEN, CNT_DROP_BASE,
    CNT_MAX, Config, CounterValue, EndpointValue, IpcacheValue, LocalPolicyValue, PolicyKeyData,
    PolicyValue, VerdictEvent, XSK_SLOTS, XskSlotKey,
};
use crate::ipcache_map::{
    InterfaceFacts, PrefixKey, cidr_entries, endpoint_entries, ipcache_entries, ipcache_entry,
};
use crate::policy_map::{PolicyKey, PolicyKeyOrd, kernel_policy};

/// Name of the steering program in the object.
const PROGRAM: &str = "sluice_steer";

/// The maps the loader writes, with their names in the object.
const MAP_NAMES: [&str; 11] = [
    "ipcache_v4",
    "ipcache_v6",
    "cidr_v4",
    "cidr_v6",
    "endpoints",
    "local_policy",
    "policy",
    "redirect_devmap",
    "xsks",
    "xsk_slots",
    "config",
];

/// Errors from loading, attaching and syncing.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// bpffs is not mounted where pins must live.
    #[error("{0} is not a bpf filesystem: mount it with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs(PathBuf),
    /// A filesystem operation on the pin directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The object could not be loaded (verifier, missing map, permissions).
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program operation failed.
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    /// A map the program must have is missing.
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    /// The steering program is missing from the object.
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The error.
        source: MapError,
    },
    /// A map has no room for the entries a sync needs; nothing was truncated.
    #[error("map {map} is full: {needed} entries needed, room for {max}")]
    MapFull {
        /// The map.
        map: &'static str,
        /// Entries the sync needs.
        needed: usize,
        /// The map's capacity.
        max: u32,
    },
    /// The interface does not exist.
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    /// Pinning or unpinning a link failed.
    #[error("link pin {path}: {reason}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> LoaderError {
    move |source| LoaderError::Map { map, source }
}

/// Whether a delete failed only because the key was not there. aya reports `ENOENT` from
/// `bpf_map_delete_elem` as a syscall error, and the kernel deletes entries itself: a devmap
/// entry when its interface goes away (a pod's veth deleted before the agent syncs), a socket
/// map entry when its socket closes.
fn key_was_absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode.
    Driver,
    /// Generic (skb) mode, the fallback when the driver has no XDP support.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// Settings of the loaded program: what it reads from its config map, and the size of its flow
/// cache (fixed when the program is loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathSettings {
    /// With no socket bound for a queue, pass packets without policy instead of enforcing in
    /// the kernel. Off by default; the loader logs a warning when it is on.
    pub fail_open: bool,
    /// Host → local endpoint ingress is always allowed. [`Dataplane::sync`] sets it from the
    /// snapshot's `EnforcementConfig`, so the kernel decides as the compiled tables do.
    pub allow_from_host: bool,
    /// CIDR rules also match pod addresses (Kubernetes semantics); set by `sync` like
    /// `allow_from_host`.
    pub cidr_selects_pods: bool,
    /// Emit verdict events for allowed packets too.
    pub events_for_allowed: bool,
    /// Verdict events per second per CPU (0: none).
    pub events_per_sec: u32,
    /// Kernel memory for the in-kernel path's per-CPU flow cache, all CPUs together; the
    /// loader turns it into sets per CPU with [`flow_cache_set_bits`].
    pub flow_cache_bytes: usize,
}

/// Bytes of one flow-cache entry (`struct sl_flow_entry` in `bpf/flowcache.h`).
pub const FLOW_CACHE_ENTRY_BYTES: usize = 120;
/// Fewest sets per CPU (2 ways each): the cache as compiled, 4,096 entries.
pub const FLOW_CACHE_MIN_SET_BITS: u32 = 11;
/// Most sets per CPU: 65,536 entries (7.5 MiB per CPU).
pub const FLOW_CACHE_MAX_SET_BITS: u32 = 15;

/// Sets per CPU (as a power of two) of a flow cache of `budget_bytes` over `possible_cpus`
/// CPUs: the largest that fits, within [`FLOW_CACHE_MIN_SET_BITS`] and
/// [`FLOW_CACHE_MAX_SET_BITS`]. The default 32 MiB gives 32,768 sets on 2 CPUs, 8,192 on 16
/// and the minimum of 2,048 from 64 CPUs up.
pub fn flow_cache_set_bits(budget_bytes: usize, possible_cpus: usize) -> u32 {
    let sets = budget_bytes / (FLOW_CACHE_ENTRY_BYTES * 2 * possible_cpus.max(1));
    let bits = if sets == 0 { 0 } else { sets.ilog2() };
    bits.clamp(FLOW_CACHE_MIN_SET_BITS, FLOW_CACHE_MAX_SET_BITS)
}

impl Default for DatapathSettings {
    fn default() -> Self {
        DatapathSettings {
            fail_open: false,
            allow_from_host: true,
            cidr_selects_pods: false,
            events_for_allowed: false,
            events_per_sec: 1000,
            flow_cache_bytes: 32 << 20,
        }
    }
}

/// Entries and capacity of one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapPressure {
    /// The map's name.
    pub map: &'static str,
    /// Entries the loader holds in it.
    pub entries: usize,
    /// Its capacity.
    pub max: u32,
}

/// Counter totals over all CPUs, by slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets and bytes per slot (`abi::CNT_*`).
    pub slots: Vec<CounterValue>,
}

impl Counters {
    /// Packets counted in a slot.
    pub fn packets(&self, slot: u32) -> u64 {
        self.slots.get(slot as usize).map_or(0, |c| c.packets)
    }

    /// Packets dropped for a reason.
    pub fn dropped(&self, reason: identity_cache::verdict::DropReason) -> u64 {
        self.packets(CNT_DROP_BASE + reason as u32)
    }

    /// Packets seen in total.
    pub fn total(&self) -> u64 {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != crate::abi::CNT_EVENTS_LOST as usize)
            .map(|(_, c)| c.packets)
            .sum()
    }
}

/// What a sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries written (new or changed).
    pub upserted: usize,
    /// Entries deleted.
    pub deleted: usize,
}

impl std::ops::AddAssign for SyncStats {
    fn add_assign(&mut self, other: Self) {
        self.upserted += other.upserted;
        self.deleted += other.deleted;
    }
}

/// What the loader last wrote to each map, to compute diffs.
#[derive(Default)]
struct Mirror {
    ipcache: BTreeMap<PrefixKey, IpcacheValue>,
    cidrs: BTreeMap<PrefixKey, IpcacheValue>,
    endpoints: BTreeMap<u32, EndpointValue>,
    locals: BTreeMap<u64, LocalPolicyValue>,
    policy: BTreeMap<PolicyKeyOrd, PolicyValue>,
    devmap: BTreeMap<u32, u32>,
}

/// The loaded steering program with its maps and links.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    links: BTreeMap<u32, (AttachMode, PinnedLink)>,
    /// Socket slots by (interface, queue).
    sockets: BTreeMap<XskSlotKey, u32>,
    mirror: Mirror,
    settings: DatapathSettings,
    /// The generation last written to `config` (see [`Config::generation`]).
    generation: u64,
    /// A map was written since `config` last was: its generation must be bumped.
    config_stale: bool,
}

impl fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir)
            .field(
                "links",
                &self
                    .links
                    .iter()
                    .map(|(i, (m, _))| (*i, *m))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Whether `path` lives on a bpf filesystem.
fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` writes into the zeroed struct we own and reads the NUL-terminated path.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut buf) == 0 && buf.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<u32, LoaderError> {
    let c_name =
        std::ffi::CString::new(name).map_err(|_| LoaderError::UnknownInterface(name.to_owned()))?;
    // SAFETY: `if_nametoindex` reads a NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(LoaderError::UnknownInterface(name.to_owned())),
        n => Ok(n),
    }
}

impl Dataplane {
    /// Loads the steering program, re-opening the maps pinned under `pin_dir` if a previous
    /// instance left them (their contents become the diff base), or creating and pinning them.
    /// `pin_dir` must be inside a mounted bpffs.
    pub fn open(pin_dir: &Path, settings: DatapathSettings) -> Result<Self, LoaderError> {
        let bpffs_root = pin_dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        if !is_bpffs(bpffs_root) {
            return Err(LoaderError::NoBpffs(bpffs_root.to_owned()));
        }
        std::fs::create_dir_all(pin_dir).map_err(|source| LoaderError::Io {
            path: pin_dir.to_owned(),
            source,
        })?;
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| LoaderError::Io {
            path: path.into(),
            source,
        })?;
        let set_bits = flow_cache_set_bits(settings.flow_cache_bytes, cpus);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .override_global("sl_flow_set_bits", &set_bits, true)
            .map_max_entries("flow_cache", 2 << set_bits)
            .load(crate::STEER_OBJECT)?;
        for name in MAP_NAMES {
            if ebpf.map(name).is_none() {
                return Err(LoaderError::MissingMap(name));
            }
        }
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(LoaderError::MissingProgram(PROGRAM))?
            .try_into()?;
        program.load()?;
        let mut plane = Dataplane {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            links: BTreeMap::new(),
            sockets: BTreeMap::new(),
            mirror: Mirror::default(),
            settings,
            generation: 0,
            config_stale: false,
        };
        plane.read_back()?;
        // Go on from the generation a previous instance left: a number it used could match
        // verdicts cached under it.
        plane.generation = {
            let config: Array<&MapData, Config> = Array::try_from(
                plane
                    .ebpf
                    .map("config")
                    .ok_or(LoaderError::MissingMap("config"))?,
            )
            .map_err(map_err("config"))?;
            config.get(&0, 0).map_err(map_err("config"))?.generation
        };
        plane.set_settings(settings)?;
        Ok(plane)
    }

    /// The loaded steering program's file descriptor (for `test_run::xdp_test_run`).
    pub fn program_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, LoaderError> {
        use std::os::fd::AsFd;
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or(LoaderError::MissingProgram(PROGRAM))?
            .try_into()?;
        Ok(program.fd()?.as_fd())
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Writes the config map (with the generation bumped: see [`Dataplane::generation`]).
    pub fn set_settings(&mut self, settings: DatapathSettings) -> Result<(), LoaderError> {
        if settings.fail_open {
            log::warn!("fail-open mode: with no AF_XDP socket bound, packets pass WITHOUT policy");
        }
        self.write_config(settings)?;
        self.settings = settings;
        Ok(())
    }

    /// The map-state generation last written to the `config` map. Every change to the maps
    /// ([`Dataplane::sync`], [`Dataplane::set_settings`]) is followed by a `config` write with
    /// the generation bumped: the program then decides each flow again instead of using the
    /// verdict it cached for it (`bpf/flowcache.h`). Anything else that writes the maps (or
    /// deletes `conntrack` entries) must do the same.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes `config` from `settings` with the next generation, last after map changes.
    fn write_config(&mut self, settings: DatapathSettings) -> Result<(), LoaderError> {
        let mut flags = 0;
        for (on, flag) in [
            (settings.fail_open, CFG_FAIL_OPEN),
            (settings.allow_from_host, CFG_ALLOW_FROM_HOST),
            (settings.cidr_selects_pods, CFG_CIDR_SELECTS_PODS),
            (settings.events_for_allowed, CFG_EVENTS_ALLOWED),
        ] {
            if on {
                flags |= flag;
            }
        }
        let generation = self.generation.wrapping_add(1);
        let mut config: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut("config")?).map_err(map_err("config"))?;
        config
            .set(
                0,
                Config {
                    flags,
                    events_per_sec: settings.events_per_sec,
                    generation,
                },
                0,
            )
            .map_err(map_err("config"))?;
        self.generation = generation;
        self.config_stale = false;
        Ok(())
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, LoaderError> {
        self.ebpf.map_mut(name).ok_or(LoaderError::MissingMap(name))
    }

    /// The pin of an interface's link; the attach mode is part of the name because bpffs
    /// holds only BPF objects, no plain files.
    fn link_path(&self, ifindex: u32, mode: AttachMode) -> PathBuf {
        self.pin_dir.join(format!("link_{ifindex}_{mode}"))
    }

    /// Attaches the program to interface `ifindex`: adopts a pinned link left by a previous
    /// instance (swapping the program in atomically), else attaches natively, falling back to
    /// generic mode with a warning, and pins the new link.
    pub fn attach(&mut self, ifindex: u32) -> Result<AttachMode, LoaderError> {
        if let Some((mode, _)) = self.links.get(&ifindex) {
            return Ok(*mode);
        }
        let existing = [AttachMode::Driver, AttachMode::Generic]
            .into_iter()
            .map(|m| (m, self.link_path(ifindex, m)))
            .find(|(_, p)| p.exists());
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(LoaderError::MissingProgram(PROGRAM))?
            .try_into()?;
        if let Some((mode, path)) = existing {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| LoaderError::Pin {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let fd_link: FdLink = pinned.into();
            let link = XdpLink::try_from(fd_link).map_err(|e| LoaderError::Pin {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let id = program.attach_to_link(link)?;
            let link = program.take_link(id)?;
            let fd_link = FdLink::try_from(link).map_err(|e| LoaderError::Pin {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            // Re-pin under the same name: unpin the old file first so pin() can create it.
            let _ = std::fs::remove_file(&path);
            let pinned = fd_link.pin(&path).map_err(|e| LoaderError::Pin {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            self.links.insert(ifindex, (mode, pinned));
            return Ok(mode);
        }
        let (id, mode) = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Driver),
            Err(e) => {
                log::warn!(
                    "native XDP attach to ifindex {ifindex} failed ({e}); using generic mode"
                );
                (
                    program.attach_to_if_index(ifindex, XdpMode::Skb)?,
                    AttachMode::Generic,
                )
            }
        };
        let path = self.pin_dir.join(format!("link_{ifindex}_{mode}"));
        let link = program.take_link(id)?;
        let fd_link = FdLink::try_from(link).map_err(|e| LoaderError::Pin {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let pinned = fd_link.pin(&path).map_err(|e| LoaderError::Pin {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.links.insert(ifindex, (mode, pinned));
        Ok(mode)
    }

    /// The interfaces attached by this instance and their modes.
    pub fn attachments(&self) -> impl Iterator<Item = (u32, AttachMode)> + '_ {
        self.links.iter().map(|(i, (m, _))| (*i, *m))
    }

    /// Detaches the program from `ifindex` (unpins and drops the link).
    pub fn detach(&mut self, ifindex: u32) -> Result<bool, LoaderError> {
        let Some((mode, pinned)) = self.links.remove(&ifindex) else {
            return Ok(false);
        };
        let path = self.link_path(ifindex, mode);
        let link = pinned.unpin().map_err(|e| LoaderError::Pin {
            path,
            reason: e.to_string(),
        })?;
        drop(link);
        Ok(true)
    }

    /// Detaches everything and removes the pinned maps and the pin directory.
    pub fn destroy(mut self) -> Result<(), LoaderError> {
        let ifindexes: Vec<u32> = self.links.keys().copied().collect();
        for ifindex in ifindexes {
            self.detach(ifindex)?;
        }
        for name in MAP_NAMES.iter().chain(
            [
                "counters",
                "events",
                "event_budget",
                "fragments",
                "conntrack",
            ]
            .iter(),
        ) {
            let _ = std::fs::remove_file(self.pin_dir.join(name));
        }
        drop(self.ebpf);
        let _ = std::fs::remove_dir(&self.pin_dir);
        Ok(())
    }

    /// Steers managed traffic received on (`ifindex`, `queue`) into `socket`, which must be
    /// bound to that interface and queue (the kernel drops frames redirected to a socket bound
    /// elsewhere). No generation bump: the program looks for the queue's socket before it
    /// uses a cached verdict, so flows it had decided in the kernel go to the socket at once.
    pub fn register_socket(
        &mut self,
        ifindex: u32,
        queue: u32,
        socket: &impl AsRawFd,
    ) -> Result<(), LoaderError> {
        let key = XskSlotKey { ifindex, queue };
        let slot = match self.sockets.get(&key) {
            Some(slot) => *slot,
            None => {
                let used: std::collections::BTreeSet<u32> =
                    self.sockets.values().copied().collect();
                (0..XSK_SLOTS)
                    .find(|s| !used.contains(s))
                    .ok_or(LoaderError::MapFull {
                        map: "xsks",
                        needed: self.sockets.len() + 1,
                        max: XSK_SLOTS,
                    })?
            }
        };
        // The socket first, then the slot that points at it: no lookup sees a half entry.
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(self.map_mut("xsks")?).map_err(map_err("xsks"))?;
        xsks.set(slot, socket.as_raw_fd(), 0)
            .map_err(map_err("xsks"))?;
        let mut slots: HashMap<&mut MapData, XskSlotKey, u32> =
            HashMap::try_from(self.map_mut("xsk_slots")?).map_err(map_err("xsk_slots"))?;
        slots.insert(key, slot, 0).map_err(map_err("xsk_slots"))?;
        self.sockets.insert(key, slot);
        Ok(())
    }

    /// Stops steering (`ifindex`, `queue`) into a socket: its traffic falls back to in-kernel
    /// enforcement. (Closing the socket has the same effect: the kernel removes it.)
    pub fn unregister_socket(&mut self, ifindex: u32, queue: u32) -> Result<(), LoaderError> {
        let key = XskSlotKey { ifindex, queue };
        let Some(slot) = self.sockets.remove(&key) else {
            return Ok(());
        };
        let mut slots: HashMap<&mut MapData, XskSlotKey, u32> =
            HashMap::try_from(self.map_mut("xsk_slots")?).map_err(map_err("xsk_slots"))?;
        match slots.remove(&key) {
            Ok(()) => {}
            Err(e) if key_was_absent(&e) => {}
            Err(e) => return Err(map_err("xsk_slots")(e)),
        }
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(self.map_mut("xsks")?).map_err(map_err("xsks"))?;
        match xsks.unset(slot) {
            Ok(()) => Ok(()),
            Err(e) if key_was_absent(&e) => Ok(()),
            Err(e) => Err(map_err("xsks")(e)),
        }
    }

    /// Reads back what previous instances left in the maps, so the first sync is a diff.
    fn read_back(&mut self) -> Result<(), LoaderError> {
        let mut mirror = Mirror::default();
        {
            let trie: LpmTrie<&mut MapData, [u8; 4], IpcacheValue> =
                LpmTrie::try_from(self.map_mut("ipcache_v4")?).map_err(map_err("ipcache_v4"))?;
            for item in trie.iter() {
                let (k, v) = item.map_err(map_err("ipcache_v4"))?;
                mirror
                    .ipcache
                    .insert(PrefixKey::V4(k.prefix_len(), k.data()), v);
            }
        }
        {
            let trie: LpmTrie<&mut MapData, [u8; 16], IpcacheValue> =
                LpmTrie::try_from(self.map_mut("ipcache_v6")?).map_err(map_err("ipcache_v6"))?;
            for item in trie.iter() {
                let (k, v) = item.map_err(map_err("ipcache_v6"))?;
                mirror
                    .ipcache
                    .insert(PrefixKey::V6(k.prefix_len(), k.data()), v);
            }
        }
        {
            let trie: LpmTrie<&mut MapData, [u8; 4], IpcacheValue> =
                LpmTrie::try_from(self.map_mut("cidr_v4")?).map_err(map_err("cidr_v4"))?;
            for item in trie.iter() {
                let (k, v) = item.map_err(map_err("cidr_v4"))?;
                mirror
                    .cidrs
                    .insert(PrefixKey::V4(k.prefix_len(), k.data()), v);
            }
        }
        {
            let trie: LpmTrie<&mut MapData, [u8; 16], IpcacheValue> =
                LpmTrie::try_from(self.map_mut("cidr_v6")?).map_err(map_err("cidr_v6"))?;
            for item in trie.iter() {
                let (k, v) = item.map_err(map_err("cidr_v6"))?;
                mirror
                    .cidrs
                    .insert(PrefixKey::V6(k.prefix_len(), k.data()), v);
            }
        }
        {
            let map: HashMap<&mut MapData, u32, EndpointValue> =
                HashMap::try_from(self.map_mut("endpoints")?).map_err(map_err("endpoints"))?;
            for item in map.iter() {
                let (k, v) = item.map_err(map_err("endpoints"))?;
                mirror.endpoints.insert(k, v);
            }
        }
        {
            let map: HashMap<&mut MapData, u64, LocalPolicyValue> =
                HashMap::try_from(self.map_mut("local_policy")?)
                    .map_err(map_err("local_policy"))?;
            for item in map.iter() {
                let (k, v) = item.map_err(map_err("local_policy"))?;
                mirror.locals.insert(k, v);
            }
        }
        {
            let trie: LpmTrie<&mut MapData, PolicyKeyData, PolicyValue> =
                LpmTrie::try_from(self.map_mut("policy")?).map_err(map_err("policy"))?;
            for item in trie.iter() {
                let (k, v) = item.map_err(map_err("policy"))?;
                mirror.policy.insert(
                    PolicyKeyOrd(PolicyKey {
                        prefixlen: k.prefix_len(),
                        data: k.data(),
                    }),
                    v,
                );
            }
        }
        {
            let map: DevMapHash<&mut MapData> =
                DevMapHash::try_from(self.map_mut("redirect_devmap")?)
                    .map_err(map_err("redirect_devmap"))?;
            for item in map.iter() {
                let (k, v) = item.map_err(map_err("redirect_devmap"))?;
                mirror.devmap.insert(k, v.if_index);
            }
        }
        let mut sockets = BTreeMap::new();
        {
            let map: HashMap<&mut MapData, XskSlotKey, u32> =
                HashMap::try_from(self.map_mut("xsk_slots")?).map_err(map_err("xsk_slots"))?;
            for item in map.iter() {
                let (k, v) = item.map_err(map_err("xsk_slots"))?;
                sockets.insert(k, v);
            }
        }
        self.sockets = sockets;
        self.mirror = mirror;
        Ok(())
    }

    fn capacity(&mut self, name: &'static str) -> Result<u32, LoaderError> {
        let map = self.ebpf.map(name).ok_or(LoaderError::MissingMap(name))?;
        let data: &MapData = match map {
            Map::LpmTrie(d)
            | Map::HashMap(d)
            | Map::DevMapHash(d)
            | Map::Array(d)
            | Map::XskMap(d) => d,
            _ => return Ok(u32::MAX),
        };
        Ok(data.info().map_err(map_err(name))?.max_entries())
    }

    fn check_room(&mut self, name: &'static str, needed: usize) -> Result<(), LoaderError> {
        let max = self.capacity(name)?;
        if needed > max as usize {
            return Err(LoaderError::MapFull {
                map: name,
                needed,
                max,
            });
        }
        Ok(())
    }

    /// Brings every map in line with `snapshot` by diff: entries that changed or are new are
    /// written first, stale ones deleted after, so a packet never meets a missing entry that
    /// both the old and the new state have. A map too small for the new state is an error
    /// and nothing is truncated. When anything was written (even by a sync that then failed),
    /// `config` is written last with the generation bumped, so that no verdict the program
    /// cached outlives the state it was decided on.
    pub fn sync(
        &mut self,
        snapshot: &Snapshot,
        facts: &dyn InterfaceFacts,
    ) -> Result<SyncStats, LoaderError> {
        let synced = self.sync_maps(snapshot, facts);
        let bumped = if self.config_stale {
            self.write_config(self.settings)
        } else {
            Ok(())
        };
        let stats = synced?;
        bumped?;
        Ok(stats)
    }

    fn sync_maps(
        &mut self,
        snapshot: &Snapshot,
        facts: &dyn InterfaceFacts,
    ) -> Result<SyncStats, LoaderError> {
        // The semantic switches belong to the policy the snapshot was compiled with: the
        // kernel must decide by the same ones, whatever the loader was opened with.
        let cfg = snapshot.policy.config;
        if cfg.cidr_selects_endpoints != self.settings.cidr_selects_pods
            || cfg.allow_from_host != self.settings.allow_from_host
        {
            let settings = DatapathSettings {
                cidr_selects_pods: cfg.cidr_selects_endpoints,
                allow_from_host: cfg.allow_from_host,
                ..self.settings
            };
            self.set_settings(settings)?;
        }
        let ipcache = ipcache_entries(snapshot);
        let cidrs = cidr_entries(snapshot);
        let endpoints = endpoint_entries(snapshot, facts);
        let kernel = kernel_policy(&snapshot.policy);
        let devmap: BTreeMap<u32, u32> = endpoints.keys().map(|i| (*i, *i)).collect();

        let v4 = ipcache
            .keys()
            .filter(|k| matches!(k, PrefixKey::V4(..)))
            .count();
        self.check_room("ipcache_v4", v4)?;
        self.check_room("ipcache_v6", ipcache.len() - v4)?;
        let c4 = cidrs
            .keys()
            .filter(|k| matches!(k, PrefixKey::V4(..)))
            .count();
        self.check_room("cidr_v4", c4)?;
        self.check_room("cidr_v6", cidrs.len() - c4)?;
        self.check_room("endpoints", endpoints.len())?;
        self.check_room("local_policy", kernel.locals.len())?;
        self.check_room("policy", kernel.entries.len())?;
        self.check_room("redirect_devmap", devmap.len())?;

        let mut stats = SyncStats::default();
        // Destinations first: a policy entry may redirect to them.
        let old = std::mem::take(&mut self.mirror.devmap);
        stats += self.apply(old, &devmap, "redirect_devmap", |map, k, v| {
            let mut m: DevMapHash<&mut MapData> = DevMapHash::try_from(map)?;
            match v {
                Some(target) => m.insert(*k, *target, None, 0).map_err(|e| match e {
                    aya::maps::xdp::XdpMapError::MapError(e) => e,
                    other => MapError::InvalidName {
                        name: other.to_string(),
                    },
                }),
                None => m.remove(*k),
            }
        })?;
        self.mirror.devmap = devmap;
        let old = std::mem::take(&mut self.mirror.endpoints);
        stats += self.apply(old, &endpoints, "endpoints", |map, k, v| {
            let mut m: HashMap<&mut MapData, u32, EndpointValue> = HashMap::try_from(map)?;
            match v {
                Some(v) => m.insert(k, v, 0),
                None => m.remove(k),
            }
        })?;
        self.mirror.endpoints = endpoints;
        let old = std::mem::take(&mut self.mirror.locals);
        stats += self.apply(old, &kernel.locals, "local_policy", |map, k, v| {
            let mut m: HashMap<&mut MapData, u64, LocalPolicyValue> = HashMap::try_from(map)?;
            match v {
                Some(v) => m.insert(k, v, 0),
                None => m.remove(k),
            }
        })?;
        self.mirror.locals = kernel.locals;
        let old = std::mem::take(&mut self.mirror.policy);
        stats += self.apply(old, &kernel.entries, "policy", |map, k, v| {
            let mut m: LpmTrie<&mut MapData, PolicyKeyData, PolicyValue> = LpmTrie::try_from(map)?;
            let key = Key::new(k.0.prefixlen, k.0.data);
            match v {
                Some(v) => m.insert(&key, v, 0),
                None => m.remove(&key),
            }
        })?;
        self.mirror.policy = kernel.entries;
        let old = std::mem::take(&mut self.mirror.cidrs);
        stats += self.apply_prefixes(old, &cidrs, "cidr_v4", "cidr_v6")?;
        self.mirror.cidrs = cidrs;
        let old = std::mem::take(&mut self.mirror.ipcache);
        stats += self.apply_prefixes(old, &ipcache, "ipcache_v4", "ipcache_v6")?;
        self.mirror.ipcache = ipcache;
        Ok(stats)
    }

    /// Brings only the ipcache entries of `prefixes` in line with `snapshot`: the cheap
    /// update for addresses added, moved or removed when nothing else changed since the last
    /// [`sync`](Self::sync) (the caller knows: no identity came or went, no endpoint and no
    /// policy changed, so the policy, endpoint and CIDR maps already hold what `snapshot`
    /// says). Upserts are written before deletes, the map's room is checked first, and
    /// `config`'s generation is bumped when anything was written, as `sync` does.
    pub fn sync_ipcache(
        &mut self,
        snapshot: &Snapshot,
        prefixes: &[IpNet],
    ) -> Result<SyncStats, LoaderError> {
        let mut old = BTreeMap::new();
        let mut new = BTreeMap::new();
        for prefix in prefixes {
            let key = PrefixKey::of(*prefix);
            if let Some(v) = self.mirror.ipcache.get(&key) {
                old.insert(key, *v);
            }
            if let Some(v) = ipcache_entry(snapshot, *prefix) {
                new.insert(key, v);
            }
        }
        // Room: the whole mirror bounds either family's entries, so the family is counted
        // (a scan of every entry, milliseconds at 100,000 pods) only when that bound would
        // not fit.
        let total = self.mirror.ipcache.len();
        for (v4, map) in [(true, "ipcache_v4"), (false, "ipcache_v6")] {
            let added = new
                .keys()
                .filter(|k| matches!(k, PrefixKey::V4(..)) == v4 && !old.contains_key(*k))
                .count();
            if total + added <= self.capacity(map)? as usize {
                continue;
            }
            let held = self
                .mirror
                .ipcache
                .keys()
                .filter(|k| matches!(k, PrefixKey::V4(..)) == v4)
                .count();
            self.check_room(map, held + added)?;
        }
        let applied = self.apply_prefixes(old.clone(), &new, "ipcache_v4", "ipcache_v6");
        if applied.is_ok() {
            for key in old.keys() {
                self.mirror.ipcache.remove(key);
            }
            self.mirror.ipcache.extend(new);
        } else {
            // Unknown how far it got: the next sync rewrites every wanted entry and retries
            // every delete (the old values stay in the mirror for those).
            for key in new.keys() {
                self.mirror.ipcache.remove(key);
            }
            self.config_stale = true;
        }
        let bumped = if self.config_stale {
            self.write_config(self.settings)
        } else {
            Ok(())
        };
        let stats = applied?;
        bumped?;
        Ok(stats)
    }

    fn apply_prefixes(
        &mut self,
        old: BTreeMap<PrefixKey, IpcacheValue>,
        new: &BTreeMap<PrefixKey, IpcacheValue>,
        v4: &'static str,
        v6: &'static str,
    ) -> Result<SyncStats, LoaderError> {
        let split = |m: &BTreeMap<PrefixKey, IpcacheValue>,
                     want_v4: bool|
         -> BTreeMap<PrefixKey, IpcacheValue> {
            m.iter()
                .filter(|(k, _)| matches!(k, PrefixKey::V4(..)) == want_v4)
                .map(|(k, v)| (*k, *v))
                .collect()
        };
        let mut stats = self.apply(split(&old, true), &split(new, true), v4, |map, k, v| {
            let mut m: LpmTrie<&mut MapData, [u8; 4], IpcacheValue> = LpmTrie::try_from(map)?;
            let Some(key) = k.v4() else { return Ok(()) };
            match v {
                Some(v) => m.insert(&key, v, 0),
                None => m.remove(&key),
            }
        })?;
        stats += self.apply(split(&old, false), &split(new, false), v6, |map, k, v| {
            let mut m: LpmTrie<&mut MapData, [u8; 16], IpcacheValue> = LpmTrie::try_from(map)?;
            let Some(key) = k.v6() else { return Ok(()) };
            match v {
                Some(v) => m.insert(&key, v, 0),
                None => m.remove(&key),
            }
        })?;
        Ok(stats)
    }

    /// Applies the diff old → new to one map with `write(map, key, Some(value) | None)`.
    fn apply<K: Ord + Copy, V: PartialEq + Copy>(
        &mut self,
        old: BTreeMap<K, V>,
        new: &BTreeMap<K, V>,
        name: &'static str,
        mut write: impl FnMut(&mut Map, &K, Option<&V>) -> Result<(), MapError>,
    ) -> Result<SyncStats, LoaderError> {
        let mut stats = SyncStats::default();
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(LoaderError::MissingMap(name))?;
        for (k, v) in new {
            if old.get(k) != Some(v) {
                self.config_stale = true;
                write(map, k, Some(v)).map_err(map_err(name))?;
                stats.upserted += 1;
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                self.config_stale = true;
                match write(map, k, None) {
                    Ok(()) => {}
                    Err(e) if key_was_absent(&e) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
                stats.deleted += 1;
            }
        }
        Ok(stats)
    }

    /// Entries held and capacity of every map the loader writes.
    pub fn pressure(&mut self) -> Result<Vec<MapPressure>, LoaderError> {
        let held = [
            (
                "ipcache_v4",
                self.mirror
                    .ipcache
                    .keys()
                    .filter(|k| matches!(k, PrefixKey::V4(..)))
                    .count(),
            ),
            (
                "ipcache_v6",
                self.mirror
                    .ipcache
                    .keys()
                    .filter(|k| matches!(k, PrefixKey::V6(..)))
                    .count(),
            ),
            (
                "cidr_v4",
                self.mirror
                    .cidrs
                    .keys()
                    .filter(|k| matches!(k, PrefixKey::V4(..)))
                    .count(),
            ),
            (
                "cidr_v6",
                self.mirror
                    .cidrs
                    .keys()
                    .filter(|k| matches!(k, PrefixKey::V6(..)))
                    .count(),
            ),
            ("endpoints", self.mirror.endpoints.len()),
            ("local_policy", self.mirror.locals.len()),
            ("policy", self.mirror.policy.len()),
            ("redirect_devmap", self.mirror.devmap.len()),
        ];
        let mut out = Vec::with_capacity(held.len());
        for (map, entries) in held {
            let max = self.capacity(map)?;
            out.push(MapPressure { map, entries, max });
        }
        Ok(out)
    }

    /// Counter totals summed over CPUs.
    pub fn counters(&self) -> Result<Counters, LoaderError> {
        let map = self
            .ebpf
            .map("counters")
            .ok_or(LoaderError::MissingMap("counters"))?;
        let counters: PerCpuArray<&MapData, CounterValue> =
            PerCpuArray::try_from(map).map_err(map_err("counters"))?;
        let mut slots = Vec::with_capacity(CNT_MAX as usize);
        for slot in 0..CNT_MAX {
            let per_cpu = counters.get(&slot, 0).map_err(map_err("counters"))?;
            let mut total = CounterValue::default();
            for v in per_cpu.iter() {
                total.packets += v.packets;
                total.bytes += v.bytes;
            }
            slots.push(total);
        }
        Ok(Counters { slots })
    }

    /// Takes the verdict-event ring buffer for streaming (once; `None` afterwards).
    pub fn take_events(&mut self) -> Result<Option<EventStream>, LoaderError> {
        let Some(map) = self.ebpf.take_map("events") else {
            return Ok(None);
        };
        let ring = RingBuf::try_from(map).map_err(map_err("events"))?;
        Ok(Some(EventStream { ring }))
    }
}

/// The kernel path's verdict events.
pub struct EventStream {
    ring: RingBuf<MapData>,
}

impl EventStream {
    /// The next event already in the ring, without blocking.
    pub fn next_event(&mut self) -> Option<VerdictEvent> {
        let item = self.ring.next()?;
        VerdictEvent::from_bytes(&item)
    }

    /// The ring's file descriptor, for `poll`/`epoll` readiness.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_cache_sets_follow_the_budget_and_the_cpu_count() {
        let budget = DatapathSettings::default().flow_cache_bytes;
        assert_eq!(flow_cache_set_bits(budget, 2), 15);
        assert_eq!(flow_cache_set_bits(budget, 16), 13);
        // Many CPUs or a tiny budget: never below the compiled size.
        assert_eq!(flow_cache_set_bits(budget, 256), FLOW_CACHE_MIN_SET_BITS);
        assert_eq!(flow_cache_set_bits(0, 1), FLOW_CACHE_MIN_SET_BITS);
        // A huge budget: capped.
        assert_eq!(flow_cache_set_bits(1 << 40, 1), FLOW_CACHE_MAX_SET_BITS);
        // The total never exceeds the budget when it is above the minimum.
        for cpus in [1, 2, 4, 8, 16, 32] {
            let bits = flow_cache_set_bits(budget, cpus);
            let total = (2usize << bits) * FLOW_CACHE_ENTRY_BYTES * cpus;
            assert!(
                bits == FLOW_CACHE_MIN_SET_BITS || total <= budget,
                "{cpus} CPUs: {total}"
            );
        }
    }
}
