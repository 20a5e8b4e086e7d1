package report

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
)

// scanRun is a small scan's report: a diamond after r1, a silent router, two families.
func scanRun() *Run {
	return &Run{Version: "test", Engine: "socket", Options: Options{Proto: "udp", Port: 3478},
		Targets: make([]Target, 3),
		Scan: &ScanSummary{Probes: 40, DurationMS: 1200,
			Interfaces: []string{"198.18.1.2", "198.18.2.2", "198.18.3.2", "198.18.4.2", "fd51:0:0:1::2"},
			Links: []ScanLink{{From: "198.18.1.2", To: "198.18.2.2"}, {From: "198.18.1.2", To: "198.18.3.2"},
				{From: "198.18.2.2", To: "*"}, {From: "198.18.3.2", To: "*"}, {From: "*", To: "198.18.4.2"},
				{From: "198.18.1.2", To: "198.18.2.2"}},
			Responders: []ScanResponder{{Addr: "198.18.1.2", RateLimited: true}}}}
}

// The union view as SVG: well-formed, every interface one box, every distinct link one
// curve (and one from the prober to each first hop), columns following the links.
func TestWriteScanSVG(t *testing.T) {
	var b bytes.Buffer
	if err := WriteScanSVG(&b, scanRun()); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name `xml:"svg"`
		Groups  []struct {
			Class string `xml:"class,attr"`
			Title string `xml:"title"`
			Rect  struct {
				X      float64 `xml:"x,attr"`
				Stroke string  `xml:"stroke,attr"`
			} `xml:"rect"`
		} `xml:"g"`
	}
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b.String())
	}
	x := map[string]float64{}
	ifaces := 0
	for _, g := range doc.Groups {
		switch g.Class {
		case "iface":
			ifaces++
			x[strings.Fields(g.Title)[0]] = g.Rect.X
			if strings.HasPrefix(g.Title, "198.18.1.2") && g.Rect.Stroke != "#e8590c" {
				t.Errorf("rate-limited router not outlined: %+v", g)
			}
		case "other":
			x[g.Title] = g.Rect.X
		}
	}
	if ifaces != 5 {
		t.Errorf("%d interface boxes, want 5", ifaces)
	}
	// 4 distinct links between interfaces and the silent router's 3, the prober's 2.
	if n := strings.Count(b.String(), `class="link"`); n != 7 {
		t.Errorf("%d links drawn, want 7", n)
	}
	silent := "a router that never answers (IPv4)"
	if !(x["198.18.1.2"] < x["198.18.2.2"] && x["198.18.2.2"] == x["198.18.3.2"] && x["198.18.3.2"] < x[silent] &&
		x[silent] < x["198.18.4.2"]) {
		t.Errorf("columns do not follow the links: %v", x)
	}
	if err := WriteScanSVG(&b, &Run{}); err == nil {
		t.Error("a run without a scan drawn")
	}
}

// The SVG opens in a real browser: headless Chromium screenshots it at the SVG's size,
// and the picture is not blank.
func TestScanSVGChromium(t *testing.T) {
	var svg bytes.Buffer
	if err := WriteScanSVG(&svg, scanRun()); err != nil {
		t.Fatal(err)
	}
	img := chromiumShot(t, svg.Bytes())
	bd := img.Bounds()
	ink := 0
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 < 240 || g>>8 < 240 || b>>8 < 240 {
				ink++
			}
		}
	}
	if ink < bd.Dx()*bd.Dy()/50 {
		t.Errorf("screenshot nearly blank: %d of %d pixels", ink, bd.Dx()*bd.Dy())
	}
}
