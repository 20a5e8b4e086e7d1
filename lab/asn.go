package lab

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// The lab's networks: every node belongs to an autonomous system with a documentation
// AS number (RFC 5398: 64496-64511), so AS lookups have ground truth. A link's prefixes
// are registered to the AS of its far side (the node a probe reaches over it, whose
// Time Exceeded comes from that link's address), a target group's prefixes to the AS of
// its node. The whois service (whois.go) and dnsmasq's Team Cymru TXT records serve this
// data; `turnpath lab truth` prints it.

// AS is one autonomous system of the lab.
type AS struct {
	Number uint32 `json:"asn"`
	Name   string `json:"name"`  // the as-name / Cymru name
	Descr  string `json:"descr"` // the route objects' descr:
}

// String is "AS64496".
func (a AS) String() string { return fmt.Sprintf("AS%d", a.Number) }

// CymruName is the name as Team Cymru writes it: "NAME - descr, CC".
func (a AS) CymruName() string { return fmt.Sprintf("%s - %s, %s", a.Name, a.Descr, LabCC) }

// LabCC is the country code of the lab's networks (ZZ: unknown, user-assigned).
const LabCC = "ZZ"

// labASes maps the default topology's nodes to their AS; other nodes are in asOther.
var labASes = map[string]AS{}

var (
	asAccess   = AS{64496, "TURNPATH-ACCESS", "turnpath lab access network"}
	asCore     = AS{64497, "TURNPATH-CORE", "turnpath lab core"}
	asTransitA = AS{64498, "TURNPATH-TRANSIT-A", "turnpath lab transit A"}
	asTransitB = AS{64499, "TURNPATH-TRANSIT-B", "turnpath lab transit B"}
	asRelay    = AS{64500, "TURNPATH-RELAY", "turnpath lab relay network"}
	asBound    = AS{64501, "TURNPATH-RELAY-BOUND", "turnpath lab bound relays"}
	asOther    = AS{64511, "TURNPATH-LAB", "turnpath lab"}
)

func init() {
	for as, nodes := range map[AS][]string{
		asAccess:   {"client", "r1", "dns"},
		asCore:     {"r2"},
		asTransitA: {"r3a", "r3b", "r3c", "r4"},
		asTransitB: {"r5a", "r5b", "r5c", "r6"},
		asRelay:    {"r7", "r8", "t1"},
		asBound:    {"r9", "t2"},
	} {
		for _, n := range nodes {
			labASes[n] = as
		}
	}
}

// ASOf is the AS of a node.
func (t *Topology) ASOf(node string) AS {
	if as, ok := labASes[node]; ok {
		return as
	}
	return asOther
}

// RouteObject is one registered prefix: an RPSL route or route6 object.
type RouteObject struct {
	Prefix netip.Prefix `json:"prefix"`
	Origin AS           `json:"origin"`
	Node   string       `json:"node"` // whose network it is
}

// RPSL is the object as an IRR holds it.
func (r RouteObject) RPSL() string {
	kind := "route"
	if r.Prefix.Addr().Is6() {
		kind = "route6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%s%s\n", kind, strings.Repeat(" ", 8-len(kind)), r.Prefix)
	fmt.Fprintf(&b, "descr:  %s\n", r.Origin.Descr)
	fmt.Fprintf(&b, "origin: %s\n", r.Origin)
	b.WriteString("mnt-by: MAINT-TURNPATH-LAB\n")
	b.WriteString("source: TURNPATH-LAB\n")
	return b.String()
}

// RouteObjects are the lab's registered prefixes: each link's (to its far side's AS) and
// each target group's.
func (t *Topology) RouteObjects() []RouteObject {
	var out []RouteObject
	for _, l := range t.Links {
		a4, a6 := linkAddrs(l.N, 0)
		for _, p := range []netip.Prefix{a4, a6} {
			out = append(out, RouteObject{Prefix: p.Masked(), Origin: t.ASOf(l.Down), Node: l.Down})
		}
	}
	for _, g := range t.Groups {
		for _, p := range []netip.Prefix{g.Prefix4, g.Prefix6} {
			out = append(out, RouteObject{Prefix: p.Masked(), Origin: t.ASOf(g.Node), Node: g.Node})
		}
	}
	return out
}

// OriginOf is the most specific route object holding a.
func (t *Topology) OriginOf(a netip.Addr) (RouteObject, bool) {
	return mostSpecific(t.RouteObjects(), a)
}

func mostSpecific(routes []RouteObject, a netip.Addr) (RouteObject, bool) {
	best, ok := RouteObject{}, false
	for _, r := range routes {
		if r.Prefix.Contains(a.Unmap()) && (!ok || r.Prefix.Bits() > best.Prefix.Bits()) {
			best, ok = r, true
		}
	}
	return best, ok
}

// ASes are the lab's ASes in number order.
func (t *Topology) ASes() []AS {
	var out []AS
	for _, n := range t.Nodes {
		if as := t.ASOf(n.Name); !slices.Contains(out, as) {
			out = append(out, as)
		}
	}
	slices.SortFunc(out, func(a, b AS) int { return int(a.Number) - int(b.Number) })
	return out
}

// LookupAddrs are the addresses the lab's AS data answers for by name (Team Cymru's DNS
// has one TXT record per address): every interface and every target.
func (t *Topology) LookupAddrs() []netip.Addr {
	var out []netip.Addr
	for _, i := range t.AllIfaces() {
		out = append(out, i.Addr4.Addr(), i.Addr6.Addr())
	}
	for _, g := range t.Groups {
		out = append(out, g.Targets()...)
	}
	return out
}

// cymruOriginName is the Team Cymru origin TXT name of a: its octets, or for IPv6 its
// 32 nibbles, reversed. (Written apart from package asn's, which the tests check it
// against.)
func cymruOriginName(a netip.Addr) string {
	a = a.Unmap()
	if a.Is4() {
		v := a.As4()
		return fmt.Sprintf("%d.%d.%d.%d.origin.asn.cymru.com", v[3], v[2], v[1], v[0])
	}
	hex := []byte(strings.ReplaceAll(a.StringExpanded(), ":", ""))
	slices.Reverse(hex)
	parts := strings.Split(string(hex), "")
	return strings.Join(parts, ".") + ".origin6.asn.cymru.com"
}

// LabAllocated is the allocation date the lab's Cymru records show.
const LabAllocated = "2026-01-01"

// cymruTXT are dnsmasq txt-record lines in Team Cymru's format: the origin of every
// lookup address and the name of every AS.
func cymruTXT(t *Topology) []string {
	var out []string
	routes := t.RouteObjects()
	for _, a := range t.LookupAddrs() {
		r, ok := mostSpecific(routes, a)
		if !ok {
			continue
		}
		out = append(out, fmt.Sprintf(`txt-record=%s,"%d | %s | %s | other | %s"`, cymruOriginName(a), r.Origin.Number, r.Prefix, LabCC, LabAllocated))
	}
	for _, as := range t.ASes() {
		out = append(out, fmt.Sprintf(`txt-record=AS%d.asn.cymru.com,"%d | %s | other | %s | %s"`, as.Number, as.Number, LabCC, LabAllocated, as.CymruName()))
	}
	return out
}

// WriteASText lists the registered prefixes with their origin AS and name.
func (t *Topology) WriteASText(w io.Writer) {
	fmt.Fprintln(w, "ASes (route objects of the lab whois service and dnsmasq's Team Cymru TXT records):")
	for _, r := range t.RouteObjects() {
		fmt.Fprintf(w, "  %-22s %-8s %-20s %s\n", r.Prefix, r.Origin, r.Origin.Name, r.Node)
	}
}
