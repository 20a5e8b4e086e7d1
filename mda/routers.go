package mda

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Routers: with Options.Aliases, the exploration's vertices are routers (every interface
// of a router that answered from several is keyed by the router's ID), so its stopping
// rules count a router's next hops once, however many interfaces it answers from. The
// graph it returns is still one of interfaces, measured as always, plus what the
// routers make certain: a router forwards by destination, not by the interface a probe
// came in by, so each of its interfaces leads to every next hop any of them led to
// (Link.Alias). RouterGraph folds it into one node per router.

// graph assembles the result: the interface graph of the last planning pass, with the
// routers found.
func (r *explorer) graph() *Graph {
	g := r.routerGraph()
	g.Unresolved = r.unresolved()
	return g
}

func (r *explorer) routerGraph() *Graph {
	r.canon = r.confirmed // what the graph says is proven: the provisional groups go
	if len(r.canon) == 0 {
		g := r.buildGraph()
		g.Level = "interface"
		return g
	}
	succ := r.routerSuccessors()
	// The layers again, keyed by interface. The explorer stays so: what later targets
	// inherit (record) is interfaces and their links, which a target keying a router
	// otherwise (or not yet) cannot mistake for its own.
	r.canon, r.quiet = nil, true
	r.plan()
	r.quiet = false
	g := r.buildGraph()
	r.addRouters(g, succ)
	g.Level = "interface"
	return g
}

// routerSuccessors returns, for every router that answered from several interfaces, the
// addresses (node IDs) that answered one hop after it, by the TTL they answered at.
func (r *explorer) routerSuccessors() map[netip.Addr]map[vkey][]int {
	o := &r.o
	out := map[netip.Addr]map[vkey][]int{}
	for _, f := range r.flows {
		for t := o.FirstTTL; t < o.MaxTTL; t++ {
			u, ok := r.keyAt(f, t)
			if !ok || u.anon() || r.layers[t].dests[u] {
				continue
			}
			if _, multi := r.canon[u.addr]; !multi {
				continue
			}
			h := &f.hops[t+1]
			if h.st != stAnswered || r.beyond(f, t+1) {
				continue
			}
			if out[u.addr] == nil {
				out[u.addr] = map[vkey][]int{}
			}
			v := vkey{addr: h.addr}
			if !slices.Contains(out[u.addr][v], t+1) {
				out[u.addr][v] = append(out[u.addr][v], t+1)
			}
		}
	}
	return out
}

// addRouters records the routers with several interfaces in g and adds the links they
// make certain.
func (r *explorer) addRouters(g *Graph, succ map[netip.Addr]map[vkey][]int) {
	idx := map[string]int{}
	for i, n := range g.Nodes {
		idx[n.ID] = i
	}
	has := map[[2]string]bool{}
	for _, l := range g.Links {
		has[[2]string{l.From, l.To}] = true
	}
	for _, s := range r.sets {
		var in []string
		for _, a := range s.Addrs {
			if _, ok := idx[a.String()]; ok {
				in = append(in, a.String())
			}
		}
		if len(in) < 2 {
			continue
		}
		id := s.ID().String()
		g.Routers = append(g.Routers, Router{ID: id, Interfaces: in, Evidence: s.Evidence, Confidence: s.Confidence})
		for _, m := range in {
			g.Nodes[idx[m]].Router = id
		}
		for _, m := range in {
			from := g.Nodes[idx[m]]
			for v, ttls := range succ[s.ID()] {
				to := v.id()
				j, ok := idx[to]
				if !ok || slices.Contains(in, to) || has[[2]string{m, to}] {
					continue
				}
				// Only where the TTLs agree: to was seen one hop after a TTL of from.
				var at []int
				for _, t := range from.TTLs {
					if slices.Contains(ttls, t+1) && slices.Contains(g.Nodes[j].TTLs, t+1) {
						at = append(at, t)
					}
				}
				if len(at) == 0 {
					continue
				}
				has[[2]string{m, to}] = true
				g.Links = append(g.Links, Link{From: m, To: to, TTLs: at, Alias: true})
			}
		}
	}
	sortLinks(g.Links, idx)
	g.Diamonds = diamonds(g)
}

// RouterOf returns the ID of the router node id belongs to in a router-level view: its
// router's ID, or for a silent hop after one of a router's interfaces the same hop after
// the router; else id itself.
func (g *Graph) RouterOf(id string) string {
	n, ok := g.Node(id)
	switch {
	case !ok:
		return id
	case n.Router != "":
		return n.Router
	case n.Addr.IsValid() || n.After == "":
		return id
	}
	after := g.RouterOf(n.After)
	if after == n.After {
		return id
	}
	a, err := netip.ParseAddr(after)
	if err != nil {
		return id
	}
	return AnonID(a, n.Depth)
}

