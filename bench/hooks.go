package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/reflector"
)

// Sections 2 and 5 run against package reflector: an XDP program on the far end of a veth
// that answers every probe with a Time Exceeded (or the destination's answer at its
// depth), so the prober sees a network of any depth and any number of targets at line
// rate. Each section brings up its own reflector network (namespaces <prefix>-cap-* and
// <prefix>-rss-*: a prober and a reflector, nothing else) and takes it down again.

// reflectorUp takes the lab down (its daemons stay off the measured core; a later section
// brings it up again) and brings up the reflector network <prefix>-<name>-prober/-refl.
// down takes it down again.
func (e *Env) reflectorUp(ctx context.Context, name string, depth int) (n *reflector.Net, down func(), err error) {
	if err := e.downLab(); err != nil {
		return nil, nil, err
	}
	n, err = reflector.Up(ctx, reflector.Options{Prefix: e.Opts.Prefix + "-" + name, Depth: depth})
	if err != nil {
		return nil, nil, err
	}
	return n, func() {
		if err := n.Down(); err != nil {
			e.Logf("reflector %s down: %v", name, err)
		}
	}, nil
}

var (
	perfLine    = regexp.MustCompile(`^\s*([0-9.]+)%\s+[0-9.]+%\s+\[[^\]]+\]\s+(\S.*?)\s*$`)
	perfSamples = regexp.MustCompile(`^# Samples: ([0-9]+)([KM]?) `)
)

// profileShares reads `perf report --children --sort sym -g none --stdio` and sums the
// inclusive share of the symbols of each profRows row; samples is perf's sample count
// (rounded by perf to thousands past 1000).
func profileShares(report []byte) (shares map[string]float64, samples int) {
	out := map[string]float64{}
	for _, line := range strings.Split(string(report), "\n") {
		if m := perfSamples.FindStringSubmatch(line); m != nil && samples == 0 {
			samples, _ = strconv.Atoi(m[1])
			switch m[2] {
			case "K":
				samples *= 1000
			case "M":
				samples *= 1_000_000
			}
		}
		m := perfLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		for _, r := range profRows {
			if r.Match(m[2]) {
				out[r.Key] += v
			}
		}
	}
	return out, samples
}

// stealSeconds reads the steal time of one CPU from /proc/stat (0 when unreadable).
func stealSeconds(cpu int) float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	want := "cpu" + strconv.Itoa(cpu) + " "
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); strings.HasPrefix(line, want) && len(f) > 8 {
			v, _ := strconv.ParseFloat(f[8], 64)
			return v / 100 // USER_HZ
		}
	}
	return 0
}

// micro formats a Summary of nanoseconds in microseconds.
func micro(s Summary) string { return s.Scale(1e-3).Format("%.1f", " µs") }

// group writes n with a space between groups of three digits ("100 000").
func group(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}

// idle turns busy shares into idle shares.
func idle(busy []float64) []float64 {
	out := make([]float64, len(busy))
	for i, b := range busy {
		out[i] = 1 - b
	}
	return out
}

// kilo formats a Summary of rates in thousands ("81.2k (79.0–83.5)").
func kilo(s Summary) string {
	if s.N == 0 {
		return "–"
	}
	return s.Scale(1e-3).Format("%.1f", "k")
}

// Memory: peak RSS of `turnpath trace -f FILE --format jsonl` over ever longer target
// lists, every target answered by the reflector.
var (
	memSizes   = []int{1, 1000, 10_000, 100_000}
	memEngines = []struct{ Kind, Name string }{{"ebpf", "eBPF"}, {"socket", "socket"}}
)

// MemoryDepth is the reflector network's destination hop in the memory section.
const MemoryDepth = 8

type memRun struct {
	Round int `json:"round"`
	RSSResult
	Error string `json:"error,omitempty"`
}

type memRaw struct {
	Depth int      `json:"depth"`
	Args  []string `json:"args"`
	Runs  []memRun `json:"runs"`
}

// targetsText is "1 target", "1 000 targets", ...
func targetsText(n int) string {
	if n == 1 {
		return "1 target"
	}
	return group(n) + " targets"
}

// MemoryTraceArgs are the trace flags of the memory section after -f FILE --format jsonl -n
// --engine E (the reflector network has its destination at hop MemoryDepth).
func MemoryTraceArgs() []string {
	return []string{"-q", "1", "--max-ttl", strconv.Itoa(MemoryDepth + 2), "--rate", "0"}
}

