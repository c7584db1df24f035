use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::wire::ethernet::ethertype::{self, IPV4 as V4, IPV6 as V6};
use crate::wire::fixtures::*;
use crate::wire::ip_protocol as proto;
use crate::wire::reference;

const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));

/// `summarize(frame)`, held to the parse.h transcription and the invariants.
fn run(frame: &[u8]) -> Result<Frame, WireError> {
    let got = summarize(frame);
    reference::check(frame, &got);
    invariants(frame, &got);
    got
}

fn ip(frame: &[u8]) -> PacketSummary {
    match run(frame) {
        Ok(Frame::Ip(s)) => s,
        other => panic!("expected an IP summary, got {other:?}"),
    }
}

fn not_ip(frame: &[u8]) -> NotIpReason {
    match run(frame) {
        Ok(Frame::NotIp(r)) => r,
        other => panic!("expected NotIp, got {other:?}"),
    }
}

fn malformed(frame: &[u8]) -> WireError {
    match run(frame) {
        Err(e) => e,
        other => panic!("expected malformed, got {other:?}"),
    }
}

/// What must hold of any answer.
fn invariants(frame: &[u8], got: &Result<Frame, WireError>) {
    assert_eq!(&summarize(frame), got, "deterministic");
    match got {
        Ok(Frame::Ip(s)) => {
            assert!(s.l3_offset == 14 || s.l3_offset == 18, "{s:?}");
            assert_eq!(s.vlan.is_some(), s.l3_offset == 18, "{s:?}");
            assert!(
                usize::from(s.l3_offset) + s.ip_len as usize <= frame.len(),
                "{s:?}"
            );
            assert_eq!(s.src.is_ipv4(), s.dst.is_ipv4());
            let header = if s.src.is_ipv4() { 20 } else { 40 };
            assert!(s.ip_len >= header, "{s:?}");
            if s.fragment == Fragment::Later {
                assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (0, 0, 0));
                assert_eq!(
                    (s.icmp_type, s.icmp_code, s.icmp_echo_id),
                    (None, None, None)
                );
            }
            if s.protocol != proto::TCP {
                assert_eq!(s.tcp_flags, 0);
            }
            if s.icmp_echo_id.is_some() {
                assert!(s.icmp_type.is_some());
            }
            if let Some(t) = s.icmp_type {
                assert_eq!((s.src_port, s.dst_port), (0, u16::from(t)));
            }
            // Rewriting the MACs changes nothing parse.h reads.
            let mut copy = frame.to_vec();
            rewrite_macs(&mut copy, [0xaa; 6], [0xbb; 6]).unwrap();
            assert_eq!(
                (&copy[0..6], &copy[6..12]),
                (&[0xbb; 6][..], &[0xaa; 6][..])
            );
            assert_eq!(&copy[12..], &frame[12..]);
            assert_eq!(summarize(&copy), *got);
        }
        Ok(Frame::NotIp(_)) => {}
        Err(e) => {
            assert!(!matches!(
                e,
                WireError::EthernetTruncated { .. } | WireError::VlanTagTruncated { .. }
            ));
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn ipv4_tcp_syn_written_out() {
    assert_eq!(
        ip(&IPV4_TCP_SYN),
        PacketSummary {
            l3_offset: 14,
            vlan: None,
            src: A4,
            dst: B4,
            protocol: proto::TCP,
            src_port: 40000,
            dst_port: 80,
            icmp_type: None,
            icmp_code: None,
            icmp_echo_id: None,
            tcp_flags: 0x02,
            fragment: Fragment::None,
            frag_id: 0xabcd,
            frag_proto: proto::TCP,
            ip_len: 40,
        }
    );
}

#[test]
fn ipv4_udp_with_ethernet_padding() {
    let mut f = eth(V4, &ipv4(proto::UDP, &udp(12345, 5000, b"hi")));
    f.resize(60, 0);
    let s = ip(&f);
    assert_eq!(
        (s.protocol, s.src_port, s.dst_port, s.ip_len),
        (17, 12345, 5000, 30)
    );
    assert_eq!(
        (s.icmp_type, s.tcp_flags, s.fragment),
        (None, 0, Fragment::None)
    );
}

#[test]
fn ipv4_sctp() {
    let s = ip(&eth(V4, &ipv4(proto::SCTP, &sctp(5000, 38412))));
    assert_eq!((s.protocol, s.src_port, s.dst_port), (132, 5000, 38412));
}

#[test]
fn ipv4_icmp_type_is_the_destination_port_and_echo_id_is_separate() {
    for (t, echo) in [(8, true), (0, true), (3, false), (11, false), (128, false)] {
        let s = ip(&eth(V4, &ipv4(proto::ICMP, &icmp(t, 1, 0x0bad))));
        assert_eq!(s.protocol, proto::ICMP);
        assert_eq!((s.src_port, s.dst_port), (0, u16::from(t)));
        assert_eq!((s.icmp_type, s.icmp_code), (Some(t), Some(1)));
        assert_eq!(s.icmp_echo_id, echo.then_some(0x0bad), "type {t}");
        assert_eq!(s.tcp_flags, 0);
    }
}

#[test]
fn ipv4_options_move_the_l4_header() {
    let options = [0x94, 4, 0, 0, 1, 1, 1, 0];
    let s = ip(&eth(
        V4,
        &ipv4_with(proto::TCP, &options, 0, &tcp(1, 2, 0x18)),
    ));
    assert_eq!(
        (s.src_port, s.dst_port, s.tcp_flags, s.ip_len),
        (1, 2, 0x18, 48)
    );
    // The longest header: IHL 15, 40 bytes of options.
    let s = ip(&eth(
        V4,
        &ipv4_with(proto::UDP, &[1; 40], 0, &udp(7, 9, b"")),
    ));
    assert_eq!((s.src_port, s.dst_port, s.ip_len), (7, 9, 68));
}

#[test]
fn one_vlan_tag_of_either_kind() {
    let s = ip(&eth_tagged(
        ethertype::VLAN_8021Q,
        100,
        V4,
        &ipv4(proto::UDP, &udp(1, 2, b"")),
    ));
    assert_eq!(
        (s.l3_offset, s.vlan, s.src, s.dst_port),
        (18, Some(100), A4, 2)
    );
    let l3 = ipv6(proto::TCP, &tcp(443, 50000, 0x12));
    let s = ip(&eth_tagged(ethertype::VLAN_8021AD, 4095, V6, &l3));
    assert_eq!(
        (s.l3_offset, s.vlan, s.src, s.tcp_flags),
        (18, Some(4095), A6, 0x12)
    );
    // Priority-only tag: VLAN 0.
    assert_eq!(
        ip(&eth_tagged(ethertype::VLAN_8021Q, 0, V6, &l3)).vlan,
        Some(0)
    );
}

#[test]
fn a_second_vlan_tag_is_not_ip() {
    for outer in [ethertype::VLAN_8021Q, ethertype::VLAN_8021AD] {
        for inner in [ethertype::VLAN_8021Q, ethertype::VLAN_8021AD] {
            let l3 = cat(&[
                &[0, 5],
                &V4.to_be_bytes(),
                &ipv4(proto::UDP, &udp(1, 2, b"")),
            ]);
            assert_eq!(
                not_ip(&eth_tagged(outer, 10, inner, &l3)),
                NotIpReason::SecondVlanTag
            );
        }
    }
}

#[test]
fn other_ethertypes_are_not_ip() {
    assert_eq!(not_ip(&ARP_REQUEST), NotIpReason::Ethertype(ethertype::ARP));
    assert_eq!(
        not_ip(&eth(0x88cc, &[0; 46])),
        NotIpReason::Ethertype(0x88cc)
    );
    let tagged_arp = eth_tagged(ethertype::VLAN_8021Q, 3, ethertype::ARP, &ARP_REQUEST[14..]);
    assert_eq!(not_ip(&tagged_arp), NotIpReason::Ethertype(ethertype::ARP));
    // The header alone.
    assert_eq!(
        not_ip(&ARP_REQUEST[..14]),
        NotIpReason::Ethertype(ethertype::ARP)
    );
}

#[test]
fn short_frames_are_not_ip() {
    for n in 0..14 {
        assert_eq!(
            not_ip(&IPV4_TCP_SYN[..n]),
            NotIpReason::ShortFrame,
            "{n} bytes"
        );
    }
    let tagged = eth_tagged(
        ethertype::VLAN_8021Q,
        1,
        V4,
        &ipv4(proto::UDP, &udp(1, 2, b"")),
    );
    for n in 14..18 {
        assert_eq!(not_ip(&tagged[..n]), NotIpReason::ShortVlanTag, "{n} bytes");
    }
    // An IP ethertype with no IP header at all is malformed, not short.
    assert_eq!(
        malformed(&tagged[..18]),
        WireError::Ipv4HeaderTruncated { available: 0 }
    );
    assert_eq!(
        malformed(&IPV6_ICMPV6_ECHO[..14]),
        WireError::Ipv6HeaderTruncated { available: 0 }
    );
}

#[test]
fn ipv6_hop_by_hop_then_first_fragment() {
    let payload = cat(&[
        &opts(proto::FRAGMENT),
        &frag6(proto::UDP, 0, true, 0xfeed),
        &udp(5353, 5353, b"abc"),
    ]);
    assert_eq!(
        ip(&eth(V6, &ipv6(proto::HOP_BY_HOP, &payload))),
        PacketSummary {
            l3_offset: 14,
            vlan: None,
            src: A6,
            dst: B6,
            protocol: proto::UDP,
            src_port: 5353,
            dst_port: 5353,
            icmp_type: None,
            icmp_code: None,
            icmp_echo_id: None,
            tcp_flags: 0,
            fragment: Fragment::First,
            frag_id: 0xfeed,
            frag_proto: proto::UDP,
            ip_len: 40 + 27,
        }
    );
}

#[test]
fn ipv6_fragments() {
    // Later: no L4 header read, protocol from the fragment header, even a short one.
    let later = eth(
        V6,
        &ipv6(
            proto::FRAGMENT,
            &cat(&[&frag6(proto::TCP, 2, false, 9), &[1]]),
        ),
    );
    let s = ip(&later);
    assert_eq!(
        (s.protocol, s.fragment, s.frag_id, s.frag_proto),
        (6, Fragment::Later, 9, 6)
    );
    assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (0, 0, 0));
    // Atomic fragment (offset 0, no M): not fragmented, but the id is kept.
    let atomic = cat(&[&frag6(proto::TCP, 0, false, 77), &tcp(1, 2, 0x10)]);
    let s = ip(&eth(V6, &ipv6(proto::FRAGMENT, &atomic)));
    assert_eq!(
        (s.fragment, s.frag_id, s.src_port, s.tcp_flags),
        (Fragment::None, 77, 1, 0x10)
    );
    // A first fragment must carry the L4 header.
    let cut = cat(&[&frag6(proto::TCP, 0, true, 5), &tcp(1, 2, 0)[..12]]);
    assert_eq!(
        malformed(&eth(V6, &ipv6(proto::FRAGMENT, &cut))),
        WireError::L4HeaderTruncated {
            protocol: 6,
            needed: 20,
            available: 12
        }
    );
    // AH after the fragment header of a first fragment: frag_proto names AH.
    let with_ah = cat(&[
        &frag6(proto::AH, 0, true, 3),
        &ah(proto::UDP),
        &udp(4, 5, b""),
    ]);
    let s = ip(&eth(V6, &ipv6(proto::FRAGMENT, &with_ah)));
    assert_eq!(
        (s.protocol, s.frag_proto, s.src_port, s.fragment),
        (17, 51, 4, Fragment::First)
    );
}

#[test]
fn ipv6_icmpv6_echo_written_out() {
    let s = ip(&IPV6_ICMPV6_ECHO);
    assert_eq!(
        (s.src, s.dst, s.protocol, s.ip_len),
        (A6, B6, proto::ICMPV6, 48)
    );
    assert_eq!((s.src_port, s.dst_port), (0, 128));
    assert_eq!(
        (s.icmp_type, s.icmp_code, s.icmp_echo_id),
        (Some(128), Some(0), Some(0x0102))
    );
    let reply = ip(&eth(V6, &ipv6(proto::ICMPV6, &icmp(129, 0, 44))));
    assert_eq!((reply.dst_port, reply.icmp_echo_id), (129, Some(44)));
    let too_big = ip(&eth(V6, &ipv6(proto::ICMPV6, &icmp(2, 0, 44))));
    assert_eq!((too_big.dst_port, too_big.icmp_echo_id), (2, None));
}

#[test]
fn ipv6_link_control_is_not_ip() {
    assert_eq!(
        not_ip(&IPV6_ND_NS),
        NotIpReason::Icmpv6LinkControl { icmp_type: 135 }
    );
    for t in 0..=255u8 {
        let f = eth(V6, &ipv6(proto::ICMPV6, &icmp(t, 0, 0)));
        let link = (130..=137).contains(&t) || t == 143;
        match run(&f) {
            Ok(Frame::NotIp(NotIpReason::Icmpv6LinkControl { icmp_type })) if link => {
                assert_eq!(icmp_type, t)
            }
            Ok(Frame::Ip(s)) if !link => assert_eq!(s.icmp_type, Some(t)),
            other => panic!("type {t}: {other:?}"),
        }
    }
    // MLD reports come behind a hop-by-hop header (router alert).
    let mld = cat(&[&opts(proto::ICMPV6), &icmp(143, 0, 0)]);
    assert_eq!(
        not_ip(&eth(V6, &ipv6(proto::HOP_BY_HOP, &mld))),
        NotIpReason::Icmpv6LinkControl { icmp_type: 143 }
    );
    // In a first fragment too; a later fragment carries no type.
    let first = cat(&[&frag6(proto::ICMPV6, 0, true, 1), &icmp(136, 0, 0)]);
    assert!(matches!(
        run(&eth(V6, &ipv6(proto::FRAGMENT, &first))),
        Ok(Frame::NotIp(_))
    ));
    let later = cat(&[&frag6(proto::ICMPV6, 1, false, 1), &icmp(136, 0, 0)]);
    assert_eq!(
        ip(&eth(V6, &ipv6(proto::FRAGMENT, &later))).protocol,
        proto::ICMPV6
    );
    // Too short to read the type: malformed, as in parse.h (the length check comes first).
    assert_eq!(
        malformed(&eth(V6, &ipv6(proto::ICMPV6, &[135, 0, 0, 0]))),
        WireError::L4HeaderTruncated {
            protocol: 58,
            needed: 8,
            available: 4
        }
    );
}

#[test]
fn icmp_is_read_by_protocol_number_not_family() {
    // ICMPv6 type numbers inside IPv4: no link-control rule there.
    let s = ip(&eth(V4, &ipv4(proto::ICMPV6, &icmp(135, 0, 0))));
    assert_eq!((s.dst_port, s.icmp_type), (135, Some(135)));
    let s = ip(&eth(V4, &ipv4(proto::ICMPV6, &icmp(128, 0, 6))));
    assert_eq!(s.icmp_echo_id, Some(6));
    // ICMP (1) inside IPv6: an echo by ICMP's numbers.
    let s = ip(&eth(V6, &ipv6(proto::ICMP, &icmp(8, 0, 0x4242))));
    assert_eq!((s.dst_port, s.icmp_echo_id), (8, Some(0x4242)));
    assert_eq!(not_ip(&eth(V6, &ipv6(proto::ICMPV6, &icmp(133, 0, 0)))), {
        NotIpReason::Icmpv6LinkControl { icmp_type: 133 }
    });
    assert_eq!(
        ip(&eth(V6, &ipv6(proto::ICMP, &icmp(133, 0, 0)))).dst_port,
        133
    );
}

#[test]
fn ipv4_fragments() {
    let first = eth(
        V4,
        &ipv4_with(proto::UDP, &[], 0x2000, &udp(53, 54, &[0; 16])),
    );
    let s = ip(&first);
    assert_eq!(
        (s.fragment, s.src_port, s.dst_port, s.frag_id),
        (Fragment::First, 53, 54, 0x1234)
    );
    assert_eq!(s.frag_proto, proto::UDP);
    let cut = eth(V4, &ipv4_with(proto::UDP, &[], 0x2000, &[0; 7]));
    assert_eq!(
        malformed(&cut),
        WireError::L4HeaderTruncated {
            protocol: 17,
            needed: 8,
            available: 7
        }
    );
    for payload in [&[][..], &[0xee; 5][..]] {
        let later = eth(V4, &ipv4_with(proto::TCP, &[], 0x0003, payload));
        let s = ip(&later);
        assert_eq!(
            (s.fragment, s.protocol, s.frag_proto),
            (Fragment::Later, 6, 6)
        );
        assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (0, 0, 0));
    }
    // The last fragment (offset > 0, no MF) is a later one as well.
    let last = eth(V4, &ipv4_with(proto::ICMP, &[], 0x0100, &[1, 2]));
    let s = ip(&last);
    assert_eq!((s.fragment, s.icmp_type), (Fragment::Later, None));
}

