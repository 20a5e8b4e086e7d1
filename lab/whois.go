package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// The lab's whois service: the lab's route objects (RouteObjects) served in the two
// protocols AS lookups use, told apart by the first line of a connection.
//
//   - IRRd (as IRRd's documentation, docs/users/queries.rst, specifies): "!!" keeps the
//     connection open (without it, one query is answered and the connection closed) and
//     gets no reply; "!r<prefix>[,o|l|L|M]" searches route and route6 objects (exact; o:
//     the exact matches' distinct origins; l: one level less specific, exact matches
//     excluded; L: all less specific, exact matches included; M: one level more specific,
//     exact matches excluded); "!n<client>" and "!t<timeout>" are accepted; "!v" says
//     what this is; "!q" closes. A reply is "A<len>\n<content>\nC\n" (len counts the
//     content and its newline; objects separated by a blank line), "C\n" (valid, nothing
//     found) or "F <message>\n" ("D\n", key not found, belongs to primary-key queries
//     this service does not have).
//   - Team Cymru whois: "begin", optional "verbose", one address per line, "end" (bulk
//     mode: a banner and one line per address); or a single query " -v ADDR" / "ADDR"
//     (a header and one line).
//
// Debian's whois client is an independent client of both; turnpath's radb and
// cymru-whois sources are the other.

// WhoisServer serves route objects until closed.
type WhoisServer struct {
	Routes []RouteObject
	// Addrs are where it listens.
	Addrs []netip.AddrPort

	lns  []net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	rx   [][]byte // bytes received, per connection, in order of arrival
	stop chan struct{}
	once sync.Once
}

// maxWhoisLine bounds a query line; idleWhois ends a connection nobody talks on.
const (
	maxWhoisLine = 4096
	idleWhois    = 10 * time.Second
)

// NewWhoisServer serves routes on the given listeners.
func NewWhoisServer(routes []RouteObject, lns ...net.Listener) *WhoisServer {
	s := &WhoisServer{Routes: routes, lns: lns, stop: make(chan struct{})}
	for _, ln := range lns {
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			s.Addrs = append(s.Addrs, ta.AddrPort())
		}
		s.wg.Add(1)
		go s.accept(ln)
	}
	return s
}

// StartWhois runs the lab's whois service inside the resolver's namespace, on its
// addresses and port (0: any free port; the real services use 43). It lives as long as
// the calling process or until Close; tests start it themselves.
func (l *Lab) StartWhois(port int) (*WhoisServer, error) {
	var lns []net.Listener
	err := InNetNS(l.NS(l.topo.Resolver()), func() error {
		for _, a := range l.topo.ResolverAddrs() {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
			if err != nil {
				return fmt.Errorf("listen whois on %s: %w", a, err)
			}
			lns = append(lns, ln)
			if port == 0 { // the same port on every address, for one HOST:PORT per family
				port = ln.Addr().(*net.TCPAddr).Port
			}
		}
		return nil
	})
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	return NewWhoisServer(l.topo.RouteObjects(), lns...), nil
}

// Close stops listening, ends the open connections and waits for them (again: a no-op).
func (s *WhoisServer) Close() error {
	s.once.Do(func() {
		close(s.stop)
		for _, ln := range s.lns {
			ln.Close()
		}
		s.wg.Wait()
	})
	return nil
}

// Received returns the bytes each connection sent, in the order connections ended.
func (s *WhoisServer) Received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, len(s.rx))
	copy(out, s.rx)
	return out
}

func (s *WhoisServer) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

// recorder keeps what a connection read.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (s *WhoisServer) serve(c net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			c.SetDeadline(time.Unix(1, 0))
		case <-ctx.Done():
		}
	}()
	rec := &recorder{r: c}
	defer func() {
		c.Close()
		s.mu.Lock()
		s.rx = append(s.rx, rec.buf)
		s.mu.Unlock()
	}()
	br := bufio.NewReaderSize(rec, maxWhoisLine)
	w := bufio.NewWriter(c)
	line, err := s.readLine(c, br)
	if err != nil {
		return
	}
	switch {
	case strings.HasPrefix(line, "!"):
		s.irrd(c, br, w, line)
	case strings.EqualFold(line, "begin"):
		s.cymruBulk(c, br, w)
	default:
		s.cymruOne(w, line)
	}
	w.Flush()
}

// readLine reads one query line (CR LF or LF), bounded in length and time.
func (s *WhoisServer) readLine(c net.Conn, br *bufio.Reader) (string, error) {
	c.SetReadDeadline(time.Now().Add(idleWhois))
	line, isPrefix, err := br.ReadLine()
	if err != nil {
		return "", err
	}
	if isPrefix {
		return "", errors.New("query line too long")
	}
	return strings.TrimSpace(string(line)), nil
}

