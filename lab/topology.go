package lab

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
)

// The lab is described as data (nodes, links, next hops per target group) and every
// address, route, DNS name and ground-truth path is derived from that data, so the
// configured network and the truth the tests compare against cannot drift apart.

// Kind is the role of a node.
type Kind int

const (
	KindClient   Kind = iota // the probing host; no forwarding
	KindRouter               // forwards, answers with ICMP errors unless Silent
	KindTarget               // holds a target group and runs coturn
	KindResolver             // runs dnsmasq
)

func (k Kind) String() string {
	switch k {
	case KindClient:
		return "client"
	case KindRouter:
		return "router"
	case KindTarget:
		return "target"
	case KindResolver:
		return "resolver"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Family is an address family.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv4 {
		return "ipv4"
	}
	return "ipv6"
}

// FamilyOf returns the family of addr (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(addr netip.Addr) Family {
	if addr.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Node is one network namespace of the lab.
type Node struct {
	Name string
	Kind Kind
	// Uplink is the neighbour that gets this node's catch-all routes for the lab space
	// (198.18.0.0/15 and fd51::/16). For routers, targets and the resolver it is the next
	// hop toward the client; for the client it is r1. It is empty for r1 itself, which
	// reaches the client over a connected link.
	Uplink string
	// Forward lists, per target group, the next hops toward the group's target node.
	// More than one next hop makes an ECMP route.
	Forward map[string][]string
	// Silent routers never send ICMP errors (no Time Exceeded, no Unreachable).
	Silent bool
	// InboundErrors: the router's IPv4 ICMP errors come from the interface the offending
	// packet came in by (net.ipv4.icmp_errors_use_inbound_ifaddr=1), as on many vendor
	// routers and as Linux's ICMPv6 errors always do; otherwise from the interface of its
	// route back to the sender. A router reached over several links then answers from
	// several addresses: one router, several vertices of an interface graph.
	InboundErrors bool
	// IPIDCounter: the IPv4 ICMP messages the router sends take their IP IDs from one
	// counter shared by all its interfaces, starting at IPIDOffset (an nftables rule),
	// as on many vendor routers. Linux's own ICMP errors carry IP ID 0. The shared
	// counter is what alias resolution's monotonic bounds test recognises.
	IPIDCounter bool
}

// Link is a point-to-point veth pair. Link N uses 198.18.N.0/24 and fd51:0:0:N::/64;
// the side nearer the client (Up) gets .1 / ::1 and the other side .2 / ::2.
type Link struct {
	N    int
	Up   string
	Down string
}

// GroupMode says how a target group's coturn listens.
type GroupMode string

const (
	// ModeWildcard: one coturn on 0.0.0.0 / :: and the whole prefix routed to lo as
	// AnyIP ("local" route). The reply leaves from the node's link address, not from the
	// probed address — like a relay behind a load balancer doing DSR with SNAT.
	ModeWildcard GroupMode = "wildcard"
	// ModeBound: Count real addresses on lo, one coturn listener per address; replies
	// come from the probed address.
	ModeBound GroupMode = "bound"
)

// Group is a set of target addresses held by one target node.
type Group struct {
	Name string
	Node string
	Mode GroupMode
	// Prefix4 and Prefix6 are routed toward Node. For ModeWildcard every address in
	// them is a target; for ModeBound the targets are number 1..Count in each prefix
	// (IPv4: last byte 1..Count; IPv6: last group written like the decimal number,
	// fd51:1:2::1 .. fd51:1:2::16).
	Prefix4, Prefix6 netip.Prefix
	Count            int
}

// Topology is the whole lab as data.
type Topology struct {
	Nodes  []Node
	Links  []Link
	Groups []Group
	// Domain is the DNS suffix of the PTR names (<node>-link<N>.<Domain>).
	Domain string
	// Port is where coturn listens.
	Port int
}

// Lab-wide address space. Nothing outside these prefixes is ever configured.
var (
	LabSpace4 = netip.MustParsePrefix("198.18.0.0/15")
	LabSpace6 = netip.MustParsePrefix("fd51::/16")

	// Links are numbered out of these; targets live in the rest of the lab space.
	linkSpace4 = netip.MustParsePrefix("198.18.0.0/16")
	linkSpace6 = netip.MustParsePrefix("fd51::/32")
)

// DefaultTopology returns the turnpath lab:
//
//	client - r1 - r2 =< r3a r3b r3c >= r4 =< r5a | r5b - r5c >= r6 - r7(silent) - r8 - t1
//	          |    \- r9 - t2
//	          dns
//
// TTL from the client: 1 r1, 2 r2, 3 r3{a,b,c}, 4 r4, 5 r5a|r5b, 6 r6|r5c, 7 r7|r6,
// 8 r8|r7, 9 t1|r8, 10 t1. Toward t2: r1, r2, r9, t2.
//
// Every router answers from the interface a probe came in by (InboundErrors), on both
// families, so r4 answers from three addresses (links 7, 8, 9) and r6 from two (13, 14).
// r3a, r3b, r3c, r4 and r6 number their ICMP from one counter each (IPIDCounter), like
// vendor routers; the others are plain Linux (IP ID 0).
func DefaultTopology() *Topology {
	w, b := "wildcard", "bound"
	fw := func(hops ...string) map[string][]string { return map[string][]string{w: hops} }
	t := defaultTopology(w, b, fw)
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if n.Kind != KindRouter {
			continue
		}
		n.InboundErrors = true
		switch n.Name {
		case "r3a", "r3b", "r3c", "r4", "r6":
			n.IPIDCounter = true
		}
	}
	return t
}

