package mda

import (
	"cmp"
	"math/bits"
	"slices"
	"time"
)

// buildGraph assembles the result from the last planning pass.
func (r *explorer) buildGraph() *Graph {
	o := &r.o
	g := &Graph{Mode: "mda-lite", Confidence: o.Confidence, Sent: r.sent, Answered: r.answered,
		Rounds: r.rounds, Truncated: r.truncated}
	if o.Full {
		g.Mode = "mda"
	}
	nodes := map[vkey]*Node{}
	node := func(k vkey) *Node {
		n := nodes[k]
		if n == nil {
			n = &Node{ID: k.id(), Addr: k.addr}
			if k.anon() {
				n.Depth = int(k.depth)
				if k.prev.IsValid() {
					n.After = k.prev.String()
				}
			}
			nodes[k] = n
		}
		return n
	}
	addTTL := func(n *Node, t int) {
		if !slices.Contains(n.TTLs, t) {
			n.TTLs = append(n.TTLs, t)
		}
	}
	hops := map[int]map[vkey]bool{}
	atHop := func(t int, k vkey) {
		if hops[t] == nil {
			hops[t] = map[vkey]bool{}
		}
		hops[t][k] = true
		addTTL(node(k), t)
	}

	// Measured vertices, with their RTTs and flows.
	flowsThrough := map[vkey]map[uint16]bool{}
	var rttSum = map[vkey]time.Duration{}
	for t := o.FirstTTL; t <= o.MaxTTL; t++ {
		ly := &r.layers[t]
		for _, k := range ly.order {
			atHop(t, k)
			if ly.unreach[k] {
				node(k).Unreachable = true
			} else if ly.dests[k] {
				node(k).Dest = true
				if g.Dest == "" {
					g.Dest = k.id()
				}
				g.Reached = true
			}
		}
	}
	for _, f := range r.flows {
		fp := FlowPath{Flow: f.id, Dest: f.dmin}
		for t := o.FirstTTL; t <= o.MaxTTL; t++ {
			h := &f.hops[t]
			if !h.keyed || r.beyond(f, t) {
				continue
			}
			fp.Hops = append(fp.Hops, FlowHop{TTL: t, Node: h.key.id()})
			n := node(h.key)
			if flowsThrough[h.key] == nil {
				flowsThrough[h.key] = map[uint16]bool{}
			}
			flowsThrough[h.key][f.id] = true
			if h.st == stAnswered {
				n.answers++
				rttSum[h.key] += h.rtt
				if n.RTTMin == 0 || h.rtt < n.RTTMin {
					n.RTTMin = h.rtt
				}
				n.RTTMax = max(n.RTTMax, h.rtt)
				if h.nat != "" {
					n.NAT = h.nat
				}
			}
		}
		if len(fp.Hops) > 0 {
			g.Flows = append(g.Flows, fp)
		}
	}
	for k, n := range nodes {
		n.Flows = len(flowsThrough[k])
		if n.answers > 0 {
			n.RTTAvg = rttSum[k] / time.Duration(n.answers)
		}
	}

	// Links measured by one flow at consecutive TTLs.
	links := map[lk]*Link{}
	// Measured links first; a flow whose vertex at t is inferred (every flow passes it)
	// only counts on a link some flow measured.
	for _, measured := range []bool{true, false} {
		for _, f := range r.flows {
			for t := o.FirstTTL; t < o.MaxTTL; t++ {
				r.link(links, f, t, measured)
			}
		}
	}
	// Layers taken from an earlier target.
	for t := range r.sharedL {
		g.SharedTTLs = append(g.SharedTTLs, t+1)
		next := r.shared[t+1]
		for _, v := range next {
			if nodes[v] == nil {
				node(v).Shared = true
			}
			atHop(t+1, v)
		}
		if t < o.FirstTTL {
			continue
		}
		for _, u := range r.shared[t] {
			for _, v := range next {
				if !r.known.succ[u][v] {
					continue
				}
				if links[lk{u, v}] == nil {
					links[lk{u, v}] = &Link{From: u.id(), To: v.id(), Shared: true}
				}
				if l := links[lk{u, v}]; !slices.Contains(l.TTLs, t) {
					l.TTLs = append(l.TTLs, t)
				}
			}
		}
	}
	if !g.Reached && g.Truncated == "" {
		for _, k := range r.layers[o.MaxTTL].order {
			if !r.layers[o.MaxTTL].dests[k] {
				g.Truncated = "max-ttl" // still going at the last TTL
			}
		}
	}
	for t := range r.full {
		g.FullTTLs = append(g.FullTTLs, t)
	}
	slices.Sort(g.FullTTLs)
	slices.Sort(g.SharedTTLs)

	for _, n := range nodes {
		slices.Sort(n.TTLs)
		g.Nodes = append(g.Nodes, *n)
	}
	rank := sortNodes(g.Nodes)
	for t := o.FirstTTL; t <= o.MaxTTL; t++ {
		if len(hops[t]) == 0 {
			continue
		}
		h := Hop{TTL: t}
		for k := range hops[t] {
			h.Nodes = append(h.Nodes, k.id())
		}
		slices.SortFunc(h.Nodes, func(a, b string) int { return cmp.Compare(rank[a], rank[b]) })
		g.Hops = append(g.Hops, h)
	}
	for _, l := range links {
		slices.Sort(l.TTLs)
		g.Links = append(g.Links, *l)
	}
	sortLinks(g.Links, rank)
	g.Diamonds = diamonds(g)
	return g
}

