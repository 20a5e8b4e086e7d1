package report

import (
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/turnpath/turnpath/mda"
)

// The SVG picture is laid out here, without Graphviz: one column per TTL from left to
// right (a node sits at its last TTL, see col), nodes as boxes stacked in their column,
// and links as curves. A link that skips TTLs (the shorter of unequal branches) goes
// through placeholder slots in the columns it crosses, so it never runs under a box; the
// order inside each column is chosen by barycentre sweeps to keep crossings few
// (Sugiyama's method, without its refinements). Text is monospace so widths can be
// computed without a font engine.

// Geometry, in pixels.
const (
	svgMargin  = 16.0
	svgGapX    = 56.0 // between columns: room for the link labels
	svgGapY    = 14.0 // between boxes of a column
	svgPadX    = 8.0
	svgLineH   = 14.0
	svgFont    = 11.0 // box text
	svgTitle   = 13.0
	svgCharEm  = 0.61 // advance of a DejaVu Sans Mono glyph, in em (0.602) plus slack
	svgMinBoxW = 96.0
	svgAxisH   = 22.0
)

func textW(s string, size float64) float64 { return float64(len([]rune(s))) * size * svgCharEm }

// svgItem is a box or a placeholder slot of one column.
type svgItem struct {
	id    string // node ID; "" for a placeholder
	lines []string
	pos   float64 // ordering key
	y     float64 // top
	preds []*svgItem
	succs []*svgItem
}

func (it *svgItem) placeholder() bool { return it.id == "" }

// svgEdge is a link routed through placeholders.
type svgEdge struct {
	from, to *svgItem
	via      []*svgItem
	label    string
	width    float64
	shared   bool
	backward bool
	source   bool // from the source box: no label, dashed
}

// svgPanel is one target's laid-out picture.
type svgPanel struct {
	v *mpView
	// asColours are the fills of the ASes seen so far (AS colouring).
	asColours map[uint32]string
	t         *MultipathTarget
	cols      [][]*svgItem
	first     int // TTL of column 1 (column 0 is the source)
	edges     []*svgEdge
	colW      []float64 // box width per column
	colOf     map[*svgItem]int
	boxH      float64
	graphH    float64
	header    []string // title lines
	notes     []string // lines under the graph
	width     float64
	height    float64
}

func (p *svgPanel) colX(c int) float64 {
	x := svgMargin
	for _, w := range p.colW[:c] {
		x += w + svgGapX
	}
	return x
}

