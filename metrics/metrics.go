// Package metrics exports what turnpath measures to Prometheus: `turnpath monitor
// --listen` serves /metrics while the rounds go on, and trace, multipath and monitor
// --report write node_exporter textfiles (--textfile DIR) with the same metric names.
//
// The monitor's metrics come from two feeds of the run loop: every reply the run credits
// to its round (Monitor.Sample, through monitor.Options.Sample), which the RTT histograms
// need, and the snapshots taken after rounds close (Monitor.Update), which carry the
// counts, the forward/reply split of the loss and the path's state. Both only touch
// client_golang's metrics, which are safe for the handler goroutine to read at any time.
//
// Names (seconds, ratios 0..1, counters of probes; labels target = the name given,
// address = the address probed, ttl):
//
//	turnpath_hop_rtt_seconds{target,address,ttl}        histogram, smokeping_prober buckets
//	turnpath_hop_probes_total{target,address,ttl}       completed probes (answered or lost)
//	turnpath_hop_replies_total{target,address,ttl}      answered probes
//	turnpath_hop_lost_total{target,address,ttl,loss}    lost probes, loss="forward"|"reply"
//	turnpath_hop_responder_info{target,address,ttl,responder}  1 for the hop's most frequent responder
//	turnpath_rtt_seconds{target,address}                histogram of the destination's answers
//	turnpath_jitter_seconds{target,address}             histogram of |RTT - previous RTT| (mtr's jitter)
//	turnpath_path_probes_total, turnpath_path_lost_total{target,address}  the destination's probes
//	turnpath_path_loss_ratio{target,address}            the verdict's path loss over the run
//	turnpath_verdict{target,address}                    1 pass, 0 fail (the run's thresholds)
//	turnpath_reached, turnpath_destination_ttl{target,address}
//	turnpath_path_changes_total{target,address}         path-change events
//	turnpath_rounds_total, turnpath_probes_sent_total, turnpath_replies_matched_total,
//	turnpath_replies_late_total, turnpath_replies_duplicate_total,
//	turnpath_outages_total, turnpath_down               the run's own health
//	turnpath_ebpf_*_total                               the eBPF engine's kernel counters
//	turnpath_build_info{version,engine}
//
// Cardinality: a target costs about 30 series, a (target, hop) pair about 28 (the
// histogram's 20 buckets among them). Hop series are made as hops show up, for at most
// Info.MaxHops pairs per run (DefaultMaxHops); hops past the cap are counted in
// turnpath_hops_not_exported and left out, their targets' own series stay.
package metrics

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/trace"
)

// Buckets are smokeping_prober's RTT buckets: 50 µs doubling up to about 26 s (the
// upper bounds 0.00005·2^k, k = 0..19).
var Buckets = prometheus.ExponentialBuckets(0.00005, 2, 20)

// DefaultMaxHops caps the (target, hop) pairs that get series: about 57 000 series at
// most, what one Prometheus takes from hundreds of monitors without strain.
const DefaultMaxHops = 2048

// Target names a monitored target in the labels.
type Target struct {
	Name string
	Addr netip.Addr
}

// Info is what the metrics need to know of the run besides its snapshots.
type Info struct {
	Version    string
	Targets    []Target            // by target index
	Thresholds *monitor.Thresholds // the verdict's; nil: no turnpath_verdict
	MaxHops    int                 // (target, hop) pairs with series; 0 DefaultMaxHops
}

// Monitor is the metrics of one monitor run.
type Monitor struct {
	reg  *prometheus.Registry
	info Info
	v    *vecs
	// collectors are everything in reg, for the textfile's registry.
	collectors []prometheus.Collector

	mu      sync.Mutex // Sample and Update (the run loop) against Engine (Reopen)
	targets []targetState
	hops    int // (target, hop) pairs with series
	rounds  int
	outages int
	health  *health
	kernel  *kernelCollector
}

// vecs are the metric families, shared by the monitor and the textfiles of trace and
// multipath so the names, help and buckets are the same everywhere.
type vecs struct {
	hopRTT, rtt, jitter             *prometheus.HistogramVec
	hopProbes, hopReplies, hopLost  *prometheus.CounterVec
	responder                       *prometheus.GaugeVec
	pathProbes, pathLost, changes   *prometheus.CounterVec
	pathLoss, verdict, reached, dst *prometheus.GaugeVec
	build                           *prometheus.GaugeVec
}

