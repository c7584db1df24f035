/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the steering program (BTF-style definitions). Their names are the ABI: the Rust
 * loader opens them by name (xdp-redirect/src). Key and value layouts are in abi.h. */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

/* Workload, node and host addresses -> identity (and the host-side ifindex of local pods). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct ipcache_key_v4);
	__type(value, struct ipcache_value);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipcache_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct ipcache_key_v6);
	__type(value, struct ipcache_value);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipcache_v6 SEC(".maps");

/* Prefixes named by policies (CIDR rules) -> their CIDR identity. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct ipcache_key_v4);
	__type(value, struct ipcache_value);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cidr_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct ipcache_key_v6);
	__type(value, struct ipcache_value);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cidr_v6 SEC(".maps");

/* Local endpoints by host-side ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct endpoint_value);
	__uint(max_entries, 1 << 16);
} endpoints SEC(".maps");

/* Per local identity (and per collided identity): enforcement state. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u64);
	__type(value, struct local_policy_value);
	__uint(max_entries, 1 << 16);
} local_policy SEC(".maps");

/* (local, remote, direction, protocol, port prefix) -> allow/deny with its rule cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} policy SEC(".maps");

/* AF_XDP sockets, by slot. A socket is bound to one (interface, queue), and the kernel drops
 * a frame redirected to a socket bound elsewhere, so slots are per (interface, queue): */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XSK_SLOTS);
} xsks SEC(".maps");

/* ... and this map gives the slot of (receiving ifindex, RX queue). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct xsk_slot_key);
	__type(value, __u32);
	__uint(max_entries, XSK_SLOTS);
} xsk_slots SEC(".maps");

/* Redirect targets of the in-kernel path: host-side ifindex -> the same ifindex.
 * All maps are pinned by name so a restarted loader re-opens them with their contents. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	/* struct bpf_devmap_val: the loader (aya) writes the 8-byte form with an optional
	 * program; a 4-byte value would make every update fail with EINVAL. */
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, 1 << 16);
} redirect_devmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct sluice_config);
	__uint(max_entries, 1);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct sluice_counter_value);
	__uint(max_entries, CNT_MAX);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct event_budget);
	__uint(max_entries, 1);
} event_budget SEC(".maps");

/* First-fragment verdicts that later fragments of the same datagram follow. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, 1 << 14);
} fragments SEC(".maps");

/* Connections the in-kernel path allowed, by forward tuple (conntrack.h): their replies are
 * allowed without policy while the entry is fresh. The LRU evicts the least recently used
 * entries when full; expired ones are not deleted, only no longer honoured. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 1 << 18);
} conntrack SEC(".maps");

#endif