func defaultTopology(w, b string, fw func(hops ...string) map[string][]string) *Topology {
	return &Topology{
		Domain: "lab.turnpath.test",
		Port:   3478,
		Nodes: []Node{
			{Name: "client", Kind: KindClient, Uplink: "r1"},
			{Name: "r1", Kind: KindRouter, Forward: map[string][]string{w: {"r2"}, b: {"r2"}}},
			{Name: "r2", Kind: KindRouter, Uplink: "r1", Forward: map[string][]string{w: {"r3a", "r3b", "r3c"}, b: {"r9"}}},
			{Name: "r3a", Kind: KindRouter, Uplink: "r2", Forward: fw("r4")},
			{Name: "r3b", Kind: KindRouter, Uplink: "r2", Forward: fw("r4")},
			{Name: "r3c", Kind: KindRouter, Uplink: "r2", Forward: fw("r4")},
			{Name: "r4", Kind: KindRouter, Uplink: "r3a", Forward: fw("r5a", "r5b")},
			{Name: "r5a", Kind: KindRouter, Uplink: "r4", Forward: fw("r6")},
			{Name: "r5b", Kind: KindRouter, Uplink: "r4", Forward: fw("r5c")},
			{Name: "r5c", Kind: KindRouter, Uplink: "r5b", Forward: fw("r6")},
			{Name: "r6", Kind: KindRouter, Uplink: "r5a", Forward: fw("r7")},
			{Name: "r7", Kind: KindRouter, Uplink: "r6", Forward: fw("r8"), Silent: true},
			{Name: "r8", Kind: KindRouter, Uplink: "r7", Forward: fw("t1")},
			{Name: "t1", Kind: KindTarget, Uplink: "r8"},
			{Name: "r9", Kind: KindRouter, Uplink: "r2", Forward: map[string][]string{b: {"t2"}}},
			{Name: "t2", Kind: KindTarget, Uplink: "r9"},
			{Name: "dns", Kind: KindResolver, Uplink: "r1"},
		},
		Links: []Link{
			{1, "client", "r1"},
			{2, "r1", "r2"},
			{3, "r1", "dns"},
			{4, "r2", "r3a"},
			{5, "r2", "r3b"},
			{6, "r2", "r3c"},
			{7, "r3a", "r4"},
			{8, "r3b", "r4"},
			{9, "r3c", "r4"},
			{10, "r4", "r5a"},
			{11, "r4", "r5b"},
			{12, "r5b", "r5c"},
			{13, "r5a", "r6"},
			{14, "r5c", "r6"},
			{15, "r6", "r7"},
			{16, "r7", "r8"},
			{17, "r8", "t1"},
			{18, "r2", "r9"},
			{19, "r9", "t2"},
		},
		Groups: []Group{
			{Name: w, Node: "t1", Mode: ModeWildcard,
				Prefix4: netip.MustParsePrefix("198.19.1.0/24"), Prefix6: netip.MustParsePrefix("fd51:1:1::/120")},
			{Name: b, Node: "t2", Mode: ModeBound, Count: 16,
				Prefix4: netip.MustParsePrefix("198.19.2.0/24"), Prefix6: netip.MustParsePrefix("fd51:1:2::/64")},
		},
	}
}

