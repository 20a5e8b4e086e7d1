package hostnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// L2 is how a probe to one destination leaves by AF_PACKET: the interface and the
// Ethernet header the kernel's neighbour code would have put in front of it.
type L2 struct {
	Ifindex int
	Ifname  string
	Nexthop netip.Addr // the gateway, or the destination itself when it is on link
	Header  [14]byte   // destination MAC, source MAC, EtherType
}

// Why AF_PACKET cannot carry a destination's probes (they go through the raw sockets).
var (
	ErrNoL2Device = errors.New("not an Ethernet device (tunnel, loopback or no link-layer header)")
	ErrMultipath  = errors.New("a multipath route (the kernel picks the next hop per flow)")
	ErrNoNeighbor = errors.New("no resolved neighbour entry yet")
	// errNudge: the neighbour entry is stale and this probe goes by the raw socket, so
	// the kernel confirms the MAC (AF_PACKET sends never do; a stale entry would never
	// be revalidated and a changed MAC never learnt). One probe per neighbour and
	// l2NudgeEvery.
	errNudge = errors.New("stale neighbour entry: this probe by the raw socket, for the kernel to confirm it")
)

// How long what l2Cache learnt stays valid: a route or a neighbour may change in a long
// run (a new gateway, a new MAC after a failover). A probe built from a stale entry
// would leave with the wrong header, so the entries are looked up again after these;
// the costs (a few netlink requests per destination every few seconds) are small
// against the probes that use them.
const (
	l2RouteTTL = 5 * time.Second
	l2NeighTTL = time.Second
	// l2MissRetry: how soon a destination whose neighbour was not resolved is looked at
	// again (its first probes, on the raw socket, make the kernel resolve it).
	l2MissRetry = 2 * time.Millisecond
	// The cache is emptied when it grows past this many destinations. A destination's
	// probes go in a burst (its TTLs), so a run over a long list looks each one up about
	// once either way; 65 536 entries cost 12 MiB of peak memory for 100 000 targets.
	l2MaxDests   = 1 << 12
	l2NudgeEvery = time.Second
)

// l2Route is how probes leave toward one next hop (shared by every destination behind
// it), or, with err, why one destination's cannot leave by AF_PACKET.
type l2Route struct {
	l2    L2          // Header's destination MAC from neigh
	err   error       // why AF_PACKET cannot be used
	neigh *neighTable // the table the MAC came from (nil: none yet)
	stale bool        // the next hop's entry is not confirmed (stale, delay, probe)
}

// l2Ref is what the cache keeps per destination: small, since a run may have a hundred
// thousand of them behind one gateway.
type l2Ref struct {
	r    *l2Route
	when int64 // when it was looked up: nanoseconds since the cache's epoch
}

// l2Hop identifies a next hop: its l2Route is shared.
type l2Hop struct {
	ifindex int
	nexthop netip.Addr
}

type neighTable struct {
	macs     map[netip.Addr]neighEntry
	when     time.Time
	replaced bool // a newer read of the table is in l2Cache.neighs
}

type neighEntry struct {
	mac   net.HardwareAddr
	stale bool
}

type nudgeKey struct {
	ifindex int
	addr    netip.Addr
}

// l2Key is (source, destination) as 16-byte addresses: cheaper to hash than netip.Addr.
type l2Key [32]byte

// l2Cache resolves destinations to L2 headers through the kernel's route and neighbour
// tables (netlink), and remembers them for a while. Not safe for concurrent use.
type l2Cache struct {
	// h's sockets were opened in the network namespace the probes leave from (the
	// sending goroutine's thread may be in another one: the package-level netlink
	// functions would ask that one's tables).
	h      *netlink.Handle
	epoch  time.Time
	routes map[l2Key]l2Ref
	hops   map[l2Hop]*l2Route
	neighs map[[2]int]*neighTable // (ifindex, family)
	links  map[int]*net.Interface
	nudged map[nudgeKey]time.Time // when a stale neighbour was last given a raw probe
}

