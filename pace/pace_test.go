package pace

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeClock only moves when slept on.
type fakeClock struct {
	now    time.Time
	slept  []time.Duration
	cancel func() // if set, called on the first sleep (a cancellation during a wait)
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.slept = append(c.slept, d)
	if c.cancel != nil {
		c.cancel()
		return ctx.Err()
	}
	c.now = c.now.Add(d)
	return nil
}

var epoch = time.Unix(1_000_000, 0)

// A full bucket lets burst probes go at once, then one per interval; taking nothing
// while empty, it answers how long until the next token.
func TestBucketTake(t *testing.T) {
	b := NewBucket(1000, 3)
	now := epoch
	for i := range 3 {
		if d := b.Take(now); d != 0 {
			t.Fatalf("burst token %d: wait %v", i, d)
		}
	}
	if d := b.Take(now); d != time.Millisecond {
		t.Fatalf("empty bucket: wait %v, want 1ms", d)
	}
	// Asking again takes nothing: still 1ms from the same instant.
	if d := b.Take(now); d != time.Millisecond {
		t.Fatalf("asked twice: wait %v, want 1ms", d)
	}
	now = now.Add(400 * time.Microsecond)
	if d := b.Take(now); d != 600*time.Microsecond {
		t.Fatalf("0.4 token in: wait %v, want 600µs", d)
	}
	now = now.Add(600 * time.Microsecond)
	if d := b.Take(now); d != 0 {
		t.Fatalf("token due: wait %v", d)
	}
	// A long idle time refills the bucket to its burst, no more.
	now = now.Add(time.Hour)
	for i := range 3 {
		if d := b.Take(now); d != 0 {
			t.Fatalf("refilled token %d: wait %v", i, d)
		}
	}
	if d := b.Take(now); d == 0 {
		t.Fatal("bucket refilled past its burst")
	}
}

// Over a long run the rate holds: burst + rate x time probes, give or take one.
func TestBucketRate(t *testing.T) {
	b := NewBucket(1000, 10)
	now := epoch
	sent := 0
	for range 10000 { // 10 000 steps of 10 µs = 100 ms
		if b.Take(now) == 0 {
			sent++
		}
		now = now.Add(10 * time.Microsecond)
	}
	if sent < 109 || sent > 111 {
		t.Errorf("sent %d in 100 ms at 1000/s burst 10, want 110", sent)
	}
}

// Reserve keeps the schedule Take would give a sender that comes back exactly when told.
func TestReserveMatchesTake(t *testing.T) {
	take, res := NewBucket(300, 4), NewBucket(300, 4)
	now := epoch
	for i := range 50 {
		if i%17 == 0 {
			now = now.Add(7 * time.Millisecond) // idle: part of the burst comes back
		}
		d := take.Take(now)
		at := now.Add(d)
		if d > 0 && take.Take(at) != 0 {
			t.Fatalf("probe %d: no token when told", i)
		}
		if got := now.Add(res.Reserve(now)); !got.Equal(at) {
			t.Fatalf("probe %d: reserved for %v, take says %v", i, got.Sub(epoch), at.Sub(epoch))
		}
		now = at
	}
}

func TestBucketUnpaced(t *testing.T) {
	for _, rate := range []float64{0, -1, 1e12} {
		b := NewBucket(rate, 0)
		for range 1000 {
			if d := b.Take(epoch); d != 0 {
				t.Fatalf("rate %v: wait %v", rate, d)
			}
			if d := b.Reserve(epoch); d != 0 {
				t.Fatalf("rate %v: reserved %v ahead", rate, d)
			}
		}
	}
	// A burst below 1 is 1.
	b := NewBucket(10, 0)
	if b.Take(epoch) != 0 || b.Take(epoch) != 100*time.Millisecond {
		t.Error("burst 0 is not 1")
	}
}

// Wait sleeps on the clock until each token is due: burst probes at once, then one per
// interval.
func TestBucketWait(t *testing.T) {
	c := &fakeClock{now: epoch}
	b := NewBucket(100, 2)
	var at []time.Duration
	for range 5 {
		if err := b.Wait(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		at = append(at, c.now.Sub(epoch))
	}
	want := []time.Duration{0, 0, 10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("sends at %v, want %v", at, want)
		}
	}
}

func TestBucketWaitCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &fakeClock{now: epoch, cancel: cancel}
	b := NewBucket(1, 1)
	if err := b.Wait(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx, c); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while waiting: %v", err)
	}
	// Unpaced, a cancelled context still stops the sender.
	if err := NewBucket(0, 1).Wait(ctx, c); !errors.Is(err, context.Canceled) {
		t.Fatalf("unpaced, cancelled: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name        string
		min, max    time.Duration
		maxUntilRTT bool
		rtts        []time.Duration
		want        time.Duration
	}{
		{"no RTT yet: the rule at 0, floored", 50 * ms, time.Second, false, nil, 50 * ms},
		{"no RTT yet: margin above a low floor", 2 * ms, time.Second, false, nil, 10 * ms},
		{"no RTT yet: the cap, when late answers are lost", 50 * ms, time.Second, true, nil, time.Second},
		{"3x the largest + 10ms", 50 * ms, time.Second, true, []time.Duration{20 * ms, 30 * ms, 5 * ms}, 100 * ms},
		{"floored", 50 * ms, time.Second, false, []time.Duration{ms}, 50 * ms},
		{"capped", 50 * ms, time.Second, true, []time.Duration{900 * ms}, time.Second},
		{"no floor: the cap is the floor", 0, 200 * ms, false, []time.Duration{ms}, 200 * ms},
		{"floor above the cap: the cap", time.Second, 200 * ms, false, []time.Duration{ms}, 200 * ms},
	} {
		to := Timeout{Min: c.min, Max: c.max, MaxUntilRTT: c.maxUntilRTT}
		for _, r := range c.rtts {
			to.Observe(r)
		}
		if got := to.Duration(); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TakeUpTo gives what Take would give at the same time, in one call: the burst at once,
// then the tokens that came since, never more than asked; with none there, the wait.
func TestTakeUpToMatchesTake(t *testing.T) {
	up, one := NewBucket(1000, 8), NewBucket(1000, 8)
	t0 := time.Unix(100, 0)
	steps := []struct {
		at   time.Duration
		ask  int
		want int
		wait time.Duration
	}{
		{0, 5, 5, 0},                        // part of the burst
		{0, 10, 3, 0},                       // the rest of it
		{0, 10, 0, time.Millisecond},        // empty: the next token in 1 ms
		{3500 * time.Microsecond, 10, 3, 0}, // 3 came since
		{3500 * time.Microsecond, 1, 0, 500 * time.Microsecond},
		{time.Second, 100, 8, 0}, // full again: never more than the burst
	}
	for i, s := range steps {
		now := t0.Add(s.at)
		k, wait := up.TakeUpTo(now, s.ask)
		if k != s.want || wait != s.wait {
			t.Errorf("step %d: TakeUpTo(%v, %d) = %d, %v; want %d, %v", i, s.at, s.ask, k, wait, s.want, s.wait)
		}
		// The same tokens one by one.
		n := 0
		for n < s.ask && one.Take(now) == 0 {
			n++
		}
		if n != k {
			t.Errorf("step %d: Take gave %d tokens, TakeUpTo %d", i, n, k)
		}
	}
	if k, wait := NewBucket(0, 0).TakeUpTo(t0, 7); k != 7 || wait != 0 {
		t.Errorf("unpaced: %d, %v", k, wait)
	}
}
