// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * gen.c - the in-kernel probe generator (issue 18): one BPF_PROG_RUN with
 * BPF_F_TEST_XDP_LIVE_FRAMES sends a whole batch, the kernel running xdp_gen
 * once per frame (repeat = the batch's size) on a frame of its own page pool.
 *
 * Go builds the frames (Ethernet header and the very IP packet the other send
 * methods write) into gen_frames, memory-mapped: slot i holds frame i of the
 * batch and its `sent` key. xdp_gen copies slot gen_next++ into the frame,
 * records the probe's send time in `sent` (the engine's map: the generator's
 * is replaced by it at load) - the frames never pass TC egress, so the
 * generator takes the timestamp itself, just before handing the frame over -
 * and returns XDP_TX, which live mode turns into a transmit on the interface
 * the run names (ctx ingress_ifindex): no skb, no qdisc, no TC.
 */

#include "kernel_types.h"
#include "bpf_helpers.h"
#include "turnpath.h"
#include "sent.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define GEN_SLOTS 256
#define GEN_FRAME 256 /* the largest frame: bigger probes use the other methods */

/* linux/bpf.h, not in the trimmed kernel_types.h */
#ifndef BPF_F_MMAPABLE
#define BPF_F_MMAPABLE (1U << 10)
#endif

struct gen_slot {
	__u16 len;             /*   0 frame length */
	__u16 pad;             /*   2 */
	struct probe_key key;  /*   4 the probe's `sent` key */
	__u8 frame[GEN_FRAME]; /*  24 */
};

/* The batch's frames, written by Go through a memory mapping. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GEN_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct gen_slot);
} gen_frames SEC(".maps");

/*
 * The next slot to send, modulo GEN_SLOTS: Go fills the slots from where the
 * last run stopped (no write of its own per run), and sets it again only
 * after a failed run.
 */
__u32 gen_next;

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	__u32 i = gen_next++ & (GEN_SLOTS - 1);
	struct gen_slot *s = bpf_map_lookup_elem(&gen_frames, &i);
	__u32 len;
	int cur;

	if (!s)
		return XDP_ABORTED;
	len = s->len;
	if (len < 34 || len > GEN_FRAME)
		return XDP_ABORTED;
	cur = bpf_xdp_get_buff_len(ctx); /* a scalar: no packet pointer arithmetic */
	if (bpf_xdp_adjust_tail(ctx, (int)len - cur))
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, s->frame, len))
		return XDP_ABORTED;
	sent_put(&s->key, bpf_ktime_get_ns());
	return XDP_TX;
}
