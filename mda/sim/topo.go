package sim

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
)

func seedOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("turnpath/" + name))
	return h.Sum64()
}

// Lab returns the turnpath lab (see package lab):
//
//	client - r1 - r2 =< r3a r3b r3c >= r4 =< r5a | r5b - r5c >= r6 - r7(silent) - r8 - t1
//	               \- r9 - t2
//
// Routers answer from the lab's addresses (198.18.<uplink link>.2). Targets: n addresses
// of t1's wildcard prefix 198.19.1.0/24 (n >= 1), then 198.19.2.1 on t2, reached through
// r9 only.
func Lab(n int) *Network {
	a := func(link int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(link), 2}) }
	r := func(name string, link int, next ...string) *Node {
		return &Node{Name: name, Addr: a(link), Next: next, Seed: seedOf(name)}
	}
	nodes := []*Node{
		r("r1", 1, "r2"),
		r("r2", 2, "r3a", "r3b", "r3c"),
		r("r3a", 4, "r4"), r("r3b", 5, "r4"), r("r3c", 6, "r4"),
		r("r4", 7, "r5a", "r5b"),
		r("r5a", 10, "r6"), r("r5b", 11, "r5c"), r("r5c", 12, "r6"),
		r("r6", 13, "r7"), r("r7", 15, "r8"), r("r8", 16, "t1"),
		r("r9", 18, "t2"),
		{Name: "t1", Host: true}, {Name: "t2", Host: true},
	}
	nodes[1].Routes = map[string][]string{"t2": {"r9"}}
	nodes[10].Silent = true // r7
	var targets []Target
	for i := range max(n, 1) {
		targets = append(targets, Target{Node: "t1", Addr: netip.AddrFrom4([4]byte{198, 19, 1, byte(7 + i)})})
	}
	targets = append(targets, Target{Node: "t2", Addr: netip.AddrFrom4([4]byte{198, 19, 2, 1})})
	return New("r1", nodes, targets, 1)
}

// LabInbound is Lab as the turnpath lab now answers: every router from the interface a
// probe came in by, so r4 answers from 198.18.7.2, .8.2 and .9.2 (by r3a, r3b, r3c) and
// r6 from 198.18.13.2 and .14.2 (by r5a, r5c); r3a, r3b, r3c, r4 and r6 number their
// answers from one IP ID counter each, the others (Linux) send IP ID 0.
func LabInbound(n int) *Network {
	net := Lab(n)
	a := func(link int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(link), 2}) }
	net.Nodes["r4"].InAddrs = map[string]netip.Addr{"r3a": a(7), "r3b": a(8), "r3c": a(9)}
	net.Nodes["r6"].InAddrs = map[string]netip.Addr{"r5a": a(13), "r5c": a(14)}
	for name, nd := range net.Nodes {
		if nd.Host {
			continue
		}
		nd.IPID = IPIDZero
		switch name {
		case "r3a", "r3b", "r3c", "r4", "r6":
			nd.IPID, nd.IPIDStart = IPIDShared, uint16(seedOf(name))
		}
	}
	return net
}

// LabInbound6 is LabInbound as its IPv6 side answers: the same routers with IPv6
// addresses (fd51:0:0:<link>::2, targets fd51:1:1::7.. and fd51:1:2::1) and no IP ID at
// all, so that only the routers' ICMP rate limiters (one bucket per router, whatever
// address it answers from: Node.RateLimit) can show r4's three addresses and r6's two to
// be one router each.
func LabInbound6(n int) *Network {
	net := LabInbound(n)
	v6 := func(a netip.Addr) netip.Addr {
		b := a.As4()
		return netip.AddrFrom16([16]byte{0xfd, 0x51, 5: 0, 6: 0, 7: b[2], 15: b[3]})
	}
	for _, nd := range net.Nodes {
		if nd.Addr.IsValid() {
			nd.Addr = v6(nd.Addr)
		}
		for k, a := range nd.InAddrs {
			nd.InAddrs[k] = v6(a)
		}
		nd.IPID = IPIDNone
	}
	for i := range net.Targets {
		b := net.Targets[i].Addr.As4()
		net.Targets[i].Addr = netip.AddrFrom16([16]byte{0xfd, 0x51, 0, 1, 0, b[2], 15: b[3]})
	}
	return net
}

