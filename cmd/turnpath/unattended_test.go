package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnpath/turnpath/hopstat"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/lab/labtest"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/store"
	"github.com/turnpath/turnpath/unattended"
	"github.com/urfave/cli/v2"
)

// Unattended runs (issue 17): --output replaced atomically, --lock, --shard, --store and
// turnpath history, with the real binary as cron would start it.

// startIn starts turnpath in namespace ns and returns the command and its stderr.
func startIn(t *testing.T, ns string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, binPath}, args...)...)
	var se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &se, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &se
}

// waitExit waits for cmd to end and returns its exit code (-1 for a signal).
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v: still running after %v", cmd.Args, timeout)
	}
	return cmd.ProcessState.ExitCode()
}

// dirNames lists dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// pendingBytes is the size of the unnamed file (O_TMPFILE) process pid writes in dir.
func pendingBytes(t *testing.T, pid int, dir string) int64 {
	t.Helper()
	fds := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fds)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, _ := os.Readlink(filepath.Join(fds, e.Name()))
		if strings.HasPrefix(link, dir+"/#") || strings.HasPrefix(link, dir+"/.") {
			if fi, err := os.Stat(filepath.Join(fds, e.Name())); err == nil {
				return fi.Size()
			}
		}
	}
	t.Fatalf("process %d has no file open in %s", pid, dir)
	return 0
}

