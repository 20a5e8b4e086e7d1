package monitor

import (
	"slices"
	"time"

	"github.com/turnpath/turnpath/hopstat"
)

// Snapshot is a copy of a run's per-target results, taken in the run loop right after a
// round was closed (Options.Snapshot). It shares nothing with the run, so another
// goroutine (a live view) may read it while the rounds go on.
type Snapshot struct {
	Time    time.Time // when it was taken
	Started time.Time // when the run started
	Rounds  int       // rounds closed
	// Down is the outage going on (nil: probing); Outages counts them all.
	Down    *Outage
	Outages int
	Targets []TargetSnapshot
}

// TargetSnapshot is one target's results at a snapshot: its path's hops with their
// statistics and split loss, as Target.Path and Target.Losses give them.
type TargetSnapshot struct {
	Index   int
	DestTTL int // 0 unknown
	// PathLoss is the destination's own answers' loss; PathLossKnown is false while the
	// destination has not answered.
	PathLoss      float64
	PathLossKnown bool
	Events        int // path changes so far (EventsDropped of them no longer kept)
	EventsDropped int
	// Changes are the path changes kept (Options.SnapshotEvents; nil otherwise).
	Changes    []Event
	Late, Dups int
	Hops       []HopSnapshot
}

// HopSnapshot is one hop's statistics at a snapshot (milliseconds, percent).
type HopSnapshot struct {
	TTL                      int
	Sent, Received, InFlight int
	Silent                   bool
	// RateLimited: the hop never answered this target, but a router answered at this TTL
	// for another target at the same distance: it is a router whose budget other targets'
	// probes spent, not a silent one. Its loss is not counted either.
	RateLimited                    bool
	Loss, Forward, Reply           float64
	Last, Avg, Best, Worst, StdDev float64
	Gmean, Jitter, JitterMean      float64
	JitterMax, Interarrival        float64
	Responders                     []hopstat.Responder
}

// Snapshot copies t's current results, with the path changes kept if events.
func (t *Target) Snapshot(events bool) TargetSnapshot {
	ts := TargetSnapshot{Index: t.Index, DestTTL: t.DestTTL, Events: len(t.Events) + t.EventsDropped,
		EventsDropped: t.EventsDropped, Late: t.Late, Dups: t.Dups}
	if events {
		ts.Changes = slices.Clone(t.Events)
	}
	ts.PathLoss, ts.PathLossKnown = t.PathLoss()
	path := t.Path()
	losses := t.Losses()
	ts.Hops = make([]HopSnapshot, len(path))
	for k := range path {
		h, hl := &path[k], losses[k]
		ts.Hops[k] = HopSnapshot{TTL: h.TTL, Sent: h.Sent(), Received: h.Received(), InFlight: h.InFlight(),
			Silent: hl.Silent, Loss: hl.Loss, Forward: hl.Forward, Reply: hl.Reply,
			Last: h.Last(), Avg: h.Mean(), Best: h.Best(), Worst: h.Worst(), StdDev: h.StdDev(),
			Gmean: h.Gmean(), Jitter: h.Jitter(), JitterMean: h.JitterMean(), JitterMax: h.JitterMax(),
			Interarrival: h.Interarrival(), Responders: h.Responders()}
	}
	return ts
}

// snapshot copies every target's results.
func (s *state) snapshot(now time.Time) *Snapshot {
	sn := &Snapshot{Time: now, Started: s.started, Rounds: s.closed, Outages: len(s.outages),
		Targets: make([]TargetSnapshot, len(s.targets))}
	if s.down != nil {
		d := *s.down
		sn.Down = &d
		sn.Outages++
	}
	for i, t := range s.targets {
		sn.Targets[i] = t.Snapshot(s.opt.SnapshotEvents)
	}
	markLimited(sn.Targets)
	return sn
}

// markLimited tells rate-limited hops from silent ones across the targets: a hop that
// never answered, at a TTL where a router answered another target at the same distance.
// (Two branches of equal length through a load balancer share a distance: a silent
// router beside an answering one is then called rate-limited, the safer mistake.)
func markLimited(ts []TargetSnapshot) {
	answered := map[[2]int]bool{}
	for i := range ts {
		t := &ts[i]
		for _, h := range t.Hops {
			if t.DestTTL != 0 && h.TTL < t.DestTTL && h.Received > 0 {
				answered[[2]int{t.DestTTL, h.TTL}] = true
			}
		}
	}
	for i := range ts {
		t := &ts[i]
		for k := range t.Hops {
			h := &t.Hops[k]
			if h.Silent && t.DestTTL != 0 && h.TTL < t.DestTTL && answered[[2]int{t.DestTTL, h.TTL}] {
				h.Silent, h.RateLimited = false, true
			}
		}
	}
}

// maybeSnapshot hands a snapshot to Options.Snapshot, at most every SnapshotEvery.
func (s *state) maybeSnapshot() {
	if s.opt.Snapshot == nil {
		return
	}
	now := time.Now()
	if !s.lastSnap.IsZero() && now.Sub(s.lastSnap) < s.opt.SnapshotEvery {
		return
	}
	s.lastSnap = now
	s.opt.Snapshot(s.snapshot(now))
}

// reset starts every hop's statistics afresh, as mtr's reset key does. Probes still in
// flight stay awaited (their rounds complete them into the fresh statistics); the
// responders already seen, the destination's distance and the round count are kept, so
// a reset is not taken for a path change.
func (s *state) reset() {
	for _, t := range s.targets {
		for k := range t.Hops {
			h := &t.Hops[k]
			n := h.InFlight()
			*h = hopstat.Hop{TTL: h.TTL}
			for range n {
				h.Await()
			}
		}
		t.Events, t.EventsDropped, t.Late, t.Dups = nil, 0, 0, 0
	}
}
