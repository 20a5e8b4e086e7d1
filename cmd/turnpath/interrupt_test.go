package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Stopping a run (Ctrl-C, the interface vanishing) in a namespace of the test's own
// (bareNetns: nothing answers, nothing leaves): what was probed is reported, what was not
// is counted, and it stops at once (issue 11, items 5 and 6g).

// targetFile writes n addresses of 198.18.0.0/15, skipping the namespace's own.
func targetFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i, k := 0, 0; k < n; i++ {
		a := fmt.Sprintf("198.%d.%d.%d", 18+i>>16, i>>8&255, i&255)
		if a == "198.18.250.1" {
			continue
		}
		b.WriteString(a + "\n")
		k++
	}
	f := filepath.Join(t.TempDir(), "targets.txt")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// routedNetns is bareNetns with all of 198.18.0.0/15 on its link.
func routedNetns(t *testing.T) string {
	ns := bareNetns(t)
	if out, err := exec.Command("ip", "-n", ns, "route", "add", "198.18.0.0/15", "dev", "va").CombinedOutput(); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	return ns
}

type stopped struct {
	code           int
	stdout, stderr string
	took           time.Duration // from the stop to the exit
}

// runAndStop starts turnpath in ns, waits, then calls stop, and waits for the exit.
func runAndStop(t *testing.T, ns string, after time.Duration, stop func(*exec.Cmd), args ...string) stopped {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, binPath}, args...)...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(after)
	start := time.Now()
	stop(cmd)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v: did not stop", args)
	}
	return stopped{cmd.ProcessState.ExitCode(), so.String(), se.String(), time.Since(start)}
}

func sigint(cmd *exec.Cmd) { cmd.Process.Signal(syscall.SIGINT) }

var notProbedRE = regexp.MustCompile(`(\d+) of (\d+) targets not probed`)

