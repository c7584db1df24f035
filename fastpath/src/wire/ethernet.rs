//! Ethernet II frames with at most one 802.1Q or 802.1AD tag (parse.h reads one tag; a second
//! one makes the frame "not IP").

use super::{Field, Rest, WireError, be16};

/// Byte ranges of the Ethernet header and of its optional tag.
pub mod field {
    use super::{Field, Rest};

    /// Destination MAC address.
    pub const DESTINATION: Field = 0..6;
    /// Source MAC address.
    pub const SOURCE: Field = 6..12;
    /// Ethertype, or the TPID of a VLAN tag.
    pub const ETHERTYPE: Field = 12..14;
    /// Tag control information of a VLAN tag (priority, drop eligible, VLAN id).
    pub const VLAN_TCI: Field = 14..16;
    /// Ethertype of what follows a VLAN tag.
    pub const VLAN_ETHERTYPE: Field = 16..18;
    /// The payload of an untagged frame.
    pub const UNTAGGED_PAYLOAD: Rest = 14..;
    /// The payload of a tagged frame.
    pub const TAGGED_PAYLOAD: Rest = 18..;
}

/// Length of the untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;

/// Ethertypes the parser knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// An 802.1Q VLAN tag follows.
    pub const VLAN_8021Q: u16 = 0x8100;
    /// An 802.1AD (QinQ service) VLAN tag follows.
    pub const VLAN_8021AD: u16 = 0x88A8;
}

/// Whether `ethertype` announces a VLAN tag (802.1Q or 802.1AD).
pub fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN_8021Q || ethertype == ethertype::VLAN_8021AD
}

/// A view of an Ethernet II frame, with at most one VLAN tag read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it: accessors panic if it is shorter than the header
    /// (and its tag, when the ethertype announces one).
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after checking that it holds the Ethernet header and, when the ethertype
    /// announces a VLAN tag, the tag.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::EthernetTruncated { len });
        }
        let frame = EthernetFrame { buffer };
        if frame.is_tagged() && len < HEADER_LEN + VLAN_TAG_LEN {
            return Err(WireError::VlanTagTruncated { len });
        }
        Ok(frame)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The destination MAC address.
    pub fn destination(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The source MAC address.
    pub fn source(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The outer ethertype (a TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// Whether the outer ethertype announces a VLAN tag.
    pub fn is_tagged(&self) -> bool {
        is_vlan_tpid(self.ethertype())
    }

    /// The tag control information (priority, drop eligible, VLAN id), if tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.is_tagged()
            .then(|| be16(self.buffer.as_ref(), field::VLAN_TCI.start))
    }

    /// The 12-bit VLAN id, if tagged (0 for a priority-only tag).
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The 3-bit priority code point, if tagged.
    pub fn vlan_priority(&self) -> Option<u8> {
        self.vlan_tci().map(|tci| (tci >> 13) as u8)
    }

    /// The ethertype of the payload: after the tag when tagged, else the outer one. A second
    /// tag shows here as its TPID (parse.h reads no further).
    pub fn payload_ethertype(&self) -> u16 {
        if self.is_tagged() {
            be16(self.buffer.as_ref(), field::VLAN_ETHERTYPE.start)
        } else {
            self.ethertype()
        }
    }

    /// The header length: 14, or 18 with a tag. The L3 offset.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            field::TAGGED_PAYLOAD.start
        } else {
            field::UNTAGGED_PAYLOAD.start
        }
    }

    /// Everything after the header (and its tag), Ethernet padding included.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_destination(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    pub fn set_source(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

fn mac(b: &[u8]) -> [u8; 6] {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
    ];

    #[test]
    fn untagged_fields() {
        let f = EthernetFrame::new_checked(&ARP[..]).unwrap();
        assert_eq!(f.destination(), [0xff; 6]);
        assert_eq!(f.source(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload_ethertype(), ethertype::ARP);
        assert!(!f.is_tagged());
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.vlan_priority(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn tagged_fields() {
        let mut b = [0u8; 18];
        b[12..14].copy_from_slice(&ethertype::VLAN_8021Q.to_be_bytes());
        b[14..16].copy_from_slice(&0xa07bu16.to_be_bytes()); // PCP 5, DEI 0, VID 123
        b[16..18].copy_from_slice(&ethertype::IPV6.to_be_bytes());
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert!(f.is_tagged());
        assert_eq!(f.vlan_tci(), Some(0xa07b));
        assert_eq!(f.vlan_id(), Some(123));
        assert_eq!(f.vlan_priority(), Some(5));
        assert_eq!(f.payload_ethertype(), ethertype::IPV6);
        assert_eq!(f.header_len(), 18);
        assert!(f.payload().is_empty());

        b[12..14].copy_from_slice(&ethertype::VLAN_8021AD.to_be_bytes());
        assert!(EthernetFrame::new_checked(&b[..]).unwrap().is_tagged());
    }

    #[test]
    fn short_frames_are_refused() {
        assert_eq!(
            EthernetFrame::new_checked(&ARP[..13]),
            Err(WireError::EthernetTruncated { len: 13 })
        );
        let mut b = [0u8; 17];
        b[12..14].copy_from_slice(&ethertype::VLAN_8021Q.to_be_bytes());
        assert_eq!(
            EthernetFrame::new_checked(&b[..]),
            Err(WireError::VlanTagTruncated { len: 17 })
        );
        // An untagged header alone is a frame with an empty payload.
        assert!(
            EthernetFrame::new_checked(&ARP[..14])
                .unwrap()
                .payload()
                .is_empty()
        );
    }

    #[test]
    fn setters_rewrite_macs_only() {
        let mut b = ARP;
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_destination([1, 2, 3, 4, 5, 6]);
        f.set_source([7, 8, 9, 10, 11, 12]);
        assert_eq!(f.destination(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.source(), [7, 8, 9, 10, 11, 12]);
        f.payload_mut()[0] = 0xee;
        assert_eq!(b[..12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            b[12..],
            {
                let mut rest = ARP;
                rest[14] = 0xee;
                rest
            }[12..]
        );
    }
}
