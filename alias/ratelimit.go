package alias

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Rate-limit evidence (after "Limited Ltd.", Vermeulen, Luckie et al., PAM 2020): a router
// limits the ICMP errors it sends toward one prober with one token bucket, whatever
// interface a probe came in by (Linux: per network namespace and destination, a burst of
// 6 and one more every icmp_ratelimit ms, for IPv6 scaled by the prefix length of the
// route back). The caller sends chains of batches, each a burst to one address (the
// leader, which drains its limiter) followed by a few probes to one other address (the
// tested one), with pauses between batches and nothing else sent to these routers
// meanwhile, and records what was answered (AddRateChain). From each batch after the
// first:
//
//   - distinct: the leader's burst ran dry (a probe of it unanswered) and the tested
//     address still answered at least two probes after it: two limiters. (A shared one
//     can refill one token in the instant between, not two; probes reordered on the way
//     could do it too: a Distinct verdict needs MinRateTrials such trials.)
//   - shared: the tested address T was drained in the batch before (its last probe there
//     unanswered), is silent now after the leader's burst, and when T next leads a
//     batch it answers c probes. Were T's limiter its own, it would have refilled less
//     than one token over the pause R1 before this batch (it stayed silent) and so fewer
//     than 1+R2/R1 tokens over the pause R2 until it led (it answered nothing between),
//     so c >= 1 + R2/R1 rules that out, unless all T's probes here were lost otherwise.
//     The pauses are widened by RateSlack (a kernel counts tokens in jiffies).
//
// A pair is one router when at least MinRateTrials shared trials and no distinct trial
// show it, two when MinRateTrials distinct trials and no shared one do. The confidence of
// a shared verdict is 1 - RateLoss^n, n the tested probes of the shared trials that were
// silent: the chance that they were all lost for another reason. Reply TTLs must still be
// equal, IP IDs (when both addresses have a counter) decide first, and the caller's
// topology still keeps apart.

// RateProbe is one probe of a rate-limit test: the address its flow meets at its TTL
// and whether the answer came.
type RateProbe struct {
	Addr     netip.Addr
	Answered bool
}

// RateBatch is one batch of a rate-limit test: when it was sent and its probes in the
// order they were sent (the leader's burst first).
type RateBatch struct {
	At     time.Time
	Probes []RateProbe
}

// rateTally is what the rate-limit trials said of one pair.
type rateTally struct {
	shared, distinct int
	silent           int     // tested probes silent in the shared trials
	ratio            float64 // the largest 1+R2/R1 a shared trial's control beat
	ctrl             int     // the control's answers in that trial
	chains           int     // chains that probed both addresses
}

// AddRateChain records one chain of rate-limit test batches (see the package
// documentation): consecutive batches, sent with nothing else reaching the routers of
// their addresses in between.
func (r *Resolver) AddRateChain(chain []RateBatch) {
	if r.rate == nil {
		r.rate = map[[2]netip.Addr]*rateTally{}
	}
	tally := func(a, b netip.Addr) *rateTally {
		a, b = a.Unmap(), b.Unmap()
		if b.Less(a) {
			a, b = b, a
		}
		k := [2]netip.Addr{a, b}
		if r.rate[k] == nil {
			r.rate[k] = &rateTally{}
		}
		return r.rate[k]
	}
	// The pairs a batch probed one after the other were tested, whatever came of it;
	// two addresses of a chain never in one batch were not.
	touched := map[netip.Addr]bool{}
	tested := map[[2]netip.Addr]bool{}
	for _, b := range chain {
		for _, p := range b.Probes {
			a, l := p.Addr.Unmap(), b.Probes[0].Addr.Unmap()
			touched[a] = true
			if l.Less(a) {
				tested[[2]netip.Addr{l, a}] = true
			} else if a.Less(l) {
				tested[[2]netip.Addr{a, l}] = true
			}
		}
	}
	for k := range tested {
		tally(k[0], k[1]).chains++
	}
	r.trials(chain, tally)
	for a := range touched {
		if f := r.ifaces[a]; f != nil {
			f.ver++
		}
	}
	r.ver++
}

// trials derives the trials of a chain (see the package documentation) into the
// tallies of tally.
func (r *Resolver) trials(chain []RateBatch, tally func(a, b netip.Addr) *rateTally) {
	for i, b := range chain {
		if len(b.Probes) == 0 {
			continue
		}
		lead := b.Probes[0].Addr.Unmap()
		burst := 0
		for burst < len(b.Probes) && b.Probes[burst].Addr.Unmap() == lead {
			burst++
		}
		dry := slices.ContainsFunc(b.Probes[:burst], func(p RateProbe) bool { return !p.Answered })
		rest := b.Probes[burst:]
		if len(rest) == 0 {
			continue
		}
		test := rest[0].Addr.Unmap()
		if slices.ContainsFunc(rest, func(p RateProbe) bool { return p.Addr.Unmap() != test }) {
			continue // a third address could have drained the tested one's limiter
		}
		answered := 0
		for _, p := range rest {
			if p.Answered {
				answered++
			}
		}
		if dry && answered >= 2 {
			// Two: one token may come back in the instant between the burst and them.
			tally(lead, test).distinct++
			continue
		}
		if i == 0 || answered > 0 {
			continue
		}
		if !drained(chain[i-1], test) {
			continue
		}
		// The control: the next batch that probes test, led by it.
		for _, nb := range chain[i+1:] {
			if !slices.ContainsFunc(nb.Probes, func(p RateProbe) bool { return p.Addr.Unmap() == test }) {
				continue
			}
			if nb.Probes[0].Addr.Unmap() != test {
				break
			}
			c := 0
			for _, p := range nb.Probes {
				if p.Addr.Unmap() != test {
					break
				}
				if p.Answered {
					c++
				}
			}
			r1 := b.At.Sub(chain[i-1].At) - r.o.RateSlack
			r2 := nb.At.Sub(b.At) + r.o.RateSlack
			if r1 <= 0 {
				break
			}
			if need := 1 + r2.Seconds()/r1.Seconds(); float64(c) >= need {
				t := tally(lead, test)
				t.shared++
				t.silent += len(rest)
				if need > t.ratio {
					t.ratio, t.ctrl = need, c
				}
			}
			break
		}
	}
}

