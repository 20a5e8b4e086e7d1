package main

import (
	"context"
	"fmt"
	"time"

	"github.com/turnpath/turnpath/metrics"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
)

// Prometheus for monitor: --listen serves /metrics while the rounds go on, --textfile
// writes node_exporter's textfile at the end (package metrics has the names).

// textfileFlag is --textfile, for trace, multipath and monitor.
func textfileFlag() cli.Flag {
	return &cli.StringFlag{Name: "textfile", Usage: "write node_exporter textfile metrics at the end of the run, atomically, to " +
		"`DIR`/turnpath_<command>.prom (or to DIR itself when it ends in .prom)"}
}

// checkTextfileFlag reports an unwritable --textfile before the run probes anything.
func checkTextfileFlag(c *cli.Context, command string) error {
	if dir := c.String("textfile"); dir != "" {
		if err := metrics.CheckTextfile(dir, command); err != nil {
			return fmt.Errorf("--textfile: %w", err)
		}
	}
	return nil
}

// monitorMetricsFlags are monitor's --listen and --textfile.
func monitorMetricsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Usage: "serve Prometheus metrics at http://`ADDR`/metrics while monitoring " +
			"(host:port, e.g. :9469); a bad address or a port in use exits 2"},
		textfileFlag(),
	}
}

// monitorMetrics is a monitor run's metrics: nil without --listen and --textfile.
type monitorMetrics struct {
	m        *metrics.Monitor
	textfile string
	cancel   context.CancelFunc
	served   chan error // Serve's result; nil without --listen
}

// startMetrics checks --textfile and opens --listen (both bad input, exit 2, before
// any probe leaves) and starts serving. Call finish when the run is over, and close
// (deferred) on every way out.
func startMetrics(c *cli.Context, targets *targetList, th *monitor.Thresholds) (*monitorMetrics, error) {
	listen, textfile := c.String("listen"), c.String("textfile")
	if listen == "" && textfile == "" {
		return nil, nil
	}
	if err := checkTextfileFlag(c, "monitor"); err != nil {
		return nil, usageError("monitor: %w", err)
	}
	info := metrics.Info{Version: version, Thresholds: th, Targets: make([]metrics.Target, len(targets.addrs))}
	for i, a := range targets.addrs {
		info.Targets[i] = metrics.Target{Name: targets.name(i), Addr: a}
	}
	mm := &monitorMetrics{m: metrics.New(info), textfile: textfile}
	if listen != "" {
		ln, err := metrics.Listen(listen)
		if err != nil {
			return nil, usageError("monitor: --listen: %w", err)
		}
		var ctx context.Context
		ctx, mm.cancel = context.WithCancel(c.Context)
		mm.served = make(chan error, 1)
		go func() { mm.served <- metrics.Serve(ctx, ln, mm.m.Registry()) }()
	}
	return mm, nil
}

// sample is monitor.Options.Sample: every credited reply, for the RTT histograms (nil
// without metrics).
func (mm *monitorMetrics) sample() monitor.SampleFunc {
	if mm == nil {
		return nil
	}
	return mm.m.Sample
}

// metricsEvery is how often the metrics take a snapshot: it copies every target's
// hops, and a scrape every few seconds needs no more.
const metricsEvery = time.Second

// apply feeds the snapshots to the metrics, before the one the caller already takes (the
// live view's, --format jsonl's): call it after that one is set. That one keeps its own
// pace (SnapshotEvery) when the metrics want snapshots more often.
func (mm *monitorMetrics) apply(o *monitor.Options) {
	if mm == nil {
		return
	}
	prev, prevEvery := o.Snapshot, o.SnapshotEvery
	var last time.Time
	o.Snapshot = func(s *monitor.Snapshot) {
		mm.m.Update(s)
		if prev != nil && (s.Down != nil || last.IsZero() || s.Time.Sub(last) >= prevEvery) {
			last = s.Time
			prev(s)
		}
	}
	if prev == nil || prevEvery > metricsEvery {
		o.SnapshotEvery = metricsEvery
	}
}

// engine wraps the run's engine (and each one an outage's reopen brings) so its sends
// and kernel counters are counted.
func (mm *monitorMetrics) engine(eng trace.Engine) trace.Engine {
	if mm == nil || eng == nil {
		return eng
	}
	return mm.m.Engine(eng)
}

// finish brings the metrics to the run's end (res), writes --textfile and stops the
// server.
func (mm *monitorMetrics) finish(res *monitor.Result) error {
	if mm == nil {
		return nil
	}
	var err error
	if res != nil {
		mm.m.Finish(res)
		if mm.textfile != "" {
			err = mm.m.WriteTextfile(mm.textfile, res.Started, res.Finished)
		}
	}
	if cerr := mm.close(); err == nil {
		err = cerr
	}
	return err
}

// close stops serving /metrics; again, or without --listen, it does nothing.
func (mm *monitorMetrics) close() error {
	if mm == nil || mm.cancel == nil {
		return nil
	}
	mm.cancel()
	mm.cancel = nil
	return <-mm.served
}
