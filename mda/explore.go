package mda

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/alias"
	"github.com/turnpath/turnpath/pace"
)

// probeState is where one (flow, TTL) probe is in its life. The state changes only
// through the transitions below (the methods of hop):
//
//	unprobed ──send──▶ sent ──answer──▶ answered (from any state once sent: late answers count)
//	sent ──pause──▶ backing off | on trial ──send──▶ sent (the re-send after the pause)
//	sent | backing off | on trial ──resendNow──▶ sent (the pause dropped)
//	sent | backing off | on trial ──hold──▶ held ──release──▶ the state it was held in
//	sent | backing off | on trial ──callSilent──▶ silent | silent untried
//	silent untried ──reopen──▶ sent (rate limiting seen: it deserves a trial after all)
//	silent | silent untried ──doubt──▶ sent (what follows its predecessor answers others)
//	any but unprobed, answered ──giveUp──▶ given up
//
// Held lasts one planning pass: every pass releases the probes and holds again those
// that still wait for something. A probe held while backing off keeps its pause, and its
// TTL stays paused until that pause is over.
type probeState uint8

const (
	stUnprobed probeState = iota // never sent
	stSent                       // sent, unanswered; re-sent at once if wanted
	// Unanswered though the next hop of its predecessor answers other flows (rate
	// limiting or loss): re-sent at readyAt, a back-off after its last send.
	stBackingOff
	// To be re-sent alone at readyAt, after a pause with nothing sent, to tell a silent
	// router from a rate-limited one.
	stOnTrial
	// Unanswered and not re-sent until what it means is known: blocker's fate (the probe
	// re-sent for its predecessor vertex, or its own predecessor hop), or, without
	// blocker, where the flows answered at its TTL come from.
	stHeld
	stAnswered
	stSilent // unanswered and consistent with a silent router (provisional)
	// Silent, called without a trial before any sign of rate limiting: re-opened if
	// rate limiting shows.
	stSilentUntried
	// Unanswered and given up (its back-offs ran out, or the probe it depended on was
	// given up): it counts nowhere.
	stGivenUp
)

var stateNames = [...]string{"unprobed", "sent", "backing off", "on trial", "held", "answered", "silent", "silent untried", "given up"}

func (s probeState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("probeState(%d)", s)
}

// open: sent, unanswered, and nothing concluded from it yet.
func (s probeState) open() bool {
	return s == stSent || s == stBackingOff || s == stOnTrial || s == stHeld
}

func (s probeState) silent() bool { return s == stSilent || s == stSilentUntried }

// unanswered: open or called silent; neither answered nor given up.
func (s probeState) unanswered() bool { return s.open() || s.silent() }

// flowEnd says whether an answered flow ends at a hop.
type flowEnd uint8

const (
	endNone        flowEnd = iota
	endDest                // the destination answered
	endUnreachable         // a router answered with an ICMP error other than Time Exceeded
)

type hop struct {
	st       probeState
	resume   probeState // held: the state to go back to when released
	blocker  *hop       // held: what it waits for (nil: flows being traced back)
	end      flowEnd    // answered: whether, and how, the flow ends here
	addr     netip.Addr
	key      vkey
	rtt      time.Duration
	nat      string
	tries    int // sends
	trials   int // sends on trial
	backoffs int // sends after a pause (backing off or on trial)
	sentIn   int // round of the last send
	ansIn    int // round of the answer
	last     time.Time
	readyAt  time.Time // backing off or on trial (held ones too): when it may go

	// Marks of the planning pass, not of the probe's life: every plan clears and sets
	// them again.
	want  bool // wanted by this planning pass
	keyed bool // key is valid (answered, or silent with a known predecessor)
}

// The transitions of probeState: the only places a hop's st changes.

// send records that the probe goes now: its first send, a re-send at once, or the re-send
// after its pause.
func (h *hop) send(round int, now time.Time) {
	switch h.st {
	case stBackingOff:
		h.backoffs++
	case stOnTrial:
		h.backoffs++
		h.trials++
	}
	h.st = stSent
	h.tries++
	h.sentIn = round
	h.last = now
	h.readyAt = time.Time{}
}

// answer records an answer, whatever the probe's state: one that comes late still
// counts.
func (h *hop) answer(a Answer, round int) {
	h.st, h.addr, h.rtt, h.nat = stAnswered, a.From, a.RTT, a.NAT
	switch {
	case a.Dest:
		h.end = endDest
	case a.Unreachable:
		h.end = endUnreachable
	default:
		h.end = endNone
	}
	h.ansIn = round
	h.readyAt = time.Time{}
}

// pause schedules a re-send after a back-off of d from the last send, backing off or on
// trial (kind). A probe already paused keeps its time and takes the kind.
func (h *hop) pause(kind probeState, d time.Duration) {
	if h.st == stSent {
		h.readyAt = h.last.Add(d)
	}
	h.st = kind
}

// resendNow drops a pause: the probe goes again as soon as it is wanted.
func (h *hop) resendNow() { h.st, h.readyAt = stSent, time.Time{} }

// hold keeps the probe from being re-sent until blocker (nil: the flows traced back)
// tells what it means. A pause in progress is kept for the release.
func (h *hop) hold(blocker *hop) { h.resume, h.st, h.blocker = h.st, stHeld, blocker }

// release ends a hold: every planning pass decides afresh what a probe waits for.
func (h *hop) release() {
	if h.st == stHeld {
		h.st = h.resume
	}
	h.blocker = nil
}

