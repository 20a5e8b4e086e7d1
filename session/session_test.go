package session

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// fakeEngine stands in for an opened engine.
type fakeEngine struct {
	name   string
	cfg    engine.Config
	closed int
}

func (f *fakeEngine) Name() string                { return f.name }
func (f *fakeEngine) Send(trace.Probe) error      { return nil }
func (f *fakeEngine) Replies() <-chan trace.Reply { return nil }
func (f *fakeEngine) Errors() <-chan error        { return nil }
func (f *fakeEngine) Close() error                { f.closed++; return nil }
func (f *fakeEngine) Admit(int) error             { return nil }
func (f *fakeEngine) Release(int)                 {}

var (
	src1 = netip.MustParseAddr("198.18.1.1")
	src2 = netip.MustParseAddr("198.18.9.1")
	src6 = netip.MustParseAddr("fd51:0:0:1::1")
)

// newTest is a session over a fake routing table: 198.19.1.0/24 and fd51::/16 via eth1
// (ifindex 2), 198.19.2.0/24 via eth9 (ifindex 9, MTU 40), everything else unroutable.
func newTest(t *testing.T, spec Spec) (*Session, *[]*fakeEngine) {
	t.Helper()
	s, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	s.Lookup = func(dst netip.Addr) (hostnet.Route, error) {
		switch {
		case dst.Is6():
			return hostnet.Route{Src: src6, Ifindex: 2, Ifname: "eth1", Nexthops: 1}, nil
		case netip.MustParsePrefix("198.19.1.0/24").Contains(dst):
			return hostnet.Route{Src: src1, Ifindex: 2, Ifname: "eth1", Nexthops: 1}, nil
		case netip.MustParsePrefix("198.19.2.0/24").Contains(dst):
			return hostnet.Route{Src: src2, Ifindex: 9, Ifname: "eth9", Nexthops: 2}, nil
		}
		return hostnet.Route{}, hostnet.ErrNoRoute
	}
	s.MTU = func(i int) int {
		if i == 9 {
			return 40 // below any probe
		}
		return 1500
	}
	var opened []*fakeEngine
	s.NewEBPF = func(c engine.Config) (trace.Engine, error) {
		if spec.Engine != EngineSocket && strings.Contains(t.Name(), "NoBPF") {
			return nil, errors.New("load BPF objects: operation not permitted\nverifier log ...")
		}
		e := &fakeEngine{name: "ebpf", cfg: c}
		opened = append(opened, e)
		return e, nil
	}
	s.NewSocket = func(c engine.Config) (trace.Engine, error) {
		e := &fakeEngine{name: "socket", cfg: c}
		opened = append(opened, e)
		return e, nil
	}
	return s, &opened
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func stun(t *testing.T) probe.Payload {
	p, err := probe.ParsePayload("stun")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRouteAndConfig(t *testing.T) {
	s, opened := newTest(t, Spec{Engine: EngineAuto, Proto: probe.ProtoUDP, Port: 3478, Payload: stun(t), Numeric: true})
	dsts := addrs("198.19.1.1", "198.19.1.2", "fd51:1:2::5", "198.19.1.3")
	if err := s.Route(context.Background(), dsts); err != nil {
		t.Fatal(err)
	}
	if s.RouteOf(0) != s.RouteOf(3) || s.RouteOf(2).Src != src6 {
		t.Errorf("routes %+v %+v %+v", s.RouteOf(0), s.RouteOf(3), s.RouteOf(2))
	}
	if len(s.routes) != 2 {
		t.Errorf("%d distinct routes, want 2 (one per source on eth1)", len(s.routes))
	}
	cfg := s.Config(50000)
	if !slices.Equal(cfg.Ifindexes, []int{2}) {
		t.Errorf("ifindexes %v, want [2]: one attach per interface", cfg.Ifindexes)
	}
	if len(cfg.Shape) != 2 || cfg.Shape[0].Src != src1 || cfg.Shape[1].Src != src6 ||
		cfg.Shape[0].SPort != 50000 || cfg.Shape[0].DPort != 3478 || cfg.Nonce == 0 {
		t.Errorf("config %+v", cfg)
	}
	if f := s.Flow(s.RouteOf(1), dsts[1], 50000); f != (probe.Flow{Src: src1, Dst: dsts[1], Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}) {
		t.Errorf("flow %+v", f)
	}
	cfg.Flows = []probe.Flow{s.Flow(s.RouteOf(0), dsts[0], 50000)}
	e, err := s.Open(cfg)
	if err != nil || e.Name() != "ebpf" || s.FellBack() || !strings.Contains(s.Why(), "BPF programs attached") {
		t.Fatalf("open: %v %v %q", e, err, s.Why())
	}
	if _, err := s.Open(cfg); err == nil {
		t.Error("second open: want an error (one attach per run)")
	}
	s.Close()
	if len(*opened) != 1 || (*opened)[0].closed != 1 {
		t.Errorf("engines opened %d, closed %d", len(*opened), (*opened)[0].closed)
	}
	if s.Names(dsts) != nil {
		t.Error("numeric: want no namer")
	}
}

func TestRouteErrors(t *testing.T) {
	s, _ := newTest(t, Spec{Engine: EngineAuto, Proto: probe.ProtoUDP, Port: 3478, Payload: stun(t)})
	if err := s.Route(context.Background(), addrs("198.19.1.1", "203.0.113.1")); !errors.Is(err, hostnet.ErrNoRoute) {
		t.Errorf("unroutable: %v", err)
	}
	var big *ProbeTooBigError
	err := s.Route(context.Background(), addrs("198.19.2.1"))
	if !errors.As(err, &big) || err.Error() != "probe of 48 bytes exceeds the MTU 40 of eth9" {
		t.Errorf("too big: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	s.Lookup = func(netip.Addr) (hostnet.Route, error) { n++; return hostnet.Route{Src: src1, Ifindex: 2}, nil }
	if err := s.Route(ctx, addrs("198.19.1.1", "198.19.1.2")); !errors.Is(err, ErrInterrupted) || n != 0 {
		t.Errorf("cancelled: %v after %d lookups", err, n)
	}
}

func TestEngineChoiceNoBPF(t *testing.T) {
	for _, c := range []struct {
		kind     string
		want     string
		fellBack bool
		err      string
	}{
		{EngineAuto, "socket", true, ""},
		{EngineEBPF, "", false, "ebpf engine: load BPF objects: operation not permitted"},
		{EngineSocket, "socket", false, ""},
	} {
		s, _ := newTest(t, Spec{Engine: c.kind, Proto: probe.ProtoUDP, Port: 3478, Payload: stun(t)})
		e, err := s.Open(engine.Config{})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.kind, err, c.err)
			}
			continue
		}
		if err != nil || e.Name() != c.want || s.FellBack() != c.fellBack {
			t.Errorf("%s: %v %v fell back %v", c.kind, e, err, s.FellBack())
		}
		// The reason is one line, for one warning line.
		if c.fellBack && (s.Why() != "ebpf engine unavailable: load BPF objects: operation not permitted") {
			t.Errorf("%s: why %q", c.kind, s.Why())
		}
	}
	if _, err := New(Spec{Engine: "xdp"}); err == nil {
		t.Error("unknown engine accepted")
	}
}

// TestRouteSize: --size is checked against what the payload needs and against every
// route's MTU before any probe leaves; MTUOf is where path MTU discovery starts.
func TestRouteSize(t *testing.T) {
	for _, c := range []struct {
		size int
		err  string
	}{
		{20, "probe size 20 is below the 48 bytes these probes need"},
		{1501, "probe of 1501 bytes exceeds the MTU 1500 of eth1"},
		{1500, ""},
	} {
		s, _ := newTest(t, Spec{Engine: EngineAuto, Proto: probe.ProtoUDP, Port: 3478, Payload: stun(t), Size: c.size})
		err := s.Route(context.Background(), addrs("198.19.1.1", "fd51:1:2::5"))
		if c.err == "" {
			if err != nil || s.MTUOf(0) != 1500 || s.MTUOf(1) != 1500 {
				t.Errorf("size %d: %v, MTUs %d %d", c.size, err, s.MTUOf(0), s.MTUOf(1))
			}
			continue
		}
		if err == nil || err.Error() != c.err {
			t.Errorf("size %d: %v, want %q", c.size, err, c.err)
		}
	}
}

// Reattach waits until the way out is back, reopens the engine on the new routes and
// names the targets that moved; Ctrl-C during the wait keeps the old routing.
func TestReattach(t *testing.T) {
	s, opened := newTest(t, Spec{Engine: EngineAuto, Proto: probe.ProtoUDP, Port: 3478, Payload: stun(t)})
	dsts := addrs("198.19.1.1", "198.19.1.2")
	if err := s.Route(context.Background(), dsts); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(s.Config(50000)); err != nil {
		t.Fatal(err)
	}
	if s.CheckRoutes(dsts) != nil {
		t.Fatal("routes changed without a change")
	}
	// eth1 goes away: no route for three polls, then 198.19.1.2 comes back via eth3.
	gone := 0
	s.Vanished = func(m map[int]string) error {
		if _, ok := m[2]; ok {
			return errors.New("interface eth1 disappeared")
		}
		return nil
	}
	s.Lookup = func(dst netip.Addr) (hostnet.Route, error) {
		if gone++; gone <= 3 {
			return hostnet.Route{}, hostnet.ErrNoRoute
		}
		return hostnet.Route{Src: src2, Ifindex: 3, Ifname: "eth3"}, nil
	}
	if !s.Recoverable(errors.New("send probe: network is unreachable"), dsts) {
		t.Fatal("a vanished interface is not recoverable")
	}
	old := ReattachPoll
	ReattachPoll = time.Millisecond
	defer func() { ReattachPoll = old }()
	eng, moved, err := s.Reattach(context.Background(), dsts, func() engine.Config { return s.Config(50000) })
	if err != nil {
		t.Fatal(err)
	}
	if len(*opened) != 2 || (*opened)[0].closed != 1 || eng != (*opened)[1] {
		t.Fatalf("engines %+v, want the first closed and a second open", *opened)
	}
	if !slices.Equal(moved, []int{0, 1}) || s.RouteOf(1).Ifindex != 3 || !slices.Equal((*opened)[1].cfg.Ifindexes, []int{3}) {
		t.Fatalf("moved %v, route %+v, ifindexes %v", moved, s.RouteOf(1), (*opened)[1].cfg.Ifindexes)
	}
	// A route that moves while the old one still works is a change CheckRoutes sees.
	s.Lookup = func(dst netip.Addr) (hostnet.Route, error) {
		return hostnet.Route{Src: src1, Ifindex: 4, Ifname: "eth4"}, nil
	}
	if err := s.CheckRoutes(dsts); !errors.Is(err, ErrRouteChanged) {
		t.Fatalf("check routes: %v", err)
	}
	// Cancelled while no route comes back: the routing stays as it was.
	s.Lookup = func(netip.Addr) (hostnet.Route, error) { return hostnet.Route{}, hostnet.ErrNoRoute }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := s.Reattach(ctx, dsts, func() engine.Config { return s.Config(50000) }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reattach without a route: %v", err)
	}
	if s.RouteOf(1).Ifindex != 3 {
		t.Fatalf("routing lost after a cancelled reattach: %+v", s.RouteOf(1))
	}
}
