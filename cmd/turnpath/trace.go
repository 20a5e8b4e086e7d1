package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/turnpath/turnpath/metrics"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func traceCommand() *cli.Command {
	return &cli.Command{
		Name:      "trace",
		Usage:     "trace the path to STUN/TURN relays: all TTLs at once, flow-stable, with the relay's own answer",
		ArgsUsage: "TARGET... (or -f FILE)",
		Description: "Sends Paris-style probes (fixed 5-tuple) for every TTL in parallel and reports each hop,\n" +
			"its RTTs and hints, and how the relay answered. Exit 0 when every target was reached,\n" +
			"1 when some was not, 2 for bad input, 3 for runtime errors (privileges, BPF, no route),\n" +
			"4 when another run holds --lock.",
		Flags: append(append(append(probingFlags(), asnFlags()...),
			&cli.UintFlag{Name: "sport", Value: 50000, Usage: "source port: the flow id; fixed for the whole trace (Paris)"},
			&cli.IntFlag{Name: "queries", Aliases: []string{"q"}, Value: 3, Usage: "probes per hop"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text, json, jsonl or csv; for a scan also dot (the union of interfaces and links, for Graphviz) or svg (the same, drawn)"},
			&cli.BoolFlag{Name: "pmtu", Usage: "discover the path MTU: probes start at --size or the interface's MTU, with DF set, and shrink to what routers report (udp, icmp)"},
			&cli.IntFlag{Name: "size", Usage: "probe size in bytes, IP header included (default: the smallest the payload allows; with --pmtu the interface's MTU)"},
			&cli.BoolFlag{Name: "scan", Usage: "many targets under routers' ICMP limits: probe only what the other targets' probes cannot tell, infer the rest, and say of every hop what it is (answered, inferred, silent, rate-limited, lost). Default: on for " + scanAutoRange + " targets without -q, --pmtu or --size; --scan=false traces each target in full"},
			&cli.DurationFlag{Name: "scan-time", Value: 60 * time.Second, Usage: "with --scan: the longest a scan may take; what is unresolved then is reported as it is"},
			textfileFlag(),
		), unattendedFlags()...),
		Action: unattendedAction("trace", runTrace),
	}
}

type traceFlags struct {
	probing
	sport  uint16
	opts   trace.Options
	format string
	size   int  // --size
	pmtu   bool // --pmtu
	// scan: trace the targets as a scan; scanAuto: chosen for the list's size, not asked for.
	scan, scanAuto bool
}

// A list this long is traced as a scan unless --scan says otherwise: more targets than a
// Linux router's burst of Time Exceeded (6) behind one network already lose hops to its
// limit when every TTL of every target is probed at once. Above the upper bound the scan's
// per-batch inference costs more than it saves; such lists are traced target by target.
const (
	scanAutoMin   = 8
	scanAutoMax   = 4096
	scanAutoRange = "8 to 4096"
)

// unionFormat reports whether format draws a scan's union view (it implies a scan).
func unionFormat(format string) bool { return format == "dot" || format == "svg" }

// chooseScan decides between a scan and full traces for n targets.
func (tf *traceFlags) chooseScan(c *cli.Context, n int) {
	if c.IsSet("scan") {
		tf.scan = c.Bool("scan")
		return
	}
	tf.scan = unionFormat(tf.format) || (n >= scanAutoMin && n <= scanAutoMax && !c.IsSet("queries") && !tf.pmtu && tf.size == 0)
	tf.scanAuto = tf.scan
}

