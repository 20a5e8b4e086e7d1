package hopstat

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// te is a router's Time Exceeded answer.
func te(from string, rttMS float64) Sample {
	return Sample{From: netip.MustParseAddr(from), RTT: time.Duration(rttMS * 1e6), TimeExceeded: true, QuotedTTL: 1}
}

func with(s Sample, f func(*Sample)) Sample { f(&s); return s }

// hop is a hop of the given TTL with these answers; a nil sample is a lost probe.
func hop(ttl int, samples ...*Sample) Hop {
	h := Hop{TTL: ttl}
	for _, s := range samples {
		if s == nil {
			h.Lost()
		} else {
			h.Add(*s)
		}
	}
	return h
}

func p(s Sample) *Sample { return &s }

func TestHints(t *testing.T) {
	quoted := func(q uint8) func(*Sample) { return func(s *Sample) { s.QuotedTTL = q } }
	nat := func(n string) func(*Sample) { return func(s *Sample) { s.NAT = n } }
	ret := func(r int) func(*Sample) { return func(s *Sample) { s.ReturnHops = r } }
	answer := func(s *Sample) { s.TimeExceeded = false } // the destination's, not a router's
	r1 := te("10.0.0.1", 1)
	for _, c := range []struct {
		name string
		hops []Hop
		want []Hint
	}{
		{"none", nil, nil},
		{"quiet path", []Hop{hop(1, p(r1), nil), hop(2, nil, nil), hop(3, p(te("10.0.0.3", 1.2)))}, nil},
		{"two responders", []Hop{hop(1, p(r1), p(te("10.0.0.2", 1)), p(r1))},
			[]Hint{{Kind: HintResponders, TTL: 1, Responders: 2}}},
		{"quoted TTL above 1, the first one kept", []Hop{hop(1, p(r1), p(with(r1, quoted(3))), p(with(r1, quoted(2))))},
			[]Hint{{Kind: HintQuotedTTL, TTL: 1, QuotedTTL: 3}}},
		{"quoted TTL of a destination answer", []Hop{hop(1, p(with(with(r1, quoted(5)), answer)))}, nil},
		{"NAT", []Hop{hop(2, nil, p(with(r1, nat("UDP checksum rewritten"))), p(with(r1, nat("other"))))},
			[]Hint{{Kind: HintNAT, TTL: 2, NAT: "UDP checksum rewritten"}}},
		// |return - forward| >= 2 at TTL 3: 5 and 1 are asymmetric, 4 and 2 are not.
		{"return path 4", []Hop{hop(3, p(with(r1, ret(4))), p(with(r1, ret(2))))}, nil},
		{"return path 5", []Hop{hop(3, p(with(r1, ret(4))), p(with(r1, ret(5))), p(with(r1, ret(1))))},
			[]Hint{{Kind: HintReturnPath, TTL: 3, ReturnHops: 5}}},
		{"return path 1", []Hop{hop(3, p(with(r1, ret(1))))}, []Hint{{Kind: HintReturnPath, TTL: 3, ReturnHops: 1}}},
		{"return path unknown", []Hop{hop(5, p(with(r1, ret(0))))}, nil},
		{"return path of a destination answer", []Hop{hop(3, p(with(with(r1, ret(9)), answer)))}, nil},
		// Responders first, then in the order the answers showed them; one answer that
		// shows several: quoted TTL, NAT, return path.
		{"order of first sight", []Hop{hop(4, p(with(r1, nat("n"))), p(with(te("10.0.0.2", 1), quoted(2))))}, []Hint{
			{Kind: HintResponders, TTL: 4, Responders: 2}, {Kind: HintNAT, TTL: 4, NAT: "n"}, {Kind: HintQuotedTTL, TTL: 4, QuotedTTL: 2}}},
		{"one answer shows three", []Hop{hop(4, nil, p(with(with(with(r1, ret(9)), nat("n")), quoted(2))))}, []Hint{
			{Kind: HintQuotedTTL, TTL: 4, QuotedTTL: 2}, {Kind: HintNAT, TTL: 4, NAT: "n"}, {Kind: HintReturnPath, TTL: 4, ReturnHops: 9}}},
		// Inversion: best > later best * 1.5 + 0.5 ms; the first such later hop, silent
		// hops skipped; the hop's own hints come first.
		{"inversion", []Hop{hop(1, p(te("10.0.0.1", 5.01))), hop(2, nil), hop(3, p(te("10.0.0.3", 3)))},
			[]Hint{{Kind: HintRTTInversion, TTL: 1, Faster: 3}}},
		{"inversion at the threshold", []Hop{hop(1, p(te("10.0.0.1", 5))), hop(2, p(te("10.0.0.2", 3)))}, nil},
		{"inversion against the first faster hop", []Hop{
			hop(1, p(te("10.0.0.1", 10)), p(te("10.0.0.1", 30))), hop(2, p(te("10.0.0.2", 9)), p(with(te("10.0.0.2", 5), nat("n")))),
			hop(3, p(te("10.0.0.3", 1)))}, []Hint{
			{Kind: HintRTTInversion, TTL: 1, Faster: 2}, {Kind: HintNAT, TTL: 2, NAT: "n"}, {Kind: HintRTTInversion, TTL: 2, Faster: 3}}},
		{"no inversion from a silent hop", []Hop{hop(1, nil), hop(2, p(te("10.0.0.2", 0.1)))}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Hints(c.hops); !slices.Equal(got, c.want) {
				t.Errorf("hints\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[HintKind]string{HintResponders: "responders", HintQuotedTTL: "quoted-ttl", HintNAT: "nat",
		HintReturnPath: "return-path", HintRTTInversion: "rtt-inversion", 0: "unknown", 99: "unknown"} {
		if got := k.String(); got != want {
			t.Errorf("HintKind(%d) = %q, want %q", k, got, want)
		}
	}
}
