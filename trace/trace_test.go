package trace

import (
	"context"
	"errors"
	"github.com/turnpath/turnpath/probe"
	"math"
	"net/netip"
	"testing"
	"time"
)

func fastOpts() Options {
	o := DefaultOptions()
	o.Wait = 300 * time.Millisecond
	o.MinWait = 30 * time.Millisecond
	o.Rate = 0
	return o
}

func labPath() []netip.Addr {
	return []netip.Addr{addr("198.18.1.1"), addr("198.18.2.1"), {}, addr("198.18.4.1")}
}

func TestTraceSilentHopAndDestination(t *testing.T) {
	f := newFakeNet(200 * time.Microsecond)
	f.paths = [][]netip.Addr{labPath()}
	f.dest = []netip.Addr{addr("198.19.1.1")}
	res, err := Run(context.Background(), f, 1, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if !r.Reached || r.DestTTL != 5 || len(r.Hops) != 5 {
		t.Fatalf("reached=%v dest=%d hops=%d, want true 5 5", r.Reached, r.DestTTL, len(r.Hops))
	}
	for _, h := range r.Hops {
		for a, rep := range h.Replies {
			silent := h.TTL == 3
			if silent != (rep == nil) {
				t.Errorf("ttl %d attempt %d: reply %v, silent %v", h.TTL, a, rep, silent)
			}
			if rep != nil && h.TTL <= 4 && rep.From != labPath()[h.TTL-1] {
				t.Errorf("ttl %d: from %v", h.TTL, rep.From)
			}
		}
	}
	if got := r.Hops[4].Replies[0].From; got != addr("198.19.1.1") {
		t.Errorf("destination from %v", got)
	}
	// Past the destination only the first round's probes went out.
	for _, p := range f.sentProbes() {
		if p.Attempt > 0 && p.TTL > 5 {
			t.Errorf("attempt %d sent past the destination at TTL %d", p.Attempt, p.TTL)
		}
	}
}

func TestTraceFinishesEarlyWithoutSilentHops(t *testing.T) {
	f := newFakeNet(100 * time.Microsecond)
	f.paths = [][]netip.Addr{{addr("198.18.1.1"), addr("198.18.2.1")}}
	f.dest = []netip.Addr{addr("198.19.1.1")}
	o := fastOpts()
	o.MaxTTL = 3 // nothing to wait for past the destination
	o.Wait, o.MinWait = 5*time.Second, 5*time.Second
	start := time.Now()
	res, err := Run(context.Background(), f, 1, o)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Reached {
		t.Fatal("not reached")
	}
	// Every probe answered: the run must not sit out the 5 s wait.
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v with every probe answered", el)
	}
}

func TestTraceManyTargetsAndDuplicates(t *testing.T) {
	f := newFakeNet(50 * time.Microsecond)
	f.dup = true
	for i := 0; i < 50; i++ {
		f.paths = append(f.paths, labPath())
		f.dest = append(f.dest, netip.AddrFrom4([4]byte{198, 19, 1, byte(i)}))
	}
	res, err := Run(context.Background(), f, 50, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Reached || r.DestTTL != 5 {
			t.Fatalf("target %d: reached %v at %d", i, r.Reached, r.DestTTL)
		}
		if r.Hops[4].Replies[0].From != f.dest[i] {
			t.Errorf("target %d: destination answer from %v", i, r.Hops[4].Replies[0].From)
		}
		// 30 TTLs + 2 more rounds of 5, less the TTLs past 5 that were still queued when
		// the destination's answer came in (replies are taken in during long bursts).
		if r.Sent < 15 || r.Sent > 40 {
			t.Errorf("target %d: sent %d, want 15..40", i, r.Sent)
		}
	}
}

func TestTraceUnreachedTarget(t *testing.T) {
	f := newFakeNet(100 * time.Microsecond)
	f.paths = [][]netip.Addr{labPath()}
	f.dest = []netip.Addr{addr("198.19.1.1")}
	f.silentDest = true
	o := fastOpts()
	o.MaxTTL = 10
	res, err := Run(context.Background(), f, 1, o)
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if r.Reached || r.DestTTL != 0 || len(r.Hops) != 4 {
		t.Fatalf("reached=%v dest=%d hops=%d, want false 0 4 (up to the last answer)", r.Reached, r.DestTTL, len(r.Hops))
	}
	if r.Sent != 30 {
		t.Errorf("sent %d, want 10 TTLs x 3 queries", r.Sent)
	}
}

func TestTraceUnreachableEndsTrace(t *testing.T) {
	f := newFakeNet(100 * time.Microsecond)
	f.paths = [][]netip.Addr{{addr("198.18.1.1")}}
	f.dest = []netip.Addr{addr("198.18.1.1")}
	f.destKind = probe.KindUnreachable
	res, err := Run(context.Background(), f, 1, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Reached || res[0].DestTTL != 2 {
		t.Errorf("port unreachable from the target: reached %v at %d", res[0].Reached, res[0].DestTTL)
	}

	net := Reply{Kind: probe.KindUnreachable, ICMPType: 3, ICMPCode: 0}
	if net.Reached() {
		t.Error("network unreachable must not count as reached")
	}
}

func TestTraceCancel(t *testing.T) {
	f := newFakeNet(time.Millisecond)
	f.paths = [][]netip.Addr{labPath()}
	f.dest = []netip.Addr{addr("198.19.1.1")}
	f.silentDest = true
	o := fastOpts()
	o.Wait, o.MinWait = time.Minute, time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, f, 1, o)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("cancel did not stop the run promptly")
	}
}

