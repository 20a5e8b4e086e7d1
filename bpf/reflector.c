// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * reflector.c - a network of any depth in one XDP program, for benchmarks.
 *
 * Attached to the far end of a veth, xdp_reflect answers every probe sent
 * into it the way a chain of routers and a destination would, with XDP_TX
 * (the answer leaves by the interface the probe came in on):
 *
 *   probe TTL / hop limit h < cfg_depth: ICMP Time Exceeded (11/0, ICMPv6
 *     3/0) from the responder of hop h, cfg_resp4 + h (IPv4, host-order
 *     add) or cfg_resp6 with its last two bytes += h (IPv6);
 *   h >= cfg_depth: the destination answers, from the probe's destination
 *     address: an echo reply to an ICMP echo request, else Port Unreachable
 *     (3/3, ICMPv6 1/4), so traces finish at hop cfg_depth.
 *
 * A probe is an IPv4 packet without options (ihl 5) and not a non-first
 * fragment, or an IPv6 packet without extension headers, carrying UDP, TCP
 * or an ICMP/ICMPv6 echo request with at least 8 bytes of transport header,
 * whose destination is inside cfg_dst4/cfg_dst4_mask (IPv4) or whose first 8
 * bytes match cfg_dst6_hi under cfg_dst6_mask (IPv6), and is not cfg_self4 /
 * cfg_self6 (the reflector's own link address). Everything else - ARP,
 * neighbour discovery, traffic to the reflector itself - is XDP_PASS.
 *
 * ICMP errors are built in place, like a router would: the probe's IP header
 * and first 8 bytes of transport header become the quote (RFC 792 / the
 * minimum of RFC 4443; no RFC 4884 extensions), bpf_xdp_adjust_head prepends
 * the new IP + ICMP headers (28 bytes on IPv4, 48 on IPv6) and
 * bpf_xdp_adjust_tail cuts the frame after the quote. The quoted TTL is what
 * a real path leaves in it: 1 for Time Exceeded, h - cfg_depth + 1 at the
 * destination (the quoted IPv4 header checksum is updated to match); the
 * quoted IP ID, UDP checksum, ports and TCP sequence are untouched, so
 * turnpath matches the answers as it matches real ones. Ethernet addresses
 * are swapped. The outer IPv4 header has TOS 0xc0, ID 0, DF clear, and its
 * checksum; the ICMP checksum covers the message (ICMPv6: and the
 * pseudo-header). The reply TTL / hop limit is 64 - (h - 1) for hops up to
 * 64 and 255 - (h - 1) beyond, so the return path looks as long as the
 * forward one. Echo replies are made by swapping addresses and changing the
 * type, with incremental checksum updates.
 *
 * The interface on the other end of the veth needs NAPI to receive XDP_TX
 * frames: an XDP program of its own. turnpath's eBPF engine brings one; for
 * the socket engine the prober side gets xdp_pass, which does nothing else
 * (enabling GRO gives the veth NAPI too, but on kernel 6.18 the frames are
 * still lost: veth only kicks a peer's NAPI for XDP_TX when the peer has an
 * XDP program). Counters per CPU in `stats`.
 */

#include "kernel_types.h"
#include "bpf_helpers.h"
#include "bpf_endian.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* ---- configuration (set by Go before load) ---- */

volatile const __u8 cfg_depth = 8;       /* hop of the destination, 1..255 */
volatile const __u32 cfg_resp4 = 0;      /* responder base, host order */
volatile const __u32 cfg_resp6[4] = {};  /* responder base (network order bytes) */
volatile const __u32 cfg_dst4 = 0;       /* probed prefix, host order */
volatile const __u32 cfg_dst4_mask = 0;  /* its mask, host order; 0 = no IPv4 */
volatile const __u32 cfg_self4 = 0;      /* own address, host order: passed */
volatile const __u64 cfg_dst6_hi = 0;    /* first 8 bytes of the IPv6 prefix (BE) */
volatile const __u64 cfg_dst6_mask = 0;  /* its mask (BE); 0 = no IPv6 */
volatile const __u32 cfg_self6[4] = {};  /* own address: passed */

/* Counters (`stats`, one entry, per CPU; Go sums them). */
struct refl_stats {
	__u64 time_exceeded; /* Time Exceeded sent */
	__u64 unreachable;   /* Port Unreachable sent (destination) */
	__u64 echo;          /* echo replies sent (destination) */
	__u64 passed;        /* frames not answered */
	__u64 errors;        /* adjust_head / adjust_tail failed (dropped) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct refl_stats);
} stats SEC(".maps");

#define STAT_INC(field)                                                        \
	do {                                                                   \
		__u32 __k = 0;                                                 \
		struct refl_stats *__s = bpf_map_lookup_elem(&stats, &__k);    \
		if (__s)                                                       \
			__s->field++;                                          \
	} while (0)

#define V4_QUOTE (20 + 8)          /* quoted IPv4 header + 8 bytes */
#define V4_ERR (20 + 8 + V4_QUOTE) /* IPv4 + ICMP + quote = 56 */
#define V6_QUOTE (40 + 8)
#define V6_MSG (8 + V6_QUOTE)    /* ICMPv6 message = 56 */
#define V6_ERR (40 + V6_MSG)     /* 96 */

/* ---- checksums (ones' complement, RFC 1071 / 1624) ---- */

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Sum of n 16-bit words at p, as stored (the fold is byte-order neutral). */
#define SUM_WORDS(acc, p, n)                                                   \
	do {                                                                   \
		const __u16 *__w = (const __u16 *)(p);                         \
		_Pragma("unroll") for (int __i = 0; __i < (n); __i++)         \
			acc += __w[__i];                                       \
	} while (0)

/* Incremental update of a checksum for one 16-bit word changing (RFC 1624). */
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u32 s = (__u16)~check + (__u32)(__u16)~old + new;
	return csum_fold(s);
}

static __always_inline __u8 reply_ttl(__u8 hop)
{
	if (hop == 0)
		hop = 1;
	return hop <= 64 ? 64 - (hop - 1) : 255 - (hop - 1);
}

/*
 * Turn the frame into an answer of `len` bytes: `grow` bytes of new headers in
 * front of the probe's IP header (which becomes the quote), cut after the
 * quote, Ethernet addresses swapped. Returns the new Ethernet header with
 * `len` bytes checked, or NULL (the frame is then dropped: it is no longer
 * what came in).
 */
static __always_inline struct ethhdr *reframe(struct xdp_md *ctx, int grow,
					      int len, const unsigned char *src,
					      const unsigned char *dst,
					      __u16 proto)
{
	void *data, *end;
	struct ethhdr *eth;

	if (bpf_xdp_adjust_head(ctx, -grow))
		return 0;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (bpf_xdp_adjust_tail(ctx, len - (int)(end - data)))
		return 0;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + len > end)
		return 0;
	eth = data;
	__builtin_memcpy(eth->h_dest, src, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dst, ETH_ALEN);
	eth->h_proto = bpf_htons(proto);
	return eth;
}