// notProbed reads "N of M targets not probed" from the error line; without it (every
// target probed, when allowed) 0.
func notProbed(t *testing.T, stderr string, total int, mayLack bool) int {
	t.Helper()
	m := notProbedRE.FindStringSubmatch(stderr)
	if m == nil && mayLack {
		return 0
	}
	if m == nil || m[2] != strconv.Itoa(total) {
		t.Fatalf("stderr %q: want %q", stderr, fmt.Sprintf("N of %d targets not probed", total))
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Ctrl-C while 100 000 targets are being routed stops at once, and prints no target.
func TestInterruptWhileRouting(t *testing.T) {
	needRoot(t)
	ns := routedNetns(t)
	f := targetFile(t, 100000)
	r := runAndStop(t, ns, time.Second, sigint, "trace", "-n", "-f", f)
	if r.code != 3 || r.took > 2*time.Second {
		t.Errorf("exit %d %v after SIGINT, want 3 at once (%s)", r.code, r.took, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("targets printed though none was probed: %d bytes", len(r.stdout))
	}
	oneLine(t, r2(r), "interrupted")
	if n := notProbed(t, r.stderr, 100000, false); n != 100000 {
		t.Errorf("%d not probed, want all", n)
	}
}

func r2(s stopped) result { return result{s.code, s.stdout, s.stderr} }

// Ctrl-C during a long run: the targets probed are reported (in every format), those
// never probed are not reported as "no answer; 0 probes" but counted on stderr.
func TestInterruptOmitsUnprobed(t *testing.T) {
	needRoot(t)
	ns := routedNetns(t)
	const n = 3000
	f := targetFile(t, n)
	// Full traces in every format, and a scan (what a list this long gets by default).
	for _, format := range []string{"text", "json", "jsonl", "csv", "scan"} {
		args := []string{"trace", "-n", "--rate", "50", "-w", "200ms", "--scan=false", "--format", format, "-f", f}
		if format == "scan" {
			format, args = "json", []string{"trace", "-n", "--rate", "50", "-w", "200ms", "--format", "json", "-f", f}
		}
		r := runAndStop(t, ns, 2*time.Second, sigint, args...)
		if r.code != 3 {
			t.Errorf("%s: exit %d, want 3 (%s)", format, r.code, r.stderr)
			continue
		}
		oneLine(t, r2(r), "interrupted")
		skipped := notProbed(t, r.stderr, n, false)
		probed := map[string]bool{} // addresses reported
		switch format {
		case "text":
			for _, l := range strings.Split(r.stdout, "\n") {
				if strings.HasPrefix(l, "turnpath to ") {
					probed[strings.Fields(l)[2]] = true
				}
				if strings.Contains(l, "; 0 probes") {
					t.Errorf("text: a target reported with 0 probes: %q", l)
					break
				}
			}
		case "json":
			var doc struct {
				Targets []struct {
					Address string `json:"address"`
					Sent    int    `json:"probes_sent"`
				} `json:"targets"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
				t.Fatalf("json: %v", err)
			}
			for _, tg := range doc.Targets {
				probed[tg.Address] = true
				if tg.Sent == 0 {
					t.Errorf("json: %s reported with 0 probes", tg.Address)
					break
				}
			}
		case "jsonl":
			sc := bufio.NewScanner(strings.NewReader(r.stdout))
			for sc.Scan() {
				var tg struct {
					Address string `json:"address"`
					Sent    int    `json:"probes_sent"`
				}
				if err := json.Unmarshal(sc.Bytes(), &tg); err != nil {
					t.Fatalf("jsonl: %v", err)
				}
				probed[tg.Address] = true
				if tg.Sent == 0 {
					t.Errorf("jsonl: %s reported with 0 probes", tg.Address)
					break
				}
			}
		case "csv":
			// One row per answered hop's probe: nothing answers here, so no rows, and
			// only the count on stderr to check.
			rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
			if err != nil || len(rows) != 1 || rows[0][0] != "started" {
				t.Errorf("csv: %v, rows %q", err, rows)
			}
			if skipped <= n-1024 || skipped >= n {
				t.Errorf("csv: %d of %d not probed", skipped, n)
			}
			continue
		}
		if len(probed) == 0 || len(probed) > 1024 || len(probed)+skipped != n {
			t.Errorf("%s: %d targets reported, %d not probed, of %d", format, len(probed), skipped, n)
		}
	}
}

// The interface vanishing mid-run: what finished is printed (as on Ctrl-C), the error
// names the interface, exit 3.
func TestLinkGoneInNetns(t *testing.T) {
	needRoot(t)
	delLink := func(ns string) func(*exec.Cmd) {
		return func(*exec.Cmd) { exec.Command("ip", "-n", ns, "link", "del", "va").Run() }
	}
	for _, tc := range []struct {
		args []string
		head string // how a target's report starts
	}{
		{[]string{"trace", "-n", "--rate", "20", "-m", "1", "-q", "1", "-w", "100ms"}, "turnpath to "},
		// Fast: sends fail before the link watcher speaks.
		{[]string{"trace", "-n", "--rate", "2000"}, "turnpath to "},
		{[]string{"multipath", "-n", "--rate", "20", "-m", "1", "-w", "100ms", "--parallel", "1"}, "turnpath multipath to "},
		{[]string{"multipath", "-n", "--rate", "2000", "-m", "1", "-w", "100ms", "--parallel", "1"}, "turnpath multipath to "},
	} {
		ns := routedNetns(t)
		f := targetFile(t, 256)
		r := runAndStop(t, ns, 1500*time.Millisecond, delLink(ns), append(tc.args, "-f", f)...)
		if r.code != 3 || r.took > 5*time.Second {
			t.Errorf("%v: exit %d after %v, want 3 at once (%s)", tc.args, r.code, r.took, r.stderr)
		}
		// Deleting a link takes it down first: either is the interface's name.
		oneLine(t, r2(r), "interface va ")
		if !regexp.MustCompile(`: interface va (disappeared|went down)`).MatchString(r.stderr) {
			t.Errorf("%v: stderr %q does not say that va went away", tc.args, r.stderr)
		}
		skipped := notProbed(t, r.stderr, 256, true)
		reported := strings.Count(r.stdout, tc.head)
		if reported == 0 || reported+skipped != 256 {
			t.Errorf("%v: %d targets printed, %d not probed, of 256\n%s", tc.args, reported, skipped, r.stderr)
		}
	}
}

// 6f: check with a target it has no route to still prints its table, then says so.
func TestCheckNoRoute(t *testing.T) {
	needRoot(t)
	ns := bareNetns(t)
	for _, format := range []string{"text", "json"} {
		r := run(t, 30*time.Second, "ip", "netns", "exec", ns, binPath, "check", "--format", format, "198.18.77.1")
		if r.code != 3 {
			t.Errorf("%s: exit %d, want 3 (%s)", format, r.code, r.stderr)
		}
		oneLine(t, r, "no route")
		for _, want := range []string{"kernel", "CAP_NET_RAW", "route", "bpf load", "bpf attach", "engine"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: report lacks %q:\n%s", format, want, r.stdout)
			}
		}
		if format == "text" && !regexp.MustCompile(`(?m)^fail +route +no route to 198\.18\.77\.1`).MatchString(r.stdout) {
			t.Errorf("text: no failing route line:\n%s", r.stdout)
		}
	}
}
