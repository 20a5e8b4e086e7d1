package bench

import (
	"bytes"
	"flag"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The samples in testdata/ were captured from the real tools inside the lab's client
// namespace (fast profile unless the name says realistic); see testdata/README.md.

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleTruth is the truth of the lab the samples in testdata were recorded in: before
// its IPv4 routers answered from their inbound interfaces.
func sampleTruth(t *testing.T) *lab.Truth {
	t.Helper()
	topo := lab.DefaultTopology()
	for i := range topo.Nodes {
		topo.Nodes[i].InboundErrors = false
	}
	tr, err := lab.NewTruth(topo)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func truthOf(t *testing.T, addr string) *lab.TargetTruth {
	t.Helper()
	tt, ok := sampleTruth(t).TargetTruth(netip.MustParseAddr(addr))
	if !ok {
		t.Fatalf("%s is not a lab target", addr)
	}
	return tt
}

func addrs(ss ...string) []netip.Addr {
	out := []netip.Addr{}
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func sameSet(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}

func TestParseAndScoreSamples(t *testing.T) {
	one := func(f func([]byte) ([]*Observation, error)) func([]byte) (*Observation, error) {
		return func(b []byte) (*Observation, error) {
			obs, err := f(b)
			if err != nil {
				return nil, err
			}
			if len(obs) != 1 {
				t.Fatalf("%d observations, want 1", len(obs))
			}
			return obs[0], nil
		}
	}
	traceroute := one(ParseTraceroute)
	turnpath := one(func(b []byte) ([]*Observation, error) { _, o, err := ParseTurnpathJSON(b); return o, err })
	mtr := func(b []byte) (*Observation, error) { return ParseMTRReport(b, netip.MustParseAddr("198.19.1.1")) }
	for _, tc := range []struct {
		file    string
		parse   func([]byte) (*Observation, error)
		target  string
		hop     int      // a TTL to check
		at      []string // its addresses
		want    Score
		maxTTL  int // highest probed TTL
		wantPrb int // probes, when the tool says
	}{
		// Classic traceroute changes the source port per probe: ECMP scatters it, and
		// coturn ignores a non-STUN datagram, so the relay never answers.
		{file: "traceroute-udp.txt", parse: traceroute, target: "198.19.1.1", hop: 3, at: []string{"198.18.5.2", "198.18.6.2", "198.18.4.2"},
			want: Score{Found: 9, Total: 10, Multi: 2}, maxTTL: 15},
		{file: "traceroute-udp-realistic.txt", parse: traceroute, target: "198.19.1.1", hop: 7, at: []string{"198.18.13.2"},
			want: Score{Found: 9, Total: 10, Multi: 3}, maxTTL: 15},
		{file: "traceroute-icmp.txt", parse: traceroute, target: "198.19.1.1", hop: 7, at: nil,
			want: Score{Found: 10, Total: 10, OnePath: true, Reached: true, DestTTL: 9}, maxTTL: 9},
		// Names in front of "(addr)"; IPv6 routers answer from the incoming interface.
		{file: "traceroute-udp6-names.txt", parse: traceroute, target: "fd51:1:1::1", hop: 4, at: []string{"fd51:0:0:9::2", "fd51:0:0:8::2"},
			want: Score{Found: 9, Total: 10, Multi: 4}, maxTTL: 12},
		{file: "scamper-udp-paris.txt", parse: traceroute, target: "198.19.1.1", hop: 8, at: nil,
			want: Score{Found: 9, Total: 10, OnePath: true}, maxTTL: 12},
		{file: "mtr-report.txt", parse: mtr, target: "198.19.1.1", hop: 7, at: nil,
			want: Score{Found: 10, Total: 10, OnePath: true, Reached: true, DestTTL: 9}, maxTTL: 9},
		{file: "mtr-report-udp-multi.txt", parse: mtr, target: "198.19.1.1", hop: 5, at: []string{"198.18.11.2", "198.18.10.2"},
			want: Score{Found: 9, Total: 10, Multi: 3}, maxTTL: 10},
		// The relay answers STUN from t1's link address, at TTL 9 on this flow's path.
		{file: "turnpath-ebpf.json", parse: turnpath, target: "198.19.1.1", hop: 9, at: []string{"198.18.17.2"},
			want: Score{Found: 10, Total: 10, OnePath: true, Reached: true, DestTTL: 9}, maxTTL: 9, wantPrb: 48},
		{file: "turnpath-realistic.json", parse: turnpath, target: "198.19.1.1", hop: 7, at: nil,
			want: Score{Found: 10, Total: 10, OnePath: true, Reached: true, DestTTL: 9}, maxTTL: 9, wantPrb: 48},
	} {
		t.Run(tc.file, func(t *testing.T) {
			o, err := tc.parse(readFile(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if o.Target != netip.MustParseAddr(tc.target) {
				t.Errorf("target %v, want %s", o.Target, tc.target)
			}
			if got := o.Hops[tc.hop]; !sameSet(got, addrs(tc.at...)) {
				t.Errorf("TTL %d: %v, want %v", tc.hop, got, tc.at)
			}
			if got := slices.Max(sortedTTLs(o)); got != tc.maxTTL {
				t.Errorf("last TTL %d, want %d", got, tc.maxTTL)
			}
			if o.Probes != tc.wantPrb {
				t.Errorf("probes %d, want %d", o.Probes, tc.wantPrb)
			}
			if got := ScoreObservation(truthOf(t, tc.target), o); got != tc.want {
				t.Errorf("score %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseScamperJSON(t *testing.T) {
	obs, err := ParseScamperJSON(readFile(t, "scamper-3.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Observation{}
	for _, o := range obs {
		got[o.Target.String()] = o
	}
	if len(got) != 3 {
		t.Fatalf("%d traces, want 3", len(got))
	}
	v4 := got["198.19.1.1"]
	if !sameSet(v4.Hops[3], addrs("198.18.6.2")) || len(v4.Hops[7]) != 0 || len(v4.Hops) != 11 || v4.Probes != 11 {
		t.Errorf("198.19.1.1: %v (probes %d)", v4.Hops, v4.Probes)
	}
	if s := ScoreObservation(truthOf(t, "198.19.1.1"), v4); s != (Score{Found: 8, Total: 10, OnePath: true}) {
		t.Errorf("198.19.1.1 score %+v", s)
	}
	// scamper 20211212 matches no ICMPv6 Time Exceeded of its udp-paris probes.
	v6 := got["fd51:1:1::1"]
	if len(v6.Hops) != 3 || len(v6.Hops[1]) != 0 {
		t.Errorf("fd51:1:1::1: %v", v6.Hops)
	}
}

func TestParseTurnpathJSONTwoTargets(t *testing.T) {
	run, obs, err := ParseTurnpathJSON(readFile(t, "turnpath-2.json"))
	if err != nil {
		t.Fatal(err)
	}
	if run.Engine != "ebpf" || len(obs) != 2 {
		t.Fatalf("engine %q, %d targets", run.Engine, len(obs))
	}
	all, v4, v6, probes, err := scoreMany(sampleTruth(t), addrs("198.19.1.1", "fd51:1:1::1", "198.19.1.2"), obs)
	if err != nil {
		t.Fatal(err)
	}
	// 198.19.1.2 is not in the report: it counts with nothing found.
	if all != (Totals{Targets: 3, Reached: 2, OnePath: 3, Found: 20, Total: 30}) || probes != 60 {
		t.Errorf("all %+v, probes %d", all, probes)
	}
	if v4.Targets != 2 || v6 != (Totals{Targets: 1, Reached: 1, OnePath: 1, Found: 10, Total: 10}) {
		t.Errorf("v4 %+v v6 %+v", v4, v6)
	}
	if _, _, err := ParseTurnpathJSON([]byte(`{"schema":"turnpath.trace/v9"}`)); err == nil {
		t.Error("unknown schema accepted")
	}
}

func TestScoreEdgeCases(t *testing.T) {
	tt := truthOf(t, "198.19.1.1")
	base := func() *Observation {
		o := NewObservation(tt.Addr())
		for ttl, a := range []string{"198.18.1.2", "198.18.2.2", "198.18.5.2", "198.18.7.2", "198.18.10.2", "198.18.13.2", "", "198.18.16.2", "198.19.1.1"} {
			o.Probed(ttl + 1)
			if a != "" {
				o.Add(ttl+1, netip.MustParseAddr(a))
			}
		}
		return o
	}
	o := base()
	if s := ScoreObservation(tt, o); s != (Score{Found: 10, Total: 10, OnePath: true, Reached: true, DestTTL: 9}) {
		t.Errorf("complete: %+v", s)
	}
	// A wrong router, a star where nobody is silent, an address past the truth.
	o = base()
	o.Hops[2] = addrs("198.18.9.2")
	o.Hops[4] = addrs()
	if s := ScoreObservation(tt, o); s.Found != 8 || s.Wrong != 1 || s.OnePath {
		t.Errorf("wrong hops: %+v", s)
	}
	// Stopped early: TTLs not probed are not found.
	o = base()
	for ttl := 5; ttl <= 9; ttl++ {
		delete(o.Hops, ttl)
	}
	if s := ScoreObservation(tt, o); s.Found != 4 || s.Reached {
		t.Errorf("stopped at TTL 4: %+v", s)
	}
	// Hops from two different branches cannot be one path.
	o = base()
	o.Hops[5] = addrs("198.18.11.2") // r5b: the long branch, so r6 is at TTL 7
	if s := ScoreObservation(tt, o); s.Found != 10 || s.OnePath {
		t.Errorf("mixed branches: %+v", s)
	}
	// IPv4-mapped addresses are the same as plain ones.
	o = base()
	o.Add(1, netip.MustParseAddr("::ffff:198.18.1.2"))
	if len(o.Hops[1]) != 1 {
		t.Errorf("mapped address added twice: %v", o.Hops[1])
	}
}

func TestParseGoBench(t *testing.T) {
	bs, err := ParseGoBench(readFile(t, "gobench.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 20 {
		t.Fatalf("%d results, want 20 (10 benchmarks, -count 2)", len(bs))
	}
	b := bs[0]
	if b.Name != "BenchmarkBuildUDP/v4-stun" || b.Pkg != "github.com/turnpath/turnpath/probe" || b.NsPerOp != 125.1 ||
		b.MBPerS != 383.69 || b.AllocsPerOp != 0 || b.Iterations != 205226 {
		t.Errorf("first result %+v", b)
	}
	if _, err := ParseGoBench([]byte("PASS\n")); err == nil {
		t.Error("no benchmark lines accepted")
	}
}

func TestCaptureRTTs(t *testing.T) {
	targets := addrs("198.19.1.1", "198.19.1.2")
	flow := CaptureFlow{SPort: 50000, DPort: 3478, Targets: targets}
	for _, tc := range []struct {
		engine        string
		pcap, samples string
		want          int     // samples matched
		maxMedianUS   float64 // |error|
	}{
		{engine: "socket", pcap: "ts-socket.pcap", samples: "ts-socket.json", want: 34, maxMedianUS: 50},
		{engine: "ebpf", pcap: "ts-ebpf.pcap", samples: "ts-ebpf.json", want: 36, maxMedianUS: 50},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			pkts, err := ReadPcap(readFile(t, tc.pcap))
			if err != nil {
				t.Fatal(err)
			}
			wire := CaptureRTTs(pkts, flow)
			var samples []RTTSample
			o := Outcome{Stdout: readFile(t, tc.samples), ExitCode: 0}
			if tc.engine == "socket" {
				samples, err = turnpathSamples(o)
			} else {
				samples, err = ebpfSamples(o)
			}
			if err != nil {
				t.Fatal(err)
			}
			var run tsRun
			compareRTTs(&run, samples, wire)
			if run.Reported != tc.want || run.Matched != tc.want {
				t.Errorf("matched %d of %d, want %d of %d", run.Matched, run.Reported, tc.want, tc.want)
			}
			if run.MedianUS > tc.maxMedianUS || run.P99US < run.MedianUS {
				t.Errorf("median %.1f µs p99 %.1f µs", run.MedianUS, run.P99US)
			}
			// The STUN answers (TTL 9, from t1's link address) are matched by flowtag.
			if _, ok := wire[ProbeKey{Dst: targets[1], ID: 9}]; !ok {
				t.Error("STUN answer of 198.19.1.2 TTL 9 not in the capture")
			}
		})
	}
}

func TestReadPcapErrors(t *testing.T) {
	if _, err := ReadPcap([]byte("short")); err == nil {
		t.Error("short file accepted")
	}
	b := readFile(t, "ts-socket.pcap")
	if pkts, err := ReadPcap(b[:len(b)-3]); err == nil || len(pkts) == 0 {
		t.Errorf("truncated file: %d packets, err %v; want the packets before the cut and an error", len(pkts), err)
	}
	png := slices.Clone(b)
	copy(png, []byte{0x0a, 0x0d, 0x0d, 0x0a})
	if _, err := ReadPcap(png); err == nil {
		t.Error("pcapng accepted")
	}
}

func TestStats(t *testing.T) {
	if s := Summarize([]float64{3, 1, 2}); s != (Summary{N: 3, Median: 2, Min: 1, Max: 3}) {
		t.Errorf("odd: %+v", s)
	}
	if s := Summarize([]float64{4, 1, 2, math.NaN(), 3}); s != (Summary{N: 4, Median: 2.5, Min: 1, Max: 4}) {
		t.Errorf("even with NaN: %+v", s)
	}
	if s := Summarize(nil); s.N != 0 || s.Format("%.1f", " s") != "–" {
		t.Errorf("empty: %+v", s)
	}
	v := []float64{}
	for i := 1; i <= 101; i++ {
		v = append(v, float64(i))
	}
	if q := Quantile(v, 0.99); q != 100 {
		t.Errorf("p99 of 1..101 = %v, want 100", q)
	}
	if q := Quantile([]float64{1, 2}, 0.5); q != 1.5 {
		t.Errorf("median of 1,2 = %v", q)
	}
	if r := Ratios([]float64{10, math.NaN(), 30, 8}, []float64{2, 1, 0, 4}); !slices.Equal(r, []float64{5, 2}) {
		t.Errorf("ratios %v", r)
	}
	for _, tc := range []struct {
		got, want string
	}{
		{Summary{N: 3, Median: 0.153, Min: 0.15, Max: 0.21}.Seconds(), "0.153 s (0.150–0.210)"},
		{Summary{N: 3, Median: 20.04, Min: 20.01, Max: 20.09}.Seconds(), "20.0 s (20.0–20.1)"},
		{Summary{N: 2, Median: 1, Min: 1, Max: 1}.Percent(), "100 %"},
		{Summary{N: 5, Median: 0.9, Min: 0.8, Max: 1}.Percent(), "90 % (80–100)"},
		{Summary{N: 5, Median: 104.2, Min: 95.1, Max: 130}.Times(), "104× (95–130)"},
		{Summary{N: 5, Median: 5.94, Min: 5.4, Max: 6.3}.Times(), "5.9× (5.4–6.3)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got := CommandLine([]string{"scamper", "-c", "trace -P udp-paris -d 3478", "-f", "it's", "a|b"})
	want := `scamper -c 'trace -P udp-paris -d 3478' -f 'it'\''s' 'a|b'`
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	e := &Env{Turnpath: "/tmp/x/turnpath", Self: "/tmp/x/tpbench", Dir: "/tmp/x"}
	if got := e.display([]string{"/tmp/x/turnpath", "trace", "-f", "/tmp/x/targets.txt"}); got != "turnpath trace -f targets.txt" {
		t.Errorf("display: %s", got)
	}
}

func TestMarkdownGolden(t *testing.T) {
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	rep := &Report{
		Schema: ReportSchema, Mode: "full", Started: start, Finished: start.Add(421 * time.Second), Seconds: 421,
		Command: "make bench", Lab: "tpbench",
		Machine: Machine{Kernel: "6.18.44 x86_64", OS: "Debian GNU/Linux 12 (bookworm)", CPU: "Intel Xeon", Cores: 2,
			MemoryGB: 23.5, Go: "go version go1.26.8 linux/amd64", Turnpath: "turnpath v0.1", Commit: "abc1234",
			Tools: map[string]string{"traceroute": "2.1.2", "mtr": "0.95"}},
		Sections: []*Result{
			{ID: "onepath", Title: "One path", Status: StatusOK, Seconds: 95,
				Headlines: []string{"turnpath is **12× faster**."},
				Text:      []string{"What is measured."},
				Tables: []Table{{Title: "**fast profile**:", Columns: []string{"prober", "wall time"},
					Rows: [][]string{{"turnpath", "0.15 s"}, {"a|b", "`x`"}}}},
				Notes:    []string{"a note"},
				Commands: []string{"turnpath trace 198.19.1.1"}},
			{ID: "capacity", Title: "Capacity", Status: StatusNotMeasured, Text: []string{"Later."}},
			{ID: "many", Title: "Many targets", Status: StatusFailed, Error: "scamper:\n timed out", Seconds: 3},
		},
	}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b, "BENCHMARKS.json"); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.golden.md")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readFile(t, "report.golden.md")
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("markdown differs from %s (go test ./bench -run Golden -update):\n%s", golden, b.String())
	}
	if !strings.Contains(b.String(), "(#1-one-path)") {
		t.Error("no anchor link to section 1")
	}
}

func TestCompactNumberArrays(t *testing.T) {
	in := "{\n  \"a\": [\n    1,\n    -2,\n    3.5e-3\n  ],\n  \"b\": [\n    \"x\",\n    \"y\"\n  ]\n}"
	want := "{\n  \"a\": [1,-2,3.5e-3],\n  \"b\": [\n    \"x\",\n    \"y\"\n  ]\n}"
	if got := string(compactNumberArrays([]byte(in))); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
