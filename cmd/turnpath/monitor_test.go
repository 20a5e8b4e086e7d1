package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/store"
)

// Bad input: one line, exit 2, before any probe.
func TestMonitorUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"monitor"}, "no target"},
		{[]string{"monitor", "-i", "5ms", "198.18.0.1"}, "below the minimum 10ms"},
		{[]string{"monitor", "--cycles", "0", "198.18.0.1"}, "--cycles 0"},
		{[]string{"monitor", "-c", "-3", "198.18.0.1"}, "--cycles -3"},
		{[]string{"monitor", "--thresholds", "latency=50", "198.18.0.1"}, `unknown key "latency"`},
		{[]string{"monitor", "--thresholds", "rtt=fast", "198.18.0.1"}, "rtt=fast"},
		{[]string{"monitor", "--verdict", "zoom", "198.18.0.1"}, "unknown --verdict"},
		{[]string{"monitor", "--format", "xml", "198.18.0.1"}, "unknown --format"},
		{[]string{"monitor", "--emit", "1ms", "198.18.0.1"}, "--emit 1ms below the minimum"},
		{[]string{"monitor", "--verdict", "none", "--thresholds", "rtt=50", "198.18.0.1"}, "--thresholds without a verdict"},
		{[]string{"monitor", "--proto", "icmp", "--thresholds", "rtt=50", "198.18.0.1"}, "--thresholds without a verdict"},
		{[]string{"monitor", "--max-ttl", "0", "198.18.0.1"}, "max TTL 0"},
		{[]string{"monitor", "no-such-host.invalid"}, "unknown host"},
	} {
		r := run(t, 20*time.Second, tp(tc.args...)...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, r.code, r.stderr)
			continue
		}
		oneLine(t, r, tc.want)
	}
}

type monitorJSON struct {
	Schema  string `json:"schema"`
	Rounds  int    `json:"rounds"`
	Targets []struct {
		Reached  bool     `json:"reached"`
		DestTTL  int      `json:"dest_ttl"`
		PathLoss *float64 `json:"path_loss_pct"`
		Verdict  struct {
			Pass     bool     `json:"pass"`
			Reasons  []string `json:"reasons"`
			FirstTTL int      `json:"first_ttl"`
		} `json:"verdict"`
		Late int `json:"late_replies"`
		Hops []struct {
			TTL        int     `json:"ttl"`
			Sent       int     `json:"sent"`
			Received   int     `json:"received"`
			Silent     bool    `json:"silent"`
			Loss       float64 `json:"loss_pct"`
			Forward    float64 `json:"forward_loss_pct"`
			Reply      float64 `json:"reply_loss_pct"`
			Avg        float64 `json:"avg_ms"`
			Responders []struct {
				Addr string `json:"addr"`
			} `json:"responders"`
		} `json:"hops"`
	} `json:"targets"`
}

