// Package scan traces many targets at once under real routers' ICMP limits: every target
// gets a complete path, measured where only a probe can tell and inferred elsewhere, and
// every hop says what it is (answered, inferred, silent, rate-limited, lost).
//
// A router answers only a few probes a second toward one prober (Linux: a burst of 6,
// then one a second), so tracing hundreds of targets behind one network hop by hop sees
// almost nothing: the budget of each router is spent on the first few targets. The scan
// spends it where it yields something new, as Doubletree (Donnet et al., SIGMETRICS 2005)
// does, and learns each router's budget as it goes:
//
//   - The destination's distance comes from the destination's own answers (a relay's
//     STUN answer is not rate-limited): probes at TTLs around the distance of the targets
//     already seen in the same prefix; a probe one TTL short that the destination did not
//     answer pins it. No router needs to answer for that.
//   - The hops before it are inferred from the graph the scan has measured so far, for the
//     target's prefix (routing differs by destination): forward from the last hop measured
//     for this target (or the prober) and backward from the first one after it (or the
//     destination), each step only through a node whose next hops (or previous hops) are
//     all known with the MDA stopping rule's confidence. One candidate: the hop is inferred
//     (naming the targets whose probes found it); several: the branch this target's flow
//     takes through a load balancer was not measured, and the hop lists the candidates.
//   - Where nothing can be inferred yet (a prefix's first targets, a node whose next hops
//     are not all found), a probe is sent, if the routers it may reach have budget left
//     (budget.go); otherwise it waits and is retried later, never marked silent for it.
//     Probes go out in a random order over targets and TTLs (Yarrp's lesson), so no router
//     gets a run of them. With budget to spare, the scan also pins which branch a target's
//     flow takes, but it never waits for budget only to do that.
//   - A position where nothing ever answered, though probes reached it over seconds and
//     no measured node lies between its neighbours, is silent: a router that never sends
//     Time Exceeded. A position whose router answered others but not these probes is
//     rate-limited. Anything else unanswered is lost.
//
// The scan is pure over mda.Prober (batches of (target, flow, TTL) probes), so it runs on
// the real engines (mda.EngineProber) and on the simulated network of mda/sim.
package scan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/probe"
)

// Status is what a hop of a target's path is.
type Status string

const (
	Answered    Status = "answered"     // a probe of this target got an answer here
	Inferred    Status = "inferred"     // found by other targets' probes (Hop.From); several candidates when the branch is unknown
	Silent      Status = "silent"       // a router that never answers this prober
	RateLimited Status = "rate-limited" // its router answers, but its budget was spent when this target's probes came
	Lost        Status = "lost"         // unanswered, for no reason the scan could see
)

// Options tune a scan.
type Options struct {
	FirstTTL, MaxTTL int
	Flow             uint16  // the flow (source port) of every target: one Paris flow each
	Confidence       float64 // of the MDA stopping rule that lets a node's next hops be inferred; default 95
	// MaxTime bounds the scan (default 60 s): after it, what is unresolved is reported as it is.
	MaxTime time.Duration
	// MaxProbes bounds the probes (default 200 per target).
	MaxProbes int
	// Tries is how many unanswered probes a position gets before the scan gives up on it
	// (default 4), spaced at least Retry apart (default 1 s: a Linux router's refill).
	Tries int
	Retry time.Duration
	// Seed orders the probes (0: random).
	Seed uint64
	// Now and Sleep are the clock (default: real time; mda/sim has a virtual one).
	Now   func() time.Time
	Sleep func(context.Context, time.Duration) error
	// MaxBatch caps a batch's probes (0: none); a target's probes are not split, so a
	// batch may pass it by one target's. A slow prober should get what it sends in about
	// a second: what a batch learns steers the next, and an interrupted run reports what
	// the batches before it found.
	MaxBatch int
	// Progress, if set, is called after every batch.
	Progress func(Progress)
}

// Progress is where a scan is.
type Progress struct {
	Batches, Probes   int
	Resolved, Targets int // targets whose every hop is resolved
}

// DefaultOptions are trace's TTL range with the scan's limits.
func DefaultOptions() Options {
	return Options{FirstTTL: 1, MaxTTL: 30, Confidence: 99, MaxTime: 60 * time.Second, Tries: 4, Retry: time.Second}
}

