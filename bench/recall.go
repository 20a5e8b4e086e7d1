package bench

import (
	"net/netip"
	"slices"

	"github.com/turnpath/turnpath/lab"
)

// Observation is what one prober reported for one target: per probed TTL the distinct
// addresses that answered (an empty list is a hop that stayed silent, "*").
type Observation struct {
	Target netip.Addr
	Hops   map[int][]netip.Addr
	// Probes is the number of probes sent when the tool says so (0: unknown).
	Probes int
}

// NewObservation returns an empty observation of target.
func NewObservation(target netip.Addr) *Observation {
	return &Observation{Target: target, Hops: map[int][]netip.Addr{}}
}

// Probed marks ttl as probed (silent until an address is added).
func (o *Observation) Probed(ttl int) {
	if _, ok := o.Hops[ttl]; !ok {
		o.Hops[ttl] = []netip.Addr{}
	}
}

// Add records that addr answered at ttl.
func (o *Observation) Add(ttl int, addr netip.Addr) {
	addr = addr.Unmap()
	o.Probed(ttl)
	if !slices.Contains(o.Hops[ttl], addr) {
		o.Hops[ttl] = append(o.Hops[ttl], addr)
	}
}

// Score is an observation checked against the lab's ground truth.
type Score struct {
	// Found of Total TTLs (1 .. the truth's last TTL) were right: the tool reported an
	// address that can answer there, or "*" where a silent router can be, or the
	// destination answered at an earlier TTL.
	Found int `json:"found"`
	Total int `json:"total"`
	// Wrong counts reported addresses that cannot answer at their TTL.
	Wrong int `json:"wrong"`
	// Multi counts TTLs with more than one responder: a prober whose flow changes from
	// probe to probe lets ECMP routers scatter it.
	Multi int `json:"multi"`
	// OnePath: every reported responder lies on one single true path.
	OnePath bool `json:"one_path"`
	// Reached: the destination (the target, its relay, or the address it sends errors
	// from) answered, first at DestTTL.
	Reached bool `json:"reached"`
	DestTTL int  `json:"dest_ttl,omitempty"`
}

// Recall is Found/Total.
func (s Score) Recall() float64 {
	if s.Total == 0 {
		return 0
	}
	return float64(s.Found) / float64(s.Total)
}

// destAddrs are the addresses the destination may answer from.
func destAddrs(tt *lab.TargetTruth) []netip.Addr {
	out := []netip.Addr{tt.Addr()}
	if a := tt.STUNReplyFrom(); a.IsValid() && !slices.Contains(out, a) {
		out = append(out, a)
	}
	for _, a := range tt.UnreachableFrom() {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// accepts reports whether addr may answer as responder r.
func accepts(r lab.Responder, dest []netip.Addr, addr netip.Addr) bool {
	if r.Destination {
		return slices.Contains(dest, addr)
	}
	return !r.Silent && r.Addr == addr
}

// ScoreObservation checks o against the truth of its target: per TTL, any of the true
// paths' responders counts (a silent router counts as correctly silent).
func ScoreObservation(tt *lab.TargetTruth, o *Observation) Score {
	dest := destAddrs(tt)
	var s Score
	for _, ttl := range sortedTTLs(o) {
		if slices.ContainsFunc(o.Hops[ttl], func(a netip.Addr) bool { return slices.Contains(dest, a) }) {
			s.Reached, s.DestTTL = true, ttl
			break
		}
	}
	s.Total = tt.MaxTTL()
	for ttl := 1; ttl <= s.Total; ttl++ {
		rs := tt.HopsAt(ttl)
		if s.Reached && ttl > s.DestTTL {
			// Not probed past the destination: right if the destination can be here.
			if slices.ContainsFunc(rs, func(r lab.Responder) bool { return r.Destination }) {
				s.Found++
			}
			continue
		}
		addrs, probed := o.Hops[ttl]
		if !probed {
			continue
		}
		ok := len(addrs) == 0 && slices.ContainsFunc(rs, func(r lab.Responder) bool { return r.Silent })
		for _, a := range addrs {
			if slices.ContainsFunc(rs, func(r lab.Responder) bool { return accepts(r, dest, a) }) {
				ok = true
			} else {
				s.Wrong++
			}
		}
		if ok {
			s.Found++
		}
	}
	// Addresses reported past the truth's last TTL are wrong unless they are the
	// destination's.
	for ttl, addrs := range o.Hops {
		if ttl > s.Total {
			for _, a := range addrs {
				if !slices.Contains(dest, a) {
					s.Wrong++
				}
			}
		}
		if len(addrs) > 1 {
			s.Multi++
		}
	}
	s.OnePath = onePath(tt, o, dest)
	return s
}

// onePath reports whether a single true path explains every reported address.
func onePath(tt *lab.TargetTruth, o *Observation, dest []netip.Addr) bool {
	for _, p := range tt.Paths() {
		fits := true
		for ttl, addrs := range o.Hops {
			if ttl < 1 {
				fits = false
				break
			}
			r := p[min(ttl, len(p))-1]
			for _, a := range addrs {
				if !accepts(r, dest, a) {
					fits = false
				}
			}
		}
		if fits {
			return true
		}
	}
	return false
}

func sortedTTLs(o *Observation) []int {
	ttls := make([]int, 0, len(o.Hops))
	for t := range o.Hops {
		ttls = append(ttls, t)
	}
	slices.Sort(ttls)
	return ttls
}

// Totals add up the scores of many targets.
type Totals struct {
	Targets int `json:"targets"`
	Reached int `json:"reached"`
	OnePath int `json:"one_path"` // targets whose hops lie on one true path
	Found   int `json:"found"`
	Total   int `json:"total"`
	Wrong   int `json:"wrong"`
	Multi   int `json:"multi"`
}

// Aggregate adds up scores.
func Aggregate(scores []Score) Totals {
	var t Totals
	for _, s := range scores {
		t.Targets++
		t.Found += s.Found
		t.Total += s.Total
		t.Wrong += s.Wrong
		t.Multi += s.Multi
		if s.Reached {
			t.Reached++
		}
		if s.OnePath {
			t.OnePath++
		}
	}
	return t
}

// Recall is Found/Total over all targets.
func (t Totals) Recall() float64 {
	if t.Total == 0 {
		return 0
	}
	return float64(t.Found) / float64(t.Total)
}
