/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address -> identity: the ipcache tries (workloads, nodes, host) and the policy-CIDR tries.
 * identity_of(ip) = ipcache hit, else the longest policy prefix's CIDR identity, else world
 * (identity-cache Snapshot::identity_of). */
#ifndef SLUICE_IPCACHE_H
#define SLUICE_IPCACHE_H

#include "maps.h"
#include "parse.h"

#define SL_ID_HOST 1ULL
#define SL_ID_WORLD_V4 9ULL
#define SL_ID_WORLD_V6 10ULL
#define SL_ID_FIRST_DERIVED 256ULL

static __always_inline struct ipcache_value *sl_ipcache_lookup(__u8 family, const __u8 *addr)
{
	if (family == SL_FAMILY_V4) {
		struct ipcache_key_v4 k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, addr, 4);
		return bpf_map_lookup_elem(&ipcache_v4, &k);
	}
	struct ipcache_key_v6 k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&ipcache_v6, &k);
}

static __always_inline struct ipcache_value *sl_cidr_lookup(__u8 family, const __u8 *addr)
{
	if (family == SL_FAMILY_V4) {
		struct ipcache_key_v4 k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, addr, 4);
		return bpf_map_lookup_elem(&cidr_v4, &k);
	}
	struct ipcache_key_v6 k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&cidr_v6, &k);
}

/* The identity an address has when it is not in the ipcache. */
static __always_inline __u64 sl_world_identity_of(__u8 family, const __u8 *addr)
{
	struct ipcache_value *hit = sl_cidr_lookup(family, addr);

	if (hit)
		return hit->identity;
	return family == SL_FAMILY_V4 ? SL_ID_WORLD_V4 : SL_ID_WORLD_V6;
}

#endif
