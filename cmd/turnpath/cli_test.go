package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Black-box tests: build the binary once, run it like a user (or cron) would.

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "turnpath-cli")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "turnpath")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{code, so.String(), se.String()}
	case <-time.After(timeout):
		cmd.Process.Kill()
		t.Fatalf("%v: hung for %v", args, timeout)
	}
	return result{}
}

func tp(args ...string) []string { return append([]string{binPath}, args...) }

// oneLine asserts a single-line error naming what is wrong, and no panic.
func oneLine(t *testing.T, r result, want string) {
	t.Helper()
	if strings.Contains(r.stderr, "panic") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("want one error line, got:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not mention %q", r.stderr, want)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"trace"}, "no target"},
		{[]string{"trace", "--max-ttl", "0", "198.18.0.1"}, "max TTL 0"},
		{[]string{"trace", "--max-ttl", "256", "198.18.0.1"}, "max TTL 256"},
		{[]string{"trace", "--payload", "hex:zz", "198.18.0.1"}, "invalid hex payload"},
		{[]string{"trace", "--proto", "sctp", "198.18.0.1"}, "unknown --proto"},
		{[]string{"trace", "--format", "xml", "198.18.0.1"}, "unknown --format"},
		{[]string{"trace", "--engine", "dpdk", "198.18.0.1"}, "unknown --engine"},
		{[]string{"trace", "-q", "0", "198.18.0.1"}, "queries 0"},
		{[]string{"trace", "no-such-host.invalid"}, "unknown host"},
		{[]string{"trace", "-f", "/nonexistent/targets.txt"}, "target file"},
		{[]string{"trace", "--bogus"}, "bogus"},
		{[]string{"trace", "--pmtu", "--proto", "tcp", "198.18.0.1"}, "--pmtu needs --proto udp or icmp"},
		{[]string{"trace", "--size", "70000", "198.18.0.1"}, "--size 70000 out of range"},
		{[]string{"trace", "--size", "1400", "--proto", "tcp", "198.18.0.1"}, "--size needs --proto udp or icmp"},
		{[]string{"check", "--format", "xml"}, "unknown --format"},
		{[]string{"lab", "up", "--profile", "lightning"}, "lightning"},
		{[]string{"nonsense"}, "unknown command"},
		{[]string{"multipath"}, "no target"},
		{[]string{"multipath", "--confidence", "0", "198.18.0.1"}, "--confidence 0"},
		{[]string{"multipath", "--confidence", "100", "198.18.0.1"}, "--confidence 100"},
		{[]string{"multipath", "--confidence", "-5", "198.18.0.1"}, "--confidence -5"},
		{[]string{"multipath", "--confidence", "150", "198.18.0.1"}, "--confidence 150"},
		{[]string{"multipath", "--confidence", "ninety", "198.18.0.1"}, "confidence"},
		{[]string{"multipath", "--parallel", "0", "198.18.0.1"}, "parallel 0 must be at least 1"},
		{[]string{"multipath", "--format", "png", "198.18.0.1"}, "unknown --format"},
		{[]string{"multipath", "--max-flows", "0", "198.18.0.1"}, "--max-flows 0"},
		{[]string{"multipath", "--sport", "65530", "--max-flows", "64", "198.18.0.1"}, "past 65534"},
		{[]string{"multipath", "--wait", "0s", "198.18.0.1"}, "--wait"},
		{[]string{"multipath", "--proto", "sctp", "198.18.0.1"}, "unknown --proto"},
		{[]string{"multipath", "no-such-host.invalid"}, "unknown host"},
		{[]string{"multipath", "-f", "/nonexistent/targets.txt"}, "target file"},
	} {
		r := run(t, 20*time.Second, tp(tc.args...)...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, r.code, r.stderr)
			continue
		}
		oneLine(t, r, tc.want)
	}
}

func TestMalformedTargetFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "targets.txt")
	os.WriteFile(f, []byte("198.19.1.1\n198.19.1.2 198.19.1.3\n"), 0o644)
	r := run(t, 10*time.Second, tp("trace", "-f", f)...)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2", r.code)
	}
	oneLine(t, r, "targets.txt:2")
}

