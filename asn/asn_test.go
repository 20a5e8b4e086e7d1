package asn

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
	"github.com/vishvananda/netlink"
)

// testNS is a namespace of the test's own (name tpz...) with lo up: the whois servers
// listen there and the sources dial into it, so nothing leaves the test.
func testNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "tpz" + hex.EncodeToString(b)
	if err := lab.CreateNS(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.DeleteNS(ns) })
	err := lab.InNetNS(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// listen opens a TCP listener inside ns.
func listen(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := lab.InNetNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dialIn dials from inside ns.
func dialIn(ns string) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := lab.InNetNS(ns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// labWhois starts the lab's whois service (the default topology's route objects) on
// IPv4 and IPv6 loopback of a fresh namespace.
func labWhois(t *testing.T) (*lab.WhoisServer, string, *lab.Topology) {
	ns := testNS(t)
	topo := lab.DefaultTopology()
	srv := lab.NewWhoisServer(topo.RouteObjects(), listen(t, ns, "127.0.0.1:0"), listen(t, ns, "[::1]:0"))
	t.Cleanup(func() { srv.Close() })
	return srv, ns, topo
}

// labAddrs are hop and target addresses of both families.
var labAddrs = []netip.Addr{
	netip.MustParseAddr("198.18.2.2"), netip.MustParseAddr("198.18.13.2"), netip.MustParseAddr("198.19.1.1"),
	netip.MustParseAddr("198.19.2.5"), netip.MustParseAddr("fd51:0:0:4::2"), netip.MustParseAddr("fd51:1:1::1"),
	netip.MustParseAddr("fd51:1:2::12"),
}

// checkLab compares answers with the lab's route objects.
func checkLab(t *testing.T, topo *lab.Topology, got map[netip.Addr]Info, withName func(lab.AS) string) {
	t.Helper()
	for _, a := range labAddrs {
		want, ok := topo.OriginOf(a)
		if !ok {
			t.Fatalf("no route object for %s", a)
		}
		in := got[a]
		if in.ASN != want.Origin.Number || in.Prefix != want.Prefix.String() || in.Name != withName(want.Origin) {
			t.Errorf("%s: got %+v, want AS%d %q %s", a, in, want.Origin.Number, withName(want.Origin), want.Prefix)
		}
	}
}

func TestRADBWhoisExchange(t *testing.T) {
	srv, ns, topo := labWhois(t)
	for i, server := range srv.Addrs {
		src := &RADB{Server: server.String(), Dial: dialIn(ns)}
		got, err := src.Lookup(context.Background(), labAddrs)
		if err != nil {
			t.Fatal(err)
		}
		checkLab(t, topo, got, func(as lab.AS) string { return as.Descr })
		// Byte for byte what BSD traceroute -a sends: !!, one !r per address, !q.
		want := "!!\n"
		for _, a := range labAddrs {
			if a.Is4() {
				want += "!r" + a.String() + "/32,l\n"
			} else {
				want += "!r" + a.String() + "/128,l\n"
			}
		}
		want += "!q\n"
		waitFor(t, func() bool { return len(srv.Received()) == i+1 })
		if rx := string(srv.Received()[i]); rx != want {
			t.Errorf("server received\n%q\nwant\n%q", rx, want)
		}
	}
	// An address without a route object: AS0, not a failure.
	src := &RADB{Server: srv.Addrs[0].String(), Dial: dialIn(ns)}
	got, err := src.Lookup(context.Background(), []netip.Addr{netip.MustParseAddr("203.0.113.9")})
	if err != nil || got[netip.MustParseAddr("203.0.113.9")] != (Info{}) {
		t.Errorf("unregistered address: %+v, %v", got, err)
	}
}

func TestCymruWhoisBulk(t *testing.T) {
	srv, ns, topo := labWhois(t)
	src := &CymruBulk{Server: srv.Addrs[1].String(), Dial: dialIn(ns)}
	got, err := src.Lookup(context.Background(), labAddrs)
	if err != nil {
		t.Fatal(err)
	}
	checkLab(t, topo, got, func(as lab.AS) string { return as.CymruName() })
	waitFor(t, func() bool { return len(srv.Received()) == 1 })
	rx := string(srv.Received()[0])
	if !strings.HasPrefix(rx, "begin\nverbose\n198.18.2.2\n") || !strings.HasSuffix(rx, "fd51:1:2::12\nend\n") {
		t.Errorf("bulk query %q", rx)
	}
	if got[labAddrs[0]].CC != lab.LabCC || got[labAddrs[0]].Registry != "other" {
		t.Errorf("cc/registry: %+v", got[labAddrs[0]])
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("timed out waiting")
}

// A server that accepts and never answers: the lookup ends at the resolver's bound,
// every address AS?, one warning.
func TestDeadServerBounded(t *testing.T) {
	ns := testNS(t)
	ln := listen(t, ns, "127.0.0.1:0")
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	for _, src := range []Source{
		&RADB{Server: ln.Addr().String(), Dial: dialIn(ns)},
		&CymruBulk{Server: ln.Addr().String(), Dial: dialIn(ns)},
	} {
		r := NewResolver(src)
		r.Timeout = 300 * time.Millisecond
		r.LookupPrivate = true
		var warnings []string
		r.Warn = func(s string) { warnings = append(warnings, s) }
		start := time.Now()
		got := r.Lookup(context.Background(), labAddrs)
		took := time.Since(start)
		if took > r.Timeout+askGrace+100*time.Millisecond {
			t.Errorf("%s: lookup took %v, bound %v", src.Name(), took, r.Timeout)
		}
		for _, a := range labAddrs {
			if !got[a].Failed || got[a].String() != "AS?" {
				t.Errorf("%s: %s = %+v, want AS?", src.Name(), a, got[a])
			}
		}
		// Asked again in the same run: no second wait, no second warning.
		start = time.Now()
		r.Lookup(context.Background(), labAddrs)
		if time.Since(start) > 50*time.Millisecond {
			t.Errorf("%s: a failed address was asked again", src.Name())
		}
		if r.Stats().Failures != len(labAddrs) { // counted before Lookup returned
			t.Errorf("%s: stats %+v", src.Name(), r.Stats())
		}
		if len(warnings) != 1 || strings.Contains(warnings[0], "\n") || !strings.Contains(warnings[0], "AS?") {
			t.Errorf("%s: warnings %q", src.Name(), warnings)
		}
	}
}

// fakeSource answers from a map, counting what it is asked.
type fakeSource struct {
	data  map[netip.Addr]Info
	asked atomic.Int64
	block bool
}

func (f *fakeSource) Name() string { return "fake" }

func (f *fakeSource) Lookup(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Info, error) {
	f.asked.Add(int64(len(addrs)))
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	out := map[netip.Addr]Info{}
	for _, a := range addrs {
		out[a] = f.data[a]
	}
	return out, nil
}

func TestPrivateAnsweredLocally(t *testing.T) {
	src := &fakeSource{data: map[netip.Addr]Info{netip.MustParseAddr("198.19.1.1"): {ASN: 64500}}}
	r := NewResolver(src)
	addrs := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("fd51::1"),
		netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:192.168.1.1")}
	got := r.Lookup(context.Background(), addrs)
	for _, a := range addrs {
		if !got[a.Unmap()].Private || got[a.Unmap()].String() != "private" {
			t.Errorf("%s: %+v, want private", a, got[a.Unmap()])
		}
	}
	if src.asked.Load() != 0 {
		t.Errorf("asked the source %d times about private addresses", src.asked.Load())
	}
	r = NewResolver(src)
	r.LookupPrivate = true // a lab or a private IRR: its own ranges are what it holds
	if got := r.Lookup(context.Background(), addrs[1:2]); got[addrs[1]].ASN != 64500 {
		t.Errorf("with LookupPrivate: %+v", got)
	}
	if Private(netip.MustParseAddr("8.8.8.8")) || Private(netip.MustParseAddr("2a00:1450::1")) {
		t.Error("public addresses taken for private")
	}
}

func TestCaches(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	src := &fakeSource{data: map[netip.Addr]Info{a: {ASN: 64500, Name: "A"}, b: {ASN: 64501, Name: "B"}}}
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	newR := func() *Resolver {
		r := NewResolver(src)
		r.LookupPrivate, r.CacheDir = true, dir
		r.Now = func() time.Time { return now }
		return r
	}
	r := newR()
	r.Lookup(context.Background(), []netip.Addr{a, b})
	r.Lookup(context.Background(), []netip.Addr{a, b}) // memory
	if src.asked.Load() != 2 || r.Stats().CacheHits != 0 {
		t.Fatalf("asked %d, stats %+v", src.asked.Load(), r.Stats())
	}
	if err := r.Save(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), "asn-fake") {
		t.Fatalf("cache dir holds %v (temporary files left?)", ents)
	}
	// The next run: from disk, not asked.
	r = newR()
	got := r.Lookup(context.Background(), []netip.Addr{a, b})
	if src.asked.Load() != 2 || got[a].Name != "A" || got[b].ASN != 64501 || r.Stats().CacheHits != 2 {
		t.Errorf("disk cache: asked %d, got %+v", src.asked.Load(), got)
	}
	// Past the TTL: asked again.
	now = now.Add(25 * time.Hour)
	newR().Lookup(context.Background(), []netip.Addr{a})
	if src.asked.Load() != 3 {
		t.Errorf("expired entry not asked again: asked %d", src.asked.Load())
	}
	// A corrupt cache file is an empty cache, not an error.
	os.WriteFile(filepath.Join(dir, ents[0].Name()), []byte("{not json"), 0o600)
	if got := newR().Lookup(context.Background(), []netip.Addr{b}); got[b].ASN != 64501 {
		t.Errorf("corrupt cache: %+v", got)
	}
}

func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.10")
	src := &fakeSource{data: map[netip.Addr]Info{a: {ASN: 64500}}}
	r := NewResolver(src)
	r.LookupPrivate = true
	r.Start([]netip.Addr{a})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := r.Lookup(context.Background(), []netip.Addr{a}); got[a].ASN != 64500 {
				t.Errorf("got %+v", got[a])
			}
		}()
	}
	wg.Wait()
	if src.asked.Load() != 1 {
		t.Errorf("source asked %d times", src.asked.Load())
	}
}

