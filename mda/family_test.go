package mda_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// dualStack is one prober facing two networks of the same shape: the IPv4 targets' and
// the IPv6 targets'. Routers limit their ICMP per destination, and the prober's two
// addresses are two destinations: each network keeps its own buckets. Both run on one
// virtual clock.
type dualStack struct {
	v4, v6 *sim.Network
	idx    []int // target index -> index in its network
	is6    []bool
}

func newDualStack(n int) *dualStack {
	d := &dualStack{v4: sim.LabInbound(n), v6: sim.LabInbound(n)}
	// The IPv6 network's routers answer from other addresses (the graphs must not share
	// vertices), and its targets are IPv6 addresses.
	shift := func(a netip.Addr) netip.Addr {
		b := a.As4()
		b[2] += 100
		return netip.AddrFrom4(b)
	}
	for _, nd := range d.v6.Nodes {
		if nd.Addr.IsValid() {
			nd.Addr = shift(nd.Addr)
		}
		for k, a := range nd.InAddrs {
			nd.InAddrs[k] = shift(a)
		}
	}
	for i := range d.v6.Targets {
		d.v6.Targets[i].Addr = netip.AddrFrom16([16]byte{0xfd, 0x51, 0, 1, 0, 1, 15: byte(7 + i)})
	}
	d.v4.SetRateLimit(&sim.LinuxLimit)
	d.v6.SetRateLimit(&sim.LinuxLimit)
	return d
}

// targets interleaves the two networks' targets.
func (d *dualStack) targets() []netip.Addr {
	var out []netip.Addr
	for i := range max(len(d.v4.Targets), len(d.v6.Targets)) {
		for _, n := range []*sim.Network{d.v4, d.v6} {
			if i < len(n.Targets) {
				out = append(out, n.Targets[i].Addr)
				d.idx = append(d.idx, i)
				d.is6 = append(d.is6, n == d.v6)
			}
		}
	}
	return out
}

func (d *dualStack) net(i int) *sim.Network {
	if d.is6[i] {
		return d.v6
	}
	return d.v4
}

func (d *dualStack) Probe(ctx context.Context, reqs []mda.Request) ([]mda.Answer, error) {
	var out []mda.Answer
	start := d.v4.Now()
	end := start
	for _, n := range []*sim.Network{d.v4, d.v6} {
		var qs []mda.Request
		var back []int
		for _, q := range reqs {
			if d.net(q.Target) == n {
				back = append(back, q.Target)
				q.Target = d.idx[q.Target]
				qs = append(qs, q)
			}
		}
		if len(qs) == 0 {
			continue
		}
		// Both batches leave at once: each network starts from the same time.
		if err := n.Sleep(ctx, start.Sub(n.Now())); err != nil {
			return nil, err
		}
		as, err := n.Probe(ctx, qs)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			for j, q := range qs {
				if q == a.Request {
					a.Target = back[j]
					break
				}
			}
			out = append(out, a)
		}
		if n.Now().After(end) {
			end = n.Now()
		}
	}
	d.sync(end)
	return out, nil
}

func (d *dualStack) sync(t time.Time) {
	for _, n := range []*sim.Network{d.v4, d.v6} {
		n.Sleep(context.Background(), t.Sub(n.Now()))
	}
}

func (d *dualStack) options(o mda.Options) mda.Options {
	o = d.v4.Options(o)
	o.Sleep = func(ctx context.Context, dur time.Duration) error {
		d.sync(d.v4.Now().Add(dur))
		return ctx.Err()
	}
	return o
}

// Under ICMP limits, targets of one family are explored one at a time (they share the
// routers' budgets), but the IPv4 and IPv6 ones side by side: the prober's two addresses
// have a bucket each at every router. Four relays of each family, each explored in full:
// every graph right, in about the time of one family's, not the sum of both.
func TestFamiliesSideBySide(t *testing.T) {
	o := mda.DefaultOptions()
	o.Join = false
	took := map[string]time.Duration{}
	for _, c := range []string{"v4", "v6", "both"} {
		d := newDualStack(4)
		all := d.targets()
		var ts []netip.Addr
		var which []int
		for i, a := range all {
			if c == "both" || (c == "v6") == a.Is6() {
				ts = append(ts, a)
				which = append(which, i)
			}
		}
		// Target indexes are those of ts: map them onto the dual stack's.
		p := &remap{d: d, which: which}
		gs, err := mda.RunMany(context.Background(), p, ts, d.options(o))
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != len(ts) {
			t.Fatalf("%s: %d graphs for %d targets", c, len(gs), len(ts))
		}
		for i, g := range gs {
			j := which[i]
			if missing, extra := d.net(j).Compare(d.idx[j], g); len(missing)+len(extra) > 0 {
				t.Errorf("%s: %v: missing %v, false %v", c, g.Target, missing, extra)
			}
			took[c] = max(took[c], g.Duration)
		}
	}
	t.Logf("virtual time: IPv4 alone %v, IPv6 alone %v, both %v", took["v4"], took["v6"], took["both"])
	if limit := max(took["v4"], took["v6"]) * 5 / 4; took["both"] > limit {
		t.Errorf("both families took %v, want <= %v (the slower family's time and a quarter)", took["both"], limit)
	}
}

// remap is a Prober over a subset of the dual stack's targets.
type remap struct {
	d     *dualStack
	which []int
}

func (r *remap) Probe(ctx context.Context, reqs []mda.Request) ([]mda.Answer, error) {
	qs := slices.Clone(reqs)
	for i := range qs {
		qs[i].Target = r.which[qs[i].Target]
	}
	as, err := r.d.Probe(ctx, qs)
	for i := range as {
		as[i].Target = slices.Index(r.which, as[i].Target)
	}
	return as, err
}
