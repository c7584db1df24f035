// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sluice_steer: the XDP program on every host-side pod veth (and optionally uplinks). Its
 * verdicts are those of identity-cache Snapshot::decide / PolicyTables::decide_direction.
 *
 *  1. Ethernet with at most one 802.1Q/802.1AD tag. Anything that is not IPv4/IPv6 (frames too
 *     short for the Ethernet header or tag, ARP, a second tag, other ethertypes) and IPv6
 *     ND / router / redirect / MLD (ICMPv6 130-137, 143) -> XDP_PASS untouched, CNT_NON_IP.
 *  2. Malformed IP (parse.h lists the checks: IPv4 version, IHL >= 5, header and options in
 *     the frame, total length >= header and within the frame; IPv6 header, payload length
 *     within the frame, at most 8 bounds-checked extension headers (hop-by-hop, routing,
 *     destination options, fragment, AH); an L4 header shorter than TCP 20 / UDP 8 / SCTP 12 /
 *     ICMP(v6) 8 bytes on anything but a later fragment) -> XDP_DROP DROP_MALFORMED when the
 *     receiving interface is a managed endpoint (in `endpoints`); elsewhere XDP_PASS,
 *     CNT_NOT_MANAGED (the stack decides). Ports: TCP/UDP/SCTP source and destination port;
 *     ICMP/ICMPv6 type as destination port, source port 0 (and the echo identifier, for 8b/8d);
 *     other protocols and later fragments 0/0.
 *  3. Fragments (fragments.h), in-kernel path only: a first fragment (offset 0, MF) is decided
 *     by its ports like any packet (8a-8c: a reply of a tracked connection included) and its
 *     final verdict and redirect target stored in `fragments`; a later
 *     fragment (offset > 0) follows the stored verdict (allowed: CNT_FRAGMENT_FOLLOWED, or
 *     CNT_REDIRECT_FAILED; denied: CNT_DROP_BASE + the stored reason), or without one
 *     XDP_DROP DROP_FRAGMENT_WITHOUT_STATE. Fragments never go to a socket (7).
 *  4. Source: when the receiving ifindex is in `endpoints`, the source is that endpoint: its IP
 *     must hit an ipcache entry whose endpoint_ifindex is the receiving ifindex, else XDP_DROP
 *     DROP_SPOOFED_SOURCE; the source identity is the endpoint's. Otherwise the ipcache LPM
 *     identity, else the policy-CIDR trie's, else world (9 v4, 10 v6).
 *  5. Destination: ipcache LPM -> identity and endpoint_ifindex (a local endpoint when != 0 and
 *     present in `endpoints`); else the policy-CIDR trie's identity; else world.
 *  6. Neither source nor destination a local endpoint -> XDP_PASS, CNT_NOT_MANAGED.
 *  7. What the fast path serves: an unfragmented TCP/UDP/SCTP/ICMP/ICMPv6 packet to a local
 *     endpoint, unless the receiving endpoint has ENDPOINT_F_KERNEL_MODE. Such a packet goes
 *     to the AF_XDP socket in `xsks[xsk_slots[(ingress ifindex, rx queue)]]` (slots are per
 *     interface and queue: the kernel drops a frame redirected to a socket bound to another
 *     device) -> bpf_redirect_map(&xsks, slot, XDP_PASS), CNT_TO_SOCKET (a redirect attempt:
 *     frames the socket then drops for want of buffers show in its XDP_STATISTICS). Traffic
 *     to other destinations (the node, other nodes, the world), fragments and other protocols
 *     stay on the in-kernel path, which decides them from the same maps and passes them to
 *     the stack, something a userspace worker cannot do. If the redirect does not happen (the
 *     socket closed between lookup and redirect), the packet continues on the in-kernel path:
 *     never unchecked.
 *  8. No socket: CFG_FAIL_OPEN -> XDP_PASS, CNT_FAIL_OPEN, no policy, nothing tracked. Else in
 *     kernel:
 *     a. source or destination identity with local_policy.collided -> DROP_IDENTITY_COLLISION;
 *     b. connection tracking (conntrack.h): a reply of a connection recorded in `conntrack` (by
 *        8d) and not expired (TCP 1 h, UDP/SCTP/ICMP 60 s since it was last seen) is allowed
 *        without policy (8c skipped) and refreshes the entry. Reply: TCP/UDP/SCTP whose
 *        (dst, src, dport, sport) is recorded; ICMP echo reply (0) / ICMPv6 echo reply (129)
 *        whose (dst, src, echo identifier, 0) is. Nothing else is ever a reply (other ICMP
 *        types, e.g. errors, and other protocols go to 8c). It continues at 8e as an allowed
 *        packet would, counted CNT_CT_REPLY instead of CNT_KERNEL_REDIRECT / CNT_KERNEL_PASS;
 *     c. egress of the source (only if a local endpoint), then ingress of the destination (only
 *        if a local endpoint), as policy.h describes, on the destination port (ICMP: type); a
 *        denied egress stops evaluation;
 *     d. allowed by 8c: the connection is recorded in `conntrack` under the packet's own tuple
 *        (TCP/UDP/SCTP: ports; ICMP/ICMPv6 echo request: (src, dst, echo identifier, 0); other
 *        ICMP types and protocols: not tracked), or its entry refreshed. Forward packets of a
 *        tracked connection are still decided by 8c: a policy change stops the forward
 *        direction at the next packet, while replies pass until the entry expires;
 *     e. denied -> XDP_DROP, CNT_DROP_BASE + reason. Allowed to a local endpoint ->
 *        bpf_redirect_map(&redirect_devmap, ifindex, 0) with dst MAC = pod_mac, src MAC =
 *        host_mac (an 802.1Q/AD tag is removed), CNT_KERNEL_REDIRECT (a reply: CNT_CT_REPLY);
 *        if the redirect fails, XDP_PASS with the frame unmodified, CNT_REDIRECT_FAILED.
 *        Allowed otherwise -> XDP_PASS, CNT_KERNEL_PASS (a reply: CNT_CT_REPLY).
 *  9. Events (events.h): every drop, and in-kernel allows (redirect, pass, followed fragment,
 *     tracked reply) with CFG_EVENTS_ALLOWED, write a verdict_event, rate-limited per CPU;
 *     refused events count CNT_EVENTS_LOST. The event's direction is the deciding one: for a
 *     policy deny the direction that denied, for a policy allow ingress when it was evaluated,
 *     else egress; for other drops (malformed, spoofed, fragment, collision) and tracked
 *     replies egress when the packet came from a local endpoint, else ingress. rule = the
 *     deciding policy cookie, 0 for non-policy drops, followed fragments and tracked replies.
 * 10. Counters (counters.h): exactly one slot per packet (packets, bytes = frame length on
 *     entry), so the slots other than CNT_EVENTS_LOST sum to the packets seen.
 * 11. Flow cache (flowcache.h): the verdict of 8a-8e for an unfragmented packet is cached per
 *     CPU under its flow key (ingress ifindex, family, protocol, addresses, ports / ICMP type
 *     and identifier) and the config generation, which the loader bumps after every map
 *     change. Right after parsing (not fail open, not a fragment), a packet whose flow has a
 *     cached verdict of the current generation, less than 100 jiffies old (at most 1 s), takes
 *     it instead of 5-8: first rule 7 if it applied to the flow (a socket may have come since:
 *     steered, CNT_TO_SOCKET), then the cached 8e: redirected (MACs rewritten, tag removed; a
 *     failed redirect still passes the frame, CNT_REDIRECT_FAILED) or passed, in the slot the
 *     full path chose (CNT_KERNEL_REDIRECT / CNT_KERNEL_PASS / CNT_CT_REPLY), or dropped
 *     (CNT_DROP_BASE + reason), with the same event (9). A cached policy drop of a packet that
 *     could be a reply first looks up its reverse tuple in `conntrack`: a fresh connection
 *     there sends it down the full path (8b allows it). Cached allows do not touch
 *     `conntrack` (8b's refresh, 8d): the full path, taken again when the entry is 100 jiffies
 *     old, does, so conntrack's last_seen_ns lags a flow's packets by less than 1 s. Never
 *     cached: socket steering, fail open, fragments, malformed, spoofed, not-managed, non-IP.
 *
 * 12. Steering cache (steercache.h): rule 7 depends only on the receiving interface and the two
 *     addresses once the packet is unfragmented TCP/UDP/SCTP/ICMP/ICMPv6, so when it steers a
 *     packet its (ifindex, source, destination) is cached per CPU, valid for the config
 *     generation and at most 100 jiffies. Right after parsing, such a packet whose receiving
 *     queue has a socket and whose pair is cached goes to the socket (CNT_TO_SOCKET) without
 *     rules 3-11; if the socket has closed, it continues as below.
 *
 * Order of evaluation: 1, 2, 12, 11 (a cached verdict: 7, then the cached 8e), 5, 4, 6, 7
 * (steered: 12 stored), 8 (fail open), 3 (later fragments), 8a, 8b, 8c, 3 (a first fragment's verdict stored), 8d,
 * 11 (the verdict cached), 8e. Spoofing (4) and collisions (8a) are checked before the
 * conntrack shortcut (8b); the AF_XDP socket path (7) is tracked in userspace. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "parse.h"
#include "maps.h"
#include "counters.h"
#include "ipcache.h"
#include "policy.h"
#include "events.h"
#include "fragments.h"
#include "conntrack.h"
#include "flowcache.h"
#include "steercache.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Redirects to a local endpoint's host-side veth, rewriting the Ethernet header for the pod:
 * macs = its pod_mac then host_mac (have_macs 0: no endpoint, the redirect fails).
 * Returns the XDP action; *slot is ok_slot on success, CNT_REDIRECT_FAILED otherwise (and then
 * the frame is passed unmodified). */
static __always_inline int sl_redirect_local(struct xdp_md *ctx, int have_macs, const __u32 *macs,
					     __u32 ifindex, __u32 ok_slot, __u32 *slot)
{
	*slot = CNT_REDIRECT_FAILED;
	if (!have_macs)
		return XDP_PASS;
	/* Only records the target; the frame can still be edited before returning. */
	if (bpf_redirect_map(&redirect_devmap, ifindex, 0) != XDP_REDIRECT)
		return XDP_PASS;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data;

	if ((void *)(eth + SL_ETH_HLEN) > data_end)
		return XDP_PASS; /* cannot happen: the frame held an IP header */
	/* The tag is read again here rather than carried from parsing: a flag constant on each
	 * parse path would double the verifier's work for the whole program. */
	__u16 proto = sl_load_be16(eth + 12);
	if (proto == SL_ETH_P_8021Q || proto == SL_ETH_P_8021AD) {
		/* Dropping the first 4 bytes leaves the inner ethertype at offset 12; both MACs are
		 * rewritten below. */
		if (bpf_xdp_adjust_head(ctx, SL_VLAN_HLEN))
			return XDP_PASS;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		eth = data;
		if ((void *)(eth + SL_ETH_HLEN) > data_end)
			return XDP_PASS; /* cannot happen */
	}
	/* Three 4-byte stores (x86 has no alignment constraint; the verifier only enforces one
	 * with strict alignment), not the twelve byte stores a memcpy to a packet becomes. */
	((__u32 *)eth)[0] = macs[0];
	((__u32 *)eth)[1] = macs[1];
	((__u32 *)eth)[2] = macs[2];
	*slot = ok_slot;
	return XDP_REDIRECT;
}

/* Rule 7: the protocols the fast path decides (the rest have no ports policy can name). */
static __always_inline int sl_fastpath_protocol(__u8 protocol)
{
	return protocol == SL_IPPROTO_TCP || protocol == SL_IPPROTO_UDP ||
	       protocol == SL_IPPROTO_SCTP || protocol == SL_IPPROTO_ICMP ||
	       protocol == SL_IPPROTO_ICMPV6;
}

/* Rule 7: the `xsks` slot of the receiving (interface, queue)'s AF_XDP socket, or NULL. */
static __always_inline __u32 *sl_queue_socket(struct xdp_md *ctx)
{
	struct xsk_slot_key xkey = { .ifindex = ctx->ingress_ifindex,
				     .queue = ctx->rx_queue_index };

	return bpf_map_lookup_elem(&xsk_slots, &xkey);
}

/* Rule 7: redirects into the socket in `xsks` slot `sock_slot`. 1 when the redirect is set up
 * (return XDP_REDIRECT); 0 when the slot is empty (the socket closed). */
static __always_inline int sl_redirect_to_socket(__u32 sock_slot)
{
	return bpf_map_lookup_elem(&xsks, &sock_slot) &&
	       bpf_redirect_map(&xsks, sock_slot, XDP_PASS) == XDP_REDIRECT;
}

/* Rule 7: redirects into the AF_XDP socket of the receiving (interface, queue), if there is
 * one. 1 when the redirect is set up (return XDP_REDIRECT); 0 when there is no socket or it
 * closed between lookup and redirect. */
static __always_inline int sl_to_socket(struct xdp_md *ctx)
{
	__u32 *xslot = sl_queue_socket(ctx);

	return xslot && sl_redirect_to_socket(*xslot);
}

SEC("xdp")
int sluice_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = (__u64)(data_end - data);
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 zero = 0;
	struct sluice_config cfg = {};
	struct sl_pkt p = { .ifindex = ifindex };
	struct sl_event_info ev = { .ifindex = ifindex };
	__u32 slot;
	int ret;

	struct sluice_config *cfgp = bpf_map_lookup_elem(&config, &zero);
	if (cfgp)
		cfg = *cfgp;

	/* Rules 1, 2: parse. */
	int parsed = sl_parse(ctx, data, data_end, (__u32)bytes, &p);
	if (parsed == SL_PARSE_NON_IP) {
		slot = CNT_NON_IP;
		goto pass;
	}

	/* Rule 12: a (source, destination) pair rule 7 steered recently goes to the queue's socket
	 * again, before any per-flow state is touched (steercache.h). */
	if (parsed == SL_PARSE_OK && p.frag == SL_FRAG_NONE && sl_fastpath_protocol(p.protocol)) {
		__u32 *xslot = sl_queue_socket(ctx);

		if (xslot && sl_steer_cached(&p, cfg.generation) &&
		    sl_redirect_to_socket(*xslot)) {
			sl_count(CNT_TO_SOCKET, bytes);
			return XDP_REDIRECT;
		}
	}

	/* Rule 11: the flow's cached verdict (flowcache.h). Only verdicts of rules 8a-8e of
	 * unfragmented packets are cached, under the config generation they were decided in. */
	if (parsed == SL_PARSE_OK && p.frag == SL_FRAG_NONE && !(cfg.flags & CFG_FAIL_OPEN)) {
		struct sl_flow_entry *e = sl_flow_lookup(&p, cfg.generation);

		if (e) {
			__u8 flags = e->v.flags;

			/* Rule 7 first, as on the full path: a socket may have come since. */
			if ((flags & SL_FLOW_F_SOCKET) && sl_to_socket(ctx)) {
				sl_count(CNT_TO_SOCKET, bytes);
				return XDP_REDIRECT;
			}
			/* A drop the other side's new connection turned into a reply: full path. */
			if (!(flags & SL_FLOW_F_CT_REVERSE) || !sl_ct_reverse_fresh(&p)) {
				if (e->v.action != ACTION_ALLOW) {
					sl_flow_event_info(&e->v, &ev);
					goto drop;
				}
				/* Rule 8e, as the full path decided it. */
				if (e->v.target) {
					ret = sl_redirect_local(ctx, 1, e->v.macs, e->v.target,
								e->v.slot, &slot);
				} else {
					ret = XDP_PASS;
					slot = e->v.slot;
				}
				if (cfg.events_per_sec && (cfg.flags & CFG_EVENTS_ALLOWED)) {
					sl_flow_event_info(&e->v, &ev);
					ev.action = ACTION_ALLOW;
					sl_emit_event(&cfg, &p, &ev);
				}
				sl_count(slot, bytes);
				return ret;
			}
		}
	}

	struct sl_flow_verdict fv = {}; /* the verdict of rules 3 (later fragments) and 8a-8e */
	int have_macs = 0;              /* fv.macs holds the target endpoint's MACs */
	struct endpoint_value *rx_ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (parsed != SL_PARSE_OK) {
		if (!rx_ep) {
			slot = CNT_NOT_MANAGED;
			goto pass;
		}
		ev.src_identity = rx_ep->identity;
		ev.direction = DIR_EGRESS;
		ev.reason = DROP_MALFORMED;
		goto drop;
	}

	/* Rule 5: destination. */
	__u64 dst_id;
	__u32 dst_ifindex = 0;
	struct endpoint_value *dst_ep = NULL;
	struct ipcache_value *dst_hit = sl_ipcache_lookup(p.family, p.dst);
	if (dst_hit) {
		dst_id = dst_hit->identity;
		dst_ifindex = dst_hit->endpoint_ifindex;
		if (dst_ifindex)
			dst_ep = bpf_map_lookup_elem(&endpoints, &dst_ifindex);
	} else {
		dst_id = sl_world_identity_of(p.family, p.dst);
	}
	ev.dst_identity = dst_id;

	/* Rule 4: source, anti-spoofing. */
	__u64 src_id;
	struct ipcache_value *src_hit = sl_ipcache_lookup(p.family, p.src);
	if (rx_ep) {
		src_id = rx_ep->identity;
		ev.src_identity = src_id;
		ev.direction = DIR_EGRESS;
		if (!src_hit || src_hit->endpoint_ifindex != ifindex) {
			ev.reason = DROP_SPOOFED_SOURCE;
			goto drop;
		}
	} else {
		src_id = src_hit ? src_hit->identity : sl_world_identity_of(p.family, p.src);
		ev.src_identity = src_id;
		ev.direction = DIR_INGRESS;
	}

	/* Rule 6: not pod traffic. */
	if (!rx_ep && !dst_ep) {
		slot = CNT_NOT_MANAGED;
		goto pass;
	}

	/* Rule 7: steer into the queue's AF_XDP socket. */
	int socket_rule = dst_ep && p.frag == SL_FRAG_NONE && sl_fastpath_protocol(p.protocol) &&
			  !(rx_ep && (rx_ep->flags & ENDPOINT_F_KERNEL_MODE));
	if (socket_rule && sl_to_socket(ctx)) {
		sl_steer_store(&p, cfg.generation); /* rule 12 */
		sl_count(CNT_TO_SOCKET, bytes);
		return XDP_REDIRECT;
	}
	/* No socket, or it closed between lookup and redirect: decide here. */

	/* Rule 8: fail open. */
	if (cfg.flags & CFG_FAIL_OPEN) {
		slot = CNT_FAIL_OPEN;
		goto pass;
	}

	__u32 target = 0; /* local endpoint to redirect to, 0: pass to the stack */
	struct endpoint_value *target_ep = NULL;

	if (p.frag == SL_FRAG_LATER) {
		/* Rule 3: later fragments follow their first fragment. */
		struct frag_value *frag = sl_frag_lookup(&p);

		if (!frag) {
			ev.reason = DROP_FRAGMENT_WITHOUT_STATE;
			goto drop;
		}
		if (frag->action != ACTION_ALLOW) {
			ev.reason = frag->reason ? frag->reason : DROP_POLICY_DENIED;
			goto drop;
		}
		target = frag->redirect_ifindex;
		if (target)
			target_ep = bpf_map_lookup_elem(&endpoints, &target);
		fv.action = ACTION_ALLOW;
		fv.slot = CNT_FRAGMENT_FOLLOWED;
	} else {
		/* Rules 8a-8c: the verdict. */
		__u8 action = ACTION_ALLOW;
		__u8 reason = 0;
		int reply = 0;

		if (sl_identity_collided(src_id) || sl_identity_collided(dst_id)) {
			action = ACTION_DENY;
			reason = DROP_IDENTITY_COLLISION;
		} else if (sl_ct_is_reply(&p)) {
			/* Rule 8b: a reply of a tracked connection skips policy. */
			reply = 1;
		} else {
			struct sl_dir_verdict dv;

			if (rx_ep) {
				__u64 r2 = sl_cidr_candidate(cfg.flags, dst_id, p.family, p.dst);

				sl_decide_direction(src_id, DIR_EGRESS, dst_id, r2, p.protocol,
						    p.dport, cfg.flags, &dv);
				ev.direction = DIR_EGRESS;
				ev.rule = dv.rule;
				action = dv.action;
				reason = dv.reason;
			}
			if (action == ACTION_ALLOW && dst_ep) {
				__u64 r2 = sl_cidr_candidate(cfg.flags, src_id, p.family, p.src);

				sl_decide_direction(dst_id, DIR_INGRESS, src_id, r2, p.protocol,
						    p.dport, cfg.flags, &dv);
				ev.direction = DIR_INGRESS;
				ev.rule = dv.rule;
				action = dv.action;
				reason = dv.reason;
			}
		}
		if (action == ACTION_ALLOW && dst_ep) {
			target = dst_ifindex;
			target_ep = dst_ep;
		}
		/* Rule 3: remember the first fragment's verdict. */
		if (p.frag == SL_FRAG_FIRST)
			sl_frag_store(&p, action, reason, target);
		fv.action = action;
		fv.reason = reason;
		if (action == ACTION_ALLOW) {
			if (reply) {
				fv.slot = CNT_CT_REPLY;
			} else {
				/* Rule 8d: track the connection policy allowed. */
				sl_ct_track(&p);
				fv.slot = target ? CNT_KERNEL_REDIRECT : CNT_KERNEL_PASS;
			}
		} else if (reason != DROP_IDENTITY_COLLISION) {
			int role = sl_ct_role(&p);

			if (role == SL_CT_PORTS || role == SL_CT_ECHO_REPLY)
				fv.flags |= SL_FLOW_F_CT_REVERSE;
		}
	}
	fv.target = target;
	if (target_ep) {
		__builtin_memcpy((__u8 *)fv.macs, target_ep->pod_mac, 6);
		__builtin_memcpy((__u8 *)fv.macs + 6, target_ep->host_mac, 6);
		have_macs = 1;
	}
	fv.src_identity = ev.src_identity;
	fv.dst_identity = ev.dst_identity;
	fv.rule = ev.rule;
	fv.direction = ev.direction;
	/* Rule 11: cache the verdict of an unfragmented packet. */
	if (p.frag == SL_FRAG_NONE) {
		fv.generation = cfg.generation;
		if (socket_rule)
			fv.flags |= SL_FLOW_F_SOCKET;
		sl_flow_store(&p, &fv);
	}
	if (fv.action != ACTION_ALLOW) {
		ev.reason = fv.reason;
		goto drop;
	}
	/* Rule 8e: allowed. */
	if (fv.target) {
		ret = sl_redirect_local(ctx, have_macs, fv.macs, fv.target, fv.slot, &slot);
	} else {
		ret = XDP_PASS;
		slot = fv.slot;
	}
	ev.action = ACTION_ALLOW;
	sl_emit_event(&cfg, &p, &ev);
	sl_count(slot, bytes);
	return ret;

drop:
	/* Every drop: ev.reason set; ev.rule set by policy, else 0. */
	ev.action = ACTION_DENY;
	sl_emit_event(&cfg, &p, &ev);
	sl_count(sl_drop_slot(ev.reason), bytes);
	return XDP_DROP;

pass:
	sl_count(slot, bytes);
	return XDP_PASS;
}