// Node returns the node called name.
func (t *Topology) Node(name string) (Node, bool) {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Group returns the group called name.
func (t *Topology) Group(name string) (Group, bool) {
	for _, g := range t.Groups {
		if g.Name == name {
			return g, true
		}
	}
	return Group{}, false
}

// GroupNames returns the group names in topology order.
func (t *Topology) GroupNames() []string {
	var names []string
	for _, g := range t.Groups {
		names = append(names, g.Name)
	}
	return names
}

// Client returns the client node's name.
func (t *Topology) Client() string {
	for _, n := range t.Nodes {
		if n.Kind == KindClient {
			return n.Name
		}
	}
	return ""
}

// Resolver returns the resolver node's name ("" if none).
func (t *Topology) Resolver() string {
	for _, n := range t.Nodes {
		if n.Kind == KindResolver {
			return n.Name
		}
	}
	return ""
}

// Iface is one end of a link, as configured inside a node's namespace.
type Iface struct {
	Node  string
	Peer  string
	Link  int
	Name  string       // interface name inside the namespace: l<N>-<peer>
	Addr4 netip.Prefix // 198.18.N.x/24
	Addr6 netip.Prefix // fd51:0:0:N::x/64
}

// Addr returns the interface address of the family.
func (i Iface) Addr(f Family) netip.Addr {
	if f == IPv4 {
		return i.Addr4.Addr()
	}
	return i.Addr6.Addr()
}

// Prefix returns the interface prefix of the family.
func (i Iface) Prefix(f Family) netip.Prefix {
	if f == IPv4 {
		return i.Addr4
	}
	return i.Addr6
}

func linkAddrs(n, host int) (netip.Prefix, netip.Prefix) {
	v4 := netip.AddrFrom4([4]byte{198, 18, byte(n), byte(host)})
	var b [16]byte
	b[0], b[1] = 0xfd, 0x51
	g := decimalGroup(n)
	b[6], b[7] = byte(g>>8), byte(g)
	b[15] = byte(host)
	return netip.PrefixFrom(v4, 24), netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// decimalGroup returns the IPv6 group that reads like n in decimal (18 -> 0x18), so
// link 18 is 198.18.18.0/24 and fd51:0:0:18::/64, and bound target 12 is 198.19.2.12 and
// fd51:1:2::12: humans can map the two families onto each other at a glance.
func decimalGroup(n int) uint16 {
	g, _ := strconv.ParseUint(strconv.Itoa(n), 16, 16)
	return uint16(g)
}

// Ifaces returns the interfaces of node, in link order.
func (t *Topology) Ifaces(node string) []Iface {
	var out []Iface
	for _, l := range t.Links {
		var peer string
		host := 0
		switch node {
		case l.Up:
			peer, host = l.Down, 1
		case l.Down:
			peer, host = l.Up, 2
		default:
			continue
		}
		a4, a6 := linkAddrs(l.N, host)
		out = append(out, Iface{Node: node, Peer: peer, Link: l.N, Name: fmt.Sprintf("l%d-%s", l.N, peer), Addr4: a4, Addr6: a6})
	}
	return out
}

// IfaceTo returns node's interface toward peer.
func (t *Topology) IfaceTo(node, peer string) (Iface, bool) {
	for _, i := range t.Ifaces(node) {
		if i.Peer == peer {
			return i, true
		}
	}
	return Iface{}, false
}

// AllIfaces returns every interface of every node, in node order.
func (t *Topology) AllIfaces() []Iface {
	var out []Iface
	for _, n := range t.Nodes {
		out = append(out, t.Ifaces(n.Name)...)
	}
	return out
}

// PTRName is the DNS name of an interface address: <node>-link<N>.<domain>.
func (t *Topology) PTRName(i Iface) string {
	return fmt.Sprintf("%s-link%d.%s", i.Node, i.Link, t.Domain)
}

// ClientAddr is the client's address on its link: the probe source.
func (t *Topology) ClientAddr(f Family) netip.Addr {
	ifs := t.Ifaces(t.Client())
	if len(ifs) == 0 {
		return netip.Addr{}
	}
	return ifs[0].Addr(f)
}

// ResolverAddrs returns the resolver's link addresses (IPv4 first).
func (t *Topology) ResolverAddrs() []netip.Addr {
	ifs := t.Ifaces(t.Resolver())
	if len(ifs) == 0 {
		return nil
	}
	return []netip.Addr{ifs[0].Addr4.Addr(), ifs[0].Addr6.Addr()}
}

// Targets returns the target addresses of group: IPv4 first, then IPv6, ascending.
func (g Group) Targets() []netip.Addr {
	var out []netip.Addr
	for _, p := range []netip.Prefix{g.Prefix4, g.Prefix6} {
		p = p.Masked()
		if g.Mode == ModeWildcard {
			for a := p.Addr(); a.IsValid() && p.Contains(a); a = a.Next() {
				out = append(out, a)
			}
			continue
		}
		for i := 1; i <= g.Count; i++ {
			if p.Addr().Is4() {
				b := p.Addr().As4()
				b[3] += byte(i)
				out = append(out, netip.AddrFrom4(b))
				continue
			}
			b := p.Addr().As16()
			d := decimalGroup(i)
			b[14], b[15] = b[14]|byte(d>>8), b[15]|byte(d)
			out = append(out, netip.AddrFrom16(b))
		}
	}
	return out
}

// Targets returns the target addresses of the named group (nil if unknown).
func (t *Topology) Targets(group string) []netip.Addr {
	g, ok := t.Group(group)
	if !ok {
		return nil
	}
	return g.Targets()
}

// AllTargets returns the targets of every group, in group order.
func (t *Topology) AllTargets() []netip.Addr {
	var out []netip.Addr
	for _, g := range t.Groups {
		out = append(out, g.Targets()...)
	}
	return out
}

// HashSeed is the fixed fib_multipath_hash_seed of a router. Fixed so a flow takes the
// same branch on every run; different per router so the diamonds hash independently.
func HashSeed(node string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("turnpath-lab/" + node))
	return h.Sum32() | 1 // 0 would mean "random seed" to the kernel
}

// minIPIDGap is how far apart two routers' IP ID counters start: a lab run sends far
// fewer ICMP messages per router than this.
const minIPIDGap = 1024

// IPIDOffset is where an IPIDCounter router's IP ID counter starts. Fixed per router,
// like HashSeed, and far apart between routers (Validate checks it), so the lab's
// distinct routers never look like one counter by chance; real counters start anywhere.
func IPIDOffset(node string) uint16 {
	h := fnv.New32a()
	h.Write([]byte("turnpath-lab-ipid/" + node))
	x := h.Sum32() // FNV's high bits barely move with the last byte: mix (murmur3's finaliser)
	x ^= x >> 16
	x *= 0x85ebca6b
	x ^= x >> 13
	x *= 0xc2b2ae35
	x ^= x >> 16
	return uint16(x)
}

// NextHop is one gateway of a route.
type NextHop struct {
	Node string     // the neighbour
	Dev  string     // our interface toward it
	Gw   netip.Addr // its address on the link
}

// Route is one route of a node's derived routing table.
type Route struct {
	Dst netip.Prefix
	// Via is empty for connected and local routes; more than one entry is ECMP.
	Via []NextHop
	// Connected routes are created by the kernel when the address is added.
	Connected bool
	// Local routes deliver to the node itself: the AnyIP prefix of a wildcard group
	// ("ip route add local P dev lo") or a bound group's addresses on lo.
	Local bool
}

// Routes returns node's full routing table as the lab configures it: connected routes,
// local target routes, the lab catch-all toward Uplink and the target group routes.
func (t *Topology) Routes(node string) []Route {
	n, ok := t.Node(node)
	if !ok {
		return nil
	}
	var rs []Route
	for _, i := range t.Ifaces(node) {
		rs = append(rs, Route{Dst: i.Addr4.Masked(), Connected: true}, Route{Dst: i.Addr6.Masked(), Connected: true})
	}
	for _, g := range t.Groups {
		if g.Node != node {
			continue
		}
		if g.Mode == ModeWildcard {
			rs = append(rs, Route{Dst: g.Prefix4.Masked(), Local: true}, Route{Dst: g.Prefix6.Masked(), Local: true})
			continue
		}
		for _, a := range g.Targets() {
			rs = append(rs, Route{Dst: netip.PrefixFrom(a, a.BitLen()), Local: true})
		}
	}
	hops := func(f Family, peers []string) []NextHop {
		var out []NextHop
		for _, p := range peers {
			mine, ok1 := t.IfaceTo(node, p)
			theirs, ok2 := t.IfaceTo(p, node)
			if !ok1 || !ok2 {
				continue // Validate reports it
			}
			out = append(out, NextHop{Node: p, Dev: mine.Name, Gw: theirs.Addr(f)})
		}
		return out
	}
	if n.Uplink != "" {
		rs = append(rs,
			Route{Dst: LabSpace4, Via: hops(IPv4, []string{n.Uplink})},
			Route{Dst: LabSpace6, Via: hops(IPv6, []string{n.Uplink})})
	}
	for _, g := range t.Groups {
		peers, ok := n.Forward[g.Name]
		if !ok {
			continue
		}
		rs = append(rs,
			Route{Dst: g.Prefix4.Masked(), Via: hops(IPv4, peers)},
			Route{Dst: g.Prefix6.Masked(), Via: hops(IPv6, peers)})
	}
	return rs
}

// tables caches a topology's derived interfaces and routing tables: the truth walk
// does thousands of lookups, and re-deriving the tables for each one costs seconds.
type tables struct {
	t      *Topology
	ifaces map[string][]Iface
	routes map[string][]Route
	client map[Family]netip.Addr
}

func (t *Topology) tables() *tables {
	tb := &tables{t: t, ifaces: map[string][]Iface{}, routes: map[string][]Route{},
		client: map[Family]netip.Addr{IPv4: t.ClientAddr(IPv4), IPv6: t.ClientAddr(IPv6)}}
	for _, n := range t.Nodes {
		tb.ifaces[n.Name] = t.Ifaces(n.Name)
		tb.routes[n.Name] = t.Routes(n.Name)
	}
	return tb
}

func (tb *tables) ifaceTo(node, peer string) (Iface, bool) {
	for _, i := range tb.ifaces[node] {
		if i.Peer == peer {
			return i, true
		}
	}
	return Iface{}, false
}

// lookup does a longest-prefix match like the kernel: local routes win over
// everything, as the local table is looked up first.
func (tb *tables) lookup(node string, dst netip.Addr) (Route, bool) {
	var best Route
	found := false
	for _, r := range tb.routes[node] {
		if !r.Dst.Contains(dst) {
			continue
		}
		if r.Local {
			return r, true
		}
		if !found || r.Dst.Bits() > best.Dst.Bits() {
			best, found = r, true
		}
	}
	return best, found
}

func (tb *tables) replyIfaces(node string, f Family) []Iface {
	r, ok := tb.lookup(node, tb.client[f])
	if !ok {
		return nil
	}
	if r.Connected {
		for _, i := range tb.ifaces[node] {
			if i.Prefix(f).Masked() == r.Dst {
				return []Iface{i}
			}
		}
		return nil
	}
	var out []Iface
	for _, h := range r.Via {
		if i, ok := tb.ifaceTo(node, h.Node); ok {
			out = append(out, i)
		}
	}
	return out
}

// Lookup does a longest-prefix match of dst in node's derived table, like the kernel
// does (local routes win over everything, as the local table is looked up first).
func (t *Topology) Lookup(node string, dst netip.Addr) (Route, bool) {
	return t.tables().lookup(node, dst)
}

// ReplyIfaces returns the interfaces of node's route back to the client (usually one).
// Their IPv4 addresses are what node's ICMP errors come from (see ErrorSource).
func (t *Topology) ReplyIfaces(node string, f Family) []Iface {
	return t.tables().replyIfaces(node, f)
}

// Validate checks the topology for mistakes the derivation would silently paper over.
func (t *Topology) Validate() error {
	var errs []error
	names := map[string]bool{}
	clients := 0
	for _, n := range t.Nodes {
		if n.Name == "" || names[n.Name] {
			errs = append(errs, fmt.Errorf("node %q: empty or duplicate name", n.Name))
		}
		names[n.Name] = true
		if n.Kind == KindClient {
			clients++
		}
	}
	if clients != 1 {
		errs = append(errs, fmt.Errorf("want exactly one client node, have %d", clients))
	}
	linkNs := map[int]bool{}
	pairs := map[[2]string]bool{}
	for _, l := range t.Links {
		if l.N < 1 || l.N > 254 || linkNs[l.N] {
			errs = append(errs, fmt.Errorf("link %d: number out of 1..254 or duplicate", l.N))
		}
		linkNs[l.N] = true
		if !names[l.Up] || !names[l.Down] || l.Up == l.Down {
			errs = append(errs, fmt.Errorf("link %d: bad ends %q, %q", l.N, l.Up, l.Down))
		}
		k := [2]string{min(l.Up, l.Down), max(l.Up, l.Down)}
		if pairs[k] {
			errs = append(errs, fmt.Errorf("link %d: second link between %s and %s", l.N, l.Up, l.Down))
		}
		pairs[k] = true
		for _, end := range []struct{ node, peer string }{{l.Up, l.Down}, {l.Down, l.Up}} {
			if name := fmt.Sprintf("l%d-%s", l.N, end.peer); len(name) > 15 {
				errs = append(errs, fmt.Errorf("link %d: interface name %q longer than 15 bytes", l.N, name))
			}
		}
	}
	adjacent := func(a, b string) bool { return pairs[[2]string{min(a, b), max(a, b)}] }
	groups := map[string]bool{}
	for _, g := range t.Groups {
		groups[g.Name] = true
		if n, ok := t.Node(g.Node); !ok || n.Kind != KindTarget {
			errs = append(errs, fmt.Errorf("group %s: node %q is not a target node", g.Name, g.Node))
		}
		if !g.Prefix4.Addr().Is4() || !g.Prefix6.Addr().Is6() || !LabSpace4.Contains(g.Prefix4.Addr()) || !LabSpace6.Contains(g.Prefix6.Addr()) {
			errs = append(errs, fmt.Errorf("group %s: prefixes %v %v outside the lab space", g.Name, g.Prefix4, g.Prefix6))
		}
		if linkSpace4.Overlaps(g.Prefix4) || linkSpace6.Overlaps(g.Prefix6) {
			errs = append(errs, fmt.Errorf("group %s: prefixes %v %v overlap the link space", g.Name, g.Prefix4, g.Prefix6))
		}
		if g.Mode == ModeBound && (g.Count < 1 || g.Count > 254) {
			errs = append(errs, fmt.Errorf("group %s: bound groups need 1..254 addresses", g.Name))
		}
	}
	for _, n := range t.Nodes {
		if n.Uplink != "" && !adjacent(n.Name, n.Uplink) {
			errs = append(errs, fmt.Errorf("node %s: uplink %s is not a neighbour", n.Name, n.Uplink))
		}
		if n.Kind != KindRouter && n.Uplink == "" {
			errs = append(errs, fmt.Errorf("node %s: non-routers need an uplink", n.Name))
		}
		for g, hops := range n.Forward {
			if !groups[g] {
				errs = append(errs, fmt.Errorf("node %s: forward for unknown group %s", n.Name, g))
			}
			for _, h := range hops {
				if !adjacent(n.Name, h) {
					errs = append(errs, fmt.Errorf("node %s: next hop %s for %s is not a neighbour", n.Name, h, g))
				}
			}
		}
	}
	if len(errs) > 0 {
		return joinErrors(errs...)
	}
	// Every target must be reachable and every router on the way must route back.
	if _, err := NewTruth(t); err != nil {
		return err
	}
	seeds := map[uint32]string{}
	for _, n := range t.Nodes {
		if n.Kind != KindRouter {
			continue
		}
		s := HashSeed(n.Name)
		if other, dup := seeds[s]; dup {
			errs = append(errs, fmt.Errorf("routers %s and %s hash to the same seed", n.Name, other))
		}
		seeds[s] = n.Name
	}
	var counters []Node
	for _, n := range t.Nodes {
		if n.Kind == KindRouter && n.IPIDCounter {
			counters = append(counters, n)
		}
	}
	for i, a := range counters {
		for _, b := range counters[i+1:] {
			if d := IPIDOffset(a.Name) - IPIDOffset(b.Name); min(d, -d) < minIPIDGap {
				errs = append(errs, fmt.Errorf("routers %s and %s start their IP ID counters %d apart (want %d or more)", a.Name, b.Name, min(d, -d), minIPIDGap))
			}
		}
	}
	return joinErrors(errs...)
}
