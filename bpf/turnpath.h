// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * turnpath.h - structures shared between bpf/turnpath.c and Go (loader/).
 *
 * Go gets these through `bpf2go -type ...` (TurnpathProbeKey, TurnpathFlowVal,
 * TurnpathTpEvent, TurnpathTpStats). The TP_* constants are mirrored by hand
 * in loader/event.go; keep them in sync (loader tests check the sizes).
 *
 * All multi-byte integer fields are in HOST byte order. Addresses are 16-byte
 * IPv6 in network order; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
 */
#ifndef __TURNPATH_H
#define __TURNPATH_H

/* Key of the `sent` map (DESIGN.md "Kernel side"). 20 bytes, no padding. */
struct probe_key {
	__u8 daddr[16]; /* probe destination (target) */
	__u16 sport;    /* UDP/TCP source port; ICMP echo: flow base ident +' seq */
	__u16 id;       /* probe id: ttl | attempt<<8 */
};

/*
 * `sent` is set-associative: SENT_SETS sets of SENT_WAYS slots, a probe's set
 * chosen by hashing its key (sent_set_of, mirrored by loader.sentSetOf), its
 * slot the one holding the same key, else the oldest. 131072 probes, 4 MiB.
 */
#define SENT_WAYS 4
#define SENT_SETS (1 << 15)

struct sent_slot {
	struct probe_key key; /*  0 */
	__u32 pad;            /* 20 */
	__u64 ts;             /* 24 bpf_ktime_get_ns() at TC egress, 0: empty */
};

struct sent_set {
	struct sent_slot way[SENT_WAYS];
};

/*
 * Value of the `flows` map: flowtag -> (target, sport), in slot tag & 0xffff
 * of an array. 32 bytes, no padding holes.
 */
struct flow_val {
	__u8 daddr[16]; /*  0 */
	__u16 sport;    /* 16 */
	__u16 pad;      /* 18 */
	__u32 tag;      /* 20 the flowtag the slot holds (0: none) */
	__u64 gen;      /* 24 the run's cfg.start_ns: another run's entry is stale */
};

/*
 * The run's configuration, the programs' one global (`cfg`, in .bss): Go
 * writes it before attaching, so loaded programs can be pinned and reused by
 * later runs; rb_quiet also while they run (a memory-mapped .bss). 32 bytes,
 * no padding holes.
 */
struct tp_cfg {
	__u64 start_ns;  /*  0 bpf_ktime_get_ns() at the run's start: older
			  *    `sent` entries are an earlier run's */
	__u32 nonce;     /*  8 STUN transaction id bytes 0..3 / echo data */
	__u16 sport_lo;  /* 12 probes' source port range (ICMP: flow bases) */
	__u16 sport_hi;  /* 14 */
	__u16 dport;     /* 16 UDP/TCP destination port */
	__u16 nonce_off; /* 18 where probes carry the nonce, 0: nowhere */
	__u8 proto;      /* 20 17 UDP, 6 TCP, 1 or 58 ICMP echo; 0 nothing */
	__u8 drop;       /* 21 drop replies verified as ours */
	__u8 pad[2];     /* 22 */
	__u32 rb_quiet;  /* 24 Go drains the ring buffer on its own (from its
			  *    sending loop, on a short timer): events are
			  *    written without a wakeup (BPF_RB_NO_WAKEUP) until
			  *    the ring is half full */
	__u32 pad2;      /* 28 */
};

/* tp_event.kind */
#define TP_KIND_TIME_EXCEEDED 1 /* ICMP 11 / ICMPv6 3 quoting a probe */
#define TP_KIND_DEST_UNREACH 2  /* ICMP 3 (not code 4) / ICMPv6 1 quoting a probe */
#define TP_KIND_ECHO 3          /* ICMP 0 / ICMPv6 129 answering an echo probe */
#define TP_KIND_STUN 4          /* STUN/TURN answer carrying our nonce */
#define TP_KIND_TCP 5           /* TCP SYN-ACK or RST answering a SYN probe */
#define TP_KIND_PKT_TOO_BIG 6   /* ICMP 3 code 4 (Fragmentation Needed) / ICMPv6 2
				 * (Packet Too Big) quoting a probe; icmp_info
				 * is the next-hop MTU */

