package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/reflector"
)

// Monitor: what a long `turnpath monitor` costs, against the reflector (every target
// answers, every hop up to its depth): CPU per target-round and memory for 1, 100 and
// 1 000 targets at one round a second, and whether memory stays flat while the rounds go
// on (RSS sampled every second from /proc, compared between the tenth second and the end).

var monSizes = []int{1, 100, 1000}

// MonitorOptions are one monitor measurement.
type MonitorOptions struct {
	Turnpath string
	List     string // target addresses, one a line
	Targets  int
	Engine   string // "ebpf" (default) or "socket"
	Seconds  int    // rounds at one a second
}

// MonitorResult is one monitor measurement.
type MonitorResult struct {
	Targets    int     `json:"targets"`
	Engine     string  `json:"engine"`
	Rounds     int     `json:"rounds"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system of the turnpath process
	PeakBytes  int64   `json:"peak_rss_bytes"`
	// RSS is the resident set sampled every second (bytes); RSS10 at the tenth sample.
	RSS      []int64 `json:"rss_bytes"`
	Records  int     `json:"records"` // jsonl records written
	ExitCode int     `json:"exit_code"`
}

// MonitorArgv is the command: GNU time (peak RSS in KiB, user and system seconds, into
// statFile) running turnpath monitor over o.List in namespace ns.
func MonitorArgv(ns, statFile string, o MonitorOptions, depth int) []string {
	return []string{"ip", "netns", "exec", ns, timeBinary, "-q", "-f", "%M %U %S", "-o", statFile,
		o.Turnpath, "monitor", "-f", o.List, "--format", "jsonl", "--emit", "10s", "-n", "--engine", o.Engine,
		"-i", "1s", "-c", strconv.Itoa(o.Seconds), "--max-ttl", strconv.Itoa(depth + 2), "--rate", "50000"}
}

// MonitorCost runs one monitor measurement in n's prober namespace.
func MonitorCost(ctx context.Context, n *reflector.Net, o MonitorOptions) (MonitorResult, error) {
	if o.Engine == "" {
		o.Engine = "ebpf"
	}
	res := MonitorResult{Targets: o.Targets, Engine: o.Engine, Rounds: o.Seconds, ExitCode: -1}
	if err := n.UseEngine(o.Engine); err != nil {
		return res, err
	}
	tr := timedRun{What: fmt.Sprintf("%s monitor over %d targets", o.Turnpath, o.Targets),
		Timeout: time.Duration(o.Seconds)*time.Second + time.Minute,
		Argv:    func(stat string) []string { return MonitorArgv(n.ProberNS(), stat, o, n.Depth()) },
		Read: func(r io.Reader) {
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				res.Records++
			}
		},
		// ip netns exec execs GNU time, which forks turnpath: sample its child.
		Tick: func(pid int) {
			if v := childRSS(pid); v > 0 {
				res.RSS = append(res.RSS, v)
			}
		}}
	f, err := tr.run(ctx, 3)
	res.Seconds, res.ExitCode = tr.seconds, tr.exit
	if err != nil {
		return res, err
	}
	kb, err1 := strconv.ParseInt(f[0], 10, 64)
	user, err2 := strconv.ParseFloat(f[1], 64)
	sys, err3 := strconv.ParseFloat(f[2], 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return res, fmt.Errorf("bench: %s output %q: %w", timeBinary, strings.Join(f, " "), err)
	}
	res.PeakBytes, res.CPUSeconds = kb*1024, user+sys
	return res, nil
}

// childRSS is the resident set (bytes) of pid's first child, 0 when unknown.
func childRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	st, err := os.ReadFile("/proc/" + f[0] + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(st)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

type monRaw struct {
	Depth int             `json:"depth"`
	Runs  []MonitorResult `json:"runs"`
}

func runMonitorCost(ctx context.Context, env *Env) (*Result, error) {
	secs := env.Runs(60, 20)
	res := &Result{Text: []string{
		fmt.Sprintf("`turnpath monitor` over 1, 100 and 1 000 targets of the reflector (destination at hop %d, so %d TTLs "+
			"a target until the destination is known and %d after), one round a second for %d s, eBPF engine, "+
			"`--format jsonl --emit 10s`. CPU is user + system time of the turnpath process (GNU `time`), divided by targets × "+
			"rounds; memory is its peak RSS, and its RSS sampled every second from /proc: \"growth\" compares the highest "+
			"sample of the run's second half with the highest of its first half from the tenth second on (every distance known, "+
			"the first records written): a run whose memory grows with time shows it there, while the Go heap's ups and downs "+
			"around each --emit do not.", MemoryDepth, MemoryDepth+2, MemoryDepth, secs),
	}}
	n, down, err := env.reflectorUp(ctx, "mon", MemoryDepth)
	if err != nil {
		return res, err
	}
	defer down()
	raw := monRaw{Depth: MemoryDepth}
	t := Table{Title: "Monitor cost:", Columns: []string{"targets", "rounds", "CPU per target-round", "CPU (share of one core)",
		"peak RSS", "RSS, first half", "RSS, second half", "growth", "records"}}
	var failed error
	for _, size := range monSizes {
		list := filepath.Join(env.Dir, fmt.Sprintf("mon-targets-%d.txt", size))
		if err := WriteTargets(list, size); err != nil {
			return res, err
		}
		r, err := MonitorCost(ctx, n, MonitorOptions{Turnpath: env.Turnpath, List: list, Targets: size, Seconds: secs})
		raw.Runs = append(raw.Runs, r)
		if err != nil {
			failed = err
			res.Notes = append(res.Notes, fmt.Sprintf("%d targets: %s", size, oneLine(err.Error())))
			continue
		}
		mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
		first, second := halves(r.RSS)
		growth := "–"
		if first > 0 {
			growth = fmt.Sprintf("%+.1f%%", 100*float64(second-first)/float64(first))
		}
		perTR := r.CPUSeconds / float64(size*r.Rounds) * 1e6
		t.Rows = append(t.Rows, []string{targetsText(size), strconv.Itoa(r.Rounds), fmt.Sprintf("%.1f µs", perTR),
			fmt.Sprintf("%.2f%%", 100*r.CPUSeconds/r.Seconds), mib(r.PeakBytes), mib(first), mib(second), growth, strconv.Itoa(r.Records)})
		env.Logf("monitor %4d targets: %.1f µs CPU per target-round, peak %s, RSS %s → %s", size, perTR, mib(r.PeakBytes), mib(first), mib(second))
		if size == monSizes[len(monSizes)-1] {
			res.Headlines = append(res.Headlines, fmt.Sprintf("Monitor: 1 000 targets at one round a second cost **%.1f µs of CPU per "+
				"target-round** (%.1f%% of a core) and **%s** peak RSS; the highest RSS of the run's second half is %s of its first half's.",
				perTR, 100*r.CPUSeconds/r.Seconds, mib(r.PeakBytes), growth))
		}
	}
	res.Tables = append(res.Tables, t)
	res.Raw = raw
	argv := MonitorArgv(n.ProberNS(), "stat.txt", MonitorOptions{Turnpath: "turnpath", List: "targets.txt", Engine: "ebpf", Seconds: secs}, MemoryDepth)
	res.Commands = append(res.Commands, CommandLine(argv),
		"# targets.txt: N reflector targets (reflector.Target(0..N-1)), N = 1, 100, 1000; stat.txt: peak RSS in KiB, user and system seconds")
	if failed != nil && len(t.Rows) == 0 {
		return res, failed
	}
	return res, nil
}

// halves are the highest RSS sample of the first half of a run (from the tenth second,
// once the start is over) and of its second half; 0 when there are too few.
func halves(rss []int64) (first, second int64) {
	if len(rss) < 12 {
		return 0, 0
	}
	mid := 10 + (len(rss)-10)/2
	for _, v := range rss[10:mid] {
		first = max(first, v)
	}
	for _, v := range rss[mid:] {
		second = max(second, v)
	}
	return first, second
}
