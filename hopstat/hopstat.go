// Package hopstat keeps the statistics of one hop of a path as its probes complete, and
// says what the hops of a path hint at. It is pure (no I/O, nothing of packets or
// engines): a trace fills it once per target (trace.HopStats), and the output formats only
// print it. It is incremental, so a run that repeats its probes can read it between rounds.
//
// The statistics are mtr's (ui/net.c, net_process_ping), in milliseconds:
//
//   - Sent counts the completed probes, Received the answered ones, Loss the share of
//     Sent that was not answered. A probe still in flight (Await) is neither: counting it
//     lost would show loss at every hop of a monitor that reads between rounds.
//   - Last, Best, Worst, Mean of the RTTs; StdDev the sample standard deviation (n−1)
//     from Welford's running sum of squared differences, which stays exact where the
//     RTTs are large and close together and a sum of squares would cancel out.
//   - Gmean, the geometric mean.
//   - Jitter, |RTT − previous RTT| (0 at the first reply); JitterMean its running mean
//     over every reply (the first one's 0 included, as mtr's Javg); JitterMax the largest.
//   - Interarrival, RFC 3550's smoothed jitter (section 6.4.1): J += (|D| − J)/16, D the
//     difference between consecutive RTTs. mtr prints 16·J (the RFC's integer code keeps
//     J scaled by 16); this is J.
package hopstat

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Sample is one answered probe.
type Sample struct {
	From netip.Addr    // the responder
	RTT  time.Duration // round-trip time
	// TimeExceeded: a router's ICMP Time Exceeded, not the destination's answer. Only
	// then do QuotedTTL and ReturnHops tell something about the path to the responder.
	TimeExceeded bool
	QuotedTTL    uint8  // TTL left in the quoted probe; 1 expected
	ReturnHops   int    // estimated length of the way back, the responder included; 0 unknown
	NAT          string // what rewrote the probe on the way out; "" nothing seen
}

// Hop accumulates the probes of one TTL. The zero value with TTL set is ready; TTL must be
// set before the first Add (the return-path hint compares with it).
type Hop struct {
	TTL int // forward TTL of the hop

	sent, received, inFlight int
	last, best, worst        float64
	sum                      float64 // of the RTTs, for Mean
	mean, m2                 float64 // Welford's running mean and sum of squared differences
	logSum                   float64 // of ln RTT, for Gmean
	jitter, jitterMean       float64
	jitterMax, interarrival  float64
	responders               map[netip.Addr]int

	// The first sample that showed each per-hop hint: at is the ordinal of the completed
	// probe (1 = first), 0 when none did. Hints come out in the order they were seen.
	quotedAt, natAt, returnAt int
	quoted                    uint8
	nat                       string
	returnHops                int
}

// Await records a probe sent and not answered yet: it counts nowhere until Add or Lost
// completes it. A caller that only learns of probes once they completed (a finished
// trace) need not call it.
func (h *Hop) Await() { h.inFlight++ }

// Lost records a probe that will not be answered.
func (h *Hop) Lost() { h.complete() }

// Abandon forgets an awaited probe that can be judged neither answered nor lost (its
// answer could no longer be received: the run lost its interface): it counts nowhere.
func (h *Hop) Abandon() {
	if h.inFlight > 0 {
		h.inFlight--
	}
}

// complete moves a probe from in flight (if it was awaited) to sent.
func (h *Hop) complete() {
	if h.inFlight > 0 {
		h.inFlight--
	}
	h.sent++
}

