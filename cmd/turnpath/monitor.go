package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
)

func monitorCommand() *cli.Command {
	cmd := &cli.Command{
		Name:      "monitor",
		Usage:     "watch the path to STUN/TURN relays in rounds, like mtr: per-hop statistics, forward vs reply loss, verdict",
		ArgsUsage: "TARGET... (or -f FILE)",
		Description: "Every --interval, probes every TTL of every target's Paris flow once and keeps mtr's per-hop\n" +
			"statistics. Loss is split into forward loss (the path loses the packets: every later hop\n" +
			"and the destination show it too) and reply loss (only the router's own answers are missing:\n" +
			"ICMP rate limiting, harmless to media). Path loss is the destination's own answers' loss.\n" +
			"On a terminal a live view shows one target's hop table updating every round (keys: n/p/tab\n" +
			"target, space pause, r reset, a all responders, d names/addresses, q quit); --report or\n" +
			"--format json prints only the report at the end; jsonl and csv stream every --emit and at the end.\n" +
			"With --cycles it stops after that many rounds, otherwise at Ctrl-C/SIGTERM (or q), and prints the\n" +
			"report. An interface that goes away or down, or a route that moves, is an outage: the run waits\n" +
			"for the way out to come back and goes on. Exit 0 when every target passes the verdict (without\n" +
			"one: was reached), 1 when some does not, 2 for bad input, 3 for runtime errors.",
		Flags: append(probingFlags(),
			&cli.UintFlag{Name: "sport", Value: 50000, Usage: "source port: the flow id; fixed for the whole run (Paris)"},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"i"}, Value: time.Second, Usage: fmt.Sprintf("time between rounds (at least %v)", monitor.MinInterval)},
			&cli.IntFlag{Name: "cycles", Aliases: []string{"c"}, DefaultText: "run until Ctrl-C", Usage: "stop after `N` rounds"},
			&cli.BoolFlag{Name: "report", Usage: "no live view: print a report at the end (the default when stdout is not a terminal)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text, json (schema " + report.MonitorSchema + "), jsonl or csv (a record per target every --emit, and at the end)"},
			&cli.DurationFlag{Name: "emit", Value: 10 * time.Second, Usage: "jsonl and csv: how often each target's statistics so far are written"},
			&cli.StringFlag{Name: "verdict", Value: "auto", Usage: "teams (RTT < 100 ms, path loss < 1 %, jitter < 30 ms), none, or auto: teams for UDP port 3478"},
			&cli.StringFlag{Name: "thresholds", Usage: "override verdict thresholds: rtt=MS,loss=PCT,jitter=MS"},
		),
		Action: unattendedAction("monitor", runMonitor),
	}
	cmd.Flags = append(append(append(cmd.Flags, asnFlags()...), unattendedFlags()...), monitorMetricsFlags()...)
	return cmd
}

type monitorFlags struct {
	probing
	sport  uint16
	opts   monitor.Options
	format string
	emit   time.Duration
	th     *monitor.Thresholds // nil: no verdict
	live   bool                // the live view: stdout a terminal, no --report, text format
}

// maxMonitorTargets is what one run can watch: each target's flow takes a slot of the
// eBPF engine's flow table (mda.MaxEngineTargets).
const maxMonitorTargets = mda.MaxEngineTargets

func parseMonitorFlags(c *cli.Context) (*monitorFlags, error) {
	mf := &monitorFlags{format: c.String("format"), emit: c.Duration("emit")}
	var err error
	if mf.probing, err = parseProbing(c); err != nil {
		return nil, err
	}
	if mf.sport, err = sportFlag(c); err != nil {
		return nil, err
	}
	if c.IsSet("cycles") && c.Int("cycles") <= 0 {
		return nil, fmt.Errorf("--cycles %d: must be at least 1 (leave it out to run until Ctrl-C)", c.Int("cycles"))
	}
	mf.opts = monitor.DefaultOptions()
	mf.opts.FirstTTL, mf.opts.MaxTTL = c.Int("first-ttl"), c.Int("max-ttl")
	mf.opts.Interval, mf.opts.Cycles = c.Duration("interval"), c.Int("cycles")
	mf.opts.Wait, mf.opts.Rate = c.Duration("wait"), c.Float64("rate")
	if mf.opts.Interval < monitor.MinInterval {
		return nil, fmt.Errorf("--interval %v below the minimum %v", mf.opts.Interval, monitor.MinInterval)
	}
	if err := mf.opts.Validate(); err != nil {
		return nil, err
	}
	if !slices.Contains(report.Formats, mf.format) {
		return nil, fmt.Errorf("unknown --format %q (%s)", mf.format, strings.Join(report.Formats, ", "))
	}
	if mf.emit < monitor.MinInterval {
		return nil, fmt.Errorf("--emit %v below the minimum %v", mf.emit, monitor.MinInterval)
	}
	switch v := c.String("verdict"); {
	case v == "teams" || v == "auto" && mf.proto == probe.ProtoUDP && mf.port == 3478:
		th, err := parseThresholds(c.String("thresholds"), monitor.Teams)
		if err != nil {
			return nil, err
		}
		mf.th = &th
	case v == "none" || v == "auto":
		if c.IsSet("thresholds") {
			return nil, fmt.Errorf("--thresholds without a verdict (--verdict teams)")
		}
	default:
		return nil, fmt.Errorf("unknown --verdict %q (teams, none, auto)", v)
	}
	mf.live = !c.Bool("report") && mf.format == "text" && isTerminal(c.App.Writer)
	return mf, nil
}