// callSilent concludes a silent router; untried: without a trial, before any rate
// limiting showed.
func (h *hop) callSilent(untried bool) {
	h.st, h.readyAt = stSilent, time.Time{}
	if untried {
		h.st = stSilentUntried
	}
}

// reopen takes back a silent call made without a trial, now that rate limiting shows.
func (h *hop) reopen() { h.st, h.trials = stSent, 0 }

// doubt takes back a silent call: what follows the predecessor answers other flows.
func (h *hop) doubt() { h.st = stSent }

// giveUp stops re-sending the probe and counting it.
func (h *hop) giveUp() { h.st, h.readyAt = stGivenUp, time.Time{} }

// pausing reports whether the probe's next send waits for a pause (held ones resume
// theirs).
func (h *hop) pausing() bool {
	s := h.st
	if s == stHeld {
		s = h.resume
	}
	return s == stBackingOff || s == stOnTrial
}

type flow struct {
	id   uint16
	hops []hop // by TTL
	dmin int   // smallest TTL answered by the destination; 0 = none yet
}

// vkey identifies a vertex of the graph: an interface (addr), or an anonymous hop keyed by
// the last answering interface before it (prev; invalid = the prober) and its depth after
// it. The zero vkey is the prober itself.
type vkey struct {
	addr  netip.Addr
	prev  netip.Addr
	depth uint8
}

var srcKey = vkey{}

func (k vkey) anon() bool { return !k.addr.IsValid() && k.depth > 0 }

// after returns the key of a silent hop that follows k.
func (k vkey) after() vkey {
	switch {
	case k.addr.IsValid():
		return vkey{prev: k.addr, depth: 1}
	case k.depth == 0:
		return vkey{depth: 1}
	case k.depth == 255:
		return k
	}
	return vkey{prev: k.prev, depth: k.depth + 1}
}

func (k vkey) id() string {
	if k.addr.IsValid() {
		return k.addr.String()
	}
	if k.depth == 0 {
		return "prober"
	}
	return AnonID(k.prev, int(k.depth))
}

// layer is what is known at one TTL in one planning pass.
type layer struct {
	verts     map[vkey][]int // vertex -> flows (indices, ascending) keyed there
	order     []vkey         // verts' keys, sorted
	dests     map[vkey]bool  // vertices where flows end: the destination, or unreachable
	unreach   map[vkey]bool  // ... by an ICMP error from a router
	ansPreds  map[vkey]bool  // predecessors of the flows answered here
	ansUnk    []*flow        // answered flows whose predecessor is not known (yet)
	unsettled int            // flows sent here whose vertex is not known (or given up)
	answered  int            // flows answered here
	ansSince  map[vkey]int   // predecessor -> last round a flow from it was answered here
	single    bool           // exactly one vertex, not the destination, and no flow ended before
	one       vkey           // that vertex
	resolved  int
}

func (ly *layer) alive() []vkey {
	var out []vkey
	for _, k := range ly.order {
		if !ly.dests[k] {
			out = append(out, k)
		}
	}
	return out
}

// explorer explores toward one target: it plans the probes the stopping rules want
// (rules.go), sends them in batches with the other targets of its wave (exploreAll) and
// records what comes back.
type explorer struct {
	o      Options
	p      Prober
	target int
	nk     func(k int) int
	flows  []*flow
	layers []layer
	known  *knowledge // shared across targets (RunMany); nil for Run

	sent, answered, rounds int
	truncated              string
	// limited: some probe was answered only when re-sent (rate limiting or loss seen).
	// Until then an unanswered probe is not put on trial (which costs pauses of
	// RateLimitBackoff): a network that answers every probe at once does not rate
	// limit, and its silent routers are called silent after the plain re-sends. Once
	// limited, the hops called silent that way are put on trial after all.
	limited, reopened bool
	full              map[int]bool   // TTLs escalated to per-interface MDA
	shared            map[int][]vkey // TTL -> expected vertices taken from knowledge
	sharedL           map[int]bool   // layers (near-end TTL) taken from knowledge
	minDmin           int
	fam               uint8  // the target's family, 4 or 6 (famOf; 0: unknown): whose ICMP budgets it spends
	counted           []*hop // open probes node control waits for or counts on (rules)
	agg               map[vkey]*vertexAgg
	seenAt            map[vkey][]int // TTLs of each vertex in the last pass
	silentAfter       map[vkey]bool  // vertices followed by a silent hop, last pass
	// rep is, per predecessor vertex of unanswered probes, the one probe re-sent to find
	// out what follows it, whatever the TTL (one interface, whose next hop is silent or
	// not at every TTL it shows at: unequal branches bring it at several); the others
	// wait for it. Rebuilt by every planning pass.
	rep         map[vkey]*hop
	unans       map[netip.Addr]int    // unanswered sends one hop past an answering interface
	unansRounds map[netip.Addr][2]int // ... the first and last rounds they went in
	// lastSend is when the last batch went, shared by the explorers of a wave: a
	// trial waits RateLimitBackoff after it.
	lastSend *time.Time
	done     time.Time // when the exploration finished

	// Alias resolution (Options.Aliases): res collects every answer's evidence (shared
	// by the explorers of a RunMany), canon maps each interface of a router that
	// answered from several to the router's ID, as of resolver version resVer; sets
	// are the routers.
	res   *alias.Resolver
	canon map[netip.Addr]netip.Addr
	sets  []alias.Set
	// confirmed is canon without the provisional groups: interfaces that may still
	// prove to be one router (alias.Resolver.Open) are keyed as one until they do or do
	// not, so that one round of replies can tell before the layer after them is taken
	// for meshed. Once the rules want nothing more, strict drops the provisional groups
	// for good and the rules look again.
	confirmed map[netip.Addr]netip.Addr
	strict    bool
	// extra are probes outside the rules, sent with the next batch: answered (flow,
	// TTL) pairs asked again for their interfaces' IP IDs (aliasProbes), once.
	extra      []Request
	extraAt    time.Time // not before
	aliasAsked int       // rounds of aliasProbes so far
	resVer     int
	apart      map[[2]netip.Addr]bool // interfaces one flow answered from at different TTLs
	// rate is the rate-limit test of provisional groups IP IDs cannot decide
	// (ratealias.go).
	rate rateState
	// quiet: a planning pass that only rebuilds the layers (for the graph), wanting
	// nothing.
	quiet bool
}

