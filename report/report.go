// Package report only formats: a trace (trace.Result, with statistics and hints from
// hopstat) as a traceroute-style table or the versioned JSON, JSON Lines and CSV formats
// documented in the README; a multipath run (mda.Graph, paths from mda.InferPaths) as
// text, JSON, dot or SVG; a monitor run (monitor.Result) as an mtr-style table or JSON.
// No I/O but the writer.
package report

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/hopstat"
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
	// ASN counts the AS lookups (--asn; absent without): failures are addresses shown AS?.
	ASN *asn.Stats `json:"asn_lookups,omitempty"`
	// Scan is what a scan (trace --scan) found over all its targets.
	Scan *ScanSummary `json:"scan,omitempty"`
}

// ScanSummary is the union view of a scan: every interface and link its targets' probes
// found, the probes it took, and what it learnt of each router's ICMP budget.
type ScanSummary struct {
	// Auto: the scan was chosen for the list's length, not asked for with --scan.
	Auto       bool            `json:"auto,omitempty"`
	Probes     int             `json:"probes"`
	Batches    int             `json:"batches"`
	DurationMS float64         `json:"duration_ms"`
	Interfaces []string        `json:"interfaces"`
	Links      []ScanLink      `json:"links"`
	Responders []ScanResponder `json:"responders"`
}

// ScanLink is a link between two interfaces seen on one flow at consecutive TTLs ("*":
// a silent router).
type ScanLink struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// ScanResponder is a router's ICMP budget as the scan learnt it: rate-limited routers
// with their estimated burst and answers per second.
type ScanResponder struct {
	Addr        string  `json:"addr"`
	Answers     int     `json:"answers"`
	RateLimited bool    `json:"rate_limited"`
	Burst       float64 `json:"burst,omitempty"`
	RatePerSec  float64 `json:"rate_per_s,omitempty"`
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
	Size     int     `json:"size,omitempty"` // --size: probe IP packet length
	PMTU     bool    `json:"pmtu,omitempty"` // --pmtu: path MTU discovery
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
	// PathMTU (trace --pmtu) is the size of the probes that reached the destination, or
	// how far down discovery got; PathMTUHop the TTL of the router in front of the
	// narrowest link (0: none asked for less, or it never answered at its own TTL) and
	// PathMTUFrom its address.
	PathMTU     int    `json:"path_mtu,omitempty"`
	PathMTUHop  int    `json:"path_mtu_hop,omitempty"`
	PathMTUFrom string `json:"path_mtu_from,omitempty"`
	// ASPath is the ASes the path crosses, in order (--asn): private, unknown and
	// unanswered hops left out, repeats collapsed.
	ASPath []string `json:"as_path,omitempty"`
}

// Hop is one TTL.
type Hop struct {
	TTL       int        `json:"ttl"`
	Addresses []string   `json:"addresses"` // responders, most frequent first; empty = silent
	Names     []string   `json:"names,omitempty"`
	AS        []asn.Info `json:"as,omitempty"` // per address (--asn)
	Sent      int        `json:"sent"`
	Received  int        `json:"received"`
	LossPct   float64    `json:"loss_pct"`
	MinMS     *float64   `json:"rtt_min_ms,omitempty"`
	AvgMS     *float64   `json:"rtt_avg_ms,omitempty"`
	MaxMS     *float64   `json:"rtt_max_ms,omitempty"`
	Probes    []Probe    `json:"probes"`
	Notes     []string   `json:"notes,omitempty"`
	// Status is answered (a probe of this target got an answer), lost (none did), or, in
	// a scan (trace --scan), inferred (Candidates, found by the probes of InferredFrom),
	// silent (a router that never answers) or rate-limited (its router answers, its
	// budget was spent).
	Status       string   `json:"status"`
	Candidates   []string `json:"candidates,omitempty"`
	InferredFrom []string `json:"inferred_from,omitempty"`
	// MTU is the next-hop MTU this hop's router reported (Packet Too Big): the link
	// after it is the path's narrowest (trace --pmtu).
	MTU int `json:"mtu,omitempty"`
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
	Interfaces []trace.IfaceInfo `json:"interfaces,omitempty"` // RFC 5837
}

// TargetInfo is what the caller knows about a target beyond the trace result.
type TargetInfo struct {
	Name   string
	Addr   netip.Addr
	Source netip.Addr
	Family int
	// AS says who holds a responder's address (nil: no AS lookups).
	AS ASOf
}

// Namer returns the PTR name of an address ("" if none); nil disables names.
type Namer func(netip.Addr) string