func layoutPanel(t *MultipathTarget) *svgPanel {
	p := &svgPanel{t: t}
	p.header = []string{fmt.Sprintf("%s from %s", targetTitle(t), t.Source)}
	if t.Graph == nil {
		p.header = append(p.header, "no result")
		p.notes = t.Notes
		p.size()
		return p
	}
	v := newView(t)
	p.v = v
	g := v.g
	sum := v.summaryParts()
	p.header = append(p.header, sum[0]+"; "+sum[1], sum[2])
	if s := truncation(g); s != "" {
		p.notes = append(p.notes, "! "+s)
	}
	for _, d := range g.Diamonds {
		conv := "(never converges)"
		if d.Convergence != "" {
			conv = v.short(d.Convergence)
		}
		s := fmt.Sprintf("diamond at TTL %d: %s -> %s, %d wide, %d hops", d.TTL, v.short(d.Divergence), conv, d.MaxWidth, d.MinLength)
		if d.Unequal() {
			s = fmt.Sprintf("diamond at TTL %d: %s -> %s, %d wide, %d-%d hops (unequal branches)", d.TTL, v.short(d.Divergence), conv, d.MaxWidth, d.MinLength, d.MaxLength)
		}
		p.notes = append(p.notes, s)
	}
	if len(g.SharedTTLs) > 0 {
		p.notes = append(p.notes, "TTL "+ttlList(g.SharedTTLs, " and ")+" taken from an earlier target (grey: known only from it)")
	}
	for _, r := range g.Routers {
		p.notes = append(p.notes, fmt.Sprintf("router %s answers from %s (%.2f%% confidence; grey links: inferred from the router)",
			r.ID, strings.Join(r.Interfaces, ", "), 100*r.Confidence))
	}
	if path := v.asPath(); len(path) > 0 {
		p.notes = append(p.notes, "AS path "+strings.Join(path, " ")+" (boxes coloured by AS; red links cross from one AS to another)")
	}
	for _, n := range t.Notes {
		p.notes = append(p.notes, "! "+n)
	}

	// Columns.
	p.first = 1
	last := 0
	if len(g.Hops) > 0 {
		p.first, last = g.Hops[0].TTL, g.Hops[len(g.Hops)-1].TTL
	}
	for i := range g.Nodes {
		last = max(last, col(&g.Nodes[i]))
	}
	p.cols = make([][]*svgItem, last-p.first+2)
	src := &svgItem{id: "\x00source", lines: []string{"source", t.Source.String()}}
	p.cols[0] = []*svgItem{src}
	items := map[string]*svgItem{}
	lines := 2
	for i := range g.Nodes {
		n := &g.Nodes[i]
		if col(n) < p.first {
			continue // no TTL, or before the first hop: mda never does that
		}
		it := &svgItem{id: n.ID, lines: v.boxLines(n)}
		items[n.ID] = it
		c := col(n) - p.first + 1
		p.cols[c] = append(p.cols[c], it)
		lines = max(lines, len(it.lines))
	}
	p.colW = make([]float64, len(p.cols))
	for c, items := range p.cols {
		p.colW[c] = svgMinBoxW
		for _, it := range items {
			for _, l := range it.lines {
				p.colW[c] = max(p.colW[c], textW(l, svgFont)+2*svgPadX)
			}
		}
	}
	p.boxH = float64(lines)*svgLineH + 8

	// Links, with a placeholder in every column they cross.
	p.colOf = map[*svgItem]int{}
	for c, items := range p.cols {
		for _, it := range items {
			p.colOf[it] = c
		}
	}
	connect := func(e *svgEdge) {
		cf, ct := p.colOf[e.from], p.colOf[e.to]
		if ct <= cf {
			e.backward = true
			p.edges = append(p.edges, e)
			return
		}
		prev := e.from
		for c := cf + 1; c < ct; c++ {
			ph := &svgItem{}
			p.cols[c] = append(p.cols[c], ph)
			p.colOf[ph] = c
			e.via = append(e.via, ph)
			prev.succs = append(prev.succs, ph)
			ph.preds = append(ph.preds, prev)
			prev = ph
		}
		prev.succs = append(prev.succs, e.to)
		e.to.preds = append(e.to.preds, prev)
		p.edges = append(p.edges, e)
	}
	if len(g.Hops) > 0 {
		for _, id := range g.Hops[0].Nodes {
			if items[id] != nil {
				connect(&svgEdge{from: src, to: items[id], source: true, width: 1})
			}
		}
	}
	for _, l := range g.Links {
		e := &svgEdge{from: items[l.From], to: items[l.To], label: fmt.Sprint(l.Flows), width: edgeWidth(l.Flows, g), shared: l.Shared}
		if e.from == nil || e.to == nil {
			continue // a link to a node the graph does not list: nothing to draw it to
		}
		if l.Shared || l.Alias {
			e.label, e.width, e.shared = "", 1, true
		}
		connect(e)
	}
	p.order()

	// Heights: every slot (box or placeholder) is one box high, columns centred.
	most := 0
	for _, c := range p.cols {
		most = max(most, len(c))
	}
	p.graphH = float64(most)*(p.boxH+svgGapY) - svgGapY
	for _, c := range p.cols {
		h := float64(len(c))*(p.boxH+svgGapY) - svgGapY
		for i, it := range c {
			it.y = (p.graphH-h)/2 + float64(i)*(p.boxH+svgGapY)
		}
	}
	p.size()
	return p
}

