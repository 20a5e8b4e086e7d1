package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/trace"
)

// sampleAS holds the sample's responders: r1 private, r2 and r4 in one AS, the
// other TTL-4 responder in a private ASN, the relay's answer in another AS.
func sampleAS(a netip.Addr) asn.Info {
	switch a.String() {
	case "198.18.1.1":
		return asn.Info{Private: true}
	case "198.18.2.1", "198.18.4.1":
		return asn.Info{ASN: 64497, Name: "CORE"}
	case "198.18.5.1":
		return asn.Info{ASN: 64512, Name: "PRIVATE-ASN"}
	case "198.18.14.2":
		return asn.Info{ASN: 64500, Name: "RELAY"}
	}
	return asn.Info{Failed: true}
}

// The sample with AS lookups and an MPLS-labelled router that names its interface.
func TestASAndExtensionsInEveryFormat(t *testing.T) {
	info, res := sample()
	info.AS = sampleAS
	ext := *res.Hops[1].Replies[0]
	ext.MPLS = []trace.MPLSLabel{{Label: 19380, TC: 0, S: true, TTL: 1}}
	ext.Interfaces = []trace.IfaceInfo{{Role: "incoming", IfIndex: 7, Name: "ge-0/0/1", Addr: netip.MustParseAddr("198.18.2.1"), MTU: 1500}}
	res.Hops[1].Replies[0] = &ext
	tgt := Build(info, res, names)
	run := sampleRun(tgt)

	if got := strings.Join(tgt.ASPath, " "); got != "AS64497 AS64500" {
		t.Errorf("as path %q (private collapsed, repeats once)", got)
	}
	var text bytes.Buffer
	if err := WriteText(&text, run, tgt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"198.18.1.1 (r1.lab.turnpath.test) [private]",
		"198.18.2.1 [AS64497 CORE]",
		"     198.18.2.1: MPLS label 19380 (TC 0, S 1, TTL 1)\n",
		"     198.18.2.1: incoming interface: ifIndex 7, name ge-0/0/1, address 198.18.2.1, MTU 1500\n",
		"; AS path AS64497 AS64500\n",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, run); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Targets []struct {
			ASPath []string `json:"as_path"`
			Hops   []struct {
				AS     []asn.Info `json:"as"`
				Probes []struct {
					MPLS       []trace.MPLSLabel `json:"mpls"`
					Interfaces []trace.IfaceInfo `json:"interfaces"`
				} `json:"probes"`
			} `json:"hops"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	h2 := doc.Targets[0].Hops[1]
	if h2.AS[0].ASN != 64497 || h2.Probes[0].Interfaces[0].Name != "ge-0/0/1" || h2.Probes[0].MPLS[0].Label != 19380 {
		t.Errorf("json hop 2: %+v", h2)
	}

	var b bytes.Buffer
	c := NewCSV(&b)
	c.AS = true
	if err := c.Write(tgt); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	r := rows[4] // TTL 2, attempt 0
	if r[col["mpls"]] != "19380/0/1/1" || r[col["interfaces"]] != "incoming:7:ge-0/0/1:198.18.2.1:1500" ||
		r[col["asn"]] != "AS64497" || r[col["as_name"]] != "CORE" {
		t.Errorf("csv row %q", r)
	}
}
