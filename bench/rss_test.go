package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/turnpath/turnpath/reflector/reflectortest"
)

// turnpathBinary builds cmd/turnpath (or takes $TP_TURNPATH_BIN).
func turnpathBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("TP_TURNPATH_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "turnpath")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/turnpath").CombinedOutput()
	if err != nil {
		t.Fatalf("build turnpath: %v\n%s", err, out)
	}
	return bin
}

// Peak RSS of `turnpath trace -f` stays flat with the length of the list: once the
// window is full (1000 targets), more targets (TP_RSS_TARGETS, default 5000; the
// benchmark runs 100k) cost little more with the eBPF engine, and stay bounded with the
// socket engine.
func TestPeakRSSFlat(t *testing.T) {
	n := reflectortest.Up(t, "rft", 6)
	bin := turnpathBinary(t)
	many := 5000
	if s := os.Getenv("TP_RSS_TARGETS"); s != "" {
		many, _ = strconv.Atoi(s)
	}
	lists := map[int]string{}
	for _, targets := range []int{1, 1000, many} {
		lists[targets] = filepath.Join(t.TempDir(), "targets")
		if err := WriteTargets(lists[targets], targets); err != nil {
			t.Fatal(err)
		}
	}
	for _, engine := range []string{"ebpf", "socket"} {
		var window int64
		for _, targets := range []int{1, 1000, many} {
			res, err := PeakRSS(context.Background(), n, RSSOptions{Turnpath: bin, List: lists[targets], Targets: targets,
				Engine: engine, Timeout: 10 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(res)
			t.Logf("%s", b)
			if res.Lines != targets || res.Reached < targets*99/100 {
				t.Errorf("%s %d targets: %d lines, %d reached", engine, targets, res.Lines, res.Reached)
			}
			switch targets {
			case 1000:
				window = res.PeakBytes
			case many:
				// The socket engine also keeps up to 2x32768 outstanding probes in Go
				// (engine/socket.go), reached at this speed: a bound, not flat.
				limit := window * 3 / 2
				if engine == "socket" {
					limit = window * 3
				}
				if res.PeakBytes > limit {
					t.Errorf("%s: peak RSS %d MiB for %d targets, %d MiB for 1000", engine, res.PeakBytes>>20, targets, window>>20)
				}
			}
		}
	}
}

func TestHalves(t *testing.T) {
	flat := []int64{5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 40, 48, 41, 50, 40, 47, 49, 50, 41, 40}
	if f, s := halves(flat); f != 50 || s != 50 {
		t.Errorf("flat: %d %d", f, s)
	}
	growing := []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 10, 11, 12, 13, 14, 15}
	if f, s := halves(growing); f != 12 || s != 15 {
		t.Errorf("growing: %d %d", f, s)
	}
	if f, s := halves(make([]int64, 11)); f != 0 || s != 0 {
		t.Errorf("short: %d %d", f, s)
	}
}
