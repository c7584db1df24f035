//! Why a buffer is not a valid header.

/// Why a buffer is not a valid header, or why an IP frame is malformed.
///
/// [`super::summarize`] returns only the variants that parse.h calls `SL_PARSE_MALFORMED`
/// (every variant except [`WireError::EthernetTruncated`] and [`WireError::VlanTagTruncated`],
/// which it reports as [`super::Frame::NotIp`], as parse.h does). Lengths are in bytes;
/// `available` is what the buffer (for L4: the IP datagram) holds from the header's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than 14 bytes: no room for the Ethernet header.
    #[error("frame of {len} bytes is shorter than an Ethernet header (14 bytes)")]
    EthernetTruncated {
        /// The frame's length.
        len: usize,
    },
    /// An 802.1Q/802.1AD ethertype with fewer than 4 bytes after it for the tag.
    #[error("frame of {len} bytes is too short for its VLAN tag (needs 18 bytes)")]
    VlanTagTruncated {
        /// The frame's length.
        len: usize,
    },
    /// Fewer than 20 bytes after the Ethernet header of an IPv4 frame.
    #[error("IPv4 header truncated: {available} bytes, needs 20")]
    Ipv4HeaderTruncated {
        /// Bytes from the IP header's start to the end of the frame.
        available: usize,
    },
    /// The IP version nibble does not match the ethertype.
    #[error("IP version {found} where the ethertype says IPv{expected}")]
    BadIpVersion {
        /// 4 or 6, from the ethertype.
        expected: u8,
        /// The version nibble found.
        found: u8,
    },
    /// An IPv4 IHL below 5 (a header shorter than its fixed 20 bytes).
    #[error("IPv4 IHL {ihl} is below 5")]
    Ipv4IhlTooSmall {
        /// The IHL field (in 4-byte words).
        ihl: u8,
    },
    /// The IPv4 header with its options runs past the end of the frame.
    #[error(
        "IPv4 header of {header_len} bytes (with options) runs past the frame ({available} bytes)"
    )]
    Ipv4OptionsTruncated {
        /// The header length the IHL announces.
        header_len: usize,
        /// Bytes from the IP header's start to the end of the frame.
        available: usize,
    },
    /// An IPv4 total length smaller than the header itself.
    #[error("IPv4 total length {total_len} is smaller than its header ({header_len} bytes)")]
    TotalLengthBelowHeader {
        /// The total-length field.
        total_len: u16,
        /// The header length the IHL announces.
        header_len: usize,
    },
    /// An IPv4 total length past the end of the frame (Ethernet padding after the datagram is
    /// fine; a datagram cut short is not).
    #[error("IPv4 total length {total_len} runs past the frame ({available} bytes)")]
    TotalLengthBeyondFrame {
        /// The total-length field.
        total_len: u16,
        /// Bytes from the IP header's start to the end of the frame.
        available: usize,
    },
    /// Fewer than 40 bytes after the Ethernet header of an IPv6 frame.
    #[error("IPv6 header truncated: {available} bytes, needs 40")]
    Ipv6HeaderTruncated {
        /// Bytes from the IP header's start to the end of the frame.
        available: usize,
    },
    /// An IPv6 payload length past the end of the frame.
    #[error(
        "IPv6 payload length {payload_len} runs past the frame ({available} bytes after the header)"
    )]
    PayloadLengthBeyondFrame {
        /// The payload-length field.
        payload_len: u16,
        /// Bytes after the fixed 40-byte header to the end of the frame.
        available: usize,
    },
    /// An IPv6 extension header shorter than 8 bytes, or longer than what remains of the
    /// payload.
    #[error(
        "IPv6 extension header {header} truncated: needs {needed} bytes, {available} left in the payload"
    )]
    Ipv6ExtensionTruncated {
        /// The header's protocol number (0, 43, 44, 51 or 60).
        header: u8,
        /// The header's length (8 when even its first 8 bytes are missing).
        needed: usize,
        /// Bytes of the payload left at the header's start.
        available: usize,
    },
    /// More IPv6 extension headers than the parser walks.
    #[error("more than {max} IPv6 extension headers")]
    TooManyExtensionHeaders {
        /// The most the parser walks (parse.h `SL_IPV6_MAX_EXT`).
        max: usize,
    },
    /// A packet that is not a later fragment whose datagram is too short for the minimal
    /// header of its L4 protocol (TCP 20, UDP 8, SCTP 12, ICMP/ICMPv6 8 bytes).
    #[error(
        "L4 header of protocol {protocol} truncated: needs {needed} bytes, the datagram holds {available}"
    )]
    L4HeaderTruncated {
        /// The IP protocol number (after IPv6 extension headers).
        protocol: u8,
        /// The minimal header length for that protocol.
        needed: usize,
        /// Bytes of the datagram from the L4 header's start.
        available: usize,
    },
}
