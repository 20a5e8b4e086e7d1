package mda_test

import (
	"context"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// dropFirst loses the answers to the first n probes of one target at one TTL (its
// router's budget spent by the target before it).
type dropFirst struct {
	*sim.Network
	target, ttl, n int
}

func (d *dropFirst) Probe(ctx context.Context, reqs []mda.Request) ([]mda.Answer, error) {
	as, err := d.Network.Probe(ctx, reqs)
	out := as[:0]
	for _, a := range as {
		if a.Target == d.target && int(a.TTL) == d.ttl && d.n > 0 {
			d.n--
			continue
		}
		out = append(out, a)
	}
	return out, err
}

// Under ICMP limits, a target explored right after another may find the first router out
// of budget: its probes at TTL 1 go unanswered, with nothing else at that TTL to tell a
// silent router from a rate-limited one but what the earlier target saw there. They back
// off, and the first router is not called silent (in the lab, an IPv6 relay's graph began
// with a silent hop and a false link).
func TestLimitedSharedFirstHop(t *testing.T) {
	for _, join := range []bool{true, false} {
		n := sim.LabInbound(1) // 198.19.1.7 behind r8, then 198.19.2.1 behind r9
		n.SetRateLimit(&sim.LinuxLimit)
		p := &dropFirst{Network: n, target: 1, ttl: 1, n: 12}
		o := mda.DefaultOptions()
		o.Join = join
		gs, err := mda.RunMany(context.Background(), p, n.TargetAddrs(), n.Options(o))
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
