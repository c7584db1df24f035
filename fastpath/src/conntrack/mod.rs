//! Per-worker connection tracking: the replies of a connection that policy allowed are allowed
//! without an inverse rule, as Kubernetes NetworkPolicy and Cilium promise.
//!
//! Each worker owns one [`ConnTable`]; nothing is shared, so nothing is locked. The table is
//! sized once (`capacity`) and never grows: when it is full, new flows are decided by policy
//! alone (their replies then need a rule of their own) and [`ConnStats::full`] counts them.
//!
//! An entry remembers the identities both ends had when policy allowed the connection. A
//! reply is accepted only while both addresses still carry those identities: when a pod dies
//! and another pod with other labels takes its address, packets of the old pod's connections
//! are decided by policy again, under the new identity, from the first one.
//!
//! Tracked: TCP, UDP, SCTP (by ports) and ICMP/ICMPv6 echo (by echo identifier). Forward
//! packets are always decided by policy, so revoking an allow stops a connection's forward
//! direction at its next packet.
//!
//! A port protocol's connection is stored under its two ends in a fixed order ([`slot_key`]),
//! with the side that opened it: a forward packet's reply check and its refresh then probe the
//! same slot. The table is megabytes at the default capacity, so each probe of a slot not yet
//! in cache costs a memory access; with one key per direction, every forward packet paid two.
//! The slots are cache lines (`slots`), and [`ConnTable::prefetch`] loads a packet's slot
//! ahead of its decision.

mod huge;
mod slots;

use std::net::IpAddr;

use identity_cache::identity::Identity;

use slots::{PackedKey, Probe, SlotState, SlotTable};

use crate::wire::PacketSummary;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// How long an idle connection stays open for replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An open TCP connection.
    pub tcp_ns: u64,
    /// A TCP connection after a FIN or RST was seen.
    pub tcp_closing_ns: u64,
    /// UDP and SCTP.
    pub datagram_ns: u64,
    /// ICMP echo.
    pub icmp_ns: u64,
}

impl Default for Timeouts {
    /// The in-kernel path's timeouts (TCP one hour, others 60 s), plus 10 s after FIN/RST.
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        Timeouts {
            tcp_ns: 3600 * S,
            tcp_closing_ns: 10 * S,
            datagram_ns: 60 * S,
            icmp_ns: 60 * S,
        }
    }
}

/// The forward tuple of a connection, as the packet that opened it carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address (IPv4 as an IPv4-mapped IPv6 address).
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Source port, or the ICMP echo identifier.
    pub sport: u16,
    /// Destination port; 0 for ICMP echo.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
}

fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl FlowKey {
    /// The key a packet records when policy allows it; `None` for packets that cannot open a
    /// tracked connection (ICMP other than echo requests, other protocols, later fragments).
    pub fn forward(p: &PacketSummary) -> Option<FlowKey> {
        let (sport, dport) = match p.protocol {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => (p.src_port, p.dst_port),
            IPPROTO_ICMP if p.icmp_type == Some(ICMP_ECHO_REQUEST) => (p.icmp_echo_id?, 0),
            IPPROTO_ICMPV6 if p.icmp_type == Some(ICMPV6_ECHO_REQUEST) => (p.icmp_echo_id?, 0),
            _ => return None,
        };
        Some(FlowKey {
            src: addr_bits(p.src),
            dst: addr_bits(p.dst),
            sport,
            dport,
            protocol: p.protocol,
        })
    }

    /// The forward key of the connection this packet would be a reply of; `None` for packets
    /// that cannot be replies (ICMP other than echo replies, other protocols).
    pub fn reply_of(p: &PacketSummary) -> Option<FlowKey> {
        let (sport, dport) = match p.protocol {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => (p.dst_port, p.src_port),
            IPPROTO_ICMP if p.icmp_type == Some(ICMP_ECHO_REPLY) => (p.icmp_echo_id?, 0),
            IPPROTO_ICMPV6 if p.icmp_type == Some(ICMPV6_ECHO_REPLY) => (p.icmp_echo_id?, 0),
            _ => return None,
        };
        Some(FlowKey {
            src: addr_bits(p.dst),
            dst: addr_bits(p.src),
            sport,
            dport,
            protocol: p.protocol,
        })
    }
}