/* ---- IPv4 ---- */

static __always_inline int v4_echo(struct ethhdr *eth, struct iphdr *ip,
				   struct icmphdr *icmp, __u8 hop)
{
	unsigned char mac[ETH_ALEN];
	__be32 a = ip->saddr;
	__u32 s = 0;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	ip->saddr = ip->daddr;
	ip->daddr = a;
	ip->ttl = reply_ttl(hop);
	ip->check = 0;
	SUM_WORDS(s, ip, 10);
	ip->check = csum_fold(s);
	icmp->type = ICMP_ECHOREPLY;
	icmp->checksum = csum_replace2(icmp->checksum, bpf_htons(ICMP_ECHO << 8), 0);
	STAT_INC(echo);
	return XDP_TX;
}

static __always_inline int v4_error(struct xdp_md *ctx, __u8 hop, int dest)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	unsigned char smac[ETH_ALEN], dmac[ETH_ALEN];
	__be32 to, from;
	__u16 oldw, neww;
	__u8 qttl;
	__u32 s;

	if ((void *)ip + V4_QUOTE > end)
		return XDP_PASS;
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	to = ip->saddr;
	from = dest ? ip->daddr : bpf_htonl(cfg_resp4 + hop);

	/* The quote: TTL as the last router / the destination saw it. */
	qttl = dest ? hop - cfg_depth + 1 : 1;
	oldw = *(__u16 *)&ip->ttl;
	ip->ttl = qttl;
	neww = *(__u16 *)&ip->ttl;
	ip->check = csum_replace2(ip->check, oldw, neww);

	eth = reframe(ctx, 20 + 8, ETH_HLEN + V4_ERR, smac, dmac, ETH_P_IP);
	if (!eth)
		goto fail;

	ip = (void *)(eth + 1);
	*(__u8 *)ip = 0x45; /* version 4, ihl 5 */
	ip->tos = 0xc0;
	ip->tot_len = bpf_htons(V4_ERR);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = reply_ttl(hop);
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = from;
	ip->daddr = to;
	s = 0;
	SUM_WORDS(s, ip, 10);
	ip->check = csum_fold(s);

	struct icmphdr *icmp = (void *)(ip + 1);
	icmp->type = dest ? ICMP_DEST_UNREACH : ICMP_TIME_EXCEEDED;
	icmp->code = dest ? 3 : 0;
	icmp->checksum = 0;
	icmp->un.gateway = 0;
	s = 0;
	SUM_WORDS(s, icmp, (8 + V4_QUOTE) / 2);
	icmp->checksum = csum_fold(s);

	if (dest)
		STAT_INC(unreachable);
	else
		STAT_INC(time_exceeded);
	return XDP_TX;

