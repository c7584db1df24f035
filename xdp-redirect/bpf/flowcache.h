/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-flow verdict cache of the in-kernel path (steer.c rule 11).
 *
 * A per-CPU two-way set-associative array, `flow_cache`: the set of a packet is a hash of its
 * flow key (receiving ifindex, family, protocol, addresses, ports / ICMP type and identifier
 * field; the first 48 bytes of struct sl_pkt); set s is entries 2s and 2s + 1. The loader
 * sizes it from the number of possible CPUs (`sl_flow_set_bits` and flow_cache's max_entries;
 * `flow_cache_set_bits` in xdp-redirect's loader.rs); the entry holds the full key (a hit
 * compares all of it), the
 * config generation it was decided under, when it was decided (bpf_jiffies64), and the outcome
 * of rules 8a-8e: allowed (counter slot CNT_KERNEL_REDIRECT / CNT_KERNEL_PASS / CNT_CT_REPLY,
 * redirect target and the two MACs of the rewrite) or denied (drop reason), with what the
 * verdict event needs (identities, rule, direction). A flow whose slot another flow took is
 * simply decided again and takes a way back: the store keeps the flow's own way, else an empty
 * or outdated one, else replaces the older of the two decisions.
 *
 * A hit needs, besides the key:
 *   - entry generation == config.generation. The loader bumps the generation (config written
 *     last) after every change to any map a verdict depends on, so a verdict never outlives
 *     the ipcache / endpoints / local_policy / policy / cidr / devmap / config state that
 *     produced it;
 *   - age < SL_FLOW_REVALIDATE_JIFFIES (100 jiffies: 0.1 s at HZ=1000, 0.4 s at HZ=250, 1 s at
 *     HZ=100). Older entries are decided again by the full path, which refreshes conntrack:
 *     see "Conntrack" below. bpf_jiffies64 is inlined by the verifier (a load), unlike
 *     bpf_ktime_get_ns.
 *
 * What is cached: only the verdicts of rules 8a-8e for a packet that is not a fragment, not
 * fail-open traffic, not malformed, not steered to a socket: identity-collision drops, tracked
 * replies, policy allows (redirected or passed) and policy drops. These are a function of the
 * flow key, the maps the generation covers, and conntrack (handled below). Never cached:
 * socket steering (a socket can appear or go at any time, without the generation changing),
 * fail open, fragments (first fragments store their verdict for later ones; later fragments
 * have no ports), malformed, spoofed, not-managed and non-IP packets.
 *
 * Sockets: the entry records whether rule 7 applied to the flow (the receiving endpoint is not
 * in kernel mode); a hit on such an entry looks for the queue's socket first, exactly as the
 * full path does, and only without one applies the cached verdict.
 *
 * Conntrack (conntrack.h): the verdict of a packet depends on whether it is the reply of a
 * tracked connection, and the full path records / refreshes entries as it goes.
 *   - Cached policy drops of a packet that could be a reply (TCP/UDP/SCTP, ICMP echo reply)
 *     look up the reverse tuple in `conntrack` on every hit (SL_FLOW_F_CT_REVERSE); a fresh
 *     entry there (the connection was opened from the other side since) sends the packet down
 *     the full path, which allows it as a reply. A drop never outlives the connection that
 *     would let the packet through.
 *   - Cached allows (policy allows and tracked replies) do not touch `conntrack` on a hit: the
 *     full path, taken again once the entry is SL_FLOW_REVALIDATE_JIFFIES old, records or
 *     refreshes the connection (forward) or refreshes the connection replied to, and decides
 *     again whether the packet is a reply. So `last_seen_ns` lags the flow's latest packet by
 *     less than the revalidation interval (at most 1 s): an idle connection's entry expires
 *     between timeout - 1 s and timeout after its last packet (60 s / 1 h timeouts); a busy
 *     one never expires, as before. Until the next revalidation (< 1 s) a cached allow does
 *     not see the conntrack changes that leave the action as it is but change the counter
 *     slot (a policy-allowed flow that became the reply of a connection recorded since the
 *     other way, which needs an LRU eviction or first packets racing on two CPUs), a cached
 *     reply does not see its connection's entry evicted by the LRU (it keeps passing), and a
 *     cached forward allow does not record its connection again after the LRU evicted it (its
 *     replies go to policy meanwhile). The uncached path sees all three at the next packet.
 *     Whoever deletes `conntrack` entries (to revoke replies at once) must bump the
 *     generation afterwards.
 *
 * Concurrency: each CPU has its own entries, and a CPU runs one XDP program at a time. Only
 * BPF_PROG_TEST_RUN (process context) can be interrupted by NAPI on the same CPU: the store
 * clears the valid flag first and sets it last, so an interrupting lookup misses. */
