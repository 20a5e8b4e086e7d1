package mda

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/alias"
)

// The rate-limit alias test (package alias, AddRateChain). Where IP IDs cannot speak
// (IPv6; IPv4 routers without a shared counter) a provisional group is tested by the
// routers' ICMP rate limiters, once the exploration is done and only when it has seen
// rate limiting (without it the routers do not limit and the test cannot tell): a chain
// of batches, each a burst of rateBurst probes to one member (the leader, draining its
// router's limiter) and rateTested probes to the next batch's leader, with a pause
// between batches long enough for a limiter to refill about rateTokens tokens (learnt
// from the leaders' answers: a leader drained in the batch before answers what refilled
// since). The leaders run M0 M1 M0 M1 M0, then M2 M0 M2 (and so on) for a group
// M0 < M1 < M2 ...: every pair with M0 gets two trials the alias package can use. Groups
// whose members are all known to be other routers (apart, or distinct reply TTLs) go in
// the same batches (independent limiters). Nothing else is sent meanwhile: a batch of anyone else in between (the
// wave's last send moved) voids the chain, which starts again, at most rateRestarts
// times. The probes are outside the stopping rules, like aliasProbes', and count in the
// probe totals; the test takes at most rateMaxChains chains and rateMaxTime pauses of
// RateLimitBackoff (two minutes by default) per exploration.

const (
	rateBurst     = 10 // a leader's burst: more than Linux's 6
	rateMaxBurst  = 40
	rateTested    = 3   // probes to the tested address: all lost otherwise with RateLoss^3
	rateTokens    = 3.5 // tokens a pause should refill: a control of 3 beats pauses up to 2:1
	rateRestarts  = 2
	rateTrials    = 2   // trials for a verdict (alias.Options.MinRateTrials)
	rateMaxGroup  = 4   // members tested in one chain per group
	rateMaxChains = 8   // chains per exploration
	rateMaxExtra  = 3   // extensions of a group's chain (rateExtend)
	rateMaxPause  = 8   // pauses up to this many RateLimitBackoffs
	rateMaxTime   = 120 // the test stops after this many RateLimitBackoffs (all chains)
)

// rateGroup is one provisional group under test.
type rateGroup struct {
	members []netip.Addr // the lowest first: every pair tested is (members[0], another)
	extra   int          // extensions (rateExtend)
	leaders []netip.Addr
	batches []alias.RateBatch
	probes  map[netip.Addr][]Request // the (flow, TTL) pairs that reach each member
}

// rateState is an explorer's rate-limit test: the chain in progress, how many chains
// ran and were voided, when the first began, and whether it gave up.
type rateState struct {
	chain          *rateChain
	chains, voided int
	start          time.Time
	gaveUp         bool
}

// rateChain is the test in progress.
type rateChain struct {
	groups  []*rateGroup
	next    int // the next batch
	k       int // the leaders' burst
	pause   time.Duration
	lastAt  time.Time // when the last batch went
	pending bool      // its batch is in r.extra, or in flight
}