fail:
	STAT_INC(errors);
	return XDP_DROP;
}

static __always_inline int reflect4(struct xdp_md *ctx, struct ethhdr *eth,
				    void *end)
{
	struct iphdr *ip = (void *)(eth + 1);
	__u32 daddr;
	__u8 hop;
	int dest;

	if ((void *)ip + V4_QUOTE > end)
		return XDP_PASS;
	if (ip->version != 4 || ip->ihl != 5 ||
	    (ip->frag_off & bpf_htons(IP_OFFSET)))
		return XDP_PASS;
	daddr = bpf_ntohl(ip->daddr);
	if (cfg_dst4_mask == 0 || (daddr & cfg_dst4_mask) != cfg_dst4 ||
	    daddr == cfg_self4)
		return XDP_PASS;
	hop = ip->ttl ? ip->ttl : 1;
	dest = hop >= cfg_depth;

	if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *icmp = (void *)(ip + 1);

		if (icmp->type != ICMP_ECHO || icmp->code != 0)
			return XDP_PASS;
		if (dest)
			return v4_echo(eth, ip, icmp, hop);
	} else if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP) {
		return XDP_PASS;
	}
	return v4_error(ctx, hop, dest);
}

/* ---- IPv6 ---- */

static __always_inline int v6_echo(struct ethhdr *eth, struct ipv6hdr *ip6,
				   struct icmp6hdr *icmp6, __u8 hop)
{
	unsigned char mac[ETH_ALEN];
	struct in6_addr a = ip6->saddr;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	ip6->saddr = ip6->daddr;
	ip6->daddr = a;
	ip6->hop_limit = reply_ttl(hop);
	/* The pseudo-header sum does not change when the addresses swap. */
	icmp6->icmp6_type = ICMPV6_ECHO_REPLY;
	icmp6->icmp6_cksum = csum_replace2(icmp6->icmp6_cksum,
					   bpf_htons(ICMPV6_ECHO_REQUEST << 8),
					   bpf_htons(ICMPV6_ECHO_REPLY << 8));
	STAT_INC(echo);
	return XDP_TX;
}

