//! Fuzz target `parse`: `wire::summarize` on arbitrary frames.
//!
//! Checks, for every input: no panic; no allocation inside `summarize`; the same outcome and
//! fields as the line-by-line transcription of parse.h (`src/wire/reference.rs`); every view
//! accessor callable after `new_checked` (on the input as a whole and on the headers of an IP
//! frame) and consistent with the summary; rewriting MACs or filling checksums changes no
//! summary.
//!
//! `src/wire` is compiled here by path, with `thiserror` its only dependency, so that the
//! target builds without fastpath's socket stack (xsk-rs, aya).

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../src/wire/mod.rs"]
mod wire;

#[allow(dead_code)]
#[path = "../../src/wire/reference.rs"]
mod reference;

use wire::ethernet::EthernetFrame;
use wire::icmp::IcmpPacket;
use wire::ipv4::Ipv4Packet;
use wire::ipv6::{AuthHeader, DestinationOptionsHeader, FragmentHeader, Ipv6Packet};
use wire::sctp::SctpPacket;
use wire::tcp::TcpPacket;
use wire::udp::UdpPacket;
use wire::{Fragment, Frame, PacketSummary, ip_protocol as proto};

/// Counts allocations made through Rust's allocator (libFuzzer's own are C++ and not seen).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let got = wire::summarize(data);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        before,
        "summarize allocated"
    );

    reference::check(data, &got);
    assert_eq!(wire::summarize(data), got, "deterministic");
    every_view_on(data);

    // MACs are never read: rewriting them changes no outcome.
    let mut copy = data.to_vec();
    match wire::rewrite_macs(&mut copy, [0xaa; 6], [0xbb; 6]) {
        Ok(()) => {
            assert_eq!((&copy[..6], &copy[6..12]), (&[0xbb; 6][..], &[0xaa; 6][..]));
            assert_eq!(&copy[12..], &data[12..]);
            assert_eq!(wire::summarize(&copy), got, "after rewrite_macs");
        }
        Err(_) => {
            assert_eq!(copy, data, "a failed rewrite changes nothing");
            assert!(
                !matches!(got, Ok(Frame::Ip(_))),
                "an IP frame has room for its MACs"
            );
        }
    }

    if let Ok(Frame::Ip(s)) = got {
        ip_frame(data, &s);
    }
});

/// Every view's `new_checked` on the raw input, then every accessor.
fn every_view_on(data: &[u8]) {
    if let Ok(e) = EthernetFrame::new_checked(data) {
        ethernet(&e);
    }
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        ipv4(&p);
    }
    if let Ok(p) = Ipv6Packet::new_checked(data) {
        ipv6(&p);
    }
    if let Ok(h) = wire::ipv6::HopByHopHeader::new_checked(data) {
        let _ = (h.next_header(), h.data().len(), h.payload().len());
        assert!(h.header_len() <= data.len());
    }
    if let Ok(h) = DestinationOptionsHeader::new_checked(data) {
        assert_eq!(h.data().len() + 2 + h.payload().len(), data.len());
    }
    if let Ok(h) = AuthHeader::new_checked(data) {
        let _ = (h.next_header(), h.spi());
        assert_eq!(h.header_len() + h.payload().len(), data.len());
    }
    if let Ok(h) = FragmentHeader::new_checked(data) {
        let _ = (
            h.next_header(),
            h.frag_offset(),
            h.more_fragments(),
            h.ident(),
        );
        assert_eq!(h.payload().len() + 8, data.len());
    }
    if let Ok(t) = TcpPacket::new_checked(data) {
        tcp(&t);
    }
    if let Ok(u) = UdpPacket::new_checked(data) {
        udp(&u);
    }
    if let Ok(s) = SctpPacket::new_checked(data) {
        sctp(&s);
    }
    if let Ok(m) = IcmpPacket::new_checked(data) {
        icmp(&m);
    }
}

fn ethernet(e: &EthernetFrame<&[u8]>) {
    let _ = (
        e.destination(),
        e.source(),
        e.ethertype(),
        e.vlan_tci(),
        e.vlan_priority(),
    );
    let _ = e.payload_ethertype();
    assert_eq!(e.is_tagged(), e.vlan_id().is_some());
    assert!(e.header_len() + e.payload().len() == e.into_inner().len());
}

fn ipv4(p: &Ipv4Packet<&[u8]>) {
    let _ = (
        p.version(),
        p.dscp(),
        p.ecn(),
        p.ident(),
        p.dont_fragment(),
        p.ttl(),
    );
    let _ = (
        p.checksum(),
        p.src_addr(),
        p.dst_addr(),
        p.verify_checksum(),
        p.protocol(),
    );
    let _ = (p.more_fragments(), p.frag_offset(), p.fragment());
    assert_eq!(20 + p.options().len(), p.header_len());
    assert_eq!(
        p.header_len() + p.payload().len(),
        usize::from(p.total_len())
    );
}

fn ipv6(p: &Ipv6Packet<&[u8]>) {
    let _ = (
        p.version(),
        p.traffic_class(),
        p.flow_label(),
        p.hop_limit(),
    );
    let _ = (p.src_addr(), p.dst_addr(), p.next_header());
    assert_eq!(p.payload().len(), usize::from(p.payload_len()));
    assert_eq!(p.total_len(), 40 + u32::from(p.payload_len()));
    if let Ok(ul) = p.upper_layer() {
        assert_eq!(ul.offset + ul.data.len(), p.payload().len());
        assert!(ul.extension_headers <= wire::ipv6::MAX_EXTENSION_HEADERS);
        assert_eq!(ul.offset == 0, ul.extension_headers == 0);
    }
}