func newExplorer(p Prober, target int, o Options, known *knowledge) *explorer {
	conf := o.Confidence
	r := &explorer{o: o, p: p, target: target, known: known,
		full: map[int]bool{}, seenAt: map[vkey][]int{}, silentAfter: map[vkey]bool{}, shared: map[int][]vkey{}, sharedL: map[int]bool{}}
	r.layers = make([]layer, o.MaxTTL+2)
	r.lastSend = new(time.Time)
	switch {
	case o.Aliases && known != nil:
		r.res = known.res
	case o.Aliases:
		r.res = alias.New(alias.DefaultOptions())
	}
	table := stoppingTable(conf, 16)
	r.nk = func(k int) int {
		if k < 1 {
			k = 1
		}
		if k > len(table) {
			table = stoppingTable(conf, max(k, 2*len(table)))
		}
		return table[k-1]
	}
	return r
}

func (r *explorer) now() time.Time { return r.o.now() }

// now is Options.Now, or the system clock.
func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return pace.System.Now()
}

func (r *explorer) sleep(ctx context.Context, d time.Duration) error {
	if r.o.Sleep != nil {
		return r.o.Sleep(ctx, d)
	}
	return pace.System.Sleep(ctx, d)
}

func (r *explorer) newFlow() (*flow, bool) {
	if len(r.flows) >= r.o.MaxFlows {
		r.truncated = "max-flows"
		return nil, false
	}
	f := &flow{id: r.o.FlowBase + uint16(len(r.flows)), hops: make([]hop, r.o.MaxTTL+2)}
	r.flows = append(r.flows, f)
	return f, true
}

func (r *explorer) beyond(f *flow, t int) bool { return f.dmin > 0 && t > f.dmin }

// keyAt returns the vertex of flow f at TTL t: measured, or inferred when every flow passes
// a single vertex at t.
func (r *explorer) keyAt(f *flow, t int) (vkey, bool) {
	if t < r.o.FirstTTL {
		return srcKey, true
	}
	if r.beyond(f, t) {
		return vkey{}, false
	}
	h := &f.hops[t]
	if h.keyed {
		return h.key, true
	}
	if r.layers[t].single {
		return r.layers[t].one, true
	}
	return vkey{}, false
}

// answersAfter reports whether a vertex was seen (in the last pass, or by an earlier
// target: the knowledge) followed by an answering one. What an earlier target saw counts
// under ICMP limits above all: the router after the prober, probed once for a target
// whose predecessor's budget went to the one before, would be called silent.
func (r *explorer) answersAfter(u vkey) bool {
	if a := r.agg[u]; a != nil {
		for v := range a.succ {
			if !v.anon() {
				return true
			}
		}
	}
	if k := r.known; k != nil && !k.bad[u] {
		for v := range k.succ[u] {
			if !v.anon() {
				return true
			}
		}
	}
	return false
}

func (r *explorer) truncatedNow() bool { return r.truncated != "" }

func (r *explorer) backoff(n int) time.Duration {
	return r.o.RateLimitBackoff << min(n, 3)
}

// exploreAll explores several targets at once (a wave of RunMany), in rounds: each round
// one batch with every target's wanted probes, until rate limiting is seen. A probe on
// trial still goes alone among the targets of its family: they share routers, and the
// pause before a trial is counted from the last probe of any of them (lastSend is shared
// by a family). The explorers' done times are set as they finish.
//
// Routers limit their ICMP per destination (Linux: a token bucket per peer address), and
// the prober's IPv4 and IPv6 addresses are two destinations: the targets of one family
// never spend the other's budgets, and so the families go side by side, even once rate
// limiting shows.
func exploreAll(ctx context.Context, p Prober, wave []*explorer) error {
	last := map[uint8]*time.Time{}
	for _, r := range wave {
		if last[r.fam] == nil {
			last[r.fam] = new(time.Time)
		}
		r.lastSend = last[r.fam]
	}
	active := slices.Clone(wave)
	byTarget := map[int][]Answer{}
	for len(active) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := active[0].now()
		for _, r := range active {
			r.plan()
		}
		step := stepOf(active)
		var reqs []Request
		var sent []*explorer
		var wait time.Duration
		for _, r := range step {
			q, w := r.batch(now)
			if len(q) == 0 && w <= 0 && !r.truncatedNow() {
				// Once more: a pass sees what the one before learnt (e.g. a vertex's
				// next hops at another TTL) and may want more.
				r.plan()
				q, w = r.batch(now)
			}
			switch {
			case len(q) > 0:
				reqs = append(reqs, q...)
				sent = append(sent, r)
			case w > 0:
				if wait == 0 || w < wait {
					wait = w
				}
			default:
				r.done = now
			}
		}
		active = slices.DeleteFunc(active, func(r *explorer) bool { return !r.done.IsZero() })
		if len(reqs) == 0 {
			if wait > 0 {
				if err := active[0].sleep(ctx, wait); err != nil {
					return err
				}
			}
			continue
		}
		answers, err := p.Probe(ctx, reqs)
		if err != nil {
			return err
		}
		clear(byTarget)
		for _, a := range answers {
			byTarget[a.Target] = append(byTarget[a.Target], a)
		}
		for _, r := range sent {
			r.rounds++
			r.apply(byTarget[r.target])
		}
	}
	return nil
}