static __always_inline int v6_error(struct xdp_md *ctx, __u8 hop, int dest)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	unsigned char smac[ETH_ALEN], dmac[ETH_ALEN];
	struct in6_addr to, from;
	__u32 s;

	if ((void *)ip6 + V6_QUOTE > end)
		return XDP_PASS;
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	to = ip6->saddr;
	if (dest) {
		from = ip6->daddr;
	} else {
		__u16 last;

		/* Volatile reads: the loader sets these after compilation. */
		from.in6_u.u6_addr32[0] = cfg_resp6[0];
		from.in6_u.u6_addr32[1] = cfg_resp6[1];
		from.in6_u.u6_addr32[2] = cfg_resp6[2];
		from.in6_u.u6_addr32[3] = cfg_resp6[3];
		last = bpf_ntohs(from.in6_u.u6_addr16[7]) + hop;
		from.in6_u.u6_addr16[7] = bpf_htons(last);
	}
	ip6->hop_limit = dest ? hop - cfg_depth + 1 : 1;

	eth = reframe(ctx, 40 + 8, ETH_HLEN + V6_ERR, smac, dmac, ETH_P_IPV6);
	if (!eth)
		goto fail;

	ip6 = (void *)(eth + 1);
	*(__be32 *)ip6 = bpf_htonl(6 << 28); /* version, no class, no label */
	ip6->payload_len = bpf_htons(V6_MSG);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = reply_ttl(hop);
	ip6->saddr = from;
	ip6->daddr = to;

	struct icmp6hdr *icmp6 = (void *)(ip6 + 1);
	icmp6->icmp6_type = dest ? ICMPV6_DEST_UNREACH : ICMPV6_TIME_EXCEED;
	icmp6->icmp6_code = dest ? 4 : 0;
	icmp6->icmp6_cksum = 0;
	icmp6->icmp6_dataun.un_data32[0] = 0;
	/* Pseudo-header: addresses, upper-layer length, next header. */
	s = bpf_htons(V6_MSG) + bpf_htons(IPPROTO_ICMPV6);
	SUM_WORDS(s, &ip6->saddr, 16);
	SUM_WORDS(s, icmp6, V6_MSG / 2);
	icmp6->icmp6_cksum = csum_fold(s);

	if (dest)
		STAT_INC(unreachable);
	else
		STAT_INC(time_exceeded);
	return XDP_TX;

fail:
	STAT_INC(errors);
	return XDP_DROP;
}

static __always_inline int is_self6(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == cfg_self6[0] &&
	       a->in6_u.u6_addr32[1] == cfg_self6[1] &&
	       a->in6_u.u6_addr32[2] == cfg_self6[2] &&
	       a->in6_u.u6_addr32[3] == cfg_self6[3];
}

static __always_inline int reflect6(struct xdp_md *ctx, struct ethhdr *eth,
				    void *end)
{
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	__u64 hi;
	__u8 hop;
	int dest;

	if ((void *)ip6 + V6_QUOTE > end)
		return XDP_PASS;
	if (ip6->version != 6 || cfg_dst6_mask == 0)
		return XDP_PASS;
	__builtin_memcpy(&hi, &ip6->daddr, 8);
	if ((hi & cfg_dst6_mask) != cfg_dst6_hi)
		return XDP_PASS;
	if (is_self6(&ip6->daddr))
		return XDP_PASS;
	hop = ip6->hop_limit ? ip6->hop_limit : 1;
	dest = hop >= cfg_depth;

	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		struct icmp6hdr *icmp6 = (void *)(ip6 + 1);

		if (icmp6->icmp6_type != ICMPV6_ECHO_REQUEST ||
		    icmp6->icmp6_code != 0)
			return XDP_PASS;
		if (dest)
			return v6_echo(eth, ip6, icmp6, hop);
	} else if (ip6->nexthdr != IPPROTO_UDP && ip6->nexthdr != IPPROTO_TCP) {
		return XDP_PASS;
	}
	return v6_error(ctx, hop, dest);
}

SEC("xdp")
int xdp_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	int verdict = XDP_PASS;

	if ((void *)(eth + 1) > end)
		goto pass;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		verdict = reflect4(ctx, eth, end);
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		verdict = reflect6(ctx, eth, end);
	if (verdict != XDP_PASS)
		return verdict;
pass:
	STAT_INC(passed);
	return XDP_PASS;
}

/* For the prober's side of the veth when it has no XDP program of its own:
 * its presence makes veth receive the reflector's XDP_TX frames. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
