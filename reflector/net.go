package reflector

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"

	"github.com/cilium/ebpf/link"
	"github.com/turnpath/turnpath/lab"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The network Up builds:
//
//	<prefix>-prober                          <prefix>-refl
//	  tp0 198.18.255.253/30 ──── veth ──── rf0 198.18.255.254/30   xdp_reflect
//	      fd51:ffff:ffff:ffff::1/64            fd51:ffff:ffff:ffff::2/64
//	  routes: 198.18.0.0/15 via .254, fd51::/16 via ::2 (nothing else: no default route)
//	  permanent neighbour entries for .254 and ::2 (no ARP / ND on the link)
//	  xdp_pass on tp0 unless the eBPF engine runs (UseEngine): veth hands XDP_TX
//	  frames only to a peer that has an XDP program
//
// The reflector answers for all of 198.18.0.0/15 and fd51::/16 but the link addresses.
// Hop h answers from 198.18.254.h / fd51:ffff:ffff:fffe::h, the destination from its own
// address at hop Depth.
var (
	link4      = netip.MustParsePrefix("198.18.255.252/30")
	prober4    = netip.MustParseAddr("198.18.255.253")
	reflector4 = netip.MustParseAddr("198.18.255.254")
	link6      = netip.MustParsePrefix("fd51:ffff:ffff:ffff::/64")
	prober6    = netip.MustParseAddr("fd51:ffff:ffff:ffff::1")
	reflector6 = netip.MustParseAddr("fd51:ffff:ffff:ffff::2")
	probed4    = netip.MustParsePrefix("198.18.0.0/15")
	probed6    = netip.MustParsePrefix("fd51::/16")
	resp4      = netip.MustParseAddr("198.18.254.0")
	resp6      = netip.MustParseAddr("fd51:ffff:ffff:fffe::")
	macProbe   = net.HardwareAddr{0x02, 0x74, 0x70, 0, 0, 1}
	macRefl    = net.HardwareAddr{0x02, 0x74, 0x70, 0, 0, 2}
)

const (
	proberIf    = "tp0"
	reflectorIf = "rf0"
	// MaxTargets4 is how many IPv4 targets Target hands out: 198.19.0.0/16, then
	// 198.18.0.0-198.18.253.255.
	MaxTargets4 = 1<<16 + 254*256
)

// Options configure Up.
type Options struct {
	// Prefix names the namespaces: <Prefix>-prober and <Prefix>-refl (letters, digits,
	// '-', at most 20 characters).
	Prefix string
	// Depth is the destination's hop (default 8, at most 255).
	Depth int
}

// Net is a prober namespace whose routes for 198.18.0.0/15 and fd51::/16 lead into the
// reflector. Close it with Down.
type Net struct {
	prober, refl string
	depth        int
	objs         *Objects
	xdp          link.Link
	keeper       link.Link // xdp_pass on the prober's side
	ifindex      int
}

var prefixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// Up builds the two namespaces, the veth and the routes, and attaches the reflector.
// Namespaces of the same names left by a crashed run are removed first.
func Up(ctx context.Context, opts Options) (*Net, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("reflector: needs root (network namespaces, BPF)")
	}
	if !prefixRE.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("reflector: bad prefix %q", opts.Prefix)
	}
	if opts.Depth == 0 {
		opts.Depth = 8
	}
	n := &Net{prober: opts.Prefix + "-prober", refl: opts.Prefix + "-refl", depth: opts.Depth}
	objs, err := Load(Config{Depth: opts.Depth, Responder4: resp4, Responder6: resp6,
		Dst4: probed4, Dst6: probed6, Self4: reflector4, Self6: reflector6})
	if err != nil {
		return nil, err
	}
	n.objs = objs
	_ = n.deleteNamespaces()
	if err := n.build(ctx); err != nil {
		return nil, errors.Join(err, n.Down())
	}
	return n, nil
}

