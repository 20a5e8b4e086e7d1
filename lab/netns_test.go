package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests here need a machine whose /run/netns has never been touched, which the test
// machine is not (other tests run `ip netns add`). So each test re-executes the test
// binary under `unshare --mount --propagation private` and the child mounts an empty
// tmpfs on /run first: a fresh /run/netns, and whatever the child leaves mounted
// vanishes with its mount namespace. Only /etc/netns and the lab's processes are
// shared with the host; the parent cleans those up.
//
// Each test runs twice: with a private /run, where `ip netns add` hides the mounts made
// before it (the bug), and with a shared /run as systemd makes it, where the bind mount
// and the copies it makes are peers of what they cover.

const (
	// netnsChildEnv names the test the re-executed binary is to run as the child.
	netnsChildEnv = "TURNPATH_NETNS_CHILD"
	// netnsParentMntEnv is the parent's mount namespace, so the child can refuse to
	// mount over the host's /run.
	netnsParentMntEnv = "TURNPATH_NETNS_PARENT_MNT"
	netnsPrefixEnv    = "TURNPATH_NETNS_PREFIX"
)

// bothRuns runs fn as subtests "private" and "shared": the propagation of the child's
// /run (see inFreshRun).
func bothRuns(t *testing.T, fn func(t *testing.T)) {
	for _, name := range []string{"private", "shared"} {
		t.Run(name, fn)
	}
}

// inFreshRun runs the calling (sub)test again as a child process in a private mount
// namespace with an empty /run, and fails if the child fails. In the child it mounts
// that /run, shared if the subtest is called "shared", and returns the prefix to use and
// true; the test then does its work.
func inFreshRun(t *testing.T) (prefix string, child bool) {
	t.Helper()
	if os.Getenv(netnsChildEnv) == t.Name() {
		mountFreshRun(t, strings.HasSuffix(t.Name(), "/shared"))
		return os.Getenv(netnsPrefixEnv), true
	}
	if os.Geteuid() != 0 || checkPrivileges() != nil {
		t.Skip("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	prefix = "tpnsfix" + hex.EncodeToString(b)
	t.Cleanup(func() { cleanupChildLab(t, prefix) })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	run := strings.Split(t.Name(), "/")
	for i := range run {
		run[i] = "^" + run[i] + "$"
	}
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private",
		os.Args[0], "-test.run="+strings.Join(run, "/"), "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(),
		netnsChildEnv+"="+t.Name(),
		netnsParentMntEnv+"="+strconv.FormatUint(mntNS(t), 10),
		netnsPrefixEnv+"="+prefix)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("child in a private mount namespace: %v\n%s", err, out)
	}
	t.Logf("child output:\n%s", out)
	return prefix, false
}

// mntNS is the inode of this process's mount namespace.
func mntNS(t *testing.T) uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &st); err != nil {
		t.Fatalf("stat mount namespace: %v", err)
	}
	return st.Ino
}

// mountFreshRun mounts an empty tmpfs on /run, after checking that this process is not
// in its parent's mount namespace: unshare must have made a private one.
func mountFreshRun(t *testing.T, shared bool) {
	parent, err := strconv.ParseUint(os.Getenv(netnsParentMntEnv), 10, 64)
	if err != nil || parent == 0 || parent == mntNS(t) {
		t.Fatalf("refusing to mount over /run: not in a mount namespace of our own (parent %q, ours %d)", os.Getenv(netnsParentMntEnv), mntNS(t))
	}
	if err := unix.Mount("tpnsfix", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on /run: %v", err)
	}
	if shared {
		// Shared within this mount namespace only: its parent mount is private.
		if err := unix.Mount("", "/run", "", unix.MS_SHARED, ""); err != nil {
			t.Fatalf("make /run shared: %v", err)
		}
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, "/run", 0, unix.STATX_MNT_ID, &stx); err != nil {
		t.Fatalf("statx /run: %v", err)
	}
	freshRun = int(stx.Mnt_id)
}

// freshRun is the mount id of the child's tmpfs on /run. The child also has copies of
// the host's mounts under /run (such as the host's /run/netns), hidden beneath the
// tmpfs; mountinfo leaves them out.
var freshRun int

