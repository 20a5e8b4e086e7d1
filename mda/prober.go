package mda

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/turnpath/turnpath/pace"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// The engines think in (target, TTL, attempt) with one fixed 5-tuple per target. MDA needs
// many flows per target, so the engine is built with one "engine target" per (target,
// flow): Layout says where each sits. Every flow keeps its own 5-tuple for the whole run
// (Paris), and the source ports of all flows form one contiguous range, which is what the
// kernel side matches on.

// Layout places (target, flow) pairs in an engine's target list: target-major, flow i of
// target t at t*Flows+i, with source port Base+i.
type Layout struct {
	Targets int
	Base    uint16 // first source port (Options.FlowBase)
	Flows   int    // flows per target (Options.MaxFlows)
}

// MaxEngineTargets bounds Targets*Flows: the eBPF engine's flow table holds 65535 entries.
const MaxEngineTargets = 1<<16 - 1

// NewLayout checks that n targets with flows flows each fit an engine.
func NewLayout(n int, base uint16, flows int) (Layout, error) {
	l := Layout{Targets: n, Base: base, Flows: flows}
	switch {
	case n < 1:
		return l, errors.New("no target")
	case flows < 1 || int(base)+flows-1 > 65535:
		return l, fmt.Errorf("%d flows from source port %d do not fit in the port range", flows, base)
	case n*flows > MaxEngineTargets:
		return l, fmt.Errorf("%d targets x %d flows: at most %d probed flows in one run", n, flows, MaxEngineTargets)
	}
	return l, nil
}

// Index is the engine target of flow id (a source port) toward target t; ok is false
// outside the layout.
func (l Layout) Index(t int, flow uint16) (int, bool) {
	i := int(flow) - int(l.Base)
	if t < 0 || t >= l.Targets || i < 0 || i >= l.Flows {
		return 0, false
	}
	return t*l.Flows + i, true
}

// Flows expands one template flow per target (source, destination, protocol, destination
// port) into the engine's flow list, source ports set by the layout.
func (l Layout) EngineFlows(tmpl []probe.Flow) []probe.Flow {
	out := make([]probe.Flow, 0, len(tmpl)*l.Flows)
	for _, f := range tmpl {
		for i := range l.Flows {
			f.SPort = l.Base + uint16(i)
			out = append(out, f)
		}
	}
	return out
}

// ProberOptions tune how an EngineProber waits and paces.
type ProberOptions struct {
	// Wait caps the wait for answers after a batch's last send; the wait adapts to
	// the RTTs seen (pace.Timeout: 3x the largest + 10ms), but never below MinWait.
	// Until an answer is seen it is Wait: answers after it are lost.
	Wait, MinWait time.Duration
	// Rate caps the probes per second (0: no cap); Burst probes may leave back to back.
	Rate  float64
	Burst int
}

// DefaultProberOptions are trace's defaults.
func DefaultProberOptions() ProberOptions {
	return ProberOptions{Wait: time.Second, MinWait: 50 * time.Millisecond, Rate: 1000, Burst: 64}
}

// EngineProber is the Prober over a real engine (eBPF or socket). Batches are sent in the
// order given, paced, and answered from the engine's matched replies; a reply that comes
// after its batch is over is dropped (the algorithm re-sends what it needs).
type EngineProber struct {
	eng     trace.Engine
	layout  Layout
	targets []netip.Addr

	mu    sync.Mutex
	batch map[int]*Answer // by slot (engine target <<8 | TTL): its first send in the batch in flight
	// sends are the batch's sends by slot<<8 | attempt: a (flow, TTL) sent several times
	// in one batch (a rate-limit test's burst) gets an answer per send, since a limiter
	// answers some of them and not others.
	sends   map[int]*Answer
	pending int
	idle    chan struct{} // signalled when pending reaches 0
	timeout pace.Timeout
	attempt map[int]uint8 // next attempt per slot: sends of one (flow, TTL) stay distinct

	bucket *pace.Bucket // Probe's sends; batches do not overlap
	done   chan struct{}
	wg     sync.WaitGroup
	stop   sync.Once
}

