package monitor

import (
	"fmt"
	"math"
	"time"

	"github.com/turnpath/turnpath/hopstat"
)

// Result is what a run saw, readable between rounds and at the end.
type Result struct {
	Started, Finished time.Time
	Rounds            int // rounds closed (their probes answered or lost)
	// Slipped counts rounds that started late because the one before could not send all
	// its probes within the interval (--rate too low for the targets and TTLs).
	Slipped int
	Outages []Outage
	Targets []*Target
}

func (s *state) result(started, finished time.Time) *Result {
	return &Result{Started: started, Finished: finished, Rounds: s.closed, Slipped: s.slipped,
		Outages: s.outages, Targets: s.targets}
}

// Down is how long the run could not probe, over all its outages (one still going at
// the end counts up to finished).
func (r *Result) Down() time.Duration {
	var d time.Duration
	for _, o := range r.Outages {
		end := o.End
		if end.IsZero() {
			end = r.Finished
		}
		d += end.Sub(o.Start)
	}
	return d
}

// Path is the hops worth reporting: up to the destination when its distance is known,
// else up to the last TTL that answered (all of them when none did). TTLs past the
// destination are only re-checked now and then; their answers are the destination's.
func (t *Target) Path() []hopstat.Hop {
	end := len(t.Hops)
	switch {
	case t.DestTTL != 0:
		end = t.DestTTL - t.Hops[0].TTL + 1
	default:
		for end > 0 && t.Hops[end-1].Received() == 0 {
			end--
		}
		if end == 0 {
			end = len(t.Hops)
		}
	}
	return t.Hops[:max(end, 0)]
}

// Reached reports whether the destination answered at its known distance.
func (t *Target) Reached() bool { return t.DestTTL != 0 }

// PathLoss is the loss of the destination's own answers, in percent; ok is false while
// the destination has not answered (its loss is then unknown, not 100 %).
func (t *Target) PathLoss() (pct float64, ok bool) {
	if t.DestTTL == 0 {
		return 0, false
	}
	h := &t.Hops[t.DestTTL-t.Hops[0].TTL]
	return h.Loss(), h.Sent() > 0
}

// HopLoss is a hop's loss, split.
type HopLoss struct {
	TTL int
	// Silent: the hop never answered. Its loss says nothing (a router that does not send
	// Time Exceeded), so it is not counted as 100 % and not attributed.
	Silent bool
	Loss   float64 // percent of the completed probes unanswered
	// Forward is the part of Loss the path itself loses at or before this hop: the loss
	// every later answering hop and the destination show too. Reply is the rest: the
	// router did not answer though the path beyond it carried the probes.
	Forward, Reply float64
}

// Losses splits each hop's loss into forward and reply loss.
//
// The split is statistical, over the rounds, not round by round: with independent random
// loss a probe lost at TTL 5 says nothing about the separate probe at TTL 6, so a per-round
// rule (forward only if every later TTL of that round was lost too) would call real loss
// reply loss. Packets lost at or before hop h are lost for every later hop too, so the
// forward loss at h is at most the loss rate of every later answering hop (the
// destination included). A later hop lowers it only where its loss is lower beyond
// sampling noise (lower, z ≥ zReply, in a two-proportion test): noise between hops that
// all lose the same packets is not turned into reply loss, and a rate-limited router
// before a clean path gets the clean path's loss:
//
//	forward(h) = min(loss(h), min over answering j > h significantly below h of loss(j))
//	reply(h)   = loss(h) − forward(h)
//
// A hop whose router's budget held probes back (budget.go) is a rate-limited router: its
// unanswered probes are refusals, and its forward loss is at most the destination's.
func (t *Target) Losses() []HopLoss {
	path := t.Path()
	out := make([]HopLoss, len(path))
	var later []*hopstat.Hop // the answering hops after the current one
	var dest *hopstat.Hop
	if t.DestTTL != 0 {
		dest = &path[len(path)-1]
	}
	for k := len(path) - 1; k >= 0; k-- {
		h := &path[k]
		hl := HopLoss{TTL: h.TTL, Silent: h.Received() == 0}
		if !hl.Silent {
			hl.Loss = h.Loss()
			hl.Forward = hl.Loss
			for _, j := range later {
				if lower(j, h) {
					hl.Forward = min(hl.Forward, j.Loss())
				}
			}
			if i := h.TTL - t.Hops[0].TTL; t.held != nil && t.held[i] && dest != nil && dest != h && dest.Sent() > 0 {
				hl.Forward = min(hl.Forward, dest.Loss())
			}
			hl.Reply = hl.Loss - hl.Forward
			later = append(later, h)
		}
		out[k] = hl
	}
	return out
}

