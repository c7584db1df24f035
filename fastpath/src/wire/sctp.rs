//! SCTP common headers.

use super::{Field, Rest, WireError, be16, be32, ip_protocol};

/// Byte positions of the SCTP common header's fields.
pub mod field {
    use super::{Field, Rest};

    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Verification tag.
    pub const VERIFICATION_TAG: Field = 4..8;
    /// CRC32c checksum.
    pub const CHECKSUM: Field = 8..12;
    /// The chunks.
    pub const CHUNKS: Rest = 12..;
}

/// Length of the common header: also the least parse.h accepts.
pub const HEADER_LEN: usize = 12;

/// A view of an SCTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than 12 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        SctpPacket { buffer }
    }

    /// Wraps `buffer` (from the header to the end of the IP datagram) after checking that it
    /// holds the 12-byte common header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(WireError::L4HeaderTruncated {
                protocol: ip_protocol::SCTP,
                needed: HEADER_LEN,
                available,
            });
        }
        Ok(SctpPacket { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The verification tag.
    pub fn verification_tag(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VERIFICATION_TAG.start)
    }

    /// The checksum field (CRC32c, stored little-endian on the wire; returned as read,
    /// big-endian).
    pub fn checksum(&self) -> u32 {
        be32(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The chunks after the common header.
    pub fn chunks(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CHUNKS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5000 → 38412, tag 0, an INIT chunk header.
    const INIT: [u8; 16] = [
        0x13, 0x88, 0x96, 0x0c, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 1, 0, 0, 4,
    ];

    #[test]
    fn fields() {
        let s = SctpPacket::new_checked(&INIT[..]).unwrap();
        assert_eq!(s.src_port(), 5000);
        assert_eq!(s.dst_port(), 38412);
        assert_eq!(s.verification_tag(), 0);
        assert_eq!(s.checksum(), 0x1234_5678);
        assert_eq!(s.chunks(), &[1, 0, 0, 4]);
        assert!(
            SctpPacket::new_checked(&INIT[..12])
                .unwrap()
                .chunks()
                .is_empty()
        );
    }

    #[test]
    fn short_packet() {
        assert_eq!(
            SctpPacket::new_checked(&INIT[..11]),
            Err(WireError::L4HeaderTruncated {
                protocol: 132,
                needed: 12,
                available: 11
            })
        );
    }
}
