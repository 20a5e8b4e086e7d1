// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * turnpath.c - kernel half of turnpath: TC egress timestamping and XDP reply
 * matching for Paris-style traceroute probes. See DESIGN.md for the contract.
 *
 * TC egress (tc_egress for a legacy clsact/cls_bpf attach, tcx_egress for a
 * TCX link; one inlined body) looks at every outgoing frame, never changes or
 * drops it, and recognises probes by protocol (cfg_proto) + source "port" in
 * [cfg_sport_lo, cfg_sport_hi] (+ destination port == cfg_dport for UDP/TCP):
 *
 *   probe              key.sport          key.id
 *   UDP over IPv4      UDP source port    IP ID
 *   UDP over IPv6      UDP source port    UDP checksum
 *   TCP SYN (no ACK)   TCP source port    seq >> 16
 *   ICMP echo request  flow base F        ICMP sequence number
 *
 * ICMP echo (DESIGN.md "ICMP echo, bit by bit"): type 8 / 128, code 0,
 * identifier I at bytes 4-5, sequence = probe id at bytes 6-7. Go picks the
 * flow's base F from the sport range and sets I = F - id (F >= id) else
 * F - id - 1 (mod 2^16), so that the ones' complement sum
 *
 *   s = (u32)I + seq; if (s > 0xffff) s -= 0xffff;   (s == F)
 *
 * gives F back. An echo request (TC egress), echo reply (XDP) or the echo
 * request quoted in an ICMP error (XDP) is a probe iff s is in the sport range
 * and seq is a valid probe id ((seq & 0xff) != 0 && (seq >> 8) != 0xff); the
 * key is {daddr, sport = s, id = seq}. F plays the role of the source port
 * (event sport); the identifier is reported as `dport`. The checksum is not
 * looked at (it is constant per flow, which is the point of the scheme, but
 * depends on the echo data). cfg_proto 1 and 58 both mean "ICMP echo probes"
 * (ICMP on IPv4, ICMPv6 on IPv6).
 *
 * A probe-shaped packet is this run's probe only when (own_probe) its TTL is
 * the one its id carries, on IPv4 UDP its IP ID equals its checksum, and,
 * where the probes carry the run's nonce and a flowtag (cfg_nonce_off: STUN
 * transaction id, echo data), the nonce is the run's and the flowtag is
 * registered in `flows` for exactly this (daddr, sport): other programs and
 * other turnpath runs send from the same ports too. For a probe of this run it
 * writes sent[{daddr, sport, id}] = bpf_ktime_get_ns(). IPv4 destinations are
 * stored IPv4-mapped. Non-first IPv4 fragments and IPv6 packets with
 * extension headers are not probes.
 *
 * XDP (xdp_rx) looks at every received frame and matches, in this order:
 *  (a) ICMP Time Exceeded (11) / Destination Unreachable (3) and ICMPv6 Time
 *      Exceeded (3) / Destination Unreachable (1) / Packet Too Big (2) whose
 *      quoted IP header + first 8 bytes of transport are a probe (same rules
 *      as TC egress, applied to the quote: any IPv4 options in the quote are
 *      skipped via ihl; a quote of exactly IP header + 8 bytes is enough).
 *      The event carries the quoted fields and, when the RFC 4884 length
 *      field (ICMP byte 5 x 4 / ICMPv6 byte 4 x 8) is non-zero, up to 128
 *      bytes of the extension structure that follows the original datagram
 *      field (bounded by the IP length, copied in 32-bit units).
 *      Fragmentation Needed (ICMP 3 code 4, for a probe sent with DF) and
 *      ICMPv6 Packet Too Big are TP_KIND_PKT_TOO_BIG, with the next-hop MTU
 *      in icmp_info (ICMP bytes 6..7, RFC 1191 / ICMPv6 bytes 4..7, RFC
 *      8201). ICMPv6 PTB has no RFC 4884 length field (bytes 4..7 are the
 *      MTU) and quotes as much of the probe as fits in 1280 bytes.
 *  (b) ICMP echo reply (0) / ICMPv6 echo reply (129), code 0: identifier and
 *      sequence are echoed unchanged, so the same rule as for the request
 *      applies: s = identifier +' sequence in the sport range, valid id;
 *      key = {reply source, s, sequence}.
 *  (c) STUN answers: UDP from cfg_dport to a port in the sport range, magic
 *      cookie 0x2112A442 at offset 4, transaction id bytes 0..3 == cfg_nonce
 *      (big endian; cfg_nonce 0 disables this). Bytes 4..7 are the flowtag,
 *      resolved through `flows` to (target, sport); bytes 8..9 are the probe
 *      id. The responder may be any address (e.g. another address of the
 *      server). The STUN message, from its header, is copied into the
 *      event's ext[] like an RFC 4884 extension (below): at most 128 bytes,
 *      bounded by the UDP length and the frame end, in 32-bit units (a
 *      trailing 1..3 bytes - never part of a well-formed STUN message,
 *      whose length is a multiple of 4 - are dropped); TP_F_EXT_TRUNC when
 *      the UDP payload is longer than 128 bytes (Go then parses only the
 *      attributes that are complete in ext[]).
 *  (d) TCP SYN-ACK or RST(+ACK) from cfg_dport to a port in the sport range:
 *      key.id = (ack - 1) >> 16.
 * A reply is this run's when `sent` has its probe or it carries the run's
 * nonce (a STUN answer; an echo reply; an ICMP error whose quote reaches the
 * nonce: Linux routers quote up to 576 / 1280 bytes). A quote or echo that
 * shows another nonce is someone else's (another run sending the same flow):
 * passed, not reported, even when `sent` has the same key. For a reply of
 * ours it writes one `struct tp_event` to the `events` ring buffer (tx_ns,
 * or 0 and TP_F_NO_TX when `sent` lost the entry; TP_F_NONCE when the nonce
 * was seen). Every copy of a reply is reported: duplicates produce duplicate
 * events (the `sent` entry is not consumed), Go de-duplicates.
 *
 * Verdict: with cfg_drop set, a reply of ours is dropped when it carries the
 * nonce, or when its quote is consistent with our probe (IPv4 UDP: quoted IP
 * ID == quoted checksum). Everything else passes untouched, so other
 * applications and other runs get their replies. A match whose event could
 * not be written (ring buffer full) is passed too. A Packet Too Big of ours
 * is dropped like any other error of ours: the kernel then does not lower
 * its path MTU to the destination because of a probe that was deliberately
 * big; other traffic learns the path MTU from its own packets.
 *
 * The same matching runs at XDP (xdp_rx) or, for a run that finds the
 * interface's XDP hook held by another program, at TCX ingress
 * (tcx_ingress): TCX chains programs, so any number of runs match side by
 * side, each taking only its own replies.
 * Everything else - outer IPv4 fragments, IPv6 extension headers, VLAN
 * stacks deeper than one tag (one 802.1Q/802.1ad tag is parsed), truncated
 * frames, other traffic - is XDP_PASS, untouched.
 *
 * Checksums of received packets are not verified (the kernel does that later
 * for what we pass). Only Ethernet framing is supported.
 *
 * Kernel: >= 5.8 (ring buffer; bounded loops), XDP via bpf_link >= 5.9, TCX
 * >= 6.6 (else the legacy clsact attach). Built with -mcpu=v3. Headers are
 * bpf/headers only (-nostdinc).
 */

