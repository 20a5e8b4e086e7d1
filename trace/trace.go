// Package trace schedules a Paris-style parallel traceroute over an Engine and assembles the
// hops. It knows nothing of packets or sockets, so its logic is tested against a fake network.
//
// The schedule: every TTL of every target is probed at once (paced by a token bucket), TTL-major
// so consecutive probes go to different targets and no router sees a burst for one of them.
// The first answer from a destination fixes its distance: probes past it are skipped, and
// the remaining attempts (queries 2..q) for TTLs up to it are queued right away instead of
// waiting for round one's silent hops to time out. The trace ends when every probe sent has an
// answer, or when the adaptive timeout (a multiple of the largest RTT seen, within
// [MinWait, Wait]) has passed since the last send.
package trace

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Options tune a run.
type Options struct {
	FirstTTL int           // first TTL probed (1..255)
	MaxTTL   int           // last TTL probed (FirstTTL..255)
	Queries  int           // probes per hop (1..254)
	Wait     time.Duration // cap on the wait for stragglers after the last send
	MinWait  time.Duration // floor of the adaptive wait
	Rate     float64       // probes per second over all targets; 0 = unpaced
	Burst    int           // token-bucket burst
	// Progress, if set, is called from the run loop after each send and reply.
	Progress func(Progress)
}

// Progress is a snapshot for a progress line.
type Progress struct {
	Sent, Answered, Targets, Reached int
}

// DefaultOptions match what mtr/trippy users expect, with a much shorter wait thanks to
// adaptive timeouts.
func DefaultOptions() Options {
	return Options{FirstTTL: 1, MaxTTL: 30, Queries: 3, Wait: time.Second, MinWait: 50 * time.Millisecond, Rate: 1000, Burst: 64}
}

// Validate reports options a user could get wrong.
func (o *Options) Validate() error {
	switch {
	case o.FirstTTL < 1 || o.FirstTTL > 255:
		return fmt.Errorf("first TTL %d out of range 1..255", o.FirstTTL)
	case o.MaxTTL < 1 || o.MaxTTL > 255:
		return fmt.Errorf("max TTL %d out of range 1..255", o.MaxTTL)
	case o.MaxTTL < o.FirstTTL:
		return fmt.Errorf("max TTL %d below first TTL %d", o.MaxTTL, o.FirstTTL)
	case o.Queries < 1 || o.Queries > 254:
		return fmt.Errorf("queries %d out of range 1..254", o.Queries)
	case o.Wait <= 0:
		return fmt.Errorf("wait %v must be positive", o.Wait)
	case o.Rate < 0:
		return fmt.Errorf("rate %v must not be negative", o.Rate)
	}
	return nil
}

// Hop is one TTL of one target.
type Hop struct {
	TTL     int
	Replies []*Reply // by attempt, len Queries; nil = no answer
}

// Result is one target's trace.
type Result struct {
	Target  int
	Hops    []Hop
	Reached bool
	// DestTTL is the distance of the destination, or of the hop that ended the trace with an
	// unreachable (Reached false); 0 when nothing ended it.
	DestTTL int
	Sent    int
	Start   time.Time
	End     time.Time
}

type key struct {
	target, ttl, attempt int
}

type run struct {
	opt      Options
	eng      Engine
	n        int
	queue    []Probe
	sent     map[key]time.Time
	replies  map[key]*Reply
	dest     []int  // per target: TTL that ended it (0 unknown)
	reached  []bool // per target
	extra    []bool // per target: attempts 1..q-1 queued
	start    time.Time
	maxRTT   time.Duration
	answered int
	// pending counts probes sent within their target's limit and not answered yet, and
	// sentBy the probes sent per target, so neither is a scan over every probe per reply.
	pending int
	sentBy  []int
}

// Run traces n targets over eng. It returns when done, or with ctx's error when cancelled
// (results so far are still returned), or with an engine error.
func Run(ctx context.Context, eng Engine, n int, opt Options) ([]Result, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, errors.New("no targets")
	}
	if opt.MinWait <= 0 || opt.MinWait > opt.Wait {
		opt.MinWait = opt.Wait
	}
	r := &run{
		opt: opt, eng: eng, n: n,
		sent: map[key]time.Time{}, replies: map[key]*Reply{},
		dest: make([]int, n), reached: make([]bool, n), extra: make([]bool, n), sentBy: make([]int, n),
		start: time.Now(),
	}
	for ttl := opt.FirstTTL; ttl <= opt.MaxTTL; ttl++ {
		for t := 0; t < n; t++ {
			r.queue = append(r.queue, Probe{Target: t, TTL: uint8(ttl)})
		}
	}
	err := r.loop(ctx)
	return r.results(), err
}