#ifndef SLUICE_FLOWCACHE_H
#define SLUICE_FLOWCACHE_H

#include "maps.h"
#include "parse.h"
#include "events.h"
#include "conntrack.h"

/* Sets per CPU are 1 << sl_flow_set_bits, two entries (ways) each. As compiled (loaded by
 * bpftool, say) 2048 sets, 4096 entries: 480 KiB per possible CPU. */
#define SL_FLOW_DEFAULT_SET_BITS 11
#define SL_FLOW_CACHE_SLOTS (2 << SL_FLOW_DEFAULT_SET_BITS)
/* Set by the loader before the program is loaded (read-only afterwards, so the verifier sees
 * a constant); flow_cache's max_entries is 2 << sl_flow_set_bits. */
volatile const __u32 sl_flow_set_bits = SL_FLOW_DEFAULT_SET_BITS;
/* Entries at least this old (jiffies) are decided again by the full path. */
#define SL_FLOW_REVALIDATE_JIFFIES 100

#define SL_FLOW_F_VALID 1      /* the entry holds a verdict */
#define SL_FLOW_F_SOCKET 2     /* rule 7 applies: a hit looks for the queue's socket first */
#define SL_FLOW_F_CT_REVERSE 4 /* a drop that a connection from the other side would turn into
				* an allowed reply: a hit looks the reverse tuple up first */

/* The flow key is the first SL_FLOW_KEY_LEN (48) bytes of struct sl_pkt (parse.h): addresses,
 * receiving ifindex, ports (ICMP: type as dport), ICMP identifier field, family, protocol, and
 * 4 zero bytes; hashed and compared as six 64-bit words straight from the packet struct. */
#define SL_FLOW_KEY_WORDS (SL_FLOW_KEY_LEN / 8)

/* What the full path decided (rules 8a-8e). */
struct sl_flow_verdict {
	__u64 generation;   /* config.generation it was decided under */
	__u64 src_identity; /* for the verdict event */
	__u64 dst_identity;
	__u32 rule;         /* event rule */
	__u32 target;       /* ifindex to redirect to, 0: pass to the stack (allowed only) */
	__u32 macs[3];      /* pod_mac then host_mac of the target endpoint (target != 0) */
	__u8 action;        /* ACTION_ALLOW / ACTION_DENY */
	__u8 slot;          /* allowed: CNT_KERNEL_REDIRECT / CNT_KERNEL_PASS / CNT_CT_REPLY */
	__u8 reason;        /* denied: drop reason */
	__u8 direction;     /* event direction */
	__u8 flags;         /* SL_FLOW_F_SOCKET, SL_FLOW_F_CT_REVERSE */
	__u8 pad[7];
};

struct sl_flow_entry {
	__u64 key[SL_FLOW_KEY_WORDS]; /* the flow key */
	__u64 decided;                /* bpf_jiffies64 when the full path decided */
	struct sl_flow_verdict v;
	__u64 valid;                  /* SL_FLOW_F_VALID, cleared while the entry is written */
};

_Static_assert(sizeof(struct sl_flow_verdict) == 56, "flow verdict");
_Static_assert(sizeof(struct sl_flow_entry) == 120, "flow entry");

/* Private to the program: not pinned (each loaded program starts empty), not written by the
 * loader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_flow_entry);
	__uint(max_entries, SL_FLOW_CACHE_SLOTS);
} flow_cache SEC(".maps");

/* Set of a flow key: multiply-shift over its six words (independent multiplies, summed; the
 * top bits are the well-mixed ones). The Python test computes it too. */
static __always_inline __u32 sl_flow_set(const __u64 *w)
{
	__u64 h = w[0] * 0x9E3779B97F4A7C15ULL + w[1] * 0xC2B2AE3D27D4EB4FULL +
		  w[2] * 0x165667B19E3779F9ULL + w[3] * 0xD6E8FEB86659FD93ULL +
		  w[4] * 0xFF51AFD7ED558CCDULL + w[5] * 0xC4CEB9FE1A85EC53ULL;

	return (__u32)(h >> (64 - (sl_flow_set_bits & 31)));
}

