package lab

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// nodesAt returns the node names that may answer at ttl, "name*" for silent ones.
func nodesAt(tt *TargetTruth, ttl int) string {
	var out []string
	for _, r := range tt.HopsAt(ttl) {
		n := r.Node
		if r.Silent {
			n += "*"
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return strings.Join(out, ",")
}

func TestTruthHopsWildcard(t *testing.T) {
	tr := DefaultTruth()
	// The hop table of the task, for both families.
	want := []string{"", "r1", "r2", "r3a,r3b,r3c", "r4", "r5a,r5b", "r5c,r6", "r6,r7*", "r7*,r8", "r8,t1", "t1", "t1"}
	for _, a := range []string{"198.19.1.7", "fd51:1:1::7", "198.19.1.0", "fd51:1:1::ff"} {
		tt, ok := tr.TargetTruth(netip.MustParseAddr(a))
		if !ok {
			t.Fatalf("%s: no truth", a)
		}
		for ttl := 1; ttl < len(want); ttl++ {
			if got := nodesAt(tt, ttl); got != want[ttl] {
				t.Errorf("%s ttl %d: %s, want %s", a, ttl, got, want[ttl])
			}
		}
		if got := tt.ReachedAt(); !slices.Equal(got, []int{9, 10}) {
			t.Errorf("%s: reached at %v", a, got)
		}
		if n := len(tt.Paths()); n != 6 {
			t.Errorf("%s: %d paths, want 6 (3 x 2 branches)", a, n)
		}
		if tt.Group() != "wildcard" || tt.Node() != "t1" || tt.Mode() != ModeWildcard {
			t.Errorf("%s: group %s node %s", a, tt.Group(), tt.Node())
		}
	}
}

func TestTruthAddresses(t *testing.T) {
	tr := DefaultTruth()
	v4, _ := tr.TargetTruth(netip.MustParseAddr("198.19.1.7"))
	v6, _ := tr.TargetTruth(netip.MustParseAddr("fd51:1:1::7"))
	addrs := func(tt *TargetTruth, ttl int) string {
		var s []string
		for _, a := range tt.AddrsAt(ttl) {
			s = append(s, a.String())
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		tt   *TargetTruth
		ttl  int
		want string
	}{
		{v4, 1, "198.18.1.2"},
		{v4, 3, "198.18.4.2 198.18.5.2 198.18.6.2"},
		// Both families: the address of the input interface (IPv4 routers have
		// icmp_errors_use_inbound_ifaddr=1), so one per incoming branch.
		{v4, 4, "198.18.7.2 198.18.8.2 198.18.9.2"},
		{v4, 6, "198.18.12.2 198.18.13.2"},
		{v4, 7, "198.18.14.2"},
		{v6, 4, "fd51:0:0:7::2 fd51:0:0:8::2 fd51:0:0:9::2"},
		{v6, 6, "fd51:0:0:12::2 fd51:0:0:13::2"},
		{v6, 7, "fd51:0:0:14::2"},
		{v4, 9, "198.18.16.2 198.19.1.7"},
	} {
		if got := addrs(c.tt, c.ttl); got != c.want {
			t.Errorf("%v ttl %d: %s, want %s", c.tt.Addr(), c.ttl, got, c.want)
		}
	}
	if v4.STUNReplyFrom().String() != "198.18.17.2" || v6.STUNReplyFrom().String() != "fd51:0:0:17::2" {
		t.Errorf("STUN reply from %v, %v", v4.STUNReplyFrom(), v6.STUNReplyFrom())
	}
	if got := v6.UnreachableFrom(); len(got) != 1 || got[0].String() != "fd51:0:0:17::2" {
		t.Errorf("v6 wildcard unreachable from %v", got)
	}
	if got := v4.UnreachableFrom(); len(got) != 1 || got[0] != v4.Addr() {
		t.Errorf("v4 wildcard unreachable from %v", got)
	}
	links := v4.Links()
	for _, l := range []HopLink{{"198.18.13.2", "r7"}, {"r7", "198.18.16.2"}, {"198.18.16.2", "198.19.1.7"}, {"198.18.12.2", "198.18.14.2"}, {"198.18.14.2", "r7"}} {
		if !slices.Contains(links, l) {
			t.Errorf("links lack %v: %v", l, links)
		}
	}
	// Long branch path, element by element.
	var long Path
	for _, p := range v4.Paths() {
		if len(p) == 10 && p[2].Node == "r3b" {
			long = p
		}
	}
	if got := strings.Join(long.Nodes(), " "); got != "r1 r2 r3b r4 r5b r5c r6 r7 r8 t1" {
		t.Errorf("long path %s", got)
	}
	if !long[7].Silent || long[7].Addr.IsValid() || !long[9].Destination {
		t.Errorf("long path flags: %+v", long)
	}
}

func TestTruthBound(t *testing.T) {
	for _, a := range []string{"198.19.2.1", "198.19.2.16", "fd51:1:2::16"} {
		tt, ok := DefaultTruth().TargetTruth(netip.MustParseAddr(a))
		if !ok {
			t.Fatalf("%s: no truth", a)
		}
		if got := strings.Join(tt.Paths()[0].Nodes(), " "); got != "r1 r2 r9 t2" || len(tt.Paths()) != 1 {
			t.Errorf("%s: paths %v", a, tt.Paths())
		}
		if tt.STUNReplyFrom() != tt.Addr() || tt.Group() != "bound" {
			t.Errorf("%s: STUN reply from %v", a, tt.STUNReplyFrom())
		}
	}
	if _, ok := DefaultTruth().TargetTruth(netip.MustParseAddr("198.19.2.17")); ok {
		t.Errorf("198.19.2.17 is not a target")
	}
	if _, ok := DefaultTruth().TargetTruth(netip.MustParseAddr("::ffff:198.19.2.3")); !ok {
		t.Errorf("IPv4-mapped lookup failed")
	}
}

func TestTruthJSON(t *testing.T) {
	tr := DefaultTruth()
	b, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Client  map[string]string `json:"client"`
		Targets []struct {
			Target        string `json:"target"`
			Family        string `json:"family"`
			Group         string `json:"group"`
			STUNReplyFrom string `json:"stun_reply_from"`
			ReachedAt     []int  `json:"reached_at"`
			Hops          []struct {
				TTL        int `json:"ttl"`
				Responders []struct {
					Node   string `json:"node"`
					Addr   string `json:"addr"`
					Silent bool   `json:"silent"`
				} `json:"responders"`
			} `json:"hops"`
			Links []HopLink     `json:"links"`
			Paths [][]Responder `json:"paths"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Targets) != len(tr.Targets()) || doc.Client["ipv4"] != "198.18.1.1" {
		t.Fatalf("%d targets, client %v", len(doc.Targets), doc.Client)
	}
	d := doc.Targets[7]
	if d.Target != "198.19.1.7" || d.Family != "ipv4" || d.Group != "wildcard" || len(d.Hops) != 10 || len(d.Paths) != 6 {
		t.Errorf("target 7: %+v", d)
	}
	h := d.Hops[6] // TTL 7
	if h.TTL != 7 || len(h.Responders) != 2 || h.Responders[1].Node != "r7" || !h.Responders[1].Silent || h.Responders[1].Addr != "" {
		t.Errorf("ttl 7: %+v", h)
	}
}

func TestTruthRouters(t *testing.T) {
	tr := DefaultTruth()
	v4, _ := tr.TargetTruth(netip.MustParseAddr("198.19.1.7"))
	v6, _ := tr.TargetTruth(netip.MustParseAddr("fd51:1:1::7"))
	for _, c := range []struct {
		tt   *TargetTruth
		want string
	}{
		{v4, "r1 198.18.1.2; r2 198.18.2.2; r3a 198.18.4.2; r3b 198.18.5.2; r3c 198.18.6.2; r4 198.18.7.2 198.18.8.2 198.18.9.2; " +
			"r5a 198.18.10.2; r5b 198.18.11.2; r5c 198.18.12.2; r6 198.18.13.2 198.18.14.2; r8 198.18.16.2"},
		{v6, "r1 fd51:0:0:1::2; r2 fd51:0:0:2::2; r3a fd51:0:0:4::2; r3b fd51:0:0:5::2; r3c fd51:0:0:6::2; " +
			"r4 fd51:0:0:7::2 fd51:0:0:8::2 fd51:0:0:9::2; r5a fd51:0:0:10::2; r5b fd51:0:0:11::2; r5c fd51:0:0:12::2; " +
			"r6 fd51:0:0:13::2 fd51:0:0:14::2; r8 fd51:0:0:16::2"},
	} {
		var got []string
		for _, r := range c.tt.Routers() {
			s := r.Node
			for _, a := range r.Addrs {
				s += " " + a.String()
			}
			got = append(got, s)
		}
		if g := strings.Join(got, "; "); g != c.want {
			t.Errorf("%v routers:\n got %s\nwant %s", c.tt.Addr(), g, c.want)
		}
	}
	// Every address a target's truth names belongs to the router the truth says.
	for _, tt := range tr.All() {
		for _, r := range tt.Routers() {
			for _, a := range r.Addrs {
				if n, ok := tr.RouterOf(a); !ok || n != r.Node {
					t.Errorf("%v: %v belongs to %q, truth says %s", tt.Addr(), a, n, r.Node)
				}
			}
		}
	}
	var r4 Router
	for _, r := range tr.Routers() {
		if r.Node == "r4" {
			r4 = r
		}
	}
	if !r4.InboundErrors || !r4.IPIDCounter || len(r4.Addrs(IPv4)) != 5 || r4.Addrs(IPv4)[4].String() != "198.18.11.1" {
		t.Errorf("r4: %+v", r4)
	}
	// A router that answers from its route back (icmp_errors_use_inbound_ifaddr=0)
	// answers every branch from one address.
	topo := DefaultTopology()
	for i := range topo.Nodes {
		topo.Nodes[i].InboundErrors = false
	}
	old, err := NewTruth(topo)
	if err != nil {
		t.Fatal(err)
	}
	o4, _ := old.TargetTruth(netip.MustParseAddr("198.19.1.7"))
	if got := o4.AddrsAt(4); len(got) != 1 || got[0].String() != "198.18.7.2" {
		t.Errorf("route-back r4 answers from %v", got)
	}
}
