package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// Section 4: many targets. Every target of the lab's wildcard group (t1: 256 IPv4 and
// 256 IPv6 relays behind the same routers) at one probe rate, turnpath against scamper,
// the tool built for this.

const manyRate = 5000 // probes per second, for every prober

type manyProber struct {
	Name    string
	Tool    string
	Options string
	Argv    func(env *Env, list string) []string
	Parse   func(out []byte) ([]*Observation, error)
}

func turnpathMany(name, options string, args ...string) manyProber {
	return manyProber{
		Name: name, Options: options,
		Argv: func(env *Env, list string) []string {
			return append(append([]string{env.Turnpath, "trace", "-n", "--format", "json", "--rate", strconv.Itoa(manyRate),
				"-m", "15"}, args...), "-f", list)
		},
		Parse: func(out []byte) ([]*Observation, error) {
			_, obs, err := ParseTurnpathJSON(out)
			return obs, err
		},
	}
}

var manyProbers = []manyProber{
	turnpathMany("turnpath (eBPF)", "`--engine ebpf -q 3`", "--engine", "ebpf", "-q", "3"),
	turnpathMany("turnpath (eBPF, 1 query)", "`--engine ebpf -q 1`", "--engine", "ebpf", "-q", "1"),
	turnpathMany("turnpath (socket, 1 query)", "`--engine socket -q 1`", "--engine", "socket", "-q", "1"),
	{
		Name: "scamper", Tool: "scamper", Options: "`trace -P udp-paris -d 3478 -q 1 -w 1 -g 3 -m 15`",
		Argv: func(_ *Env, list string) []string {
			return []string{"scamper", "-O", "json", "-p", strconv.Itoa(manyRate), "-c",
				"trace -P udp-paris -d 3478 -q 1 -w 1 -g 3 -m 15", "-f", list}
		},
		Parse: ParseScamperJSON,
	},
}

type manyRaw struct {
	Targets int         `json:"targets"`
	Rate    int         `json:"rate"`
	Runs    []RunRecord `json:"runs"`
}

func runMany(ctx context.Context, env *Env) (*Result, error) {
	l, err := env.Lab(ctx, lab.ProfileFast)
	if err != nil {
		return nil, err
	}
	tr := l.Truth()
	targets := l.Targets("wildcard")
	var lines []string
	for _, a := range targets {
		lines = append(lines, a.String())
	}
	list := filepath.Join(env.Dir, "targets.txt")
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	nv4 := 0
	for _, a := range targets {
		if a.Is4() {
			nv4++
		}
	}
	res := &Result{Text: []string{fmt.Sprintf("All %d targets of the lab's wildcard group (%d IPv4 + %d IPv6 relays on t1, "+
		"fast profile) in one run, every prober at %d probes/s, 15 hops at most. Hop recall is pooled over all targets "+
		"(TTLs found / TTLs in the truth); *reached* counts targets whose destination answered. turnpath's default is "+
		"3 queries per hop; with `-q 1` it sends about as many probes as scamper (one attempt per hop).",
		len(targets), nv4, len(targets)-nv4, manyRate)}}
	probers := []manyProber{}
	for _, p := range manyProbers {
		if p.Tool == "" || Have(p.Tool) {
			probers = append(probers, p)
		} else {
			res.Notes = append(res.Notes, p.Name+" skipped: not installed")
		}
	}
	raw := manyRaw{Targets: len(targets), Rate: manyRate}
	env.Exec(ctx, 10*time.Second, env.Turnpath, "trace", "-n", "-q", "1", "--engine", "socket", targets[1].String()) // warm up
	rounds := env.Runs(3, 1)
	for r := range rounds {
		for k := range probers {
			p := probers[(r+k)%len(probers)]
			rec, _ := runScored(ctx, env, p, list, tr, targets, 120*time.Second)
			rec.Round = r
			if rec.Totals != nil {
				env.Logf("%-26s %6.2fs probes %d reached %d/%d recall %.1f%%", p.Name, rec.Seconds, rec.Probes,
					rec.Totals.Reached, rec.Totals.Targets, 100*rec.Totals.Recall())
			} else {
				env.Logf("%s: %s", p.Name, rec.Error)
			}
			raw.Runs = append(raw.Runs, rec)
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
	}
	res.Raw = raw
	by := byProber(raw.Runs)
	t := Table{Columns: []string{"prober", "options", "probes sent", "wall time", "targets reached", "hop recall",
		"recall IPv4 / IPv6", "wrong", "one-path targets"}}
	for _, p := range probers {
		var secs, probes, recall, r4, r6, reached, wrong, one []float64
		for _, r := range by[p.Name] {
			secs = append(secs, r.Seconds)
			if r.Error != "" {
				res.Notes = append(res.Notes, fmt.Sprintf("%s, round %d: %s", p.Name, r.Round+1, r.Error))
			}
			if r.Totals == nil {
				continue
			}
			probes = append(probes, float64(r.Probes))
			recall = append(recall, r.Totals.Recall())
			r4, r6 = append(r4, r.TotalsV4.Recall()), append(r6, r.TotalsV6.Recall())
			reached = append(reached, float64(r.Totals.Reached))
			wrong = append(wrong, float64(r.Totals.Wrong))
			one = append(one, float64(r.Totals.OnePath))
		}
		t.Rows = append(t.Rows, []string{p.Name, p.Options, Summarize(probes).Format("%.0f", ""), Summarize(secs).Seconds(),
			Summarize(reached).Format("%.0f", "/"+strconv.Itoa(len(targets))), Summarize(recall).Scale(100).Format("%.1f", " %"),
			fmt.Sprintf("%.1f / %.1f %%", 100*Summarize(r4).Median, 100*Summarize(r6).Median), Summarize(wrong).Format("%.0f", ""), Summarize(one).Format("%.0f", "")})
	}
	res.Tables = append(res.Tables, t)

	rt := Table{Title: "Speedups (scamper's wall time / turnpath's, same round):", Columns: []string{"turnpath", "speedup over scamper"}}
	sc := roundSeconds(by["scamper"], rounds)
	for _, p := range probers {
		if p.Name == "scamper" || len(by["scamper"]) == 0 {
			continue
		}
		sp := Summarize(Ratios(sc, roundSeconds(by[p.Name], rounds)))
		rt.Rows = append(rt.Rows, []string{p.Name, sp.Times()})
		if p.Name == "turnpath (eBPF, 1 query)" && sp.N > 0 {
			tp, st := medianTotals(by[p.Name]), medianTotals(by["scamper"])
			res.Headlines = append(res.Headlines, fmt.Sprintf("Many targets (%d relays, IPv4 and IPv6, %d probes/s): "+
				"turnpath (eBPF, 1 query) %s vs scamper %s, **%s faster**; hop recall %.0f %% vs %.0f %% (IPv4 only: %.0f %% vs %.0f %%); "+
				"relays that answered: %.0f vs %.0f.", len(targets), manyRate,
				Summarize(roundSeconds(by[p.Name], rounds)).Seconds(), Summarize(roundSeconds(by["scamper"], rounds)).Seconds(), sp.Times(),
				100*tp[0], 100*st[0], 100*tp[1], 100*st[1], tp[2], st[2]))
		}
	}
	if st := medianTotals(by["scamper"]); len(by["scamper"]) > 0 && st[3] == 0 && st[1] > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("scamper %s found no IPv6 hop with udp-paris (its IPv4 traces and its "+
			"icmp-paris and udp traces over IPv6 work): the routers' ICMPv6 Time Exceeded do reach the client's interface, "+
			"scamper does not match them. The IPv4 recall compares like with like.", env.Machine.Tools["scamper"]))
	}
	if len(rt.Rows) > 0 {
		res.Tables = append(res.Tables, rt)
	}
	for _, p := range probers {
		res.Commands = append(res.Commands, env.display(p.Argv(env, list)))
	}
	return res, nil
}

