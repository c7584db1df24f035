// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bare_redirect: the benchmark baseline. Every IPv4 frame (untagged Ethernet) is redirected to
 * bare_devmap[ingress ifindex] without touching a byte; a frame with no entry, and everything
 * that is not IPv4, is passed to the stack. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ingress ifindex -> target ifindex */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1 << 16);
} bare_devmap SEC(".maps");

SEC("xdp")
int bare_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data;

	if ((void *)(eth + 14) > data_end)
		return XDP_PASS;
	if (eth[12] != 0x08 || eth[13] != 0x00)
		return XDP_PASS;
	return bpf_redirect_map(&bare_devmap, ctx->ingress_ifindex, XDP_PASS);
}
