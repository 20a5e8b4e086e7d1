package loader

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Generator is the in-kernel probe generator (bpf/gen.c): Go writes a batch of frames
// into its memory-mapped slots, one BPF_PROG_RUN with live frames sends them out of an
// interface, the program timestamping each probe in the run's `sent` map. It is
// measured against AF_PACKET in the capacity benchmark (BENCHMARKS.md).
type Generator struct {
	prog    *ebpf.Program
	frames  *ebpf.Map
	bss     *ebpf.Map
	mem     []byte
	ifindex int
	netns   uint64 // the network namespace (inode) ifindex is in
	nsfd    int    // and an fd of it, to run from another thread's namespace
	tmpl    []byte // the run's input frame: the kernel's page-pool frames start as a copy
	park    link.Link
	parkNS  int // ParkPrivate's namespace (fd; 0: none)
	// next is the slot the program sends next (its gen_next modulo GenSlots): Go fills
	// the slots from there, so a run needs no write of the counter; resync after a
	// failed run.
	next   int
	resync bool
}

// threadNetns is the calling thread's network namespace (its inode number).
func threadNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("loader: network namespace: %w", err)
	}
	return st.Ino, nil
}

// GenSlots and GenFrameMax are the generator's batch and frame sizes (bpf/gen.c).
const (
	GenSlots    = 256
	GenFrameMax = 256
)