// rateTest runs the rate-limit test on the provisional groups IP IDs cannot decide. It
// reports whether it has a batch scheduled (r.extra) or one in flight.
func (r *explorer) rateTest() bool {
	if r.res == nil || !r.limited || r.o.RateLimitBackoff <= 0 {
		return false
	}
	st := &r.rate
	c := st.chain
	if c != nil && c.pending {
		if len(r.extra) > 0 {
			return true // its answers come with the next apply
		}
		st.chain, st.gaveUp = nil, true // its batch was not sent after all
		return false
	}
	if c != nil && c.next > 0 && !r.lastSend.Equal(c.lastAt) {
		// Someone else sent since the last batch: the pauses are not quiet.
		st.chain, c = nil, nil
		if st.voided++; st.voided > rateRestarts {
			st.gaveUp = true
		}
	}
	if st.gaveUp {
		return false
	}
	if c == nil {
		if st.chains >= rateMaxChains || st.chains > 0 && r.now().Sub(st.start) > rateMaxTime*r.o.RateLimitBackoff {
			return false
		}
		if c = r.newRateChain(); c == nil {
			return false
		}
		if st.chains == 0 {
			st.start = r.now()
		}
		st.chain = c
		st.chains++
	}
	if c.next > 0 && r.now().Sub(st.start) > rateMaxTime*r.o.RateLimitBackoff {
		r.rateCommit()
		return false
	}
	var reqs []Request
	for _, g := range c.groups {
		i := c.next
		if i >= len(g.leaders) {
			continue
		}
		reqs = append(reqs, cycle(g.probes[g.leaders[i]], c.k)...)
		if i+1 < len(g.leaders) {
			reqs = append(reqs, cycle(g.probes[g.leaders[i+1]], rateTested)...)
		}
	}
	if len(reqs) == 0 {
		r.rateCommit()
		return false
	}
	if r.sent+len(reqs) > r.o.MaxProbes {
		r.rateCommit()
		return false
	}
	r.extra, c.pending = reqs, true
	r.extraAt = time.Time{}
	if c.next > 0 {
		r.extraAt = c.lastAt.Add(c.pause)
	}
	return true
}

// cycle returns n requests taking ps in turn.
func cycle(ps []Request, n int) []Request {
	out := make([]Request, 0, n)
	for i := range n {
		out = append(out, ps[i%len(ps)])
	}
	return out
}

// rateRecord records the answers to the chain's batch in flight.
func (r *explorer) rateRecord(answers []Answer) {
	c := r.rate.chain
	if c == nil || !c.pending {
		return
	}
	c.pending = false
	at := *r.lastSend
	got := map[Request]int{}
	for _, a := range answers {
		if a.From.IsValid() && a.Target == r.target {
			got[a.Request]++
		}
	}
	// A limiter answers the first probes that reach it: the first n sends of a (flow,
	// TTL) answered n times are the answered ones.
	led := -1 // the fewest answers of a leader whose burst ran dry
	for _, g := range c.groups {
		i := c.next
		if i >= len(g.leaders) {
			continue
		}
		b := alias.RateBatch{At: at}
		n := 0
		add := func(m netip.Addr, reqs []Request) {
			for _, q := range reqs {
				ok := got[q] > 0
				if ok {
					got[q]--
					if m == g.leaders[i] {
						n++
					}
				}
				b.Probes = append(b.Probes, alias.RateProbe{Addr: m, Answered: ok})
			}
		}
		add(g.leaders[i], cycle(g.probes[g.leaders[i]], c.k))
		if i+1 < len(g.leaders) {
			add(g.leaders[i+1], cycle(g.probes[g.leaders[i+1]], rateTested))
		}
		g.batches = append(g.batches, b)
		if n < c.k && (led < 0 || n < led) {
			led = n
		}
	}
	c.lastAt = at
	c.next++
	switch {
	case c.next == 1:
		c.pause = r.o.RateLimitBackoff
	case led < 0:
		// No leader ran dry: a bigger burst.
		c.k = min(2*c.k, rateMaxBurst)
	case c.next == 2 || float64(led)+0.5 < rateTokens:
		// led tokens (and a fraction) came back over the last pause. After the first
		// estimate the pause only grows: a trial needs the pause after it no longer
		// than the one before.
		c.pause = min(time.Duration(float64(c.pause)*rateTokens/(float64(led)+0.5)), rateMaxPause*r.o.RateLimitBackoff)
	}
	done := true
	for _, g := range c.groups {
		if c.next < len(g.leaders) && r.rateDecided(g) {
			g.leaders = g.leaders[:c.next] // two routers show it in two batches
		}
		if c.next >= len(g.leaders) {
			r.rateExtend(g)
		}
		done = done && c.next >= len(g.leaders)
	}
	if done {
		r.rateCommit()
	}
}

