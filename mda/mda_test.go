package mda_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// Lab addresses (sim.Lab answers like the real lab: 198.18.<uplink link>.2).
const (
	r1, r2        = "198.18.1.2", "198.18.2.2"
	r3a, r3b, r3c = "198.18.4.2", "198.18.5.2", "198.18.6.2"
	r4            = "198.18.7.2"
	r5a, r5b, r5c = "198.18.10.2", "198.18.11.2", "198.18.12.2"
	r6, r8, r9    = "198.18.13.2", "198.18.16.2", "198.18.18.2"
	t1, t2        = "198.19.1.7", "198.19.2.1"
	r7            = "*" + r6 + "+1" // silent: the anonymous hop after r6
)

func run(t testing.TB, n *sim.Network, o mda.Options) *mda.Graph {
	t.Helper()
	g, err := mda.Run(context.Background(), n, n.Options(o))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func labLinks() [][2]string {
	return [][2]string{
		{r1, r2}, {r2, r3a}, {r2, r3b}, {r2, r3c}, {r3a, r4}, {r3b, r4}, {r3c, r4},
		{r4, r5a}, {r4, r5b}, {r5a, r6}, {r5b, r5c}, {r5c, r6}, {r6, r7}, {r7, r8}, {r8, t1},
	}
}

func TestLab(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(map[bool]string{false: "lite", true: "full"}[full], func(t *testing.T) {
			n := sim.Lab(1)
			o := mda.DefaultOptions()
			o.Full = full
			g := run(t, n, o)

			// Every link of both diamonds, and nothing else.
			var got [][2]string
			for _, l := range g.Links {
				got = append(got, [2]string{l.From, l.To})
			}
			want := labLinks()
			slices.SortFunc(want, cmpPair)
			slices.SortFunc(got, cmpPair)
			if !slices.Equal(got, want) {
				t.Errorf("links:\n got %v\nwant %v", got, want)
			}
			if missing, extra := n.Compare(0, g); len(missing)+len(extra) > 0 {
				t.Errorf("against the simulator: missing %v, extra %v", missing, extra)
			}
			if !g.Reached || g.Dest != t1 || g.Truncated != "" {
				t.Errorf("reached %v dest %q truncated %q", g.Reached, g.Dest, g.Truncated)
			}

			// The unequal branches: r6 at TTL 6 (via r5a) and 7 (via r5b, r5c), and the
			// silent r7 after it at 7 and 8.
			for id, ttls := range map[string][]int{r6: {6, 7}, r7: {7, 8}, r8: {8, 9}, t1: {9, 10}, r4: {4}, r5c: {6}} {
				nd, ok := g.Node(id)
				if !ok || !slices.Equal(nd.TTLs, ttls) {
					t.Errorf("node %s: TTLs %v, want %v", id, nd.TTLs, ttls)
				}
			}
			if nd, _ := g.Node(r7); nd.Addr.IsValid() || nd.After != r6 || nd.Depth != 1 {
				t.Errorf("silent r7: %+v", nd)
			}
			hop3 := []string{r3a, r3b, r3c}
			for _, h := range g.Hops {
				if h.TTL == 3 && !slices.Equal(h.Nodes, hop3) {
					t.Errorf("TTL 3: %v, want %v", h.Nodes, hop3)
				}
			}

			// The diamonds, found on the node graph whatever the TTLs.
			wantD := []mda.Diamond{
				{Divergence: r2, Convergence: r4, TTL: 2, MaxWidth: 3, MinLength: 2, MaxLength: 2, Nodes: []string{r3a, r3b, r3c}},
				{Divergence: r4, Convergence: r6, TTL: 4, MaxWidth: 2, MinLength: 2, MaxLength: 3, Nodes: []string{r5a, r5b, r5c}},
			}
			if fmt.Sprint(g.Diamonds) != fmt.Sprint(wantD) {
				t.Errorf("diamonds:\n got %+v\nwant %+v", g.Diamonds, wantD)
			}
			if !g.Diamonds[1].Unequal() || g.Diamonds[0].Unequal() {
				t.Error("Unequal() wrong")
			}
			t.Logf("%s: %d probes sent, %d answered, %d rounds, %d flows, %v (virtual), per-interface MDA at TTLs %v",
				g.Mode, g.Sent, g.Answered, g.Rounds, len(g.Flows), g.Duration, g.FullTTLs)
		})
	}
}