// xdpMd is struct xdp_md, the context of a live-frames run.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// NewGenerator loads the generator for this run's objects (its `sent` is theirs), to send
// out of ifindex, which must have an XDP program attached (the run's: XDP_TX in live
// mode needs one).
func (o *Objects) NewGenerator(ifindex int) (*Generator, error) {
	spec, err := LoadGen()
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	var objs struct {
		Prog   *ebpf.Program `ebpf:"xdp_gen"`
		Frames *ebpf.Map     `ebpf:"gen_frames"`
		Bss    *ebpf.Map     `ebpf:".bss"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"sent": o.objs.Sent}}); err != nil {
		return nil, loadErr(err)
	}
	g := &Generator{prog: objs.Prog, frames: objs.Frames, bss: objs.Bss, ifindex: ifindex, nsfd: -1, tmpl: make([]byte, 64)}
	// BPF_PROG_RUN finds ingress_ifindex in the calling thread's namespace, not in
	// the one the run opened its sockets in: Run refuses any other.
	if g.netns, err = threadNetns(); err != nil {
		g.Close()
		return nil, err
	}
	if g.nsfd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		g.Close()
		return nil, fmt.Errorf("loader: open network namespace: %w", err)
	}
	mem, err := unix.Mmap(objs.Frames.FD(), 0, int(objs.Frames.MaxEntries())*int(unsafe.Sizeof(GenGenSlot{})),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("loader: map generator frames: %w", err)
	}
	g.mem = mem
	return g, nil
}

// Slot is the frame buffer (GenFrameMax bytes) of the i-th frame of the next run, for Go
// to build a frame into; i < GenSlots.
func (g *Generator) Slot(i int) []byte {
	return g.slot(i).Frame[:]
}

func (g *Generator) slot(i int) *GenGenSlot {
	i = (g.next + i) % GenSlots
	return (*GenGenSlot)(unsafe.Pointer(&g.mem[i*int(unsafe.Sizeof(GenGenSlot{}))]))
}

// Set completes the i-th frame of the next run: it is n bytes long, its probe key k.
func (g *Generator) Set(i, n int, k ProbeKey) {
	s := g.slot(i)
	s.Len = uint16(n)
	r := k.raw()
	s.Key.Daddr, s.Key.Sport, s.Key.Id = r.Daddr, r.Sport, r.Id
}

// Run sends frames 0..n-1 (n <= GenSlots): one BPF_PROG_RUN, the program run n times in
// live-frames mode, in batches of batch frames (0: the kernel's 64) between which the
// kernel runs the receive side. The kernel looks the interface up by index in the
// calling thread's network namespace, where the same index may name another interface:
// from a thread in another namespace than NewGenerator's (a test's or benchmark's
// sending goroutine), the run is made from the generator's namespace (setns on a locked
// thread, and back).
func (g *Generator) Run(n, batch int) error {
	if n <= 0 {
		return nil
	}
	if n > GenSlots {
		return fmt.Errorf("loader: generator run of %d frames (at most %d)", n, GenSlots)
	}
	if g.resync {
		if err := g.bss.Put(uint32(0), uint32(g.next)); err != nil {
			return fmt.Errorf("loader: reset generator: %w", err)
		}
		g.resync = false
	}
	run := func() error {
		_, err := g.prog.Run(&ebpf.RunOptions{Data: g.tmpl, Repeat: uint32(n), Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context: &xdpMd{DataEnd: uint32(len(g.tmpl)), IngressIfindex: uint32(g.ifindex)}, BatchSize: uint32(batch)})
		if err != nil {
			// How far the program got is unknown: start over at slot 0.
			g.next, g.resync = 0, true
			return fmt.Errorf("loader: run generator: %w", err)
		}
		g.next = (g.next + n) % GenSlots
		return nil
	}
	ns, err := threadNetns()
	if err != nil {
		return err
	}
	if ns == g.netns {
		return run()
	}
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("loader: open network namespace: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(g.nsfd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("loader: enter the generator's network namespace: %w", err)
	}
	err = run()
	if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
		// The thread stays locked: it dies with its goroutine instead of serving
		// others from the wrong namespace.
		return errors.Join(err, fmt.Errorf("loader: leave the generator's network namespace: %w", serr))
	}
	runtime.UnlockOSThread()
	return err
}

// ParkPrivate keeps the generator's program in the kernel's XDP dispatcher: a
// BPF_PROG_RUN of an XDP program the dispatcher does not hold adds it for the run and
// removes it after, two rewrites of kernel text (static calls, IPIs to every CPU) per
// run that cost more than the frames (5x slower in the capacity benchmark), while a
// program attached anywhere stays in it. It attaches the program to an idle veth pair
// in a network namespace of its own that nothing but this generator references (an fd;
// no name in /run/netns): however the process ends, even by kill -9, the kernel removes
// the namespace, the veth pair and the attachment with it. Creating a network namespace
// needs CAP_SYS_ADMIN.
func (g *Generator) ParkPrivate() error {
	type parked struct {
		l    link.Link
		nsfd int
		err  error
	}
	done := make(chan parked, 1)
	go func() {
		// The thread's namespace changes and is never changed back: the thread stays
		// locked, and ends with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- parked{err: fmt.Errorf("loader: create a network namespace for the generator (needs CAP_SYS_ADMIN): %w", err)}
			return
		}
		ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- parked{err: fmt.Errorf("loader: open the generator's namespace: %w", err)}
			return
		}
		la := netlink.NewLinkAttrs()
		la.Name = "gen0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "gen1"}); err != nil {
			unix.Close(ns)
			done <- parked{err: fmt.Errorf("loader: add the generator's veth: %w", err)}
			return
		}
		l, err := netlink.LinkByName("gen0")
		if err == nil {
			var xl link.Link
			xl, err = link.AttachXDP(link.XDPOptions{Program: g.prog, Interface: l.Attrs().Index})
			if err == nil {
				done <- parked{l: xl, nsfd: ns}
				return
			}
		}
		unix.Close(ns)
		done <- parked{err: fmt.Errorf("loader: park generator: %w", err)}
	}()
	p := <-done
	if p.err != nil {
		return p.err
	}
	g.park, g.parkNS = p.l, p.nsfd
	return nil
}

// Close releases the generator.
func (g *Generator) Close() error {
	var errs []error
	if g.park != nil {
		errs = append(errs, g.park.Close())
	}
	if g.parkNS > 0 {
		errs = append(errs, unix.Close(g.parkNS))
		g.parkNS = 0
	}
	if g.mem != nil {
		errs = append(errs, unix.Munmap(g.mem))
		g.mem = nil
	}
	if g.nsfd >= 0 {
		errs = append(errs, unix.Close(g.nsfd))
		g.nsfd = -1
	}
	for _, c := range []interface{ Close() error }{g.prog, g.frames, g.bss} {
		if c != nil && c != (*ebpf.Program)(nil) && c != (*ebpf.Map)(nil) {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
