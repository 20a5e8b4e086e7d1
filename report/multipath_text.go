package report

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/turnpath/turnpath/mda"
)

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

	// Routers that answered from several interfaces, and why they are one.
	if len(g.Routers) > 0 {
		fmt.Fprintf(b, "\n%s answering from several interfaces (alias resolution):\n", plural(len(g.Routers), "router"))
		rows := [][5]string{{"router", "interfaces", "confidence", "evidence", ""}}
		for _, r := range g.Routers {
			var kinds []string
			for _, e := range r.Evidence {
				if !slices.Contains(kinds, e.Kind) {
					kinds = append(kinds, e.Kind)
				}
			}
			rows = append(rows, [5]string{r.ID, strings.Join(r.Interfaces, " "), fmt.Sprintf("%.2f%%", 100*r.Confidence), strings.Join(kinds, ", "), ""})
		}
		writeTable(b, rows, []bool{false, false, true, false, false})
	}
	// Interfaces that may be one router, and why nothing told.
	for _, r := range g.Unresolved {
		why := ""
		if len(r.Evidence) > 0 {
			why = ": " + r.Evidence[0].Detail
		}
		fmt.Fprintf(b, "may be one router, unresolved: %s%s\n", strings.Join(r.Interfaces, " "), why)
	}

	// Paths.
	partial := len(v.paths.List) - v.paths.Complete
	switch {
	case len(v.paths.List) == 1 && partial == 0:
		fmt.Fprintf(b, "\n1 path: every flow took the same one\n")
	case len(v.paths.List) > 0:
		var shared []string
		for _, h := range v.longestComplete().Hops {
			if v.paths.Common(h.Node) {
				shared = append(shared, v.short(h.Node))
			}
		}
		inComplete := 0
		for _, p := range v.paths.List[:v.paths.Complete] {
			inComplete += len(p.Flows)
		}
		fmt.Fprintf(b, "\n%s over %s", plural(v.paths.Complete, "distinct path"), plural(inComplete, "flow"))
		if partial > 0 {
			fmt.Fprintf(b, ", and %s measured in part", plural(len(g.Flows)-inComplete, "flow"))
		}
		if len(shared) > 0 && v.paths.Complete > 1 {
			fmt.Fprintf(b, "; hops all paths share are left out (%s)", strings.Join(shared, " "))
		}
		b.WriteString(":\n")
		rows := [][5]string{{"path", "hops", "via", "flows", "sports"}}
		for i, p := range v.paths.List {
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
	switch {
	case g.JoinedFrom.IsValid():
		fmt.Fprintf(b, "! joined the graph of %s (same prefix): TTL %s established by its probes, at its confidence; measured here: the destination's distance and the hop before it\n",
			g.JoinedFrom, ttlList(g.SharedTTLs, " and "))
	case len(g.SharedTTLs) > 0:
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

// longestComplete is the complete path with the most hops (the first path if none).
func (v *mpView) longestComplete() mda.Path {
	best := v.paths.List[0]
	for _, p := range v.paths.List {
		if p.Complete && (!best.Complete || len(p.Hops) > len(best.Hops)) {
			best = p
		}
	}
	return best
}

// via writes a path's hops that not every path takes; " · " marks hops left out, "?"
// unknown TTLs.
func (v *mpView) via(p mda.Path) string {
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
		if v.paths.Common(h.Node) && v.paths.Complete > 1 {
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
