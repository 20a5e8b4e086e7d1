package monitor

import (
	"net/netip"
	"time"
)

// Routers answer only a few probes a second toward one prober (Linux: a burst of 6 Time
// Exceeded, then one a second). A monitor of many relays behind one network asks each
// shared router once per target and round: twenty relays ask twenty a second of a router
// that answers one, and every hop but the first target's shows 95 % "loss" that is only
// the router's limit. So the monitor learns each router's budget, as the scan does
// (package scan), and spends it: a router that refused probes of one round is probed for
// no more targets a round than it answers, the targets taking turns, and a probe not sent
// is not counted (neither sent nor lost). The destination's own answers (what the verdict
// rests on) are never held back, and a router asked at most twice a round (one or two
// targets behind it) is never limited: a monitor of one relay probes as mtr does.

// minLearn is how many probes a router must get in one round before its unanswered ones
// are taken for a limit: with fewer, loss and a limit look alike.
const minLearn = 3

// routerBudget is what the monitor believes of one router's ICMP budget.
type routerBudget struct {
	limited bool
	rate    float64 // answers a second it gives, once limited
	tokens  float64
	last    time.Time
	// The rounds closed since the last settle: probes it got, answered and refused.
	got, refused int
}

// budgets are the routers' budgets, by responder address.
type budgets struct {
	interval time.Duration
	m        map[netip.Addr]*routerBudget
}

func newBudgets(interval time.Duration) *budgets {
	return &budgets{interval: interval, m: map[netip.Addr]*routerBudget{}}
}

func (bs *budgets) of(a netip.Addr) *routerBudget {
	b := bs.m[a]
	if b == nil {
		b = &routerBudget{}
		bs.m[a] = b
	}
	return b
}

// allow reports whether a probe toward router a may go at now, and takes its token.
func (bs *budgets) allow(a netip.Addr, now time.Time) bool {
	b := bs.m[a]
	if b == nil || !b.limited {
		return true
	}
	if now.After(b.last) {
		// At most a round's worth saved up: an idle router's burst is spent on the next
		// round's first targets, which the rotation changes every round.
		b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, max(1, b.rate*bs.interval.Seconds()))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// settle learns from a closed round's tally of every router. A router that answered some
// of at least minLearn probes and refused others is limited, at what it answered (a
// second's worth at the prior of one a second, then the average of what it gives);
// a limited router that answered all it got, a full round's worth, may take more.
func (bs *budgets) settle(now time.Time) {
	sec := bs.interval.Seconds()
	for _, b := range bs.m {
		got, refused := b.got, b.refused
		b.got, b.refused = 0, 0
		sent := got + refused
		switch {
		case sent == 0:
		case !b.limited:
			if sent >= minLearn && got >= 1 && refused*5 > sent {
				b.limited, b.rate, b.tokens, b.last = true, 1, 0, now
			}
		case refused > 0:
			b.rate = max(0.7*b.rate+0.3*float64(got)/sec, 0.1)
		case float64(got) >= b.rate*sec:
			b.rate *= 1.25
		}
	}
}
