package lab

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestDefaultTopologyValid(t *testing.T) {
	if err := DefaultTopology().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestAddressing(t *testing.T) {
	topo := DefaultTopology()
	for _, c := range []struct {
		node, peer, name, v4, v6 string
	}{
		{"client", "r1", "l1-r1", "198.18.1.1/24", "fd51:0:0:1::1/64"},
		{"r1", "client", "l1-client", "198.18.1.2/24", "fd51:0:0:1::2/64"},
		{"r9", "r2", "l18-r2", "198.18.18.2/24", "fd51:0:0:18::2/64"},
		{"r2", "r9", "l18-r9", "198.18.18.1/24", "fd51:0:0:18::1/64"},
		{"t1", "r8", "l17-r8", "198.18.17.2/24", "fd51:0:0:17::2/64"},
	} {
		i, ok := topo.IfaceTo(c.node, c.peer)
		if !ok || i.Name != c.name || i.Addr4.String() != c.v4 || i.Addr6.String() != c.v6 {
			t.Errorf("%s->%s: got %+v", c.node, c.peer, i)
		}
	}
	if got := topo.ClientAddr(IPv4).String(); got != "198.18.1.1" {
		t.Errorf("client v4 %s", got)
	}
	if got := topo.PTRName(topo.Ifaces("r3b")[0]); got != "r3b-link5.lab.turnpath.test" {
		t.Errorf("PTR name %s", got)
	}
	seen := map[netip.Addr]string{}
	for _, i := range topo.AllIfaces() {
		for _, a := range []netip.Addr{i.Addr4.Addr(), i.Addr6.Addr()} {
			if other, dup := seen[a]; dup {
				t.Errorf("%v on %s and %s", a, other, i.Node)
			}
			seen[a] = i.Node
			if !LabSpace4.Contains(a) && !LabSpace6.Contains(a) {
				t.Errorf("%v outside the lab space", a)
			}
		}
	}
}

func TestTargets(t *testing.T) {
	topo := DefaultTopology()
	w, b := topo.Targets("wildcard"), topo.Targets("bound")
	if len(w) != 512 || w[0].String() != "198.19.1.0" || w[255].String() != "198.19.1.255" || w[511].String() != "fd51:1:1::ff" {
		t.Errorf("wildcard targets: %d %v %v", len(w), w[0], w[len(w)-1])
	}
	if len(b) != 32 || b[0].String() != "198.19.2.1" || b[15].String() != "198.19.2.16" ||
		b[16].String() != "fd51:1:2::1" || b[25].String() != "fd51:1:2::10" || b[31].String() != "fd51:1:2::16" {
		t.Errorf("bound targets: %v", b)
	}
	if len(topo.AllTargets()) < 272 {
		t.Errorf("only %d targets", len(topo.AllTargets()))
	}
}

func TestRoutes(t *testing.T) {
	topo := DefaultTopology()
	for _, n := range topo.Nodes {
		for _, r := range topo.Routes(n.Name) {
			if r.Dst.Bits() == 0 {
				t.Errorf("%s: default route %v", n.Name, r.Dst)
			}
			if !LabSpace4.Contains(r.Dst.Addr()) && !LabSpace6.Contains(r.Dst.Addr()) {
				t.Errorf("%s: route %v outside the lab space", n.Name, r.Dst)
			}
		}
	}
	ecmp := func(node, dst string) []string {
		r, ok := topo.Lookup(node, netip.MustParseAddr(dst))
		if !ok {
			return nil
		}
		var hops []string
		for _, h := range r.Via {
			hops = append(hops, h.Node+"@"+h.Gw.String())
		}
		return hops
	}
	for _, c := range []struct {
		node, dst string
		want      []string
	}{
		{"client", "198.19.1.7", []string{"r1@198.18.1.2"}},
		{"client", "fd51:1:2::3", []string{"r1@fd51:0:0:1::2"}},
		{"r2", "198.19.1.7", []string{"r3a@198.18.4.2", "r3b@198.18.5.2", "r3c@198.18.6.2"}},
		{"r2", "fd51:1:1::7", []string{"r3a@fd51:0:0:4::2", "r3b@fd51:0:0:5::2", "r3c@fd51:0:0:6::2"}},
		{"r4", "198.19.1.7", []string{"r5a@198.18.10.2", "r5b@198.18.11.2"}},
		{"r2", "198.19.2.7", []string{"r9@198.18.18.2"}},
		{"r6", "198.18.1.1", []string{"r5a@198.18.13.1"}}, // one way back, via the short branch
		{"t1", "fd51:0:0:1::1", []string{"r8@fd51:0:0:17::1"}},
		{"r1", "198.18.99.1", nil}, // r1 has no catch-all: the client is connected
		{"client", "10.0.0.1", nil},
	} {
		if got := ecmp(c.node, c.dst); !slices.Equal(got, c.want) {
			t.Errorf("%s -> %s: %v, want %v", c.node, c.dst, got, c.want)
		}
	}
	if r, ok := topo.Lookup("t1", netip.MustParseAddr("198.19.1.200")); !ok || !r.Local {
		t.Errorf("t1 does not hold 198.19.1.200: %+v", r)
	}
}

func TestValidateCatchesMistakes(t *testing.T) {
	for name, mutate := range map[string]func(*Topology){
		"next hop not a neighbour": func(tp *Topology) { tp.Nodes[2].Forward["wildcard"] = []string{"r4"} },
		"loop": func(tp *Topology) {
			for i := range tp.Nodes {
				if tp.Nodes[i].Name == "r4" {
					tp.Nodes[i].Forward["wildcard"] = []string{"r3a"}
				}
			}
		},
		"duplicate link number": func(tp *Topology) { tp.Links[1].N = 1 },
		"group outside lab space": func(tp *Topology) {
			tp.Groups[0].Prefix4 = netip.MustParsePrefix("10.0.0.0/24")
		},
		"unreachable target": func(tp *Topology) { delete(tp.Nodes[1].Forward, "bound") },
	} {
		tp := DefaultTopology()
		mutate(tp)
		if err := tp.Validate(); err == nil {
			t.Errorf("%s: Validate passed", name)
		}
	}
}

func TestHashSeedsDistinct(t *testing.T) {
	seen := map[uint32]bool{}
	for _, n := range DefaultTopology().Nodes {
		s := HashSeed(n.Name)
		if s == 0 || seen[s] {
			t.Errorf("%s: seed %d zero or duplicate", n.Name, s)
		}
		seen[s] = true
	}
}

func TestSysctls(t *testing.T) {
	get := func(list []sysctl, key string) string {
		v := ""
		for _, s := range list {
			if s.key == key {
				v = s.value // last write wins, as when writing them in order
			}
		}
		return v
	}
	r7, _ := DefaultTopology().Node("r7")
	r2, _ := DefaultTopology().Node("r2")
	client, _ := DefaultTopology().Node("client")
	for _, c := range []struct {
		n       Node
		profile string
		key     string
		want    string
	}{
		{r7, ProfileFast, "net.ipv4.icmp_msgs_per_sec", "0"},
		{r7, ProfileRealistic, "net.ipv4.icmp_msgs_burst", "0"},
		{r2, ProfileFast, "net.ipv4.icmp_ratelimit", "0"},
		{r2, ProfileRealistic, "net.ipv4.icmp_ratelimit", "1000"},
		{r2, ProfileRealistic, "net.ipv6.icmp.ratelimit", "1000"},
		{r2, ProfileFast, "net.ipv4.fib_multipath_hash_policy", "3"},
		{r2, ProfileFast, "net.ipv6.fib_multipath_hash_fields", "0x0037"},
		{r2, ProfileFast, "net.ipv4.ip_forward", "1"},
		{client, ProfileFast, "net.ipv4.ip_forward", ""},
		{client, ProfileFast, "net.ipv4.conf.all.rp_filter", "0"},
	} {
		if got := get(sysctlsFor(c.n, c.profile), c.key); got != c.want {
			t.Errorf("%s %s %s = %q, want %q", c.n.Name, c.profile, c.key, got, c.want)
		}
	}
}

func TestServiceConfigs(t *testing.T) {
	topo := DefaultTopology()
	w, _ := topo.Group("wildcard")
	b, _ := topo.Group("bound")
	wc, bc := coturnConfig(topo, w, "/run/x"), coturnConfig(topo, b, "/run/x")
	for _, want := range []string{"listening-ip=0.0.0.0\n", "listening-ip=::\n", "lt-cred-mech", "no-cli", "no-tls", "no-dtls", "listening-port=3478", "pidfile=/run/x/"} {
		if !strings.Contains(wc, want) {
			t.Errorf("wildcard coturn config lacks %q", want)
		}
	}
	if strings.Count(bc, "listening-ip=") != 32 || !strings.Contains(bc, "listening-ip=fd51:1:2::16\n") {
		t.Errorf("bound coturn config:\n%s", bc)
	}
	dc := dnsmasqConfig(topo)
	if n := strings.Count(dc, "host-record="); n != len(topo.AllIfaces()) {
		t.Errorf("dnsmasq config has %d host records, want %d", n, len(topo.AllIfaces()))
	}
	if !strings.Contains(dc, "host-record=r3b-link5.lab.turnpath.test,198.18.5.2,fd51:0:0:5::2\n") || !strings.Contains(dc, "no-resolv") {
		t.Errorf("dnsmasq config:\n%s", dc)
	}
	if rc := resolvConf(topo); !strings.Contains(rc, "nameserver 198.18.3.2\n") {
		t.Errorf("resolv.conf:\n%s", rc)
	}
}

// TestBadInput covers the error paths that need no privileges.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	var ue *UsageError
	if _, err := Up(ctx, Options{Profile: "slow"}); !errors.As(err, &ue) {
		t.Errorf("unknown profile: %v", err)
	}
	if _, err := Up(ctx, Options{Prefix: "a-b"}); !errors.As(err, &ue) {
		t.Errorf("bad prefix: %v", err)
	}
	if _, err := Up(ctx, Options{Prefix: "../etc"}); !errors.As(err, &ue) {
		t.Errorf("bad prefix: %v", err)
	}
	err := Down(ctx, "tpnothere999")
	if !errors.Is(err, ErrNotUp) || !strings.Contains(err.Error(), "no lab with prefix tpnothere999 is up") {
		t.Errorf("Down with nothing up: %v", err)
	}
	if _, err := Open("tpnothere999"); !errors.Is(err, ErrNotUp) {
		t.Errorf("Open with nothing up: %v", err)
	}
	s, err := Status("tpnothere999")
	if err != nil || s.Up() || !errors.Is(s.Err(), ErrNotUp) {
		t.Errorf("Status with nothing up: %v %v", err, s.Err())
	}
	if _, err := ExecArgs("tpnothere999", []string{"true"}); !errors.Is(err, ErrNotUp) {
		t.Errorf("ExecArgs with nothing up: %v", err)
	}
}