// irrd answers IRRd commands, the first already read.
func (s *WhoisServer) irrd(c net.Conn, br *bufio.Reader, w *bufio.Writer, line string) {
	persistent := false
	for range 100000 { // a bound on one connection's queries
		switch {
		case line == "!!":
			persistent = true
		case line == "!q":
			return
		case strings.HasPrefix(line, "!r"):
			w.WriteString(s.routeSearch(line[2:]))
		case strings.HasPrefix(line, "!n"), strings.HasPrefix(line, "!t"):
			w.WriteString("C\n")
		case line == "!v":
			w.WriteString(irrdData("turnpath lab whois (IRRd protocol subset: !!, !r, !q, !v)"))
		case line == "":
		default:
			w.WriteString("F Unrecognized command\n")
		}
		if line != "!!" && line != "" && !persistent {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
		var err error
		if line, err = s.readLine(c, br); err != nil {
			return
		}
	}
}

// irrdData frames a successful reply with data: the length counts the data and its
// final newline.
func irrdData(data string) string {
	data = strings.TrimRight(data, "\n")
	return fmt.Sprintf("A%d\n%s\nC\n", len(data)+1, data)
}

// routeSearch answers "!r<prefix>[,option]".
func (s *WhoisServer) routeSearch(arg string) string {
	q, opt, _ := strings.Cut(arg, ",")
	p, err := netip.ParsePrefix(q)
	if err != nil {
		a, aerr := netip.ParseAddr(q)
		if aerr != nil {
			return fmt.Sprintf("F Invalid prefix: %s\n", q)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	var hits []RouteObject
	switch opt {
	case "", "o":
		hits = s.matching(func(r netip.Prefix) bool { return r == p })
	case "l": // the most specific of the strictly less specific
		hits = mostSpecificOf(s.matching(func(r netip.Prefix) bool { return r.Bits() < p.Bits() && r.Contains(p.Addr()) }))
	case "L":
		hits = s.matching(func(r netip.Prefix) bool { return r.Bits() <= p.Bits() && r.Contains(p.Addr()) })
	case "M": // the strictly more specific that no other of them holds
		more := s.matching(func(r netip.Prefix) bool { return r.Bits() > p.Bits() && p.Contains(r.Addr()) })
		for _, r := range more {
			covered := false
			for _, o := range more {
				covered = covered || (o.Prefix.Bits() < r.Prefix.Bits() && o.Prefix.Contains(r.Prefix.Addr()))
			}
			if !covered {
				hits = append(hits, r)
			}
		}
	default:
		return fmt.Sprintf("F Invalid option: %s\n", opt)
	}
	if len(hits) == 0 {
		return "C\n"
	}
	var objs []string
	for _, r := range hits {
		if opt == "o" {
			objs = append(objs, r.Origin.String())
		} else {
			objs = append(objs, r.RPSL())
		}
	}
	if opt == "o" {
		slices.Sort(objs)
		return irrdData(strings.Join(slices.Compact(objs), " "))
	}
	return irrdData(strings.Join(objs, "\n"))
}

// matching are the route objects whose prefix passes keep.
func (s *WhoisServer) matching(keep func(netip.Prefix) bool) []RouteObject {
	var out []RouteObject
	for _, r := range s.Routes {
		if keep(r.Prefix) {
			out = append(out, r)
		}
	}
	return out
}

// mostSpecificOf keeps the longest prefixes of rs (all of them: several objects may
// register one prefix).
func mostSpecificOf(rs []RouteObject) []RouteObject {
	best := -1
	for _, r := range rs {
		best = max(best, r.Prefix.Bits())
	}
	var out []RouteObject
	for _, r := range rs {
		if r.Prefix.Bits() == best {
			out = append(out, r)
		}
	}
	return out
}

// cymruHeader is the column header of a verbose single query.
const cymruHeader = "AS      | IP                                       | BGP Prefix          | CC | Registry | Allocated  | AS Name\n"

// cymruLine is one verbose answer line.
func (s *WhoisServer) cymruLine(q string) string {
	a, err := netip.ParseAddr(q)
	if err != nil {
		return "Error: no ASN or IP match on line 1.\n"
	}
	r, ok := mostSpecific(s.Routes, a)
	if !ok {
		return fmt.Sprintf("%-8s| %-40s | %-19s | %-2s | %-8s | %-10s | %s\n", "NA", a, "NA", "", "other", "", "NA")
	}
	return fmt.Sprintf("%-8d| %-40s | %-19s | %-2s | %-8s | %-10s | %s\n", r.Origin.Number, a, r.Prefix, LabCC, "other", LabAllocated, r.Origin.CymruName())
}

// cymruBulk answers a bulk query: flags and addresses until "end".
func (s *WhoisServer) cymruBulk(c net.Conn, br *bufio.Reader, w *bufio.Writer) {
	fmt.Fprintf(w, "Bulk mode; whois.cymru.com [%s]\n", time.Now().UTC().Format("2006-01-02 15:04:05 -0700"))
	for range 100000 {
		line, err := s.readLine(c, br)
		if err != nil || strings.EqualFold(line, "end") {
			return
		}
		switch strings.ToLower(line) {
		case "", "verbose", "noheader", "header", "asname", "noasname", "prefix", "noprefix", "cc", "nocc", "registry", "noregistry", "allocdate", "noallocdate":
			continue
		}
		w.WriteString(s.cymruLine(line))
	}
}

// cymruOne answers a single query: " -v ADDR", "-v ADDR" or "ADDR".
func (s *WhoisServer) cymruOne(w *bufio.Writer, line string) {
	f := strings.Fields(line)
	addr := ""
	for _, x := range f {
		if !strings.HasPrefix(x, "-") {
			addr = x
		}
	}
	w.WriteString(cymruHeader)
	w.WriteString(s.cymruLine(addr))
}
