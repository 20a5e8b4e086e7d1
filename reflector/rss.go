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
// distinct targets (Target(0..targets-1)) inside the prober namespace as a child process
// (`ip netns exec`, so the child starts there) and returns the child's peak resident set
// size, measured by GNU time (/usr/bin/time -f %M), which forks before it execs turnpath.
// Not from our own wait4: Go starts children with vfork semantics, so a child's ru_maxrss
// starts at the parent's peak (a 50 MB Go parent made every run read 50 MB).
// The output is read and counted, not kept.
func (n *Net) PeakRSS(ctx context.Context, binary string, targets int, opts RSSOptions) (RSSResult, error) {
	res := RSSResult{Targets: targets, Engine: opts.Engine}
	if res.Engine == "" {
		res.Engine = "ebpf"
	}
	if targets <= 0 || !opts.IPv6 && targets > MaxTargets4 {
		return res, fmt.Errorf("reflector: %d targets (1..%d)", targets, MaxTargets4)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	if _, err := os.Stat(timeBinary); err != nil {
		return res, fmt.Errorf("reflector: GNU time is needed for peak RSS (apt-get install time): %w", err)
	}
	if err := n.UseEngine(res.Engine); err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "turnpath-rss-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "targets")
	if err := writeTargets(file, targets, opts.IPv6); err != nil {
		return res, err
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return res, fmt.Errorf("reflector: %w", err)
	}
	rssFile := filepath.Join(dir, "maxrss")
	args := []string{"netns", "exec", n.prober, timeBinary, "-q", "-f", "%M", "-o", rssFile, binary, "trace", "-f", file, "--format", "jsonl", "-n", "--engine", res.Engine}
	if opts.Args == nil {
		opts.Args = []string{"-q", "1", "--max-ttl", fmt.Sprint(n.depth + 2), "--rate", "0"}
	}
	args = append(args, opts.Args...)
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ip, args...)
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
	res.Lines, res.Reached = countLines(stdout)
	err = cmd.Wait()
	res.Seconds = time.Since(start).Seconds()
	if b, rerr := os.ReadFile(rssFile); rerr == nil {
		f := strings.Fields(string(b))
		if len(f) > 0 {
			kb, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			res.PeakBytes = kb * 1024
		}
	}
	res.ExitCode = cmd.ProcessState.ExitCode()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && res.ExitCode == 1) { // 1: some target not reached
		return res, fmt.Errorf("reflector: %s trace: %w: %s", binary, err, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

func writeTargets(path string, n int, v6 bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
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
	return lines, reached
}

// timeBinary is GNU time: it forks a fresh process for turnpath, so ru_maxrss is turnpath's.
const timeBinary = "/usr/bin/time"