// parseThresholds reads rtt=MS,loss=PCT,jitter=MS over base.
func parseThresholds(spec string, base monitor.Thresholds) (monitor.Thresholds, error) {
	th := base
	if spec == "" {
		return th, nil
	}
	for kv := range strings.SplitSeq(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return th, fmt.Errorf("--thresholds %q: want key=value pairs (rtt, loss, jitter)", kv)
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x <= 0 || x != x || x > 1e9 {
			return th, fmt.Errorf("--thresholds %s=%s: want a positive number", k, v)
		}
		switch k {
		case "rtt":
			th.RTT = x
		case "loss":
			th.Loss = x
		case "jitter":
			th.Jitter = x
		default:
			return th, fmt.Errorf("--thresholds: unknown key %q (rtt, loss, jitter)", k)
		}
	}
	return th, nil
}

func runMonitor(c *cli.Context, u *unattendedRun) error {
	mf, err := parseMonitorFlags(c)
	if err != nil {
		return usageError("monitor: %w", err)
	}
	ctx := c.Context
	resolved, err := targetsOf(c, "monitor", mf.family)
	if err != nil {
		return err
	}
	targets := compactTargets(resolved)
	if n := len(targets.addrs); n > maxMonitorTargets {
		return usageError("monitor: %d targets: at most %d in one run", n, maxMonitorTargets)
	}
	mm, err := startMetrics(c, targets, mf.th) // --listen, --textfile
	if err != nil {
		return err
	}
	defer mm.close()

	sess, err := session.New(session.Spec{Engine: mf.engine, Proto: mf.proto, Port: mf.port, Payload: mf.payload,
		Timeout: max(2*mf.opts.Wait, 2*time.Second), Numeric: c.Bool("numeric")})
	if err != nil {
		return usageError("monitor: %w", err)
	}
	defer sess.Close()
	if err := openASN(c, "monitor", sess); err != nil {
		return err
	}
	if err := routeAll(ctx, "monitor", sess, targets.addrs); err != nil {
		return err
	}
	config := func() engine.Config {
		cfg := sess.Config(mf.sport)
		cfg.FlowOf = func(i int) (probe.Flow, error) {
			return sess.Flow(sess.RouteOf(i), targets.addrs[i], mf.sport), nil
		}
		return cfg
	}
	eng, err := openEngine(c, "monitor", sess, config())
	if err != nil {
		return err
	}
	eng = mm.engine(eng)
	engName := eng.Name()
	opts := mf.opts
	u.describe(engName, monitorHeader(mf, sess, engName, c.String("proto")).Options)
	source := func(i int) netip.Addr { return sess.RouteOf(i).Src }
	// --store records the statistics every --emit (the live view's snapshots come far
	// more often).
	var record func(*monitor.Snapshot)
	if rec := u.monitorRecorder(targets, source); rec != nil {
		var last time.Time
		record = func(sn *monitor.Snapshot) {
			if last.IsZero() || sn.Time.Sub(last) >= mf.emit {
				last = sn.Time
				rec(sn)
			}
		}
		opts.Snapshot, opts.SnapshotEvery = record, mf.emit
	}
	// An interface that goes and comes back, or a route that moves, is an outage: the run
	// waits for the way out and re-attaches (a live view shows it; otherwise one line on
	// stderr each way).
	note := func(format string, a ...any) {
		if !mf.live {
			warnf(c.App.ErrWriter, "monitor: "+format, a...)
		}
	}
	opts.Check = func() error { return sess.CheckRoutes(targets.addrs) }
	opts.Reopen = func(ctx context.Context, cause error) (trace.Engine, []int, error) {
		if !sess.Recoverable(cause, targets.addrs) {
			return nil, nil, cause
		}
		note("%v: waiting for the way out to come back", sess.Failure(cause))
		start := time.Now()
		neng, moved, err := sess.Reattach(ctx, targets.addrs, config)
		if err == nil {
			engName = neng.Name()
			note("back after %.1f s: %s engine attached again", time.Since(start).Seconds(), engName)
		}
		return mm.engine(neng), moved, err
	}
	opts.Sample = mm.sample()
	var res *monitor.Result
	var runErr error
	var stream *monitorStream
	switch {
	case mf.live:
		info := liveInfo{targets: targets, engine: engName, interval: opts.Interval, source: source, metrics: mm}
		if !c.Bool("numeric") {
			info.resolve = sess.Names
		}
		res, runErr = runMonitorLive(ctx, c.App.Writer, eng, len(targets.addrs), opts, info)
	default:
		prog := newProgress(c.App.ErrWriter, len(targets.addrs))
		opts.Round = func(r int) { prog.line(fmt.Sprintf("round %d", r+1)) }
		if mf.format == "jsonl" || mf.format == "csv" {
			stream = newMonitorStream(c.App.Writer, mf, targets, sess)
			opts.Snapshot, opts.SnapshotEvery, opts.SnapshotEvents = chain(stream.emit, record), mf.emit, true
		}
		mm.apply(&opts)
		res, runErr = monitor.Run(ctx, eng, len(targets.addrs), opts)
		prog.done()
	}
	if record != nil && res != nil {
		record(res.Snapshot()) // the last interval
	}
	if err := mm.finish(res); err != nil && runErr == nil {
		runErr = err
	}
	if res == nil {
		return runtimeError(fmt.Errorf("monitor: %w", runErr))
	}
	// Ctrl-C and SIGTERM are how an open-ended monitor ends: the report follows as usual.
	// An engine that failed (the interface went away) is reported after it.
	if errors.Is(runErr, context.Canceled) {
		runErr = nil
	}
	runErr = sess.Failure(runErr)
	if cerr := sess.Close(); cerr != nil && runErr == nil {
		runErr = fmt.Errorf("close engine: %w", cerr)
	}
	doc := buildMonitorRun(res, mf, targets, sess, engName, c.String("proto"))
	var werr error
	switch mf.format {
	case "json":
		werr = report.WriteMonitorJSON(c.App.Writer, doc)
	case "jsonl", "csv":
		werr = stream.final(doc)
	default:
		werr = report.WriteMonitorText(c.App.Writer, doc)
	}
	if werr == nil && stream != nil {
		werr = stream.err
	}
	if werr != nil {
		return runtimeError(fmt.Errorf("monitor: write output: %w", werr))
	}
	if runErr != nil {
		return runtimeError(fmt.Errorf("monitor: %w", runErr))
	}
	if res.Slipped > 0 && !mf.live && mf.format != "text" {
		warnf(c.App.ErrWriter, "monitor: %d rounds started late: raise --rate (now %g/s) or --interval", res.Slipped, opts.Rate)
	}
	for _, t := range doc.Targets {
		switch {
		case t.Verdict != nil && !t.Verdict.Pass:
			return &exitError{code: exitNotReached, err: errors.New("monitor: not every target passed the verdict")}
		case t.Verdict == nil && !t.Reached:
			return &exitError{code: exitNotReached, err: errors.New("monitor: not every target was reached")}
		}
	}
	return nil
}

