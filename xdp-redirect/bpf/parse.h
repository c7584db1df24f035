/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bounds-checked parsing of Ethernet (at most one 802.1Q/802.1AD tag), IPv4, IPv6 with its
 * extension headers, and the L4 fields policy and connection tracking need (ports; ICMP/ICMPv6
 * type and echo identifier).
 *
 * Every read is preceded by a check against data_end; nothing here reads past the frame or,
 * for L4, past the IP datagram's own length. The outcome is one of:
 *   SL_PARSE_NON_IP     not IPv4/IPv6 (ARP, other ethertypes, a second VLAN tag, a frame too
 *                       short for its Ethernet header or tag), or IPv6 ND / router / MLD
 *   SL_PARSE_MALFORMED  IPv4/IPv6 that fails a check below
 *   SL_PARSE_OK         struct sl_pkt filled in
 *
 * Malformed means: IPv4 header truncated, version != 4, IHL < 5, header (with options) past
 * the frame, total length < header length or past the frame; IPv6 header truncated, version
 * != 6, payload length past the frame, an extension header truncated or past the payload, more
 * than SL_IPV6_MAX_EXT extension headers; on a packet that is not a non-first fragment, an L4
 * header shorter than SL_L4_MIN_* bytes (in the frame and in the datagram). */
#ifndef SLUICE_PARSE_H
#define SLUICE_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

#define SL_ETH_P_IP 0x0800
#define SL_ETH_P_IPV6 0x86DD
#define SL_ETH_P_8021Q 0x8100
#define SL_ETH_P_8021AD 0x88A8

#define SL_ETH_HLEN 14
#define SL_VLAN_HLEN 4
#define SL_IPV4_HLEN 20
#define SL_IPV6_HLEN 40

#define SL_IPPROTO_HOPOPTS 0
#define SL_IPPROTO_ICMP 1
#define SL_IPPROTO_TCP 6
#define SL_IPPROTO_UDP 17
#define SL_IPPROTO_ROUTING 43
#define SL_IPPROTO_FRAGMENT 44
#define SL_IPPROTO_AH 51
#define SL_IPPROTO_ICMPV6 58
#define SL_IPPROTO_DSTOPTS 60
#define SL_IPPROTO_SCTP 132

/* Minimum L4 header a first fragment or unfragmented packet must carry. */
#define SL_L4_MIN_TCP 20
#define SL_L4_MIN_UDP 8
#define SL_L4_MIN_SCTP 12
#define SL_L4_MIN_ICMP 8

/* Bytes of the L4 header sl_l4_fields reads: ports, or ICMP type and echo identifier. */
#define SL_L4_FIELDS_LEN 8
_Static_assert(SL_L4_MIN_TCP >= SL_L4_FIELDS_LEN && SL_L4_MIN_UDP >= SL_L4_FIELDS_LEN &&
		       SL_L4_MIN_SCTP >= SL_L4_FIELDS_LEN && SL_L4_MIN_ICMP >= SL_L4_FIELDS_LEN,
	       "every parsed L4 header holds the fields read");

/* IPv6 extension headers walked before the packet counts as malformed. */
#define SL_IPV6_MAX_EXT 8

#define SL_FAMILY_V4 4
#define SL_FAMILY_V6 6

enum sl_frag {
	SL_FRAG_NONE = 0,  /* not fragmented (IPv6 atomic fragments included) */
	SL_FRAG_FIRST = 1, /* offset 0, more fragments */
	SL_FRAG_LATER = 2, /* offset > 0: no L4 header */
};

enum sl_parse_result {
	SL_PARSE_OK = 0,
	SL_PARSE_NON_IP = 1,
	SL_PARSE_MALFORMED = 2,
};

/* What the program needs of a packet. Addresses in network order; IPv4 in the first 4 bytes
 * with the rest zero. Ports in host order. The first 48 bytes (src .. pad) are the packet's
 * flow key, hashed and compared as six 64-bit words by the flow cache (flowcache.h): they hold
 * nothing that varies between packets of a flow. The caller zeroes the struct. */
