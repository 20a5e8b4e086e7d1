package loader

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Pinning: loading and verifying the programs and creating the maps is most of what a
// run of the eBPF engine costs at start (tens of milliseconds, xdp_rx's verification and
// the preallocated `sent` map above all), more than a one-path trace takes otherwise.
// So the loaded objects are kept in bpffs between runs, in a pool of slots:
//
//	/sys/fs/bpf/turnpath/<version>/<slot>/{sent,flows,events,stats,cfg,tcx_egress,xdp_rx,...}
//
// <version> is a hash of the embedded BPF object: a turnpath built from another object
// never opens these (and a run removes other versions' idle slots when it creates one).
// A run owns a slot while it holds an exclusive flock on the slot's directory; the lock
// dies with the process (also with kill -9), so a crashed run's slot is free again at
// once. Each run writes its own configuration (.bss, struct tp_cfg) with its start time:
// `sent` and `flows` entries of an earlier run of the slot count as absent, and the run
// clears the slot's counters and ring buffer before attaching. Attachments are never
// pinned (bpf_links die with their process), so nothing stays attached after a run;
// what stays is the detached objects (about 10 MiB of kernel memory per slot), listed by
// `turnpath check` and removed by `turnpath cleanup` (RemovePinned).

// DefaultPinDir is where the slots live: "turnpath" on the bpffs at /sys/fs/bpf. Inside
// `ip netns exec`, which remounts /sys in a private mount namespace, it is the bpffs of
// the nearest ancestor process in another mount namespace, reached through
// /proc/PID/root; with no bpffs anywhere, turnpath mounts one at /sys/fs/bpf (as bpftool
// does) when it runs in pid 1's mount namespace, where the mount outlives it.
const DefaultPinDir = "/sys/fs/bpf/turnpath"

// PinSlots is the number of slots per version: as many runs at once reuse loaded
// objects; a run that finds all of them in use loads its own, unpinned.
const PinSlots = 4

// pinnedMaps and pinnedCore are what a complete slot holds; the programs a run needs only
// sometimes (tc_egress, tcx_ingress) are pinned when first loaded. "cfg" (the .bss
// map) is pinned last: its presence says the slot is complete.
var (
	pinnedMaps = []string{"sent", "flows", "events", "stats"}
	pinnedCore = []string{"tcx_egress", "xdp_rx"}
)

const pinReady = "cfg"

// Version identifies the embedded BPF object (a hash of its bytes): the name of its
// directory under the pin directory.
func Version() string {
	versionOnce.Do(func() {
		sum := sha256.Sum256(_TurnpathBytes)
		version = "v-" + hex.EncodeToString(sum[:6])
	})
	return version
}

var (
	versionOnce sync.Once
	version     string
)

// How says how a run's objects were obtained (Objects.How).
type How string

const (
	HowFresh   How = "loaded"        // loaded and verified for this run only (not pinned)
	HowCreated How = "loaded+pinned" // loaded, verified and pinned into a new slot
	HowReused  How = "pinned"        // a pinned slot's objects, loaded and verified by an earlier run
)

// OpenOptions tune Open.
type OpenOptions struct {
	// NoPin loads the objects for this run only, as Load does.
	NoPin bool
	// Dir is the pin directory (default DefaultPinDir); it must be on a bpffs.
	Dir string
}

// Open returns objects configured for cfg: a free pinned slot's when pinning works (see
// the comment at the top of pin.go), else freshly loaded ones. Objects.How and
// Objects.PinNote say which and why.
func Open(cfg Config, opts OpenOptions) (*Objects, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if opts.NoPin {
		o, err := Load(cfg)
		if o != nil {
			o.pinNote = "pinning disabled"
		}
		return o, err
	}
	dir, perr := pinDir(opts.Dir, true)
	if perr != nil {
		o, err := Load(cfg)
		if o != nil {
			o.pinNote = perr.Error()
		}
		return o, err
	}
	o, note, err := openPinned(cfg, dir)
	if err != nil {
		return nil, err
	}
	if o != nil {
		return o, nil
	}
	o, err = Load(cfg)
	if o != nil {
		o.pinNote = note
	}
	return o, err
}