var (
	targetLabels = []string{"target", "address"}
	hopLabels    = []string{"target", "address", "ttl"}
)

func newVecs(reg prometheus.Registerer) *vecs {
	hist := func(name, help string, labels []string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: Buckets}, labels)
	}
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels []string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	v := &vecs{
		hopRTT:     hist("turnpath_hop_rtt_seconds", "Round-trip time of the answers from a hop.", hopLabels),
		rtt:        hist("turnpath_rtt_seconds", "Round-trip time of the destination's answers.", targetLabels),
		jitter:     hist("turnpath_jitter_seconds", "Difference between consecutive RTTs of the destination's answers (mtr's jitter).", targetLabels),
		hopProbes:  counter("turnpath_hop_probes_total", "Probes to a hop answered or given up as lost.", hopLabels),
		hopReplies: counter("turnpath_hop_replies_total", "Probes to a hop answered.", hopLabels),
		hopLost: counter("turnpath_hop_lost_total", "Probes to a hop lost: forward (the path lost them) or reply (only the router's answer is missing).",
			append(hopLabels[:3:3], "loss")),
		responder: gauge("turnpath_hop_responder_info", "The most frequent responder of a hop (value 1).",
			append(hopLabels[:3:3], "responder")),
		pathProbes: counter("turnpath_path_probes_total", "Probes to the destination at its distance, answered or lost.", targetLabels),
		pathLost:   counter("turnpath_path_lost_total", "Probes to the destination at its distance that were lost.", targetLabels),
		changes:    counter("turnpath_path_changes_total", "Path changes seen (a new responder at a TTL, a new destination distance, a new route).", targetLabels),
		pathLoss:   gauge("turnpath_path_loss_ratio", "Loss of the destination's own answers over the run (absent until it answered).", targetLabels),
		verdict:    gauge("turnpath_verdict", "1 when the target passes the verdict's thresholds, 0 when not.", targetLabels),
		reached:    gauge("turnpath_reached", "1 when the destination answered at a known distance.", targetLabels),
		dst:        gauge("turnpath_destination_ttl", "The destination's distance in hops (0 unknown).", targetLabels),
		build:      gauge("turnpath_build_info", "turnpath's version and the engine of the run (value 1).", []string{"version", "engine"}),
	}
	reg.MustRegister(v.all()...)
	return v
}

func (v *vecs) all() []prometheus.Collector {
	return []prometheus.Collector{v.hopRTT, v.rtt, v.jitter, v.hopProbes, v.hopReplies, v.hopLost, v.responder,
		v.pathProbes, v.pathLost, v.changes, v.pathLoss, v.verdict, v.reached, v.dst, v.build}
}

// health are the run's own counters.
type health struct {
	rounds, sent, matched, late, dups, outages prometheus.Counter
	notExported, updated, down                 prometheus.Gauge
}

// targetState is what the metrics keep of one target between snapshots.
type targetState struct {
	labels    []string
	rtt, jit  prometheus.Observer
	lastRTT   time.Duration // the destination's previous answer, for jitter; 0 none
	hops      []*hopState   // by TTL, made as hops show up (nil: none yet, or over the cap)
	events    int
	late      int
	dups      int
	dest      int // the destination's distance at the last update (0 unknown)
	destTTL   int // the hop the path counters follow
	destSent  int
	destLost  int
	responder []netip.Addr // by TTL: the responder label exported
}

// hopState is one (target, hop) pair's exported values.
type hopState struct {
	labels         []string
	rtt            prometheus.Observer
	probes         prometheus.Counter
	replies        prometheus.Counter
	fwd, rep       prometheus.Counter
	sent, received int
	// Lost probes exported so far as forward and as reply loss, since the statistics
	// were last reset: counters cannot go down, so a later change of the split only
	// steers where new losses go.
	fwdN, repN int
}

