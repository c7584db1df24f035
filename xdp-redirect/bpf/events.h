/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Verdict events: struct verdict_event records in the `events` ring buffer, rate-limited per
 * CPU by a token bucket (config.events_per_sec tokens per second, burst events_per_sec, refilled
 * by the nanoseconds elapsed since the last refill). A packet whose event is refused by the
 * bucket or by a full ring increments CNT_EVENTS_LOST (packets += 1, bytes += 0).
 * events_per_sec == 0 disables events (nothing is counted as lost). */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H

#include "maps.h"
#include "counters.h"
#include "parse.h"

#define SL_NSEC_PER_SEC 1000000000ULL

/* Takes one token from this CPU's bucket; 1 when there was one. */
static __always_inline int sl_event_take_token(__u32 rate)
{
	__u32 zero = 0;
	struct event_budget *b = bpf_map_lookup_elem(&event_budget, &zero);

	if (!b)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 elapsed = now - b->last_ns;

	if (elapsed >= SL_NSEC_PER_SEC || b->last_ns == 0) {
		b->tokens = rate;
		b->last_ns = now;
	} else {
		/* elapsed < 1e9 and rate < 2^32: the product fits in 64 bits. */
		__u64 add = elapsed * rate / SL_NSEC_PER_SEC;

		if (add) {
			__u64 tokens = b->tokens + add;

			b->tokens = tokens;
			/* Advance by the time the added tokens stand for, keeping the remainder. */
			b->last_ns += add * SL_NSEC_PER_SEC / rate;
		}
	}
	if (b->tokens > rate) /* burst = rate, also right after the rate was lowered */
		b->tokens = rate;
	if (b->tokens == 0)
		return 0;
	b->tokens -= 1;
	return 1;
}

struct sl_event_info {
	__u64 src_identity;
	__u64 dst_identity;
	__u32 rule;
	__u32 ifindex;
	__u8 action;
	__u8 reason;
	__u8 direction;
	__u8 pad;
};

/* Writes the event for a verdict if config asks for it (every drop; allows with
 * CFG_EVENTS_ALLOWED). */
static __always_inline void sl_emit_event(const struct sluice_config *cfg, const struct sl_pkt *p,
					  const struct sl_event_info *info)
{
	if (cfg->events_per_sec == 0)
		return;
	if (info->action != ACTION_DENY && !(cfg->flags & CFG_EVENTS_ALLOWED))
		return;
	if (!sl_event_take_token(cfg->events_per_sec)) {
		sl_count(CNT_EVENTS_LOST, 0);
		return;
	}
	struct verdict_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		sl_count(CNT_EVENTS_LOST, 0);
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->src_identity = info->src_identity;
	e->dst_identity = info->dst_identity;
	__builtin_memcpy(e->src_ip, p->src, 16);
	__builtin_memcpy(e->dst_ip, p->dst, 16);
	e->src_port = p->sport;
	e->dst_port = p->dport;
	e->protocol = p->protocol;
	e->family = p->family;
	e->action = info->action;
	e->reason = info->reason;
	e->rule = info->rule;
	e->ifindex = info->ifindex;
	e->direction = info->direction;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

#endif
