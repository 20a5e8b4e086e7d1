package report

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

var updateGraphs = flag.Bool("update-graphs", false, "regenerate testdata/multipath-graphs.json from the mda/sim lab")

// The golden pictures are drawn from graphs frozen in testdata/multipath-graphs.json, so
// that a change in package mda does not show up as a change here. -update-graphs
// regenerates them: mda.Run on the simulated lab (one target), and mda.RunMany on it
// (two addresses behind t1, then t2), on the simulator's virtual clock.
type frozenGraphs struct {
	Lab  *mda.Graph   `json:"lab"`
	Many []*mda.Graph `json:"many"`
}

func loadGraphs(t *testing.T) frozenGraphs {
	t.Helper()
	path := filepath.Join("testdata", "multipath-graphs.json")
	if *updateGraphs {
		n := sim.Lab(1)
		lab, err := mda.Run(context.Background(), n, n.Options(mda.DefaultOptions()))
		if err != nil {
			t.Fatal(err)
		}
		n = sim.Lab(2)
		many, err := mda.RunMany(context.Background(), n, n.TargetAddrs(), n.Options(mda.DefaultOptions()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.MarshalIndent(frozenGraphs{Lab: lab, Many: many}, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-graphs)", err)
	}
	var fg frozenGraphs
	if err := json.Unmarshal(b, &fg); err != nil {
		t.Fatal(err)
	}
	return fg
}

var mpT0 = time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)

func mpRun(targets ...MultipathTarget) *MultipathRun {
	return &MultipathRun{Schema: MultipathSchema, Version: "test", Engine: "ebpf", EngineReason: "test",
		Started: mpT0, Finished: mpT0.Add(3 * time.Second),
		Options: MultipathOptions{Proto: "udp", Port: 3478, Payload: "stun", FlowBase: 50000, Confidence: 95, Mode: "mda-lite", FirstTTL: 1, MaxTTL: 30},
		Targets: targets}
}

func labNames(a netip.Addr) string {
	return map[string]string{"198.18.1.2": "r1.lab.turnpath.test", "198.18.13.2": "r6.lab.turnpath.test"}[a.String()]
}

func labTarget(name string, g *mda.Graph) MultipathTarget {
	addr := g.Target
	if !addr.IsValid() { // mda.Run leaves it to the caller
		addr = netip.MustParseAddr("198.19.1.7")
	}
	return MultipathTarget{Name: name, Addr: addr, Source: netip.MustParseAddr("198.18.1.1"), Family: 4, Graph: g, Names: labNames}
}

// oddGraph is drawn by hand: IPv6, a diamond that never converges, a silent branch, a
// link against the TTL order, a flow with a gap the graph cannot fill, NAT, truncated.
func oddGraph() *mda.Graph {
	a := netip.MustParseAddr
	node := func(id string, flows int, rtt time.Duration, ttls ...int) mda.Node {
		n := mda.Node{ID: id, TTLs: ttls, Flows: flows}
		if !strings.HasPrefix(id, "*") {
			n.Addr = a(id)
			n.RTTMin, n.RTTAvg, n.RTTMax = rtt, rtt+rtt/10, rtt+rtt/5
		}
		return n
	}
	const r1, r2, r3, r4, r5, r6, r7 = "fd51:0:0:1::2", "fd51:0:0:2::2", "fd51:0:0:3::2", "fd51:0:0:5::2", "fd51:0:0:6::2", "fd51:0:0:7::2", "fd51:0:0:8::2"
	anon := mda.AnonID(a(r2), 1)
	g := &mda.Graph{Target: a("fd51:1::1"), Mode: "mda-lite", Confidence: 95, Sent: 57, Answered: 31, Rounds: 9,
		Duration: 4200 * time.Millisecond, Truncated: "max-probes", FullTTLs: []int{2}}
	g.Nodes = []mda.Node{
		node(r1, 6, time.Millisecond, 1), node(r2, 6, 2*time.Millisecond, 2),
		node(r3, 3, 3*time.Millisecond, 3, 5), node(r4, 2, 3*time.Millisecond, 3), node(anon, 1, 0, 3),
		node(r5, 3, 4*time.Millisecond, 4), node(r6, 2, 4*time.Millisecond, 4), node(r7, 1, 5*time.Millisecond, 5),
	}
	g.Nodes[4].After, g.Nodes[4].Depth = r2, 1
	g.Nodes[6].NAT = "UDP checksum rewritten"
	g.Hops = []mda.Hop{{TTL: 1, Nodes: []string{r1}}, {TTL: 2, Nodes: []string{r2}}, {TTL: 3, Nodes: []string{r3, r4, anon}},
		{TTL: 4, Nodes: []string{r5, r6}}, {TTL: 5, Nodes: []string{r3, r7}}}
	g.Links = []mda.Link{{From: r1, To: r2, Flows: 6, TTLs: []int{1}}, {From: r2, To: r3, Flows: 3, TTLs: []int{2}},
		{From: r2, To: r4, Flows: 2, TTLs: []int{2}}, {From: r2, To: anon, Flows: 1, TTLs: []int{2}},
		{From: r3, To: r5, Flows: 3, TTLs: []int{3}}, {From: r4, To: r6, Flows: 2, TTLs: []int{3}},
		{From: r5, To: r3, Flows: 1, TTLs: []int{4}}, {From: r6, To: r7, Flows: 1, TTLs: []int{4}}}
	g.Diamonds = []mda.Diamond{{Divergence: r2, TTL: 2, MaxWidth: 3, MinLength: 1, MaxLength: 3, Nodes: []string{r3, r4, anon, r5, r6, r7}}}
	fh := func(ttl int, id string) mda.FlowHop { return mda.FlowHop{TTL: ttl, Node: id} }
	g.Flows = []mda.FlowPath{
		{Flow: 50000, Hops: []mda.FlowHop{fh(1, r1), fh(2, r2), fh(3, r3), fh(4, r5), fh(5, r3)}},
		{Flow: 50001, Hops: []mda.FlowHop{fh(1, r1), fh(2, r2), fh(3, r4), fh(4, r6), fh(5, r7)}},
		{Flow: 50002, Hops: []mda.FlowHop{fh(3, anon)}},
		{Flow: 50003, Hops: []mda.FlowHop{fh(3, r3)}},
		{Flow: 50004, Hops: []mda.FlowHop{fh(1, r1), fh(3, r4)}},
		{Flow: 50005, Hops: []mda.FlowHop{fh(2, r2), fh(5, r7)}},
	}
	return g
}

func oddTarget() MultipathTarget {
	return MultipathTarget{Name: "relay6.lab", Addr: netip.MustParseAddr("fd51:1::1"), Source: netip.MustParseAddr("fd51:0:0:1::1"),
		Family: 6, Graph: oddGraph(), Notes: []string{"interrupted"}}
}

// writeAll renders run in every format, checking the SVG is well-formed XML.
func writeAll(t *testing.T, run *MultipathRun) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range MultipathFormats {
		var b bytes.Buffer
		if err := WriteMultipath(&b, f, run); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = b.Bytes()
	}
	checkXML(t, out["svg"])
	var doc MultipathDoc
	if err := json.Unmarshal(out["json"], &doc); err != nil || doc.Schema != MultipathSchema || len(doc.Targets) != len(run.Targets) {
		t.Errorf("json: %v, schema %q, %d targets", err, doc.Schema, len(doc.Targets))
	}
	return out
}

