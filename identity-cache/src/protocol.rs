//! Transport protocols as policy rules and packets name them.

use std::fmt;
use std::str::FromStr;

/// An L4 protocol a policy can name or a packet can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Protocol {
    /// ICMP for IPv4 (the "port" of an ICMP rule or packet is its type).
    Icmp = 1,
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
    /// ICMPv6 (the "port" is its type).
    IcmpV6 = 58,
    /// SCTP.
    Sctp = 132,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The protocol with this IP protocol number, if policies can name it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Protocol::Icmp),
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            58 => Some(Protocol::IcmpV6),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Whether this protocol has ports (ICMP has types instead).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// The upper-case name (`TCP`, `ICMPv6`, …).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Icmp => "ICMP",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::IcmpV6 => "ICMPv6",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name that is not one of TCP, UDP, SCTP, ICMP, ICMPv6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected TCP, UDP, SCTP, ICMP or ICMPv6)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            "ICMP" | "ICMPV4" => Ok(Protocol::Icmp),
            "ICMPV6" => Ok(Protocol::IcmpV6),
            _ => Err(UnknownProtocol(s.to_owned())),
        }
    }
}
