// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Helpers of examples/kernel_bench.rs (compiled by it at run time, not by build.rs).
 *
 * gen_tx:     the generator. Driven by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the
 *             generator's veth: every frame is XDP_TX'd (the kernel turns that into a redirect
 *             out of the ctx's ingress device, i.e. into the node). Counts offered frames.
 * sink_count: on the sink's veth: counts every frame, and separately the benchmark frames
 *             (IPv4 UDP to BENCH_PORT) that still carry the generator's TTL (64), i.e. that
 *             were forwarded by an XDP program and not routed by the node's stack; drops all. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef BENCH_PORT
#error "compile with -DBENCH_PORT=<udp port>"
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} gen_count SEC(".maps");

/* 0: every frame; 1: benchmark frames with TTL 64. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} sink_count_map SEC(".maps");

static __always_inline void bump(void *map, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(map, &slot);

	if (v)
		*v += 1;
}

SEC("xdp")
int gen_tx(struct xdp_md *ctx)
{
	bump(&gen_count, 0);
	return XDP_TX;
}

SEC("xdp")
int sink_count(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *data_end = (void *)(long)ctx->data_end;

	bump(&sink_count_map, 0);
	/* Ethernet 14 + IPv4 20 (no options) + UDP 8 */
	if (data + 42 > data_end)
		return XDP_DROP;
	if (data[12] != 0x08 || data[13] != 0x00 || data[14] != 0x45)
		return XDP_DROP;
	if (data[22] != 64 || data[23] != 17)
		return XDP_DROP;
	if (data[36] != (BENCH_PORT >> 8) || data[37] != (BENCH_PORT & 0xff))
		return XDP_DROP;
	bump(&sink_count_map, 1);
	return XDP_DROP;
}
