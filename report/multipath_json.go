package report

import (
	"encoding/json"
	"io"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/mda"
)

// MultipathDoc is the JSON document of `--format json` (DESIGN.md, "Multipath JSON").
type MultipathDoc struct {
	MultipathRun
	Targets []MultipathDocTarget `json:"targets"`
}

// MultipathDocTarget is one target of MultipathDoc.
type MultipathDocTarget struct {
	Name       string                `json:"name"`
	Address    string                `json:"address"`
	Source     string                `json:"source"`
	Family     int                   `json:"family"`
	Reached    bool                  `json:"reached"`
	Dest       string                `json:"dest,omitempty"`      // node id of the destination
	DestTTLs   []int                 `json:"dest_ttls,omitempty"` // TTLs it answered at
	Sent       int                   `json:"probes_sent"`
	Answered   int                   `json:"probes_answered"`
	Rounds     int                   `json:"rounds"`
	DurationMS float64               `json:"duration_ms"`
	Truncated  string                `json:"truncated,omitempty"`
	FullTTLs   []int                 `json:"full_ttls,omitempty"`
	SharedTTLs []int                 `json:"shared_ttls,omitempty"`
	Hops       []MultipathDocHop     `json:"hops"`
	Nodes      []MultipathDocNode    `json:"nodes"`
	Links      []MultipathDocLink    `json:"links"`
	Flows      []MultipathDocFlow    `json:"flows"`
	Paths      []MultipathDocPath    `json:"paths"`
	Diamonds   []MultipathDocDiamond `json:"diamonds"`
	Notes      []string              `json:"notes,omitempty"`
	ASPath     []string              `json:"as_path,omitempty"` // of the longest complete path (--asn)
	// Level is "interface" (a node per interface) or "router" (a node per router).
	Level string `json:"level,omitempty"`
	// JoinedFrom: the target whose graph this one shares (multipath --join): hops marked
	// shared were established by its probes, with its confidence.
	JoinedFrom string `json:"joined_from,omitempty"`
	// Routers are the routers that answered from several interfaces (alias sets).
	Routers []MultipathDocRouter `json:"routers,omitempty"`
	// UnresolvedRouters are interfaces that look like one router answering from
	// several but that no evidence decided (evidence kind "unresolved" says why); each
	// stays a node of its own.
	UnresolvedRouters []MultipathDocRouter `json:"unresolved_routers,omitempty"`
}

// MultipathDocRouter is one router that answered from several interfaces, and why they
// are taken for one (package alias).
type MultipathDocRouter struct {
	ID         string                 `json:"id"`
	Interfaces []string               `json:"interfaces"`
	Confidence float64                `json:"confidence"`
	Evidence   []MultipathDocEvidence `json:"evidence"`
}

// MultipathDocEvidence is one piece of alias evidence between two interfaces.
type MultipathDocEvidence struct {
	Kind       string  `json:"kind"` // "ip-id", "reply-ttl", "mpls", "rate-limit", "unresolved"
	A          string  `json:"a"`
	B          string  `json:"b"`
	Detail     string  `json:"detail"`
	Confidence float64 `json:"confidence,omitempty"`
}

// MultipathDocHop is the set of nodes seen at one TTL.
type MultipathDocHop struct {
	TTL   int      `json:"ttl"`
	Nodes []string `json:"nodes"`
}