// newL2Cache opens netlink sockets in the current thread's network namespace.
func newL2Cache() (*l2Cache, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return &l2Cache{h: h, epoch: time.Now(), routes: map[l2Key]l2Ref{}, hops: map[l2Hop]*l2Route{},
		neighs: map[[2]int]*neighTable{}, links: map[int]*net.Interface{}, nudged: map[nudgeKey]time.Time{}}, nil
}

func (c *l2Cache) close() { c.h.Close() }

// get returns the L2 header for probes from src to dst at now, or why there is none. The
// route part is kept for l2RouteTTL, the next hop's MAC comes from the neighbour table
// as last read (l2NeighTTL). nudge: the entry is stale and due for a probe by the raw
// socket (errNudge; the caller that sends it so calls nudge).
func (c *l2Cache) get(src, dst netip.Addr, now time.Time) (l2 *L2, nudge bool, err error) {
	var k l2Key
	s16, d16 := src.As16(), dst.As16()
	copy(k[:16], s16[:])
	copy(k[16:], d16[:])
	at := int64(now.Sub(c.epoch))
	ref, ok := c.routes[k]
	if !ok || at-ref.when >= int64(l2RouteTTL) {
		if len(c.routes) >= l2MaxDests {
			// A new map: clear keeps the old one's buckets.
			c.routes = map[l2Key]l2Ref{}
		}
		if len(c.hops) >= l2MaxDests {
			c.hops = map[l2Hop]*l2Route{}
		}
		rl2, rerr := c.route(src, dst)
		ref = l2Ref{when: at}
		if rerr != nil {
			ref.r = &l2Route{err: rerr}
		} else {
			hk := l2Hop{rl2.Ifindex, rl2.Nexthop}
			if ref.r = c.hops[hk]; ref.r == nil || [8]byte(ref.r.l2.Header[6:]) != [8]byte(rl2.Header[6:]) {
				ref.r = &l2Route{l2: rl2}
				c.hops[hk] = ref.r
			}
		}
		c.routes[k] = ref
	}
	r := ref.r
	if r.err != nil {
		return nil, false, r.err
	}
	if t := r.neigh; t == nil || t.replaced || now.Sub(t.when) >= l2NeighTTL {
		e, t, err := c.neighbour(r.l2.Ifindex, r.l2.Nexthop, now)
		if err != nil {
			return nil, false, err
		}
		copy(r.l2.Header[0:6], e.mac)
		r.neigh, r.stale = t, e.stale
	}
	nudge = r.stale && now.Sub(c.nudged[nudgeKey{r.l2.Ifindex, r.l2.Nexthop}]) >= l2NudgeEvery
	return &r.l2, nudge, nil
}

// nudged notes that a probe to l2's next hop went by the raw socket at now (see
// errNudge).
func (c *l2Cache) nudge(l2 *L2, now time.Time) {
	if len(c.nudged) >= l2MaxDests {
		clear(c.nudged)
	}
	c.nudged[nudgeKey{l2.Ifindex, l2.Nexthop}] = now
}

// route asks the kernel how a packet from src to dst would leave: the route entry it
// matches ('ip route get fibmatch', with src so that source-based policy routing is
// honoured; one request per destination), its device and next hop.
func (c *l2Cache) route(src, dst netip.Addr) (L2, error) {
	var l2 L2
	routes, err := c.h.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{SrcAddr: src.AsSlice(), FIBMatch: true})
	if err != nil || len(routes) == 0 {
		if err == nil || errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return l2, fmt.Errorf("route to %s: %w", dst, ErrNoRoute)
		}
		return l2, fmt.Errorf("route to %s: %w", dst, err)
	}
	rt := routes[0]
	if rt.Type != unix.RTN_UNICAST {
		return l2, fmt.Errorf("route to %s: not unicast: %w", dst, ErrNoL2Device)
	}
	gwIP, oif := rt.Gw, rt.LinkIndex
	switch {
	case len(rt.MultiPath) > 1:
		return l2, fmt.Errorf("route to %s: %w", dst, ErrMultipath)
	case len(rt.MultiPath) == 1:
		gwIP, oif = rt.MultiPath[0].Gw, rt.MultiPath[0].LinkIndex
	case oif == 0:
		// A route through a nexthop object shows neither (nexthop_compat_mode off).
		return l2, fmt.Errorf("route to %s: next hop not shown (a nexthop object): %w", dst, ErrMultipath)
	}
	ifc, err := c.link(oif)
	if err != nil {
		return l2, err
	}
	if len(ifc.HardwareAddr) != 6 || ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagPointToPoint != 0 {
		return l2, fmt.Errorf("interface %s: %w", ifc.Name, ErrNoL2Device)
	}
	l2.Ifindex, l2.Ifname, l2.Nexthop = ifc.Index, ifc.Name, dst
	if gw, ok := netip.AddrFromSlice(gwIP); ok && gwIP != nil {
		l2.Nexthop = gw.Unmap()
	}
	copy(l2.Header[6:12], ifc.HardwareAddr)
	if dst.Is4() {
		l2.Header[12], l2.Header[13] = 0x08, 0x00
	} else {
		l2.Header[12], l2.Header[13] = 0x86, 0xdd
	}
	return l2, nil
}