struct sl_pkt {
	__u8 src[16];
	__u8 dst[16];
	__u32 ifindex;   /* receiving interface (set by the caller, not by parsing) */
	__u16 sport;     /* ICMP/ICMPv6: 0 */
	__u16 dport;     /* ICMP/ICMPv6: type */
	__u16 icmp_id;   /* ICMP/ICMPv6: bytes 4-5 of the header, host order: the identifier of an
			  * echo request/reply (conntrack.h reads it only for those); else 0 */
	__u8 family;     /* SL_FAMILY_V4/V6 once the ethertype is known, else 0 */
	__u8 protocol;   /* IPv6: the upper-layer header after the extension headers */
	__u32 pad;       /* 0 */
	/* End of the flow key. */
	__u32 frag_id;   /* IPv4 identification / IPv6 fragment header id, host order */
	__u8 frag;       /* enum sl_frag */
	__u8 frag_proto; /* the protocol every fragment names: IPv4 protocol field; IPv6 the
			  * fragment header's next header (AH may follow it in a first fragment) */
	__u16 pad2;
} __attribute__((aligned(8)));

#define SL_FLOW_KEY_LEN 48
_Static_assert(__builtin_offsetof(struct sl_pkt, frag_id) == SL_FLOW_KEY_LEN, "flow key");
_Static_assert(sizeof(struct sl_pkt) == 56, "sl_pkt");

/* Reads a 16-bit big-endian field at p (p..p+2 already bounds-checked): one 2-byte load and
 * a byte swap. Packet data may be misaligned (x86 has no constraint, and the verifier enforces
 * none for packets without strict alignment); stack buffers passed here are aligned. */
static __always_inline __u16 sl_load_be16(const void *p)
{
	return bpf_ntohs(*(const __u16 *)p);
}

/* Copies an address out of the (bounds-checked) packet in 4- or 8-byte loads, not the byte
 * loads a memcpy from a packet pointer of unknown alignment becomes. */
static __always_inline void sl_copy_addr4(__u8 *to, const __u8 *from)
{
	*(__u32 *)to = *(const __u32 *)from;
}

static __always_inline void sl_copy_addr16(__u8 *to, const __u8 *from)
{
	((__u64 *)to)[0] = ((const __u64 *)from)[0];
	((__u64 *)to)[1] = ((const __u64 *)from)[1];
}

/* Minimum L4 header a first fragment or an unfragmented packet must carry; 0 for protocols
 * whose header we do not read. */
static __always_inline __u32 sl_l4_min_len(__u8 protocol)
{
	switch (protocol) {
	case SL_IPPROTO_TCP:
		return SL_L4_MIN_TCP;
	case SL_IPPROTO_UDP:
		return SL_L4_MIN_UDP;
	case SL_IPPROTO_SCTP:
		return SL_L4_MIN_SCTP;
	case SL_IPPROTO_ICMP:
	case SL_IPPROTO_ICMPV6:
		return SL_L4_MIN_ICMP;
	default:
		return 0;
	}
}

/* Ports (TCP, UDP, SCTP: the first 4 bytes) or ICMP/ICMPv6 type (as destination port, source
 * port 0) and bytes 4-5 (the echo identifier) from the first SL_L4_FIELDS_LEN bytes of the L4
 * header, which the caller has checked are there (every SL_L4_MIN_* is at least that). */
static __always_inline void sl_l4_fields(__u8 protocol, const __u8 *b, struct sl_pkt *p)
{
	if (protocol == SL_IPPROTO_ICMP || protocol == SL_IPPROTO_ICMPV6) {
		p->sport = 0;
		p->dport = b[0];
		p->icmp_id = sl_load_be16(b + 4);
	} else {
		p->sport = sl_load_be16(b);
		p->dport = sl_load_be16(b + 2);
	}
}

