//! IPv6 headers and the extension-header walk (hop-by-hop, routing, fragment, destination
//! options, authentication), as parse.h walks them: at most [`MAX_EXTENSION_HEADERS`].

use std::net::Ipv6Addr;

use super::{Field, Fragment, Rest, WireError, be16, be32, ip_protocol};

/// Byte positions of the fixed IPv6 header's fields.
pub mod field {
    use super::{Field, Rest};

    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub const VER_TC_FLOW: Field = 0..4;
    /// Payload length: what follows the fixed header, extension headers included.
    pub const LENGTH: Field = 4..6;
    /// Next header: the first extension header or the upper-layer protocol.
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Field = 8..24;
    /// Destination address.
    pub const DST_ADDR: Field = 24..40;
    /// The payload.
    pub const PAYLOAD: Rest = 40..;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// The most extension headers walked; one more makes the packet malformed (parse.h
/// `SL_IPV6_MAX_EXT`).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Whether `next_header` names an extension header the walk steps over: hop-by-hop (0),
/// routing (43), fragment (44), authentication (51), destination options (60).
pub fn is_extension_header(next_header: u8) -> bool {
    matches!(
        next_header,
        ip_protocol::HOP_BY_HOP
            | ip_protocol::ROUTING
            | ip_protocol::FRAGMENT
            | ip_protocol::AH
            | ip_protocol::DESTINATION_OPTIONS
    )
}

/// A view of an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// What follows the extension headers of an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer<'a> {
    /// The upper-layer protocol; for a later fragment, the fragment header's next header.
    pub protocol: u8,
    /// Offset of `data` from the start of the payload (the end of the fixed header).
    pub offset: usize,
    /// The rest of the payload from the upper-layer header on (for a later fragment: the
    /// fragment's data).
    pub data: &'a [u8],
    /// Extension headers stepped over.
    pub extension_headers: usize,
    /// Fragmentation, from the last fragment header (none: [`Fragment::None`]).
    pub fragment: Fragment,
    /// The fragment header's identification; 0 without one.
    pub frag_id: u32,
    /// The fragment header's next header (the protocol every fragment names); 0 without one.
    pub frag_proto: u8,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than the header
    /// or than the payload length it announces.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` (from the IP header to the end of the frame) after parse.h's checks: the
    /// fixed header is there, version 6, and the payload length fits in the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let available = b.len();
        if available < HEADER_LEN {
            return Err(WireError::Ipv6HeaderTruncated { available });
        }
        let version = b[0] >> 4;
        if version != 6 {
            return Err(WireError::BadIpVersion {
                expected: 6,
                found: version,
            });
        }
        let payload_len = be16(b, field::LENGTH.start);
        if usize::from(payload_len) > available - HEADER_LEN {
            return Err(WireError::PayloadLengthBeyondFrame {
                payload_len,
                available: available - HEADER_LEN,
            });
        }
        Ok(Ipv6Packet { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (6 in a checked view).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// The payload length.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The datagram's length: the fixed header and the payload.
    pub fn total_len(&self) -> u32 {
        HEADER_LEN as u32 + u32::from(self.payload_len())
    }

    /// The next header field of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The payload: extension headers and upper layer, up to the payload length (Ethernet
    /// padding excluded).
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }

    /// Walks the extension headers as parse.h does: each at least 8 bytes and within the
    /// payload; a non-first fragment ends the walk (what follows is data); more than
    /// [`MAX_EXTENSION_HEADERS`] is an error. A later fragment header overrides an earlier
    /// one's [`Fragment`].
    pub fn upper_layer(&self) -> Result<UpperLayer<'_>, WireError> {
        let payload = self.payload();
        let mut rest = payload;
        let mut next = self.next_header();
        let mut count = 0;
        let mut fragment = Fragment::None;
        let mut frag_id = 0;
        let mut frag_proto = 0;
        while is_extension_header(next) {
            if count == MAX_EXTENSION_HEADERS {
                return Err(WireError::TooManyExtensionHeaders {
                    max: MAX_EXTENSION_HEADERS,
                });
            }
            count += 1;
            let (after, len) = match next {
                ip_protocol::FRAGMENT => {
                    let f = FragmentHeader::new_checked(rest)?;
                    frag_id = f.ident();
                    frag_proto = f.next_header();
                    if f.frag_offset() != 0 {
                        let data = &rest[FRAGMENT_HEADER_LEN..];
                        return Ok(UpperLayer {
                            protocol: f.next_header(),
                            offset: payload.len() - data.len(),
                            data,
                            extension_headers: count,
                            fragment: Fragment::Later,
                            frag_id,
                            frag_proto,
                        });
                    }
                    fragment = if f.more_fragments() {
                        Fragment::First
                    } else {
                        Fragment::None
                    };
                    (f.next_header(), FRAGMENT_HEADER_LEN)
                }
                ip_protocol::AH => {
                    let h = AuthHeader::new_checked(rest)?;
                    (h.next_header(), h.header_len())
                }
                ip_protocol::HOP_BY_HOP => {
                    let h = HopByHopHeader::new_checked(rest)?;
                    (h.next_header(), h.header_len())
                }
                ip_protocol::ROUTING => {
                    let h = RoutingHeader::new_checked(rest)?;
                    (h.next_header(), h.header_len())
                }
                _ => {
                    let h = DestinationOptionsHeader::new_checked(rest)?;
                    (h.next_header(), h.header_len())
                }
            };
            // Each view's check put `len` within `rest`.
            rest = &rest[len..];
            next = after;
        }
        Ok(UpperLayer {
            protocol: next,
            offset: payload.len() - rest.len(),
            data: rest,
            extension_headers: count,
            fragment,
            frag_id,
            frag_proto,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(b);
    Ipv6Addr::from(octets)
}

/// Byte positions shared by the extension headers.
pub mod ext_field {
    use super::{Field, Rest};

    /// Next header.
    pub const NXT_HDR: usize = 0;
    /// Header length (in 8-byte units past the first 8; AH: 4-byte units past the first 8).
    /// Reserved in a fragment header.
    pub const LENGTH: usize = 1;
    /// Fragment header: offset (13 bits, 8-byte units), 2 reserved bits, more-fragments bit.
    pub const FRAG_OFFSET_FLAGS: Field = 2..4;
    /// Fragment header: identification.
    pub const FRAG_IDENT: Field = 4..8;
    /// Options of a hop-by-hop / destination options header; type-specific data of a routing
    /// header; reserved, SPI, sequence and ICV of an AH.
    pub const DATA: Rest = 2..;
}

/// Smallest extension header (every kind is at least 8 bytes).
pub const EXT_HEADER_MIN_LEN: usize = 8;
/// Length of a fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// A view of a hop-by-hop (0), routing (43) or destination options (60) extension header,
/// whose length is `(hdr_ext_len + 1) * 8`; `KIND` is its protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>, const KIND: u8> {
    buffer: T,
}

/// A hop-by-hop options header.
pub type HopByHopHeader<T> = ExtHeader<T, { ip_protocol::HOP_BY_HOP }>;
/// A routing header.
pub type RoutingHeader<T> = ExtHeader<T, { ip_protocol::ROUTING }>;
/// A destination options header.
pub type DestinationOptionsHeader<T> = ExtHeader<T, { ip_protocol::DESTINATION_OPTIONS }>;

impl<T: AsRef<[u8]>, const KIND: u8> ExtHeader<T, KIND> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than the header.
    pub fn new_unchecked(buffer: T) -> Self {
        ExtHeader { buffer }
    }

    /// Wraps `buffer` (from the header to the end of the IPv6 payload) after checking that it
    /// holds the whole header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let available = b.len();
        if available < EXT_HEADER_MIN_LEN {
            return Err(truncated(KIND, EXT_HEADER_MIN_LEN, available));
        }
        let h = ExtHeader { buffer };
        let needed = h.header_len();
        if needed > available {
            return Err(truncated(KIND, needed, available));
        }
        Ok(h)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The next header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    /// The header's length in bytes: `(hdr_ext_len + 1) * 8`.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[ext_field::LENGTH]) + 1) * 8
    }

