package report

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/mda"
)

// MultipathSchema names the JSON layout of `turnpath multipath`; bump it on any
// incompatible change (DESIGN.md, "Multipath JSON").
const MultipathSchema = "turnpath.multipath/v1"

// MultipathFormats are the output formats of `turnpath multipath`.
var MultipathFormats = []string{"text", "json", "dot", "svg"}

// MultipathRun is one invocation of `turnpath multipath`. Its tags are the head of the
// JSON document (MultipathDoc).
type MultipathRun struct {
	Schema       string            `json:"schema"` // MultipathSchema; "" means it
	Version      string            `json:"turnpath_version"`
	Engine       string            `json:"engine"`
	EngineReason string            `json:"engine_reason"`
	Started      time.Time         `json:"started"`
	Finished     time.Time         `json:"finished"`
	Options      MultipathOptions  `json:"options"`
	Targets      []MultipathTarget `json:"-"`
	// ASN counts the AS lookups (--asn; absent without): failures are nodes shown AS?.
	ASN *asn.Stats `json:"asn_lookups,omitempty"`
}

// MultipathOptions echoes what the run was asked to do.
type MultipathOptions struct {
	Proto      string  `json:"proto"`
	Port       uint16  `json:"port"`
	Payload    string  `json:"payload,omitempty"`
	FlowBase   uint16  `json:"flow_base"`       // first source port: flow i uses FlowBase+i
	Confidence float64 `json:"confidence"`      // percent
	Mode       string  `json:"mode"`            // "mda-lite" or "mda"
	Level      string  `json:"level,omitempty"` // "interface" or "router"
	FirstTTL   int     `json:"first_ttl,omitempty"`
	MaxTTL     int     `json:"max_ttl,omitempty"`
}

// MultipathTarget is one explored destination.
type MultipathTarget struct {
	Name   string
	Addr   netip.Addr
	Source netip.Addr
	Family int // 4 or 6
	Graph  *mda.Graph
	// Names gives PTR names of interfaces; nil: none.
	Names Namer
	// AS says who holds an interface's address; nil: no AS lookups.
	AS ASOf
	// Notes are printed under the target (say, why Graph is nil: interrupted).
	Notes []string
}

// WriteMultipath writes run in one of MultipathFormats.
func WriteMultipath(w io.Writer, format string, run *MultipathRun) error {
	switch format {
	case "text":
		return WriteMultipathText(w, run)
	case "json":
		return WriteMultipathJSON(w, run)
	case "dot":
		return WriteMultipathDOT(w, run)
	case "svg":
		return WriteMultipathSVG(w, run)
	}
	return fmt.Errorf("unknown format %q (%s)", format, strings.Join(MultipathFormats, ", "))
}

// mpView is one target's graph with the lookups the writers share; the paths are
// package mda's (InferPaths).
type mpView struct {
	t        *MultipathTarget
	g        *mda.Graph
	node     map[string]*mda.Node
	succ     map[string][]string
	role     map[string]mda.Role
	paths    *mda.Paths
	destTTLs []int
}

func newView(t *MultipathTarget) *mpView {
	g := t.Graph
	v := &mpView{t: t, g: g, node: map[string]*mda.Node{}, succ: g.NextHops(), role: g.Roles(), paths: mda.InferPaths(g)}
	for i := range g.Nodes {
		v.node[g.Nodes[i].ID] = &g.Nodes[i]
	}
	if n, ok := v.node[g.Dest]; ok {
		v.destTTLs = n.TTLs
	}
	return v
}

// label is how text names a node: its address (and PTR name), or "*" for a silent hop.
func (v *mpView) label(id string) string {
	n, ok := v.node[id]
	if !ok || !n.Addr.IsValid() {
		return "*"
	}
	s := n.Addr.String()
	if name := v.name(n); name != "" {
		s += " (" + name + ")"
	}
	if in, ok := v.asOf(n); ok {
		s += " [" + in.Label() + "]"
	}
	return s
}

func (v *mpView) short(id string) string {
	if n, ok := v.node[id]; ok && n.Addr.IsValid() {
		return n.Addr.String()
	}
	return "*"
}

func (v *mpView) name(n *mda.Node) string {
	if v.t.Names == nil || !n.Addr.IsValid() {
		return ""
	}
	return v.t.Names(n.Addr)
}

// col is the TTL a node is drawn at: its last one, so that links from the shorter of
// unequal branches skip TTLs instead of running backwards. 0: no TTL (not drawn).
func col(n *mda.Node) int {
	if len(n.TTLs) == 0 {
		return 0
	}
	return n.TTLs[len(n.TTLs)-1]
}

func (v *mpView) unequalCount() int {
	c := 0
	for _, d := range v.g.Diamonds {
		if d.Unequal() {
			c++
		}
	}
	return c
}

// summary is the one-line outcome of a target's exploration.
func (v *mpView) summary() string {
	s := strings.Join(v.summaryParts(), "; ")
	if path := v.asPath(); len(path) > 0 {
		s += "; AS path " + strings.Join(path, " ")
	}
	return s
}

// summaryParts: where the paths end, what was found, what it cost.
func (v *mpView) summaryParts() []string {
	g := v.g
	reached := "not reached"
	if g.Reached {
		reached = fmt.Sprintf("reached %s in %s hops", v.short(g.Dest), ttlList(v.destTTLs, " or "))
	}
	found := fmt.Sprintf("%s, %s, %s", plural(len(g.Flows), "flow"), plural(v.paths.Complete, "path"), plural(len(g.Diamonds), "diamond"))
	if u := v.unequalCount(); u > 0 {
		found += fmt.Sprintf(" (%d with unequal branches)", u)
	}
	if len(g.Routers) > 0 {
		found += fmt.Sprintf(", %s answering from several interfaces", plural(len(g.Routers), "router"))
	}
	cost := fmt.Sprintf("%d probes sent, %d answered, %s, %s", g.Sent, g.Answered, plural(g.Rounds, "round"), fmtDuration(g.Duration))
	return []string{reached, found, cost}
}