func TestVersion(t *testing.T) {
	r := run(t, 10*time.Second, tp("version")...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "turnpath ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// asNobody runs the binary without any privilege.
func asNobody(args ...string) []string {
	return append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", binPath}, args...)
}

func TestNoPrivileges(t *testing.T) {
	needRoot(t) // to drop them
	ns := bareNetns(t)
	r := run(t, 10*time.Second, append([]string{"ip", "netns", "exec", ns}, asNobody("trace", "198.18.250.2")...)...)
	if r.code != 3 {
		t.Fatalf("trace as nobody: exit %d (%s)", r.code, r.stderr)
	}
	oneLine(t, r, "CAP_NET_RAW")
	r = run(t, 10*time.Second, asNobody("lab", "up", "--prefix", "tpnobody")...)
	if r.code != 3 {
		t.Fatalf("lab up as nobody: exit %d", r.code)
	}
	oneLine(t, r, "needs root")
}

// bareNetns makes a namespace with one IPv4-only veth pair and no IPv6 route: nothing in
// it can leave.
func bareNetns(t *testing.T) string {
	b := make([]byte, 3)
	rand.Read(b)
	ns := "tpc" + hex.EncodeToString(b)
	for _, c := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"},
		{"ip", "-n", ns, "addr", "add", "198.18.250.1/24", "dev", "va"},
		{"ip", "-n", ns, "link", "set", "va", "up"},
		{"ip", "-n", ns, "link", "set", "vb", "up"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

func TestNoRoute(t *testing.T) {
	needRoot(t)
	ns := bareNetns(t)
	for target, want := range map[string]string{"198.18.77.1": "no route", "fd51::1": "IPv6"} {
		r := run(t, 10*time.Second, "ip", "netns", "exec", ns, binPath, "trace", target)
		if r.code != 3 {
			t.Errorf("%s: exit %d (%s)", target, r.code, r.stderr)
		}
		oneLine(t, r, want)
	}
}

// TestLabTraceCLI runs the real thing in a lab: the text and JSON output, exit 0, and the
// error paths that need a live network: an interface that disappears mid-run and Ctrl-C,
// both leaving no BPF program behind.
func TestLabTraceCLI(t *testing.T) {
	_, client, inLab := cliLab(t, "tpc")

	r := run(t, 30*time.Second, inLab("trace", "198.19.1.1")...)
	if r.code != 0 || !strings.Contains(r.stdout, "STUN success") || !strings.Contains(r.stdout, "lab.turnpath.test") {
		t.Fatalf("trace: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("not a TTY: want nothing on stderr, got %q", r.stderr)
	}
	r = run(t, 30*time.Second, inLab("trace", "-n", "--format", "json", "198.19.1.1", "fd51:1:2::5")...)
	if r.code != 0 || !strings.Contains(r.stdout, `"schema": "turnpath.trace/v1"`) {
		t.Fatalf("json: exit %d\n%s", r.code, r.stdout)
	}

	// Long run: 256 targets at 20 probes/s. Take the interface away under it.
	f := filepath.Join(t.TempDir(), "targets.txt")
	var lines []string
	for i := 0; i < 256; i++ {
		lines = append(lines, fmt.Sprintf("198.19.1.%d", i))
	}
	os.WriteFile(f, []byte(strings.Join(lines, "\n")), 0o644)

	for _, stop := range []string{"sigint", "kill9", "link-gone"} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", client, binPath}, "trace", "-n", "--rate", "20", "-f", f)...)
		var se bytes.Buffer
		cmd.Stderr = &se
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		ids := runProgs(t, client)
		if len(ids) < 2 {
			t.Errorf("%s: turnpath BPF programs during the run: %v, want XDP and TC egress", stop, ids)
		}
		start := time.Now()
		switch stop {
		case "sigint":
			cmd.Process.Signal(syscall.SIGINT)
		case "kill9":
			// ip netns exec execs turnpath, so this is turnpath's PID. bpf_links die with it.
			cmd.Process.Signal(syscall.SIGKILL)
		default:
			exec.Command("ip", "-n", client, "link", "del", "l1-r1").Run()
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%s: trace did not stop", stop)
		}
		if code := cmd.ProcessState.ExitCode(); stop != "kill9" && code != 3 {
			t.Errorf("%s: exit %d, want 3 (%s)", stop, code, se.String())
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("%s: took %v to stop", stop, el)
		}
		if stop == "link-gone" && !strings.Contains(se.String(), "disappeared") && !strings.Contains(se.String(), "went down") {
			t.Errorf("link gone: stderr %q", se.String())
		}
		if left := progsLeft(t, ids); len(left) > 0 {
			t.Errorf("%s: turnpath BPF programs %v still loaded", stop, left)
		}
	}
}

type bpfProg struct {
	ID     int      `json:"id"`
	Name   string   `json:"name"`
	MapIDs []int    `json:"map_ids"`
	Pinned []string `json:"pinned"` // with bpftool -f
}

func bpftoolJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		t.Skipf("bpftool: %v", err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// runProgs returns the BPF programs of the turnpath run in namespace ns: the XDP program
// attached there and every program sharing a map with it (TC egress). Other tests load
// turnpath programs at the same time in their own namespaces; they do not count.
func runProgs(t *testing.T, ns string) []int {
	t.Helper()
	var net []struct {
		XDP []struct {
			ID int `json:"id"`
		} `json:"xdp"`
	}
	bpftoolJSON(t, &net, "ip", "netns", "exec", ns, "bpftool", "-j", "net", "show")
	var progs []bpfProg
	bpftoolJSON(t, &progs, "bpftool", "-j", "prog", "show")
	maps := map[int]bool{}
	for _, n := range net {
		for _, x := range n.XDP {
			for _, p := range progs {
				if p.ID == x.ID && p.Name == "xdp_rx" {
					for _, m := range p.MapIDs {
						maps[m] = true
					}
				}
			}
		}
	}
	var ids []int
	for _, p := range progs {
		for _, m := range p.MapIDs {
			if maps[m] {
				ids = append(ids, p.ID)
				break
			}
		}
	}
	return ids
}

// progsLeft waits a moment for ids to be freed (the kernel frees programs after an RCU
// grace period) or detached and returns those still loaded. Programs pinned in a turnpath
// slot (loader/pin.go) stay loaded by design, for the next run: they count only while a
// bpf_link still attaches them.
func progsLeft(t *testing.T, ids []int) []int {
	t.Helper()
	var left []int
	for i := 0; i < 20; i++ {
		var progs []bpfProg
		bpftoolJSON(t, &progs, "bpftool", "-j", "-f", "prog", "show")
		var links []struct {
			ProgID int `json:"prog_id"`
		}
		bpftoolJSON(t, &links, "bpftool", "-j", "link", "show")
		left = left[:0]
		for _, p := range progs {
			if !slices.Contains(ids, p.ID) {
				continue
			}
			pinned := slices.ContainsFunc(p.Pinned, func(s string) bool { return strings.Contains(s, "/turnpath") })
			linked := slices.ContainsFunc(links, func(l struct {
				ProgID int `json:"prog_id"`
			}) bool {
				return l.ProgID == p.ID
			})
			if !pinned || linked {
				left = append(left, p.ID)
			}
		}
		if len(left) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return left
}

// cliLab brings a lab up with the CLI (as users do) and down when the test ends. It
// returns the prefix, the client namespace, and a command line prefix that runs turnpath
// in that namespace.
func cliLab(t *testing.T, stem string) (prefix, client string, inLab func(args ...string) []string) {
	t.Helper()
	needRoot(t)
	b := make([]byte, 3)
	rand.Read(b)
	prefix = stem + hex.EncodeToString(b)
	if r := run(t, 60*time.Second, tp("lab", "up", "--prefix", prefix)...); r.code != 0 {
		t.Fatalf("lab up: %d %s", r.code, r.stderr)
	}
	t.Cleanup(func() { run(t, 60*time.Second, tp("lab", "down", "--prefix", prefix)...) })
	client = prefix + "-client"
	return prefix, client, func(args ...string) []string {
		return append([]string{"ip", "netns", "exec", client, binPath}, args...)
	}
}

// signalAndWait sends sig to the started cmd and waits for it to exit, killing it and
// failing the test after timeout.
func signalAndWait(t *testing.T, cmd *exec.Cmd, sig os.Signal, timeout time.Duration) {
	t.Helper()
	cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not stop on %v", strings.Join(cmd.Args, " "), sig)
	}
}
