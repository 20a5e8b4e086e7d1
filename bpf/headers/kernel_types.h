/* SPDX-License-Identifier: (GPL-2.0-only WITH Linux-syscall-note OR BSD-2-Clause) */
/*
 * kernel_types.h - the few kernel UAPI types and constants turnpath.c needs.
 *
 * Hand-trimmed from the Linux UAPI headers (linux/types.h, linux/bpf.h,
 * linux/if_ether.h, linux/ip.h, linux/ipv6.h, linux/icmp.h, linux/icmpv6.h,
 * linux/udp.h, linux/tcp.h, linux/pkt_cls.h, linux/in.h) so that the BPF
 * object does not depend on the build host's /usr/include. Every type here
 * is stable UAPI (wire formats and BPF context layouts), so no CO-RE
 * relocations are needed. Layouts were checked against the BTF of kernel
 * 6.18 (`bpftool btf dump file /sys/kernel/btf/vmlinux format c`).
 *
 * Only little- and big-endian BPF targets are supported (bitfield order
 * follows __BYTE_ORDER__, as in the kernel headers).
 */
#ifndef __TURNPATH_KERNEL_TYPES_H
#define __TURNPATH_KERNEL_TYPES_H

/* linux/types.h, asm-generic/int-ll64.h */
typedef signed char __s8;
typedef unsigned char __u8;
typedef signed short __s16;
typedef unsigned short __u16;
typedef signed int __s32;
typedef unsigned int __u32;
typedef signed long long __s64;
typedef unsigned long long __u64;

typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u16 __le16;
typedef __u32 __le32;
typedef __u64 __le64;
typedef __u16 __sum16;
typedef __u32 __wsum;

/* Referenced (as an incomplete enum) by a prototype in bpf_helper_defs.h. */
enum rc_proto {
	RC_PROTO_UNKNOWN = 0,
};

/* linux/bpf.h: map types, update flags, program contexts, actions */
enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_CGROUP_ARRAY = 8,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
	BPF_F_LOCK = 4,
};

enum {
	BPF_F_NO_PREALLOC = (1U << 0),
};

/* bpf_ringbuf_output / bpf_ringbuf_submit flags */
enum {
	BPF_RB_NO_WAKEUP = (1ULL << 0),
	BPF_RB_FORCE_WAKEUP = (1ULL << 1),
};

#define __bpf_md_ptr(type, name)                                               \
	union {                                                                \
		type name;                                                     \
		__u64 : 64;                                                    \
	} __attribute__((aligned(8)))

struct bpf_flow_keys;
struct bpf_sock;

/* user-accessible mirror of in-kernel sk_buff (BPF_PROG_TYPE_SCHED_CLS ctx) */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__bpf_md_ptr(struct bpf_flow_keys *, flow_keys);
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__bpf_md_ptr(struct bpf_sock *, sk);
	__u32 gso_size;
	__u8 tstamp_type;
	__u32 : 24;
	__u64 hwtstamp;
};

/* user-accessible metadata for XDP packet hook (BPF_PROG_TYPE_XDP ctx) */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP = 1,
	XDP_PASS = 2,
	XDP_TX = 3,
	XDP_REDIRECT = 4,
};

/* linux/pkt_cls.h: legacy tc (cls_bpf direct-action) verdicts */
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* linux/bpf.h: tcx verdicts (kernel >= 6.6) */
enum tcx_action_base {
	TCX_NEXT = -1,
	TCX_PASS = 0,
	TCX_DROP = 2,
	TCX_REDIRECT = 7,
};

/* linux/if_ether.h */
#define ETH_ALEN 6
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

struct ethhdr {
	unsigned char h_dest[ETH_ALEN];
	unsigned char h_source[ETH_ALEN];
	__be16 h_proto;
} __attribute__((packed));

/* linux/if_vlan.h (kernel-internal, but a wire format) */
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* linux/in.h */
enum {
	IPPROTO_IP = 0,
	IPPROTO_ICMP = 1,
	IPPROTO_TCP = 6,
	IPPROTO_UDP = 17,
	IPPROTO_IPV6 = 41,
	IPPROTO_ICMPV6 = 58,
};

/* linux/ip.h */
#define IP_CE 0x8000
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct iphdr {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u8 ihl : 4, version : 4;
#else
	__u8 version : 4, ihl : 4;
#endif
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

/* linux/in6.h */
struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

/* linux/ipv6.h */
struct ipv6hdr {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u8 priority : 4, version : 4;
#else
	__u8 version : 4, priority : 4;
#endif
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	struct in6_addr saddr;
	struct in6_addr daddr;
};

/* linux/icmp.h */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
		struct {
			__be16 __unused;
			__be16 mtu;
		} frag;
		__u8 reserved[4];
	} un;
};

/* linux/icmpv6.h */
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

struct icmp6hdr {
	__u8 icmp6_type;
	__u8 icmp6_code;
	__sum16 icmp6_cksum;
	union {
		__be32 un_data32[1];
		__be16 un_data16[2];
		__u8 un_data8[4];
	} icmp6_dataun;
};

/* linux/udp.h */
struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

/* linux/tcp.h */
struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u16 res1 : 4, doff : 4, fin : 1, syn : 1, rst : 1, psh : 1, ack : 1,
		urg : 1, ece : 1, cwr : 1;
#else
	__u16 doff : 4, res1 : 4, cwr : 1, ece : 1, urg : 1, ack : 1, psh : 1,
		rst : 1, syn : 1, fin : 1;
#endif
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

/* TCP flag bits in byte 13 of the TCP header */
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_PSH 0x08
#define TCP_FLAG_ACK 0x10

/* Layout checks against the kernel's BTF (6.18). */
_Static_assert(sizeof(struct __sk_buff) == 192, "__sk_buff size");
_Static_assert(__builtin_offsetof(struct __sk_buff, data) == 76, "__sk_buff.data");
_Static_assert(__builtin_offsetof(struct __sk_buff, data_end) == 80, "__sk_buff.data_end");
_Static_assert(__builtin_offsetof(struct __sk_buff, data_meta) == 140, "__sk_buff.data_meta");
_Static_assert(__builtin_offsetof(struct __sk_buff, tstamp_type) == 180, "__sk_buff.tstamp_type");
_Static_assert(__builtin_offsetof(struct __sk_buff, hwtstamp) == 184, "__sk_buff.hwtstamp");
_Static_assert(sizeof(struct xdp_md) == 24, "xdp_md size");
_Static_assert(sizeof(struct ethhdr) == 14, "ethhdr size");
_Static_assert(sizeof(struct iphdr) == 20, "iphdr size");
_Static_assert(sizeof(struct ipv6hdr) == 40, "ipv6hdr size");
_Static_assert(sizeof(struct icmphdr) == 8, "icmphdr size");
_Static_assert(sizeof(struct icmp6hdr) == 8, "icmp6hdr size");
_Static_assert(sizeof(struct udphdr) == 8, "udphdr size");
_Static_assert(sizeof(struct tcphdr) == 20, "tcphdr size");

#endif /* __TURNPATH_KERNEL_TYPES_H */