func (r *run) loop(ctx context.Context) error {
	pace := newPacer(r.opt.Rate, r.opt.Burst)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastSend time.Time
	for {
		// Send what the pacer allows right now.
		now := time.Now()
		var delay time.Duration
		for len(r.queue) > 0 {
			p := r.queue[0]
			if r.skip(p) {
				r.queue = r.queue[1:]
				continue
			}
			if delay = pace.take(now); delay > 0 {
				break
			}
			r.queue = r.queue[1:]
			if err := r.eng.Send(p); err != nil {
				return fmt.Errorf("send probe: %w", err)
			}
			now = time.Now()
			lastSend = now
			r.sent[key{p.Target, int(p.TTL), int(p.Attempt)}] = now
			r.sentBy[p.Target]++
			r.pending++ // skip() let it through, so it is within the limit
			r.progress()
		}
		if len(r.queue) == 0 {
			if r.complete() {
				return nil
			}
			wait := r.timeout() - time.Since(lastSend)
			if wait <= 0 {
				if r.queueExtraForUnfinished() {
					continue
				}
				return nil
			}
			delay = wait
		}
		resetTimer(timer, delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-r.eng.Errors():
			return err
		case rep := <-r.eng.Replies():
			r.record(&rep)
		case <-timer.C:
		}
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// skip drops queued probes past a destination's known distance.
func (r *run) skip(p Probe) bool {
	d := r.dest[p.Target]
	return d != 0 && int(p.TTL) > d
}

func (r *run) record(rep *Reply) {
	p := rep.Probe
	if p.Target < 0 || p.Target >= r.n {
		return
	}
	k := key{p.Target, int(p.TTL), int(p.Attempt)}
	if _, ok := r.sent[k]; !ok || r.replies[k] != nil {
		return // not ours, or a duplicate: first answer wins
	}
	if k.ttl <= r.limit(p.Target) {
		r.pending--
	}
	r.replies[k] = rep
	r.answered++
	if rep.RTT > r.maxRTT {
		r.maxRTT = rep.RTT
	}
	ttl := int(p.TTL)
	final := rep.Reached() || rep.Kind == KindUnreachable
	if final && (r.dest[p.Target] == 0 || ttl < r.dest[p.Target]) {
		r.shrinkLimit(p.Target, ttl)
		r.dest[p.Target] = ttl
		r.reached[p.Target] = rep.Reached()
		r.queueExtra(p.Target)
	}
	r.progress()
}

// shrinkLimit stops waiting for the unanswered probes of target t past its new limit d.
func (r *run) shrinkLimit(t, d int) {
	for ttl := d + 1; ttl <= r.limit(t); ttl++ {
		for a := 0; a < r.opt.Queries; a++ {
			k := key{t, ttl, a}
			if _, sent := r.sent[k]; sent && r.replies[k] == nil {
				r.pending--
			}
		}
	}
}

// queueExtra queues attempts 1..q-1 for every TTL up to the target's limit, once.
func (r *run) queueExtra(t int) {
	if r.extra[t] {
		return
	}
	r.extra[t] = true
	limit := r.limit(t)
	for a := 1; a < r.opt.Queries; a++ {
		for ttl := r.opt.FirstTTL; ttl <= limit; ttl++ {
			r.queue = append(r.queue, Probe{Target: t, TTL: uint8(ttl), Attempt: uint8(a)})
		}
	}
}

// queueExtraForUnfinished gives targets whose destination stayed silent their remaining
// attempts; reports whether anything was queued.
func (r *run) queueExtraForUnfinished() bool {
	queued := false
	for t := 0; t < r.n; t++ {
		if !r.extra[t] {
			r.queueExtra(t)
			queued = queued || r.opt.Queries > 1
		}
	}
	return queued
}

func (r *run) limit(t int) int {
	if r.dest[t] != 0 {
		return r.dest[t]
	}
	return r.opt.MaxTTL
}

// complete: every target has had all its attempts queued, and every probe sent within a
// target's limit has its answer.
func (r *run) complete() bool {
	for t := 0; t < r.n; t++ {
		if !r.extra[t] {
			return false
		}
	}
	return r.pending == 0
}

// timeout adapts to the RTTs seen: silent hops are given a few times the slowest answer.
func (r *run) timeout() time.Duration {
	d := 3*r.maxRTT + 10*time.Millisecond
	if d < r.opt.MinWait {
		d = r.opt.MinWait
	}
	if d > r.opt.Wait {
		d = r.opt.Wait
	}
	return d
}

func (r *run) progress() {
	if r.opt.Progress == nil {
		return
	}
	reached := 0
	for _, ok := range r.reached {
		if ok {
			reached++
		}
	}
	r.opt.Progress(Progress{Sent: len(r.sent), Answered: r.answered, Targets: r.n, Reached: reached})
}

func (r *run) results() []Result {
	now := time.Now()
	out := make([]Result, r.n)
	for t := range out {
		res := Result{Target: t, Reached: r.reached[t], DestTTL: r.dest[t], Start: r.start, End: now}
		last := r.dest[t]
		if last == 0 { // unreached: show up to the last TTL that answered
			for k, rep := range r.replies {
				if k.target == t && rep != nil && k.ttl > last {
					last = k.ttl
				}
			}
		}
		for ttl := r.opt.FirstTTL; ttl <= last; ttl++ {
			h := Hop{TTL: ttl, Replies: make([]*Reply, r.opt.Queries)}
			for a := 0; a < r.opt.Queries; a++ {
				h.Replies[a] = r.replies[key{t, ttl, a}]
			}
			res.Hops = append(res.Hops, h)
		}
		res.Sent = r.sentBy[t]
		out[t] = res
	}
	return out
}