func checkXML(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Space + " " + se.Name.Local
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Errorf("svg root element %q", root)
	}
}

var goldenExt = map[string]string{"text": "txt", "json": "json", "dot": "dot", "svg": "svg"}

func TestMultipathGolden(t *testing.T) {
	fg := loadGraphs(t)
	fg.Lab.Nodes[slices.IndexFunc(fg.Lab.Nodes, func(n mda.Node) bool { return n.ID == "198.18.16.2" })].NAT = "UDP checksum rewritten"
	var many []MultipathTarget
	for _, g := range fg.Many {
		many = append(many, labTarget(g.Target.String(), g))
	}
	for name, run := range map[string]*MultipathRun{
		"lab":  mpRun(labTarget("relay.lab", fg.Lab)),
		"many": mpRun(many...),
		"odd":  mpRun(oddTarget(), MultipathTarget{Name: "gone.lab", Addr: netip.MustParseAddr("fd51:1::2"), Source: netip.MustParseAddr("fd51:0:0:1::1"), Family: 6, Notes: []string{"interrupted before this target"}}),
	} {
		t.Run(name, func(t *testing.T) {
			out := writeAll(t, run)
			checkDot(t, out["dot"])
			for _, f := range MultipathFormats {
				golden(t, "multipath-"+name+"."+goldenExt[f], out[f])
			}
		})
	}
}

