// Package alias groups interface addresses that belong to one router (alias resolution),
// from what the replies to ordinary traceroute probes carry anyway: no probe is sent for
// it. It is pure: feed it replies (Add), ask for alias sets (Resolve).
//
// The evidence, per pair of addresses:
//
//   - IP ID (Ally's test, in the monotonic bounds form of MIDAR and Multilevel MDA-Lite):
//     many routers number every packet they originate from one counter, whatever
//     interface it leaves from. Two addresses whose IP ID series, merged in order of
//     arrival, still form one increasing series within a velocity bound, interleaved
//     (a reply of one between two of the other, both ways), share a counter: one router.
//     An address whose own series is not increasing (Linux's ICMP errors carry IP ID 0;
//     some routers randomise) gives no evidence. Two increasing series that do not merge
//     are two counters: kept apart (a router with a counter per interface is then missed,
//     never merged wrongly).
//   - Reply TTL: a router's replies travel back the same way whatever address they come
//     from, so two addresses whose replies arrive with different TTLs are kept apart. Equal
//     reply TTLs are necessary, never sufficient.
//   - MPLS: the same label stack quoted from two addresses is recorded as supporting
//     evidence of a set, never enough alone (segment-routing labels are the same on every
//     router of a domain).
//   - Topology (from the caller): addresses one flow passes at different TTLs are distinct
//     routers (Resolve's apart).
//   - ICMP rate limiting (AddRateChain, ratelimit.go; the one evidence that needs probes
//     of its own): a router limits its ICMP errors toward one prober with one token
//     bucket whatever interface they leave from. An address that stays silent right
//     after another's burst drained the limiter, in trials that rule out its own bucket
//     being empty, shares that limiter: one router. One that answers right after is
//     another. It is what IPv6 (no IP ID) and IPv4 routers without a usable counter
//     have; it is asked only where IP IDs cannot speak, and decides only after
//     MinRateTrials agreeing trials. Routers that do not rate-limit give it nothing.
//
// The confidence of an IP ID match is 1 - w/65536, w the narrowest window of one address's
// IDs that encloses an ID of the other: the chance that an unrelated counter, its start
// uniformly random, lands there. A set's confidence is the weakest match that joined it.
// Sets form by union over matches, strongest first, and never join two addresses kept
// apart by any evidence.
//
// The confidence of a rate-limit match is 1 - RateLoss^n, n the tested probes that were
// silent in its trials (the chance that all were lost for another reason).
//
// IPv6 has no IP ID in the fixed header: there only MPLS, the caller's topology and the
// rate-limit trials speak, and only the trials can merge. Without them (a router that
// does not rate-limit) IPv6 interfaces stay one router each.
package alias

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Reply is what one reply says about the interface it came from.
type Reply struct {
	Addr     netip.Addr
	At       time.Time // when it arrived (its order among replies is what matters)
	IPID     uint16    // the reply's own IPv4 IP ID, when HasIPID
	HasIPID  bool
	ReplyTTL uint8    // TTL (hop limit) of the reply as received; 0: unknown
	MPLS     []uint32 // the quoted MPLS label stack (RFC 4950), top first; nil: none
}

// Options tune the tests. Start from DefaultOptions.
type Options struct {
	// MinSamples is the fewest IP IDs per address for the IP ID test. Default 2.
	MinSamples int
	// MinSwitches is the fewest alternations between the two addresses in the merged
	// series (ABAB is 3). Default 3: each address has an ID enclosed by the other's.
	MinSwitches int
	// MaxStep and Velocity bound one step of a counter: an increase of at most
	// MaxStep + Velocity*dt between consecutive IDs dt apart. Defaults 1500 and
	// 20000/s (a busy router's shared counter).
	MaxStep  int
	Velocity float64
	// MinConfidence is the least confidence of an IP ID match that merges. Default
	// 0.99 (an enclosing window of at most 655 IDs).
	MinConfidence float64
	// MaxSamples bounds the IDs kept per address (the latest). Default 256.
	MaxSamples int
	// MinRateTrials is the fewest rate-limit trials that decide a pair (AddRateChain),
	// all agreeing. Default 2: never one.
	MinRateTrials int
	// RateLoss bounds the chance that a probe or its answer is lost for a reason other
	// than a rate limiter: the confidence of a shared limiter is 1 - RateLoss^n over the
	// n silent tested probes. Default 0.1.
	RateLoss float64
	// RateSlack widens the pauses a shared-limiter trial compares (a kernel counts its
	// tokens in jiffies, up to 10 ms). Default 10ms.
	RateSlack time.Duration
}

