// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sent.h - the `sent` map (probe -> kernel send time) and how a probe is
 * written into it: shared by turnpath.c (TC egress writes, XDP reads) and
 * gen.c (the in-kernel generator writes the probes it sends), which load it
 * as one map (the generator's is replaced by the engine's).
 */
#ifndef __TURNPATH_SENT_H
#define __TURNPATH_SENT_H

/* Ordered single stores and loads (the compiler must neither merge nor move
 * them): the `sent` slot protocol. */
#define WRITE_ONCE_U64(x, v) (*(volatile __u64 *)&(x) = (v))
#define READ_ONCE_U64(x) (*(volatile __u64 *)&(x))

/*
 * probe_key -> tx timestamp (ns, CLOCK_MONOTONIC), in a plain array used as a
 * 4-way set-associative table (struct sent_set): a probe's set is a hash of
 * its key, TC egress writes it into the slot with the same key or else the
 * oldest one of the set (a newer probe overwrites an older one), XDP looks
 * for the key in the set's four slots. No locks and no allocation on the
 * hot path (an LRU hash cost a fifth of the core at a high probe rate, and
 * ~10 ms to create); old probes age out by being overwritten. 131072 slots
 * (4 MiB) cover e.g. 1024 targets x 32 TTLs x 4 attempts outstanding.
 *
 * A slot is written ts = 0, key, ts (x86 keeps stores in order; elsewhere a
 * reader may at worst miss the entry), and read key, ts, key again: a reader
 * racing a writer on another CPU sees no entry rather than a wrong one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SENT_SETS);
	__type(key, __u32);
	__type(value, struct sent_set);
} sent SEC(".maps");

/* The `sent` set of a probe: mirrored by loader.sentSetOf. */
static __always_inline __u32 sent_set_of(const struct probe_key *k)
{
	__u32 w[5];
	__u32 h;

	__builtin_memcpy(w, k, sizeof(w));
	h = w[0] * 0x9e3779b1;
	h = (h ^ w[1]) * 0x85ebca77;
	h = (h ^ w[2]) * 0xc2b2ae3d;
	h = (h ^ w[3]) * 0x27d4eb2f;
	h = (h ^ w[4]) * 0x165667b1;
	/* murmur3's finaliser: every key bit reaches the low (set) bits */
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h & (SENT_SETS - 1);
}

static __always_inline int key_eq(const struct probe_key *a,
				  const struct probe_key *b)
{
	return *(const __u64 *)&a->daddr[0] == *(const __u64 *)&b->daddr[0] &&
	       *(const __u64 *)&a->daddr[8] == *(const __u64 *)&b->daddr[8] &&
	       a->sport == b->sport && a->id == b->id;
}

/* Record a probe's send time (TC egress). */
static __always_inline int sent_put(const struct probe_key *k, __u64 now)
{
	__u32 idx = sent_set_of(k);
	struct sent_set *set = bpf_map_lookup_elem(&sent, &idx);
	__u64 oldest = ~0ULL;
	__u32 victim = 0;
	int i;

	if (!set)
		return -1;
#pragma unroll
	for (i = 0; i < SENT_WAYS; i++) {
		if (key_eq(&set->way[i].key, k)) {
			victim = i;
			break;
		}
		if (set->way[i].ts < oldest) {
			oldest = set->way[i].ts;
			victim = i;
		}
	}
	struct sent_slot *slot = &set->way[victim & (SENT_WAYS - 1)];
	WRITE_ONCE_U64(slot->ts, 0);
	__builtin_memcpy(&slot->key, k, sizeof(*k));
	WRITE_ONCE_U64(slot->ts, now);
	return 0;
}

#endif /* __TURNPATH_SENT_H */
