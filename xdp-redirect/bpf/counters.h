/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU packet/byte counters. Every packet the program sees is counted in exactly one slot
 * (enum sluice_counter), so the slots other than CNT_EVENTS_LOST sum to the packets seen.
 * CNT_EVENTS_LOST counts verdict events (packets = events not written, bytes = 0); it is
 * counted in addition to the packet's own slot. */
#ifndef SLUICE_COUNTERS_H
#define SLUICE_COUNTERS_H

#include "maps.h"

static __always_inline void sl_count(__u32 slot, __u64 bytes)
{
	struct sluice_counter_value *v = bpf_map_lookup_elem(&counters, &slot);

	if (v) {
		/* Per-CPU slot, XDP runs with migration disabled: plain adds are exact. */
		v->packets += 1;
		v->bytes += bytes;
	}
}

static __always_inline __u32 sl_drop_slot(__u8 reason)
{
	__u32 slot = CNT_DROP_BASE + reason;

	return slot < CNT_MAX ? slot : CNT_DROP_BASE;
}

#endif