// stepOf picks the explorers that send this round, per family (see exploreAll): one with
// a probe on trial goes alone, the others of its family send nothing until it is through,
// so that the pause before it is one; and once a router of the family is seen to rate
// limit, one target at a time: the targets share the routers' ICMP budgets, and the
// probes of one would take the answers another's back-offs wait for.
func stepOf(active []*explorer) []*explorer {
	var fams []uint8
	byFam := map[uint8][]*explorer{}
	for _, r := range active {
		if byFam[r.fam] == nil {
			fams = append(fams, r.fam)
		}
		byFam[r.fam] = append(byFam[r.fam], r)
	}
	// Rate limiting seen in one family is expected in the other (the same routers, with
	// the same settings): each then goes one target at a time.
	limited := slices.ContainsFunc(active, func(r *explorer) bool { return r.limited })
	var step []*explorer
	for _, f := range fams {
		rs := byFam[f]
		switch i := slices.IndexFunc(rs, (*explorer).trialWanted); {
		case i >= 0:
			step = append(step, rs[i])
		case limited:
			step = append(step, rs[0])
		default:
			step = append(step, rs...)
		}
	}
	return step
}

// famOf is the budget family of a target (see exploreAll): 4, 6, or 0 when unknown.
func famOf(a netip.Addr) uint8 {
	switch {
	case !a.IsValid():
		return 0
	case a.Unmap().Is4():
		return 4
	}
	return 6
}

// trialWanted reports whether a probe of the explorer waits to go on trial (see batch).
func (r *explorer) trialWanted() bool {
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if h.want && h.st == stOnTrial && !r.beyond(f, t) {
				return true
			}
		}
	}
	return false
}

// batch collects the wanted probes that can go now. With none, wait is how long until a
// backed-off one can (0: nothing left to do).
func (r *explorer) batch(now time.Time) (reqs []Request, wait time.Duration) {
	if len(r.extra) > 0 && r.extraAt.After(now) {
		return nil, r.extraAt.Sub(now)
	}
	var next time.Time
	var again []Request
	// A probe on trial (see classify) goes alone, after a pause during which nothing
	// is sent: a rate-limited router then has budget for it, whatever TTL it shows at.
	var trial *hop
	var trialReq Request
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if !h.want || h.st != stOnTrial || r.beyond(f, t) {
				continue
			}
			if quiet := r.lastSend.Add(r.o.RateLimitBackoff); h.readyAt.Before(quiet) {
				// The pause is counted from the last probe sent, whatever it was: a probe
				// left unwanted for a while keeps an old readyAt, and others went meanwhile.
				h.readyAt = quiet
			}
			switch {
			case h.readyAt.After(now):
				if next.IsZero() || h.readyAt.Before(next) {
					next = h.readyAt
				}
			case trial == nil:
				trial, trialReq = h, Request{Target: r.target, Flow: f.id, TTL: uint8(t)}
			default:
				h.readyAt = now.Add(r.o.RateLimitBackoff) // the next one, after its own pause
			}
		}
	}
	if trial != nil || !next.IsZero() {
		if trial == nil {
			return nil, max(next.Sub(now), time.Millisecond)
		}
		if r.sent >= r.o.MaxProbes {
			r.truncated = "max-probes"
			return nil, 0
		}
		trial.send(r.rounds, now)
		r.sent++
		*r.lastSend = now
		return []Request{trialReq}, 0
	}
	// A TTL with probes backing off gets no new ones meanwhile: they would take the
	// ICMP budget the router is refilling. The pause lasts until the last of them is
	// due, and over the round that re-sends them, whether or not they are still wanted:
	// a probe nobody re-sends (held, or no longer needed by the rules) must not keep
	// its TTL closed for good, and the new probes waiting behind it set the wait.
	paused := make([]time.Time, r.o.MaxTTL+2)
	resending := make([]bool, r.o.MaxTTL+2)
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if !h.pausing() || r.beyond(f, t) {
				continue
			}
			if h.readyAt.After(paused[t]) {
				paused[t] = h.readyAt
			}
			if h.want && h.st != stHeld && !h.readyAt.After(now) {
				resending[t] = true
			}
		}
	}
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if !h.want || r.beyond(f, t) {
				continue
			}
			switch h.st {
			case stUnprobed:
				if resending[t] {
					continue
				}
				if until := paused[t]; until.After(now) {
					if next.IsZero() || until.Before(next) {
						next = until
					}
					continue
				}
			case stSent, stBackingOff, stOnTrial:
				if !h.readyAt.IsZero() && h.readyAt.After(now) {
					if next.IsZero() || h.readyAt.Before(next) {
						next = h.readyAt
					}
					continue
				}
			default:
				continue
			}
			if r.sent+len(reqs)+len(again) >= r.o.MaxProbes {
				r.truncated = "max-probes"
				break
			}
			resend := h.pausing()
			h.send(r.rounds, now)
			q := Request{Target: r.target, Flow: f.id, TTL: uint8(t)}
			if resend {
				again = append(again, q)
			} else {
				reqs = append(reqs, q)
			}
		}
	}
	// Re-sends after a back-off first: a rate-limited router answers the first probes
	// that reach it.
	reqs = append(again, reqs...)
	reqs = append(reqs, r.extra...)
	r.extra = nil
	r.sent += len(reqs)
	if len(reqs) > 0 {
		*r.lastSend = now
	}
	if len(reqs) == 0 && !next.IsZero() {
		wait = max(next.Sub(now), time.Millisecond)
	}
	return reqs, wait
}