// rateDecided reports whether every pair of the group with its lowest member has the
// trials for a verdict already.
func (r *explorer) rateDecided(g *rateGroup) bool {
	for _, mj := range g.members[1:] {
		if shared, distinct := r.res.RateTrials(g.batches, g.members[0], mj); shared < rateTrials && distinct < rateTrials {
			return false
		}
	}
	return true
}

// rateExtend lengthens a group's chain where a pair with its lowest member has fewer
// than two trials and none saying distinct: two or three more batches give it one more.
func (r *explorer) rateExtend(g *rateGroup) {
	if g.extra >= rateMaxExtra {
		return
	}
	m0, last := g.members[0], g.leaders[len(g.leaders)-1]
	for _, mj := range g.members[1:] {
		if shared, distinct := r.res.RateTrials(g.batches, m0, mj); shared >= rateTrials || distinct > 0 {
			continue
		}
		if last == m0 {
			g.leaders = append(g.leaders, mj, m0)
		} else {
			g.leaders = append(g.leaders, m0, mj, m0)
		}
		g.extra++
		return
	}
}

// rateCommit hands the chain's batches to the resolver and ends it.
func (r *explorer) rateCommit() {
	c := r.rate.chain
	r.rate.chain = nil
	if c == nil {
		return
	}
	for _, g := range c.groups {
		if len(g.batches) > 0 {
			r.res.AddRateChain(g.batches)
		}
	}
}

// newRateChain picks the provisional groups to test: those with a pair only a rate-limit
// test can decide, in one chain as many as are apart from each other.
func (r *explorer) newRateChain() *rateChain {
	groups := r.provisionalGroups()
	ch := &rateChain{k: rateBurst}
	var chosen [][]netip.Addr
	for _, rep := range slices.SortedFunc(maps.Keys(groups), netip.Addr.Compare) {
		all := groups[rep]
		// A star around the lowest member with a pair still open: every chain closes
		// its pairs, so the next one tests others.
		var members []netip.Addr
		for i, a := range all {
			for _, b := range all[i+1:] {
				if r.res.OpenRate(a, b) && len(members) < rateMaxGroup {
					if len(members) == 0 {
						members = append(members, a)
					}
					if members[0] == a {
						members = append(members, b)
					}
				}
			}
		}
		if len(members) == 0 {
			continue
		}
		// With groups tested together, every address of one must be known to be another
		// router than every address of the other (one flow passes both, or their reply
		// TTLs differ): otherwise one group's burst could silence the other's.
		ok := true
		for _, other := range chosen {
			for _, a := range members {
				for _, b := range other {
					if !r.isApart(a, b) {
						v, _ := r.res.Pair(a, b)
						ok = ok && v == alias.Distinct
					}
				}
			}
		}
		if !ok {
			continue
		}
		g := &rateGroup{members: members, probes: map[netip.Addr][]Request{}}
		for _, m := range members {
			g.probes[m] = r.reaching(m, 2)
		}
		if slices.ContainsFunc(members, func(m netip.Addr) bool { return len(g.probes[m]) == 0 }) {
			continue
		}
		m0 := members[0]
		g.leaders = []netip.Addr{m0, members[1], m0, members[1], m0}
		for _, mj := range members[2:] {
			if g.leaders[len(g.leaders)-1] == m0 {
				g.leaders = append(g.leaders, mj, m0, mj)
			} else {
				g.leaders = append(g.leaders, m0, mj, m0, mj)
			}
		}
		chosen = append(chosen, members)
		ch.groups = append(ch.groups, g)
	}
	if len(ch.groups) == 0 {
		return nil
	}
	return ch
}

// reaching returns up to n answered (flow, TTL) pairs whose hop is the interface a.
func (r *explorer) reaching(a netip.Addr, n int) []Request {
	var out []Request
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL && len(out) < n; t++ {
			if r.routerAt(f, t) && f.hops[t].addr == a {
				out = append(out, Request{Target: r.target, Flow: f.id, TTL: uint8(t)})
				break
			}
		}
	}
	return out
}

