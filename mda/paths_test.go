package mda_test

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// diamondGraph: A -> B -> {C, D} -> E -> F (the destination), one TTL each, with flows
// measured at some TTLs only.
func diamondGraph(flows ...mda.FlowPath) *mda.Graph {
	g := &mda.Graph{Dest: "F", Reached: true, Flows: flows}
	ttls := []int{1, 2, 3, 3, 4, 5}
	for i, id := range []string{"A", "B", "C", "D", "E", "F"} {
		g.Nodes = append(g.Nodes, mda.Node{ID: id, TTLs: []int{ttls[i]}, Dest: id == "F"})
	}
	g.Hops = []mda.Hop{{TTL: 1, Nodes: []string{"A"}}, {TTL: 2, Nodes: []string{"B"}}, {TTL: 3, Nodes: []string{"C", "D"}},
		{TTL: 4, Nodes: []string{"E"}}, {TTL: 5, Nodes: []string{"F"}}}
	for _, l := range [][2]string{{"A", "B"}, {"B", "C"}, {"B", "D"}, {"C", "E"}, {"D", "E"}, {"E", "F"}} {
		g.Links = append(g.Links, mda.Link{From: l[0], To: l[1], Flows: 1})
	}
	g.Diamonds = []mda.Diamond{{Divergence: "B", Convergence: "E", TTL: 2, MaxWidth: 2, MinLength: 2, MaxLength: 2, Nodes: []string{"C", "D"}}}
	return g
}

// flow measures the hops given as TTL, node, TTL, node ...
func flow(id uint16, dest int, hops ...any) mda.FlowPath {
	f := mda.FlowPath{Flow: id, Dest: dest}
	for i := 0; i < len(hops); i += 2 {
		f.Hops = append(f.Hops, mda.FlowHop{TTL: hops[i].(int), Node: hops[i+1].(string)})
	}
	return f
}

// hops writes a path as "1 A, 2 B?" (? = inferred).
func hops(p mda.Path) string {
	s := ""
	for i, h := range p.Hops {
		if i > 0 {
			s += ", "
		}
		s += strconv.Itoa(h.TTL) + " " + h.Node
		if h.Inferred {
			s += "?"
		}
	}
	return s
}

func TestInferPaths(t *testing.T) {
	g := diamondGraph(
		flow(1, 5, 1, "A", 2, "B", 3, "C", 4, "E", 5, "F"),
		// Only D measured: B and A before it (single predecessors), E and F after it.
		flow(2, 0, 3, "D"),
		// A and F: two paths of 4 links join them, the middle stays unknown.
		flow(3, 5, 1, "A", 5, "F"),
		// B and E: two paths of 2 links; A before B, F after E.
		flow(4, 0, 2, "B", 4, "E"),
		// D and F: one path of 2 links (through E). Same path as flow 2, which did not
		// measure F: F is measured for the path.
		flow(5, 5, 3, "D", 5, "F"),
		// Hops past the flow's destination are not its path.
		flow(6, 5, 1, "A", 2, "B", 3, "C", 4, "E", 5, "F", 6, "F"),
	)
	ps := mda.InferPaths(g)
	want := []struct {
		hops     string
		flows    []uint16
		complete bool
		dest     int
	}{
		{"1 A, 2 B, 3 C, 4 E, 5 F", []uint16{1, 6}, true, 5},
		{"1 A?, 2 B?, 3 D, 4 E?, 5 F", []uint16{2, 5}, true, 5},
		{"1 A?, 2 B, 4 E, 5 F?", []uint16{4}, false, 5}, // partial ones after, by their hops
		{"1 A, 5 F", []uint16{3}, false, 5},
	}
	if len(ps.List) != len(want) || ps.Complete != 2 {
		t.Fatalf("%d paths, %d complete; want %d, 2", len(ps.List), ps.Complete, len(want))
	}
	for i, w := range want {
		p := ps.List[i]
		if got := hops(p); got != w.hops || !slices.Equal(p.Flows, w.flows) || p.Complete != w.complete || p.DestTTL != w.dest {
			t.Errorf("path %d: %s flows %v complete %v dest %d\n   want %s flows %v complete %v dest %d",
				i, got, p.Flows, p.Complete, p.DestTTL, w.hops, w.flows, w.complete, w.dest)
		}
		for _, f := range w.flows {
			if j, ok := ps.Of(f); !ok || j != i {
				t.Errorf("flow %d: path %d %v, want %d", f, j, ok, i)
			}
		}
	}
	if _, ok := ps.Of(7); ok {
		t.Error("flow 7 has a path")
	}
	var common []string
	for _, n := range g.Nodes {
		if ps.Common(n.ID) {
			common = append(common, n.ID)
		}
	}
	if !slices.Equal(common, []string{"A", "B", "E", "F"}) {
		t.Errorf("common nodes %v, want A B E F", common)
	}
}