#[test]
fn unread_protocols_need_no_l4_header() {
    let s = ip(&eth(V4, &ipv4(47, &[])));
    assert_eq!(
        (s.protocol, s.src_port, s.dst_port, s.icmp_type),
        (47, 0, 0, None)
    );
    let s = ip(&eth(V6, &ipv6(59, &[])));
    assert_eq!((s.protocol, s.ip_len), (59, 40));
    let s = ip(&eth(V6, &ipv6(proto::DESTINATION_OPTIONS, &opts(59))));
    assert_eq!((s.protocol, s.ip_len), (59, 48));
}

#[test]
fn every_malformed_case_has_its_variant() {
    let udp4 = ipv4(proto::UDP, &udp(1, 2, b""));
    let with = |at: usize, v: u8| {
        let mut l3 = udp4.clone();
        l3[at] = v;
        eth(V4, &l3)
    };
    let total = |len: u16| {
        let mut l3 = udp4.clone();
        l3[2..4].copy_from_slice(&len.to_be_bytes());
        eth(V4, &l3)
    };
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        (
            "IPv4 header truncated",
            eth(V4, &udp4[..19]),
            WireError::Ipv4HeaderTruncated { available: 19 },
        ),
        (
            "IPv4 version 6",
            with(0, 0x65),
            WireError::BadIpVersion {
                expected: 4,
                found: 6,
            },
        ),
        (
            "IPv4 version 0",
            with(0, 0x05),
            WireError::BadIpVersion {
                expected: 4,
                found: 0,
            },
        ),
        (
            "IHL 4",
            with(0, 0x44),
            WireError::Ipv4IhlTooSmall { ihl: 4 },
        ),
        (
            "IHL 0",
            with(0, 0x40),
            WireError::Ipv4IhlTooSmall { ihl: 0 },
        ),
        (
            "options past the frame",
            with(0, 0x48),
            WireError::Ipv4OptionsTruncated {
                header_len: 32,
                available: 28,
            },
        ),
        (
            "total length below header",
            total(19),
            WireError::TotalLengthBelowHeader {
                total_len: 19,
                header_len: 20,
            },
        ),
        (
            "total length past the frame",
            total(29),
            WireError::TotalLengthBeyondFrame {
                total_len: 29,
                available: 28,
            },
        ),
        (
            "IPv4 L4 bounded by the datagram, not the frame",
            {
                let mut f = eth(V4, &ipv4(proto::TCP, &tcp(1, 2, 0)[..8]));
                f.extend_from_slice(&[0; 40]);
                f
            },
            WireError::L4HeaderTruncated {
                protocol: 6,
                needed: 20,
                available: 8,
            },
        ),
        (
            "IPv4 SCTP short",
            eth(V4, &ipv4(proto::SCTP, &sctp(1, 2)[..11])),
            WireError::L4HeaderTruncated {
                protocol: 132,
                needed: 12,
                available: 11,
            },
        ),
        (
            "IPv4 ICMP short",
            eth(V4, &ipv4(proto::ICMP, &[8, 0, 0, 0, 0, 1, 0])),
            WireError::L4HeaderTruncated {
                protocol: 1,
                needed: 8,
                available: 7,
            },
        ),
        (
            "IPv4 UDP empty",
            eth(V4, &ipv4(proto::UDP, &[])),
            WireError::L4HeaderTruncated {
                protocol: 17,
                needed: 8,
                available: 0,
            },
        ),
        (
            "IPv6 header truncated",
            eth(V6, &ipv6(proto::UDP, &[])[..39]),
            WireError::Ipv6HeaderTruncated { available: 39 },
        ),
        (
            "IPv6 version 4",
            eth(V6, &{
                let mut l3 = ipv6(59, &[]);
                l3[0] = 0x40;
                l3
            }),
            WireError::BadIpVersion {
                expected: 6,
                found: 4,
            },
        ),
        (
            "IPv6 payload length past the frame",
            eth(V6, &ipv6(proto::UDP, &udp(1, 2, b"abc"))[..50]),
            WireError::PayloadLengthBeyondFrame {
                payload_len: 11,
                available: 10,
            },
        ),
        (
            "IPv6 extension header in less than 8 bytes",
            eth(V6, &ipv6(proto::HOP_BY_HOP, &[17, 0, 0, 0])),
            WireError::Ipv6ExtensionTruncated {
                header: 0,
                needed: 8,
                available: 4,
            },
        ),
        (
            "IPv6 extension header longer than the payload",
            eth(
                V6,
                &ipv6(
                    proto::ROUTING,
                    &[17, 2, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                ),
            ),
            WireError::Ipv6ExtensionTruncated {
                header: 43,
                needed: 24,
                available: 17,
            },
        ),
        (
            "IPv6 fragment header cut",
            eth(V6, &ipv6(proto::FRAGMENT, &frag6(17, 0, true, 1)[..7])),
            WireError::Ipv6ExtensionTruncated {
                header: 44,
                needed: 8,
                available: 7,
            },
        ),
        (
            "IPv6 AH longer than the payload",
            eth(V6, &ipv6(proto::AH, &ah(proto::UDP)[..12])),
            WireError::Ipv6ExtensionTruncated {
                header: 51,
                needed: 16,
                available: 12,
            },
        ),
        (
            "IPv6 extension header bounded by the payload length, not the frame",
            {
                let mut f = eth(V6, &ipv6(proto::DESTINATION_OPTIONS, &[]));
                f.extend_from_slice(&opts(59));
                f
            },
            WireError::Ipv6ExtensionTruncated {
                header: 60,
                needed: 8,
                available: 0,
            },
        ),
        (
            "nine IPv6 extension headers",
            eth(
                V6,
                &ipv6(
                    proto::DESTINATION_OPTIONS,
                    &chain(9, proto::UDP, &udp(1, 2, b"")),
                ),
            ),
            WireError::TooManyExtensionHeaders { max: 8 },
        ),
        (
            "IPv6 TCP short after extension headers",
            eth(
                V6,
                &ipv6(
                    proto::HOP_BY_HOP,
                    &cat(&[&opts(proto::TCP), &tcp(1, 2, 0)[..19]]),
                ),
            ),
            WireError::L4HeaderTruncated {
                protocol: 6,
                needed: 20,
                available: 19,
            },
        ),
        (
            "IPv6 L4 bounded by the payload length, not the frame",
            {
                let mut f = eth(V6, &ipv6(proto::UDP, &udp(1, 2, b"")[..4]));
                f.extend_from_slice(&[0; 20]);
                f
            },
            WireError::L4HeaderTruncated {
                protocol: 17,
                needed: 8,
                available: 4,
            },
        ),
        (
            "IPv6 ICMPv6 short",
            eth(V6, &ipv6(proto::ICMPV6, &[128, 0, 0, 0, 0, 1, 0])),
            WireError::L4HeaderTruncated {
                protocol: 58,
                needed: 8,
                available: 7,
            },
        ),
    ];
    for (name, frame, want) in cases {
        assert_eq!(malformed(&frame), want, "{name}");
    }
}

