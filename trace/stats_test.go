package trace

import (
	"github.com/turnpath/turnpath/probe"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/turnpath/turnpath/hopstat"
)

func TestHopStats(t *testing.T) {
	a := netip.MustParseAddr
	te := func(from string, rtt time.Duration, replyTTL uint8) *Reply {
		return &Reply{Kind: probe.KindTimeExceeded, From: a(from), RTT: rtt, ReplyTTL: replyTTL, QuotedTTL: 1}
	}
	nat := te("10.0.0.2", 3*time.Millisecond, 60)
	nat.NAT = "UDP checksum rewritten"
	quoted := te("10.0.0.2", 2*time.Millisecond, 60)
	quoted.QuotedTTL = 2
	dest := &Reply{Kind: probe.KindSTUN, From: a("10.0.0.9"), RTT: time.Millisecond, ReplyTTL: 50, QuotedTTL: 7}
	res := Result{Reached: true, DestTTL: 3, Hops: []Hop{
		{TTL: 1, Replies: []*Reply{te("10.0.0.1", 2*time.Millisecond, 64), nil, te("10.0.0.1", 4*time.Millisecond, 64)}},
		{TTL: 2, Replies: []*Reply{nat, quoted, nil}},
		{TTL: 3, Replies: []*Reply{dest, dest, dest}},
	}}
	// Return lengths from the reply TTL as a caller would estimate them: 64 -> 1, 60 -> 5, 50 -> 15.
	ret := func(ttl uint8) int { return 65 - int(ttl) }

	stats := HopStats(res, ret)
	if len(stats) != 3 {
		t.Fatalf("%d hops, want 3", len(stats))
	}
	for i, want := range []struct {
		ttl, sent, received int
		mean                float64
	}{{1, 3, 2, 3}, {2, 3, 2, 2.5}, {3, 3, 3, 1}} {
		h := &stats[i]
		if h.TTL != want.ttl || h.Sent() != want.sent || h.Received() != want.received || h.InFlight() != 0 || h.Mean() != want.mean {
			t.Errorf("hop %d: ttl %d sent %d received %d in flight %d mean %v, want %+v", i, h.TTL, h.Sent(), h.Received(), h.InFlight(), h.Mean(), want)
		}
	}
	// Replies in attempt order: the first one shows NAT and the return path, the second
	// the quoted TTL. The destination's answer is no router's: its quoted and reply TTLs
	// hint at nothing.
	want := []hopstat.Hint{
		{Kind: hopstat.HintNAT, TTL: 2, NAT: "UDP checksum rewritten"},
		{Kind: hopstat.HintReturnPath, TTL: 2, ReturnHops: 5},
		{Kind: hopstat.HintQuotedTTL, TTL: 2, QuotedTTL: 2},
	}
	if got := hopstat.Hints(stats); !slices.Equal(got, want) {
		t.Errorf("hints\n got %+v\nwant %+v", got, want)
	}
	if got := hopstat.Hints(HopStats(res, nil)); slices.ContainsFunc(got, func(h hopstat.Hint) bool { return h.Kind == hopstat.HintReturnPath }) {
		t.Errorf("no return estimate, yet hints %+v", got)
	}
}
