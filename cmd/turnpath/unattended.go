package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/store"
	"github.com/turnpath/turnpath/trace"
	"github.com/turnpath/turnpath/unattended"
	"github.com/urfave/cli/v2"
)

// Running unattended (cron, a batch job): the flags trace, multipath and monitor share
// for it, and the one wrapper that applies them around a command's action: --lock first,
// then --output and --store, then the command; at the end the output is put in place (or
// dropped), the run's end recorded, the lock released.

// exitLocked is the exit code of a run that found its --lock held (README, exit codes).
const exitLocked = 4

func unattendedFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "output", Usage: "write the report to `FILE`, atomically: it is replaced only when the run finishes (exit 0 or 1); until then, and after a run that is killed or fails, the previous FILE stays as it was"},
		&cli.StringFlag{Name: "lock", Usage: "hold an exclusive lock on `FILE` (flock) for the run: when another run holds it, exit 4 at once (or wait, --lock-wait)"},
		&cli.DurationFlag{Name: "lock-wait", Usage: "with --lock: wait up to `DURATION` for the other run to finish before giving up with exit 4"},
		&cli.StringFlag{Name: "store", Usage: "record the run in the SQLite history at `PATH` (created if missing; see turnpath history)"},
		&cli.StringFlag{Name: "keep", Usage: "with --store: delete runs older than `AGE` (30d, 12h, 2w) after recording this one"},
		&cli.StringFlag{Name: "shard", Usage: "probe only shard `K/N` of the targets (1 <= K <= N; auto/N: K from the Indexed Job's JOB_COMPLETION_INDEX, 0-based, plus 1). Each target is in exactly one shard, the same on every run"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "notes on stderr besides errors (engine fallback, lock waits, what was written and recorded)"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "stderr lines as text, or json (one object a line, notes included)"},
	}
}

// logMode is how stderr lines are written, for the whole process (set from the flags
// before a command runs; main's error line follows it too).
var logMode struct {
	json    bool
	verbose bool
	command string
}

// logError writes the error that ends the process: one line, text or JSON.
func logError(w io.Writer, err error) {
	if logMode.json {
		writeLogJSON(w, "error", err.Error())
		return
	}
	fmt.Fprintf(w, "turnpath: %v\n", err)
}

func writeLogJSON(w io.Writer, level, msg string) {
	b, _ := json.Marshal(struct {
		Time    string `json:"time"`
		Level   string `json:"level"`
		Command string `json:"command,omitempty"`
		Version string `json:"turnpath_version"`
		Msg     string `json:"msg"`
	}{time.Now().UTC().Format(time.RFC3339Nano), level, logMode.command, version, msg})
	fmt.Fprintf(w, "%s\n", b)
}

// notef writes a note (not an error) on stderr: with -v, --log-format json, or when
// stderr is a terminal. A cron job's stderr gets errors only.
func notef(c *cli.Context, format string, a ...any) {
	if !logMode.verbose && !logMode.json && !isTerminal(c.App.ErrWriter) {
		return
	}
	if logMode.json {
		writeLogJSON(c.App.ErrWriter, "info", fmt.Sprintf(format, a...))
		return
	}
	fmt.Fprintf(c.App.ErrWriter, "turnpath: "+format+"\n", a...)
}

// warnf writes a warning on stderr: always (a result came out degraded, e.g. AS? for a
// lookup that timed out), as JSON with --log-format json.
func warnf(w io.Writer, format string, a ...any) {
	if logMode.json {
		writeLogJSON(w, "warning", fmt.Sprintf(format, a...))
		return
	}
	fmt.Fprintf(w, "turnpath: warning: "+format+"\n", a...)
}

// unattendedRun is what the flags set up for one run; every method is a no-op for what
// was not asked for.
type unattendedRun struct {
	c     *cli.Context
	cmd   string
	lock  *unattended.Lock
	out   *unattended.File // --output; nil: stdout
	st    *store.Store     // --store; nil: not recorded
	runID int64
	keep  time.Duration

	mu      sync.Mutex   // the store's state below: monitor records on a goroutine
	views   []store.View // recorded in batches
	err     error        // the first failure to record
	dropped int          // monitor intervals the queue had no room for

	snaps     chan *monitor.Snapshot // monitor: snapshots waiting for the store
	snapsDone chan struct{}
}

// viewBatch is how many views go into the store in one transaction: long target lists
// are recorded as they finish, without one transaction (and sync) per target.
const viewBatch = 256

// unattendedAction wraps a command's action with the unattended flags.
func unattendedAction(cmd string, action func(*cli.Context, *unattendedRun) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		u, err := startUnattended(c, cmd)
		if err != nil {
			return err
		}
		return u.finish(action(c, u))
	}
}