    /// The header past its first two bytes (options; a routing header's type, segments left
    /// and data).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[ext_field::DATA.start..self.header_len()]
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A view of an authentication header (51), whose length is `(payload_len + 2) * 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AuthHeader<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than the header.
    pub fn new_unchecked(buffer: T) -> Self {
        AuthHeader { buffer }
    }

    /// Wraps `buffer` (from the header to the end of the IPv6 payload) after checking that it
    /// holds the whole header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < EXT_HEADER_MIN_LEN {
            return Err(truncated(ip_protocol::AH, EXT_HEADER_MIN_LEN, available));
        }
        let h = AuthHeader { buffer };
        let needed = h.header_len();
        if needed > available {
            return Err(truncated(ip_protocol::AH, needed, available));
        }
        Ok(h)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The next header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    /// The header's length in bytes: `(payload_len + 2) * 4`.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[ext_field::LENGTH]) + 2) * 4
    }

    /// The security parameters index.
    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A view of a fragment header (44), always 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        FragmentHeader { buffer }
    }

    /// Wraps `buffer` (from the header to the end of the IPv6 payload) after checking that it
    /// holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < FRAGMENT_HEADER_LEN {
            return Err(truncated(
                ip_protocol::FRAGMENT,
                FRAGMENT_HEADER_LEN,
                available,
            ));
        }
        Ok(FragmentHeader { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The next header: the protocol every fragment of the datagram names.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    fn offset_flags(&self) -> u16 {
        be16(self.buffer.as_ref(), ext_field::FRAG_OFFSET_FLAGS.start)
    }

    /// The fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.offset_flags() >> 3
    }

    /// The more-fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.offset_flags() & 1 != 0
    }

    /// The identification.
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), ext_field::FRAG_IDENT.start)
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[FRAGMENT_HEADER_LEN..]
    }
}

fn truncated(header: u8, needed: usize, available: usize) -> WireError {
    WireError::Ipv6ExtensionTruncated {
        header,
        needed,
        available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fd00::1 → fd00::2, hop limit 64, flow label 0x12345, traffic class 0xb8; payload: a
    /// hop-by-hop header (8 bytes, PadN), a fragment header (offset 0, M, id 0xdeadbeef),
    /// then 8 bytes of UDP.
    const HBH_FRAG_UDP: [u8; 64] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x18, 0x00, 0x40, // ver/tc/flow, len 24, next 0, hop 64
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // destination
        44, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop → fragment, PadN of 4
        17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, // fragment → UDP, offset 0, M, id
        0x30, 0x39, 0x13, 0x88, 0x00, 0x08, 0x00, 0x00, // UDP
    ];

    #[test]
    fn fixed_header_fields() {
        let p = Ipv6Packet::new_checked(&HBH_FRAG_UDP[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 24);
        assert_eq!(p.total_len(), 64);
        assert_eq!(p.next_header(), 0);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &HBH_FRAG_UDP[40..]);
    }

    #[test]
    fn walk_over_hop_by_hop_and_fragment() {
        let p = Ipv6Packet::new_checked(&HBH_FRAG_UDP[..]).unwrap();
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, 17);
        assert_eq!(ul.offset, 16);
        assert_eq!(ul.data, &HBH_FRAG_UDP[56..]);
        assert_eq!(ul.extension_headers, 2);
        assert_eq!(ul.fragment, Fragment::First);
        assert_eq!(ul.frag_id, 0xdead_beef);
        assert_eq!(ul.frag_proto, 17);
    }

    #[test]
    fn later_fragment_ends_the_walk() {
        let mut b = HBH_FRAG_UDP;
        b[50..52].copy_from_slice(&0x0009u16.to_be_bytes()); // offset 1, M
        // What follows a later fragment is data even when it looks like a header.
        b[48] = ip_protocol::DESTINATION_OPTIONS;
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ul = ip.upper_layer().unwrap();
        assert_eq!(ul.fragment, Fragment::Later);
        assert_eq!(ul.protocol, ip_protocol::DESTINATION_OPTIONS);
        assert_eq!(ul.frag_proto, ip_protocol::DESTINATION_OPTIONS);
        assert_eq!(ul.data, &b[56..]);
        assert_eq!(ul.extension_headers, 2);
    }

    #[test]
    fn atomic_fragment_is_not_fragmented() {
        let mut b = HBH_FRAG_UDP;
        b[50..52].copy_from_slice(&0x0000u16.to_be_bytes());
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ul = ip.upper_layer().unwrap();
        assert_eq!(ul.fragment, Fragment::None);
        assert_eq!(ul.frag_id, 0xdead_beef);
        // Reserved bits alone do not make a later fragment.
        b[50..52].copy_from_slice(&0x0006u16.to_be_bytes());
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ul = ip.upper_layer().unwrap();
        assert_eq!(ul.fragment, Fragment::None);
    }

    /// An IPv6 packet whose payload is `payload`, first header `next`.
    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = HBH_FRAG_UDP[..40].to_vec();
        b[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        b[6] = next;
        b.extend_from_slice(payload);
        b
    }

    /// `n` destination options headers of 8 bytes, then `last`.
    fn chain(n: usize, last: u8) -> Vec<u8> {
        let mut p = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n {
                last
            } else {
                ip_protocol::DESTINATION_OPTIONS
            };
            p.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn eight_extension_headers_walk_nine_do_not() {
        let mut p = chain(8, 6);
        p.extend_from_slice(&[0; 20]);
        let b = packet(ip_protocol::DESTINATION_OPTIONS, &p);
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ul = ip.upper_layer().unwrap();
        assert_eq!(ul.extension_headers, 8);
        assert_eq!(ul.protocol, 6);
        assert_eq!(ul.data.len(), 20);

        let mut p = chain(9, 6);
        p.extend_from_slice(&[0; 20]);
        let b = packet(ip_protocol::DESTINATION_OPTIONS, &p);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::TooManyExtensionHeaders { max: 8 })
        );
        // Eight headers naming a ninth: malformed even with nothing after it.
        let b = packet(ip_protocol::DESTINATION_OPTIONS, &chain(8, ip_protocol::AH));
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::TooManyExtensionHeaders { max: 8 })
        );
    }

    #[test]
    fn header_lengths_by_kind() {
        // AH: (2 + 2) * 4 = 16 bytes; routing: (1 + 1) * 8 = 16 bytes.
        let mut p = vec![ip_protocol::ROUTING, 2, 0, 0, 0, 0, 0x12, 0x34];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[ip_protocol::ICMPV6, 1, 0, 0]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        let b = packet(ip_protocol::AH, &p);
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ah = AuthHeader::new_checked(ip.payload()).unwrap();
        assert_eq!(ah.header_len(), 16);
        assert_eq!(ah.spi(), 0x1234);
        assert_eq!(ah.payload().len(), 24);
        let rt = RoutingHeader::new_checked(ah.payload()).unwrap();
        assert_eq!(rt.header_len(), 16);
        assert_eq!(rt.data().len(), 14);
        assert_eq!(rt.payload(), &[128, 0, 0, 0, 0, 1, 0, 1]);
        let ul = ip.upper_layer().unwrap();
        assert_eq!(ul.protocol, ip_protocol::ICMPV6);
        assert_eq!(ul.offset, 32);
        assert_eq!(ul.extension_headers, 2);
        assert_eq!(ul.frag_proto, 0);
        assert_eq!(ul.frag_id, 0);
    }

    #[test]
    fn each_check_has_its_error() {
        assert_eq!(
            Ipv6Packet::new_checked(&HBH_FRAG_UDP[..39]),
            Err(WireError::Ipv6HeaderTruncated { available: 39 })
        );
        let mut v4 = HBH_FRAG_UDP;
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]),
            Err(WireError::BadIpVersion {
                expected: 6,
                found: 4
            })
        );
        assert_eq!(
            Ipv6Packet::new_checked(&HBH_FRAG_UDP[..63]),
            Err(WireError::PayloadLengthBeyondFrame {
                payload_len: 24,
                available: 23
            })
        );
        // Extension headers bounded by the payload length, not the frame.
        let mut short = HBH_FRAG_UDP;
        short[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(
            Ipv6Packet::new_checked(&short[..]).unwrap().upper_layer(),
            Err(WireError::Ipv6ExtensionTruncated {
                header: 44,
                needed: 8,
                available: 4
            })
        );
        // A hop-by-hop header claiming 16 bytes in a 24-byte payload whose fragment header
        // would then be cut short.
        let mut long = HBH_FRAG_UDP;
        long[41] = 3; // 32 bytes
        assert_eq!(
            Ipv6Packet::new_checked(&long[..]).unwrap().upper_layer(),
            Err(WireError::Ipv6ExtensionTruncated {
                header: 0,
                needed: 32,
                available: 24
            })
        );
        // An empty payload naming an extension header.
        let b = packet(ip_protocol::HOP_BY_HOP, &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::Ipv6ExtensionTruncated {
                header: 0,
                needed: 8,
                available: 0
            })
        );
        let b = packet(ip_protocol::AH, &[6, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::Ipv6ExtensionTruncated {
                header: 51,
                needed: 12,
                available: 8
            })
        );
    }

    #[test]
    fn no_extension_headers() {
        let b = packet(ip_protocol::TCP, &[0; 20]);
        let mut b2 = b.clone();
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ul = ip.upper_layer().unwrap();
        assert_eq!((ul.protocol, ul.offset, ul.extension_headers), (6, 0, 0));
        assert_eq!(ul.fragment, Fragment::None);
        let mut ip = Ipv6Packet::new_checked(&mut b2[..]).unwrap();
        ip.set_hop_limit(1);
        assert_eq!(ip.hop_limit(), 1);
    }
}
