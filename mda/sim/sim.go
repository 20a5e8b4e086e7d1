// Package sim is a simulated network for package mda: routers with per-flow ECMP (a hash
// of the flow, the destination and a per-router seed, like Linux L4 hashing), silent
// routers, loss, per-router ICMP rate limiting (token buckets) and a virtual clock, so
// multipath exploration can be tested and benchmarked offline, fast and deterministically.
package sim

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/probe"
)

// Node is a router or a destination host.
type Node struct {
	Name string
	// Addr is the source of the node's ICMP errors (for a destination, unused: it answers
	// from the probed address).
	Addr netip.Addr
	// Next are the ECMP next hops (node names) toward every target, unless Routes has an
	// entry for the target's node.
	Next   []string
	Routes map[string][]string
	Seed   uint64 // ECMP hash seed
	Silent bool   // forwards but never answers
	Host   bool   // a destination
	// Loss is the probability that an answer of this node is lost (on top of Network.Loss).
	Loss float64
	// RateLimit, if set, limits the node's ICMP answers to the prober.
	RateLimit *Bucket
	// InAddrs, if set, are the addresses the router answers from by the neighbour a probe
	// came from (the interface it came in by: icmp_errors_use_inbound_ifaddr, IPv6): one
	// router, several vertices. A neighbour not listed gets Addr.
	InAddrs map[string]netip.Addr
	// IPID is how the router numbers its answers' IP IDs; IPIDStart where a shared
	// counter starts.
	IPID      IPIDMode
	IPIDStart uint16

	tokens   float64
	last     time.Time
	counter  uint16
	counters map[netip.Addr]uint16
}

// IPIDMode is how a router fills the IP ID of its answers.
type IPIDMode int

const (
	IPIDNone     IPIDMode = iota // answers carry no IP ID (HasIPID false), like IPv6
	IPIDShared                   // one counter for every interface (many vendor routers)
	IPIDPerIface                 // a counter per interface, each starting at random (Linux's hashed IDs)
	IPIDZero                     // always 0 (Linux's ICMP errors)
)

// AddrFrom is the address nd answers from for a probe that came from neighbour prev.
func (nd *Node) AddrFrom(prev string) netip.Addr {
	if a, ok := nd.InAddrs[prev]; ok {
		return a
	}
	return nd.Addr
}

// Addrs returns every address nd answers from, ascending.
func (nd *Node) Addrs() []netip.Addr {
	out := []netip.Addr{}
	if nd.Addr.IsValid() {
		out = append(out, nd.Addr)
	}
	for _, a := range nd.InAddrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Bucket is a token-bucket ICMP rate limit: Burst answers at once, then Rate per second
// (Linux: icmp_ratelimit 1000 ms -> burst 6, 1/s).
type Bucket struct {
	Burst int
	Rate  float64
}

// LinuxLimit is the Linux default ICMP rate limit toward one host.
var LinuxLimit = Bucket{Burst: 6, Rate: 1}

// Target is a probed destination: the host node and the address probed (it may be one
// of many addresses the host answers for, and it enters the ECMP hash).
type Target struct {
	Node string
	Addr netip.Addr
}

// Network is the simulated network. It implements mda.Prober.
type Network struct {
	First   string // the node at TTL 1
	Nodes   map[string]*Node
	Targets []Target
	// Loss is the probability that any answer is lost.
	Loss float64
	// HopRTT is the RTT added per hop; Timeout how long a batch with unanswered probes
	// takes (the prober's wait). Defaults 1 ms and 500 ms.
	HopRTT  time.Duration
	Timeout time.Duration

	clock time.Time
	rng   *rand.Rand
	depth map[string]int // fewest hops from the prober to each node (reply TTLs)
	// Counters.
	Sent, Answered int
	PerNode        map[string]int // probes that reached each node (answered or not)
}

// New returns a network with the nodes, answering on a virtual clock. seed drives loss.
func New(first string, nodes []*Node, targets []Target, seed uint64) *Network {
	n := &Network{First: first, Nodes: map[string]*Node{}, Targets: targets,
		HopRTT: time.Millisecond, Timeout: 500 * time.Millisecond,
		clock: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), rng: rand.New(rand.NewPCG(seed, 0x6d6461)),
		PerNode: map[string]int{}}
	for _, nd := range nodes {
		n.Nodes[nd.Name] = nd
	}
	return n
}

// Reseed restarts the random source of losses.
func (n *Network) Reseed(seed uint64) { n.rng = rand.New(rand.NewPCG(seed, 0x6d6461)) }

// Now is the virtual clock (mda.Options.Now).
func (n *Network) Now() time.Time { return n.clock }

// Sleep advances the virtual clock (mda.Options.Sleep).
func (n *Network) Sleep(ctx context.Context, d time.Duration) error {
	if d > 0 {
		n.clock = n.clock.Add(d)
	}
	return ctx.Err()
}

// Options returns o with the virtual clock plugged in.
func (n *Network) Options(o mda.Options) mda.Options {
	o.Now, o.Sleep = n.Now, n.Sleep
	// The prober is attached to one router (First), as a host with a plain default route.
	o.OneFirstHop = func(int) bool { return true }
	return o
}

