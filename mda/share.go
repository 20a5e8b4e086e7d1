package mda

import (
	"context"
	"net/netip"

	"github.com/turnpath/turnpath/alias"
)

// knowledge is what earlier targets of RunMany established: each vertex's complete set of
// next hops.
type knowledge struct {
	succ  map[vkey]map[vkey]bool
	bad   map[vkey]bool          // next hops differed between targets (per-destination routes)
	res   *alias.Resolver        // alias evidence from every target
	apart map[[2]netip.Addr]bool // interfaces one flow of any target passed at different TTLs
}

func newKnowledge() *knowledge {
	return &knowledge{succ: map[vkey]map[vkey]bool{}, bad: map[vkey]bool{}, res: alias.New(alias.DefaultOptions()), apart: map[[2]netip.Addr]bool{}}
}

// inherit reports whether layer t (TTL t to t+1) can be taken from the knowledge, given
// the vertices expected at t, and returns those expected at t+1. It can when every
// vertex seen at t was expected and has known next hops, and every vertex and link seen
// at t+1 is one of them. Layers are only taken as a prefix from the prober outward.
func (r *explorer) inherit(t int, expect map[vkey]bool) (map[vkey]bool, bool) {
	k := r.known
	var near []vkey
	if t < r.o.FirstTTL {
		near = []vkey{srcKey}
	} else {
		for _, v := range r.layers[t].order {
			if !expect[v] {
				return nil, false
			}
		}
		near = keysOf(expect)
	}
	next := map[vkey]bool{}
	for _, u := range near {
		s, ok := k.succ[u]
		if !ok || k.bad[u] {
			return nil, false
		}
		for v := range s {
			next[v] = true
		}
	}
	ly1 := &r.layers[t+1]
	for _, v := range ly1.order {
		if !next[v] {
			return nil, false
		}
		for _, i := range ly1.verts[v] {
			if u, ok := r.keyAt(r.flows[i], t); ok && !k.succ[u][v] {
				return nil, false
			}
		}
	}
	return next, true
}

// record adds what this run established to the knowledge.
func (r *explorer) record() {
	if r.known == nil || r.truncated != "" {
		return
	}
	o := &r.o
	seen := map[vkey]map[vkey]bool{}
	for t := o.FirstTTL - 1; t < o.MaxTTL; t++ {
		if r.sharedL[t] {
			continue
		}
		for _, f := range r.flows {
			u, ok := r.keyAt(f, t)
			if !ok || (t >= o.FirstTTL && r.layers[t].dests[u]) {
				continue
			}
			h := &f.hops[t+1]
			if !h.keyed || r.beyond(f, t+1) || (h.st == stAnswered && h.end != endNone) {
				// A destination is this target's own: another one behind u is elsewhere.
				continue
			}
			if seen[u] == nil {
				seen[u] = map[vkey]bool{}
			}
			seen[u][h.key] = true
		}
	}
	k := r.known
	for u, s := range seen {
		if old, ok := k.succ[u]; ok {
			if !sameSet(old, s) {
				k.bad[u] = true
			}
			continue
		}
		k.succ[u] = s
	}
}

func sameSet(a, b map[vkey]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// Run explores every path toward one target (Request.Target 0) and returns its graph.
// See the package documentation for the algorithm.
func Run(ctx context.Context, p Prober, opts Options) (*Graph, error) {
	gs, err := runMany(ctx, p, []netip.Addr{{}}, opts, false)
	if len(gs) == 0 {
		return nil, err
	}
	return gs[0], err
}

// RunMany explores the targets in waves of 1, 2, 4 ... up to Options.Parallel targets at
// once (Request.Target is the index in targets), and shares what it learns: a prefix of
// hops already explored for a target of an earlier wave is not explored again (see the
// package documentation). It returns one graph per target explored; on error, the graphs
// done so far, those of the wave that failed partial.
func RunMany(ctx context.Context, p Prober, targets []netip.Addr, opts Options) ([]*Graph, error) {
	return runMany(ctx, p, targets, opts, true)
}

func runMany(ctx context.Context, p Prober, targets []netip.Addr, opts Options, share bool) ([]*Graph, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if share && opts.Join {
		return runJoined(ctx, p, targets, opts)
	}
	var known *knowledge
	if share {
		known = newKnowledge()
	}
	idxs := make([]int, len(targets))
	for i := range idxs {
		idxs[i] = i
	}
	out := make([]*Graph, len(targets))
	limited := false
	err := exploreWaves(ctx, p, targets, idxs, opts, known, out, &limited, opts.now())
	return compact(out), err
}
