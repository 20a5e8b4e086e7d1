package hostnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is how the kernel would send to a destination: the interface and the source address.
type Route struct {
	Dst     netip.Addr
	Src     netip.Addr
	Ifindex int
	Ifname  string
	// Nexthops is how many next hops the kernel's matching route has: 1 for a plain
	// route (every flow leaves through the same first router), more for a multipath
	// route, 0 when not known.
	Nexthops int
}

// ErrNoRoute means the kernel has no route to the destination.
var ErrNoRoute = errors.New("no route")

// Lookup asks the kernel (RTM_GETROUTE) how it would reach dst. Probes are built with the
// returned source so their checksums are right, and the BPF programs attach to Ifindex.
func Lookup(dst netip.Addr) (Route, error) {
	dst = dst.Unmap()
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.EAFNOSUPPORT) {
			return Route{}, fmt.Errorf("route to %s: %w", dst, ErrNoRoute)
		}
		return Route{}, fmt.Errorf("route to %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return Route{}, fmt.Errorf("route to %s: %w", dst, ErrNoRoute)
	}
	rt := routes[0]
	src, ok := netip.AddrFromSlice(rt.Src)
	if !ok {
		return Route{}, fmt.Errorf("route to %s: no source address", dst)
	}
	r := Route{Dst: dst, Src: src.Unmap(), Ifindex: rt.LinkIndex}
	if l, err := netlink.LinkByIndex(rt.LinkIndex); err == nil {
		r.Ifname = l.Attrs().Name
	}
	r.Nexthops = nexthops(dst)
	return r, nil
}

// nexthops counts the next hops of the route entry the kernel matches for dst ('ip route
// get fibmatch': the entry itself, where a plain lookup returns the one next hop it picked
// for that lookup's hash). 0 when it cannot tell: a route through a nexthop object shows
// neither gateway, interface nor RTA_MULTIPATH when net.ipv4.nexthop_compat_mode is off.
func nexthops(dst netip.Addr) int {
	routes, err := netlink.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil || len(routes) != 1 {
		return 0
	}
	rt := routes[0]
	switch {
	case len(rt.MultiPath) > 0:
		return len(rt.MultiPath)
	case rt.Gw != nil || rt.Via != nil || rt.LinkIndex > 0:
		return 1 // a gateway, or on link (connected: the target is the next hop)
	}
	return 0
}
