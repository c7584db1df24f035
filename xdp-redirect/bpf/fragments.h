/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IP fragments on the in-kernel path. A first fragment (offset 0, more-fragments set) is decided
 * by its ports like any packet, and its final verdict and redirect target are stored under
 * (source, destination, IP id, protocol, family); the protocol is the one every fragment
 * carries (IPv6: the fragment header's next header, so that AH after it does not split the key). Later fragments (offset > 0) carry no ports:
 * they follow the stored verdict, or are dropped (DROP_FRAGMENT_WITHOUT_STATE) when there is
 * none. The LRU map ages out datagrams that never complete. */
#ifndef SLUICE_FRAGMENTS_H
#define SLUICE_FRAGMENTS_H

#include "maps.h"
#include "parse.h"

static __always_inline void sl_frag_key(const struct sl_pkt *p, struct frag_key *k)
{
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
	k->id = p->frag_id;
	k->protocol = p->frag_proto;
	k->family = p->family;
	k->pad = 0;
}

static __always_inline struct frag_value *sl_frag_lookup(const struct sl_pkt *p)
{
	struct frag_key k;

	sl_frag_key(p, &k);
	return bpf_map_lookup_elem(&fragments, &k);
}

static __always_inline void sl_frag_store(const struct sl_pkt *p, __u8 action, __u8 reason,
					  __u32 redirect_ifindex)
{
	struct frag_key k;
	struct frag_value v = {
		.action = action,
		.reason = reason,
		.redirect_ifindex = redirect_ifindex,
	};

	sl_frag_key(p, &k);
	bpf_map_update_elem(&fragments, &k, &v, BPF_ANY);
}

#endif
