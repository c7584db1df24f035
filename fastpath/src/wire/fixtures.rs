//! Hand-built frames for the tests: a few written out byte by byte, the rest assembled from
//! small header builders so that each malformed case changes one field of a valid frame.

use super::ethernet::ethertype;
use super::ip_protocol as proto;

pub(crate) const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub(crate) const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// IPv4 TCP SYN 10.0.0.1:40000 → 10.0.0.2:80, written out.
pub(crate) const IPV4_TCP_SYN: [u8; 54] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination MAC
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
    0x08, 0x00, // IPv4
    0x45, 0x00, 0x00, 0x28, // version 4, IHL 5, total length 40
    0xab, 0xcd, 0x40, 0x00, // id 0xabcd, DF
    0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (not checked)
    10, 0, 0, 1, // source
    10, 0, 0, 2, // destination
    0x9c, 0x40, 0x00, 0x50, // 40000 → 80
    0x00, 0x00, 0x00, 0x01, // seq
    0x00, 0x00, 0x00, 0x00, // ack
    0x50, 0x02, 0xfa, 0xf0, // data offset 5, SYN, window
    0x00, 0x00, 0x00, 0x00, // checksum, urgent
];

/// IPv6 ICMPv6 echo request fd00::1 → fd00::2, id 0x0102, seq 1, written out.
pub(crate) const IPV6_ICMPV6_ECHO: [u8; 62] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination MAC
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
    0x86, 0xdd, // IPv6
    0x60, 0x00, 0x00, 0x00, // version 6
    0x00, 0x08, 0x3a, 0x40, // payload 8, ICMPv6, hop limit 64
    0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
    0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // destination
    0x80, 0x00, 0x00, 0x00, // echo request, code 0, checksum
    0x01, 0x02, 0x00, 0x01, // id, seq
];

/// IPv6 neighbour solicitation fd00::1 → ff02::1:ff00:2 for fd00::2, written out.
pub(crate) const IPV6_ND_NS: [u8; 78] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x02, // destination MAC (solicited-node multicast)
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
    0x86, 0xdd, // IPv6
    0x60, 0x00, 0x00, 0x00, // version 6
    0x00, 0x18, 0x3a, 0xff, // payload 24, ICMPv6, hop limit 255
    0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
    0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2, // destination
    0x87, 0x00, 0x00, 0x00, // neighbour solicitation, code 0, checksum
    0x00, 0x00, 0x00, 0x00, // reserved
    0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // target
];

/// ARP request who-has 10.0.0.2 tell 10.0.0.1, written out.
pub(crate) const ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination MAC
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
    0x08, 0x06, // ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
];

/// An Ethernet frame carrying `l3` under `ethertype`.
pub(crate) fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + l3.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// An Ethernet frame with one tag (`tpid` 0x8100 or 0x88a8, VLAN `vid`, priority 3).
pub(crate) fn eth_tagged(tpid: u16, vid: u16, ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = eth(tpid, &((3 << 13) | vid).to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// IPv4 10.0.0.1 → 10.0.0.2 with `options` (a multiple of 4 bytes), the flags/fragment field
/// `frag`, and `l4` as payload; the header checksum is right.
pub(crate) fn ipv4_with(protocol: u8, options: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    let hlen = 20 + options.len();
    let mut h = vec![0u8; hlen];
    h[0] = 0x40 | (hlen / 4) as u8;
    h[2..4].copy_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&[10, 0, 0, 1]);
    h[16..20].copy_from_slice(&[10, 0, 0, 2]);
    h[20..].copy_from_slice(options);
    let sum = super::checksum::data(&h);
    h[10..12].copy_from_slice(&(!sum).to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// IPv4 10.0.0.1 → 10.0.0.2, no options, DF.
pub(crate) fn ipv4(protocol: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_with(protocol, &[], 0x4000, l4)
}

/// IPv6 fd00::1 → fd00::2, first header `next`, `payload` after the fixed header.
pub(crate) fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8] = 0xfd;
    h[23] = 1;
    h[24] = 0xfd;
    h[39] = 2;
    h.extend_from_slice(payload);
    h
}

/// A 20-byte TCP header.
pub(crate) fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t
}

/// A UDP datagram with `data`.
pub(crate) fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

/// An SCTP common header with one 4-byte chunk header.
pub(crate) fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut s = vec![0u8; 16];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&0xc0ffeeu32.to_be_bytes());
    s[12..16].copy_from_slice(&[1, 0, 0, 4]);
    s
}

