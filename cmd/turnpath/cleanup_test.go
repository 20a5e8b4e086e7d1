package main

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/loader"
	"github.com/vishvananda/netlink"
)

// A run killed with SIGKILL, or interrupted, while it probes leaves nothing attached to
// the interface (no XDP program, no TCX program, no clsact qdisc) and its pinned slot
// free; `check` lists the slot and `cleanup` removes it.
func TestRunLeavesNothingAttached(t *testing.T) {
	_, client, inLab := cliLab(t, "tpkl")
	dir := testPinDir(t)
	var ifindex int
	if err := lab.InNetNS(client, func() error {
		rt, err := hostnet.Lookup(netip.MustParseAddr("198.19.1.1"))
		ifindex = rt.Ifindex
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		args := inLab("trace", "-n", "--engine", "ebpf", "--rate", "20", "198.19.1.1", "198.19.1.2", "198.19.1.3")
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TURNPATH_BPF_PIN_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond) // loaded and attached; ~60 probes at 20/s to go
		if a := attached(t, client, ifindex); a == "" {
			t.Errorf("%v: nothing attached while the run probes", sig)
		}
		if slots, err := loader.PinnedSlots(dir); err != nil || len(slots) != 1 || !slots[0].InUse {
			t.Errorf("%v: pinned slots while the run probes: %+v, %v", sig, slots, err)
		}
		signalAndWait(t, cmd, sig, 10*time.Second)
		if a := attached(t, client, ifindex); a != "" {
			t.Errorf("after %v: %s", sig, a)
		}
		if slots, err := loader.PinnedSlots(dir); err != nil || len(slots) != 1 || slots[0].InUse {
			t.Errorf("after %v: pinned slots %+v, %v; want one, free", sig, slots, err)
		}
	}
	env := append(os.Environ(), "TURNPATH_BPF_PIN_DIR="+dir)
	r := runEnv(t, env, inLab("check", "198.19.1.1")...)
	if r.code != 0 || !strings.Contains(r.stdout, "bpf pinned") || !strings.Contains(r.stdout, "send: ") || !strings.Contains(r.stdout, "receive: ") {
		t.Errorf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runEnv(t, env, inLab("cleanup")...)
	if r.code != 0 || !strings.Contains(r.stdout, "removed ") {
		t.Errorf("cleanup: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if slots, err := loader.PinnedSlots(dir); err != nil || len(slots) != 0 {
		t.Errorf("after cleanup: %+v, %v", slots, err)
	}
}

// attached describes the BPF programs and clsact qdisc on the interface ("" for none).
func attached(t *testing.T, ns string, ifindex int) string {
	t.Helper()
	var out []string
	err := lab.InNetNS(ns, func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXEgress, ebpf.AttachTCXIngress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				return err
			}
			if n := len(res.Programs); n > 0 {
				out = append(out, at.String()+" programs")
			}
		}
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			out = append(out, "an XDP program")
		}
		qs, err := netlink.QdiscList(l)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "clsact" {
				out = append(out, "a clsact qdisc")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, ", ")
}

func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	old := os.Environ()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	defer func() {
		os.Clearenv()
		for _, kv := range old {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	}()
	return run(t, 30*time.Second, args...)
}

// testPinDir is a pin directory of the test's own on the host's bpffs.
func testPinDir(t *testing.T) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != 0xcafe4a11 {
		t.Skip("no bpffs at /sys/fs/bpf")
	}
	b := make([]byte, 4)
	rand.Read(b)
	dir := filepath.Join("/sys/fs/bpf", "turnpath-test-"+hex.EncodeToString(b))
	t.Cleanup(func() { loader.RemovePinned(dir) })
	return dir
}