// openPinned claims a slot and fills it if needed. It returns nil objects and a note
// saying why when pinning is not possible (the caller loads fresh objects), an error only
// for a failure that a fresh load would meet as well (a verifier error, permissions).
func openPinned(cfg Config, dir string) (*Objects, string, error) {
	vdir := filepath.Join(dir, Version())
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return nil, "pin directory: " + err.Error(), nil
	}
	for slot := range PinSlots {
		sdir := filepath.Join(vdir, strconv.Itoa(slot))
		lock, err := lockDir(sdir, true)
		if errors.Is(err, errRemoved) {
			// `turnpath cleanup` (or another version's run) removed it between our
			// mkdir and flock: once more, on a new directory.
			lock, err = lockDir(sdir, true)
		}
		if errors.Is(err, unix.EWOULDBLOCK) {
			continue // another run's
		}
		if err != nil {
			return nil, "pin slot: " + err.Error(), nil
		}
		o, err := loadPinned(cfg, sdir)
		if err != nil {
			// Incomplete (a creator was killed) or unusable: start the slot afresh.
			clearDir(sdir)
			o, err = createPinned(cfg, sdir)
			var pe *pinError
			if errors.As(err, &pe) {
				clearDir(sdir)
				unix.Close(lock)
				return nil, pe.Error(), nil // the caller loads objects of its own
			}
			if err != nil {
				clearDir(sdir)
				unix.Close(lock)
				return nil, "", err
			}
			o.how = HowCreated
			pruneOtherVersions(dir)
		} else {
			o.how = HowReused
		}
		o.lock, o.pinDir = lock, sdir
		if err := o.reset(); err != nil {
			o.Close()
			return nil, "", err
		}
		return o, "", nil
	}
	return nil, fmt.Sprintf("all %d pinned slots in use", PinSlots), nil
}

// lockDir creates dir if asked and takes an exclusive flock on it without waiting
// (EWOULDBLOCK: someone holds it). It returns the locked descriptor.
func lockDir(dir string, create bool) (int, error) {
	if create {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return -1, err
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return -1, err
	}
	// Still the directory at that path? A cleanup may have removed it before our lock.
	var held, now unix.Stat_t
	if unix.Fstat(fd, &held) != nil || unix.Stat(dir, &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
		unix.Close(fd)
		return -1, errRemoved
	}
	return fd, nil
}

// errRemoved: the directory was removed (or replaced) between opening and locking it.
var errRemoved = errors.New("pin slot removed meanwhile")

// pinError is a failure to pin fresh objects (not to load them): the run can still use
// them unpinned.
type pinError struct{ err error }

func (e *pinError) Error() string { return "pin objects: " + e.err.Error() }
func (e *pinError) Unwrap() error { return e.err }

// clearDir unlinks every pin in a slot directory (the objects live on while fds hold them).
func clearDir(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
}

// loadPinned opens a complete slot's objects.
func loadPinned(cfg Config, sdir string) (*Objects, error) {
	if _, err := os.Stat(filepath.Join(sdir, pinReady)); err != nil {
		return nil, err
	}
	o := &Objects{cfg: cfg, lock: -1}
	var err error
	maps := []**ebpf.Map{&o.objs.Sent, &o.objs.Flows, &o.objs.Events, &o.objs.Stats}
	for i, name := range pinnedMaps {
		if *maps[i], err = ebpf.LoadPinnedMap(filepath.Join(sdir, name), nil); err != nil {
			o.Close()
			return nil, err
		}
	}
	if o.bss, err = ebpf.LoadPinnedMap(filepath.Join(sdir, pinReady), nil); err != nil {
		o.Close()
		return nil, err
	}
	progs := []**ebpf.Program{&o.objs.TcxEgress, &o.objs.XdpRx}
	for i, name := range pinnedCore {
		if *progs[i], err = ebpf.LoadPinnedProgram(filepath.Join(sdir, name), nil); err != nil {
			o.Close()
			return nil, err
		}
	}
	// The programs loaded on demand, when an earlier run needed them.
	for name, slot := range map[string]**ebpf.Program{"tc_egress": &o.objs.TcEgress, "tcx_ingress": &o.objs.TcxIngress} {
		if p, err := ebpf.LoadPinnedProgram(filepath.Join(sdir, name), nil); err == nil {
			*slot = p
		}
	}
	return o, nil
}

