// Package bench is `make bench`: turnpath measured side by side with the tools people
// would otherwise use, in the built-in lab, and written up as BENCHMARKS.md plus the raw
// results as JSON.
//
// A benchmark is a Section: a small function registered in Sections that gets an Env
// (the lab, bounded commands inside the lab's client namespace, the run counts of the
// current mode) and returns a Result (tables, the exact commands, raw data). The runner
// (Run) brings labs up and down as sections ask for them, always tears them down, and
// renders whatever finished.
//
// The measurements behind the sections are here too: Capacity (an engine driven directly
// through the reflector, the process pinned to one core, CPU time from getrusage and
// /proc/stat), PeakRSS (turnpath's peak RSS under GNU time) and EBPFRTT (the eBPF
// engine's parts with its replies left on the wire). Package reflector is only the
// network capacity and memory run against.
//
// Safety: every prober runs inside the lab's client namespace (Env.Command prefixes
// `ip netns exec <prefix>-client`) and probes only lab targets, or, for capacity and
// memory, inside the prober namespace of a reflector network of its own (package
// reflector: <prefix>-cap-* / <prefix>-rss-*, whose only route leads into the reflector);
// every command has a timeout after which its process group is killed.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// Section is one benchmark.
type Section struct {
	ID    string
	Title string
	// Budget is what the section should take in full mode; the runner cancels it at
	// twice that so one stuck section cannot eat the whole make bench.
	Budget time.Duration
	Run    func(ctx context.Context, env *Env) (*Result, error)
}

// Sections are run and rendered in this order: the five measurements, then the
// Go microbenchmarks. Capacity and memory run against package reflector (hooks.go).
var Sections = []Section{
	{ID: "onepath", Title: "One path", Budget: 180 * time.Second, Run: runOnePath},
	{ID: "capacity", Title: "Capacity", Budget: 120 * time.Second, Run: runCapacity},
	{ID: "timestamps", Title: "Timestamp accuracy", Budget: 60 * time.Second, Run: runTimestamps},
	{ID: "many", Title: "Many targets", Budget: 75 * time.Second, Run: runMany},
	{ID: "scan", Title: "Many relays under ICMP limits", Budget: 180 * time.Second, Run: runScanBench},
	{ID: "multipath", Title: "Multipath at scale", Budget: 360 * time.Second, Run: runMultipathBench},
	{ID: "memory", Title: "Memory", Budget: 160 * time.Second, Run: runMemory},
	{ID: "monitor", Title: "Monitor", Budget: 200 * time.Second, Run: runMonitorCost},
	{ID: "asn", Title: "AS lookups offline", Budget: 60 * time.Second, Run: runASN},
	{ID: "gobench", Title: "Go microbenchmarks", Budget: 45 * time.Second, Run: runGoBench},
}

// Statuses of a Result.
const (
	StatusOK          = "ok"
	StatusNotMeasured = "not measured yet"
	StatusFailed      = "failed"
	StatusSkipped     = "skipped"
)

// Result is what a section measured.
type Result struct {
	ID      string  `json:"id"`
	Title   string  `json:"title"`
	Status  string  `json:"status"`
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds"`
	// Headlines are one-line findings for the top of BENCHMARKS.md (and the README).
	Headlines []string `json:"headlines,omitempty"`
	// Text paragraphs (Markdown) before the tables: what is measured and how.
	Text   []string `json:"text,omitempty"`
	Tables []Table  `json:"tables,omitempty"`
	// Commands are the exact command lines, as run inside the client namespace.
	Commands []string `json:"commands,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	// Raw holds every run's numbers.
	Raw any `json:"raw,omitempty"`
}

// Table is a Markdown table.
type Table struct {
	Title   string     `json:"title,omitempty"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
}

// Options configure a run.
type Options struct {
	Turnpath string // the turnpath binary (copied before use: others may rebuild it)
	Self     string // this program (for the in-namespace eBPF timestamp helper)
	RepoDir  string // the repository (go test for the microbenchmarks, scripts/)
	Prefix   string // lab prefix
	Quick    bool   // fewer runs, for development
	Only     []string
	Log      io.Writer
}

// Runs returns full in full mode and quick in quick mode.
func (e *Env) Runs(full, quick int) int {
	if e.Opts.Quick {
		return quick
	}
	return full
}

// Env is what a section works with.
type Env struct {
	Opts     Options
	Turnpath string // private copy of the turnpath binary
	Self     string // private copy of tpbench
	Dir      string // scratch directory, removed at the end
	Machine  Machine

	mu  sync.Mutex
	lab *lab.Lab
}

