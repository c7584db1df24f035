//! IPv4 headers (with options).

use std::net::Ipv4Addr;

use super::{Field, Fragment, WireError, be16, checksum, put_be16};

/// Byte positions of the IPv4 header's fields.
pub mod field {
    use super::Field;

    /// Version (high nibble) and IHL (low nibble, in 4-byte words).
    pub const VER_IHL: usize = 0;
    /// DSCP (high 6 bits) and ECN (low 2 bits).
    pub const DSCP_ECN: usize = 1;
    /// Total length: header and payload.
    pub const LENGTH: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..6;
    /// Flags (reserved, don't fragment, more fragments) and fragment offset (8-byte units).
    pub const FLAGS_FRAG: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC_ADDR: Field = 12..16;
    /// Destination address.
    pub const DST_ADDR: Field = 16..20;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = 20;

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than the header
    /// or than the lengths the header announces.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` (from the IP header to the end of the frame) after parse.h's checks, in
    /// its order: the fixed header is there, version 4, IHL at least 5, the header with its
    /// options is there, total length at least the header and at most the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let available = b.len();
        if available < HEADER_LEN {
            return Err(WireError::Ipv4HeaderTruncated { available });
        }
        let version = b[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(WireError::BadIpVersion {
                expected: 4,
                found: version,
            });
        }
        let ihl = b[field::VER_IHL] & 0x0f;
        let header_len = usize::from(ihl) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Ipv4IhlTooSmall { ihl });
        }
        if header_len > available {
            return Err(WireError::Ipv4OptionsTruncated {
                header_len,
                available,
            });
        }
        let total_len = be16(b, field::LENGTH.start);
        if usize::from(total_len) < header_len {
            return Err(WireError::TotalLengthBelowHeader {
                total_len,
                header_len,
            });
        }
        if usize::from(total_len) > available {
            return Err(WireError::TotalLengthBeyondFrame {
                total_len,
                available,
            });
        }
        Ok(Ipv4Packet { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 in a checked view).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP (differentiated services code point).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// The ECN bits.
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// The total length: header and payload.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The identification field (what fragments of one datagram share).
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT.start)
    }

    fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG.start)
    }

    /// The don't-fragment flag.
    pub fn dont_fragment(&self) -> bool {
        self.flags_frag() & FLAG_DONT_FRAGMENT != 0
    }

    /// The more-fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.flags_frag() & FLAG_MORE_FRAGMENTS != 0
    }

    /// The fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & FRAG_OFFSET_MASK
    }

    /// Where the datagram stands in fragmentation: [`Fragment::Later`] for a non-zero offset,
    /// [`Fragment::First`] for offset 0 with more fragments, else [`Fragment::None`].
    pub fn fragment(&self) -> Fragment {
        if self.frag_offset() != 0 {
            Fragment::Later
        } else if self.more_fragments() {
            Fragment::First
        } else {
            Fragment::None
        }
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        addr(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The options (the header past its first 20 bytes; empty without options).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: after the header, up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum (over the header with its options) is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the time to live (the checksum is not updated: see [`Self::fill_checksum`]).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the source address (the checksum is not updated).
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address (the checksum is not updated).
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put_be16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes the header checksum (options included) and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = self.header_len();
        let sum = checksum::data(&self.buffer.as_ref()[..len]);
        self.set_checksum(!sum);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1 → 10.0.0.2, UDP, id 0x1c46, DF, TTL 64, 8 bytes of payload, checksum right.
    const UDP_DATAGRAM: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x0a, 0x89, 10, 0, 0, 1, 10, 0,
        0, 2, // header
        0x30, 0x39, 0x13, 0x88, 0x00, 0x08, 0x00, 0x00, // UDP 12345 → 5000, no checksum
    ];

    #[test]
    fn fields() {
        let p = Ipv4Packet::new_checked(&UDP_DATAGRAM[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp(), 0);
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_fragment());
        assert!(!p.more_fragments());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.fragment(), Fragment::None);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.checksum(), 0x0a89);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &UDP_DATAGRAM[20..]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn padding_after_the_datagram_is_not_payload() {
        let mut b = UDP_DATAGRAM.to_vec();
        b.extend_from_slice(&[0; 18]); // Ethernet padding to 60 bytes
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn options_and_checksum() {
        // IHL 6: one 4-byte option (NOP NOP NOP EOL).
        let mut b = [0u8; 32];
        b[0] = 0x46;
        b[2..4].copy_from_slice(&32u16.to_be_bytes());
        b[8] = 1;
        b[9] = 6;
        b[12..16].copy_from_slice(&[192, 168, 1, 1]);
        b[16..20].copy_from_slice(&[192, 168, 1, 2]);
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 8);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.set_ttl(0);
        assert!(!p.verify_checksum());
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        p.payload_mut().fill(0xaa);
        assert_eq!(b[24..], [0xaa; 8]);
    }

    #[test]
    fn checksum_of_a_known_header() {
        // Header of UDP_DATAGRAM with its checksum zeroed computes to 0x0a89.
        let mut b = UDP_DATAGRAM;
        b[10] = 0;
        b[11] = 0;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert_eq!(p.checksum(), 0x0a89);
    }

    #[test]
    fn fragments() {
        let mut b = UDP_DATAGRAM;
        b[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap().fragment(),
            Fragment::First
        );
        b[6..8].copy_from_slice(&0x2001u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.fragment(), Fragment::Later);
        assert_eq!(p.frag_offset(), 1);
        b[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap().fragment(),
            Fragment::Later
        );
        // Reserved and DF bits alone: not a fragment.
        b[6..8].copy_from_slice(&0xc000u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap().fragment(),
            Fragment::None
        );
    }

    #[test]
    fn each_check_has_its_error() {
        let b = UDP_DATAGRAM;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]),
            Err(WireError::Ipv4HeaderTruncated { available: 19 })
        );
        let mut v6 = b;
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]),
            Err(WireError::BadIpVersion {
                expected: 4,
                found: 6
            })
        );
        let mut ihl = b;
        ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&ihl[..]),
            Err(WireError::Ipv4IhlTooSmall { ihl: 4 })
        );
        let mut opts = b;
        opts[0] = 0x48; // 32-byte header in 28 bytes
        assert_eq!(
            Ipv4Packet::new_checked(&opts[..]),
            Err(WireError::Ipv4OptionsTruncated {
                header_len: 32,
                available: 28
            })
        );
        let mut short_total = b;
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&short_total[..]),
            Err(WireError::TotalLengthBelowHeader {
                total_len: 19,
                header_len: 20
            })
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..27]),
            Err(WireError::TotalLengthBeyondFrame {
                total_len: 28,
                available: 27
            })
        );
        // Total length exactly the header: an empty payload.
        let mut empty = b;
        empty[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(
            Ipv4Packet::new_checked(&empty[..])
                .unwrap()
                .payload()
                .is_empty()
        );
    }
}
