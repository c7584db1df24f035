//! A line-by-line transcription of `xdp-redirect/bpf/parse.h` over a byte slice, for tests:
//! raw offsets, `room` and `off` as in the C, no views. [`check`] holds [`crate::wire::summarize`]
//! to it. Used by the unit tests and, included by path, by the fuzz target (`fastpath/fuzz`),
//! so it names nothing but `crate::wire`.

use crate::wire::{Fragment, Frame, NotIpReason, WireError};

/// parse.h `enum sl_parse_result`, with the filled `struct sl_pkt` for OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `SL_PARSE_OK`.
    Ok(Pkt),
    /// `SL_PARSE_NON_IP`.
    NonIp,
    /// `SL_PARSE_MALFORMED`.
    Malformed,
}

/// parse.h `struct sl_pkt` less `ifindex` and padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pkt {
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) icmp_id: u16,
    pub(crate) family: u8,
    pub(crate) protocol: u8,
    pub(crate) frag_id: u32,
    pub(crate) frag: u8,
    pub(crate) frag_proto: u8,
}

const SL_FRAG_LATER: u8 = 2;

fn load16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn l4_min_len(protocol: u8) -> usize {
    match protocol {
        6 => 20,
        17 => 8,
        132 => 12,
        1 | 58 => 8,
        _ => 0,
    }
}

fn l4_fields(protocol: u8, b: &[u8], p: &mut Pkt) {
    if protocol == 1 || protocol == 58 {
        p.sport = 0;
        p.dport = u16::from(b[0]);
        p.icmp_id = load16(b, 4);
    } else {
        p.sport = load16(b, 0);
        p.dport = load16(b, 2);
    }
}

fn parse_ipv4(d: &[u8], h: usize, p: &mut Pkt) -> Outcome {
    let data_end = d.len();
    p.family = 4;
    if h + 20 > data_end {
        return Outcome::Malformed;
    }
    if d[h] >> 4 != 4 {
        return Outcome::Malformed;
    }
    let hlen = usize::from(d[h] & 0x0f) * 4;
    if hlen < 20 {
        return Outcome::Malformed;
    }
    if h + hlen > data_end {
        return Outcome::Malformed;
    }
    let total = usize::from(load16(d, h + 2));
    if total < hlen {
        return Outcome::Malformed;
    }
    if h + total > data_end {
        return Outcome::Malformed;
    }
    let frag = load16(d, h + 6);
    let offset = frag & 0x1fff;
    p.protocol = d[h + 9];
    p.frag_proto = d[h + 9];
    p.frag_id = u32::from(load16(d, h + 4));
    p.src[..4].copy_from_slice(&d[h + 12..h + 16]);
    p.dst[..4].copy_from_slice(&d[h + 16..h + 20]);
    if offset != 0 {
        p.frag = SL_FRAG_LATER;
        return Outcome::Ok(*p);
    }
    p.frag = ((frag >> 13) & 1) as u8;
    let need = l4_min_len(p.protocol);
    if need != 0 {
        let l4 = h + hlen;
        if total - hlen < need || l4 + need > data_end {
            return Outcome::Malformed;
        }
        let protocol = p.protocol;
        l4_fields(protocol, &d[l4..l4 + 8], p);
    }
    Outcome::Ok(*p)
}

fn is_ext(nh: u8) -> bool {
    nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51
}

