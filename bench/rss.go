package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/turnpath/turnpath/reflector"
)

// Peak RSS of a turnpath run, measured through GNU time so the runner's own memory cannot
// leak in (see PeakRSS).

// RSSOptions are one peak-RSS measurement.
type RSSOptions struct {
	Turnpath string // the binary
	List     string // file with Targets target addresses, one a line (WriteTargets)
	Targets  int    // lines in List
	Engine   string // "ebpf" or "socket" (default "ebpf")
	// Args are the trace flags after `-f LIST --format jsonl -n --engine ENGINE`; default:
	// -q 1 --max-ttl <Depth+2> --rate 0.
	Args []string
	// Timeout bounds the run (default 2 minutes).
	Timeout time.Duration
}

// RSSResult is one PeakRSS measurement.
type RSSResult struct {
	Targets   int     `json:"targets"`
	Engine    string  `json:"engine"`
	PeakBytes int64   `json:"peak_rss_bytes"` // ru_maxrss of the turnpath process
	Seconds   float64 `json:"seconds"`
	Lines     int     `json:"lines"` // jsonl lines written (one per target traced)
	Reached   int     `json:"reached"`
	ExitCode  int     `json:"exit_code"`
}

// RSSArgv is the command PeakRSS runs: GNU time (writing turnpath's peak RSS in KiB to
// rssFile) running turnpath trace over o.List, in namespace ns. --scan=false: what is
// measured is streaming trace, whose memory must not grow with the list (a list of 8 to
// 4096 targets would be scanned by default).
func RSSArgv(ns, rssFile string, o RSSOptions) []string {
	argv := []string{"ip", "netns", "exec", ns, timeBinary, "-q", "-f", "%M", "-o", rssFile,
		o.Turnpath, "trace", "--scan=false", "-f", o.List, "--format", "jsonl", "-n", "--engine", o.Engine}
	return append(argv, o.Args...)
}

// PeakRSS runs turnpath over the targets in o.List (o.Targets lines) inside n's prober
// namespace and returns its peak resident set size, measured by GNU time (/usr/bin/time
// -f %M), which forks before it execs turnpath. Not from our own wait4: Go starts
// children with vfork semantics, so a child's ru_maxrss starts at the parent's own peak
// (a 50 MB Go parent made every run read 50 MB). The output is read and counted, not
// kept. Exit code 1 (some target not reached) is not an error.
func PeakRSS(ctx context.Context, n *reflector.Net, o RSSOptions) (RSSResult, error) {
	res := RSSResult{Targets: o.Targets, Engine: o.Engine, ExitCode: -1}
	if res.Engine == "" {
		res.Engine = "ebpf"
	}
	o.Engine = res.Engine
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Args == nil {
		o.Args = []string{"-q", "1", "--max-ttl", fmt.Sprint(n.Depth() + 2), "--rate", "0"}
	}
	if err := n.UseEngine(res.Engine); err != nil {
		return res, err
	}
	tr := timedRun{What: fmt.Sprintf("%s trace over %d targets", o.Turnpath, o.Targets), Timeout: o.Timeout,
		Argv: func(stat string) []string { return RSSArgv(n.ProberNS(), stat, o) },
		Read: func(r io.Reader) { res.Lines, res.Reached = countLines(r) }}
	f, err := tr.run(ctx, 1)
	res.Seconds, res.ExitCode = tr.seconds, tr.exit
	if err != nil {
		return res, err
	}
	kb, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return res, fmt.Errorf("bench: %s output %q: %w", timeBinary, f[0], err)
	}
	res.PeakBytes = kb * 1024
	return res, nil
}

// timedRun is one run of a command under GNU time (its measures go to a file named in
// the command, Argv's argument) in its own process group, so that a timeout kills time
// and turnpath with it, not only `ip netns exec`. Read consumes its stdout; Tick, if set,
// is called every second with the pid of GNU time while it runs. Exit code 1 (some
// target not reached) is not an error.
type timedRun struct {
	What    string // for errors
	Argv    func(statFile string) []string
	Timeout time.Duration
	Read    func(io.Reader)
	Tick    func(pid int)

	seconds float64 // wall time
	exit    int
}

// run runs it and returns the last n fields GNU time wrote.
func (t *timedRun) run(ctx context.Context, n int) ([]string, error) {
	t.exit = -1
	if _, err := os.Stat(timeBinary); err != nil {
		return nil, fmt.Errorf("bench: GNU time is needed (apt-get install time): %w", err)
	}
	stat, err := os.CreateTemp("", "turnpath-time-")
	if err != nil {
		return nil, err
	}
	stat.Close()
	defer os.Remove(stat.Name())
	argv := t.Argv(stat.Name())
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", t.What, err)
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	stopped, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				return
			case <-stopped:
				return
			case <-tick.C:
				if t.Tick != nil {
					t.Tick(cmd.Process.Pid)
				}
			}
		}
	}()
	t.Read(stdout)
	_, _ = io.Copy(io.Discard, stdout) // a line past a reader's buffer: keep it from blocking
	err = cmd.Wait()
	close(stopped)
	<-watched
	t.seconds = time.Since(start).Seconds()
	t.exit = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("bench: %s: %w after %v", t.What, ctx.Err(), t.Timeout)
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && t.exit == 1) {
		return nil, fmt.Errorf("bench: %s: %w: %s", t.What, err, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(stat.Name())
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) < n {
		return nil, fmt.Errorf("bench: %s wrote %q", timeBinary, strings.TrimSpace(string(b)))
	}
	return f[len(f)-n:], nil
}

// WriteTargets writes the first n IPv4 targets the reflector answers for
// (reflector.Target(0..n-1)), one a line.
func WriteTargets(path string, n int) error { return reflector.WriteTargets(path, n, false) }

// countLines counts jsonl lines and those of reached targets.
func countLines(r io.Reader) (lines, reached int) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		lines++
		if strings.Contains(sc.Text(), `"reached":true`) {
			reached++
		}
	}
	return lines, reached
}

// timeBinary is GNU time: it forks a fresh process for turnpath, so ru_maxrss is turnpath's.
const timeBinary = "/usr/bin/time"
