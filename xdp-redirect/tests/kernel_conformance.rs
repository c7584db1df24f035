//! The conformance corpus against the in-kernel XDP path.
//!
//! DESIGN.md ("Two datapaths, one policy") promises that `Snapshot::decide` and the steering
//! program give identical verdicts. For every case of `../shared/conformance/cases` this test
//! builds the case's state as `identity_cache::conformance::build` does, but with every pod
//! attached to a veth interface of a private network namespace (the pod's host-side
//! interface), syncs it into the steering program's maps, and runs the program once per probe
//! with `BPF_PROG_TEST_RUN` on a frame crafted as the source would send it: from a pod, arriving
//! on that pod's interface; from anything else (world, a node's host, a remote node), arriving
//! on an "uplink". The kernel's verdict (XDP_DROP = deny; XDP_REDIRECT / XDP_PASS = allow) must
//! equal the probe's expectation and `Snapshot::decide` for the same probe, for both build
//! orders (pods before policies, and after), and must come from the policy path (the counter
//! slot the packet landed in is checked).
//!
//! Node addresses seen as `host` or `remote-node` are put in the ipcache with
//! `IdentityCache::upsert_host`; the corpus names one node address as `host` in one probe and
//! `remote-node` in another, so the probes of a case are split into groups whose address
//! bindings agree, and each group is synced on its own (a sync replaces map contents by diff).
//!
//! The kernel path is stateful: an allowed packet records its connection and a later packet
//! that looks like its reply skips policy. Every probe gets its own source port, drawn from
//! numbers that are no destination port of the corpus, and its own ICMP echo identifier, so
//! no probe can be taken for the reply of another; a probe that lands in the tracked-reply
//! counter slot anyway fails. The other half of that state is checked too: after every
//! allowed TCP/UDP/SCTP probe and ICMP echo request, its reply is sent back from the
//! destination and must pass as a tracked reply (the corpus's "reply traffic is implicitly
//! allowed"; `Snapshot::decide` is stateless, so this part is kernel-only).
//!
//! One Dataplane serves the whole run (`SLUICE_KCONF_FRESH=1`: a fresh one per case);
//! `SLUICE_KCONF_CASE=<substring>` runs only the matching cases.
//!
//! Needs root (namespaces, BPF); skipped with a message otherwise, and when the corpus folder
//! is absent.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use identity_cache::conformance::{self, Case, Probe, ProbePeer};
use identity_cache::identity::{ClusterKey, Identity};
use identity_cache::ipcache::{Owner, Source};
use identity_cache::policy::{Action, ParsedManifest, parse_manifest};
use identity_cache::protocol::Protocol;
use identity_cache::state::{Enforce, IdentityCache, LocalAttachment, PeerRef, Snapshot};
use identity_cache::tables::EnforcementConfig;
use identity_cache::verdict::{DropReason, Verdict};
use ipnet::IpNet;
use xdp_redirect::abi::{
    CNT_CT_REPLY, CNT_DROP_BASE, CNT_EVENTS_LOST, CNT_FAIL_OPEN, CNT_FRAGMENT_FOLLOWED,
    CNT_KERNEL_PASS, CNT_KERNEL_REDIRECT, CNT_MAX, CNT_NON_IP, CNT_NOT_MANAGED,
    CNT_REDIRECT_FAILED, CNT_TO_SOCKET,
};
use xdp_redirect::loader::{Counters, DatapathSettings, Dataplane};
use xdp_redirect::test_run::xdp_test_run;

/// The corpus, beside the workspace (the project's tests never depend on it being there).
const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/cases"
);

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// MAC of whatever sends on the uplink (a router).
const UPLINK_PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0xfe];

/// Candidate addresses for the kube-apiserver when a probe names none.
const APISERVER_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 7),
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(203, 0, 113, 7),
];

// ---------------------------------------------------------------------------------------------
// BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------------------------------