#include "kernel_types.h"
#include "bpf_helpers.h"
#include "bpf_endian.h"
#include "turnpath.h"
#include "sent.h"

/* linux/icmp.h, not in the trimmed kernel_types.h */
#ifndef ICMP_FRAG_NEEDED
#define ICMP_FRAG_NEEDED 4
#endif

char __license[] SEC("license") = "Dual BSD/GPL";

/* ---- configuration (written by Go into .bss before the programs are attached) ---- */

/*
 * The run's configuration (struct tp_cfg in turnpath.h). It is a mutable
 * global, not `volatile const`s, so one loaded and verified set of programs
 * serves run after run: Go keeps loaded programs and maps pinned in bpffs
 * (loader/pin.go) and each run writes its own configuration here before it
 * attaches. Zero (the state before Go writes it) matches nothing: cfg.proto 0
 * is no probe protocol.
 *
 * cfg.nonce_off is the offset of the run's 4-byte nonce from the start of
 * the transport header, 0 when the probes carry none: 16 for UDP probes with
 * a STUN/TURN/MS-TURN payload (8-byte UDP header + transaction id bytes
 * 0..3), 8 for ICMP echo probes (echo data bytes 0..3). TC egress records a
 * probe only when the nonce is there; an ICMP error whose quote reaches it is
 * ours only when it matches.
 *
 * cfg.start_ns is bpf_ktime_get_ns() when the run began: a `sent` entry
 * older than that was written for an earlier run of the same pinned maps and
 * counts as absent.
 *
 * Not volatile: the compiler may read a field once per invocation (the
 * verifier then tracks one bounds-checked value, e.g. cfg.nonce_off), and Go
 * changes it only while the programs are detached.
 */
struct tp_cfg cfg;

#define cfg_proto (cfg.proto)
#define cfg_sport_lo (cfg.sport_lo)
#define cfg_sport_hi (cfg.sport_hi)
#define cfg_dport (cfg.dport)
#define cfg_nonce (cfg.nonce)
#define cfg_drop (cfg.drop)
#define cfg_nonce_off (cfg.nonce_off)

/* ---- maps ---- */

/*
 * STUN flowtag -> (target, sport); written by Go (SetFlow). An array indexed
 * by tag & 0xffff whose value names its tag and run (flow_of): no clearing
 * between the runs of a pinned slot (a run that registered 65536 flows and
 * was killed would otherwise cost the next one 65536 deletions), and a plain
 * array lookup per packet. Go refuses a tag whose slot a live flow of the run
 * holds (65536 flows at once at most, as before).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct flow_val);
} flows SEC(".maps");

/*
 * Matched replies, 4 MiB (~17000 events). The value type is only there to put
 * struct tp_event into BTF for bpf2go; cilium/ebpf drops it when creating the
 * map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
	__type(value, struct tp_event);
} events SEC(".maps");

/* Counters for tests and benchmarks. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tp_stats);
} stats SEC(".maps");

#define STAT_INC(field)                                                        \
	do {                                                                   \
		__u32 __k = 0;                                                 \
		struct tp_stats *__s = bpf_map_lookup_elem(&stats, &__k);      \
		if (__s)                                                       \
			__s->field++;                                          \
	} while (0)

/* ---- shared helpers ---- */

/* The first 8 bytes of a transport header as four big-endian 16-bit words. */
struct l4words {
	__be16 w[4];
};

/* STUN header (RFC 5389) with turnpath's transaction id layout. */
struct stun_hdr {
	__be16 type;
	__be16 len;
	__be32 cookie;
	__be32 nonce;
	__be32 flowtag;
	__be16 id;
	__be16 steering;
};

