/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking of the in-kernel path: replies of a connection that policy allowed are
 * allowed without policy (Cilium / Kubernetes NetworkPolicy semantics). The AF_XDP socket path
 * is tracked in userspace.
 *
 * What is tracked (sl_ct_role):
 *   TCP, UDP, SCTP             tuple (src, dst, sport, dport, protocol, family)
 *   ICMP echo request (8),
 *   ICMPv6 echo request (128)  tuple (src, dst, echo identifier, 0, protocol, family)
 *   anything else              nothing: no entry, never a reply (ICMP errors and other ICMP
 *                              types, other protocols, later fragments) -> policy decides
 *
 * Forward: a packet that policy allowed (a first fragment included) records its own tuple in
 * `conntrack` (struct ct_key, ports in host order), or refreshes last_seen_ns when the entry is
 * already there (an expired one also has its flags reset: it is a new connection). A forward
 * packet is always decided by policy, tracked or not: a policy change stops the forward
 * direction of an existing connection at its next packet.
 *
 * Reply: before policy, a packet looks up the tuple it would be the reply of: (dst, src, dport,
 * sport) for TCP/UDP/SCTP, (dst, src, echo identifier, 0) for an ICMP echo reply (0) / ICMPv6
 * echo reply (129). An entry that is not expired makes it a reply: allowed without policy,
 * last_seen_ns refreshed, CT_F_REPLY_SEEN set. Replies keep an entry alive as forward packets
 * do, so after a policy change the reply direction stays open while replies keep coming within
 * the timeout (nothing flushes `conntrack` on policy changes; the loader may delete entries).
 *
 * Expiry: an entry is honoured while now - last_seen_ns <= timeout (bpf_ktime_get_ns,
 * CLOCK_MONOTONIC): TCP 1 hour, UDP / SCTP / ICMP echo 60 s. Expired entries are not deleted,
 * only ignored until the LRU evicts them or a forward packet revives them. TCP FIN and RST are
 * not looked at: a closed connection's reply direction stays open for its exact tuple until
 * the timeout.
 *
 * sl_ct_is_reply and sl_ct_track are global BPF functions (noinline, not static): the verifier
 * checks each once, for any packet struct, and the caller only sees an unknown int come back.
 * Inlined, their bodies were verified again on every path reaching them, which tripled the
 * instructions processed for the whole program (22k before conntrack -> 68k); as global
 * functions it is 12.7k.
 * Being global, they must take a pointer that may be NULL and return a scalar, and this header
 * belongs to one object (steer.c). */
#ifndef SLUICE_CONNTRACK_H
#define SLUICE_CONNTRACK_H

#include "maps.h"
#include "parse.h"

#define SL_CT_TIMEOUT_TCP_NS (3600ULL * 1000000000ULL)
#define SL_CT_TIMEOUT_OTHER_NS (60ULL * 1000000000ULL)

#define SL_ICMP_ECHO_REPLY 0
#define SL_ICMP_ECHO_REQUEST 8
#define SL_ICMPV6_ECHO_REQUEST 128
#define SL_ICMPV6_ECHO_REPLY 129

enum sl_ct_role {
	SL_CT_UNTRACKED = 0,    /* neither records an entry nor is a reply */
	SL_CT_PORTS = 1,        /* TCP/UDP/SCTP: forward or reply */
	SL_CT_ECHO_REQUEST = 2, /* forward only */
	SL_CT_ECHO_REPLY = 3,   /* reply only */
};

/* For a packet that is not a later fragment (those carry no L4 header). */
static __always_inline int sl_ct_role(const struct sl_pkt *p)
{
	switch (p->protocol) {
	case SL_IPPROTO_TCP:
	case SL_IPPROTO_UDP:
	case SL_IPPROTO_SCTP:
		return SL_CT_PORTS;
	case SL_IPPROTO_ICMP:
		if (p->dport == SL_ICMP_ECHO_REQUEST)
			return SL_CT_ECHO_REQUEST;
		return p->dport == SL_ICMP_ECHO_REPLY ? SL_CT_ECHO_REPLY : SL_CT_UNTRACKED;
	case SL_IPPROTO_ICMPV6:
		if (p->dport == SL_ICMPV6_ECHO_REQUEST)
			return SL_CT_ECHO_REQUEST;
		return p->dport == SL_ICMPV6_ECHO_REPLY ? SL_CT_ECHO_REPLY : SL_CT_UNTRACKED;
	default:
		return SL_CT_UNTRACKED;
	}
}