// Hop is one TTL of a target's path.
type Hop struct {
	TTL    int
	Status Status
	// Addr is the responder (Answered) or the one candidate (Inferred); invalid otherwise.
	Addr netip.Addr
	// Candidates are the interfaces the hop may be (Inferred with an unmeasured branch;
	// RateLimited and Lost where the graph narrows it down).
	Candidates []netip.Addr
	// From are the targets whose probes measured what an inferred hop rests on.
	From   []int
	RTT    time.Duration // Answered
	Kind   probe.Kind    // Answered: what answered (a Time Exceeded, or an unreachable)
	Probes int           // probes this target sent at this TTL
}

// Target is one target's path.
type Target struct {
	Index   int
	Reached bool
	DestTTL int   // 0: not reached
	Hops    []Hop // FirstTTL up to DestTTL−1 (or up to the last TTL probed)
	Probes  int
	DestRTT time.Duration
	// DestKind is how the destination answered (its STUN answer, an echo reply, ...).
	DestKind probe.Kind
}

// Link is a link between two interfaces measured by one target's consecutive hops (a silent
// hop between them as an invalid address).
type Link struct{ From, To netip.Addr }

// Responder is what the scan learnt of one responder's budget.
type Responder struct {
	Addr    netip.Addr
	Answers int
	Limited bool    // it refused probes: rate-limited
	Burst   float64 // estimated (Limited)
	Rate    float64 // estimated answers per second (Limited)
}

// Result is a scan's outcome.
type Result struct {
	Targets    []Target
	Interfaces []netip.Addr // every responder found (not the destinations)
	Links      []Link
	Responders []Responder
	Probes     int
	Batches    int
	Duration   time.Duration
}

// Run scans the targets (their addresses, in the prober's target order) through p.
func Run(ctx context.Context, p mda.Prober, targets []netip.Addr, opt Options) (*Result, error) {
	if err := opt.fill(); err != nil {
		return nil, err
	}
	if opt.MaxProbes <= 0 {
		opt.MaxProbes = 200 * len(targets)
	}
	s := newState(targets, opt)
	start := opt.Now()
	deadline := start.Add(opt.MaxTime)
	var err error
	for {
		if err = ctx.Err(); err != nil {
			break
		}
		now := opt.Now()
		if !now.Before(deadline) || s.probes >= opt.MaxProbes {
			break
		}
		reqs, wake := s.plan(now)
		if len(reqs) == 0 {
			if wake.IsZero() {
				break // nothing left that a probe could tell
			}
			if err = opt.Sleep(ctx, min(wake.Sub(now), deadline.Sub(now))); err != nil {
				break
			}
			continue
		}
		var answers []mda.Answer
		answers, err = p.Probe(ctx, reqs)
		if err != nil {
			break
		}
		s.learn(reqs, answers, opt.Now())
		if opt.Progress != nil {
			opt.Progress(Progress{Batches: s.batches, Probes: s.probes, Resolved: s.resolved(), Targets: len(targets)})
		}
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil
	}
	res := s.result()
	res.Duration = opt.Now().Sub(start)
	return res, err
}

