package mda_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/turnpath/turnpath/alias"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// The lab's IPv6 side: no IP ID anywhere. Under Linux's ICMP rate limits the
// rate-limit test shows r4's three addresses and r6's two to be one router each; every
// link is found and none is false.
func TestRateAliasesLab6(t *testing.T) {
	n := sim.LabInbound6(1)
	n.SetRateLimit(&sim.LinuxLimit)
	g := run(t, n, mda.DefaultOptions())
	checkLinksRouters(t, n, g, "fd51:0:0:7::2 {fd51:0:0:7::2, fd51:0:0:8::2, fd51:0:0:9::2}", "fd51:0:0:d::2 {fd51:0:0:d::2, fd51:0:0:e::2}")
	for _, r := range g.Routers {
		if !slices.ContainsFunc(r.Evidence, func(e alias.Evidence) bool { return e.Kind == "rate-limit" }) || r.Confidence < 0.99 {
			t.Errorf("router %s: confidence %v, evidence %+v", r.ID, r.Confidence, r.Evidence)
		}
	}
	if len(g.Unresolved) > 0 {
		t.Errorf("unresolved %+v", g.Unresolved)
	}
	t.Logf("%d probes, %v", g.Sent, g.Duration)
}

// twoLookalikes: D splits over two branches of two routers each, P1-X1 and P2-X2, which
// meet at C; C answers from one address. X1 and X2 are distinct routers that look like
// one answering from its inbound interfaces: equal reply TTLs, different predecessors,
// the same next hop, never on one flow. No IP IDs.
func twoLookalikes() *sim.Network {
	a := func(i byte) netip.Addr { return netip.AddrFrom16([16]byte{0xfd, 0x51, 0xaa, 15: i}) }
	nodes := []*sim.Node{
		{Name: "r", Addr: a(1), Next: []string{"d"}, Seed: 1},
		{Name: "d", Addr: a(2), Next: []string{"p1", "p2"}, Seed: 2},
		{Name: "p1", Addr: a(3), Next: []string{"x1"}, Seed: 3},
		{Name: "p2", Addr: a(4), Next: []string{"x2"}, Seed: 4},
		{Name: "x1", Addr: a(5), Next: []string{"c"}, Seed: 5},
		{Name: "x2", Addr: a(6), Next: []string{"c"}, Seed: 6},
		{Name: "c", Addr: a(7), Next: []string{"h"}, Seed: 7},
		{Name: "h", Host: true},
	}
	return sim.New("r", nodes, []sim.Target{{Node: "h", Addr: netip.MustParseAddr("fd51:1:1::1")}}, 1)
}

// Distinct routers that look alike are tested and found distinct under rate limiting
// (nothing left unresolved, no router); without rate limiting they are reported
// unresolved, and not merged either.
func TestRateAliasesLookalikes(t *testing.T) {
	n := twoLookalikes()
	n.SetRateLimit(&sim.LinuxLimit)
	g := run(t, n, mda.DefaultOptions())
	if m, e := n.Compare(0, g); len(m) > 0 || len(e) > 0 {
		t.Errorf("missing %v, false %v", m, e)
	}
	if len(g.Routers) > 0 || len(g.Unresolved) > 0 {
		t.Errorf("routers %+v, unresolved %+v", g.Routers, g.Unresolved)
	}
	t.Logf("rate-limited: %d probes, %v", g.Sent, g.Duration)
	// Whatever the second router's own budget: slower, smaller, faster.
	for _, b := range []sim.Bucket{{Burst: 6, Rate: 0.5}, {Burst: 2, Rate: 0.25}, {Burst: 10, Rate: 2}, {Burst: 6, Rate: 0.3}} {
		n := twoLookalikes()
		n.SetRateLimit(&sim.LinuxLimit)
		n.Nodes["x2"].RateLimit = &b
		if g := run(t, n, mda.DefaultOptions()); len(g.Routers) > 0 {
			t.Errorf("x2 limited %+v: routers %+v", b, g.Routers)
		}
	}
	n = twoLookalikes()
	g = run(t, n, mda.DefaultOptions())
	if len(g.Routers) > 0 {
		t.Errorf("fast: routers %+v", g.Routers)
	}
	if len(g.Unresolved) != 1 || !slices.Equal(g.Unresolved[0].Interfaces, []string{"fd51:aa00::5", "fd51:aa00::6"}) || g.Unresolved[0].Evidence[0].Kind != "unresolved" {
		t.Errorf("fast: unresolved %+v", g.Unresolved)
	}
}

// The guarantees under Linux's ICMP rate limits with aliasing routers whose IP IDs cannot
// speak (no IP ID at all, as on IPv6, in half the topologies; the other half as
// TestStatisticalAliases's, with IP ID 0 or a counter per interface on some routers) and
// half the convergence points answering from one address, so that distinct routers
// ending branches look alike: no false link, no two routers merged, the runs missing a
// link as rare as without aliasing, and most routers with several addresses resolved.
func TestStatisticalRateAliases(t *testing.T) {
	count := 80
	if testing.Short() {
		count = 30
	}
	o := mda.DefaultOptions()
	fails, probes, unresolved := 0, 0, 0
	var found, seen [2]int // by NoIPID
	var dur time.Duration
	for seed := range uint64(count) {
		ro := sim.RandomOptions{Aliases: true, Inbound: 0.5, NoIPID: seed%2 == 0}
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 15)), ro)
		n.SetRateLimit(&sim.LinuxLimit)
		g := run(t, n, o)
		probes += g.Sent
		dur += g.Duration
		missed, f, s := checkSim(t, fmt.Sprintf("seed %d", seed), n, g)
		if missed {
			fails++
		}
		found[seed%2] += f
		seen[seed%2] += s
		for _, u := range g.Unresolved {
			unresolved += len(u.Interfaces)
		}
	}
	rate := float64(fails) / float64(count)
	t.Logf("%d rate-limited topologies with aliasing routers: %.1f%% of runs missed a link; %d probes and %v (virtual) per run; routers with several addresses resolved whole: %d of %d without IP IDs, %d of %d with IP IDs of every kind; %d interfaces left unresolved",
		count, 100*rate, probes/count, (dur / time.Duration(count)).Round(time.Millisecond), found[0], seen[0], found[1], seen[1], unresolved)
	if rate > 0.10 {
		t.Errorf("%.1f%% of runs missed links", 100*rate)
	}
	if found[0] < seen[0]*3/4 {
		t.Errorf("without IP IDs only %d of %d routers with several addresses resolved", found[0], seen[0])
	}
}
