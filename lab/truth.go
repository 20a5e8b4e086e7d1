package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// The ground truth is computed from the topology's derived routing tables by walking
// every ECMP branch, never by probing, so a prober's results can be checked against it.

// Responder is what answers a probe at one TTL on one path.
type Responder struct {
	Node string `json:"node"`
	// Addr is the source address of the router's Time Exceeded (see
	// Topology.ErrorSource), or the target address itself at the destination. Zero for
	// silent routers.
	Addr netip.Addr `json:"addr,omitzero"`
	// Silent routers forward but never answer.
	Silent bool `json:"silent,omitempty"`
	// Destination marks the target node (the probe was delivered).
	Destination bool `json:"destination,omitempty"`
}

// Label is the address, or the node name for a silent router.
func (r Responder) Label() string {
	if r.Silent || !r.Addr.IsValid() {
		return r.Node
	}
	return r.Addr.String()
}

func (r Responder) String() string {
	switch {
	case r.Silent:
		return r.Node + " (silent)"
	case r.Destination:
		return r.Node + " " + r.Addr.String() + " (destination)"
	}
	return r.Node + " " + r.Addr.String()
}

// Path is one way to a target: element i answers at TTL i+1; the last element is the
// destination.
type Path []Responder

// Nodes returns the node names along the path.
func (p Path) Nodes() []string {
	out := make([]string, len(p))
	for i, r := range p {
		out[i] = r.Node
	}
	return out
}

// Hop is the set of possible responders at one TTL.
type Hop struct {
	TTL        int         `json:"ttl"`
	Responders []Responder `json:"responders"`
}

// HopLink is an edge between consecutive hops, by Responder.Label.
type HopLink struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// TargetTruth is the ground truth for one target address.
type TargetTruth struct {
	target   netip.Addr
	group    Group
	port     int
	stunFrom netip.Addr
	// unreachFrom: sources of ICMP errors (port unreachable) from the target node.
	unreachFrom []netip.Addr
	paths       []Path
}

// Addr is the target address.
func (tt *TargetTruth) Addr() netip.Addr { return tt.target }

// Family is the target's address family.
func (tt *TargetTruth) Family() Family { return FamilyOf(tt.target) }

// Group is the name of the target's group.
func (tt *TargetTruth) Group() string { return tt.group.Name }

// Mode is how the target's coturn listens.
func (tt *TargetTruth) Mode() GroupMode { return tt.group.Mode }

// Node is the target node's name.
func (tt *TargetTruth) Node() string { return tt.group.Node }

// STUNReplyFrom is the source address of coturn's answers: the target node's link
// address for a wildcard group, the probed address for a bound group.
func (tt *TargetTruth) STUNReplyFrom() netip.Addr { return tt.stunFrom }

// UnreachableFrom is the source of ICMP errors from the destination itself (port
// unreachable for a closed port): the probed address, except for IPv6 targets of a
// wildcard (AnyIP) group, where Linux answers from the target node's input interface.
// Echo replies always come from the probed address.
func (tt *TargetTruth) UnreachableFrom() []netip.Addr { return slices.Clone(tt.unreachFrom) }

// Paths returns every path to the target (one per combination of ECMP branches).
func (tt *TargetTruth) Paths() []Path {
	out := make([]Path, len(tt.paths))
	for i, p := range tt.paths {
		out[i] = slices.Clone(p)
	}
	return out
}

// ReachedAt returns the distinct TTLs at which the destination is reached, ascending.
func (tt *TargetTruth) ReachedAt() []int {
	var out []int
	for _, p := range tt.paths {
		if !slices.Contains(out, len(p)) {
			out = append(out, len(p))
		}
	}
	slices.Sort(out)
	return out
}

// MaxTTL is the TTL that reaches the destination on every path.
func (tt *TargetTruth) MaxTTL() int { return slices.Max(tt.ReachedAt()) }

