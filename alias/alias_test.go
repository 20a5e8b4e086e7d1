package alias

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// router is a simulated router: one IP ID counter for all its addresses (shared), one per
// address (perIface, like Linux's hashed IDs), or none (IP ID 0, Linux's ICMP errors).
type router struct {
	addrs    []netip.Addr
	shared   bool
	zero     bool
	counter  uint16
	counters map[netip.Addr]uint16
	ttl      uint8
}

func (r *router) reply(a netip.Addr, at time.Time, rng *rand.Rand) Reply {
	rep := Reply{Addr: a, At: at, HasIPID: true, ReplyTTL: r.ttl}
	switch {
	case r.zero:
	case r.shared:
		r.counter += uint16(1 + rng.IntN(3)) // other traffic too
		rep.IPID = r.counter
	default:
		if r.counters == nil {
			r.counters = map[netip.Addr]uint16{}
		}
		if _, ok := r.counters[a]; !ok {
			r.counters[a] = uint16(rng.Uint32())
		}
		r.counters[a] += uint16(1 + rng.IntN(3))
		rep.IPID = r.counters[a]
	}
	return rep
}

func TestSharedCounterMerges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r4 := &router{addrs: []netip.Addr{ip("198.18.7.2"), ip("198.18.8.2"), ip("198.18.9.2")}, shared: true, counter: 65530, ttl: 61}
	res := New(DefaultOptions())
	at := t0
	for i := range 12 {
		a := r4.addrs[i%3]
		at = at.Add(300 * time.Microsecond)
		res.Add(r4.reply(a, at, rng)) // wraps past 65535 on the way
	}
	sets := res.Resolve(nil, nil)
	if len(sets) != 1 || len(sets[0].Addrs) != 3 {
		t.Fatalf("sets %+v", sets)
	}
	if sets[0].Confidence < 0.99 || sets[0].ID() != ip("198.18.7.2") {
		t.Errorf("set %+v", sets[0])
	}
	kinds := map[string]bool{}
	for _, e := range sets[0].Evidence {
		kinds[e.Kind] = true
	}
	if !kinds["ip-id"] || !kinds["reply-ttl"] {
		t.Errorf("evidence %+v", sets[0].Evidence)
	}
	if c := Canon(sets); c[ip("198.18.9.2")] != ip("198.18.7.2") || len(c) != 3 {
		t.Errorf("canon %v", c)
	}
}

// TestDistinctNeverMerge: routers that are not one, whatever their counters, in many
// random interleavings, are never merged.
func TestDistinctNeverMerge(t *testing.T) {
	for seed := range uint64(500) {
		rng := rand.New(rand.NewPCG(seed, 7))
		routers := []*router{
			{addrs: []netip.Addr{ip("10.0.0.1")}, shared: true, counter: uint16(rng.Uint32()), ttl: 60},
			{addrs: []netip.Addr{ip("10.0.0.2")}, shared: true, counter: uint16(rng.Uint32()), ttl: 60},
			{addrs: []netip.Addr{ip("10.0.0.3"), ip("10.0.0.4")}, ttl: 60},             // per-interface counters
			{addrs: []netip.Addr{ip("10.0.0.5"), ip("10.0.0.6")}, zero: true, ttl: 60}, // Linux: ID 0
			{addrs: []netip.Addr{ip("10.0.0.7")}, shared: true, counter: uint16(rng.Uint32()), ttl: 59},
		}
		res := New(DefaultOptions())
		at := t0
		for range 60 {
			r := routers[rng.IntN(len(routers))]
			at = at.Add(time.Duration(rng.IntN(2000)) * time.Microsecond)
			res.Add(r.reply(r.addrs[rng.IntN(len(r.addrs))], at, rng))
		}
		for _, s := range res.Resolve(nil, nil) {
			if len(s.Addrs) > 1 {
				// Only counters that started within a window of each other could
				// interleave; the test must not find any here.
				t.Fatalf("seed %d: merged %v (%+v)", seed, s.Addrs, s.Evidence)
			}
		}
	}
}