// SetRateLimit gives every router the bucket b (nil: none). Destinations answer every
// probe: a relay's STUN answers are not ICMP, and not rate limited.
func (n *Network) SetRateLimit(b *Bucket) {
	for _, nd := range n.Nodes {
		if b != nil && !nd.Host {
			c := *b
			nd.RateLimit = &c
		} else {
			nd.RateLimit = nil
		}
	}
}

// Check reports routing mistakes: unknown next hops, targets that are not hosts.
func (n *Network) Check() error {
	if n.Nodes[n.First] == nil {
		return fmt.Errorf("first hop %q unknown", n.First)
	}
	for _, nd := range n.Nodes {
		for _, nh := range nd.Next {
			if n.Nodes[nh] == nil {
				return fmt.Errorf("%s: next hop %q unknown", nd.Name, nh)
			}
		}
		for _, nhs := range nd.Routes {
			for _, nh := range nhs {
				if n.Nodes[nh] == nil {
					return fmt.Errorf("%s: next hop %q unknown", nd.Name, nh)
				}
			}
		}
	}
	for i, t := range n.Targets {
		if nd := n.Nodes[t.Node]; nd == nil || !nd.Host {
			return fmt.Errorf("target %d: %q is not a host", i, t.Node)
		}
	}
	return nil
}

func (n *Network) nextHops(nd *Node, target int) []string {
	if r, ok := nd.Routes[n.Targets[target].Node]; ok {
		return r
	}
	return nd.Next
}

// choose is the ECMP decision of nd for a flow: a hash of (seed, destination, source
// port) modulo the number of next hops, fixed per flow like Linux L4 hashing.
func (n *Network) choose(nd *Node, target int, flowID uint16) string {
	nh := n.nextHops(nd, target)
	switch len(nh) {
	case 0:
		return ""
	case 1:
		return nh[0]
	}
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], nd.Seed)
	h.Write(b[:])
	a := n.Targets[target].Addr.As16()
	h.Write(a[:])
	binary.BigEndian.PutUint16(b[:2], flowID)
	h.Write(b[:2])
	return nh[mix(h.Sum64())%uint64(len(nh))]
}

// mix is the splitmix64 finalizer: FNV's low bits alone are poorly spread.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// At returns the node a flow reaches at a TTL (the host if it is reached earlier), or nil
// when the path ends before (a dead end).
func (n *Network) At(target int, flowID uint16, ttl int) *Node {
	nd, _ := n.at(target, flowID, ttl)
	return nd
}

// at is At and the name of the node before ("" for the first).
func (n *Network) at(target int, flowID uint16, ttl int) (*Node, string) {
	nd, prev := n.Nodes[n.First], ""
	for t := 1; t < ttl && nd != nil && !nd.Host; t++ {
		prev = nd.Name
		nd = n.Nodes[n.choose(nd, target, flowID)]
	}
	return nd, prev
}

// replyTTL is the TTL an answer of nd arrives with: 64 less the hops back, taken as its
// shortest distance from the prober (a router's answers go back one way, whatever
// branch the probe came by).
func (n *Network) replyTTL(nd *Node) uint8 {
	if n.depth == nil {
		n.depth = map[string]int{n.First: 1}
		queue := []string{n.First}
		for len(queue) > 0 {
			u := n.Nodes[queue[0]]
			queue = queue[1:]
			var nhs []string
			nhs = append(nhs, u.Next...)
			for _, r := range u.Routes {
				nhs = append(nhs, r...)
			}
			for _, v := range nhs {
				if _, ok := n.depth[v]; !ok && n.Nodes[v] != nil {
					n.depth[v] = n.depth[u.Name] + 1
					queue = append(queue, v)
				}
			}
		}
	}
	return uint8(65 - n.depth[nd.Name])
}

// ipid numbers one answer of nd from address a.
func (n *Network) ipid(nd *Node, a netip.Addr) (uint16, bool) {
	switch nd.IPID {
	case IPIDShared:
		nd.counter++
		return nd.IPIDStart + nd.counter, true
	case IPIDPerIface:
		if nd.counters == nil {
			nd.counters = map[netip.Addr]uint16{}
		}
		if _, ok := nd.counters[a]; !ok {
			nd.counters[a] = uint16(n.rng.Uint32())
		}
		nd.counters[a]++
		return nd.counters[a], true
	case IPIDZero:
		return 0, true
	}
	return 0, false
}

// Path returns the node names of one flow's path, TTL 1 first, up to the host.
func (n *Network) Path(target int, flowID uint16) []string {
	var out []string
	nd := n.Nodes[n.First]
	for t := 1; nd != nil && t <= 255; t++ {
		out = append(out, nd.Name)
		if nd.Host {
			break
		}
		nd = n.Nodes[n.choose(nd, target, flowID)]
	}
	return out
}