/// Where the connection whose forward key is `key` is stored, and whether `key`'s source is
/// the stored key's first end: for TCP, UDP and SCTP its two (address, port) ends with the
/// lower one first, so both directions of one connection share an entry; for ICMP echo the
/// forward key as it is (requests and replies are told apart by their type, not by their
/// direction).
fn slot_key(key: FlowKey) -> (PackedKey, bool) {
    match key.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if (key.dst, key.dport) < (key.src, key.sport) => {
            let swapped = PackedKey::new(key.dst, key.src, key.dport, key.sport, key.protocol);
            (swapped, false)
        }
        _ => (
            PackedKey::new(key.src, key.dst, key.sport, key.dport, key.protocol),
            true,
        ),
    }
}

/// Counters of one table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Connections recorded.
    pub created: u64,
    /// Packets accepted as replies.
    pub replies: u64,
    /// Replies refused because an end's identity changed since the connection opened.
    pub identity_changed: u64,
    /// New flows not recorded because the table was full (decided by policy alone).
    pub full: u64,
    /// Entries removed after their timeout.
    pub expired: u64,
}

/// How a packet relates to the tracked connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMatch {
    /// A reply of a live connection opened by policy between the same identities.
    Reply,
    /// A reply-shaped packet whose connection's ends now have other identities: decide it
    /// by policy.
    IdentityChanged,
    /// Not a reply of any live connection.
    NotTracked,
}

/// What recording an allowed packet did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The packet opened a new connection (a new flow: report it).
    New,
    /// The connection existed and was refreshed.
    Existing,
    /// The table is full: not tracked.
    Full,
    /// The packet cannot open a tracked connection.
    Untracked,
}

/// One worker's connection table, bounded and never resized.
pub struct ConnTable {
    entries: SlotTable,
    capacity: usize,
    timeouts: Timeouts,
    stats: ConnStats,
    last_sweep_ns: u64,
    /// Where the next [`sweep_some`](ConnTable::sweep_some) starts.
    sweep_cursor: usize,
}

/// How long a connection of `protocol` stays without a packet (`closing`: it saw FIN or RST).
fn timeout_for(timeouts: &Timeouts, protocol: u8, closing: bool) -> u64 {
    match protocol {
        IPPROTO_TCP if closing => timeouts.tcp_closing_ns,
        IPPROTO_TCP => timeouts.tcp_ns,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => timeouts.icmp_ns,
        _ => timeouts.datagram_ns,
    }
}

/// Minimum time between two sweeps forced by a full table.
const FULL_SWEEP_INTERVAL_NS: u64 = 100_000_000;

