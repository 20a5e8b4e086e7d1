package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/turnpath/turnpath/mda"
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
	cols := slices.Sorted(maps.Keys(ranks))
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
		case v.role[n.ID]&(mda.RoleDivergence|mda.RoleConvergence) != 0:
			attrs = append(attrs, `fillcolor="`+colEnd+`"`, `color="`+colEndLine+`"`, "penwidth=2")
		case v.role[n.ID]&mda.RoleInside != 0:
			attrs = append(attrs, `fillcolor="`+colInside+`"`)
		}
		if n.Shared {
			attrs = append(attrs, `fontcolor="#868e96"`)
		}
		fmt.Fprintf(b, "    %s [%s];\n", id(n.ID), strings.Join(attrs, ", "))
	}
	// A router that answered from several interfaces: a dashed box around them.
	for k, r := range g.Routers {
		fmt.Fprintf(b, "    subgraph cluster_%d_router%d { label=%s; style=dashed; color=\"%s\";", ti, k, dotQuote("router "+r.ID), colEndLine)
		for _, in := range r.Interfaces {
			fmt.Fprintf(b, " %s;", id(in))
		}
		b.WriteString(" }\n")
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
		if l.Alias {
			attrs = []string{`label="router"`, "style=dotted", `color="` + colShared + `"`}
		}
		if w := edgeWidth(l.Flows, g); w > 1 {
			attrs = append(attrs, fmt.Sprintf("penwidth=%.1f", w))
		}
		fmt.Fprintf(b, "    %s -> %s [%s];\n", id(l.From), id(l.To), strings.Join(attrs, ", "))
	}
	b.WriteString("  }\n")
}

// dotQuote quotes s as a dot string; "\n" becomes a centred line break.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
