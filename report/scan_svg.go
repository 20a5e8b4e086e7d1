package report

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// WriteScanSVG draws a scan's union view (trace --format svg) without Graphviz: the
// prober at the left, every interface in the column of its longest path from the prober,
// every link as a curve. A rate-limited router is outlined in orange, a silent one (one
// per family: the scan cannot tell silent routers apart) dashed.
func WriteScanSVG(w io.Writer, run *Run) error {
	if run.Scan == nil {
		return fmt.Errorf("write svg: not a scan (trace --scan)")
	}
	s := run.Scan
	g := newScanLayout(s)

	const (
		boxH, rowGap, colGap = 24.0, 10.0, 56.0
		top, left, fontSize  = 64.0, 16.0, 12.0
	)
	colW := 0.0
	for _, n := range g.nodes {
		colW = max(colW, textW(n.label, fontSize)+20)
	}
	x := func(layer int) float64 { return left + float64(layer)*(colW+colGap) }
	y := func(row int) float64 { return top + float64(row)*(boxH+rowGap) }
	rows := 0
	for _, col := range g.cols {
		rows = max(rows, len(col))
	}
	title := scanTitle(run)
	width := max(x(len(g.cols))-colGap+left, textW(title, 14)+2*left)
	height := y(rows) + 40

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="24" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="44" font-size="11" fill="#495057">%s</text>`+"\n", left,
		html.EscapeString("columns: hops from the prober along the longest path; orange: rate-limited router; dashed: silent router"))
	b.WriteString(`<g fill="none" stroke="` + colLine + `" stroke-width="1.2">` + "\n")
	for _, chain := range g.links {
		// One path per link, through the columns it crosses (a dummy node's row in each).
		var d strings.Builder
		for k := 0; k+1 < len(chain); k++ {
			a, c := g.nodes[chain[k]], g.nodes[chain[k+1]]
			x1, y1 := x(a.layer)+colW, y(a.row)+boxH/2
			x2, y2 := x(c.layer), y(c.row)+boxH/2
			if k == 0 {
				fmt.Fprintf(&d, "M%.1f %.1f", x1, y1)
			}
			dx := (x2 - x1) / 2
			fmt.Fprintf(&d, " C%.1f %.1f %.1f %.1f %.1f %.1f", x1+dx, y1, x2-dx, y2, x2, y2)
			if c.dummy {
				fmt.Fprintf(&d, " L%.1f %.1f", x2+colW, y2)
			}
		}
		fmt.Fprintf(&b, `<path class="link" d="%s"/>`+"\n", d.String())
	}
	b.WriteString("</g>\n")
	for _, n := range g.nodes {
		if n.dummy {
			continue
		}
		fill, stroke, dash := colNode, "#868e96", ""
		switch {
		case n.prober:
			fill = colSource
		case n.silent:
			fill, dash = colSilent, ` stroke-dasharray="4 3"`
		case n.limited:
			stroke = "#e8590c"
		}
		class := "iface"
		if n.prober || n.silent {
			class = "other"
		}
		fmt.Fprintf(&b, `<g class="%s"><title>%s</title><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="5" fill="%s" stroke="%s"%s/>`,
			class, html.EscapeString(n.tip), x(n.layer), y(n.row), colW, boxH, fill, stroke, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="%.0f" text-anchor="middle">%s</text></g>`+"\n",
			x(n.layer)+colW/2, y(n.row)+boxH/2+4, fontSize, html.EscapeString(n.label))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

type scanNode struct {
	label, tip              string
	prober, silent, limited bool
	dummy                   bool // where a link crosses a column: a row of its own, not drawn
	layer, row              int
}

type scanLayout struct {
	nodes []*scanNode
	edges [][2]int // between adjacent columns (dummy nodes included)
	links [][]int  // each link's nodes, from its start through its dummies to its end
	cols  [][]int  // node indexes by layer, top to bottom
}

