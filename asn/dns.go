package asn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
)

// CymruDNS asks Team Cymru's DNS: TXT <reversed address>.origin.asn.cymru.com (IPv6:
// nibbles under origin6) says "ASN | prefix | CC | registry | allocated", and TXT
// AS<n>.asn.cymru.com says "ASN | CC | registry | allocated | name".
type CymruDNS struct {
	Resolver *net.Resolver
	Server   string // "" for the system resolver; else host:port, used for every query
	Parallel int
}

// NewCymruDNS asks server (host or host:port; "" the system resolver).
func NewCymruDNS(server string) *CymruDNS {
	c := &CymruDNS{Resolver: net.DefaultResolver, Parallel: 16}
	if server != "" {
		c.Server = hostPort(server, "", "53")
		c.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, c.Server)
		}}
	}
	return c
}

// Name says the protocol and server.
func (c *CymruDNS) Name() string {
	if c.Server == "" {
		return "cymru-dns"
	}
	return "cymru-dns " + c.Server
}

// OriginName is the TXT name that holds a's origin.
func OriginName(a netip.Addr) string {
	a = a.Unmap()
	var b strings.Builder
	if a.Is4() {
		v := a.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.origin.asn.cymru.com", v[3], v[2], v[1], v[0])
		return b.String()
	}
	v := a.As16()
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[v[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[v[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("origin6.asn.cymru.com")
	return b.String()
}

// Lookup asks the origins concurrently, then the names of the ASes found.
func (c *CymruDNS) Lookup(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Info, error) {
	out := map[netip.Addr]Info{}
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = ctxErr(ctx, err)
		}
	}
	c.each(len(addrs), func(i int) {
		a := addrs[i].Unmap()
		txts, err := c.txt(ctx, OriginName(a))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			fail(err)
			return
		}
		out[a] = bestOrigin(txts)
	})
	var asns []uint32
	for _, in := range out {
		if in.ASN != 0 && !containsASN(asns, in.ASN) {
			asns = append(asns, in.ASN)
		}
	}
	names := map[uint32]string{}
	c.each(len(asns), func(i int) {
		txts, err := c.txt(ctx, fmt.Sprintf("AS%d.asn.cymru.com", asns[i]))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			fail(err) // the origin stands without its name
			return
		}
		for _, t := range txts {
			if f := strings.Split(t, "|"); len(f) >= 5 {
				names[asns[i]] = strings.TrimSpace(strings.Join(f[4:], "|"))
				break
			}
		}
	})
	for a, in := range out {
		if n, ok := names[in.ASN]; ok {
			in.Name = n
			out[a] = in
		}
	}
	return out, firstErr
}

func containsASN(s []uint32, n uint32) bool {
	for _, v := range s {
		if v == n {
			return true
		}
	}
	return false
}

// each runs fn(0..n-1) with at most Parallel at once.
func (c *CymruDNS) each(n int, fn func(int)) {
	sem := make(chan struct{}, max(c.Parallel, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// txt looks a TXT record up; no such name is no record, not an error.
func (c *CymruDNS) txt(ctx context.Context, name string) ([]string, error) {
	txts, err := c.Resolver.LookupTXT(ctx, name+".")
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up TXT %s: %w", name, err)
	}
	return txts, nil
}

// bestOrigin picks the most specific of the origin records ("ASN | prefix | CC |
// registry | allocated"); several origins in one record: the first.
func bestOrigin(txts []string) Info {
	var best Info
	bestBits := -1
	for _, t := range txts {
		f := strings.Split(t, "|")
		if len(f) < 2 {
			continue
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		n, ok := parseASN(strings.Fields(f[0] + " x")[0])
		if !ok {
			continue
		}
		p, err := netip.ParsePrefix(f[1])
		if err != nil || p.Bits() <= bestBits {
			continue
		}
		in := Info{ASN: n, Prefix: f[1]}
		if len(f) > 2 {
			in.CC = f[2]
		}
		if len(f) > 3 {
			in.Registry = f[3]
		}
		best, bestBits = in, p.Bits()
	}
	return best
}
