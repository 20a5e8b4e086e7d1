package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Profiles.
const (
	// ProfileFast removes the routers' ICMP rate limits, so fast parallel probing sees
	// every hop.
	ProfileFast = "fast"
	// ProfileRealistic keeps Linux's default router ICMP limits (icmp_ratelimit=1000ms
	// per destination, 1000 msgs/s and a burst of 50 globally, ICMPv6 ratelimit=1000ms).
	ProfileRealistic = "realistic"

	DefaultProfile = ProfileFast
	DefaultPrefix  = "tp"
)

// Errors callers can test with errors.Is.
var (
	ErrNeedRoot  = errors.New("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	ErrNotUp     = errors.New("lab is not up")
	ErrAlreadyUp = errors.New("already up with another profile")
	ErrPartial   = errors.New("partially up")
)

// UsageError is a bad option (unknown profile, bad prefix, unknown target): the
// caller's mistake rather than the environment's.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// notUpError is "no lab with prefix X is up"; errors.Is(err, ErrNotUp) holds.
type notUpError struct{ prefix string }

func (e *notUpError) Error() string   { return fmt.Sprintf("no lab with prefix %s is up", e.prefix) }
func (e *notUpError) Is(t error) bool { return t == ErrNotUp }

// upTimeout bounds the whole of Up, including waiting for coturn and dnsmasq.
const upTimeout = 30 * time.Second

// Options configure Up.
type Options struct {
	Prefix  string // namespace name prefix; DefaultPrefix if empty
	Profile string // ProfileFast or ProfileRealistic; DefaultProfile if empty
	// Topology overrides DefaultTopology (tests). Down and Status always look for the
	// default topology's namespaces plus whatever state.json recorded.
	Topology *Topology
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_]{0,23}$`)

// ValidatePrefix checks a lab prefix: letters, digits and '_', at most 24 bytes. No '-',
// so the namespaces of lab "tp" can never be confused with those of lab "tp-x".
func ValidatePrefix(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return usagef("bad lab prefix %q: want 1-24 letters, digits or '_', starting with a letter or digit", prefix)
	}
	return nil
}

// ValidateProfile checks a profile name.
func ValidateProfile(profile string) error {
	if profile != ProfileFast && profile != ProfileRealistic {
		return usagef("unknown lab profile %q (want %s or %s)", profile, ProfileFast, ProfileRealistic)
	}
	return nil
}

func (o Options) normalize() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Profile == "" {
		o.Profile = DefaultProfile
	}
	if err := ValidatePrefix(o.Prefix); err != nil {
		return o, err
	}
	if err := ValidateProfile(o.Profile); err != nil {
		return o, err
	}
	if o.Topology != nil {
		if err := o.Topology.Validate(); err != nil {
			return o, usagef("bad topology: %v", err)
		}
	}
	return o, nil
}

// Lab is a running lab.
type Lab struct {
	prefix  string
	profile string
	topo    *Topology
	truth   func() *Truth // computed on first use
	reused  bool
}

// NSName is the namespace name of a node of the lab with this prefix.
func NSName(prefix, node string) string { return prefix + "-" + node }

// Prefix is the lab's namespace prefix.
func (l *Lab) Prefix() string { return l.prefix }

// Profile is the lab's profile.
func (l *Lab) Profile() string { return l.profile }

// Reused reports whether Up found this lab already running instead of building it.
func (l *Lab) Reused() bool { return l.reused }

// Topology is the lab's topology.
func (l *Lab) Topology() *Topology { return l.topo }

// Truth is the lab's ground truth.
func (l *Lab) Truth() *Truth { return l.truth() }

// NS returns the namespace name of a node ("r3b" -> "tp-r3b").
func (l *Lab) NS(node string) string { return NSName(l.prefix, node) }

// ClientNS is the client's namespace name: run probes there.
func (l *Lab) ClientNS() string { return l.NS(l.topo.Client()) }

// ClientIfName is the client's only interface (toward r1).
func (l *Lab) ClientIfName() string {
	ifs := l.topo.Ifaces(l.topo.Client())
	if len(ifs) == 0 {
		return ""
	}
	return ifs[0].Name
}

// ClientAddr is the probe source address of the family.
func (l *Lab) ClientAddr(f Family) netip.Addr { return l.topo.ClientAddr(f) }

// Groups returns the target group names.
func (l *Lab) Groups() []string { return l.topo.GroupNames() }

// Targets returns the addresses of a target group ("wildcard", "bound").
func (l *Lab) Targets(group string) []netip.Addr { return l.topo.Targets(group) }

// ResolverAddrs returns dnsmasq's addresses (IPv4 first).
func (l *Lab) ResolverAddrs() []netip.Addr { return l.topo.ResolverAddrs() }

// Do runs fn on a thread inside the client namespace (see InNetNS).
func (l *Lab) Do(fn func() error) error { return InNetNS(l.ClientNS(), fn) }

// ListenPacket is net.ListenPacket inside the client namespace.
func (l *Lab) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := l.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Resolver returns a resolver that queries the lab's dnsmasq from the client namespace.
// Use it for PTR lookups of hop addresses.
func (l *Lab) Resolver() *net.Resolver {
	server := netip.AddrPortFrom(l.topo.ResolverAddrs()[0], 53).String()
	ns := l.ClientNS()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var c net.Conn
			err := InNetNS(ns, func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, server)
				return err
			})
			return c, err
		},
	}
}

// Down removes this lab.
func (l *Lab) Down(ctx context.Context) error { return Down(ctx, l.prefix) }

// checkPrivileges wants CAP_SYS_ADMIN (mount namespaces' bind mounts, setns) and
// CAP_NET_ADMIN (links, routes, sysctls) in the effective set.
func checkPrivileges() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	var eff uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	var missing []string
	if eff&(1<<unix.CAP_SYS_ADMIN) == 0 {
		missing = append(missing, "CAP_SYS_ADMIN")
	}
	if eff&(1<<unix.CAP_NET_ADMIN) == 0 {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: running as uid %d without %s; run with sudo", ErrNeedRoot, os.Geteuid(), strings.Join(missing, ", "))
	}
	return nil
}

// Up builds the lab, or returns the running one if a healthy lab with the same prefix
// and profile is already up (Reused reports that). A lab with the same prefix and
// another profile is ErrAlreadyUp; leftovers of a crashed lab are ErrPartial (run Down).
// If building fails half way, everything built so far is removed again.
func Up(ctx context.Context, opts Options) (*Lab, error) {
	opts, err := opts.normalize()
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	if err := checkPrivileges(); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	bins := map[string]string{}
	need := []tool{toolCoturn, toolDnsmasq}
	topo := opts.Topology
	if topo == nil {
		topo = DefaultTopology()
	}
	if slices.ContainsFunc(topo.Nodes, func(n Node) bool { return n.IPIDCounter }) {
		need = append(need, toolNft)
	}
	for _, t := range need {
		p, err := lookPath(t)
		if err != nil {
			return nil, fmt.Errorf("lab up: %w", err)
		}
		bins[t.name] = p
	}
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	unlock, err := lockRunDir(ctx)
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	defer unlock()

	st, err := readState(opts.Prefix)
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	if st != nil || len(presentNamespaces(opts.Prefix, nil)) > 0 {
		if st != nil && st.Complete {
			herr := health(st)
			switch {
			case herr != nil:
				return nil, fmt.Errorf("lab up: lab %s is up but unhealthy (%v); run 'turnpath lab down --prefix %s' first", opts.Prefix, herr, opts.Prefix)
			case st.Profile != opts.Profile:
				return nil, fmt.Errorf("lab up: lab %s is %w (%s); run 'turnpath lab down --prefix %s' first", opts.Prefix, ErrAlreadyUp, st.Profile, opts.Prefix)
			}
			return newLab(st, opts.Topology, true), nil
		}
		return nil, fmt.Errorf("lab up: lab %s is %w (leftovers of an earlier run); run 'turnpath lab down --prefix %s' first", opts.Prefix, ErrPartial, opts.Prefix)
	}

	b := &builder{opts: opts, topo: topo, bins: bins, st: &state{
		Prefix: opts.Prefix, Profile: opts.Profile, Created: time.Now().UTC(),
	}}
	if err := b.build(ctx); err != nil {
		if cerr := teardown(opts.Prefix, b.st); cerr != nil {
			err = joinErrors(err, fmt.Errorf("clean up: %w", cerr))
		}
		return nil, fmt.Errorf("lab up: %w", err)
	}
	return newLab(b.st, opts.Topology, false), nil
}

// newLab wraps a recorded lab. topo nil means the default topology.
func newLab(st *state, topo *Topology, reused bool) *Lab {
	l := &Lab{prefix: st.Prefix, profile: st.Profile, topo: topo, reused: reused}
	if topo == nil {
		l.topo = DefaultTopology()
		l.truth = DefaultTruth
	} else {
		l.truth = sync.OnceValue(func() *Truth {
			tr, err := NewTruth(topo)
			if err != nil {
				panic(fmt.Sprintf("lab truth: %v", err)) // unreachable: Up validated topo
			}
			return tr
		})
	}
	return l
}

// Open returns the running lab with this prefix (started by `turnpath lab up` or Up),
// for tests and benchmarks that reuse a lab. It fails with ErrNotUp if there is none
// and with a description of the problem if it is unhealthy.
func Open(prefix string) (*Lab, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("open lab: %w", err)
	}
	st, err := readState(prefix)
	if err != nil {
		return nil, fmt.Errorf("open lab: %w", err)
	}
	if st == nil || !st.Complete {
		return nil, fmt.Errorf("open lab: %w", &notUpError{prefix})
	}
	if err := health(st); err != nil {
		return nil, fmt.Errorf("open lab %s: unhealthy: %w", prefix, err)
	}
	return newLab(st, nil, true), nil
}

// builder builds one lab, recording everything in st before creating it.
type builder struct {
	opts    Options
	topo    *Topology
	bins    map[string]string
	st      *state
	handles map[string]netns.NsHandle
}

func (b *builder) ns(node string) string { return NSName(b.opts.Prefix, node) }

func (b *builder) build(ctx context.Context) error {
	if err := os.MkdirAll(stateDir(b.opts.Prefix), 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	for _, n := range b.topo.Nodes {
		b.st.Namespaces = append(b.st.Namespaces, b.ns(n.Name))
	}
	if err := b.st.write(); err != nil {
		return err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"namespaces", b.createNamespaces},
		{"sysctls", b.setSysctls},
		{"ip id counters", b.setIPIDCounters},
		{"links", b.createLinks},
		{"addresses and routes", b.configureNodes},
		{"neighbours", b.setNeighbours},
		{"services", b.startServices},
		{"readiness", b.waitReady},
	}
	defer func() {
		for _, h := range b.handles {
			h.Close()
		}
	}()
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("build %s: %w", s.name, err)
		}
		if err := s.fn(ctx); err != nil {
			return err
		}
	}
	b.st.Complete = true
	return b.st.write()
}

// parallel runs fn for every node at once and joins the errors.
func (b *builder) parallel(fn func(n Node) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(b.topo.Nodes))
	for i, n := range b.topo.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(n)
		}()
	}
	wg.Wait()
	return joinErrors(errs...)
}

func (b *builder) createNamespaces(context.Context) error {
	// Before the first namespace, so a later `ip netns add` cannot hide them (see
	// PrepareNetnsDir).
	if err := PrepareNetnsDir(); err != nil {
		return err
	}
	if err := b.parallel(func(n Node) error { return createNS(b.ns(n.Name)) }); err != nil {
		return err
	}
	b.handles = map[string]netns.NsHandle{}
	for _, n := range b.topo.Nodes {
		h, err := netns.GetFromName(b.ns(n.Name))
		if err != nil {
			return fmt.Errorf("open netns %s: %w", b.ns(n.Name), err)
		}
		b.handles[n.Name] = h
	}
	return nil
}

// sysctlsFor returns the sysctls of one node for the profile.
func sysctlsFor(n Node, profile string) []sysctl {
	s := []sysctl{
		// The lab's paths are asymmetric (r4 and r6 route back through one branch), so
		// reverse-path filtering would drop legitimate traffic.
		{key: "net.ipv4.conf.all.rp_filter", value: "0"},
		{key: "net.ipv4.conf.default.rp_filter", value: "0"},
		// Link-local addresses usable at once; the global ones are added with nodad.
		{key: "net.ipv6.conf.all.accept_dad", value: "0"},
		{key: "net.ipv6.conf.default.accept_dad", value: "0"},
	}
	if n.Kind == KindRouter {
		s = append(s,
			sysctl{key: "net.ipv4.ip_forward", value: "1"},
			sysctl{key: "net.ipv6.conf.all.forwarding", value: "1"},
			// Policy 3 (custom fields) hashes src/dst address, protocol and ports only.
			// Policy 1 would use the skb hash when the packet carries one, and on veth
			// the sending socket's random hash travels with the packet, so one 5-tuple
			// would take random branches.
			sysctl{key: "net.ipv4.fib_multipath_hash_policy", value: "3"},
			sysctl{key: "net.ipv4.fib_multipath_hash_fields", value: "0x0037"},
			sysctl{key: "net.ipv6.fib_multipath_hash_policy", value: "3"},
			sysctl{key: "net.ipv6.fib_multipath_hash_fields", value: "0x0037"},
			// Fixed per router: stable across runs, independent between diamonds.
			// Linux 6.11+ only; older kernels seed randomly at boot.
			sysctl{key: "net.ipv4.fib_multipath_hash_seed", value: strconv.FormatUint(uint64(HashSeed(n.Name)), 10), optional: true},
		)
	}
	switch profile {
	case ProfileFast:
		s = append(s,
			sysctl{key: "net.ipv4.icmp_ratelimit", value: "0"},
			sysctl{key: "net.ipv4.icmp_msgs_per_sec", value: "1000000"},
			sysctl{key: "net.ipv4.icmp_msgs_burst", value: "1000000"},
			sysctl{key: "net.ipv6.icmp.ratelimit", value: "0"},
		)
	default: // the kernel defaults, written anyway so the profile is explicit
		s = append(s,
			sysctl{key: "net.ipv4.icmp_ratelimit", value: "1000"},
			sysctl{key: "net.ipv4.icmp_msgs_per_sec", value: "1000"},
			sysctl{key: "net.ipv4.icmp_msgs_burst", value: "50"},
			sysctl{key: "net.ipv6.icmp.ratelimit", value: "1000"},
		)
	}
	if n.Kind == KindRouter && n.InboundErrors {
		s = append(s, sysctl{key: "net.ipv4.icmp_errors_use_inbound_ifaddr", value: "1"})
	}
	if n.Silent {
		// The global ICMP budget (per namespace) also covers ICMPv6 errors: with no
		// credit at all the router forwards but never sends Time Exceeded or
		// Unreachable. Verified by TestLabIntegration for both families.
		s = append(s,
			sysctl{key: "net.ipv4.icmp_msgs_per_sec", value: "0"},
			sysctl{key: "net.ipv4.icmp_msgs_burst", value: "0"},
		)
	}
	return s
}

func (b *builder) setSysctls(context.Context) error {
	return b.parallel(func(n Node) error { return writeSysctls(b.ns(n.Name), sysctlsFor(n, b.opts.Profile)) })
}

// ipidRules is the nftables ruleset of an IPIDCounter router: every IPv4 ICMP message it
// sends takes the next value of one counter (numgen inc), starting at IPIDOffset. The
// shift puts the 16-bit value where nft's 4-byte host-to-network conversion leaves the 2
// bytes written into the IP ID (without it, the ID written is always 0).
func ipidRules(node string) string {
	return fmt.Sprintf("table ip turnpath_lab {\n"+
		"\tchain output {\n"+
		"\t\ttype filter hook output priority 0; policy accept;\n"+
		"\t\tip protocol icmp ip id set numgen inc mod 65536 offset %d << 16\n"+
		"\t}\n}\n", IPIDOffset(node))
}

// setIPIDCounters installs the shared IP ID counter of the IPIDCounter routers.
func (b *builder) setIPIDCounters(ctx context.Context) error {
	return b.parallel(func(n Node) error {
		if n.Kind != KindRouter || !n.IPIDCounter {
			return nil
		}
		cmd := exec.CommandContext(ctx, b.bins[toolNft.name], "-f", "-")
		cmd.Stdin = strings.NewReader(ipidRules(n.Name))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := InNetNS(b.ns(n.Name), cmd.Run); err != nil {
			return fmt.Errorf("set ip id counter in %s: %w: %s", b.ns(n.Name), err, strings.TrimSpace(out.String()))
		}
		return nil
	})
}

// createLinks creates each veth pair directly across its two namespaces, so no
// interface ever exists in the host namespace, not even briefly.
func (b *builder) createLinks(context.Context) error {
	for _, l := range b.topo.Links {
		up, _ := b.topo.IfaceTo(l.Up, l.Down)
		down, _ := b.topo.IfaceTo(l.Down, l.Up)
		h, err := netlink.NewHandleAt(b.handles[l.Up])
		if err != nil {
			return fmt.Errorf("open netlink in %s: %w", b.ns(l.Up), err)
		}
		err = h.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: up.Name},
			PeerName:      down.Name,
			PeerNamespace: netlink.NsFd(int(b.handles[l.Down])),
		})
		h.Close()
		if err != nil {
			return fmt.Errorf("add veth %s/%s (%s-%s): %w", up.Name, down.Name, b.ns(l.Up), b.ns(l.Down), err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (b *builder) configureNodes(context.Context) error {
	return b.parallel(b.configureNode)
}

// configureNode brings the interfaces up, adds addresses, target addresses and routes.
func (b *builder) configureNode(n Node) error {
	nsName := b.ns(n.Name)
	h, err := netlink.NewHandleAt(b.handles[n.Name])
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", nsName, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("set lo up in %s: %w", nsName, err)
	}
	for _, i := range b.topo.Ifaces(n.Name) {
		link, err := h.LinkByName(i.Name)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", i.Name, nsName, err)
		}
		for _, a := range []*netlink.Addr{
			{IPNet: ipNet(i.Addr4)},
			// nodad: usable at once instead of tentative for a second.
			{IPNet: ipNet(i.Addr6), Flags: unix.IFA_F_NODAD},
		} {
			if err := h.AddrAdd(link, a); err != nil {
				return fmt.Errorf("add address %s to %s in %s: %w", a.IPNet, i.Name, nsName, err)
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up in %s: %w", i.Name, nsName, err)
		}
	}
	for _, g := range b.topo.Groups {
		if g.Node != n.Name {
			continue
		}
		if g.Mode == ModeWildcard {
			// AnyIP: "ip route add local P dev lo" makes every address of P local
			// without 256 interface addresses.
			for _, p := range []netip.Prefix{g.Prefix4.Masked(), g.Prefix6.Masked()} {
				r := &netlink.Route{Dst: ipNet(p), LinkIndex: lo.Attrs().Index, Type: unix.RTN_LOCAL,
					Table: unix.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST}
				if err := h.RouteAdd(r); err != nil {
					return fmt.Errorf("add local route %s in %s: %w", p, nsName, err)
				}
			}
			continue
		}
		for _, a := range g.Targets() {
			na := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, a.BitLen())), Flags: unix.IFA_F_NODAD}
			if err := h.AddrAdd(lo, na); err != nil {
				return fmt.Errorf("add target %s to lo in %s: %w", a, nsName, err)
			}
		}
	}
	for _, r := range b.topo.Routes(n.Name) {
		if r.Connected || r.Local {
			continue // the kernel made them (addresses) or we just did (AnyIP)
		}
		nr := &netlink.Route{Dst: ipNet(r.Dst)}
		for _, hop := range r.Via {
			link, err := h.LinkByName(hop.Dev)
			if err != nil {
				return fmt.Errorf("find %s in %s: %w", hop.Dev, nsName, err)
			}
			if len(r.Via) == 1 {
				nr.LinkIndex, nr.Gw = link.Attrs().Index, hop.Gw.AsSlice()
			} else {
				nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{LinkIndex: link.Attrs().Index, Gw: hop.Gw.AsSlice()})
			}
		}
		if err := h.RouteAdd(nr); err != nil {
			return fmt.Errorf("add route %s in %s: %w", r.Dst, nsName, err)
		}
	}
	return nil
}

// setNeighbours gives every interface a permanent neighbour entry for its peer's
// addresses, both families: no packet of the lab waits for ARP or neighbour discovery.
// Otherwise the first probes along a branch no earlier packet took are delayed by the
// resolution at every hop, and on a busy machine a fast prober's adaptive wait (a few
// milliseconds past the RTTs seen) could end before their answers come.
func (b *builder) setNeighbours(context.Context) error {
	for _, l := range b.topo.Links {
		for _, pair := range [][2]string{{l.Up, l.Down}, {l.Down, l.Up}} {
			self, peer := pair[0], pair[1]
			mine, _ := b.topo.IfaceTo(self, peer)
			theirs, _ := b.topo.IfaceTo(peer, self)
			mac, err := b.hardwareAddr(peer, theirs.Name)
			if err != nil {
				return err
			}
			h, err := netlink.NewHandleAt(b.handles[self])
			if err != nil {
				return fmt.Errorf("open netlink in %s: %w", b.ns(self), err)
			}
			link, err := h.LinkByName(mine.Name)
			if err == nil {
				for _, a := range []netip.Addr{theirs.Addr4.Addr(), theirs.Addr6.Addr()} {
					family := unix.AF_INET6
					if a.Is4() {
						family = unix.AF_INET
					}
					if err = h.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
						IP: a.AsSlice(), HardwareAddr: mac}); err != nil {
						break
					}
				}
			}
			h.Close()
			if err != nil {
				return fmt.Errorf("add neighbour %s on %s in %s: %w", peer, mine.Name, b.ns(self), err)
			}
		}
	}
	return nil
}

// hardwareAddr is the MAC address of interface name in node's namespace.
func (b *builder) hardwareAddr(node, name string) (net.HardwareAddr, error) {
	h, err := netlink.NewHandleAt(b.handles[node])
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", b.ns(node), err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", name, b.ns(node), err)
	}
	return link.Attrs().HardwareAddr, nil
}

func (b *builder) startServices(context.Context) error {
	dir := stateDir(b.opts.Prefix)
	// resolv.conf for `ip netns exec <prefix>-client`.
	client := b.ns(b.topo.Client())
	etc := filepath.Join("/etc/netns", client)
	rc := filepath.Join(etc, "resolv.conf")
	b.st.Files = append(b.st.Files, rc)
	if err := b.st.write(); err != nil {
		return err
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", etc, err)
	}
	if err := os.WriteFile(rc, []byte(resolvConf(b.topo)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", rc, err)
	}

	type svc struct {
		p    procInfo
		conf string
		args []string
	}
	var svcs []svc
	if r := b.topo.Resolver(); r != "" {
		conf := filepath.Join(dir, "dnsmasq.conf")
		svcs = append(svcs, svc{
			p:    procInfo{Name: "dnsmasq", Node: r, Binary: b.bins[toolDnsmasq.name], Config: conf, Log: filepath.Join(dir, "dnsmasq.log")},
			conf: dnsmasqConfig(b.topo),
			args: []string{"--keep-in-foreground", "--conf-file=" + conf, "--pid-file"},
		})
	}
	for _, g := range b.topo.Groups {
		conf := filepath.Join(dir, "coturn-"+g.Name+".conf")
		svcs = append(svcs, svc{
			p:    procInfo{Name: "coturn-" + g.Name, Node: g.Node, Binary: b.bins[toolCoturn.name], Config: conf, Log: filepath.Join(dir, "coturn-"+g.Name+".log")},
			conf: coturnConfig(b.topo, g, dir),
			args: []string{"-c", conf},
		})
	}
	for _, s := range svcs {
		if err := os.WriteFile(s.p.Config, []byte(s.conf), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", s.p.Config, err)
		}
		p := s.p
		if err := startProcess(b.ns(p.Node), &p, s.args...); err != nil {
			return err
		}
		b.st.Processes = append(b.st.Processes, p)
		if err := b.st.write(); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits until every coturn answers a STUN Binding from the client namespace
// (which also proves the routes) and dnsmasq answers a PTR query.
func (b *builder) waitReady(ctx context.Context) error {
	l := newLab(b.st, b.opts.Topology, false)
	check := func(p procInfo) error {
		if !procAlive(p.PID) {
			return fmt.Errorf("%s exited: %s", p.Name, logTail(p.Log, 5))
		}
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, g := range b.topo.Groups {
		var proc procInfo
		for _, p := range b.st.Processes {
			if p.Name == "coturn-"+g.Name {
				proc = p
			}
		}
		var first []netip.Addr
		for _, f := range []Family{IPv4, IPv6} {
			for _, a := range g.Targets() {
				if FamilyOf(a) == f {
					first = append(first, a)
					break
				}
			}
		}
		for _, a := range first {
			wg.Add(1)
			go func() {
				defer wg.Done()
				network := "udp4"
				if FamilyOf(a) == IPv6 {
					network = "udp6"
				}
				err := waitReady(ctx, fmt.Sprintf("coturn %s at %v", g.Name, a), func() error {
					if err := check(proc); err != nil {
						return err
					}
					c, err := l.ListenPacket(network, ":0")
					if err != nil {
						return err
					}
					defer c.Close()
					_, err = stunBinding(c, netip.AddrPortFrom(a, uint16(b.topo.Port)), 200*time.Millisecond)
					return err
				})
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}()
		}
	}
	if b.topo.Resolver() != "" {
		var proc procInfo
		for _, p := range b.st.Processes {
			if p.Name == "dnsmasq" {
				proc = p
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			probe := b.topo.AllIfaces()[0]
			err := waitReady(ctx, "dnsmasq", func() error {
				if err := check(proc); err != nil {
					return err
				}
				qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_, err := l.Resolver().LookupAddr(qctx, probe.Addr4.Addr().String())
				return err
			})
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return joinErrors(errs...)
}

// joinErrors is errors.Join on one line ("a; b"), as the CLI prints one line per error.
func joinErrors(errs ...error) error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return &lineErrors{out}
}

type lineErrors struct{ errs []error }

func (e *lineErrors) Error() string {
	s := make([]string, len(e.errs))
	for i, err := range e.errs {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e *lineErrors) Unwrap() []error { return e.errs }