/// Runs the loaded steering program once on `frame` as received on `ifindex` (in the calling
/// thread's namespace); returns the XDP action.
fn run_once(plane: &Dataplane, frame: &[u8], ifindex: u32) -> io::Result<u32> {
    let program = plane.program_fd().map_err(io::Error::other)?;
    xdp_test_run(program, frame, ifindex, 1, 0).map(|o| o.retval)
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// One probe packet as the source sends it.
struct Flow {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    /// TCP/UDP/SCTP source port; ICMP echo identifier.
    sport: u16,
    /// TCP/UDP/SCTP destination port; ICMP type.
    dport: u16,
    /// IPv4 identification, TCP sequence number, SCTP initiate tag.
    serial: u32,
}

fn checksum_add(mut sum: u64, bytes: &[u8]) -> u64 {
    for chunk in bytes.chunks(2) {
        let hi = u64::from(chunk[0]) << 8;
        sum += hi | chunk.get(1).map_or(0, |b| u64::from(*b));
    }
    sum
}

fn checksum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Ethernet + IPv4/IPv6 + the L4 header of the flow's protocol (TCP SYN, a UDP datagram, an
/// SCTP INIT, an ICMP/ICMPv6 message of the given type), checksums filled in.
fn frame(flow: &Flow) -> Result<Vec<u8>, String> {
    let proto = flow.protocol.number();
    let mut l4 = match flow.protocol {
        Protocol::Tcp => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&flow.sport.to_be_bytes());
            h[2..4].copy_from_slice(&flow.dport.to_be_bytes());
            h[4..8].copy_from_slice(&flow.serial.to_be_bytes());
            h[12] = 5 << 4; // data offset
            h[13] = 0x02; // SYN
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            h
        }
        Protocol::Udp => {
            let mut h = vec![0u8; 8];
            h.extend_from_slice(b"sluice-probe");
            h[0..2].copy_from_slice(&flow.sport.to_be_bytes());
            h[2..4].copy_from_slice(&flow.dport.to_be_bytes());
            let len = h.len() as u16;
            h[4..6].copy_from_slice(&len.to_be_bytes());
            h
        }
        Protocol::Sctp => {
            let mut h = vec![0u8; 12 + 20];
            h[0..2].copy_from_slice(&flow.sport.to_be_bytes());
            h[2..4].copy_from_slice(&flow.dport.to_be_bytes());
            // Verification tag 0 (INIT); the INIT chunk:
            h[12] = 1;
            h[14..16].copy_from_slice(&20u16.to_be_bytes());
            h[16..20].copy_from_slice(&flow.serial.max(1).to_be_bytes()); // initiate tag
            h[20..24].copy_from_slice(&65535u32.to_be_bytes()); // a_rwnd
            h[24..26].copy_from_slice(&10u16.to_be_bytes()); // outbound streams
            h[26..28].copy_from_slice(&65535u16.to_be_bytes()); // inbound streams
            h[28..32].copy_from_slice(&flow.serial.to_be_bytes()); // initial TSN
            let crc = crc32c(&h);
            h[8..12].copy_from_slice(&crc.to_le_bytes());
            h
        }
        Protocol::Icmp | Protocol::IcmpV6 => {
            let mut h = vec![0u8; 8];
            h.extend_from_slice(b"sluice-conform!!");
            h[0] = u8::try_from(flow.dport).map_err(|_| "ICMP type > 255".to_owned())?;
            h[4..6].copy_from_slice(&flow.sport.to_be_bytes());
            h[6..8].copy_from_slice(&1u16.to_be_bytes());
            h
        }
    };
    let l4_len = l4.len();
    let (ethertype, mut ip, pseudo) = match (flow.src, flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if flow.protocol == Protocol::IcmpV6 {
                return Err("ICMPv6 over IPv4".into());
            }
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(flow.serial as u16).to_be_bytes());
            h[6] = 0x40; // DF, not a fragment
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum_fold(checksum_add(0, &h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
            (0x0800u16, h, pseudo)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if flow.protocol == Protocol::Icmp {
                return Err("ICMP (v4) over IPv6".into());
            }
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            (0x86ddu16, h, pseudo)
        }
        _ => return Err("source and destination of different families".into()),
    };
    // L4 checksum: TCP, UDP and ICMPv6 over the pseudo-header; ICMP over the message; SCTP
    // carries its CRC32c already.
    let at = match flow.protocol {
        Protocol::Tcp => Some(16),
        Protocol::Udp => Some(6),
        Protocol::Icmp | Protocol::IcmpV6 => Some(2),
        Protocol::Sctp => None,
    };
    if let Some(at) = at {
        let start = if flow.protocol == Protocol::Icmp {
            0
        } else {
            checksum_add(0, &pseudo)
        };
        let mut c = checksum_fold(checksum_add(start, &l4));
        if c == 0 && flow.protocol == Protocol::Udp {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut out = Vec::with_capacity(14 + ip.len() + l4_len);
    out.extend_from_slice(&flow.dst_mac);
    out.extend_from_slice(&flow.src_mac);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.append(&mut ip);
    out.append(&mut l4);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Case state with attachments
// ---------------------------------------------------------------------------------------------

/// A host-side interface in the test namespace.
#[derive(Clone, Copy, Debug)]
struct Iface {
    ifindex: u32,
    mac: [u8; 6],
}

/// A probe side as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The pod with this index in `case.pods`.
    Pod(usize),
    /// An address the ipcache binds to a reserved identity (`host`, `remote-node`,
    /// `kube-apiserver`).
    Bound(IpAddr, Identity),
    /// An address that must stay out of the ipcache's node entries (world / CIDR peers).
    Free(IpAddr),
}

impl Side {
    /// The address binding this side needs: `Some(identity)` bound, `None` unbound.
    fn binding(self) -> Option<(IpAddr, Option<Identity>)> {
        match self {
            Side::Pod(_) => None,
            Side::Bound(ip, id) => Some((ip, Some(id))),
            Side::Free(ip) => Some((ip, None)),
        }
    }
}

fn side_of(
    peer: &ProbePeer,
    case: &Case,
    pod_index: &BTreeMap<String, usize>,
    apiserver: IpAddr,
) -> Result<Side, String> {
    match peer {
        ProbePeer::Pod(name) => pod_index
            .get(name)
            .map(|i| Side::Pod(*i))
            .ok_or_else(|| format!("unknown pod {name}")),
        ProbePeer::Other { cidr, entity, ip } => {
            let addr = cidr.or(*ip);
            let reserved = match entity.as_deref() {
                Some("host") => Some(Identity::HOST),
                Some("remote-node") => Some(Identity::REMOTE_NODE),
                Some("kube-apiserver") => Some(Identity::KUBE_APISERVER),
                Some("world") | None => None,
                Some(other) => return Err(format!("unknown entity {other}")),
            };
            match (reserved, addr) {
                (Some(id), Some(addr)) => {
                    if case.pods.iter().any(|p| p.ip == addr) {
                        return Err(format!("{addr} is both a pod and a {id:?} address"));
                    }
                    Ok(Side::Bound(addr, id))
                }
                (Some(Identity::KUBE_APISERVER), None) => {
                    Ok(Side::Bound(apiserver, Identity::KUBE_APISERVER))
                }
                (Some(id), None) => Err(format!("{id:?} peer without an address")),
                (None, Some(addr)) => Ok(Side::Free(addr)),
                (None, None) => Err("world peer without an address".into()),
            }
        }
    }
}

/// Probes that can share one ipcache: their address bindings agree.
#[derive(Default)]
struct Group {
    bindings: BTreeMap<IpAddr, Option<Identity>>,
    probes: Vec<usize>,
}

/// The ipcache bindings a case needs, in as few consistent groups as a first fit gives.
fn group_probes(sides: &[(Side, Side)]) -> Vec<Group> {
    let mut groups: Vec<Group> = vec![Group::default()];
    for (index, (from, to)) in sides.iter().enumerate() {
        let needs: Vec<_> = [from.binding(), to.binding()]
            .into_iter()
            .flatten()
            .collect();
        let fits = |g: &Group| {
            needs
                .iter()
                .all(|(ip, want)| g.bindings.get(ip).is_none_or(|have| have == want))
        };
        let at = match groups.iter().position(fits) {
            Some(at) => at,
            None => {
                groups.push(Group::default());
                groups.len() - 1
            }
        };
        for (ip, want) in needs {
            groups[at].bindings.insert(ip, want);
        }
        groups[at].probes.push(index);
    }
    groups.retain(|g| !g.probes.is_empty());
    groups
}

/// `conformance::build` with every pod attached to its interface (`ifaces[i]` for pod i) and
/// the group's reserved addresses in the ipcache. Returns the snapshot and each pod's identity.
fn kernel_state(
    case: &Case,
    policies_first: bool,
    ifaces: &[Iface],
    pod_macs: &[[u8; 6]],
    bindings: &BTreeMap<IpAddr, Option<Identity>>,
) -> Result<(Snapshot, Vec<Identity>), String> {
    let cilium = case.engine == "cilium";
    let config = EnforcementConfig {
        allow_from_host: true,
        cidr_selects_endpoints: !cilium,
        init_default_deny: true,
    };
    let mut cache = IdentityCache::new(ClusterKey::default(), config);
    let mut policies = Vec::new();
    for (index, text) in case.policies.iter().enumerate() {
        match parse_manifest(text).map_err(|e| format!("policy {index}: {e}"))? {
            ParsedManifest::Policy(p) => policies.push(p),
            ParsedManifest::Empty => {}
        }
    }
    if policies_first {
        for p in policies.clone() {
            cache.upsert_policy(p);
        }
    }
    let mut identities = Vec::with_capacity(case.pods.len());
    // The same workloads the userspace runner builds, attached to this node's interfaces.
    for (i, mut workload) in conformance::workloads(case).into_iter().enumerate() {
        workload.local = Some(LocalAttachment {
            ifindex: ifaces[i].ifindex,
            mac: pod_macs[i],
        });
        let uid = workload.uid.clone();
        let identity = cache
            .upsert_workload(workload)
            .map_err(|e| format!("pod {uid}: {e}"))?;
        identities.push(identity);
    }
    for (ip, want) in bindings {
        let Some(identity) = want else { continue };
        let prefix = IpNet::from(*ip);
        let owner = Owner::new(Source::ApiServer, format!("node:{ip}"), "", ip.to_string());
        cache
            .upsert_host(prefix, *identity, owner)
            .map_err(|e| format!("host entry {ip} -> {identity:?}: {e}"))?;
    }
    if !policies_first {
        for p in policies {
            cache.upsert_policy(p);
        }
    }
    Ok((cache.pending(), identities))
}

// ---------------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------------

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn xdp_name(ret: u32) -> &'static str {
    match ret {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "XDP_?",
    }
}