// Add records an answered probe.
func (h *Hop) Add(s Sample) {
	h.complete()
	h.received++
	x := ms(s.RTT)
	n := float64(h.received)
	if h.received == 1 {
		h.best, h.worst = x, x
	} else {
		h.jitter = math.Abs(x - h.last)
		h.interarrival += (h.jitter - h.interarrival) / 16
	}
	h.last = x
	h.best, h.worst = min(h.best, x), max(h.worst, x)
	h.sum += x
	d := x - h.mean
	h.mean += d / n
	h.m2 += d * (x - h.mean)
	// ln 0 is −Inf, which makes Gmean 0 from then on, as mtr's recurrence does; a
	// negative RTT (a clock gone backwards) counts as 0 rather than poisoning it with NaN.
	h.logSum += math.Log(max(x, 0))
	h.jitterMax = max(h.jitterMax, h.jitter)
	h.jitterMean += (h.jitter - h.jitterMean) / n
	if h.responders == nil {
		h.responders = map[netip.Addr]int{}
	}
	h.responders[s.From]++

	if !s.TimeExceeded {
		s.QuotedTTL, s.ReturnHops = 0, 0
	}
	if s.QuotedTTL > 1 && h.quotedAt == 0 {
		h.quotedAt, h.quoted = h.sent, s.QuotedTTL
	}
	if s.NAT != "" && h.natAt == 0 {
		h.natAt, h.nat = h.sent, s.NAT
	}
	if s.ReturnHops > 0 && h.returnAt == 0 && abs(s.ReturnHops-h.TTL) >= asymmetricReturn {
		h.returnAt, h.returnHops = h.sent, s.ReturnHops
	}
}

// Sent is the number of completed probes, answered or lost.
func (h *Hop) Sent() int { return h.sent }

// Received is the number of answered probes.
func (h *Hop) Received() int { return h.received }

// InFlight is the number of probes awaited and not completed yet.
func (h *Hop) InFlight() int { return h.inFlight }

// Loss is the percentage of the completed probes that were not answered; 0 when none
// completed.
func (h *Hop) Loss() float64 {
	if h.sent == 0 {
		return 0
	}
	return 100 * float64(h.sent-h.received) / float64(h.sent)
}

// Last is the RTT of the latest answer, in milliseconds; the RTT statistics are 0 while
// Received is 0.
func (h *Hop) Last() float64 { return h.last }

// Best is the lowest RTT, in milliseconds.
func (h *Hop) Best() float64 { return h.best }

// Worst is the highest RTT, in milliseconds.
func (h *Hop) Worst() float64 { return h.worst }

// Mean is the mean RTT, in milliseconds. It is the sum over the count rather than
// Welford's running mean: the two can differ in the last bit, and the numbers turnpath
// has always published are sums.
func (h *Hop) Mean() float64 {
	if h.received == 0 {
		return 0
	}
	return h.sum / float64(h.received)
}

// StdDev is the sample standard deviation of the RTTs (n−1), in milliseconds; 0 below two
// answers.
func (h *Hop) StdDev() float64 {
	if h.received < 2 {
		return 0
	}
	return math.Sqrt(h.m2 / float64(h.received-1))
}

// Gmean is the geometric mean of the RTTs, in milliseconds.
func (h *Hop) Gmean() float64 {
	if h.received == 0 {
		return 0
	}
	return math.Exp(h.logSum / float64(h.received))
}

// Jitter is the difference between the last two RTTs, in milliseconds (mtr's Jttr).
func (h *Hop) Jitter() float64 { return h.jitter }

// JitterMean is the mean of Jitter over every answer, in milliseconds (mtr's Javg).
func (h *Hop) JitterMean() float64 { return h.jitterMean }

// JitterMax is the largest Jitter seen, in milliseconds (mtr's Jmax).
func (h *Hop) JitterMax() float64 { return h.jitterMax }

// Interarrival is RFC 3550's interarrival jitter J over the RTTs, in milliseconds.
func (h *Hop) Interarrival() float64 { return h.interarrival }

// Responder is one address that answered at a hop.
type Responder struct {
	Addr  netip.Addr
	Count int     // answers from it
	Share float64 // Count / Received
}

// Responders are the addresses that answered, most frequent first (then by address).
// Several at one TTL: a route change, or per-packet load balancing.
func (h *Hop) Responders() []Responder {
	out := make([]Responder, 0, len(h.responders))
	for a, c := range h.responders {
		out = append(out, Responder{Addr: a, Count: c, Share: float64(c) / float64(h.received)})
	}
	slices.SortFunc(out, func(a, b Responder) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), a.Addr.Compare(b.Addr))
	})
	return out
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