// order sorts every column by the mean position of the neighbours in the column before
// (sweeping right) or after (sweeping left).
func (p *svgPanel) order() {
	renumber := func(c []*svgItem) {
		for i, it := range c {
			it.pos = float64(i) - float64(len(c)-1)/2
		}
	}
	for _, c := range p.cols {
		renumber(c)
	}
	sweep := func(c []*svgItem, next func(*svgItem) []*svgItem) {
		key := map[*svgItem]float64{}
		for _, it := range c {
			key[it] = it.pos
			if ns := next(it); len(ns) > 0 {
				sum := 0.0
				for _, n := range ns {
					sum += n.pos
				}
				key[it] = sum / float64(len(ns))
			}
		}
		slices.SortStableFunc(c, func(a, b *svgItem) int { return cmp.Compare(key[a], key[b]) })
		renumber(c)
	}
	preds := func(it *svgItem) []*svgItem { return it.preds }
	succs := func(it *svgItem) []*svgItem { return it.succs }
	for range 4 {
		for c := 1; c < len(p.cols); c++ {
			sweep(p.cols[c], preds)
		}
		for c := len(p.cols) - 2; c >= 1; c-- {
			sweep(p.cols[c], succs)
		}
	}
	for c := 1; c < len(p.cols); c++ {
		sweep(p.cols[c], preds)
	}
}

func (p *svgPanel) size() {
	p.width = 2 * svgMargin
	if len(p.cols) > 0 {
		p.width = p.colX(len(p.cols)-1) + p.colW[len(p.cols)-1] + svgMargin
	}
	for _, h := range p.header {
		p.width = max(p.width, 2*svgMargin+textW(h, svgTitle))
	}
	for _, n := range p.notes {
		p.width = max(p.width, 2*svgMargin+textW(n, svgFont))
	}
	p.height = svgMargin + float64(len(p.header))*(svgTitle+6) + 6 + svgAxisH + p.graphH + 12 + float64(len(p.notes))*svgLineH + svgMargin
	if p.v == nil {
		p.height -= svgAxisH + 12
	}
}