func (c *l2Cache) link(ifindex int) (*net.Interface, error) {
	if ifc, ok := c.links[ifindex]; ok {
		return ifc, nil
	}
	l, err := c.h.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	a := l.Attrs()
	ifc := &net.Interface{Index: a.Index, Name: a.Name, HardwareAddr: a.HardwareAddr, Flags: a.Flags}
	c.links[ifindex] = ifc
	return ifc, nil
}

// neighbour returns the entry of addr on ifindex, and the table it is from, from the
// kernel's neighbour table, read whole per interface and family (a host has a handful
// of neighbours) at most once per l2NeighTTL, or again after l2MissRetry while addr is
// missing.
func (c *l2Cache) neighbour(ifindex int, addr netip.Addr, now time.Time) (neighEntry, *neighTable, error) {
	fam := unix.AF_INET6
	if addr.Is4() {
		fam = unix.AF_INET
	}
	k := [2]int{ifindex, fam}
	t := c.neighs[k]
	if t != nil {
		age := now.Sub(t.when)
		if e, ok := t.macs[addr]; ok && age < l2NeighTTL {
			return e, t, nil
		}
		if age < l2MissRetry {
			return neighEntry{}, nil, fmt.Errorf("neighbour %s: %w", addr, ErrNoNeighbor)
		}
	}
	list, err := c.h.NeighList(ifindex, fam)
	if err != nil {
		return neighEntry{}, nil, fmt.Errorf("list neighbours: %w", err)
	}
	if t != nil {
		t.replaced = true
	}
	t = &neighTable{macs: map[netip.Addr]neighEntry{}, when: now}
	for _, n := range list {
		a, ok := netip.AddrFromSlice(n.IP)
		if ok && usableNeigh(n) {
			const confirmed = netlink.NUD_REACHABLE | netlink.NUD_PERMANENT | netlink.NUD_NOARP
			t.macs[a.Unmap()] = neighEntry{mac: n.HardwareAddr, stale: n.State&confirmed == 0}
		}
	}
	c.neighs[k] = t
	if e, ok := t.macs[addr]; ok {
		return e, t, nil
	}
	return neighEntry{}, nil, fmt.Errorf("neighbour %s: %w", addr, ErrNoNeighbor)
}

// usableNeigh: an entry with a MAC the kernel itself would send to (reachable, or stale
// and being confirmed, or permanent). Incomplete and failed entries have none.
func usableNeigh(n netlink.Neigh) bool {
	const ok = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT
	return n.State&ok != 0 && len(n.HardwareAddr) == 6 && !bytes.Equal(n.HardwareAddr, make([]byte, 6))
}

// ResolveL2 says how probes from src to dst would leave by AF_PACKET right now, or why
// they cannot (turnpath check). A missing neighbour entry is resolved by the run's first
// probes, which go through the raw socket.
func ResolveL2(src, dst netip.Addr) (L2, error) {
	c, err := newL2Cache()
	if err != nil {
		return L2{}, err
	}
	defer c.close()
	l2, _, err := c.get(src.Unmap(), dst.Unmap(), time.Now())
	if err != nil {
		return L2{}, err
	}
	return *l2, nil
}
