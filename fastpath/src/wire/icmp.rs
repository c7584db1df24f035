//! ICMP and ICMPv6 messages: their first 8 bytes share one layout (type, code, checksum, and
//! for echo request/reply the identifier and sequence number).

use super::{Field, Rest, WireError, be16, ip_protocol};

/// Byte positions of the ICMP/ICMPv6 header's fields.
pub mod field {
    use super::{Field, Rest};

    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Field = 2..4;
    /// Echo request/reply: identifier (other types: the first half of the rest of header).
    pub const ECHO_IDENT: Field = 4..6;
    /// Echo request/reply: sequence number.
    pub const ECHO_SEQNO: Field = 6..8;
    /// The message body after the 8-byte header.
    pub const DATA: Rest = 8..;
}

/// Length of the header (type, code, checksum, 4 bytes of rest of header): also the least
/// parse.h accepts.
pub const HEADER_LEN: usize = 8;

/// ICMP (for IPv4) message types the fast path names.
pub mod icmpv4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 message types the fast path names.
pub mod icmpv6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Multicast listener query (MLD).
    pub const MLD_QUERY: u8 = 130;
    /// Multicast listener report (MLDv1).
    pub const MLD_REPORT: u8 = 131;
    /// Multicast listener done (MLDv1).
    pub const MLD_DONE: u8 = 132;
    /// Router solicitation.
    pub const ROUTER_SOLICITATION: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERTISEMENT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
    /// Multicast listener report (MLDv2).
    pub const MLDV2_REPORT: u8 = 143;
}

/// Whether an ICMPv6 type belongs to the link rather than to pods' policy: MLD (130–132,
/// 143), router and neighbour discovery and redirect (133–137) (parse.h
/// `sl_icmpv6_is_link_local_control`). Such packets are "not IP" to the dataplane.
pub fn is_icmpv6_link_control(icmp_type: u8) -> bool {
    (icmpv6_type::MLD_QUERY..=icmpv6_type::REDIRECT).contains(&icmp_type)
        || icmp_type == icmpv6_type::MLDV2_REPORT
}

/// Whether `icmp_type` is an echo request or reply of `protocol` (ICMP 8/0, ICMPv6 128/129;
/// decided by the protocol number, as conntrack.h does, whatever the IP version). False for
/// any other protocol.
pub fn is_echo(protocol: u8, icmp_type: u8) -> bool {
    match protocol {
        ip_protocol::ICMP => {
            icmp_type == icmpv4_type::ECHO_REQUEST || icmp_type == icmpv4_type::ECHO_REPLY
        }
        ip_protocol::ICMPV6 => {
            icmp_type == icmpv6_type::ECHO_REQUEST || icmp_type == icmpv6_type::ECHO_REPLY
        }
        _ => false,
    }
}

/// A view of an ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer` (from the header to the end of the IP datagram) after checking that it
    /// holds the 8-byte header. The error names protocol 1 (ICMP); the same view serves
    /// ICMPv6, for which [`super::summarize`] reports 58.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(WireError::L4HeaderTruncated {
                protocol: ip_protocol::ICMP,
                needed: HEADER_LEN,
                available,
            });
        }
        Ok(IcmpPacket { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Bytes 4–5: the identifier of an echo request/reply (for other types, whatever the rest
    /// of the header holds there; parse.h's `icmp_id`).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Bytes 6–7: the sequence number of an echo request/reply.
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// The echo identifier when this is an echo request or reply of `protocol` (see
    /// [`is_echo`]), else `None`.
    pub fn echo_ident_of(&self, protocol: u8) -> Option<u16> {
        is_echo(protocol, self.msg_type()).then(|| self.echo_ident())
    }

    /// The message body after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request, id 0x1234, seq 7, "hi".
    const ECHO: [u8; 10] = [8, 0, 0xf7, 0xca, 0x12, 0x34, 0x00, 0x07, b'h', b'i'];

    #[test]
    fn fields() {
        let m = IcmpPacket::new_checked(&ECHO[..]).unwrap();
        assert_eq!(m.msg_type(), 8);
        assert_eq!(m.msg_code(), 0);
        assert_eq!(m.checksum(), 0xf7ca);
        assert_eq!(m.echo_ident(), 0x1234);
        assert_eq!(m.echo_seq_no(), 7);
        assert_eq!(m.echo_ident_of(ip_protocol::ICMP), Some(0x1234));
        // Type 8 is not an ICMPv6 echo.
        assert_eq!(m.echo_ident_of(ip_protocol::ICMPV6), None);
        assert_eq!(m.echo_ident_of(ip_protocol::TCP), None);
        assert_eq!(m.data(), b"hi");
    }

    #[test]
    fn short_message() {
        assert_eq!(
            IcmpPacket::new_checked(&ECHO[..7]),
            Err(WireError::L4HeaderTruncated {
                protocol: 1,
                needed: 8,
                available: 7
            })
        );
    }

    #[test]
    fn echo_types() {
        assert!(is_echo(1, 0) && is_echo(1, 8) && !is_echo(1, 3) && !is_echo(1, 128));
        assert!(is_echo(58, 128) && is_echo(58, 129) && !is_echo(58, 0) && !is_echo(58, 8));
    }

    #[test]
    fn link_control_types_match_parse_h() {
        let link: Vec<u8> = (0..=255).filter(|&t| is_icmpv6_link_control(t)).collect();
        assert_eq!(link, [130, 131, 132, 133, 134, 135, 136, 137, 143]);
    }
}