func TestTraceEngineError(t *testing.T) {
	f := newFakeNet(time.Millisecond)
	f.paths = [][]netip.Addr{labPath()}
	f.dest = []netip.Addr{addr("198.19.1.1")}
	f.silentDest = true
	f.errs <- errors.New("interface gone")
	o := fastOpts()
	o.Wait, o.MinWait = time.Minute, time.Minute
	if _, err := Run(context.Background(), f, 1, o); err == nil || err.Error() != "interface gone" {
		t.Fatalf("err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, mod := range []func(*Options){
		func(o *Options) { o.MaxTTL = 0 },
		func(o *Options) { o.MaxTTL = 256 },
		func(o *Options) { o.FirstTTL = 10; o.MaxTTL = 5 },
		func(o *Options) { o.Queries = 0 },
		func(o *Options) { o.Wait = 0 },
		func(o *Options) { o.Rate = -1 },
		func(o *Options) { o.Rate = math.NaN() },
		func(o *Options) { o.Rate = math.Inf(1) },
		func(o *Options) { o.Rate = math.Inf(-1) },
		func(o *Options) { o.Rate = 1e-300 }, // one probe every 1e291 years: no valid interval
	} {
		o := DefaultOptions()
		mod(&o)
		if o.Validate() == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	o := DefaultOptions()
	if err := o.Validate(); err != nil {
		t.Error(err)
	}
}

// TestPathMTU: probes start at the interface's MTU; the router in front of a narrower
// link answers the bigger ones with Packet Too Big, they go again at the MTU it reports,
// and the trace ends with every hop and the path MTU.
func TestPathMTU(t *testing.T) {
	for _, hide := range []bool{false, true} {
		f := newFakeNet(time.Millisecond)
		f.paths = [][]netip.Addr{{addr("198.18.1.2"), addr("198.18.2.2"), addr("198.18.3.2"), addr("198.18.4.2")}}
		f.dest = []netip.Addr{addr("198.19.1.1")}
		f.narrow = map[int][2]int{0: {2, 1300}}
		f.hideMTU = hide
		opt := DefaultOptions()
		opt.MaxTTL, opt.PMTU = 8, true
		opt.Size = func(int) int { return 1500 }
		res, err := Run(context.Background(), f, 1, opt)
		if err != nil {
			t.Fatal(err)
		}
		r := res[0]
		want := 1300
		if hide {
			want = 1280 // the plateau below 1500 a silent router leaves
		}
		if !r.Reached || r.DestTTL != 5 || r.PathMTU != want || r.TooBig == nil || r.TooBig.From != addr("198.18.2.2") {
			t.Fatalf("hide %v: reached %v at %d, path MTU %d, too big %+v", hide, r.Reached, r.DestTTL, r.PathMTU, r.TooBig)
		}
		for _, h := range r.Hops {
			for a, rep := range h.Replies {
				if rep == nil || rep.Kind == probe.KindPacketTooBig {
					t.Errorf("hide %v: TTL %d attempt %d: %+v, want its hop's answer", hide, h.TTL, a, rep)
				}
			}
		}
		// Nothing bigger than the MTU went past hop 2 after the first round's answer.
		big := 0
		for _, p := range f.sentProbes() {
			if p.Size > uint16(want) {
				big++
			}
		}
		// One round of TTLs past the link at the start size; a silent router costs a
		// second round at each plateau tried above the path MTU.
		rounds := 1
		if hide {
			rounds = 2
		}
		if big > rounds*opt.MaxTTL {
			t.Errorf("hide %v: %d probes above the path MTU (%d rounds of %d TTLs at most)", hide, big, rounds, opt.MaxTTL)
		}
	}
	// Without PMTU a Packet Too Big is just the hop's answer, and the size stays.
	f := newFakeNet(time.Millisecond)
	f.paths = [][]netip.Addr{{addr("198.18.1.2"), addr("198.18.2.2")}}
	f.dest = []netip.Addr{addr("198.19.1.1")}
	f.narrow = map[int][2]int{0: {1, 1300}}
	opt := DefaultOptions()
	opt.MaxTTL = 4
	opt.Size = func(int) int { return 1400 }
	res, err := Run(context.Background(), f, 1, opt)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].PathMTU != 0 || res[0].Reached {
		t.Errorf("without PMTU: %+v", res[0])
	}
	for _, p := range f.sentProbes() {
		if p.Size != 1400 {
			t.Fatalf("probe size %d, want the fixed 1400", p.Size)
		}
	}
}
