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

// Peak RSS of a turnpath run, measured so that the caller's memory cannot leak in.
//
// ru_maxrss from wait4 is the child's high-water mark *including the address space it
// had before exec*. Go starts children with vfork semantics (CLONE_VM), so until the exec
// the child runs in the parent's address space, and exec records that address space's
// high-water mark as the child's: a child of a Go process that once used 49 MiB reports
// at least 49 MiB, whatever it uses itself (reflector.(*Net).PeakRSS, which reads wait4's
// rusage, reports tpbench's own peak for every small run). So turnpath is started by GNU
// time, a small C program that forks (its own small address space) and execs turnpath:
// `time -f %M` is max(time's few hundred KiB before exec, turnpath's peak).

// TimeBinary is GNU time (Debian package "time").
const TimeBinary = "/usr/bin/time"

// RSSOptions are one peak-RSS measurement.
type RSSOptions struct {
	Turnpath string   // the binary
	List     string   // file with Targets target addresses, one a line (WriteTargets)
	Targets  int      // lines in List
	Engine   string   // "ebpf" or "socket"
	Args     []string // trace flags after `-f LIST --format jsonl -n --engine ENGINE`
	Timeout  time.Duration
}

// RSSArgv is the command PeakRSS runs (inside the prober namespace, rssFile is time's output).
func RSSArgv(ns, rssFile string, o RSSOptions) []string {
	argv := []string{"ip", "netns", "exec", ns, TimeBinary, "-q", "-f", "%M", "-o", rssFile,
		o.Turnpath, "trace", "-f", o.List, "--format", "jsonl", "-n", "--engine", o.Engine}
	return append(argv, o.Args...)
}

// PeakRSS runs turnpath over the list in n's prober namespace and returns its peak RSS
// (in reflector.RSSResult, with the jsonl lines and reached targets counted). Exit code 1
// (some target not reached) is not an error.
func PeakRSS(ctx context.Context, n *reflector.Net, dir string, o RSSOptions) (reflector.RSSResult, error) {
	res := reflector.RSSResult{Targets: o.Targets, Engine: o.Engine, ExitCode: -1}
	if _, err := os.Stat(TimeBinary); err != nil {
		return res, fmt.Errorf("GNU time is needed for peak RSS (apt-get install time): %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if err := n.UseEngine(o.Engine); err != nil {
		return res, err
	}
	rssFile, err := os.CreateTemp(dir, "maxrss-")
	if err != nil {
		return res, err
	}
	rssFile.Close()
	defer os.Remove(rssFile.Name())
	argv := RSSArgv(n.ProberNS(), rssFile.Name(), o)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s: %w", argv[0], err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			killGroup(cmd)
		case <-stopped:
		}
	}()
	res.Lines, res.Reached = countJSONL(stdout)
	err = cmd.Wait()
	close(stopped)
	res.Seconds = time.Since(start).Seconds()
	res.ExitCode = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return res, fmt.Errorf("turnpath trace over %d targets: %w after %v", o.Targets, ctx.Err(), o.Timeout)
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && res.ExitCode == 1) {
		return res, fmt.Errorf("turnpath trace over %d targets: %w: %s", o.Targets, err, lastLines(stderr.String(), 3))
	}
	b, err := os.ReadFile(rssFile.Name())
	if err != nil {
		return res, err
	}
	kb, err := lastInt(string(b))
	if err != nil {
		return res, fmt.Errorf("%s output %q: %w", TimeBinary, strings.TrimSpace(string(b)), err)
	}
	res.PeakBytes = kb * 1024
	return res, nil
}

// lastInt parses the last non-empty line as an integer.
func lastInt(s string) (int64, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strconv.ParseInt(strings.TrimSpace(lines[len(lines)-1]), 10, 64)
}

// countJSONL counts jsonl lines and those of reached targets, reading to the end.
func countJSONL(r io.Reader) (lines, reached int) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		lines++
		if strings.Contains(sc.Text(), `"reached":true`) {
			reached++
		}
	}
	_, _ = io.Copy(io.Discard, r)
	return lines, reached
}

// WriteTargets writes the first n IPv4 targets the reflector answers for
// (reflector.Target(0..n-1)), one a line.
func WriteTargets(path string, n int) error {
	if n > reflector.MaxTargets4 {
		return fmt.Errorf("%d targets: the reflector has %d IPv4 targets", n, reflector.MaxTargets4)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintln(w, reflector.Target(i, false))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
