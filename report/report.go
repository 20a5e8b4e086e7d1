// Package report turns trace results into what people and scripts read: a traceroute-style
// table, and the versioned JSON, JSON Lines and CSV formats documented in the README.
//
// Everything here is derived from trace.Result plus run metadata; no I/O but the writer.
package report

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// Schema names the JSON layout; bump it on any incompatible change.
const Schema = "turnpath.trace/v1"

// Run is one invocation of `turnpath trace`.
type Run struct {
	Schema       string    `json:"schema"`
	Version      string    `json:"turnpath_version"`
	Engine       string    `json:"engine"`
	EngineReason string    `json:"engine_reason"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	Options      Options   `json:"options"`
	Targets      []Target  `json:"targets"`
}

// Options echoes what the run was asked to do.
type Options struct {
	Proto    string  `json:"proto"`
	Port     uint16  `json:"port"`
	SPort    uint16  `json:"sport"`
	Payload  string  `json:"payload"`
	FirstTTL int     `json:"first_ttl"`
	MaxTTL   int     `json:"max_ttl"`
	Queries  int     `json:"queries"`
	WaitMS   float64 `json:"wait_ms"`
	Rate     float64 `json:"rate"`
}

// Target is one traced destination.
type Target struct {
	Name       string    `json:"name"`
	Address    string    `json:"address"`
	Source     string    `json:"source"`
	Reached    bool      `json:"reached"`
	How        string    `json:"how"` // how the destination answered, or why the trace ended
	DestTTL    int       `json:"dest_ttl,omitempty"`
	Sent       int       `json:"probes_sent"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	DurationMS float64   `json:"duration_ms"`
	Hops       []Hop     `json:"hops"`
	Notes      []string  `json:"notes,omitempty"`
}

// Hop is one TTL.
type Hop struct {
	TTL       int      `json:"ttl"`
	Addresses []string `json:"addresses"` // responders, most frequent first; empty = silent
	Names     []string `json:"names,omitempty"`
	Sent      int      `json:"sent"`
	Received  int      `json:"received"`
	LossPct   float64  `json:"loss_pct"`
	MinMS     *float64 `json:"rtt_min_ms,omitempty"`
	AvgMS     *float64 `json:"rtt_avg_ms,omitempty"`
	MaxMS     *float64 `json:"rtt_max_ms,omitempty"`
	Probes    []Probe  `json:"probes"`
	Notes     []string `json:"notes,omitempty"`
}

// Probe is one query of a hop.
type Probe struct {
	Attempt    int               `json:"attempt"`
	Answered   bool              `json:"answered"`
	From       string            `json:"from,omitempty"`
	RTTMS      float64           `json:"rtt_ms,omitempty"`
	KernelTS   bool              `json:"kernel_timestamps,omitempty"`
	Kind       string            `json:"kind,omitempty"` // time-exceeded, unreachable, echo-reply, stun, tcp
	ICMPType   uint8             `json:"icmp_type,omitempty"`
	ICMPCode   uint8             `json:"icmp_code,omitempty"`
	ReplyTTL   uint8             `json:"reply_ttl,omitempty"`
	ReturnHops int               `json:"return_hops,omitempty"` // estimated from the reply TTL
	QuotedTTL  uint8             `json:"quoted_ttl,omitempty"`
	NAT        string            `json:"nat,omitempty"`
	STUN       *trace.STUNInfo   `json:"stun,omitempty"`
	MPLS       []trace.MPLSLabel `json:"mpls,omitempty"`
}

// TargetInfo is what the caller knows about a target beyond the trace result.
type TargetInfo struct {
	Name   string
	Addr   netip.Addr
	Source netip.Addr
	Family int
}

// Namer returns the PTR name of an address ("" if none); nil disables names.
type Namer func(netip.Addr) string

// Build assembles one target's report.
func Build(info TargetInfo, res trace.Result, names Namer) Target {
	t := Target{
		Name: info.Name, Address: info.Addr.String(), Source: info.Source.String(),
		Reached: res.Reached, DestTTL: res.DestTTL, Sent: res.Sent,
		Started: res.Start, Finished: res.End, DurationMS: ms(res.End.Sub(res.Start)),
	}
	t.How = "no answer from the destination"
	for _, h := range res.Hops {
		hop := buildHop(h, info.Family, names)
		if h.TTL == res.DestTTL {
			for _, r := range h.Replies {
				if r != nil {
					t.How = How(r)
					break
				}
			}
		}
		t.Hops = append(t.Hops, hop)
	}
	flagInversions(t.Hops)
	return t
}

