package hopstat

import (
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// op is one event of a hop: an answer (rtt >= 0), a loss (lost), or a probe sent (await).
type op struct {
	rtt     time.Duration
	lost    bool
	await   bool
	abandon bool
}

func msOp(v float64) op { return op{rtt: time.Duration(v * float64(time.Millisecond))} }

var (
	lost    = op{lost: true}
	await   = op{await: true}
	abandon = op{abandon: true}
)

func feed(h *Hop, ops []op) {
	for _, o := range ops {
		switch {
		case o.await:
			h.Await()
		case o.lost:
			h.Lost()
		case o.abandon:
			h.Abandon()
		default:
			h.Add(Sample{From: netip.MustParseAddr("192.0.2.1"), RTT: o.rtt})
		}
	}
}

type stats struct {
	sent, received, inFlight                     int
	loss, last, best, worst, mean, stddev, gmean float64
	jitter, jitterMean, jitterMax, interarrival  float64
}

func statsOf(h *Hop) stats {
	return stats{h.Sent(), h.Received(), h.InFlight(), h.Loss(), h.Last(), h.Best(), h.Worst(), h.Mean(), h.StdDev(), h.Gmean(),
		h.Jitter(), h.JitterMean(), h.JitterMax(), h.Interarrival()}
}

func near(a, b float64) bool { return a == b || math.Abs(a-b) <= 1e-9*max(math.Abs(a), math.Abs(b)) }

func TestHopStatistics(t *testing.T) {
	for _, c := range []struct {
		name string
		ops  []op
		want stats
	}{
		{"no samples", nil, stats{}},
		{"one lost", []op{lost}, stats{sent: 1, loss: 100}},
		{"all lost", []op{await, await, lost, lost, await, lost}, stats{sent: 3, loss: 100}},
		// An abandoned probe (the run lost its interface) counts nowhere.
		{"abandoned", []op{await, await, await, msOp(5), abandon, abandon, abandon}, stats{sent: 1, received: 1, last: 5, best: 5, worst: 5, mean: 5, gmean: 5}},
		{"one sample", []op{msOp(10)}, stats{sent: 1, received: 1, last: 10, best: 10, worst: 10, mean: 10, gmean: 10}},
		// Mean 46/4; deviations -1.5 .5 -2.5 3.5: 21/3 = 7; gmean (10*12*9*15)^(1/4);
		// jitters 0 2 3 6: mean 11/4; J: 2/16 = .125, +(3-.125)/16 = .3046875,
		// +(6-.3046875)/16 = .66064453125.
		{"four samples", []op{msOp(10), msOp(12), msOp(9), msOp(15)}, stats{sent: 4, received: 4, last: 15, best: 9, worst: 15,
			mean: 11.5, stddev: math.Sqrt(7), gmean: math.Pow(16200, 0.25), jitter: 6, jitterMean: 2.75, jitterMax: 6, interarrival: 0.66064453125}},
		// A loss leaves the previous RTT in place for the jitter: |20-10|.
		{"losses between", []op{msOp(10), lost, msOp(20), lost}, stats{sent: 4, received: 2, loss: 50, last: 20, best: 10, worst: 20,
			mean: 15, stddev: math.Sqrt(50), gmean: math.Sqrt(200), jitter: 10, jitterMean: 5, jitterMax: 10, interarrival: 0.625}},
		// Probes in flight are neither sent nor lost; Add and Lost complete them.
		{"in flight", []op{await, await, await, msOp(4)}, stats{sent: 1, received: 1, inFlight: 2, last: 4, best: 4, worst: 4, mean: 4, gmean: 4}},
		{"in flight then lost", []op{await, await, msOp(4), lost}, stats{sent: 2, received: 1, loss: 50, last: 4, best: 4, worst: 4, mean: 4, gmean: 4}},
		// Welford: a sum of squares of values near 1e9 keeps no digit of the variance
		// (values 4, 7, 13, 16 above 1e9: variance 90/3). The geometric mean is below the
		// mean by 11.25/1e9, under the tolerance; jitters 0 3 6 3; J: 3/16 = .1875,
		// +(6-.1875)/16 = .55078125, +(3-.55078125)/16 = .703857421875.
		{"large close values", []op{msOp(1e9 + 4), msOp(1e9 + 7), msOp(1e9 + 13), msOp(1e9 + 16)}, stats{sent: 4, received: 4,
			last: 1e9 + 16, best: 1e9 + 4, worst: 1e9 + 16, mean: 1e9 + 10, stddev: math.Sqrt(30), gmean: 1e9 + 10,
			jitter: 3, jitterMean: 3, jitterMax: 6, interarrival: 0.703857421875}},
		// One RTT of 0 makes the geometric mean 0, as in mtr.
		{"zero rtt", []op{msOp(0), msOp(4)}, stats{sent: 2, received: 2, last: 4, best: 0, worst: 4, mean: 2, stddev: math.Sqrt(8),
			gmean: 0, jitter: 4, jitterMean: 2, jitterMax: 4, interarrival: 0.25}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var h Hop
			feed(&h, c.ops)
			got := statsOf(&h)
			g, w := got, c.want
			if g.sent != w.sent || g.received != w.received || g.inFlight != w.inFlight {
				t.Errorf("sent/received/in flight %d/%d/%d, want %d/%d/%d", g.sent, g.received, g.inFlight, w.sent, w.received, w.inFlight)
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{
				{"loss", g.loss, w.loss}, {"last", g.last, w.last}, {"best", g.best, w.best}, {"worst", g.worst, w.worst},
				{"mean", g.mean, w.mean}, {"stddev", g.stddev, w.stddev}, {"gmean", g.gmean, w.gmean},
				{"jitter", g.jitter, w.jitter}, {"jitter mean", g.jitterMean, w.jitterMean}, {"jitter max", g.jitterMax, w.jitterMax},
				{"interarrival", g.interarrival, w.interarrival},
			} {
				if !near(f.got, f.want) {
					t.Errorf("%s = %.12g, want %.12g", f.name, f.got, f.want)
				}
			}
		})
	}
}

// The statistics do not depend on how the answers are split into rounds: a monitor that
// reads between rounds sees the same numbers at the end as a trace that adds them at once.
func TestHopIncremental(t *testing.T) {
	rtts := []float64{3.2, 2.9, 7.5, 3.1, 3.0, 12.25}
	var once Hop
	for _, v := range rtts {
		once.Add(Sample{RTT: time.Duration(v * 1e6)})
	}
	var rounds Hop
	for i, v := range rtts {
		rounds.Await()
		if i%2 == 0 {
			rounds.Await()
		}
		_ = statsOf(&rounds) // a read between rounds changes nothing
		rounds.Add(Sample{RTT: time.Duration(v * 1e6)})
	}
	a, b := statsOf(&once), statsOf(&rounds)
	b.inFlight = 0
	if a != b {
		t.Errorf("rounds %+v\nonce   %+v", b, a)
	}
	if rounds.InFlight() != 3 {
		t.Errorf("in flight %d, want 3", rounds.InFlight())
	}
}

func TestResponders(t *testing.T) {
	a := netip.MustParseAddr
	var h Hop
	for _, from := range []string{"10.0.0.2", "10.0.0.9", "10.0.0.9", "10.0.0.1", "10.0.0.9"} {
		h.Add(Sample{From: a(from), RTT: time.Millisecond})
	}
	h.Lost()
	want := []Responder{{a("10.0.0.9"), 3, 0.6}, {a("10.0.0.1"), 1, 0.2}, {a("10.0.0.2"), 1, 0.2}}
	if got := h.Responders(); !slices.Equal(got, want) {
		t.Errorf("responders %v, want %v", got, want)
	}
	var silent Hop
	silent.Lost()
	if got := silent.Responders(); len(got) != 0 {
		t.Errorf("silent hop responders %v", got)
	}
}