// buildMonitorRun is the report of a monitor run: the run's header, and each target
// through report.BuildMonitorTarget with the responders' names (the session's lookup).
func buildMonitorRun(res *monitor.Result, mf *monitorFlags, targets *targetList, sess *session.Session, engName, proto string) *report.MonitorRun {
	run := monitorHeader(mf, sess, engName, proto)
	run.Started, run.Finished, run.Rounds, run.Slipped = res.Started.UTC(), res.Finished.UTC(), res.Rounds, res.Slipped
	run.Outages = report.MonitorOutages(res.Outages)
	snaps := res.TargetSnapshots(true)
	var addrs []netip.Addr
	for i := range snaps {
		for _, h := range snaps[i].Hops {
			for _, r := range h.Responders {
				addrs = append(addrs, r.Addr)
			}
		}
	}
	names := sess.Names(addrs) // and their ASes, with --asn
	for _, ts := range snaps {
		run.Targets = append(run.Targets, report.BuildMonitorTarget(targetInfo(targets, sess, ts.Index), ts, mf.th, names))
	}
	run.ASN = sess.ASNStats()
	return run
}

// monitorHeader is the part of the report that the options and the session make.
func monitorHeader(mf *monitorFlags, sess *session.Session, engName, proto string) *report.MonitorRun {
	o := mf.opts
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	run := &report.MonitorRun{Schema: report.MonitorSchema, Version: version, Engine: engName, EngineReason: sess.Why(),
		Options: report.MonitorOptions{Proto: proto, Port: mf.port, SPort: mf.sport, Payload: mf.payload.String(),
			FirstTTL: o.FirstTTL, MaxTTL: o.MaxTTL, IntervalMS: ms(o.Interval), Cycles: o.Cycles,
			WaitMS: ms(o.Wait), Rate: o.Rate},
		Outages: []report.MonitorOutage{}, Targets: []report.MonitorTarget{}}
	if mf.th != nil {
		run.Thresholds = &report.MonitorThresholds{Name: "teams", RTTMS: mf.th.RTT, LossPct: mf.th.Loss, JitterMS: mf.th.Jitter}
	}
	return run
}

