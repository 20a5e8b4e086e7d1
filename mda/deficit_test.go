package mda_test

import (
	"context"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// Under Linux's ICMP limits, an exploration ends only once every vertex it enumerates has
// its stopping point's worth of flows observed onward. The lab as IPv6 routers make it (r4
// answers from three interfaces, not grouped into a router): each of r4's interfaces has two
// next hops and needs n_2 flows measured past it. Explorations used to end with these short
// of flows (every run here), waiting for probes that backed off and that no rule wanted any
// more: 7 % of them missed a link, against 3 % without the limits.
func TestLimitedNoDeficit(t *testing.T) {
	o := mda.DefaultOptions()
	// Interfaces, not routers: the rate-limit test of aliases (ratealias.go) would make
	// r4 one router, whose count no interface has to make alone.
	o.Aliases = false
	points := mda.StoppingPoints(o.Confidence, 4)
	runs := 60
	if testing.Short() {
		runs = 20
	}
	short := 0
	for i := range runs {
		n := sim.LabInbound(1)
		for _, nd := range n.Nodes {
			nd.IPID = sim.IPIDNone
		}
		n.SetRateLimit(&sim.LinuxLimit)
		n.Reseed(uint64(i))
		o.FlowBase = uint16(20000 + 97*i)
		g, err := mda.Run(context.Background(), n, n.Options(o))
		if err != nil {
			t.Fatal(err)
		}
		if g.Truncated != "" {
			t.Fatalf("run %d truncated: %s", i, g.Truncated)
		}
		// Flows measured from each of r4's interfaces (TTL 4) one hop further.
		onward := map[string]map[string]int{}
		for _, f := range g.Flows {
			var at4, at5 string
			for _, h := range f.Hops {
				switch h.TTL {
				case 4:
					at4 = h.Node
				case 5:
					at5 = h.Node
				}
			}
			if at4 != "" && at5 != "" {
				if onward[at4] == nil {
					onward[at4] = map[string]int{}
				}
				onward[at4][at5]++
			}
		}
		for _, a := range []string{"198.18.7.2", "198.18.8.2", "198.18.9.2"} {
			if _, ok := g.Node(a); !ok {
				continue // not reached by any flow: a miss, not a deficit
			}
			obs := 0
			for _, c := range onward[a] {
				obs += c
			}
			if k := len(onward[a]); k == 0 || obs < points[k-1] {
				short++
				t.Errorf("run %d: %s ended with %d flows onward to %d next hops, want >= %d", i, a, obs, k, points[max(k, 1)-1])
			}
		}
	}
	t.Logf("%d runs, %d vertices short", runs, short)
}
