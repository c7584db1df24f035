/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU cache of rule 7 (steer.c): which (receiving interface, source, destination) address
 * pairs go to the receiving queue's AF_XDP socket.
 *
 * Rule 7 depends on the addresses and the receiving interface only (the destination is a local
 * endpoint, the source is not spoofed, the receiving endpoint is not in kernel mode); the
 * protocol and fragment conditions are per packet and checked before the cache. So every flow
 * between two pods shares one entry, and a node has far fewer pod pairs than flows: the cache
 * stays small and in cache, where a per-flow entry (flowcache.h) costs a cache miss per packet
 * once there are thousands of flows.
 *
 * Direct-mapped: SL_STEER_SLOTS entries per CPU, the slot chosen by a multiply-shift hash of
 * the key; a new pair replaces whatever held its slot. An entry is valid for the config
 * generation it was stored under (the loader bumps it after every map change) and for at most
 * SL_STEER_REVALIDATE_JIFFIES. Private to the program: not pinned, not written by the loader. */
#ifndef SLUICE_STEERCACHE_H
#define SLUICE_STEERCACHE_H

#include "parse.h"

#define SL_STEER_SLOTS 4096
#define SL_STEER_SLOT_BITS 12
#define SL_STEER_REVALIDATE_JIFFIES 100

/* The key: the source and destination addresses (the first 32 bytes of struct sl_pkt, as four
 * words) and the receiving ifindex. */
#define SL_STEER_ADDR_WORDS 4

struct sl_steer_entry {
	__u64 addrs[SL_STEER_ADDR_WORDS]; /* source then destination address (sl_pkt layout) */
	__u32 ifindex;                    /* receiving interface */
	__u32 valid;                      /* 1 once written; 0 while being written */
	__u64 generation;                 /* config.generation it was stored under */
	__u64 decided;                    /* bpf_jiffies64 when it was stored */
};

_Static_assert(sizeof(struct sl_steer_entry) == 56, "steer entry");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_steer_entry);
	__uint(max_entries, SL_STEER_SLOTS);
} steer_cache SEC(".maps");

static __always_inline __u32 sl_steer_slot(const struct sl_pkt *p)
{
	const __u64 *w = (const __u64 *)p;
	__u64 h = w[0] * 0x9E3779B97F4A7C15ULL + w[1] * 0xC2B2AE3D27D4EB4FULL +
		  w[2] * 0x165667B19E3779F9ULL + w[3] * 0xD6E8FEB86659FD93ULL +
		  (__u64)p->ifindex * 0xFF51AFD7ED558CCDULL;

	return (__u32)(h >> (64 - SL_STEER_SLOT_BITS));
}

/* 1 when rule 7 applied to this packet's (ifindex, source, destination) under `generation`
 * less than SL_STEER_REVALIDATE_JIFFIES ago. */
static __always_inline int sl_steer_cached(const struct sl_pkt *p, __u64 generation)
{
	const __u64 *w = (const __u64 *)p;
	__u32 slot = sl_steer_slot(p);
	struct sl_steer_entry *e = bpf_map_lookup_elem(&steer_cache, &slot);

	if (!e || !e->valid || e->generation != generation || e->ifindex != p->ifindex ||
	    ((e->addrs[0] ^ w[0]) | (e->addrs[1] ^ w[1]) | (e->addrs[2] ^ w[2]) |
	     (e->addrs[3] ^ w[3])))
		return 0;
	return bpf_jiffies64() - e->decided < SL_STEER_REVALIDATE_JIFFIES;
}

/* Records that rule 7 applied to this packet's (ifindex, source, destination). */
static __always_inline void sl_steer_store(const struct sl_pkt *p, __u64 generation)
{
	const __u64 *w = (const __u64 *)p;
	__u32 slot = sl_steer_slot(p);
	struct sl_steer_entry *e = bpf_map_lookup_elem(&steer_cache, &slot);

	if (!e)
		return;
	e->valid = 0;
	__asm__ __volatile__("" ::: "memory");
	for (int i = 0; i < SL_STEER_ADDR_WORDS; i++)
		e->addrs[i] = w[i];
	e->ifindex = p->ifindex;
	e->generation = generation;
	e->decided = bpf_jiffies64();
	__asm__ __volatile__("" ::: "memory");
	e->valid = 1;
}

#endif
