package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/lab/labtest"
	"github.com/turnpath/turnpath/metrics"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// A real Prometheus (Debian's prometheus) in the lab's client namespace scrapes a real
// monitor run's /metrics over the eBPF engine, with the repository's rules loaded; its
// HTTP API must then return the targets' series: 198.19.1.1 behind r4, which drops 20 %
// of the probes it forwards (nftables), and 198.19.2.1 on a clean path.
func TestPrometheusScrapesMonitor(t *testing.T) {
	for _, tool := range []string{"prometheus", "promtool", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make deps installs it)", tool)
		}
	}
	l := labtest.Up(t, "tpx", lab.ProfileFast)
	lossy, clean := netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("198.19.2.1")
	const lossPct = 20
	for _, args := range [][]string{
		{"add", "table", "inet", "tpxloss"},
		{"add", "chain", "inet", "tpxloss", "lossy", "{ type filter hook forward priority 0; }"},
		{"add", "rule", "inet", "tpxloss", "lossy", "udp", "dport", "3478", "numgen", "random", "mod", "100", "<", strconv.Itoa(lossPct), "drop"},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", l.NS("r4"), "nft"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}

	// The engine, the /metrics listener and the HTTP client's sockets all live in the
	// client namespace; Prometheus is started there too and scrapes only this run.
	targets := []netip.Addr{lossy, clean}
	var eng trace.Engine
	var ln net.Listener
	err := l.Do(func() error {
		payload, err := probe.ParsePayload("stun")
		if err != nil {
			return err
		}
		cfg := engine.Config{Payload: payload, Nonce: 0x7e57ab1e, Timeout: 2 * time.Second}
		for _, dst := range targets {
			rt, err := hostnet.Lookup(dst)
			if err != nil {
				return err
			}
			cfg.Ifindexes = []int{rt.Ifindex}
			cfg.Flows = append(cfg.Flows, probe.Flow{Src: rt.Src, Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478})
		}
		if eng, err = engine.NewEBPF(cfg); err != nil {
			return err
		}
		ln, err = metrics.Listen("127.0.0.1:9469")
		return err
	})
	if err != nil {
		t.Fatalf("open engine and listener: %v", err)
	}
	defer eng.Close()
	client := lab.HTTPClient(l.ClientNS(), 5*time.Second)
	startPrometheus(t, l.ClientNS(), "127.0.0.1:9469", "127.0.0.1:9090")

	m := metrics.New(metrics.Info{Version: "test", Thresholds: &monitor.Teams,
		Targets: []metrics.Target{{Name: "lossy", Addr: lossy}, {Name: "clean", Addr: clean}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- metrics.Serve(ctx, ln, m.Registry()) }()

	opts := monitor.DefaultOptions()
	opts.MaxTTL, opts.Interval, opts.Wait, opts.Cycles = 12, 20*time.Millisecond, 500*time.Millisecond, 500
	opts.Snapshot, opts.SnapshotEvery, opts.Sample = m.Update, 200*time.Millisecond, m.Sample
	res, err := monitor.Run(ctx, m.Engine(eng), len(targets), opts)
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	m.Finish(res)

	// Wait for a scrape of the final counts (the rounds of the last update).
	promQL := func(q string) map[string]float64 { return query(t, client, "http://127.0.0.1:9090", q) }
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && promQL("turnpath_rounds_total")[""] != float64(res.Rounds) {
		time.Sleep(500 * time.Millisecond)
	}
	if got := promQL("turnpath_rounds_total")[""]; got != float64(res.Rounds) {
		t.Fatalf("Prometheus has turnpath_rounds_total %v, want %d", got, res.Rounds)
	}

	byAddr := func(q string) map[string]float64 {
		return query(t, client, "http://127.0.0.1:9090", `sum by (address) (`+q+`)`)
	}
	if v := byAddr("turnpath_verdict"); v[lossy.String()] != 0 || v[clean.String()] != 1 {
		t.Errorf("verdict %v, want 0 for %s (%d %% loss), 1 for %s", v, lossy, lossPct, clean)
	}
	loss := byAddr("turnpath_path_loss_ratio")
	if math.Abs(loss[lossy.String()]-lossPct/100.0) > 0.08 || loss[clean.String()] > 0.02 {
		t.Errorf("path loss %v, want ~%v for %s, ~0 for %s", loss, lossPct/100.0, lossy, clean)
	}
	// The windowed path loss of the rules agrees with the run's.
	lost, probes := byAddr("turnpath_path_lost_total"), byAddr("turnpath_path_probes_total")
	if p := probes[lossy.String()]; p < 400 || math.Abs(lost[lossy.String()]/p-lossPct/100.0) > 0.08 {
		t.Errorf("path lost %v of %v probes", lost, probes)
	}
	if r := promQL("count(turnpath:path_loss:ratio5m)")[""]; r != 2 {
		t.Errorf("recording rule turnpath:path_loss:ratio5m: %v series, want 2 (rules not loaded?)", r)
	}
	// Every answer the run credited to a hop of the path is in that hop's histogram.
	hist := query(t, client, "http://127.0.0.1:9090", `sum by (address, ttl) (turnpath_hop_rtt_seconds_count)`)
	replies := query(t, client, "http://127.0.0.1:9090", `sum by (address, ttl) (turnpath_hop_replies_total)`)
	if len(replies) < 10 {
		t.Errorf("hop series: %v", replies)
	}
	for k, n := range replies {
		if h := hist[k]; h != n {
			t.Errorf("%s: histogram count %v, replies %v", k, h, n)
		}
	}
	med := byAddr(`histogram_quantile(0.5, turnpath_rtt_seconds_bucket)`)
	if v := med[clean.String()]; !(v > 0 && v < 0.05) {
		t.Errorf("median RTT %v, want a lab's few milliseconds", med)
	}
	if v := promQL("turnpath_ebpf_probes_seen_total")[""]; v < 5000 {
		t.Errorf("turnpath_ebpf_probes_seen_total %v, want the run's probes", v)
	}
	if v := promQL("turnpath_ebpf_ringbuf_drops_total")[""]; v != 0 {
		t.Errorf("ring-buffer drops %v", v)
	}

	// promtool accepts what /metrics serves.
	resp, err := client.Get("http://127.0.0.1:9469/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics /metrics: %v\n%s", err, out)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// startPrometheus runs Prometheus in namespace ns, listening on listen, scraping only
// target every 500 ms with the repository's rules, and stops it (by its pid) when the
// test ends.
func startPrometheus(t *testing.T, ns, target, listen string) {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("../deploy/prometheus/turnpath-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 500ms
  evaluation_interval: 500ms
rule_files: [%q]
scrape_configs:
  - job_name: turnpath
    static_configs:
      - targets: [%q]
`, rules, target)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	var log strings.Builder
	cmd := exec.Command("ip", "netns", "exec", ns, "prometheus", "--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
}

// query runs an instant PromQL query and returns its samples by their labels' values
// ("" for a series without labels), retrying while Prometheus starts.
func query(t *testing.T, c *http.Client, base, q string) map[string]float64 {
	t.Helper()
	var doc struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	var err error
	for try := 0; try < 40; try++ {
		var resp *http.Response
		resp, err = c.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if err == nil && doc.Status != "success" {
				err = fmt.Errorf("status %s", doc.Status)
			}
		}
		if err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	out := map[string]float64{}
	for _, r := range doc.Data.Result {
		var key []string
		for _, k := range []string{"address", "ttl"} {
			if v, ok := r.Metric[k]; ok {
				key = append(key, v)
			}
		}
		s, _ := r.Value[1].(string)
		v, _ := strconv.ParseFloat(s, 64)
		out[strings.Join(key, "/")] = v
	}
	return out
}
