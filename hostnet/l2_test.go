package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/turnpath/turnpath/probe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inThrowawayNetns runs fn on a locked thread inside a new network namespace that only
// this thread references (the kernel removes it, with what fn made, once fn returns).
func inThrowawayNetns(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread must not go back to the pool in the wrong namespace
		}
		ns.Close()
	}()
	fn()
}

// Which destinations AF_PACKET can reach, and why the others go through the raw sockets:
// a gateway without a resolved neighbour (until it has one), a multipath route, a local
// address; and a batch to both kinds sends each by its way.
func TestL2Fallbacks(t *testing.T) {
	inThrowawayNetns(t, func() {
		la := netlink.NewLinkAttrs()
		la.Name = "tq0"
		la.HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
		must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "tq1"}))
		for _, n := range []string{"lo", "tq0", "tq1"} {
			l, err := netlink.LinkByName(n)
			must(t, err)
			must(t, netlink.LinkSetUp(l))
		}
		tq0, err := netlink.LinkByName("tq0")
		must(t, err)
		addr, _ := netlink.ParseAddr("198.18.200.1/24")
		must(t, netlink.AddrAdd(tq0, addr))
		gw := net.ParseIP("198.18.200.2")
		_, single, _ := net.ParseCIDR("198.19.200.0/24")
		must(t, netlink.RouteAdd(&netlink.Route{Dst: single, Gw: gw, LinkIndex: tq0.Attrs().Index}))
		_, multi, _ := net.ParseCIDR("198.19.201.0/24")
		must(t, netlink.RouteAdd(&netlink.Route{Dst: multi, MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: tq0.Attrs().Index, Gw: gw}, {LinkIndex: tq0.Attrs().Index, Gw: net.ParseIP("198.18.200.3")}}}))

		src := netip.MustParseAddr("198.18.200.1")
		viaGW := netip.MustParseAddr("198.19.200.7")
		c, err := newL2Cache()
		must(t, err)
		defer c.close()
		for _, tc := range []struct {
			dst  string
			want error
		}{
			{"198.19.200.7", ErrNoNeighbor}, // the gateway is not resolved yet
			{"198.18.200.9", ErrNoNeighbor}, // on link: the destination is the next hop
			{"198.19.201.7", ErrMultipath},  // the kernel picks the next hop per flow
			{"198.18.200.1", ErrNoL2Device}, // our own address: a local route
			{"203.0.113.1", ErrNoRoute},     // no route at all (nothing is sent: a lookup)
		} {
			if _, err := ResolveL2(src, netip.MustParseAddr(tc.dst)); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.dst, err, tc.want)
			}
		}

		// A probe behind the unresolved gateway goes by the raw socket (into this
		// namespace's veth: the kernel then asks for the gateway's MAC).
		s, err := NewSender(true, false)
		must(t, err)
		defer s.Close()
		s.EnablePacket()
		payload, err := probe.ParsePayload("stun")
		must(t, err)
		batch := func() []BatchProbe {
			id, _ := probe.MakeID(1, 0)
			return []BatchProbe{{Flow: probe.Flow{Src: src, Dst: viaGW, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478},
				ID: id, TTL: 1, Tag: 1, Payload: payload}}
		}
		if n, err := s.SendBatch(batch(), 1); n != 1 || err != nil {
			t.Fatalf("SendBatch: %d, %v", n, err)
		}
		if st := s.Stats(); st.RawMmsg != 1 || st.PacketMmsg != 0 {
			t.Errorf("unresolved next hop: %+v, want the raw socket", st)
		}

		// Once the kernel knows the gateway's MAC: AF_PACKET, behind its header.
		mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
		must(t, netlink.NeighSet(&netlink.Neigh{LinkIndex: tq0.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: mac}))
		l2, err := ResolveL2(src, viaGW)
		must(t, err)
		want := [14]byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00}
		if l2.Header != want || l2.Ifname != "tq0" || l2.Nexthop != netip.MustParseAddr("198.18.200.2") {
			t.Errorf("resolved %+v, want header %x via tq0, next hop 198.18.200.2", l2, want)
		}
		c.neighs = map[[2]int]*neighTable{} // the sender's cache would see it within l2MissRetry
		s.l2.neighs = map[[2]int]*neighTable{}
		if n, err := s.SendBatch(batch(), 1); n != 1 || err != nil {
			t.Fatalf("SendBatch: %d, %v", n, err)
		}
		if st := s.Stats(); st.PacketMmsg != 1 {
			t.Errorf("resolved next hop: %+v, want AF_PACKET", st)
		}

		// A stale entry: AF_PACKET with its MAC, but one probe a second by the raw
		// socket, for the kernel to confirm it (AF_PACKET sends never do).
		gw4 := net.ParseIP("198.18.200.4")
		_, staleNet, _ := net.ParseCIDR("198.19.202.0/24")
		must(t, netlink.RouteAdd(&netlink.Route{Dst: staleNet, Gw: gw4, LinkIndex: tq0.Attrs().Index}))
		must(t, netlink.NeighSet(&netlink.Neigh{LinkIndex: tq0.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_STALE, IP: gw4, HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 4}}))
		s.l2.neighs = map[[2]int]*neighTable{}
		var three []BatchProbe
		for ttl := uint8(1); ttl <= 3; ttl++ {
			id, _ := probe.MakeID(ttl, 0)
			three = append(three, BatchProbe{Flow: probe.Flow{Src: src, Dst: netip.MustParseAddr("198.19.202.7"),
				Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}, ID: id, TTL: ttl, Tag: 1, Payload: payload})
		}
		before := s.Stats()
		for range 2 {
			if n, err := s.SendBatch(three, 1); n != 3 || err != nil {
				t.Fatalf("SendBatch: %d, %v", n, err)
			}
		}
		if st := s.Stats(); st.RawMmsg-before.RawMmsg != 1 || st.PacketMmsg-before.PacketMmsg != 5 {
			t.Errorf("stale next hop, two batches of 3: %+v (before %+v), want 1 raw, 5 AF_PACKET", st, before)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
