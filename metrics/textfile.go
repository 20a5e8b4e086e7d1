package metrics

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/trace"
)

// Textfiles for node_exporter's textfile collector (--collector.textfile.directory):
// --textfile DIR writes DIR/turnpath_<command>.prom, or --textfile FILE.prom that file
// (two cron jobs of one command sharing a directory need a file each). The metric names
// are those of /metrics, with a label command="trace"|"multipath"|"monitor" so the
// three never collide in node_exporter; the counters hold the run's totals (a batch run
// is one sample: read them as they are, not with rate()). Each file is written to a
// temporary file in the same directory (a name node_exporter skips: it reads only
// *.prom) and renamed over the old one, so a scrape sees the previous run or this one,
// never half of either.

// TextfilePath is where --textfile target writes command's metrics.
func TextfilePath(target, command string) string {
	if strings.HasSuffix(target, ".prom") {
		return target
	}
	return filepath.Join(target, "turnpath_"+command+".prom")
}

// CheckTextfile reports, before a run probes anything, a --textfile that cannot be
// written: a missing or unwritable directory.
func CheckTextfile(target, command string) error {
	dir := filepath.Dir(TextfilePath(target, command))
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("textfile directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("textfile directory %s: not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".turnpath-check-*")
	if err != nil {
		return fmt.Errorf("textfile directory: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// batch is the registry of one batch run's textfile.
type batch struct {
	reg     *prometheus.Registry
	v       *vecs
	command string
	last    prometheus.Gauge
	dur     prometheus.Gauge
}

func newBatch(command, version, engine string) *batch {
	b := &batch{reg: prometheus.NewRegistry(), command: command}
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"command": command}, b.reg)
	b.v = newVecs(wrapped)
	b.v.build.WithLabelValues(version, engine).Set(1)
	b.last, b.dur = runGauges(wrapped)
	return b
}

// runGauges are when a run finished and how long it took: what an alert on a batch
// job that stopped running looks at.
func runGauges(reg prometheus.Registerer) (last, dur prometheus.Gauge) {
	last = prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpath_last_run_timestamp_seconds",
		Help: "When the run finished (Unix time)."})
	dur = prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpath_run_duration_seconds",
		Help: "How long the run took."})
	reg.MustRegister(last, dur)
	return last, dur
}

func (b *batch) write(target string, started, finished time.Time) error {
	b.last.Set(float64(finished.UnixNano()) / 1e9)
	b.dur.Set(finished.Sub(started).Seconds())
	return writeTextfile(TextfilePath(target, b.command), b.reg)
}

// writeTextfile writes g atomically (prometheus.WriteToTextfile: temporary file, mode
// 0644, rename).
func writeTextfile(path string, g prometheus.Gatherer) error {
	if err := prometheus.WriteToTextfile(path, g); err != nil {
		return fmt.Errorf("write textfile: %w", err)
	}
	return nil
}

// Trace collects a trace run's textfile as its targets finish (trace streams them and
// forgets them; the textfile keeps only their metrics).
type Trace struct {
	b   *batch
	mtu *prometheus.GaugeVec
	// Hop series are capped as the monitor's are (DefaultMaxHops (target, hop) pairs):
	// a sweep of a long list keeps its targets' series, not every hop of each.
	hops, skipped int
	notExported   prometheus.Gauge
}

// NewTrace starts a trace run's textfile.
func NewTrace(version, engine string) *Trace {
	t := &Trace{b: newBatch("trace", version, engine)}
	t.notExported = prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpath_hops_not_exported",
		Help: "(target, hop) pairs left without series by the cardinality cap."})
	t.mtu = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnpath_path_mtu_bytes",
		Help: "The path MTU trace --pmtu found (the probe size that reached the destination)."}, targetLabels)
	prometheus.WrapRegistererWith(prometheus.Labels{"command": "trace"}, t.b.reg).MustRegister(t.mtu, t.notExported)
	return t
}

// Add records one finished target: per hop its probes, answers and RTTs; the
// destination's RTTs, jitter and loss at its distance. Hops past the destination were
// not probed (or answered as the destination) and are left out.
func (t *Trace) Add(info report.TargetInfo, r *trace.Result) {
	v := t.b.v
	l := []string{info.Name, info.Addr.String()}
	dest := 0
	if r.Reached {
		dest = r.DestTTL
	}
	v.reached.WithLabelValues(l...).Set(b2f(r.Reached))
	v.dst.WithLabelValues(l...).Set(float64(dest))
	if r.PathMTU > 0 {
		t.mtu.WithLabelValues(l...).Set(float64(r.PathMTU))
	}
	for _, h := range r.Hops {
		if r.DestTTL != 0 && h.TTL > r.DestTTL {
			break
		}
		hl := append(l[:2:2], strconv.Itoa(h.TTL))
		hopSeries := t.hops < DefaultMaxHops
		if hopSeries {
			t.hops++
		} else {
			t.skipped++
		}
		n := 0
		var prev time.Duration
		for _, rep := range h.Replies {
			if rep == nil {
				continue
			}
			n++
			if hopSeries {
				v.hopRTT.WithLabelValues(hl...).Observe(rep.RTT.Seconds())
			}
			if h.TTL != dest {
				continue
			}
			v.rtt.WithLabelValues(l...).Observe(rep.RTT.Seconds())
			if prev > 0 {
				v.jitter.WithLabelValues(l...).Observe(math.Abs((rep.RTT - prev).Seconds()))
			}
			prev = rep.RTT
		}
		if hopSeries {
			v.hopProbes.WithLabelValues(hl...).Add(float64(len(h.Replies)))
			v.hopReplies.WithLabelValues(hl...).Add(float64(n))
		}
		if h.TTL == dest && len(h.Replies) > 0 {
			lost := len(h.Replies) - n
			v.pathProbes.WithLabelValues(l...).Add(float64(len(h.Replies)))
			v.pathLost.WithLabelValues(l...).Add(float64(lost))
			v.pathLoss.WithLabelValues(l...).Set(float64(lost) / float64(len(h.Replies)))
		}
	}
}