// Logf logs progress on the runner's log.
func (e *Env) Logf(format string, a ...any) {
	if e.Opts.Log != nil {
		fmt.Fprintf(e.Opts.Log, "tpbench: "+format+"\n", a...)
	}
}

// Lab returns the lab with profile, bringing it up (and another profile's down) as
// needed. Labs are always brought down by the runner.
func (e *Env) Lab(ctx context.Context, profile string) (*lab.Lab, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lab != nil && e.lab.Profile() == profile {
		return e.lab, nil
	}
	if e.lab != nil {
		if err := lab.Down(ctx, e.Opts.Prefix); err != nil {
			return nil, err
		}
		e.lab = nil
	}
	start := time.Now()
	l, err := lab.Up(ctx, lab.Options{Prefix: e.Opts.Prefix, Profile: profile})
	if err != nil {
		return nil, err
	}
	e.lab = l
	e.Logf("lab %s up (profile %s) in %.1fs", l.Prefix(), profile, time.Since(start).Seconds())
	return l, nil
}

// downLab removes our lab, also one left by a crashed earlier run.
func (e *Env) downLab() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lab = nil
	err := lab.Down(context.Background(), e.Opts.Prefix)
	if errors.Is(err, lab.ErrNotUp) {
		return nil
	}
	return err
}

// clientNS is the client namespace of the lab that is up.
func (e *Env) clientNS() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lab == nil {
		return "", errors.New("no lab is up")
	}
	return e.lab.ClientNS(), nil
}

// Outcome is one finished command.
type Outcome struct {
	Argv     []string      `json:"-"`
	Wall     time.Duration `json:"-"`
	Stdout   []byte        `json:"-"`
	Stderr   []byte        `json:"-"`
	ExitCode int           `json:"exit_code"`
	TimedOut bool          `json:"timed_out,omitempty"`
	Err      error         `json:"-"`
}

// Command prepares argv to run inside the lab's client namespace, in its own process
// group so that a timeout kills it with all its children.
func (e *Env) Command(argv ...string) (*exec.Cmd, error) {
	ns, err := e.clientNS()
	if err != nil {
		return nil, err
	}
	full := append([]string{"ip", "netns", "exec", ns}, argv...)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd, nil
}

// Exec runs argv in the client namespace and waits at most timeout.
func (e *Env) Exec(ctx context.Context, timeout time.Duration, argv ...string) Outcome {
	o := Outcome{Argv: argv, ExitCode: -1}
	cmd, err := e.Command(argv...)
	if err != nil {
		o.Err = err
		return o
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		o.Err = err
		return o
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		killGroup(cmd)
		err = <-done
		o.TimedOut = ctx.Err() == context.DeadlineExceeded
		if !o.TimedOut {
			err = ctx.Err()
		}
	}
	o.Wall = time.Since(start)
	o.Stdout, o.Stderr = []byte(stdout.String()), []byte(stderr.String())
	if cmd.ProcessState != nil {
		o.ExitCode = cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		o.Err = err
	}
	if o.TimedOut {
		o.Err = fmt.Errorf("timed out after %v", timeout)
	}
	return o
}

// killGroup kills the process group of a command we started.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Background is a long-running command (a capture, a CPU load) in the client namespace.
type Background struct {
	cmd  *exec.Cmd
	done chan error
	err  error
}

// Start starts argv in the client namespace; stderr goes to stderr (may be nil).
func (e *Env) Start(stderr io.Writer, argv ...string) (*Background, error) {
	cmd, err := e.Command(argv...)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	b := &Background{cmd: cmd, done: make(chan error, 1)}
	go func() { b.done <- cmd.Wait() }()
	return b, nil
}

// Stop sends SIGTERM to the process group, and SIGKILL after grace.
func (b *Background) Stop(grace time.Duration) error {
	if b.done == nil {
		return b.err
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case b.err = <-b.done:
	case <-time.After(grace):
		killGroup(b.cmd)
		b.err = <-b.done
	}
	b.done = nil
	return b.err
}

// Exited reports whether the command has ended by itself.
func (b *Background) Exited() bool {
	if b.done == nil {
		return true
	}
	select {
	case b.err = <-b.done:
		b.done = nil
		return true
	default:
		return false
	}
}

// Have reports whether tool is installed.
func Have(tool string) bool {
	_, err := exec.LookPath(tool)
	return err == nil
}

// CommandLine quotes argv for display like a shell would need it.
func CommandLine(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'$*?|&;<>()`\\") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}
