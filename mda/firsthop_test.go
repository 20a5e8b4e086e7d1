package mda_test

import (
	"context"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// Under ICMP limits, a target explored right after another finds the routers they share
// with their budgets spent. Its first probe to the first router then goes unanswered,
// with nothing else at that TTL to tell a silent router from a rate-limited one but what
// the earlier target saw there: it backs off, and the first router is not called silent.
func TestLimitedSharedFirstHop(t *testing.T) {
	for _, join := range []bool{true, false} {
		n := sim.LabInbound(1) // 198.19.1.7 behind r8, 198.19.2.1 behind r9
		n.SetRateLimit(&sim.Bucket{Burst: 6, Rate: 0.5})
		o := mda.DefaultOptions()
		o.Join = join
		gs, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(o))
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range gs {
			if missing, extra := n.Compare(i, g); len(missing)+len(extra) > 0 {
				t.Errorf("join %v: %v: missing %v, false %v", join, g.Target, missing, extra)
			}
		}
	}
}
