package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/scan"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
)

// trace --scan: many targets under routers' ICMP limits (package scan). Each target keeps
// its one Paris flow (--sport); the scan probes what only a probe can tell and infers the
// rest from the other targets' probes, and every hop says what it is. The report is
// trace's, with each hop's status and the union of what all targets found.

// scanTrace runs the scan over the routed targets and writes trace's report.
func scanTrace(c *cli.Context, u *unattendedRun, tf *traceFlags, targets *targetList, sess *session.Session) error {
	ctx := c.Context
	layout, err := mda.NewLayout(len(targets.addrs), tf.sport, 1)
	if err != nil {
		return usageError("trace: %w", err)
	}
	tmpl := make([]probe.Flow, len(targets.addrs))
	for i, a := range targets.addrs {
		tmpl[i] = sess.Flow(sess.RouteOf(i), a, tf.sport)
	}
	cfg := sess.Config(tf.sport)
	cfg.Shape, cfg.Flows = nil, layout.EngineFlows(tmpl)
	eng, err := openEngine(c, "trace", sess, cfg)
	if err != nil {
		return err
	}
	why := sess.Why()
	popts := mda.DefaultProberOptions()
	popts.Wait, popts.Rate = tf.opts.Wait, tf.opts.Rate
	prober, err := mda.NewEngineProber(eng, layout, targets.addrs, popts)
	if err != nil {
		return runtimeError(fmt.Errorf("trace: %w", err))
	}
	opt := scan.DefaultOptions()
	opt.FirstTTL, opt.MaxTTL, opt.Flow = tf.opts.FirstTTL, tf.opts.MaxTTL, tf.sport
	opt.MaxTime = c.Duration("scan-time")
	if tf.opts.Rate > 0 {
		opt.MaxBatch = max(int(tf.opts.Rate), 16) // a second's worth
	}
	prog := newProgress(c.App.ErrWriter, len(targets.addrs))
	opt.Progress = func(p scan.Progress) {
		prog.update(trace.Progress{Sent: p.Probes, Reached: p.Resolved, Targets: p.Targets})
	}
	started := time.Now().UTC()
	res, runErr := scan.Run(ctx, prober, targets.addrs, opt)
	prog.done()
	prober.Close()
	runErr = sess.Failure(runErr)
	if cerr := sess.Close(); cerr != nil && runErr == nil {
		runErr = fmt.Errorf("close engine: %w", cerr)
	}
	if res == nil {
		return runtimeError(fmt.Errorf("trace: %w", runErr))
	}
	run := &report.Run{Schema: report.Schema, Version: version, Engine: eng.Name(), EngineReason: why,
		Started: started, Options: report.Options{
			Proto: c.String("proto"), Port: tf.port, SPort: tf.sport, Payload: cfg.Payload.String(),
			FirstTTL: opt.FirstTTL, MaxTTL: opt.MaxTTL, Queries: 1,
			WaitMS: float64(tf.opts.Wait) / 1e6, Rate: tf.opts.Rate}}
	run.Scan = scanSummary(res)
	run.Scan.Auto = tf.scanAuto
	rep := newTraceReport(c, u, tf, run, targets, sess)
	for _, t := range res.Targets {
		if t.Probes == 0 && runErr != nil {
			continue // never probed (the run stopped): counted, not reported
		}
		if err := rep.add(traceResultOf(t, targets.addrs, started, started.Add(res.Duration))); err != nil {
			return runtimeError(fmt.Errorf("trace: write output: %w", err))
		}
	}
	if err := rep.finish(); err != nil {
		return err
	}
	if tf.format == "text" {
		how := ""
		if tf.scanAuto {
			how = fmt.Sprintf(" (a scan for %s targets; --scan=false traces each in full)", scanAutoRange)
		}
		fmt.Fprintf(c.App.Writer, "scan: %d targets, %d probes (%.1f a target) in %.1f s; %d interfaces, %d links found%s%s\n",
			len(res.Targets), res.Probes, float64(res.Probes)/float64(max(len(res.Targets), 1)), res.Duration.Seconds(),
			len(res.Interfaces), len(res.Links), limitedNote(res), how)
	}
	return rep.end(runErr)
}

// traceResultOf is a scanned target as trace's result: one probe per hop, answered where
// this target's probe was, and the status of the others.
func traceResultOf(t scan.Target, addrs []netip.Addr, start, end time.Time) trace.Result {
	r := trace.Result{Target: t.Index, Reached: t.Reached, DestTTL: t.DestTTL, Sent: t.Probes, Start: start, End: end}
	for _, h := range t.Hops {
		th := trace.Hop{TTL: h.TTL, Replies: []*trace.Reply{nil}, Status: string(h.Status)}
		switch h.Status {
		case scan.Answered:
			th.Replies[0] = &trace.Reply{Probe: trace.Probe{Target: t.Index, TTL: uint8(h.TTL)}, From: h.Addr, RTT: h.RTT, Kind: h.Kind}
		case scan.Inferred:
			th.Candidates = h.Candidates
			if h.Addr.IsValid() {
				th.Candidates = []netip.Addr{h.Addr}
			}
			for _, i := range h.From {
				th.From = append(th.From, addrs[i])
			}
		}
		r.Hops = append(r.Hops, th)
	}
	if t.Reached {
		kind := t.DestKind
		if kind == probe.KindUnknown {
			kind = probe.KindSTUN
		}
		r.Hops = append(r.Hops, trace.Hop{TTL: t.DestTTL, Status: string(scan.Answered), Replies: []*trace.Reply{{
			Probe: trace.Probe{Target: t.Index, TTL: uint8(t.DestTTL)}, From: addrs[t.Index], RTT: t.DestRTT, Kind: kind}}})
	}
	return r
}

// scanSummary is the union view for the report.
func scanSummary(res *scan.Result) *report.ScanSummary {
	s := &report.ScanSummary{Probes: res.Probes, Batches: res.Batches, DurationMS: float64(res.Duration) / 1e6,
		Interfaces: []string{}, Links: []report.ScanLink{}, Responders: []report.ScanResponder{}}
	for _, a := range res.Interfaces {
		s.Interfaces = append(s.Interfaces, a.String())
	}
	str := func(a netip.Addr) string {
		if !a.IsValid() {
			return "*"
		}
		return a.String()
	}
	for _, l := range res.Links {
		s.Links = append(s.Links, report.ScanLink{From: str(l.From), To: str(l.To)})
	}
	for _, r := range res.Responders {
		s.Responders = append(s.Responders, report.ScanResponder{Addr: r.Addr.String(), Answers: r.Answers,
			RateLimited: r.Limited, Burst: r.Burst, RatePerSec: r.Rate})
	}
	return s
}

// limitedNote names the rate-limited routers for the text summary.
func limitedNote(res *scan.Result) string {
	n := 0
	for _, r := range res.Responders {
		if r.Limited {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d routers rate-limit their answers (JSON: scan.responders)", n)
}