// New makes the metrics of a monitor run over info.Targets and registers them in a
// registry of their own (Registry).
func New(info Info) *Monitor {
	if info.MaxHops <= 0 {
		info.MaxHops = DefaultMaxHops
	}
	m := &Monitor{reg: prometheus.NewRegistry(), info: info}
	m.v = newVecs(m.reg)
	m.kernel = newKernelCollector()
	m.reg.MustRegister(m.kernel)
	m.health = newHealth(m.reg)
	m.collectors = append(m.v.all(), m.kernel, m.health.rounds, m.health.sent, m.health.matched,
		m.health.late, m.health.dups, m.health.outages, m.health.notExported, m.health.updated, m.health.down)
	m.v.build.WithLabelValues(info.Version, "").Set(1)
	m.targets = make([]targetState, len(info.Targets))
	for i, t := range info.Targets {
		ts := &m.targets[i]
		ts.labels = []string{t.Name, t.Addr.String()}
		ts.rtt = m.v.rtt.WithLabelValues(ts.labels...)
		ts.jit = m.v.jitter.WithLabelValues(ts.labels...)
	}
	return m
}

func newHealth(reg prometheus.Registerer) *health {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	h := &health{
		rounds:  c("turnpath_rounds_total", "Rounds closed."),
		sent:    c("turnpath_probes_sent_total", "Probes handed to the engine."),
		matched: c("turnpath_replies_matched_total", "Replies credited to the round that sent their probe."),
		late:    c("turnpath_replies_late_total", "Replies that came after their round was closed (dropped)."),
		dups:    c("turnpath_replies_duplicate_total", "Second replies to a probe already answered (dropped)."),
		outages: c("turnpath_outages_total", "Times the run could not probe (its interface went away or down, a route changed)."),
		down: prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpath_down",
			Help: "1 while the run cannot probe (an outage), 0 while it probes."}),
		notExported: prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpath_hops_not_exported",
			Help: "(target, hop) pairs left without series by the cardinality cap."}),
		updated: prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpath_last_update_timestamp_seconds",
			Help: "When the metrics were last updated from the run (Unix time)."}),
	}
	reg.MustRegister(h.rounds, h.sent, h.matched, h.late, h.dups, h.outages, h.notExported, h.updated, h.down)
	return h
}

// Finish brings the metrics to the end of the run: its last counts (a snapshot taken
// after the last round closed) before the textfile is written or the server stops.
func (m *Monitor) Finish(res *monitor.Result) { m.Update(res.Snapshot()) }

// Registry holds the run's metrics (not the Go runtime's: Serve adds those).
func (m *Monitor) Registry() *prometheus.Registry { return m.reg }

// Sample records one credited reply (monitor.SampleFunc): the hop's RTT histogram and,
// for the destination's answers, the RTT and jitter histograms. Cheap: a lock no one
// else holds for long, a slice index, atomic adds.
func (m *Monitor) Sample(target, ttl int, rtt time.Duration, from netip.Addr, reached bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if target < 0 || target >= len(m.targets) {
		return
	}
	m.health.matched.Inc()
	ts := &m.targets[target]
	// Past its distance the destination answers for itself (every Recheck round): its
	// RTT histogram has those answers, the path's hops do not go on beyond it.
	if !reached || ts.dest == 0 || ttl <= ts.dest {
		if h := m.hop(target, ttl); h != nil {
			h.rtt.Observe(rtt.Seconds())
		}
	}
	if !reached {
		return
	}
	ts.rtt.Observe(rtt.Seconds())
	if ts.lastRTT > 0 {
		d := rtt - ts.lastRTT
		ts.jit.Observe(math.Abs(d.Seconds()))
	}
	ts.lastRTT = rtt
}

