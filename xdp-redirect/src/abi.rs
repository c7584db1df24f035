//! The map ABI shared with the XDP program: `#[repr(C)]` twins of `bpf/abi.h`, with the same
//! sizes and offsets checked at compile time on both sides.

use std::mem::{offset_of, size_of};

use identity_cache::verdict::DropReason;

/// Counter slot: steered into an AF_XDP socket.
pub const CNT_TO_SOCKET: u32 = 0;
/// Counter slot: allowed in the kernel and redirected to the local endpoint's veth.
pub const CNT_KERNEL_REDIRECT: u32 = 1;
/// Counter slot: allowed in the kernel and passed to the stack.
pub const CNT_KERNEL_PASS: u32 = 2;
/// Counter slot: not pod traffic, passed untouched.
pub const CNT_NOT_MANAGED: u32 = 3;
/// Counter slot: ARP, IPv6 neighbour discovery and other non-IP frames, passed untouched.
pub const CNT_NON_IP: u32 = 4;
/// Counter slot: no socket and fail-open mode: passed without policy.
pub const CNT_FAIL_OPEN: u32 = 5;
/// Counter slot: a non-first fragment that followed its first fragment's verdict.
pub const CNT_FRAGMENT_FOLLOWED: u32 = 6;
/// Counter slot: verdict events not written (ring full or rate limited).
pub const CNT_EVENTS_LOST: u32 = 7;
/// Counter slot: the redirect to the destination veth failed (passed to the stack).
pub const CNT_REDIRECT_FAILED: u32 = 8;
/// Counter slot: the reply of a connection tracked in the `conntrack` map, allowed without
/// policy and redirected or passed as an allowed packet would be (it counts here instead of
/// [`CNT_KERNEL_REDIRECT`] / [`CNT_KERNEL_PASS`]).
pub const CNT_CT_REPLY: u32 = 9;
/// First drop counter slot; the slot of a drop is this plus its reason number.
pub const CNT_DROP_BASE: u32 = 16;
/// Number of counter slots.
pub const CNT_MAX: u32 = 32;

/// Direction code for ingress in keys and events.
pub const DIR_INGRESS: u8 = 0;
/// Direction code for egress in keys and events.
pub const DIR_EGRESS: u8 = 1;
/// Or'ed into the direction of policy entries made only by CIDR peers: the kernel probes them
/// for the CIDR identity of a pod's address (Kubernetes semantics), so that selectors and
/// entities never match a pod through its address.
pub const DIR_CIDR_ONLY: u8 = 2;

/// Policy action: allow.
pub const ACTION_ALLOW: u8 = 1;
/// Policy action: deny.
pub const ACTION_DENY: u8 = 2;

/// Prefix length of a policy key that matches every protocol.
pub const POLICY_PREFIX_PROTO_ALL: u32 = 136;
/// Prefix length of a policy key up to and including the protocol; add port bits.
pub const POLICY_PREFIX_PORT_BASE: u32 = 144;
/// Prefix length of a policy key matching one exact port.
pub const POLICY_FULL_PREFIX: u32 = 160;

/// Endpoint flag: the operator chose in-kernel enforcement for this interface.
pub const ENDPOINT_F_KERNEL_MODE: u32 = 1;

/// Config flag: with no socket bound, pass packets without policy (fail open).
pub const CFG_FAIL_OPEN: u32 = 1;
/// Config flag: host → local endpoint ingress is always allowed.
pub const CFG_ALLOW_FROM_HOST: u32 = 2;
/// Config flag: CIDR rules also match pod addresses (Kubernetes semantics).
pub const CFG_CIDR_SELECTS_PODS: u32 = 4;
/// Config flag: emit events for allowed packets too, not only drops.
pub const CFG_EVENTS_ALLOWED: u32 = 8;

/// Conntrack entry flag: a reply has been allowed by this entry.
pub const CT_F_REPLY_SEEN: u32 = 1;