func cmpPair(a, b [2]string) int { return strings.Compare(a[0]+" "+a[1], b[0]+" "+b[1]) }

// The lab's routers hash with fixed seeds: other flow ids make other runs.
func TestLabFlowIDs(t *testing.T) {
	runs := 40
	if testing.Short() {
		runs = 10
	}
	fails := 0
	for i := range runs {
		n := sim.Lab(1)
		o := mda.DefaultOptions()
		o.FlowBase = uint16(20000 + 1000*i)
		g := run(t, n, o)
		missing, extra := n.Compare(0, g)
		if len(extra) > 0 {
			t.Errorf("flow base %d: false links %v", o.FlowBase, extra)
		}
		if len(missing) > 0 {
			fails++
			t.Logf("flow base %d: missed %v", o.FlowBase, missing)
		}
	}
	// Two load balancers, each fully enumerated with probability >= 95%.
	if limit := runs/10 + 1; fails > limit {
		t.Errorf("%d of %d runs missed links, want at most %d", fails, runs, limit)
	}
}

// The probe counts the lead compares with scamper's tracelb (full MDA per interface).
func TestProbeEconomy(t *testing.T) {
	lite := run(t, sim.Lab(1), mda.DefaultOptions())
	o := mda.DefaultOptions()
	o.Full = true
	full := run(t, sim.Lab(1), o)
	t.Logf("lab, 95%%: MDA-Lite %d probes (%d answered, %d rounds), full MDA %d probes (%d answered, %d rounds): %.0f%%",
		lite.Sent, lite.Answered, lite.Rounds, full.Sent, full.Answered, full.Rounds, 100*float64(lite.Sent)/float64(full.Sent))
	if lite.Sent*10 > full.Sent*8 {
		t.Errorf("MDA-Lite %d probes, not below 80%% of full MDA's %d", lite.Sent, full.Sent)
	}
	// On random topologies too.
	var sl, sf int
	for seed := range uint64(50) {
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 1)), sim.RandomOptions{})
		sl += run(t, n, mda.DefaultOptions()).Sent
		n, _ = sim.Random(rand.New(rand.NewPCG(seed, 1)), sim.RandomOptions{})
		sf += run(t, n, o).Sent
	}
	t.Logf("50 random topologies: MDA-Lite %d probes per run, full MDA %d", sl/50, sf/50)
	if sl >= sf {
		t.Errorf("MDA-Lite %d probes, full MDA %d", sl, sf)
	}
}

// stats runs count random topologies and returns the fraction of runs that missed a link
// and the fraction of diamonds missed (a diamond is missed when one of its links is).
func stats(t *testing.T, count int, ro sim.RandomOptions, o mda.Options, tweak func(*sim.Network)) (runFail, diamondFail float64, probes int) {
	t.Helper()
	fails, dias, diaFails := 0, 0, 0
	for seed := range uint64(count) {
		n, truth := sim.Random(rand.New(rand.NewPCG(seed, 42)), ro)
		if tweak != nil {
			tweak(n)
		}
		g := run(t, n, o)
		probes += g.Sent
		missing, extra := n.Compare(0, g)
		if len(extra) > 0 {
			t.Errorf("seed %d: false links %v", seed, extra)
		}
		if len(missing) > 0 {
			fails++
		}
		if ro.Silent > 0 {
			continue // DiamondLinks assumes every router answers
		}
		got := map[sim.Link]bool{}
		for _, l := range g.Links {
			got[sim.Link{From: l.From, To: l.To}] = true
		}
		for _, d := range truth {
			dias++
			for l := range n.DiamondLinks(d) {
				if !got[l] {
					diaFails++
					break
				}
			}
		}
	}
	return float64(fails) / float64(count), float64(diaFails) / float64(max(dias, 1)), probes / count
}

