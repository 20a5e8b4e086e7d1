package scan

import (
	"net/netip"
	"slices"
)

// result is every target's path with each hop's status, the union of interfaces and
// links, and the responders' budgets as learnt.
func (s *state) result() *Result {
	s.rebuild()
	res := &Result{Probes: s.probes, Batches: s.batches}
	for i, t := range s.targets {
		tr := Target{Index: i, Probes: t.probes, DestTTL: t.dest, Reached: t.dest != 0}
		last := t.dest - 1
		if t.dest == 0 {
			last = 0
			for ttl := s.opt.FirstTTL; ttl <= s.opt.MaxTTL; ttl++ {
				if s.at(t, ttl).probes > 0 {
					last = ttl
				}
			}
		} else {
			tr.DestRTT, tr.DestKind = s.at(t, t.dest).rtt, s.at(t, t.dest).kind
		}
		for ttl := s.opt.FirstTTL; ttl <= last; ttl++ {
			tr.Hops = append(tr.Hops, s.hop(t, ttl))
		}
		res.Targets = append(res.Targets, tr)
	}
	for a := range s.found {
		res.Interfaces = append(res.Interfaces, a)
	}
	slices.SortFunc(res.Interfaces, netip.Addr.Compare)
	links := map[Link]bool{}
	for _, g := range s.graphs {
		for a, bs := range g.succ {
			for b := range bs {
				if !(a.router() || a.anon) || !(b.router() || b.anon) {
					continue
				}
				l := Link{}
				if a.router() {
					l.From = a.addr
				}
				if b.router() {
					l.To = b.addr
				}
				links[l] = true
			}
		}
	}
	for l := range links {
		res.Links = append(res.Links, l)
	}
	slices.SortFunc(res.Links, func(a, b Link) int {
		if c := a.From.Compare(b.From); c != 0 {
			return c
		}
		return a.To.Compare(b.To)
	})
	for k, b := range s.budgets {
		a, err := netip.ParseAddr(k)
		if err != nil {
			continue // an unknown position's pseudo-budget
		}
		r := Responder{Addr: a, Answers: b.answers, Limited: b.limited}
		if b.limited {
			r.Burst, r.Rate = b.burst, b.rate
		}
		res.Responders = append(res.Responders, r)
	}
	slices.SortFunc(res.Responders, func(a, b Responder) int { return a.Addr.Compare(b.Addr) })
	return res
}

// hop is t's hop at ttl with its status.
func (s *state) hop(t *tstate, ttl int) Hop {
	p := s.at(t, ttl)
	h := Hop{TTL: ttl, Probes: p.probes}
	switch {
	case p.answer.IsValid() && !p.dest:
		h.Status, h.Addr, h.RTT, h.Kind = Answered, p.answer, p.rtt, p.kind
		return h
	case t.silents[ttl]:
		h.Status = Silent
		return h
	}
	c := s.infer(t, ttl)
	if !c.unknown {
		if c.anon {
			h.Status = Silent
			return h
		}
		h.Status = Inferred
		for _, n := range c.nodes {
			if !n.router() {
				continue
			}
			h.Candidates = append(h.Candidates, n.addr)
			if from, ok := s.found[n.addr]; ok && !slices.Contains(h.From, from) {
				h.From = append(h.From, from)
			}
		}
		if len(h.Candidates) == 1 {
			h.Addr, h.Candidates = h.Candidates[0], nil
		}
		if len(h.Candidates) > 0 || h.Addr.IsValid() {
			return h
		}
	}
	// Unresolved: rate-limited when its router has a budget it spent elsewhere (a probe was
	// held back for it, or the routers it may be refused probes), lost otherwise.
	h.Status = Lost
	if p.heldFor || s.limitedNear(t, ttl) {
		h.Status = RateLimited
	}
	return h
}

// limitedNear reports whether the routers t's hop at ttl may be (what any target of its
// prefix measured at that TTL) include a rate-limited one.
func (s *state) limitedNear(t *tstate, ttl int) bool {
	for _, u := range s.targets {
		if u.group != t.group || ttl > s.opt.MaxTTL {
			continue
		}
		p := s.at(u, ttl)
		if p.answer.IsValid() && !p.dest {
			if b := s.budgets[addrKey(p.answer)]; b != nil && b.limited {
				return true
			}
		}
	}
	return false
}