/// Packets and bytes of one counter slot on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Value of the ipcache and CIDR tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheValue {
    /// The identity.
    pub identity: u64,
    /// Host-side interface of a local endpoint, 0 otherwise.
    pub endpoint_ifindex: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// A local endpoint, keyed by its host-side interface index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointValue {
    /// The endpoint's identity.
    pub identity: u64,
    /// Host-side interface index.
    pub ifindex: u32,
    /// The pod interface's MAC: destination MAC when redirecting to it.
    pub pod_mac: [u8; 6],
    /// The host-side veth's MAC: source MAC when redirecting to it.
    pub host_mac: [u8; 6],
    /// `ENDPOINT_F_*`.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// Enforcement state of a local identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalPolicyValue {
    /// Ingress is default deny.
    pub ingress_enforced: u8,
    /// Egress is default deny.
    pub egress_enforced: u8,
    /// The identity collides with another label set: fail closed.
    pub collided: u8,
    /// Padding.
    pub pad: u8,
    /// Cookie of the rule that turned ingress default deny on.
    pub ingress_rule: u32,
    /// Cookie of the rule that turned egress default deny on.
    pub egress_rule: u32,
    /// Padding.
    pub pad2: u32,
}

/// The data part of a policy LPM key (aya's `lpm_trie::Key` adds the prefix length in
/// front, giving C's packed `struct policy_key`).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKeyData {
    /// Local identity.
    pub local: u64,
    /// Remote identity, 0 for any peer.
    pub remote: u64,
    /// `DIR_*`.
    pub direction: u8,
    /// IP protocol number, 0 with prefix 136 for every protocol.
    pub protocol: u8,
    /// Port (ICMP: type) in network byte order.
    pub port_be: u16,
}

/// Value of the policy LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// `ACTION_*`.
    pub action: u8,
    /// identity-cache `MatchKind` as a number.
    pub match_kind: u8,
    /// Padding.
    pub pad: u16,
    /// Policy cookie: identity-cache rule id + 1, 0 for none.
    pub rule: u32,
}

/// Number of AF_XDP socket slots.
pub const XSK_SLOTS: u32 = 4096;

/// Key of the socket-slot map: the receiving interface and RX queue a socket is bound to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XskSlotKey {
    /// Interface index.
    pub ifindex: u32,
    /// RX queue.
    pub queue: u32,
}

/// Global configuration (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `CFG_*`.
    pub flags: u32,
    /// Verdict events per second per CPU; 0 disables events.
    pub events_per_sec: u32,
    /// Map-state generation: the loader bumps it (writing the config last) after every change
    /// to the maps, and the program uses a cached per-flow verdict only while the generation
    /// it was decided under is current (`bpf/flowcache.h`).
    pub generation: u64,
}

/// Key of the `conntrack` map: the forward tuple of a connection the in-kernel policy allowed,
/// as its first packet carried it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address (IPv4 in the first 4 bytes, the rest zero).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port in host order; ICMP/ICMPv6 echo: the echo identifier.
    pub sport: u16,
    /// Destination port in host order; ICMP/ICMPv6 echo: 0.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    /// Padding, 0.
    pub pad: u16,
}

/// Value of the `conntrack` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the latest allowed forward packet or reply.
    pub last_seen_ns: u64,
    /// `CT_F_*`.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// A verdict event from the kernel path's ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictEvent {
    /// `bpf_ktime_get_ns` at the decision.
    pub timestamp_ns: u64,
    /// Source identity.
    pub src_identity: u64,
    /// Destination identity.
    pub dst_identity: u64,
    /// Source address (IPv4 in the first 4 bytes).
    pub src_ip: [u8; 16],
    /// Destination address.
    pub dst_ip: [u8; 16],
    /// Source port (ICMP: 0).
    pub src_port: u16,
    /// Destination port (ICMP: type).
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    /// `ACTION_*`.
    pub action: u8,
    /// Drop reason number, 0 if allowed.
    pub reason: u8,
    /// Policy cookie, 0 if none.
    pub rule: u32,
    /// Receiving interface.
    pub ifindex: u32,
    /// Deciding direction, `DIR_*`.
    pub direction: u32,
    /// Padding.
    pub pad: u32,
}