// The statistical guarantee: with random paths of 1-3 diamonds (width 2-6, branches of
// 1-3 routers drawn alone, so mostly of unequal length), the share of runs that miss any
// link stays within 1 - confidence (plus slack for the sample and for paths with several
// load balancers: the confidence is per load balancer).
func TestStatistical(t *testing.T) {
	count := 500
	if testing.Short() {
		count = 100
	}
	for _, c := range []struct {
		conf float64
		full bool
	}{{95, false}, {99, false}, {95, true}} {
		o := mda.DefaultOptions()
		o.Confidence, o.Full = c.conf, c.full
		n := count
		if c.full {
			n = count / 5
		}
		runFail, diaFail, probes := stats(t, n, sim.RandomOptions{}, o, nil)
		limit := (100-c.conf)/100 + 0.03
		t.Logf("confidence %v%%, full MDA %v, %d topologies: %.1f%% of runs missed a link, %.1f%% of diamonds; %d probes per run",
			c.conf, c.full, n, 100*runFail, 100*diaFail, probes)
		if runFail > limit {
			t.Errorf("confidence %v%%: %.1f%% of runs missed links, want <= %.1f%%", c.conf, 100*runFail, 100*limit)
		}
		// Per load balancer, the guarantee itself (with slack for small samples).
		if limit := (100-c.conf)/100 + 0.02; diaFail > limit {
			t.Errorf("confidence %v%%: %.1f%% of diamonds missed, want <= %.1f%%", c.conf, 100*diaFail, 100*limit)
		}
	}
}

func TestRateLimited(t *testing.T) {
	t.Run("lab", func(t *testing.T) {
		for _, full := range []bool{false, true} {
			n := sim.Lab(1)
			n.SetRateLimit(&sim.LinuxLimit)
			o := mda.DefaultOptions()
			o.Full = full
			g := run(t, n, o)
			if missing, extra := n.Compare(0, g); len(missing)+len(extra) > 0 {
				t.Errorf("full %v: missing %v, extra %v", full, missing, extra)
			}
			t.Logf("full %v: burst 6 then 1/s everywhere: %d probes, %d answered, %v (virtual)", full, g.Sent, g.Answered, g.Duration)
		}
	})
	t.Run("random", func(t *testing.T) {
		count := 60
		if testing.Short() {
			count = 20
		}
		runFail, _, probes := stats(t, count, sim.RandomOptions{}, mda.DefaultOptions(), func(n *sim.Network) { n.SetRateLimit(&sim.LinuxLimit) })
		t.Logf("%d rate-limited topologies: %.1f%% of runs missed a link; %d probes per run", count, 100*runFail, probes)
		if runFail > 0.10 {
			t.Errorf("%.1f%% of runs missed links", 100*runFail)
		}
	})
}

func TestLoss(t *testing.T) {
	t.Run("lab", func(t *testing.T) {
		runs, fails := 40, 0
		if testing.Short() {
			runs = 10
		}
		for i := range runs {
			n := sim.Lab(1)
			n.Reseed(uint64(i))
			n.Loss = 0.05
			g := run(t, n, mda.DefaultOptions())
			missing, extra := n.Compare(0, g)
			if len(extra) > 0 {
				t.Errorf("run %d: false links %v", i, extra)
			}
			if len(missing) > 0 {
				fails++
				t.Logf("run %d: missed %v", i, missing)
			}
		}
		if fails > runs/10 {
			t.Errorf("5%% loss: %d of %d runs missed links", fails, runs)
		}
	})
	t.Run("random", func(t *testing.T) {
		count := 100
		if testing.Short() {
			count = 30
		}
		runFail, _, probes := stats(t, count, sim.RandomOptions{}, mda.DefaultOptions(), func(n *sim.Network) { n.Loss = 0.05 })
		t.Logf("5%% loss, %d topologies: %.1f%% of runs missed a link; %d probes per run", count, 100*runFail, probes)
		if runFail > 0.10 {
			t.Errorf("%.1f%% of runs missed links", 100*runFail)
		}
	})
}

