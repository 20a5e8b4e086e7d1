package report

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/mda/sim"
)

// The lab as it answers now (routers from their inbound interfaces): every format shows
// the routers with their interfaces, at the interface level and at the router level.
func TestMultipathRouters(t *testing.T) {
	n := sim.LabInbound(1)
	g, err := mda.Run(context.Background(), n, n.Options(mda.DefaultOptions()))
	if err != nil {
		t.Fatal(err)
	}
	g.Target = n.TargetAddrs()[0]
	tgt := MultipathTarget{Addr: g.Target, Source: netip.MustParseAddr("198.18.1.1"), Family: 4, Graph: g}
	out := func(format string, run *MultipathRun) string {
		var b bytes.Buffer
		if err := WriteMultipath(&b, format, run); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	run := mpRun(tgt)
	text := out("text", run)
	for _, want := range []string{
		"2 routers answering from several interfaces (alias resolution):",
		"198.18.7.2   198.18.7.2 198.18.8.2 198.18.9.2",
		"router 198.18.7.2 (answers from 3 interfaces)",
		"2 routers answering from several interfaces;",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	var doc struct {
		Targets []struct {
			Level   string `json:"level"`
			Routers []struct {
				ID         string   `json:"id"`
				Interfaces []string `json:"interfaces"`
				Evidence   []struct {
					Kind string `json:"kind"`
				} `json:"evidence"`
			} `json:"routers"`
			Nodes []struct {
				ID     string `json:"id"`
				Router string `json:"router"`
			} `json:"nodes"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out("json", run)), &doc); err != nil {
		t.Fatal(err)
	}
	d := doc.Targets[0]
	if d.Level != "interface" || len(d.Routers) != 2 || d.Routers[0].ID != "198.18.7.2" || len(d.Routers[0].Interfaces) != 3 ||
		len(d.Routers[0].Evidence) == 0 || d.Routers[0].Evidence[0].Kind != "ip-id" {
		t.Errorf("json routers: %+v", d)
	}
	routed := 0
	for _, nd := range d.Nodes {
		if nd.Router != "" {
			routed++
		}
	}
	if routed != 5 {
		t.Errorf("%d nodes with a router, want 5", routed)
	}
	dot := out("dot", run)
	for _, want := range []string{`subgraph cluster_0_router0 { label="router 198.18.7.2"`, `"0:198.18.8.2";`} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %q", want)
		}
	}
	if svg := out("svg", run); !strings.Contains(svg, "router 198.18.7.2 answers from 198.18.7.2, 198.18.8.2, 198.18.9.2") {
		t.Errorf("svg lacks the router note")
	}
	// Router level: one node per router.
	rt := tgt
	rt.Graph = g.RouterGraph()
	text = out("text", mpRun(rt))
	if !strings.Contains(text, "router: also answers from 198.18.8.2, 198.18.9.2") || strings.Contains(text, "  198.18.8.2  ") {
		t.Errorf("router-level text: r4 not one row:\n%s", text)
	}
}

// The lab's IPv6 side without rate limiting: nothing tells r4's and r6's addresses to be
// one router each. Text and JSON say so, and keep them apart.
func TestMultipathUnresolvedRouters(t *testing.T) {
	n := sim.LabInbound6(1)
	g, err := mda.Run(context.Background(), n, n.Options(mda.DefaultOptions()))
	if err != nil {
		t.Fatal(err)
	}
	g.Target = n.TargetAddrs()[0]
	run := mpRun(MultipathTarget{Addr: g.Target, Source: netip.MustParseAddr("fd51:0:0:1::1"), Family: 6, Graph: g})
	var b bytes.Buffer
	if err := WriteMultipath(&b, "text", run); err != nil {
		t.Fatal(err)
	}
	if want := "may be one router, unresolved: fd51:0:0:7::2 fd51:0:0:8::2 fd51:0:0:9::2: no IP ID counter"; !strings.Contains(b.String(), want) {
		t.Errorf("text lacks %q:\n%s", want, b.String())
	}
	b.Reset()
	if err := WriteMultipath(&b, "json", run); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Targets []struct {
			Routers    []json.RawMessage `json:"routers"`
			Unresolved []struct {
				Interfaces []string `json:"interfaces"`
				Evidence   []struct {
					Kind string `json:"kind"`
				} `json:"evidence"`
			} `json:"unresolved_routers"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	d := doc.Targets[0]
	if len(d.Routers) != 0 || len(d.Unresolved) != 2 || len(d.Unresolved[0].Interfaces) != 3 || d.Unresolved[0].Evidence[0].Kind != "unresolved" {
		t.Errorf("json: %+v", d)
	}
}