// Probe answers a batch (mda.Prober). All probes leave at once; the virtual clock moves
// by the slowest answer, or by Timeout if any probe goes unanswered.
func (n *Network) Probe(ctx context.Context, reqs []mda.Request) ([]mda.Answer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]mda.Answer, 0, len(reqs))
	var slowest time.Duration
	missing := false
	for i, q := range reqs {
		n.Sent++
		if q.Target < 0 || q.Target >= len(n.Targets) || q.TTL == 0 {
			missing = true
			continue
		}
		nd, prev := n.at(q.Target, q.Flow, int(q.TTL))
		if nd == nil {
			missing = true
			continue
		}
		n.PerNode[nd.Name]++
		rtt := time.Duration(q.TTL) * n.HopRTT
		if !n.answers(nd, n.clock.Add(rtt/2)) {
			missing = true
			continue
		}
		a := mda.Answer{Request: q, From: nd.AddrFrom(prev), RTT: rtt, Kind: probe.KindTimeExceeded,
			At: n.clock.Add(time.Duration(i) * time.Microsecond), ReplyTTL: n.replyTTL(nd)}
		a.IPID, a.HasIPID = n.ipid(nd, a.From)
		if nd.Host {
			a.From, a.Dest, a.Kind = n.Targets[q.Target].Addr, true, probe.KindSTUN
			rtt = time.Duration(len(n.Path(q.Target, q.Flow))) * n.HopRTT
			a.RTT = rtt
		}
		n.Answered++
		slowest = max(slowest, rtt)
		out = append(out, a)
	}
	if missing {
		slowest = n.Timeout
	}
	n.clock = n.clock.Add(slowest)
	return out, nil
}

// answers decides whether nd answers a probe arriving at time at.
func (n *Network) answers(nd *Node, at time.Time) bool {
	if nd.Silent {
		return false
	}
	if b := nd.RateLimit; b != nil {
		if nd.last.IsZero() {
			nd.tokens = float64(b.Burst)
		} else {
			nd.tokens = min(float64(b.Burst), nd.tokens+at.Sub(nd.last).Seconds()*b.Rate)
		}
		nd.last = at
		if nd.tokens < 1 {
			return false
		}
		nd.tokens--
	}
	if n.Loss > 0 && n.rng.Float64() < n.Loss {
		return false
	}
	if nd.Loss > 0 && n.rng.Float64() < nd.Loss {
		return false
	}
	return true
}

// Link is an edge of the visible graph, by mda node IDs.
type Link struct{ From, To string }

// Links returns every link toward the target that an exploration can see, by mda node
// ID: silent routers appear as mda anonymous hops (mda.AnonID), keyed by the last
// answering router before them; the destination is the target address.
func (n *Network) Links(target int) map[Link]bool {
	out := map[Link]bool{}
	type state struct {
		node  string
		prev  string     // the node before ("" at the prober)
		after netip.Addr // last answering node before
		depth int        // silent nodes since
		from  string     // visible ID of the previous node ("" at the prober)
	}
	seen := map[state]bool{}
	var walk func(s state)
	walk = func(s state) {
		if seen[s] {
			return
		}
		seen[s] = true
		nd := n.Nodes[s.node]
		var id string
		next := state{}
		switch {
		case nd.Host:
			id = n.Targets[target].Addr.String()
		case nd.Silent:
			id = mda.AnonID(s.after, s.depth+1)
			next.after, next.depth = s.after, s.depth+1
		default:
			a := nd.AddrFrom(s.prev)
			id = a.String()
			next.after = a
		}
		if s.from != "" {
			out[Link{s.from, id}] = true
		}
		if nd.Host {
			return
		}
		next.from, next.prev = id, nd.Name
		for _, nh := range n.nextHops(nd, target) {
			next.node = nh
			walk(next)
		}
	}
	walk(state{node: n.First})
	return out
}

// Routers returns, for every router that answers from several addresses, its addresses:
// the alias sets an exploration should find.
func (n *Network) Routers() map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for name, nd := range n.Nodes {
		if as := nd.Addrs(); !nd.Host && len(as) > 1 {
			out[name] = as
		}
	}
	return out
}

// RouterOf returns the router that answers from a.
func (n *Network) RouterOf(a netip.Addr) (string, bool) {
	for name, nd := range n.Nodes {
		if !nd.Host && slices.Contains(nd.Addrs(), a) {
			return name, true
		}
	}
	return "", false
}

// TargetAddrs returns the probed addresses, in target order (for mda.RunMany).
func (n *Network) TargetAddrs() []netip.Addr {
	out := make([]netip.Addr, len(n.Targets))
	for i, t := range n.Targets {
		out[i] = t.Addr
	}
	return out
}

// Compare checks an exploration's links against the true ones toward target: the links
// it missed and the ones that do not exist.
func (n *Network) Compare(target int, g *mda.Graph) (missing, extra []Link) {
	want := n.Links(target)
	got := map[Link]bool{}
	for _, l := range g.Links {
		got[Link{l.From, l.To}] = true
	}
	for l := range want {
		if !got[l] {
			missing = append(missing, l)
		}
	}
	for l := range got {
		if !want[l] {
			extra = append(extra, l)
		}
	}
	sortLinks(missing)
	sortLinks(extra)
	return missing, extra
}

func sortLinks(ls []Link) {
	slices.SortFunc(ls, func(a, b Link) int { return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To)) })
}