// RateTrials returns how many shared-limiter and distinct-limiter trials chain holds for
// a and b, without recording anything: a caller can tell whether its chain needs more
// batches.
func (r *Resolver) RateTrials(chain []RateBatch, a, b netip.Addr) (shared, distinct int) {
	a, b = a.Unmap(), b.Unmap()
	if b.Less(a) {
		a, b = b, a
	}
	t := &rateTally{}
	r.trials(chain, func(x, y netip.Addr) *rateTally {
		x, y = x.Unmap(), y.Unmap()
		if y.Less(x) {
			x, y = y, x
		}
		if x == a && y == b {
			return t
		}
		return &rateTally{}
	})
	return t.shared, t.distinct
}

// drained reports whether a's last probe in b went unanswered: its limiter, if its own,
// held less than one token then.
func drained(b RateBatch, a netip.Addr) bool {
	for i := len(b.Probes) - 1; i >= 0; i-- {
		if b.Probes[i].Addr.Unmap() == a {
			return !b.Probes[i].Answered
		}
	}
	return false
}

// ratePair is the rate-limit verdict on a and b (a < b, unmapped).
func (r *Resolver) ratePair(a, b netip.Addr) (Verdict, Evidence) {
	t := r.rate[[2]netip.Addr{a, b}]
	if t == nil || t.shared+t.distinct == 0 {
		return Unknown, Evidence{}
	}
	ev := Evidence{Kind: "rate-limit", A: a, B: b}
	switch {
	case t.shared >= r.o.MinRateTrials && t.distinct == 0:
		ev.Confidence = 1 - math.Pow(r.o.RateLoss, float64(t.silent))
		ev.Detail = fmt.Sprintf("one ICMP rate limiter: %d trials, each silent after the other's burst and answering %d+ (>= %.2f) when led", t.shared, t.ctrl, t.ratio)
		if ev.Confidence < r.o.MinConfidence {
			return Unknown, ev
		}
		return Alias, ev
	case t.distinct >= r.o.MinRateTrials && t.shared == 0:
		ev.Detail = fmt.Sprintf("two ICMP rate limiters: %d trials answered after the other's burst ran dry", t.distinct)
		return Distinct, ev
	}
	ev.Detail = fmt.Sprintf("rate-limit trials disagree or too few: %d shared, %d distinct", t.shared, t.distinct)
	return Unknown, ev
}

// RateTested reports whether a rate-limit chain has probed both a and b.
func (r *Resolver) RateTested(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	if b.Less(a) {
		a, b = b, a
	}
	t := r.rate[[2]netip.Addr{a, b}]
	return t != nil && t.chains > 0
}

// RateEvidence is what the rate-limit trials say of a and b (Unknown with an empty
// Evidence when none was recorded).
func (r *Resolver) RateEvidence(a, b netip.Addr) (Verdict, Evidence) {
	a, b = a.Unmap(), b.Unmap()
	if b.Less(a) {
		a, b = b, a
	}
	return r.ratePair(a, b)
}

// RateOnly reports whether only a rate-limit test can tell a and b apart or join them:
// nothing decided the pair, both replied with the same reply TTL, and their IP IDs cannot
// speak (not both counters, and Open says no more replies will tell).
func (r *Resolver) RateOnly(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	fa, fb := r.ifaces[a], r.ifaces[b]
	if fa == nil || fb == nil || a == b || a.Is4() != b.Is4() {
		return false
	}
	if ta, tb := fa.replyTTL(), fb.replyTTL(); ta == 0 || ta != tb {
		return false
	}
	if v, _ := r.Pair(a, b); v != Unknown {
		return false
	}
	if r.isCounter(fa) && r.isCounter(fb) {
		return false
	}
	return !r.Open(a, b, 1<<30) // else IP IDs may still speak
}

// OpenRate reports whether a rate-limit test may still decide a and b: RateOnly, and no
// chain has probed them both yet.
func (r *Resolver) OpenRate(a, b netip.Addr) bool {
	return r.RateOnly(a, b) && !r.RateTested(a, b)
}

// rateTried reports whether some rate-limit trial involved a.
func (r *Resolver) rateTried(a netip.Addr) bool {
	for k, t := range r.rate {
		if (k[0] == a || k[1] == a) && t.shared+t.distinct > 0 {
			return true
		}
	}
	return false
}
