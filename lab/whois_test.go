package lab

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// talk runs one connection of the whois service over a pipe: the client sends query
// and reads everything until the service closes.
func talk(t *testing.T, s *WhoisServer, query string) string {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve(server)
	}()
	go io.WriteString(client, query)
	out, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	return string(out)
}

func TestWhoisIRRd(t *testing.T) {
	topo := DefaultTopology()
	s := &WhoisServer{Routes: topo.RouteObjects(), stop: make(chan struct{})}
	obj := func(p string) string {
		r, ok := topo.OriginOf(netip.MustParsePrefix(p).Addr())
		if !ok || r.Prefix.String() != p {
			t.Fatalf("no route object %s", p)
		}
		return r.RPSL()
	}
	data := func(objs ...string) string {
		c := strings.TrimSuffix(strings.Join(objs, "\n"), "\n")
		return "A" + strconv.Itoa(len(c)+1) + "\n" + c + "\nC\n"
	}
	got := talk(t, s, "!!\n!r198.18.2.2/32,l\n!r198.18.2.0/24,l\n!r198.18.2.0/24\n!r198.18.2.0/24,o\n"+
		"!r198.19.0.0/16,M\n!rfd51:1:2::12/128,L\n!r203.0.113.0/24\n!rbogus\n!nturnpath-test\n!q\n!r198.18.2.0/24\n")
	want := data(obj("198.18.2.0/24")) + // l: the covering route of a host
		"C\n" + // l excludes the exact match: nothing less specific
		data(obj("198.18.2.0/24")) + // exact
		data("AS64497") + // o: origins only
		data(obj("198.19.1.0/24"), obj("198.19.2.0/24")) + // M: one level more specific
		data(obj("fd51:1:2::/64")) + // L: every less specific
		"C\n" + // nothing registered
		"F Invalid prefix: bogus\n" +
		"C\n" // !n; after !q nothing more
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	// Without !! one query is answered and the connection closed.
	if got := talk(t, s, "!r198.18.2.0/24,o\n!r198.18.2.0/24,o\n"); got != data("AS64497") {
		t.Errorf("one-shot: %q", got)
	}
}

func TestWhoisCymru(t *testing.T) {
	s := &WhoisServer{Routes: DefaultTopology().RouteObjects(), stop: make(chan struct{})}
	got := talk(t, s, "begin\r\nverbose\r\n198.19.2.5\r\n203.0.113.1\r\nnonsense\r\nend\r\n")
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "Bulk mode; whois.cymru.com [") ||
		!strings.HasPrefix(lines[1], "64501   | 198.19.2.5 ") || !strings.HasSuffix(lines[1], "| 198.19.2.0/24       | ZZ | other    | 2026-01-01 | TURNPATH-RELAY-BOUND - turnpath lab bound relays, ZZ") ||
		!strings.HasPrefix(lines[2], "NA      | 203.0.113.1 ") || !strings.HasPrefix(lines[3], "Error:") {
		t.Errorf("bulk:\n%s", got)
	}
	got = talk(t, s, " -v fd51:0:0:13::2\r\n")
	if !strings.HasPrefix(got, "AS      | IP ") || !strings.Contains(got, "64499   | fd51:0:0:13::2 ") {
		t.Errorf("single:\n%s", got)
	}
}