// Write writes the textfile to target (a directory, or a .prom file).
func (t *Trace) Write(target string, started, finished time.Time) error {
	t.notExported.Set(float64(t.skipped))
	return t.b.write(target, started, finished)
}

// WriteMultipath writes a multipath run's textfile: per target whether it was reached,
// the destination's distance and RTT, and the shape of the graph (distinct paths,
// interfaces, diamonds and their widest point, probes).
func WriteMultipath(target string, run *report.MultipathRun) error {
	b := newBatch("multipath", run.Version, run.Engine)
	gauge := func(name, help string, labels []string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		prometheus.WrapRegistererWith(prometheus.Labels{"command": "multipath"}, b.reg).MustRegister(g)
		return g
	}
	paths := gauge("turnpath_multipath_paths", "Distinct paths the flows took (complete=\"true\": known at every TTL).",
		append(targetLabels[:2:2], "complete"))
	nodes := gauge("turnpath_multipath_interfaces", "Interfaces (addresses) seen toward the target.", targetLabels)
	diamonds := gauge("turnpath_multipath_diamonds", "Load-balanced sections (diamonds) on the way.", targetLabels)
	width := gauge("turnpath_multipath_max_width", "The most interfaces at one TTL inside a diamond (1 without load balancing).", targetLabels)
	probes := gauge("turnpath_multipath_probes", "Probes sent (answered=\"false\") and answered (answered=\"true\").",
		append(targetLabels[:2:2], "answered"))
	rtt := gauge("turnpath_multipath_rtt_seconds", "The destination's RTT over every flow: stat=\"min\"|\"avg\"|\"max\".",
		append(targetLabels[:2:2], "stat"))
	for i := range run.Targets {
		t := &run.Targets[i]
		l := []string{t.Name, t.Addr.String()}
		g := t.Graph
		b.v.reached.WithLabelValues(l...).Set(b2f(g != nil && g.Reached))
		if g == nil {
			continue // interrupted before it was explored
		}
		dest, w, ifaces := 0, 1, 0
		for k := range g.Nodes {
			n := &g.Nodes[k]
			if n.Addr.IsValid() {
				ifaces++
			}
			if n.ID == g.Dest && len(n.TTLs) > 0 {
				dest = n.TTLs[0]
				rtt.WithLabelValues(append(l[:2:2], "min")...).Set(n.RTTMin.Seconds())
				rtt.WithLabelValues(append(l[:2:2], "avg")...).Set(n.RTTAvg.Seconds())
				rtt.WithLabelValues(append(l[:2:2], "max")...).Set(n.RTTMax.Seconds())
			}
		}
		for _, d := range g.Diamonds {
			w = max(w, d.MaxWidth)
		}
		b.v.dst.WithLabelValues(l...).Set(float64(dest))
		ps := mda.InferPaths(g)
		paths.WithLabelValues(append(l[:2:2], "true")...).Set(float64(ps.Complete))
		paths.WithLabelValues(append(l[:2:2], "false")...).Set(float64(len(ps.List) - ps.Complete))
		nodes.WithLabelValues(l...).Set(float64(ifaces))
		diamonds.WithLabelValues(l...).Set(float64(len(g.Diamonds)))
		width.WithLabelValues(l...).Set(float64(w))
		probes.WithLabelValues(append(l[:2:2], "false")...).Set(float64(g.Sent))
		probes.WithLabelValues(append(l[:2:2], "true")...).Set(float64(g.Answered))
	}
	return b.write(target, run.Started, run.Finished)
}

// WriteTextfile writes the monitor run's metrics (what /metrics shows, without the Go
// runtime's) as a textfile, with command="monitor": for monitor --report from cron.
// Call it after the last Update (Finish).
func (m *Monitor) WriteTextfile(target string, started, finished time.Time) error {
	// The same collectors, registered a second time under the command label.
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"command": "monitor"}, reg)
	for _, c := range m.collectors {
		if err := wrapped.Register(c); err != nil {
			return fmt.Errorf("write textfile: %w", err)
		}
	}
	last, dur := runGauges(wrapped)
	last.Set(float64(finished.UnixNano()) / 1e9)
	dur.Set(finished.Sub(started).Seconds())
	return writeTextfile(TextfilePath(target, "monitor"), reg)
}