// With no complete path, the common nodes are those of every path. A path that ends
// where the graph does is complete without the destination. A graph with no hops has
// no paths.
func TestInferPathsPartial(t *testing.T) {
	g := diamondGraph(flow(1, 0, 2, "B", 4, "E"), flow(2, 0, 4, "E"))
	ps := mda.InferPaths(g)
	if ps.Complete != 0 || len(ps.List) != 2 {
		t.Fatalf("%d paths, %d complete", len(ps.List), ps.Complete)
	}
	if got0, got1 := hops(ps.List[0]), hops(ps.List[1]); got0 != "1 A?, 2 B, 4 E, 5 F?" || got1 != "4 E, 5 F?" {
		t.Errorf("paths %q and %q", got0, got1)
	}
	for id, want := range map[string]bool{"A": false, "B": false, "C": false, "E": true, "F": true} {
		if ps.Common(id) != want {
			t.Errorf("common %s: %v", id, !want)
		}
	}

	g = diamondGraph(flow(1, 0, 3, "C"))
	g.Links = g.Links[:len(g.Links)-1] // no E -> F: E ends the graph
	ps = mda.InferPaths(g)
	if len(ps.List) != 1 || ps.Complete != 1 || hops(ps.List[0]) != "1 A?, 2 B?, 3 C, 4 E?" || ps.List[0].DestTTL != 0 {
		t.Errorf("path to the graph's end: %+v", ps.List)
	}

	if ps := mda.InferPaths(&mda.Graph{Flows: g.Flows}); len(ps.List) != 0 {
		t.Errorf("no hops, paths %v", ps.List)
	}
}

func TestRolesNextHops(t *testing.T) {
	g := diamondGraph()
	g.Diamonds = append(g.Diamonds, mda.Diamond{Divergence: "E", Nodes: []string{"F"}}) // E also opens one
	want := map[string]mda.Role{"B": mda.RoleDivergence, "C": mda.RoleInside, "D": mda.RoleInside,
		"E": mda.RoleConvergence | mda.RoleDivergence, "F": mda.RoleInside}
	if got := g.Roles(); !maps.Equal(got, want) {
		t.Errorf("roles %v, want %v", got, want)
	}
	next := g.NextHops()
	if !slices.Equal(next["B"], []string{"C", "D"}) || !slices.Equal(next["E"], []string{"F"}) || len(next["F"]) != 0 {
		t.Errorf("next hops %v", next)
	}
}

// On explorations of random topologies (silent routers included): every flow is in one
// path that keeps what it measured, a complete path follows links to the destination,
// and where the graph is the truth so are the inferred hops.
func TestInferPathsRandom(t *testing.T) {
	count := 40
	if testing.Short() {
		count = 10
	}
	for seed := range uint64(count) {
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 7)), sim.RandomOptions{Silent: 0.15})
		g := run(t, n, n.Options(mda.DefaultOptions()))
		ps := mda.InferPaths(g)
		exact := false
		if missing, extra := n.Compare(0, g); len(missing)+len(extra) == 0 {
			exact = true
		}
		links := map[[2]string]bool{}
		for _, l := range g.Links {
			links[[2]string{l.From, l.To}] = true
		}
		for _, f := range g.Flows {
			i, ok := ps.Of(f.Flow)
			if !ok {
				t.Fatalf("seed %d: flow %d in no path", seed, f.Flow)
			}
			p := ps.List[i]
			at := map[int]string{}
			for _, h := range p.Hops {
				at[h.TTL] = h.Node
			}
			for _, h := range f.Hops {
				if at[h.TTL] != h.Node {
					t.Errorf("seed %d flow %d: measured %s at %d, path has %q", seed, f.Flow, h.Node, h.TTL, at[h.TTL])
				}
			}
			if !p.Complete {
				continue
			}
			for j := 1; j < len(p.Hops); j++ {
				if !links[[2]string{p.Hops[j-1].Node, p.Hops[j].Node}] {
					t.Errorf("seed %d flow %d: %s -> %s is no link", seed, f.Flow, p.Hops[j-1].Node, p.Hops[j].Node)
				}
			}
			if g.Reached && p.DestTTL == 0 {
				t.Errorf("seed %d flow %d: complete path does not reach the destination", seed, f.Flow)
			}
			if exact { // the graph is the truth: so must the inferred hops be
				if got, want := nodeIDs(p.Hops), truePath(n, f.Flow); !slices.Equal(got, want) {
					t.Errorf("seed %d flow %d:\n path %v\n true %v", seed, f.Flow, got, want)
				}
			}
		}
	}
}

func nodeIDs(hops []mda.PathHop) []string {
	var out []string
	for _, h := range hops {
		out = append(out, h.Node)
	}
	return out
}

// truePath is a flow's path in the simulator, by mda node ID.
func truePath(n *sim.Network, flow uint16) []string {
	var out []string
	var after netip.Addr
	depth := 0
	for _, name := range n.Path(0, flow) {
		nd := n.Nodes[name]
		switch {
		case nd.Host:
			out = append(out, n.Targets[0].Addr.String())
		case nd.Silent:
			depth++
			out = append(out, mda.AnonID(after, depth))
		default:
			out = append(out, nd.Addr.String())
			after, depth = nd.Addr, 0
		}
	}
	return out
}