#define STUN_MAGIC_COOKIE 0x2112A442

struct probe_match {
	__u16 sport;
	__u16 dport;
	__u16 id;
	__u16 csum;
};

static __always_inline int icmp_mode(void)
{
	return cfg_proto == IPPROTO_ICMP || cfg_proto == IPPROTO_ICMPV6;
}

/* The IP protocol / next header a probe of this family carries. */
static __always_inline __u8 probe_l4proto(int v6)
{
	if (icmp_mode())
		return v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	return cfg_proto;
}

static __always_inline int in_range(__u16 port)
{
	return port >= cfg_sport_lo && port <= cfg_sport_hi;
}

/* The run's flow of a flowtag, or NULL. */
static __always_inline struct flow_val *flow_of(__u32 tag)
{
	__u32 idx = tag & 0xffff;
	struct flow_val *fv;

	if (!tag)
		return 0;
	fv = bpf_map_lookup_elem(&flows, &idx);
	if (!fv || fv->tag != tag || fv->gen != cfg.start_ns)
		return 0;
	return fv;
}

/* A probe's send time (XDP), 0 when `sent` does not have it (overwritten,
 * never sent by this run, or an earlier run's: older than cfg.start_ns). */
static __always_inline __u64 sent_get(const struct probe_key *k)
{
	__u32 idx = sent_set_of(k);
	struct sent_set *set = bpf_map_lookup_elem(&sent, &idx);
	int i;

	if (!set)
		return 0;
#pragma unroll
	for (i = 0; i < SENT_WAYS; i++) {
		if (key_eq(&set->way[i].key, k)) {
			__u64 ts = READ_ONCE_U64(set->way[i].ts);

			if (!key_eq(&set->way[i].key, k) || ts < cfg.start_ns)
				return 0;
			return ts;
		}
	}
	return 0;
}

static __always_inline void set_v4mapped(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* A probe id as Go makes it: ttl | attempt << 8, ttl != 0, attempt != 255. */
static __always_inline int id_valid(__u16 id)
{
	return (id & 0xff) != 0 && (id >> 8) != 0xff;
}

/*
 * ICMP echo identification (request, reply or quoted request): the flow base
 * F = ident +' seq (ones' complement sum, end-around carry). Returns 1 and
 * sets *base when F is in the sport range and seq is a valid probe id.
 */
static __always_inline int echo_base(__u16 ident, __u16 seq, __u16 *base)
{
	__u32 s = (__u32)ident + seq;

	if (s > 0xffff)
		s -= 0xffff;
	if (s < cfg_sport_lo || s > cfg_sport_hi || !id_valid(seq))
		return 0;
	*base = s;
	return 1;
}

/*
 * Is this transport header (the first 8 bytes, as sent or as quoted) a probe?
 * ipid is the IPv4 ID (unused on IPv6). Fills m on success.
 */
static __always_inline int probe_l4(const struct l4words *l4, int v6,
				    __u16 ipid, struct probe_match *m)
{
	__u16 w0 = bpf_ntohs(l4->w[0]);
	__u16 w1 = bpf_ntohs(l4->w[1]);
	__u16 w2 = bpf_ntohs(l4->w[2]);
	__u16 w3 = bpf_ntohs(l4->w[3]);

	if (icmp_mode()) {
		/* type/code, checksum, identifier, sequence */
		__u16 base;

		if (w0 != (v6 ? (ICMPV6_ECHO_REQUEST << 8) : (ICMP_ECHO << 8)))
			return 0;
		if (!echo_base(w2, w3, &base))
			return 0;
		m->sport = base;
		m->dport = w2;
		m->id = w3;
		m->csum = w1;
		return 1;
	}

	/* UDP: sport, dport, length, checksum; TCP: sport, dport, seq */
	if (!in_range(w0) || w1 != cfg_dport)
		return 0;
	m->sport = w0;
	m->dport = w1;
	if (cfg_proto == IPPROTO_TCP) {
		m->id = w2; /* seq >> 16 */
		m->csum = 0;
	} else {
		m->id = v6 ? w3 : ipid;
		m->csum = w3;
	}
	return 1;
}

/* ---- TC egress ---- */

/*
 * Is this probe-shaped packet one of this run's probes? Another turnpath run
 * (or any program) may send from the same port range to the same port; only
 * what this run sent may enter `sent`, or its replies would be taken from
 * their owner. Checked, cheapest first:
 *  - the TTL is the one the probe id carries (id = ttl | attempt << 8);
 *  - IPv4 UDP: the IP ID equals the UDP checksum (both are the id);
 *  - where the probe carries the run's nonce and a flowtag (cfg_nonce_off),
 *    the nonce is there and the flowtag is registered for this flow
 *    (destination, source port / echo base) in `flows`.
 */
static __always_inline int own_probe(struct __sk_buff *skb,
				     const struct probe_key *key,
				     const struct probe_match *m, __u32 l4off,
				     __u8 ttl, int v6)
{
	struct flow_val *fv;
	struct {
		__be32 nonce;
		__be32 tag;
	} t;
	__u32 tag;

	if ((m->id & 0xff) != ttl)
		return 0;
	if (!v6 && cfg_proto == IPPROTO_UDP && m->csum != m->id)
		return 0;
	if (!cfg_nonce || !cfg_nonce_off)
		return 1;
	/* nonce | flowtag, in the STUN transaction id or the echo data */
	if (bpf_skb_load_bytes(skb, l4off + cfg_nonce_off, &t, sizeof(t)))
		return 0;
	if (t.nonce != bpf_htonl(cfg_nonce))
		return 0;
	tag = bpf_ntohl(t.tag);
	fv = flow_of(tag);
	if (!fv || fv->sport != m->sport)
		return 0;
	return *(__u64 *)&fv->daddr[0] == *(__u64 *)&key->daddr[0] &&
	       *(__u64 *)&fv->daddr[8] == *(__u64 *)&key->daddr[8];
}

static __always_inline void tc_record(struct __sk_buff *skb)
{
	struct probe_key key = {};
	struct probe_match m;
	struct l4words l4;
	__u32 off = ETH_HLEN, l4off;
	__be16 proto = skb->protocol;
	__u16 ipid = 0;
	__u8 ttl;
	int v6;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 2, &proto, sizeof(proto)))
			return;
		off += sizeof(struct vlan_hdr);
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return;
		if (ip.version != 4 || ip.ihl < 5 ||
		    ip.protocol != probe_l4proto(0))
			return;
		if (ip.frag_off & bpf_htons(IP_OFFSET))
			return;
		l4off = off + ip.ihl * 4;
		ipid = bpf_ntohs(ip.id);
		ttl = ip.ttl;
		set_v4mapped(key.daddr, ip.daddr);
		v6 = 0;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return;
		if (ip6.version != 6 || ip6.nexthdr != probe_l4proto(1))
			return;
		l4off = off + sizeof(ip6);
		ttl = ip6.hop_limit;
		__builtin_memcpy(key.daddr, &ip6.daddr, 16);
		v6 = 1;
	} else {
		return;
	}

	if (bpf_skb_load_bytes(skb, l4off, &l4, sizeof(l4)))
		return;
	if (!probe_l4(&l4, v6, ipid, &m))
		return;
	if (!own_probe(skb, &key, &m, l4off, ttl, v6)) {
		STAT_INC(tx_foreign);
		return;
	}
	if (cfg_proto == IPPROTO_TCP) {
		/* Only the SYN is a probe (not a later RST from the same port). */
		__u8 flags;

		if (bpf_skb_load_bytes(skb, l4off + 13, &flags, 1))
			return;
		if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) !=
		    TCP_FLAG_SYN)
			return;
	}

	key.sport = m.sport;
	key.id = m.id;
	if (sent_put(&key, bpf_ktime_get_ns()))
		STAT_INC(tx_update_err);
	else
		STAT_INC(tx_seen);
}

