package monitor

import (
	"net/netip"
	"time"
)

// SampleFunc is told of every reply the run credits to its round (not the late or
// duplicate ones it drops), with the RTT the hop's statistics got: what an RTT
// histogram needs, which the snapshots' aggregates cannot give. It is called in the run
// loop, so it must be cheap and must not block (package metrics observes a histogram).
// reached is true for the destination's own answers.
type SampleFunc func(target, ttl int, rtt time.Duration, from netip.Addr, reached bool)

// call calls f when it is set: the run loop's one line in its reply path.
func (f SampleFunc) call(target, ttl int, rtt time.Duration, from netip.Addr, reached bool) {
	if f != nil {
		f(target, ttl, rtt, from, reached)
	}
}
