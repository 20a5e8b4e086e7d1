package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/lab/labtest"
	"github.com/turnpath/turnpath/report"
)

// AS lookups (issue 16): bad input, the offline source, and in the lab every source
// against the lab's own services (dnsmasq's Team Cymru TXT records, the lab whois
// service the test starts, Debian's whois client as an independent client of it).

func TestASNUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tsv")
	os.WriteFile(bad, []byte("8.8.8.0\t8.8.8.255\t15169\tUS\tGOOGLE\n1.1.1.0\tnonsense\t13335\tUS\tCF\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"asn"}, "no address"},
		{[]string{"asn", "--asn", "file:" + bad, "not-an-address"}, `bad address "not-an-address"`},
		{[]string{"asn", "--asn", "whois.example", "192.0.2.1"}, "unknown --asn source"},
		{[]string{"asn", "--asn", "file:" + dir + "/missing.tsv", "192.0.2.1"}, "missing.tsv"},
		{[]string{"asn", "--asn", "file:" + bad, "192.0.2.1"}, bad + ":2: bad range end"},
		{[]string{"asn", "-z", "--asn", "radb", "192.0.2.1"}, "exclude each other"},
		{[]string{"asn", "--format", "xml", "192.0.2.1"}, "unknown --format"},
		{[]string{"trace", "--asn", "file:" + bad, "198.18.0.1"}, bad + ":2: bad range end"},
		{[]string{"multipath", "--asn", "nonsense", "198.18.0.1"}, "unknown --asn source"},
	} {
		r := run(t, 20*time.Second, tp(tc.args...)...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", tc.args, r.code, r.stderr)
		}
		oneLine(t, r, tc.want)
	}
}

