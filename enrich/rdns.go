// Package enrich adds what a hop's address alone does not say: today its PTR name.
package enrich

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Names resolves PTR names concurrently, with a per-lookup timeout, once per address.
type Names struct {
	Resolver *net.Resolver
	Timeout  time.Duration
	Parallel int

	mu    sync.Mutex
	names map[netip.Addr]string
}

// NewNames uses the system resolver (/etc/resolv.conf; inside the lab, the lab's dnsmasq).
func NewNames() *Names {
	return &Names{Resolver: net.DefaultResolver, Timeout: time.Second, Parallel: 16, names: map[netip.Addr]string{}}
}

// Resolve looks up every address not looked up yet; failures give "".
func (n *Names) Resolve(ctx context.Context, addrs []netip.Addr) {
	sem := make(chan struct{}, max(n.Parallel, 1))
	var wg sync.WaitGroup
	for _, a := range addrs {
		n.mu.Lock()
		_, done := n.names[a]
		if !done {
			n.names[a] = ""
		}
		n.mu.Unlock()
		if done || !a.IsValid() {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(a netip.Addr) {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, n.Timeout)
			defer cancel()
			names, err := n.Resolver.LookupAddr(cctx, a.String())
			if err != nil || len(names) == 0 {
				return
			}
			n.mu.Lock()
			n.names[a] = strings.TrimSuffix(names[0], ".")
			n.mu.Unlock()
		}(a)
	}
	wg.Wait()
}

// Name returns the resolved name of a ("" if none or not resolved).
func (n *Names) Name(a netip.Addr) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.names[a]
}
