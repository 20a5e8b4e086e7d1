package monitor

import (
	"math/rand"
	"net/netip"
	"sync"
	"time"

	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// fakeNet is a simulated network: per target a list of routers (an invalid Addr = silent),
// then the destination answering STUN. dropAt > 0 drops a share fwdLoss of the probes
// that travel past router dropAt (the loss of a forward path); replyLoss[ttl] drops that
// share of one router's own answers (ICMP rate limiting).
type fakeNet struct {
	mu        sync.Mutex
	paths     [][]netip.Addr
	dest      []netip.Addr
	rtt       time.Duration
	dropAt    int
	fwdLoss   float64
	replyLoss map[int]float64
	// limits are routers' ICMP budgets: token buckets, refilled in real time.
	limits  map[netip.Addr]*fakeBucket
	rng     *rand.Rand
	sent    int
	replies chan trace.Reply
	errs    chan error
	closed  bool
}

func newFakeNet(rtt time.Duration, paths [][]netip.Addr, dest []netip.Addr) *fakeNet {
	return &fakeNet{rtt: rtt, paths: paths, dest: dest, rng: rand.New(rand.NewSource(1)),
		replies: make(chan trace.Reply, 1<<16), errs: make(chan error, 1), replyLoss: map[int]float64{}}
}

func (f *fakeNet) Name() string                { return "fake" }
func (f *fakeNet) Replies() <-chan trace.Reply { return f.replies }
func (f *fakeNet) Errors() <-chan error        { return f.errs }
func (f *fakeNet) Admit(int) error             { return nil }
func (f *fakeNet) Release(int)                 {}
func (f *fakeNet) Close() error                { f.mu.Lock(); f.closed = true; f.mu.Unlock(); return nil }

func (f *fakeNet) Send(p trace.Probe) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent++
	ttl := int(p.TTL)
	path := f.paths[p.Target]
	if f.dropAt > 0 && ttl > f.dropAt && f.rng.Float64() < f.fwdLoss {
		return nil
	}
	var rep trace.Reply
	switch {
	case ttl <= len(path):
		if !path[ttl-1].IsValid() || f.rng.Float64() < f.replyLoss[ttl] || !f.limits[path[ttl-1]].take() {
			return nil
		}
		rep = trace.Reply{Kind: probe.KindTimeExceeded, From: path[ttl-1], ICMPType: 11, QuotedTTL: 1}
	default:
		ttl = len(path) + 1
		rep = trace.Reply{Kind: probe.KindSTUN, From: f.dest[p.Target]}
	}
	rep.Probe = p
	rep.RTT = time.Duration(ttl) * f.rtt
	time.AfterFunc(rep.RTT, func() {
		f.mu.Lock()
		closed := f.closed
		f.mu.Unlock()
		if !closed {
			f.replies <- rep
		}
	})
	return nil
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// fakeBucket is a router's ICMP rate limit: burst answers, then rate a second.
type fakeBucket struct {
	burst, rate, tokens float64
	last                time.Time
	asked               int
}

func newFakeBucket(burst, rate float64) *fakeBucket {
	return &fakeBucket{burst: burst, rate: rate, tokens: burst, last: time.Now()}
}

// take spends a token if there is one (a nil bucket: no limit).
func (b *fakeBucket) take() bool {
	if b == nil {
		return true
	}
	b.asked++
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