func TestSilentRouters(t *testing.T) {
	count := 60
	if testing.Short() {
		count = 20
	}
	runFail, _, probes := stats(t, count, sim.RandomOptions{Silent: 0.1}, mda.DefaultOptions(), nil)
	t.Logf("10%% silent routers, %d topologies: %.1f%% of runs missed a link; %d probes per run", count, 100*runFail, probes)
	if runFail > 0.10 {
		t.Errorf("%.1f%% of runs missed links", 100*runFail)
	}
}

func TestConfidenceValidation(t *testing.T) {
	for _, c := range []float64{0, 100, -1, 150} {
		o := mda.DefaultOptions()
		o.Confidence = c
		_, err := mda.Run(context.Background(), sim.Lab(1), o)
		if !errors.Is(err, mda.ErrConfidence) {
			t.Errorf("confidence %v: error %v", c, err)
		}
	}
	for _, c := range []float64{0.5, 50, 95, 99.9} {
		o := mda.DefaultOptions()
		o.Confidence = c
		if err := o.Validate(); err != nil {
			t.Errorf("confidence %v: %v", c, err)
		}
	}
	o := mda.DefaultOptions()
	o.FlowBase, o.MaxFlows = 65000, 1000
	if o.Validate() == nil {
		t.Error("flows past port 65535 accepted")
	}
}

func TestRunMany(t *testing.T) {
	n := sim.Lab(3) // three addresses behind t1, then t2
	gs, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(mda.DefaultOptions()))
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gs {
		if missing, extra := n.Compare(i, g); len(missing)+len(extra) > 0 {
			t.Errorf("target %d: missing %v, extra %v", i, missing, extra)
		}
		if g.Target != n.Targets[i].Addr {
			t.Errorf("target %d: %v", i, g.Target)
		}
		t.Logf("target %v: %d probes, TTLs shared %v", g.Target, g.Sent, g.SharedTTLs)
	}
	if len(gs[0].SharedTTLs) > 0 {
		t.Errorf("first target shared %v", gs[0].SharedTTLs)
	}
	// The second t1 address shares the path up to the destination's TTLs.
	alone := run(t, sim.Lab(3), mda.DefaultOptions()) // the first target alone, as a yardstick
	if !slices.Equal(gs[1].SharedTTLs, []int{1, 2, 3, 4, 5, 6, 7, 8}) || gs[1].Sent*10 > alone.Sent*8 {
		t.Errorf("second target: shared %v, %d probes vs %d alone", gs[1].SharedTTLs, gs[1].Sent, alone.Sent)
	}
	// t2 leaves at r2 toward r9: shared up to r2 only, and none of t1's diamonds.
	last := gs[len(gs)-1]
	if !slices.Equal(last.SharedTTLs, []int{1, 2}) {
		t.Errorf("t2: shared %v", last.SharedTTLs)
	}
	if _, ok := last.Node(r9); !ok || len(last.Diamonds) != 0 {
		t.Errorf("t2: %+v", last.Hops)
	}
}