// createPinned loads fresh objects and pins them into sdir, the ready marker last.
func createPinned(cfg Config, sdir string) (*Objects, error) {
	o, err := Load(cfg)
	if err != nil {
		return nil, err
	}
	pins := []struct {
		name string
		pin  func(string) error
	}{
		{"sent", o.objs.Sent.Pin}, {"flows", o.objs.Flows.Pin}, {"events", o.objs.Events.Pin},
		{"stats", o.objs.Stats.Pin}, {"tcx_egress", o.objs.TcxEgress.Pin}, {"xdp_rx", o.objs.XdpRx.Pin},
		{pinReady, o.bss.Pin},
	}
	for _, p := range pins {
		if err := p.pin(filepath.Join(sdir, p.name)); err != nil {
			o.Close()
			return nil, &pinError{fmt.Errorf("%s: %w", p.name, err)}
		}
	}
	return o, nil
}

// reset makes a claimed slot this run's: its configuration and start time (which make the
// earlier runs' `sent` and `flows` entries stale), zero counters, an empty ring buffer
// (drained when the reader opens).
func (o *Objects) reset() error {
	if err := o.writeConfig(); err != nil {
		return err
	}
	// `flows` needs no clearing: its entries carry the run's start time (flow_of).
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("loader: reset stats: %w", err)
	}
	if err := o.objs.Stats.Put(uint32(0), make([]TurnpathTpStats, n)); err != nil {
		return fmt.Errorf("loader: reset stats: %w", err)
	}
	o.drainOnOpen = true
	return nil
}

// pinLazy pins a program loaded on demand into the run's slot, for later runs.
func (o *Objects) pinLazy(name string, p *ebpf.Program) {
	if o.pinDir != "" {
		_ = p.Pin(filepath.Join(o.pinDir, name))
	}
}

// pinDir resolves the pin directory: dir when given, else $TURNPATH_BPF_PIN_DIR, else
// DefaultPinDir, as described there: on this mount namespace's bpffs, or the nearest
// ancestor's (`ip netns exec`), or (mount set, the default directory, pid 1's mount
// namespace) on one mounted at /sys/fs/bpf.
func pinDir(dir string, mount bool) (string, error) {
	if dir == "" {
		dir = os.Getenv("TURNPATH_BPF_PIN_DIR")
	}
	def := dir == ""
	if def {
		dir = DefaultPinDir
	}
	root := filepath.Dir(dir)
	if isBPFFS(root) {
		return dir, nil
	}
	if anc := ancestorRoot(); anc != "" && isBPFFS(anc+root) {
		return anc + dir, nil
	}
	if !mount || !def || !sameMountNS() {
		return "", fmt.Errorf("no bpffs at %s", root)
	}
	if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
		return "", fmt.Errorf("no bpffs at %s, and mounting one failed: %w", root, err)
	}
	return dir, nil
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// ancestorRoot is /proc/PID/root of the nearest ancestor in another mount namespace
// (`ip netns exec` runs its command in a private one), "" when there is none.
func ancestorRoot() string {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return ""
	}
	pid := os.Getppid()
	for range 8 {
		if pid <= 1 {
			return ""
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns != self {
			return fmt.Sprintf("/proc/%d/root", pid)
		}
		pid = parentOf(pid)
	}
	return ""
}

func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// sameMountNS reports whether this process shares pid 1's mount namespace (false when it
// cannot tell).
func sameMountNS() bool {
	a, err1 := os.Readlink("/proc/self/ns/mnt")
	b, err2 := os.Readlink("/proc/1/ns/mnt")
	return err1 == nil && err2 == nil && a == b
}