// hop is the series of target's hop at ttl, made on first use while the cap allows
// (nil beyond it). m.mu is held.
func (m *Monitor) hop(target, ttl int) *hopState {
	ts := &m.targets[target]
	if ttl < 1 || ttl > 255 {
		return nil
	}
	if ttl < len(ts.hops) && ts.hops[ttl] != nil {
		return ts.hops[ttl]
	}
	if m.hops >= m.info.MaxHops {
		return nil
	}
	if ttl >= len(ts.hops) {
		ts.hops = append(ts.hops, make([]*hopState, ttl+1-len(ts.hops))...)
	}
	l := append(ts.labels[:2:2], strconv.Itoa(ttl))
	h := &hopState{labels: l, rtt: m.v.hopRTT.WithLabelValues(l...),
		probes: m.v.hopProbes.WithLabelValues(l...), replies: m.v.hopReplies.WithLabelValues(l...),
		fwd: m.v.hopLost.WithLabelValues(append(l[:3:3], "forward")...),
		rep: m.v.hopLost.WithLabelValues(append(l[:3:3], "reply")...)}
	ts.hops[ttl] = h
	m.hops++
	return h
}

// Update brings the metrics to snapshot sn: the counters grow by what happened since
// the previous one (a reset of the statistics, the live view's r, starts them counting
// afresh rather than backwards), the gauges take its values.
func (m *Monitor) Update(sn *monitor.Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.health.rounds.Add(float64(grow(sn.Rounds, &m.rounds)))
	m.health.outages.Add(float64(grow(sn.Outages, &m.outages)))
	m.health.down.Set(b2f(sn.Down != nil))
	skipped := 0
	for i := range sn.Targets {
		t := &sn.Targets[i]
		if t.Index < 0 || t.Index >= len(m.targets) {
			continue
		}
		skipped += m.updateTarget(t)
	}
	m.health.notExported.Set(float64(skipped))
	m.health.updated.Set(float64(sn.Time.UnixNano()) / 1e9)
}

// updateTarget exports one target's snapshot; it returns its hops left out by the cap.
func (m *Monitor) updateTarget(t *monitor.TargetSnapshot) (skipped int) {
	ts := &m.targets[t.Index]
	l := ts.labels
	m.v.changes.WithLabelValues(l...).Add(float64(grow(t.Events, &ts.events)))
	m.health.late.Add(float64(grow(t.Late, &ts.late)))
	m.health.dups.Add(float64(grow(t.Dups, &ts.dups)))
	m.v.dst.WithLabelValues(l...).Set(float64(t.DestTTL))
	ts.dest = t.DestTTL
	if t.DestTTL != 0 {
		m.dropHops(ts, t.DestTTL+1)
	}
	m.v.reached.WithLabelValues(l...).Set(b2f(t.DestTTL != 0))
	if t.PathLossKnown {
		m.v.pathLoss.WithLabelValues(l...).Set(t.PathLoss / 100)
	} else {
		m.v.pathLoss.DeleteLabelValues(l...)
	}
	if th := m.info.Thresholds; th != nil {
		v := t.Judge(*th)
		m.v.verdict.WithLabelValues(l...).Set(b2f(v.Pass))
	}
	for k := range t.Hops {
		hs := &t.Hops[k]
		if hs.TTL == t.DestTTL {
			m.updatePath(ts, hs)
		}
		h := m.hop(t.Index, hs.TTL)
		if h == nil {
			skipped++
			continue
		}
		updateHop(h, hs)
		m.updateResponder(ts, h, hs)
	}
	return skipped
}

// dropHops removes the series of ts's hops from TTL from on: answers from past the
// destination, seen while its distance was not known yet, are not hops of the path.
func (m *Monitor) dropHops(ts *targetState, from int) {
	for ttl := from; ttl < len(ts.hops); ttl++ {
		h := ts.hops[ttl]
		if h == nil {
			continue
		}
		m.v.hopRTT.DeleteLabelValues(h.labels...)
		m.v.hopProbes.DeleteLabelValues(h.labels...)
		m.v.hopReplies.DeleteLabelValues(h.labels...)
		m.v.hopLost.DeleteLabelValues(append(h.labels[:3:3], "forward")...)
		m.v.hopLost.DeleteLabelValues(append(h.labels[:3:3], "reply")...)
		if ttl < len(ts.responder) && ts.responder[ttl].IsValid() {
			m.v.responder.DeleteLabelValues(append(h.labels[:3:3], ts.responder[ttl].String())...)
			ts.responder[ttl] = netip.Addr{}
		}
		ts.hops[ttl] = nil
		m.hops--
	}
}