// A run killed with SIGKILL while it streams its report into --output leaves the
// previous file byte for byte, and nothing else in the directory; one stopped by SIGINT
// too, and says so; one that finishes replaces it.
func TestOutputAtomicOnKill(t *testing.T) {
	needRoot(t)
	ns := routedNetns(t)
	f := targetFile(t, 256)
	dir := t.TempDir()
	out := filepath.Join(dir, "report.jsonl")
	previous := []byte(`{"schema":"turnpath.trace/v1","previous":"complete run"}` + "\n")
	if err := os.WriteFile(out, previous, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		// jsonl is written as targets finish: the new version has data when the signal comes.
		// One probe per target at 50/s: targets finish all along the run's 5 s.
		cmd, se := startIn(t, ns, "trace", "-n", "--rate", "50", "-m", "1", "-q", "1", "-w", "100ms", "--format", "jsonl", "-f", f, "--output", out)
		time.Sleep(1500 * time.Millisecond)
		if n := pendingBytes(t, cmd.Process.Pid, dir); n == 0 {
			t.Errorf("%v: the run had written nothing yet", sig)
		}
		cmd.Process.Signal(sig)
		code := waitExit(t, cmd, 10*time.Second)
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, previous) {
			t.Errorf("%v: --output after the run: %v %q, want the previous file", sig, err, got)
		}
		if n := dirNames(t, dir); len(n) != 1 {
			t.Errorf("%v: directory holds %v, want only report.jsonl", sig, n)
		}
		if sig == syscall.SIGINT {
			if code != 3 {
				t.Errorf("SIGINT: exit %d, want 3", code)
			}
			oneLine(t, result{code, "", se.String()}, "left as it was")
		}
	}
	// A run that finishes (exit 1: nothing answers here) replaces it with a whole report.
	r := run(t, 30*time.Second, "ip", "netns", "exec", ns, binPath, "trace", "-n", "-m", "2", "-q", "1", "-w", "100ms",
		"--format", "jsonl", "--output", out, "198.18.0.7", "198.18.0.8")
	got, _ := os.ReadFile(out)
	if r.code != 1 || r.stdout != "" || bytes.Count(got, []byte("\n")) != 2 || !bytes.Contains(got, []byte(`"turnpath_version"`)) {
		t.Errorf("finished run: exit %d, stdout %q, --output %q", r.code, r.stdout, got)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

// Two runs with one --lock: the second exits 4 at once with one line naming the holder;
// with --lock-wait it waits for the first to end and then runs.
func TestLockSecondRunExits4(t *testing.T) {
	needRoot(t)
	ns := routedNetns(t)
	f := targetFile(t, 256)
	lock := filepath.Join(t.TempDir(), "job.lock")
	first, _ := startIn(t, ns, "trace", "-n", "--rate", "50", "-w", "100ms", "-f", f, "--lock", lock)
	pid := strconv.Itoa(first.Process.Pid) // ip netns exec execs turnpath: the same PID
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(lock); strings.TrimSpace(string(b)) == pid {
			break
		}
		if i == 100 {
			t.Fatalf("the first run did not take the lock")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	r := run(t, 10*time.Second, "ip", "netns", "exec", ns, binPath, "trace", "-n", "--lock", lock, "198.18.0.7")
	if r.code != 4 || time.Since(start) > 2*time.Second {
		t.Errorf("second run: exit %d after %v, want 4 at once (%s)", r.code, time.Since(start), r.stderr)
	}
	oneLine(t, r, "lock "+lock+" is held by another run (pid "+pid+")")

	// A waiting run: it gets the lock once the first one ends.
	third, se := startIn(t, ns, "trace", "-n", "-m", "1", "-q", "1", "-w", "100ms", "--lock", lock, "--lock-wait", "30s", "198.18.0.7")
	time.Sleep(time.Second)
	if third.ProcessState != nil {
		t.Fatalf("waiting run ended while the lock was held: %s", se.String())
	}
	ended := time.Now()
	first.Process.Signal(syscall.SIGINT)
	waitExit(t, first, 10*time.Second)
	if code := waitExit(t, third, 20*time.Second); code != 1 { // ran: nothing answers here
		t.Errorf("waiting run: exit %d, want 1 (%s)", code, se.String())
	}
	if time.Since(ended) > 10*time.Second {
		t.Errorf("waiting run took %v after the lock was free", time.Since(ended))
	}
	// --lock-wait that runs out: exit 4 after the wait.
	holder, _ := startIn(t, ns, "trace", "-n", "--rate", "50", "-w", "100ms", "-f", f, "--lock", lock)
	time.Sleep(500 * time.Millisecond)
	start = time.Now()
	r = run(t, 10*time.Second, "ip", "netns", "exec", ns, binPath, "trace", "-n", "--lock", lock, "--lock-wait", "700ms", "198.18.0.7")
	if took := time.Since(start); r.code != 4 || took < 700*time.Millisecond || took > 5*time.Second {
		t.Errorf("--lock-wait 700ms: exit %d after %v", r.code, took)
	}
	holder.Process.Signal(syscall.SIGKILL)
	waitExit(t, holder, 10*time.Second)
	// kill -9 frees the lock.
	r = run(t, 10*time.Second, "ip", "netns", "exec", ns, binPath, "trace", "-n", "-m", "1", "-q", "1", "-w", "100ms", "--lock", lock, "198.18.0.7")
	if r.code != 1 {
		t.Errorf("after the holder's kill -9: exit %d (%s)", r.code, r.stderr)
	}
}

// A shard holding none of the targets does nothing, successfully, with an empty
// --output (no privilege needed: nothing is probed).
func TestShardEmpty(t *testing.T) {
	target := "198.19.1.1"
	k := 1
	if (unattended.Shard{K: 1, N: 2}).Holds(target) {
		k = 2
	}
	out := filepath.Join(t.TempDir(), "out.json")
	os.WriteFile(out, []byte("old"), 0o644)
	r := run(t, 10*time.Second, tp("trace", "--shard", strconv.Itoa(k)+"/2", "--output", out, target)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("empty shard: exit %d %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(out); len(b) != 0 {
		t.Errorf("--output %q, want empty", b)
	}
	cmd := exec.Command(binPath, "trace", "-v", "--shard", "auto/2", target)
	cmd.Env = append(os.Environ(), unattended.IndexEnv+"="+strconv.Itoa(k-1))
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "shard "+strconv.Itoa(k)+"/2: 0 of 1 targets") {
		t.Errorf("auto shard: %v %s", err, b)
	}
}

// Bad input: one line, exit 2, nothing written.
func TestOutputLockShardHistoryBadInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("not sqlite "), 20), 0o644)
	newer := filepath.Join(dir, "newer.db")
	st, err := store.Open(context.Background(), newer, true)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	sqlExec(t, newer, `UPDATE schema_version SET version = 99`)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"trace", "--shard", "3/2", "198.18.0.1"}, "--shard \"3/2\""},
		{[]string{"trace", "--shard", "half", "198.18.0.1"}, "want K/N"},
		{[]string{"multipath", "--shard", "auto/4", "198.18.0.1"}, "JOB_COMPLETION_INDEX is not set"},
		{[]string{"trace", "--store", filepath.Join(dir, "s.db"), "--keep", "forever", "198.18.0.1"}, "--keep \"forever\""},
		{[]string{"trace", "--keep", "30d", "198.18.0.1"}, "--keep needs --store"},
		{[]string{"trace", "--lock-wait", "1s", "198.18.0.1"}, "--lock-wait needs --lock"},
		{[]string{"trace", "--output", filepath.Join(dir, "no", "out.json"), "198.18.0.1"}, "no such file or directory"},
		{[]string{"trace", "--output", dir, "198.18.0.1"}, "is a directory"},
		{[]string{"trace", "--lock", filepath.Join(dir, "no", "x.lock"), "198.18.0.1"}, "open lock"},
		{[]string{"trace", "--store", filepath.Join(dir, "no", "h.db"), "198.18.0.1"}, "does not exist"},
		{[]string{"trace", "--store", junk, "198.18.0.1"}, "not a turnpath store"},
		{[]string{"multipath", "--store", newer, "198.18.0.1"}, "schema version 99 is newer"},
		{[]string{"trace", "--log-format", "xml", "198.18.0.1"}, "unknown --log-format"},
		{[]string{"history"}, "no store"},
		{[]string{"history", "--store", filepath.Join(dir, "missing.db")}, "no such store"},
		{[]string{"history", "--store", junk}, "not a turnpath store"},
		{[]string{"history", "--store", newer}, "schema version 99 is newer"},
		{[]string{"history", "--store", newer, "--keep", "0d"}, "--keep \"0d\""},
		{[]string{"history", "--store", junk, "--diff", "1"}, "two run numbers"},
		{[]string{"history", "--store", junk, "--diff", "1", "x"}, "\"x\" is not a run number"},
		{[]string{"history", "--store", junk, "--format", "xml"}, "unknown --format"},
		{[]string{"history", "--store", junk, "a", "b"}, "one TARGET at most"},
		{[]string{"history", "--store", junk, "--last", "-1"}, "--last -1"},
	} {
		r := run(t, 20*time.Second, tp(tc.args...)...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (%q)", tc.args, r.code, r.stderr)
			continue
		}
		oneLine(t, r, tc.want)
	}
	if n := dirNames(t, dir); len(n) != 2 {
		t.Errorf("left in the directory: %v, want junk.db and newer.db", n)
	}
	// The missing store was not created by reading it; a diff of a run it lacks.
	empty := filepath.Join(dir, "empty.db")
	st, _ = store.Open(context.Background(), empty, true)
	st.Close()
	r := run(t, 10*time.Second, tp("history", "--store", empty, "--diff", "1", "2")...)
	if r.code != 2 {
		t.Errorf("diff of missing runs: exit %d", r.code)
	}
	oneLine(t, r, "no run 1")
	// --log-format json: the error line is a JSON object.
	r = run(t, 10*time.Second, tp("history", "--store", junk, "--log-format", "json")...)
	var line struct{ Level, Msg string }
	if err := json.Unmarshal([]byte(r.stderr), &line); err != nil || line.Level != "error" || !strings.Contains(line.Msg, "not a turnpath store") {
		t.Errorf("json log line %q: %v", r.stderr, err)
	}
}

