// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bench-lab's packet generator and sink (compiled by bench-lab's build.rs).
 *
 * lab_gen:  driven by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the generator pod's
 *           veth; every frame it returns XDP_TX for leaves that veth towards the node. It
 *           stamps each frame with a sequence number and the send time (bpf_ktime_get_ns,
 *           CLOCK_MONOTONIC) and picks its flow (source port) and source address from the
 *           sequence number; checksums are updated incrementally. With a pacing interval it
 *           returns XDP_DROP (nothing sent) until the next send slot.
 * lab_sink: on the sink pod's veth: counts lab frames, sequence regressions (reordering),
 *           untouched-TTL frames, lab frames per source address (by its last byte), and
 *           records one-way latency (now - stamp) in a log-linear histogram; drops lab frames
 *           and passes everything else to the sink's stack (the TCP generator's server).
 *
 * The frame template (built in userspace): Ethernet, IPv4 (no options) or IPv6 (no extension
 * headers), UDP, then the lab payload: magic (4), sequence (8), send time (8), native byte
 * order. Frames are recycled by the kernel with whatever they last carried (a forwarding stack
 * rewrites MACs and TTL in place), so the generator writes the MACs and TTL/hop limit of every
 * frame again, and every checksum update reads the old field value before writing the new one. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define LAB_MAGIC 0x51ce1ab5u

/* How the generator varies its frames (written by userspace before a run). */
struct gen_config {
	__u64 interval_ns;   /* 0: as fast as possible; else one frame per interval */
	__u32 ipv6;          /* frame family: 0 IPv4, 1 IPv6 */
	__u32 flow_mode;     /* 0: nflows fixed flows; 1: every frame a new flow */
	__u32 nflows;        /* flows (source ports) in fixed mode, >= 1 */
	__u32 nsrc;          /* source addresses, >= 1 (consecutive, from the template's) */
	__u16 sport_base;    /* first source port, host order */
	__u16 pad;
	__u32 src_base;      /* IPv4 address or low 32 bits of the IPv6 address, host order */
	__u8 dst_mac[6];     /* the node's MAC */
	__u8 src_mac[6];     /* the generator pod's MAC */
	__u32 pad2;
};

/* Generator state: sequence, next send slot, frames sent, frames skipped by pacing. */
struct gen_state {
	__u64 seq;
	__u64 next_ns;
	__u64 sent;
	__u64 paced_out;
	__u64 behind;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct gen_config);
	__uint(max_entries, 1);
} gen_config_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct gen_state);
	__uint(max_entries, 1);
} gen_state_map SEC(".maps");

/* Sink counters, per CPU: see SINK_* below. */
#define SINK_ALL 0
#define SINK_LAB 1
#define SINK_TTL_INTACT 2
#define SINK_REORDERED 3
#define SINK_BYTES 4
#define SINK_MAX_SEQ 5
#define SINK_LAT_SUM 6
#define SINK_SLOTS 8

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SINK_SLOTS);
} sink_counters SEC(".maps");

/* Lab frames per source address, per CPU, indexed by the address's last byte (IPv4) or the
 * last byte of the IPv6 address: every lab pod address differs in it (10.128.0.0/24). */
#define SINK_SOURCES 256

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SINK_SOURCES);
} sink_by_src SEC(".maps");

/* Latency histogram: 8 linear sub-buckets per power of two (bucket = msb * 8 + next 3 bits;
 * values below 8 ns get their own buckets 0..7). 64 * 8 buckets. */
#define LAT_SUB_BITS 3
#define LAT_BUCKETS (64 << LAT_SUB_BITS)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LAT_BUCKETS);
} sink_latency SEC(".maps");

static __always_inline void bump(__u32 slot, __u64 by)
{
	__u64 *v = bpf_map_lookup_elem(&sink_counters, &slot);

	if (v)
		*v += by;
}

static __always_inline __u32 msb64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

static __always_inline __u32 lat_bucket(__u64 ns)
{
	__u32 msb;

	if (ns < (1u << LAT_SUB_BITS))
		return (__u32)ns;
	msb = msb64(ns);
	return (msb << LAT_SUB_BITS) | (__u32)((ns >> (msb - LAT_SUB_BITS)) & ((1u << LAT_SUB_BITS) - 1));
}