func (o *Options) fill() error {
	if o.Confidence == 0 {
		o.Confidence = 95
	}
	if o.MaxTime <= 0 {
		o.MaxTime = 60 * time.Second
	}
	if o.Tries <= 0 {
		o.Tries = 4
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	switch {
	case o.FirstTTL < 1 || o.MaxTTL > 255 || o.FirstTTL > o.MaxTTL:
		return fmt.Errorf("TTL range %d..%d outside 1..255", o.FirstTTL, o.MaxTTL)
	case !(o.Confidence > 0 && o.Confidence < 100):
		return fmt.Errorf("confidence %g outside (0, 100)", o.Confidence)
	}
	return nil
}

// pos is one (target, TTL) position's record.
type pos struct {
	answer  netip.Addr // the responder (or the target itself: the destination answered)
	kind    probe.Kind
	dest    bool
	rtt     time.Duration
	tries   int // unanswered probes
	probes  int
	first   time.Time // the first unanswered probe
	last    time.Time // the last probe
	heldFor bool      // a probe was held back for want of budget
}

type tstate struct {
	addr  netip.Addr
	group netip.Prefix
	pos   []pos // by TTL − FirstTTL
	dest  int   // distance, 0 unknown
	// lowest TTL the destination answered at (0 none); TTLs below it that it did not
	// answer are in pos.
	hiDest int
	probes int
	gaveUp bool // the destination never answered up to MaxTTL
	// destSure: a router answered one TTL short of the distance (not only the
	// destination's silence there, which a late or lost answer can fake).
	destSure bool
	silents  map[int]bool
}

type state struct {
	opt     Options
	rng     *rand.Rand
	stop    []int
	targets []*tstate
	graphs  map[netip.Prefix]*graph
	budgets map[string]*budget
	found   map[netip.Addr]int // interface → first target that measured it
	order   []int
	keys    [][]string // the budgets each request of the batch in flight draws on
	probes  int
	batches int
}

func newState(addrs []netip.Addr, opt Options) *state {
	seed := opt.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &state{opt: opt, rng: rand.New(rand.NewPCG(seed, 0x5ca9)), stop: mda.StoppingPoints(opt.Confidence, 64),
		graphs: map[netip.Prefix]*graph{}, budgets: map[string]*budget{}, found: map[netip.Addr]int{}}
	for i, a := range addrs {
		t := &tstate{addr: a, group: groupOf(a), pos: make([]pos, opt.MaxTTL-opt.FirstTTL+1), silents: map[int]bool{}}
		s.targets = append(s.targets, t)
		s.order = append(s.order, i)
	}
	return s
}

// groupOf is the prefix whose targets share their routing (as far as the scan assumes):
// the /24 of IPv4, the /48 of IPv6.
func groupOf(a netip.Addr) netip.Prefix {
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func (s *state) at(t *tstate, ttl int) *pos { return &t.pos[ttl-s.opt.FirstTTL] }

// budgetOf is the budget of a responder, or of an unknown position (a pseudo-responder per
// prefix and TTL, so that a prefix's first targets are traced a burst at a time).
func (s *state) budgetOf(key string) *budget {
	b := s.budgets[key]
	if b == nil {
		b = newBudget()
		if strings.HasPrefix(key, "?") {
			b.floor = Prior.Rate
		}
		s.budgets[key] = b
	}
	return b
}

func addrKey(a netip.Addr) string { return a.String() }

// unknownKey names the pseudo-budget of the positions at ttl of a prefix's targets at
// distance dest: what is not known yet is probed a burst at a time.
func unknownKey(g netip.Prefix, ttl, dest int) string { return fmt.Sprintf("?%s/%d/%d", g, ttl, dest) }

// plan picks the next batch at now; with none, wake is when something may be sent again
// (zero: nothing will).
func (s *state) plan(now time.Time) (reqs []mda.Request, wake time.Time) {
	s.rng.Shuffle(len(s.order), func(i, j int) { s.order[i], s.order[j] = s.order[j], s.order[i] })
	later := func(at time.Time) {
		if wake.IsZero() || at.Before(wake) {
			wake = at
		}
	}
	s.keys = s.keys[:0]
	retry := s.retryGap()
	add := func(ti, ttl int, keys []string) {
		reqs = append(reqs, mda.Request{Target: ti, Flow: s.opt.Flow, TTL: uint8(ttl)})
		s.keys = append(s.keys, keys)
	}
	for _, ti := range s.order {
		t := s.targets[ti]
		if t.gaveUp {
			continue
		}
		if s.opt.MaxBatch > 0 && len(reqs) >= s.opt.MaxBatch {
			later(now) // the rest in the next batch
			break
		}
		if t.dest == 0 {
			for _, ttl := range s.distanceProbes(t, now, later) {
				add(ti, ttl, nil) // the destination's answers: no router's budget
			}
			continue
		}
		for ttl := s.opt.FirstTTL; ttl < t.dest; ttl++ {
			p := s.at(t, ttl)
			if p.answer.IsValid() || t.silents[ttl] {
				continue
			}
			c := s.infer(t, ttl)
			required := c.unknown
			if c.anon || (!required && len(c.nodes) == 1) {
				continue
			}
			if p.tries >= s.opt.Tries || (!required && p.probes > 0) {
				continue
			}
			if !p.last.IsZero() && now.Sub(p.last) < retry {
				if required {
					later(p.last.Add(retry))
				}
				continue
			}
			keys := s.keysOf(t, ttl, c)
			if !s.affordable(keys, now) {
				p.heldFor = true
				if required {
					later(now.Add(s.opt.Retry / 4))
				}
				continue
			}
			for _, k := range keys {
				s.budgetOf(k).plan(1 / float64(len(keys)))
			}
			add(ti, ttl, keys)
		}
	}
	return reqs, wake
}

// retryGap is how long an unanswered position waits before it is probed again: a
// Linux router's refill (Retry) once some responder showed a limit; without one, nothing
// is gained by waiting.
func (s *state) retryGap() time.Duration {
	if s.anyLimited() {
		return s.opt.Retry
	}
	return 0
}

// anyLimited reports whether a router (not an unknown position) showed a limit.
func (s *state) anyLimited() bool {
	for k, b := range s.budgets {
		if b.limited && !strings.HasPrefix(k, "?") {
			return true
		}
	}
	return false
}

// distanceProbes are the probes that pin t's distance: around its prefix's known distances
// (or every TTL for a prefix's first targets), and each TTL one below the lowest the
// destination answered at. They need no router's answer, so they ignore budgets (except
// for a prefix's first, full traces, whose answers build the graph).
func (s *state) distanceProbes(t *tstate, now time.Time, later func(time.Time)) []int {
	var out []int
	want := func(ttl int) {
		if ttl < s.opt.FirstTTL || ttl > s.opt.MaxTTL {
			return
		}
		p := s.at(t, ttl)
		if p.answer.IsValid() || p.probes >= 2 {
			return
		}
		if gap := s.retryGap() / 4; !p.last.IsZero() && now.Sub(p.last) < gap {
			later(p.last.Add(gap))
			return
		}
		out = append(out, ttl)
	}
	if t.hiDest > 0 {
		// Answered at hiDest: the TTL below decides (a router's answer or two probes that
		// the destination did not answer).
		want(t.hiDest - 1)
		return out
	}
	guesses := s.distancesOf(t.group)
	if len(guesses) == 0 {
		// A prefix's first targets: a full trace, a burst of targets at a time.
		key := unknownKey(t.group, 0, 0)
		b := s.budgetOf(key)
		if s.at(t, s.opt.FirstTTL).probes == 0 && b.avail(now) < 1 {
			later(now.Add(s.opt.Retry / 4))
			return nil
		}
		if s.at(t, s.opt.FirstTTL).probes == 0 {
			b.plan(1)
			b.got++ // a full trace is never refused: this pseudo-budget only spreads them
		}
		for ttl := s.opt.FirstTTL; ttl <= s.opt.MaxTTL; ttl++ {
			if s.at(t, ttl).probes == 0 {
				out = append(out, ttl)
			}
		}
		if len(out) == 0 {
			t.gaveUp = true // every TTL probed, the destination never answered
		}
		return out
	}
	hi := 0
	for _, g := range guesses {
		want(g - 1)
		want(g)
		hi = max(hi, g)
	}
	// Not reached at any guess yet: look further.
	if s.at(t, min(hi, s.opt.MaxTTL)).probes > 0 {
		for ttl := hi + 1; ttl <= min(hi+3, s.opt.MaxTTL); ttl++ {
			want(ttl)
		}
		if hi+1 > s.opt.MaxTTL || s.at(t, min(hi+3, s.opt.MaxTTL)).probes >= 2 {
			t.gaveUp = true
		}
	}
	return out
}

// distancesOf are the destination distances seen in prefix g, most frequent first (at most 3).
func (s *state) distancesOf(g netip.Prefix) []int {
	count := map[int]int{}
	for _, t := range s.targets {
		if t.group == g && t.dest > 0 {
			count[t.dest]++
		}
	}
	ds := make([]int, 0, len(count))
	for d := range count {
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b int) int { return cmp.Or(count[b]-count[a], a-b) })
	return ds[:min(len(ds), 3)]
}

// keysOf are the budgets a probe at (t, ttl) draws on: its candidates', or the unknown
// position's.
func (s *state) keysOf(t *tstate, ttl int, c cands) []string {
	var keys []string
	// Only what the graph is sure of: an unanswered probe must not count against routers
	// it may never have reached (a silent hop's neighbours, a branch it does not take).
	for _, n := range c.nodes {
		if n.router() {
			keys = append(keys, addrKey(n.addr))
		}
	}
	if len(keys) == 0 && c.looseBoth && len(c.loose) == 1 && c.loose[0].router() {
		// Not certain, but the only router known between what comes before and after.
		keys = append(keys, addrKey(c.loose[0].addr))
	}
	if len(keys) == 0 {
		keys = append(keys, unknownKey(t.group, ttl, t.dest))
	}
	return keys
}

// affordable reports whether the budgets of keys have a probe's worth left between them.
func (s *state) affordable(keys []string, now time.Time) bool {
	sum := 0.0
	for _, k := range keys {
		sum += max(s.budgetOf(k).avail(now), 0)
	}
	return sum >= 1-1e-9
}

// learn records a batch's answers.
func (s *state) learn(reqs []mda.Request, answers []mda.Answer, now time.Time) {
	s.batches++
	s.probes += len(reqs)
	got := map[mda.Request]mda.Answer{}
	for _, a := range answers {
		if a.From.IsValid() {
			got[a.Request] = a
		}
	}
	for i, rq := range reqs {
		t := s.targets[rq.Target]
		ttl := int(rq.TTL)
		p := s.at(t, ttl)
		p.probes++
		p.last = now
		t.probes++
		a, ok := got[rq]
		if !ok {
			if p.tries == 0 {
				p.first = now
			}
			p.tries++
			// One of the routers it may have reached refused it (or it was lost).
			for _, k := range s.keys[i] {
				s.budgetOf(k).miss += 1 / float64(len(s.keys[i]))
			}
			continue
		}
		p.answer, p.dest, p.rtt, p.kind = a.From, a.Dest, a.RTT, a.Kind
		if a.Dest {
			if t.hiDest == 0 || ttl < t.hiDest {
				t.hiDest = ttl
			}
			continue
		}
		if _, ok := s.found[a.From]; !ok {
			s.found[a.From] = rq.Target
		}
		s.budgetOf(addrKey(a.From)).got++
		if len(s.keys[i]) == 1 && strings.HasPrefix(s.keys[i][0], "?") {
			s.budgetOf(s.keys[i][0]).got++ // the unknown position's pseudo-budget
		}
	}
	// Distances: the destination answered at hiDest and not one below.
	for _, t := range s.targets {
		if t.dest != 0 || t.hiDest == 0 {
			continue
		}
		if t.hiDest == s.opt.FirstTTL {
			t.dest = t.hiDest
			continue
		}
		below := s.at(t, t.hiDest-1)
		if (below.answer.IsValid() && !below.dest) || below.tries >= 2 {
			t.dest = t.hiDest
			t.destSure = below.answer.IsValid()
		}
	}
	// Unanswered probes refuse the budgets they drew on (planned shares not answered).
	for _, b := range s.budgets {
		b.settle(now)
	}
	s.rebuild()
	s.findSilent(now)
}

// findSilent marks positions where no router ever answered. The first between two
// interfaces A and B of a prefix (measured or certain): probes between them (over all
// targets with both) went unanswered three times, over at least two Retry periods if any
// responder of the run is rate-limited (a limited router refills within one), and the
// graph has no answering node after A or before B (graph.between). After that, a position that went unanswered where the graph has
// nothing but a silent hop is silent too.
func (s *state) findSilent(now time.Time) {
	type gap struct {
		g          netip.Prefix
		prev, next node
	}
	type seen struct {
		tries       int
		first, last time.Time
	}
	gaps := map[gap]*seen{}
	var at []struct {
		t   *tstate
		ttl int
		gap gap
	}
	for _, t := range s.targets {
		if t.dest == 0 {
			continue
		}
		for ttl := s.opt.FirstTTL; ttl < t.dest; ttl++ {
			p := s.at(t, ttl)
			if p.answer.IsValid() || t.silents[ttl] {
				continue
			}
			// Both sides must agree: a walk from one side alone ends on the silent hop of
			// another branch as readily as on this one's.
			if c := s.infer(t, ttl); c.looseBoth && len(c.loose) > 0 && !slices.ContainsFunc(c.loose, func(n node) bool { return !n.anon }) {
				t.silents[ttl] = true
				continue
			}
			if p.tries == 0 {
				continue
			}
			prev, next, ok := s.neighbours(t, ttl)
			if !ok {
				continue
			}
			k := gap{t.group, prev, next}
			sn := gaps[k]
			if sn == nil {
				sn = &seen{first: p.first, last: p.last}
				gaps[k] = sn
			}
			sn.tries += p.tries
			sn.first, sn.last = minTime(sn.first, p.first), maxTime(sn.last, p.last)
			at = append(at, struct {
				t   *tstate
				ttl int
				gap gap
			}{t, ttl, k})
		}
	}
	span := time.Duration(0)
	if s.anyLimited() {
		span = 2 * s.opt.Retry
	}
	// A TTL where some router answered for targets of the prefix at the same distance is
	// not taken for silent: a contended, rate-limited router may stay unanswered for one
	// gap's few probes. (A silent router on one branch beside answering ones stays
	// unresolved, rather than a rate-limited one be called silent.)
	type place struct {
		g         netip.Prefix
		dest, ttl int
	}
	answered := map[place]bool{}
	for _, t := range s.targets {
		if !t.destSure {
			continue // a distance one too long would put its routers at the wrong distance
		}
		for ttl := s.opt.FirstTTL; t.dest != 0 && ttl < t.dest; ttl++ {
			if p := s.at(t, ttl); p.answer.IsValid() && !p.dest {
				answered[place{t.group, t.dest, ttl}] = true
			}
		}
	}
	for _, x := range at {
		sn := gaps[x.gap]
		if sn.tries >= 3 && sn.last.Sub(sn.first) >= span && !answered[place{x.gap.g, x.t.dest, x.ttl}] &&
			!s.graphs[x.gap.g].between(x.gap.prev, x.gap.next) {
			x.t.silents[x.ttl] = true
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// neighbours are t's nodes right before and after ttl (the prober, the destination):
// measured, or certain (the graph has one candidate there).
func (s *state) neighbours(t *tstate, ttl int) (prev, next node, ok bool) {
	prev, ok1 := s.certain(t, ttl-1)
	next, ok2 := s.certain(t, ttl+1)
	return prev, next, ok1 && ok2
}

// certain is t's node at ttl when a probe measured it or the graph leaves one candidate.
func (s *state) certain(t *tstate, ttl int) (node, bool) {
	if n, ok := s.measured(t, ttl); ok {
		return n, true
	}
	if ttl < s.opt.FirstTTL || ttl > s.opt.MaxTTL {
		return node{}, false
	}
	if c := s.infer(t, ttl); !c.unknown && len(c.nodes) == 1 {
		return c.nodes[0], true
	}
	return node{}, false
}

// measured is t's node at ttl if a probe measured it (the prober at FirstTTL−1, the
// destination at its distance).
func (s *state) measured(t *tstate, ttl int) (node, bool) {
	switch {
	case ttl < s.opt.FirstTTL:
		return node{ttl: uint8(ttl), root: true}, true
	case t.dest != 0 && ttl == t.dest:
		return node{ttl: uint8(ttl), dst: true}, true
	case ttl > s.opt.MaxTTL:
		return node{}, false
	}
	p := s.at(t, ttl)
	switch {
	case p.answer.IsValid() && !p.dest:
		return node{addr: p.answer, ttl: uint8(ttl)}, true
	case t.silents[ttl]:
		// One silent vertex per TTL of a prefix: which silent router it is cannot be
		// told, and keying it by a neighbour would split it by what each target measured.
		return node{anon: true, ttl: uint8(ttl)}, true
	}
	return node{}, false
}

func (s *state) resolved() int {
	n := 0
	for _, t := range s.targets {
		if t.dest == 0 {
			continue
		}
		ok := true
		for ttl := s.opt.FirstTTL; ttl < t.dest && ok; ttl++ {
			p := s.at(t, ttl)
			if p.answer.IsValid() || t.silents[ttl] {
				continue
			}
			c := s.infer(t, ttl)
			ok = !c.unknown
		}
		if ok {
			n++
		}
	}
	return n
}