func TestVerdicts(t *testing.T) {
	res := New(DefaultOptions())
	add := func(a string, ms int, id uint16, ttl uint8) {
		res.Add(Reply{Addr: ip(a), At: t0.Add(time.Duration(ms) * time.Millisecond), IPID: id, HasIPID: true, ReplyTTL: ttl})
	}
	// Two counters far apart: distinct.
	add("10.0.0.1", 1, 100, 60)
	add("10.0.0.2", 2, 30000, 60)
	add("10.0.0.1", 3, 101, 60)
	add("10.0.0.2", 4, 30001, 60)
	if v, ev := res.Pair(ip("10.0.0.1"), ip("10.0.0.2")); v != Distinct || ev.Kind != "ip-id" {
		t.Errorf("far counters: %v %+v", v, ev)
	}
	// Different reply TTLs: distinct, even with one counter.
	add("10.0.0.3", 1, 500, 60)
	add("10.0.0.4", 2, 501, 61)
	add("10.0.0.3", 3, 502, 60)
	add("10.0.0.4", 4, 503, 61)
	if v, ev := res.Pair(ip("10.0.0.3"), ip("10.0.0.4")); v != Distinct || ev.Kind != "reply-ttl" {
		t.Errorf("reply ttl: %v %+v", v, ev)
	}
	// One counter, but no alternation yet (AABB): unknown.
	add("10.0.0.5", 1, 700, 60)
	add("10.0.0.5", 2, 701, 60)
	add("10.0.0.6", 3, 702, 60)
	add("10.0.0.6", 4, 703, 60)
	if v, _ := res.Pair(ip("10.0.0.5"), ip("10.0.0.6")); v != Unknown {
		t.Errorf("no alternation: %v", v)
	}
	add("10.0.0.5", 5, 704, 60)
	add("10.0.0.6", 6, 706, 60)
	if v, ev := res.Pair(ip("10.0.0.5"), ip("10.0.0.6")); v != Alias || ev.Confidence < 0.99 {
		t.Errorf("alternating: %v %+v", v, ev)
	}
	// IP ID 0 (Linux ICMP errors): no evidence.
	for i := range 6 {
		add([]string{"10.0.0.8", "10.0.0.9"}[i%2], i, 0, 60)
	}
	if v, _ := res.Pair(ip("10.0.0.8"), ip("10.0.0.9")); v != Unknown {
		t.Errorf("zero ids: %v", v)
	}
	// MPLS alone never merges, but is recorded on a set.
	res.Add(Reply{Addr: ip("10.0.0.5"), At: t0.Add(7 * time.Millisecond), IPID: 707, HasIPID: true, ReplyTTL: 60, MPLS: []uint32{16005}})
	res.Add(Reply{Addr: ip("10.0.0.6"), At: t0.Add(8 * time.Millisecond), IPID: 708, HasIPID: true, ReplyTTL: 60, MPLS: []uint32{16005}})
	res.Add(Reply{Addr: ip("10.0.0.10"), ReplyTTL: 60, MPLS: []uint32{16005}})
	sets := res.Resolve([]netip.Addr{ip("10.0.0.5"), ip("10.0.0.6"), ip("10.0.0.10")}, nil)
	if len(sets) != 2 || !slices.Equal(sets[1].Addrs, []netip.Addr{ip("10.0.0.10")}) {
		t.Fatalf("mpls sets %+v", sets)
	}
	if !slices.ContainsFunc(sets[0].Evidence, func(e Evidence) bool { return e.Kind == "mpls" }) {
		t.Errorf("no mpls support: %+v", sets[1].Evidence)
	}
}

// TestApartAndTransitivity: a set never joins two addresses kept apart, even when each
// matches a third.
func TestApartAndTransitivity(t *testing.T) {
	res := New(DefaultOptions())
	id := uint16(1000)
	for i := range 12 {
		id++
		res.Add(Reply{Addr: ip([]string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}[i%3]), At: t0.Add(time.Duration(i) * time.Millisecond), IPID: id, HasIPID: true})
	}
	apart := func(a, b netip.Addr) bool {
		return a == ip("10.0.0.1") && b == ip("10.0.0.3") || a == ip("10.0.0.3") && b == ip("10.0.0.1")
	}
	sets := res.Resolve(nil, apart)
	for _, s := range sets {
		if slices.Contains(s.Addrs, ip("10.0.0.1")) && slices.Contains(s.Addrs, ip("10.0.0.3")) {
			t.Fatalf("joined apart addresses: %+v", sets)
		}
	}
	if len(sets) != 2 {
		t.Errorf("sets %+v", sets)
	}
	if got := res.Resolve(nil, nil); len(got) != 1 {
		t.Errorf("without apart: %+v", got)
	}
}

func TestIPv6NoIPID(t *testing.T) {
	res := New(DefaultOptions())
	for i := range 8 {
		res.Add(Reply{Addr: ip([]string{"fd51::7:2", "fd51::8:2"}[i%2]), At: t0.Add(time.Duration(i) * time.Millisecond), IPID: uint16(i + 1), HasIPID: true, ReplyTTL: 61})
	}
	if sets := res.Resolve(nil, nil); len(sets) != 2 {
		t.Errorf("IPv6 merged: %+v", sets)
	}
}