// idOpen reports whether IP IDs may still show some pair of members to be one router.
func (r *explorer) idOpen(members []netip.Addr) bool {
	for i, a := range members {
		for _, b := range members[i+1:] {
			if r.res.Open(a, b, provisionalSamples) {
				return true
			}
		}
	}
	return false
}

// commonAfter reports whether some flow through a and some flow through b meet one
// interface the same number of hops later, through silent hops only (a router's next
// hops do not depend on the interface a probe came in by; r6 of the lab is followed by
// a silent router).
func (r *explorer) commonAfter(a, b netip.Addr) bool {
	type next struct {
		addr netip.Addr
		hops int
	}
	after := func(x netip.Addr) map[next]bool {
		out := map[next]bool{}
		for _, f := range r.flows {
			for t := r.o.FirstTTL; t < r.o.MaxTTL; t++ {
				if !r.routerAt(f, t) || f.hops[t].addr != x {
					continue
				}
				for d := 1; d <= 3 && t+d <= r.o.MaxTTL && !r.beyond(f, t+d); d++ {
					n := &f.hops[t+d]
					if n.st == stAnswered {
						out[next{n.addr, d}] = true
						break
					}
					if !n.st.silent() {
						break
					}
				}
			}
		}
		return out
	}
	ax := after(a)
	for k := range after(b) {
		if ax[k] {
			return true
		}
	}
	return false
}

// unresolved returns the groups of this target's interfaces that look like one router
// answering from the interface a probe came in by (reached from different interfaces,
// leading to a common one, equal reply TTLs, never on one flow) where neither IP IDs nor
// a rate-limit test decided: the graph says so instead of guessing.
func (r *explorer) unresolved() []Router {
	if r.res == nil {
		return nil
	}
	preds := map[netip.Addr]map[netip.Addr]bool{}
	var addrs []netip.Addr
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if !r.routerAt(f, t) {
				continue
			}
			if !slices.Contains(addrs, h.addr) {
				addrs = append(addrs, h.addr)
				preds[h.addr] = map[netip.Addr]bool{}
			}
			if t > r.o.FirstTTL && r.routerAt(f, t-1) {
				preds[h.addr][f.hops[t-1].addr] = true
			}
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	parent := map[netip.Addr]netip.Addr{}
	var find func(netip.Addr) netip.Addr
	find = func(a netip.Addr) netip.Addr {
		if p, ok := parent[a]; ok && p != a {
			return find(p)
		}
		return a
	}
	var evs []alias.Evidence
	for i, a := range addrs {
		for _, b := range addrs[i+1:] {
			if ca, ok := r.confirmed[a]; ok && ca == r.confirmed[b] {
				continue
			}
			if !r.res.RateOnly(a, b) || r.isApart(a, b) || !disjoint(preds[a], preds[b]) || !r.commonAfter(a, b) {
				continue
			}
			ev := alias.Evidence{Kind: "unresolved", A: a, B: b}
			_, rev := r.res.RateEvidence(a, b)
			switch {
			case rev.Kind != "":
				ev.Detail = rev.Detail
			case !r.limited:
				ev.Detail = "no IP ID counter, and no router rate-limited toward the prober: a rate-limit test cannot tell one router from two"
			case r.res.RateTested(a, b):
				ev.Detail = "rate-limit test inconclusive (pauses too short for the routers' refill, or disturbed)"
			default:
				ev.Detail = "not tested (probe or time budget)"
			}
			evs = append(evs, ev)
			ra, rb := find(a), find(b)
			if ra != rb {
				parent[max2(ra, rb)] = min2(ra, rb)
			}
		}
	}
	var out []Router
	for _, ev := range evs {
		root := find(ev.A)
		i := slices.IndexFunc(out, func(g Router) bool { return g.ID == root.String() })
		if i < 0 {
			g := Router{ID: root.String()}
			for _, a := range addrs {
				if find(a) == root {
					g.Interfaces = append(g.Interfaces, a.String())
				}
			}
			out = append(out, g)
			i = len(out) - 1
		}
		out[i].Evidence = append(out[i].Evidence, ev)
	}
	return out
}