/* One's-complement checksum update: csum' = ~(~csum + ~old + new) over 16-bit words. */
static __always_inline __u64 csum_sub_add16(__u64 acc, __u16 old, __u16 new)
{
	return acc + (__u16)~old + new;
}

static __always_inline __u64 csum_sub_add32(__u64 acc, __u32 old, __u32 new)
{
	acc = csum_sub_add16(acc, (__u16)old, (__u16)new);
	return csum_sub_add16(acc, (__u16)(old >> 16), (__u16)(new >> 16));
}

static __always_inline __u64 csum_sub_add64(__u64 acc, __u64 old, __u64 new)
{
	acc = csum_sub_add32(acc, (__u32)old, (__u32)new);
	return csum_sub_add32(acc, (__u32)(old >> 32), (__u32)(new >> 32));
}

static __always_inline __u16 csum_finish(__u16 csum, __u64 acc)
{
	acc += (__u16)~csum;
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)~acc;
}

static __always_inline __u32 bswap32(__u32 v)
{
	return __builtin_bswap32(v);
}

static __always_inline __u16 bswap16(__u16 v)
{
	return __builtin_bswap16(v);
}

SEC("xdp")
int lab_gen(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&gen_config_map, &zero);
	struct gen_state *st = bpf_map_lookup_elem(&gen_state_map, &zero);
	__u64 now, seq, flow;
	__u32 src_off, udp_off, ip_csum_off, src_idx, old_src, new_src;
	__u16 sport, old_sport, old_csum, new_csum;
	__u64 old_seq, old_ts, acc;
	int v6;

	if (!cfg || !st)
		return XDP_ABORTED;
	now = bpf_ktime_get_ns();
	if (cfg->interval_ns) {
		if (now < st->next_ns) {
			st->paced_out++;
			return XDP_DROP;
		}
		/* Open-loop pacing: the next slot follows this one; a generator that fell more
		 * than 1 ms behind (descheduled) starts again from now instead of bursting. */
		if (now - st->next_ns > 1000000) {
			st->next_ns = now + cfg->interval_ns;
			st->behind++;
		} else {
			st->next_ns += cfg->interval_ns;
		}
	}
	seq = st->seq++;
	v6 = cfg->ipv6 != 0;
	if (v6) {
		src_off = 14 + 8 + 12; /* low 32 bits of the IPv6 source */
		udp_off = 14 + 40;
		ip_csum_off = 0;
	} else {
		src_off = 14 + 12;
		udp_off = 14 + 20;
		ip_csum_off = 14 + 10;
	}
	if (data + udp_off + 8 + 20 > data_end)
		return XDP_ABORTED;
	if (cfg->flow_mode == 1) {
		flow = seq % 64512;
		sport = (__u16)(1024 + flow);
		src_idx = cfg->nsrc > 1 ? (__u32)((seq / 64512) % cfg->nsrc) : 0;
	} else {
		flow = cfg->nflows > 1 ? seq % cfg->nflows : 0;
		sport = (__u16)(cfg->sport_base + flow);
		src_idx = cfg->nsrc > 1 ? (__u32)(seq % cfg->nsrc) : 0;
	}
	/* Re-read the bounds for the verifier with constant offsets per family. */
	{
		__u8 *udp = data + udp_off;
		__u8 *pl = udp + 8;
		__u8 *src = data + src_off;

		if (udp + 8 + 20 > data_end || src + 4 > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(&old_src, src, 4);
		new_src = bswap32(cfg->src_base + src_idx);
		__builtin_memcpy(&old_sport, udp, 2);
		__builtin_memcpy(&old_csum, udp + 6, 2);
		__builtin_memcpy(&old_seq, pl + 4, 8);
		__builtin_memcpy(&old_ts, pl + 12, 8);
		sport = bswap16(sport);
		if (v6 || old_csum != 0) {
			acc = csum_sub_add32(0, old_src, new_src);
			acc = csum_sub_add16(acc, old_sport, sport);
			acc = csum_sub_add64(acc, old_seq, seq);
			acc = csum_sub_add64(acc, old_ts, now);
			new_csum = csum_finish(old_csum, acc);
			if (new_csum == 0)
				new_csum = 0xffff;
			__builtin_memcpy(udp + 6, &new_csum, 2);
		}
		if (!v6 && old_src != new_src) {
			__u8 *ipc = data + 14 + 10;
			__u16 ip_csum;

			if (ipc + 2 > data_end)
				return XDP_ABORTED;
			__builtin_memcpy(&ip_csum, ipc, 2);
			ip_csum = csum_finish(ip_csum, csum_sub_add32(0, old_src, new_src));
			__builtin_memcpy(ipc, &ip_csum, 2);
		}
		if (!v6) {
			/* TTL and protocol share a 16-bit word of the header checksum. */
			__u8 *ttl = data + 14 + 8;
			__u8 *ipc = data + 14 + 10;
			__u16 old_w, new_w, ip_csum;

			if (ipc + 2 > data_end)
				return XDP_ABORTED;
			__builtin_memcpy(&old_w, ttl, 2);
			ttl[0] = 64;
			__builtin_memcpy(&new_w, ttl, 2);
			if (old_w != new_w) {
				__builtin_memcpy(&ip_csum, ipc, 2);
				ip_csum = csum_finish(ip_csum, csum_sub_add16(0, old_w, new_w));
				__builtin_memcpy(ipc, &ip_csum, 2);
			}
		} else {
			data[14 + 7] = 64;
		}
		__builtin_memcpy(data, cfg->dst_mac, 6);
		__builtin_memcpy(data + 6, cfg->src_mac, 6);
		__builtin_memcpy(src, &new_src, 4);
		__builtin_memcpy(udp, &sport, 2);
		__builtin_memcpy(pl + 4, &seq, 8);
		__builtin_memcpy(pl + 12, &now, 8);
	}
	(void)ip_csum_off;
	st->sent++;
	return XDP_TX;
}