func TestBlockingSourceBounded(t *testing.T) {
	src := &fakeSource{block: true}
	r := NewResolver(src)
	r.Timeout, r.LookupPrivate = 100*time.Millisecond, true
	start := time.Now()
	got := r.Lookup(context.Background(), labAddrs)
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("took %v", d)
	}
	if !got[labAddrs[0]].Failed {
		t.Errorf("got %+v", got[labAddrs[0]])
	}
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileFormats(t *testing.T) {
	ip2asn := "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n8.8.8.0\t8.8.8.255\t15169\tUS\tGOOGLE\n" +
		"9.9.9.0\t9.9.9.255\t0\tNone\tNot routed\n2001:4860::\t2001:4860:ffff:ffff:ffff:ffff:ffff:ffff\t15169\tUS\tGOOGLE\n"
	pfx2as := "8.0.0.0\t9\t3356\n8.8.8.0\t24\t15169\n52.112.0.0\t14\t8075\n2001:4860::\t32\t15169_36040\n"
	csvData := "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n8.8.8.0,8.8.8.255,15169,Google LLC\n" +
		"2001:4860::,2001:4860:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC\n"
	for _, tc := range []struct {
		name, body, format string
		want               map[string]Info
	}{
		{"ip2asn.tsv", ip2asn, "ip2asn", map[string]Info{
			"8.8.8.8":         {ASN: 15169, Name: "GOOGLE", CC: "US", Prefix: "8.8.8.0/24"},
			"1.0.0.200":       {ASN: 13335, Name: "CLOUDFLARENET", CC: "US", Prefix: "1.0.0.0/24"},
			"9.9.9.9":         {},
			"2001:4860::8888": {ASN: 15169, Name: "GOOGLE", CC: "US", Prefix: "2001:4860::/32"},
			"1.0.1.0":         {},
		}},
		{"pfx2as.txt", pfx2as, "pfx2as", map[string]Info{
			"8.8.8.8":         {ASN: 15169, Prefix: "8.8.8.0/24"}, // the more specific of nested prefixes
			"8.8.9.1":         {ASN: 3356, Prefix: "8.0.0.0/9"},
			"52.113.194.132":  {ASN: 8075, Prefix: "52.112.0.0/14"},
			"2001:4860::8888": {ASN: 15169, Prefix: "2001:4860::/32"},
		}},
		{"asn.csv", csvData, "csv", map[string]Info{
			"1.0.0.1":         {ASN: 13335, Name: "Cloudflare, Inc.", Prefix: "1.0.0.0/24"},
			"8.8.4.4":         {},
			"2001:4860::8888": {ASN: 15169, Name: "Google LLC", Prefix: "2001:4860::/32"},
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			f, err := LoadFile(writeFile(t, tc.name, tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if f.Format != tc.format {
				t.Errorf("format %q, want %q", f.Format, tc.format)
			}
			for s, want := range tc.want {
				if got := f.Find(netip.MustParseAddr(s)); got != want {
					t.Errorf("%s: %+v, want %+v", s, got, want)
				}
			}
		})
	}
	// gzip is unpacked.
	p := filepath.Join(t.TempDir(), "ip2asn.tsv.gz")
	fh, _ := os.Create(p)
	zw := gzip.NewWriter(fh)
	zw.Write([]byte(ip2asn))
	zw.Close()
	fh.Close()
	if f, err := LoadFile(p); err != nil || f.Find(netip.MustParseAddr("8.8.8.8")).ASN != 15169 {
		t.Errorf("gzip: %v", err)
	}
}

func TestFileErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"1.0.0.0\t1.0.0.255\t13335\tUS\tX\n1.0.1.0\tnonsense\t1\tUS\tY\n", ":2: bad range end"},
		{"8.8.8.0\t24\t15169\n8.8.9.0\t33\t15169\n", ":2: bad prefix"},
		{"1.0.0.0,1.0.0.255,AS-x,Y\n", ":1: bad AS number"},
		{"hello world\n", ":1: unknown format"},
		{"", "no ranges"},
	} {
		p := writeFile(t, "data", tc.body)
		_, err := LoadFile(p)
		var fe *FileError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), p+tc.want) && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
}

