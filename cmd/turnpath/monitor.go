package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/session"
	"github.com/urfave/cli/v2"
)

func monitorCommand() *cli.Command {
	return &cli.Command{
		Name:      "monitor",
		Usage:     "watch the path to STUN/TURN relays in rounds, like mtr: per-hop statistics, forward vs reply loss, verdict",
		ArgsUsage: "TARGET... (or -f FILE)",
		Description: "Every --interval, probes every TTL of every target's Paris flow once and keeps mtr's per-hop\n" +
			"statistics. Loss is split into forward loss (the path loses the packets: every later hop\n" +
			"and the destination show it too) and reply loss (only the router's own answers are missing:\n" +
			"ICMP rate limiting, harmless to media). Path loss is the destination's own answers' loss.\n" +
			"On a terminal a live view shows one target's hop table updating every round (keys: n/p/tab\n" +
			"target, space pause, r reset, a all responders, d names/addresses, q quit); --report or\n" +
			"--format json prints only the report at the end.\n" +
			"With --cycles it stops after that many rounds, otherwise at Ctrl-C/SIGTERM (or q), and prints the\n" +
			"report. Exit 0 when every target passes the verdict, 1 when some fails, 2 for bad input,\n" +
			"3 for runtime errors.",
		Flags: append(probingFlags(),
			&cli.UintFlag{Name: "sport", Value: 50000, Usage: "source port: the flow id; fixed for the whole run (Paris)"},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"i"}, Value: time.Second, Usage: fmt.Sprintf("time between rounds (at least %v)", monitor.MinInterval)},
			&cli.IntFlag{Name: "cycles", Aliases: []string{"c"}, DefaultText: "run until Ctrl-C", Usage: "stop after `N` rounds"},
			&cli.BoolFlag{Name: "report", Usage: "no live view: print a report at the end (the default when stdout is not a terminal)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json (schema " + report.MonitorSchema + ")"},
			&cli.StringFlag{Name: "verdict", Value: "teams", Usage: "thresholds of the verdict: teams (RTT < 100 ms, path loss < 1 %, jitter < 30 ms)"},
			&cli.StringFlag{Name: "thresholds", Usage: "override verdict thresholds: rtt=MS,loss=PCT,jitter=MS"},
		),
		Action: runMonitor,
	}
}

type monitorFlags struct {
	probing
	sport  uint16
	opts   monitor.Options
	format string
	th     monitor.Thresholds
	live   bool // the live view: stdout a terminal, no --report, text format
}

func parseMonitorFlags(c *cli.Context) (*monitorFlags, error) {
	mf := &monitorFlags{format: c.String("format")}
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
	if mf.format != "text" && mf.format != "json" {
		return nil, fmt.Errorf("unknown --format %q (text, json)", mf.format)
	}
	if c.String("verdict") != "teams" {
		return nil, fmt.Errorf("unknown --verdict %q (teams)", c.String("verdict"))
	}
	if mf.th, err = parseThresholds(c.String("thresholds"), monitor.Teams); err != nil {
		return nil, err
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

func runMonitor(c *cli.Context) error {
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

	sess, err := session.New(session.Spec{Engine: mf.engine, Proto: mf.proto, Port: mf.port, Payload: mf.payload,
		Timeout: max(2*mf.opts.Wait, 2*time.Second), Numeric: c.Bool("numeric")})
	if err != nil {
		return usageError("monitor: %w", err)
	}
	defer sess.Close()
	if err := routeAll(ctx, "monitor", sess, targets.addrs); err != nil {
		return err
	}
	cfg := sess.Config(mf.sport)
	cfg.FlowOf = func(i int) (probe.Flow, error) {
		return sess.Flow(sess.RouteOf(i), targets.addrs[i], mf.sport), nil
	}
	eng, err := sess.Open(cfg)
	if err != nil {
		return runtimeError(fmt.Errorf("monitor: %w", err))
	}
	why := sess.Why()
	if sess.FellBack() {
		fmt.Fprintf(c.App.ErrWriter, "turnpath: using the socket engine: %s\n", why)
	}
	var res *monitor.Result
	var runErr error
	if mf.live {
		info := liveInfo{targets: targets, engine: eng.Name(), interval: mf.opts.Interval,
			source: func(i int) netip.Addr { return sess.RouteOf(i).Src }}
		if !c.Bool("numeric") {
			info.resolve = sess.Names
		}
		res, runErr = runMonitorLive(ctx, c.App.Writer, eng, len(targets.addrs), mf.opts, info)
	} else {
		prog := newProgress(c.App.ErrWriter, len(targets.addrs))
		opts := mf.opts
		opts.Round = func(r int) { prog.line(fmt.Sprintf("round %d", r+1)) }
		res, runErr = monitor.Run(ctx, eng, len(targets.addrs), opts)
		prog.done()
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
	doc := buildMonitorRun(res, mf, targets, sess, eng.Name(), why, c.String("proto"))
	var werr error
	if mf.format == "json" {
		werr = report.WriteMonitorJSON(c.App.Writer, doc)
	} else {
		werr = report.WriteMonitorText(c.App.Writer, doc)
	}
	if werr != nil {
		return runtimeError(fmt.Errorf("monitor: write output: %w", werr))
	}
	if runErr != nil {
		return runtimeError(fmt.Errorf("monitor: %w", runErr))
	}
	for _, t := range doc.Targets {
		if !t.Verdict.Pass {
			return &exitError{code: exitNotReached, err: errors.New("monitor: not every target passed the verdict")}
		}
	}
	return nil
}

// buildMonitorRun is the report of a monitor run: the run's header, and each target
// through report.BuildMonitorTarget with the responders' names (the session's lookup).
func buildMonitorRun(res *monitor.Result, mf *monitorFlags, targets *targetList, sess *session.Session, engName, why, proto string) *report.MonitorRun {
	o := mf.opts
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	run := &report.MonitorRun{Schema: report.MonitorSchema, Version: version, Engine: engName, EngineReason: why,
		Started: res.Started.UTC(), Finished: res.Finished.UTC(), Rounds: res.Rounds,
		Options: report.MonitorOptions{Proto: proto, Port: mf.port, SPort: mf.sport, Payload: mf.payload.String(),
			FirstTTL: o.FirstTTL, MaxTTL: o.MaxTTL, IntervalMS: ms(o.Interval), Cycles: o.Cycles,
			WaitMS: ms(o.Wait), Rate: o.Rate},
		Thresholds: report.MonitorThresholds{Name: "teams", RTTMS: mf.th.RTT, LossPct: mf.th.Loss, JitterMS: mf.th.Jitter},
		Targets:    []report.MonitorTarget{}}
	var addrs []netip.Addr
	for _, t := range res.Targets {
		for _, h := range t.Path() {
			for _, r := range h.Responders() {
				addrs = append(addrs, r.Addr)
			}
		}
	}
	names := sess.Names(addrs)
	for _, t := range res.Targets {
		info := report.TargetInfo{Name: targets.name(t.Index), Addr: targets.addrs[t.Index], Source: sess.RouteOf(t.Index).Src}
		run.Targets = append(run.Targets, report.BuildMonitorTarget(info, t, mf.th, names))
	}
	return run
}
