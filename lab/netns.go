package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

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

// createNS creates the named namespace (like `ip netns add`).
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
// kernel frees the namespace, and the veths in it, once nothing uses it any more.
func deleteNS(name string) error {
	p := nsPath(name)
	err := unix.Unmount(p, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
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