func parseTraceFlags(c *cli.Context) (*traceFlags, error) {
	tf := &traceFlags{format: c.String("format")}
	var err error
	if tf.probing, err = parseProbing(c); err != nil {
		return nil, err
	}
	if tf.sport, err = sportFlag(c); err != nil { // every target's flow uses --sport
		return nil, err
	}
	tf.opts = trace.DefaultOptions()
	tf.opts.FirstTTL, tf.opts.MaxTTL = c.Int("first-ttl"), c.Int("max-ttl")
	tf.opts.Queries, tf.opts.Wait, tf.opts.Rate = c.Int("queries"), c.Duration("wait"), c.Float64("rate")
	if tf.opts.MinWait > tf.opts.Wait {
		tf.opts.MinWait = tf.opts.Wait
	}
	if err := tf.opts.Validate(); err != nil {
		return nil, err
	}
	switch {
	case unionFormat(tf.format) && c.IsSet("scan") && !c.Bool("scan"):
		return nil, fmt.Errorf("--format %s is the union view of a scan: not with --scan=false", tf.format)
	case !unionFormat(tf.format) && !report.ValidFormat(tf.format):
		return nil, fmt.Errorf("unknown --format %q (%s, or a scan's dot or svg)", tf.format, strings.Join(report.Formats, ", "))
	}
	tf.size, tf.pmtu = c.Int("size"), c.Bool("pmtu")
	if tf.size < 0 || tf.size > 65535 {
		return nil, fmt.Errorf("--size %d out of range (bytes of an IP packet)", tf.size)
	}
	if tf.pmtu && tf.proto == probe.ProtoTCP {
		return nil, errors.New("--pmtu needs --proto udp or icmp (a TCP SYN carries no payload to grow)")
	}
	if tf.size > 0 && tf.proto == probe.ProtoTCP {
		return nil, errors.New("--size needs --proto udp or icmp (a TCP SYN carries no payload to grow)")
	}
	tf.opts.PMTU = tf.pmtu
	if c.Bool("scan") || unionFormat(tf.format) {
		switch {
		case tf.pmtu || tf.size > 0:
			return nil, errors.New("--scan does not discover the path MTU (--pmtu, --size): trace the relays for that")
		case c.IsSet("queries"):
			return nil, errors.New("--scan sends one probe per hop at most (--queries is trace's)")
		case c.Duration("scan-time") <= 0:
			return nil, fmt.Errorf("--scan-time %v: must be positive", c.Duration("scan-time"))
		}
	}
	if err := checkTextfileFlag(c, "trace"); err != nil {
		return nil, err
	}
	return tf, nil
}

func runTrace(c *cli.Context, u *unattendedRun) error {
	tf, err := parseTraceFlags(c)
	if err != nil {
		return usageError("trace: %w", err)
	}
	ctx := c.Context
	resolved, err := targetsOf(c, "trace", tf.family)
	if err != nil {
		return err
	}
	targets := compactTargets(resolved)
	tf.chooseScan(c, len(targets.addrs))

	// A reply later than twice the longest wait is of no use to trace: the socket engine
	// need not remember probes longer than that.
	sess, err := session.New(session.Spec{Engine: tf.engine, Proto: tf.proto, Port: tf.port, Payload: tf.payload,
		Timeout: max(2*tf.opts.Wait, 2*time.Second), Numeric: c.Bool("numeric"), Size: tf.size})
	if err != nil {
		return usageError("trace: %w", err)
	}
	defer sess.Close()
	if err := openASN(c, "trace", sess); err != nil {
		return err
	}
	if err := routeAll(ctx, "trace", sess, targets.addrs); err != nil {
		return err
	}
	if tf.scan {
		return scanTrace(c, u, tf, targets, sess)
	}
	cfg := sess.Config(tf.sport)
	cfg.DontFragment = tf.pmtu
	switch {
	case tf.size > 0:
		tf.opts.Size = func(int) int { return tf.size }
	case tf.pmtu:
		tf.opts.Size = sess.MTUOf
	}
	// Flows are made when trace admits a target, and forgotten when it is done.
	cfg.FlowOf = func(i int) (probe.Flow, error) {
		return sess.Flow(sess.RouteOf(i), targets.addrs[i], tf.sport), nil
	}
	eng, err := openEngine(c, "trace", sess, cfg)
	if err != nil {
		return err
	}
	why := sess.Why()

	opts := tf.opts
	prog := newProgress(c.App.ErrWriter, len(targets.addrs))
	opts.Progress = prog.update
	started := time.Now().UTC()
	run := &report.Run{Schema: report.Schema, Version: version, Engine: eng.Name(), EngineReason: why,
		Started: started, Options: report.Options{
			Proto: c.String("proto"), Port: tf.port, SPort: tf.sport, Payload: cfg.Payload.String(),
			FirstTTL: opts.FirstTTL, MaxTTL: opts.MaxTTL, Queries: opts.Queries,
			WaitMS: float64(opts.Wait) / 1e6, Rate: opts.Rate, Size: tf.size, PMTU: tf.pmtu}}
	rep := newTraceReport(c, u, tf, run, targets, sess)
	runErr := trace.Stream(ctx, eng, len(targets.addrs), opts, func(r trace.Result) error {
		if r.Sent == 0 {
			return nil // never probed (the run stopped): counted, not reported
		}
		sess.PrefetchAS(responders(r)) // AS lookups overlap the rest of the run
		return rep.add(r)
	})
	prog.done()
	var werr *writeError
	if errors.As(runErr, &werr) {
		return runtimeError(fmt.Errorf("trace: write output: %w", werr.err))
	}
	// A run the engine ended (the interface went away) is reported like an interrupted
	// one: what finished, then the error. Ask the interfaces before closing the engine.
	runErr = sess.Failure(runErr)
	if cerr := sess.Close(); cerr != nil && runErr == nil {
		runErr = fmt.Errorf("close engine: %w", cerr)
	}
	if err := rep.finish(); err != nil {
		return err
	}
	return rep.end(runErr)
}