impl ConnTable {
    /// A table holding at most `capacity` connections; all memory is allocated here.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        ConnTable {
            entries: SlotTable::new(capacity),
            capacity,
            timeouts,
            stats: ConnStats::default(),
            last_sweep_ns: 0,
            sweep_cursor: 0,
        }
    }

    /// Connections currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Loads the slot `p`'s connection would be in into the CPU cache, so that deciding `p`
    /// a little later does not wait for memory. The worker calls it for a whole RX burst
    /// before deciding the first packet.
    #[inline]
    pub fn prefetch(&self, p: &PacketSummary) {
        if let Some(key) = FlowKey::reply_of(p).or_else(|| FlowKey::forward(p)) {
            self.entries.prefetch(&slot_key(key).0);
        }
    }

    /// The most connections it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters so far.
    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    /// Whether `p` is a reply of a live connection whose ends still have the identities they
    /// had when it opened: `src_identity` is the reply's source (the connection's
    /// destination), `dst_identity` its destination. A reply refreshes the connection.
    pub fn lookup_reply(
        &mut self,
        p: &PacketSummary,
        src_identity: Identity,
        dst_identity: Identity,
        now_ns: u64,
    ) -> ReplyMatch {
        let Some(key) = FlowKey::reply_of(p) else {
            return ReplyMatch::NotTracked;
        };
        let (slot_key, first) = slot_key(key);
        let Probe::Found(slot) = self.entries.probe(&slot_key) else {
            return ReplyMatch::NotTracked;
        };
        let mut entry = self.entries.state(slot);
        if entry.opened_by_first != first {
            // The packet goes the way the connection was opened: not a reply.
            return ReplyMatch::NotTracked;
        }
        let timeout = timeout_for(&self.timeouts, key.protocol, entry.closing);
        if now_ns.saturating_sub(entry.last_seen_ns) > timeout {
            return ReplyMatch::NotTracked;
        }
        if entry.src_identity != dst_identity.0 || entry.dst_identity != src_identity.0 {
            self.stats.identity_changed += 1;
            return ReplyMatch::IdentityChanged;
        }
        entry.last_seen_ns = now_ns;
        entry.closing = entry.closing || p.tcp_flags & (TCP_FIN | TCP_RST) != 0;
        self.entries.set_state(slot, &entry);
        self.stats.replies += 1;
        ReplyMatch::Reply
    }

    /// Records a packet that policy allowed, with the identities of its ends.
    pub fn record(
        &mut self,
        p: &PacketSummary,
        src_identity: Identity,
        dst_identity: Identity,
        now_ns: u64,
    ) -> Recorded {
        let Some(key) = FlowKey::forward(p) else {
            return Recorded::Untracked;
        };
        let closing = p.tcp_flags & (TCP_FIN | TCP_RST) != 0;
        let (slot_key, first) = slot_key(key);
        let fresh = |closing| SlotState {
            last_seen_ns: now_ns,
            src_identity: src_identity.0,
            dst_identity: dst_identity.0,
            opened_by_first: first,
            closing,
        };
        // One probe, of the slot the reply check has just brought into cache: the entry is
        // refreshed in place.
        let vacant = match self.entries.probe(&slot_key) {
            Probe::Found(slot) => {
                let entry = self.entries.state(slot);
                let timeout = timeout_for(&self.timeouts, key.protocol, entry.closing);
                let expired = now_ns.saturating_sub(entry.last_seen_ns) > timeout;
                // Opened from the other side, this packet would have been its reply unless an
                // end's identity changed: either way policy has now opened it from this side.
                let same_connection = entry.opened_by_first == first
                    && entry.src_identity == src_identity.0
                    && entry.dst_identity == dst_identity.0;
                self.entries.set_state(
                    slot,
                    &fresh(closing || (entry.closing && !expired && same_connection)),
                );
                if expired || !same_connection {
                    self.stats.created += 1;
                    return Recorded::New;
                }
                return Recorded::Existing;
            }
            Probe::Vacant(slot) => slot,
        };
        let mut vacant = vacant;
        if self.entries.len() >= self.capacity {
            if now_ns.saturating_sub(self.last_sweep_ns) >= FULL_SWEEP_INTERVAL_NS {
                self.sweep(now_ns);
            }
            if self.entries.len() >= self.capacity {
                self.stats.full += 1;
                return Recorded::Full;
            }
            // The sweep moved keys: find the vacant slot again.
            match self.entries.probe(&slot_key) {
                Probe::Vacant(slot) => vacant = slot,
                Probe::Found(_) => unreachable!("the key was absent and a sweep only removes"),
            }
        }
        self.entries.insert_at(vacant, &slot_key, &fresh(closing));
        self.stats.created += 1;
        Recorded::New
    }

    /// Removes every connection idle for longer than its timeout. Allocation-free; the
    /// worker calls it when idle and when a full table refuses a flow.
    pub fn sweep(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        let timeouts = self.timeouts;
        let removed = self.entries.remove_where(|key, entry| {
            let timeout = timeout_for(&timeouts, key.protocol, entry.closing);
            now_ns.saturating_sub(entry.last_seen_ns) > timeout
        });
        self.stats.expired += removed as u64;
    }

    /// Removes the expired connections among the next `slots` slots of the table, going round
    /// it over successive calls: a bounded pause (a slot is a cache line), where a whole
    /// sweep reads megabytes at the default capacity. Returns how many it removed.
    pub fn sweep_some(&mut self, now_ns: u64, slots: usize) -> usize {
        let timeouts = self.timeouts;
        let start = self.sweep_cursor;
        let removed = self.entries.remove_where_in(start, slots, |key, entry| {
            let timeout = timeout_for(&timeouts, key.protocol, entry.closing);
            now_ns.saturating_sub(entry.last_seen_ns) > timeout
        });
        self.sweep_cursor = (start + slots) % self.entries.slot_count();
        self.stats.expired += removed as u64;
        removed
    }

    /// Forgets every connection (used when a worker restarts with a fresh table).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Fragment;
    use std::net::Ipv4Addr;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IDA: Identity = Identity(1000);
    const IDB: Identity = Identity(2000);
    const S: u64 = 1_000_000_000;

    fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> PacketSummary {
        PacketSummary {
            l3_offset: 14,
            vlan: None,
            src: src.into(),
            dst: dst.into(),
            protocol: IPPROTO_TCP,
            src_port: sport,
            dst_port: dport,
            icmp_type: None,
            icmp_code: None,
            icmp_echo_id: None,
            tcp_flags: flags,
            fragment: Fragment::None,
            ip_len: 40,
            frag_id: 0,
            frag_proto: IPPROTO_TCP,
        }
    }

    fn echo(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, id: u16) -> PacketSummary {
        PacketSummary {
            protocol: IPPROTO_ICMP,
            src_port: 0,
            dst_port: u16::from(ty),
            icmp_type: Some(ty),
            icmp_code: Some(0),
            icmp_echo_id: Some(id),
            tcp_flags: 0,
            ..tcp(src, dst, 0, 0, 0)
        }
    }

    #[test]
    fn a_reply_of_an_allowed_connection_is_recognised_and_nothing_else_is() {
        let mut t = ConnTable::new(16, Timeouts::default());
        let syn = tcp(A, B, 40000, 8080, 0x02);
        assert_eq!(t.lookup_reply(&syn, IDA, IDB, 0), ReplyMatch::NotTracked);
        assert_eq!(t.record(&syn, IDA, IDB, 0), Recorded::New);
        assert_eq!(t.record(&syn, IDA, IDB, 1), Recorded::Existing);
        let synack = tcp(B, A, 8080, 40000, 0x12);
        assert_eq!(t.lookup_reply(&synack, IDB, IDA, 2), ReplyMatch::Reply);
        // Same ports, other client port: not a reply.
        let other = tcp(B, A, 8080, 40001, 0x12);
        assert_eq!(t.lookup_reply(&other, IDB, IDA, 2), ReplyMatch::NotTracked);
        // B opening its own connection to A's port is not a reply either.
        let reverse_open = tcp(B, A, 40000, 8080, 0x02);
        assert_eq!(
            t.lookup_reply(&reverse_open, IDB, IDA, 2),
            ReplyMatch::NotTracked
        );
        assert_eq!(t.stats().replies, 1);
    }

    #[test]
    fn both_directions_of_a_connection_share_one_entry_whichever_end_sorts_first() {
        // A < B: the opener is the slot's first end; C > B: it is the second.
        const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
        for (client, server) in [(A, B), (C, B)] {
            let mut t = ConnTable::new(16, Timeouts::default());
            let open = tcp(client, server, 40000, 8080, 0x02);
            let back = tcp(server, client, 8080, 40000, 0x12);
            assert_eq!(t.record(&open, IDA, IDB, 0), Recorded::New);
            // The forward packet is not its own reply; the answer is.
            assert_eq!(t.lookup_reply(&open, IDA, IDB, 1), ReplyMatch::NotTracked);
            assert_eq!(t.lookup_reply(&back, IDB, IDA, 1), ReplyMatch::Reply);
            assert_eq!(t.record(&open, IDA, IDB, 2), Recorded::Existing);
            assert_eq!(
                t.len(),
                1,
                "{client} -> {server}: one entry for both directions"
            );

            // Once it has expired, the server opening the same tuple owns it: now the
            // client's packets are the replies.
            let later = 3601 * S;
            assert_eq!(t.record(&back, IDB, IDA, later), Recorded::New);
            assert_eq!(t.len(), 1);
            assert_eq!(t.lookup_reply(&open, IDA, IDB, later), ReplyMatch::Reply);
            assert_eq!(
                t.lookup_reply(&back, IDB, IDA, later),
                ReplyMatch::NotTracked
            );
        }
    }

    #[test]
    fn a_new_identity_on_a_reused_address_gets_no_replies_of_the_old_connection() {
        let mut t = ConnTable::new(16, Timeouts::default());
        t.record(&tcp(A, B, 40000, 8080, 0x02), IDA, IDB, 0);
        let reply = tcp(B, A, 8080, 40000, 0x10);
        let intruder = Identity(3000);
        assert_eq!(
            t.lookup_reply(&reply, intruder, IDA, 1),
            ReplyMatch::IdentityChanged
        );
        assert_eq!(t.stats().identity_changed, 1);
        // The same connection opened anew by the new pair counts as a new flow.
        assert_eq!(
            t.record(&tcp(A, B, 40000, 8080, 0x02), IDA, intruder, 2),
            Recorded::New
        );
        assert_eq!(t.lookup_reply(&reply, intruder, IDA, 3), ReplyMatch::Reply);
    }

    #[test]
    fn connections_expire_after_their_timeout_and_sooner_once_closing() {
        let mut t = ConnTable::new(16, Timeouts::default());
        let ping = echo(A, B, ICMP_ECHO_REQUEST, 7);
        let pong = echo(B, A, ICMP_ECHO_REPLY, 7);
        t.record(&ping, IDA, IDB, 0);
        assert_eq!(t.lookup_reply(&pong, IDB, IDA, 59 * S), ReplyMatch::Reply);
        assert_eq!(
            t.lookup_reply(&pong, IDB, IDA, 59 * S + 61 * S),
            ReplyMatch::NotTracked
        );
        let wrong_id = echo(B, A, ICMP_ECHO_REPLY, 8);
        t.record(&ping, IDA, IDB, 200 * S);
        assert_eq!(
            t.lookup_reply(&wrong_id, IDB, IDA, 200 * S),
            ReplyMatch::NotTracked
        );

        t.record(&tcp(A, B, 1, 2, 0x02), IDA, IDB, 0);
        let fin = tcp(B, A, 2, 1, 0x11);
        assert_eq!(t.lookup_reply(&fin, IDB, IDA, 5 * S), ReplyMatch::Reply);
        assert_eq!(t.lookup_reply(&fin, IDB, IDA, 14 * S), ReplyMatch::Reply);
        assert_eq!(
            t.lookup_reply(&fin, IDB, IDA, 25 * S),
            ReplyMatch::NotTracked
        );
    }

    #[test]
    fn a_full_table_refuses_new_flows_counts_them_and_sweeps_expired_ones() {
        let mut t = ConnTable::new(2, Timeouts::default());
        let cap = t.entries.slot_count();
        assert_eq!(t.record(&tcp(A, B, 1, 80, 2), IDA, IDB, 0), Recorded::New);
        assert_eq!(t.record(&tcp(A, B, 2, 80, 2), IDA, IDB, 0), Recorded::New);
        assert_eq!(t.record(&tcp(A, B, 3, 80, 2), IDA, IDB, 1), Recorded::Full);
        assert_eq!(t.stats().full, 1);
        // Policy still decides the refused flow; its replies are not tracked.
        let reply = tcp(B, A, 80, 3, 0x12);
        assert_eq!(t.lookup_reply(&reply, IDB, IDA, 2), ReplyMatch::NotTracked);
        // Once the others expire, the table makes room by itself.
        let later = 3601 * S;
        assert_eq!(
            t.record(&tcp(A, B, 3, 80, 2), IDA, IDB, later),
            Recorded::New
        );
        assert_eq!(t.stats().expired, 2);
        assert_eq!(t.entries.slot_count(), cap, "the table never reallocates");
    }

    #[test]
    fn sweeping_in_pieces_removes_every_expired_connection_once_round() {
        let mut t = ConnTable::new(100, Timeouts::default());
        for port in 0..100 {
            t.record(&tcp(A, B, port, 80, 2), IDA, IDB, 0);
        }
        for port in 0..50 {
            t.record(&tcp(A, B, port, 80, 0x10), IDA, IDB, 3000 * S);
        }
        let later = 3601 * S;
        let slots = t.entries.slot_count();
        let removed: usize = (0..slots / 32).map(|_| t.sweep_some(later, 32)).sum();
        assert_eq!(removed, 50);
        assert_eq!(t.len(), 50);
        assert_eq!(t.stats().expired, 50);
        let reply = tcp(B, A, 80, 10, 0x10);
        assert_eq!(t.lookup_reply(&reply, IDB, IDA, later), ReplyMatch::Reply);
    }

    #[test]
    fn only_trackable_packets_are_recorded() {
        let mut t = ConnTable::new(4, Timeouts::default());
        let unreachable = echo(A, B, 3, 0);
        assert_eq!(t.record(&unreachable, IDA, IDB, 0), Recorded::Untracked);
        let reply_first = echo(A, B, ICMP_ECHO_REPLY, 1);
        assert_eq!(t.record(&reply_first, IDA, IDB, 0), Recorded::Untracked);
        assert!(t.is_empty());
    }
}