fn parse_ipv6(d: &[u8], h: usize, p: &mut Pkt) -> Outcome {
    let frame_len = d.len();
    p.family = 6;
    if h + 40 > frame_len {
        return Outcome::Malformed;
    }
    if d[h] >> 4 != 6 {
        return Outcome::Malformed;
    }
    let mut room = usize::from(load16(d, h + 4));
    let mut off = h + 40;
    if off + room > frame_len {
        return Outcome::Malformed;
    }
    let mut nh = d[h + 6];
    p.src.copy_from_slice(&d[h + 8..h + 24]);
    p.dst.copy_from_slice(&d[h + 24..h + 40]);
    p.frag = 0;
    for _ in 0..8 {
        if !is_ext(nh) {
            break;
        }
        if room < 8 {
            return Outcome::Malformed;
        }
        let b = &d[off..off + 8];
        if nh == 44 {
            let off_m = load16(b, 2);
            p.frag_id = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            nh = b[0];
            p.frag_proto = nh;
            off += 8;
            room -= 8;
            if off_m & 0xfff8 != 0 {
                p.protocol = nh;
                p.frag = SL_FRAG_LATER;
                return Outcome::Ok(*p);
            }
            p.frag = (off_m & 1) as u8;
            continue;
        }
        let len = if nh == 51 {
            (usize::from(b[1]) + 2) * 4
        } else {
            (usize::from(b[1]) + 1) * 8
        };
        if room < len {
            return Outcome::Malformed;
        }
        nh = b[0];
        off += len;
        room -= len;
    }
    if is_ext(nh) {
        return Outcome::Malformed;
    }
    p.protocol = nh;
    let need = l4_min_len(nh);
    if need != 0 {
        if room < need {
            return Outcome::Malformed;
        }
        let b = &d[off..off + 8];
        l4_fields(nh, b, p);
        if nh == 58 && ((130..=137).contains(&b[0]) || b[0] == 143) {
            return Outcome::NonIp;
        }
    }
    Outcome::Ok(*p)
}

/// parse.h `sl_parse` over `data` (the whole frame).
pub(crate) fn sl_parse(data: &[u8]) -> Outcome {
    let mut p = Pkt::default();
    let mut l3 = 14;
    if 14 > data.len() {
        return Outcome::NonIp;
    }
    let mut proto = load16(data, 12);
    if proto == 0x8100 || proto == 0x88a8 {
        if l3 + 4 > data.len() {
            return Outcome::NonIp;
        }
        proto = load16(data, l3 + 2);
        l3 += 4;
    }
    if proto == 0x0800 {
        return parse_ipv4(data, l3, &mut p);
    }
    if proto == 0x86dd {
        return parse_ipv6(data, l3, &mut p);
    }
    Outcome::NonIp
}

fn addr16(a: std::net::IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        std::net::IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// Panics with the frame and both answers unless `got` (what `summarize(frame)` returned)
/// says what parse.h says of `frame`, field by field.
pub(crate) fn check(frame: &[u8], got: &Result<Frame, WireError>) {
    let want = sl_parse(frame);
    let fail = |why: &str| -> ! {
        panic!("{why}: parse.h {want:?}, summarize {got:?}, frame {frame:02x?}");
    };
    match (want, got) {
        (Outcome::NonIp, Ok(Frame::NotIp(reason))) => {
            if let NotIpReason::Icmpv6LinkControl { icmp_type } = reason
                && !((130..=137).contains(icmp_type) || *icmp_type == 143)
            {
                fail("ICMPv6 type is not link control");
            }
        }
        (Outcome::Malformed, Err(e)) => {
            if matches!(
                e,
                WireError::EthernetTruncated { .. } | WireError::VlanTagTruncated { .. }
            ) {
                fail("Ethernet errors are NotIp, not malformed");
            }
        }
        (Outcome::Ok(p), Ok(Frame::Ip(s))) => {
            let family = if s.src.is_ipv4() { 4 } else { 6 };
            let later = s.fragment == Fragment::Later;
            let frag = match s.fragment {
                Fragment::None => 0,
                Fragment::First => 1,
                Fragment::Later => 2,
            };
            let icmp = !later && (p.protocol == 1 || p.protocol == 58);
            let echo = icmp
                && matches!(
                    (p.protocol, p.dport),
                    (1, 0) | (1, 8) | (58, 128) | (58, 129)
                );
            let ok = addr16(s.src) == p.src
                && addr16(s.dst) == p.dst
                && s.src.is_ipv4() == s.dst.is_ipv4()
                && family == p.family
                && s.protocol == p.protocol
                && s.src_port == p.sport
                && s.dst_port == p.dport
                && frag == p.frag
                && s.frag_id == p.frag_id
                && s.frag_proto == p.frag_proto
                && s.icmp_type == icmp.then_some(p.dport as u8)
                && s.icmp_code.is_some() == icmp
                && s.icmp_echo_id == echo.then_some(p.icmp_id)
                && (s.tcp_flags == 0 || (p.protocol == 6 && !later));
            if !ok {
                fail("fields differ");
            }
        }
        _ => fail("outcomes differ"),
    }
}