func (n *Net) build(ctx context.Context) error {
	for _, name := range []string{n.prober, n.refl} {
		if err := createNS(name); err != nil {
			return err
		}
	}
	hp, err := netns.GetFromName(n.prober)
	if err != nil {
		return fmt.Errorf("reflector: open netns %s: %w", n.prober, err)
	}
	defer hp.Close()
	hr, err := netns.GetFromName(n.refl)
	if err != nil {
		return fmt.Errorf("reflector: open netns %s: %w", n.refl, err)
	}
	defer hr.Close()
	np, err := netlink.NewHandleAt(hp)
	if err != nil {
		return fmt.Errorf("reflector: netlink in %s: %w", n.prober, err)
	}
	defer np.Close()
	nr, err := netlink.NewHandleAt(hr)
	if err != nil {
		return fmt.Errorf("reflector: netlink in %s: %w", n.refl, err)
	}
	defer nr.Close()

	// The veth is created across the two namespaces: it never exists in the host's.
	if err := np.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: proberIf, HardwareAddr: macProbe},
		PeerName: reflectorIf, PeerHardwareAddr: macRefl, PeerNamespace: netlink.NsFd(int(hr))}); err != nil {
		return fmt.Errorf("reflector: add veth: %w", err)
	}
	pl, err := setupSide(np, proberIf, prober4, prober6)
	if err != nil {
		return err
	}
	if _, err := setupSide(nr, reflectorIf, reflector4, reflector6); err != nil {
		return err
	}
	n.ifindex = pl.Attrs().Index
	for _, r := range []struct {
		dst netip.Prefix
		gw  netip.Addr
	}{{probed4, reflector4}, {probed6, reflector6}} {
		if err := np.RouteAdd(&netlink.Route{Dst: ipNet(r.dst), Gw: r.gw.AsSlice(), LinkIndex: n.ifindex}); err != nil {
			return fmt.Errorf("reflector: route %s: %w", r.dst, err)
		}
		fam := netlink.FAMILY_V4
		if r.gw.Is6() {
			fam = netlink.FAMILY_V6
		}
		if err := np.NeighSet(&netlink.Neigh{LinkIndex: n.ifindex, Family: fam, State: netlink.NUD_PERMANENT,
			IP: r.gw.AsSlice(), HardwareAddr: macRefl}); err != nil {
			return fmt.Errorf("reflector: neighbour %s: %w", r.gw, err)
		}
	}
	if err := n.UseEngine("socket"); err != nil {
		return err
	}
	return lab.InNetNS(n.refl, func() error {
		l, err := netlink.LinkByName(reflectorIf)
		if err != nil {
			return fmt.Errorf("reflector: find %s: %w", reflectorIf, err)
		}
		n.xdp, err = n.objs.Attach(l.Attrs().Index)
		return err
	})
}

func setupSide(h *netlink.Handle, name string, a4, a6 netip.Addr) (netlink.Link, error) {
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("reflector: lo up: %w", err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("reflector: find %s: %w", name, err)
	}
	for _, a := range []*netlink.Addr{
		{IPNet: ipNet(netip.PrefixFrom(a4, link4.Bits()))},
		{IPNet: ipNet(netip.PrefixFrom(a6, link6.Bits())), Flags: unix.IFA_F_NODAD},
	} {
		if err := h.AddrAdd(l, a); err != nil {
			return nil, fmt.Errorf("reflector: address %s on %s: %w", a.IPNet, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("reflector: %s up: %w", name, err)
	}
	return l, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// createNS creates a named namespace as the lab does (/run/netns prepared like
// `ip netns add`, no Go thread left inside).
func createNS(name string) error {
	if err := lab.CreateNS(name); err != nil {
		return fmt.Errorf("reflector: %w", err)
	}
	return nil
}

func (n *Net) deleteNamespaces() error {
	var errs []error
	for _, name := range []string{n.prober, n.refl} {
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			continue
		}
		if err := lab.DeleteNS(name); err != nil {
			errs = append(errs, fmt.Errorf("reflector: %w", err))
		}
	}
	return errors.Join(errs...)
}

// UseEngine prepares the prober's interface for a turnpath engine: "ebpf" removes
// xdp_pass so the engine can attach its own XDP program; anything else ("socket")
// attaches xdp_pass, without which veth drops the reflector's answers. Up leaves it
// ready for the socket engine.
func (n *Net) UseEngine(kind string) error {
	if kind == "ebpf" {
		if n.keeper == nil {
			return nil
		}
		err := n.keeper.Close()
		n.keeper = nil
		return err
	}
	if n.keeper != nil {
		return nil
	}
	return n.Do(func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: n.objs.objs.XdpPass, Interface: n.ifindex})
		if err != nil {
			return fmt.Errorf("reflector: attach xdp_pass to %s: %w", proberIf, err)
		}
		n.keeper = l
		return nil
	})
}

