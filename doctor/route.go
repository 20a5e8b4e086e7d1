package doctor

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// routeInterface asks the kernel which interface a packet to dst leaves by.
func routeInterface(dst netip.Addr) (int, string, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return 0, "", fmt.Errorf("route to %s: no route (%v)", dst, err)
	}
	idx := routes[0].LinkIndex
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return 0, "", fmt.Errorf("look up interface %d: %w", idx, err)
	}
	return idx, l.Attrs().Name, nil
}