func (r *explorer) apply(answers []Answer) {
	r.rateRecord(answers)
	for _, a := range answers {
		if !a.From.IsValid() || a.Target != r.target {
			continue
		}
		i := int(a.Flow) - int(r.o.FlowBase)
		t := int(a.TTL)
		if i < 0 || i >= len(r.flows) || t < r.o.FirstTTL || t > r.o.MaxTTL {
			continue
		}
		f := r.flows[i]
		h := &f.hops[t]
		if r.res != nil && !a.Dest && h.st != stUnprobed {
			// Every answer is evidence, the re-sends for alias resolution too (aliasProbes).
			r.res.Add(alias.Reply{Addr: a.From, At: a.At, IPID: a.IPID, HasIPID: a.HasIPID, ReplyTTL: a.ReplyTTL, MPLS: a.MPLS})
		}
		if h.st == stAnswered || h.st == stUnprobed {
			continue
		}
		r.answered++
		if h.tries > 1 {
			r.limited = true
		}
		h.answer(a, r.rounds)
		if h.end != endNone && (f.dmin == 0 || t < f.dmin) {
			f.dmin = t
		}
	}
}

// plan classifies the unanswered probes, rebuilds the layers and marks the probes the
// stopping rules want.
func (r *explorer) plan() {
	o := &r.o
	if r.layers == nil {
		r.layers = make([]layer, o.MaxTTL+2)
	}
	if !r.quiet {
		r.resolveAliases()
	}
	r.minDmin = 0
	for _, f := range r.flows {
		if f.dmin > 0 && (r.minDmin == 0 || f.dmin < r.minDmin) {
			r.minDmin = f.dmin
		}
		for t := range f.hops {
			f.hops[t].want = false
			f.hops[t].keyed = false
		}
	}
	if r.limited && !r.reopened {
		r.reopened = true
		clear(r.silentAfter) // or the re-opened hops would be called silent again at once
		for _, f := range r.flows {
			for t := range f.hops {
				if h := &f.hops[t]; h.st == stSilentUntried {
					h.reopen()
				}
			}
		}
	}
	knownSilent := map[vkey]bool{} // predecessors followed by a silent hop
	clear(r.rep)
	if r.rep == nil {
		r.rep = map[vkey]*hop{}
	}
	for k := range r.silentAfter {
		knownSilent[k] = true
	}
	// Unanswered sends one hop past each answering interface, for calling a silent router
	// on the evidence of several flows (see classify).
	clear(r.unans)
	clear(r.unansRounds)
	if r.unans == nil {
		r.unans, r.unansRounds = map[netip.Addr]int{}, map[netip.Addr][2]int{}
	}
	for _, f := range r.flows {
		for t := o.FirstTTL + 1; t <= o.MaxTTL; t++ {
			prev, h := &f.hops[t-1], &f.hops[t]
			if prev.st == stAnswered && prev.end == endNone && h.st.unanswered() && !r.beyond(f, t) {
				pa := r.canonOf(prev.addr)
				r.unans[pa] += h.tries
				first := h.sentIn
				if h.tries > 1 {
					first-- // sent in an earlier round too
				}
				rs, ok := r.unansRounds[pa]
				if !ok {
					rs = [2]int{first, h.sentIn}
				}
				r.unansRounds[pa] = [2]int{min(rs[0], first), max(rs[1], h.sentIn)}
			}
		}
	}
	for t := o.FirstTTL; t <= o.MaxTTL; t++ {
		ly := &r.layers[t]
		*ly = layer{verts: map[vkey][]int{}, dests: map[vkey]bool{}, unreach: map[vkey]bool{}, ansPreds: map[vkey]bool{}, ansSince: map[vkey]int{}}
		for _, f := range r.flows {
			h := &f.hops[t]
			if h.st != stAnswered || r.beyond(f, t) {
				continue
			}
			h.key, h.keyed = vkey{addr: h.addr}, true
			if h.end == endNone {
				h.key.addr = r.canonOf(h.addr)
			}
			ly.answered++
			if pk, ok := r.keyAt(f, t-1); ok {
				ly.ansPreds[pk] = true
				ly.ansSince[pk] = max(ly.ansSince[pk], h.ansIn)
			} else if f.hops[t-1].st != stGivenUp {
				ly.ansUnk = append(ly.ansUnk, f)
			}
		}
		// Silent hops already called: what follows their predecessor is silent.
		for _, f := range r.flows {
			h := &f.hops[t]
			if !h.st.silent() || r.beyond(f, t) {
				continue
			}
			if pk, ok := r.keyAt(f, t-1); ok && !ly.ansPreds[pk] && len(ly.ansUnk) == 0 {
				knownSilent[pk] = true
			}
		}
		for _, f := range r.flows {
			h := &f.hops[t]
			if !h.st.unanswered() || r.beyond(f, t) {
				continue
			}
			r.classify(f, t, ly, knownSilent)
			if h.st.silent() {
				if pk, ok := r.keyAt(f, t-1); ok {
					h.key, h.keyed = pk.after(), true
				}
			}
		}
		for i, f := range r.flows {
			h := &f.hops[t]
			if (h.st == stGivenUp || (h.st != stUnprobed && !h.keyed)) && !r.beyond(f, t) {
				ly.unsettled++
			}
			if !h.keyed {
				continue
			}
			ly.verts[h.key] = append(ly.verts[h.key], i)
			ly.resolved++
			if h.st == stAnswered && h.end != endNone && f.dmin == t {
				ly.dests[h.key] = true
				ly.unreach[h.key] = ly.unreach[h.key] || h.end == endUnreachable
			}
		}
		for k := range ly.verts {
			ly.order = append(ly.order, k)
		}
		slices.SortFunc(ly.order, cmpKey)
		if len(ly.order) == 1 && !ly.dests[ly.order[0]] && ly.unsettled == 0 && (r.minDmin == 0 || r.minDmin >= t) {
			ly.single, ly.one = true, ly.order[0]
			// Not if a vertex one hop before is known (at another TTL) to lead elsewhere
			// too: its flows here were just not probed.
			// Nor if the vertex shows at other TTLs: the flows that reach it there are
			// elsewhere at this one.
			for _, t2 := range r.seenAt[ly.one] {
				ly.single = ly.single && t2 == t
			}
			if t > o.FirstTTL {
				for _, u := range r.layers[t-1].alive() {
					if a := r.agg[u]; a != nil {
						for v := range a.succ {
							ly.single = ly.single && v == ly.one
						}
					}
				}
			}
		}
	}
	clear(r.silentAfter)
	for k := range knownSilent {
		if !r.answersAfter(k) {
			r.silentAfter[k] = true
		}
	}
	clear(r.seenAt)
	for t := o.FirstTTL; t <= o.MaxTTL; t++ {
		for _, k := range r.layers[t].order {
			r.seenAt[k] = append(r.seenAt[k], t)
		}
	}
	if r.quiet {
		return
	}
	r.rules()
	if r.wantsNothing() {
		// Node control waits for flows on their way to a vertex short of flows, but a
		// probe backing off (or held behind one) goes again only if wanted: with nothing
		// else wanted, the exploration would end on the deficit. Only then, so that they
		// do not draw on the routers' ICMP budgets while other probes can tell more.
		for _, h := range r.counted {
			h.want = true
		}
	}
	if r.wantsNothing() && r.provisional() {
		// Done, but on provisional routers. Ask their interfaces once for more IP IDs,
		// interleaved (aliasProbes); then drop what is still not proven and let the
		// rules see the interfaces as they are.
		if r.rate.chain == nil && r.aliasAsked < aliasRounds {
			r.aliasAsked++
			if r.extra = r.aliasProbes(); len(r.extra) > 0 {
				if r.limited {
					// Routers refill their ICMP budget: ask after a pause.
					r.extraAt = r.lastSend.Add(r.o.RateLimitBackoff)
				}
				return
			}
		}
		// Where IP IDs cannot speak: the routers' ICMP rate limiters, if they limit.
		if r.rateTest() {
			return
		}
		r.strict = true
		r.resVer = -1
		r.plan()
		return
	}
	// A wanted probe that waits for another makes that one wanted.
	for changed := true; changed; {
		changed = false
		for _, f := range r.flows {
			for t := o.FirstTTL; t <= o.MaxTTL; t++ {
				h := &f.hops[t]
				if h.want && h.st == stHeld && h.blocker != nil && !h.blocker.want {
					h.blocker.want = true
					changed = true
				}
			}
		}
	}
	// A re-send telling a silent router from a lost probe can wait when fresh probes
	// past the same interface go out now anyway: they tell the same (see classify).
	if !r.limited {
		fresh := map[netip.Addr]bool{}
		for _, f := range r.flows {
			for t := o.FirstTTL + 1; t <= o.MaxTTL; t++ {
				if h, prev := &f.hops[t], &f.hops[t-1]; h.want && h.st == stUnprobed && prev.st == stAnswered && prev.end == endNone {
					fresh[r.canonOf(prev.addr)] = true
				}
			}
		}
		for pk, h := range r.rep {
			if fresh[pk.addr] && h.want && h.st == stSent {
				h.want = false
			}
		}
	}
}