// MultipathDocNode is one interface or silent hop.
type MultipathDocNode struct {
	ID           string    `json:"id"`
	Address      string    `json:"address,omitempty"`
	Name         string    `json:"name,omitempty"`
	Anonymous    bool      `json:"anonymous,omitempty"`
	After        string    `json:"after,omitempty"`
	Depth        int       `json:"depth,omitempty"`
	TTLs         []int     `json:"ttls"`
	Dest         bool      `json:"dest,omitempty"`
	Unreachable  bool      `json:"unreachable,omitempty"`
	Flows        int       `json:"flows"`
	NextHops     int       `json:"next_hops"`
	MinMS        *float64  `json:"rtt_min_ms,omitempty"`
	AvgMS        *float64  `json:"rtt_avg_ms,omitempty"`
	MaxMS        *float64  `json:"rtt_max_ms,omitempty"`
	NAT          string    `json:"nat,omitempty"`
	Shared       bool      `json:"shared,omitempty"`
	DiamondRoles []string  `json:"diamond_roles,omitempty"` // "divergence", "convergence", "inside"
	AS           *asn.Info `json:"as,omitempty"`            // who holds the address (--asn)
	Router       string    `json:"router,omitempty"`        // the router it belongs to, when that one answered from several
	Interfaces   []string  `json:"interfaces,omitempty"`    // router level: the router's interfaces
}

// MultipathDocLink is an edge of the node graph.
type MultipathDocLink struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Flows  int    `json:"flows"`
	TTLs   []int  `json:"ttls"`
	Shared bool   `json:"shared,omitempty"`
	// Alias: inferred from a router's other interfaces, not measured by a flow.
	Alias bool `json:"alias,omitempty"`
}

// MultipathDocFlow is one flow's measured hops.
type MultipathDocFlow struct {
	SPort   uint16             `json:"sport"`
	Path    int                `json:"path"` // index into paths, -1 if none
	DestTTL int                `json:"dest_ttl,omitempty"`
	Hops    []MultipathDocStep `json:"hops"`
}

// MultipathDocStep is one hop of a flow or a path.
type MultipathDocStep struct {
	TTL      int    `json:"ttl"`
	Node     string `json:"node"`
	Inferred bool   `json:"inferred,omitempty"`
}

// MultipathDocPath is a distinct path and the flows that took it.
type MultipathDocPath struct {
	SPorts   []uint16           `json:"sports"`
	Complete bool               `json:"complete"`
	DestTTL  int                `json:"dest_ttl,omitempty"`
	Hops     []MultipathDocStep `json:"hops"`
}

// MultipathDocDiamond is a load-balanced section.
type MultipathDocDiamond struct {
	Divergence  string   `json:"divergence"`
	Convergence string   `json:"convergence,omitempty"`
	TTL         int      `json:"ttl"`
	MaxWidth    int      `json:"max_width"`
	MinLength   int      `json:"min_length"`
	MaxLength   int      `json:"max_length"`
	Unequal     bool     `json:"unequal"`
	Nodes       []string `json:"nodes"`
}

// MultipathDocument builds the JSON document of a run.
func MultipathDocument(run *MultipathRun) MultipathDoc {
	d := MultipathDoc{MultipathRun: *run, Targets: []MultipathDocTarget{}}
	d.MultipathRun.Targets = nil
	if d.Schema == "" {
		d.Schema = MultipathSchema
	}
	for i := range run.Targets {
		d.Targets = append(d.Targets, docTarget(&run.Targets[i]))
	}
	return d
}