/// `n` 8-byte destination options headers, then `last` carrying `l4`.
fn chain(n: usize, last: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    for i in 0..n {
        p.extend_from_slice(&opts(if i + 1 == n {
            last
        } else {
            proto::DESTINATION_OPTIONS
        }));
    }
    p.extend_from_slice(l4);
    p
}

#[test]
fn eight_extension_headers_are_the_most() {
    let s = ip(&eth(
        V6,
        &ipv6(
            proto::DESTINATION_OPTIONS,
            &chain(8, proto::UDP, &udp(7, 8, b"")),
        ),
    ));
    assert_eq!(
        (s.protocol, s.src_port, s.dst_port, s.ip_len),
        (17, 7, 8, 40 + 64 + 8)
    );
    // Eight headers, the last a later fragment header: the walk stops there.
    let mut p = chain(7, proto::FRAGMENT, &[]);
    p.extend_from_slice(&frag6(proto::DESTINATION_OPTIONS, 1, false, 2));
    let s = ip(&eth(V6, &ipv6(proto::DESTINATION_OPTIONS, &p)));
    assert_eq!((s.fragment, s.protocol), (Fragment::Later, 60));
    // A ninth fragment header is malformed even if it is a later fragment's.
    let mut p = chain(8, proto::FRAGMENT, &[]);
    p.extend_from_slice(&frag6(proto::UDP, 1, false, 2));
    assert_eq!(
        malformed(&eth(V6, &ipv6(proto::DESTINATION_OPTIONS, &p))),
        WireError::TooManyExtensionHeaders { max: 8 }
    );
}

