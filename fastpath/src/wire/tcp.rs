//! TCP headers.

use std::net::IpAddr;

use super::{Field, WireError, be16, be32, checksum, ip_protocol, put_be16};

/// Byte positions of the TCP header's fields.
pub mod field {
    use super::Field;

    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble, in 4-byte words) and the NS flag (lowest bit).
    pub const DATA_OFFSET: usize = 12;
    /// Flags: CWR ECE URG ACK PSH RST SYN FIN, high to low.
    pub const FLAGS: usize = 13;
    /// Window size.
    pub const WIN_SIZE: Field = 14..16;
    /// Checksum.
    pub const CHECKSUM: Field = 16..18;
    /// Urgent pointer.
    pub const URGENT: Field = 18..20;
}

/// Length of the header without options: also the least parse.h accepts.
pub const HEADER_LEN: usize = 20;

/// The bits of [`TcpPacket::flags`].
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than 20 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` (the segment: from the header to the end of the IP datagram) after
    /// checking that it holds the fixed 20-byte header. The data offset is not checked (parse.h
    /// does not): [`Self::options`] and [`Self::payload`] say `None` when it is wrong.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(WireError::L4HeaderTruncated {
                protocol: ip_protocol::TCP,
                needed: HEADER_LEN,
                available,
            });
        }
        Ok(TcpPacket { buffer })
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

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// The acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// The header length the data offset announces, in bytes (options included); not checked.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The eight flag bits (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The FIN flag.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// The SYN flag.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// The RST flag.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// The PSH flag.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// The ACK flag.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// The URG flag.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// The ECE flag.
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }

    /// The CWR flag.
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }

    /// The window size.
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The options, or `None` when the data offset is below 5 or past the buffer.
    pub fn options(&self) -> Option<&[u8]> {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.valid_header_len()?)
    }

    /// The payload, or `None` when the data offset is below 5 or past the buffer.
    pub fn payload(&self) -> Option<&[u8]> {
        self.buffer.as_ref().get(self.valid_header_len()?..)
    }

    fn valid_header_len(&self) -> Option<usize> {
        let len = self.header_len();
        (HEADER_LEN..=self.buffer.as_ref().len())
            .contains(&len)
            .then_some(len)
    }

    /// Whether the checksum is right, for a buffer that holds exactly the segment (as an IP
    /// payload does) between `src` and `dst`.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let b = self.buffer.as_ref();
        let Ok(len) = u32::try_from(b.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::TCP, len);
        checksum::combine(&[pseudo, checksum::data(b)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Computes and stores the checksum, for a buffer that holds exactly the segment.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        let pseudo = checksum::pseudo_header(src, dst, ip_protocol::TCP, len);
        let sum = checksum::combine(&[pseudo, checksum::data(b)]);
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// SYN 40000 → 80, seq 1, window 64240, one 4-byte option (MSS 1460), two payload bytes.
    const SYN: [u8; 26] = [
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, //
        0x02, 0x04, 0x05, 0xb4, // MSS
        0xab, 0xcd,
    ];

    #[test]
    fn fields() {
        let t = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(t.src_port(), 40000);
        assert_eq!(t.dst_port(), 80);
        assert_eq!(t.seq_number(), 1);
        assert_eq!(t.ack_number(), 0);
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), flags::SYN);
        assert!(t.syn());
        assert!(!(t.fin() || t.rst() || t.psh() || t.ack() || t.urg() || t.ece() || t.cwr()));
        assert_eq!(t.window_len(), 64240);
        assert_eq!(t.checksum(), 0);
        assert_eq!(t.urgent_at(), 0);
        assert_eq!(t.options(), Some(&[2, 4, 5, 0xb4][..]));
        assert_eq!(t.payload(), Some(&[0xab, 0xcd][..]));
    }

    #[test]
    fn bad_data_offsets_hide_options_and_payload() {
        let mut b = SYN;
        b[12] = 0x40; // 16 bytes
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.options(), t.payload()), (None, None));
        b[12] = 0xf0; // 60 bytes in 26
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.options(), t.payload()), (None, None));
        b[12] = 0x50;
        let t = TcpPacket::new_checked(&b[..20]).unwrap();
        assert_eq!((t.options(), t.payload()), (Some(&[][..]), Some(&[][..])));
    }

    #[test]
    fn short_segment() {
        assert_eq!(
            TcpPacket::new_checked(&SYN[..19]),
            Err(WireError::L4HeaderTruncated {
                protocol: 6,
                needed: 20,
                available: 19
            })
        );
    }

    #[test]
    fn checksum_round_trip() {
        let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let mut b = SYN;
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert!(!t.verify_checksum(src, dst));
        t.fill_checksum(src, dst);
        assert!(t.verify_checksum(src, dst));
        assert!(!t.verify_checksum(dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))));
        t.set_dst_port(8080);
        t.set_src_port(1);
        assert_eq!((t.src_port(), t.dst_port()), (1, 8080));
        assert!(!t.verify_checksum(src, dst));
    }
}