// canonOf is the vertex address of an answering interface: its router's ID when the
// router answered from several interfaces, else the interface itself.
func (r *explorer) canonOf(a netip.Addr) netip.Addr {
	if c, ok := r.canon[a]; ok {
		return c
	}
	return a
}

// resolveAliases groups the answering interfaces into routers when the resolver learnt
// something since the last pass. Two interfaces one flow answered from at different
// TTLs are two routers, whatever their counters say. In RunMany the evidence and what
// keeps interfaces apart are shared by every target, so every target keys a router
// alike (what one target establishes about a router, the next inherits).
func (r *explorer) resolveAliases() {
	if r.res == nil || r.res.Version() == r.resVer {
		return
	}
	r.resVer = r.res.Version()
	if r.apart == nil {
		r.apart = map[[2]netip.Addr]bool{}
		if r.known != nil {
			r.apart = r.known.apart
		}
	}
	var path []netip.Addr
	for _, f := range r.flows {
		path = path[:0]
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if !r.routerAt(f, t) || slices.Contains(path, h.addr) {
				continue
			}
			for _, p := range path {
				r.apart[pairOf(p, h.addr)] = true
			}
			path = append(path, h.addr)
		}
	}
	r.sets = r.res.Resolve(nil, r.isApart)
	r.confirmed = alias.Canon(r.sets)
	r.canon = r.confirmed
	if r.strict {
		return
	}
	// Provisional groups: this target's answering interfaces, by the router they are
	// known to belong to, joined while every pair across two groups is still open and
	// looks like one router answering from the interface a probe came in by: reached
	// from different interfaces before, leading to a common one after. (Without that,
	// two routers one hop apart could be taken for one while their counters are young,
	// and what follows one would be read as what follows the other.)
	var reps []netip.Addr
	members := map[netip.Addr][]netip.Addr{}
	preds := map[netip.Addr]map[netip.Addr]bool{}
	succs := map[netip.Addr]map[netip.Addr]bool{}
	add := func(m map[netip.Addr]map[netip.Addr]bool, k, v netip.Addr) {
		if m[k] == nil {
			m[k] = map[netip.Addr]bool{}
		}
		m[k][v] = true
	}
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			h := &f.hops[t]
			if !r.routerAt(f, t) {
				continue
			}
			if t > r.o.FirstTTL && r.routerAt(f, t-1) {
				add(preds, h.addr, f.hops[t-1].addr)
			}
			if t < r.o.MaxTTL && r.routerAt(f, t+1) {
				add(succs, h.addr, f.hops[t+1].addr)
			}
			c := r.canonOf(h.addr)
			if !slices.Contains(members[c], h.addr) {
				if members[c] == nil {
					reps = append(reps, c)
				}
				members[c] = append(members[c], h.addr)
			}
		}
	}
	slices.SortFunc(reps, netip.Addr.Compare)
	var prov map[netip.Addr]netip.Addr
	joined := map[netip.Addr]netip.Addr{} // group rep -> the rep of the group it joined
	for i, a := range reps {
		if _, ok := joined[a]; ok {
			continue
		}
		group := slices.Clone(members[a])
		for _, b := range reps[i+1:] {
			if _, ok := joined[b]; ok {
				continue
			}
			open := true
			for _, x := range group {
				for _, y := range members[b] {
					open = open && !r.isApart(x, y) && disjoint(preds[x], preds[y]) &&
						(r.res.Open(x, y, provisionalSamples) && !disjoint(succs[x], succs[y]) ||
							r.limited && r.res.OpenRate(x, y) && r.commonAfter(x, y))
				}
			}
			if !open {
				continue
			}
			joined[b] = a
			group = append(group, members[b]...)
			if prov == nil {
				prov = maps.Clone(r.confirmed)
				if prov == nil {
					prov = map[netip.Addr]netip.Addr{}
				}
			}
			for _, y := range members[b] {
				prov[y] = a
			}
			for _, x := range members[a] {
				prov[x] = a
			}
		}
	}
	if prov != nil {
		r.canon = prov
	}
}

