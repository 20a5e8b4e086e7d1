package scan

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda/sim"
)

const flow = 50000

// labScan scans n+1 targets of the simulated lab (n behind t1, one behind t2), with routers
// limited by limit (nil: none), and checks every target's path against the simulator's.
func labScan(t *testing.T, n int, limit *sim.Bucket, seed uint64) (*sim.Network, *Result) {
	t.Helper()
	net := sim.Lab(n)
	net.SetRateLimit(limit)
	for _, nd := range net.Nodes {
		if nd.Host {
			nd.RateLimit = nil // a relay's STUN answers are not ICMP: not rate-limited
		}
	}
	net.Timeout = 50 * time.Millisecond // the engines' adaptive wait, not the sim's default 500 ms
	opt := DefaultOptions()
	opt.Flow, opt.Seed, opt.Now, opt.Sleep = flow, seed, net.Now, net.Sleep
	res, err := Run(context.Background(), net, net.TargetAddrs(), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkPaths(t, net, res)
	return net, res
}

// checkPaths: every target reached at its distance; every hop before it answered (by the
// router the flow really reaches) or inferred (that router, or candidates including it),
// silent only where r7 is and r7 never anything else; the union has every router but r7.
func checkPaths(t *testing.T, net *sim.Network, res *Result) {
	t.Helper()
	r7 := net.Nodes["r7"]
	for _, tr := range res.Targets {
		path := net.Path(tr.Index, flow)
		if !tr.Reached || tr.DestTTL != len(path) {
			t.Errorf("target %d: reached %v at %d, want %d", tr.Index, tr.Reached, tr.DestTTL, len(path))
			continue
		}
		for _, h := range tr.Hops {
			nd := net.Nodes[path[h.TTL-1]]
			switch {
			case nd == r7 && h.Status != Silent:
				t.Errorf("target %d TTL %d (r7, silent): %+v", tr.Index, h.TTL, h)
			case nd == r7:
			case h.Status == Answered && h.Addr != nd.Addr:
				t.Errorf("target %d TTL %d: answered by %v, the flow reaches %s (%v)", tr.Index, h.TTL, h.Addr, nd.Name, nd.Addr)
			case h.Status == Inferred && h.Addr.IsValid() && h.Addr != nd.Addr:
				t.Errorf("target %d TTL %d: inferred %v (from %v), the flow reaches %s (%v)", tr.Index, h.TTL, h.Addr, h.From, nd.Name, nd.Addr)
			case h.Status == Inferred && !h.Addr.IsValid() && !slices.Contains(h.Candidates, nd.Addr):
				t.Errorf("target %d TTL %d: candidates %v without %s (%v)", tr.Index, h.TTL, h.Candidates, nd.Name, nd.Addr)
			case h.Status == Inferred && len(h.From) == 0:
				t.Errorf("target %d TTL %d: inferred from nothing", tr.Index, h.TTL)
			case h.Status == Silent:
				t.Errorf("target %d TTL %d: %s called silent", tr.Index, h.TTL, nd.Name)
			case h.Status != Answered && h.Status != Inferred:
				t.Errorf("target %d TTL %d (%s): %s, want answered or inferred", tr.Index, h.TTL, nd.Name, h.Status)
			}
		}
	}
	var want []netip.Addr
	for name, nd := range net.Nodes {
		if !nd.Host && name != "r7" {
			want = append(want, nd.Addr)
		}
	}
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(res.Interfaces, want) {
		t.Errorf("interfaces %v, want %v", res.Interfaces, want)
	}
}

// Without limits the scan never waits: a few short batches, a fraction of trace's probes.
func TestScanFast(t *testing.T) {
	net, res := labScan(t, 200, nil, 1)
	perTarget := float64(res.Probes) / float64(len(res.Targets))
	t.Logf("fast: %d probes (%.1f per target), %d batches, %v virtual, %d interfaces, %d links",
		res.Probes, perTarget, res.Batches, res.Duration, len(res.Interfaces), len(res.Links))
	if perTarget > 12 {
		t.Errorf("%.1f probes per target", perTarget)
	}
	if res.Duration > 5*time.Second {
		t.Errorf("took %v of virtual time: it waited", res.Duration)
	}
	for _, r := range res.Responders {
		if r.Limited {
			t.Errorf("%v taken for rate-limited without a limit: %+v", r.Addr, r)
		}
	}
	_ = net
}

// Under Linux's limits (a burst of 6, then one a second per router) every path is still
// complete and right, a rate-limited router is never called silent (checkPaths), the
// silent router never rate-limited, within a minute.
func TestScanRateLimited(t *testing.T) {
	for seed := range uint64(3) {
		net, res := labScan(t, 200, &sim.LinuxLimit, seed+1)
		t.Logf("seed %d: %d probes, %d batches, %v virtual, %d interfaces, %d links", seed+1,
			res.Probes, res.Batches, res.Duration, len(res.Interfaces), len(res.Links))
		if res.Duration > 60*time.Second {
			t.Errorf("seed %d: %v", seed+1, res.Duration)
		}
		limited := 0
		for _, r := range res.Responders {
			if r.Limited {
				limited++
				if r.Rate > 4 || r.Burst > 12 {
					t.Errorf("%v: estimated burst %.1f rate %.2f/s, true 6 and 1/s", r.Addr, r.Burst, r.Rate)
				}
			}
		}
		if limited == 0 {
			t.Errorf("seed %d: no router found rate-limited", seed+1)
		}
		_ = net
	}
}