// What the lab's picture must say, whatever the layout.
func TestMultipathLabContent(t *testing.T) {
	fg := loadGraphs(t)
	run := mpRun(labTarget("relay.lab", fg.Lab))
	out := writeAll(t, run)
	text := string(out["text"])
	for _, want := range []string{
		"2  198.18.2.2 -> 198.18.7.2       3     2\n",
		"4  198.18.7.2 -> 198.18.13.2      2   2-3  unequal branches\n",
		"198.18.1.2 (r1.lab.turnpath.test)",
		"6 distinct paths over",
		"reached 198.19.1.7 in 9 or 10 hops",
		"also at TTL 7 (unequal branches)",
		"silent (1st after 198.18.13.2)",
		"load balancer: 3 next hops",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q", want)
		}
	}
	var doc MultipathDoc
	if err := json.Unmarshal(out["json"], &doc); err != nil {
		t.Fatal(err)
	}
	dt := doc.Targets[0]
	if len(dt.Links) != len(fg.Lab.Links) || len(dt.Diamonds) != 2 || !dt.Diamonds[1].Unequal || dt.Diamonds[0].Unequal {
		t.Errorf("json: %d links, diamonds %+v", len(dt.Links), dt.Diamonds)
	}
	complete := 0
	for _, p := range dt.Paths {
		if p.Complete {
			complete++
		}
	}
	if complete != 6 { // 3 branches x 2 branches
		t.Errorf("json: %d complete paths, want 6", complete)
	}
	for _, f := range dt.Flows {
		if f.Path < 0 || !slices.Contains(dt.Paths[f.Path].SPorts, f.SPort) {
			t.Errorf("flow %d: path %d", f.SPort, f.Path)
		}
	}

	// dot: every node, every link with its flow count, the TTL ranks, LR.
	dot := string(out["dot"])
	for _, want := range []string{"rankdir=LR", `{ rank=same; "0:ttl3"; "0:198.18.4.2"; "0:198.18.5.2"; "0:198.18.6.2"; }`,
		`"0:*198.18.13.2+1" [label="* silent`, "style=\"rounded,dashed,filled\""} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %s", want)
		}
	}
	for _, l := range fg.Lab.Links {
		if !strings.Contains(dot, fmt.Sprintf("%q -> %q [label=\"%d\"", "0:"+l.From, "0:"+l.To, l.Flows)) {
			t.Errorf("dot lacks link %s -> %s", l.From, l.To)
		}
	}
	checkDot(t, out["dot"])

	// svg: a box per node and the source, a path per link and source link.
	svg := string(out["svg"])
	boxes := strings.Count(svg, "<g><title>")
	if boxes != len(fg.Lab.Nodes)+1 {
		t.Errorf("svg: %d boxes, want %d", boxes, len(fg.Lab.Nodes)+1)
	}
	if links := strings.Count(svg, "marker-end="); links != len(fg.Lab.Links)+1 {
		t.Errorf("svg: %d links, want %d", links, len(fg.Lab.Links)+1)
	}
}

// checkDot runs Graphviz on the dot output when it is installed.
func checkDot(t *testing.T, dot []byte) {
	t.Helper()
	bin, err := exec.LookPath("dot")
	if err != nil {
		t.Log("graphviz not installed: dot syntax not checked")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-Tsvg")
	cmd.Stdin = bytes.NewReader(dot)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("graphviz rejects the dot output: %v: %s", err, stderr.String())
	}
	checkXML(t, out)
}