// newScanLayout places the union's nodes: layer = longest path from the prober (links
// only go forward along a flow, but a router met at different distances by different
// targets is drawn once, at its furthest), rows ordered by the mean row of their
// predecessors, two sweeps.
func newScanLayout(s *ScanSummary) *scanLayout {
	g := &scanLayout{}
	index := map[string]int{}
	add := func(key string, n *scanNode) int {
		if i, ok := index[key]; ok {
			return i
		}
		index[key] = len(g.nodes)
		g.nodes = append(g.nodes, n)
		return len(g.nodes) - 1
	}
	limited, family := s.rateLimited(), addrFamily
	prober := add("prober", &scanNode{label: "prober", tip: "the prober", prober: true})
	node := func(addr, other string) int {
		if addr == "*" {
			f := family(other)
			return add("*"+f, &scanNode{label: "* silent (" + f + ")", tip: "a router that never answers (" + f + ")", silent: true})
		}
		tip := addr
		if limited[addr] {
			tip += ": rate-limits its answers"
		}
		return add(addr, &scanNode{label: addr, tip: tip, limited: limited[addr]})
	}
	for _, a := range s.Interfaces {
		node(a, "")
	}
	seen := map[[2]int]bool{}
	into := map[int]bool{}
	for _, l := range s.Links {
		e := [2]int{node(l.From, l.To), node(l.To, l.From)}
		if !seen[e] && e[0] != e[1] {
			seen[e] = true
			g.edges = append(g.edges, e)
			into[e[1]] = true
		}
	}
	for i := range g.nodes {
		if i != prober && !into[i] {
			g.edges = append(g.edges, [2]int{prober, i})
		}
	}
	// Longest path from the prober; a cycle (two targets seeing two routers in opposite
	// orders) is cut by bounding the passes.
	for range len(g.nodes) {
		changed := false
		for _, e := range g.edges {
			if l := g.nodes[e[0]].layer + 1; l > g.nodes[e[1]].layer && l < len(g.nodes) {
				g.nodes[e[1]].layer, changed = l, true
			}
		}
		if !changed {
			break
		}
	}
	// A link across several columns gets a dummy node in each column between, so the
	// ordering makes room for it and it is never drawn through a box.
	var edges [][2]int
	for _, e := range g.edges {
		chain := []int{e[0]}
		for l := g.nodes[e[0]].layer + 1; l < g.nodes[e[1]].layer; l++ {
			g.nodes = append(g.nodes, &scanNode{dummy: true, layer: l})
			chain = append(chain, len(g.nodes)-1)
		}
		chain = append(chain, e[1])
		for k := 0; k+1 < len(chain); k++ {
			edges = append(edges, [2]int{chain[k], chain[k+1]})
		}
		g.links = append(g.links, chain)
	}
	g.edges = edges
	layers := 0
	for _, n := range g.nodes {
		layers = max(layers, n.layer+1)
	}
	g.cols = make([][]int, layers)
	for i, n := range g.nodes {
		g.cols[n.layer] = append(g.cols[n.layer], i)
	}
	for _, col := range g.cols {
		slices.SortFunc(col, func(a, b int) int { return cmp.Compare(g.nodes[a].label, g.nodes[b].label) })
	}
	g.number()
	for range 2 {
		for _, col := range g.cols {
			bary := map[int]float64{}
			for _, i := range col {
				sum, n := 0.0, 0
				for _, e := range g.edges {
					if e[1] == i {
						sum += float64(g.nodes[e[0]].row)
						n++
					}
				}
				bary[i] = float64(g.nodes[i].row)
				if n > 0 {
					bary[i] = sum / float64(n)
				}
			}
			slices.SortStableFunc(col, func(a, b int) int { return cmp.Compare(bary[a], bary[b]) })
		}
		g.number()
	}
	return g
}

// number sets each node's row from its place in its column.
func (g *scanLayout) number() {
	for _, col := range g.cols {
		for r, i := range col {
			g.nodes[i].row = r
		}
	}
}