// PinnedSlot is one slot of pinned objects (PinnedSlots).
type PinnedSlot struct {
	Path    string
	Version string
	Current bool // made from this binary's BPF object
	InUse   bool // a live run holds it
	Objects []string
}

// PinnedSlots lists the slots under dir ("" = DefaultPinDir), for `turnpath check`.
func PinnedSlots(dir string) ([]PinnedSlot, error) {
	dir, err := pinDir(dir, false)
	if err != nil {
		return nil, nil // no bpffs: nothing pinned
	}
	vers, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loader: list pinned objects: %w", err)
	}
	var out []PinnedSlot
	for _, v := range vers {
		slots, _ := os.ReadDir(filepath.Join(dir, v.Name()))
		for _, s := range slots {
			p := filepath.Join(dir, v.Name(), s.Name())
			ps := PinnedSlot{Path: p, Version: v.Name(), Current: v.Name() == Version()}
			fd, err := lockDir(p, false)
			if err == nil {
				unix.Close(fd)
			} else {
				ps.InUse = errors.Is(err, unix.EWOULDBLOCK)
			}
			ents, _ := os.ReadDir(p)
			for _, e := range ents {
				ps.Objects = append(ps.Objects, e.Name())
			}
			out = append(out, ps)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// RemovePinned removes every slot under dir ("" = DefaultPinDir) that no live run holds
// (all versions; only other versions' with otherVersionsOnly) and returns the paths
// removed and those left because a run holds them.
func RemovePinned(dir string) (removed, inUse []string, err error) {
	return removePinned(dir, false)
}

func removePinned(dir string, otherVersionsOnly bool) (removed, inUse []string, err error) {
	dir, err = pinDir(dir, false)
	if err != nil {
		return nil, nil, nil // no bpffs: nothing pinned
	}
	vers, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("loader: remove pinned objects: %w", err)
	}
	var errs []error
	for _, v := range vers {
		if otherVersionsOnly && v.Name() == Version() {
			continue
		}
		vdir := filepath.Join(dir, v.Name())
		slots, _ := os.ReadDir(vdir)
		for _, s := range slots {
			p := filepath.Join(vdir, s.Name())
			fd, err := lockDir(p, false)
			if errors.Is(err, unix.EWOULDBLOCK) {
				inUse = append(inUse, p)
				continue
			}
			if errors.Is(err, errRemoved) {
				continue // someone else removed it
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			clearDir(p)
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, p)
			}
			unix.Close(fd)
		}
		_ = os.Remove(vdir) // only when empty
	}
	if !otherVersionsOnly {
		_ = os.Remove(dir)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, inUse, fmt.Errorf("loader: remove pinned objects: %w", err)
	}
	return removed, inUse, nil
}

// pruneOtherVersions removes the idle slots of other turnpath versions: they would never
// be used by this binary and hold kernel memory.
func pruneOtherVersions(dir string) { _, _, _ = removePinned(dir, true) }

// PinNote returns how the objects were obtained and, for fresh ones, why not from a pinned
// slot: "pinned (/sys/fs/bpf/turnpath/v-…/0)", "loaded (all 4 pinned slots in use)".
func (o *Objects) PinNote() string {
	how := o.How()
	switch {
	case o.pinDir != "":
		return fmt.Sprintf("%s (%s)", how, displayPath(o.pinDir))
	case o.pinNote != "":
		return fmt.Sprintf("%s (%s)", how, strings.TrimSpace(o.pinNote))
	}
	return string(how)
}

// displayPath shows a pin path as the host sees it: without the /proc/PID/root a run
// inside `ip netns exec` reaches it through.
func displayPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "/proc/"); ok {
		if i := strings.Index(rest, "/root/"); i > 0 {
			return rest[i+len("/root"):] + " (through /proc/" + rest[:i] + "/root: the parent's mount namespace)"
		}
	}
	return p
}

// How says how the objects were obtained.
func (o *Objects) How() How {
	if o.how == "" {
		return HowFresh
	}
	return o.how
}
