package scan

import "time"

// budget is what the scan believes of one responder's ICMP budget toward this prober:
// a token bucket of unknown burst and refill (Linux: 6, then 1 a second), learned from
// which of the probes that reached it it answered.
//
// Until a responder refuses (a share of the probes it must have got went unanswered), its
// allowance per batch grows like TCP's slow start: doubling with every batch it answered
// in full, from the prior burst. A router without a limit (the fast lab) so costs a few
// batches of a few milliseconds, never a wait. Once it refuses, it is limited: its burst is
// what it answered before, its refill rate what it answers per second since (with a prior
// of one a second until a few seconds are seen), and the bucket is simulated between
// probes. A limited responder that answers all it got is probed a little faster each
// time, so an underestimate corrects itself.
type budget struct {
	limited bool
	// Before the first refusal: the allowance of the next batch.
	allowance float64
	// Once limited: the estimated bucket and its simulation.
	burst, rate float64
	tokens      float64
	last        time.Time
	since       time.Time // the first refusal
	after       int       // answers since the first refusal

	// floor is the least refill it is given: an unknown position's pseudo-budget keeps
	// the prior's rate even when nothing there answers (a silent router), so the probes
	// that find it silent still go out.
	floor float64

	answers int // all answers

	// The current batch: probes planned on it (shares, for affordability), its answers,
	// and the unanswered probes it may have refused (shares of the positions it may be).
	planned, got, miss float64
}

// Prior is the budget a responder is given before it shows its own: Linux's default
// (icmp_ratelimit 1000 ms: a burst of 6, then one a second toward one prober).
var Prior = struct {
	Burst int
	Rate  float64
}{6, 1}

func newBudget() *budget {
	return &budget{allowance: float64(Prior.Burst), burst: float64(Prior.Burst), rate: Prior.Rate}
}

// avail is how many probes it can take at now.
func (b *budget) avail(now time.Time) float64 {
	if !b.limited {
		return b.allowance - b.planned
	}
	b.refill(now)
	return b.tokens - b.planned
}

func (b *budget) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
}

// plan notes a share of a probe planned in the current batch.
func (b *budget) plan(share float64) { b.planned += share }

// settle learns from the batch just answered: its answers, and the unanswered probes
// that may have been its to refuse.
func (b *budget) settle(now time.Time) {
	got, miss := b.got, b.miss
	sent := got + miss
	b.planned, b.got, b.miss = 0, 0, 0
	if sent <= 0 {
		return
	}
	b.answers += int(got + 0.5)
	switch {
	case !b.limited && miss >= 1 && miss > 0.2*sent:
		// The first refusal: the burst is what it gave before and in this batch.
		b.limited = true
		b.burst = max(float64(b.answers), 1)
		b.tokens, b.last, b.since = 0, now, now
	case !b.limited:
		if got >= sent-0.5 {
			b.allowance = max(b.allowance, 2*got)
		}
	default:
		b.refill(now)
		b.tokens = max(b.tokens-got, 0)
		b.after += int(got + 0.5)
		// Answers per second since the first refusal, with the prior as one pseudo-second
		// so that a lucky first second does not make it fast.
		el := now.Sub(b.since).Seconds()
		est := (float64(b.after) + Prior.Rate) / (el + 1)
		if miss < 0.5 && got >= max(1, b.rate) {
			// It answered all it got, a second's worth of the estimate at once: it may
			// take more. (A trickle answered proves nothing about the rate.)
			est = max(est, b.rate*1.5)
			b.burst = max(b.burst, got)
		}
		b.rate = max(est, 0.1, b.floor)
		if miss >= 1 {
			b.tokens = 0
		}
	}
}