// truncation explains Graph.Truncated, "" if the stopping rule was met.
func truncation(g *mda.Graph) string {
	switch g.Truncated {
	case "":
		return ""
	case "max-probes":
		return "stopped at the probe budget (max-probes) before the stopping rule was met: branches may be missing"
	case "max-flows":
		return "stopped after using every allowed flow (max-flows) before the stopping rule was met: branches may be missing"
	case "max-ttl":
		return "stopped at the last TTL (max-ttl) with paths still going on"
	}
	return "stopped early: " + g.Truncated
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func fmtDuration(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.0f ms", ms(d))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// ttlList writes TTLs as "6", "6 or 7", "3, 5 or 8"; contiguous runs of 3+ as "1-8".
func ttlList(ttls []int, or string) string {
	var parts []string
	for i := 0; i < len(ttls); {
		j := i
		for j+1 < len(ttls) && ttls[j+1] == ttls[j]+1 {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, fmt.Sprintf("%d-%d", ttls[i], ttls[j]))
			i = j + 1
			continue
		}
		parts = append(parts, strconv.Itoa(ttls[i]))
		i++
	}
	if len(parts) < 2 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + or + parts[len(parts)-1]
}

func targetTitle(t *MultipathTarget) string {
	name := t.Addr.String()
	if t.Name != "" && t.Name != name {
		name = fmt.Sprintf("%s (%s)", t.Name, name)
	}
	return name
}

// nodeNotes are the hints on one interface at one TTL.
func (v *mpView) nodeNotes(n *mda.Node, ttl int) []string {
	var notes []string
	if !n.Addr.IsValid() {
		after := "the prober"
		if n.After != "" {
			after = n.After
		}
		notes = append(notes, fmt.Sprintf("silent (%s after %s)", ordinal(n.Depth), after))
	}
	if n.Dest {
		notes = append(notes, "destination")
	}
	if n.Unreachable {
		notes = append(notes, "unreachable: flows end here")
	}
	if k := len(v.succ[n.ID]); k > 1 {
		notes = append(notes, fmt.Sprintf("load balancer: %d next hops", k))
	}
	if len(n.TTLs) > 1 {
		var others []int
		for _, t := range n.TTLs {
			if t != ttl {
				others = append(others, t)
			}
		}
		notes = append(notes, "also at TTL "+ttlList(others, " and ")+" (unequal branches)")
	}
	if n.NAT != "" {
		notes = append(notes, "NAT: "+n.NAT)
	}
	if n.Shared {
		notes = append(notes, "known from an earlier target")
	}
	if n.Router != "" {
		notes = append(notes, "router "+n.Router+" (answers from "+plural(v.routerSize(n.Router), "interface")+")")
	}
	if len(n.Interfaces) > 1 {
		var others []string
		for _, a := range n.Interfaces {
			if a != n.ID {
				others = append(others, a)
			}
		}
		notes = append(notes, "router: also answers from "+strings.Join(others, ", "))
	}
	return notes
}

// routerSize is how many interfaces of the graph router id answered from.
func (v *mpView) routerSize(id string) int {
	for _, r := range v.g.Routers {
		if r.ID == id {
			return len(r.Interfaces)
		}
	}
	return 1
}

func ordinal(n int) string {
	switch n {
	case 1:
		return "1st"
	case 2:
		return "2nd"
	case 3:
		return "3rd"
	}
	return strconv.Itoa(n) + "th"
}

// Colours shared by the dot and SVG pictures.
const (
	colNode     = "#ffffff"
	colInside   = "#fff3bf" // inside a diamond
	colEnd      = "#ffd8a8" // where a diamond opens or closes
	colEndLine  = "#e8590c"
	colDest     = "#b2f2bb"
	colDestLine = "#2b8a3e"
	colSilent   = "#e9ecef"
	colLine     = "#495057"
	colShared   = "#adb5bd"
	colSource   = "#d0ebff"
)

// boxLines are the lines of a node's box: address, PTR name, RTT, flows and TTLs.
func (v *mpView) boxLines(n *mda.Node) []string {
	var lines []string
	if n.Addr.IsValid() {
		lines = append(lines, n.Addr.String())
		if name := v.name(n); name != "" {
			lines = append(lines, name)
		}
		if in, ok := v.asOf(n); ok {
			lines = append(lines, asShort(in))
		}
	} else {
		lines = append(lines, "* silent")
	}
	if len(n.Interfaces) > 1 {
		lines = append(lines, fmt.Sprintf("router: %d interfaces", len(n.Interfaces)))
	}
	var stats []string
	if n.RTTMax > 0 {
		stats = append(stats, fmt.Sprintf("%.2f ms", ms(n.RTTAvg)))
	}
	stats = append(stats, plural(n.Flows, "flow"))
	if len(n.TTLs) > 1 {
		stats = append(stats, "ttl "+ttlList(n.TTLs, ","))
	}
	if n.NAT != "" {
		stats = append(stats, "NAT")
	}
	return append(lines, strings.Join(stats, " · "))
}

// edgeWidth grows with the share of the graph's flows on a link: 1 to 3.
func edgeWidth(flows int, g *mda.Graph) float64 {
	most := 1
	for _, l := range g.Links {
		most = max(most, l.Flows)
	}
	return 1 + 2*float64(flows)/float64(most)
}