// An unwritable --output directory, for a user who may not write there.
func TestOutputUnwritableDir(t *testing.T) {
	needRoot(t) // to drop privileges
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755) // readable, not writable, by nobody
	r := run(t, 10*time.Second, asNobody("trace", "--output", filepath.Join(dir, "out.json"), "198.18.0.1")...)
	if r.code != 2 {
		t.Fatalf("exit %d (%s)", r.code, r.stderr)
	}
	oneLine(t, r, "cannot write in "+dir)
	r = run(t, 10*time.Second, asNobody("trace", "--store", filepath.Join(dir, "h.db"), "198.18.0.1")...)
	if r.code != 2 {
		t.Fatalf("store: exit %d (%s)", r.code, r.stderr)
	}
	oneLine(t, r, "--store")
	if n := dirNames(t, dir); len(n) != 0 {
		t.Errorf("left behind: %v", n)
	}
	// A store nobody may write into.
	db := filepath.Join(dir, "h.db")
	st, err := store.Open(context.Background(), db, true)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	before, _ := os.ReadFile(db)
	r = run(t, 10*time.Second, asNobody("trace", "--store", db, "198.18.0.1")...)
	if r.code != 2 {
		t.Fatalf("read-only store: exit %d (%s)", r.code, r.stderr)
	}
	oneLine(t, r, "--store")
	// history reads it all the same (a root cron job's store, read by a user), but
	// cannot prune it.
	if r = run(t, 10*time.Second, asNobody("history", "--store", db)...); r.code != 0 || !strings.Contains(r.stdout, "0 runs in") {
		t.Errorf("history of a read-only store: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, 10*time.Second, asNobody("history", "--store", db, "--keep", "1d")...)
	if r.code != 2 {
		t.Errorf("--keep on a read-only store: exit %d (%s)", r.code, r.stderr)
	}
	oneLine(t, r, "cannot write it")
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Error("the read-only store changed")
	}
}

