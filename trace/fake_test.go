package trace

import (
	"math/rand"
	"net/netip"
	"sync"
	"time"
)

// fakeNet is a simulated network: per target a list of hops (an invalid Addr = silent
// router), then the destination at distance len(hops)+1 answering with destKind.
type fakeNet struct {
	mu         sync.Mutex
	paths      [][]netip.Addr
	dest       []netip.Addr
	destKind   Kind
	silentDest bool
	rtt        time.Duration
	loss       float64
	dup        bool // send every reply twice
	rng        *rand.Rand
	sent       []Probe
	replies    chan Reply
	errs       chan error
	closed     bool
}

func newFakeNet(rtt time.Duration) *fakeNet {
	return &fakeNet{rtt: rtt, destKind: KindSTUN, rng: rand.New(rand.NewSource(1)),
		replies: make(chan Reply, 4096), errs: make(chan error, 1)}
}

func (f *fakeNet) Name() string          { return "fake" }
func (f *fakeNet) Replies() <-chan Reply { return f.replies }
func (f *fakeNet) Errors() <-chan error  { return f.errs }
func (f *fakeNet) Close() error          { f.mu.Lock(); f.closed = true; f.mu.Unlock(); return nil }

func (f *fakeNet) Send(p Probe) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, p)
	if f.loss > 0 && f.rng.Float64() < f.loss {
		return nil
	}
	path := f.paths[p.Target]
	ttl := int(p.TTL)
	var rep Reply
	switch {
	case ttl <= len(path):
		if !path[ttl-1].IsValid() {
			return nil
		}
		rep = Reply{Kind: KindTimeExceeded, From: path[ttl-1], ICMPType: 11, QuotedTTL: 1}
	case f.silentDest:
		return nil
	default:
		rep = Reply{Kind: f.destKind, From: f.dest[p.Target]}
		if f.destKind == KindUnreachable {
			rep.ICMPType, rep.ICMPCode = 3, 3
		}
	}
	rep.Probe = p
	rep.RTT = time.Duration(ttl) * f.rtt
	n := 1
	if f.dup {
		n = 2
	}
	go func() {
		time.Sleep(rep.RTT)
		for i := 0; i < n; i++ {
			f.replies <- rep
		}
	}()
	return nil
}

func (f *fakeNet) sentProbes() []Probe {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Probe(nil), f.sent...)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