// writeASNFile writes an offline data file (ip2asn TSV) for the given prefixes.
func writeASNFile(t *testing.T, rows map[string]string) string {
	t.Helper()
	var b strings.Builder
	for p, as := range rows {
		pf := netip.MustParsePrefix(p)
		last := pf.Addr()
		for a := pf.Addr(); pf.Contains(a); a = a.Next() {
			last = a
			if pf.Addr().Is6() && pf.Bits() < 112 { // a big IPv6 prefix: compute its end
				b := pf.Addr().As16()
				for i := pf.Bits(); i < 128; i++ {
					b[i/8] |= 0x80 >> (i % 8)
				}
				last = netip.AddrFrom16(b)
				break
			}
		}
		n, name, _ := strings.Cut(as, " ")
		fmt.Fprintf(&b, "%s\t%s\t%s\tZZ\t%s\n", pf.Addr(), last, n, name)
	}
	p := filepath.Join(t.TempDir(), "asn.tsv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestASNOffline(t *testing.T) {
	f := writeASNFile(t, map[string]string{"8.8.8.0/24": "15169 GOOGLE", "52.112.0.0/14": "8075 MICROSOFT-CORP-MSN-AS-BLOCK", "2001:4860::/32": "15169 GOOGLE"})
	r := run(t, 20*time.Second, tp("asn", "--asn", "file:"+f, "--cache-dir", "", "--format", "json", "8.8.8.8", "52.113.194.132", "2001:4860::8888", "10.1.1.1", "192.0.2.1")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []struct {
		Address, AS, Name string
		Private           bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"AS15169 GOOGLE", "AS8075 MICROSOFT-CORP-MSN-AS-BLOCK", "AS15169 GOOGLE", "private ", "private "}
	for i, g := range got {
		if s := g.AS + " " + g.Name; s != want[i] {
			t.Errorf("%s: %q, want %q", g.Address, s, want[i])
		}
	}
}

// asnLab is a lab with its whois service started by the test (on a free port of the
// resolver node) and a silent server beside it (accepts, never answers).
type asnLab struct {
	l       *lab.Lab
	whois   *lab.WhoisServer
	dns     string // the lab's dnsmasq
	whois4  string // HOST:PORT of the whois service, IPv4 and IPv6
	whois6  string
	silent  string // HOST:PORT of a server that never answers
	inLab   func(args ...string) []string
	cacheTo string
}

func newASNLab(t *testing.T) *asnLab {
	l := labtest.Up(t, "tpz", lab.ProfileFast)
	srv, err := l.StartWhois(43) // the port the lab's resolver sends whois.radb.net to
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	res := l.ResolverAddrs()
	var silent net.Listener
	err = lab.InNetNS(l.NS(l.Topology().Resolver()), func() (err error) {
		silent, err = net.Listen("tcp", netip.AddrPortFrom(res[0], 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // kept open, never answered
		}
	}()
	t.Cleanup(func() { silent.Close() })
	client := l.ClientNS()
	return &asnLab{l: l, whois: srv, dns: res[0].String(), whois4: srv.Addrs[0].String(), whois6: srv.Addrs[1].String(),
		silent: silent.Addr().String(), cacheTo: t.TempDir(),
		inLab: func(args ...string) []string {
			return append([]string{"ip", "netns", "exec", client, binPath}, args...)
		}}
}

// Debian's whois client, an independent client of the lab's whois service: both
// protocols, both families.
func TestASNLabWhoisClient(t *testing.T) {
	if _, err := exec.LookPath("whois"); err != nil {
		t.Skip("no whois client (apt-get install whois)")
	}
	al := newASNLab(t)
	topo := al.l.Topology()
	for _, server := range []string{al.whois4, al.whois6} {
		ap := netip.MustParseAddrPort(server)
		for _, tc := range []struct{ query, addr string }{
			{"-v 198.19.1.1", "198.19.1.1"},
			{"!r198.18.13.2/32,l", "198.18.13.2"},
			{"!rfd51:1:2::5/128,l", "fd51:1:2::5"},
		} {
			r := run(t, 20*time.Second, "ip", "netns", "exec", al.l.ClientNS(), "whois", "-h", ap.Addr().String(), "-p", fmt.Sprint(ap.Port()), "--", " "+tc.query)
			if r.code != 0 {
				t.Fatalf("whois %q: exit %d: %s", tc.query, r.code, r.stderr)
			}
			ro, _ := topo.OriginOf(netip.MustParseAddr(tc.addr))
			want := fmt.Sprintf("origin: %s", ro.Origin)
			if strings.HasPrefix(tc.query, "-v") {
				want = fmt.Sprintf("%-8d| %s", ro.Origin.Number, tc.addr)
			}
			if !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, ro.Prefix.String()) {
				t.Errorf("whois %q via %s:\n%s\nwant %q and %s", tc.query, server, r.stdout, want, ro.Prefix)
			}
		}
	}
}

// Every source gives, for each answering hop of a trace, exactly the AS the lab holds;
// a file with other data gives those other, correct answers.
func TestASNLabTrace(t *testing.T) {
	al := newASNLab(t)
	topo := al.l.Topology()
	other := map[string]string{}
	for _, ro := range topo.RouteObjects() {
		other[ro.Prefix.String()] = fmt.Sprintf("%d OTHER-%s", 65536+ro.Origin.Number-64496, ro.Node) // RFC 5398's 32-bit range
	}
	otherFile := writeASNFile(t, other)
	for _, tc := range []struct {
		name string
		args []string
		want func(ro lab.RouteObject) (uint32, string)
	}{
		{"radb", []string{"--asn", "radb", "--whois", al.whois4}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.Descr }},
		{"radb6", []string{"--asn", "radb", "--whois", al.whois6}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.Descr }},
		{"cymru-whois", []string{"--asn", "cymru-whois", "--whois", al.whois4}, func(ro lab.RouteObject) (uint32, string) {
			return ro.Origin.Number, ro.Origin.CymruName()
		}},
		{"cymru-dns", []string{"-z", "--dns-server", al.dns}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.CymruName() }},
		// The lab's resolver leads the default servers' names into the lab.
		{"radb-by-name", []string{"--asn", "radb"}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.Descr }},
		{"cymru-whois-by-name", []string{"--asn", "cymru-whois"}, func(ro lab.RouteObject) (uint32, string) {
			return ro.Origin.Number, ro.Origin.CymruName()
		}},
		{"cymru-dns-system-resolver", []string{"-z"}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.CymruName() }},
		{"file", []string{"--asn", "file:" + otherFile}, func(ro lab.RouteObject) (uint32, string) {
			return 65536 + ro.Origin.Number - 64496, "OTHER-" + ro.Node
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"trace", "-n", "--proto", "icmp", "--format", "json", "--asn-private", "--cache-dir", ""}, tc.args...)
			r := run(t, 60*time.Second, al.inLab(append(args, "198.19.1.1", "fd51:1:2::5")...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var doc report.Run
			if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.ASN == nil || doc.ASN.Failures != 0 || doc.ASN.Lookups == 0 {
				t.Errorf("asn_lookups %+v", doc.ASN)
			}
			for _, tg := range doc.Targets {
				var path []string
				for _, h := range tg.Hops {
					if len(h.AS) != len(h.Addresses) {
						t.Fatalf("%s ttl %d: %d AS for %d addresses", tg.Address, h.TTL, len(h.AS), len(h.Addresses))
					}
					for i, a := range h.Addresses {
						ro, _ := topo.OriginOf(netip.MustParseAddr(a))
						n, name := tc.want(ro)
						if got := h.AS[i]; got.ASN != n || got.Name != name {
							t.Errorf("%s ttl %d %s: AS%d %q, want AS%d %q", tg.Address, h.TTL, a, got.ASN, got.Name, n, name)
						}
						if i == 0 && (len(path) == 0 || path[len(path)-1] != fmt.Sprintf("AS%d", n)) {
							path = append(path, fmt.Sprintf("AS%d", n))
						}
					}
				}
				if strings.Join(tg.ASPath, " ") != strings.Join(path, " ") || len(path) < 2 {
					t.Errorf("%s: as_path %v, want %v", tg.Address, tg.ASPath, path)
				}
			}
		})
	}
	// Text: the AS after the address, the AS path in the summary line; csv: its columns.
	r := run(t, 60*time.Second, al.inLab("trace", "-n", "--proto", "icmp", "--asn", "radb", "--whois", al.whois4, "--asn-private", "--cache-dir", "", "198.19.2.5")...)
	if r.code != 0 || !strings.Contains(r.stdout, "198.18.2.2 [AS64497 turnpath lab core]") ||
		!strings.Contains(r.stdout, "AS path AS64496 AS64497 AS64501") {
		t.Errorf("text (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, 60*time.Second, al.inLab("trace", "-n", "--proto", "icmp", "--asn", "radb", "--whois", al.whois4, "--asn-private", "--cache-dir", "", "--format", "csv", "198.19.2.5")...)
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(rows) < 2 || rows[0][len(rows[0])-2] != "asn" {
		t.Fatalf("csv: %v %q", err, r.stdout)
	}
	for _, row := range rows[1:] {
		if row[6] == "true" && row[7] == "198.18.2.2" && (row[len(row)-2] != "AS64497" || row[len(row)-1] != "turnpath lab core") {
			t.Errorf("csv row %q", row)
		}
	}
}

// A source that never answers: the trace takes its normal time plus at most the
// lookup bound, shows AS?, warns once, and exits as it would without --asn.
func TestASNLabDeadSource(t *testing.T) {
	al := newASNLab(t)
	start := time.Now()
	base := run(t, 60*time.Second, al.inLab("trace", "-n", "--proto", "icmp", "198.19.1.1")...)
	baseTook := time.Since(start)
	start = time.Now()
	r := run(t, 60*time.Second, al.inLab("trace", "-n", "--proto", "icmp", "--asn", "radb", "--whois", al.silent, "--asn-private", "--cache-dir", "", "198.19.1.1")...)
	took := time.Since(start)
	if r.code != base.code {
		t.Errorf("exit %d, without --asn %d", r.code, base.code)
	}
	if took > baseTook+3*time.Second+2*time.Second {
		t.Errorf("trace with a dead AS source took %v, without --asn %v", took, baseTook)
	}
	t.Logf("trace: %v without --asn, %v with a source that never answers (bound 3s)", baseTook.Round(time.Millisecond), took.Round(time.Millisecond))
	if !strings.Contains(r.stdout, "[AS?]") {
		t.Errorf("no AS? in\n%s", r.stdout)
	}
	warn := strings.TrimSpace(r.stderr)
	if strings.Count(warn, "\n") != 0 || !strings.Contains(warn, "warning: AS lookup via radb "+al.silent) {
		t.Errorf("want one warning line, got %q", warn)
	}
	// json counts the failures.
	r = run(t, 60*time.Second, al.inLab("trace", "-n", "--proto", "icmp", "--format", "json", "--asn", "cymru-whois", "--whois", al.silent, "--asn-private", "--asn-timeout", "500ms", "--cache-dir", "", "198.19.1.1")...)
	var doc report.Run
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.ASN == nil || doc.ASN.Failures == 0 {
		t.Errorf("json asn_lookups %+v (%v)", doc.ASN, err)
	}
}

// The disk cache: a second run answers from it, with the whois service gone.
func TestASNLabCache(t *testing.T) {
	al := newASNLab(t)
	args := []string{"asn", "--asn", "radb", "--whois", al.whois4, "--asn-private", "--cache-dir", al.cacheTo, "198.19.1.1", "fd51:1:1::7"}
	r := run(t, 20*time.Second, al.inLab(args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "AS64500") {
		t.Fatalf("first run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	before := len(al.whois.Received())
	al.whois.Close()
	start := time.Now()
	r = run(t, 20*time.Second, al.inLab(args...)...)
	if r.code != 0 || strings.Count(r.stdout, "AS64500") != 2 || time.Since(start) > 2*time.Second {
		t.Errorf("cached run: exit %d in %v\n%s%s", r.code, time.Since(start), r.stdout, r.stderr)
	}
	if len(al.whois.Received()) != before {
		t.Error("the cached run asked the server")
	}
}

// multipath json nodes and the SVG carry the AS.
func TestASNLabMultipath(t *testing.T) {
	al := newASNLab(t)
	topo := al.l.Topology()
	svg := filepath.Join(t.TempDir(), "mp.svg")
	r := run(t, 90*time.Second, al.inLab("multipath", "-n", "--proto", "icmp", "--format", "json", "-z", "--dns-server", al.dns, "--asn-private", "--cache-dir", "", "--svg", svg, "198.19.1.1")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var doc report.MultipathDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	nodes := 0
	for _, n := range doc.Targets[0].Nodes {
		if n.Address == "" {
			continue
		}
		ro, _ := topo.OriginOf(netip.MustParseAddr(n.Address))
		if n.AS == nil || n.AS.ASN != ro.Origin.Number || n.AS.Name != ro.Origin.CymruName() {
			t.Errorf("node %s: %+v, want %s", n.Address, n.AS, ro.Origin)
		}
		nodes++
	}
	if doc.ASN == nil || doc.ASN.Lookups < 5 || doc.ASN.Failures != 0 {
		t.Errorf("asn_lookups %+v", doc.ASN)
	}
	if nodes < 5 || len(doc.Targets[0].ASPath) < 4 {
		t.Errorf("%d nodes, as_path %v", nodes, doc.Targets[0].ASPath)
	}
	b, _ := os.ReadFile(svg)
	if !strings.Contains(string(b), "AS64498 TURNPATH-TRANSIT-A") || !strings.Contains(string(b), colASForTest) {
		t.Errorf("svg lacks AS boxes or boundaries")
	}
}

const colASForTest = "#c2255c"