// WriteMultipathSVG draws the run as a self-contained SVG picture, one panel per target.
func WriteMultipathSVG(w io.Writer, run *MultipathRun) error {
	var panels []*svgPanel
	o := run.Options
	title := fmt.Sprintf("turnpath multipath: %s/%d, %s at %g%% confidence, engine %s", o.Proto, o.Port, o.Mode, o.Confidence, run.Engine)
	width := 2*svgMargin + textW(title, svgTitle+2)
	height := svgMargin + svgTitle + 8
	for i := range run.Targets {
		p := layoutPanel(&run.Targets[i])
		panels = append(panels, p)
		width = max(width, p.width)
		height += p.height
	}
	legendH := 2*svgLineH + 16
	height += legendH
	width = max(width, 2*svgMargin+textW(legendText, svgFont))
	width, height = float64(int(width+0.999)), float64(int(height+0.999))

	s := &svgWriter{}
	s.f(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="%g">`+"\n",
		width, height, width, height, svgFont)
	s.f("<title>%s</title>\n", esc(title))
	s.f(`<defs>`)
	markers := [][2]string{{"arrow", colLine}, {"arrow-shared", colShared}}
	if slices.ContainsFunc(run.Targets, func(t MultipathTarget) bool { return t.AS != nil }) {
		markers = append(markers, [2]string{"arrow-as", colAS})
	}
	for _, m := range markers {
		s.f(`<marker id="%s" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>`, m[0], m[1])
	}
	s.f("</defs>\n")
	s.f(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	s.text(svgMargin, svgMargin+svgTitle, svgTitle+2, "bold", "start", "#212529", title)
	y := svgMargin + svgTitle + 8
	for _, p := range panels {
		p.draw(s, y, width)
		y += p.height
	}
	drawLegend(s, y)
	s.f("</svg>\n")
	_, err := io.WriteString(w, s.b.String())
	return err
}

const legendText = "n on a link: flows measured on it; a link skipping TTLs: the shorter of unequal branches"

func drawLegend(s *svgWriter, y float64) {
	x := svgMargin
	y += 4
	for _, k := range []struct{ fill, line, dash, label string }{
		{colNode, colLine, "", "interface"},
		{colEnd, colEndLine, "", "diamond opens/closes"},
		{colInside, colLine, "", "inside a diamond"},
		{colSilent, colLine, "4 3", "silent hop"},
		{colDest, colDestLine, "", "destination"},
	} {
		dash := ""
		if k.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, k.dash)
		}
		s.f(`<rect x="%.1f" y="%.1f" width="18" height="12" rx="3" fill="%s" stroke="%s"%s/>`+"\n", x, y, k.fill, k.line, dash)
		s.text(x+24, y+10, svgFont, "", "start", "#212529", k.label)
		x += 24 + textW(k.label, svgFont) + 18
	}
	s.text(svgMargin, y+12+svgLineH+2, svgFont, "", "start", "#495057", legendText)
}

// draw writes one panel with its top at y0.
func (p *svgPanel) draw(s *svgWriter, y0, width float64) {
	y := y0 + 6
	s.f(`<line x1="%g" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dee2e6"/>`+"\n", svgMargin, y0, width-svgMargin, y0)
	for i, h := range p.header {
		y += svgTitle + 6
		weight := ""
		if i == 0 {
			weight = "bold"
		}
		s.text(svgMargin, y, svgTitle, weight, "start", "#212529", h)
	}
	top := y + 6
	if p.v != nil {
		top += svgAxisH
		// TTL axis.
		for c := range p.cols {
			label := "source"
			if c > 0 {
				label = fmt.Sprintf("TTL %d", p.first+c-1)
			}
			s.text(p.colX(c)+p.colW[c]/2, top-8, svgFont, "bold", "middle", "#868e96", label)
		}
		for _, e := range p.edges {
			p.drawEdge(s, e, top)
		}
		for c, items := range p.cols {
			for _, it := range items {
				if !it.placeholder() {
					p.drawBox(s, it, p.colX(c), p.colW[c], top+it.y)
				}
			}
		}
		for _, e := range p.edges {
			p.drawEdgeLabel(s, e, top)
		}
	}
	y = top
	if p.v != nil {
		y += p.graphH + 12
	}
	for _, n := range p.notes {
		y += svgLineH
		colour := "#495057"
		if strings.HasPrefix(n, "!") {
			colour = "#c92a2a"
		}
		s.text(svgMargin, y-3, svgFont, "", "start", colour, n)
	}
}

func (p *svgPanel) drawBox(s *svgWriter, it *svgItem, x, w, y float64) {
	fill, line, width, dash, text := colNode, colLine, 1.0, "", "#212529"
	if it.id == "\x00source" {
		fill = colSource
	} else {
		n := p.v.node[it.id]
		r := p.v.role[it.id]
		switch {
		case !n.Addr.IsValid():
			fill, dash, text = colSilent, ` stroke-dasharray="4 3"`, "#495057"
		case n.Dest:
			fill, line, width = colDest, colDestLine, 2
		case r&(mda.RoleDivergence|mda.RoleConvergence) != 0:
			fill, line, width = colEnd, colEndLine, 2
		case r&mda.RoleInside != 0:
			fill = colInside
		}
		if c := p.asColour(it.id); c != "" && n.Addr.IsValid() {
			fill = c // the role stays in the outline
		}
		if n.Shared {
			text = "#868e96"
		}
	}
	s.f("<g>")
	s.f("<title>%s</title>", esc(p.tooltip(it)))
	s.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="5" fill="%s" stroke="%s" stroke-width="%g"%s/>`, x, y, w, p.boxH, fill, line, width, dash)
	ty := y + (p.boxH-float64(len(it.lines))*svgLineH)/2 + svgLineH - 3
	for i, l := range it.lines {
		weight := ""
		if i == 0 {
			weight = "bold"
		}
		s.text(x+w/2, ty+float64(i)*svgLineH, svgFont, weight, "middle", text, l)
	}
	s.f("</g>\n")
}

// tooltip is the hover text of a box: everything known about the node.
func (p *svgPanel) tooltip(it *svgItem) string {
	if it.id == "\x00source" {
		return "source " + p.t.Source.String()
	}
	n := p.v.node[it.id]
	var b strings.Builder
	b.WriteString(p.v.label(n.ID))
	fmt.Fprintf(&b, "\nTTL %s, %s", ttlList(n.TTLs, " and "), plural(n.Flows, "flow"))
	if n.RTTMax > 0 {
		fmt.Fprintf(&b, "\nRTT min/avg/max %.3f/%.3f/%.3f ms", ms(n.RTTMin), ms(n.RTTAvg), ms(n.RTTMax))
	}
	for _, note := range p.v.nodeNotes(n, 0) {
		if !strings.HasPrefix(note, "also at TTL") {
			b.WriteString("\n" + note)
		}
	}
	return b.String()
}

// points is the route of an edge: out of the right side of its first box, straight
// through each placeholder, into the left side of its last box.
func (p *svgPanel) points(e *svgEdge, top float64) [][2]float64 {
	mid := func(it *svgItem) float64 { return top + it.y + p.boxH/2 }
	colOf := func(it *svgItem) int { return p.colOf[it] }
	cf := colOf(e.from)
	pts := [][2]float64{{p.colX(cf) + p.colW[cf], mid(e.from)}}
	for _, ph := range e.via {
		c := colOf(ph)
		pts = append(pts, [2]float64{p.colX(c), mid(ph)}, [2]float64{p.colX(c) + p.colW[c], mid(ph)})
	}
	return append(pts, [2]float64{p.colX(colOf(e.to)), mid(e.to)})
}

func (p *svgPanel) drawEdge(s *svgWriter, e *svgEdge, top float64) {
	colour, marker, dash := colLine, "arrow", ""
	if e.shared || e.source {
		colour, marker, dash = colShared, "arrow-shared", ` stroke-dasharray="5 4"`
	}
	if p.asBoundary(e) {
		colour, marker = colAS, "arrow-as"
	}
	var d strings.Builder
	if e.backward {
		// Against the TTL order (rare): out of the left side, into the right side; a
		// loop on the right within one column.
		cf, ct := p.colOf[e.from], p.colOf[e.to]
		x1, y1 := p.colX(cf), top+e.from.y+p.boxH/2
		x2, y2 := p.colX(ct)+p.colW[ct], top+e.to.y+p.boxH/2
		c1 := x1 - svgGapX/2
		if ct == cf {
			x1 += p.colW[cf]
			c1 = x1 + svgGapX/2
		}
		fmt.Fprintf(&d, "M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f", x1, y1, c1, y1, x2+svgGapX/2, y2, x2, y2)
	} else {
		pts := p.points(e, top)
		fmt.Fprintf(&d, "M%.1f,%.1f", pts[0][0], pts[0][1])
		for i := 1; i < len(pts); i++ {
			a, b := pts[i-1], pts[i]
			if i%2 == 0 { // through a placeholder
				fmt.Fprintf(&d, " L%.1f,%.1f", b[0], b[1])
				continue
			}
			mx := (a[0] + b[0]) / 2
			fmt.Fprintf(&d, " C%.1f,%.1f %.1f,%.1f %.1f,%.1f", mx, a[1], mx, b[1], b[0], b[1])
		}
	}
	s.f(`<path d="%s" fill="none" stroke="%s" stroke-width="%.1f"%s marker-end="url(#%s)"/>`+"\n", d.String(), colour, e.width, dash, marker)
}

func (p *svgPanel) drawEdgeLabel(s *svgWriter, e *svgEdge, top float64) {
	if e.label == "" || e.backward {
		return
	}
	pts := p.points(e, top)
	x, y := (pts[0][0]+pts[1][0])/2, (pts[0][1]+pts[1][1])/2
	s.f(`<text x="%.1f" y="%.1f" font-size="%g" text-anchor="middle" fill="%s" stroke="#ffffff" stroke-width="3" paint-order="stroke">%s</text>`+"\n",
		x, y+3.5, svgFont-1, colLine, esc(e.label))
}

// svgWriter collects the document.
type svgWriter struct{ b strings.Builder }

func (s *svgWriter) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

func (s *svgWriter) text(x, y, size float64, weight, anchor, fill, text string) {
	w := ""
	if weight != "" {
		w = fmt.Sprintf(` font-weight="%s"`, weight)
	}
	s.f(`<text x="%.1f" y="%.1f" font-size="%g"%s text-anchor="%s" fill="%s">%s</text>`+"\n", x, y, size, w, anchor, fill, esc(text))
}

// esc escapes text for XML character data and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}