// aliasProbes asks again, in one batch, up to two answered (flow, TTL) pairs of every
// interface in a provisional group, interleaved across the group's interfaces (A B C A B
// C): a flow keeps its path, so each answer is another IP ID of the same interface, and
// the interleaving is what the monotonic bounds test needs.
func (r *explorer) aliasProbes() []Request {
	groups := r.provisionalGroups()
	var out []Request
	for _, c := range slices.SortedFunc(maps.Keys(groups), netip.Addr.Compare) {
		members := groups[c]
		if !r.idOpen(members) {
			continue // no IP IDs to ask for: the rate-limit test's (rateTest)
		}
		picks := make([][]Request, len(members))
		for k, m := range members {
			picks[k] = r.reaching(m, 2)
		}
		for i := range 2 {
			for k := range members {
				if i < len(picks[k]) {
					out = append(out, picks[k][i])
				}
			}
		}
	}
	if r.sent+len(out) > r.o.MaxProbes {
		return nil
	}
	return out
}

// disjoint reports whether two sets have no element in common (true if either is empty
// only when both are: no evidence of a common element).
func disjoint(a, b map[netip.Addr]bool) bool {
	for k := range a {
		if b[k] {
			return false
		}
	}
	return true
}

// aliasRounds bounds the rounds of aliasProbes: a rate-limited router may not answer the
// first.
const aliasRounds = 3

// provisionalSamples: interfaces stay open (see explorer.confirmed) until one of them has
// this many IP IDs.
const provisionalSamples = 4

// provisional reports whether some interfaces are keyed as one router without proof.
func (r *explorer) provisional() bool { return !maps.Equal(r.canon, r.confirmed) }

// provisionalGroups are the provisional routers (canon without confirmed) by ID, their
// interfaces ascending.
func (r *explorer) provisionalGroups() map[netip.Addr][]netip.Addr {
	groups := map[netip.Addr][]netip.Addr{}
	for a, c := range r.canon {
		if r.confirmed[a] != c {
			groups[c] = nil
		}
	}
	for a, c := range r.canon {
		if _, ok := groups[c]; ok {
			groups[c] = append(groups[c], a)
		}
	}
	for _, ms := range groups {
		slices.SortFunc(ms, netip.Addr.Compare)
	}
	return groups
}

// wantsNothing reports whether the last planning pass wants no probe.
func (r *explorer) wantsNothing() bool {
	for _, f := range r.flows {
		for t := r.o.FirstTTL; t <= r.o.MaxTTL; t++ {
			if f.hops[t].want {
				return false
			}
		}
	}
	return true
}

// routerAt reports whether a router (not the destination, not an error that ends the
// flow) answered flow f at TTL t.
func (r *explorer) routerAt(f *flow, t int) bool {
	h := &f.hops[t]
	return h.st == stAnswered && h.end == endNone && !r.beyond(f, t)
}