fn slot_name(slot: u32) -> String {
    match slot {
        CNT_TO_SOCKET => "TO_SOCKET".into(),
        CNT_KERNEL_REDIRECT => "KERNEL_REDIRECT".into(),
        CNT_KERNEL_PASS => "KERNEL_PASS".into(),
        CNT_NOT_MANAGED => "NOT_MANAGED".into(),
        CNT_NON_IP => "NON_IP".into(),
        CNT_FAIL_OPEN => "FAIL_OPEN".into(),
        CNT_FRAGMENT_FOLLOWED => "FRAGMENT_FOLLOWED".into(),
        CNT_REDIRECT_FAILED => "REDIRECT_FAILED".into(),
        CNT_CT_REPLY => "CT_REPLY".into(),
        s if s >= CNT_DROP_BASE => match drop_reason_of(s - CNT_DROP_BASE) {
            Some(r) => format!("DROP {}", r.name()),
            None => format!("DROP #{}", s - CNT_DROP_BASE),
        },
        s => format!("slot {s}"),
    }
}

fn drop_reason_of(n: u32) -> Option<DropReason> {
    DropReason::ALL.into_iter().find(|r| *r as u32 == n)
}

/// The counter slot one packet landed in (slots other than events-lost sum to the packets).
fn landed_slot(before: &Counters, after: &Counters) -> Option<u32> {
    let moved: Vec<u32> = (0..CNT_MAX)
        .filter(|s| *s != CNT_EVENTS_LOST && after.packets(*s) != before.packets(*s))
        .collect();
    match moved.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// One probe decided under one build order.
struct Check {
    order: &'static str,
    description: String,
    expected: Action,
    userspace: Verdict,
    /// `Snapshot::decide` on the kernel test's own state (attachments, node entries): must
    /// equal `userspace`, or the harness built a different case.
    userspace_here: Action,
    kernel: KernelOutcome,
    /// The reply of an allowed probe (TCP/UDP/SCTP, ICMP echo), sent back through the kernel.
    reply: Option<KernelOutcome>,
}

/// What the program did with the probe's frame.
struct KernelOutcome {
    retval: u32,
    slot: Option<u32>,
    /// The destination is a pod (an allowed packet must be redirected to it).
    dst_is_pod: bool,
}

impl KernelOutcome {
    fn action(&self) -> Option<Action> {
        match self.retval {
            XDP_DROP => Some(Action::Deny),
            XDP_PASS | XDP_REDIRECT => Some(Action::Allow),
            _ => None,
        }
    }

    /// Why a reply was not allowed as the reply of a tracked connection, if it was not.
    fn reply_problem(&self) -> Option<String> {
        let want = if self.dst_is_pod {
            XDP_REDIRECT
        } else {
            XDP_PASS
        };
        (self.retval != want || self.slot != Some(CNT_CT_REPLY)).then(|| {
            format!(
                "its reply got {} ({}), not {} as a tracked reply",
                xdp_name(self.retval),
                self.slot.map_or("?".into(), slot_name),
                xdp_name(want)
            )
        })
    }

    /// Why the verdict did not come from the policy path, if it did not.
    fn path_problem(&self) -> Option<String> {
        let slot = match self.slot {
            Some(s) => s,
            None => return Some("no single counter slot moved".into()),
        };
        let fine = match self.retval {
            XDP_REDIRECT => slot == CNT_KERNEL_REDIRECT && self.dst_is_pod,
            XDP_PASS => slot == CNT_KERNEL_PASS && !self.dst_is_pod,
            XDP_DROP => [
                DropReason::PolicyDenied,
                DropReason::PolicyDenyRule,
                DropReason::IdentityCollision,
            ]
            .iter()
            .any(|r| slot == CNT_DROP_BASE + *r as u32),
            _ => false,
        };
        (!fine).then(|| {
            format!(
                "{} counted {} (destination {}a pod): not the policy path",
                xdp_name(self.retval),
                slot_name(slot),
                if self.dst_is_pod { "" } else { "not " }
            )
        })
    }
}

impl Check {
    fn passed(&self) -> bool {
        self.userspace.action == self.expected
            && self.userspace_here == self.userspace.action
            && self.kernel.action() == Some(self.expected)
            && self.kernel.path_problem().is_none()
            && self
                .reply
                .as_ref()
                .is_none_or(|r| r.reply_problem().is_none())
    }

    /// The kernel's drop reason differs from userspace's (both denied).
    fn reason_mismatch(&self) -> Option<String> {
        let slot = self.kernel.slot?;
        if self.kernel.retval != XDP_DROP || self.userspace.action != Action::Deny {
            return None;
        }
        let kernel = slot.checked_sub(CNT_DROP_BASE).and_then(drop_reason_of)?;
        let user = self.userspace.drop_reason?;
        (kernel != user).then(|| format!("kernel {} vs userspace {}", kernel.name(), user.name()))
    }

    fn line(&self, case: &str, index: usize) -> String {
        let kernel = match self.kernel.action() {
            Some(a) => action_name(a),
            None => "error",
        };
        let slot = self.kernel.slot.map_or("?".into(), slot_name);
        let mut line = format!(
            "{case} probe {index} [{}] {}: expected {}, userspace {}{}, kernel {} ({}, {})",
            self.order,
            self.description,
            action_name(self.expected),
            action_name(self.userspace.action),
            self.userspace
                .drop_reason
                .map_or(String::new(), |r| format!(" {}", r.name())),
            kernel,
            xdp_name(self.kernel.retval),
            slot
        );
        if self.userspace_here != self.userspace.action {
            line += &format!(
                "; HARNESS: decide on the attached state says {}",
                action_name(self.userspace_here)
            );
        }
        if let Some(p) = self.kernel.path_problem() {
            line += &format!("; {p}");
        }
        if let Some(p) = self.reply.as_ref().and_then(KernelOutcome::reply_problem) {
            line += &format!("; {p}");
        }
        line
    }
}

#[derive(Default)]
struct Report {
    cases: usize,
    probes: usize,
    passed: usize,
    failures: Vec<String>,
    reason_mismatches: Vec<String>,
    groups: usize,
    test_runs: usize,
    replies: usize,
    /// Program runs by the counter slot they landed in.
    slots: BTreeMap<String, usize>,
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Source ports and ICMP echo identifiers, each used once in the whole run, none equal to a
/// destination port of the corpus: a probe can never match the reply tuple of another.
struct PortSource {
    next: u16,
    avoid: BTreeSet<u16>,
}

impl PortSource {
    fn take(&mut self) -> u16 {
        loop {
            let p = self.next;
            self.next = if self.next >= 60999 {
                32768
            } else {
                self.next + 1
            };
            if !self.avoid.contains(&p) {
                return p;
            }
        }
    }
}

struct Env {
    ifaces: Vec<Iface>,
    pod_macs: Vec<[u8; 6]>,
    uplink: Iface,
    pin_root: PathBuf,
    fresh_per_case: bool,
}

/// A loaded program with its pin directory.
struct Plane {
    plane: Dataplane,
    dir: PathBuf,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn open_plane(dir: PathBuf) -> Result<Plane, String> {
    let plane = Dataplane::open(&dir, DatapathSettings::default()).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        format!("Dataplane::open: {e}")
    })?;
    Ok(Plane { plane, dir })
}

/// Runs every case inside the test namespace (the calling thread must be in it).
fn run_corpus(cases: Vec<(String, Result<Case, String>)>, env: Env, ports: PortSource) -> Report {
    let mut report = Report::default();
    let mut ports = ports;
    let mut serial = 1u32;
    let mut shared: Option<Plane> = None;
    for (n, (file, case)) in cases.into_iter().enumerate() {
        report.cases += 1;
        let case = match case {
            Ok(c) => c,
            Err(e) => {
                report.failures.push(format!("{file}: case not run: {e}"));
                continue;
            }
        };
        report.probes += case.probes.len();
        let plane = if env.fresh_per_case {
            shared = None;
            open_plane(env.pin_root.join(format!("case{n}")))
        } else {
            match shared.take() {
                Some(p) => Ok(p),
                None => open_plane(env.pin_root.join("shared")),
            }
        };
        let mut plane = match plane {
            Ok(p) => p,
            Err(e) => {
                report.failures.push(format!("{}: {e}", case.id));
                continue;
            }
        };
        match run_case(
            &case,
            &env,
            &mut plane,
            &mut ports,
            &mut serial,
            &mut report,
        ) {
            Ok(checks) => {
                for (index, checks) in checks.iter().enumerate() {
                    if !checks.is_empty() && checks.iter().all(Check::passed) {
                        report.passed += 1;
                    }
                    if checks.is_empty() {
                        report
                            .failures
                            .push(format!("{} probe {index}: never decided", case.id));
                    }
                    for c in checks {
                        if !c.passed() {
                            report.failures.push(c.line(&case.id, index));
                        }
                        if let Some(m) = c.reason_mismatch() {
                            report.reason_mismatches.push(format!(
                                "{} probe {index} [{}] {}: {m}",
                                case.id, c.order, c.description
                            ));
                        }
                    }
                }
            }
            Err(e) => report.failures.push(format!("{}: {e}", case.id)),
        }
        if !env.fresh_per_case {
            shared = Some(plane);
        }
    }
    report
}

/// Every probe of one case under both build orders: `checks[probe]`.
fn run_case(
    case: &Case,
    env: &Env,
    plane: &mut Plane,
    ports: &mut PortSource,
    serial: &mut u32,
    report: &mut Report,
) -> Result<Vec<Vec<Check>>, String> {
    if case.pods.len() > env.ifaces.len() {
        return Err(format!(
            "{} pods, {} interfaces",
            case.pods.len(),
            env.ifaces.len()
        ));
    }
    let pod_index: BTreeMap<String, usize> = case
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("{}/{}", p.namespace, p.name), i))
        .collect();
    let apiserver = APISERVER_ADDRS
        .iter()
        .map(|a| IpAddr::V4(*a))
        .find(|a| !case.pods.iter().any(|p| p.ip == *a))
        .ok_or("no free address for the kube-apiserver")?;
    let sides: Vec<(Side, Side)> = case
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok((
                side_of(&p.from, case, &pod_index, apiserver)
                    .map_err(|e| format!("probe {i} from: {e}"))?,
                side_of(&p.to, case, &pod_index, apiserver)
                    .map_err(|e| format!("probe {i} to: {e}"))?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let groups = group_probes(&sides);
    let k8s = case.engine == "kubernetes-networkpolicy";
    plane
        .plane
        .set_settings(DatapathSettings {
            cidr_selects_pods: k8s,
            allow_from_host: true,
            ..DatapathSettings::default()
        })
        .map_err(|e| format!("set_settings: {e}"))?;
    let facts = support::HostFacts(
        env.ifaces
            .iter()
            .map(|i| (i.ifindex, i.mac))
            .collect::<BTreeMap<_, _>>(),
    );
    let mut checks: Vec<Vec<Check>> = case.probes.iter().map(|_| Vec::new()).collect();
    for (order, policies_first) in [("pods-first", false), ("policies-first", true)] {
        let (reference, ref_pods) = conformance::build(case, policies_first)
            .map_err(|e| format!("conformance::build ({order}): {e}"))?;
        for group in &groups {
            report.groups += 1;
            let (state, identities) = kernel_state(
                case,
                policies_first,
                &env.ifaces,
                &env.pod_macs,
                &group.bindings,
            )
            .map_err(|e| format!("{order}: {e}"))?;
            for (i, pod) in case.pods.iter().enumerate() {
                let uid = format!("{}/{}", pod.namespace, pod.name);
                let want = ref_pods.get(&uid).map(|p| p.identity);
                if want != Some(identities[i]) {
                    return Err(format!(
                        "{order}: pod {uid} has identity {:?} here, {want:?} in conformance::build",
                        identities[i]
                    ));
                }
            }
            if state.policy.config.cidr_selects_endpoints != k8s {
                return Err(format!("engine {:?}: CIDR semantics differ", case.engine));
            }
            plane
                .plane
                .sync(&state, &facts)
                .map_err(|e| format!("{order}: sync: {e}"))?;
            for &index in &group.probes {
                let check = run_probe(
                    case,
                    index,
                    sides[index],
                    order,
                    (&reference, &ref_pods),
                    (&state, &identities),
                    env,
                    plane,
                    ports,
                    serial,
                )
                .map_err(|e| format!("probe {index} ({order}): {e}"))?;
                report.test_runs += 1 + usize::from(check.reply.is_some());
                report.replies += usize::from(check.reply.is_some());
                *report
                    .slots
                    .entry(check.kernel.slot.map_or("?".into(), slot_name))
                    .or_default() += 1;
                checks[index].push(check);
            }
        }
    }
    Ok(checks)
}

#[allow(clippy::too_many_arguments)]
fn run_probe(
    case: &Case,
    index: usize,
    (from, to): (Side, Side),
    order: &'static str,
    (reference, ref_pods): (&Snapshot, &BTreeMap<String, PeerRef>),
    (state, identities): (&Snapshot, &[Identity]),
    env: &Env,
    plane: &mut Plane,
    ports: &mut PortSource,
    serial: &mut u32,
) -> Result<Check, String> {
    let probe: &Probe = &case.probes[index];
    let protocol: Protocol = probe.protocol.parse().map_err(|e| format!("{e}"))?;
    let port = match protocol {
        Protocol::Icmp | Protocol::IcmpV6 => u16::from(probe.icmp_type.unwrap_or(8)),
        _ => probe.port.ok_or("port missing")?,
    };
    let expected = match probe.expect.as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        other => return Err(format!("expect {other:?}")),
    };

    // Userspace, exactly as the corpus runner decides it.
    let (src, src_local, src_name) = conformance::resolve(&probe.from, reference, ref_pods)?;
    let (dst, dst_local, dst_name) = conformance::resolve(&probe.to, reference, ref_pods)?;
    let enforce = Enforce {
        egress: src_local,
        ingress: dst_local,
    };
    let userspace = reference.decide(src, dst, protocol, port, enforce);

    // The same decision on the state the kernel gets, from the addresses on the wire.
    let peer_here = |side: Side| match side {
        Side::Pod(i) => PeerRef {
            identity: identities[i],
            ip: case.pods[i].ip,
        },
        Side::Bound(ip, _) | Side::Free(ip) => PeerRef {
            identity: state.identity_of(ip),
            ip,
        },
    };
    let (src_here, dst_here) = (peer_here(from), peer_here(to));
    let userspace_here = state
        .decide(src_here, dst_here, protocol, port, enforce)
        .action;

    // The kernel: the frame as the source sends it, received where it enters the node.
    let (ingress, src_mac) = match from {
        Side::Pod(i) => (env.ifaces[i], env.pod_macs[i]),
        _ => (env.uplink, UPLINK_PEER_MAC),
    };
    let sport = ports.take();
    *serial = serial.wrapping_add(1);
    let bytes = frame(&Flow {
        src_mac,
        dst_mac: ingress.mac,
        src: src_here.ip,
        dst: dst_here.ip,
        protocol,
        sport,
        dport: port,
        serial: *serial,
    })?;
    let before = plane
        .plane
        .counters()
        .map_err(|e| format!("counters: {e}"))?;
    let retval = run_once(&plane.plane, &bytes, ingress.ifindex)
        .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
    let after = plane
        .plane
        .counters()
        .map_err(|e| format!("counters: {e}"))?;
    let forward = KernelOutcome {
        retval,
        slot: landed_slot(&before, &after),
        dst_is_pod: matches!(to, Side::Pod(_)),
    };

    // Its reply, when the kernel allowed it and tracks the protocol: the destination answers
    // from where it sits, and the connection record must let the answer through.
    let tracked = match protocol {
        Protocol::Tcp | Protocol::Udp | Protocol::Sctp => true,
        Protocol::Icmp => port == 8,
        Protocol::IcmpV6 => port == 128,
    };
    let reply = if forward.action() == Some(Action::Allow) && tracked {
        let (ingress, src_mac) = match to {
            Side::Pod(i) => (env.ifaces[i], env.pod_macs[i]),
            _ => (env.uplink, UPLINK_PEER_MAC),
        };
        let (rsport, rdport) = match protocol {
            Protocol::Icmp => (sport, 0),
            Protocol::IcmpV6 => (sport, 129),
            _ => (port, sport),
        };
        *serial = serial.wrapping_add(1);
        let bytes = frame(&Flow {
            src_mac,
            dst_mac: ingress.mac,
            src: dst_here.ip,
            dst: src_here.ip,
            protocol,
            sport: rsport,
            dport: rdport,
            serial: *serial,
        })?;
        let before = plane
            .plane
            .counters()
            .map_err(|e| format!("counters: {e}"))?;
        let retval = run_once(&plane.plane, &bytes, ingress.ifindex)
            .map_err(|e| format!("BPF_PROG_TEST_RUN (reply): {e}"))?;
        let after = plane
            .plane
            .counters()
            .map_err(|e| format!("counters: {e}"))?;
        Some(KernelOutcome {
            retval,
            slot: landed_slot(&before, &after),
            dst_is_pod: matches!(from, Side::Pod(_)),
        })
    } else {
        None
    };
    Ok(Check {
        order,
        description: format!("{src_name} -> {dst_name} {port}/{protocol}"),
        expected,
        userspace,
        userspace_here,
        kernel: forward,
        reply,
    })
}

