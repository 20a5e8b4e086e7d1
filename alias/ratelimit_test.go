package alias

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// bucket is a router's ICMP token bucket toward the prober, like Linux's
// inet_peer_xrlim_allow: Burst tokens at most, Rate more per second.
type bucket struct {
	burst, rate float64
	tokens      float64
	last        time.Time
}

func (b *bucket) allow(at time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+at.Sub(b.last).Seconds()*b.rate)
	}
	b.last = at
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// chainOf runs a rate-limit chain: batch i is a burst of k to leaders[i], then m to
// leaders[i+1] (the last batch only its burst), rest(i) before batch i. limiter maps each
// address to its router's bucket.
func chainOf(limiter map[netip.Addr]*bucket, leaders []netip.Addr, k, m int, start time.Time, rest func(i int) time.Duration) []RateBatch {
	var out []RateBatch
	at := start
	for i, l := range leaders {
		if i > 0 {
			at = at.Add(rest(i))
		}
		b := RateBatch{At: at}
		for j := range k {
			b.Probes = append(b.Probes, RateProbe{Addr: l, Answered: limiter[l].allow(at.Add(time.Duration(j) * 10 * time.Microsecond))})
		}
		if i+1 < len(leaders) {
			t := leaders[i+1]
			for j := range m {
				b.Probes = append(b.Probes, RateProbe{Addr: t, Answered: limiter[t].allow(at.Add(time.Duration(k+j) * 10 * time.Microsecond))})
			}
		}
		out = append(out, b)
	}
	return out
}

func v6(s string) netip.Addr { return netip.MustParseAddr(s) }

// seen adds one reply of each address with reply TTL ttl (IPv6: no IP ID).
func seen(res *Resolver, ttl uint8, addrs ...netip.Addr) {
	for _, a := range addrs {
		res.Add(Reply{Addr: a, At: t0, ReplyTTL: ttl})
	}
}

// One router (one bucket, Linux's burst 6 and 1/s) answering from two IPv6 addresses:
// the chain A B A B A with 3 s pauses shows one limiter, with a high confidence.
func TestRateSharedLimiter(t *testing.T) {
	a, b := v6("fd51:0:0:7::2"), v6("fd51:0:0:8::2")
	res := New(DefaultOptions())
	seen(res, 60, a, b)
	if !res.OpenRate(a, b) {
		t.Fatal("an untested IPv6 pair with equal reply TTLs is not open to a rate-limit test")
	}
	r4 := &bucket{burst: 6, rate: 1, tokens: 6}
	lim := map[netip.Addr]*bucket{a: r4, b: r4}
	chain := chainOf(lim, []netip.Addr{a, b, a, b, a}, 10, 3, t0, func(int) time.Duration { return 3 * time.Second })
	res.AddRateChain(chain)
	v, ev := res.Pair(a, b)
	if v != Alias || ev.Kind != "rate-limit" || ev.Confidence < 0.999 {
		t.Fatalf("one limiter: %v %+v", v, ev)
	}
	if res.OpenRate(a, b) {
		t.Error("still open after its chain")
	}
	sets := res.Resolve(nil, nil)
	if len(sets) != 1 || len(sets[0].Addrs) != 2 {
		t.Fatalf("sets %+v", sets)
	}
	// The topology still keeps apart, and different reply TTLs too.
	if sets := res.Resolve(nil, func(x, y netip.Addr) bool { return true }); len(sets) != 2 {
		t.Errorf("apart merged: %+v", sets)
	}
	res.Add(Reply{Addr: b, At: t0, ReplyTTL: 59})
	res.Add(Reply{Addr: b, At: t0, ReplyTTL: 59})
	if v, ev := res.Pair(a, b); v != Distinct || ev.Kind != "reply-ttl" {
		t.Errorf("different reply TTLs: %v %+v", v, ev)
	}
}

// Pauses too short for two tokens (1 s at 1/s): a control answers 1, which a slower
// limiter of its own could explain too. No verdict, and no merge.
func TestRateShortPausesUndecided(t *testing.T) {
	a, b := v6("fd51::1"), v6("fd51::2")
	res := New(DefaultOptions())
	seen(res, 60, a, b)
	r := &bucket{burst: 6, rate: 1, tokens: 6}
	res.AddRateChain(chainOf(map[netip.Addr]*bucket{a: r, b: r}, []netip.Addr{a, b, a, b, a, b}, 10, 3, t0, func(int) time.Duration { return time.Second }))
	if v, _ := res.Pair(a, b); v != Unknown {
		t.Errorf("1 s pauses at 1 token/s: %v", v)
	}
	if sets := res.Resolve(nil, nil); len(sets) != 2 {
		t.Errorf("merged: %+v", sets)
	}
}

// One trial is never enough; a third address in a batch voids its trial.
func TestRateOneTrialAndThirdAddress(t *testing.T) {
	a, b, c := v6("fd51::1"), v6("fd51::2"), v6("fd51::3")
	res := New(DefaultOptions())
	seen(res, 60, a, b, c)
	r := &bucket{burst: 6, rate: 1, tokens: 6}
	lim := map[netip.Addr]*bucket{a: r, b: r, c: r}
	// A B A: one shared trial (batch 1 tests A, drained in batch 0, led again in 2).
	res.AddRateChain(chainOf(lim, []netip.Addr{a, b, a}, 10, 3, t0, func(int) time.Duration { return 3 * time.Second }))
	if v, ev := res.Pair(a, b); v != Unknown || ev.Kind != "rate-limit" {
		t.Errorf("one trial: %v %+v", v, ev)
	}
	// Batches with a third address after the burst: no trial counts.
	chain := chainOf(lim, []netip.Addr{a, c, a, c, a}, 10, 3, t0.Add(time.Minute), func(int) time.Duration { return 3 * time.Second })
	for i := range chain[:len(chain)-1] {
		chain[i].Probes = append(chain[i].Probes, RateProbe{Addr: b})
	}
	res.AddRateChain(chain)
	if v, ev := res.Pair(a, c); v != Unknown {
		t.Errorf("third address in every batch: %v %+v", v, ev)
	}
}

