package mda_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// simEngine is a trace.Engine over the simulator: the engine target index is decoded
// with the layout, as the real engines would know it from the 5-tuple. The relay answers
// STUN from another of its addresses, as the lab's wildcard coturn does.
type simEngine struct {
	n       *sim.Network
	layout  mda.Layout
	relay   netip.Addr
	replies chan trace.Reply
	errs    chan error

	mu    sync.Mutex
	sent  []trace.Probe
	delay time.Duration // replies arrive this late (asynchronously)
}

func newSimEngine(n *sim.Network, l mda.Layout) *simEngine {
	return &simEngine{n: n, layout: l, relay: netip.MustParseAddr("198.18.17.2"),
		replies: make(chan trace.Reply, 1<<16), errs: make(chan error, 1)}
}

func (e *simEngine) Name() string                { return "sim" }
func (e *simEngine) Replies() <-chan trace.Reply { return e.replies }
func (e *simEngine) Errors() <-chan error        { return e.errs }
func (e *simEngine) Close() error                { return nil }
func (e *simEngine) Admit(int) error             { return nil }
func (e *simEngine) Release(int)                 {}

func (e *simEngine) Send(p trace.Probe) error {
	e.mu.Lock()
	e.sent = append(e.sent, p)
	delay := e.delay
	e.mu.Unlock()
	t, flow := p.Target/e.layout.Flows, e.layout.Base+uint16(p.Target%e.layout.Flows)
	if i, ok := e.layout.Index(t, flow); !ok || i != p.Target {
		return errors.New("layout does not round-trip")
	}
	as, err := e.n.Probe(context.Background(), []mda.Request{{Target: t, Flow: flow, TTL: p.TTL}})
	if err != nil || len(as) == 0 {
		return err
	}
	a := as[0]
	rep := trace.Reply{Probe: p, From: a.From, RTT: a.RTT, Kind: probe.KindTimeExceeded, ICMPType: 11}
	if a.Dest {
		rep.Kind, rep.From = probe.KindSTUN, e.relay
	}
	if delay > 0 {
		go func() { time.Sleep(delay); e.replies <- rep }()
	} else {
		e.replies <- rep
	}
	return nil
}

func fastProber() mda.ProberOptions {
	return mda.ProberOptions{Wait: 20 * time.Millisecond, MinWait: 5 * time.Millisecond, Rate: 0}
}

// The adapter over an engine finds what the algorithm finds on the simulator itself:
// every link, the destination as the target (not the relay's answering address), and the
// flows stay within the layout.
func TestEngineProberLab(t *testing.T) {
	n := sim.Lab(2)
	o := mda.DefaultOptions()
	o.MaxFlows = 256
	o.RateLimitBackoff = 10 * time.Millisecond
	l, err := mda.NewLayout(len(n.Targets), o.FlowBase, o.MaxFlows)
	if err != nil {
		t.Fatal(err)
	}
	eng := newSimEngine(n, l)
	p, err := mda.NewEngineProber(eng, l, n.TargetAddrs(), fastProber())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	gs, err := mda.RunMany(context.Background(), p, n.TargetAddrs(), o)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gs {
		if missing, extra := n.Compare(i, g); len(missing)+len(extra) > 0 {
			t.Errorf("target %d: missing %v, extra %v", i, missing, extra)
		}
		if !g.Reached || g.Dest != n.Targets[i].Addr.String() {
			t.Errorf("target %d: reached %v at %q", i, g.Reached, g.Dest)
		}
	}
	if len(gs[0].Diamonds) != 2 || !gs[0].Diamonds[1].Unequal() {
		t.Errorf("diamonds %+v", gs[0].Diamonds)
	}
	// Re-sends of one (flow, TTL) carry new attempt numbers.
	seen := map[trace.Probe]bool{}
	for _, s := range eng.sent {
		if seen[s] {
			t.Fatalf("probe %+v sent twice with the same attempt", s)
		}
		seen[s] = true
	}
}