// Down detaches the reflector and deletes both namespaces (and with them the veth).
func (n *Net) Down() error {
	var errs []error
	if n.keeper != nil {
		errs = append(errs, n.keeper.Close())
		n.keeper = nil
	}
	if n.xdp != nil {
		errs = append(errs, n.xdp.Close())
		n.xdp = nil
	}
	if n.objs != nil {
		errs = append(errs, n.objs.Close())
		n.objs = nil
	}
	errs = append(errs, n.deleteNamespaces())
	return errors.Join(errs...)
}

// Do runs fn on a thread inside the prober namespace (see lab.InNetNS): sockets and BPF
// attachments fn makes stay there.
func (n *Net) Do(fn func() error) error { return lab.InNetNS(n.prober, fn) }

// ProberNS and ReflectorNS name the namespaces (for `ip netns exec`).
func (n *Net) ProberNS() string    { return n.prober }
func (n *Net) ReflectorNS() string { return n.refl }

// Depth is the destination's hop.
func (n *Net) Depth() int { return n.depth }

// Ifindex is the prober's interface toward the reflector (in the prober namespace).
func (n *Net) Ifindex() int { return n.ifindex }

// Source is the prober's address of the family of dst.
func (n *Net) Source(dst netip.Addr) netip.Addr {
	if dst.Is4() {
		return prober4
	}
	return prober6
}

// Responder is the address hop ttl answers from (the destination answers from its own).
func (n *Net) Responder(ttl int, v6 bool) netip.Addr {
	if v6 {
		b := resp6.As16()
		binary.BigEndian.PutUint16(b[14:], uint16(ttl))
		return netip.AddrFrom16(b)
	}
	b := resp4.As4()
	b[3] = byte(ttl)
	return netip.AddrFrom4(b)
}

// Target is the i-th of the distinct target addresses the reflector answers for:
// IPv4 198.19.0.0/16 then 198.18.0.0-198.18.253.255 (MaxTargets4 in all); IPv6
// fd51:1::/64 + i.
func Target(i int, v6 bool) netip.Addr {
	if v6 {
		b := netip.MustParseAddr("fd51:1::").As16()
		binary.BigEndian.PutUint32(b[12:], uint32(i))
		return netip.AddrFrom16(b)
	}
	base := uint32(198<<24 | 19<<16)
	if i >= 1<<16 {
		base, i = uint32(198<<24|18<<16), i-1<<16
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], base+uint32(i))
	return netip.AddrFrom4(b)
}

// Stats reads the reflector's counters.
func (n *Net) Stats() (Stats, error) { return n.objs.Stats() }

// WriteTargets writes the first n targets the reflector answers for (Target(0..n-1)),
// one a line.
func WriteTargets(path string, n int, v6 bool) error {
	if !v6 && n > MaxTargets4 {
		return fmt.Errorf("%d targets: the reflector has %d IPv4 targets", n, MaxTargets4)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintln(w, Target(i, v6))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
