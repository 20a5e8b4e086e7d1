package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/session"
	"github.com/urfave/cli/v2"
)

// monitorSchema names the JSON document of `monitor --format json`.
const monitorSchema = "turnpath.monitor/v1"

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
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json (schema " + monitorSchema + ")"},
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
	if err := checkRate(mf.opts.Rate); err != nil {
		return nil, err
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
	doc := buildMonitorDoc(res, mf, targets, sess, eng.Name(), why, c.String("proto"))
	var werr error
	if mf.format == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		werr = enc.Encode(doc)
	} else {
		werr = writeMonitorText(c.App.Writer, doc)
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

// monitorDoc is the turnpath.monitor/v1 document; the text report prints the same.
type monitorDoc struct {
	Schema       string             `json:"schema"`
	Version      string             `json:"version"`
	Engine       string             `json:"engine"`
	EngineReason string             `json:"engine_reason,omitempty"`
	Started      time.Time          `json:"started"`
	Finished     time.Time          `json:"finished"`
	Rounds       int                `json:"rounds"`
	Options      monitorOptionsDoc  `json:"options"`
	Thresholds   monitorThreshDoc   `json:"thresholds"`
	Targets      []monitorTargetDoc `json:"targets"`
}

type monitorOptionsDoc struct {
	Proto      string  `json:"proto"`
	Port       uint16  `json:"port"`
	SPort      uint16  `json:"sport"`
	Payload    string  `json:"payload"`
	FirstTTL   int     `json:"first_ttl"`
	MaxTTL     int     `json:"max_ttl"`
	IntervalMS float64 `json:"interval_ms"`
	Cycles     int     `json:"cycles"`
	WaitMS     float64 `json:"wait_ms"`
	Rate       float64 `json:"rate"`
}

type monitorThreshDoc struct {
	Name     string  `json:"name"`
	RTTMS    float64 `json:"rtt_ms"`
	LossPct  float64 `json:"loss_pct"`
	JitterMS float64 `json:"jitter_ms"`
}

type monitorTargetDoc struct {
	Target  string     `json:"target"`
	Addr    netip.Addr `json:"addr"`
	Source  netip.Addr `json:"source"`
	Reached bool       `json:"reached"`
	DestTTL int        `json:"dest_ttl,omitempty"`
	// PathLoss is null while the destination never answered: unknown, not 100 %.
	PathLoss   *float64          `json:"path_loss_pct"`
	Verdict    monitorVerdictDoc `json:"verdict"`
	Late       int               `json:"late_replies"`
	Duplicates int               `json:"duplicate_replies"`
	Events     []monitorEventDoc `json:"events"`
	Hops       []monitorHopDoc   `json:"hops"`
}

type monitorVerdictDoc struct {
	Pass     bool     `json:"pass"`
	Reasons  []string `json:"reasons"`
	FirstTTL int      `json:"first_ttl,omitempty"`
}

type monitorEventDoc struct {
	Time   time.Time   `json:"time"`
	Round  int         `json:"round"`
	Kind   string      `json:"kind"`
	TTL    int         `json:"ttl"`
	From   *netip.Addr `json:"from,omitempty"`
	OldTTL int         `json:"old_ttl,omitempty"`
}

type monitorHopDoc struct {
	TTL        int                   `json:"ttl"`
	Sent       int                   `json:"sent"`
	Received   int                   `json:"received"`
	Silent     bool                  `json:"silent"`
	Loss       float64               `json:"loss_pct"`
	Forward    float64               `json:"forward_loss_pct"`
	Reply      float64               `json:"reply_loss_pct"`
	Last       float64               `json:"last_ms"`
	Avg        float64               `json:"avg_ms"`
	Best       float64               `json:"best_ms"`
	Worst      float64               `json:"worst_ms"`
	StdDev     float64               `json:"stdev_ms"`
	Gmean      float64               `json:"gmean_ms"`
	Jitter     float64               `json:"jitter_ms"`
	JitterMean float64               `json:"jitter_avg_ms"`
	JitterMax  float64               `json:"jitter_max_ms"`
	Interarr   float64               `json:"interarrival_jitter_ms"` // RFC 3550's J, not mtr's 16·J
	Responders []monitorResponderDoc `json:"responders"`
}

type monitorResponderDoc struct {
	Addr  netip.Addr `json:"addr"`
	Name  string     `json:"name,omitempty"`
	Count int        `json:"count"`
	Share float64    `json:"share"`
}

func buildMonitorDoc(res *monitor.Result, mf *monitorFlags, targets *targetList, sess *session.Session, engName, why, proto string) *monitorDoc {
	o := mf.opts
	doc := &monitorDoc{Schema: monitorSchema, Version: version, Engine: engName, EngineReason: why,
		Started: res.Started.UTC(), Finished: res.Finished.UTC(), Rounds: res.Rounds,
		Options: monitorOptionsDoc{Proto: proto, Port: mf.port, SPort: mf.sport, Payload: mf.payload.String(),
			FirstTTL: o.FirstTTL, MaxTTL: o.MaxTTL, IntervalMS: ms(o.Interval), Cycles: o.Cycles,
			WaitMS: ms(o.Wait), Rate: o.Rate},
		Thresholds: monitorThreshDoc{Name: "teams", RTTMS: mf.th.RTT, LossPct: mf.th.Loss, JitterMS: mf.th.Jitter},
		Targets:    []monitorTargetDoc{}}
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
		td := monitorTargetDoc{Target: targets.name(t.Index), Addr: targets.addrs[t.Index],
			Source: sess.RouteOf(t.Index).Src, Reached: t.Reached(), DestTTL: t.DestTTL,
			Late: t.Late, Duplicates: t.Dups, Events: []monitorEventDoc{}, Hops: []monitorHopDoc{}}
		if pl, ok := t.PathLoss(); ok {
			td.PathLoss = &pl
		}
		v := t.Judge(mf.th)
		td.Verdict = monitorVerdictDoc{Pass: v.Pass, Reasons: v.Reasons, FirstTTL: v.FirstTTL}
		if td.Verdict.Reasons == nil {
			td.Verdict.Reasons = []string{}
		}
		for _, e := range t.Events {
			ed := monitorEventDoc{Time: e.Time.UTC(), Round: e.Round, Kind: string(e.Kind), TTL: e.TTL, OldTTL: e.OldTTL}
			if e.From.IsValid() {
				ed.From = &e.From
			}
			td.Events = append(td.Events, ed)
		}
		losses := t.Losses()
		for k, h := range t.Path() {
			hl := losses[k]
			hd := monitorHopDoc{TTL: h.TTL, Sent: h.Sent(), Received: h.Received(), Silent: hl.Silent,
				Loss: hl.Loss, Forward: hl.Forward, Reply: hl.Reply, Last: h.Last(), Avg: h.Mean(),
				Best: h.Best(), Worst: h.Worst(), StdDev: h.StdDev(), Gmean: h.Gmean(), Jitter: h.Jitter(),
				JitterMean: h.JitterMean(), JitterMax: h.JitterMax(), Interarr: h.Interarrival(),
				Responders: []monitorResponderDoc{}}
			for _, r := range h.Responders() {
				rd := monitorResponderDoc{Addr: r.Addr, Count: r.Count, Share: r.Share}
				if names != nil {
					rd.Name = names(r.Addr)
				}
				hd.Responders = append(hd.Responders, rd)
			}
			td.Hops = append(td.Hops, hd)
		}
		doc.Targets = append(doc.Targets, td)
	}
	return doc
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// writeMonitorText prints an mtr --report-style table per target, with the loss split
// into forward (Fwd%) and reply (Rpl%) loss, and the verdict.
func writeMonitorText(w io.Writer, doc *monitorDoc) error {
	var b strings.Builder
	for i, t := range doc.Targets {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "turnpath monitor to %s (%s) from %s, %d rounds every %gms, engine %s\n",
			t.Target, t.Addr, t.Source, doc.Rounds, doc.Options.IntervalMS, doc.Engine)
		hostOf := func(h monitorHopDoc, r monitorResponderDoc) string {
			host := r.Addr.String()
			if r.Name != "" {
				host = r.Name + " (" + host + ")"
			}
			if len(h.Responders) > 1 {
				host += fmt.Sprintf(" %.0f%%", 100*r.Share)
			}
			return host
		}
		// The host column is as wide as its longest entry, so names keep the columns
		// aligned (mtr cuts them instead).
		w := 40
		for _, h := range t.Hops {
			for _, r := range h.Responders {
				w = max(w, len(hostOf(h, r)))
			}
		}
		fmt.Fprintf(&b, "%-4s %-*s %6s %6s %6s %5s %7s %7s %7s %7s %7s %7s\n",
			"TTL", w, "Host", "Loss%", "Fwd%", "Rpl%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev", "Javg")
		for _, h := range t.Hops {
			if h.Silent {
				fmt.Fprintf(&b, "%3d. %-*s %6s %6s %6s %5d\n", h.TTL, w, "???", "silent", "-", "-", h.Sent)
				continue
			}
			for k, r := range h.Responders {
				host := hostOf(h, r)
				if k > 0 {
					fmt.Fprintf(&b, "     %s\n", host)
					continue
				}
				fmt.Fprintf(&b, "%3d. %-*s %6.1f %6.1f %6.1f %5d %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f\n",
					h.TTL, w, host, h.Loss, h.Forward, h.Reply, h.Sent, h.Last, h.Avg, h.Best, h.Worst, h.StdDev, h.JitterMean)
			}
		}
		switch {
		case t.PathLoss != nil:
			fmt.Fprintf(&b, "path loss %.1f%% (the destination's own answers)\n", *t.PathLoss)
		default:
			b.WriteString("path loss unknown: the destination did not answer\n")
		}
		for _, e := range t.Events {
			switch e.Kind {
			case string(monitor.NewResponder):
				fmt.Fprintf(&b, "event %s round %d: new responder %s at TTL %d\n", e.Time.Format(time.RFC3339), e.Round, e.From, e.TTL)
			default:
				fmt.Fprintf(&b, "event %s round %d: destination distance %d, was %d\n", e.Time.Format(time.RFC3339), e.Round, e.TTL, e.OldTTL)
			}
		}
		th := doc.Thresholds
		limits := fmt.Sprintf("%s: RTT < %g ms, path loss < %g %%, jitter < %g ms", th.Name, th.RTTMS, th.LossPct, th.JitterMS)
		if t.Verdict.Pass {
			fmt.Fprintf(&b, "verdict: pass (%s)\n", limits)
			continue
		}
		fmt.Fprintf(&b, "verdict: FAIL: %s (%s)", strings.Join(t.Verdict.Reasons, "; "), limits)
		if t.Verdict.FirstTTL > 0 {
			fmt.Fprintf(&b, "; first appears at TTL %d", t.Verdict.FirstTTL)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