/* Legacy clsact + cls_bpf (direct-action): TC_ACT_UNSPEC lets the packet
 * continue to any later filter and then out, exactly like no filter. */
SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	tc_record(skb);
	return TC_ACT_UNSPEC;
}

/* TCX link (kernel >= 6.6): TCX_NEXT hands over to the next program. */
SEC("tcx/egress")
int tcx_egress(struct __sk_buff *skb)
{
	tc_record(skb);
	return TCX_NEXT;
}

/* ---- XDP ---- */

/* Match state carried from the parsers to finish(). */
struct rx {
	struct tp_event ev;
	__u8 *ext;       /* RFC 4884 extension structure / STUN message, or NULL */
	__u32 ext_limit; /* bytes of it inside the IP packet / UDP datagram */
	int sure;        /* carries the run's nonce: ours even without `sent` */
	int plausible;   /* consistent with our probe where the nonce is not seen */
};

/* quote_nonce results */
#define NONCE_UNSEEN 0   /* the run has no nonce, or the bytes are not there */
#define NONCE_MATCH 1    /* the run's nonce */
#define NONCE_FOREIGN -1 /* another value: someone else's packet */

/*
 * The nonce in a probe as it came back (quoted in an ICMP error, or echoed):
 * l4 is its transport header, limit the end of the bytes that are really the
 * probe (quoted IP length, outer IP length, frame end: trailing padding is
 * not). All zeros counts as unseen: RFC 4884 zero-pads a short original
 * datagram field, and a run's nonce is never 0.
 */
static __always_inline int quote_nonce(void *l4, void *limit, void *end)
{
	__u8 *p;
	__u32 n;

	if (!cfg_nonce || !cfg_nonce_off || cfg_nonce_off > 64)
		return NONCE_UNSEEN;
	p = (__u8 *)l4 + cfg_nonce_off;
	if ((void *)(p + 4) > end || (void *)(p + 4) > limit)
		return NONCE_UNSEEN;
	__builtin_memcpy(&n, p, 4);
	if (n == 0)
		return NONCE_UNSEEN;
	return n == bpf_htonl(cfg_nonce) ? NONCE_MATCH : NONCE_FOREIGN;
}

static __always_inline void ev_init(struct rx *rx, __u8 kind, int v6)
{
	__builtin_memset(&rx->ev, 0, sizeof(rx->ev));
	rx->ext = 0;
	rx->ext_limit = 0;
	rx->sure = 0;
	rx->plausible = 0;
	rx->ev.kind = kind;
	rx->ev.family = v6 ? 6 : 4;
	rx->ev.proto = probe_l4proto(v6);
}

static __always_inline void ev_set_match(struct tp_event *ev,
					 const struct probe_match *m)
{
	ev->sport = m->sport;
	ev->dport = m->dport;
	ev->id = m->id;
}