// cleanupChildLab removes what a failed child could leave outside its mount namespace:
// the lab's processes (which keep its network namespaces alive) and /etc/netns.
func cleanupChildLab(t *testing.T, prefix string) {
	for _, p := range strayProcs(prefix) {
		t.Errorf("%s (pid %d) of lab %s left running", p.Name, p.PID, prefix)
		if err := stopProcess(p); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if _, err := os.Lstat(clientEtcDir(prefix)); err == nil {
		t.Errorf("%s left behind", clientEtcDir(prefix))
		if err := os.RemoveAll(clientEtcDir(prefix)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	id, parent int
	root       string // e.g. "net:[4026532174]" for a network namespace
	point      string
	peers      int // peer group ("shared:N"), 0 if not shared
}

// mountinfo lists this mount namespace's mounts, in the child only those on or under
// its /run.
func mountinfo(t *testing.T) []mountEntry {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	var out []mountEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			t.Fatalf("mountinfo line %q", line)
		}
		m := mountEntry{root: f[3], point: f[4]}
		m.id, _ = strconv.Atoi(f[0])
		m.parent, _ = strconv.Atoi(f[1])
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if g, ok := strings.CutPrefix(opt, "shared:"); ok {
				m.peers, _ = strconv.Atoi(g)
			}
		}
		out = append(out, m)
	}
	if freshRun == 0 {
		return out
	}
	parent := map[int]int{}
	for _, m := range out {
		parent[m.id] = m.parent
	}
	underRun := func(id int) bool {
		for range len(out) {
			if id == freshRun {
				return true
			}
			p, ok := parent[id]
			if !ok || p == id {
				return false
			}
			id = p
		}
		return false
	}
	var under []mountEntry
	for _, m := range out {
		if underRun(m.id) {
			under = append(under, m)
		}
	}
	return under
}

// mountsAt returns the mounts whose mount point is p, hidden or not.
func mountsAt(t *testing.T, p string) []mountEntry {
	var out []mountEntry
	for _, m := range mountinfo(t) {
		if m.point == p {
			out = append(out, m)
		}
	}
	return out
}

// ipNetnsAddDel runs `ip netns add` and `ip netns del` for a namespace of its own, as
// any other tool (or test) on the machine might between lab up and lab down.
func ipNetnsAddDel(t *testing.T, name string) {
	t.Helper()
	for _, c := range [][]string{{"netns", "add", name}, {"netns", "del", name}} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(c, " "), err, out)
		}
	}
}

// checkNetnsDirShared wants /run/netns to be exactly one shared mount: not a plain
// directory, and no bind mount stacked on another.
func checkNetnsDirShared(t *testing.T) {
	t.Helper()
	ms := mountsAt(t, netnsDir)
	if len(ms) != 1 || ms[0].peers == 0 {
		t.Errorf("%s: mounts %+v, want one shared mount", netnsDir, ms)
	}
}

// checkNotHidden wants each namespace mounted at its path, and any further mount there
// (one beneath a bind mount on /run/netns) a peer of the others, so that unmounting the
// visible one unmounts it too. A private mount beneath would pin the file.
func checkNotHidden(t *testing.T, names []string) {
	t.Helper()
	for _, n := range names {
		ms := mountsAt(t, nsPath(n))
		if len(ms) == 0 {
			t.Errorf("%s: not mounted", nsPath(n))
			continue
		}
		for _, m := range ms[1:] {
			if m.peers == 0 || m.peers != ms[0].peers {
				t.Errorf("%s: mounts %+v, want one or only peers", nsPath(n), ms)
				break
			}
		}
	}
}

// checkGone wants no file, no mount and no `ip netns list` entry of the namespaces, and
// no mount of any of the namespace inodes (the mounts are what keeps a namespace without
// processes alive).
func checkGone(t *testing.T, names []string, inodes []string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Lstat(nsPath(n)); err == nil {
			t.Errorf("%s left behind", nsPath(n))
		}
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v %s", err, out)
	}
	for _, n := range names {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == n {
				t.Errorf("ip netns list still shows %s", n)
			}
		}
	}
	for _, m := range mountinfo(t) {
		for _, ino := range inodes {
			if m.root == ino {
				t.Errorf("namespace %s still mounted at %s (mount %d)", ino, m.point, m.id)
			}
		}
	}
}

