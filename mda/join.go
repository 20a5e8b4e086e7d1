package mda

import (
	"cmp"
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Cross-target MDA (Options.Join): relays behind one network share its graph.
//
// The targets are grouped by prefix (IPv4 /24, IPv6 /64: routes are per prefix, so the
// routers' next-hop sets toward every target of a group are the same: doubletree's
// assumption). The first target of each group is explored with the full rules (the
// groups' first targets in waves, as RunMany does, sharing what their prefixes have in
// common), and a second one too (see runJoined), the two graphs merged. Every other target is then probed backwards from its destination, one flow,
// all targets in the same batches: at the TTLs where the group's destination answered,
// and one before. Its flow joins the group's graph when the destination answers it at
// one of the group's destination TTLs and not one TTL earlier, and the hop before it, if
// it answered, is one the group's destination follows there. The joined target's graph
// is the group's, with its own destination: every hop and link before the destination
// established by the group's first target (Shared, Graph.JoinedFrom), with that
// exploration's confidence; only the destination's distance and the hop before it are
// measured for it. A target whose flow does not join (another distance, an unknown hop
// before the destination, no answer) is explored with the full rules after all, in later
// waves that inherit what the others established. Router ICMP budgets are spent once:
// the joining probes mostly meet the destination itself (a relay's answer is not rate
// limited), and the one before it needs no answer.

// joinPrefix is the group key of a target.
func joinPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// runJoined is runMany with Options.Join.
func runJoined(ctx context.Context, p Prober, targets []netip.Addr, opts Options) ([]*Graph, error) {
	known := newKnowledge()
	out := make([]*Graph, len(targets))
	limited := false
	first := map[netip.Prefix][]int{}
	var firsts, rest []int
	for i, t := range targets {
		k := joinPrefix(t)
		if len(first[k]) > 0 {
			rest = append(rest, i)
			continue
		}
		first[k] = append(first[k], i)
		firsts = append(firsts, i)
	}
	start := opts.now()
	if err := exploreWaves(ctx, p, targets, firsts, opts, known, out, &limited, start); err != nil {
		return compact(out), err
	}
	// A second target of a prefix is explored in full too, and both get the union of
	// the two graphs: two samples of the prefix's flows (the destination enters the ECMP
	// hash) miss a branch far less often than one, and every other target of the prefix
	// inherits what they found. Only when no router rate-limits (it costs a round or
	// two): under rate limiting each exploration takes seconds, and the routers' budgets
	// go to the first ones.
	var seconds []int
	for _, t := range firsts {
		k := joinPrefix(targets[t])
		if g := out[t]; g != nil && !limited {
			if i := slices.IndexFunc(rest, func(i int) bool { return joinPrefix(targets[i]) == k }); i >= 0 {
				first[k] = append(first[k], rest[i])
				seconds = append(seconds, rest[i])
				rest = slices.Delete(rest, i, i+1)
			}
		}
	}
	if err := exploreWaves(ctx, p, targets, seconds, opts, known, out, &limited, start); err != nil {
		return compact(out), err
	}
	for _, idxs := range first {
		if len(idxs) == 2 {
			a, b := out[idxs[0]], out[idxs[1]]
			out[idxs[0]], out[idxs[1]] = mergeGraph(a, b), mergeGraph(b, a)
		}
	}
	var fallback []int
	var joins []*joiner
	for _, i := range rest {
		g := out[first[joinPrefix(targets[i])][0]]
		if j := newJoiner(i, targets[i], g, opts); j != nil {
			joins = append(joins, j)
		} else {
			fallback = append(fallback, i)
		}
	}
	if err := joinAll(ctx, p, joins, opts); err != nil {
		return compact(out), err
	}
	took := opts.now().Sub(start)
	for _, j := range joins {
		if g := j.graph(took); g != nil {
			out[j.target] = g
		} else {
			fallback = append(fallback, j.target)
		}
	}
	slices.Sort(fallback)
	if err := exploreWaves(ctx, p, targets, fallback, opts, known, out, &limited, start); err != nil {
		return compact(out), err
	}
	return out, nil
}

func compact(gs []*Graph) []*Graph {
	var out []*Graph
	for _, g := range gs {
		if g != nil {
			out = append(out, g)
		}
	}
	return out
}

// exploreWaves explores the targets idxs with the full rules, in waves of 1, 2, 4 ...
// (nextWave), sharing known; graphs go to out[i]. limited says whether rate limiting was
// seen; it is updated as the waves go.
//
// The waves double: the first target alone establishes the common prefix (the prober's own
// routers, usually) that every later one inherits; targets of one wave cannot inherit from
// each other, so doubling keeps most of the sharing while the number of waves, each a few
// rounds of round trips, grows only with the logarithm of the list.
func exploreWaves(ctx context.Context, p Prober, targets []netip.Addr, idxs []int, opts Options, known *knowledge, out []*Graph, limited *bool, start time.Time) error {
	fam := func(i int) uint8 { return famOf(targets[i]) }
	rest := idxs
	for wave := 1; len(rest) > 0; wave = min(2*wave, opts.Parallel) {
		var pick []int
		pick, rest = nextWave(rest, wave, fam, *limited)
		runs := make([]*explorer, len(pick))
		for j, i := range pick {
			runs[j] = newExplorer(p, i, opts, known)
			runs[j].fam = fam(i)
			runs[j].limited = *limited
		}
		err := exploreAll(ctx, p, runs)
		for _, r := range runs {
			g := r.graph()
			g.Target = targets[r.target]
			end := r.done
			if end.IsZero() {
				end = r.now()
			}
			g.Duration = end.Sub(start)
			out[r.target] = g
		}
		if err != nil {
			return err
		}
		for _, r := range runs {
			r.record()
			*limited = *limited || r.limited
		}
	}
	return nil
}

// nextWave takes the next wave from rest, in order: up to size targets, or once routers
// were seen to rate limit, one of each family. The routers' ICMP budgets are shared by
// every target of a family (several at once would only wait longer for them), not across
// families (see exploreAll).
func nextWave(rest []int, size int, fam func(int) uint8, limited bool) (wave, left []int) {
	took := map[uint8]bool{}
	for _, i := range rest {
		f := fam(i)
		switch {
		case limited && !took[f]:
			took[f] = true
			wave = append(wave, i)
		case !limited && len(wave) < size:
			wave = append(wave, i)
		default:
			left = append(left, i)
		}
	}
	return wave, left
}

// joiner is one target joining its group's graph.
type joiner struct {
	target   int
	addr     netip.Addr
	g        *Graph // the group's
	flow     uint16
	lo, hi   int              // TTLs probed
	ans      map[int]Answer   // by TTL
	tries    map[int]int      // sends by TTL
	before   map[int][]string // group: TTL -> nodes the destination follows there
	destTTLs []int            // group: the destination's TTLs
	sent     int
	rounds   int
}

func newJoiner(i int, addr netip.Addr, g *Graph, o Options) *joiner {
	if g == nil || !g.Reached || g.Truncated != "" {
		return nil
	}
	d, ok := g.Node(g.Dest)
	if !ok || len(d.TTLs) == 0 {
		return nil
	}
	j := &joiner{target: i, addr: addr, g: g, flow: o.FlowBase, ans: map[int]Answer{}, tries: map[int]int{},
		before: map[int][]string{}, destTTLs: d.TTLs}
	j.lo, j.hi = max(o.FirstTTL, d.TTLs[0]-1), d.TTLs[len(d.TTLs)-1]
	for _, l := range g.Links {
		if l.To != g.Dest {
			continue
		}
		for _, t := range l.TTLs {
			j.before[t] = append(j.before[t], l.From)
		}
	}
	return j
}

// want returns the probes still wanted: every TTL of lo..hi once, the destination's TTLs
// again while unanswered (a lost answer; the destination's are not rate limited).
func (j *joiner) want() []Request {
	var out []Request
	for t := j.lo; t <= j.hi; t++ {
		if _, ok := j.ans[t]; ok {
			continue
		}
		n := j.tries[t]
		if n == 0 || (n <= 2 && slices.Contains(j.destTTLs, t) && !j.decided()) {
			out = append(out, Request{Target: j.target, Flow: j.flow, TTL: uint8(t)})
		}
	}
	return out
}

// decided: the destination answered at some TTL and the TTL before it is answered or
// was probed.
func (j *joiner) decided() bool {
	for t := j.lo; t <= j.hi; t++ {
		if a, ok := j.ans[t]; ok && a.Dest {
			return t == j.lo || j.tries[t-1] > 0
		}
	}
	return false
}

// joinAll sends the joiners' probes in shared batches until none wants more.
func joinAll(ctx context.Context, p Prober, joins []*joiner, o Options) error {
	for {
		var reqs []Request
		byTarget := map[int]*joiner{}
		for _, j := range joins {
			w := j.want()
			if len(w) == 0 {
				continue
			}
			byTarget[j.target] = j
			for _, q := range w {
				j.tries[int(q.TTL)]++
			}
			j.sent += len(w)
			j.rounds++
			reqs = append(reqs, w...)
		}
		if len(reqs) == 0 {
			return nil
		}
		answers, err := p.Probe(ctx, reqs)
		if err != nil {
			return err
		}
		for _, a := range answers {
			if j := byTarget[a.Target]; j != nil && a.From.IsValid() && a.Flow == j.flow {
				if _, ok := j.ans[int(a.TTL)]; !ok {
					j.ans[int(a.TTL)] = a
				}
			}
		}
	}
}

// graph is the joined target's graph, or nil if its flow did not join.
func (j *joiner) graph(took time.Duration) *Graph {
	d := 0
	for t := j.lo; t <= j.hi; t++ {
		if a, ok := j.ans[t]; ok && a.Dest {
			d = t
			break
		}
		if a, ok := j.ans[t]; ok && a.Unreachable {
			return nil
		}
	}
	if d == 0 || !slices.Contains(j.destTTLs, d) {
		return nil
	}
	var hopBefore string
	if a, ok := j.ans[d-1]; ok && d-1 >= j.lo {
		hopBefore = a.From.String()
		if !slices.Contains(j.before[d-1], hopBefore) {
			return nil
		}
	} else if d-1 >= j.lo && j.tries[d-1] == 0 {
		return nil
	}
	g0 := j.g
	g := *g0
	g.Target, g.JoinedFrom = j.addr, g0.Target
	g.Sent, g.Rounds, g.Duration = j.sent, j.rounds, took
	g.Answered = len(j.ans)
	g.FullTTLs, g.SharedTTLs = nil, nil
	dest := j.addr.String()
	rename := func(id string) string {
		if id == g0.Dest {
			return dest
		}
		return id
	}
	g.Dest = dest
	g.Nodes = make([]Node, len(g0.Nodes))
	var measuredTTLs []int
	for i, n := range g0.Nodes {
		n.Flows, n.RTTMin, n.RTTAvg, n.RTTMax = 0, 0, 0, 0
		n.Shared = true
		n.TTLs = slices.Clone(n.TTLs)
		n.Interfaces = slices.Clone(n.Interfaces)
		if n.ID == g0.Dest {
			n.ID, n.Addr, n.Shared = dest, j.addr, false
		}
		for t, a := range j.ans {
			if (a.Dest && n.ID == dest) || (!a.Dest && a.From.String() == n.ID && slices.Contains(n.TTLs, t)) {
				n.Shared = false
				n.Flows = 1
				n.RTTMin, n.RTTAvg, n.RTTMax = a.RTT, a.RTT, a.RTT
				measuredTTLs = append(measuredTTLs, t)
			}
		}
		g.Nodes[i] = n
	}
	g.Hops = make([]Hop, len(g0.Hops))
	for i, h := range g0.Hops {
		nh := Hop{TTL: h.TTL}
		for _, id := range h.Nodes {
			nh.Nodes = append(nh.Nodes, rename(id))
		}
		g.Hops[i] = nh
		if !slices.Contains(measuredTTLs, h.TTL) {
			g.SharedTTLs = append(g.SharedTTLs, h.TTL)
		}
	}
	g.Links = make([]Link, len(g0.Links))
	for i, l := range g0.Links {
		l.From, l.To = rename(l.From), rename(l.To)
		l.TTLs = slices.Clone(l.TTLs)
		l.Flows, l.Shared = 0, true
		if hopBefore != "" && l.From == hopBefore && l.To == dest && slices.Contains(l.TTLs, d-1) {
			l.Flows, l.Shared = 1, false
		}
		g.Links[i] = l
	}
	fp := FlowPath{Flow: j.flow, Dest: d}
	for t := j.lo; t <= d; t++ {
		if a, ok := j.ans[t]; ok {
			id := a.From.String()
			if a.Dest {
				id = dest
			}
			fp.Hops = append(fp.Hops, FlowHop{TTL: t, Node: id})
		}
	}
	g.Flows = []FlowPath{fp}
	g.Diamonds = make([]Diamond, len(g0.Diamonds))
	for i, dm := range g0.Diamonds {
		dm.Divergence, dm.Convergence = rename(dm.Divergence), rename(dm.Convergence)
		dm.Nodes = slices.Clone(dm.Nodes)
		for k := range dm.Nodes {
			dm.Nodes[k] = rename(dm.Nodes[k])
		}
		g.Diamonds[i] = dm
	}
	return &g
}

// mergeGraph returns g with what other (a target of the same prefix) found and g did not:
// its nodes, links and routers, other's destination taken for g's. What only other
// measured is marked Shared. Both must have reached their destination, untruncated;
// otherwise g comes back as it is.
func mergeGraph(g, other *Graph) *Graph {
	if g == nil || other == nil || !g.Reached || !other.Reached || g.Truncated != "" || other.Truncated != "" {
		return g
	}
	out := *g
	rename := func(id string) string {
		if id == other.Dest {
			return g.Dest
		}
		return id
	}
	idx := map[string]int{}
	out.Nodes = slices.Clone(g.Nodes)
	for i, n := range out.Nodes {
		idx[n.ID] = i
		out.Nodes[i].TTLs = slices.Clone(n.TTLs)
	}
	for _, n := range other.Nodes {
		id := rename(n.ID)
		if i, ok := idx[id]; ok {
			for _, t := range n.TTLs {
				if !slices.Contains(out.Nodes[i].TTLs, t) {
					out.Nodes[i].TTLs = append(out.Nodes[i].TTLs, t)
				}
			}
			slices.Sort(out.Nodes[i].TTLs)
			if out.Nodes[i].Router == "" {
				out.Nodes[i].Router = n.Router
			}
			continue
		}
		n.ID, n.Flows, n.Shared = id, 0, true
		n.RTTMin, n.RTTAvg, n.RTTMax = 0, 0, 0
		n.TTLs = slices.Clone(n.TTLs)
		idx[id] = len(out.Nodes)
		out.Nodes = append(out.Nodes, n)
	}
	rank := sortNodes(out.Nodes)
	hops := map[int][]string{}
	for _, h := range g.Hops {
		hops[h.TTL] = slices.Clone(h.Nodes)
	}
	for _, h := range other.Hops {
		for _, id := range h.Nodes {
			if id = rename(id); !slices.Contains(hops[h.TTL], id) {
				hops[h.TTL] = append(hops[h.TTL], id)
			}
		}
	}
	out.Hops = nil
	for _, t := range slices.Sorted(maps.Keys(hops)) {
		ns := hops[t]
		slices.SortFunc(ns, func(a, b string) int { return cmp.Compare(rank[a], rank[b]) })
		out.Hops = append(out.Hops, Hop{TTL: t, Nodes: ns})
	}
	li := map[[2]string]int{}
	out.Links = slices.Clone(g.Links)
	for i, l := range out.Links {
		li[[2]string{l.From, l.To}] = i
		out.Links[i].TTLs = slices.Clone(l.TTLs)
	}
	for _, l := range other.Links {
		l.From, l.To = rename(l.From), rename(l.To)
		if i, ok := li[[2]string{l.From, l.To}]; ok {
			for _, t := range l.TTLs {
				if !slices.Contains(out.Links[i].TTLs, t) {
					out.Links[i].TTLs = append(out.Links[i].TTLs, t)
				}
			}
			slices.Sort(out.Links[i].TTLs)
			continue
		}
		l.Flows, l.Shared, l.TTLs = 0, true, slices.Clone(l.TTLs)
		li[[2]string{l.From, l.To}] = len(out.Links)
		out.Links = append(out.Links, l)
	}
	sortLinks(out.Links, rank)
	out.Routers = slices.Clone(g.Routers)
	for _, r := range other.Routers {
		i := slices.IndexFunc(out.Routers, func(x Router) bool { return x.ID == r.ID })
		switch {
		case i < 0:
			out.Routers = append(out.Routers, r)
		case len(r.Interfaces) > len(out.Routers[i].Interfaces):
			out.Routers[i] = r
		}
	}
	slices.SortFunc(out.Routers, func(a, b Router) int { return cmp.Compare(rank[a.ID], rank[b.ID]) })
	for j := range out.Nodes {
		for _, r := range out.Routers {
			if slices.Contains(r.Interfaces, out.Nodes[j].ID) {
				out.Nodes[j].Router = r.ID
			}
		}
	}
	out.Diamonds = diamonds(&out)
	return &out
}