static __always_inline __u64 sl_ct_timeout_ns(__u8 protocol)
{
	return protocol == SL_IPPROTO_TCP ? SL_CT_TIMEOUT_TCP_NS : SL_CT_TIMEOUT_OTHER_NS;
}

/* Whether an entry last seen at last_seen_ns is still honoured at now. Another CPU may have
 * stored a time later than this CPU's now: that is fresh too. */
static __always_inline int sl_ct_fresh(__u64 last_seen_ns, __u64 now, __u8 protocol)
{
	return now <= last_seen_ns || now - last_seen_ns <= sl_ct_timeout_ns(protocol);
}

/* The key of the connection whose reply this packet would be (role PORTS or ECHO_REPLY). */
static __always_inline void sl_ct_reverse_key(const struct sl_pkt *p, int role, struct ct_key *k)
{
	__builtin_memcpy(k->src, p->dst, 16);
	__builtin_memcpy(k->dst, p->src, 16);
	if (role == SL_CT_ECHO_REPLY) {
		k->sport = p->icmp_id;
		k->dport = 0;
	} else {
		k->sport = p->dport;
		k->dport = p->sport;
	}
	k->protocol = p->protocol;
	k->family = p->family;
	k->pad = 0;
}

/* The key of the connection this packet opens or continues (role PORTS or ECHO_REQUEST). */
static __always_inline void sl_ct_forward_key(const struct sl_pkt *p, int role, struct ct_key *k)
{
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
	if (role == SL_CT_ECHO_REQUEST) {
		k->sport = p->icmp_id;
		k->dport = 0;
	} else {
		k->sport = p->sport;
		k->dport = p->dport;
	}
	k->protocol = p->protocol;
	k->family = p->family;
	k->pad = 0;
}

/* 1 when the packet is the reply of a tracked, unexpired connection (whose entry is then
 * refreshed); 0 otherwise. */
__noinline int sl_ct_is_reply(const struct sl_pkt *p)
{
	if (!p)
		return 0;
	int role = sl_ct_role(p);
	struct ct_key k;

	if (role != SL_CT_PORTS && role != SL_CT_ECHO_REPLY)
		return 0;
	sl_ct_reverse_key(p, role, &k);
	struct ct_value *v = bpf_map_lookup_elem(&conntrack, &k);

	if (!v)
		return 0;
	__u64 now = bpf_ktime_get_ns();

	if (!sl_ct_fresh(v->last_seen_ns, now, p->protocol))
		return 0;
	/* Plain stores: a racing CPU writes a time just as recent. */
	v->last_seen_ns = now;
	if (!(v->flags & CT_F_REPLY_SEEN))
		v->flags |= CT_F_REPLY_SEEN;
	return 1;
}

/* Records (or refreshes) the connection of a packet that policy allowed. Returns 0 (a global
 * function returns a scalar). */
__noinline int sl_ct_track(const struct sl_pkt *p)
{
	if (!p)
		return 0;
	int role = sl_ct_role(p);
	struct ct_key k;

	if (role != SL_CT_PORTS && role != SL_CT_ECHO_REQUEST)
		return 0;
	sl_ct_forward_key(p, role, &k);
	__u64 now = bpf_ktime_get_ns();
	struct ct_value *v = bpf_map_lookup_elem(&conntrack, &k);

	if (v) {
		if (!sl_ct_fresh(v->last_seen_ns, now, p->protocol))
			v->flags = 0; /* a new connection on an old tuple */
		v->last_seen_ns = now;
		return 0;
	}
	struct ct_value nv = { .last_seen_ns = now };

	/* NOEXIST: another CPU's entry for the same connection, if it won, is as good. */
	bpf_map_update_elem(&conntrack, &k, &nv, BPF_NOEXIST);
	return 0;
}

#endif
