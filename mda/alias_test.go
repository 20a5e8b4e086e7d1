package mda_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// checkSimRouters asserts that every router the exploration reports is one router of the
// simulated network (never two merged), and returns how many of the network's routers
// with several addresses seen by the exploration it resolved whole.
func checkSimRouters(t *testing.T, name string, n *sim.Network, g *mda.Graph) (found, seen int) {
	t.Helper()
	for _, r := range g.Routers {
		owner := ""
		for _, id := range r.Interfaces {
			o, ok := n.RouterOf(netip.MustParseAddr(id))
			if !ok || (owner != "" && o != owner) {
				t.Errorf("%s: router %v merges %s and %s", name, r.Interfaces, owner, o)
			}
			owner = o
		}
	}
	inGraph := map[string]bool{}
	for _, nd := range g.Nodes {
		inGraph[nd.ID] = true
	}
	for _, addrs := range n.Routers() {
		var want []string
		for _, a := range addrs {
			if inGraph[a.String()] {
				want = append(want, a.String())
			}
		}
		if len(want) < 2 {
			continue
		}
		seen++
		for _, r := range g.Routers {
			if slices.Equal(r.Interfaces, want) {
				found++
			}
		}
	}
	return found, seen
}

// checkSim asserts that an exploration of n found no false link and merged no two
// routers; it returns whether it missed a link, and the routers with several addresses
// it resolved whole and saw (checkSimRouters).
func checkSim(t *testing.T, name string, n *sim.Network, g *mda.Graph) (missed bool, found, seen int) {
	t.Helper()
	missing, extra := n.Compare(0, g)
	if len(extra) > 0 {
		t.Errorf("%s: false links %v", name, extra)
	}
	found, seen = checkSimRouters(t, name, n, g)
	return len(missing) > 0, found, seen
}

// checkLinksRouters asserts every link of the simulated network found, none false, and
// the routers (Router.String) want.
func checkLinksRouters(t *testing.T, n *sim.Network, g *mda.Graph, want ...string) {
	t.Helper()
	if missing, extra := n.Compare(0, g); len(missing) > 0 || len(extra) > 0 {
		t.Errorf("missing %v, false %v", missing, extra)
	}
	var got []string
	for _, r := range g.Routers {
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("routers %q, want %q", got, want)
	}
}

// The lab as it now answers (routers from their inbound interfaces, some with shared IP
// ID counters): every link, no false one, r4 and r6 resolved, and fewer probes than
// without alias resolution, where r4's three addresses make the layer after it meshed.
func TestAliasesLabInbound(t *testing.T) {
	o := mda.DefaultOptions()
	n := sim.LabInbound(1)
	g := run(t, n, o)
	checkLinksRouters(t, n, g, "198.18.7.2 {198.18.7.2, 198.18.8.2, 198.18.9.2}", "198.18.13.2 {198.18.13.2, 198.18.14.2}")
	o.Aliases = false
	n2 := sim.LabInbound(1)
	gi := run(t, n2, o)
	if missing, extra := n2.Compare(0, gi); len(missing) > 0 || len(extra) > 0 {
		t.Errorf("without aliases: missing %v, false %v", missing, extra)
	}
	if len(gi.Routers) != 0 {
		t.Errorf("routers without alias resolution: %+v", gi.Routers)
	}
	t.Logf("inbound lab: %d probes with alias resolution, %d without", g.Sent, gi.Sent)
	if g.Sent >= gi.Sent {
		t.Errorf("alias resolution saved nothing: %d probes, %d without", g.Sent, gi.Sent)
	}
	// The router view: one node per router, the lab's two diamonds.
	rg := g.RouterGraph()
	if rg.Level != "router" {
		t.Errorf("level %q", rg.Level)
	}
	var shapes []string
	for _, d := range rg.Diamonds {
		shapes = append(shapes, d.Divergence+">"+d.Convergence)
	}
	if want := []string{r2 + ">" + r4, r4 + ">" + r6}; !slices.Equal(shapes, want) {
		t.Errorf("router diamonds %v, want %v", shapes, want)
	}
	if nd, ok := rg.Node(r4); !ok || len(nd.Interfaces) != 3 || !slices.Equal(nd.TTLs, []int{4}) {
		t.Errorf("router r4: %+v", nd)
	}
	if nd, ok := rg.Node(r6); !ok || !slices.Equal(nd.TTLs, []int{6, 7}) {
		t.Errorf("router r6: %+v", nd)
	}
	if _, ok := rg.Node("*198.18.14.2+1"); ok {
		t.Errorf("the silent hop after r6 is two nodes in the router graph")
	}
}

// The statistical guarantee with aliasing routers: convergence points answer from one
// address per branch, counters of every kind (shared, per interface, zero). The share of
// runs missing a link stays within 1 - confidence as in TestStatistical, no link is false,
// and no router reported merges two.
func TestStatisticalAliases(t *testing.T) {
	count := 400
	if testing.Short() {
		count = 100
	}
	o := mda.DefaultOptions()
	ro := sim.RandomOptions{Aliases: true}
	fails, probes, probesOff, found, seen := 0, 0, 0, 0, 0
	for seed := range uint64(count) {
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 42)), ro)
		g := run(t, n, o)
		probes += g.Sent
		missed, f, s := checkSim(t, fmt.Sprintf("seed %d", seed), n, g)
		if missed {
			fails++
		}
		found += f
		seen += s
		off := o
		off.Aliases = false
		n2, _ := sim.Random(rand.New(rand.NewPCG(seed, 42)), ro)
		probesOff += run(t, n2, off).Sent
	}
	rate := float64(fails) / float64(count)
	t.Logf("%d topologies with aliasing routers: %.1f%% of runs missed a link; %d probes per run (%d without alias resolution); %d of %d routers with several addresses resolved",
		count, 100*rate, probes/count, probesOff/count, found, seen)
	if limit := (100-o.Confidence)/100 + 0.03; rate > limit {
		t.Errorf("%.1f%% of runs missed links, want <= %.1f%%", 100*rate, 100*limit)
	}
	if found == 0 {
		t.Errorf("no router resolved in %d topologies", count)
	}
}