// nsInode is the mountinfo root of a namespace file, "net:[N]".
func nsInode(t *testing.T, name string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(nsPath(name), &st); err != nil {
		t.Fatalf("stat %s: %v", nsPath(name), err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// TestNetnsDownAfterIPNetnsAdd is issue 11's reproduction: on a machine where
// /run/netns was never used, lab up, then `ip netns add x; ip netns del x`, then lab
// down. iproute2 turned /run/netns into a bind mount on itself and hid the lab's
// namespaces beneath it, so lab down failed with "device or resource busy" and left all
// of them behind. Now lab up prepares /run/netns first, so the namespaces stay visible
// and healthy, and lab down removes everything.
func TestNetnsDownAfterIPNetnsAdd(t *testing.T) {
	bothRuns(t, func(t *testing.T) {
		prefix, child := inFreshRun(t)
		if !child {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		l, err := Up(ctx, Options{Prefix: prefix, Profile: ProfileFast})
		if err != nil {
			t.Fatalf("Up: %v", err)
		}
		st, err := readState(prefix)
		if err != nil || st == nil {
			t.Fatalf("state after Up: %v", err)
		}
		var inodes []string
		for _, n := range st.Namespaces {
			inodes = append(inodes, nsInode(t, n))
		}
		checkNetnsDirShared(t)

		ipNetnsAddDel(t, prefix+"ip")
		checkNetnsDirShared(t)
		checkNotHidden(t, st.Namespaces)
		if _, err := Open(prefix); err != nil {
			t.Errorf("lab after ip netns add: %v", err)
		}

		if err := l.Down(ctx); err != nil {
			t.Errorf("Down: %v", err)
		}
		checkGone(t, st.Namespaces, inodes)
		for _, p := range st.Processes {
			if procAlive(p.PID) {
				t.Errorf("%s (pid %d) still running after Down", p.Name, p.PID)
			}
		}
		if anythingPresent(prefix) {
			t.Errorf("lab %s still present after Down", prefix)
		}
	})
}

// TestNetnsDeleteHidden: a namespace made before /run/netns was a mount point (by an
// older turnpath, or by another tool) and then hidden by `ip netns add`. deleteNS, and
// so lab down, must still remove it and free the namespace. (With a shared /run the
// hidden mount is a peer of the visible copy and goes with it, as the shared run
// checks.)
func TestNetnsDeleteHidden(t *testing.T) {
	bothRuns(t, func(t *testing.T) {
		prefix, child := inFreshRun(t)
		if !child {
			return
		}
		old := prefix + "-old"
		if err := createNS(old); err != nil { // without PrepareNetnsDir, as before the fix
			t.Fatal(err)
		}
		ino := nsInode(t, old)
		ipNetnsAddDel(t, prefix+"ip")
		if ms := mountsAt(t, nsPath(old)); len(ms) != 2 {
			t.Fatalf("%s: mounts %+v, want the original hidden beneath a copy", nsPath(old), ms)
		}
		if err := deleteNS(old); err != nil {
			t.Errorf("deleteNS: %v", err)
		}
		checkGone(t, []string{old}, []string{ino})
	})
}

// TestNetnsPrepareUnhides: PrepareNetnsDir on a /run/netns that already holds a
// namespace. Its own bind mount must not hide that namespace (iproute2's does), it must
// be idempotent, and after it `ip netns add` must change nothing.
func TestNetnsPrepareUnhides(t *testing.T) {
	bothRuns(t, func(t *testing.T) {
		prefix, child := inFreshRun(t)
		if !child {
			return
		}
		old := prefix + "-old"
		if err := createNS(old); err != nil {
			t.Fatal(err)
		}
		ino := nsInode(t, old)
		if ms := mountsAt(t, netnsDir); len(ms) != 0 {
			t.Fatalf("fresh %s is a mount point: %+v", netnsDir, ms)
		}
		for range 2 {
			if err := PrepareNetnsDir(); err != nil {
				t.Fatalf("PrepareNetnsDir: %v", err)
			}
			checkNetnsDirShared(t)
			checkNotHidden(t, []string{old})
		}
		ipNetnsAddDel(t, prefix+"ip")
		checkNetnsDirShared(t)
		checkNotHidden(t, []string{old})
		if nsInode(t, old) != ino {
			t.Errorf("%s now shows another namespace", nsPath(old))
		}

		// The path reaches the mount, so `ip netns del` works as for any namespace.
		if out, err := exec.Command("ip", "netns", "del", old).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", old, err, out)
		}
		checkGone(t, []string{old}, []string{ino})
	})
}

// TestNetnsPrepareConcurrent: processes of ours preparing /run/netns at the same time
// (parallel test packages, each with its own lab) must not stack bind mounts.
func TestNetnsPrepareConcurrent(t *testing.T) {
	bothRuns(t, func(t *testing.T) {
		_, child := inFreshRun(t)
		if !child {
			return
		}
		errs := make(chan error)
		for range 8 {
			// Each call opens and locks /run/netns on its own, as separate processes do.
			go func() { errs <- PrepareNetnsDir() }()
		}
		for range 8 {
			if err := <-errs; err != nil {
				t.Errorf("PrepareNetnsDir: %v", err)
			}
		}
		checkNetnsDirShared(t)
	})
}