// Two routers, each with its own bucket, never make one: whatever their bursts and
// refill rates (down to the adversarial one, a refill every second pause, which shows
// the same silent/answering pattern when pauses are short), whatever the pauses and
// where their buckets start. Many chains show them distinct (not those with one tested
// probe per batch, or too slow a refill).
func TestRateDistinctNeverMerge(t *testing.T) {
	a, b := v6("fd51::1"), v6("fd51::2")
	distinct := 0
	const runs = 3000
	for seed := range uint64(runs) {
		rng := rand.New(rand.NewPCG(seed, 15))
		mk := func() *bucket {
			burst := float64(1 + rng.IntN(10))
			return &bucket{burst: burst, rate: []float64{0.1, 0.25, 0.33, 0.5, 1, 2, 4, 8}[rng.IntN(8)], tokens: rng.Float64() * burst}
		}
		ba, bb := mk(), mk()
		if seed%4 == 0 {
			bb.rate = ba.rate / 2
		}
		res := New(DefaultOptions())
		seen(res, 60, a, b)
		base := time.Duration(250+rng.IntN(3000)) * time.Millisecond
		leaders := []netip.Addr{a, b, a, b, a, b, a, b, a}[:3+rng.IntN(7)]
		chain := chainOf(map[netip.Addr]*bucket{a: ba, b: bb}, leaders, 2+rng.IntN(12), 1+rng.IntN(4), t0, func(int) time.Duration {
			return base + time.Duration(rng.IntN(200))*time.Millisecond
		})
		res.AddRateChain(chain)
		v, ev := res.Pair(a, b)
		if v == Alias {
			t.Fatalf("seed %d: two limiters (%+v, %+v) merged: %+v", seed, ba, bb, ev)
		}
		if v == Distinct {
			distinct++
		}
		if sets := res.Resolve(nil, nil); len(sets) != 2 {
			t.Fatalf("seed %d: sets %+v", seed, sets)
		}
	}
	t.Logf("%d of %d chains over two routers called them distinct, none one", distinct, runs)
	if distinct < runs/4 {
		t.Errorf("only %d of %d chains over two routers found them distinct", distinct, runs)
	}
}

// IPv4 routers with a usable IP ID counter are decided by it: a rate-limit test is not
// open for them, and IP ID evidence comes first.
func TestRateOpenOnlyWithoutIPID(t *testing.T) {
	res := New(DefaultOptions())
	id := uint16(100)
	for i := range 4 {
		id++
		res.Add(Reply{Addr: ip([]string{"10.0.0.1", "10.0.0.2"}[i%2]), At: t0.Add(time.Duration(i) * time.Millisecond), IPID: id, HasIPID: true, ReplyTTL: 60})
	}
	if res.OpenRate(ip("10.0.0.1"), ip("10.0.0.2")) {
		t.Error("open to a rate test with a shared counter")
	}
	// Linux's IPv4 ICMP errors: IP ID 0, no counter: open.
	for i := range 4 {
		res.Add(Reply{Addr: ip([]string{"10.0.0.3", "10.0.0.4"}[i%2]), At: t0.Add(time.Duration(i) * time.Millisecond), HasIPID: true, ReplyTTL: 60})
	}
	if !res.OpenRate(ip("10.0.0.3"), ip("10.0.0.4")) {
		t.Error("IP ID 0 pair not open to a rate test")
	}
	// Different reply TTLs, different families, unknown addresses: not open.
	res.Add(Reply{Addr: ip("10.0.0.5"), At: t0, HasIPID: true, ReplyTTL: 59})
	res.Add(Reply{Addr: ip("fd51::5"), At: t0, ReplyTTL: 60})
	for _, p := range [][2]string{{"10.0.0.3", "10.0.0.5"}, {"10.0.0.3", "fd51::5"}, {"10.0.0.3", "10.0.0.9"}} {
		if res.OpenRate(ip(p[0]), ip(p[1])) {
			t.Errorf("%v open", p)
		}
	}
	if !slices.Equal(res.Addrs()[:2], []netip.Addr{ip("10.0.0.1"), ip("10.0.0.2")}) {
		t.Errorf("addrs %v", res.Addrs())
	}
}

// A chain tests the pairs its batches probe one after the other, and no others: a star
// around A leaves B and C open to a chain of their own.
func TestRateTestedPairs(t *testing.T) {
	a, b, c := v6("fd51::1"), v6("fd51::2"), v6("fd51::3")
	res := New(DefaultOptions())
	seen(res, 60, a, b, c)
	r := &bucket{burst: 6, rate: 1, tokens: 6}
	lim := map[netip.Addr]*bucket{a: r, b: r, c: r}
	res.AddRateChain(chainOf(lim, []netip.Addr{a, b, a, b, a, c, a, c}, 10, 3, t0, func(int) time.Duration { return 3500 * time.Millisecond }))
	if !res.RateTested(a, b) || !res.RateTested(a, c) {
		t.Error("star pairs not tested")
	}
	if res.RateTested(b, c) || !res.OpenRate(b, c) {
		t.Error("b and c, never in one batch, taken as tested")
	}
	if sets := res.Resolve(nil, nil); len(sets) != 1 || len(sets[0].Addrs) != 3 {
		t.Errorf("sets %+v", sets)
	}
}
