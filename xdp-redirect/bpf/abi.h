/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* The map ABI shared with the Rust loader (xdp-redirect/src/abi.rs). Every struct here has a
 * #[repr(C)] twin there; sizes and offsets are checked on both sides. Change both or neither. */
#ifndef SLUICE_ABI_H
#define SLUICE_ABI_H

#include <linux/types.h>

/* Drop reasons: the one numbered list (identity-cache/src/verdict.rs DropReason). */
enum sluice_drop_reason {
	DROP_POLICY_DENIED = 1,
	DROP_POLICY_DENY_RULE = 2,
	DROP_UNKNOWN_IDENTITY = 3,
	DROP_STALE_OR_UNROUTABLE_IP = 4,
	DROP_MALFORMED = 5,
	DROP_SPOOFED_SOURCE = 6,
	DROP_FRAGMENT_WITHOUT_STATE = 7,
	DROP_IDENTITY_COLLISION = 8,
	DROP_NO_WORKER = 9,
	DROP_REASON_MAX = 16,
};

/* Counter slots (index into the per-CPU `counters` array). */
enum sluice_counter {
	CNT_TO_SOCKET = 0,        /* steered into an AF_XDP socket */
	CNT_KERNEL_REDIRECT = 1,  /* allowed in kernel, redirected to the local endpoint's veth */
	CNT_KERNEL_PASS = 2,      /* allowed in kernel, passed to the stack */
	CNT_NOT_MANAGED = 3,      /* not pod traffic, passed untouched */
	CNT_NON_IP = 4,           /* ARP, IPv6 ND, other ethertypes: passed untouched */
	CNT_FAIL_OPEN = 5,        /* no socket, fail-open mode: passed without policy */
	CNT_FRAGMENT_FOLLOWED = 6,/* non-first fragment that followed its first fragment's verdict */
	CNT_EVENTS_LOST = 7,      /* verdict events not written (ring full or rate limit) */
	CNT_REDIRECT_FAILED = 8,  /* bpf_redirect_map to the destination veth failed */
	CNT_CT_REPLY = 9,         /* reply of a tracked connection, allowed without policy
				   * (redirected or passed like an allowed packet) */
	CNT_DROP_BASE = 16,       /* + drop reason */
	CNT_MAX = 32,
};

struct sluice_counter_value {
	__u64 packets;
	__u64 bytes;
};

/* LPM keys: prefixlen counts bits of the address. */
struct ipcache_key_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ipcache_key_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Value of the ipcache and policy-CIDR tries. */
struct ipcache_value {
	__u64 identity;
	__u32 endpoint_ifindex; /* host-side interface of a local endpoint, 0 otherwise */
	__u32 flags;            /* reserved, 0 */
};

/* Local endpoints by host-side interface index. */
struct endpoint_value {
	__u64 identity;
	__u32 ifindex;
	__u8 pod_mac[6];  /* the pod's interface: destination MAC when redirecting to it */
	__u8 host_mac[6]; /* the host-side veth: source MAC when redirecting to it */
	__u32 flags;      /* ENDPOINT_F_* */
	__u32 pad;
};

#define ENDPOINT_F_KERNEL_MODE 1 /* operator chose in-kernel enforcement for this interface */

/* Per local identity: whether each direction is default deny. */
struct local_policy_value {
	__u8 ingress_enforced;
	__u8 egress_enforced;
	__u8 collided; /* identity collision: fail closed */
	__u8 pad;
	__u32 ingress_rule; /* rule that turned default deny on (policy cookie), 0 if none */
	__u32 egress_rule;
	__u32 pad2;
};

#define DIR_INGRESS 0
#define DIR_EGRESS 1
/* Or'ed into the direction of entries that only CIDR peers made: probed for R2, the CIDR
 * identity of a pod's address, so that selectors and entities never match a pod through it. */
#define DIR_CIDR_ONLY 2

/* Policy LPM key. The prefix always covers local, remote, direction; then the protocol
 * (prefix 144) and a prefix of the big-endian port (144 + bits). Protocol 0 with prefix 136
 * means every protocol. remote == 0 means "any peer". */
struct policy_key {
	__u32 prefixlen;
	__u64 local;
	__u64 remote;
	__u8 direction;
	__u8 protocol;
	__u16 port_be;
} __attribute__((packed));

#define POLICY_PREFIX_PROTO_ALL 136
#define POLICY_PREFIX_PORT_BASE 144
#define POLICY_FULL_PREFIX 160

#define ACTION_ALLOW 1
#define ACTION_DENY 2

struct policy_value {
	__u8 action;     /* ACTION_* */
	__u8 match_kind; /* identity-cache MatchKind as u8 */
	__u16 pad;
	__u32 rule;      /* policy cookie: identity-cache RuleId + 1 */
};