// updatePath counts the destination's probes at its distance. When the distance
// changes the counters follow the new hop from its current counts on: its earlier
// probes were a router's.
func (m *Monitor) updatePath(ts *targetState, hs *monitor.HopSnapshot) {
	lost := hs.Sent - hs.Received
	probes, lostC := m.v.pathProbes.WithLabelValues(ts.labels...), m.v.pathLost.WithLabelValues(ts.labels...)
	if hs.TTL != ts.destTTL {
		// The series exist from here on, at 0 when nothing is lost: a ratio of their
		// rates needs both.
		probes.Add(0)
		lostC.Add(0)
		ts.destTTL, ts.destSent, ts.destLost = hs.TTL, hs.Sent, lost
		return
	}
	if hs.Sent < ts.destSent { // reset
		ts.destLost = 0
	}
	probes.Add(float64(grow(hs.Sent, &ts.destSent)))
	if lost > ts.destLost {
		lostC.Add(float64(lost - ts.destLost))
	}
	ts.destLost = lost
}

// updateHop adds a hop's new probes, answers and losses. New losses are split so that
// the exported forward and reply counts follow the monitor's split (HopSnapshot.Forward
// and Reply) as closely as counters that never go down can.
func updateHop(h *hopState, hs *monitor.HopSnapshot) {
	if hs.Sent < h.sent { // reset: counting starts afresh
		h.fwdN, h.repN = 0, 0
	}
	h.probes.Add(float64(grow(hs.Sent, &h.sent)))
	h.replies.Add(float64(grow(hs.Received, &h.received)))
	lost := hs.Sent - hs.Received
	n := lost - h.fwdN - h.repN
	if n <= 0 {
		return
	}
	want := 0
	if hs.Loss > 0 {
		want = int(math.Round(float64(lost) * hs.Forward / hs.Loss))
	}
	f := min(max(want-h.fwdN, 0), n)
	h.fwd.Add(float64(f))
	h.rep.Add(float64(n - f))
	h.fwdN += f
	h.repN += n - f
}

// updateResponder keeps one responder series per hop: the most frequent one.
func (m *Monitor) updateResponder(ts *targetState, h *hopState, hs *monitor.HopSnapshot) {
	if len(hs.Responders) == 0 {
		return
	}
	top := hs.Responders[0].Addr
	if hs.TTL >= len(ts.responder) {
		ts.responder = append(ts.responder, make([]netip.Addr, hs.TTL+1-len(ts.responder))...)
	}
	old := ts.responder[hs.TTL]
	if old == top {
		return
	}
	if old.IsValid() {
		m.v.responder.DeleteLabelValues(append(h.labels[:3:3], old.String())...)
	}
	m.v.responder.WithLabelValues(append(h.labels[:3:3], top.String())...).Set(1)
	ts.responder[hs.TTL] = top
}

// grow is how much a count grew since *last (all of it after a reset: the count went
// down), and remembers it.
func grow(cur int, last *int) int {
	d := cur - *last
	if d < 0 {
		d = cur
	}
	*last = cur
	return d
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Engine wraps the run's engine (the first one, and each one Reopen brings): its sends
// are counted, and the eBPF engine's kernel counters are read at every scrape.
func (m *Monitor) Engine(eng trace.Engine) trace.Engine {
	m.mu.Lock()
	m.v.build.Reset()
	m.v.build.WithLabelValues(m.info.Version, eng.Name()).Set(1)
	m.mu.Unlock()
	m.kernel.use(eng)
	return &countingEngine{Engine: eng, sent: m.health.sent}
}

type countingEngine struct {
	trace.Engine
	sent prometheus.Counter
}

func (e *countingEngine) Send(p trace.Probe) error {
	err := e.Engine.Send(p)
	if err == nil {
		e.sent.Inc()
	}
	return err
}

// SendBatch keeps the wrapped engine's batches (trace.SendAll: its SendBatch, or Send
// per probe) and counts what they sent.
func (e *countingEngine) SendBatch(ps []trace.Probe) (int, error) {
	n, err := trace.SendAll(e.Engine, ps)
	e.sent.Add(float64(n))
	return n, err
}