// runScored runs prober p over the target list and scores its output against the
// truth: the run's record (Totals nil when it failed) and what it observed.
func runScored(ctx context.Context, env *Env, p manyProber, list string, tr *lab.Truth, targets []netip.Addr, timeout time.Duration) (RunRecord, []*Observation) {
	o := env.Exec(ctx, timeout, p.Argv(env, list)...)
	rec := RunRecord{Prober: p.Name, Seconds: o.Wall.Seconds(), ExitCode: o.ExitCode, TimedOut: o.TimedOut}
	if o.Err != nil {
		rec.Error = o.Err.Error()
	}
	obs, err := p.Parse(o.Stdout)
	if err != nil {
		if rec.Error == "" {
			rec.Error = fmt.Sprintf("parse: %v (stderr: %s)", err, oneLine(string(o.Stderr)))
		}
		return rec, nil
	}
	all, v4, v6, probes, err := scoreMany(tr, targets, obs)
	if err != nil {
		rec.Error = err.Error()
	} else {
		rec.Totals, rec.TotalsV4, rec.TotalsV6, rec.Probes = &all, &v4, &v6, probes
	}
	return rec, obs
}

// medianTotals returns the median recall (all, IPv4), targets reached and IPv6 recall
// over runs.
func medianTotals(runs []RunRecord) [4]float64 {
	var all, v4, reached, v6 []float64
	for _, r := range runs {
		if r.Totals != nil {
			all, v4 = append(all, r.Totals.Recall()), append(v4, r.TotalsV4.Recall())
			reached, v6 = append(reached, float64(r.Totals.Reached)), append(v6, r.TotalsV6.Recall())
		}
	}
	return [4]float64{Summarize(all).Median, Summarize(v4).Median, Summarize(reached).Median, Summarize(v6).Median}
}

// scoreMany scores every target's observation (all, IPv4, IPv6); a target missing from
// the output counts with nothing found.
func scoreMany(tr *lab.Truth, targets []netip.Addr, obs []*Observation) (all, v4, v6 Totals, probes int, err error) {
	byAddr := map[netip.Addr]*Observation{}
	for _, o := range obs {
		byAddr[o.Target.Unmap()] = o
		probes += o.Probes
	}
	var scores, s4, s6 []Score
	for _, a := range targets {
		tt, ok := tr.TargetTruth(a)
		if !ok {
			return all, v4, v6, 0, fmt.Errorf("%s is not a lab target", a)
		}
		o := byAddr[a]
		if o == nil {
			o = NewObservation(a)
		}
		s := ScoreObservation(tt, o)
		scores = append(scores, s)
		if a.Is4() {
			s4 = append(s4, s)
		} else {
			s6 = append(s6, s)
		}
	}
	return Aggregate(scores), Aggregate(s4), Aggregate(s6), probes, nil
}
