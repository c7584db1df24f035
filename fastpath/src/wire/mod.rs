//! Zero-copy, bounds-checked views of the headers the fast path reads, in the smoltcp manner,
//! and [`summarize`]: what the verdict pipeline needs from one frame.
//!
//! Each view is a `Xxx<T: AsRef<[u8]>> { buffer: T }` over borrowed (or owned) bytes:
//! `new_unchecked` wraps without looking, `new_checked` validates the buffer once, after which
//! no accessor can panic. Field positions are `const` ranges in each module's `field`
//! module. Setters exist where the fast path writes (`T: AsMut<[u8]>`); none of them changes a
//! length or a type field, so a checked view stays valid after any setter.
//!
//! [`summarize`] mirrors `xdp-redirect/bpf/parse.h` (`sl_parse`) exactly: the same frames are
//! [`Frame::NotIp`] (its `SL_PARSE_NON_IP`), [`WireError`] (its `SL_PARSE_MALFORMED`) or
//! [`Frame::Ip`] (`SL_PARSE_OK`), with the same fields, so that the AF_XDP path and the
//! in-kernel path decide from the same facts. It does not allocate and does not panic.
//!
//! This module uses only `std` and `thiserror` and names its own items through `self::` and
//! `super::` only: `fastpath/fuzz` compiles it by path, without the socket stack.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;

mod error;
mod summary;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod reference;

pub use self::error::WireError;
pub use self::summary::{Frame, NotIpReason, PacketSummary, rewrite_macs, summarize};

/// A field's byte range inside its header.
pub type Field = core::ops::Range<usize>;

/// A field that runs from its start to the end of the buffer.
pub type Rest = core::ops::RangeFrom<usize>;

/// IP protocol numbers (IPv4 protocol field, IPv6 next header) that the parser knows.
pub mod ip_protocol {
    /// IPv6 hop-by-hop options (an extension header).
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP (for IPv4; an IPv6 packet naming it is read the same way, as parse.h does).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header (an extension header).
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header (an extension header).
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (an IPv6 extension header here; length in 4-byte units).
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 destination options (an extension header).
    pub const DESTINATION_OPTIONS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// The smallest L4 header a packet that is not a later fragment must carry for its protocol
/// (parse.h `sl_l4_min_len`): TCP 20, UDP 8, SCTP 12, ICMP and ICMPv6 8; 0 for protocols
/// whose header is not read.
pub fn l4_min_len(protocol: u8) -> usize {
    match protocol {
        ip_protocol::TCP => tcp::HEADER_LEN,
        ip_protocol::UDP => udp::HEADER_LEN,
        ip_protocol::SCTP => sctp::HEADER_LEN,
        ip_protocol::ICMP | ip_protocol::ICMPV6 => icmp::HEADER_LEN,
        _ => 0,
    }
}

/// Where a packet stands in IP fragmentation (parse.h `enum sl_frag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented (IPv6 atomic fragments, offset 0 without more-fragments, included).
    None,
    /// Offset 0 with more fragments to come: carries the L4 header.
    First,
    /// Offset above 0: payload only, no L4 header.
    Later,
}

/// Reads the big-endian `u16` at `at`. The caller has checked the bytes are there.
#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads the big-endian `u32` at `at`. The caller has checked the bytes are there.
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes `v` big-endian at `at`. The caller has checked the bytes are there.
#[inline]
fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4_min_len_matches_parse_h() {
        assert_eq!(l4_min_len(ip_protocol::TCP), 20);
        assert_eq!(l4_min_len(ip_protocol::UDP), 8);
        assert_eq!(l4_min_len(ip_protocol::SCTP), 12);
        assert_eq!(l4_min_len(ip_protocol::ICMP), 8);
        assert_eq!(l4_min_len(ip_protocol::ICMPV6), 8);
        assert_eq!(l4_min_len(47), 0);
        assert_eq!(l4_min_len(ip_protocol::FRAGMENT), 0);
    }
}