// RouterGraph returns g with one node per router: the interfaces of each router in
// g.Routers become one node (ID the router's, Interfaces its interfaces), and so do the
// silent hops after them. Links, hops and flows follow; diamonds are those of the
// routers. A graph without routers comes back as a copy, each node its own router.
func (g *Graph) RouterGraph() *Graph {
	out := *g
	out.Level = "router"
	to := map[string]string{}
	for _, n := range g.Nodes {
		to[n.ID] = g.RouterOf(n.ID)
	}
	nodes := map[string]*Node{}
	var order []string
	var rttSum = map[string]time.Duration{}
	for _, n := range g.Nodes {
		id := to[n.ID]
		m := nodes[id]
		if m == nil {
			c := n
			c.ID, c.Router, c.TTLs, c.Flows = id, "", nil, 0
			c.RTTMin, c.RTTMax, c.RTTAvg = 0, 0, 0
			if id != n.ID {
				c.Addr = netip.Addr{}
				if a, err := netip.ParseAddr(id); err == nil {
					c.Addr = a
				}
				if c.After != "" {
					c.After = to[c.After]
				}
			}
			m = &c
			nodes[id] = m
			order = append(order, id)
		}
		if n.Router != "" || id != n.ID {
			if n.Addr.IsValid() && !slices.Contains(m.Interfaces, n.ID) {
				m.Interfaces = append(m.Interfaces, n.ID)
			}
		}
		for _, t := range n.TTLs {
			if !slices.Contains(m.TTLs, t) {
				m.TTLs = append(m.TTLs, t)
			}
		}
		m.Flows += n.Flows
		m.Dest, m.Unreachable, m.Shared = m.Dest || n.Dest, m.Unreachable || n.Unreachable, m.Shared && n.Shared
		if n.RTTMin > 0 && (m.RTTMin == 0 || n.RTTMin < m.RTTMin) {
			m.RTTMin = n.RTTMin
		}
		m.RTTMax = max(m.RTTMax, n.RTTMax)
		rttSum[id] += n.RTTAvg * time.Duration(max(n.Flows, 1))
		if m.NAT == "" {
			m.NAT = n.NAT
		}
	}
	out.Nodes = nil
	for _, id := range order {
		m := nodes[id]
		slices.Sort(m.TTLs)
		slices.Sort(m.Interfaces)
		if m.Flows > 0 {
			m.RTTAvg = rttSum[id] / time.Duration(m.Flows)
		} else if m.RTTMax > 0 {
			m.RTTAvg = (m.RTTMin + m.RTTMax) / 2
		}
		out.Nodes = append(out.Nodes, *m)
	}
	rank := sortNodes(out.Nodes)
	out.Hops = nil
	for _, h := range g.Hops {
		nh := Hop{TTL: h.TTL}
		for _, id := range h.Nodes {
			if r := to[id]; !slices.Contains(nh.Nodes, r) {
				nh.Nodes = append(nh.Nodes, r)
			}
		}
		slices.SortFunc(nh.Nodes, func(a, b string) int { return cmp.Compare(rank[a], rank[b]) })
		out.Hops = append(out.Hops, nh)
	}
	links := map[[2]string]*Link{}
	var lorder [][2]string
	for _, l := range g.Links {
		k := [2]string{to[l.From], to[l.To]}
		m := links[k]
		if m == nil {
			c := l
			c.From, c.To, c.Flows, c.TTLs = k[0], k[1], 0, nil
			m = &c
			links[k] = m
			lorder = append(lorder, k)
		}
		m.Flows += l.Flows
		m.Alias = m.Alias && l.Alias
		m.Shared = m.Shared && l.Shared
		for _, t := range l.TTLs {
			if !slices.Contains(m.TTLs, t) {
				m.TTLs = append(m.TTLs, t)
			}
		}
	}
	out.Links = nil
	for _, k := range lorder {
		slices.Sort(links[k].TTLs)
		out.Links = append(out.Links, *links[k])
	}
	sortLinks(out.Links, rank)
	out.Flows = nil
	for _, f := range g.Flows {
		nf := f
		nf.Hops = make([]FlowHop, len(f.Hops))
		for i, h := range f.Hops {
			nf.Hops[i] = FlowHop{TTL: h.TTL, Node: to[h.Node]}
		}
		out.Flows = append(out.Flows, nf)
	}
	if g.Dest != "" {
		out.Dest = to[g.Dest]
	}
	out.Diamonds = diamonds(&out)
	return &out
}

// String of a router for text output: "198.18.7.2 (3 interfaces)".
func (r Router) String() string {
	return r.ID + " {" + strings.Join(r.Interfaces, ", ") + "}"
}
