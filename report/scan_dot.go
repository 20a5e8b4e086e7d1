package report

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// WriteScanDOT writes a scan's union view (trace --scan --format dot) as a Graphviz
// digraph: every interface any target's probes found, every link between consecutive
// hops of one flow, the prober at the left. A silent router is one "*" node per family:
// the scan cannot tell silent routers apart.
func WriteScanDOT(w io.Writer, run *Run) error {
	if run.Scan == nil {
		return fmt.Errorf("write dot: not a scan (trace --scan)")
	}
	var b strings.Builder
	s := run.Scan
	fmt.Fprintf(&b, "// %s, turnpath %s\n", Schema, run.Version)
	b.WriteString("digraph turnpath_scan {\n")
	fmt.Fprintf(&b, "  graph [rankdir=LR, nodesep=0.2, ranksep=0.45, fontname=\"Helvetica\", labelloc=t, label=%s];\n",
		dotQuote(scanTitle(run)))
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fillcolor=\"" + colNode + "\", fontname=\"Helvetica\", fontsize=10];\n")
	b.WriteString("  edge [color=\"" + colLine + "\"];\n")
	limited, family := s.rateLimited(), addrFamily
	for _, a := range s.Interfaces {
		label := a
		if limited[a] {
			label += "\nrate-limited"
		}
		fmt.Fprintf(&b, "  %s [label=%s];\n", dotQuote(a), dotQuote(label))
	}
	// A silent hop takes the family of the interface on its other side.
	anon := func(other string) string { return dotQuote("* (" + family(other) + ")") }
	seenAnon := map[string]bool{}
	for _, l := range s.Links {
		from, to := dotQuote(l.From), dotQuote(l.To)
		if l.From == "*" {
			from = anon(l.To)
		}
		if l.To == "*" {
			to = anon(l.From)
		}
		for _, n := range []string{from, to} {
			if strings.HasPrefix(n, "\"* (") && !seenAnon[n] {
				seenAnon[n] = true
				fmt.Fprintf(&b, "  %s [label=%s, style=\"rounded,dashed\"];\n", n, dotQuote("silent router"))
			}
		}
		fmt.Fprintf(&b, "  %s -> %s;\n", from, to)
	}
	// The prober, before every interface nothing leads to.
	into := map[string]bool{}
	for _, l := range s.Links {
		into[l.To] = true
	}
	fmt.Fprintf(&b, "  prober [label=\"prober\", shape=ellipse, fillcolor=\"%s\"];\n", colSource)
	for _, a := range s.Interfaces {
		if !into[a] {
			fmt.Fprintf(&b, "  prober -> %s;\n", dotQuote(a))
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// rateLimited tells, by address, which responders rate-limit their answers.
func (s *ScanSummary) rateLimited() map[string]bool {
	limited := map[string]bool{}
	for _, r := range s.Responders {
		limited[r.Addr] = r.RateLimited
	}
	return limited
}

// addrFamily is "IPv6" for an IPv6 address, else "IPv4" (a silent hop: "*").
func addrFamily(addr string) string {
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// scanTitle is the union view's title line.
func scanTitle(run *Run) string {
	s := run.Scan
	return fmt.Sprintf("turnpath trace (scan): %d targets, %s/%d, %d probes in %.1f s, %d interfaces, %d links, engine %s",
		len(run.Targets), run.Options.Proto, run.Options.Port, s.Probes, s.DurationMS/1000, len(s.Interfaces), len(s.Links), run.Engine)
}
