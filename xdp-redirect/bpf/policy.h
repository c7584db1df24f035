/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy decisions, the kernel twin of identity-cache Snapshot::decide and
 * PolicyTables::decide_direction.
 *
 * One direction for local identity L against a peer R (and R2, the peer address's CIDR identity
 * when CFG_CIDR_SELECTS_PODS and R is not reserved, when found and != R):
 *   no local_policy[L]                        -> allow, not enforced, rule 0
 *   probe `policy` at prefix 160 with remote = R, R2 (with DIR_CIDR_ONLY or'ed into the
 *   direction: only entries made by CIDR peers), 0 (any peer), in that order
 *   the first DENY among the hits             -> deny DROP_POLICY_DENY_RULE, its cookie
 *   else the first ALLOW among the hits       -> allow, its cookie
 *   ingress, CFG_ALLOW_FROM_HOST, R == host   -> allow, rule 0
 *   direction enforced                        -> deny DROP_POLICY_DENIED, lp.{in,e}gress_rule
 *   else                                      -> allow, not enforced, rule 0
 * Within one (local, remote, direction) the userspace compiler writes disjoint port ranges with
 * deny precedence already applied, so one LPM hit per remote is the whole answer for it. */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include "maps.h"
#include "ipcache.h"

struct sl_dir_verdict {
	__u32 rule;    /* policy cookie, 0 if none */
	__u8 action;   /* ACTION_ALLOW / ACTION_DENY */
	__u8 reason;   /* drop reason when denied */
	__u8 enforced; /* the direction is in default deny */
	__u8 pad;
};

/* Identity candidate R2 for a peer (0: none). identity-cache Snapshot::remote_candidates. */
static __always_inline __u64 sl_cidr_candidate(__u32 cfg_flags, __u64 peer_identity, __u8 family,
					       const __u8 *peer_ip)
{
	if (!(cfg_flags & CFG_CIDR_SELECTS_PODS) || peer_identity < SL_ID_FIRST_DERIVED)
		return 0;
	struct ipcache_value *hit = sl_cidr_lookup(family, peer_ip);

	if (!hit || hit->identity == peer_identity)
		return 0;
	return hit->identity;
}

/* Probes one remote; returns the hit's action (0 when none) and its rule in *rule. */
static __always_inline __u8 sl_policy_probe(struct policy_key *key, __u64 remote, __u32 *rule)
{
	key->remote = remote;
	struct policy_value *v = bpf_map_lookup_elem(&policy, key);

	if (!v)
		return 0;
	*rule = v->rule;
	return v->action;
}

static __always_inline void sl_decide_direction(__u64 local, __u8 direction, __u64 remote,
						__u64 remote2, __u8 protocol, __u16 port,
						__u32 cfg_flags, struct sl_dir_verdict *out)
{
	struct local_policy_value *lp = bpf_map_lookup_elem(&local_policy, &local);

	out->rule = 0;
	out->reason = 0;
	out->action = ACTION_ALLOW;
	out->enforced = 0;
	if (!lp)
		return;
	__u8 enforced = direction == DIR_INGRESS ? lp->ingress_enforced : lp->egress_enforced;
	__u32 enforced_by = direction == DIR_INGRESS ? lp->ingress_rule : lp->egress_rule;

	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.local = local,
		.direction = direction,
		.protocol = protocol,
		.port_be = bpf_htons(port),
	};
	__u32 rule_r = 0, rule_r2 = 0, rule_any = 0;
	/* remote 0 is "any peer": never probe it as a specific peer. */
	__u8 act_r = remote ? sl_policy_probe(&key, remote, &rule_r) : 0;
	__u8 act_r2 = 0;
	if (remote2) {
		/* R2 only stands for the pod's address: only entries CIDR peers made apply. */
		key.direction = direction | DIR_CIDR_ONLY;
		act_r2 = sl_policy_probe(&key, remote2, &rule_r2);
		key.direction = direction;
	}
	__u8 act_any = sl_policy_probe(&key, 0, &rule_any);

	out->enforced = enforced ? 1 : 0;
	/* Deny beats allow, whichever policy says it. */
	if (act_r == ACTION_DENY || act_r2 == ACTION_DENY || act_any == ACTION_DENY) {
		out->action = ACTION_DENY;
		out->reason = DROP_POLICY_DENY_RULE;
		out->enforced = 1;
		out->rule = act_r == ACTION_DENY ? rule_r : act_r2 == ACTION_DENY ? rule_r2 : rule_any;
		return;
	}
	if (act_r == ACTION_ALLOW) {
		out->rule = rule_r;
		return;
	}
	if (act_r2 == ACTION_ALLOW) {
		out->rule = rule_r2;
		return;
	}
	if (act_any == ACTION_ALLOW) {
		out->rule = rule_any;
		return;
	}
	if (direction == DIR_INGRESS && (cfg_flags & CFG_ALLOW_FROM_HOST) && remote == SL_ID_HOST)
		return;
	if (enforced) {
		out->action = ACTION_DENY;
		out->reason = DROP_POLICY_DENIED;
		out->rule = enforced_by;
	}
}

/* Whether an identity is poisoned by a collision (the loader writes local_policy entries with
 * collided = 1 for every collided identity, local or not). */
static __always_inline int sl_identity_collided(__u64 identity)
{
	struct local_policy_value *lp = bpf_map_lookup_elem(&local_policy, &identity);

	return lp && lp->collided;
}

#endif
