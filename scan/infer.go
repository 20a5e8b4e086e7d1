package scan

import (
	"net/netip"
	"slices"
)

// node is a vertex of a prefix's graph: an interface at a TTL, a silent hop (anon: addr is
// the interface before it, if any), the prober (root, before FirstTTL) or the prefix's
// destinations at one distance (dst). Keeping the TTL in the vertex keeps paths of
// different lengths through one router apart.
type node struct {
	addr netip.Addr
	ttl  uint8
	anon bool
	dst  bool
	root bool
}

// router reports whether n is an interface that answered.
func (n node) router() bool { return n.addr.IsValid() && !n.anon && !n.dst && !n.root }

// graph is what the probes of one prefix's targets measured: links between consecutive
// measured hops of one flow, with how many flows showed each.
type graph struct {
	succ, pred map[node]map[node]int
	out, in    map[node]int // flows seen leaving (entering) a node toward a known next (previous) hop
	// memo holds walks already made on this graph: many targets walk from the same
	// node (the prober, a prefix's destinations) to the same TTL.
	memo map[walkKey]walkResult
}

type walkKey struct {
	start  node
	ttl    int
	dir    int
	strict bool
}

type walkResult struct {
	set map[node]bool
	ok  bool
}

func newGraph() *graph {
	return &graph{succ: map[node]map[node]int{}, pred: map[node]map[node]int{}, out: map[node]int{}, in: map[node]int{},
		memo: map[walkKey]walkResult{}}
}

// add records a flow from a to b. Only a measured end is a sample for the stopping rule:
// the flow counts toward a's next hops if b was measured, toward b's previous hops if a
// was. A hop inferred from one side encodes which branch the flow took (a relay's
// distance picks the branch of its length): counting it would let the targets of one
// branch vouch that the other does not exist.
func (g *graph) add(a, b node, aMeasured, bMeasured bool) {
	if g.succ[a] == nil {
		g.succ[a] = map[node]int{}
	}
	if g.pred[b] == nil {
		g.pred[b] = map[node]int{}
	}
	g.succ[a][b]++
	g.pred[b][a]++
	if bMeasured {
		g.out[a]++
	}
	if aMeasured {
		g.in[b]++
	}
}

// between reports whether an answering interface may lie between a and b: one was
// measured after a, or before b. A router answering other flows right after a, or right
// before b, may well be the one between them, rate-limited when these probes came (a
// router that answers from the interface a probe came in by shows a new address on a new
// branch); only where neither side ever saw one is the hop between them silent.
func (g *graph) between(a, b node) bool {
	if g == nil {
		return false
	}
	for x := range g.succ[a] {
		if x.router() {
			return true
		}
	}
	for x := range g.pred[b] {
		if x.router() {
			return true
		}
	}
	return false
}

// complete reports whether the flows seen through n (count) rule out another neighbour
// beyond the k found, by the MDA stopping rule.
func (s *state) complete(count, k int) bool {
	if k == 0 {
		return false
	}
	return k <= len(s.stop) && count >= s.stop[k-1]
}

// rebuild recomputes every prefix's graph from the targets' hops: first from the measured
// hops alone, then again with the hops those make certain (one candidate), so that a flow
// whose TTL 2 was inferred and TTL 3 measured counts for the node at TTL 2.
func (s *state) rebuild() {
	s.graphs = map[netip.Prefix]*graph{}
	s.buildPass(false)
	// Each pass can make more hops certain; a few passes reach what a chain of them makes
	// certain (a hop certain only through another that needs the last pass's links).
	edges := s.edges()
	for range 3 {
		single := s.singles()
		s.graphs = map[netip.Prefix]*graph{}
		s.buildPass(true, single...)
		n := s.edges()
		if n == edges {
			break
		}
		edges = n
	}
}

// edges counts the flows on every link (to tell when a rebuild pass changed nothing).
func (s *state) edges() int {
	n := 0
	for _, g := range s.graphs {
		for _, c := range g.out {
			n += c
		}
	}
	return n
}

// singles are, per target, the hops inferable with one candidate from the current graphs.
func (s *state) singles() []map[int]node {
	out := make([]map[int]node, len(s.targets))
	for i, t := range s.targets {
		if t.dest == 0 {
			continue
		}
		for ttl := s.opt.FirstTTL; ttl < t.dest; ttl++ {
			if _, ok := s.measured(t, ttl); ok {
				continue
			}
			if c := s.infer(t, ttl); !c.unknown && len(c.nodes) == 1 {
				if out[i] == nil {
					out[i] = map[int]node{}
				}
				out[i][ttl] = c.nodes[0]
			}
		}
	}
	return out
}

