package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network namespaces are per thread. Everything here that enters a lab namespace does it
// on a fresh goroutine locked to its OS thread, and that thread either goes back to the
// original namespace or is destroyed (a goroutine that exits while locked takes its
// thread with it). So no Go thread ever runs unrelated code inside a lab namespace.

// netnsDir is where named namespaces are bind-mounted (the `ip netns` convention).
const netnsDir = "/run/netns"

// hostNetNS identifies the namespace the process started in. Package init runs on the
// main thread before any goroutine of ours could have moved it.
var hostNetNS = func() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0
	}
	return st.Ino
}()

// currentThreadNetNS returns the inode of the calling thread's network namespace.
func currentThreadNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("stat thread netns: %w", err)
	}
	return st.Ino, nil
}

// nsPath is the bind-mount path of a named namespace.
func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// nsExists reports whether the named namespace file exists.
func nsExists(name string) bool {
	_, err := os.Stat(nsPath(name))
	return err == nil
}

// InNetNS runs fn on an OS thread that is inside the named network namespace. Sockets
// created by fn stay in that namespace after InNetNS returns, so the usual pattern is to
// create sockets inside fn and use them anywhere. Goroutines that fn starts run in the
// original namespace. fn must return normally: if it calls runtime.Goexit (t.Fatal),
// InNetNS returns an error and the thread is discarded.
func InNetNS(name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	return inNetNS(ns, name, fn)
}

func inNetNS(ns netns.NsHandle, name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		sent := false
		defer func() {
			if !sent {
				errc <- fmt.Errorf("run in netns %s: function did not return", name)
			}
		}()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			sent = true
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread() // setns failed, so the thread never left
			sent = true
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic in netns %s: %v", name, r)
				}
			}()
			return fn()
		}()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime destroys it when we return.
			sent = true
			errc <- joinErrors(ferr, fmt.Errorf("leave netns %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		sent = true
		errc <- ferr
	}()
	return <-errc
}

// PrepareNetnsDir makes /run/netns a shared mount point, as `ip netns add` does before
// it creates a namespace (iproute2 ip/ipnetns.c, netns_add), and does it under a lock.
// Call it before creating named namespaces. Otherwise the first `ip netns add` after
// them bind-mounts /run/netns on itself: the namespaces mounted before are hidden
// beneath that mount (only copies are visible), `ip netns del` and Down cannot remove
// their files any more ("device or resource busy"), and the hidden mounts keep the
// namespaces alive. Once /run/netns is a shared mount point, `ip netns add` leaves it
// alone. Unlike iproute2 this takes a lock, so two processes of ours never stack two
// bind mounts (iproute2's own race, see its comment on Ubuntu bug 1998643).
func PrepareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	// The lock is flock on the directory itself: a lock file inside would show up in
	// `ip netns list`, and the self-bind mount shows the same inode, so the lock holds
	// across it. Opened before the bind mount, dir also keeps a way to the directory
	// that the bind mount is about to cover.
	dir, err := os.Open(netnsDir)
	if err != nil {
		return fmt.Errorf("open %s: %w", netnsDir, err)
	}
	defer dir.Close()
	// Held until dir is closed.
	if err := flockWait(int(dir.Fd()), 10*time.Second); err != nil {
		return fmt.Errorf("lock %s: %w", netnsDir, err)
	}
	err = makeShared()
	if !errors.Is(err, syscall.EINVAL) {
		return err // nil: already a mount point (ours, iproute2's or an admin's)
	}
	// EINVAL: /run/netns is a plain directory. Make it a mount point of its own.
	parentShared, err := mountShared(dir)
	if err != nil {
		// Unknown (a kernel before 5.8 has no mount ids in statx): leave the
		// originals alone rather than risk unmounting visible namespaces; deleteNS
		// still removes hidden ones.
		parentShared = true
	}
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s on itself: %w", netnsDir, err)
	}
	if err := makeShared(); err != nil {
		return err
	}
	if parentShared {
		// The bind mount joined the peer group of the mount it sits on (as on systemd
		// machines, where /run is shared), and so did the copies it made of the
		// namespaces already mounted here: unmounting a copy at /run/netns/NAME also
		// unmounts the original beneath it. Nothing is pinned, and unmounting an
		// original here would take its visible copy with it.
		return nil
	}
	// The bind mount copied every namespace mounted in the directory (MS_REC) and
	// hides the originals, which, being private, would pin their files as above. The
	// copies keep the namespaces alive and visible, so the originals can go.
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, unmountAll(fdPath(dir, n)))
	}
	if err := joinErrors(errs...); err != nil {
		return fmt.Errorf("unmount namespaces hidden under %s: %w", netnsDir, err)
	}
	return nil
}

// mountShared reports whether the mount that f is on is shared, from its optional
// fields in /proc/self/mountinfo.
func mountShared(f *os.File) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return false, fmt.Errorf("get mount of %s: %w", f.Name(), err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return false, fmt.Errorf("get mount of %s: kernel reports no mount id", f.Name())
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mountinfo: %w", err)
	}
	id := strconv.FormatUint(stx.Mnt_id, 10)
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 7 || fields[0] != id {
			continue
		}
		// Optional fields run from the 7th to the "-" separator.
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				return true, nil
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("get mount of %s: mount %s not in mountinfo", f.Name(), id)
}

// makeShared is `mount --make-shared /run/netns`. It fails with EINVAL if /run/netns is
// not a mount point.
func makeShared() error {
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// flockWait takes an exclusive flock on fd, polling until timeout.
func flockWait(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fdPath names the entry name of the directory open as dir, through /proc/self/fd. The
// walk starts at dir's own mount and directory, so it reaches mounts that are hidden
// at the same place under the path /run/netns/name.
func fdPath(dir *os.File, name string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), name)
}

