package mda_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/lab/labtest"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// The real thing: the MDA through the real engines in the netns lab, checked link by link
// against the lab's ground truth (derived from the routing tables, not probed).

func labUp(t *testing.T, profile string) *lab.Lab {
	t.Helper()
	return labtest.Up(t, "tpm", profile)
}

// truthLinks names the true links as the graph does.
func truthLinks(tt *lab.TargetTruth) map[[2]string]bool {
	out := map[[2]string]bool{}
	for _, l := range tt.LinksNamed(mda.AnonID) {
		out[l] = true
	}
	return out
}

// explore runs the MDA toward dsts from the lab's client with one engine.
func explore(t *testing.T, l *lab.Lab, kind string, dsts []netip.Addr, o mda.Options) []*mda.Graph {
	t.Helper()
	layout, err := mda.NewLayout(len(dsts), o.FlowBase, o.MaxFlows)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := probe.ParsePayload("stun")
	var eng trace.Engine
	oneFirst := make([]bool, len(dsts))
	o.OneFirstHop = func(i int) bool { return oneFirst[i] }
	err = l.Do(func() error {
		var tmpl []probe.Flow
		cfg := engine.Config{Payload: payload, Nonce: 0x6d6461}
		for _, d := range dsts {
			rt, err := hostnet.Lookup(d)
			if err != nil {
				return err
			}
			oneFirst[len(tmpl)] = rt.Nexthops == 1
			tmpl = append(tmpl, probe.Flow{Src: rt.Src, Dst: d, Proto: probe.ProtoUDP, DPort: 3478})
			if !slices.Contains(cfg.Ifindexes, rt.Ifindex) {
				cfg.Ifindexes = append(cfg.Ifindexes, rt.Ifindex)
			}
		}
		cfg.Flows = layout.EngineFlows(tmpl)
		if kind == "ebpf" {
			eng, err = engine.NewEBPF(cfg)
		} else {
			eng, err = engine.NewSocket(cfg)
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s engine: %v", kind, err)
	}
	defer eng.Close()
	p, err := mda.NewEngineProber(eng, layout, dsts, mda.DefaultProberOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gs, err := mda.RunMany(ctx, p, dsts, o)
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	return gs
}

// checkGraph asserts every true link found, no false link, the destination reached, and
// the diamonds where the truth has them.
func checkGraph(t *testing.T, l *lab.Lab, kind string, g *mda.Graph) {
	t.Helper()
	tt, ok := l.Truth().TargetTruth(g.Target)
	if !ok {
		t.Fatalf("no truth for %s", g.Target)
	}
	want := truthLinks(tt)
	got := map[[2]string]bool{}
	for _, lk := range g.Links {
		got[[2]string{lk.From, lk.To}] = true
		if !want[[2]string{lk.From, lk.To}] {
			t.Errorf("%s %s: false link %s -> %s", kind, g.Target, lk.From, lk.To)
		}
	}
	for lk := range want {
		if !got[lk] {
			t.Errorf("%s %s: missed link %s -> %s", kind, g.Target, lk[0], lk[1])
		}
	}
	if !g.Reached || g.Dest != g.Target.String() || g.Truncated != "" {
		t.Errorf("%s %s: reached %v dest %q truncated %q", kind, g.Target, g.Reached, g.Dest, g.Truncated)
	}
	// The destination shows at every TTL the truth says it is reached at (the branches
	// of unequal length), and at no other.
	if d, ok := g.Node(g.Dest); !ok || !slices.Equal(d.TTLs, tt.ReachedAt()) {
		t.Errorf("%s %s: destination at TTLs %v, truth %v", kind, g.Target, d.TTLs, tt.ReachedAt())
	}
	// Every interface at exactly the TTLs the truth has it at: the unequal branches put
	// the routers after them at two TTLs each.
	for _, n := range g.Nodes {
		if !n.Addr.IsValid() || n.Dest {
			continue
		}
		var want []int
		for ttl := 1; ttl <= tt.MaxTTL(); ttl++ {
			if slices.Contains(tt.AddrsAt(ttl), n.Addr) {
				want = append(want, ttl)
			}
		}
		if !slices.Equal(n.TTLs, want) {
			t.Errorf("%s %s: %s at TTLs %v, truth %v", kind, g.Target, n.ID, n.TTLs, want)
		}
	}
	for _, n := range g.Nodes {
		if n.NAT != "" {
			t.Errorf("%s %s: NAT %q at %s in a lab without NAT", kind, g.Target, n.NAT, n.ID)
		}
	}
	t.Logf("%s %s: %s, %d probes (%d answered), %d rounds, %v, %d links, diamonds %d",
		kind, g.Target, g.Mode, g.Sent, g.Answered, g.Rounds, g.Duration.Round(time.Millisecond), len(g.Links), len(g.Diamonds))
}

// checkRouters: the routers found (alias sets) are the lab's routers that answer the
// target from several addresses, each whole and none merged with another. IPv6 replies
// carry no IP ID: there only the routers' ICMP rate limiters tell, so with limited (the
// realistic profile) the same routers are found, and without (the fast profile) none is
// merged and the same groups are reported unresolved.
func checkRouters(t *testing.T, l *lab.Lab, kind string, g *mda.Graph, limited bool) {
	t.Helper()
	tt, _ := l.Truth().TargetTruth(g.Target)
	var truth []string
	for _, r := range tt.Routers() {
		if len(r.Addrs) > 1 {
			s := ""
			for _, a := range r.Addrs {
				s += " " + a.String()
			}
			truth = append(truth, s)
		}
	}
	names := func(rs []mda.Router) []string {
		var out []string
		for _, r := range rs {
			out = append(out, " "+strings.Join(r.Interfaces, " "))
		}
		slices.Sort(out)
		return out
	}
	for _, r := range g.Routers {
		if r.Confidence < 0.99 || len(r.Evidence) == 0 {
			t.Errorf("%s %s: router %s: confidence %v, evidence %+v", kind, g.Target, r.ID, r.Confidence, r.Evidence)
		}
	}
	slices.Sort(truth)
	want, wantUnresolved := truth, []string(nil)
	if g.Target.Is6() && !limited {
		want, wantUnresolved = nil, truth
	}
	if got := names(g.Routers); !slices.Equal(got, want) {
		t.Errorf("%s %s: routers %q, want %q", kind, g.Target, got, want)
	}
	if got := names(g.Unresolved); !slices.Equal(got, wantUnresolved) {
		t.Errorf("%s %s: unresolved %q, want %q", kind, g.Target, got, wantUnresolved)
	}
}

// checkDiamonds: where the routers are resolved, the router graph has the lab's two
// diamonds, the second with branches of unequal length (2 and 3 hops).
func checkDiamonds(t *testing.T, g *mda.Graph) {
	t.Helper()
	g = g.RouterGraph()
	type shape struct {
		div, conv              string
		ttl, width, minL, maxL int
	}
	want := []shape{{"198.18.2.2", "198.18.7.2", 2, 3, 2, 2}, {"198.18.7.2", "198.18.13.2", 4, 2, 2, 3}}
	if g.Target.Is6() {
		want = []shape{{"fd51:0:0:2::2", "fd51:0:0:7::2", 2, 3, 2, 2}, {"fd51:0:0:7::2", "fd51:0:0:13::2", 4, 2, 2, 3}}
	}
	var got []shape
	for _, d := range g.Diamonds {
		got = append(got, shape{d.Divergence, d.Convergence, d.TTL, d.MaxWidth, d.MinLength, d.MaxLength})
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: diamonds %+v, want %+v", g.Target, got, want)
	}
}

func labTargets(l *lab.Lab) []netip.Addr {
	var out []netip.Addr
	for _, a := range l.Targets("wildcard") {
		if (a.Is4() && a.As4()[3] == 9) || (!a.Is4() && a.As16()[15] == 9) {
			out = append(out, a)
		}
	}
	return out
}

func TestMultipathFastLab(t *testing.T) {
	l := labUp(t, lab.ProfileFast)
	dsts := labTargets(l)
	if len(dsts) != 2 {
		t.Fatalf("targets %v", dsts)
	}
	for _, kind := range []string{"ebpf", "socket"} {
		o := mda.DefaultOptions()
		o.MaxFlows = 256
		for _, g := range explore(t, l, kind, dsts, o) {
			checkGraph(t, l, kind, g)
			checkRouters(t, l, kind, g, false)
			if g.Target.Is4() {
				checkDiamonds(t, g)
			}
		}
	}
	// A bound relay behind r9, after t1's targets: the prefix up to r2 is shared.
	bound := l.Targets("bound")[0]
	o := mda.DefaultOptions()
	o.MaxFlows = 128
	gs := explore(t, l, "ebpf", []netip.Addr{dsts[0], bound}, o)
	for _, g := range gs {
		checkGraph(t, l, "ebpf", g)
	}
	if !slices.Equal(gs[1].SharedTTLs, []int{1, 2}) {
		t.Errorf("%s: shared TTLs %v, want [1 2]", bound, gs[1].SharedTTLs)
	}
}

// The realistic profile: delays, jitter, and routers that answer at most a burst of 6
// then 1/s (Linux's ICMP rate limit): the exploration waits for their budget instead of
// concluding "no branch".
func TestMultipathRealisticLab(t *testing.T) {
	if testing.Short() {
		t.Skip("realistic lab: rate-limited routers take seconds")
	}
	l := labUp(t, lab.ProfileRealistic)
	o := mda.DefaultOptions()
	o.MaxFlows = 256
	// .1 is the one whose flows through r3c all meet r4 out of budget: a regression test
	// for hops called silent before rate limiting showed (they must be re-tried).
	dsts := append([]netip.Addr{netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("fd51:1:1::1")}, labTargets(l)...)
	for _, g := range explore(t, l, "ebpf", dsts, o) {
		checkGraph(t, l, "ebpf", g)
		checkRouters(t, l, "ebpf", g, true)
		checkDiamonds(t, g) // both families: the routers are resolved on both
	}
}
