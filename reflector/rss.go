package reflector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RSSOptions tune PeakRSS.
type RSSOptions struct {
	Engine string   // "ebpf" or "socket" (default "ebpf")
	IPv6   bool     // IPv6 targets
	Args   []string // more trace flags; default: -q 1 --max-ttl <Depth+2> --rate 0
	// Timeout bounds the run (default 10 minutes).
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

// PeakRSS runs `binary trace -f FILE --format jsonl -n --engine ENGINE` over targets
// distinct targets (Target(0..targets-1)) inside the prober namespace: PeakRSSOf over a
// list it writes itself.
func (n *Net) PeakRSS(ctx context.Context, binary string, targets int, opts RSSOptions) (RSSResult, error) {
	if targets <= 0 || !opts.IPv6 && targets > MaxTargets4 {
		return RSSResult{Targets: targets, Engine: opts.Engine}, fmt.Errorf("reflector: %d targets (1..%d)", targets, MaxTargets4)
	}
	dir, err := os.MkdirTemp("", "turnpath-rss-")
	if err != nil {
		return RSSResult{}, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "targets")
	if err := WriteTargets(file, targets, opts.IPv6); err != nil {
		return RSSResult{}, err
	}
	return n.PeakRSSOf(ctx, binary, file, targets, opts)
}

// RSSArgv is the command PeakRSSOf runs: GNU time (writing turnpath's peak RSS in KiB to
// rssFile) running turnpath trace over list, in namespace ns.
func RSSArgv(ns, rssFile, binary, list, engine string, args []string) []string {
	argv := []string{"ip", "netns", "exec", ns, timeBinary, "-q", "-f", "%M", "-o", rssFile,
		binary, "trace", "-f", list, "--format", "jsonl", "-n", "--engine", engine}
	return append(argv, args...)
}

// PeakRSSOf runs turnpath over the targets in list (targets lines) inside the prober
// namespace and returns its peak resident set size, measured by GNU time (/usr/bin/time
// -f %M), which forks before it execs turnpath. Not from our own wait4: Go starts
// children with vfork semantics, so a child's ru_maxrss starts at the parent's own peak
// (a 50 MB Go parent made every run read 50 MB). The output is read and counted, not
// kept. Exit code 1 (some target not reached) is not an error.
func (n *Net) PeakRSSOf(ctx context.Context, binary, list string, targets int, opts RSSOptions) (RSSResult, error) {
	res := RSSResult{Targets: targets, Engine: opts.Engine, ExitCode: -1}
	if res.Engine == "" {
		res.Engine = "ebpf"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Args == nil {
		opts.Args = []string{"-q", "1", "--max-ttl", fmt.Sprint(n.depth + 2), "--rate", "0"}
	}
	if _, err := os.Stat(timeBinary); err != nil {
		return res, fmt.Errorf("reflector: GNU time is needed for peak RSS (apt-get install time): %w", err)
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
	argv := RSSArgv(n.prober, rssFile.Name(), binary, list, res.Engine, opts.Args)
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
		return res, fmt.Errorf("reflector: start %s: %w", binary, err)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
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
		return res, fmt.Errorf("reflector: %s trace over %d targets: %w after %v", binary, targets, ctx.Err(), opts.Timeout)
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && res.ExitCode == 1) {
		return res, fmt.Errorf("reflector: %s trace: %w: %s", binary, err, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(rssFile.Name())
	if err != nil {
		return res, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return res, fmt.Errorf("reflector: %s wrote no peak RSS", timeBinary)
	}
	kb, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		return res, fmt.Errorf("reflector: %s output %q: %w", timeBinary, strings.TrimSpace(string(b)), err)
	}
	res.PeakBytes = kb * 1024
	return res, nil
}

// WriteTargets writes the first n targets the reflector answers for (Target(0..n-1)),
// one a line.
func WriteTargets(path string, n int, v6 bool) error {
	if !v6 && n > MaxTargets4 {
		return fmt.Errorf("%d targets: the reflector has %d IPv4 targets", n, MaxTargets4)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintln(w, Target(i, v6))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

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