static __always_inline int sl_parse_ipv4(void *l3, void *data_end, struct sl_pkt *p)
{
	__u8 *h = l3;

	p->family = SL_FAMILY_V4;
	if ((void *)(h + SL_IPV4_HLEN) > data_end)
		return SL_PARSE_MALFORMED;
	if ((h[0] >> 4) != 4)
		return SL_PARSE_MALFORMED;
	__u32 hlen = (__u32)(h[0] & 0x0f) * 4;
	if (hlen < SL_IPV4_HLEN)
		return SL_PARSE_MALFORMED;
	if ((void *)(h + hlen) > data_end)
		return SL_PARSE_MALFORMED;
	__u32 total = sl_load_be16(h + 2);
	if (total < hlen)
		return SL_PARSE_MALFORMED;
	if ((void *)(h + total) > data_end) /* Ethernet padding may follow; a shortfall may not */
		return SL_PARSE_MALFORMED;

	__u16 frag = sl_load_be16(h + 6);
	__u16 offset = frag & 0x1fff;
	p->protocol = h[9];
	p->frag_proto = h[9];
	p->frag_id = sl_load_be16(h + 4);
	sl_copy_addr4(p->src, h + 12);
	sl_copy_addr4(p->dst, h + 16);

	if (offset != 0) {
		p->frag = SL_FRAG_LATER;
		return SL_PARSE_OK;
	}
	/* SL_FRAG_FIRST (1) or SL_FRAG_NONE (0), computed rather than branched on so that both
	 * kinds share one verifier path. */
	p->frag = (frag >> 13) & 1;
	__u32 need = sl_l4_min_len(p->protocol);
	if (need) {
		/* Options make hlen variable; one variable step keeps direct access cheap here. */
		__u8 *l4 = h + hlen;

		if (total - hlen < need || (void *)(l4 + need) > data_end)
			return SL_PARSE_MALFORMED;
		/* Implied by the check above (need >= SL_L4_FIELDS_LEN); for the verifier. */
		if ((void *)(l4 + SL_L4_FIELDS_LEN) > data_end)
			return SL_PARSE_MALFORMED;
		sl_l4_fields(p->protocol, l4, p);
	}
	return SL_PARSE_OK;
}

static __always_inline int sl_ipv6_is_ext(__u8 nh)
{
	return nh == SL_IPPROTO_HOPOPTS || nh == SL_IPPROTO_ROUTING || nh == SL_IPPROTO_DSTOPTS ||
	       nh == SL_IPPROTO_FRAGMENT || nh == SL_IPPROTO_AH;
}

/* ICMPv6 messages that belong to the link, not to pods' policy: MLD (130-132, 143), router
 * solicitation/advertisement, neighbour solicitation/advertisement, redirect (133-137). */
static __always_inline int sl_icmpv6_is_link_local_control(__u8 type)
{
	return (type >= 130 && type <= 137) || type == 143;
}

/* IPv6 reads everything after the fixed header with bpf_xdp_load_bytes at a scalar offset: a
 * packet pointer advanced by a variable length per extension header would give the verifier a
 * distinct pointer state for every combination of header kinds (thousands of states for 8
 * headers); a scalar offset only passed to a helper is not tracked precisely, so those paths
 * merge. */