// sqlExec changes a store behind turnpath's back (the driver is the one package store
// registers).
func sqlExec(t *testing.T, path, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

type historyJSON struct {
	Schema string `json:"schema"`
	Runs   []struct {
		ID      int64  `json:"run"`
		Command string `json:"command"`
		Status  string `json:"status"`
		Version string `json:"turnpath_version"`
	} `json:"runs"`
	Changes []store.Change `json:"changes"`
}

// History in the lab: a route moved between two recorded traces (and two multipath
// runs) is named by turnpath history: the run, the hop, the old and the new address.
func TestHistoryLabRouteMoved(t *testing.T) {
	l := labtest.Up(t, "tpy", lab.ProfileFast)
	client := lab.NSName(l.Prefix(), "client")
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	db := filepath.Join(t.TempDir(), "history.db")
	inLab := func(args ...string) result {
		return run(t, 60*time.Second, append([]string{"ip", "netns", "exec", client, binPath}, args...)...)
	}
	r4, r2 := lab.NSName(l.Prefix(), "r4"), lab.NSName(l.Prefix(), "r2")
	// r4 balances 198.19.1.0/24 over r5a (9 hops to t1) and r5b-r5c (10 hops): pin it
	// to r5a, record, pin it to r5b, record.
	ip("-n", r4, "route", "replace", "198.19.1.0/24", "via", "198.18.10.2")
	if r := inLab("trace", "-n", "--store", db, "198.19.1.1", "198.19.2.1"); r.code != 0 {
		t.Fatalf("first trace: exit %d %s", r.code, r.stderr)
	}
	ip("-n", r4, "route", "replace", "198.19.1.0/24", "via", "198.18.11.2")
	if r := inLab("trace", "-n", "--store", db, "--format", "json", "198.19.1.1", "198.19.2.1"); r.code != 0 {
		t.Fatalf("second trace: exit %d %s", r.code, r.stderr)
	}
	// multipath: r2 loses its third branch (r3c) between two runs.
	mp := []string{"multipath", "-n", "--sport", "50000", "--store", db, "--output", filepath.Join(t.TempDir(), "mp.json"), "198.19.1.1"}
	if r := inLab(mp...); r.code != 0 {
		t.Fatalf("first multipath: exit %d %s", r.code, r.stderr)
	}
	ip("-n", r2, "route", "replace", "198.19.1.0/24", "nexthop", "via", "198.18.4.2", "nexthop", "via", "198.18.5.2")
	if r := inLab(mp...); r.code != 0 {
		t.Fatalf("second multipath: exit %d %s", r.code, r.stderr)
	}

	r := run(t, 10*time.Second, tp("history", "--store", db, "--format", "json", "198.19.1.1")...)
	var doc historyJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); r.code != 0 || err != nil {
		t.Fatalf("history: exit %d %v %s", r.code, err, r.stderr)
	}
	if len(doc.Runs) != 4 || doc.Runs[0].Command != "trace" || doc.Runs[3].Command != "multipath" || doc.Runs[0].Status != "ok" || doc.Runs[0].Version == "" {
		t.Errorf("runs: %+v", doc.Runs)
	}
	has := func(kind store.ChangeKind, run int64, ttl int, old, new string) bool {
		for _, c := range doc.Changes {
			if c.Kind == kind && c.Run == run && c.TTL == ttl && c.Target == "198.19.1.1" &&
				strings.Join(c.Old, ",") == old && strings.Join(c.New, ",") == new {
				return true
			}
		}
		return false
	}
	for _, want := range []struct {
		kind     store.ChangeKind
		run      int64
		ttl      int
		old, new string
	}{
		{store.DestDistance, 2, 0, "9", "10"},
		{store.HopChanged, 2, 5, "198.18.10.2", "198.18.11.2"},
		{store.HopChanged, 2, 6, "198.18.13.2", "198.18.12.2"},
		{store.BranchGone, 4, 3, "198.18.4.2,198.18.5.2,198.18.6.2", "198.18.4.2,198.18.5.2"},
	} {
		if !has(want.kind, want.run, want.ttl, want.old, want.new) {
			t.Errorf("no %s at TTL %d in run %d (%s -> %s) among %+v", want.kind, want.ttl, want.run, want.old, want.new, doc.Changes)
		}
	}
	// The other target's path did not change.
	r = run(t, 10*time.Second, tp("history", "--store", db, "--format", "json", "198.19.2.1")...)
	doc = historyJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Runs) != 2 || len(doc.Changes) != 0 {
		t.Errorf("198.19.2.1: %v runs %d changes %+v", err, len(doc.Runs), doc.Changes)
	}

	// The text names the run, the hop and both addresses.
	r = run(t, 10*time.Second, tp("history", "--store", db)...)
	if r.code != 0 || !strings.Contains(r.stdout, "4 runs in") {
		t.Fatalf("text: exit %d\n%s", r.code, r.stdout)
	}
	found := false
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) == 10 && f[2] == "2" && f[5] == "198.19.1.1" && f[6] == "5" && f[7] == "hop-changed" && f[8] == "198.18.10.2" && f[9] == "198.18.11.2" {
			found = true
		}
	}
	if !found {
		t.Errorf("text lacks the change at TTL 5:\n%s", r.stdout)
	}
	// --last 2: the multipath runs only, and the change between them: r3c gone at TTL 3,
	// and with it r4's address on the link from r3c at TTL 4 (the lab's routers answer
	// from the interface a probe came in by).
	r = run(t, 10*time.Second, tp("history", "--store", db, "--format", "json", "--last", "2")...)
	doc = historyJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Runs) != 2 || doc.Runs[0].ID != 3 ||
		len(doc.Changes) != 2 || doc.Changes[0].Kind != store.BranchGone || doc.Changes[0].TTL != 3 ||
		doc.Changes[1].Kind != store.BranchGone || doc.Changes[1].TTL != 4 {
		t.Errorf("--last 2: %v %+v", err, doc)
	}
	// --diff of the two traces.
	r = run(t, 10*time.Second, tp("history", "--store", db, "--format", "json", "--diff", "1", "2")...)
	doc = historyJSON{}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || !has(store.HopChanged, 2, 5, "198.18.10.2", "198.18.11.2") || len(doc.Runs) != 2 {
		t.Errorf("diff: %v %+v", err, doc)
	}

	// Retention: run 1 made 40 days old; --keep 30d deletes it, and its views.
	sqlExec(t, db, `UPDATE runs SET started = '2020-01-01T00:00:00.000000000Z' WHERE id = 1`)
	r = run(t, 10*time.Second, tp("history", "--store", db, "--keep", "30d")...)
	if r.code != 0 || !strings.Contains(r.stdout, "deleted 1 runs") || !strings.Contains(r.stdout, "3 runs in") {
		t.Errorf("--keep 30d: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// What monitor records (unattendedRun.monitorRecorder): an interval per snapshot, each a
// view per target, and history finds a change between intervals.
func TestHistoryMonitorIntervals(t *testing.T) {
	db := filepath.Join(t.TempDir(), "h.db")
	st, err := store.Open(context.Background(), db, true)
	if err != nil {
		t.Fatal(err)
	}
	app := newApp()
	c := cli.NewContext(app, nil, nil)
	c.Context = context.Background()
	u := &unattendedRun{c: c, cmd: "monitor", st: st}
	if u.runID, err = st.BeginRun(c.Context, store.Run{Kind: "monitor", Started: time.Now(), Version: "test", Proto: "udp", Port: 3478}); err != nil {
		t.Fatal(err)
	}
	targets := &targetList{addrs: []netip.Addr{netip.MustParseAddr("198.19.1.1")}, names: map[int]string{0: "relay.example"}}
	rec := u.monitorRecorder(targets, func(int) netip.Addr { return netip.MustParseAddr("198.18.1.1") })
	hop := func(ttl int, from string) monitor.HopSnapshot {
		return monitor.HopSnapshot{TTL: ttl, Sent: 10, Received: 10, Avg: 1, Best: 0.5, Worst: 2,
			Responders: []hopstat.Responder{{Addr: netip.MustParseAddr(from), Count: 10}}}
	}
	t0 := time.Now()
	rec(&monitor.Snapshot{Time: t0, Targets: []monitor.TargetSnapshot{{Index: 0, DestTTL: 2, Hops: []monitor.HopSnapshot{hop(1, "198.18.1.2"), hop(2, "198.19.1.1")}}}})
	rec(&monitor.Snapshot{Time: t0.Add(time.Second), Targets: []monitor.TargetSnapshot{{Index: 0, DestTTL: 2, Hops: []monitor.HopSnapshot{hop(1, "198.18.9.2"), hop(2, "198.19.1.1")}}}})
	if err := u.finish(nil); err != nil {
		t.Fatal(err)
	}
	r := run(t, 10*time.Second, tp("history", "--store", db, "--format", "json", "relay.example")...)
	var doc historyJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Runs) != 1 || doc.Runs[0].Status != "ok" {
		t.Fatalf("history: %v %s %s", err, r.stdout, r.stderr)
	}
	if len(doc.Changes) != 1 || doc.Changes[0].Kind != store.HopChanged || doc.Changes[0].Seq != 2 || doc.Changes[0].PrevSeq != 1 ||
		doc.Changes[0].New[0] != "198.18.9.2" {
		t.Errorf("changes: %+v", doc.Changes)
	}
}

// --shard K/N over N real runs: every target probed exactly once, by the same shard on
// every run.
func TestShardCoversTargets(t *testing.T) {
	needRoot(t)
	ns := routedNetns(t)
	const n, shards = 40, 3
	f := targetFile(t, n)
	probed := func(k int) []string {
		r := run(t, 30*time.Second, "ip", "netns", "exec", ns, binPath, "trace", "-n", "-m", "1", "-q", "1", "-w", "50ms",
			"--format", "jsonl", "--shard", strconv.Itoa(k)+"/"+strconv.Itoa(shards), "-f", f)
		if r.code != 1 { // nothing answers here
			t.Fatalf("shard %d: exit %d (%s)", k, r.code, r.stderr)
		}
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var tg struct{ Address string }
			if err := json.Unmarshal([]byte(line), &tg); err != nil {
				t.Fatalf("shard %d: %v in %q", k, err, line)
			}
			out = append(out, tg.Address)
		}
		return out
	}
	seen := map[string]int{}
	for k := 1; k <= shards; k++ {
		got := probed(k)
		if len(got) == 0 || len(got) == n {
			t.Errorf("shard %d/%d probed %d of %d targets", k, shards, len(got), n)
		}
		for _, a := range got {
			seen[a]++
		}
		if k == 1 {
			again := probed(1)
			slices.Sort(got)
			slices.Sort(again)
			if !slices.Equal(got, again) {
				t.Errorf("shard 1 probed other targets the second time: %v, then %v", got, again)
			}
		}
	}
	b, _ := os.ReadFile(f)
	for _, a := range strings.Fields(string(b)) {
		if seen[a] != 1 {
			t.Errorf("%s probed by %d shards", a, seen[a])
		}
	}
}

// --log-format json: warnings, notes and the error line are JSON objects, one a line.
func TestOutputLogFormatJSON(t *testing.T) {
	saved := logMode
	defer func() { logMode = saved }()
	logMode.json, logMode.command = true, "trace"
	var b bytes.Buffer
	warnf(&b, "AS lookups of %d addresses timed out", 3)
	app := newApp()
	app.ErrWriter = &b
	notef(cli.NewContext(app, nil, nil), "using the socket engine: %s", "no BTF")
	logError(&b, errors.New("trace: interrupted"))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{"warning", "info", "error"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines: %q", len(lines), b.String())
	}
	for i, l := range lines {
		var o struct{ Time, Level, Command, Msg string }
		if err := json.Unmarshal([]byte(l), &o); err != nil || o.Level != want[i] || o.Command != "trace" || !strings.HasSuffix(o.Time, "Z") || o.Msg == "" {
			t.Errorf("line %d %q: %v %+v", i, l, err, o)
		}
	}
}
