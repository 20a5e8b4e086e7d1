package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

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
}

// MultipathOptions echoes what the run was asked to do.
type MultipathOptions struct {
	Proto      string  `json:"proto"`
	Port       uint16  `json:"port"`
	Payload    string  `json:"payload,omitempty"`
	FlowBase   uint16  `json:"flow_base"`  // first source port: flow i uses FlowBase+i
	Confidence float64 `json:"confidence"` // percent
	Mode       string  `json:"mode"`       // "mda-lite" or "mda"
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

// ---- what every writer derives from a graph ----

// Node roles in diamonds (bits).
const (
	roleDiverge = 1 << iota
	roleConverge
	roleInside
)

// mpView is one target's graph with the lookups the writers share.
type mpView struct {
	t         *MultipathTarget
	g         *mda.Graph
	node      map[string]*mda.Node
	rank      map[string]int // index in g.Nodes
	succ      map[string][]string
	pred      map[string][]string
	role      map[string]int
	paths     []mpPath // complete ones first
	nComplete int
	pathOf    map[uint16]int // flow -> index in paths
	common    map[string]bool
	destTTLs  []int
}

// mpPath is a distinct path: the flows whose hops, completed from the graph, are the
// same node sequence.
type mpPath struct {
	Hops     []mda.FlowHop // TTL order; a TTL left out is unknown
	Inferred map[int]bool  // TTLs no flow of the path measured, filled in from the graph
	Flows    []uint16
	Complete bool // every TTL known from the first hop to the destination or the graph's end
	DestTTL  int  // TTL of the destination, 0 if the path does not reach it
}

func newView(t *MultipathTarget) *mpView {
	g := t.Graph
	v := &mpView{t: t, g: g, node: map[string]*mda.Node{}, rank: map[string]int{},
		succ: map[string][]string{}, pred: map[string][]string{}, role: map[string]int{}, pathOf: map[uint16]int{}}
	for i := range g.Nodes {
		v.node[g.Nodes[i].ID] = &g.Nodes[i]
		v.rank[g.Nodes[i].ID] = i
	}
	for _, l := range g.Links {
		v.succ[l.From] = append(v.succ[l.From], l.To)
		v.pred[l.To] = append(v.pred[l.To], l.From)
	}
	for _, d := range g.Diamonds {
		v.role[d.Divergence] |= roleDiverge
		if d.Convergence != "" {
			v.role[d.Convergence] |= roleConverge
		}
		for _, n := range d.Nodes {
			v.role[n] |= roleInside
		}
	}
	if n, ok := v.node[g.Dest]; ok {
		v.destTTLs = n.TTLs
	}
	v.buildPaths()
	return v
}

func (v *mpView) isDest(id string) bool {
	n, ok := v.node[id]
	return ok && n.Dest
}

// buildPaths groups the flows by path. A flow is probed at some TTLs only (MDA-Lite
// skips what the graph already tells); its other hops are filled in where the graph
// allows one answer: before a node with a single predecessor, after a node with a single
// next hop, and between two measured hops joined by exactly one path of that length.
func (v *mpView) buildPaths() {
	g := v.g
	if len(g.Hops) == 0 {
		return
	}
	first, last := g.Hops[0].TTL, g.Hops[len(g.Hops)-1].TTL
	index := map[string]int{}
	for _, f := range g.Flows {
		seq, inferred := v.complete(f, first, last)
		if len(seq) == 0 {
			continue
		}
		ttls := sortedKeys(seq)
		var key strings.Builder
		p := mpPath{Complete: ttls[0] == first && ttls[len(ttls)-1]-ttls[0] == len(ttls)-1}
		for _, t := range ttls {
			fmt.Fprintf(&key, "%d=%s ", t, seq[t])
			p.Hops = append(p.Hops, mda.FlowHop{TTL: t, Node: seq[t]})
		}
		end := seq[ttls[len(ttls)-1]]
		if v.isDest(end) {
			p.DestTTL = ttls[len(ttls)-1]
		} else if len(v.succ[end]) > 0 {
			p.Complete = false
		}
		i, ok := index[key.String()]
		if !ok {
			i = len(v.paths)
			index[key.String()] = i
			p.Inferred = inferred
			v.paths = append(v.paths, p)
		} else {
			for t := range v.paths[i].Inferred {
				if !inferred[t] {
					delete(v.paths[i].Inferred, t) // some flow of the path measured it
				}
			}
		}
		v.paths[i].Flows = append(v.paths[i].Flows, f.Flow)
	}
	// Complete paths first, then paths through the same branches next to each other.
	slices.SortStableFunc(v.paths, func(a, b mpPath) int {
		if a.Complete != b.Complete {
			if a.Complete {
				return -1
			}
			return 1
		}
		for i := 0; i < len(a.Hops) && i < len(b.Hops); i++ {
			if c := cmp.Or(cmp.Compare(a.Hops[i].TTL, b.Hops[i].TTL), cmp.Compare(v.rank[a.Hops[i].Node], v.rank[b.Hops[i].Node])); c != 0 {
				return c
			}
		}
		return cmp.Compare(len(a.Hops), len(b.Hops))
	})
	for i, p := range v.paths {
		if p.Complete {
			v.nComplete++
		}
		slices.Sort(p.Flows)
		for _, f := range p.Flows {
			v.pathOf[f] = i
		}
	}
	// Nodes every complete path goes through (every path if none is complete).
	v.common = map[string]bool{}
	counted := 0
	seen := map[string]int{}
	for _, p := range v.paths {
		if v.nComplete > 0 && !p.Complete {
			continue
		}
		counted++
		onPath := map[string]bool{}
		for _, h := range p.Hops {
			if !onPath[h.Node] {
				onPath[h.Node] = true
				seen[h.Node]++
			}
		}
	}
	for id, c := range seen {
		if c == counted {
			v.common[id] = true
		}
	}
}

// complete returns a flow's hops by TTL, with the ones filled in from the graph.
func (v *mpView) complete(f mda.FlowPath, first, last int) (map[int]string, map[int]bool) {
	seq, inferred := map[int]string{}, map[int]bool{}
	for _, h := range f.Hops {
		if f.Dest > 0 && h.TTL > f.Dest {
			continue
		}
		seq[h.TTL] = h.Node
	}
	if len(seq) == 0 {
		return nil, nil
	}
	measured := sortedKeys(seq)
	fill := func(t int, id string) { seq[t], inferred[t] = id, true }
	// Before the first measured hop.
	t, id := measured[0], seq[measured[0]]
	for t > first && len(v.pred[id]) == 1 {
		t, id = t-1, v.pred[id][0]
		fill(t, id)
	}
	// Between measured hops.
	for i := 1; i < len(measured); i++ {
		a, b := measured[i-1], measured[i]
		if b-a < 2 {
			continue
		}
		if mid := v.onlyPath(seq[a], seq[b], b-a); mid != nil {
			for j, id := range mid {
				fill(a+1+j, id)
			}
		}
	}
	// After the last one.
	t, id = measured[len(measured)-1], seq[measured[len(measured)-1]]
	for t < last && !v.isDest(id) && len(v.succ[id]) == 1 {
		t, id = t+1, v.succ[id][0]
		fill(t, id)
	}
	return seq, inferred
}

// onlyPath returns the nodes strictly between from and to when exactly one path of n
// links joins them, else nil.
func (v *mpView) onlyPath(from, to string, n int) []string {
	type key struct {
		id string
		n  int
	}
	memo := map[key]int{}
	var count func(id string, n int) int // paths of n links from id to to, capped at 2
	count = func(id string, n int) int {
		if n == 0 {
			if id == to {
				return 1
			}
			return 0
		}
		k := key{id, n}
		if c, ok := memo[k]; ok {
			return c
		}
		c := 0
		for _, s := range v.succ[id] {
			c = min(2, c+count(s, n-1))
		}
		memo[k] = c
		return c
	}
	if count(from, n) != 1 {
		return nil
	}
	var mid []string
	for id := from; n > 1; n-- {
		for _, s := range v.succ[id] {
			if count(s, n-1) == 1 {
				id = s
				break
			}
		}
		mid = append(mid, id)
	}
	return mid
}

func sortedKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// label is how text names a node: its address (and PTR name), or "*" for a silent hop.
func (v *mpView) label(id string) string {
	n, ok := v.node[id]
	if !ok || !n.Addr.IsValid() {
		return "*"
	}
	if name := v.name(n); name != "" {
		return n.Addr.String() + " (" + name + ")"
	}
	return n.Addr.String()
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
func (v *mpView) summary() string { return strings.Join(v.summaryParts(), "; ") }

// summaryParts: where the paths end, what was found, what it cost.
func (v *mpView) summaryParts() []string {
	g := v.g
	reached := "not reached"
	if g.Reached {
		reached = fmt.Sprintf("reached %s in %s hops", v.short(g.Dest), ttlList(v.destTTLs, " or "))
	}
	found := fmt.Sprintf("%s, %s, %s", plural(len(g.Flows), "flow"), plural(v.nComplete, "path"), plural(len(g.Diamonds), "diamond"))
	if u := v.unequalCount(); u > 0 {
		found += fmt.Sprintf(" (%d with unequal branches)", u)
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

// portRanges writes sorted ports as "50000-50003,50010"; past limit ranges, "…(+N)".
func portRanges(ports []uint16, limit int) string {
	var parts []string
	rest := 0
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if limit > 0 && len(parts) == limit {
			rest += j - i + 1
		} else if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", ports[i], ports[j]))
		} else {
			parts = append(parts, strconv.Itoa(int(ports[i])))
		}
		i = j + 1
	}
	s := strings.Join(parts, ",")
	if rest > 0 {
		s += fmt.Sprintf(",…(+%d)", rest)
	}
	return s
}

// ---- text ----

// WriteMultipathText prints every target: its interfaces per TTL, its diamonds and its
// distinct paths, then a summary line.
func WriteMultipathText(w io.Writer, run *MultipathRun) error {
	var b strings.Builder
	for i := range run.Targets {
		if i > 0 {
			b.WriteByte('\n')
		}
		writeTargetText(&b, run, &run.Targets[i])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func targetTitle(t *MultipathTarget) string {
	name := t.Addr.String()
	if t.Name != "" && t.Name != name {
		name = fmt.Sprintf("%s (%s)", t.Name, name)
	}
	return name
}

func writeTargetText(b *strings.Builder, run *MultipathRun, t *MultipathTarget) {
	o := run.Options
	fmt.Fprintf(b, "turnpath multipath to %s from %s, %s/%d", targetTitle(t), t.Source, o.Proto, o.Port)
	if o.Payload != "" && o.Payload != "none" {
		fmt.Fprintf(b, " %s", o.Payload)
	}
	if g := t.Graph; g != nil && len(g.Flows) > 0 {
		fmt.Fprintf(b, ", sports %d-%d", slices.MinFunc(g.Flows, cmpFlow).Flow, slices.MaxFunc(g.Flows, cmpFlow).Flow)
	}
	fmt.Fprintf(b, ", %s at %g%% confidence, engine %s\n", o.Mode, o.Confidence, run.Engine)
	if t.Graph == nil {
		b.WriteString("no result\n")
		writeNotes(b, t.Notes)
		return
	}
	v := newView(t)
	g := v.g

	// Interfaces per TTL.
	rows := [][5]string{{"ttl", "interface", "rtt min/avg/max ms", "flows", "notes"}}
	for _, h := range g.Hops {
		for i, id := range h.Nodes {
			n := v.node[id]
			if n == nil {
				continue // not in g.Nodes: mda never does that
			}
			r := [5]string{"", v.label(id), "-", strconv.Itoa(n.Flows), strings.Join(v.nodeNotes(n, h.TTL), "; ")}
			if i == 0 {
				r[0] = strconv.Itoa(h.TTL)
			}
			if n.Addr.IsValid() && n.RTTMax > 0 {
				r[2] = fmt.Sprintf("%.3f/%.3f/%.3f", ms(n.RTTMin), ms(n.RTTAvg), ms(n.RTTMax))
			}
			rows = append(rows, r)
		}
	}
	writeTable(b, rows, []bool{true, false, false, true, false})

	// Diamonds.
	if len(g.Diamonds) > 0 {
		fmt.Fprintf(b, "\n%s:\n", plural(len(g.Diamonds), "diamond"))
		rows := [][5]string{{"ttl", "divergence -> convergence", "width", "hops", ""}}
		for _, d := range g.Diamonds {
			conv := "(paths never meet again)"
			if d.Convergence != "" {
				conv = v.short(d.Convergence)
			}
			r := [5]string{strconv.Itoa(d.TTL), v.short(d.Divergence) + " -> " + conv, strconv.Itoa(d.MaxWidth), strconv.Itoa(d.MinLength), ""}
			if d.Unequal() {
				r[3] = fmt.Sprintf("%d-%d", d.MinLength, d.MaxLength)
				r[4] = "unequal branches"
			}
			rows = append(rows, r)
		}
		writeTable(b, rows, []bool{true, false, true, true, false})
	}

	// Paths.
	partial := len(v.paths) - v.nComplete
	switch {
	case len(v.paths) == 1 && partial == 0:
		fmt.Fprintf(b, "\n1 path: every flow took the same one\n")
	case len(v.paths) > 0:
		var shared []string
		for _, h := range v.longestComplete().Hops {
			if v.common[h.Node] {
				shared = append(shared, v.short(h.Node))
			}
		}
		inComplete := 0
		for _, p := range v.paths[:v.nComplete] {
			inComplete += len(p.Flows)
		}
		fmt.Fprintf(b, "\n%s over %s", plural(v.nComplete, "distinct path"), plural(inComplete, "flow"))
		if partial > 0 {
			fmt.Fprintf(b, ", and %s measured in part", plural(len(g.Flows)-inComplete, "flow"))
		}
		if len(shared) > 0 && v.nComplete > 1 {
			fmt.Fprintf(b, "; hops all paths share are left out (%s)", strings.Join(shared, " "))
		}
		b.WriteString(":\n")
		rows := [][5]string{{"path", "hops", "via", "flows", "sports"}}
		for i, p := range v.paths {
			num, hops := "", "?"
			if p.Complete {
				num = strconv.Itoa(i + 1)
				hops = strconv.Itoa(p.Hops[len(p.Hops)-1].TTL)
				if p.DestTTL == 0 {
					hops += "…" // last seen there
				}
			}
			rows = append(rows, [5]string{num, hops, v.via(p), strconv.Itoa(len(p.Flows)), portRanges(p.Flows, 8)})
		}
		writeTable(b, rows, []bool{true, true, false, true, false})
		if partial > 0 {
			b.WriteString("  (? = a hop the flow was not probed at and the graph cannot tell)\n")
		}
	}

	// Summary.
	b.WriteString(v.summary() + "\n")
	if s := truncation(g); s != "" {
		b.WriteString("! " + s + "\n")
	}
	if len(g.FullTTLs) > 0 {
		fmt.Fprintf(b, "! per-interface MDA (load balancing seen to be meshed or non-uniform) at TTL %s\n", ttlList(g.FullTTLs, " and "))
	}
	if len(g.SharedTTLs) > 0 {
		fmt.Fprintf(b, "! TTL %s taken from an earlier target (same routers, not probed again)\n", ttlList(g.SharedTTLs, " and "))
	}
	writeNotes(b, t.Notes)
}

func cmpFlow(a, b mda.FlowPath) int { return cmp.Compare(a.Flow, b.Flow) }

func writeNotes(b *strings.Builder, notes []string) {
	for _, n := range notes {
		b.WriteString("! " + n + "\n")
	}
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
	return notes
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

// longestComplete is the complete path with the most hops (the first path if none).
func (v *mpView) longestComplete() mpPath {
	best := v.paths[0]
	for _, p := range v.paths {
		if p.Complete && (!best.Complete || len(p.Hops) > len(best.Hops)) {
			best = p
		}
	}
	return best
}

// via writes a path's hops that not every path takes; " · " marks hops left out, "?"
// unknown TTLs.
func (v *mpView) via(p mpPath) string {
	var parts []string
	skipped := false
	prev := 0
	if len(p.Hops) > 0 && p.Hops[0].TTL > v.g.Hops[0].TTL {
		parts = append(parts, "?")
	}
	for _, h := range p.Hops {
		if prev > 0 && h.TTL > prev+1 {
			parts = append(parts, "?")
			skipped = false
		}
		prev = h.TTL
		if v.common[h.Node] && v.nComplete > 1 {
			skipped = true
			continue
		}
		if skipped && len(parts) > 0 && parts[len(parts)-1] != "?" {
			parts = append(parts, "·")
		}
		skipped = false
		parts = append(parts, v.short(h.Node))
	}
	if !p.Complete && p.DestTTL == 0 {
		parts = append(parts, "?")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// writeTable writes rows with aligned columns (right-aligned where right[i]), indented by
// two spaces, trailing blanks trimmed.
func writeTable(b *strings.Builder, rows [][5]string, right []bool) {
	var width [5]int
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var line strings.Builder
		line.WriteString(" ")
		for i, c := range r {
			if width[i] == 0 {
				continue
			}
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			line.WriteString(" ")
			if right[i] {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
			line.WriteString(" ")
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// ---- JSON ----

// MultipathDoc is the JSON document of `--format json` (DESIGN.md, "Multipath JSON").
type MultipathDoc struct {
	MultipathRun
	Targets []MultipathDocTarget `json:"targets"`
}

// MultipathDocTarget is one target of MultipathDoc.
type MultipathDocTarget struct {
	Name       string                `json:"name"`
	Address    string                `json:"address"`
	Source     string                `json:"source"`
	Family     int                   `json:"family"`
	Reached    bool                  `json:"reached"`
	Dest       string                `json:"dest,omitempty"`      // node id of the destination
	DestTTLs   []int                 `json:"dest_ttls,omitempty"` // TTLs it answered at
	Sent       int                   `json:"probes_sent"`
	Answered   int                   `json:"probes_answered"`
	Rounds     int                   `json:"rounds"`
	DurationMS float64               `json:"duration_ms"`
	Truncated  string                `json:"truncated,omitempty"`
	FullTTLs   []int                 `json:"full_ttls,omitempty"`
	SharedTTLs []int                 `json:"shared_ttls,omitempty"`
	Hops       []MultipathDocHop     `json:"hops"`
	Nodes      []MultipathDocNode    `json:"nodes"`
	Links      []MultipathDocLink    `json:"links"`
	Flows      []MultipathDocFlow    `json:"flows"`
	Paths      []MultipathDocPath    `json:"paths"`
	Diamonds   []MultipathDocDiamond `json:"diamonds"`
	Notes      []string              `json:"notes,omitempty"`
}

// MultipathDocHop is the set of nodes seen at one TTL.
type MultipathDocHop struct {
	TTL   int      `json:"ttl"`
	Nodes []string `json:"nodes"`
}

// MultipathDocNode is one interface or silent hop.
type MultipathDocNode struct {
	ID           string   `json:"id"`
	Address      string   `json:"address,omitempty"`
	Name         string   `json:"name,omitempty"`
	Anonymous    bool     `json:"anonymous,omitempty"`
	After        string   `json:"after,omitempty"`
	Depth        int      `json:"depth,omitempty"`
	TTLs         []int    `json:"ttls"`
	Dest         bool     `json:"dest,omitempty"`
	Unreachable  bool     `json:"unreachable,omitempty"`
	Flows        int      `json:"flows"`
	NextHops     int      `json:"next_hops"`
	MinMS        *float64 `json:"rtt_min_ms,omitempty"`
	AvgMS        *float64 `json:"rtt_avg_ms,omitempty"`
	MaxMS        *float64 `json:"rtt_max_ms,omitempty"`
	NAT          string   `json:"nat,omitempty"`
	Shared       bool     `json:"shared,omitempty"`
	DiamondRoles []string `json:"diamond_roles,omitempty"` // "divergence", "convergence", "inside"
}

// MultipathDocLink is an edge of the node graph.
type MultipathDocLink struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Flows  int    `json:"flows"`
	TTLs   []int  `json:"ttls"`
	Shared bool   `json:"shared,omitempty"`
}

// MultipathDocFlow is one flow's measured hops.
type MultipathDocFlow struct {
	SPort   uint16             `json:"sport"`
	Path    int                `json:"path"` // index into paths, -1 if none
	DestTTL int                `json:"dest_ttl,omitempty"`
	Hops    []MultipathDocStep `json:"hops"`
}

// MultipathDocStep is one hop of a flow or a path.
type MultipathDocStep struct {
	TTL      int    `json:"ttl"`
	Node     string `json:"node"`
	Inferred bool   `json:"inferred,omitempty"`
}

// MultipathDocPath is a distinct path and the flows that took it.
type MultipathDocPath struct {
	SPorts   []uint16           `json:"sports"`
	Complete bool               `json:"complete"`
	DestTTL  int                `json:"dest_ttl,omitempty"`
	Hops     []MultipathDocStep `json:"hops"`
}

// MultipathDocDiamond is a load-balanced section.
type MultipathDocDiamond struct {
	Divergence  string   `json:"divergence"`
	Convergence string   `json:"convergence,omitempty"`
	TTL         int      `json:"ttl"`
	MaxWidth    int      `json:"max_width"`
	MinLength   int      `json:"min_length"`
	MaxLength   int      `json:"max_length"`
	Unequal     bool     `json:"unequal"`
	Nodes       []string `json:"nodes"`
}

// MultipathDocument builds the JSON document of a run.
func MultipathDocument(run *MultipathRun) MultipathDoc {
	d := MultipathDoc{MultipathRun: *run, Targets: []MultipathDocTarget{}}
	d.MultipathRun.Targets = nil
	if d.Schema == "" {
		d.Schema = MultipathSchema
	}
	for i := range run.Targets {
		d.Targets = append(d.Targets, docTarget(&run.Targets[i]))
	}
	return d
}

func docTarget(t *MultipathTarget) MultipathDocTarget {
	dt := MultipathDocTarget{Name: t.Name, Address: t.Addr.String(), Source: t.Source.String(), Family: t.Family, Notes: t.Notes,
		Hops: []MultipathDocHop{}, Nodes: []MultipathDocNode{}, Links: []MultipathDocLink{}, Flows: []MultipathDocFlow{},
		Paths: []MultipathDocPath{}, Diamonds: []MultipathDocDiamond{}}
	if t.Graph == nil {
		return dt
	}
	v := newView(t)
	g := v.g
	dt.Reached, dt.Dest, dt.DestTTLs = g.Reached, g.Dest, v.destTTLs
	dt.Sent, dt.Answered, dt.Rounds, dt.DurationMS = g.Sent, g.Answered, g.Rounds, ms(g.Duration)
	dt.Truncated, dt.FullTTLs, dt.SharedTTLs = g.Truncated, g.FullTTLs, g.SharedTTLs
	for _, h := range g.Hops {
		dt.Hops = append(dt.Hops, MultipathDocHop{TTL: h.TTL, Nodes: h.Nodes})
	}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		dn := MultipathDocNode{ID: n.ID, Name: v.name(n), Anonymous: !n.Addr.IsValid(), After: n.After, Depth: n.Depth,
			TTLs: n.TTLs, Dest: n.Dest, Unreachable: n.Unreachable, Flows: n.Flows, NextHops: len(v.succ[n.ID]), NAT: n.NAT, Shared: n.Shared}
		if n.Addr.IsValid() {
			dn.Address = n.Addr.String()
		}
		if n.RTTMax > 0 {
			mn, avg, mx := ms(n.RTTMin), ms(n.RTTAvg), ms(n.RTTMax)
			dn.MinMS, dn.AvgMS, dn.MaxMS = &mn, &avg, &mx
		}
		r := v.role[n.ID]
		for _, x := range []struct {
			bit  int
			name string
		}{{roleDiverge, "divergence"}, {roleConverge, "convergence"}, {roleInside, "inside"}} {
			if r&x.bit != 0 {
				dn.DiamondRoles = append(dn.DiamondRoles, x.name)
			}
		}
		dt.Nodes = append(dt.Nodes, dn)
	}
	for _, l := range g.Links {
		dt.Links = append(dt.Links, MultipathDocLink{From: l.From, To: l.To, Flows: l.Flows, TTLs: orEmpty(l.TTLs), Shared: l.Shared})
	}
	for _, f := range g.Flows {
		df := MultipathDocFlow{SPort: f.Flow, DestTTL: f.Dest, Path: -1, Hops: []MultipathDocStep{}}
		if i, ok := v.pathOf[f.Flow]; ok {
			df.Path = i
		}
		for _, h := range f.Hops {
			df.Hops = append(df.Hops, MultipathDocStep{TTL: h.TTL, Node: h.Node})
		}
		dt.Flows = append(dt.Flows, df)
	}
	for _, p := range v.paths {
		dp := MultipathDocPath{SPorts: p.Flows, Complete: p.Complete, DestTTL: p.DestTTL}
		for _, h := range p.Hops {
			dp.Hops = append(dp.Hops, MultipathDocStep{TTL: h.TTL, Node: h.Node, Inferred: p.Inferred[h.TTL]})
		}
		dt.Paths = append(dt.Paths, dp)
	}
	for _, d := range g.Diamonds {
		dt.Diamonds = append(dt.Diamonds, MultipathDocDiamond{Divergence: d.Divergence, Convergence: d.Convergence, TTL: d.TTL,
			MaxWidth: d.MaxWidth, MinLength: d.MinLength, MaxLength: d.MaxLength, Unequal: d.Unequal(), Nodes: orEmpty(d.Nodes)})
	}
	return dt
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// WriteMultipathJSON writes the run as one indented JSON document (MultipathDoc).
func WriteMultipathJSON(w io.Writer, run *MultipathRun) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(MultipathDocument(run))
}

// ---- Graphviz ----

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

// WriteMultipathDOT writes the run as a Graphviz digraph: hops left to right, one rank
// per TTL, one cluster per target.
func WriteMultipathDOT(w io.Writer, run *MultipathRun) error {
	var b strings.Builder
	o := run.Options
	fmt.Fprintf(&b, "// %s, turnpath %s\n", MultipathSchema, run.Version)
	b.WriteString("digraph turnpath_multipath {\n")
	fmt.Fprintf(&b, "  graph [rankdir=LR, newrank=true, nodesep=0.2, ranksep=0.45, fontname=\"Helvetica\", labelloc=t, label=%s];\n",
		dotQuote(fmt.Sprintf("turnpath multipath: %s/%d, %s at %g%% confidence, engine %s", o.Proto, o.Port, o.Mode, o.Confidence, run.Engine)))
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fillcolor=\"" + colNode + "\", fontname=\"Helvetica\", fontsize=10];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=9, color=\"" + colLine + "\"];\n")
	for i := range run.Targets {
		writeTargetDOT(&b, i, &run.Targets[i])
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeTargetDOT(b *strings.Builder, ti int, t *MultipathTarget) {
	id := func(s string) string { return dotQuote(fmt.Sprintf("%d:%s", ti, s)) }
	fmt.Fprintf(b, "  subgraph cluster_%d {\n", ti)
	title := fmt.Sprintf("%s from %s", targetTitle(t), t.Source)
	if t.Graph == nil {
		fmt.Fprintf(b, "    label=%s;\n    %s [label=\"no result\", shape=plaintext, style=\"\"];\n  }\n", dotQuote(title), id("none"))
		return
	}
	v := newView(t)
	g := v.g
	label := title + "\n" + v.summary()
	if s := truncation(g); s != "" {
		label += "\n" + s
	}
	fmt.Fprintf(b, "    label=%s; color=\"%s\";\n", dotQuote(label), colShared)

	// The TTL axis: plain labels chained invisibly, one per rank.
	ranks := map[int][]string{}
	for i := range g.Nodes {
		if c := col(&g.Nodes[i]); c > 0 {
			ranks[c] = append(ranks[c], g.Nodes[i].ID)
		}
	}
	cols := sortedKeys(ranks)
	fmt.Fprintf(b, "    %s [label=%s, shape=ellipse, fillcolor=\"%s\"];\n", id("source"), dotQuote("source\n"+t.Source.String()), colSource)
	fmt.Fprintf(b, "    %s [label=\"TTL\", shape=plaintext, style=\"\"];\n", id("ttl"))
	prevAxis := id("ttl")
	if len(cols) > 0 {
		for c := cols[0]; c <= cols[len(cols)-1]; c++ {
			axis := id(fmt.Sprintf("ttl%d", c))
			fmt.Fprintf(b, "    %s [label=\"%d\", shape=plaintext, style=\"\"];\n", axis, c)
			fmt.Fprintf(b, "    %s -> %s [style=invis];\n", prevAxis, axis)
			prevAxis = axis
		}
	}
	fmt.Fprintf(b, "    { rank=same; %s; %s; }\n", id("ttl"), id("source"))
	for i := range g.Nodes {
		n := &g.Nodes[i]
		attrs := []string{"label=" + dotQuote(strings.Join(v.boxLines(n), "\n"))}
		switch {
		case !n.Addr.IsValid():
			attrs = append(attrs, `style="rounded,dashed,filled"`, `fillcolor="`+colSilent+`"`, `fontcolor="#495057"`)
		case n.Dest:
			attrs = append(attrs, `fillcolor="`+colDest+`"`, `color="`+colDestLine+`"`, "penwidth=2", "peripheries=2")
		case v.role[n.ID]&(roleDiverge|roleConverge) != 0:
			attrs = append(attrs, `fillcolor="`+colEnd+`"`, `color="`+colEndLine+`"`, "penwidth=2")
		case v.role[n.ID]&roleInside != 0:
			attrs = append(attrs, `fillcolor="`+colInside+`"`)
		}
		if n.Shared {
			attrs = append(attrs, `fontcolor="#868e96"`)
		}
		fmt.Fprintf(b, "    %s [%s];\n", id(n.ID), strings.Join(attrs, ", "))
	}
	for _, c := range cols {
		fmt.Fprintf(b, "    { rank=same; %s;", id(fmt.Sprintf("ttl%d", c)))
		for _, n := range ranks[c] {
			fmt.Fprintf(b, " %s;", id(n))
		}
		b.WriteString(" }\n")
	}
	if len(g.Hops) > 0 {
		for _, n := range g.Hops[0].Nodes {
			fmt.Fprintf(b, "    %s -> %s [style=dashed, color=\"%s\", arrowhead=none];\n", id("source"), id(n), colShared)
		}
	}
	for _, l := range g.Links {
		attrs := []string{"label=" + dotQuote(strconv.Itoa(l.Flows))}
		if l.Shared {
			attrs = []string{`label="shared"`, "style=dashed", `color="` + colShared + `"`}
		}
		if w := edgeWidth(l.Flows, g); w > 1 {
			attrs = append(attrs, fmt.Sprintf("penwidth=%.1f", w))
		}
		fmt.Fprintf(b, "    %s -> %s [%s];\n", id(l.From), id(l.To), strings.Join(attrs, ", "))
	}
	b.WriteString("  }\n")
}

// boxLines are the lines of a node's box: address, PTR name, RTT, flows and TTLs.
func (v *mpView) boxLines(n *mda.Node) []string {
	var lines []string
	if n.Addr.IsValid() {
		lines = append(lines, n.Addr.String())
		if name := v.name(n); name != "" {
			lines = append(lines, name)
		}
	} else {
		lines = append(lines, "* silent")
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

// dotQuote quotes s as a dot string; "\n" becomes a centred line break.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
