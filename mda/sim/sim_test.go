package sim

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda"
)

func TestLabPaths(t *testing.T) {
	n := Lab(1)
	if err := n.Check(); err != nil {
		t.Fatal(err)
	}
	paths := map[string]int{}
	for f := range uint16(600) {
		p := n.Path(0, 50000+f)
		if !slices.Equal(n.Path(0, 50000+f), p) {
			t.Fatal("flow not stable")
		}
		paths[strings.Join(p, " ")]++
	}
	if len(paths) != 6 {
		t.Fatalf("%d paths: %v", len(paths), paths)
	}
	for p, c := range paths {
		// 3 x 2 equally likely combinations: 100 flows each, give or take.
		if c < 60 || c > 140 {
			t.Errorf("%s: %d of 600 flows", p, c)
		}
	}
	// Another address of t1 hashes differently: not the same paths flow by flow.
	m, same := Lab(2), 0
	for f := range uint16(100) {
		if slices.Equal(m.Path(0, f), m.Path(1, f)) {
			same++
		}
	}
	if same > 40 {
		t.Errorf("%d of 100 flows take the same path to two addresses", same)
	}
	if p := strings.Join(n.Path(len(n.Targets)-1, 50000), " "); p != "r1 r2 r9 t2" {
		t.Errorf("t2: %s", p)
	}
}

func TestLinks(t *testing.T) {
	n := Lab(1)
	got := n.Links(0)
	r7 := mda.AnonID(n.Nodes["r6"].Addr, 1)
	for _, l := range []Link{{"198.18.13.2", r7}, {r7, "198.18.16.2"}, {"198.18.16.2", "198.19.1.7"}, {"198.18.11.2", "198.18.12.2"}} {
		if !got[l] {
			t.Errorf("missing %v", l)
		}
	}
	if len(got) != 15 {
		t.Errorf("%d links: %v", len(got), got)
	}
	t2 := n.Links(len(n.Targets) - 1)
	if len(t2) != 3 || !t2[Link{"198.18.2.2", "198.18.18.2"}] {
		t.Errorf("t2: %v", t2)
	}
}

func TestRateLimit(t *testing.T) {
	n := New("a", []*Node{{Name: "a", Next: []string{"h"}, RateLimit: &Bucket{Burst: 6, Rate: 1}}, {Name: "h", Host: true}},
		[]Target{{Node: "h"}}, 1)
	probe := func(k int) int {
		var reqs []mda.Request
		for i := range k {
			reqs = append(reqs, mda.Request{Flow: uint16(i), TTL: 1})
		}
		as, err := n.Probe(context.Background(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		return len(as)
	}
	if got := probe(10); got != 6 {
		t.Errorf("burst: %d answered", got)
	}
	start := n.Now()
	if got := probe(10); got != 0 {
		t.Errorf("right after: %d answered", got)
	}
	if n.Now().Sub(start) != n.Timeout {
		t.Errorf("a batch with losses takes the timeout: %v", n.Now().Sub(start))
	}
	_ = n.Sleep(context.Background(), 1500*time.Millisecond)
	if got := probe(10); got != 2 {
		t.Errorf("after 2 s: %d answered", got) // 0.5 s of timeout + 1.5 s of sleep
	}
	_ = n.Sleep(context.Background(), time.Minute)
	if got := probe(10); got != 6 {
		t.Errorf("after a minute: %d answered (the burst caps the budget)", got)
	}
}

func TestRandom(t *testing.T) {
	for seed := range uint64(50) {
		n, truth := Random(rand.New(rand.NewPCG(seed, 7)), RandomOptions{Diamonds: [2]int{2, 2}, Width: [2]int{3, 4}})
		if err := n.Check(); err != nil {
			t.Fatal(err)
		}
		if len(truth) != 2 {
			t.Fatalf("%d diamonds", len(truth))
		}
		all := n.Links(0)
		for _, d := range truth {
			if w := len(d.Branches); w < 3 || w > 4 {
				t.Errorf("width %d", w)
			}
			for l := range n.DiamondLinks(d) {
				if !all[l] {
					t.Errorf("seed %d: diamond link %v not in the topology", seed, l)
				}
			}
		}
		// Every flow ends at the host.
		if p := n.Path(0, 1); p[len(p)-1] != "host" {
			t.Errorf("path %v", p)
		}
	}
}

func TestCheck(t *testing.T) {
	n := New("a", []*Node{{Name: "a", Next: []string{"b"}}}, nil, 1)
	if n.Check() == nil {
		t.Error("unknown next hop accepted")
	}
}