// The lab's fast profile with 10 % of the probes dropped in r4's forward path: the hops
// up to r4 show no forward loss, every answering hop past it and the path show ~10 %, and
// none of it is reply loss. Only the probes (UDP to 3478) are dropped, not the answers
// coming back through r4, so the loss is the forward path's alone.
func TestMonitorLabForwardLoss(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (make test-deps installs nftables)")
	}
	prefix, _, inLab := cliLab(t, "tpmon")
	r4 := prefix + "-r4"
	for _, args := range [][]string{
		{"add", "table", "inet", "tploss"},
		{"add", "chain", "inet", "tploss", "lossy", "{ type filter hook forward priority 0; }"},
		{"add", "rule", "inet", "tploss", "lossy", "udp", "dport", "3478", "numgen", "random", "mod", "100", "<", "10", "drop"},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", r4, "nft"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	// 1000 rounds: a hop's loss rate then has a standard deviation of 0.95 points at
	// 10 %, so ± 4 points is four of them (at 300 rounds, the minimum, 2.3: one run
	// in ten would fail somewhere on the path by chance alone).
	const cycles = 1000
	r := run(t, 120*time.Second, inLab("monitor", "--report", "--format", "json", "-n", "-c", strconv.Itoa(cycles), "-i", "20ms", "198.19.1.1")...)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (10 %% loss fails the verdict): %s", r.code, r.stderr)
	}
	var doc monitorJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if doc.Schema != "turnpath.monitor/v1" || doc.Rounds != cycles || len(doc.Targets) != 1 {
		t.Fatalf("schema %q rounds %d targets %d", doc.Schema, doc.Rounds, len(doc.Targets))
	}
	tg := doc.Targets[0]
	if !tg.Reached || tg.PathLoss == nil || math.Abs(*tg.PathLoss-10) > 4 {
		t.Errorf("reached %v path loss %v, want ~10 %%", tg.Reached, tg.PathLoss)
	}
	if tg.Verdict.Pass || tg.Verdict.FirstTTL != 5 {
		t.Errorf("verdict %+v, want a fail first seen at TTL 5 (past r4)", tg.Verdict)
	}
	if len(tg.Hops) != tg.DestTTL || tg.DestTTL < 6 {
		t.Fatalf("%d hops, destination at %d", len(tg.Hops), tg.DestTTL)
	}
	for _, h := range tg.Hops {
		if h.Sent != cycles {
			t.Errorf("TTL %d: sent %d, want %d", h.TTL, h.Sent, cycles)
		}
		if h.Silent {
			continue
		}
		switch {
		case h.TTL <= 4 && h.Forward >= 3:
			t.Errorf("TTL %d (up to r4): forward loss %.1f%%, want < 3", h.TTL, h.Forward)
		case h.TTL > 4 && math.Abs(h.Forward-10) > 4:
			t.Errorf("TTL %d (past r4): forward loss %.1f%%, want 10 ± 4", h.TTL, h.Forward)
		}
		if h.Reply > 3 {
			t.Errorf("TTL %d: reply loss %.1f%%, want near 0", h.TTL, h.Reply)
		}
	}
	// Thresholds that tolerate the loss pass, in the text report too.
	r = run(t, 60*time.Second, inLab("monitor", "-n", "-c", "50", "-i", "20ms", "--thresholds", "loss=40", "198.19.1.1")...)
	if r.code != 0 || !strings.Contains(r.stdout, "Fwd%") || !strings.Contains(r.stdout, "verdict: pass") {
		t.Errorf("text report, loss=40: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("%s", r.stdout)

	// Open-ended: SIGTERM ends the run and the report follows.
	cmd := exec.Command(inLab()[0], inLab("monitor", "-n", "-i", "20ms", "198.19.1.1")[1:]...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	signalAndWait(t, cmd, syscall.SIGTERM, 20*time.Second)
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(so.String(), "verdict: FAIL") {
		t.Errorf("after SIGTERM: exit %d, want 1 and a report\n%s\n%s", code, so.String(), se.String())
	}
}

// profileLab brings a lab of profile up with the CLI and down when the test ends (cliLab with
// a profile), and runs turnpath in its client namespace.
func profileLab(t *testing.T, stem, profile string) (prefix string, inLab func(args ...string) []string) {
	t.Helper()
	needRoot(t)
	b := make([]byte, 3)
	rand.Read(b)
	prefix = stem + hex.EncodeToString(b)
	if r := run(t, 60*time.Second, tp("lab", "up", "--prefix", prefix, "--profile", profile)...); r.code != 0 {
		t.Fatalf("lab up: %d %s", r.code, r.stderr)
	}
	t.Cleanup(func() { run(t, 60*time.Second, tp("lab", "down", "--prefix", prefix)...) })
	return prefix, func(args ...string) []string {
		return append([]string{"ip", "netns", "exec", prefix + "-client", binPath}, args...)
	}
}

// The realistic profile keeps Linux's ICMP rate limits (one Time Exceeded per second per
// destination after a burst): at 10 rounds/s the routers answer a fraction of the probes.
// That is reply loss; the path loses nothing (the relay's STUN answers are not ICMP), so
// forward and path loss stay low and the verdict passes.
func TestMonitorLabRateLimited(t *testing.T) {
	_, inLab := profileLab(t, "tpmonr", "realistic")
	const cycles = 150
	r := run(t, 120*time.Second, inLab("monitor", "--format", "json", "-n", "-c", strconv.Itoa(cycles), "-i", "100ms", "198.19.1.1")...)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0 (verdict passes): %s\n%s", r.code, r.stderr, r.stdout)
	}
	var doc monitorJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	tg := doc.Targets[0]
	if !tg.Verdict.Pass || tg.PathLoss == nil || *tg.PathLoss >= 2 {
		t.Errorf("verdict %+v path loss %v, want pass and < 2 %%", tg.Verdict, tg.PathLoss)
	}
	limited := 0
	for _, h := range tg.Hops {
		if h.Silent || h.TTL == tg.DestTTL {
			continue
		}
		t.Logf("TTL %d: loss %.1f%% forward %.1f%% reply %.1f%%", h.TTL, h.Loss, h.Forward, h.Reply)
		if h.Forward >= 3 {
			t.Errorf("TTL %d: forward loss %.1f%% (loss %.1f%%), want < 3", h.TTL, h.Forward, h.Loss)
		}
		if h.Reply >= 20 {
			limited++
		}
	}
	if limited == 0 {
		t.Errorf("no hop shows the rate limit as reply loss: %s", r.stdout)
	}
}

type monitorRecord struct {
	Schema  string    `json:"schema"`
	Time    time.Time `json:"time"`
	Rounds  int       `json:"rounds"`
	Final   bool      `json:"final"`
	Outages int       `json:"outages"`
	Down    bool      `json:"down"`
	Target  string    `json:"target"`
	Verdict *struct {
		Pass bool `json:"pass"`
	} `json:"verdict"`
	Hops []struct {
		TTL  int `json:"ttl"`
		Sent int `json:"sent"`
	} `json:"hops"`
}

func monitorRecords(t *testing.T, out string) []monitorRecord {
	t.Helper()
	var recs []monitorRecord
	for line := range strings.Lines(out) {
		var rec monitorRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("jsonl line %q: %v", line, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// jsonl and csv stream a record per target every --emit and the final one at the end; the
// verdict is only for UDP to 3478 unless asked for. The client's interface going down and
// coming back is an outage the run outlives: it re-attaches and goes on probing.
func TestMonitorLabStreamsAndOutage(t *testing.T) {
	_, client, inLab := cliLab(t, "tpmons")

	r := run(t, 60*time.Second, inLab("monitor", "--format", "jsonl", "--emit", "300ms", "-n", "-c", "40", "-i", "50ms", "198.19.1.1", "198.19.1.2")...)
	if r.code != 0 {
		t.Fatalf("jsonl: exit %d: %s", r.code, r.stderr)
	}
	recs := monitorRecords(t, r.stdout)
	var streamed, final int
	last := map[string]int{}
	for _, rec := range recs {
		if rec.Schema != "turnpath.monitor/v1" || rec.Time.Location() != time.UTC || rec.Verdict == nil || len(rec.Hops) == 0 {
			t.Errorf("record %+v", rec)
		}
		if rec.Rounds < last[rec.Target] {
			t.Errorf("%s: rounds went back from %d to %d", rec.Target, last[rec.Target], rec.Rounds)
		}
		last[rec.Target] = rec.Rounds
		if rec.Final {
			final++
			if rec.Rounds != 40 || rec.Hops[0].Sent != 40 {
				t.Errorf("final record: rounds %d, first hop sent %d, want 40", rec.Rounds, rec.Hops[0].Sent)
			}
		} else {
			streamed++
		}
	}
	// 40 rounds of 50 ms are 2 s: records at the first round and every 300 ms after.
	if final != 2 || streamed < 2*4 {
		t.Errorf("%d final and %d streamed records, want 2 and at least 8:\n%s", final, streamed, r.stdout)
	}

	// CSV of ICMP probes: no verdict (not UDP 3478), one row per hop, reached: exit 0.
	r = run(t, 60*time.Second, inLab("monitor", "--format", "csv", "--proto", "icmp", "-n", "-c", "5", "-i", "50ms", "198.19.1.1")...)
	if r.code != 0 {
		t.Fatalf("csv: exit %d: %s", r.code, r.stderr)
	}
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(rows) < 2 || rows[0][0] != "time" {
		t.Fatalf("csv: %v\n%s", err, r.stdout)
	}
	for _, row := range rows[1:] {
		if len(row) != len(rows[0]) || row[7] != "" {
			t.Errorf("csv row %v: want %d columns and no verdict", row, len(rows[0]))
		}
	}

	// The outage: the client's link to r1 goes down (its routes go with it) for two
	// seconds, then comes back with them.
	out, err := exec.Command("ip", "-n", client, "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	var dev string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(f[1], "lo") {
			dev, _, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			break
		}
	}
	routes, err := exec.Command("ip", "-n", client, "-4", "route", "show").Output()
	if err != nil || dev == "" {
		t.Fatalf("client interface %q, routes %v", dev, err)
	}
	cmd := exec.Command(inLab()[0], inLab("monitor", "--format", "jsonl", "--emit", "200ms", "-n", "-i", "100ms", "198.19.1.1")[1:]...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(1500 * time.Millisecond)
	if out, err := exec.Command("ip", "-n", client, "link", "set", dev, "down").CombinedOutput(); err != nil {
		t.Fatalf("link down: %v: %s", err, out)
	}
	time.Sleep(2 * time.Second)
	if out, err := exec.Command("ip", "-n", client, "link", "set", dev, "up").CombinedOutput(); err != nil {
		t.Fatalf("link up: %v: %s", err, out)
	}
	for line := range strings.Lines(string(routes)) {
		// The connected route comes back by itself; the others are put back.
		args := append([]string{"-n", client, "route", "replace"}, strings.Fields(line)...)
		exec.Command("ip", args...).Run()
	}
	time.Sleep(2500 * time.Millisecond)
	signalAndWait(t, cmd, syscall.SIGTERM, 20*time.Second)
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("after the outage: exit %d\n%s", code, se.String())
	}
	t.Logf("stderr:\n%s", se.String())
	recs = monitorRecords(t, so.String())
	var down, before, after int
	for _, rec := range recs {
		switch {
		case rec.Down:
			down++
			before = rec.Rounds
		case rec.Final:
			after = rec.Rounds
			if rec.Outages != 1 {
				t.Errorf("final record: %d outages, want 1", rec.Outages)
			}
		}
	}
	// About 15 rounds before the outage and 20 after it (the wait for the way out is not
	// counted in rounds).
	if down != 1 || before < 5 || after-before < 10 {
		t.Errorf("down records %d, rounds at the outage %d, at the end %d\n%s", down, before, after, se.String())
	}
	if !strings.Contains(se.String(), "went down: waiting for the way out") || !strings.Contains(se.String(), "attached again") {
		t.Errorf("stderr does not tell the outage:\n%s", se.String())
	}
}

// monitor with the unattended and AS flags: the report written atomically to --output,
// every responder with exactly the AS number and name its source holds (the lab's whois
// service, Team Cymru records in the lab's dnsmasq, and a file with other data: different,
// each right), IPv4 and IPv6, the target's AS path, and the run's intervals recorded in
// --store for turnpath history.
func TestMonitorLabASNStoreOutput(t *testing.T) {
	al := newASNLab(t)
	topo := al.l.Topology()
	other := map[string]string{}
	for _, ro := range topo.RouteObjects() {
		other[ro.Prefix.String()] = fmt.Sprintf("%d OTHER-%s", 65536+ro.Origin.Number-64496, ro.Node)
	}
	otherFile := writeASNFile(t, other)
	dir := t.TempDir()
	db := filepath.Join(dir, "history.db")
	for i, tc := range []struct {
		name string
		args []string
		want func(ro lab.RouteObject) (uint32, string)
	}{
		{"radb", []string{"--asn", "radb", "--whois", al.whois4}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.Descr }},
		{"cymru-dns", []string{"-z", "--dns-server", al.dns}, func(ro lab.RouteObject) (uint32, string) { return ro.Origin.Number, ro.Origin.CymruName() }},
		{"cymru-whois", []string{"--asn", "cymru-whois", "--whois", al.whois6}, func(ro lab.RouteObject) (uint32, string) {
			return ro.Origin.Number, ro.Origin.CymruName()
		}},
		{"file", []string{"--asn", "file:" + otherFile}, func(ro lab.RouteObject) (uint32, string) {
			return 65536 + ro.Origin.Number - 64496, "OTHER-" + ro.Node
		}},
	} {
		out := filepath.Join(dir, tc.name+".json")
		args := append([]string{"monitor", "-n", "--format", "json", "-c", "20", "-i", "50ms", "--emit", "200ms",
			"--asn-private", "--cache-dir", "", "--output", out}, tc.args...)
		if i == 0 {
			args = append(args, "--store", db)
		}
		r := run(t, 60*time.Second, al.inLab(append(args, "198.19.1.1", "fd51:1:2::5")...)...)
		if r.code != 0 || r.stdout != "" {
			t.Fatalf("%s: exit %d, stdout %q: %s", tc.name, r.code, r.stdout, r.stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var doc report.MonitorRun
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.ASN == nil || doc.ASN.Failures != 0 || len(doc.Targets) != 2 {
			t.Fatalf("%s: asn_lookups %+v, %d targets", tc.name, doc.ASN, len(doc.Targets))
		}
		for _, tg := range doc.Targets {
			var path []string
			for _, h := range tg.Hops {
				for k, rs := range h.Responders {
					ro, _ := topo.OriginOf(rs.Addr)
					n, name := tc.want(ro)
					if rs.AS == nil || rs.AS.ASN != n || rs.AS.Name != name {
						t.Errorf("%s: %v TTL %d %v: AS %+v, want AS%d %q", tc.name, tg.Addr, h.TTL, rs.Addr, rs.AS, n, name)
					}
					if k == 0 && (len(path) == 0 || path[len(path)-1] != fmt.Sprintf("AS%d", n)) {
						path = append(path, fmt.Sprintf("AS%d", n))
					}
				}
			}
			if strings.Join(tg.ASPath, " ") != strings.Join(path, " ") || len(path) < 2 {
				t.Errorf("%s: %v: as_path %v, want %v", tc.name, tg.Addr, tg.ASPath, path)
			}
		}
	}
	// The text report: the AS before the address, as mtr -z.
	r := run(t, 60*time.Second, al.inLab("monitor", "-n", "-c", "5", "-i", "50ms", "--asn", "radb", "--whois", al.whois4,
		"--asn-private", "--cache-dir", "", "198.19.2.5")...)
	if r.code != 0 || !strings.Contains(r.stdout, "AS64497 198.18.2.2") || !strings.Contains(r.stdout, "AS path AS64496 AS64497") {
		t.Errorf("text (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}
	// 20 rounds of 50 ms with an interval recorded every 200 ms, and the last one.
	r = run(t, 10*time.Second, tp("history", "--store", db, "--format", "json")...)
	var hist historyJSON
	if err := json.Unmarshal([]byte(r.stdout), &hist); err != nil || len(hist.Runs) != 1 || hist.Runs[0].Command != "monitor" || hist.Runs[0].Status != "ok" {
		t.Fatalf("history: %v %s %s", err, r.stdout, r.stderr)
	}
	st, err := store.Open(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	views, err := st.Views(context.Background(), store.Filter{})
	if err != nil || len(views) < 2*4 {
		t.Errorf("%d target intervals recorded (%v), want at least 8", len(views), err)
	}
}