// startUnattended reads the flags and takes the lock, opens the output and the store, in
// that order: a run that finds the lock held touches nothing. Its errors are final.
func startUnattended(c *cli.Context, cmd string) (*unattendedRun, error) {
	logMode.command, logMode.verbose = cmd, c.Bool("verbose")
	switch c.String("log-format") {
	case "text", "":
		logMode.json = false
	case "json":
		logMode.json = true
	default:
		return nil, usageError("%s: unknown --log-format %q (text, json)", cmd, c.String("log-format"))
	}
	u := &unattendedRun{c: c, cmd: cmd}
	if _, err := shardOf(c); err != nil {
		return nil, usageError("%s: %w", cmd, err)
	}
	if k := c.String("keep"); k != "" {
		d, err := parseAge(k)
		if err != nil {
			return nil, usageError("%s: --keep %w", cmd, err)
		}
		if c.String("store") == "" {
			return nil, usageError("%s: --keep needs --store", cmd)
		}
		u.keep = d
	}
	if c.IsSet("lock-wait") && c.String("lock") == "" {
		return nil, usageError("%s: --lock-wait needs --lock", cmd)
	}
	if c.Duration("lock-wait") < 0 {
		return nil, usageError("%s: --lock-wait %v must not be negative", cmd, c.Duration("lock-wait"))
	}
	ok := false
	defer func() {
		if !ok {
			u.close()
		}
	}()
	if p := c.String("lock"); p != "" {
		start := time.Now()
		l, err := unattended.Acquire(c.Context, p, c.Duration("lock-wait"))
		var held *unattended.HeldError
		switch {
		case errors.As(err, &held):
			return nil, &exitError{code: exitLocked, err: fmt.Errorf("%s: %w", cmd, held)}
		case errors.Is(err, context.Canceled):
			return nil, runtimeError(fmt.Errorf("%s: interrupted while waiting for --lock %s", cmd, p))
		case err != nil:
			return nil, usageError("%s: --lock: %w", cmd, err)
		}
		u.lock = l
		if waited := time.Since(start); waited > 100*time.Millisecond {
			notef(c, "%s: waited %v for --lock %s", cmd, waited.Round(time.Millisecond), p)
		}
	}
	if p := c.String("output"); p != "" {
		f, err := unattended.Create(p)
		if err != nil {
			return nil, usageError("%s: --output: %w", cmd, err)
		}
		u.out = f
		c.App.Writer = f // every format writes through the command's writer
	}
	if p := c.String("store"); p != "" {
		st, err := store.Open(c.Context, p, true)
		if err != nil {
			return nil, usageError("%s: --store: %w", cmd, err)
		}
		u.st = st
		host, _ := os.Hostname()
		u.runID, err = st.BeginRun(c.Context, store.Run{Kind: cmd, Started: time.Now().UTC(), Version: version,
			Proto: c.String("proto"), Port: int(c.Uint("port")), Host: host})
		if err != nil { // a store it may read but not write
			return nil, usageError("%s: --store: %w", cmd, err)
		}
	}
	ok = true
	return u, nil
}

// errEmptyShard ends a run whose --shard holds none of the targets: nothing to probe is
// a success, with an empty --output.
var errEmptyShard = unattended.ErrEmptyShard

// shardOf reads --shard (no sharding for commands without the flag).
func shardOf(c *cli.Context) (unattended.Shard, error) {
	return unattended.ParseShard(c.String("shard"), os.Getenv)
}

// shardNames keeps the targets of this run's shard: before they are resolved, so a
// shard looks up only its own names.
func shardNames(c *cli.Context, names []string) ([]string, error) {
	s, err := shardOf(c)
	if err != nil || s.N == 0 {
		return names, err
	}
	out := s.Select(names)
	notef(c, "%s: shard %s: %d of %d targets", c.Command.Name, s, len(out), len(names))
	if len(out) == 0 {
		return nil, errEmptyShard
	}
	return out, nil
}