static __always_inline int sl_parse_ipv6(struct xdp_md *ctx, void *l3, void *data_end,
					 __u32 l3_off, __u32 frame_len, struct sl_pkt *p)
{
	__u8 *h = l3;
	__u8 b[8] __attribute__((aligned(8)));

	p->family = SL_FAMILY_V6;
	if ((void *)(h + SL_IPV6_HLEN) > data_end)
		return SL_PARSE_MALFORMED;
	if ((h[0] >> 4) != 6)
		return SL_PARSE_MALFORMED;
	__u32 room = sl_load_be16(h + 4); /* payload length: bytes after the fixed header */
	__u32 off = l3_off + SL_IPV6_HLEN;
	if (off + room > frame_len)
		return SL_PARSE_MALFORMED;
	__u8 nh = h[6];
	sl_copy_addr16(p->src, h + 8);
	sl_copy_addr16(p->dst, h + 24);
	p->frag = SL_FRAG_NONE;

	/* A bounded loop (verified iteration by iteration); not unrolled, which only grew the
	 * program by 8 copies of this body for the same verifier work. */
#pragma clang loop unroll(disable)
	for (int i = 0; i < SL_IPV6_MAX_EXT; i++) {
		__u32 len;

		if (!sl_ipv6_is_ext(nh))
			break;
		/* Every extension header is at least 8 bytes. */
		if (room < 8 || bpf_xdp_load_bytes(ctx, off, b, 8))
			return SL_PARSE_MALFORMED;
		if (nh == SL_IPPROTO_FRAGMENT) {
			__u16 off_m = sl_load_be16(b + 2);

			p->frag_id = ((__u32)b[4] << 24) | ((__u32)b[5] << 16) | ((__u32)b[6] << 8) | b[7];
			nh = b[0];
			p->frag_proto = nh;
			off += 8;
			room -= 8;
			if (off_m & 0xfff8) {
				/* Non-first fragment: what follows is payload, not headers. */
				p->protocol = nh;
				p->frag = SL_FRAG_LATER;
				return SL_PARSE_OK;
			}
			p->frag = off_m & 1; /* SL_FRAG_FIRST when M is set, else atomic */
			continue;
		}
		if (nh == SL_IPPROTO_AH)
			len = ((__u32)b[1] + 2) * 4;
		else
			len = ((__u32)b[1] + 1) * 8;
		if (room < len)
			return SL_PARSE_MALFORMED;
		nh = b[0];
		off += len;
		room -= len;
	}
	if (sl_ipv6_is_ext(nh))
		return SL_PARSE_MALFORMED; /* more extension headers than we walk */

	p->protocol = nh;
	__u32 need = sl_l4_min_len(nh);
	if (need) {
		/* room <= payload length, and off + room <= frame_len was checked above;
		 * need >= SL_L4_FIELDS_LEN. */
		if (room < need || bpf_xdp_load_bytes(ctx, off, b, SL_L4_FIELDS_LEN))
			return SL_PARSE_MALFORMED;
		sl_l4_fields(nh, b, p);
		if (nh == SL_IPPROTO_ICMPV6 && sl_icmpv6_is_link_local_control(b[0]))
			return SL_PARSE_NON_IP;
	}
	return SL_PARSE_OK;
}

/* Parses the frame into *p (which the caller zeroed). */
static __always_inline int sl_parse(struct xdp_md *ctx, void *data, void *data_end,
				    __u32 frame_len, struct sl_pkt *p)
{
	__u8 *eth = data;
	__u32 l3_off = SL_ETH_HLEN;

	if ((void *)(eth + SL_ETH_HLEN) > data_end)
		return SL_PARSE_NON_IP;
	__u16 proto = sl_load_be16(eth + 12);
	__u8 *l3 = eth + SL_ETH_HLEN;
	if (proto == SL_ETH_P_8021Q || proto == SL_ETH_P_8021AD) {
		if ((void *)(l3 + SL_VLAN_HLEN) > data_end)
			return SL_PARSE_NON_IP;
		proto = sl_load_be16(l3 + 2);
		l3 += SL_VLAN_HLEN;
		l3_off += SL_VLAN_HLEN;
	}
	if (proto == SL_ETH_P_IP)
		return sl_parse_ipv4(l3, data_end, p);
	if (proto == SL_ETH_P_IPV6)
		return sl_parse_ipv6(ctx, l3, data_end, l3_off, frame_len, p);
	return SL_PARSE_NON_IP;
}

#endif
