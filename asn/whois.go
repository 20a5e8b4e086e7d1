package asn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DialFunc opens a connection (default net.Dialer.DialContext; tests dial from inside
// their network namespace).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// hostPort is s with the default port added, or def:port when s is empty. An IPv6
// address may come with or without brackets.
func hostPort(s, def, port string) string {
	if s == "" {
		s = def
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), port)
}

// dialCtx connects and ties the connection to ctx: its deadline becomes the
// connection's, and cancelling ctx wakes a blocked read or write.
func dialCtx(ctx context.Context, dial DialFunc, addr string) (net.Conn, func(), error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return conn, func() { stop(); conn.Close() }, nil
}

// ctxErr prefers the context's reason (deadline, cancel) over the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// maxWhoisReply bounds one reply we read: a real one is a few hundred bytes.
const maxWhoisReply = 1 << 20

// RADB speaks the IRRd whois protocol as BSD traceroute -a does: one connection, "!!" to
// keep it open, "!r<addr>/32,l" (/128 for IPv6) per address, "!q" at the end. A reply
// is "A<len>" followed by len bytes of RPSL objects and "C", or "C" (no data), "D" (no
// entry), "F <message>" (error). The first origin: line wins; the AS name is the first
// descr: of that route object (the name a route object carries; traceroute -a shows
// none).
type RADB struct {
	Server string // host:port
	Dial   DialFunc
}

// Name says the protocol and server.
func (r *RADB) Name() string { return "radb " + r.Server }

// Lookup asks for every address in turn on one connection.
func (r *RADB) Lookup(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Info, error) {
	out := map[netip.Addr]Info{}
	conn, done, err := dialCtx(ctx, r.Dial, r.Server)
	if err != nil {
		return out, ctxErr(ctx, err)
	}
	defer done()
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "!!\n"); err != nil {
		return out, ctxErr(ctx, fmt.Errorf("send to %s: %w", r.Server, err))
	}
	var firstErr error
	for _, a := range addrs {
		a = a.Unmap()
		bits := 32
		if a.Is6() {
			bits = 128
		}
		if _, err := fmt.Fprintf(conn, "!r%s/%d,l\n", a, bits); err != nil {
			return out, ctxErr(ctx, fmt.Errorf("send to %s: %w", r.Server, err))
		}
		in, err := readIRRd(br)
		var fe *irrdError
		switch {
		case errors.As(err, &fe):
			// The server refused this query: this address failed, the next may not.
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", r.Server, err)
			}
			continue
		case err != nil:
			return out, ctxErr(ctx, fmt.Errorf("read from %s: %w", r.Server, err))
		}
		out[a] = in
	}
	io.WriteString(conn, "!q\n")
	return out, firstErr
}

// irrdError is an "F <message>" reply.
type irrdError struct{ msg string }

func (e *irrdError) Error() string { return "server error: " + e.msg }

// readIRRd reads one framed IRRd reply and takes the route object's origin out of it.
func readIRRd(br *bufio.Reader) (Info, error) {
	line, err := readLine(br)
	if err != nil {
		return Info{}, err
	}
	switch {
	case line == "C", line == "D":
		return Info{}, nil // no data, no entry: AS0
	case strings.HasPrefix(line, "F"):
		return Info{}, &irrdError{strings.TrimSpace(line[1:])}
	case !strings.HasPrefix(line, "A"):
		return Info{}, fmt.Errorf("unexpected reply %q", trunc(line))
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 || n > maxWhoisReply {
		return Info{}, fmt.Errorf("bad reply length %q", trunc(line))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return Info{}, err
	}
	end, err := readLine(br)
	if err != nil {
		return Info{}, err
	}
	if end == "" { // a body without its final newline counted: tolerate one blank line
		if end, err = readLine(br); err != nil {
			return Info{}, err
		}
	}
	if end != "C" {
		return Info{}, fmt.Errorf("reply not closed by C: %q", trunc(end))
	}
	return parseRPSL(string(body)), nil
}

// parseRPSL takes the first object with an origin: its AS, prefix and first descr.
func parseRPSL(s string) Info {
	for _, obj := range strings.Split(s, "\n\n") {
		var in Info
		origin := false
		for _, l := range strings.Split(obj, "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "route", "route6":
				in.Prefix = v
			case "origin":
				if n, ok := parseASN(v); ok && !origin {
					in.ASN, origin = n, true
				}
			case "descr":
				if in.Name == "" {
					in.Name = v
				}
			}
		}
		if origin {
			return in
		}
	}
	return Info{}
}

// parseASN reads "AS64500", "as64500" or "64500".
func parseASN(s string) (uint32, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 2 && strings.EqualFold(s[:2], "AS") {
		s = s[2:]
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// readLine reads one line without its end (\n or \r\n), bounded in length.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, chunk...)
		if len(b) > maxWhoisReply {
			return "", errors.New("line too long")
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// CymruBulk is Team Cymru's bulk whois: "begin", "verbose", one address per line, "end",
// in one connection; one reply line per address:
// AS | IP | BGP prefix | CC | registry | allocated | AS name.
type CymruBulk struct {
	Server string // host:port
	Dial   DialFunc
}

// Name says the protocol and server.
func (c *CymruBulk) Name() string { return "cymru-whois " + c.Server }

// Lookup sends every address in one bulk query.
func (c *CymruBulk) Lookup(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Info, error) {
	out := map[netip.Addr]Info{}
	conn, done, err := dialCtx(ctx, c.Dial, c.Server)
	if err != nil {
		return out, ctxErr(ctx, err)
	}
	defer done()
	var q strings.Builder
	q.WriteString("begin\nverbose\n")
	for _, a := range addrs {
		q.WriteString(a.Unmap().String() + "\n")
	}
	q.WriteString("end\n")
	if _, err := io.WriteString(conn, q.String()); err != nil {
		return out, ctxErr(ctx, fmt.Errorf("send to %s: %w", c.Server, err))
	}
	br := bufio.NewReader(conn)
	for range len(addrs) + 16 { // the answers plus a few header and error lines
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, ctxErr(ctx, fmt.Errorf("read from %s: %w", c.Server, err))
		}
		if a, in, ok := ParseCymruLine(line); ok {
			out[a] = in
		}
	}
	return out, nil
}

// ParseCymruLine reads one verbose answer line of the bulk whois: "64500 | 192.0.2.1 |
// 192.0.2.0/24 | ZZ | other | 2026-01-01 | EXAMPLE - Example, ZZ". The header, the
// "Bulk mode" banner and error lines are not answers (ok false); "NA" is AS0.
func ParseCymruLine(line string) (netip.Addr, Info, bool) {
	f := strings.Split(line, "|")
	if len(f) < 3 {
		return netip.Addr{}, Info{}, false
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	a, err := netip.ParseAddr(f[1])
	if err != nil {
		return netip.Addr{}, Info{}, false
	}
	var in Info
	if n, ok := parseASN(strings.Fields(f[0] + " x")[0]); ok { // several origins: the first
		in.ASN = n
	}
	if f[2] != "NA" {
		in.Prefix = f[2]
	}
	if len(f) > 3 {
		in.CC = f[3]
	}
	if len(f) > 4 {
		in.Registry = f[4]
	}
	if len(f) > 6 && f[6] != "NA" {
		in.Name = strings.Join(f[6:], "|")
	}
	return a.Unmap(), in, true
}