// bitset over node indices.
type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) fill() {
	for i := range b {
		b[i] = ^uint64(0)
	}
}
func (b bitset) and(c bitset) {
	for i := range b {
		b[i] &= c[i]
	}
}
func (b bitset) equal(c bitset) bool { return slices.Equal(b, c) }
func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// diamonds finds the load-balanced sections of the node graph: every node with several
// next hops is a divergence point, and its immediate post-dominator (the first node every
// path from it goes through) the convergence point. TTLs play no part, so branches of
// unequal length are handled like any other.
func diamonds(g *Graph) []Diamond {
	n := len(g.Nodes)
	idx := map[string]int{}
	for i, nd := range g.Nodes {
		idx[nd.ID] = i
	}
	succ := make([][]int, n)
	for _, l := range g.Links {
		a, okA := idx[l.From]
		b, okB := idx[l.To]
		if okA && okB && !slices.Contains(succ[a], b) {
			succ[a] = append(succ[a], b)
		}
	}
	// Post-dominator sets, with a virtual exit n after every node without next hops.
	exit := n
	pdom := make([]bitset, n+1)
	for i := range pdom {
		pdom[i] = newBitset(n + 1)
		if i == exit {
			pdom[i].set(exit)
		} else {
			pdom[i].fill()
		}
	}
	tmp := newBitset(n + 1)
	for changed := true; changed; {
		changed = false
		for i := n - 1; i >= 0; i-- {
			tmp.fill()
			if len(succ[i]) == 0 {
				tmp.and(pdom[exit])
			}
			for _, s := range succ[i] {
				tmp.and(pdom[s])
			}
			tmp.set(i)
			if !tmp.equal(pdom[i]) {
				copy(pdom[i], tmp)
				changed = true
			}
		}
	}
	var out []Diamond
	for d := 0; d < n; d++ {
		if len(succ[d]) < 2 {
			continue
		}
		// The immediate post-dominator: the strict one with the most post-dominators.
		c, best := -1, -1
		for j := 0; j <= n; j++ {
			if j == d || !pdom[d].has(j) {
				continue
			}
			if k := pdom[j].count(); k > best {
				c, best = j, k
			}
		}
		dm := Diamond{Divergence: g.Nodes[d].ID, TTL: g.Nodes[d].TTLs[0]}
		if c >= 0 && c != exit {
			dm.Convergence = g.Nodes[c].ID
		}
		// Distances from d, over the nodes strictly inside (not through c).
		dist := map[int]map[int]bool{d: {0: true}}
		inside := map[int]bool{}
		order := []int{d}
		for q := 0; q < len(order); q++ {
			u := order[q]
			for _, s := range succ[u] {
				if s == d {
					continue
				}
				if dist[s] == nil {
					dist[s] = map[int]bool{}
				}
				grew := false
				for l := range dist[u] {
					if l+1 <= n && !dist[s][l+1] {
						dist[s][l+1] = true
						grew = true
					}
				}
				if s == c {
					continue
				}
				if !inside[s] {
					inside[s] = true
					order = append(order, s)
				} else if grew {
					order = append(order, s) // propagate the new distances
				}
			}
		}
		width := map[int]int{}
		for v := range inside {
			dm.Nodes = append(dm.Nodes, g.Nodes[v].ID)
			for l := range dist[v] {
				width[l]++
			}
		}
		for _, w := range width {
			dm.MaxWidth = max(dm.MaxWidth, w)
		}
		if c >= 0 && c != exit {
			for l := range dist[c] {
				if dm.MinLength == 0 || l < dm.MinLength {
					dm.MinLength = l
				}
				dm.MaxLength = max(dm.MaxLength, l)
			}
		}
		slices.SortFunc(dm.Nodes, func(a, b string) int { return cmp.Compare(idx[a], idx[b]) })
		out = append(out, dm)
	}
	return out
}

type lk struct{ a, b vkey }

// link adds flow f's link from TTL t to t+1, if it has one.
func (r *explorer) link(links map[lk]*Link, f *flow, t int, measured bool) {
	h := &f.hops[t+1]
	if !h.keyed || r.beyond(f, t+1) || f.hops[t].keyed != measured {
		return
	}
	u, ok := r.keyAt(f, t)
	if !ok {
		return
	}
	l := links[lk{u, h.key}]
	if l == nil {
		if !measured {
			return
		}
		l = &Link{From: u.id(), To: h.key.id()}
		links[lk{u, h.key}] = l
	}
	l.Flows++
	if !slices.Contains(l.TTLs, t) {
		l.TTLs = append(l.TTLs, t)
	}
}

// sortNodes orders a graph's nodes (by first TTL, address, ID) and returns each one's
// rank, by which sortLinks orders the links.
func sortNodes(ns []Node) map[string]int {
	slices.SortFunc(ns, func(a, b Node) int {
		return cmp.Or(cmp.Compare(a.TTLs[0], b.TTLs[0]), a.Addr.Compare(b.Addr), cmp.Compare(a.ID, b.ID))
	})
	rank := make(map[string]int, len(ns))
	for i, n := range ns {
		rank[n.ID] = i
	}
	return rank
}

// sortLinks orders links by the rank (sortNodes) of their ends.
func sortLinks(ls []Link, rank map[string]int) {
	slices.SortFunc(ls, func(a, b Link) int {
		return cmp.Or(cmp.Compare(rank[a.From], rank[b.From]), cmp.Compare(rank[a.To], rank[b.To]))
	})
}