// pairOf is the key of an unordered pair of addresses (the lower first).
func pairOf(a, b netip.Addr) [2]netip.Addr { return [2]netip.Addr{min2(a, b), max2(a, b)} }

// isApart reports whether a and b are known to be distinct routers: one flow passed both,
// at different TTLs (resolveAliases).
func (r *explorer) isApart(a, b netip.Addr) bool { return r.apart[pairOf(a, b)] }

func min2(a, b netip.Addr) netip.Addr {
	if b.Less(a) {
		return b
	}
	return a
}

func max2(a, b netip.Addr) netip.Addr {
	if b.Less(a) {
		return a
	}
	return b
}

// classify decides what an unanswered probe means: a silent hop, a probe to re-send at
// once, or a rate-limited (or lost) probe to re-send after a back-off.
func (r *explorer) classify(f *flow, t int, ly *layer, knownSilent map[vkey]bool) {
	o := &r.o
	h := &f.hops[t]
	h.release()
	pk, ok := r.keyAt(f, t-1)
	if !ok {
		// Which router was silent depends on where the flow was one hop before: find out.
		prev := &f.hops[t-1]
		switch prev.st {
		case stUnprobed:
			prev.want = true
		case stGivenUp:
			h.giveUp()
			return
		}
		if h.st.silent() {
			return // keyed again once the predecessor is known
		}
		switch {
		case h.tries < 1+o.Retries:
			h.resendNow()
		case prev.st == stUnprobed || prev.st.unanswered():
			h.hold(prev) // until the trace back tells
		default:
			h.giveUp()
		}
		return
	}
	if ly.ansPreds[pk] || r.answersAfter(pk) {
		// What follows pk answers other flows (here, or at another TTL: it is the same
		// interface): most likely rate limiting or loss. Back off and re-send. After
		// trialAfter back-offs the probe goes on trial: re-sent after a pause during
		// which nothing else is sent, so a rate-limited router has budget for it. Still
		// unanswered after the trials, with no other flow from pk answered meanwhile,
		// it meets a silent router beside answering ones (a silent ECMP branch). If
		// the back-offs run out first, the probe is given up, counting nowhere.
		if h.st.silent() {
			if h.trials >= trials {
				return
			}
			h.doubt()
		}
		if ly.ansSince[pk] > h.sentIn {
			h.trials = 0 // its router may have spent its budget on that one
		}
		switch {
		case h.trials >= trials:
			r.silent(h, pk, nil)
		case h.backoffs >= o.RateLimitRetries:
			h.giveUp()
		case h.backoffs >= trialAfter:
			if h.st == stSent { // else it keeps its pause, of either kind
				r.later(h, stOnTrial)
			}
		default:
			r.later(h, stBackingOff)
		}
		return
	}
	unsure := false
	for _, g := range ly.ansUnk {
		// Flows answered here (by the time this one was sent) from predecessors not known
		// yet: find out where they come from before telling a silent router from a
		// rate-limited one.
		if g.hops[t].ansIn > h.sentIn+1 {
			continue
		}
		unsure = true
		if prev := &g.hops[t-1]; !prev.keyed && prev.st != stGivenUp {
			prev.want = true
		}
	}
	if h.st.silent() {
		return
	}
	if knownSilent[pk] && !unsure {
		r.silent(h, pk, knownSilent)
		return
	}
	// One probe per predecessor finds out; the others wait for it. If it stays
	// unanswered, they are silent too; if it is answered, they were rate limited.
	// (Not on one that is itself held: it may wait long, for another flow's hop.)
	if rep := r.rep[pk]; rep != nil && rep != h && rep.st != stHeld {
		h.hold(rep)
		return
	}
	r.rep[pk] = h
	if unsure {
		if h.tries < 1+o.Retries {
			h.resendNow()
		} else {
			h.hold(nil)
		}
		return
	}
	// Without rate limiting seen, probes past the same interface unanswered in two rounds
	// or more, twice the sends this one's re-sends would make: silent, without re-sending
	// it again.
	evidence := !r.limited && pk.addr.IsValid() && r.unansRounds[pk.addr][1] > r.unansRounds[pk.addr][0] &&
		r.unans[pk.addr] >= 2*(1+o.Retries)
	switch {
	case h.tries < 1+o.Retries && h.st == stSent && !evidence:
		// re-send at once
	case (ly.answered > 0 || pk.addr.IsValid()) && h.trials < trials && o.RateLimitRetries > 0 && r.limited:
		// Others answer at this TTL, from elsewhere: maybe the router drops for lack of
		// ICMP budget. On trial before calling it silent. So too when nothing answered
		// here yet but pk answers: the routers' budgets are shared by every target, and
		// an earlier one may have spent them all.
		r.later(h, stOnTrial)
	default:
		r.silent(h, pk, knownSilent)
	}
}

// later schedules a re-send after a back-off, backing off or on trial (kind).
func (r *explorer) later(h *hop, kind probeState) { h.pause(kind, r.backoff(h.backoffs)) }

func (r *explorer) silent(h *hop, pk vkey, knownSilent map[vkey]bool) {
	h.callSilent(!r.limited)
	if knownSilent != nil {
		knownSilent[pk] = true
	}
}

func cmpKey(a, b vkey) int {
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	if c := a.prev.Compare(b.prev); c != 0 {
		return c
	}
	return int(a.depth) - int(b.depth)
}

// An unanswered probe goes on trial after trialAfter back-offs (at once if no flow from
// the same vertex was answered), and its hop is called silent after trials trials.
const (
	trialAfter = 2
	trials     = 2
)