// RandomOptions shape Random's topologies. Ranges are [min, max].
type RandomOptions struct {
	Diamonds [2]int  // diamonds in a row; default 1..3
	Width    [2]int  // branches per diamond; default 2..6
	Length   [2]int  // routers per branch (each branch drawn alone: unequal lengths); default 1..3
	Linear   [2]int  // routers before, between and after diamonds; default 1..3
	Silent   float64 // probability that a router is silent; default 0
	// Aliases: every router answers from the interface a probe came in by (so a
	// convergence point answers from one address per branch), and numbers its answers'
	// IP IDs from a shared counter (half of them, each from a random start), a counter
	// per interface (a quarter) or 0 (a quarter).
	Aliases bool
	// Inbound, with Aliases, is the share of convergence points that answer from the
	// interface a probe came in by; the others answer from one address, so the distinct
	// routers that end branches longer than one look alike (equal reply TTLs, different
	// predecessors, one common next hop). Default 1.
	Inbound float64
	// NoIPID: no router numbers its answers (IPv6, or Linux's IPv4 ICMP errors without
	// a counter): only rate limiting can tell aliases.
	NoIPID bool
}

// TrueDiamond is a diamond as built: branches of router names from Divergence to
// Convergence (both excluded).
type TrueDiamond struct {
	Divergence, Convergence string
	Branches                [][]string
}

// Random builds a path of diamonds: a linear segment, then diamonds (a router splitting
// over Width branches of Length routers each, which meet again at one router), each
// followed by a linear segment, then the target host. Per-router seeds are random, so
// every topology hashes flows differently.
func Random(rng *rand.Rand, o RandomOptions) (*Network, []TrueDiamond) {
	def := func(r *[2]int, lo, hi int) {
		if r[0] == 0 && r[1] == 0 {
			*r = [2]int{lo, hi}
		}
	}
	def(&o.Diamonds, 1, 3)
	def(&o.Width, 2, 6)
	def(&o.Length, 1, 3)
	def(&o.Linear, 1, 3)
	in := func(r [2]int) int { return r[0] + rng.IntN(r[1]-r[0]+1) }

	var nodes []*Node
	count := 0
	newRouter := func() *Node {
		count++
		nd := &Node{Name: fmt.Sprintf("n%d", count), Addr: netip.AddrFrom4([4]byte{10, byte(count >> 16), byte(count >> 8), byte(count)}),
			Seed: rng.Uint64(), Silent: o.Silent > 0 && rng.Float64() < o.Silent}
		nodes = append(nodes, nd)
		return nd
	}
	linear := func(tail *Node, k int) *Node {
		for range k {
			nd := newRouter()
			if tail != nil {
				tail.Next = []string{nd.Name}
			}
			tail = nd
		}
		return tail
	}
	first := newRouter()
	first.Silent = false
	tail := linear(first, in(o.Linear)-1)
	var truth []TrueDiamond
	for range in(o.Diamonds) {
		d := TrueDiamond{Divergence: tail.Name}
		var ends []*Node
		for range in(o.Width) {
			var br []string
			start := newRouter()
			tail.Next = append(tail.Next, start.Name)
			br = append(br, start.Name)
			end := start
			for range in(o.Length) - 1 {
				nd := newRouter()
				end.Next = []string{nd.Name}
				end = nd
				br = append(br, nd.Name)
			}
			ends = append(ends, end)
			d.Branches = append(d.Branches, br)
		}
		conv := newRouter() // after the branches, so names follow TTLs
		for _, e := range ends {
			e.Next = []string{conv.Name}
		}
		if o.Aliases && (o.Inbound == 0 || rng.Float64() < o.Inbound) {
			conv.InAddrs = map[string]netip.Addr{}
			for _, e := range ends {
				count++ // addresses only: the names stay in TTL order
				conv.InAddrs[e.Name] = netip.AddrFrom4([4]byte{10, 128 | byte(count>>16), byte(count >> 8), byte(count)})
			}
		}
		d.Convergence = conv.Name
		truth = append(truth, d)
		tail = linear(conv, in(o.Linear))
	}
	if o.Aliases && !o.NoIPID {
		for _, nd := range nodes {
			switch x := rng.IntN(4); {
			case x < 2:
				nd.IPID, nd.IPIDStart = IPIDShared, uint16(rng.Uint32())
			case x == 2:
				nd.IPID = IPIDPerIface
			default:
				nd.IPID = IPIDZero
			}
		}
	}
	host := &Node{Name: "host", Host: true}
	nodes = append(nodes, host)
	tail.Next = []string{host.Name}
	n := New(first.Name, nodes, []Target{{Node: "host", Addr: netip.AddrFrom4([4]byte{198, 51, 100, 1})}}, rng.Uint64())
	return n, truth
}

// DiamondLinks returns the visible links of a diamond built by Random without silent
// routers, by mda node ID.
func (n *Network) DiamondLinks(d TrueDiamond) map[Link]bool {
	out := map[Link]bool{}
	for _, br := range d.Branches {
		prev, from := d.Divergence, ""
		for _, r := range append(br, d.Convergence) {
			if from == "" {
				// The divergence point: one predecessor in Random's topologies, so one address.
				from = n.Nodes[prev].Addr.String()
			}
			to := n.Nodes[r].AddrFrom(prev).String()
			out[Link{from, to}] = true
			prev, from = r, to
		}
	}
	return out
}
