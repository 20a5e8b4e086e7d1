package monitor

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/turnpath/turnpath/trace"
)

// batchNet is fakeNet with SendBatch: it records the size of each batch and each lone Send.
type batchNet struct {
	*fakeNet
	bmu     sync.Mutex
	batches []int
	single  int
}

func (b *batchNet) Send(p trace.Probe) error {
	b.bmu.Lock()
	b.single++
	b.bmu.Unlock()
	return b.fakeNet.Send(p)
}

func (b *batchNet) SendBatch(ps []trace.Probe) (int, error) {
	b.bmu.Lock()
	b.batches = append(b.batches, len(ps))
	b.bmu.Unlock()
	for i, p := range ps {
		if err := b.fakeNet.Send(p); err != nil {
			return i, err
		}
	}
	return len(ps), nil
}

// A monitor over an engine that sends in batches hands it every probe of a round through
// SendBatch, at most trace.MaxBatch at a time and never more than the token bucket holds,
// and every probe still counts once.
func TestMonitorSendsInBatches(t *testing.T) {
	paths := [][]netip.Addr{
		{addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3")},
		{addr("10.1.0.1"), addr("10.1.0.2")},
	}
	for _, c := range []struct {
		name     string
		rate     float64
		burst    int
		maxBatch int
	}{
		{"unpaced", 0, 64, trace.MaxBatch},
		{"paced", 50000, 4, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &batchNet{fakeNet: newFakeNet(100*time.Microsecond, paths, []netip.Addr{addr("192.0.2.1"), addr("192.0.2.2")})}
			defer b.Close()
			opt := DefaultOptions()
			opt.MaxTTL, opt.Interval, opt.Cycles, opt.Wait, opt.MinWait = 10, MinInterval, 20, 200*time.Millisecond, 200*time.Millisecond
			opt.Rate, opt.Burst = c.rate, c.burst
			res, err := Run(context.Background(), b, 2, opt)
			if err != nil {
				t.Fatal(err)
			}
			b.bmu.Lock()
			defer b.bmu.Unlock()
			total, biggest := 0, 0
			for _, n := range b.batches {
				total += n
				biggest = max(biggest, n)
			}
			b.fakeNet.mu.Lock()
			sent := b.fakeNet.sent
			b.fakeNet.mu.Unlock()
			if b.single != 0 || total != sent || total == 0 {
				t.Errorf("%d probes one by one, %d in batches, %d sent", b.single, total, sent)
			}
			if biggest > c.maxBatch || biggest < 2 {
				t.Errorf("largest batch %d, want 2..%d", biggest, c.maxBatch)
			}
			for i, tg := range res.Targets {
				for _, h := range tg.Path() {
					if h.Sent() != 20 || h.InFlight() != 0 {
						t.Errorf("target %d TTL %d: sent %d in flight %d, want 20 0", i, h.TTL, h.Sent(), h.InFlight())
					}
				}
			}
		})
	}
}
