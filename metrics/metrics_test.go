package metrics

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/turnpath/turnpath/hopstat"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/trace"
)

var (
	relay  = netip.MustParseAddr("198.19.1.1")
	router = netip.MustParseAddr("198.18.1.2")
)

func newTestMonitor(maxHops int) *Monitor {
	return New(Info{Version: "test", Targets: []Target{{Name: "relay", Addr: relay}},
		Thresholds: &monitor.Teams, MaxHops: maxHops})
}

// hopSnap is a hop with sent/received and a loss split in percent.
func hopSnap(ttl, sent, recv int, fwd float64, from netip.Addr) monitor.HopSnapshot {
	h := monitor.HopSnapshot{TTL: ttl, Sent: sent, Received: recv, Avg: 5, JitterMean: 1,
		Responders: []hopstat.Responder{{Addr: from, Count: recv}}}
	if sent > 0 {
		h.Loss = 100 * float64(sent-recv) / float64(sent)
		h.Forward = min(fwd, h.Loss)
		h.Reply = h.Loss - h.Forward
	}
	return h
}

func snap(rounds int, events int, hops ...monitor.HopSnapshot) *monitor.Snapshot {
	ts := monitor.TargetSnapshot{Index: 0, Events: events, Hops: hops}
	if d := hops[len(hops)-1]; d.Received > 0 {
		ts.DestTTL = d.TTL
		ts.PathLoss, ts.PathLossKnown = d.Loss, true
	}
	return &monitor.Snapshot{Time: time.Unix(1700000000, 0), Rounds: rounds, Targets: []monitor.TargetSnapshot{ts}}
}