// On explorations of random topologies (silent routers included) every format renders,
// and the JSON puts every flow in a path that lists it. What the paths are is package
// mda's to test (TestInferPathsRandom).
func TestMultipathRandom(t *testing.T) {
	count := 40
	if testing.Short() {
		count = 10
	}
	for seed := range uint64(count) {
		n, _ := sim.Random(rand.New(rand.NewPCG(seed, 7)), sim.RandomOptions{Silent: 0.15})
		g, err := mda.Run(context.Background(), n, n.Options(mda.DefaultOptions()))
		if err != nil {
			t.Fatal(err)
		}
		tgt := MultipathTarget{Name: "random", Addr: n.Targets[0].Addr, Source: netip.MustParseAddr("10.255.0.1"), Family: 4, Graph: g}
		out := writeAll(t, mpRun(tgt))
		var doc MultipathDoc
		if err := json.Unmarshal(out["json"], &doc); err != nil {
			t.Fatal(err)
		}
		dt := doc.Targets[0]
		if len(dt.Flows) != len(g.Flows) {
			t.Errorf("seed %d: %d flows in the JSON, %d in the graph", seed, len(dt.Flows), len(g.Flows))
		}
		for _, f := range dt.Flows {
			if f.Path < 0 || f.Path >= len(dt.Paths) || !slices.Contains(dt.Paths[f.Path].SPorts, f.SPort) {
				t.Errorf("seed %d flow %d: path %d does not list it", seed, f.SPort, f.Path)
			}
		}
	}
}

func TestPortRanges(t *testing.T) {
	for _, c := range []struct {
		in    []uint16
		limit int
		want  string
	}{
		{[]uint16{50000, 50001, 50002, 50005, 50007, 50008}, 0, "50000-50002,50005,50007-50008"},
		{[]uint16{1, 3, 5, 7, 8}, 2, "1,3,…(+3)"},
		{[]uint16{9}, 0, "9"},
		{nil, 0, ""},
	} {
		if got := portRanges(c.in, c.limit); got != c.want {
			t.Errorf("portRanges(%v, %d) = %q, want %q", c.in, c.limit, got, c.want)
		}
	}
	for in, want := range map[string]string{"6": "6", "6 7": "6 or 7", "1 2 3 4 8": "1-4 or 8", "3 5 8": "3, 5 or 8"} {
		var ttls []int
		for _, f := range strings.Fields(in) {
			n, _ := strconv.Atoi(f)
			ttls = append(ttls, n)
		}
		if got := ttlList(ttls, " or "); got != want {
			t.Errorf("ttlList(%v) = %q, want %q", ttls, got, want)
		}
	}
}

func TestWriteMultipathUnknownFormat(t *testing.T) {
	if err := WriteMultipath(io.Discard, "png", mpRun()); err == nil {
		t.Error("format png accepted")
	}
}

// The SVG opens in a real browser: headless Chromium screenshots it, and the picture has
// the SVG's size and shows the boxes in their colours.
func TestMultipathSVGChromium(t *testing.T) {
	fg := loadGraphs(t)
	var svg bytes.Buffer
	if err := WriteMultipathSVG(&svg, mpRun(labTarget("relay.lab", fg.Lab))); err != nil {
		t.Fatal(err)
	}
	img := chromiumShot(t, svg.Bytes())
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	// Count the ink, and the fills of the diamonds' ends and of the destination.
	want := map[string]int{colEnd: 0, colDest: 0, colInside: 0}
	ink := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			if r < 240 || g < 240 || bl < 240 {
				ink++
			}
			c := fmt.Sprintf("#%02x%02x%02x", r, g, bl)
			if _, ok := want[c]; ok {
				want[c]++
			}
		}
	}
	total := b.Dx() * b.Dy()
	t.Logf("screenshot %dx%d: %.1f%% ink, fills %v", w, h, 100*float64(ink)/float64(total), want)
	if ink < total/50 {
		t.Errorf("screenshot nearly blank: %d of %d pixels", ink, total)
	}
	for c, n := range want {
		if n < 1000 { // a box is about 100x40 pixels
			t.Errorf("colour %s: %d pixels, want the boxes filled with it", c, n)
		}
	}
}