// DefaultOptions are the defaults documented on Options.
func DefaultOptions() Options {
	return Options{MinSamples: 2, MinSwitches: 2, MaxStep: 1500, Velocity: 20000, MinConfidence: 0.99, MaxSamples: 256,
		MinRateTrials: 2, RateLoss: 0.1, RateSlack: 10 * time.Millisecond}
}

type idSample struct {
	at time.Time
	id uint16
}

type iface struct {
	ids  []idSample // by arrival
	ttls map[uint8]int
	mpls map[string]bool
	// counter: the address's own IDs form one increasing series (cached per version).
	counter    bool
	counterVer int
	ver        int
}

// Resolver collects replies and resolves aliases. Not safe for concurrent use.
type Resolver struct {
	o      Options
	ifaces map[netip.Addr]*iface
	ver    int // bumped by every Add: Resolve's cache key
	cache  map[[2]netip.Addr]pairResult
	rate   map[[2]netip.Addr]*rateTally // rate-limit trials by pair (ratelimit.go)
}

type pairResult struct {
	ver [2]int
	Verdict
	ev Evidence
}

// New returns an empty resolver.
func New(o Options) *Resolver {
	d := DefaultOptions()
	if o.MinSamples < 1 {
		o.MinSamples = d.MinSamples
	}
	if o.MinSwitches < 1 {
		o.MinSwitches = d.MinSwitches
	}
	if o.MaxStep < 1 {
		o.MaxStep = d.MaxStep
	}
	if o.Velocity <= 0 {
		o.Velocity = d.Velocity
	}
	if o.MinConfidence <= 0 || o.MinConfidence >= 1 {
		o.MinConfidence = d.MinConfidence
	}
	if o.MaxSamples < o.MinSamples {
		o.MaxSamples = max(d.MaxSamples, o.MinSamples)
	}
	if o.MinRateTrials < 1 {
		o.MinRateTrials = d.MinRateTrials
	}
	if o.RateLoss <= 0 || o.RateLoss >= 1 {
		o.RateLoss = d.RateLoss
	}
	if o.RateSlack <= 0 {
		o.RateSlack = d.RateSlack
	}
	return &Resolver{o: o, ifaces: map[netip.Addr]*iface{}, cache: map[[2]netip.Addr]pairResult{}}
}

// Add records one reply.
func (r *Resolver) Add(rep Reply) {
	if !rep.Addr.IsValid() {
		return
	}
	a := rep.Addr.Unmap()
	f := r.ifaces[a]
	if f == nil {
		f = &iface{ttls: map[uint8]int{}, mpls: map[string]bool{}}
		r.ifaces[a] = f
	}
	if rep.HasIPID && a.Is4() {
		s := idSample{rep.At, rep.IPID}
		// Keep arrival order even if replies are added out of order.
		i := len(f.ids)
		for i > 0 && f.ids[i-1].at.After(s.at) {
			i--
		}
		f.ids = slices.Insert(f.ids, i, s)
		if len(f.ids) > r.o.MaxSamples {
			f.ids = slices.Delete(f.ids, 0, len(f.ids)-r.o.MaxSamples)
		}
	}
	if rep.ReplyTTL > 0 {
		f.ttls[rep.ReplyTTL]++
	}
	if len(rep.MPLS) > 0 {
		f.mpls[fmt.Sprint(rep.MPLS)] = true
	}
	f.ver++
	r.ver++
}