func val(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestMonitorCounters(t *testing.T) {
	m := newTestMonitor(0)
	l := []string{"relay", "198.19.1.1"}
	lost := func(ttl, kind string) prometheus.Collector {
		return m.v.hopLost.WithLabelValues("relay", "198.19.1.1", ttl, kind)
	}

	// Hop 1 drops 20 % of its answers itself (reply loss), the destination nothing.
	m.Update(snap(10, 0, hopSnap(1, 10, 8, 0, router), hopSnap(2, 10, 10, 0, relay)))
	if got := val(t, lost("1", "reply")); got != 2 {
		t.Errorf("hop 1 reply lost = %v, want 2", got)
	}
	if got := val(t, lost("1", "forward")); got != 0 {
		t.Errorf("hop 1 forward lost = %v, want 0", got)
	}
	if got := val(t, m.v.verdict.WithLabelValues(l...)); got != 1 {
		t.Errorf("verdict = %v, want 1", got)
	}
	// Then the path loses 10 of 10 more at both hops: forward loss, the verdict fails.
	m.Update(snap(20, 1, hopSnap(1, 20, 8, 60, router), hopSnap(2, 20, 10, 50, relay)))
	if got := val(t, lost("1", "forward")) + val(t, lost("1", "reply")); got != 12 {
		t.Errorf("hop 1 lost = %v, want 12", got)
	}
	if got := val(t, lost("2", "forward")); got != 10 {
		t.Errorf("hop 2 forward lost = %v, want 10", got)
	}
	if got := val(t, m.v.pathProbes.WithLabelValues(l...)); got != 10 {
		t.Errorf("path probes = %v, want 10 (counted from the first snapshot that knew the destination)", got)
	}
	if got := val(t, m.v.pathLost.WithLabelValues(l...)); got != 10 {
		t.Errorf("path lost = %v, want 10", got)
	}
	if got := val(t, m.v.pathLoss.WithLabelValues(l...)); got != 0.5 {
		t.Errorf("path loss ratio = %v, want 0.5", got)
	}
	if got := val(t, m.v.verdict.WithLabelValues(l...)); got != 0 {
		t.Errorf("verdict = %v, want 0", got)
	}
	if got := val(t, m.v.changes.WithLabelValues(l...)); got != 1 {
		t.Errorf("path changes = %v, want 1", got)
	}
	if got := val(t, m.health.rounds); got != 20 {
		t.Errorf("rounds = %v, want 20", got)
	}
	// A reset (the live view's r) starts the counts afresh: the counters go on growing.
	m.Update(snap(21, 0, hopSnap(1, 1, 1, 0, router), hopSnap(2, 1, 1, 0, relay)))
	if got := val(t, m.v.hopProbes.WithLabelValues("relay", "198.19.1.1", "1")); got != 21 {
		t.Errorf("hop 1 probes after reset = %v, want 21", got)
	}
}

func TestMonitorSamples(t *testing.T) {
	m := newTestMonitor(0)
	for _, ms := range []float64{10, 12, 11} {
		m.Sample(0, 2, time.Duration(ms*float64(time.Millisecond)), relay, true)
	}
	m.Sample(0, 1, time.Millisecond, router, false)
	m.Sample(5, 1, time.Millisecond, router, false) // no such target: ignored
	if got := testutil.CollectAndCount(m.v.hopRTT); got != 2 {
		t.Errorf("hop histograms = %d, want 2", got)
	}
	if got := val(t, m.health.matched); got != 4 {
		t.Errorf("matched = %v, want 4", got)
	}
	text := gatherText(t, m.Registry())
	for _, want := range []string{
		`turnpath_rtt_seconds_count{address="198.19.1.1",target="relay"} 3`,
		`turnpath_jitter_seconds_count{address="198.19.1.1",target="relay"} 2`,
		`turnpath_jitter_seconds_sum{address="198.19.1.1",target="relay"} 0.003`,
		`turnpath_hop_rtt_seconds_bucket{address="198.19.1.1",target="relay",ttl="1",le="0.0016"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	promtoolCheck(t, text)
}

func TestMonitorCap(t *testing.T) {
	m := newTestMonitor(2)
	m.Update(snap(1, 0, hopSnap(1, 1, 1, 0, router), hopSnap(2, 1, 1, 0, router), hopSnap(3, 1, 1, 0, relay)))
	if got := testutil.CollectAndCount(m.v.hopProbes); got != 2 {
		t.Errorf("hop series = %d, want 2 (the cap)", got)
	}
	if got := val(t, m.health.notExported); got != 1 {
		t.Errorf("hops not exported = %v, want 1", got)
	}
	// The destination's own series stay.
	if got := val(t, m.v.reached.WithLabelValues("relay", "198.19.1.1")); got != 1 {
		t.Errorf("reached = %v, want 1", got)
	}
}

func TestResponderFollowsTheMostFrequent(t *testing.T) {
	m := newTestMonitor(0)
	other := netip.MustParseAddr("198.18.9.9")
	m.Update(snap(1, 0, hopSnap(1, 1, 1, 0, router), hopSnap(2, 1, 1, 0, relay)))
	m.Update(snap(2, 0, hopSnap(1, 2, 2, 0, other), hopSnap(2, 2, 2, 0, relay)))
	text := gatherText(t, m.Registry())
	if strings.Contains(text, `responder="198.18.1.2"`) || !strings.Contains(text, `responder="198.18.9.9"`) {
		t.Errorf("want only the new responder's series:\n%s", grepLines(text, "responder_info"))
	}
}

func TestTraceTextfile(t *testing.T) {
	ms := func(v float64) *trace.Reply { return &trace.Reply{RTT: time.Duration(v * float64(time.Millisecond))} }
	res := &trace.Result{Reached: true, DestTTL: 2, Hops: []trace.Hop{
		{TTL: 1, Replies: []*trace.Reply{ms(1), nil, ms(1.5)}},
		{TTL: 2, Replies: []*trace.Reply{ms(10), ms(14), nil}},
		{TTL: 3, Replies: []*trace.Reply{nil, nil, nil}},
	}}
	tr := NewTrace("test", "ebpf")
	tr.Add(report.TargetInfo{Name: "relay", Addr: relay}, res)
	dir := t.TempDir()
	start := time.Unix(1700000000, 0)
	if err := tr.Write(dir, start, start.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	text := readTextfile(t, filepath.Join(dir, "turnpath_trace.prom"))
	for _, want := range []string{
		`turnpath_hop_replies_total{address="198.19.1.1",command="trace",target="relay",ttl="1"} 2`,
		`turnpath_path_lost_total{address="198.19.1.1",command="trace",target="relay"} 1`,
		`turnpath_rtt_seconds_count{address="198.19.1.1",command="trace",target="relay"} 2`,
		`turnpath_jitter_seconds_sum{address="198.19.1.1",command="trace",target="relay"} 0.004`,
		`turnpath_destination_ttl{address="198.19.1.1",command="trace",target="relay"} 2`,
		`turnpath_run_duration_seconds{command="trace"} 2`,
		`turnpath_build_info{command="trace",engine="ebpf",version="test"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("textfile lacks %s", want)
		}
	}
	if strings.Contains(text, `ttl="3"`) {
		t.Error("textfile has a hop past the destination")
	}
}

func TestMultipathTextfile(t *testing.T) {
	g := &mda.Graph{Reached: true, Dest: "198.19.1.1", Sent: 40, Answered: 38,
		Nodes: []mda.Node{
			{ID: "198.18.1.2", Addr: router, TTLs: []int{1}},
			{ID: "198.18.2.2", Addr: netip.MustParseAddr("198.18.2.2"), TTLs: []int{1}},
			{ID: "198.19.1.1", Addr: relay, TTLs: []int{2}, Dest: true, RTTMin: time.Millisecond, RTTAvg: 2 * time.Millisecond, RTTMax: 3 * time.Millisecond},
		},
		Diamonds: []mda.Diamond{{Divergence: "*+1", Convergence: "198.19.1.1", MaxWidth: 2}},
		Flows: []mda.FlowPath{
			{Flow: 1, Dest: 2, Hops: []mda.FlowHop{{TTL: 1, Node: "198.18.1.2"}, {TTL: 2, Node: "198.19.1.1"}}},
			{Flow: 2, Dest: 2, Hops: []mda.FlowHop{{TTL: 1, Node: "198.18.2.2"}, {TTL: 2, Node: "198.19.1.1"}}},
		},
	}
	start := time.Unix(1700000000, 0)
	run := &report.MultipathRun{Version: "test", Engine: "socket", Started: start, Finished: start.Add(time.Second),
		Targets: []report.MultipathTarget{{Name: "relay", Addr: relay, Graph: g}, {Name: "gone", Addr: router}}}
	file := filepath.Join(t.TempDir(), "sweep.prom")
	if err := WriteMultipath(file, run); err != nil {
		t.Fatal(err)
	}
	text := readTextfile(t, file)
	for _, want := range []string{
		`turnpath_multipath_max_width{address="198.19.1.1",command="multipath",target="relay"} 2`,
		`turnpath_multipath_rtt_seconds{address="198.19.1.1",command="multipath",stat="avg",target="relay"} 0.002`,
		`turnpath_reached{address="198.18.1.2",command="multipath",target="gone"} 0`,
		`turnpath_destination_ttl{address="198.19.1.1",command="multipath",target="relay"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("textfile lacks %s", want)
		}
	}
}

func TestMonitorTextfile(t *testing.T) {
	m := newTestMonitor(0)
	m.Sample(0, 2, 10*time.Millisecond, relay, true)
	m.Update(snap(1, 0, hopSnap(1, 1, 1, 0, router), hopSnap(2, 1, 1, 0, relay)))
	dir := t.TempDir()
	start := time.Unix(1700000000, 0)
	if err := m.WriteTextfile(dir, start, start.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	text := readTextfile(t, filepath.Join(dir, "turnpath_monitor.prom"))
	if !strings.Contains(text, `turnpath_rtt_seconds_count{address="198.19.1.1",command="monitor",target="relay"} 1`) ||
		!strings.Contains(text, `turnpath_rounds_total{command="monitor"} 1`) {
		t.Errorf("monitor textfile:\n%s", text)
	}
	// The /metrics registry is unchanged: no command label there.
	if strings.Contains(gatherText(t, m.Registry()), "command=") {
		t.Error("the command label leaked into /metrics")
	}
}

func TestCheckTextfile(t *testing.T) {
	dir := t.TempDir()
	if err := CheckTextfile(dir, "trace"); err != nil {
		t.Errorf("writable dir: %v", err)
	}
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	for _, bad := range []string{filepath.Join(dir, "missing"), filepath.Join(file, "x.prom"), file} {
		if err := CheckTextfile(bad, "trace"); err == nil {
			t.Errorf("CheckTextfile(%s) = nil, want an error", bad)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("CheckTextfile left files: %v", ents)
	}
}

func TestListen(t *testing.T) {
	for _, bad := range []string{"9469", "localhost", "[::1"} {
		if _, err := Listen(bad); err == nil {
			t.Errorf("Listen(%q) = nil error", bad)
		}
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Listen(ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Listen on %s: %v, want address in use", ln.Addr(), err)
	}
}

// readTextfile reads a textfile, checks it with promtool and that no temporary file
// was left beside it, and that node_exporter (another user) may read it.
func readTextfile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("%s mode %v, want 0644", path, st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("files beside the textfile: %v", ents)
	}
	promtoolCheck(t, string(b))
	return string(b)
}

func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus package) on text:
// the exposition format and the naming conventions.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not installed (make deps installs prometheus): not checked")
		return
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A sweep of many targets keeps every target's series but at most DefaultMaxHops hops'.
func TestTraceTextfileCap(t *testing.T) {
	tr := NewTrace("test", "ebpf")
	hops := make([]trace.Hop, 255)
	for k := range hops {
		hops[k] = trace.Hop{TTL: k + 1, Replies: []*trace.Reply{{RTT: time.Millisecond}}}
	}
	n := DefaultMaxHops/len(hops) + 1
	for i := range n {
		tr.Add(report.TargetInfo{Name: strconv.Itoa(i), Addr: relay}, &trace.Result{Hops: hops})
	}
	if got := testutil.CollectAndCount(tr.b.v.hopProbes); got != DefaultMaxHops {
		t.Errorf("hop series %d, want %d", got, DefaultMaxHops)
	}
	if got := testutil.CollectAndCount(tr.b.v.reached); got != n {
		t.Errorf("target series %d, want %d", got, n)
	}
	tr.notExported.Set(float64(tr.skipped))
	if got := val(t, tr.notExported); got != float64(n*len(hops)-DefaultMaxHops) {
		t.Errorf("not exported %v", got)
	}
}
