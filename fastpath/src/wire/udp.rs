//! UDP headers.

use std::net::IpAddr;

use super::{Field, Rest, WireError, be16, checksum, ip_protocol, put_be16};

/// Byte positions of the UDP header's fields.
pub mod field {
    use super::{Field, Rest};

    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length: header and payload.
    pub const LENGTH: Field = 4..6;
    /// Checksum (0: none, IPv4 only).
    pub const CHECKSUM: Field = 6..8;
    /// The payload.
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the header: also the least parse.h accepts.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` (from the header to the end of the IP datagram) after checking that it
    /// holds the 8-byte header. The length field is not checked (parse.h does not).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(WireError::L4HeaderTruncated {
                protocol: ip_protocol::UDP,
                needed: HEADER_LEN,
                available,
            });
        }
        Ok(UdpPacket { buffer })
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

    /// The length field (header and payload); not checked against the buffer.
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The bytes after the header in the buffer (the rest of the IP datagram), whatever the
    /// length field says.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// Whether the checksum is right, for a buffer that holds exactly the datagram (as an IP
    /// payload does) between `src` and `dst`. A zero checksum over IPv4 means "none": true.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if src.is_ipv4() && self.checksum() == 0 {
            return true;
        }
        let b = self.buffer.as_ref();
        let Ok(len) = u32::try_from(b.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::UDP, len);
        checksum::combine(&[pseudo, checksum::data(b)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (the checksum is not updated).
    pub fn set_src_port(&mut self, port: u16) {
        put_be16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    /// Sets the destination port (the checksum is not updated).
    pub fn set_dst_port(&mut self, port: u16) {
        put_be16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        put_be16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes and stores the checksum, for a buffer that holds exactly the datagram (a
    /// computed 0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::UDP, len);
        let sum = !checksum::combine(&[pseudo, checksum::data(b)]);
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    /// 12345 → 5000, length 12, "ping".
    const DATAGRAM: [u8; 12] = [
        0x30, 0x39, 0x13, 0x88, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
    ];

    #[test]
    fn fields() {
        let u = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(u.src_port(), 12345);
        assert_eq!(u.dst_port(), 5000);
        assert_eq!(u.len(), 12);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0);
        assert_eq!(u.payload(), b"ping");
        assert!(
            UdpPacket::new_checked(&DATAGRAM[..8])
                .unwrap()
                .payload()
                .is_empty()
        );
    }

    #[test]
    fn short_datagram() {
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..7]),
            Err(WireError::L4HeaderTruncated {
                protocol: 17,
                needed: 8,
                available: 7
            })
        );
    }

    #[test]
    fn checksum_known_value_and_round_trip() {
        let src: IpAddr = "fd00::1".parse::<Ipv6Addr>().unwrap().into();
        let dst: IpAddr = "fd00::2".parse::<Ipv6Addr>().unwrap().into();
        let mut b = DATAGRAM;
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert!(!u.verify_checksum(src, dst));
        u.fill_checksum(src, dst);
        // Computed independently (Python, RFC 8200 pseudo-header).
        assert_eq!(u.checksum(), 0xe33f);
        assert!(u.verify_checksum(src, dst));
        u.payload_mut()[0] = b'P';
        assert!(!u.verify_checksum(src, dst));
        u.set_src_port(1);
        u.set_dst_port(2);
        assert_eq!((u.src_port(), u.dst_port()), (1, 2));
        // IPv4 with checksum 0: none.
        u.set_checksum(0);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(u.verify_checksum(v4, v4));
    }
}