// NewEngineProber drives eng, which must have been built with layout.EngineFlows(...)
// over targets (in the same order). Close it before closing the engine.
func NewEngineProber(eng trace.Engine, layout Layout, targets []netip.Addr, opt ProberOptions) (*EngineProber, error) {
	if len(targets) != layout.Targets {
		return nil, fmt.Errorf("layout for %d targets, %d given", layout.Targets, len(targets))
	}
	if opt.Wait <= 0 {
		return nil, errors.New("wait must be positive")
	}
	p := &EngineProber{eng: eng, layout: layout, targets: targets,
		timeout: pace.Timeout{Min: opt.MinWait, Max: opt.Wait, MaxUntilRTT: true},
		bucket:  pace.NewBucket(opt.Rate, opt.Burst),
		idle:    make(chan struct{}, 1), attempt: map[int]uint8{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.readLoop()
	return p, nil
}

// Close stops reading replies. It does not close the engine.
func (p *EngineProber) Close() {
	p.stop.Do(func() { close(p.done) })
	p.wg.Wait()
}

func slot(idx int, ttl uint8) int { return idx<<8 | int(ttl) }

func (p *EngineProber) readLoop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case rep, ok := <-p.eng.Replies():
			if !ok {
				return
			}
			p.deliver(&rep)
		}
	}
}

// deliver records a reply if it answers a probe of the batch in flight: its own send,
// or for an attempt of an earlier batch the first send of the (flow, TTL), since a flow
// keeps its path.
func (p *EngineProber) deliver(rep *trace.Reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := slot(rep.Probe.Target, rep.Probe.TTL)
	a := p.sends[s<<8|int(rep.Probe.Attempt)]
	if a == nil {
		a = p.batch[s]
	}
	if a == nil || a.From.IsValid() {
		return
	}
	a.From, a.RTT, a.NAT, a.Kind = rep.From, rep.RTT, rep.NAT, rep.Kind
	a.At, a.IPID, a.HasIPID, a.ReplyTTL = rep.Received, rep.ReplyIPID, rep.HasReplyIPID, rep.ReplyTTL
	if a.At.IsZero() {
		a.At = time.Now()
	}
	for _, l := range rep.MPLS {
		a.MPLS = append(a.MPLS, l.Label)
	}
	if rep.Reached() {
		// The destination is the target, whatever address the relay answered from (a
		// wildcard-bound relay may answer from another of its addresses). Other errors
		// (a router's net unreachable) end the flow at that router.
		a.Dest, a.From = true, p.targets[a.Target]
	} else if rep.Kind == probe.KindUnreachable {
		a.Unreachable = true
	}
	p.timeout.Observe(rep.RTT)
	p.pending--
	if p.pending == 0 {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// Probe implements Prober.
func (p *EngineProber) Probe(ctx context.Context, reqs []Request) ([]Answer, error) {
	answers := make([]Answer, len(reqs))
	probes := make([]trace.Probe, len(reqs))
	p.mu.Lock()
	p.batch = make(map[int]*Answer, len(reqs))
	p.sends = make(map[int]*Answer, len(reqs))
	p.pending = 0
	select { // a stale signal from the last batch
	case <-p.idle:
	default:
	}
	for i, rq := range reqs {
		idx, ok := p.layout.Index(rq.Target, rq.Flow)
		if !ok || rq.TTL == 0 {
			p.mu.Unlock()
			return nil, fmt.Errorf("request %+v outside the engine's flows", rq)
		}
		answers[i].Request = rq
		s := slot(idx, rq.TTL)
		if p.batch[s] == nil {
			p.batch[s] = &answers[i]
		}
		p.pending++
		att := p.attempt[s]
		p.attempt[s] = (att + 1) % 255
		p.sends[s<<8|int(att)] = &answers[i]
		probes[i] = trace.Probe{Target: idx, TTL: rq.TTL, Attempt: att}
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.batch, p.sends = nil, nil
		p.mu.Unlock()
	}()

	// In sub-batches of what the bucket allows, each one SendBatch where the engine has it.
	if err := trace.SendPaced(ctx, p.eng, p.bucket, pace.System, probes); err != nil {
		return nil, err
	}
	p.mu.Lock()
	wait := p.timeout.Duration()
	left := p.pending
	p.mu.Unlock()
	if left > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-p.eng.Errors():
			return nil, err
		case <-p.idle:
		case <-t.C:
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := answers[:0:0]
	for i := range answers {
		if answers[i].From.IsValid() {
			out = append(out, answers[i])
		}
	}
	return out, nil
}
