//! [`summarize`]: one frame to what the verdict pipeline needs, exactly as parse.h's
//! `sl_parse` reads it.

use std::net::IpAddr;

use super::ethernet::{self, EthernetFrame, ethertype};
use super::icmp::{self, IcmpPacket};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::sctp::SctpPacket;
use super::tcp::TcpPacket;
use super::udp::UdpPacket;
use super::{Fragment, WireError, ip_protocol, l4_min_len};

/// What the verdict pipeline needs from one frame (parse.h `struct sl_pkt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSummary {
    /// Byte offset of the IP header: 14, or 18 behind a VLAN tag.
    pub l3_offset: u16,
    /// The VLAN id (12 bits) if the frame carries a tag.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number of the L4 header (IPv6: after the extension headers; a later IPv6
    /// fragment: the fragment header's next header).
    pub protocol: u8,
    /// TCP/UDP/SCTP source port; 0 for ICMP/ICMPv6 (as parse.h: the echo identifier is in
    /// [`Self::icmp_echo_id`]), other protocols and later fragments.
    pub src_port: u16,
    /// TCP/UDP/SCTP destination port; for ICMP/ICMPv6 the message *type* (how policy names
    /// ICMP: the "port" of an ICMP packet is its type); 0 for other protocols and later
    /// fragments.
    pub dst_port: u16,
    /// ICMP/ICMPv6 message type (not in a later fragment).
    pub icmp_type: Option<u8>,
    /// ICMP/ICMPv6 message code (not in a later fragment).
    pub icmp_code: Option<u8>,
    /// The identifier of an ICMP echo request/reply (type 8/0) or ICMPv6 echo request/reply
    /// (128/129), decided by the protocol number as conntrack.h does; else `None`.
    pub icmp_echo_id: Option<u16>,
    /// TCP flags (CWR ECE URG ACK PSH RST SYN FIN); 0 unless TCP (and not a later fragment).
    pub tcp_flags: u8,
    /// Where the packet stands in fragmentation.
    pub fragment: Fragment,
    /// IPv4 identification (always); IPv6 fragment header identification, 0 without one.
    /// With [`Self::frag_proto`] and the addresses it keys a datagram's fragments.
    pub frag_id: u32,
    /// The protocol every fragment of the datagram names: the IPv4 protocol field (always);
    /// IPv6 the fragment header's next header (AH may follow it), 0 without one.
    pub frag_proto: u8,
    /// The IP datagram's length, header and payload: IPv4 total length; IPv6 40 + payload
    /// length (which can exceed `u16::MAX`).
    pub ip_len: u32,
}

/// Why a frame is passed along without a verdict (parse.h `SL_PARSE_NON_IP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotIpReason {
    /// Shorter than the 14-byte Ethernet header.
    ShortFrame,
    /// A VLAN TPID with no room for the tag.
    ShortVlanTag,
    /// A second VLAN tag (802.1Q or 802.1AD) inside the first: not read.
    SecondVlanTag,
    /// An ethertype other than IPv4 and IPv6 (ARP, …).
    Ethertype(u16),
    /// IPv6 neighbour/router discovery, redirect or MLD (ICMPv6 130–137, 143): the link's
    /// business, not pods' policy.
    Icmpv6LinkControl {
        /// The ICMPv6 type.
        icmp_type: u8,
    },
}

/// One frame, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not IPv4/IPv6 traffic the dataplane decides (parse.h `SL_PARSE_NON_IP`).
    NotIp(NotIpReason),
    /// An IPv4/IPv6 packet that passed every check (parse.h `SL_PARSE_OK`).
    Ip(PacketSummary),
}

/// Reads `frame` (from the Ethernet header) as parse.h's `sl_parse` does. `Err` is parse.h's
/// `SL_PARSE_MALFORMED`, with the reason. Allocates nothing and panics on no input.
pub fn summarize(frame: &[u8]) -> Result<Frame, WireError> {
    let eth = match EthernetFrame::new_checked(frame) {
        Ok(eth) => eth,
        Err(WireError::VlanTagTruncated { .. }) => {
            return Ok(Frame::NotIp(NotIpReason::ShortVlanTag));
        }
        Err(_) => return Ok(Frame::NotIp(NotIpReason::ShortFrame)),
    };
    let link = Link {
        // 14 or 18.
        l3_offset: eth.header_len() as u16,
        vlan: eth.vlan_id(),
    };
    match eth.payload_ethertype() {
        ethertype::IPV4 => summarize_ipv4(link, eth.payload()),
        ethertype::IPV6 => summarize_ipv6(link, eth.payload()),
        t if ethernet::is_vlan_tpid(t) => Ok(Frame::NotIp(NotIpReason::SecondVlanTag)),
        t => Ok(Frame::NotIp(NotIpReason::Ethertype(t))),
    }
}