// unmountAll unmounts p until it is no mount point any more: one namespace file can
// carry stacked mounts (the same name mounted twice). MNT_DETACH, as `ip netns del`
// does, so a process still inside does not make it fail.
func unmountAll(p string) error {
	for range 64 {
		err := unix.Unmount(p, unix.MNT_DETACH)
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return nil // not (or no longer) a mount point, or gone
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 64 unmounts", p)
}

// openCoveredNetnsDir opens the directory that a bind mount on /run/netns covers, by
// file handle: the handle of /run/netns (the bind mount shows the same inode) opened
// in the mount of /run. No path can get there, as every walk crosses into the bind
// mount. It fails if /run/netns is a file system of its own rather than a bind mount.
func openCoveredNetnsDir() (*os.File, error) {
	parent := filepath.Dir(netnsDir)
	pf, err := os.Open(parent)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", parent, err)
	}
	defer pf.Close()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, netnsDir, 0)
	if err != nil {
		return nil, fmt.Errorf("get file handle of %s: %w", netnsDir, err)
	}
	fd, err := unix.OpenByHandleAt(int(pf.Fd()), h, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open %s beneath its bind mount: %w", netnsDir, err)
	}
	return os.NewFile(uintptr(fd), netnsDir), nil
}

// CreateNS creates the named namespace the way `ip netns add` does: /run/netns
// prepared first (PrepareNetnsDir), no Go thread left inside. For the lab and other
// test fixtures (the reflector).
func CreateNS(name string) error {
	if err := PrepareNetnsDir(); err != nil {
		return err
	}
	return createNS(name)
}

// DeleteNS removes a namespace made by CreateNS (see deleteNS).
func DeleteNS(name string) error { return deleteNS(name) }

// createNS creates the named namespace (like `ip netns add`). Call PrepareNetnsDir
// first.
func createNS(name string) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: NewNamed moves this thread into the new namespace, and a
		// goroutine that exits locked takes its thread with it.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		// NewNamed can fail after creating the mount point file; don't leave it around.
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create netns %s: already exists", name)
		}
		_ = deleteNS(name)
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}

// deleteNS removes the named namespace's mount and file (like `ip netns del`). The
// kernel frees the namespace, and the veths in it, once nothing uses it any more. It
// also removes a namespace whose mount is hidden beneath a bind mount on /run/netns:
// made before /run/netns was a mount point (by an older turnpath, or by a tool that
// does not call PrepareNetnsDir) and covered by the first `ip netns add` after it.
func deleteNS(name string) error {
	p := nsPath(name)
	if err := unmountAll(p); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	err := os.Remove(p)
	if errors.Is(err, syscall.EBUSY) {
		// Still a mount point, but not one the path reaches: unmount it where it is.
		err = removeHidden(name)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// removeHidden unmounts the mounts of name in the directory beneath the bind mount on
// /run/netns and removes the file.
func removeHidden(name string) error {
	dir, err := openCoveredNetnsDir()
	if err != nil {
		return fmt.Errorf("remove %s (mounted beneath %s): %w", nsPath(name), netnsDir, err)
	}
	defer dir.Close()
	if err := unmountAll(fdPath(dir, name)); err != nil {
		return err
	}
	if err := os.Remove(nsPath(name)); err != nil {
		return fmt.Errorf("remove %s after unmounting it beneath %s: %w", nsPath(name), netnsDir, err)
	}
	return nil
}

// sysctl is one /proc/sys setting; optional ones may not exist on older kernels.
type sysctl struct {
	key      string // dotted, e.g. net.ipv4.ip_forward
	value    string
	optional bool
}

// writeSysctls sets sysctls inside the named namespace. /proc/sys/net shows the
// namespace of the thread that opens it, so this must run on the locked thread; the
// guard refuses to write if that thread is somehow still in the host namespace.
func writeSysctls(ns string, list []sysctl) error {
	return InNetNS(ns, func() error {
		cur, err := currentThreadNetNS()
		if err != nil {
			return err
		}
		if cur == hostNetNS {
			return fmt.Errorf("write sysctls in %s: thread is in the host namespace, refusing", ns)
		}
		for _, s := range list {
			p := "/proc/sys/" + strings.ReplaceAll(s.key, ".", "/")
			if err := os.WriteFile(p, []byte(s.value), 0); err != nil {
				if s.optional && errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return fmt.Errorf("set sysctl %s=%s in %s: %w", s.key, s.value, ns, err)
			}
		}
		return nil
	})
}

// ExecArgs returns the argv that runs cmd inside the client namespace of the lab with
// this prefix: ip netns exec <prefix>-client cmd... (ip also bind-mounts
// /etc/netns/<prefix>-client/resolv.conf, so the lab's resolver is used).
func ExecArgs(prefix string, cmd []string) ([]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("lab exec: %w", err)
	}
	if len(cmd) == 0 {
		return nil, fmt.Errorf("lab exec: %w", usagef("missing command"))
	}
	ns := NSName(prefix, DefaultTopology().Client())
	if !nsExists(ns) {
		return nil, fmt.Errorf("lab exec: %w", &notUpError{prefix})
	}
	ip, err := lookPath(toolIP)
	if err != nil {
		return nil, fmt.Errorf("lab exec: %w", err)
	}
	return append([]string{ip, "netns", "exec", ns}, cmd...), nil
}
