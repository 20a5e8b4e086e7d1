package main

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The live view driven through tmux as a user would: hop rows of a lab target on screen
// within 2 s, n switches to the second target, q quits, the alt screen is left, the final
// report printed, and no BPF program left behind.
func TestMonitorLiveView(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux not installed")
	}
	_, client, _ := cliLab(t, "tpmlv")
	b := make([]byte, 3)
	rand.Read(b)
	// A tmux server of its own (-L): nothing of the user's sessions is touched.
	sock := "tpmlv" + hex.EncodeToString(b)
	sess := sock
	tmux := func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		tmux("kill-session", "-t", sess)
		tmux("kill-server")
	})
	pane := func() string {
		out, _ := tmux("capture-pane", "-p", "-t", sess)
		return out
	}
	// waitFor polls the pane until ok says yes or d passes.
	waitFor := func(d time.Duration, ok func(string) bool) (string, bool) {
		var p string
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if p = pane(); ok(p) {
				return p, true
			}
		}
		return p, false
	}

	start := time.Now()
	cmdline := "ip netns exec " + client + " " + binPath + " monitor -n -i 100ms 198.19.1.1 198.19.2.1; echo turnpath-exit=$?"
	if out, err := tmux("new-session", "-d", "-s", sess, "-x", "160", "-y", "40", cmdline); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	// Keep the pane once turnpath exits, to read the report and its exit status.
	if out, err := tmux("set-option", "-w", "-t", sess, "remain-on-exit", "on"); err != nil {
		t.Fatalf("tmux set-option: %v: %s", err, out)
	}

	p, ok := waitFor(5*time.Second, func(p string) bool { return strings.Contains(p, "198.18.1.2") })
	if !ok {
		t.Fatalf("no hop rows after 5 s:\n%s", p)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("hop rows after %v, want within 2 s", el)
	}
	if !strings.Contains(p, "to 198.19.1.1") || !strings.Contains(p, "Loss%") || !strings.Contains(p, "Javg") {
		t.Errorf("first view:\n%s", p)
	}
	if alt, _ := tmux("display-message", "-p", "-t", sess, "#{alternate_on}"); strings.TrimSpace(alt) != "1" {
		t.Errorf("live view not on the alternate screen (alternate_on %q)", alt)
	}
	ids := runProgs(t, client)
	if len(ids) < 2 {
		t.Errorf("turnpath BPF programs during the run: %v, want XDP and TC egress", ids)
	}

	// n: the second target, a shorter path (its destination at TTL 4).
	tmux("send-keys", "-t", sess, "n")
	if p, ok := waitFor(3*time.Second, func(p string) bool {
		return strings.Contains(p, "to 198.19.2.1") && strings.Contains(p, "target 2/2") && strings.Contains(p, "198.19.2.1    ")
	}); !ok {
		t.Errorf("n did not switch to the second target:\n%s", p)
	}

	// q: quit; the terminal is restored and the final report of both targets printed.
	tmux("send-keys", "-t", sess, "q")
	// The shell tmux runs the command in prints turnpath's exit status after it (tmux's own
	// pane_dead_status is not always filled in). The report may have scrolled: read the
	// history too.
	var exited bool
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if p, _ = tmux("capture-pane", "-p", "-S", "-", "-t", sess); strings.Contains(p, "turnpath-exit=") {
			exited = true
			break
		}
	}
	if !exited {
		t.Fatalf("turnpath still running 10 s after q:\n%s", p)
	}
	if !strings.Contains(p, "turnpath-exit=0") {
		t.Errorf("after q: want exit status 0 (the verdict passes):\n%s", p)
	}
	if alt, _ := tmux("display-message", "-p", "-t", sess, "#{alternate_on}"); strings.TrimSpace(alt) != "0" {
		t.Errorf("after q: the alternate screen is still on (alternate_on %q)", alt)
	}
	for _, want := range []string{"turnpath monitor to 198.19.1.1 (198.19.1.1)", "turnpath monitor to 198.19.2.1 (198.19.2.1)", "rounds every 100ms", "verdict: pass"} {
		if !strings.Contains(p, want) {
			t.Errorf("final report lacks %q:\n%s", want, p)
		}
	}
	if strings.Contains(p, "keys:") {
		t.Errorf("the live view is still on screen after quitting:\n%s", p)
	}
	if left := progsLeft(t, ids); len(left) > 0 {
		t.Errorf("turnpath BPF programs %v still loaded after q", left)
	}
	if out, err := tmux("kill-session", "-t", sess); err != nil {
		t.Errorf("kill-session: %v: %s", err, out)
	}
	if _, err := tmux("has-session", "-t", sess); err == nil {
		t.Errorf("tmux session %s still there", sess)
	}

	// SIGTERM (and Ctrl-C from outside) ends the live view the same way, with the report:
	// main's signal context and bubbletea's own signal handler must not deadlock.
	sess2 := sess + "b"
	t.Cleanup(func() { tmux("kill-session", "-t", sess2) })
	if out, err := tmux("new-session", "-d", "-s", sess2, "-x", "160", "-y", "40",
		"ip netns exec "+client+" "+binPath+" monitor -n -i 100ms 198.19.2.1; echo turnpath-exit=$?; sleep 30"); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	if p, ok := waitFor2(tmux, sess2, 5*time.Second, "198.18.1.2"); !ok {
		t.Fatalf("second view: no hop rows:\n%s", p)
	}
	shpid, _ := tmux("display-message", "-p", "-t", sess2, "#{pane_pid}")
	out, err := exec.Command("pgrep", "-P", strings.TrimSpace(shpid)).Output()
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		t.Fatalf("turnpath's pid under %s: %v %q", shpid, err, out)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if p, ok := waitFor2(tmux, sess2, 10*time.Second, "turnpath-exit="); !ok || !strings.Contains(p, "turnpath-exit=0") ||
		!strings.Contains(p, "verdict: pass") {
		t.Errorf("after SIGTERM: want the report and exit 0:\n%s", p)
	}
}

// waitFor2 polls session sess's pane and history until it shows want.
func waitFor2(tmux func(...string) (string, error), sess string, d time.Duration, want string) (string, bool) {
	var p string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if p, _ = tmux("capture-pane", "-p", "-S", "-", "-t", sess); strings.Contains(p, want) {
			return p, true
		}
	}
	return p, false
}