#[test]
fn ipv6_payload_length_can_exceed_u16_with_the_header() {
    let payload = vec![0u8; 65535];
    let s = ip(&eth(V6, &ipv6(59, &payload)));
    assert_eq!(s.ip_len, 65575);
}

#[test]
fn rewrite_macs_sets_both_and_nothing_else() {
    let mut f = IPV4_TCP_SYN;
    rewrite_macs(&mut f, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]).unwrap();
    assert_eq!(f[..12], [7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6]);
    assert_eq!(f[12..], IPV4_TCP_SYN[12..]);
    assert_eq!(summarize(&f), summarize(&IPV4_TCP_SYN));

    let mut short = [0u8; 13];
    assert_eq!(
        rewrite_macs(&mut short, [1; 6], [2; 6]),
        Err(WireError::EthernetTruncated { len: 13 })
    );
    assert_eq!(short, [0; 13]);
    let mut tag = eth(ethertype::VLAN_8021Q, &[0, 1]);
    let before = tag.clone();
    assert_eq!(
        rewrite_macs(&mut tag, [1; 6], [2; 6]),
        Err(WireError::VlanTagTruncated { len: 16 })
    );
    assert_eq!(tag, before);
}

#[test]
fn errors_say_what_is_wrong() {
    let e = WireError::L4HeaderTruncated {
        protocol: 6,
        needed: 20,
        available: 8,
    };
    assert_eq!(
        e.to_string(),
        "L4 header of protocol 6 truncated: needs 20 bytes, the datagram holds 8"
    );
    assert_eq!(
        WireError::TooManyExtensionHeaders { max: 8 }.to_string(),
        "more than 8 IPv6 extension headers"
    );
    assert_eq!(
        WireError::TotalLengthBeyondFrame {
            total_len: 29,
            available: 28
        }
        .to_string(),
        "IPv4 total length 29 runs past the frame (28 bytes)"
    );
}