func buildHop(h trace.Hop, family int, names Namer) Hop {
	hop := Hop{TTL: h.TTL, Sent: len(h.Replies), Addresses: []string{}}
	count := map[netip.Addr]int{}
	var rtts []float64
	for a, r := range h.Replies {
		p := Probe{Attempt: a}
		if r != nil {
			p.Answered = true
			p.From = r.From.String()
			p.RTTMS = ms(r.RTT)
			p.KernelTS = r.Kernel
			p.Kind = kindName(r.Kind)
			p.ICMPType, p.ICMPCode = r.ICMPType, r.ICMPCode
			p.ReplyTTL = r.ReplyTTL
			p.ReturnHops = ReturnHops(r.ReplyTTL)
			p.QuotedTTL = r.QuotedTTL
			p.NAT = r.NAT
			p.STUN = r.STUN
			p.MPLS = r.MPLS
			count[r.From]++
			rtts = append(rtts, p.RTTMS)
			hop.Received++
		}
		hop.Probes = append(hop.Probes, p)
	}
	addrs := make([]netip.Addr, 0, len(count))
	for a := range count {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool {
		if count[addrs[i]] != count[addrs[j]] {
			return count[addrs[i]] > count[addrs[j]]
		}
		return addrs[i].Less(addrs[j])
	})
	for _, a := range addrs {
		hop.Addresses = append(hop.Addresses, a.String())
		if names != nil {
			hop.Names = append(hop.Names, names(a))
		}
	}
	if hop.Sent > 0 {
		hop.LossPct = 100 * float64(hop.Sent-hop.Received) / float64(hop.Sent)
	}
	if len(rtts) > 0 {
		mn, mx, sum := rtts[0], rtts[0], 0.0
		for _, v := range rtts {
			mn, mx, sum = min(mn, v), max(mx, v), sum+v
		}
		avg := sum / float64(len(rtts))
		hop.MinMS, hop.AvgMS, hop.MaxMS = &mn, &avg, &mx
	}
	hop.Notes = hopNotes(hop)
	return hop
}

// hopNotes are the hints a network engineer can act on.
func hopNotes(h Hop) []string {
	var notes []string
	if len(h.Addresses) > 1 {
		notes = append(notes, fmt.Sprintf("%d responders at this TTL (route change or per-packet load balancing)", len(h.Addresses)))
	}
	seenQ, seenNAT, seenRet := false, false, false
	for _, p := range h.Probes {
		if p.Kind == "time-exceeded" && p.QuotedTTL > 1 && !seenQ {
			notes = append(notes, fmt.Sprintf("quoted TTL %d (expected 1): a hop before does not decrement TTL, or the router quotes late", p.QuotedTTL))
			seenQ = true
		}
		if p.NAT != "" && !seenNAT {
			notes = append(notes, "NAT: "+p.NAT)
			seenNAT = true
		}
		if p.ReturnHops > 0 && p.Kind == "time-exceeded" && !seenRet && absInt(p.ReturnHops-h.TTL) >= 2 {
			notes = append(notes, fmt.Sprintf("return path ~%d hops vs %d forward: asymmetric route", p.ReturnHops, h.TTL))
			seenRet = true
		}
	}
	return notes
}

// flagInversions marks hops whose best RTT exceeds a later hop's: the extra time is the
// router's control plane generating ICMP, not the path.
func flagInversions(hops []Hop) {
	for i := range hops {
		if hops[i].MinMS == nil {
			continue
		}
		for j := i + 1; j < len(hops); j++ {
			if hops[j].MinMS != nil && *hops[i].MinMS > *hops[j].MinMS*1.5+0.5 {
				hops[i].Notes = append(hops[i].Notes, fmt.Sprintf("RTT inversion: slower than hop %d (ICMP generation delay on this router, not path delay)", hops[j].TTL))
				break
			}
		}
	}
}

// ReturnHops is the responder's distance on the way back, comparable with the forward TTL:
// the routers that decremented the reply (probe.ReturnHops) plus the responder itself.
func ReturnHops(replyTTL uint8) int {
	if replyTTL == 0 {
		return 0
	}
	return probe.ReturnHops(replyTTL) + 1
}

// How describes a destination's answer.
func How(r *trace.Reply) string {
	switch r.Kind {
	case trace.KindSTUN:
		if r.STUN != nil && r.STUN.Class == "error" {
			s := "STUN error response (relay reached)"
			switch r.STUN.ErrorCode {
			case 0:
			case 401:
				s = "STUN error 401 (relay reached: it asks for credentials)"
			default:
				s = fmt.Sprintf("STUN error %d (relay reached)", r.STUN.ErrorCode)
			}
			return s + fromNote(r)
		}
		return "STUN success" + fromNote(r)
	case trace.KindEcho:
		return "echo reply"
	case trace.KindTCP:
		return "TCP answer"
	case trace.KindUnreachable:
		return unreachName(r.ICMPType, r.ICMPCode)
	case trace.KindTimeExceeded:
		return "time exceeded"
	}
	return "unknown"
}

func fromNote(r *trace.Reply) string {
	return " from " + r.From.String()
}

func unreachName(typ, code uint8) string {
	if typ == 1 { // ICMPv6
		switch code {
		case 0:
			return "no route (!N)"
		case 1:
			return "administratively prohibited (!X)"
		case 3:
			return "address unreachable (!H)"
		case 4:
			return "port unreachable"
		}
		return fmt.Sprintf("unreachable code %d", code)
	}
	switch code {
	case 0:
		return "network unreachable (!N)"
	case 1:
		return "host unreachable (!H)"
	case 2:
		return "protocol unreachable (!P)"
	case 3:
		return "port unreachable"
	case 4:
		return "fragmentation needed (!F)"
	case 9, 10, 13:
		return "administratively prohibited (!X)"
	}
	return fmt.Sprintf("unreachable code %d", code)
}

func kindName(k trace.Kind) string {
	switch k {
	case trace.KindTimeExceeded:
		return "time-exceeded"
	case trace.KindUnreachable:
		return "unreachable"
	case trace.KindEcho:
		return "echo-reply"
	case trace.KindSTUN:
		return "stun"
	case trace.KindTCP:
		return "tcp"
	}
	return "unknown"
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func absInt(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
