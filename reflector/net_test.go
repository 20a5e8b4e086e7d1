package reflector_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/reflector"
	"github.com/turnpath/turnpath/reflector/reflectortest"
	"github.com/turnpath/turnpath/trace"
)

// openEngine makes an engine of the given kind in the prober namespace.
func openEngine(n *reflector.Net, kind string, flows []probe.Flow, payload string) (trace.Engine, error) {
	p, err := probe.ParsePayload(payload)
	if err != nil {
		return nil, err
	}
	cfg := engine.Config{Flows: flows, Payload: p, Nonce: 0x5eed, Ifindexes: []int{n.Ifindex()}}
	if err := n.UseEngine(kind); err != nil {
		return nil, err
	}
	var eng trace.Engine
	err = n.Do(func() error {
		var err error
		if kind == "ebpf" {
			eng, err = engine.NewEBPF(cfg)
		} else {
			eng, err = engine.NewSocket(cfg)
		}
		return err
	})
	return eng, err
}

// Both engines trace through the reflector and see exactly Depth hops, every hop from
// its responder, the destination at Depth.
func TestNetTraceDepth(t *testing.T) {
	const depth = 12
	n := reflectortest.Up(t, "rft", depth)
	for _, kind := range []string{"ebpf", "socket"} {
		for _, c := range []struct {
			proto   probe.Proto
			v6      bool
			payload string
		}{{probe.ProtoUDP, false, "stun"}, {probe.ProtoUDP, true, "stun"}, {probe.ProtoICMP, false, "none"},
			{probe.ProtoTCP, true, "none"}} {
			var flows []probe.Flow
			for i := 0; i < 5; i++ {
				dst := reflector.Target(i*1000, c.v6)
				flows = append(flows, probe.Flow{Src: n.Source(dst), Dst: dst, Proto: c.proto, SPort: 50000, DPort: 3478})
			}
			eng, err := openEngine(n, kind, flows, c.payload)
			if err != nil {
				t.Fatalf("%s engine: %v", kind, err)
			}
			opts := trace.DefaultOptions()
			opts.Rate = 0
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res, err := trace.Run(ctx, eng, len(flows), opts)
			cancel()
			eng.Close()
			if err != nil {
				t.Fatalf("%s %v: %v", kind, c, err)
			}
			for i, r := range res {
				if !r.Reached || r.DestTTL != depth || len(r.Hops) != depth {
					t.Fatalf("%s %v target %s: reached %v at %d with %d hops", kind, c, flows[i].Dst, r.Reached, r.DestTTL, len(r.Hops))
				}
				for _, h := range r.Hops {
					want := n.Responder(h.TTL, c.v6)
					if h.TTL == depth {
						want = flows[i].Dst
					}
					for a, rep := range h.Replies {
						if rep == nil || rep.From != want {
							t.Fatalf("%s %v target %s ttl %d attempt %d: %+v, want from %s", kind, c, flows[i].Dst, h.TTL, a, rep, want)
						}
						if kind == "ebpf" && !rep.Kernel {
							t.Errorf("ebpf: no kernel timestamps")
						}
						if rep.NAT != "" {
							t.Errorf("%s: NAT note %q", kind, rep.NAT)
						}
					}
				}
			}
		}
	}
	st, err := n.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TimeExceeded == 0 || st.Unreachable == 0 || st.Echo == 0 || st.Errors != 0 {
		t.Errorf("reflector stats %+v", st)
	}
}

// More targets than the eBPF engine's flow table holds (65536), through the window:
// flows come from FlowOf, flowtags are registered at admission and removed at release.
func TestNetStreamManyTargets(t *testing.T) {
	const depth = 2
	n := reflectortest.Up(t, "rft", depth)
	for _, c := range []struct {
		kind    string
		targets int
	}{{"ebpf", 70_000}, {"socket", 3000}} {
		if err := n.UseEngine(c.kind); err != nil {
			t.Fatal(err)
		}
		mk := func(i int) probe.Flow {
			dst := reflector.Target(i, false)
			return probe.Flow{Src: n.Source(dst), Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}
		}
		p, _ := probe.ParsePayload("stun")
		cfg := engine.Config{FlowOf: func(i int) (probe.Flow, error) { return mk(i), nil }, Shape: []probe.Flow{mk(0)},
			Payload: p, Nonce: 0x5eed, Ifindexes: []int{n.Ifindex()}}
		var eng trace.Engine
		if err := n.Do(func() error {
			var err error
			if c.kind == "ebpf" {
				eng, err = engine.NewEBPF(cfg)
			} else {
				eng, err = engine.NewSocket(cfg)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		opts := trace.DefaultOptions()
		opts.Rate, opts.Queries, opts.MaxTTL = 0, 1, 4
		opts.Wait = 500 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		seen := make([]bool, c.targets)
		reached := 0
		err := trace.Stream(ctx, eng, c.targets, opts, func(r trace.Result) error {
			if seen[r.Target] {
				t.Errorf("target %d twice", r.Target)
			}
			seen[r.Target] = true
			if r.Reached && r.DestTTL == depth && r.Hops[0].Replies[0] != nil {
				reached++
			} else if testing.Verbose() && r.Target%500 == 0 {
				t.Logf("%s target %d: reached %v dest %d hops %d sent %d %v", c.kind, r.Target, r.Reached, r.DestTTL, len(r.Hops), r.Sent, r.End.Sub(r.Start))
			}
			return nil
		})
		cancel()
		eng.Close()
		if err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		// A few answers may be lost at full speed on two cores; nearly all must arrive.
		if reached < c.targets*99/100 {
			t.Errorf("%s: %d of %d targets reached at hop %d with hop 1 answered", c.kind, reached, c.targets, depth)
		}
	}
}