func TestParseCymruLine(t *testing.T) {
	a, in, ok := ParseCymruLine("15169   | 8.8.8.8          | 8.8.8.0/24          | US | arin     | 1992-12-01 | GOOGLE, US")
	if !ok || a != netip.MustParseAddr("8.8.8.8") || in != (Info{ASN: 15169, Prefix: "8.8.8.0/24", CC: "US", Registry: "arin", Name: "GOOGLE, US"}) {
		t.Errorf("got %v %+v %v", a, in, ok)
	}
	if _, in, ok := ParseCymruLine("NA      | 198.51.100.1     | NA                  |    | other    |            | NA"); !ok || in.ASN != 0 || in.Prefix != "" {
		t.Errorf("NA: %+v %v", in, ok)
	}
	for _, s := range []string{"Bulk mode; whois.cymru.com [2026-01-01 00:00:00 +0000]", "AS      | IP  | BGP Prefix", "Error: no ASN or IP match on line 1."} {
		if _, _, ok := ParseCymruLine(s); ok {
			t.Errorf("%q taken for an answer", s)
		}
	}
}

func TestOriginName(t *testing.T) {
	if got := OriginName(netip.MustParseAddr("198.19.1.2")); got != "2.1.19.198.origin.asn.cymru.com" {
		t.Error(got)
	}
	want := "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.1.0.0.0.1.5.d.f.origin6.asn.cymru.com"
	if got := OriginName(netip.MustParseAddr("fd51:1:1::1")); got != want {
		t.Errorf("%s\nwant %s", got, want)
	}
}

func TestInfoString(t *testing.T) {
	for in, want := range map[Info]string{{ASN: 64500, Name: "X"}: "AS64500 X", {}: "AS0", {Private: true}: "private", {Failed: true}: "AS?"} {
		if in.Label() != want {
			t.Errorf("%+v: %q, want %q", in, in.Label(), want)
		}
	}
}