// Build assembles one target's report. The statistics and hints are package hopstat's
// (trace.HopStats): this only puts them into words.
func Build(info TargetInfo, res trace.Result, names Namer) Target {
	t := Target{
		Name: info.Name, Address: info.Addr.String(), Source: info.Source.String(),
		Reached: res.Reached, DestTTL: res.DestTTL, Sent: res.Sent,
		Started: res.Start, Finished: res.End, DurationMS: ms(res.End.Sub(res.Start)),
	}
	t.How = "no answer from the destination"
	stats := trace.HopStats(res, ReturnHops)
	notes := map[int][]string{}
	for _, h := range hopstat.Hints(stats) {
		notes[h.TTL] = append(notes[h.TTL], hintNote(h))
	}
	for i, h := range res.Hops {
		hop := buildHop(h, &stats[i], names, info.AS)
		hop.Notes = notes[h.TTL]
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
	pathMTU(&t, res)
	if info.AS != nil {
		t.ASPath = ASPath(t.Hops)
	}
	return t
}

// pathMTU puts path MTU discovery's result on the target and on the hop in front of the
// narrowest link.
func pathMTU(t *Target, res trace.Result) {
	t.PathMTU = res.PathMTU
	if res.TooBig == nil {
		return
	}
	from := res.TooBig.From.String()
	t.PathMTUFrom = from
	for i := range t.Hops {
		if slices.Contains(t.Hops[i].Addresses, from) {
			h := &t.Hops[i]
			h.MTU = int(res.TooBig.MTU)
			if h.MTU == 0 { // a router older than RFC 1191: the size that got through
				h.MTU = res.PathMTU
			}
			h.Notes = append(h.Notes, fmt.Sprintf("packet too big for the next link: MTU %d", h.MTU))
			t.PathMTUHop = h.TTL
			return
		}
	}
}

func buildHop(h trace.Hop, st *hopstat.Hop, names Namer, as ASOf) Hop {
	hop := Hop{TTL: h.TTL, Sent: st.Sent(), Received: st.Received(), LossPct: st.Loss(), Addresses: []string{}}
	for a, r := range h.Replies {
		p := Probe{Attempt: a}
		if r != nil {
			p.Answered = true
			p.From = r.From.String()
			p.RTTMS = ms(r.RTT)
			p.KernelTS = r.Kernel
			p.Kind = kindString(r.Kind)
			p.ICMPType, p.ICMPCode = r.ICMPType, r.ICMPCode
			p.ReplyTTL = r.ReplyTTL
			p.ReturnHops = ReturnHops(r.ReplyTTL)
			p.QuotedTTL = r.QuotedTTL
			p.NAT = r.NAT
			p.STUN = r.STUN
			p.MPLS = r.MPLS
			p.Interfaces = r.Interfaces
		}
		hop.Probes = append(hop.Probes, p)
	}
	for _, r := range st.Responders() {
		hop.Addresses = append(hop.Addresses, r.Addr.String())
		if names != nil {
			hop.Names = append(hop.Names, names(r.Addr))
		}
		if as != nil {
			hop.AS = append(hop.AS, as(r.Addr))
		}
	}
	if st.Received() > 0 {
		mn, avg, mx := st.Best(), st.Mean(), st.Worst()
		hop.MinMS, hop.AvgMS, hop.MaxMS = &mn, &avg, &mx
	}
	hop.Status = h.Status
	switch {
	case st.Received() > 0:
		hop.Status = "answered"
	case hop.Status == "":
		hop.Status = "lost"
	}
	for _, a := range h.From {
		hop.InferredFrom = append(hop.InferredFrom, a.String())
	}
	if hop.Status == "inferred" {
		for _, a := range h.Candidates {
			hop.Candidates = append(hop.Candidates, a.String())
		}
		if len(h.Candidates) == 1 {
			// The one it can be: named and looked up like an answering hop.
			a := h.Candidates[0]
			hop.Addresses = append(hop.Addresses, a.String())
			if names != nil {
				hop.Names = append(hop.Names, names(a))
			}
			if as != nil {
				hop.AS = append(hop.AS, as(a))
			}
		}
	}
	return hop
}

// statusNote says in the text report what an unanswered hop of a scan is.
func statusNote(h Hop) string {
	switch h.Status {
	case "inferred":
		return "inferred from the probes of " + strings.Join(h.InferredFrom, ", ") + inferredBranch(h)
	case "silent":
		return "silent: this router never answers (it forwards)"
	case "rate-limited":
		return "rate-limited: its router answered other probes; its ICMP budget was spent"
	}
	return ""
}

func inferredBranch(h Hop) string {
	if len(h.Candidates) > 1 {
		return " (one of these: which branch this flow takes was not measured)"
	}
	return ""
}

// hintNote says a hint in the words of the trace output.
func hintNote(h hopstat.Hint) string {
	switch h.Kind {
	case hopstat.HintResponders:
		return fmt.Sprintf("%d responders at this TTL (route change or per-packet load balancing)", h.Responders)
	case hopstat.HintQuotedTTL:
		return fmt.Sprintf("quoted TTL %d (expected 1): a hop before does not decrement TTL, or the router quotes late", h.QuotedTTL)
	case hopstat.HintNAT:
		return "NAT: " + h.NAT
	case hopstat.HintReturnPath:
		return fmt.Sprintf("return path ~%d hops vs %d forward: asymmetric route", h.ReturnHops, h.TTL)
	case hopstat.HintRTTInversion:
		return fmt.Sprintf("RTT inversion: slower than hop %d (ICMP generation delay on this router, not path delay)", h.Faster)
	}
	return "hint: " + h.Kind.String()
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
	case probe.KindSTUN:
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
	case probe.KindEchoReply:
		return "echo reply"
	case probe.KindTCP:
		return "TCP answer"
	case probe.KindUnreachable:
		return unreachName(r.ICMPType, r.ICMPCode)
	case probe.KindTimeExceeded:
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

// kindString is a reply kind as the outputs name it (probe.Kind's names: one vocabulary).
func kindString(k probe.Kind) string { return k.String() }

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
