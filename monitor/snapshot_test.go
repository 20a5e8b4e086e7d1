package monitor

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Snapshots come from the run loop after rounds and are copies: a reader in another
// goroutine sees consistent, growing results while the run goes on (run with -race).
// A reset starts the statistics afresh without losing the probes in flight.
func TestMonitorSnapshotAndReset(t *testing.T) {
	f := newFakeNet(200*time.Microsecond, [][]netip.Addr{{addr("10.0.0.1"), addr("10.0.0.2")}}, []netip.Addr{addr("192.0.2.1")})
	opt := DefaultOptions()
	// The wait is generous so a busy machine delaying the fake's answers loses none (a
	// round closes as soon as all are in).
	opt.MaxTTL, opt.Interval, opt.Cycles, opt.Wait, opt.MinWait, opt.Rate = 5, MinInterval, 60, 100*time.Millisecond, 100*time.Millisecond, 0
	snaps := make(chan *Snapshot, 1000)
	reset := make(chan struct{})
	opt.Snapshot = func(s *Snapshot) { snaps <- s }
	opt.Reset = reset
	var wg sync.WaitGroup
	var got []*Snapshot
	wg.Add(1)
	go func() {
		defer wg.Done()
		for s := range snaps {
			got = append(got, s)
			// Read everything, as a view would, while the run writes its own state.
			for _, tg := range s.Targets {
				for _, h := range tg.Hops {
					_ = h.Avg + h.Loss + float64(len(h.Responders))
				}
			}
			if len(got) == 30 {
				reset <- struct{}{}
			}
		}
	}()
	res, err := Run(context.Background(), f, 1, opt)
	close(snaps)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 60 {
		t.Fatalf("%d snapshots, want one per round (60)", len(got))
	}
	for i, s := range got {
		if s.Rounds != i+1 || len(s.Targets) != 1 {
			t.Fatalf("snapshot %d: rounds %d targets %d", i, s.Rounds, len(s.Targets))
		}
	}
	first := got[29].Targets[0]
	if first.DestTTL != 3 || len(first.Hops) != 3 || first.Hops[0].Sent != 30 || !first.PathLossKnown ||
		first.Hops[0].Responders[0].Addr != addr("10.0.0.1") {
		t.Errorf("snapshot 30: %+v", first)
	}
	// The reset came after snapshot 30: the final statistics count fewer probes than the
	// rounds, and the earlier snapshot kept its values (a copy, not a view).
	h := res.Targets[0].Hops[0]
	if h.Sent() >= 60 || h.Sent() < 20 || h.Received() != h.Sent() {
		t.Errorf("after reset: sent %d received %d, want 20..59, all answered", h.Sent(), h.Received())
	}
	if got[29].Targets[0].Hops[0].Sent != 30 {
		t.Errorf("snapshot changed after the fact: %d", got[29].Targets[0].Hops[0].Sent)
	}
	if last := got[59].Targets[0].Hops[0]; last.Sent != h.Sent() {
		t.Errorf("last snapshot sent %d, result %d", last.Sent, h.Sent())
	}
}
