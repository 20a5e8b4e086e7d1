package mda_test

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// Cross-target MDA on the simulated lab (routers answering from their inbound
// interfaces): 40 relays behind t1 and one behind t2. The first two of each prefix are
// explored in full (and share what they found; the first alone under rate limiting); the
// others join the first one's graph from a few probes at their destination, and every
// graph is complete and right.
func TestJoin(t *testing.T) {
	for _, limited := range []bool{false, true} {
		n := sim.LabInbound(40)
		if limited {
			n.SetRateLimit(&sim.LinuxLimit)
		}
		o := mda.DefaultOptions()
		o.Join = true
		gs, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(o))
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != len(n.Targets) {
			t.Fatalf("%d graphs for %d targets", len(gs), len(n.Targets))
		}
		sent, joined := 0, 0
		for i, g := range gs {
			sent += g.Sent
			if g.Target != n.Targets[i].Addr {
				t.Errorf("graph %d is for %v", i, g.Target)
			}
			if missing, extra := n.Compare(i, g); len(missing)+len(extra) > 0 {
				t.Errorf("limited %v, target %v: missing %v, false %v", limited, g.Target, missing, extra)
			}
			if !g.Reached || g.Dest != g.Target.String() {
				t.Errorf("target %v: reached %v dest %s", g.Target, g.Reached, g.Dest)
			}
			if g.JoinedFrom.IsValid() {
				joined++
				if g.JoinedFrom != n.Targets[0].Addr || g.Sent > 6 || len(g.SharedTTLs) == 0 {
					t.Errorf("target %v: joined from %v with %d probes, shared TTLs %v", g.Target, g.JoinedFrom, g.Sent, g.SharedTTLs)
				}
				if d, ok := g.Node(g.Dest); !ok || !slices.Equal(d.TTLs, []int{9, 10}) || d.Shared {
					t.Errorf("target %v: destination %+v", g.Target, d)
				}
				if len(g.Routers) != 2 {
					t.Errorf("target %v: routers %+v", g.Target, g.Routers)
				}
			}
		}
		// Two of t1's relays are explored without rate limiting, one with it.
		if want := map[bool]int{false: 38, true: 39}[limited]; joined != want {
			t.Errorf("limited %v: %d targets joined, want %d", limited, joined, want)
		}
		t.Logf("limited %v: %d targets, %d probes (%.1f per target), %v (virtual)", limited, len(gs), sent, float64(sent)/float64(len(gs)), gs[len(gs)-1].Duration)
		if per := float64(sent) / float64(len(gs)); per > 10 {
			t.Errorf("limited %v: %.1f probes per target", limited, per)
		}
	}
}

// A target whose flow does not join (same prefix, other routes: behind r9 like t2) is
// explored in full, and right.
func TestJoinFallback(t *testing.T) {
	n := sim.LabInbound(4)
	n.Targets[3].Node = "t2" // 198.19.1.10, routed by r2 toward r9
	o := mda.DefaultOptions()
	o.Join = true
	gs, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(o))
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gs {
		if missing, extra := n.Compare(i, g); len(missing)+len(extra) > 0 {
			t.Errorf("target %v: missing %v, false %v", g.Target, missing, extra)
		}
	}
	if gs[1].JoinedFrom.IsValid() || !gs[2].JoinedFrom.IsValid() || gs[3].JoinedFrom.IsValid() {
		t.Errorf("joined: %v %v %v", gs[1].JoinedFrom, gs[2].JoinedFrom, gs[3].JoinedFrom)
	}
	if _, ok := gs[3].Node(r9); !ok {
		t.Errorf("fallback target: no r9 in %+v", gs[3].Hops)
	}
}

// The statistical guarantee with shared prefixes: random paths of diamonds with aliasing
// routers, five relays behind each. The joined relays have their prefix's graph, so a
// run misses a link no more often than one exploration does (within 1 - confidence, with
// TestStatistical's slack), no link is false, and most relays join. (The first two of
// each prefix are explored and share their graphs, so it misses less than one run.)
func TestJoinStatistical(t *testing.T) {
	count := 200
	if testing.Short() {
		count = 50
	}
	o := mda.DefaultOptions()
	o.Join = true
	fails, joined, total, probes := 0, 0, 0, 0
	for seed := range uint64(count) {
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 42)), sim.RandomOptions{Aliases: true})
		host := n.Targets[0]
		for i := 2; i <= 5; i++ {
			a := host.Addr.As4()
			a[3] = byte(i)
			n.Targets = append(n.Targets, sim.Target{Node: host.Node, Addr: netip.AddrFrom4(a)})
		}
		gs, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(o))
		if err != nil {
			t.Fatal(err)
		}
		missed := false
		for i, g := range gs {
			total++
			probes += g.Sent
			if g.JoinedFrom.IsValid() {
				joined++
			}
			missing, extra := n.Compare(i, g)
			if len(extra) > 0 {
				t.Errorf("seed %d target %v: false links %v", seed, g.Target, extra)
			}
			missed = missed || len(missing) > 0
		}
		if missed {
			fails++
		}
	}
	rate := float64(fails) / float64(count)
	t.Logf("%d topologies x 5 relays: %.1f%% of runs missed a link; %d of %d relays joined; %.1f probes per relay",
		count, 100*rate, joined, total, float64(probes)/float64(total))
	if limit := (100-o.Confidence)/100 + 0.03; rate > limit {
		t.Errorf("%.1f%% of runs missed links, want <= %.1f%%", 100*rate, 100*limit)
	}
	if joined < count*3*9/10 { // 3 of 5 can join: the first two are explored
		t.Errorf("%d of %d relays joined", joined, total)
	}
}
