package hopstat

import "slices"

// HintKind is what a hint is about.
type HintKind uint8

const (
	HintResponders   HintKind = iota + 1 // several addresses answered at one TTL
	HintQuotedTTL                        // a router quoted the probe with a TTL above 1
	HintNAT                              // something rewrote the probe on the way out
	HintReturnPath                       // the way back is much longer or shorter than the way out
	HintRTTInversion                     // a hop is slower than a later one
)

var kindNames = [...]string{HintResponders: "responders", HintQuotedTTL: "quoted-ttl", HintNAT: "nat",
	HintReturnPath: "return-path", HintRTTInversion: "rtt-inversion"}

func (k HintKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Hint is something a network engineer can act on, about one hop. The field of its Kind
// says what was seen.
type Hint struct {
	Kind       HintKind
	TTL        int    // the hop it is about
	Responders int    // HintResponders: how many addresses answered
	QuotedTTL  uint8  // HintQuotedTTL: the TTL left in the quoted probe (1 expected)
	NAT        string // HintNAT: what was rewritten
	ReturnHops int    // HintReturnPath: estimated length of the way back, the responder included
	Faster     int    // HintRTTInversion: TTL of the later hop whose best RTT is lower
}

// A return path is called asymmetric when its estimated length differs from the forward
// TTL by this many hops or more: a difference of one is frequent on paths that are
// symmetric as far as routers go (an answer sent from another interface, a tunnel hiding
// a hop one way).
const asymmetricReturn = 2

// A hop's best RTT is an inversion when it exceeds a later hop's best by this factor plus
// this slack (ms): below that, the difference is the noise of a few answers.
const (
	inversionFactor = 1.5
	inversionSlack  = 0.5
)

// Hints are what the hops of one path, in TTL order, hint at: hop by hop, several
// responders first, then what single answers showed (quoted TTL, NAT, return path) in the
// order they were first seen, then an RTT inversion.
func Hints(hops []Hop) []Hint {
	var out []Hint
	for i := range hops {
		out = append(out, hops[i].hints()...)
		if inv, ok := inversion(hops, i); ok {
			out = append(out, inv)
		}
	}
	return out
}

// hints are what hop h shows on its own.
func (h *Hop) hints() []Hint {
	var out []Hint
	if len(h.responders) > 1 {
		out = append(out, Hint{Kind: HintResponders, TTL: h.TTL, Responders: len(h.responders)})
	}
	type seen struct {
		at   int
		hint Hint
	}
	var s []seen
	if h.quotedAt > 0 {
		s = append(s, seen{h.quotedAt, Hint{Kind: HintQuotedTTL, TTL: h.TTL, QuotedTTL: h.quoted}})
	}
	if h.natAt > 0 {
		s = append(s, seen{h.natAt, Hint{Kind: HintNAT, TTL: h.TTL, NAT: h.nat}})
	}
	if h.returnAt > 0 {
		s = append(s, seen{h.returnAt, Hint{Kind: HintReturnPath, TTL: h.TTL, ReturnHops: h.returnHops}})
	}
	// Stable: one answer that shows several keeps the order above.
	slices.SortStableFunc(s, func(a, b seen) int { return a.at - b.at })
	for _, x := range s {
		out = append(out, x.hint)
	}
	return out
}

// inversion compares hop i's best RTT with the later hops': the first one much faster
// shows that hop i's extra time is its router's control plane generating the ICMP
// answer, not the path.
func inversion(hops []Hop, i int) (Hint, bool) {
	if hops[i].received == 0 {
		return Hint{}, false
	}
	for j := i + 1; j < len(hops); j++ {
		if hops[j].received > 0 && hops[i].best > hops[j].best*inversionFactor+inversionSlack {
			return Hint{Kind: HintRTTInversion, TTL: hops[i].TTL, Faster: hops[j].TTL}, true
		}
	}
	return Hint{}, false
}