// SAFETY: all of these are plain old data: `#[repr(C)]` (or packed) structs of integers and
// byte arrays with no padding that the kernel could leave uninitialised on the way back, as
// the size assertions below establish.
unsafe impl aya::Pod for CounterValue {}
// SAFETY: see above.
unsafe impl aya::Pod for IpcacheValue {}
// SAFETY: see above.
unsafe impl aya::Pod for EndpointValue {}
// SAFETY: see above.
unsafe impl aya::Pod for LocalPolicyValue {}
// SAFETY: see above.
unsafe impl aya::Pod for PolicyKeyData {}
// SAFETY: see above.
unsafe impl aya::Pod for PolicyValue {}
// SAFETY: see above.
unsafe impl aya::Pod for Config {}
// SAFETY: see above.
unsafe impl aya::Pod for XskSlotKey {}
// SAFETY: `#[repr(C)]`, only integers and byte arrays, and no implicit padding: 16 + 16 + 2
// + 2 + 1 + 1 + 2 = 40 bytes, the size asserted below (the trailing pad is an explicit field).
unsafe impl aya::Pod for CtKey {}
// SAFETY: `#[repr(C)]`, integers only, 8 + 4 + 4 = 16 bytes with no implicit padding, as
// asserted below.
unsafe impl aya::Pod for CtValue {}

const _: () = {
    assert!(size_of::<CounterValue>() == 16);
    assert!(size_of::<aya::maps::lpm_trie::Key<[u8; 4]>>() == 8);
    assert!(size_of::<aya::maps::lpm_trie::Key<[u8; 16]>>() == 20);
    assert!(size_of::<IpcacheValue>() == 16);
    assert!(size_of::<EndpointValue>() == 32);
    assert!(offset_of!(EndpointValue, host_mac) == 18);
    assert!(size_of::<LocalPolicyValue>() == 16);
    assert!(size_of::<aya::maps::lpm_trie::Key<PolicyKeyData>>() == 24);
    // C's offset 20 of `direction` is 4 bytes of prefix length plus this offset.
    assert!(offset_of!(PolicyKeyData, direction) == 16);
    assert!(size_of::<PolicyValue>() == 8);
    assert!(size_of::<Config>() == 16);
    assert!(offset_of!(Config, generation) == 8);
    assert!(size_of::<XskSlotKey>() == 8);
    assert!(size_of::<VerdictEvent>() == 80);
    assert!(offset_of!(VerdictEvent, rule) == 64);
    assert!(size_of::<CtKey>() == 40);
    assert!(offset_of!(CtKey, sport) == 32);
    assert!(offset_of!(CtKey, protocol) == 36);
    assert!(size_of::<CtValue>() == 16);
    assert!(CNT_CT_REPLY < CNT_DROP_BASE);
    // The drop reasons the C side numbers must be the ones identity-cache names.
    assert!(DropReason::PolicyDenied as u8 == 1);
    assert!(DropReason::NoWorker as u8 == 9);
    assert!(CNT_DROP_BASE + 16 == CNT_MAX);
};

impl VerdictEvent {
    /// Reads an event from ring-buffer bytes; `None` if the record is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, `VerdictEvent` is plain old data for which
        // every bit pattern is valid, and `read_unaligned` makes no alignment assumption.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The drop reason, if the event is a drop.
    pub fn drop_reason(&self) -> Option<DropReason> {
        DropReason::from_number(self.reason)
    }

    /// Source address.
    pub fn src_addr(&self) -> std::net::IpAddr {
        addr(self.family, &self.src_ip)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> std::net::IpAddr {
        addr(self.family, &self.dst_ip)
    }
}

fn addr(family: u8, bytes: &[u8; 16]) -> std::net::IpAddr {
    if family == 4 {
        std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        std::net::IpAddr::from(*bytes)
    }
}