func TestGraphJSON(t *testing.T) {
	g := run(t, sim.Lab(1), mda.DefaultOptions())
	b, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	var back mda.Graph
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back.Links) != fmt.Sprint(g.Links) || fmt.Sprint(back.Diamonds) != fmt.Sprint(g.Diamonds) || back.Dest != t1 {
		t.Error("JSON round trip changed the graph")
	}
	for _, want := range []string{`"id":"*198.18.13.2+1"`, `"after":"198.18.13.2"`, `"ttls":[6,7]`, `"max_width":3`, `"mode":"mda-lite"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s", want)
		}
	}
	if strings.Contains(string(b), `"addr":""`) {
		t.Error("anonymous node has an empty addr")
	}
}

func TestBounds(t *testing.T) {
	o := mda.DefaultOptions()
	o.MaxProbes = 40
	if g := run(t, sim.Lab(1), o); g.Truncated != "max-probes" || g.Sent > 40 {
		t.Errorf("max probes: %q, %d sent", g.Truncated, g.Sent)
	}
	o = mda.DefaultOptions()
	o.MaxTTL = 5
	if g := run(t, sim.Lab(1), o); g.Truncated != "max-ttl" || g.Reached {
		t.Errorf("max TTL: %q", g.Truncated)
	}
	o = mda.DefaultOptions()
	o.MaxFlows = 8
	if g := run(t, sim.Lab(1), o); g.Truncated != "max-flows" {
		t.Errorf("max flows: %q", g.Truncated)
	}
	o = mda.DefaultOptions()
	o.FirstTTL = 3
	g := run(t, sim.Lab(1), o)
	if g.Hops[0].TTL != 3 || len(g.Hops[0].Nodes) != 3 {
		t.Errorf("first TTL 3: %+v", g.Hops[0])
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := sim.Lab(1)
	if _, err := mda.Run(ctx, n, n.Options(mda.DefaultOptions())); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// A target that never answers, behind silent routers: the exploration stops after
// Options.MaxGap silent TTLs instead of probing up to MaxTTL.
func TestUnreachable(t *testing.T) {
	n := sim.Lab(1)
	n.Nodes["r8"].Silent = true
	n.Nodes["t1"].Silent = true
	g := run(t, n, mda.DefaultOptions())
	if g.Reached {
		t.Fatal("reached a silent target")
	}
	deepest := g.Hops[len(g.Hops)-1].TTL
	if deepest > 7+mda.DefaultOptions().MaxGap {
		t.Errorf("probed down to TTL %d", deepest)
	}
	t.Logf("%d probes, deepest hop %d", g.Sent, deepest)
}

func BenchmarkMDALab(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(map[bool]string{false: "lite", true: "full"}[full], func(b *testing.B) {
			o := mda.DefaultOptions()
			o.Full = full
			sent := 0
			for b.Loop() {
				n := sim.Lab(1)
				g, err := mda.Run(context.Background(), n, n.Options(o))
				if err != nil {
					b.Fatal(err)
				}
				sent = g.Sent
			}
			b.ReportMetric(float64(sent), "probes/op")
		})
	}
}

func BenchmarkMDARandom(b *testing.B) {
	o := mda.DefaultOptions()
	seed := uint64(0)
	sent := 0
	for b.Loop() {
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 42)), sim.RandomOptions{})
		seed++
		g, err := mda.Run(context.Background(), n, n.Options(o))
		if err != nil {
			b.Fatal(err)
		}
		sent += g.Sent
	}
	b.ReportMetric(float64(sent)/float64(b.N), "probes/op")
}

// RunMany explores targets in waves: the same links as one target after the other, in far
// less time; where routers rate-limit their answers (the targets share their budgets),
// one target at a time again, and no false silent hop from a budget an earlier target
// spent.
func TestRunManyWaves(t *testing.T) {
	for _, limited := range []bool{false, true} {
		var took [2]time.Duration
		var probes [2]int
		for i, par := range []int{1, 32} {
			n := sim.Lab(20)
			if limited {
				n.SetRateLimit(&sim.LinuxLimit)
			}
			o := mda.DefaultOptions()
			o.Parallel = par
			start := n.Now()
			gs, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(o))
			if err != nil {
				t.Fatal(err)
			}
			took[i] = n.Now().Sub(start)
			for j, g := range gs {
				probes[i] += g.Sent
				if missing, extra := n.Compare(j, g); len(missing)+len(extra) > 0 {
					t.Errorf("rate limited %v, parallel %d, target %v: missing %v, extra %v", limited, par, g.Target, missing, extra)
				}
			}
		}
		t.Logf("21 targets, rate limited %v: one after the other %v (virtual), %d probes; in waves %v, %d probes",
			limited, took[0], probes[0], took[1], probes[1])
		// Rate limiting seen (toward the first target already, here): one target at a
		// time after all, since they share the routers' budgets.
		if !limited && took[1]*2 > took[0] || limited && took[1] > took[0] {
			t.Errorf("rate limited %v: waves took %v, one after the other %v", limited, took[1], took[0])
		}
	}
}