/*
 * Copy the extension structure (ICMP errors) or the STUN message (STUN
 * answers) into ev->ext: at most TP_EXT_MAX bytes, up to the end of the IP
 * packet / UDP datagram (`limit` bytes) and of the frame, in 8-byte words
 * plus one 4-byte word (RFC 4884 extension headers and objects are multiples
 * of 32 bits; a stray trailing 1..3 bytes are not copied). Bounded loop;
 * every access is checked against data_end.
 */
static __always_inline void copy_ext(struct tp_event *ev, __u8 *p,
				     __u32 limit, void *end)
{
	__u32 n = 0;
	int i;

	for (i = 0; i < TP_EXT_MAX / 8; i++) {
		if (n + 8 > limit || (void *)(p + 8) > end)
			break;
		*(__u64 *)&ev->ext[n] = *(__u64 *)p;
		p += 8;
		n += 8;
	}
	if (n < TP_EXT_MAX && n + 4 <= limit && (void *)(p + 4) <= end) {
		*(__u32 *)&ev->ext[n] = *(__u32 *)p;
		p += 4;
		n += 4;
	}
	if (n >= TP_EXT_MAX && limit > TP_EXT_MAX && (void *)(p + 1) <= end)
		ev->flags |= TP_F_EXT_TRUNC;
	ev->ext_len = n;
}

/* bpf_ringbuf_query: bytes not yet consumed */
#define TP_RB_AVAIL_DATA 0

/*
 * Wakeups of the Go reader: each one is an irq_work (a self-interrupt) and a
 * thread woken, more than the rest of a match costs. Without flags the kernel
 * wakes the reader whenever it commits into a ring the reader had emptied.
 * While Go drains on its own (cfg.rb_quiet: from its sending loop and on a
 * short timer) no event wakes it, until the ring is half full.
 */
static __always_inline __u64 rb_flags(void)
{
	if (!cfg.rb_quiet)
		return 0;
	if (bpf_ringbuf_query(&events, TP_RB_AVAIL_DATA) > (1 << 21))
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/*
 * Emit the event of a match and decide its fate: 1 drop, 0 pass. A reply is
 * ours when `sent` has its probe or it carries the run's nonce; anything
 * else is passed untouched and not reported (another run's or another
 * program's). Only replies that are ours and consistent with our probe are
 * dropped (cfg_drop).
 */
static __always_inline int finish(struct rx *rx, void *end)
{
	struct tp_event *ev = &rx->ev;
	struct probe_key key = {};
	struct tp_stats *s;
	__u32 zero = 0;
	__u64 tx;

	__builtin_memcpy(key.daddr, ev->target, 16);
	key.sport = ev->sport;
	key.id = ev->id;
	tx = sent_get(&key);
	if (tx) {
		ev->tx_ns = tx;
	} else if (!rx->sure) {
		STAT_INC(rx_foreign);
		return 0;
	} else {
		ev->flags |= TP_F_NO_TX;
	}
	if (rx->sure)
		ev->flags |= TP_F_NONCE;

	if (rx->ext)
		copy_ext(ev, rx->ext, rx->ext_limit, end);

	ev->rx_ns = bpf_ktime_get_ns();
	s = bpf_map_lookup_elem(&stats, &zero);
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), rb_flags())) {
		if (s)
			s->ringbuf_drops++;
		return 0;
	}
	if (s) {
		s->rx_matched++;
		if (!tx)
			s->rx_no_tx++;
	}
	return cfg_drop && (rx->sure || rx->plausible);
}

/*
 * ICMP Time Exceeded / Destination Unreachable quoting an IPv4 probe;
 * Unreachable code 4 (Fragmentation Needed) is TP_KIND_PKT_TOO_BIG.
 */
static __always_inline int rx_icmp4_err(struct rx *rx, struct iphdr *ip,
					struct icmphdr *icmp, void *end)
{
	struct iphdr *q = (void *)(icmp + 1);
	struct probe_match m;
	struct l4words *l4;
	__u8 rfc4884_len;
	void *limit;
	int nonce;

	if ((void *)(q + 1) > end) {
		STAT_INC(truncated);
		return 0;
	}
	if (q->version != 4 || q->ihl < 5 || q->protocol != probe_l4proto(0) ||
	    (q->frag_off & bpf_htons(IP_OFFSET)))
		goto unmatched;
	l4 = (void *)q + q->ihl * 4;
	if ((void *)(l4 + 1) > end) {
		STAT_INC(truncated);
		return 0;
	}
	if (!probe_l4(l4, 0, bpf_ntohs(q->id), &m))
		goto unmatched;
	/* The probe's own bytes end at its quoted length, the reply's at its
	 * IP length (an RFC 4884 length field bounds the quote further, but
	 * only with zero padding, which quote_nonce treats as unseen). */
	limit = (void *)ip + bpf_ntohs(ip->tot_len);
	if ((void *)q + bpf_ntohs(q->tot_len) < limit)
		limit = (void *)q + bpf_ntohs(q->tot_len);
	nonce = quote_nonce(l4, limit, end);
	if (nonce == NONCE_FOREIGN) {
		STAT_INC(rx_foreign);
		return 0;
	}

	__u8 kind = TP_KIND_DEST_UNREACH;