/* Whether entry e holds flow key k. */
static __always_inline int sl_flow_holds(const struct sl_flow_entry *e, const __u64 *k)
{
	return !((e->key[0] ^ k[0]) | (e->key[1] ^ k[1]) | (e->key[2] ^ k[2]) | (e->key[3] ^ k[3]) |
		 (e->key[4] ^ k[4]) | (e->key[5] ^ k[5]));
}

/* Entry `index` if it holds a verdict for key k under `generation`, else NULL. */
static __always_inline struct sl_flow_entry *sl_flow_way(__u32 index, const __u64 *k,
							 __u64 generation)
{
	struct sl_flow_entry *e = bpf_map_lookup_elem(&flow_cache, &index);

	if (!e || !(e->valid & SL_FLOW_F_VALID) || e->v.generation != generation ||
	    !sl_flow_holds(e, k))
		return NULL;
	return e;
}

/* The cached verdict of this packet's flow (p->ifindex set), or NULL: decide on the full path. */
static __always_inline struct sl_flow_entry *sl_flow_lookup(const struct sl_pkt *p,
							    __u64 generation)
{
	const __u64 *k = (const __u64 *)p;
	__u32 first = sl_flow_set(k) << 1;
	struct sl_flow_entry *e = sl_flow_way(first, k, generation);

	if (!e)
		e = sl_flow_way(first | 1, k, generation);
	if (!e || bpf_jiffies64() - e->decided >= SL_FLOW_REVALIDATE_JIFFIES)
		return NULL;
	return e;
}

/* The verdict event of a cached verdict: what the full path had in *ev when it decided. */
static __always_inline void sl_flow_event_info(const struct sl_flow_verdict *v,
					       struct sl_event_info *ev)
{
	ev->src_identity = v->src_identity;
	ev->dst_identity = v->dst_identity;
	ev->rule = v->rule;
	ev->direction = v->direction;
	ev->reason = v->reason;
}

/* Whether a way can be taken without evicting a live verdict. */
static __always_inline int sl_flow_way_free(const struct sl_flow_entry *e, __u64 generation)
{
	return !(e->valid & SL_FLOW_F_VALID) || e->v.generation != generation;
}

/* Stores the full path's verdict for this packet's flow: in the way that holds the flow, else
 * a free way (empty, or decided under an older generation), else in place of the older of the
 * two decisions. A global function: verified once, not on every path of the program that
 * reaches it. Returns 0. */
__noinline int sl_flow_store(const struct sl_pkt *p, const struct sl_flow_verdict *v)
{
	if (!p || !v)
		return 0;
	const __u64 *k = (const __u64 *)p;
	__u32 first = sl_flow_set(k) << 1;
	__u32 second = first | 1;
	struct sl_flow_entry *a = bpf_map_lookup_elem(&flow_cache, &first);
	struct sl_flow_entry *b = bpf_map_lookup_elem(&flow_cache, &second);

	if (!a || !b)
		return 0;
	struct sl_flow_entry *e = a;

	if (sl_flow_holds(a, k))
		e = a;
	else if (sl_flow_holds(b, k))
		e = b;
	else if (sl_flow_way_free(a, v->generation))
		e = a;
	else if (sl_flow_way_free(b, v->generation))
		e = b;
	else if (b->decided < a->decided)
		e = b;
	e->valid = 0;
	__asm__ __volatile__("" ::: "memory");
	for (int i = 0; i < SL_FLOW_KEY_WORDS; i++)
		e->key[i] = k[i];
	e->decided = bpf_jiffies64();
	e->v = *v;
	__asm__ __volatile__("" ::: "memory");
	e->valid = SL_FLOW_F_VALID;
	return 0;
}

/* 1 when a fresh conntrack entry makes this packet (a cached drop) a reply after all: the
 * lookup of sl_ct_is_reply, without its refresh. A global function, like sl_ct_is_reply. */
__noinline int sl_ct_reverse_fresh(const struct sl_pkt *p)
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
	return sl_ct_fresh(v->last_seen_ns, bpf_ktime_get_ns(), p->protocol);
}

#endif