// HopsAt returns who may answer a probe sent with ttl: the union over all paths. A TTL
// beyond a path's length reaches the destination, so it yields the destination.
func (tt *TargetTruth) HopsAt(ttl int) []Responder {
	var out []Responder
	if ttl < 1 {
		return nil
	}
	for _, p := range tt.paths {
		r := p[len(p)-1]
		if ttl <= len(p) {
			r = p[ttl-1]
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Responder) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}

// AddrsAt returns the addresses that may answer at ttl (silent routers have none).
func (tt *TargetTruth) AddrsAt(ttl int) []netip.Addr {
	var out []netip.Addr
	for _, r := range tt.HopsAt(ttl) {
		if !r.Silent && r.Addr.IsValid() {
			out = append(out, r.Addr)
		}
	}
	return out
}

// Hops returns HopsAt for TTL 1..MaxTTL.
func (tt *TargetTruth) Hops() []Hop {
	var out []Hop
	for ttl := 1; ttl <= tt.MaxTTL(); ttl++ {
		out = append(out, Hop{TTL: ttl, Responders: tt.HopsAt(ttl)})
	}
	return out
}

// Links returns the edges between consecutive hops over all paths, in the order the
// paths first use them (so roughly by TTL).
func (tt *TargetTruth) Links() []HopLink {
	var out []HopLink
	for _, p := range tt.paths {
		for i := 0; i+1 < len(p); i++ {
			l := HopLink{From: p[i].Label(), To: p[i+1].Label()}
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	return out
}

// LinksNamed returns the edges over all paths like Links, but with each silent router
// named by anon(last answering address before it, silent hops since): a multipath graph
// cannot tell a silent router's identity, only where it sits. Destination: the target.
func (tt *TargetTruth) LinksNamed(anon func(prev netip.Addr, depth int) string) [][2]string {
	var out [][2]string
	for _, p := range tt.paths {
		var prev netip.Addr
		depth := 0
		ids := make([]string, len(p))
		for i, r := range p {
			switch {
			case r.Destination:
				ids[i] = tt.target.String()
			case r.Silent:
				depth++
				ids[i] = anon(prev, depth)
			default:
				ids[i], prev, depth = r.Addr.String(), r.Addr, 0
			}
		}
		for i := 0; i+1 < len(ids); i++ {
			if l := [2]string{ids[i], ids[i+1]}; !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	return out
}

// TargetRouter is one answering router on a target's paths and the addresses it
// answers that target from: several when it answers from the interface a probe came in
// by and probes come in by several. They are one alias set of alias resolution.
type TargetRouter struct {
	Node  string       `json:"node"`
	Addrs []netip.Addr `json:"addrs"`
}

// Routers returns the answering routers on the target's paths (not the destination, not
// silent routers), by node name, each with the addresses it answers this target from.
func (tt *TargetTruth) Routers() []TargetRouter {
	byNode := map[string][]netip.Addr{}
	for _, p := range tt.paths {
		for _, r := range p {
			if r.Destination || r.Silent || !r.Addr.IsValid() {
				continue
			}
			if !slices.Contains(byNode[r.Node], r.Addr) {
				byNode[r.Node] = append(byNode[r.Node], r.Addr)
			}
		}
	}
	out := make([]TargetRouter, 0, len(byNode))
	for n, as := range byNode {
		slices.SortFunc(as, netip.Addr.Compare)
		out = append(out, TargetRouter{Node: n, Addrs: as})
	}
	slices.SortFunc(out, func(a, b TargetRouter) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// WriteText writes a short human-readable hop table, and the routers that answer from
// several addresses.
func (tt *TargetTruth) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s (%s, group %s on %s, STUN answers from %s, reached at TTL %v)\n",
		tt.Addr(), tt.Family(), tt.Group(), tt.Node(), tt.STUNReplyFrom(), tt.ReachedAt())
	for _, h := range tt.Hops() {
		rs := make([]string, len(h.Responders))
		for i, r := range h.Responders {
			rs[i] = r.String()
		}
		fmt.Fprintf(w, "  %2d  %s\n", h.TTL, strings.Join(rs, " | "))
	}
	for _, r := range tt.Routers() {
		if len(r.Addrs) < 2 {
			continue
		}
		as := make([]string, len(r.Addrs))
		for i, a := range r.Addrs {
			as[i] = a.String()
		}
		fmt.Fprintf(w, "  router %s answers from %s\n", r.Node, strings.Join(as, ", "))
	}
}

type targetTruthJSON struct {
	Target        netip.Addr   `json:"target"`
	Family        string       `json:"family"`
	Group         string       `json:"group"`
	Mode          GroupMode    `json:"mode"`
	Node          string       `json:"node"`
	Port          int          `json:"port"`
	STUNReplyFrom netip.Addr   `json:"stun_reply_from"`
	UnreachFrom   []netip.Addr `json:"unreachable_from"`
	ReachedAt     []int        `json:"reached_at"`
	Hops          []Hop        `json:"hops"`
	Links         []HopLink    `json:"links"`
	Paths         []Path       `json:"paths"`
	// Routers: the alias sets, the answering routers on the paths and their addresses.
	Routers []TargetRouter `json:"routers"`
}

// MarshalJSON writes the target's truth (see `turnpath lab truth --help`).
func (tt *TargetTruth) MarshalJSON() ([]byte, error) {
	return json.Marshal(targetTruthJSON{
		Target: tt.target, Family: tt.Family().String(), Group: tt.group.Name, Mode: tt.group.Mode,
		Node: tt.group.Node, Port: tt.port, STUNReplyFrom: tt.stunFrom, UnreachFrom: tt.unreachFrom, ReachedAt: tt.ReachedAt(),
		Hops: tt.Hops(), Links: tt.Links(), Paths: tt.paths, Routers: tt.Routers(),
	})
}

// Truth is the ground truth for every target of a topology.
type Truth struct {
	topo    *Topology
	targets []*TargetTruth
	index   map[netip.Addr]*TargetTruth
}

// NewTruth derives the ground truth from topo's routing tables.
func NewTruth(topo *Topology) (*Truth, error) {
	tr := &Truth{topo: topo, index: map[netip.Addr]*TargetTruth{}}
	tb := topo.tables()
	for _, g := range topo.Groups {
		for _, addr := range g.Targets() {
			tt, err := tb.targetTruth(g, addr)
			if err != nil {
				return nil, fmt.Errorf("derive truth for %v: %w", addr, err)
			}
			tr.targets = append(tr.targets, tt)
			tr.index[addr] = tt
		}
	}
	return tr, nil
}

// defaultTruth is computed on first use, not at init: every turnpath command imports
// this package.
var defaultTruth = sync.OnceValue(func() *Truth {
	tr, err := NewTruth(DefaultTopology())
	if err != nil {
		panic(err) // the default topology is covered by unit tests
	}
	return tr
})

// DefaultTruth is the ground truth of DefaultTopology. It is the same for every prefix:
// every lab uses the same addresses in its own namespaces.
func DefaultTruth() *Truth { return defaultTruth() }

// TargetTruth returns the truth for one target address.
func (tr *Truth) TargetTruth(addr netip.Addr) (*TargetTruth, bool) {
	tt, ok := tr.index[addr.Unmap()]
	return tt, ok
}

// Targets returns every target address (groups in order, IPv4 before IPv6).
func (tr *Truth) Targets() []netip.Addr {
	out := make([]netip.Addr, len(tr.targets))
	for i, tt := range tr.targets {
		out[i] = tt.target
	}
	return out
}

// All returns the truth of every target, in Targets order.
func (tr *Truth) All() []*TargetTruth { return slices.Clone(tr.targets) }

// Topology returns the topology the truth was derived from.
func (tr *Truth) Topology() *Topology { return tr.topo }

// Router is one router of the lab: which interfaces (and addresses) belong to it, and how
// it answers.
type Router struct {
	Node          string        `json:"node"`
	Silent        bool          `json:"silent,omitempty"`
	InboundErrors bool          `json:"inbound_errors,omitempty"` // see Node.InboundErrors
	IPIDCounter   bool          `json:"ipid_counter,omitempty"`   // see Node.IPIDCounter
	Interfaces    []RouterIface `json:"interfaces"`
}

// RouterIface is one interface of a router.
type RouterIface struct {
	Name  string     `json:"name"`
	Link  int        `json:"link"`
	Peer  string     `json:"peer"`
	Addr4 netip.Addr `json:"addr4"`
	Addr6 netip.Addr `json:"addr6"`
}

// Addrs returns the router's interface addresses of family f, in link order.
func (r Router) Addrs(f Family) []netip.Addr {
	out := make([]netip.Addr, len(r.Interfaces))
	for i, ifc := range r.Interfaces {
		out[i] = ifc.Addr4
		if f == IPv6 {
			out[i] = ifc.Addr6
		}
	}
	return out
}

// Routers returns the lab's routers with their interfaces, in topology order: the
// router identities alias resolution is checked against.
func (tr *Truth) Routers() []Router {
	var out []Router
	for _, n := range tr.topo.Nodes {
		if n.Kind != KindRouter {
			continue
		}
		r := Router{Node: n.Name, Silent: n.Silent, InboundErrors: n.InboundErrors, IPIDCounter: n.IPIDCounter}
		for _, i := range tr.topo.Ifaces(n.Name) {
			r.Interfaces = append(r.Interfaces, RouterIface{Name: i.Name, Link: i.Link, Peer: i.Peer, Addr4: i.Addr4.Addr(), Addr6: i.Addr6.Addr()})
		}
		out = append(out, r)
	}
	return out
}

// RouterOf returns the node that owns interface address addr (any node kind).
func (tr *Truth) RouterOf(addr netip.Addr) (string, bool) {
	addr = addr.Unmap()
	for _, i := range tr.topo.AllIfaces() {
		if i.Addr4.Addr() == addr || i.Addr6.Addr() == addr {
			return i.Node, true
		}
	}
	return "", false
}

type truthJSON struct {
	Domain  string                `json:"domain"`
	Client  map[string]netip.Addr `json:"client"`
	Routers []Router              `json:"routers"`
	Targets []*TargetTruth        `json:"targets"`
	ASes    []AS                  `json:"ases"`   // asn.go
	Routes  []RouteObject         `json:"routes"` // the registered prefixes and their origin
}

// MarshalJSON writes {"domain", "client": {"ipv4","ipv6"}, "targets": [...]}.
func (tr *Truth) MarshalJSON() ([]byte, error) {
	return json.Marshal(truthJSON{
		Domain: tr.topo.Domain,
		Client: map[string]netip.Addr{
			IPv4.String(): tr.topo.ClientAddr(IPv4),
			IPv6.String(): tr.topo.ClientAddr(IPv6),
		},
		Routers: tr.Routers(),
		Targets: tr.targets,
		ASes:    tr.topo.ASes(),
		Routes:  tr.topo.RouteObjects(),
	})
}

// targetTruth walks every branch from the client to addr.
func (tb *tables) targetTruth(g Group, addr netip.Addr) (*TargetTruth, error) {
	t := tb.t
	f := FamilyOf(addr)
	tt := &TargetTruth{target: addr, group: g, port: t.Port}
	if g.Mode == ModeBound {
		tt.stunFrom = addr
	} else {
		ifs := tb.replyIfaces(g.Node, f)
		if len(ifs) != 1 {
			return nil, fmt.Errorf("target node %s has %d routes back to the client, want 1", g.Node, len(ifs))
		}
		tt.stunFrom = ifs[0].Addr(f)
	}
	var walk func(node, prev string, path Path) error
	walk = func(node, prev string, path Path) error {
		if len(path) > 64 {
			return fmt.Errorf("routing loop: %v", path.Nodes())
		}
		r, ok := tb.lookup(node, addr)
		if !ok {
			return fmt.Errorf("%s has no route", node)
		}
		n, _ := t.Node(node)
		if r.Local {
			if node != g.Node {
				return fmt.Errorf("delivered locally at %s, not at %s", node, g.Node)
			}
			tt.paths = append(tt.paths, append(slices.Clone(path), Responder{Node: node, Addr: addr, Destination: true}))
			src, err := tb.destErrorSource(g, addr, prev)
			if err != nil {
				return err
			}
			if !slices.Contains(tt.unreachFrom, src) {
				tt.unreachFrom = append(tt.unreachFrom, src)
			}
			return nil
		}
		if node != t.Client() {
			if n.Kind != KindRouter {
				return fmt.Errorf("%s would have to forward it but is a %s", node, n.Kind)
			}
			resp := Responder{Node: node, Silent: n.Silent}
			if !n.Silent {
				src, err := tb.errorSource(node, prev, f)
				if err != nil {
					return err
				}
				resp.Addr = src
			}
			path = append(slices.Clip(path), resp) // Clip: siblings must not share a backing array
		}
		if len(r.Via) == 0 {
			return fmt.Errorf("%s: route %v has no next hop", node, r.Dst)
		}
		for _, h := range r.Via {
			if err := walk(h.Node, node, path); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(t.Client(), "", nil); err != nil {
		return nil, err
	}
	slices.SortFunc(tt.unreachFrom, netip.Addr.Compare)
	return tt, nil
}

// ErrorSource is the source address of the ICMP errors (Time Exceeded) that router
// node sends for a packet it received from neighbour prev, as Linux picks it (verified
// by TestLabIntegration):
//
//   - IPv4 (icmp_send) with icmp_errors_use_inbound_ifaddr=1 (Node.InboundErrors): the
//     address of the input interface, the router's address on the link from prev.
//   - IPv4 with the default 0: no source is given to the route lookup back to the
//     sender, so it is the address of the interface the route back to the client uses —
//     the same address whichever branch the probe came in on.
//   - IPv6 (icmp6_send): without a preferred source on that route, the kernel selects
//     the source on the *input* interface, so it is the router's address on the link
//     from prev, and differs per incoming branch.
func (t *Topology) ErrorSource(node, prev string, f Family) (netip.Addr, error) {
	return t.tables().errorSource(node, prev, f)
}

func (tb *tables) errorSource(node, prev string, f Family) (netip.Addr, error) {
	n, _ := tb.t.Node(node)
	if f == IPv6 || n.InboundErrors {
		i, ok := tb.ifaceTo(node, prev)
		if !ok {
			return netip.Addr{}, fmt.Errorf("%s has no link to %s", node, prev)
		}
		return i.Addr(f), nil
	}
	ifs := tb.replyIfaces(node, f)
	if len(ifs) != 1 {
		return netip.Addr{}, fmt.Errorf("%s has %d routes back to the client, want 1", node, len(ifs))
	}
	return ifs[0].Addr(f), nil
}

// destErrorSource is the source of ICMP errors (port unreachable) from the target node.
// A local destination answers from the probed address, except IPv6 AnyIP: the kernel
// only uses the destination as source if it is a configured address (ipv6_chk_addr),
// which a "local" route's addresses are not, so it falls back to the input interface.
func (tb *tables) destErrorSource(g Group, addr netip.Addr, prev string) (netip.Addr, error) {
	if FamilyOf(addr) == IPv6 && g.Mode == ModeWildcard {
		return tb.errorSource(g.Node, prev, IPv6)
	}
	return addr, nil
}
