package mda

import (
	"math"
	"slices"
)

// status of a (flow, TTL) for the stopping rules.
type pstatus uint8

const (
	psResolved pstatus = iota // keyed: counts as an observation
	psPending                 // sent or about to be: may count soon
	psFree                    // never probed: can be picked
	psUnusable                // given up, or past the flow's destination
)

func (r *explorer) status(f *flow, t int) pstatus {
	if t > r.o.MaxTTL || r.beyond(f, t) {
		return psUnusable
	}
	h := &f.hops[t]
	switch {
	case h.keyed:
		return psResolved
	case h.st == stGivenUp:
		return psUnusable
	case h.st == stUnprobed && !h.want:
		return psFree
	}
	return psPending
}

// pick makes sure need of the candidate flows are (or will be) observed at TTL t, picking
// free ones in order. It returns how many are missing.
func (r *explorer) pick(cands []int, t, need int) int {
	have := 0
	for _, i := range cands {
		if r.status(r.flows[i], t) == psResolved {
			have++
		}
	}
	for _, i := range cands {
		if have >= need {
			return 0
		}
		f := r.flows[i]
		switch r.status(f, t) {
		case psPending:
			f.hops[t].want = true
			have++
		case psFree:
			f.hops[t].want = true
			have++
		}
	}
	return max(0, need-have)
}

// missing is pick without picking: how many of need flows at TTL t the candidates lack,
// counting the ones observed or on their way.
func (r *explorer) missing(cands []int, t, need int) int {
	for _, i := range cands {
		if s := r.status(r.flows[i], t); s == psResolved || s == psPending {
			need--
		}
	}
	return max(0, need)
}

// fresh wants n more flows probed at TTL t. With prefer, only flows that can get to those
// vertices at t-1: first flows known there, then flows not known at t-1, then new flows;
// without, any flow that reaches t.
func (r *explorer) fresh(t, n int, prefer map[vkey]bool) {
	try := func(f *flow, known bool) {
		if n <= 0 || r.status(f, t) != psFree || (f.dmin > 0 && f.dmin < t) {
			return
		}
		k, ok := r.keyAt(f, t-1)
		if ok != known || (ok && prefer != nil && !prefer[k]) {
			return
		}
		f.hops[t].want = true
		n--
	}
	for _, f := range r.flows {
		try(f, true)
	}
	for _, f := range r.flows {
		try(f, false)
	}
	for ; n > 0; n-- {
		f, ok := r.newFlow()
		if !ok {
			return
		}
		f.hops[t].want = true
	}
}

