package hostnet

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchLinks reports on errc when one of the interfaces goes away or down, so a trace
// ends with a clear error instead of waiting for replies that cannot come.
// Close done to stop watching.
func WatchLinks(ifindexes []int, errc chan<- error, done chan struct{}) error {
	updates := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribe(updates, done); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	watched := map[int]bool{}
	for _, i := range ifindexes {
		watched[i] = true
	}
	go func() {
		for u := range updates {
			idx := int(u.Index)
			if !watched[idx] {
				continue
			}
			name := u.Link.Attrs().Name
			switch {
			case u.Header.Type == unix.RTM_DELLINK:
				sendErr(errc, fmt.Errorf("interface %s disappeared", name))
			case u.IfInfomsg.Flags&unix.IFF_UP == 0:
				sendErr(errc, fmt.Errorf("interface %s went down", name))
			}
		}
	}()
	return nil
}

func sendErr(errc chan<- error, err error) {
	select {
	case errc <- err:
	default:
	}
}
