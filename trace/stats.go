package trace

import (
	"github.com/turnpath/turnpath/hopstat"
	"github.com/turnpath/turnpath/probe"
)

// HopStats fills the statistics of each hop of res, in the order of res.Hops: the replies
// in attempt order, an unanswered attempt lost (a Result is final: nothing is in
// flight). returnHops estimates a responder's distance on the way back from the TTL of
// its reply, 0 when it cannot; trace knows nothing of the initial TTLs routers use, so
// the caller says (nil: no estimate, no return-path hint).
func HopStats(res Result, returnHops func(replyTTL uint8) int) []hopstat.Hop {
	out := make([]hopstat.Hop, len(res.Hops))
	for i, h := range res.Hops {
		out[i].TTL = h.TTL
		for _, r := range h.Replies {
			if r == nil {
				out[i].Lost()
				continue
			}
			s := hopstat.Sample{From: r.From, RTT: r.RTT, TimeExceeded: r.Kind == probe.KindTimeExceeded, QuotedTTL: r.QuotedTTL, NAT: r.NAT}
			if returnHops != nil {
				s.ReturnHops = returnHops(r.ReplyTTL)
			}
			out[i].Add(s)
		}
	}
	return out
}