// parseAge reads a retention age: a Go duration, or a number of days (d) or weeks (w).
func parseAge(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q: want a positive age like 30d, 2w or 12h", s)
	days := map[string]float64{"d": 1, "w": 7}
	if n := len(s); n > 1 && days[s[n-1:]] > 0 {
		x, err := strconv.ParseFloat(s[:n-1], 64)
		hours := x * 24 * days[s[n-1:]]
		if err != nil || !(hours > 0) || hours > 100*365*24 { // !(>): NaN too
			return 0, bad
		}
		return time.Duration(hours * float64(time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

// exitOf is the exit code err will give.
func exitOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitRuntime
}

// finish ends the run with the command's error: the output is put in place when the run
// finished (exit 0 or 1, or an empty shard) and dropped otherwise; the store records the
// end; the lock goes. A failure here turns a success into exit 3.
func (u *unattendedRun) finish(err error) error {
	defer u.close()
	if errors.Is(err, errEmptyShard) {
		err = nil
	}
	code := exitOf(err)
	if u.out != nil {
		if code == exitOK || code == exitNotReached {
			if cerr := u.out.Commit(); cerr != nil {
				return runtimeError(fmt.Errorf("%s: write --output: %w", u.cmd, cerr))
			}
			notef(u.c, "%s: wrote %s", u.cmd, u.out.Path())
		} else {
			u.out.Abort()
			err = &exitError{code: code, err: fmt.Errorf("%w (--output %s left as it was)", err, u.out.Path())}
		}
	}
	if u.st != nil {
		u.stopRecorder()
		u.flush()
		status := map[int]string{exitOK: store.StatusOK, exitNotReached: store.StatusNotReached}[code]
		if status == "" {
			status = store.StatusFailed
		}
		// The run's end is recorded even when Ctrl-C ended it: its context is done.
		ctx := context.WithoutCancel(u.c.Context)
		if code == exitUsage {
			// Bad flags or targets: no run took place, and the history need not say so.
			u.st.DeleteRun(ctx, u.runID)
			return err
		}
		if ferr := u.st.FinishRun(ctx, u.runID, time.Now().UTC(), status); ferr != nil && u.err == nil {
			u.err = ferr
		}
		if u.keep > 0 && u.err == nil {
			n, perr := u.st.Prune(ctx, time.Now().Add(-u.keep))
			if perr != nil {
				u.err = perr
			} else if n > 0 {
				notef(u.c, "%s: --keep %s: deleted %d runs from %s", u.cmd, u.c.String("keep"), n, u.st.Path())
			}
		}
		if u.err != nil && err == nil {
			return runtimeError(fmt.Errorf("%s: --store: %w", u.cmd, u.err))
		}
		if u.err == nil {
			notef(u.c, "%s: recorded run %d in %s", u.cmd, u.runID, u.st.Path())
		}
	}
	return err
}

// close releases what the run holds (the output, unless committed, is dropped).
func (u *unattendedRun) close() {
	if u.out != nil {
		u.out.Abort()
	}
	if u.st != nil {
		u.st.Close()
		u.st = nil
	}
	u.lock.Release()
}

// describe records what is known once the engine is open: its name and the report's
// options.
func (u *unattendedRun) describe(engine string, options any) {
	if u == nil || u.st == nil {
		return
	}
	b, _ := json.Marshal(options)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err == nil {
		u.err = u.st.UpdateRun(context.WithoutCancel(u.c.Context), u.runID, engine, string(b))
	}
}

// add queues a view for the store, and records a batch when it is full.
func (u *unattendedRun) add(vs ...store.View) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.views = append(u.views, vs...)
	if len(u.views) >= viewBatch {
		u.flushLocked()
	}
}

func (u *unattendedRun) flush() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.flushLocked()
}

func (u *unattendedRun) flushLocked() {
	if u.err == nil && len(u.views) > 0 {
		u.err = u.st.AddViews(context.WithoutCancel(u.c.Context), u.runID, u.views)
	}
	u.views = u.views[:0]
}

// addTrace records one finished trace target.
func (u *unattendedRun) addTrace(info report.TargetInfo, r trace.Result) {
	if u == nil || u.st == nil {
		return
	}
	u.add(store.TraceView(build(info, r, nil)))
}

// addMultipath records a multipath run's targets.
func (u *unattendedRun) addMultipath(run *report.MultipathRun) {
	if u == nil || u.st == nil {
		return
	}
	u.describe(run.Engine, run.Options)
	for _, t := range report.MultipathDocument(run).Targets {
		u.add(store.MultipathView(t, run.Started))
	}
}

// intervalQueue is how many monitor snapshots may wait for the store: the run loop
// never waits for a disk; a store slower than that loses intervals (counted, said at
// the end).
const intervalQueue = 16

// monitorRecorder is what monitor hands its snapshots to for --store: a function that
// records each as one interval, a view per target (nil when the run records nothing,
// so the caller chains it only when set). It returns at once: the writes happen on a
// goroutine of their own, which finish waits for. source gives target i's source
// address. Snapshots share nothing with the run (monitor.Snapshot), so handing them
// over is safe.
func (u *unattendedRun) monitorRecorder(targets *targetList, source func(i int) netip.Addr) func(*monitor.Snapshot) {
	if u == nil || u.st == nil {
		return nil
	}
	u.snaps, u.snapsDone = make(chan *monitor.Snapshot, intervalQueue), make(chan struct{})
	go func() {
		defer close(u.snapsDone)
		seq := 0
		for sn := range u.snaps {
			seq++
			vs := make([]store.View, 0, len(sn.Targets))
			for _, ts := range sn.Targets {
				vs = append(vs, store.MonitorView(ts, sn.Time, seq, targets.name(ts.Index), targets.addrs[ts.Index].String(), source(ts.Index).String()))
			}
			u.add(vs...)
			u.flush() // an open-ended monitor: each interval is on disk before the next
		}
	}()
	return func(sn *monitor.Snapshot) {
		if sn == nil {
			return
		}
		select {
		case u.snaps <- sn:
		default:
			u.mu.Lock()
			u.dropped++
			u.mu.Unlock()
		}
	}
}

// stopRecorder waits for the snapshots handed over to be recorded.
func (u *unattendedRun) stopRecorder() {
	if u.snaps != nil {
		close(u.snaps)
		<-u.snapsDone
		u.snaps = nil
	}
	if u.dropped > 0 {
		warnf(u.c.App.ErrWriter, "%s: --store: %d intervals not recorded (the store was too slow)", u.cmd, u.dropped)
	}
}
