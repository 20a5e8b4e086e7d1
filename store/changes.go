package store

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
)

// ChangeKind names what changed on a path between two views of it.
type ChangeKind string

const (
	HopAppeared  ChangeKind = "hop-appeared"  // a TTL silent (or not there) before answers now
	HopVanished  ChangeKind = "hop-vanished"  // a TTL that answered is silent (or gone) now
	HopChanged   ChangeKind = "hop-changed"   // other addresses answer at a TTL
	BranchNew    ChangeKind = "branch-new"    // more addresses answer at a TTL: a new ECMP branch
	BranchGone   ChangeKind = "branch-gone"   // fewer addresses answer at a TTL: a branch went away
	DestDistance ChangeKind = "dest-distance" // the destination answers at another TTL
	Reach        ChangeKind = "reach"         // reached before and not now, or the other way
	ASChanged    ChangeKind = "as-changed"    // the AS numbers at a TTL changed (once AS numbers are recorded)
	RTTShift     ChangeKind = "rtt-shift"     // a hop's average RTT moved by the threshold or more
	LossShift    ChangeKind = "loss-shift"    // a hop's loss moved by the threshold or more
)

// Change is one thing that changed on the path to a target between a view and the one
// before it of the same series (same command, protocol, port and target address).
type Change struct {
	Kind    ChangeKind `json:"kind"`
	Target  string     `json:"target"` // address
	Name    string     `json:"name,omitempty"`
	RunKind string     `json:"command"`
	Run     int64      `json:"run"`
	Seq     int        `json:"interval,omitempty"` // monitor
	Time    time.Time  `json:"time"`
	PrevRun int64      `json:"prev_run"`
	PrevSeq int        `json:"prev_interval,omitempty"`
	TTL     int        `json:"ttl,omitempty"`
	Old     []string   `json:"old"` // addresses, distances, AS numbers, values
	New     []string   `json:"new"`
}

// Thresholds say how far RTT and loss must move to be a change; 0 disables a check.
type Thresholds struct {
	RTTMS   float64 // milliseconds, average RTT of a hop whose responders stayed
	LossPct float64 // percentage points of a hop's loss
}

// DefaultThresholds: above the noise of a 3-probe trace hop (one lost probe is 33 %).
var DefaultThresholds = Thresholds{RTTMS: 20, LossPct: 50}

// SeriesKey is what makes views comparable: the same command toward the same address
// with the same protocol and port (another port can hash onto another ECMP branch).
func (v *View) SeriesKey() string {
	return v.Kind + " " + v.Proto + " " + strconv.Itoa(v.Port) + " " + v.Address
}

// Changes compares every view with the one before it in its series. views must be in
// time order (as Store.Views returns them); so is the result.
func Changes(views []View, th Thresholds) []Change {
	last := map[string]int{}
	var out []Change
	for i := range views {
		k := views[i].SeriesKey()
		if j, ok := last[k]; ok {
			out = append(out, Diff(&views[j], &views[i], th)...)
		}
		last[k] = i
	}
	return out
}

// Diff lists what changed from prev to cur.
func Diff(prev, cur *View, th Thresholds) []Change {
	var out []Change
	add := func(kind ChangeKind, ttl int, old, new []string) {
		out = append(out, Change{Kind: kind, Target: cur.Address, Name: cur.Name, RunKind: cur.Kind, Run: cur.RunID, Seq: cur.Seq,
			Time: cur.Time, PrevRun: prev.RunID, PrevSeq: prev.Seq, TTL: ttl, Old: orEmpty(old), New: orEmpty(new)})
	}
	if prev.Reached != cur.Reached {
		add(Reach, 0, []string{reachWord(prev.Reached)}, []string{reachWord(cur.Reached)})
	}
	if prev.Reached && cur.Reached && (prev.DestTTL != cur.DestTTL || destMax(prev) != destMax(cur)) {
		add(DestDistance, 0, []string{distance(prev)}, []string{distance(cur)})
	}
	ph, ch := byTTL(prev), byTTL(cur)
	ttls := make([]int, 0, len(ph)+len(ch))
	for t := range ph {
		ttls = append(ttls, t)
	}
	for t := range ch {
		if _, ok := ph[t]; !ok {
			ttls = append(ttls, t)
		}
	}
	sort.Ints(ttls)
	for _, t := range ttls {
		p, c := ph[t], ch[t]
		var pa, ca []string
		if p != nil {
			pa = sorted(p.Addresses())
		}
		if c != nil {
			ca = sorted(c.Addresses())
		}
		gone, added := minus(pa, ca), minus(ca, pa)
		switch {
		case len(pa) == 0 && len(ca) > 0:
			add(HopAppeared, t, nil, ca)
		case len(pa) > 0 && len(ca) == 0:
			add(HopVanished, t, pa, nil)
		case len(gone) > 0 && len(added) > 0:
			add(HopChanged, t, pa, ca)
		case len(added) > 0:
			add(BranchNew, t, pa, ca)
		case len(gone) > 0:
			add(BranchGone, t, pa, ca)
		}
		if p == nil || c == nil {
			continue
		}
		if pas, cas := asns(p), asns(c); len(pas) > 0 && len(cas) > 0 && !slices.Equal(pas, cas) {
			add(ASChanged, t, pas, cas)
		}
		// RTT and loss of the same routers only: another router's are no shift, and a
		// hop gone silent was said above.
		if th.RTTMS > 0 && slices.Equal(pa, ca) && p.RTTAvg != nil && c.RTTAvg != nil && math.Abs(*c.RTTAvg-*p.RTTAvg) >= th.RTTMS {
			add(RTTShift, t, []string{ms(*p.RTTAvg)}, []string{ms(*c.RTTAvg)})
		}
		if th.LossPct > 0 && len(pa) > 0 && slices.Equal(pa, ca) && p.Loss != nil && c.Loss != nil && p.Sent > 0 && c.Sent > 0 && math.Abs(*c.Loss-*p.Loss) >= th.LossPct {
			add(LossShift, t, []string{pct(*p.Loss)}, []string{pct(*c.Loss)})
		}
	}
	return out
}

func reachWord(r bool) string {
	if r {
		return "reached"
	}
	return "not reached"
}

func destMax(v *View) int {
	if v.DestTTLMax > 0 {
		return v.DestTTLMax
	}
	return v.DestTTL
}

// distance is the destination's TTL, or the range of a multipath's branches.
func distance(v *View) string {
	if m := destMax(v); m != v.DestTTL {
		return fmt.Sprintf("%d-%d", v.DestTTL, m)
	}
	return strconv.Itoa(v.DestTTL)
}

func byTTL(v *View) map[int]*Hop {
	m := make(map[int]*Hop, len(v.Hops))
	for i := range v.Hops {
		m[v.Hops[i].TTL] = &v.Hops[i]
	}
	return m
}

func sorted(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// minus is a without b (both sorted).
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

func asns(h *Hop) []string {
	var out []string
	for _, r := range h.Responders {
		if r.ASN != nil {
			out = append(out, "AS"+strconv.FormatInt(*r.ASN, 10))
		}
	}
	return sorted(out)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func ms(x float64) string  { return strconv.FormatFloat(x, 'f', 1, 64) + " ms" }
func pct(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) + " %" }