/* tp_event.flags */
#define TP_F_NO_TX 0x01     /* no `sent` entry for the key: tx_ns == 0 */
#define TP_F_EXT_TRUNC 0x02 /* more than TP_EXT_MAX ext bytes (extension / STUN) */
#define TP_F_NO_FLOW 0x04   /* STUN: flowtag not in `flows` (target zero) */
#define TP_F_QUOTE_MF 0x08  /* quoted IPv4 header had MF set (first fragment) */
#define TP_F_NONCE 0x10     /* the reply carries the run's nonce (certainly ours) */
#define TP_F_EXT_COMPAT 0x20 /* ext[]: the bytes after a 128-byte quote with the
			      * RFC 4884 length 0, maybe an extension (RFC 4884 s5) */
#define TP_F_REPLY_IPID 0x40 /* reply_ipid is valid (an IPv4 reply) */

#define TP_EXT_MAX 128

/*
 * One ring-buffer record per matched reply. 232 bytes, naturally aligned,
 * explicit padding (no implicit holes).
 */
struct tp_event {
	__u64 rx_ns;          /*   0 bpf_ktime_get_ns() when XDP saw the reply */
	__u64 tx_ns;          /*   8 `sent` value for the key, 0 if none */
	__u8 responder[16];   /*  16 outer source address of the reply */
	__u8 target[16];      /*  32 probe destination = key.daddr */
	__u8 quoted_src[16];  /*  48 quoted source address (ICMP errors), else 0 */
	__u32 flowtag;        /*  64 STUN flowtag, else 0 */
	__u32 icmp_info;      /*  68 ICMP header bytes 4..7 (RFC 4884 length...);
			       *     TP_KIND_PKT_TOO_BIG: the MTU alone (IPv4
			       *     bytes 6..7, RFC 1191; IPv6 bytes 4..7), so
			       *     readers need not know where each family
			       *     keeps it (the IPv4 RFC 4884 length has
			       *     done its work: ext[]) */
	__u32 quoted_flow;    /*  72 quoted IPv6 flow label (20 bits), else 0 */
	__u16 sport;          /*  76 key.sport (ICMP echo: flow base F) */
	__u16 dport;          /*  78 probe dst port (ICMP: the echo identifier) */
	__u16 id;             /*  80 key.id, the probe id */
	__u16 quoted_ipid;    /*  82 quoted IPv4 ID, else 0 */
	__u16 quoted_csum;    /*  84 quoted UDP/ICMP checksum, else 0 */
	__u16 quoted_len;     /*  86 quoted IPv4 total length / IPv6 payload length */
	__u16 stun_type;      /*  88 STUN message type (0x0101, 0x0111, 0x0113...) */
	__u16 ext_len;        /*  90 valid bytes in ext[] */
	__u8 kind;            /*  92 TP_KIND_* */
	__u8 family;          /*  93 4 or 6 */
	__u8 proto;           /*  94 probe protocol: 17, 6, 1 or 58 */
	__u8 icmp_type;       /*  95 outer ICMP type (0 for STUN/TCP) */
	__u8 icmp_code;       /*  96 outer ICMP code */
	__u8 quoted_ttl;      /*  97 quoted TTL / hop limit (ICMP errors) */
	__u8 reply_ttl;       /*  98 outer TTL / hop limit of the reply */
	__u8 quoted_tos;      /*  99 quoted TOS / traffic class */
	__u8 tcp_flags;       /* 100 TCP flags of a TCP answer */
	__u8 flags;           /* 101 TP_F_* */
	__u16 reply_ipid;     /* 102 IP ID of an IPv4 reply's own header
			       *     (TP_F_REPLY_IPID), for alias resolution */
	__u8 ext[TP_EXT_MAX]; /* 104 RFC 4884 extension structure, from its header
			       *     (ICMP errors), or the first bytes of the STUN
			       *     message, from its header (TP_KIND_STUN) */
};

/* Per-CPU counters (`stats`, one entry). Go sums over CPUs. */
struct tp_stats {
	__u64 tx_seen;           /* TC: probes recorded in `sent` */
	__u64 tx_update_err;     /* TC: `sent` update failed */
	__u64 rx_matched;        /* XDP: replies matched and emitted */
	__u64 rx_no_tx;          /* XDP: matched, but no `sent` entry */
	__u64 rx_unmatched_icmp; /* XDP: ICMP errors / echo replies not ours */
	__u64 ringbuf_drops;     /* XDP: bpf_ringbuf_output failed (ring full) */
	__u64 truncated;         /* XDP: candidate reply cut short, passed */
	__u64 stun_no_flow;      /* XDP: STUN answer with unknown flowtag */
	__u64 tx_foreign;        /* TC: probe-shaped packet that is not this run's */
	__u64 rx_foreign;        /* XDP: reply to a probe that is not this run's */
};

#endif /* __TURNPATH_H */