// traceReport is where both ways of tracing (full traces, a scan) put each finished
// target: the --textfile metrics, the unattended records and the output. It counts the
// targets it reported and those reached, for the run's exit.
type traceReport struct {
	c                 *cli.Context
	u                 *unattendedRun
	run               *report.Run
	out               *traceOutput
	info              func(int) report.TargetInfo
	textfile          *metrics.Trace
	total             int
	reported, reached int
}

// newTraceReport starts the report of run (its engine and options set) over targets.
func newTraceReport(c *cli.Context, u *unattendedRun, tf *traceFlags, run *report.Run, targets *targetList, sess *session.Session) *traceReport {
	out := newTraceOutput(c.App.Writer, tf.format, run, sess.Names)
	run.ASN = sess.ASNStats()
	if out.csv != nil {
		out.csv.AS = sess.AS != nil // the AS columns
	}
	u.describe(run.Engine, run.Options)
	k := &traceReport{c: c, u: u, run: run, out: out, total: len(targets.addrs),
		info: func(i int) report.TargetInfo { return targetInfo(targets, sess, i) }}
	if c.String("textfile") != "" {
		k.textfile = metrics.NewTrace(version, run.Engine)
	}
	return k
}

// add reports one probed target.
func (k *traceReport) add(r trace.Result) error {
	k.reported++
	if r.Reached {
		k.reached++
	}
	info := k.info(r.Target)
	if k.textfile != nil {
		k.textfile.Add(info, &r)
	}
	k.u.addTrace(info, r)
	return k.out.add(info, r)
}

// finish writes what waits for the end of the run: the one-document formats and the
// --textfile.
func (k *traceReport) finish() error {
	k.run.Finished = time.Now().UTC()
	if err := k.out.finish(k.info); err != nil {
		return runtimeError(fmt.Errorf("trace: write output: %w", err))
	}
	if k.textfile != nil {
		if err := k.textfile.Write(k.c.String("textfile"), k.run.Started, k.run.Finished); err != nil {
			return runtimeError(fmt.Errorf("trace: %w", err))
		}
	}
	return nil
}

// end is the run's outcome: runErr (an interrupt, the engine's failure) with the targets
// never probed counted, else whether every target was reached.
func (k *traceReport) end(runErr error) error {
	if runErr != nil {
		msg := "interrupted"
		if !errors.Is(runErr, context.Canceled) {
			msg = runErr.Error()
		}
		if note := notProbedNote(k.total-k.reported, k.total); note != "" {
			msg += ": " + note
		}
		return runtimeError(errors.New("trace: " + msg))
	}
	if k.reached < k.total {
		return &exitError{code: exitNotReached, err: errors.New("trace: not every target was reached")}
	}
	return nil
}

// interruptedEarly is Ctrl-C before the first probe: nothing to report but that.
func interruptedEarly(cmd string, n int) error {
	return runtimeError(fmt.Errorf("%s: interrupted before the first probe: %s", cmd, notProbedNote(n, n)))
}

// traceOutput writes the report. jsonl and csv are streamed: each target is written (and
// flushed) when it finishes, in the order targets finish, and then forgotten, so memory
// does not grow with the target list. text and json are one document in target order:
// they keep every target's report until the end (and look PTR names up in one batch).
type traceOutput struct {
	w       io.Writer
	format  string
	run     *report.Run
	names   func([]netip.Addr) func(netip.Addr) string // the session's enrichment step
	csv     *report.CSV
	pending []*trace.Result // text, json: by target (nil: not finished)
}

// writeError marks a failure to write the output, as opposed to a tracing error.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

func newTraceOutput(w io.Writer, format string, run *report.Run, names func([]netip.Addr) func(netip.Addr) string) *traceOutput {
	o := &traceOutput{w: w, format: format, run: run, names: names}
	if format == "csv" {
		o.csv = report.NewCSV(w)
		o.csv.PMTU = run.Options.PMTU
	}
	return o
}

func (o *traceOutput) streamed() bool { return o.format == "jsonl" || o.format == "csv" }