// rules walks the layers (TTL t to t+1) from the prober outward and applies the stopping
// rules; see the package documentation.
func (r *explorer) rules() {
	o := &r.o
	first := o.FirstTTL
	// The deepest TTL with a live vertex, and with an answer.
	deep, lastAns := first-1, first-1
	reached := r.minDmin > 0
	for t := first; t <= o.MaxTTL; t++ {
		ly := &r.layers[t]
		for _, k := range ly.order {
			if ly.dests[k] {
				continue
			}
			deep = t
			if !k.anon() {
				lastAns = t
			}
		}
	}
	stalled := deep-lastAns >= o.MaxGap
	// Nothing deeper than MaxGap TTLs past the last answer, until the destination answers.
	limit := o.MaxTTL
	if !reached {
		limit = min(limit, lastAns+o.MaxGap)
	}
	clear(r.full)
	clear(r.shared)
	clear(r.sharedL)
	r.counted = r.counted[:0]

	r.aggregate()
	var all []int // flows alive at the near end of the layer
	shareOK := r.known != nil
	var expect map[vkey]bool // shared knowledge: vertices expected at TTL t
	for t := first - 1; t < limit; t++ {
		single := t < first
		if !single {
			ly := &r.layers[t]
			switch {
			case len(ly.order) == 0:
				if t > deep {
					goto ahead
				}
				single = true // nothing known here yet, but deeper: every flow passes
			case len(ly.alive()) == 0:
				goto ahead
			default:
				single = ly.single
			}
			if stalled && t >= deep {
				goto ahead
			}
		}
		all = all[:0]
		for i, f := range r.flows {
			if f.dmin == 0 || f.dmin > t {
				all = append(all, i)
			}
		}
		if shareOK {
			var next map[vkey]bool
			next, shareOK = r.inherit(t, expect)
			if shareOK {
				// Known from an earlier target: just follow n_1 flows through.
				r.sharedL[t] = true
				r.shared[t+1] = keysOf(next)
				expect = next
				if d := r.pick(all, t+1, r.nk(1)); d > 0 {
					r.fresh(t+1, d, nil)
				}
				continue
			}
			if t >= first && len(expect) > 1 {
				// The first layer of this target's own: the rules below enumerate the
				// next hops of the vertices its flows reached at t, but the n_1 flows that
				// followed the known layers may have missed some of the vertices known
				// there, whose branches would then go unexplored (and not taken from the
				// earlier target either: past t this target's paths differ). Enough flows
				// at t to see each of them: the stopping rule, as if k were known.
				seen := 0
				for v := range expect {
					if len(r.layers[t].verts[v]) > 0 {
						seen++
					}
				}
				if seen < len(expect) {
					if d := r.pick(all, t, r.nk(len(expect)-1)); d > 0 {
						r.fresh(t, d, nil)
					}
				}
			}
		}
		if t < first && first == 1 && o.OneFirstHop != nil && len(r.layers[first].order) <= 1 && o.OneFirstHop(r.target) {
			// The kernel's route has one next hop: one flow tells the first router. (Two
			// vertices there after all, and the rules below apply.)
			if d := r.pick(all, first, 1); d > 0 {
				r.fresh(first, d, nil)
			}
			continue
		}
		if single && !o.Full {
			// Every flow passes one vertex at t: its next hops are the vertices at t+1,
			// and any flow, probed at t+1 only, samples them.
			if d := r.pick(all, t+1, r.nk(len(r.layers[t+1].order))); d > 0 {
				r.fresh(t+1, d, nil)
			}
			if t >= first {
				r.traceBack(t)
			}
			continue
		}
		r.branching(t, single)
	}
ahead:
	// Look ahead with one flow per TTL until the destination answers.
	if reached || stalled {
		return
	}
	for _, f := range r.flows {
		if f.dmin != 0 {
			continue
		}
		for t := deep + 2; t <= min(limit, deep+o.Window); t++ {
			if r.status(f, t) == psFree {
				f.hops[t].want = true
			}
		}
		return
	}
	if f, ok := r.newFlow(); ok {
		for t := deep + 2; t <= min(limit, deep+o.Window); t++ {
			f.hops[t].want = true
		}
	}
}