fn tcp(t: &TcpPacket<&[u8]>) {
    let _ = (
        t.src_port(),
        t.dst_port(),
        t.seq_number(),
        t.ack_number(),
        t.window_len(),
    );
    let _ = (
        t.fin(),
        t.syn(),
        t.rst(),
        t.psh(),
        t.ack(),
        t.urg(),
        t.ece(),
        t.cwr(),
    );
    let _ = (t.checksum(), t.urgent_at(), t.flags());
    match (t.options(), t.payload()) {
        (Some(o), Some(p)) => assert_eq!(20 + o.len() + p.len(), t.into_inner().len()),
        (None, None) => {
            assert!(t.header_len() < 20 || t.header_len() > t.into_inner().len())
        }
        other => panic!("options and payload disagree: {other:?}"),
    }
}

fn udp(u: &UdpPacket<&[u8]>) {
    let _ = (
        u.src_port(),
        u.dst_port(),
        u.len(),
        u.is_empty(),
        u.checksum(),
    );
    assert_eq!(u.payload().len() + 8, u.into_inner().len());
}

fn sctp(s: &SctpPacket<&[u8]>) {
    let _ = (
        s.src_port(),
        s.dst_port(),
        s.verification_tag(),
        s.checksum(),
    );
    assert_eq!(s.chunks().len() + 12, s.into_inner().len());
}

fn icmp(m: &IcmpPacket<&[u8]>) {
    let _ = (
        m.msg_type(),
        m.msg_code(),
        m.checksum(),
        m.echo_ident(),
        m.echo_seq_no(),
    );
    let _ = (m.echo_ident_of(proto::ICMP), m.echo_ident_of(proto::ICMPV6));
    assert_eq!(m.data().len() + 8, m.into_inner().len());
}

/// The headers of a frame `summarize` accepted, read again through the views: every check
/// passes, and they say what the summary says.
fn ip_frame(data: &[u8], s: &PacketSummary) {
    let e = EthernetFrame::new_checked(data).expect("an IP frame has an Ethernet header");
    ethernet(&e);
    assert_eq!(e.header_len(), usize::from(s.l3_offset));
    assert_eq!(e.vlan_id(), s.vlan);
    assert!(usize::from(s.l3_offset) + s.ip_len as usize <= data.len());
    let l3 = e.payload();
    match (s.src, s.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let p = Ipv4Packet::new_checked(l3).expect("checked once already");
            ipv4(&p);
            assert_eq!(
                (p.src_addr(), p.dst_addr(), p.protocol()),
                (src, dst, s.protocol)
            );
            assert_eq!(u32::from(p.total_len()), s.ip_len);
            assert_eq!(p.fragment(), s.fragment);

            // The header checksum is not read: filling it changes no summary.
            let mut copy = data.to_vec();
            let at = usize::from(s.l3_offset);
            let mut q = Ipv4Packet::new_checked(&mut copy[at..]).expect("same bytes");
            q.fill_checksum();
            assert!(q.verify_checksum());
            assert_eq!(wire::summarize(&copy), Ok(Frame::Ip(*s)));
            l4_header(p.payload(), s);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let p = Ipv6Packet::new_checked(l3).expect("checked once already");
            ipv6(&p);
            assert_eq!((p.src_addr(), p.dst_addr()), (src, dst));
            assert_eq!(p.total_len(), s.ip_len);
            let ul = p.upper_layer().expect("walked once already");
            assert_eq!((ul.protocol, ul.fragment), (s.protocol, s.fragment));
            assert_eq!((ul.frag_id, ul.frag_proto), (s.frag_id, s.frag_proto));
            l4_header(ul.data, s);
        }
        other => panic!("mixed address families: {other:?}"),
    }
}

/// The L4 header of an accepted frame (`l4`: from it to the end of the datagram) against the
/// summary.
fn l4_header(l4: &[u8], s: &PacketSummary) {
    if s.fragment == Fragment::Later {
        return;
    }
    let (src, dst) = (s.src, s.dst);
    match s.protocol {
        proto::TCP => {
            let t = TcpPacket::new_checked(l4).expect("summarize read it");
            tcp(&t);
            assert_eq!(
                (t.src_port(), t.dst_port(), t.flags()),
                (s.src_port, s.dst_port, s.tcp_flags)
            );
            let mut copy = l4.to_vec();
            let mut t = TcpPacket::new_checked(&mut copy[..]).expect("same bytes");
            t.fill_checksum(src, dst);
            assert!(t.verify_checksum(src, dst));
        }
        proto::UDP => {
            let u = UdpPacket::new_checked(l4).expect("summarize read it");
            udp(&u);
            assert_eq!((u.src_port(), u.dst_port()), (s.src_port, s.dst_port));
            let mut copy = l4.to_vec();
            let mut u = UdpPacket::new_checked(&mut copy[..]).expect("same bytes");
            u.fill_checksum(src, dst);
            assert!(u.verify_checksum(src, dst));
        }
        proto::SCTP => {
            let c = SctpPacket::new_checked(l4).expect("summarize read it");
            sctp(&c);
            assert_eq!((c.src_port(), c.dst_port()), (s.src_port, s.dst_port));
        }
        proto::ICMP | proto::ICMPV6 => {
            let m = IcmpPacket::new_checked(l4).expect("summarize read it");
            icmp(&m);
            assert_eq!(s.icmp_type, Some(m.msg_type()));
            assert_eq!(s.icmp_code, Some(m.msg_code()));
            assert_eq!(s.icmp_echo_id, m.echo_ident_of(s.protocol));
            assert_eq!((s.src_port, s.dst_port), (0, u16::from(m.msg_type())));
        }
        _ => assert_eq!((s.src_port, s.dst_port, s.icmp_type), (0, 0, None)),
    }
}
