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
// rssFile) running turnpath trace over o.List, in namespace ns.
func RSSArgv(ns, rssFile string, o RSSOptions) []string {
	argv := []string{"ip", "netns", "exec", ns, timeBinary, "-q", "-f", "%M", "-o", rssFile,
		o.Turnpath, "trace", "-f", o.List, "--format", "jsonl", "-n", "--engine", o.Engine}
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
	if _, err := os.Stat(timeBinary); err != nil {
		return res, fmt.Errorf("bench: GNU time is needed for peak RSS (apt-get install time): %w", err)
	}
	if err := n.UseEngine(res.Engine); err != nil {
		return res, err
	}
	rssFile, err := os.CreateTemp("", "turnpath-maxrss-")
	if err != nil {
		return res, err
	}
	rssFile.Close()
	defer os.Remove(rssFile.Name())
	argv := RSSArgv(n.ProberNS(), rssFile.Name(), o)
	cmd := exec.Command(argv[0], argv[1:]...)
	// Its own process group: a timeout kills time and turnpath, not only ip.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("bench: start %s: %w", o.Turnpath, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		case <-stopped:
		}
	}()
	res.Lines, res.Reached = countLines(stdout)
	err = cmd.Wait()
	close(stopped)
	res.Seconds = time.Since(start).Seconds()
	res.ExitCode = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return res, fmt.Errorf("bench: %s trace over %d targets: %w after %v", o.Turnpath, o.Targets, ctx.Err(), o.Timeout)
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && res.ExitCode == 1) {
		return res, fmt.Errorf("bench: %s trace: %w: %s", o.Turnpath, err, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(rssFile.Name())
	if err != nil {
		return res, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return res, fmt.Errorf("bench: %s wrote no peak RSS", timeBinary)
	}
	kb, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		return res, fmt.Errorf("bench: %s output %q: %w", timeBinary, strings.TrimSpace(string(b)), err)
	}
	res.PeakBytes = kb * 1024
	return res, nil
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
	_, _ = io.Copy(io.Discard, r) // a line past the buffer: keep turnpath from blocking
	return lines, reached
}

// timeBinary is GNU time: it forks a fresh process for turnpath, so ru_maxrss is turnpath's.
const timeBinary = "/usr/bin/time"