// Replies that come after the batch's wait are dropped, not credited to a later batch.
func TestEngineProberLateReplies(t *testing.T) {
	n := sim.Lab(1)
	l, _ := mda.NewLayout(len(n.Targets), 50000, 16)
	eng := newSimEngine(n, l)
	eng.delay = 60 * time.Millisecond
	p, err := mda.NewEngineProber(eng, l, n.TargetAddrs(), fastProber())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	as, err := p.Probe(ctx, []mda.Request{{Flow: 50000, TTL: 1}})
	if err != nil || len(as) != 0 {
		t.Fatalf("late answer counted: %v %v", as, err)
	}
	time.Sleep(80 * time.Millisecond) // the late reply arrives between batches
	eng.mu.Lock()
	eng.delay = 0
	eng.mu.Unlock()
	as, err = p.Probe(ctx, []mda.Request{{Flow: 50001, TTL: 2}, {Flow: 50001, TTL: 2}})
	if err != nil {
		t.Fatal(err)
	}
	// The duplicate request shares its twin's answer.
	if len(as) != 2 || as[0].Flow != 50001 || as[0].TTL != 2 || as[0].From != as[1].From || !as[0].From.IsValid() {
		t.Fatalf("answers %+v", as)
	}
}

func TestEngineProberErrors(t *testing.T) {
	n := sim.Lab(1)
	l, _ := mda.NewLayout(len(n.Targets), 50000, 16)
	eng := newSimEngine(n, l)
	p, err := mda.NewEngineProber(eng, l, n.TargetAddrs(), mda.ProberOptions{Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if _, err := p.Probe(ctx, []mda.Request{{Flow: 50016, TTL: 1}}); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("flow outside the layout: %v", err)
	}
	// A fatal engine error ends the batch at once; so does a cancel. The replies would
	// come after the wait.
	eng.delay = 2 * time.Second
	eng.errs <- errors.New("link l1-r1 gone")
	start := time.Now()
	if _, err := p.Probe(ctx, []mda.Request{{Flow: 50000, TTL: 1}}); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("engine error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := p.Probe(cctx, []mda.Request{{Flow: 50000, TTL: 1}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v", err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("error and cancel took %v", time.Since(start))
	}
}

func TestLayout(t *testing.T) {
	if _, err := mda.NewLayout(300, 50000, 256); err == nil {
		t.Error("300x256 flows fit the 65535-entry flow table")
	}
	if _, err := mda.NewLayout(1, 65500, 64); err == nil {
		t.Error("ports past 65535 accepted")
	}
	l, err := mda.NewLayout(3, 40000, 4)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := []probe.Flow{
		{Dst: netip.MustParseAddr("198.19.1.1"), DPort: 3478, Proto: probe.ProtoUDP},
		{Dst: netip.MustParseAddr("198.19.1.2"), DPort: 3478, Proto: probe.ProtoUDP},
		{Dst: netip.MustParseAddr("198.19.1.3"), DPort: 3478, Proto: probe.ProtoUDP},
	}
	fl := l.EngineFlows(tmpl)
	for tg := range 3 {
		for f := uint16(40000); f < 40004; f++ {
			i, ok := l.Index(tg, f)
			if !ok || fl[i].Dst != tmpl[tg].Dst || fl[i].SPort != f {
				t.Errorf("target %d flow %d: index %d %v", tg, f, i, fl[i])
			}
		}
	}
	if _, ok := l.Index(0, 40004); ok {
		t.Error("flow past the layout")
	}
}

// A (flow, TTL) sent several times in one batch gets an answer per send: a rate-limited
// router answers the first sends and not the rest, which a rate-limit alias test counts.
func TestEngineProberDuplicateSends(t *testing.T) {
	n := sim.Lab(1)
	n.SetRateLimit(&sim.Bucket{Burst: 3, Rate: 0.001})
	l, _ := mda.NewLayout(len(n.Targets), 50000, 16)
	eng := newSimEngine(n, l)
	p, err := mda.NewEngineProber(eng, l, n.TargetAddrs(), fastProber())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reqs := make([]mda.Request, 10)
	for i := range reqs {
		reqs[i] = mda.Request{Flow: 50001, TTL: 2}
	}
	as, err := p.Probe(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 3 {
		t.Fatalf("%d answers to 10 sends of one (flow, TTL) to a router with 3 tokens: %+v", len(as), as)
	}
}
