package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// target is one name the user gave and the address it resolved to.
type target struct {
	Name string
	Addr netip.Addr
}

// readTargetFile reads one target per line; '#' starts a comment, blank lines are skipped.
// A line with more than one word is an error naming file and line, so a typo never turns
// into probes to the wrong host.
func readTargetFile(path string) ([]string, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read target file: %w", err)
		}
		defer f.Close()
		r = f
	}
	var names []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		switch len(fields) {
		case 0:
			continue
		case 1:
			if !validHostname(fields[0]) {
				return nil, fmt.Errorf("%s:%d: %q is not a host name or address", path, n, fields[0])
			}
			names = append(names, fields[0])
		default:
			return nil, fmt.Errorf("%s:%d: one target per line, got %q", path, n, strings.TrimSpace(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read target file %s: %w", path, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no targets", path)
	}
	return names, nil
}

// validHostname accepts IP literals and RFC 1123 names.
func validHostname(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// resolveTargets turns names into addresses of the wanted family (0 = either, IPv4 first).
// It returns ctx's error when ctx is done while a name is looked up.
func resolveTargets(ctx context.Context, names []string, family int) ([]target, error) {
	out := make([]target, 0, len(names))
	for _, n := range names {
		if a, err := netip.ParseAddr(n); err == nil {
			a = a.Unmap()
			if family == 4 && !a.Is4() || family == 6 && a.Is4() {
				return nil, fmt.Errorf("target %s is not an IPv%d address", n, family)
			}
			out = append(out, target{Name: n, Addr: a})
			continue
		}
		network := "ip"
		if family != 0 {
			network = fmt.Sprintf("ip%d", family)
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, n)
		if ctx.Err() != nil {
			return nil, ctx.Err() // Ctrl-C, not an unknown host
		}
		if err != nil || len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %s: unknown host", n)
		}
		best := addrs[0].Unmap()
		for _, a := range addrs {
			if a.Unmap().Is4() && family == 0 {
				best = a.Unmap()
				break
			}
		}
		out = append(out, target{Name: n, Addr: best})
	}
	return out, nil
}