func (s *state) buildPass(withSingles bool, singles ...map[int]node) {
	for i, t := range s.targets {
		g := s.graphs[t.group]
		if g == nil {
			g = newGraph()
			s.graphs[t.group] = g
		}
		last := s.opt.MaxTTL
		if t.dest != 0 {
			last = t.dest
		}
		var prev node
		var prevOK, prevMeasured bool
		for ttl := s.opt.FirstTTL - 1; ttl <= last; ttl++ {
			n, ok := s.measured(t, ttl)
			measured := ok
			if !ok && withSingles && singles[i] != nil {
				n, ok = singles[i][ttl]
			}
			// A link needs one end measured: two inferred hops add nothing new.
			if ok && prevOK && (measured || prevMeasured) {
				g.add(prev, n, prevMeasured, measured)
			}
			prev, prevOK, prevMeasured = n, ok, measured
		}
	}
}

// cands is what the graph says of one position of a target.
type cands struct {
	nodes   []node
	unknown bool // the graph cannot tell (yet): only a probe can
	anon    bool // the one candidate is a silent hop
	// loose are the nodes the graph has at this position without asking for completeness:
	// what a probe here may reach as far as is known; looseBoth when both the hops before
	// and after agree on them.
	loose     []node
	looseBoth bool
}

// infer is what t's hop at ttl is by the graph of t's prefix: forward from t's last
// measured hop before it, backward from its first measured hop after it (or the
// destination), each step only through nodes whose next (previous) hops are complete.
func (s *state) infer(t *tstate, ttl int) cands {
	g := s.graphs[t.group]
	if g == nil {
		return cands{unknown: true}
	}
	fwd, fok := s.walk(t, ttl, g, -1, true)
	bwd, bok := s.walk(t, ttl, g, +1, true)
	lf, lfok := s.walk(t, ttl, g, -1, false)
	lb, lbok := s.walk(t, ttl, g, +1, false)
	// One side certain is not enough on its own: what it says must also lead to the
	// target's hop on the other side as far as the graph knows (a branch no flow showed
	// yet, or a distance it does not fit, makes it unknown: a probe must tell).
	if fok && !bok {
		fwd, fok = combine(fwd, true, lb, lbok), lbok
	}
	if bok && !fok {
		bwd, bok = combine(bwd, true, lf, lfok), lfok
	}
	c := cands{}
	c.nodes = sorted(combine(fwd, fok, bwd, bok))
	c.loose = sorted(combine(lf, lfok, lb, lbok))
	c.looseBoth = lfok && lbok
	c.unknown = len(c.nodes) == 0
	c.anon = len(c.nodes) == 1 && c.nodes[0].anon
	return c
}

// combine intersects what both sides say, or takes the one side that says something.
func combine(a map[node]bool, aok bool, b map[node]bool, bok bool) map[node]bool {
	switch {
	case aok && bok:
		set := map[node]bool{}
		for n := range a {
			if b[n] {
				set[n] = true
			}
		}
		return set
	case aok:
		return a
	case bok:
		return b
	}
	return nil
}

func sorted(set map[node]bool) []node {
	out := make([]node, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b node) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		if a.anon != b.anon {
			if a.anon {
				return 1
			}
			return -1
		}
		return int(a.ttl) - int(b.ttl)
	})
	return out
}

// walk propagates from t's nearest measured hop on one side of ttl (dir −1: before, +1:
// after) to ttl through g; with strict, ok is false when a node on the way is not
// complete (a silent hop is complete with one flow through it: what lies beyond it can
// only be learnt past it).
func (s *state) walk(t *tstate, ttl int, g *graph, dir int, strict bool) (map[node]bool, bool) {
	from := ttl + dir
	var start node
	for ; ; from += dir {
		if n, ok := s.measured(t, from); ok {
			start = n
			break
		}
		if from < s.opt.FirstTTL-1 || from > s.opt.MaxTTL || (t.dest != 0 && from > t.dest) {
			return nil, false
		}
	}
	key := walkKey{start, ttl, dir, strict}
	if r, ok := g.memo[key]; ok {
		return r.set, r.ok
	}
	set, ok := s.walkFrom(g, start, from, ttl, dir, strict)
	g.memo[key] = walkResult{set, ok}
	return set, ok
}

func (s *state) walkFrom(g *graph, start node, from, ttl, dir int, strict bool) (map[node]bool, bool) {
	cur := map[node]bool{start: true}
	for at := from; at != ttl; at -= dir {
		next := map[node]bool{}
		for n := range cur {
			nb, count := g.succ[n], g.out[n]
			if dir > 0 {
				nb, count = g.pred[n], g.in[n]
			}
			if strict && !(s.complete(count, len(nb)) || n.anon && count > 0) {
				return nil, false
			}
			for m := range nb {
				next[m] = true
			}
		}
		cur = next
	}
	return cur, len(cur) > 0
}
