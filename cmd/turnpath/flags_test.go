package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/mda"
)

// The on-link address of bareNetns that nothing answers: should a check below be missing,
// the probes stay in the test's own namespace.
const bareDst = "198.18.250.2"

// TestFlagErrorsInNetns: flag values the flag parser takes but turnpath must refuse before
// it sends anything: exit 2 and one line naming the problem (issue 11, items 6b-6e).
func TestFlagErrorsInNetns(t *testing.T) {
	needRoot(t)
	ns := bareNetns(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// 20 (IPv4) + 8 (UDP) + 1473 + 2 steering bytes = 1503 > the veth's 1500.
	big := "hex:" + strings.Repeat("ab", 1473)
	for _, tc := range []struct {
		args []string
		want string
	}{
		// 6b: the source port range must fit 1..65534 (65535 cannot be a flow id).
		{[]string{"trace", "--sport", "65535"}, "--sport 65535"},
		{[]string{"trace", "--proto", "icmp", "--sport", "65535"}, "--sport 65535"},
		{[]string{"multipath", "--sport", "65280"}, "65534"}, // 256 flows: 65280..65535
		{[]string{"multipath", "--sport", "65500", "--max-flows", "64"}, "65534"},
		{[]string{"multipath", "--max-flows", "65535"}, "--max-flows 65535"},
		// 6c: every float flag finite, the rate not negative.
		{[]string{"trace", "--rate", "NaN", "--format", "json"}, "--rate NaN"},
		{[]string{"trace", "--rate", "Inf"}, "--rate +Inf"},
		{[]string{"trace", "--rate", "-Inf"}, "--rate -Inf"},
		{[]string{"trace", "--rate", "-1"}, "--rate -1"},
		{[]string{"trace", "--rate", "1e-300"}, "--rate 1e-300"},
		{[]string{"trace", "--scan", "--pmtu"}, "--scan does not discover the path MTU"},
		{[]string{"trace", "--scan", "-q", "3"}, "--queries is trace's"},
		{[]string{"trace", "--scan", "--scan-time", "-1s"}, "--scan-time -1s"},
		{[]string{"trace", "--format", "dot", "--scan=false"}, "--format dot is the union view of a scan"},
		{[]string{"trace", "--format", "svg", "--scan=false"}, "--format svg is the union view of a scan"},
		{[]string{"trace", "--format", "dot", "-q", "2"}, "--queries is trace's"},
		{[]string{"multipath", "--rate", "NaN", "--format", "json"}, "--rate NaN"},
		{[]string{"multipath", "--rate", "+Inf"}, "--rate +Inf"},
		{[]string{"multipath", "--rate", "-2"}, "--rate -2"},
		{[]string{"multipath", "--confidence", "NaN"}, "--confidence NaN"},
		{[]string{"multipath", "--confidence", "Inf"}, "--confidence +Inf"},
		// 6d: a probe larger than the interface's MTU.
		{[]string{"trace", "--payload", big}, "probe of 1503 bytes exceeds the MTU 1500 of va"},
		{[]string{"multipath", "--payload", big}, "probe of 1503 bytes exceeds the MTU 1500 of va"},
		// 6e: an --svg path that cannot be written, found before the run.
		{[]string{"multipath", "--svg", "/nonexistent/dir/mp.svg"}, "does not exist"},
		{[]string{"multipath", "--level", "as"}, "unknown --level \"as\" (interface or router)"},
		{[]string{"multipath", "--svg", dir}, "is a directory"},
		{[]string{"multipath", "--svg", filepath.Join(file, "mp.svg")}, "is not a directory"},
	} {
		args := append([]string{"ip", "netns", "exec", ns, binPath}, append(tc.args, "-n", bareDst)...)
		start := time.Now()
		r := run(t, 60*time.Second, args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, r.code, r.stderr)
			continue
		}
		oneLine(t, r, tc.want)
		if r.stdout != "" {
			t.Errorf("%v: output on a usage error: %q", tc.args, r.stdout)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("%v: refused only after %v", tc.args, el)
		}
	}
}

// mpDoc is the part of multipath's JSON these tests read.
type mpDoc struct {
	Options struct {
		FlowBase int `json:"flow_base"`
	} `json:"options"`
	Targets []struct {
		Sent  int `json:"probes_sent"`
		Flows []struct {
			SPort int `json:"sport"`
		} `json:"flows"`
	} `json:"targets"`
}

