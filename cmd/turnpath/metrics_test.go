package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// An unwritable --textfile is bad input: one line, exit 2, before any probe.
func TestTextfileUsageErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, cmd := range []string{"trace", "multipath"} {
		for _, bad := range []string{filepath.Join(dir, "missing"), file, filepath.Join(file, "x.prom")} {
			r := run(t, 20*time.Second, tp(cmd, "--textfile", bad, "198.18.0.1")...)
			if r.code != 2 {
				t.Errorf("%s --textfile %s: exit %d, want 2 (stderr %q)", cmd, bad, r.code, r.stderr)
				continue
			}
			oneLine(t, r, "--textfile")
		}
	}
}

// trace and multipath in the lab write textfiles promtool accepts, with the targets'
// series.
func TestTextfileLab(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (make deps installs prometheus)")
	}
	_, _, inLab := cliLab(t, "tpx")
	dir := t.TempDir()
	r := run(t, 60*time.Second, inLab("trace", "-n", "--format", "json", "--textfile", dir, "198.19.1.1", "198.19.2.1")...)
	if r.code != 0 {
		t.Fatalf("trace: exit %d: %s", r.code, r.stderr)
	}
	text := promCheck(t, filepath.Join(dir, "turnpath_trace.prom"))
	for _, want := range []string{
		`turnpath_reached{address="198.19.1.1",command="trace",target="198.19.1.1"} 1`,
		`turnpath_reached{address="198.19.2.1",command="trace",target="198.19.2.1"} 1`,
		`turnpath_rtt_seconds_count{address="198.19.2.1",command="trace",target="198.19.2.1"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("trace textfile lacks %s", want)
		}
	}
	mp := filepath.Join(dir, "sweep.prom")
	r = run(t, 120*time.Second, inLab("multipath", "-n", "--textfile", mp, "198.19.1.1")...)
	if r.code != 0 {
		t.Fatalf("multipath: exit %d: %s", r.code, r.stderr)
	}
	text = promCheck(t, mp)
	// The lab's three-way and two-way load balancers.
	m := regexp.MustCompile(`turnpath_multipath_max_width\{[^}]*\} (\d+)`).FindStringSubmatch(text)
	if m == nil {
		t.Errorf("multipath textfile: no max width\n%s", text)
	} else if w, _ := strconv.Atoi(m[1]); w < 2 {
		t.Errorf("multipath textfile: max width %d, want the lab's branches", w)
	}
	if !strings.Contains(text, `turnpath_reached{address="198.19.1.1",command="multipath",target="198.19.1.1"} 1`) {
		t.Errorf("multipath textfile: target not reached\n%s", text)
	}
}

// monitor --listen in the lab serves /metrics while the rounds go on, and --textfile
// writes the same metrics at the end; a second monitor on the same port exits 2 with one
// line, before probing.
func TestMonitorListenLab(t *testing.T) {
	if h := run(t, 10*time.Second, tp("monitor", "--help")...); !strings.Contains(h.stdout, "--listen") {
		t.Skip("monitor has no --listen yet")
	}
	_, client, inLab := cliLab(t, "tpx")
	hc := lab.HTTPClient(client, 2*time.Second)
	// While the monitor runs (it ends by itself after its rounds): scrape it, and try a
	// second one on its port.
	during := func(*exec.Cmd) {
		var body string
		for try := 0; try < 50; try++ {
			time.Sleep(200 * time.Millisecond)
			resp, err := hc.Get("http://127.0.0.1:9469/metrics")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); strings.Contains(body, "turnpath_hop_rtt_seconds_count") {
				break
			}
		}
		if !strings.Contains(body, `turnpath_reached{address="198.19.2.1",target="198.19.2.1"} 1`) {
			t.Errorf("/metrics while monitoring:\n%s", body)
		}
		check := exec.Command("promtool", "check", "metrics")
		check.Stdin = strings.NewReader(body)
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
		r := run(t, 20*time.Second, inLab("monitor", "--report", "-c", "1", "--listen", "127.0.0.1:9469", "198.19.2.1")...)
		if r.code != 2 {
			t.Errorf("second monitor on the port: exit %d, want 2 (stderr %q)", r.code, r.stderr)
		} else {
			oneLine(t, r, "9469")
		}
	}
	dir := t.TempDir()
	r := runAndStop(t, client, 0, during, "monitor", "--report", "-n", "-c", "300", "-i", "20ms",
		"--listen", "127.0.0.1:9469", "--textfile", dir, "198.19.2.1")
	if r.code != 0 || !strings.Contains(r.stdout, "verdict: pass") {
		t.Errorf("monitor: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	text := promCheck(t, filepath.Join(dir, "turnpath_monitor.prom"))
	for _, want := range []string{
		`turnpath_rounds_total{command="monitor"} 300`,
		`turnpath_verdict{address="198.19.2.1",command="monitor",target="198.19.2.1"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("monitor textfile lacks %s", want)
		}
	}
}

// promCheck reads a textfile and runs promtool check metrics on it.
func promCheck(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics %s: %v\n%s", path, err, out)
	}
	return string(b)
}