#[test]
fn every_prefix_of_every_fixture() {
    for (name, frame) in all() {
        let full = run(&frame);
        for n in 0..=frame.len() {
            let got = run(&frame[..n]);
            match full {
                Ok(Frame::Ip(s)) => {
                    let end = usize::from(s.l3_offset) + s.ip_len as usize;
                    if n >= end {
                        assert_eq!(got, full, "{name}: {n} bytes (only padding cut)");
                    } else {
                        assert!(
                            !matches!(got, Ok(Frame::Ip(_))),
                            "{name}: {n} bytes: {got:?}"
                        );
                    }
                }
                Ok(Frame::NotIp(NotIpReason::Ethertype(t))) if n >= 14 => {
                    assert_eq!(got, Ok(Frame::NotIp(NotIpReason::Ethertype(t))), "{name}")
                }
                _ => {}
            }
        }
    }
}

#[test]
fn single_byte_mutations_of_every_fixture() {
    let mut outcomes = [0usize; 3];
    for (_, frame) in all() {
        for at in 0..frame.len() {
            let mut m = frame.clone();
            for v in 0..=255u8 {
                m[at] = v;
                match run(&m) {
                    Ok(Frame::Ip(_)) => outcomes[0] += 1,
                    Ok(Frame::NotIp(_)) => outcomes[1] += 1,
                    Err(_) => outcomes[2] += 1,
                }
            }
        }
    }
    // Every kind of answer came up.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}

#[test]
fn mutations_with_extra_bytes_and_pairs() {
    // A frame grown with trailing bytes of every value, and pairs of positions in the headers
    // (the length fields against each other).
    for (_, frame) in all() {
        for extra in [1usize, 7, 64] {
            for v in [0u8, 0x2c, 0x3a, 0xff] {
                let mut m = frame.clone();
                m.extend(std::iter::repeat_n(v, extra));
                let _ = run(&m);
            }
        }
        let head = frame.len().min(70);
        for i in 12..head {
            for j in i + 1..head {
                for (a, b) in [
                    (0u8, 0u8),
                    (0xff, 0xff),
                    (0x00, 0x40),
                    (0x2c, 0x01),
                    (0x06, 0x00),
                ] {
                    let mut m = frame.clone();
                    m[i] = a;
                    m[j] = b;
                    let _ = run(&m);
                }
            }
        }
    }
}

/// Writes the fixtures as the fuzz target's seed corpus. Run by hand after changing them:
/// `cargo test -p fastpath --lib wire::summary::tests::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes fastpath/fuzz/corpus/parse/seed-*"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, frame) in all() {
        std::fs::write(dir.join(format!("seed-{name}")), frame).unwrap();
    }
}