// zReply is how many standard errors below a hop's loss a later hop's must be to count
// as lower: one-sided, about 1 in 4300 when the two lose the same share. Each hop is
// compared with every later one, so a path makes dozens of tests per report, hence far
// more than the usual 1.96; a router that drops a real share of its answers is still
// told apart within tens of rounds (30 % against 0 % at 50 rounds is 4 standard errors).
const zReply = 3.5

// lower reports whether j's loss rate is significantly below h's (a pooled two-proportion
// z-test).
func lower(j, h *hopstat.Hop) bool {
	nj, nh := float64(j.Sent()), float64(h.Sent())
	if nj == 0 || nh == 0 {
		return false
	}
	kj, kh := float64(j.Sent()-j.Received()), float64(h.Sent()-h.Received())
	p := (kj + kh) / (nj + nh)
	se := math.Sqrt(p * (1 - p) * (1/nj + 1/nh))
	return se > 0 && kh/nh-kj/nj > zReply*se
}

// Thresholds are the verdict's limits.
type Thresholds struct {
	RTT    float64 // ms, the destination's mean RTT must stay below
	Loss   float64 // percent, the path loss must stay below
	Jitter float64 // ms, the destination's mean jitter (mtr's Javg) must stay below
}

// Teams are Microsoft's client-to-edge media thresholds for Teams.
var Teams = Thresholds{RTT: 100, Loss: 1, Jitter: 30}

// Verdict is a target's pass or fail.
type Verdict struct {
	Pass    bool
	Reasons []string // why it fails, one per threshold crossed
	// FirstTTL is the first hop where forward loss or delay crossing a threshold appears
	// (0: none, or the destination was not reached).
	FirstTTL int
}

// Judge gives t's verdict against th.
func (t *Target) Judge(th Thresholds) Verdict {
	ts := t.Snapshot(false)
	return ts.Judge(th)
}

// Judge gives the verdict on a target's snapshot against th: the destination's mean RTT,
// its mean jitter (mtr's Javg) and the path loss; on a fail, the first hop where forward
// loss, delay or jitter crossing a threshold the destination crosses too appears.
func (ts *TargetSnapshot) Judge(th Thresholds) Verdict {
	if !ts.PathLossKnown || len(ts.Hops) == 0 {
		return Verdict{Reasons: []string{"destination not reached"}}
	}
	dest := &ts.Hops[len(ts.Hops)-1] // the path ends at the destination when it is known
	loss := ts.PathLoss
	var v Verdict
	if dest.Received > 0 && dest.Avg >= th.RTT {
		v.Reasons = append(v.Reasons, fmt.Sprintf("RTT %.1f ms ≥ %g ms", dest.Avg, th.RTT))
	}
	if loss >= th.Loss {
		v.Reasons = append(v.Reasons, fmt.Sprintf("path loss %.1f %% ≥ %g %%", loss, th.Loss))
	}
	if dest.JitterMean >= th.Jitter {
		v.Reasons = append(v.Reasons, fmt.Sprintf("jitter %.1f ms ≥ %g ms", dest.JitterMean, th.Jitter))
	}
	v.Pass = len(v.Reasons) == 0
	if v.Pass {
		return v
	}
	for k := range ts.Hops {
		h := &ts.Hops[k]
		if h.Silent || h.RateLimited {
			continue
		}
		if h.Forward >= th.Loss && loss >= th.Loss || h.Avg >= th.RTT && dest.Avg >= th.RTT ||
			h.JitterMean >= th.Jitter && dest.JitterMean >= th.Jitter {
			v.FirstTTL = h.TTL
			break
		}
	}
	return v
}

// Snapshot is the run's final results as a snapshot (what Options.Snapshot hands over
// during the run), taken at Finished.
func (r *Result) Snapshot() *Snapshot {
	return &Snapshot{Time: r.Finished, Started: r.Started, Rounds: r.Rounds, Outages: len(r.Outages),
		Targets: r.TargetSnapshots(false)}
}

// TargetSnapshots are every target's final results (with the path changes kept if
// events), rate-limited hops told from silent ones across the targets.
func (r *Result) TargetSnapshots(events bool) []TargetSnapshot {
	ts := make([]TargetSnapshot, len(r.Targets))
	for i, t := range r.Targets {
		ts[i] = t.Snapshot(events)
	}
	markLimited(ts)
	return ts
}
