//! The Internet checksum (RFC 1071): ones' complement sums of 16-bit big-endian words.

use std::net::IpAddr;

/// The ones' complement sum of `data` as 16-bit big-endian words (an odd last byte is padded
/// with zero), folded to 16 bits and not complemented.
pub fn data(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold(sum)
}

/// The ones' complement sum of partial sums, folded to 16 bits.
pub fn combine(parts: &[u16]) -> u16 {
    fold(parts.iter().map(|&p| u64::from(p)).sum())
}

/// The partial sum of the TCP/UDP pseudo-header: source and destination addresses, protocol
/// and L4 length (IPv4: RFC 793/768; IPv6: RFC 8200 section 8.1). The addresses should be of
/// one family; each is summed as it is.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u16 {
    let addr = |a: IpAddr| match a {
        IpAddr::V4(a) => data(&a.octets()),
        IpAddr::V6(a) => data(&a.octets()),
    };
    let len_hi = (length >> 16) as u16;
    let len_lo = length as u16;
    combine(&[addr(src), addr(dst), u16::from(protocol), len_hi, len_lo])
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn carries_fold_back() {
        assert_eq!(data(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(combine(&[0xffff, 0xffff]), 0xffff);
        // Many words: no overflow, end-around carry.
        let big = vec![0xffu8; 1 << 20];
        assert_eq!(data(&big), 0xffff);
    }
}
