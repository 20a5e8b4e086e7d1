package probe

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
	return r, nil
}