/* AF_XDP socket slot of a receiving (interface, queue): xsk_slots -> xsks. */
struct xsk_slot_key {
	__u32 ifindex;
	__u32 queue;
};

#define XSK_SLOTS 4096

/* Global configuration: one entry. */
struct sluice_config {
	__u32 flags;               /* CFG_* */
	__u32 events_per_sec;      /* per CPU; 0 disables events */
	__u64 generation;          /* bumped by the loader after every change to the maps (config
				    * written last): cached verdicts of another generation are
				    * not used (flowcache.h) */
};

#define CFG_FAIL_OPEN 1            /* no socket: pass without policy (logged by the loader) */
#define CFG_ALLOW_FROM_HOST 2      /* host -> local endpoint ingress always allowed */
#define CFG_CIDR_SELECTS_PODS 4    /* Kubernetes semantics: CIDR rules also match pod IPs */
#define CFG_EVENTS_ALLOWED 8       /* also emit events for allowed packets */

/* Verdict event written to the ring buffer. */
struct verdict_event {
	__u64 timestamp_ns;
	__u64 src_identity;
	__u64 dst_identity;
	__u8 src_ip[16]; /* IPv4 in the first 4 bytes */
	__u8 dst_ip[16];
	__u16 src_port;  /* host order; ICMP: type */
	__u16 dst_port;
	__u8 protocol;
	__u8 family;     /* 4 or 6 */
	__u8 action;     /* ACTION_* */
	__u8 reason;     /* drop reason, 0 if allowed */
	__u32 rule;      /* policy cookie, 0 if none */
	__u32 ifindex;   /* receiving interface */
	__u32 direction; /* deciding direction, DIR_* */
	__u32 pad;
};

/* Token bucket for the per-CPU event rate limit. */
struct event_budget {
	__u64 last_ns;
	__u64 tokens;
};

/* State of a fragmented IPv4/IPv6 datagram, keyed by its first fragment. */
struct frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;
	__u8 protocol;
	__u8 family;
	__u16 pad;
};

struct frag_value {
	__u8 action;
	__u8 reason;
	__u16 pad;
	__u32 redirect_ifindex; /* 0: pass to the stack */
};

/* Connection tracking of the in-kernel path (conntrack.h): the forward tuple of a connection
 * that policy allowed, as its first packet carried it. Ports in host order; ICMP/ICMPv6 echo:
 * sport = echo identifier, dport = 0. Addresses as in frag_key (IPv4 in the first 4 bytes, the
 * rest zero). */
struct ct_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 family; /* 4 or 6 */
	__u16 pad;   /* 0 */
};

struct ct_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns of the latest allowed forward packet or reply */
	__u32 flags;        /* CT_F_* */
	__u32 pad;
};

#define CT_F_REPLY_SEEN 1 /* a reply has been allowed by this entry */

_Static_assert(sizeof(struct sluice_counter_value) == 16, "counter value");
_Static_assert(sizeof(struct ipcache_key_v4) == 8, "ipcache v4 key");
_Static_assert(sizeof(struct ipcache_key_v6) == 20, "ipcache v6 key");
_Static_assert(sizeof(struct ipcache_value) == 16, "ipcache value");
_Static_assert(sizeof(struct endpoint_value) == 32, "endpoint value");
_Static_assert(__builtin_offsetof(struct endpoint_value, host_mac) == 18, "endpoint host_mac");
_Static_assert(sizeof(struct local_policy_value) == 16, "local policy value");
_Static_assert(sizeof(struct policy_key) == 24, "policy key");
_Static_assert(__builtin_offsetof(struct policy_key, direction) == 20, "policy key direction");
_Static_assert(sizeof(struct policy_value) == 8, "policy value");
_Static_assert(sizeof(struct sluice_config) == 16, "config");
_Static_assert(__builtin_offsetof(struct sluice_config, generation) == 8, "config generation");
_Static_assert(sizeof(struct xsk_slot_key) == 8, "xsk slot key");
_Static_assert(sizeof(struct verdict_event) == 80, "verdict event");
_Static_assert(__builtin_offsetof(struct verdict_event, rule) == 64, "verdict event rule");
_Static_assert(sizeof(struct event_budget) == 16, "event budget");
_Static_assert(sizeof(struct frag_key) == 40, "frag key");
_Static_assert(sizeof(struct frag_value) == 8, "frag value");
_Static_assert(sizeof(struct ct_key) == 40, "ct key");
_Static_assert(__builtin_offsetof(struct ct_key, sport) == 32, "ct key sport");
_Static_assert(__builtin_offsetof(struct ct_key, protocol) == 36, "ct key protocol");
_Static_assert(sizeof(struct ct_value) == 16, "ct value");

#endif
