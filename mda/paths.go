package mda

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Path is a distinct path of a graph: the flows whose hops, completed from the graph, are
// the same node sequence.
type Path struct {
	Hops     []PathHop // TTL order; a TTL left out is unknown
	Flows    []uint16  // the flows that took it, sorted
	Complete bool      // every TTL known from the first hop to the destination or the graph's end
	DestTTL  int       // TTL of the destination, 0 if the path does not reach it
}

// PathHop is one hop of a Path.
type PathHop struct {
	TTL  int
	Node string
	// Inferred: no flow of the path measured this hop; the graph allows only this node.
	Inferred bool
}

// Paths are the distinct paths of a graph's flows (InferPaths).
type Paths struct {
	// List has the complete paths first (List[:Complete]), then the partial ones; paths
	// through the same branches are next to each other.
	List     []Path
	Complete int
	byFlow   map[uint16]int
	common   map[string]bool
}

// Of returns the index in List of the path flow took.
func (p *Paths) Of(flow uint16) (int, bool) {
	i, ok := p.byFlow[flow]
	return i, ok
}

// Common reports whether every complete path goes through node id (every path, when
// none is complete).
func (p *Paths) Common(id string) bool { return p.common[id] }

// NextHops are the out-links of g's nodes: node ID -> the IDs it links to, in g.Links
// order. A node with two or more is a load balancer.
func (g *Graph) NextHops() map[string][]string {
	succ := map[string][]string{}
	for _, l := range g.Links {
		succ[l.From] = append(succ[l.From], l.To)
	}
	return succ
}

// Role is what a node is in the diamonds of its graph: bits, a node can be several (the
// convergence of one diamond is often the divergence of the next).
type Role uint8

const (
	RoleDivergence Role = 1 << iota
	RoleConvergence
	RoleInside // strictly inside a diamond
)

// Roles are the diamond roles of g's nodes, by node ID; a node in no diamond is absent.
func (g *Graph) Roles() map[string]Role {
	role := map[string]Role{}
	for _, d := range g.Diamonds {
		role[d.Divergence] |= RoleDivergence
		if d.Convergence != "" {
			role[d.Convergence] |= RoleConvergence
		}
		for _, n := range d.Nodes {
			role[n] |= RoleInside
		}
	}
	return role
}

// pathGraph is a graph with the lookups path inference needs.
type pathGraph struct {
	g          *Graph
	dest       map[string]bool
	rank       map[string]int // index in g.Nodes
	succ, pred map[string][]string
}