// multipathNetns runs a short multipath toward the silent bareDst (exit 1: not reached).
func multipathNetns(t *testing.T, ns string, args ...string) mpDoc {
	t.Helper()
	all := append([]string{"ip", "netns", "exec", ns, binPath, "multipath", "-n", "--format", "json", "-m", "2", "-w", "100ms", "--rate", "0"}, args...)
	r := run(t, 60*time.Second, append(all, bareDst)...)
	if r.code != 1 {
		t.Fatalf("%v: exit %d, want 1 (not reached)\n%s", args, r.code, r.stderr)
	}
	var doc mpDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Targets) != 1 {
		t.Fatalf("%v: %v\n%s", args, err, r.stdout)
	}
	return doc
}

// 6a: fewer than 32 flows for one target is the user's choice, not "too many targets".
// 6h: without --sport every run draws its own flow base (reruns are independent samples
// of the routers' hash); with --sport the run is reproducible.
func TestMultipathFlowsInNetns(t *testing.T) {
	needRoot(t)
	ns := bareNetns(t)
	doc := multipathNetns(t, ns, "--max-flows", "8", "--sport", "40000")
	if doc.Options.FlowBase != 40000 || doc.Targets[0].Sent == 0 {
		t.Errorf("--max-flows 8 --sport 40000: flow base %d, %d probes", doc.Options.FlowBase, doc.Targets[0].Sent)
	}
	for _, f := range doc.Targets[0].Flows {
		if f.SPort < 40000 || f.SPort > 40007 {
			t.Errorf("--max-flows 8 --sport 40000: flow sport %d", f.SPort)
		}
	}
	bases := map[int]bool{}
	for range 3 {
		b := multipathNetns(t, ns).Options.FlowBase
		if b < randomBaseLo || b > 65535-256 {
			t.Errorf("random flow base %d outside %d..%d", b, randomBaseLo, 65535-256)
		}
		bases[b] = true
	}
	if len(bases) < 2 {
		t.Errorf("three runs without --sport used the flow bases %v: want a new one per run", bases)
	}
}

func TestFlowsPerTarget(t *testing.T) {
	for _, tc := range []struct {
		targets, maxFlows, want int
		err                     string
	}{
		{1, 256, 256, ""},
		{1, 8, 8, ""}, // was refused: "1 targets: at most 2047 in one run"
		{1, 31, 31, ""},
		{300, 256, mda.MaxEngineTargets / 300, ""}, // lowered to fit the engine
		{2047, 256, 32, ""},
		{2048, 256, 0, "2048 targets: at most 2047 in one run"},
		{8191, 8, 8, ""},
		{8192, 8, 0, "8192 targets: at most 8191 in one run with --max-flows 8"},
	} {
		got, err := flowsPerTarget(tc.targets, tc.maxFlows)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%d targets, --max-flows %d: %d, %v; want %d", tc.targets, tc.maxFlows, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%d targets, --max-flows %d: err %v, want %q", tc.targets, tc.maxFlows, err, tc.err)
		}
	}
}

func TestRandomFlowBase(t *testing.T) {
	for _, flows := range []int{1, 32, 256, 4096, 40000, 65534} {
		for range 200 {
			b := randomFlowBase(flows)
			if b < 1 || int(b)+flows-1 > 65534 || flows <= 65535-randomBaseLo && int(b) < randomBaseLo {
				t.Fatalf("%d flows: base %d", flows, b)
			}
		}
	}
}

func TestCheckRate(t *testing.T) {
	for _, ok := range []float64{0, 0.001, 1, 1000, 1e9} {
		if err := checkRate(ok); err != nil {
			t.Errorf("rate %v: %v", ok, err)
		}
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 1e-300} {
		if err := checkRate(bad); err == nil {
			t.Errorf("rate %v accepted", bad)
		}
	}
}

func TestCheckOutputPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	if err := checkOutputPath(filepath.Join(dir, "mp.svg")); err != nil {
		t.Errorf("writable: %v", err)
	}
	if err := checkOutputPath(file); err != nil {
		t.Errorf("existing file: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the check left files behind: %v", ents)
	}
	for path, want := range map[string]string{
		"/nonexistent/x/mp.svg":           "does not exist",
		dir:                               "is a directory",
		filepath.Join(file, "mp.svg"):     "is not a directory",
		"/proc/turnpath-test-no-such.svg": "cannot write",
	} {
		if err := checkOutputPath(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", path, err, want)
		}
	}
}

func TestCheckSportRange(t *testing.T) {
	for _, tc := range []struct {
		sport uint16
		flows int
		ok    bool
	}{{65279, 256, true}, {65280, 256, false}, {65000, 65, true}, {65000, 536, false}, {65534, 1, true}} {
		if err := checkSportRange(tc.sport, tc.flows); (err == nil) != tc.ok {
			t.Errorf("--sport %d, %d flows: %v", tc.sport, tc.flows, err)
		}
	}
}