/// Sets the source and destination MAC addresses of `frame` (what the forwarder does before
/// transmitting to a local endpoint). Fails, changing nothing, on a frame too short for its
/// Ethernet header or its VLAN tag.
pub fn rewrite_macs(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) -> Result<(), WireError> {
    let mut eth = EthernetFrame::new_checked(frame)?;
    eth.set_source(src);
    eth.set_destination(dst);
    Ok(())
}

#[derive(Clone, Copy)]
struct Link {
    l3_offset: u16,
    vlan: Option<u16>,
}

fn summarize_ipv4(link: Link, l3: &[u8]) -> Result<Frame, WireError> {
    let ip = Ipv4Packet::new_checked(l3)?;
    let protocol = ip.protocol();
    let fragment = ip.fragment();
    let l4 = match fragment {
        Fragment::Later => L4::default(),
        Fragment::First | Fragment::None => L4::read(protocol, ip.payload())?,
    };
    Ok(Frame::Ip(l4.summary(
        link,
        IpFacts {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            protocol,
            fragment,
            frag_id: u32::from(ip.ident()),
            frag_proto: protocol,
            ip_len: u32::from(ip.total_len()),
        },
    )))
}

fn summarize_ipv6(link: Link, l3: &[u8]) -> Result<Frame, WireError> {
    let ip = Ipv6Packet::new_checked(l3)?;
    let ul = ip.upper_layer()?;
    let l4 = match ul.fragment {
        Fragment::Later => L4::default(),
        Fragment::First | Fragment::None => L4::read(ul.protocol, ul.data)?,
    };
    if ul.protocol == ip_protocol::ICMPV6
        && let Some(icmp_type) = l4.icmp_type.filter(|&t| icmp::is_icmpv6_link_control(t))
    {
        return Ok(Frame::NotIp(NotIpReason::Icmpv6LinkControl { icmp_type }));
    }
    Ok(Frame::Ip(l4.summary(
        link,
        IpFacts {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            protocol: ul.protocol,
            fragment: ul.fragment,
            frag_id: ul.frag_id,
            frag_proto: ul.frag_proto,
            ip_len: ip.total_len(),
        },
    )))
}

struct IpFacts {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    fragment: Fragment,
    frag_id: u32,
    frag_proto: u8,
    ip_len: u32,
}

/// The L4 fields parse.h's `sl_l4_fields` reads.
#[derive(Default)]
struct L4 {
    src_port: u16,
    dst_port: u16,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    icmp_echo_id: Option<u16>,
    tcp_flags: u8,
}

impl L4 {
    /// Reads the L4 header of `protocol` from `l4` (bounded by the datagram), which must hold
    /// at least [`l4_min_len`] bytes.
    fn read(protocol: u8, l4: &[u8]) -> Result<L4, WireError> {
        let truncated = |_| WireError::L4HeaderTruncated {
            protocol,
            needed: l4_min_len(protocol),
            available: l4.len(),
        };
        Ok(match protocol {
            ip_protocol::TCP => {
                let tcp = TcpPacket::new_checked(l4).map_err(truncated)?;
                L4 {
                    src_port: tcp.src_port(),
                    dst_port: tcp.dst_port(),
                    tcp_flags: tcp.flags(),
                    ..L4::default()
                }
            }
            ip_protocol::UDP => {
                let udp = UdpPacket::new_checked(l4).map_err(truncated)?;
                L4 {
                    src_port: udp.src_port(),
                    dst_port: udp.dst_port(),
                    ..L4::default()
                }
            }
            ip_protocol::SCTP => {
                let sctp = SctpPacket::new_checked(l4).map_err(truncated)?;
                L4 {
                    src_port: sctp.src_port(),
                    dst_port: sctp.dst_port(),
                    ..L4::default()
                }
            }
            ip_protocol::ICMP | ip_protocol::ICMPV6 => {
                let icmp = IcmpPacket::new_checked(l4).map_err(truncated)?;
                L4 {
                    src_port: 0,
                    dst_port: u16::from(icmp.msg_type()),
                    icmp_type: Some(icmp.msg_type()),
                    icmp_code: Some(icmp.msg_code()),
                    icmp_echo_id: icmp.echo_ident_of(protocol),
                    tcp_flags: 0,
                }
            }
            _ => L4::default(),
        })
    }

    fn summary(self, link: Link, ip: IpFacts) -> PacketSummary {
        PacketSummary {
            l3_offset: link.l3_offset,
            vlan: link.vlan,
            src: ip.src,
            dst: ip.dst,
            protocol: ip.protocol,
            src_port: self.src_port,
            dst_port: self.dst_port,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            icmp_echo_id: self.icmp_echo_id,
            tcp_flags: self.tcp_flags,
            fragment: ip.fragment,
            frag_id: ip.frag_id,
            frag_proto: ip.frag_proto,
            ip_len: ip.ip_len,
        }
    }
}

#[cfg(test)]
mod tests;