// Version changes with every reply added: what was resolved at one version stays true
// until it changes.
func (r *Resolver) Version() int { return r.ver }

// Addrs returns every address seen, ascending.
func (r *Resolver) Addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(r.ifaces))
	for a := range r.ifaces {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Verdict is what the evidence says of a pair of addresses.
type Verdict int

const (
	Unknown  Verdict = iota // no evidence either way
	Alias                   // one router
	Distinct                // two routers (or at least two counters, or two return paths)
)

func (v Verdict) String() string {
	switch v {
	case Alias:
		return "alias"
	case Distinct:
		return "distinct"
	}
	return "unknown"
}

// Evidence is one piece of evidence about a pair of addresses.
type Evidence struct {
	Kind string     `json:"kind"` // "ip-id", "reply-ttl", "mpls", "topology"
	A    netip.Addr `json:"a"`
	B    netip.Addr `json:"b"`
	// Detail says what was seen, e.g. "14 IP IDs, 9 alternations, window 37".
	Detail     string  `json:"detail"`
	Confidence float64 `json:"confidence,omitempty"`
}

// Set is one router: its addresses and why they are thought to be one.
type Set struct {
	Addrs    []netip.Addr `json:"addrs"` // ascending
	Evidence []Evidence   `json:"evidence,omitempty"`
	// Confidence that the addresses are one router: the weakest match that joined them.
	Confidence float64 `json:"confidence"`
}

// ID is the set's name: its lowest address.
func (s Set) ID() netip.Addr { return s.Addrs[0] }

// replyTTL is the address's most frequent reply TTL (0: none seen).
func (f *iface) replyTTL() uint8 {
	best, n := uint8(0), 0
	for t, c := range f.ttls {
		if c > n || c == n && t < best {
			best, n = t, c
		}
	}
	return best
}

// step reports whether id b, dt after id a, can follow it on one counter.
func (r *Resolver) step(a, b uint16, dt time.Duration) bool {
	d := int(b - a) // modulo 2^16: a wrap is an ordinary step
	if d == 0 {
		return false
	}
	limit := r.o.MaxStep + int(r.o.Velocity*max(dt, 0).Seconds())
	return d <= min(limit, 32767)
}

// isCounter reports whether the address's own IDs form one increasing series.
func (r *Resolver) isCounter(f *iface) bool {
	if f.counterVer == f.ver && f.ver != 0 {
		return f.counter
	}
	ok := len(f.ids) >= r.o.MinSamples
	for i := 1; ok && i < len(f.ids); i++ {
		ok = r.step(f.ids[i-1].id, f.ids[i].id, f.ids[i].at.Sub(f.ids[i-1].at))
	}
	f.counter, f.counterVer = ok, f.ver
	return ok
}

// Pair returns the verdict on a and b from the replies alone, with the evidence that
// decided it.
func (r *Resolver) Pair(a, b netip.Addr) (Verdict, Evidence) {
	a, b = a.Unmap(), b.Unmap()
	if b.Less(a) {
		a, b = b, a
	}
	fa, fb := r.ifaces[a], r.ifaces[b]
	if fa == nil || fb == nil || a == b {
		return Unknown, Evidence{}
	}
	k := [2]netip.Addr{a, b}
	if c, ok := r.cache[k]; ok && c.ver == [2]int{fa.ver, fb.ver} {
		return c.Verdict, c.ev
	}
	v, ev := r.pair(a, b, fa, fb)
	r.cache[k] = pairResult{ver: [2]int{fa.ver, fb.ver}, Verdict: v, ev: ev}
	return v, ev
}

func (r *Resolver) pair(a, b netip.Addr, fa, fb *iface) (Verdict, Evidence) {
	if ta, tb := fa.replyTTL(), fb.replyTTL(); ta != 0 && tb != 0 && ta != tb {
		return Distinct, Evidence{Kind: "reply-ttl", A: a, B: b, Detail: fmt.Sprintf("reply TTL %d vs %d", ta, tb)}
	}
	if a.Is4() != b.Is4() {
		return Distinct, Evidence{Kind: "family", A: a, B: b}
	}
	if !r.isCounter(fa) || !r.isCounter(fb) {
		// No IP ID evidence: what a rate-limit test found, if any.
		return r.ratePair(a, b)
	}
	// Merge the two series by arrival.
	type tagged struct {
		idSample
		from int
	}
	m := make([]tagged, 0, len(fa.ids)+len(fb.ids))
	for _, s := range fa.ids {
		m = append(m, tagged{s, 0})
	}
	for _, s := range fb.ids {
		m = append(m, tagged{s, 1})
	}
	slices.SortStableFunc(m, func(x, y tagged) int { return x.at.Compare(y.at) })
	switches := 0
	for i := 1; i < len(m); i++ {
		if !r.step(m[i-1].id, m[i].id, m[i].at.Sub(m[i-1].at)) {
			return Distinct, Evidence{Kind: "ip-id", A: a, B: b,
				Detail: fmt.Sprintf("two counters: %d then %d", m[i-1].id, m[i].id)}
		}
		if m[i].from != m[i-1].from {
			switches++
		}
	}
	if switches < r.o.MinSwitches {
		return r.ratePair(a, b)
	}
	// The narrowest window of one address's consecutive IDs that encloses an ID of the
	// other (unwrapped: the steps are all forward).
	window := 1 << 16
	lastOf := [2]int{-1, -1}
	pos := make([]int, len(m))
	for i := 1; i < len(m); i++ {
		pos[i] = pos[i-1] + int(m[i].id-m[i-1].id)
	}
	for i := range m {
		own := m[i].from
		if j := lastOf[own]; j >= 0 && i-j > 1 {
			// m[j+1..i-1] are all the other's: enclosed by the window pos[j]..pos[i].
			window = min(window, pos[i]-pos[j])
		}
		lastOf[own] = i
	}
	conf := 1 - float64(window)/65536
	ev := Evidence{Kind: "ip-id", A: a, B: b, Confidence: conf,
		Detail: fmt.Sprintf("%d IP IDs, %d alternations, window %d", len(m), switches, window)}
	if conf < r.o.MinConfidence {
		if v, rev := r.ratePair(a, b); v != Unknown {
			return v, rev
		}
		return Unknown, ev
	}
	return Alias, ev
}

// Open reports whether a and b may still turn out to be one router when more replies
// come: both number their replies with IP IDs that are not all 0 and each address's
// own IDs so far form one series, nothing keeps them apart yet, and one of them has
// fewer than k IDs. A caller may treat them as one router meanwhile, if it checks again.
func (r *Resolver) Open(a, b netip.Addr, k int) bool {
	a, b = a.Unmap(), b.Unmap()
	fa, fb := r.ifaces[a], r.ifaces[b]
	if fa == nil || fb == nil || a == b || a.Is4() != b.Is4() {
		return false
	}
	if v, _ := r.Pair(a, b); v != Unknown {
		return false
	}
	for _, f := range []*iface{fa, fb} {
		if len(f.ids) == 0 || (len(f.ids) >= r.o.MinSamples && !r.isCounter(f)) {
			return false
		}
		zero := true
		for _, s := range f.ids {
			zero = zero && s.id == 0
		}
		if zero {
			return false
		}
	}
	return min(len(fa.ids), len(fb.ids)) < k
}

// Resolve groups addrs (nil: every address seen) into routers. apart, if not nil, reports
// what the caller knows keeps two addresses apart (one flow passing both at different
// TTLs). Every address is in exactly one set; sets come in ascending order of ID.
func (r *Resolver) Resolve(addrs []netip.Addr, apart func(a, b netip.Addr) bool) []Set {
	if addrs == nil {
		addrs = r.Addrs()
	}
	addrs = slices.Clone(addrs)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	idx := map[netip.Addr]int{}
	for i, a := range addrs {
		idx[a] = i
	}
	type match struct {
		i, j int
		ev   Evidence
	}
	var matches []match
	distinct := map[[2]int]bool{}
	// Only addresses with a counter or rate-limit trials (MPLS labels never merge
	// alone) can be aliases: the others are routers of their own, whatever else is said.
	cand := make([]bool, len(addrs))
	for i, a := range addrs {
		if f := r.ifaces[a]; f != nil {
			cand[i] = r.isCounter(f) || r.rateTried(a)
		}
	}
	for i, a := range addrs {
		if !cand[i] {
			continue
		}
		for j := i + 1; j < len(addrs); j++ {
			b := addrs[j]
			if !cand[j] {
				continue
			}
			if apart != nil && apart(a, b) {
				distinct[[2]int{i, j}] = true
				continue
			}
			switch v, ev := r.Pair(a, b); v {
			case Alias:
				matches = append(matches, match{i, j, ev})
			case Distinct:
				distinct[[2]int{i, j}] = true
			}
		}
	}
	slices.SortStableFunc(matches, func(x, y match) int { return cmp.Compare(y.ev.Confidence, x.ev.Confidence) })
	parent := make([]int, len(addrs))
	members := make([][]int, len(addrs))
	conf := make([]float64, len(addrs))
	evs := make([][]Evidence, len(addrs))
	for i := range parent {
		parent[i], members[i], conf[i] = i, []int{i}, 1
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			i = parent[i]
		}
		return i
	}
	for _, m := range matches {
		ri, rj := find(m.i), find(m.j)
		if ri == rj {
			evs[ri] = append(evs[ri], m.ev)
			continue
		}
		ok := true
		for _, x := range members[ri] {
			for _, y := range members[rj] {
				if distinct[[2]int{min(x, y), max(x, y)}] {
					ok = false
				}
			}
		}
		if !ok {
			continue
		}
		parent[rj] = ri
		members[ri] = append(members[ri], members[rj]...)
		evs[ri] = append(append(evs[ri], evs[rj]...), m.ev)
		conf[ri] = min(conf[ri], conf[rj], m.ev.Confidence)
	}
	var out []Set
	for i := range addrs {
		if find(i) != i {
			continue
		}
		s := Set{Confidence: conf[i], Evidence: evs[i]}
		for _, j := range members[i] {
			s.Addrs = append(s.Addrs, addrs[j])
		}
		slices.SortFunc(s.Addrs, netip.Addr.Compare)
		if len(s.Addrs) > 1 {
			s.Evidence = append(s.Evidence, r.support(s.Addrs)...)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y Set) int { return x.ID().Compare(y.ID()) })
	return out
}

