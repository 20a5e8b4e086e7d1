package report

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/trace"
)

// What the outputs say about who holds a hop (its AS, package asn) and what the router
// added to its ICMP error (RFC 4950 MPLS labels, RFC 5837 interfaces).

// ASOf says who holds an address (an asn.Resolver's answers).
type ASOf func(netip.Addr) asn.Info

// ASPath is the sequence of ASes of hops, each hop by its most frequent responder:
// private addresses and ASNs, unknown (AS0) and unanswered (AS?) hops left out, an AS
// repeated by consecutive hops once.
func ASPath(hops []Hop) []string {
	var out []string
	for _, h := range hops {
		if len(h.AS) == 0 {
			continue
		}
		out = appendAS(out, h.AS[0])
	}
	return out
}

// appendAS adds in to an AS path unless it is private, unknown or the last one.
func appendAS(path []string, in asn.Info) []string {
	if !in.Found() || asn.PrivateASN(in.ASN) {
		return path
	}
	s := in.String()
	if len(path) > 0 && path[len(path)-1] == s {
		return path
	}
	return append(path, s)
}

// asOfAddr is the AS of one of a hop's responders (ok false without lookups).
func asOfAddr(h Hop, addr string) (asn.Info, bool) {
	for i, a := range h.Addresses {
		if a == addr && i < len(h.AS) {
			return h.AS[i], true
		}
	}
	return asn.Info{}, false
}

// mplsString is a label stack as "label/tc/s/ttl" entries, top first, split by ";".
func mplsString(ls []trace.MPLSLabel) string { return mplsJoin(ls, "%d/%d/%d/%d", ";") }

// mplsText is a label stack as text shows it under a hop.
func mplsText(ls []trace.MPLSLabel) string {
	return "MPLS label " + mplsJoin(ls, "%d (TC %d, S %d, TTL %d)", ", ")
}

// mplsJoin formats each entry (label, TC, S as 0/1, TTL) and joins them.
func mplsJoin(ls []trace.MPLSLabel, format, sep string) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		s := 0
		if l.S {
			s = 1
		}
		parts[i] = fmt.Sprintf(format, l.Label, l.TC, s, l.TTL)
	}
	return strings.Join(parts, sep)
}

// ifaceString is an RFC 5837 object as "role:ifindex:name:addr:mtu" (absent parts
// empty); several split by ";".
func ifaceString(ifs []trace.IfaceInfo) string {
	parts := make([]string, len(ifs))
	for i, f := range ifs {
		idx, mtu, addr := "", "", ""
		if f.IfIndex != 0 {
			idx = strconv.FormatUint(uint64(f.IfIndex), 10)
		}
		if f.MTU != 0 {
			mtu = strconv.FormatUint(uint64(f.MTU), 10)
		}
		if f.Addr.IsValid() {
			addr = f.Addr.String()
		}
		parts[i] = strings.Join([]string{f.Role, idx, f.Name, addr, mtu}, ":")
	}
	return strings.Join(parts, ";")
}

// ifaceText is an RFC 5837 object as text shows it under a hop.
func ifaceText(f trace.IfaceInfo) string {
	var parts []string
	if f.IfIndex != 0 {
		parts = append(parts, fmt.Sprintf("ifIndex %d", f.IfIndex))
	}
	if f.Name != "" {
		parts = append(parts, "name "+f.Name)
	}
	if f.Addr.IsValid() {
		parts = append(parts, "address "+f.Addr.String())
	}
	if f.MTU != 0 {
		parts = append(parts, fmt.Sprintf("MTU %d", f.MTU))
	}
	return fmt.Sprintf("%s interface: %s", f.Role, strings.Join(parts, ", "))
}

// extLines are the lines text prints under a hop for its probes' extensions, each once.
func extLines(h Hop) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, p := range h.Probes {
		if len(p.MPLS) > 0 {
			add(p.From + ": " + mplsText(p.MPLS))
		}
		for _, f := range p.Interfaces {
			add(p.From + ": " + ifaceText(f))
		}
	}
	return out
}

// asOf is a node's AS (ok false for a silent hop or without lookups).
func (v *mpView) asOf(n *mda.Node) (asn.Info, bool) {
	if v.t.AS == nil || n == nil || !n.Addr.IsValid() {
		return asn.Info{}, false
	}
	return v.t.AS(n.Addr), true
}

// asPath is the AS path of the longest complete path (the one text and the summary
// show).
func (v *mpView) asPath() []string {
	if v.t.AS == nil || len(v.paths.List) == 0 {
		return nil
	}
	var out []string
	for _, h := range v.longestComplete().Hops {
		if in, ok := v.asOf(v.node[h.Node]); ok {
			out = appendAS(out, in)
		}
	}
	return out
}

// asPalette colours boxes by AS, in the order ASes appear (light, so text stays
// readable; private and unknown stay white).
var asPalette = []string{"#d3f9d8", "#ffe3e3", "#e5dbff", "#c5f6fa", "#ffe8cc", "#f3d9fa", "#e9fac8", "#dbe4ff", "#fff3bf", "#e6fcf5"}

// asShort is an AS as a box shows it: the number and the name's first part (Team
// Cymru's "NAME - description, CC" without the description), at most 28 characters;
// the tooltip has it all.
func asShort(in asn.Info) string {
	s := in.Label()
	if i := strings.Index(s, " - "); i > 0 {
		s = s[:i]
	}
	if r := []rune(s); len(r) > 28 {
		s = string(r[:27]) + "…"
	}
	return s
}

// colAS is the colour of an AS boundary: a link between two different known ASes.
const colAS = "#c2255c"

// asColour is the fill of a box in AS colouring ("" for none).
func (p *svgPanel) asColour(id string) string {
	in, ok := p.v.asOf(p.v.node[id])
	if !ok || !in.Found() {
		return ""
	}
	if p.asColours == nil {
		p.asColours = map[uint32]string{}
	}
	c, ok := p.asColours[in.ASN]
	if !ok {
		c = asPalette[len(p.asColours)%len(asPalette)]
		p.asColours[in.ASN] = c
	}
	return c
}

// asBoundary reports whether a link joins two different known ASes.
func (p *svgPanel) asBoundary(e *svgEdge) bool {
	if e.from == nil || e.to == nil {
		return false
	}
	a, ok1 := p.v.asOf(p.v.node[e.from.id])
	b, ok2 := p.v.asOf(p.v.node[e.to.id])
	return ok1 && ok2 && a.Found() && b.Found() && a.ASN != b.ASN
}