	if (icmp->type == ICMP_TIME_EXCEEDED)
		kind = TP_KIND_TIME_EXCEEDED;
	else if (icmp->code == ICMP_FRAG_NEEDED)
		kind = TP_KIND_PKT_TOO_BIG;
	ev_init(rx, kind, 0);
	struct tp_event *ev = &rx->ev;
	ev_set_match(ev, &m);
	set_v4mapped(ev->responder, ip->saddr);
	set_v4mapped(ev->target, q->daddr);
	set_v4mapped(ev->quoted_src, q->saddr);
	ev->icmp_type = icmp->type;
	ev->icmp_code = icmp->code;
	ev->icmp_info = bpf_ntohl(icmp->un.gateway);
	/* RFC 1191: the MTU is bytes 6..7; byte 5 may be the RFC 4884
	 * length, handled below like any Destination Unreachable's. */
	if (kind == TP_KIND_PKT_TOO_BIG)
		ev->icmp_info = bpf_ntohs(icmp->un.frag.mtu);
	ev->reply_ttl = ip->ttl;
	ev->quoted_ttl = q->ttl;
	ev->quoted_tos = q->tos;
	ev->quoted_ipid = bpf_ntohs(q->id);
	ev->quoted_len = bpf_ntohs(q->tot_len);
	ev->quoted_csum = m.csum;
	if (q->frag_off & bpf_htons(IP_MF))
		ev->flags |= TP_F_QUOTE_MF;
	rx->sure = nonce == NONCE_MATCH;
	/* IPv4 UDP probes carry the id twice (IP ID and checksum). */
	rx->plausible = cfg_proto != IPPROTO_UDP || m.csum == m.id;

	/*
	 * RFC 4884: the length of the original datagram field in 32-bit words.
	 * Routers of the RFC 4950 era put the extension structure after a
	 * 128-byte original datagram with the length field 0 (RFC 4884 section
	 * 5): whether those bytes are one is for Go to tell (TP_F_EXT_COMPAT),
	 * the quote may simply go on. Computed without a branch (0 -> 128, n ->
	 * 4n), so the verifier walks one path to copy_ext, not two.
	 */
	rfc4884_len = icmp->un.reserved[1];
	{
		__u32 zero = ((__u32)rfc4884_len - 1) >> 8 & 1; /* 1 iff len 0 */
		__u32 qlen = (__u32)rfc4884_len * 4 | zero << 7;
		__u32 off = ip->ihl * 4 + sizeof(*icmp) + qlen;
		__u32 tot = bpf_ntohs(ip->tot_len);

		if (tot >= off + 4) {
			rx->ext = (__u8 *)(icmp + 1) + qlen;
			rx->ext_limit = tot - off;
			ev->flags |= zero << 5; /* TP_F_EXT_COMPAT */
		}
	}
	return 1;

unmatched:
	STAT_INC(rx_unmatched_icmp);
	return 0;
}

/* ICMPv6 Time Exceeded / Destination Unreachable / Packet Too Big quoting an
 * IPv6 probe. */
static __always_inline int rx_icmp6_err(struct rx *rx, struct ipv6hdr *ip6,
					struct icmp6hdr *icmp6, void *end)
{
	struct ipv6hdr *q = (void *)(icmp6 + 1);
	struct probe_match m;
	struct l4words *l4;
	__u8 rfc4884_len;
	void *limit;
	int nonce;

	if ((void *)(q + 1) > end) {
		STAT_INC(truncated);
		return 0;
	}
	if (q->version != 6 || q->nexthdr != probe_l4proto(1))
		goto unmatched;
	l4 = (void *)(q + 1);
	if ((void *)(l4 + 1) > end) {
		STAT_INC(truncated);
		return 0;
	}
	if (!probe_l4(l4, 1, 0, &m))
		goto unmatched;
	limit = (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len);
	if ((void *)(q + 1) + bpf_ntohs(q->payload_len) < limit)
		limit = (void *)(q + 1) + bpf_ntohs(q->payload_len);
	nonce = quote_nonce(l4, limit, end);
	if (nonce == NONCE_FOREIGN) {
		STAT_INC(rx_foreign);
		return 0;
	}

	__u8 kind = TP_KIND_DEST_UNREACH;

	if (icmp6->icmp6_type == ICMPV6_TIME_EXCEED)
		kind = TP_KIND_TIME_EXCEEDED;
	else if (icmp6->icmp6_type == ICMPV6_PKT_TOOBIG)
		kind = TP_KIND_PKT_TOO_BIG;
	ev_init(rx, kind, 1);
	struct tp_event *ev = &rx->ev;
	ev_set_match(ev, &m);
	__builtin_memcpy(ev->responder, &ip6->saddr, 16);
	__builtin_memcpy(ev->target, &q->daddr, 16);
	__builtin_memcpy(ev->quoted_src, &q->saddr, 16);
	ev->icmp_type = icmp6->icmp6_type;
	ev->icmp_code = icmp6->icmp6_code;
	ev->icmp_info = bpf_ntohl(icmp6->icmp6_dataun.un_data32[0]);
	ev->reply_ttl = ip6->hop_limit;
	ev->quoted_ttl = q->hop_limit;
	ev->quoted_tos = (q->priority << 4) | (q->flow_lbl[0] >> 4);
	ev->quoted_flow = ((__u32)(q->flow_lbl[0] & 0x0f) << 16) |
			  ((__u32)q->flow_lbl[1] << 8) | q->flow_lbl[2];
	ev->quoted_len = bpf_ntohs(q->payload_len);
	ev->quoted_csum = m.csum;
	rx->sure = nonce == NONCE_MATCH;
	rx->plausible = 1;