SEC("xdp")
int lab_sink(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *data_end = (void *)(long)ctx->data_end;
	__u32 pl_off, magic, slot, src_slot;
	__u64 seq, ts, now, *max_seq, *bucket;
	int intact;

	bump(SINK_ALL, 1);
	if (data + 14 > data_end)
		return XDP_PASS;
	if (data[12] == 0x08 && data[13] == 0x00) {
		if (data + 14 + 20 + 8 + 20 > data_end || data[14] != 0x45 || data[23] != 17)
			return XDP_PASS;
		pl_off = 14 + 20 + 8;
		intact = data[22] == 64;
		src_slot = data[14 + 12 + 3];
	} else if (data[12] == 0x86 && data[13] == 0xdd) {
		if (data + 14 + 40 + 8 + 20 > data_end || data[20] != 17)
			return XDP_PASS;
		pl_off = 14 + 40 + 8;
		intact = data[21] == 64;
		src_slot = data[14 + 8 + 15];
	} else {
		return XDP_PASS;
	}
	{
		__u8 *pl = data + pl_off;

		if (pl + 20 > data_end)
			return XDP_PASS;
		__builtin_memcpy(&magic, pl, 4);
		if (magic != LAB_MAGIC)
			return XDP_PASS;
		__builtin_memcpy(&seq, pl + 4, 8);
		__builtin_memcpy(&ts, pl + 12, 8);
	}
	now = bpf_ktime_get_ns();
	bump(SINK_LAB, 1);
	bump(SINK_BYTES, data_end - data);
	if (intact)
		bump(SINK_TTL_INTACT, 1);
	bucket = bpf_map_lookup_elem(&sink_by_src, &src_slot);
	if (bucket)
		*bucket += 1;
	slot = SINK_MAX_SEQ;
	max_seq = bpf_map_lookup_elem(&sink_counters, &slot);
	if (max_seq) {
		/* Slot holds max seq + 1 (0: nothing seen yet). */
		if (seq + 1 > *max_seq)
			*max_seq = seq + 1;
		else
			bump(SINK_REORDERED, 1);
	}
	if (now >= ts) {
		bump(SINK_LAT_SUM, now - ts);
		slot = lat_bucket(now - ts);
		if (slot < LAT_BUCKETS) {
			bucket = bpf_map_lookup_elem(&sink_latency, &slot);
			if (bucket)
				*bucket += 1;
		}
	}
	return XDP_DROP;
}

/* afxdp-bare's steering: every frame into the AF_XDP socket of its RX queue, or to the kernel
 * when that queue has none. Nothing is parsed or looked up: the floor under sluice's own
 * steering program (xdp-redirect/bpf). */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} bare_xsks SEC(".maps");

SEC("xdp")
int lab_xsk(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bare_xsks, ctx->rx_queue_index, XDP_PASS);
}