// branching applies the rules to a layer whose near end has several vertices (or, in full
// MDA, to every layer): flows to t+1 must be known at t.
func (r *explorer) branching(t int, single bool) {
	o := &r.o
	first := o.FirstTTL
	var near []vkey
	fu := map[vkey][]int{}
	if t < first {
		near = []vkey{srcKey}
		for i := range r.flows {
			fu[srcKey] = append(fu[srcKey], i)
		}
	} else {
		ly := &r.layers[t]
		near = ly.alive()
		for _, k := range near {
			fu[k] = ly.verts[k]
		}
		if single && len(ly.order) == 0 {
			// Full MDA with nothing known at t yet: wait for it.
			return
		}
	}
	// Observed links of the layer.
	here := map[vkey]int{}     // flows through u at t observed at t+1
	pendHere := map[vkey]int{} // ... and sent (or re-sent) at t+1, not keyed yet
	pred := map[vkey]map[vkey]bool{}
	succ := map[vkey]map[vkey]bool{}
	var allNear []int
	for _, u := range near {
		for _, i := range fu[u] {
			allNear = append(allNear, i)
			h := &r.flows[i].hops[t+1]
			if !h.keyed || r.beyond(r.flows[i], t+1) {
				if r.status(r.flows[i], t+1) == psPending {
					pendHere[u]++
				}
				continue
			}
			here[u]++
			if pred[h.key] == nil {
				pred[h.key] = map[vkey]bool{}
			}
			pred[h.key][u] = true
			if succ[u] == nil {
				succ[u] = map[vkey]bool{}
			}
			succ[u][h.key] = true
		}
	}
	slices.Sort(allNear)
	// MDA-Lite: the hop as a whole gets the stopping rule (uniform load balancing), each
	// vertex at least one flow onward (edge discovery; two where both ends have several
	// vertices: the meshing test), and only the vertices seen to split get the
	// per-vertex rule. Full MDA: every vertex gets the per-vertex rule.
	mesh := len(near) >= 2 && len(pred) >= 2
	// Meshed: a vertex at t+1 with several predecessors, one of which splits. The paths
	// are not disjoint, so one vertex's next hops say nothing about another's (IPv6
	// routers answering from their ingress interface make one router several vertices,
	// each with the router's next hops): MDA-Lite's uniformity does not hold, and every
	// vertex of the layer gets the per-vertex rule, as MDA-Lite prescribes.
	meshed := false
	for _, ps := range pred {
		for u := range ps {
			meshed = meshed || len(ps) >= 2 && len(succ[u]) >= 2
		}
	}
	deficit := map[vkey]int{} // flows missing through a vertex at t
	hopDeficit := 0
	perVertex := false
	if !o.Full {
		// The hop rule, or the per-vertex rule counting every TTL where that is cheaper:
		// after branches of unequal length converge, each vertex shows at several TTLs
		// and the flows there count for it, while the hop rule would ask n_k at every
		// TTL. The per-vertex rule is the stricter test (no uniformity assumed), so
		// taking it when it costs less keeps the guarantee. Nothing when every vertex's
		// next hops are established (or will be, by the probes in flight).
		vertMissing := 0
		for _, u := range near {
			a := r.aggOf(u)
			vertMissing += max(0, r.nk(len(a.succ))-a.obs)
		}
		if vertMissing > 0 {
			if vertMissing <= r.missing(allNear, t+1, r.nk(len(pred))) {
				perVertex = true
			} else {
				hopDeficit = r.pick(allNear, t+1, r.nk(len(pred)))
			}
		}
	}
	for _, u := range near {
		// Rules on a vertex count the flows through it at every TTL (it is one interface,
		// which unequal branches bring at several TTLs), and ask for more at the TTL
		// where most flows reach it.
		a := r.aggOf(u)
		need := 1
		if mesh {
			need = 2
		}
		if o.Full || len(a.succ) >= 2 || meshed {
			if t >= first {
				r.full[t] = true
			}
			need = max(need, r.nk(len(a.succ)))
		}
		if perVertex {
			need = max(need, r.nk(len(a.succ)))
		}
		if a.best != t {
			// Elsewhere, only edge discovery.
			need = min(need, 1)
		}
		// What the other TTLs saw counts, but every vertex gets one flow onward at every
		// TTL (cheap: it has flows here), so that the vertices at t+1 are all seen.
		need = max(min(need, 1), need-(a.obs-here[u])-(a.pend-pendHere[u]))
		if d := r.pick(fu[u], t+1, need); d > 0 {
			deficit[u] = d
		}
		if perVertex {
			// A probe sent on from u and not answered yet may be the one that shows
			// another next hop (a silent one, most likely): it is followed up even when
			// the others make the count.
			for _, i := range fu[u] {
				if r.status(r.flows[i], t+1) == psPending {
					r.flows[i].hops[t+1].want = true
				}
			}
		}
	}
	if t < first {
		// The prober's flows: any new flow goes through it.
		n := hopDeficit
		for _, d := range deficit {
			n = max(n, d)
		}
		r.fresh(t+1, n, nil)
		return
	}
	r.traceBack(t)
	// Node control: more flows at t, enough to expect the missing ones through each vertex.
	ly := &r.layers[t]
	if ly.resolved == 0 {
		return
	}
	if len(deficit) == 0 && hopDeficit <= 0 {
		return
	}
	pending, unkeyed := 0, 0
	for _, f := range r.flows {
		if r.status(f, t) == psPending {
			// Waited for or counted on below: if nothing else is wanted, plan wants it.
			r.counted = append(r.counted, &f.hops[t])
			pending++
			if h := &f.hops[t]; h.st.silent() || h.st == stHeld {
				unkeyed++ // waiting for its vertex at t-1, or for what its silence means
			}
		}
	}
	if unkeyed > 0 {
		return // they may well be the missing flows: wait until they are keyed
	}
	add := 0
	prefer := map[vkey]bool{}
	share := func(through int) float64 {
		sh := float64(through) / float64(ly.resolved)
		if pending > 0 {
			// Flows on their way to t will tell more: count on them reaching the vertex
			// at least as often as a uniform split would (a share estimated from a flow
			// or two is mostly too low), and ask for more only if that falls short. A
			// round later at worst, instead of flows that turn out not to be needed.
			sh = max(sh, 1/float64(len(ly.order)))
		}
		return sh
	}
	need := func(d, through, limit int) {
		n := int(math.Ceil(float64(d)/share(through) - float64(pending)))
		add = max(add, min(n, limit))
	}
	// Where the flows at t came from: a pending flow whose vertex at t-1 is known reaches
	// a vertex as often as that one's flows did (surely, when it is its only next hop).
	via := map[vkey]map[vkey]int{} // vertex at t-1 -> vertex at t -> flows
	for _, v := range ly.order {
		for _, i := range ly.verts[v] {
			if p, ok := r.keyAt(r.flows[i], t-1); ok {
				if via[p] == nil {
					via[p] = map[vkey]int{}
				}
				via[p][v]++
			}
		}
	}
	for u, d := range deficit {
		sh := share(len(fu[u]))
		expect := 0.0
		for _, f := range r.flows {
			if r.status(f, t) != psPending {
				continue
			}
			p, ok := r.keyAt(f, t-1)
			total := 0
			for _, n := range via[p] {
				total += n
			}
			if ok && total > 0 {
				expect += float64(via[p][u]) / float64(total)
			} else {
				expect += sh
			}
		}
		// A vertex's share is estimated from few flows: never more than twice what a
		// uniform share would take; the next round corrects.
		n := int(math.Ceil((float64(d) - expect) / sh))
		add = max(add, min(n, 2*d*len(ly.order)))
		// Flows through u's predecessors reach u; flows elsewhere at t-1 cannot.
		for _, i := range fu[u] {
			if k, ok := r.keyAt(r.flows[i], t-1); ok {
				prefer[k] = true
			}
		}
	}
	if hopDeficit > 0 {
		need(hopDeficit, len(allNear), math.MaxInt)
		prefer = nil
	}
	if add > 0 {
		r.fresh(t, add, prefer)
	}
}