	/* Packet Too Big has no length field: byte 4 is the top of the MTU
	 * (non-zero for a jumbo MTU), not a count of 64-bit words. */
	if (kind == TP_KIND_PKT_TOO_BIG)
		return 1;

	/* RFC 4884: length of the original datagram field in 64-bit words. */
	rfc4884_len = icmp6->icmp6_dataun.un_data8[0];
	if (rfc4884_len) {
		__u32 off = sizeof(*icmp6) + rfc4884_len * 8;
		__u32 plen = bpf_ntohs(ip6->payload_len);

		if (plen > off) {
			rx->ext = (__u8 *)(icmp6 + 1) + rfc4884_len * 8;
			rx->ext_limit = plen - off;
		}
	}
	return 1;

unmatched:
	STAT_INC(rx_unmatched_icmp);
	return 0;
}

/*
 * Echo reply: identifier and sequence are those of the request, so the flow
 * base is recovered exactly as at TC egress (echo_base).
 */
static __always_inline int rx_echo(struct rx *rx, const struct l4words *l4,
				   void *limit, void *end, const __u8 *saddr,
				   __be32 saddr4, __u8 ttl, int v6)
{
	__u16 ident = bpf_ntohs(l4->w[2]);
	__u16 seq = bpf_ntohs(l4->w[3]);
	__u16 base;
	int nonce;

	if (!echo_base(ident, seq, &base)) {
		STAT_INC(rx_unmatched_icmp);
		return 0;
	}
	/* The echo data is ours, nonce included: someone else's ping is not. */
	nonce = quote_nonce((void *)l4, limit, end);
	if (nonce == NONCE_FOREIGN) {
		STAT_INC(rx_foreign);
		return 0;
	}

	ev_init(rx, TP_KIND_ECHO, v6);
	struct tp_event *ev = &rx->ev;
	if (v6)
		__builtin_memcpy(ev->responder, saddr, 16);
	else
		set_v4mapped(ev->responder, saddr4);
	__builtin_memcpy(ev->target, ev->responder, 16);
	ev->sport = base;
	ev->dport = ident;
	ev->id = seq;
	ev->icmp_type = bpf_ntohs(l4->w[0]) >> 8;
	ev->icmp_code = bpf_ntohs(l4->w[0]) & 0xff;
	ev->reply_ttl = ttl;
	rx->sure = nonce == NONCE_MATCH;
	rx->plausible = 1;
	return 1;
}

/* STUN answer (success or error) carrying our nonce. */
static __always_inline int rx_stun(struct rx *rx, struct udphdr *udp,
				   void *end, const __u8 *saddr, __be32 saddr4,
				   __u8 ttl, int v6)
{
	struct stun_hdr *s = (void *)(udp + 1);
	struct flow_val *fv;
	__u16 dport, ulen;
	__u32 tag;

	if (cfg_nonce == 0 || udp->source != bpf_htons(cfg_dport))
		return 0;
	dport = bpf_ntohs(udp->dest);
	if (!in_range(dport))
		return 0;
	if ((void *)(s + 1) > end) {
		STAT_INC(truncated);
		return 0;
	}
	if (s->cookie != bpf_htonl(STUN_MAGIC_COOKIE) ||
	    s->nonce != bpf_htonl(cfg_nonce))
		return 0;

	ev_init(rx, TP_KIND_STUN, v6);
	struct tp_event *ev = &rx->ev;
	if (v6)
		__builtin_memcpy(ev->responder, saddr, 16);
	else
		set_v4mapped(ev->responder, saddr4);
	tag = bpf_ntohl(s->flowtag);
	fv = flow_of(tag);
	if (fv) {
		__builtin_memcpy(ev->target, fv->daddr, 16);
		ev->sport = fv->sport;
	} else {
		ev->sport = dport;
		ev->flags |= TP_F_NO_FLOW;
		STAT_INC(stun_no_flow);
	}
	ev->dport = cfg_dport;
	ev->id = bpf_ntohs(s->id);
	ev->stun_type = bpf_ntohs(s->type);
	ev->flowtag = tag;
	ev->reply_ttl = ttl;
	rx->sure = 1;

	/*
	 * The STUN message itself (from its header, UDP length - 8 bytes) goes
	 * into ext[] for Go to parse (ERROR-CODE, XOR-MAPPED-ADDRESS): same
	 * copy as an RFC 4884 extension. STUN messages are multiples of 4
	 * bytes, so nothing of a well-formed message is lost to the 32-bit
	 * units; longer than TP_EXT_MAX: TP_F_EXT_TRUNC.
	 */
	ulen = bpf_ntohs(udp->len);
	if (ulen > sizeof(*udp)) {
		rx->ext = (__u8 *)s;
		rx->ext_limit = ulen - sizeof(*udp);
	}
	return 1;
}

/* TCP SYN-ACK or RST+ACK answering a SYN probe. */
static __always_inline int rx_tcp(struct rx *rx, struct tcphdr *tcp, void *end,
				  const __u8 *saddr, __be32 saddr4, __u8 ttl,
				  int v6)
{
	__u16 dport;
	__u8 flags;

	if ((void *)(tcp + 1) > end)
		return 0;
	if (tcp->source != bpf_htons(cfg_dport))
		return 0;
	dport = bpf_ntohs(tcp->dest);
	if (!in_range(dport))
		return 0;
	flags = ((__u8 *)tcp)[13];
	if (!(flags & TCP_FLAG_ACK) || !(flags & (TCP_FLAG_SYN | TCP_FLAG_RST)))
		return 0;

	ev_init(rx, TP_KIND_TCP, v6);
	struct tp_event *ev = &rx->ev;
	if (v6)
		__builtin_memcpy(ev->responder, saddr, 16);
	else
		set_v4mapped(ev->responder, saddr4);
	__builtin_memcpy(ev->target, ev->responder, 16);
	ev->sport = dport;
	ev->dport = cfg_dport;
	ev->id = (bpf_ntohl(tcp->ack_seq) - 1) >> 16;
	ev->tcp_flags = flags;
	ev->reply_ttl = ttl;
	rx->plausible = 1;
	return 1;
}