/// Reads every case file, sorted by name; a case that does not parse is kept as an error.
fn load_cases(dir: &Path) -> Vec<(String, Result<Case, String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let filter = std::env::var("SLUICE_KCONF_CASE").ok();
    files
        .into_iter()
        .filter(|p| {
            filter.as_deref().is_none_or(|f| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(f))
            })
        })
        .map(|path| {
            let name = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            // run_case parses the case (this crate has no JSON parser of its own) and decides
            // it in userspace; only the parsed case is used here.
            let case = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| {
                    conformance::run_case(&text)
                        .map(|(case, _)| case)
                        .map_err(|e| e.to_string())
                });
            (name, case)
        })
        .collect()
}

/// A veth pair `dev` / `dev`-p in `ns`, both up; `dev` is the node-side interface frames
/// arrive on (this kernel has no dummy driver).
fn host_side(ns: &support::Netns, dev: &str) -> Iface {
    let peer = format!("{dev}p");
    ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer]);
    ns.ip(&["link", "set", dev, "up"]);
    ns.ip(&["link", "set", &peer, "up"]);
    Iface {
        ifindex: ns.ifindex(dev),
        mac: ns.mac(dev),
    }
}

#[test]
fn conformance_corpus_verdicts_match_in_kernel_path() {
    if !support::privileged() {
        eprintln!("skipped: needs root to create namespaces and load BPF");
        return;
    }
    let dir = Path::new(CORPUS);
    if !dir.is_dir() {
        eprintln!(
            "skipped: conformance corpus not found at {} (it lives beside the workspace)",
            dir.display()
        );
        return;
    }
    let started = Instant::now();
    let cases = load_cases(dir);
    assert!(!cases.is_empty(), "no case files in {}", dir.display());
    let max_pods = cases
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok())
        .map(|c| c.pods.len())
        .max()
        .unwrap_or(0);
    let avoid: BTreeSet<u16> = cases
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok())
        .flat_map(|c| c.probes.iter().filter_map(|p| p.port))
        .collect();

    support::ensure_bpffs();
    let ns = support::Netns::new("slk");
    let mut ifaces = Vec::with_capacity(max_pods);
    let mut pod_macs = Vec::with_capacity(max_pods);
    for i in 0..max_pods {
        ifaces.push(host_side(&ns, &format!("pod{i}")));
        pod_macs.push([0x02, 0x00, 0x00, 0x00, 0x01, i as u8]);
    }
    let uplink = host_side(&ns, "uplink");
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/{}", support::unique("sluice-kconf-")));
    let _pins = support::RemoveDir(pin_root.clone());
    let env = Env {
        ifaces,
        pod_macs,
        uplink,
        pin_root,
        fresh_per_case: std::env::var("SLUICE_KCONF_FRESH").is_ok_and(|v| v == "1"),
    };
    let ports = PortSource { next: 32768, avoid };
    let report = ns.run(move || run_corpus(cases, env, ports));

    for m in &report.reason_mismatches {
        eprintln!("note: drop reason differs: {m}");
    }
    for f in &report.failures {
        eprintln!("FAIL {f}");
    }
    let failed = report.probes - report.passed;
    eprintln!("kernel outcomes by counter slot: {:?}", report.slots);
    eprintln!(
        "kernel conformance: {} cases, {} probes, {} passed, {} failed ({} program runs ({} of them replies) in {} state syncs, {} drop-reason differences, {:.1} s)",
        report.cases,
        report.probes,
        report.passed,
        failed,
        report.test_runs,
        report.replies,
        report.groups,
        report.reason_mismatches.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.failures.is_empty() && failed == 0,
        "{} of {} probes disagree between the corpus, Snapshot::decide and the in-kernel path (listed above)",
        failed,
        report.probes
    );
}
