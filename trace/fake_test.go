package trace

import (
	"github.com/turnpath/turnpath/probe"
	"math/rand"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// fakeNet is a simulated network: per target a list of hops (an invalid Addr = silent
// router), then the destination at distance len(hops)+1 answering with destKind.
type fakeNet struct {
	mu         sync.Mutex
	paths      [][]netip.Addr
	dest       []netip.Addr
	destKind   probe.Kind
	silentDest bool
	rtt        time.Duration
	loss       float64
	dup        bool // send every reply twice
	// narrow[t] = {k, mtu}: the link after hop k of target t's path takes packets of at
	// most mtu bytes; bigger probes past it get Packet Too Big from hop k (reporting 0
	// when hideMTU is set, as pre-RFC 1191 routers do).
	narrow  map[int][2]int
	hideMTU bool
	rng     *rand.Rand
	sent    []Probe
	pending []pendingReply
	replies chan Reply
	errs    chan error
	closed  bool
}

func newFakeNet(rtt time.Duration) *fakeNet {
	f := &fakeNet{rtt: rtt, destKind: probe.KindSTUN, rng: rand.New(rand.NewSource(1)),
		replies: make(chan Reply, 4096), errs: make(chan error, 1)}
	go f.deliver()
	return f
}

func (f *fakeNet) Name() string          { return "fake" }
func (f *fakeNet) Replies() <-chan Reply { return f.replies }
func (f *fakeNet) Errors() <-chan error  { return f.errs }
func (f *fakeNet) Close() error          { f.mu.Lock(); f.closed = true; f.mu.Unlock(); return nil }
func (f *fakeNet) Admit(int) error       { return nil }
func (f *fakeNet) Release(int)           {}

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
	nw, isNarrow := f.narrow[p.Target]
	switch {
	case isNarrow && ttl > nw[0] && int(p.Size) > nw[1]:
		rep = Reply{Kind: probe.KindPacketTooBig, From: path[nw[0]-1], ICMPType: 3, ICMPCode: 4, MTU: uint32(nw[1])}
		if f.hideMTU {
			rep.MTU = 0
		}
		ttl = nw[0]
	case ttl <= len(path):
		if !path[ttl-1].IsValid() {
			return nil
		}
		rep = Reply{Kind: probe.KindTimeExceeded, From: path[ttl-1], ICMPType: 11, QuotedTTL: 1}
	case f.silentDest:
		return nil
	default:
		rep = Reply{Kind: f.destKind, From: f.dest[p.Target]}
		if f.destKind == probe.KindUnreachable {
			rep.ICMPType, rep.ICMPCode = 3, 3
		}
	}
	rep.Probe = p
	rep.RTT = time.Duration(ttl) * f.rtt
	n := 1
	if f.dup {
		n = 2
	}
	due := time.Now().Add(rep.RTT)
	for i := 0; i < n; i++ {
		f.pending = append(f.pending, pendingReply{due, rep})
	}
	return nil
}

type pendingReply struct {
	due time.Time
	rep Reply
}

// deliver hands out replies in order of their due time from one goroutine, so replies are
// not reordered by goroutine scheduling (the race detector makes that frequent).
func (f *fakeNet) deliver() {
	for {
		time.Sleep(50 * time.Microsecond)
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return
		}
		sort.SliceStable(f.pending, func(i, j int) bool { return f.pending[i].due.Before(f.pending[j].due) })
		now := time.Now()
		n := 0
		for n < len(f.pending) && !f.pending[n].due.After(now) {
			n++
		}
		due := append([]pendingReply(nil), f.pending[:n]...)
		f.pending = f.pending[n:]
		f.mu.Unlock()
		for _, p := range due {
			f.replies <- p.rep
		}
	}
}

func (f *fakeNet) sentProbes() []Probe {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Probe(nil), f.sent...)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func (f *fakeNet) sentCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

func sleepShort() { time.Sleep(time.Millisecond) }