// support is the evidence that agrees with a set without deciding it: equal reply TTLs,
// shared MPLS label stacks.
func (r *Resolver) support(addrs []netip.Addr) []Evidence {
	var out []Evidence
	ttl := uint8(0)
	same := true
	for _, a := range addrs {
		t := r.ifaces[a].replyTTL()
		if ttl == 0 {
			ttl = t
		}
		same = same && t != 0 && t == ttl
	}
	if same {
		out = append(out, Evidence{Kind: "reply-ttl", A: addrs[0], B: addrs[len(addrs)-1], Detail: fmt.Sprintf("reply TTL %d from every address", ttl)})
	}
	for i, a := range addrs {
		for _, b := range addrs[i+1:] {
			for st := range r.ifaces[a].mpls {
				if r.ifaces[b].mpls[st] {
					out = append(out, Evidence{Kind: "mpls", A: a, B: b, Detail: "same label stack " + st})
					break
				}
			}
		}
	}
	return out
}

// Canon maps every address of a multi-address set to the set's ID (its lowest address).
func Canon(sets []Set) map[netip.Addr]netip.Addr {
	out := map[netip.Addr]netip.Addr{}
	for _, s := range sets {
		if len(s.Addrs) < 2 {
			continue
		}
		for _, a := range s.Addrs {
			out[a] = s.ID()
		}
	}
	return out
}