// build is one target's report; a target the run stopped in the middle of says so.
func build(info report.TargetInfo, r trace.Result, names report.Namer) report.Target {
	t := report.Build(info, r, names)
	t.Started, t.Finished = t.Started.UTC(), t.Finished.UTC() // cron jobs' records compare across hosts
	if r.Unfinished {
		if !t.Reached {
			t.How = "interrupted before the destination answered"
		} else {
			t.Notes = append(t.Notes, "interrupted: not every probe was sent or waited for")
		}
	}
	return t
}

// add takes one finished target.
func (o *traceOutput) add(info report.TargetInfo, r trace.Result) error {
	if !o.streamed() {
		if o.pending == nil {
			o.pending = []*trace.Result{}
		}
		for len(o.pending) <= r.Target {
			o.pending = append(o.pending, nil)
		}
		o.pending[r.Target] = &r
		return nil
	}
	t := build(info, r, o.namer([]trace.Result{r}))
	var err error
	if o.csv != nil {
		err = o.csv.Write(t)
	} else {
		err = report.WriteJSONLine(o.w, o.run, t)
	}
	if err != nil {
		return &writeError{err}
	}
	return nil
}

// namer looks up the PTR names of the responders in rs (nil with -n).
func (o *traceOutput) namer(rs []trace.Result) report.Namer {
	var addrs []netip.Addr
	for _, r := range rs {
		for _, h := range r.Hops {
			for _, rep := range h.Replies {
				if rep != nil {
					addrs = append(addrs, rep.From)
				}
			}
			addrs = append(addrs, h.Candidates...) // a scan's inferred hops
		}
	}
	return o.names(addrs)
}

// finish writes text and json: the targets reported, in list order. Targets an
// interrupted run never probed are not among them (the caller counts them).
func (o *traceOutput) finish(info func(int) report.TargetInfo) error {
	if o.streamed() {
		return nil
	}
	var results []trace.Result
	for _, r := range o.pending {
		if r != nil {
			results = append(results, *r)
		}
	}
	o.pending = nil
	namer := o.namer(results)
	o.run.Targets = []report.Target{}
	for _, r := range results {
		o.run.Targets = append(o.run.Targets, build(info(r.Target), r, namer))
	}
	return writeRun(o.w, o.format, o.run)
}

func writeRun(w io.Writer, format string, run *report.Run) error {
	switch format {
	case "json":
		return report.WriteJSON(w, run)
	case "dot":
		return report.WriteScanDOT(w, run)
	case "svg":
		return report.WriteScanSVG(w, run)
	case "csv":
		c := report.NewCSV(w)
		c.PMTU = run.Options.PMTU
		for _, t := range run.Targets {
			if err := c.Write(t); err != nil {
				return err
			}
		}
		return nil
	}
	for i, t := range run.Targets {
		var err error
		if format == "jsonl" {
			err = report.WriteJSONLine(w, run, t)
		} else {
			if i > 0 {
				fmt.Fprintln(w)
			}
			err = report.WriteText(w, run, t)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func dedupe(ts []target) []target {
	seen := map[netip.Addr]bool{}
	out := ts[:0]
	for _, t := range ts {
		if !seen[t.Addr] {
			seen[t.Addr] = true
			out = append(out, t)
		}
	}
	return out
}

// targetList is the resolved target list, compact for long lists: an address per
// target, and a name only where the user wrote something else (a host name, another
// spelling of the address).
type targetList struct {
	addrs []netip.Addr
	names map[int]string
}

func (l *targetList) name(i int) string {
	if n, ok := l.names[i]; ok {
		return n
	}
	return l.addrs[i].String()
}

// compactTargets drops repeated addresses (the first one stays) without a map over the
// whole list: the indexes are sorted by address instead.
func compactTargets(ts []target) *targetList {
	idx := make([]int32, len(ts))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int { return ts[a].Addr.Compare(ts[b].Addr) })
	dup := make([]bool, len(ts))
	for k := 1; k < len(idx); k++ {
		if ts[idx[k]].Addr == ts[idx[k-1]].Addr {
			dup[idx[k]] = true
		}
	}
	l := &targetList{names: map[int]string{}}
	for i, t := range ts {
		if dup[i] {
			continue
		}
		if t.Name != t.Addr.String() {
			l.names[len(l.addrs)] = t.Name
		}
		l.addrs = append(l.addrs, t.Addr)
	}
	return l
}

// progress shows a one-line counter on a terminal and nothing otherwise (cron, pipes).
type progress struct {
	w     io.Writer
	tty   bool
	last  time.Time
	shown bool
}

func newProgress(w io.Writer, n int) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) update(s trace.Progress) {
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.shown = true
	fmt.Fprintf(p.w, "\r\033[Kprobes sent %d, answered %d, targets reached %d/%d", s.Sent, s.Answered, s.Reached, s.Targets)
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
