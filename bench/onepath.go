package bench

import (
	"context"
	"fmt"
	"github.com/turnpath/turnpath/pace"
	"net/netip"
	"strings"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// Section 1: one path. Wall time and hop recall against the lab's truth for one TURN
// target, in both lab profiles: turnpath (both engines) against the tools people would
// otherwise use, each with the tight options their users would pick and a hard timeout.

// onePathTarget is a relay on t1: nine or ten hops away, three ECMP stages, one silent
// router (see `turnpath lab truth 198.19.1.1`).
const onePathTarget = "198.19.1.1"

// prober is one way of tracing the path.
type prober struct {
	Name    string
	Tool    string // binary that must be installed ("" = turnpath)
	Options string // what the table shows
	Argv    func(e *Env, target string) []string
	Parse   func(out []byte, target netip.Addr) (*Observation, error)
	Timeout time.Duration
}

func turnpathProber(name, options string, args ...string) prober {
	return prober{
		Name: name, Options: options, Timeout: 30 * time.Second,
		Argv: func(e *Env, target string) []string {
			return append(append([]string{e.Turnpath, "trace", "-n", "--format", "json"}, args...), target)
		},
		Parse: func(out []byte, target netip.Addr) (*Observation, error) {
			_, obs, err := ParseTurnpathJSON(out)
			if err != nil {
				return nil, err
			}
			if len(obs) != 1 {
				return nil, fmt.Errorf("turnpath: %d targets in the report, want 1", len(obs))
			}
			return obs[0], nil
		},
	}
}

func tracerouteText(out []byte, target netip.Addr) (*Observation, error) {
	obs, err := ParseTraceroute(out)
	if err != nil {
		return nil, err
	}
	return obs[0], nil
}

// onePathProbers: every peer waits at most 1 s for an answer and stops at TTL 15
// (turnpath keeps its defaults: -w 1s, -q 3, -m 30, stops at the destination).
var onePathProbers = []prober{
	turnpathProber("turnpath (eBPF)", "`--engine ebpf` (defaults: 3 queries, STUN Binding)", "--engine", "ebpf"),
	turnpathProber("turnpath (socket)", "`--engine socket`", "--engine", "socket"),
	{
		Name: "traceroute -U", Tool: "traceroute", Options: "`-U -p 3478 -q 3 -w 1 -m 15`", Timeout: 30 * time.Second,
		Argv: func(_ *Env, t string) []string {
			return []string{"traceroute", "-n", "-U", "-p", "3478", "-q", "3", "-w", "1", "-m", "15", t}
		},
		Parse: tracerouteText,
	},
	{
		Name: "traceroute -I", Tool: "traceroute", Options: "`-I -q 3 -w 1 -m 15` (ICMP echo)", Timeout: 30 * time.Second,
		Argv: func(_ *Env, t string) []string {
			return []string{"traceroute", "-n", "-I", "-q", "3", "-w", "1", "-m", "15", t}
		},
		Parse: tracerouteText,
	},
	{
		Name: "mtr", Tool: "mtr", Options: "`--report -c 1 -G 1 -m 15` (ICMP echo)", Timeout: 30 * time.Second,
		Argv: func(_ *Env, t string) []string {
			return []string{"mtr", "-n", "--report", "-c", "1", "-G", "1", "-m", "15", t}
		},
		Parse: ParseMTRReport,
	},
	{
		Name: "scamper", Tool: "scamper", Options: "`trace -P udp-paris -d 3478 -q 1 -w 1 -g 3 -m 15`, `-p 1000`", Timeout: 60 * time.Second,
		Argv: func(_ *Env, t string) []string {
			return []string{"scamper", "-O", "text", "-p", "1000", "-c", "trace -P udp-paris -d 3478 -q 1 -w 1 -g 3 -m 15", "-i", t}
		},
		Parse: tracerouteText,
	},
}

// RunRecord is one timed run of one prober.
type RunRecord struct {
	Prober   string  `json:"prober"`
	Round    int     `json:"round"`
	Seconds  float64 `json:"seconds"`
	ExitCode int     `json:"exit_code"`
	TimedOut bool    `json:"timed_out,omitempty"`
	Error    string  `json:"error,omitempty"`
	Probes   int     `json:"probes,omitempty"`
	Score    *Score  `json:"score,omitempty"`
	// Many targets: all, and per family.
	Totals   *Totals `json:"totals,omitempty"`
	TotalsV4 *Totals `json:"totals_v4,omitempty"`
	TotalsV6 *Totals `json:"totals_v6,omitempty"`
}

// onePathProfile is the raw data of one profile.
type onePathProfile struct {
	Profile string      `json:"profile"`
	Target  string      `json:"target"`
	Spacing float64     `json:"spacing_s"`
	Runs    []RunRecord `json:"runs"`
}

func runOnePath(ctx context.Context, env *Env) (*Result, error) {
	res := &Result{Text: []string{
		fmt.Sprintf("One TURN target, `%s` (relay on t1, nine or ten hops away: three ECMP stages and a silent router, "+
			"see `turnpath lab truth %s`). Wall time is the whole command (turnpath's includes opening and attaching its BPF "+
			"programs, pinned by an earlier run). **Hop recall** is the share of TTLs 1..10 where the tool reported an address that can answer "+
			"there on one of the true paths, `*` where a silent router can be, or had already reached the destination; "+
			"**wrong** counts reported addresses that cannot answer at that TTL; **one path** means every reported hop lies "+
			"on a single true path (a flow-stable prober); **destination answered** means the target, or its relay "+
			"(STUN), answered. Peers get tight options (1 s wait, 15 hops) and every run has a timeout. The tools run "+
			"in a rotating order, one round after another; speedups divide the times of the same round.", onePathTarget, onePathTarget),
		"The **realistic** profile keeps Linux's router ICMP rate limits (a burst of 6 Time Exceeded, then 1 per second, " +
			"per router and destination): runs there start at least 3 s apart so that every tool finds the routers' " +
			"token buckets refilled, as a user running one trace would. One trace asks each router for at most 3 answers " +
			"(one per query), within the burst, so both profiles give the same picture here; the limits bite with many " +
			"targets or repeated runs.",
	}}
	target := netip.MustParseAddr(onePathTarget)
	var raw []onePathProfile
	var notes []string
	for _, profile := range []string{lab.ProfileFast, lab.ProfileRealistic} {
		if env.Opts.Quick && profile == lab.ProfileRealistic {
			continue
		}
		l, err := env.Lab(ctx, profile)
		if err != nil {
			return res, err
		}
		tt, ok := l.Truth().TargetTruth(target)
		if !ok {
			return res, fmt.Errorf("%s is not a lab target", target)
		}
		spacing := time.Duration(0)
		if profile == lab.ProfileRealistic {
			spacing = 3 * time.Second
		}
		pr := onePathProfile{Profile: profile, Target: onePathTarget, Spacing: spacing.Seconds()}
		probers := available(onePathProbers)
		// Warm up: neighbour caches along the path, the binary in the page cache, and the
		// eBPF engine's pinned objects (only the first run after an upgrade or a
		// `turnpath cleanup` loads them).
		env.Exec(ctx, 10*time.Second, env.Turnpath, "trace", "-n", "-q", "1", "--engine", "socket", onePathTarget)
		env.Exec(ctx, 10*time.Second, env.Turnpath, "trace", "-n", "-q", "1", "--engine", "ebpf", onePathTarget)
		last := time.Now()
		rounds := env.Runs(5, 2)
		for r := range rounds {
			for k := range probers {
				p := probers[(r+k)%len(probers)]
				if wait := spacing - time.Since(last); wait > 0 {
					if err := sleep(ctx, wait); err != nil {
						return res, err
					}
				}
				last = time.Now()
				rec := runProber(ctx, env, p, tt)
				rec.Round = r
				pr.Runs = append(pr.Runs, rec)
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
			}
		}
		raw = append(raw, pr)
		tables, heads, more := onePathTables(pr, probers)
		res.Tables = append(res.Tables, tables...)
		res.Headlines = append(res.Headlines, heads...)
		notes = append(notes, more...)
		if r := len(probers); r < len(onePathProbers) {
			res.Notes = append(res.Notes, fmt.Sprintf("%d probers skipped: not installed", len(onePathProbers)-r))
		}
	}
	res.Notes = append(res.Notes, notes...)
	res.Raw = raw
	for _, p := range available(onePathProbers) {
		res.Commands = append(res.Commands, env.display(p.Argv(env, onePathTarget)))
	}
	return res, nil
}

// available drops probers whose tool is not installed.
func available(ps []prober) []prober {
	var out []prober
	for _, p := range ps {
		if p.Tool == "" || Have(p.Tool) {
			out = append(out, p)
		}
	}
	return out
}

func runProber(ctx context.Context, env *Env, p prober, tt *lab.TargetTruth) RunRecord {
	o := env.Exec(ctx, p.Timeout, p.Argv(env, tt.Addr().String())...)
	rec := RunRecord{Prober: p.Name, Seconds: o.Wall.Seconds(), ExitCode: o.ExitCode, TimedOut: o.TimedOut}
	if o.Err != nil {
		rec.Error = o.Err.Error()
	}
	obs, err := p.Parse(o.Stdout, tt.Addr())
	if err != nil {
		if rec.Error == "" {
			rec.Error = fmt.Sprintf("parse: %v (stderr: %s)", err, oneLine(string(o.Stderr)))
		}
		env.Logf("%s: %s", p.Name, rec.Error)
		return rec
	}
	s := ScoreObservation(tt, obs)
	rec.Score, rec.Probes = &s, obs.Probes
	env.Logf("%-18s %6.3fs recall %3.0f%% wrong %d reached %v", p.Name, rec.Seconds, 100*s.Recall(), s.Wrong, s.Reached)
	return rec
}

// byProber groups runs by prober, in round order.
func byProber(runs []RunRecord) map[string][]RunRecord {
	m := map[string][]RunRecord{}
	for _, r := range runs {
		m[r.Prober] = append(m[r.Prober], r)
	}
	return m
}

// roundSeconds returns the wall times of a prober's runs indexed by round (NaN where a
// round has no valid run), so ratios pair runs of the same round.
func roundSeconds(runs []RunRecord, rounds int) []float64 {
	out := make([]float64, rounds)
	for i := range out {
		out[i] = nan
	}
	for _, r := range runs {
		if r.Round < rounds && (r.Score != nil || r.Totals != nil) {
			out[r.Round] = r.Seconds
		}
	}
	return out
}

func onePathTables(pr onePathProfile, probers []prober) (tables []Table, heads, notes []string) {
	by := byProber(pr.Runs)
	rounds := 0
	for _, r := range pr.Runs {
		rounds = max(rounds, r.Round+1)
	}
	t := Table{
		Title:   fmt.Sprintf("**%s profile**, target %s, %d rounds:", pr.Profile, pr.Target, rounds),
		Columns: []string{"prober", "options", "wall time", "hop recall", "wrong", "one path", "destination answered", "timeouts"},
	}
	for _, p := range probers {
		runs := by[p.Name]
		var secs, recall, wrong []float64
		onePath, reached, timeouts, ok := 0, 0, 0, 0
		for _, r := range runs {
			if r.TimedOut {
				timeouts++
			}
			if r.Error != "" && !r.TimedOut {
				notes = append(notes, fmt.Sprintf("%s, %s, round %d: %s", pr.Profile, p.Name, r.Round+1, r.Error))
			}
			secs = append(secs, r.Seconds)
			if r.Score == nil {
				continue
			}
			ok++
			recall = append(recall, r.Score.Recall())
			wrong = append(wrong, float64(r.Score.Wrong))
			if r.Score.OnePath {
				onePath++
			}
			if r.Score.Reached {
				reached++
			}
		}
		t.Rows = append(t.Rows, []string{p.Name, p.Options, Summarize(secs).Seconds(), Summarize(recall).Percent(),
			Summarize(wrong).Format("%.0f", ""), fmt.Sprintf("%d/%d", onePath, ok), fmt.Sprintf("%d/%d", reached, ok),
			fmt.Sprintf("%d/%d", timeouts, len(runs))})
	}
	tables = append(tables, t)

	ebpf, sock := probers[0].Name, probers[1].Name
	ebpfSecs, sockSecs := roundSeconds(by[ebpf], rounds), roundSeconds(by[sock], rounds)
	rt := Table{
		Title: fmt.Sprintf("Speedups, %s profile (the other tool's wall time / turnpath's, same round):", pr.Profile),
		Columns: []string{"compared with", "turnpath (eBPF) is", "turnpath (socket) is", "hop recall: turnpath (eBPF) vs other",
			"destination answered: turnpath (eBPF) vs other"},
	}
	var parts []string
	for _, p := range probers[2:] {
		other := roundSeconds(by[p.Name], rounds)
		se, ss := Summarize(Ratios(other, ebpfSecs)), Summarize(Ratios(other, sockSecs))
		rt.Rows = append(rt.Rows, []string{p.Name, se.Times() + " faster", ss.Times() + " faster",
			fmt.Sprintf("%.0f %% vs %.0f %%", 100*medianRecall(by[ebpf]), 100*medianRecall(by[p.Name])),
			reachedText(by[ebpf]) + " vs " + reachedText(by[p.Name])})
		parts = append(parts, fmt.Sprintf("`%s` %s, recall %.0f %%: **%s / %s faster**", p.Name,
			Summarize(other).Seconds(), 100*medianRecall(by[p.Name]), se.Times(), ss.Times()))
	}
	if len(parts) > 0 {
		heads = append(heads, fmt.Sprintf("One path (%s lab, %s): turnpath %s (eBPF, incl. opening and attaching BPF) / %s (socket), "+
			"hop recall %.0f %%, relay answered (STUN) in %s runs; %s (eBPF / socket).", pr.Profile, pr.Target,
			Summarize(ebpfSecs).Seconds(), Summarize(sockSecs).Seconds(), 100*medianRecall(by[ebpf]), reachedText(by[ebpf]),
			strings.Join(parts, "; ")))
	}
	if r := Summarize(Ratios(ebpfSecs, sockSecs)); r.N > 0 {
		notes = append(notes, fmt.Sprintf("%s profile: the eBPF engine's wall time / the socket engine's, same round: %s "+
			"(target ≤ 1.1×). It includes opening the BPF objects an earlier run pinned (or, the first time, loading, "+
			"verifying and pinning them) and attaching and detaching them.",
			pr.Profile, r.Times()))
	}
	tables = append(tables, rt)
	return tables, heads, notes
}

func medianRecall(runs []RunRecord) float64 {
	var v []float64
	for _, r := range runs {
		if r.Score != nil {
			v = append(v, r.Score.Recall())
		}
	}
	return Summarize(v).Median
}

func reachedText(runs []RunRecord) string {
	n, ok := 0, 0
	for _, r := range runs {
		if r.Score != nil {
			ok++
			if r.Score.Reached {
				n++
			}
		}
	}
	return fmt.Sprintf("%d/%d", n, ok)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error { return pace.System.Sleep(ctx, d) }