func docTarget(t *MultipathTarget) MultipathDocTarget {
	dt := MultipathDocTarget{Name: t.Name, Address: t.Addr.String(), Source: t.Source.String(), Family: t.Family, Notes: t.Notes,
		Hops: []MultipathDocHop{}, Nodes: []MultipathDocNode{}, Links: []MultipathDocLink{}, Flows: []MultipathDocFlow{},
		Paths: []MultipathDocPath{}, Diamonds: []MultipathDocDiamond{}}
	if t.Graph == nil {
		return dt
	}
	v := newView(t)
	g := v.g
	dt.Reached, dt.Dest, dt.DestTTLs = g.Reached, g.Dest, v.destTTLs
	dt.Sent, dt.Answered, dt.Rounds, dt.DurationMS = g.Sent, g.Answered, g.Rounds, ms(g.Duration)
	dt.Truncated, dt.FullTTLs, dt.SharedTTLs = g.Truncated, g.FullTTLs, g.SharedTTLs
	dt.ASPath = v.asPath()
	dt.Level = g.Level
	if g.JoinedFrom.IsValid() {
		dt.JoinedFrom = g.JoinedFrom.String()
	}
	docRouter := func(r mda.Router) MultipathDocRouter {
		dr := MultipathDocRouter{ID: r.ID, Interfaces: r.Interfaces, Confidence: r.Confidence, Evidence: []MultipathDocEvidence{}}
		for _, e := range r.Evidence {
			dr.Evidence = append(dr.Evidence, MultipathDocEvidence{Kind: e.Kind, A: e.A.String(), B: e.B.String(), Detail: e.Detail, Confidence: e.Confidence})
		}
		return dr
	}
	for _, r := range g.Routers {
		dt.Routers = append(dt.Routers, docRouter(r))
	}
	for _, r := range g.Unresolved {
		dt.UnresolvedRouters = append(dt.UnresolvedRouters, docRouter(r))
	}
	for _, h := range g.Hops {
		dt.Hops = append(dt.Hops, MultipathDocHop{TTL: h.TTL, Nodes: h.Nodes})
	}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		dn := MultipathDocNode{ID: n.ID, Name: v.name(n), Anonymous: !n.Addr.IsValid(), After: n.After, Depth: n.Depth,
			TTLs: n.TTLs, Dest: n.Dest, Unreachable: n.Unreachable, Flows: n.Flows, NextHops: len(v.succ[n.ID]), NAT: n.NAT, Shared: n.Shared,
			Router: n.Router, Interfaces: n.Interfaces}
		if n.Addr.IsValid() {
			dn.Address = n.Addr.String()
		}
		if in, ok := v.asOf(n); ok {
			dn.AS = &in
		}
		if n.RTTMax > 0 {
			mn, avg, mx := ms(n.RTTMin), ms(n.RTTAvg), ms(n.RTTMax)
			dn.MinMS, dn.AvgMS, dn.MaxMS = &mn, &avg, &mx
		}
		r := v.role[n.ID]
		for _, x := range []struct {
			bit  mda.Role
			name string
		}{{mda.RoleDivergence, "divergence"}, {mda.RoleConvergence, "convergence"}, {mda.RoleInside, "inside"}} {
			if r&x.bit != 0 {
				dn.DiamondRoles = append(dn.DiamondRoles, x.name)
			}
		}
		dt.Nodes = append(dt.Nodes, dn)
	}
	for _, l := range g.Links {
		dt.Links = append(dt.Links, MultipathDocLink{From: l.From, To: l.To, Flows: l.Flows, TTLs: orEmpty(l.TTLs), Shared: l.Shared, Alias: l.Alias})
	}
	for _, f := range g.Flows {
		df := MultipathDocFlow{SPort: f.Flow, DestTTL: f.Dest, Path: -1, Hops: []MultipathDocStep{}}
		if i, ok := v.paths.Of(f.Flow); ok {
			df.Path = i
		}
		for _, h := range f.Hops {
			df.Hops = append(df.Hops, MultipathDocStep{TTL: h.TTL, Node: h.Node})
		}
		dt.Flows = append(dt.Flows, df)
	}
	for _, p := range v.paths.List {
		dp := MultipathDocPath{SPorts: p.Flows, Complete: p.Complete, DestTTL: p.DestTTL}
		for _, h := range p.Hops {
			dp.Hops = append(dp.Hops, MultipathDocStep{TTL: h.TTL, Node: h.Node, Inferred: h.Inferred})
		}
		dt.Paths = append(dt.Paths, dp)
	}
	for _, d := range g.Diamonds {
		dt.Diamonds = append(dt.Diamonds, MultipathDocDiamond{Divergence: d.Divergence, Convergence: d.Convergence, TTL: d.TTL,
			MaxWidth: d.MaxWidth, MinLength: d.MinLength, MaxLength: d.MaxLength, Unequal: d.Unequal(), Nodes: orEmpty(d.Nodes)})
	}
	return dt
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// WriteMultipathJSON writes the run as one indented JSON document (MultipathDoc).
func WriteMultipathJSON(w io.Writer, run *MultipathRun) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(MultipathDocument(run))
}