/// An 8-byte ICMP/ICMPv6 header (echo identifier `id`, sequence 1) and 4 data bytes.
pub(crate) fn icmp(icmp_type: u8, code: u8, id: u16) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 1, b'd', b'a', b't', b'a']);
    m
}

/// An 8-byte hop-by-hop or destination options header (one PadN option).
pub(crate) fn opts(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

/// A fragment header: offset in 8-byte units, more-fragments flag, identification.
pub(crate) fn frag6(next: u8, offset: u16, more: bool, id: u32) -> [u8; 8] {
    let om = (offset << 3) | u16::from(more);
    let mut h = [next, 0, 0, 0, 0, 0, 0, 0];
    h[2..4].copy_from_slice(&om.to_be_bytes());
    h[4..8].copy_from_slice(&id.to_be_bytes());
    h
}

/// A 16-byte authentication header (payload length 2).
pub(crate) fn ah(next: u8) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = next;
    h[1] = 2;
    h[4..8].copy_from_slice(&0x100u32.to_be_bytes());
    h
}

/// Concatenates byte slices.
pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Every valid fixture frame, named: the corpus of the prefix and mutation tests and the fuzz
/// seeds.
pub(crate) fn all() -> Vec<(&'static str, Vec<u8>)> {
    let v4 = ethertype::IPV4;
    let v6 = ethertype::IPV6;
    let mut padded_udp = eth(v4, &ipv4(proto::UDP, &udp(12345, 5000, b"hi")));
    padded_udp.resize(60, 0);
    vec![
        ("ipv4-tcp-syn", IPV4_TCP_SYN.to_vec()),
        ("ipv4-udp-padded", padded_udp),
        ("ipv4-sctp", eth(v4, &ipv4(proto::SCTP, &sctp(5000, 38412)))),
        (
            "ipv4-icmp-echo",
            eth(v4, &ipv4(proto::ICMP, &icmp(8, 0, 0x0bad))),
        ),
        (
            "ipv4-icmp-unreachable",
            eth(v4, &ipv4(proto::ICMP, &icmp(3, 1, 0))),
        ),
        (
            "ipv4-options-tcp",
            eth(
                v4,
                &ipv4_with(
                    proto::TCP,
                    &[0x94, 4, 0, 0, 1, 1, 1, 0],
                    0,
                    &tcp(1, 2, 0x18),
                ),
            ),
        ),
        (
            "ipv4-first-fragment",
            eth(
                v4,
                &ipv4_with(proto::UDP, &[], 0x2000, &udp(53, 53, &[0; 16])),
            ),
        ),
        (
            "ipv4-later-fragment",
            eth(v4, &ipv4_with(proto::UDP, &[], 0x0003, &[0xee; 5])),
        ),
        ("ipv4-gre", eth(v4, &ipv4(47, &[0, 0, 0x08, 0x00]))),
        (
            "vlan-ipv4-udp",
            eth_tagged(
                ethertype::VLAN_8021Q,
                100,
                v4,
                &ipv4(proto::UDP, &udp(1, 2, b"x")),
            ),
        ),
        (
            "qinq-outer-ipv6-tcp",
            eth_tagged(
                ethertype::VLAN_8021AD,
                7,
                v6,
                &ipv6(proto::TCP, &tcp(443, 50000, 0x12)),
            ),
        ),
        ("ipv6-icmpv6-echo", IPV6_ICMPV6_ECHO.to_vec()),
        (
            "ipv6-hbh-frag-udp",
            eth(
                v6,
                &ipv6(
                    proto::HOP_BY_HOP,
                    &cat(&[
                        &opts(proto::FRAGMENT),
                        &frag6(proto::UDP, 0, true, 0xfeed),
                        &udp(5353, 5353, b"abc"),
                    ]),
                ),
            ),
        ),
        (
            "ipv6-later-fragment",
            eth(
                v6,
                &ipv6(
                    proto::FRAGMENT,
                    &cat(&[&frag6(proto::TCP, 2, false, 9), &[0xee; 6]]),
                ),
            ),
        ),
        (
            "ipv6-ah-routing-dst-sctp",
            eth(
                v6,
                &ipv6(
                    proto::AH,
                    &cat(&[
                        &ah(proto::ROUTING),
                        &opts(proto::DESTINATION_OPTIONS),
                        &opts(proto::SCTP),
                        &sctp(9, 10),
                    ]),
                ),
            ),
        ),
        ("ipv6-no-next-header", eth(v6, &ipv6(59, &[]))),
        ("ipv6-nd-ns", IPV6_ND_NS.to_vec()),
        ("arp", ARP_REQUEST.to_vec()),
    ]
}