func runMemory(ctx context.Context, env *Env) (*Result, error) {
	rounds := env.Runs(3, 1)
	res := &Result{Text: []string{
		fmt.Sprintf("Peak resident set size (GNU `time -f %%M`: `ru_maxrss` of the process) of `turnpath trace -f FILE --format jsonl` "+
			"for 1, 1 000, 10 000 and 100 000 distinct targets, every one answered by the reflector (destination at hop %d; 1 query "+
			"per hop, unpaced). turnpath traces at most 1 024 targets at once (the window, DESIGN.md \"Long target lists\") and "+
			"writes each target's line as it finishes, so past one window the list should cost only its addresses. "+
			"turnpath runs in the reflector network's prober namespace (the lab is down); %s, the median with (min–max); the ratios "+
			"divide runs of the same round.", MemoryDepth, plural(rounds, "round")),
	}}
	n, down, err := env.reflectorUp(ctx, "rss", MemoryDepth)
	if err != nil {
		return res, err
	}
	defer down()
	raw := memRaw{Depth: MemoryDepth, Args: MemoryTraceArgs()}
	lists := map[int]string{}
	for _, size := range memSizes {
		lists[size] = filepath.Join(env.Dir, fmt.Sprintf("targets-%d.txt", size))
		if err := WriteTargets(lists[size], size); err != nil {
			return res, err
		}
	}
	var failed error
	for r := range rounds {
		for k := range memEngines {
			e := memEngines[(r+k)%len(memEngines)]
			for _, size := range memSizes {
				rr, err := PeakRSS(ctx, n, RSSOptions{Turnpath: env.Turnpath, List: lists[size], Targets: size,
					Engine: e.Kind, Args: MemoryTraceArgs(), Timeout: 2 * time.Minute})
				run := memRun{Round: r, RSSResult: rr}
				if err != nil {
					run.Error = err.Error()
					failed = err
				}
				raw.Runs = append(raw.Runs, run)
				env.Logf("memory %-6s %6d targets round %d: peak RSS %.1f MiB in %.2fs, %d lines, %d reached %s",
					e.Kind, size, r+1, float64(rr.PeakBytes)/(1<<20), rr.Seconds, rr.Lines, rr.Reached, run.Error)
				if ctx.Err() != nil {
					res.Raw = raw
					return res, ctx.Err()
				}
			}
		}
	}
	res.Raw = raw

	// rss[engine][size][round] in MiB (NaN: failed).
	rss := map[string]map[int][]float64{}
	secs := map[string]map[int][]float64{}
	reached := map[string]map[int][]float64{}
	for _, e := range memEngines {
		rss[e.Kind], secs[e.Kind], reached[e.Kind] = map[int][]float64{}, map[int][]float64{}, map[int][]float64{}
		for _, size := range memSizes {
			rss[e.Kind][size] = make([]float64, rounds)
			for i := range rss[e.Kind][size] {
				rss[e.Kind][size][i] = nan
			}
		}
	}
	for _, r := range raw.Runs {
		if r.Error != "" {
			res.Notes = append(res.Notes, fmt.Sprintf("%s, %d targets, round %d: %s", r.Engine, r.Targets, r.Round+1, oneLine(r.Error)))
			continue
		}
		if r.Lines != r.Targets {
			res.Notes = append(res.Notes, fmt.Sprintf("%s, %d targets, round %d: %d result lines", r.Engine, r.Targets, r.Round+1, r.Lines))
		}
		rss[r.Engine][r.Targets][r.Round] = float64(r.PeakBytes) / (1 << 20)
		secs[r.Engine][r.Targets] = append(secs[r.Engine][r.Targets], r.Seconds)
		reached[r.Engine][r.Targets] = append(reached[r.Engine][r.Targets], float64(r.Reached))
	}
	big, one, win := memSizes[len(memSizes)-1], memSizes[0], memSizes[1]
	t := Table{Title: "Peak RSS:", Columns: []string{"engine"}}
	for _, size := range memSizes {
		t.Columns = append(t.Columns, targetsText(size))
	}
	t.Columns = append(t.Columns, "ratio 100 000 / 1", "ratio 100 000 / 1 000")
	for _, e := range memEngines {
		row := []string{e.Name}
		for _, size := range memSizes {
			row = append(row, Summarize(rss[e.Kind][size]).Format("%.1f", " MiB"))
		}
		row = append(row, Summarize(Ratios(rss[e.Kind][big], rss[e.Kind][one])).Format("%.2f", "×"),
			Summarize(Ratios(rss[e.Kind][big], rss[e.Kind][win])).Format("%.2f", "×"))
		t.Rows = append(t.Rows, row)
	}
	res.Tables = append(res.Tables, t)
	wt := Table{Title: "The same runs' wall time and targets reached (the reflector answers all of them):",
		Columns: []string{"engine", "targets", "wall time", "targets reached", "targets/s"}}
	for _, e := range memEngines {
		for _, size := range memSizes {
			s := Summarize(secs[e.Kind][size])
			var tps []float64
			for _, x := range secs[e.Kind][size] {
				tps = append(tps, float64(size)/x)
			}
			wt.Rows = append(wt.Rows, []string{e.Name, targetsText(size), s.Seconds(),
				Summarize(reached[e.Kind][size]).Format("%.0f", "/"+strconv.Itoa(size)), Summarize(tps).Format("%.0f", "")})
		}
	}
	res.Tables = append(res.Tables, wt)

	if eb := rss["ebpf"]; Summarize(eb[big]).N > 0 {
		h := fmt.Sprintf("Memory: peak RSS of `turnpath trace -f` with the eBPF engine **%s for 1 target, %s for 1 000, %s for 100 000** "+
			"(100 000 / 1: %s)", Summarize(eb[one]).Format("%.1f", " MiB"), Summarize(eb[win]).Format("%.1f", " MiB"),
			Summarize(eb[big]).Format("%.1f", " MiB"), Summarize(Ratios(eb[big], eb[one])).Format("%.2f", "×"))
		if so := rss["socket"]; Summarize(so[big]).N > 0 {
			h += fmt.Sprintf("; socket engine %s / %s / %s (%s)", Summarize(so[one]).Format("%.1f", " MiB"),
				Summarize(so[win]).Format("%.1f", " MiB"), Summarize(so[big]).Format("%.1f", " MiB"),
				Summarize(Ratios(so[big], so[one])).Format("%.2f", "×"))
		}
		res.Headlines = append(res.Headlines, h+".")
		med := func(kind string, size int) float64 { return Summarize(rss[kind][size]).Median }
		p := fmt.Sprintf("Reading: with the eBPF engine 100 000 targets take %s the memory of 1 000 (medians: %.1f MiB more for 99 000 "+
			"more targets, about %.0f bytes each: the list itself, an address and a route index per target, plus the Go heap's "+
			"slack); the window bounds everything else. From 1 target to 1 000 the window fills (%.1f → %.1f MiB).",
			Summarize(Ratios(rss["ebpf"][big], rss["ebpf"][win])).Format("%.2f", "×"), med("ebpf", big)-med("ebpf", win),
			(med("ebpf", big)-med("ebpf", win))*(1<<20)/float64(big-win),
			med("ebpf", one), med("ebpf", win))
		if Summarize(rss["socket"][big]).N > 0 {
			p += fmt.Sprintf(" The socket engine keeps its outstanding probes in Go (two matcher generations of at most 32 768 probes, "+
				"DESIGN.md), which an unpaced run of many targets fills, on top of the list: 1 000 → 10 000 → 100 000 targets "+
				"take %.1f → %.1f → %.1f MiB, bounded but not flat; the eBPF engine keeps its send times in a fixed table instead.",
				med("socket", win), med("socket", 10_000), med("socket", big))
		}
		verdict := "**met**"
		if med("ebpf", big) > 1.5*med("ebpf", win) {
			verdict = "**not met**"
		}
		p += fmt.Sprintf(" Goal \"flat, not growing with the target list\" (taken as: 100 000 targets within 1.5× of 1 000, eBPF): %s.", verdict)
		res.Text = append(res.Text, p)
	}
	res.Notes = append(res.Notes, "turnpath is started through GNU `time`, which forks before it execs turnpath. Reading "+
		"`ru_maxrss` from `wait4` in the Go runner itself would report the runner's own "+
		"peak instead: Go starts children with vfork semantics, so the child's high-water mark before exec is the runner's "+
		"(in a trial of this bench every run, 1 target or 100 000, read the same 49 MiB: tpbench's own peak).")
	for _, e := range memEngines {
		argv := RSSArgv(n.ProberNS(), "maxrss.txt", RSSOptions{Turnpath: "turnpath", List: "targets.txt", Engine: e.Kind, Args: MemoryTraceArgs()})
		res.Commands = append(res.Commands, CommandLine(argv))
	}
	res.Commands = append(res.Commands,
		fmt.Sprintf("# targets.txt: N lines %s, %s, … (reflector.Target(0..N-1)); N = 1, 1000, 10000, 100000; maxrss.txt: peak RSS in KiB",
			reflector.Target(0, false), reflector.Target(1, false)),
		"tpbench rss -engine ebpf -targets 100000 -turnpath bin/turnpath   # one run on its own reflector network (namespaces tprss-*)")
	if failed != nil && Summarize(rss["ebpf"][big]).N == 0 {
		return res, errors.Join(errors.New("no 100 000-target run succeeded"), failed)
	}
	return res, nil
}

// plural is "1 round", "5 rounds".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