static __always_inline int rx_ipv4(struct rx *rx, struct iphdr *ip, void *end)
{
	void *l4;

	if ((void *)(ip + 1) > end)
		return 0;
	if (ip->version != 4 || ip->ihl < 5)
		return 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	l4 = (void *)ip + ip->ihl * 4;

	if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *icmp = l4;

		if ((void *)(icmp + 1) > end)
			return 0;
		if (icmp->type == ICMP_TIME_EXCEEDED ||
		    icmp->type == ICMP_DEST_UNREACH)
			return rx_icmp4_err(rx, ip, icmp, end);
		if (icmp->type == ICMP_ECHOREPLY && icmp->code == 0 &&
		    icmp_mode())
			return rx_echo(rx, l4,
				       (void *)ip + bpf_ntohs(ip->tot_len), end,
				       0, ip->saddr, ip->ttl, 0);
		return 0;
	}
	if (ip->protocol == IPPROTO_UDP && cfg_proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > end)
			return 0;
		return rx_stun(rx, udp, end, 0, ip->saddr, ip->ttl, 0);
	}
	if (ip->protocol == IPPROTO_TCP && cfg_proto == IPPROTO_TCP)
		return rx_tcp(rx, l4, end, 0, ip->saddr, ip->ttl, 0);
	return 0;
}

static __always_inline int rx_ipv6(struct rx *rx, struct ipv6hdr *ip6,
				   void *end)
{
	void *l4 = (void *)(ip6 + 1);

	if ((void *)(ip6 + 1) > end)
		return 0;
	if (ip6->version != 6)
		return 0;

	/* Extension headers before the transport header: not ours, pass. */
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		struct icmp6hdr *icmp6 = l4;

		if ((void *)(icmp6 + 1) > end)
			return 0;
		if (icmp6->icmp6_type == ICMPV6_TIME_EXCEED ||
		    icmp6->icmp6_type == ICMPV6_DEST_UNREACH ||
		    icmp6->icmp6_type == ICMPV6_PKT_TOOBIG)
			return rx_icmp6_err(rx, ip6, icmp6, end);
		if (icmp6->icmp6_type == ICMPV6_ECHO_REPLY &&
		    icmp6->icmp6_code == 0 && icmp_mode())
			return rx_echo(rx, l4,
				       l4 + bpf_ntohs(ip6->payload_len), end,
				       ip6->saddr.in6_u.u6_addr8, 0,
				       ip6->hop_limit, 1);
		return 0;
	}
	if (ip6->nexthdr == IPPROTO_UDP && cfg_proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > end)
			return 0;
		return rx_stun(rx, udp, end, ip6->saddr.in6_u.u6_addr8, 0,
			       ip6->hop_limit, 1);
	}
	if (ip6->nexthdr == IPPROTO_TCP && cfg_proto == IPPROTO_TCP)
		return rx_tcp(rx, l4, end, ip6->saddr.in6_u.u6_addr8, 0,
			      ip6->hop_limit, 1);
	return 0;
}

/* Parse one Ethernet frame; 1: a reply of ours to drop, 0: pass it. */
static __always_inline int rx_frame(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct rx rx;
	__be16 proto;
	void *l3;
	int ok;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > end)
			return 0;
		proto = vlan->h_vlan_encapsulated_proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		ok = rx_ipv4(&rx, l3, end);
		/* The reply's own IP ID: routers draw it from a shared counter,
		 * which is how alias resolution tells one router's interfaces. */
		if (ok && (void *)(ip + 1) <= end) {
			rx.ev.reply_ipid = bpf_ntohs(ip->id);
			rx.ev.flags |= TP_F_REPLY_IPID;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6))
		ok = rx_ipv6(&rx, l3, end);
	else
		return 0;
	if (!ok)
		return 0;
	return finish(&rx, end);
}

SEC("xdp")
int xdp_rx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	return rx_frame(data, end) ? XDP_DROP : XDP_PASS;
}

/*
 * The same matching on the TCX ingress hook, for a run that finds the
 * interface's XDP hook taken (by another turnpath run or any XDP user): TCX
 * chains any number of programs. Headers must be in the linear part for
 * direct access; an ICMP error or STUN answer is small, so at most
 * RX_PULL_MAX bytes are pulled, and only when the linear part is shorter.
 * The receive timestamp is taken later than at XDP (after the skb is built).
 */
#define RX_PULL_MAX 1536

SEC("tcx/ingress")
int tcx_ingress(struct __sk_buff *skb)
{
	__u32 lin = skb->data_end - skb->data;

	if (lin < skb->len && lin < RX_PULL_MAX)
		bpf_skb_pull_data(skb, skb->len < RX_PULL_MAX ? skb->len
							       : RX_PULL_MAX);
	return rx_frame((void *)(long)skb->data, (void *)(long)skb->data_end)
		       ? TCX_DROP
		       : TCX_NEXT;
}