// InferPaths groups g's flows by path. A flow is probed at some TTLs only (MDA-Lite skips
// what the graph already tells); its other hops are filled in where the graph allows one
// answer: before a node with a single predecessor, after a node with a single next hop,
// and between two measured hops joined by exactly one path of that length.
func InferPaths(g *Graph) *Paths {
	pg := &pathGraph{g: g, dest: map[string]bool{}, rank: map[string]int{}, succ: g.NextHops(), pred: map[string][]string{}}
	for i, n := range g.Nodes {
		pg.rank[n.ID] = i
		if n.Dest {
			pg.dest[n.ID] = true
		}
	}
	for _, l := range g.Links {
		pg.pred[l.To] = append(pg.pred[l.To], l.From)
	}
	ps := &Paths{byFlow: map[uint16]int{}, common: map[string]bool{}}
	if len(g.Hops) == 0 {
		return ps
	}
	first, last := g.Hops[0].TTL, g.Hops[len(g.Hops)-1].TTL
	index := map[string]int{}
	for _, f := range g.Flows {
		seq, inferred := pg.complete(f, first, last)
		if len(seq) == 0 {
			continue
		}
		ttls := slices.Sorted(maps.Keys(seq))
		var key strings.Builder
		p := Path{Complete: ttls[0] == first && ttls[len(ttls)-1]-ttls[0] == len(ttls)-1}
		for _, t := range ttls {
			fmt.Fprintf(&key, "%d=%s ", t, seq[t])
			p.Hops = append(p.Hops, PathHop{TTL: t, Node: seq[t], Inferred: inferred[t]})
		}
		end := seq[ttls[len(ttls)-1]]
		if pg.dest[end] {
			p.DestTTL = ttls[len(ttls)-1]
		} else if len(pg.succ[end]) > 0 {
			p.Complete = false
		}
		i, ok := index[key.String()]
		if !ok {
			i = len(ps.List)
			index[key.String()] = i
			ps.List = append(ps.List, p)
		} else {
			for j := range ps.List[i].Hops {
				h := &ps.List[i].Hops[j]
				h.Inferred = h.Inferred && inferred[h.TTL] // some flow of the path measured it
			}
		}
		ps.List[i].Flows = append(ps.List[i].Flows, f.Flow)
	}
	// Complete paths first, then paths through the same branches next to each other.
	slices.SortStableFunc(ps.List, func(a, b Path) int {
		if a.Complete != b.Complete {
			if a.Complete {
				return -1
			}
			return 1
		}
		for i := 0; i < len(a.Hops) && i < len(b.Hops); i++ {
			if c := cmp.Or(cmp.Compare(a.Hops[i].TTL, b.Hops[i].TTL), cmp.Compare(pg.rank[a.Hops[i].Node], pg.rank[b.Hops[i].Node])); c != 0 {
				return c
			}
		}
		return cmp.Compare(len(a.Hops), len(b.Hops))
	})
	for i, p := range ps.List {
		if p.Complete {
			ps.Complete++
		}
		slices.Sort(p.Flows)
		for _, f := range p.Flows {
			ps.byFlow[f] = i
		}
	}
	// Nodes every complete path goes through (every path if none is complete).
	counted := 0
	seen := map[string]int{}
	for _, p := range ps.List {
		if ps.Complete > 0 && !p.Complete {
			continue
		}
		counted++
		onPath := map[string]bool{}
		for _, h := range p.Hops {
			if !onPath[h.Node] {
				onPath[h.Node] = true
				seen[h.Node]++
			}
		}
	}
	for id, c := range seen {
		if c == counted {
			ps.common[id] = true
		}
	}
	return ps
}

// complete returns a flow's hops by TTL, with the ones filled in from the graph.
func (pg *pathGraph) complete(f FlowPath, first, last int) (map[int]string, map[int]bool) {
	seq, inferred := map[int]string{}, map[int]bool{}
	for _, h := range f.Hops {
		if f.Dest > 0 && h.TTL > f.Dest {
			continue
		}
		seq[h.TTL] = h.Node
	}
	if len(seq) == 0 {
		return nil, nil
	}
	measured := slices.Sorted(maps.Keys(seq))
	fill := func(t int, id string) { seq[t], inferred[t] = id, true }
	// Before the first measured hop.
	t, id := measured[0], seq[measured[0]]
	for t > first && len(pg.pred[id]) == 1 {
		t, id = t-1, pg.pred[id][0]
		fill(t, id)
	}
	// Between measured hops.
	for i := 1; i < len(measured); i++ {
		a, b := measured[i-1], measured[i]
		if b-a < 2 {
			continue
		}
		if mid := pg.onlyPath(seq[a], seq[b], b-a); mid != nil {
			for j, id := range mid {
				fill(a+1+j, id)
			}
		}
	}
	// After the last one.
	t, id = measured[len(measured)-1], seq[measured[len(measured)-1]]
	for t < last && !pg.dest[id] && len(pg.succ[id]) == 1 {
		t, id = t+1, pg.succ[id][0]
		fill(t, id)
	}
	return seq, inferred
}

// onlyPath returns the nodes strictly between from and to when exactly one path of n
// links joins them, else nil.
func (pg *pathGraph) onlyPath(from, to string, n int) []string {
	type key struct {
		id string
		n  int
	}
	memo := map[key]int{}
	var count func(id string, n int) int // paths of n links from id to to, capped at 2
	count = func(id string, n int) int {
		if n == 0 {
			if id == to {
				return 1
			}
			return 0
		}
		k := key{id, n}
		if c, ok := memo[k]; ok {
			return c
		}
		c := 0
		for _, s := range pg.succ[id] {
			c = min(2, c+count(s, n-1))
		}
		memo[k] = c
		return c
	}
	if count(from, n) != 1 {
		return nil
	}
	var mid []string
	for id := from; n > 1; n-- {
		for _, s := range pg.succ[id] {
			if count(s, n-1) == 1 {
				id = s
				break
			}
		}
		mid = append(mid, id)
	}
	return mid
}
