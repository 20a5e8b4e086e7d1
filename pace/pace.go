// Package pace is the pacing shared by trace and mda: a token bucket that caps the probe
// rate while letting a burst leave back to back, and the adaptive wait for the answers
// after the last send (a few times the slowest answer seen, within bounds). It is pure:
// the bucket is driven by the times it is given, or by a Clock, so tests run on a fake one.
package pace

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Bucket is a token bucket: Burst tokens at most, one more every 1/Rate seconds, one per
// probe. It is kept as the time its last token was due (the bucket is full when that is
// Burst intervals ago or more), in whole nanoseconds, so a long run does not drift.
// A Bucket is not safe for concurrent use.
type Bucket struct {
	interval time.Duration // 0: unpaced
	depth    time.Duration // burst * interval
	due      time.Time     // when the last token taken was due
}

// MinRate is the lowest rate (tokens per second) that is not 0 (no cap): one every
// 1000 s. Below it the interval between tokens would not even fit a time.Duration.
const MinRate = 0.001

// CheckRate accepts 0 (no cap) or a finite rate from MinRate up: what a user may ask a
// Bucket for.
func CheckRate(rate float64) error {
	if math.IsNaN(rate) || math.IsInf(rate, 0) || rate < 0 || rate > 0 && rate < MinRate {
		return fmt.Errorf("rate %v: must be 0 (no cap) or a finite number of probes per second from %v up", rate, MinRate)
	}
	return nil
}

// NewBucket caps the rate at rate tokens per second with burst tokens at once. A rate of
// 0 (or one too high to space sends by a nanosecond) means unpaced; a burst below 1 is 1.
func NewBucket(rate float64, burst int) *Bucket {
	if !(rate > 0) {
		return &Bucket{}
	}
	interval := time.Duration(float64(time.Second) / rate)
	if interval <= 0 {
		return &Bucket{}
	}
	burst = max(burst, 1)
	depth := time.Duration(math.MaxInt64 / 2) // a burst larger than ~146 years of tokens is unbounded
	if int64(burst) < int64(depth)/int64(interval) {
		depth = time.Duration(burst) * interval
	}
	return &Bucket{interval: interval, depth: depth}
}

// next is when the next token is due: one interval after the last one (last).
func (b *Bucket) next(now time.Time) time.Time { return b.last(now).Add(b.interval) }

// last is when the last token was taken, or, for a bucket that has refilled, when it
// would have been taken for the bucket to be full at now.
func (b *Bucket) last(now time.Time) time.Time {
	if floor := now.Add(-b.depth); b.due.Before(floor) {
		return floor
	}
	return b.due
}

// Take takes a token if one is there at now and returns 0; otherwise it takes nothing and
// returns how long until one is. For a loop that waits on other things too (trace's,
// which reads replies meanwhile) and asks again.
func (b *Bucket) Take(now time.Time) time.Duration {
	if b.interval == 0 {
		return 0
	}
	next := b.next(now)
	if next.After(now) {
		return next.Sub(now)
	}
	b.due = next
	return 0
}

// TakeUpTo takes as many of the tokens there are at now as it may, at most n, and
// returns how many; with none there, it takes nothing and returns how long until one
// is. For a sender that sends what it may at once (one batch) and sleeps for the rest.
func (b *Bucket) TakeUpTo(now time.Time, n int) (int, time.Duration) {
	if n <= 0 {
		return 0, 0
	}
	if b.interval == 0 {
		return n, 0
	}
	last := b.last(now)
	have := int64(now.Sub(last) / b.interval)
	if have <= 0 {
		return 0, last.Add(b.interval).Sub(now)
	}
	k := int(min(have, int64(n)))
	b.due = last.Add(time.Duration(k) * b.interval)
	return k, 0
}

// Reserve takes the next token, now or in the future, and returns how long until it is
// due (0: now). For a sender that sleeps until then, as Wait does.
func (b *Bucket) Reserve(now time.Time) time.Duration {
	if b.interval == 0 {
		return 0
	}
	b.due = b.next(now)
	return max(0, b.due.Sub(now))
}

// Wait reserves a token and sleeps on c until it is due. It returns ctx's error when
// cancelled (the token stays taken), even for an unpaced bucket: a sender checks for
// cancellation once per probe.
func (b *Bucket) Wait(ctx context.Context, c Clock) error {
	if d := b.Reserve(c.Now()); d > 0 {
		if err := c.Sleep(ctx, d); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Clock tells the time and sleeps. System is the real one; tests pass a fake one.
type Clock interface {
	Now() time.Time
	// Sleep returns after d, or with ctx's error once ctx is done.
	Sleep(ctx context.Context, d time.Duration) error
}

// System is the real clock.
var System Clock = system{}

type system struct{}

func (system) Now() time.Time { return time.Now() }

func (system) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// The adaptive wait: Factor times the largest RTT seen plus Margin. An answer from a
// silent hop never comes, so waiting for it longer than a few times the slowest answer
// only slows the run; the margin covers scheduling noise on paths of a few microseconds.
const (
	Factor = 3
	Margin = 10 * time.Millisecond
)

// Timeout is the adaptive wait for answers after the last send: Factor x the largest RTT
// seen + Margin, at least Min, at most Max. A Timeout is not safe for concurrent use.
type Timeout struct {
	// Max caps the wait (it must be positive); Min is its floor (Max when not in
	// (0, Max]).
	Min, Max time.Duration
	// MaxUntilRTT: wait Max until an answer with an RTT is seen. For a caller that
	// drops the answers coming after the wait (mda's batches: a wait guessed too short on a
	// slow path would turn every first answer into a re-send). Without it the rule applies
	// to an RTT of 0: for a caller that still takes late answers (trace).
	MaxUntilRTT bool

	maxRTT time.Duration
}

// Observe counts an answer's RTT.
func (t *Timeout) Observe(rtt time.Duration) { t.maxRTT = max(t.maxRTT, rtt) }

// MaxRTT is the largest RTT seen (0: none yet).
func (t *Timeout) MaxRTT() time.Duration { return t.maxRTT }

// Duration is the wait as the RTTs seen make it.
func (t *Timeout) Duration() time.Duration {
	lo := t.Min
	if lo <= 0 || lo > t.Max {
		lo = t.Max
	}
	if t.maxRTT == 0 && t.MaxUntilRTT {
		return t.Max
	}
	return min(max(Factor*t.maxRTT+Margin, lo), t.Max)
}
