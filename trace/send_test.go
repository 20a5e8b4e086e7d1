package trace

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/turnpath/turnpath/pace"
)

// batchNet is fakeNet with SendBatch: it records each batch and each lone Send.
type batchNet struct {
	*fakeNet
	mu      sync.Mutex
	batches []int // sizes
	single  int
}

func (b *batchNet) Send(p Probe) error {
	b.mu.Lock()
	b.single++
	b.mu.Unlock()
	return b.fakeNet.Send(p)
}

func (b *batchNet) SendBatch(ps []Probe) (int, error) {
	b.mu.Lock()
	b.batches = append(b.batches, len(ps))
	b.mu.Unlock()
	for i, p := range ps {
		if err := b.fakeNet.Send(p); err != nil {
			return i, err
		}
	}
	return len(ps), nil
}

// A trace over an engine that sends in batches hands it every probe through SendBatch,
// at most MaxBatch at a time and, paced, never more than the token bucket holds; the
// result is the one of per-probe sending.
func TestTraceSendsInBatches(t *testing.T) {
	paths := func(f *fakeNet) {
		f.paths = [][]netip.Addr{labPath(), labPath(), labPath()}
		f.dest = []netip.Addr{addr("198.19.1.1"), addr("198.19.1.2"), addr("198.19.1.3")}
	}
	for _, c := range []struct {
		name     string
		rate     float64
		burst    int
		maxBatch int
	}{
		{"unpaced", 0, 64, MaxBatch},
		{"paced", 20000, 8, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := fastOpts()
			opts.Rate, opts.Burst = c.rate, c.burst
			plain := newFakeNet(100 * time.Microsecond)
			paths(plain)
			want, err := Run(context.Background(), plain, 3, opts)
			if err != nil {
				t.Fatal(err)
			}
			b := &batchNet{fakeNet: newFakeNet(100 * time.Microsecond)}
			paths(b.fakeNet)
			got, err := Run(context.Background(), b, 3, opts)
			if err != nil {
				t.Fatal(err)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.single != 0 {
				t.Errorf("%d probes sent one by one", b.single)
			}
			total, biggest := 0, 0
			for _, n := range b.batches {
				total += n
				biggest = max(biggest, n)
			}
			if total != len(b.sentProbes()) || total == 0 {
				t.Errorf("batches carried %d probes, %d sent", total, len(b.sentProbes()))
			}
			if biggest > c.maxBatch || biggest < 2 {
				t.Errorf("largest batch %d, want 2..%d (batches %v)", biggest, c.maxBatch, b.batches)
			}
			for i := range want {
				if pathOf(got[i]) != pathOf(want[i]) {
					t.Errorf("target %d: batched %s, one by one %s", i, pathOf(got[i]), pathOf(want[i]))
				}
			}
		})
	}
}

// pathOf is a result's responders by TTL.
func pathOf(r Result) string {
	s := ""
	for _, h := range r.Hops {
		s += "|"
		for _, rep := range h.Replies {
			if rep != nil {
				s += rep.From.String()
				break
			}
		}
	}
	return s
}

type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time { return c.now }
func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	c.now = c.now.Add(d)
	return ctx.Err()
}

// SendPaced sends the burst in one batch, then what each token's wait brings, in order.
func TestSendPacedSubBatches(t *testing.T) {
	b := &batchNet{fakeNet: newFakeNet(time.Millisecond)}
	b.fakeNet.paths = [][]netip.Addr{labPath()}
	b.fakeNet.dest = []netip.Addr{addr("198.19.1.1")}
	defer b.Close()
	var ps []Probe
	for i := range 7 {
		ps = append(ps, Probe{Target: 0, TTL: uint8(1 + i)})
	}
	clock := &stepClock{now: time.Unix(1000, 0)}
	bucket := pace.NewBucket(1000, 4)
	if err := SendPaced(context.Background(), b, bucket, clock, ps); err != nil {
		t.Fatal(err)
	}
	if want := []int{4, 1, 1, 1}; !slices.Equal(b.batches, want) {
		t.Errorf("batches %v, want %v", b.batches, want)
	}
	if d := clock.now.Sub(time.Unix(1000, 0)); d != 3*time.Millisecond {
		t.Errorf("took %v of the clock, want 3ms", d)
	}
	for i, p := range b.sentProbes() {
		if p != ps[i] {
			t.Fatalf("probe %d sent %+v, want %+v", i, p, ps[i])
		}
	}
}