// chain calls every f that is set, in order.
func chain(fs ...func(*monitor.Snapshot)) func(*monitor.Snapshot) {
	return func(sn *monitor.Snapshot) {
		for _, f := range fs {
			if f != nil {
				f(sn)
			}
		}
	}
}

// monitorStream writes `--format jsonl` and `csv`: every --emit a record per target with
// its statistics so far and the path changes since the last one, from the snapshot the
// run loop hands over (so it runs between rounds, never racing them), and the final
// records at the end. Names come from the session's cache; names not known yet are looked
// up in the background and appear in later records.
type monitorStream struct {
	w       io.Writer
	mf      *monitorFlags
	targets *targetList
	sess    *session.Session
	csv     *report.MonitorCSV
	since   time.Time // events up to here were written
	asked   map[netip.Addr]bool
	looking atomic.Bool
	err     error // the first write error: the rest is skipped
}

func newMonitorStream(w io.Writer, mf *monitorFlags, targets *targetList, sess *session.Session) *monitorStream {
	st := &monitorStream{w: w, mf: mf, targets: targets, sess: sess, asked: map[netip.Addr]bool{}}
	if mf.format == "csv" {
		st.csv = report.NewMonitorCSV(w)
	}
	return st
}

func (st *monitorStream) emit(sn *monitor.Snapshot) {
	var names report.Namer
	if st.sess.Resolver != nil {
		names = st.sess.Resolver.Name
		st.lookup(sn)
	}
	for _, ts := range sn.Targets {
		t := report.BuildMonitorTarget(targetInfo(st.targets, st.sess, ts.Index), ts, st.mf.th, names)
		t.Events = slices.DeleteFunc(t.Events, func(e report.MonitorEvent) bool { return !e.Time.After(st.since) })
		st.write(report.MonitorRecord{Schema: report.MonitorSchema, Version: version, Time: sn.Time.UTC(), Rounds: sn.Rounds,
			Outages: sn.Outages, Down: sn.Down != nil, MonitorTarget: t})
	}
	st.since = sn.Time
}

// lookup starts a background name lookup of responders not asked for yet, one at a time.
func (st *monitorStream) lookup(sn *monitor.Snapshot) {
	if st.looking.Load() {
		return
	}
	var addrs []netip.Addr
	for _, ts := range sn.Targets {
		for _, h := range ts.Hops {
			for _, r := range h.Responders {
				if !st.asked[r.Addr] {
					st.asked[r.Addr] = true
					addrs = append(addrs, r.Addr)
				}
			}
		}
	}
	if len(addrs) > 0 {
		st.looking.Store(true)
		go func() {
			defer st.looking.Store(false)
			st.sess.Names(addrs)
		}()
	}
}

func (st *monitorStream) write(rec report.MonitorRecord) {
	if st.err != nil {
		return
	}
	if st.csv != nil {
		st.err = st.csv.Write(rec)
		return
	}
	st.err = report.WriteMonitorRecord(st.w, rec)
}

// final writes the final record of every target (all its events kept, not only the new).
func (st *monitorStream) final(doc *report.MonitorRun) error {
	for _, t := range doc.Targets {
		st.write(report.MonitorRecord{Schema: report.MonitorSchema, Version: version, Time: doc.Finished, Rounds: doc.Rounds,
			Final: true, Outages: len(doc.Outages), MonitorTarget: t})
	}
	return st.err
}