func keysOf(m map[vkey]bool) []vkey {
	out := make([]vkey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, cmpKey)
	return out
}

// vertexAgg is what is known of one vertex's next hops over all TTLs.
type vertexAgg struct {
	succ           map[vkey]bool
	obs            int // flows through the vertex with a known next hop
	pend           int // flows through the vertex sent one hop further, next hop not known yet
	best           int // the TTL to ask for more flows through it: see aggregate
	most, mostFree int
}

// aggregate collects every vertex's next hops over all TTLs.
func (r *explorer) aggregate() {
	if r.agg == nil {
		r.agg = map[vkey]*vertexAgg{}
	}
	o := &r.o
	clear(r.agg)
	count, free := map[vkey]int{}, map[vkey]int{}
	for t := o.FirstTTL - 1; t < o.MaxTTL; t++ {
		clear(count)
		clear(free)
		for _, f := range r.flows {
			u, ok := r.keyAt(f, t)
			if !ok || (t >= o.FirstTTL && r.layers[t].dests[u]) {
				continue
			}
			a := r.agg[u]
			if a == nil {
				a = &vertexAgg{succ: map[vkey]bool{}, best: -1}
				r.agg[u] = a
			}
			count[u]++
			h := &f.hops[t+1]
			switch st := r.status(f, t+1); {
			case h.keyed && !r.beyond(f, t+1):
				a.succ[h.key] = true
				a.obs++
			case st == psPending:
				a.pend++
			case st == psFree:
				free[u]++
			}
		}
		for u, n := range count {
			// More flows go on from u at the TTL with the most flows there not probed one
			// hop further yet (one probe each), else the most flows (node control).
			a := r.agg[u]
			if free[u] > a.mostFree || (free[u] == a.mostFree && n > a.most) {
				a.most, a.mostFree, a.best = n, free[u], t
			}
		}
	}
}

func (r *explorer) aggOf(u vkey) *vertexAgg {
	if a := r.agg[u]; a != nil {
		return a
	}
	return &vertexAgg{best: -1}
}

// traceBack is edge discovery backwards: every vertex at t+1 needs one flow measured at t
// too. Inferring where a flow was (see keyAt) is not enough: it would hide a vertex
// missed at t, which this measurement reveals.
func (r *explorer) traceBack(t int) {
	ly1 := &r.layers[t+1]
	for _, v := range ly1.order {
		var cand *flow
		for _, i := range ly1.verts[v] {
			f := r.flows[i]
			if f.hops[t].keyed {
				cand = nil
				break
			}
			if cand == nil && r.status(f, t) != psUnusable {
				cand = f
			}
		}
		if cand != nil {
			cand.hops[t].want = true
		}
	}
}
