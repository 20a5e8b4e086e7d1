package loader

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LegacyFilterName is the cls_bpf filter name of a legacy TC attach. Stale
// filters (a crashed run's) are found by the prefix LegacyFilterPrefix.
const (
	LegacyFilterName   = "turnpath_egress"
	LegacyFilterPrefix = "turnpath_"
)

// TCMode says how the TC egress program is attached.
type TCMode string

const (
	TCModeTCX    TCMode = "tcx"    // bpf_link on the TCX egress hook (kernel >= 6.6)
	TCModeLegacy TCMode = "legacy" // cls_bpf filter on a clsact qdisc
)

// RxHook says where replies are matched.
type RxHook string

const (
	// RxXDP: the XDP hook, the earliest receive timestamp. An interface has one XDP
	// program (bpf_link), so only one process at a time gets it.
	RxXDP RxHook = "xdp"
	// RxTCX: the TCX ingress hook (kernel >= 6.6), which chains any number of
	// programs: the hook of every run that finds XDP taken.
	RxTCX RxHook = "tcx-ingress"
)

// AttachOptions tune Attach.
type AttachOptions struct {
	// Rx forces where replies are matched; "" takes XDP when it is free and TCX
	// ingress when another program holds XDP.
	Rx RxHook
	// ForceLegacyTC skips TCX and uses a clsact qdisc + cls_bpf filter.
	ForceLegacyTC bool
	// XDPFlags selects the XDP mode; 0 lets the kernel use driver (native)
	// mode when the driver supports it, generic (SKB) mode otherwise.
	XDPFlags link.XDPAttachFlags
}

// tcNetlink is the rtnetlink subset the legacy TC path needs; *netlink.Handle
// implements it (tests substitute a fake).
type tcNetlink interface {
	LinkByIndex(index int) (netlink.Link, error)
	QdiscList(link netlink.Link) ([]netlink.Qdisc, error)
	QdiscAdd(qdisc netlink.Qdisc) error
	QdiscDel(qdisc netlink.Qdisc) error
	FilterList(link netlink.Link, parent uint32) ([]netlink.Filter, error)
	FilterAdd(filter netlink.Filter) error
	FilterDel(filter netlink.Filter) error
	Close()
}

// Kernel-facing hooks, replaceable in tests.
var (
	newNetlink = func() (tcNetlink, error) { return netlink.NewHandle(unix.NETLINK_ROUTE) }
	attachTCX  = link.AttachTCX
	attachXDP  = link.AttachXDP
	// programHolders lists live processes holding a program (tests: none).
	programHolders = func(id uint32) []Process { return ProgramHolders("/proc", id, os.Getpid()) }
)

// ErrXDPBusy is wrapped by Attach when another program holds the interface's XDP
// hook and TCX ingress is not available (kernel < 6.6) to match replies instead.
var ErrXDPBusy = errors.New("the XDP hook is held by another program")

// Attachment is the programs attached to one interface. Close detaches them.
type Attachment struct {
	ifindex int
	tcMode  TCMode
	xdpMode string
	rx      RxHook

	mu      sync.Mutex
	closed  bool
	nl      tcNetlink // bound to the network namespace Attach ran in
	tcLink  link.Link
	rxLink  link.Link // TCX ingress, when XDP was taken
	xdpLink link.Link
	legacy  *legacyFilter
}

// Ifindex is the interface the programs are attached to.
func (a *Attachment) Ifindex() int { return a.ifindex }

// TCMode reports how TC egress was attached.
func (a *Attachment) TCMode() TCMode { return a.tcMode }

// XDPMode reports the XDP mode the kernel chose: "driver", "generic",
// "offload" or "" if unknown (or replies are matched at TCX ingress).
func (a *Attachment) XDPMode() string { return a.xdpMode }

// Rx reports where replies are matched.
func (a *Attachment) Rx() RxHook { return a.rx }

// Attach attaches TC egress (TCX, falling back to a legacy clsact filter when
// TCX is not supported) and XDP to the interface ifindex in the calling
// thread's network namespace.
func (o *Objects) Attach(ifindex int) (*Attachment, error) {
	return o.AttachWithOptions(ifindex, AttachOptions{})
}

// AttachWithOptions is Attach with options.
func (o *Objects) AttachWithOptions(ifindex int, opts AttachOptions) (*Attachment, error) {
	if ifindex <= 0 {
		return nil, fmt.Errorf("loader: attach: bad interface index %d", ifindex)
	}
	nl, err := newNetlink()
	if err != nil {
		return nil, fmt.Errorf("loader: attach: netlink: %w", err)
	}
	lnk, err := nl.LinkByIndex(ifindex)
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("loader: attach: interface %d: %w", ifindex, err)
	}
	if et := lnk.Attrs().EncapType; et != "" && et != "ether" {
		nl.Close()
		return nil, fmt.Errorf("loader: attach: %s is not an Ethernet interface (%s); turnpath parses Ethernet frames", lnk.Attrs().Name, et)
	}

	a := &Attachment{ifindex: ifindex, nl: nl}

	if !opts.ForceLegacyTC {
		l, err := attachTCX(link.TCXOptions{
			Interface: ifindex,
			Program:   o.objs.TcxEgress,
			Attach:    ebpf.AttachTCXEgress,
		})
		switch {
		case err == nil:
			a.tcLink, a.tcMode = l, TCModeTCX
		case errors.Is(err, ebpf.ErrNotSupported):
			// Kernel < 6.6: fall through to the legacy attach.
		default:
			a.Close()
			return nil, attachErr("attach TCX egress", err)
		}
	}
	if a.tcMode == "" {
		tc, err := o.tcEgress()
		if err != nil {
			a.Close()
			return nil, err
		}
		var progID ebpf.ProgramID
		if info, err := tc.Info(); err == nil {
			progID, _ = info.ID()
		}
		// Legacy filters of a crashed run: only a kernel without TCX, where runs attach
		// legacy filters, has them (so runs with TCX skip the netlink dumps).
		_, _ = cleanupStale(nl, ifindex)
		lf, err := attachLegacy(nl, lnk, tc.FD(), int(progID))
		if err != nil {
			a.Close()
			return nil, attachErr("attach legacy TC egress", err)
		}
		a.legacy, a.tcMode = lf, TCModeLegacy
	}

	if err := o.attachRx(a, ifindex, opts); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// attachRx attaches the reply matcher: XDP where it is free, else (or when asked)
// the same matching at TCX ingress. Every run's matcher passes what is not its own,
// so runs chained on TCX behind one on XDP each see their replies.
func (o *Objects) attachRx(a *Attachment, ifindex int, opts AttachOptions) error {
	if opts.Rx != RxTCX {
		xl, err := attachXDP(link.XDPOptions{
			Program:   o.objs.XdpRx,
			Interface: ifindex,
			Flags:     opts.XDPFlags,
		})
		switch {
		case err == nil:
			a.xdpLink, a.rx = xl, RxXDP
			if l, err := a.nl.LinkByIndex(ifindex); err == nil && l.Attrs().Xdp != nil {
				a.xdpMode = xdpModeName(l.Attrs().Xdp.AttachMode)
			}
			return nil
		case opts.Rx == RxXDP || !(errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST)):
			return attachErr("attach XDP", err)
		}
		// EBUSY: another program (another turnpath run, any XDP user) holds it;
		// EEXIST: one is attached in the other mode (native vs generic).
	}
	prog, err := o.tcxIngress()
	if err != nil {
		return err
	}
	l, err := attachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("loader: attach reply matcher: %w, and TCX ingress needs kernel >= 6.6", ErrXDPBusy)
		}
		return attachErr("attach TCX ingress", err)
	}
	a.rxLink, a.rx = l, RxTCX
	return nil
}

func attachErr(what string, err error) error {
	if perr := wrapPerm(what, err); perr != nil {
		return perr
	}
	return fmt.Errorf("loader: %s: %w", what, err)
}

func xdpModeName(mode uint32) string {
	switch mode {
	case 1: // XDP_ATTACHED_DRV
		return "driver"
	case 2: // XDP_ATTACHED_SKB
		return "generic"
	case 3: // XDP_ATTACHED_HW
		return "offload"
	}
	return ""
}

// Close detaches everything (XDP, TC egress link or legacy filter, and the
// clsact qdisc if Attach created it and nothing else uses it). It returns all
// errors joined; calling it again is a no-op.
func (a *Attachment) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true

	var errs []error
	if a.xdpLink != nil {
		if err := a.xdpLink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach XDP: %w", err))
		}
	}
	if a.rxLink != nil {
		if err := a.rxLink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach TCX ingress: %w", err))
		}
	}
	if a.tcLink != nil {
		if err := a.tcLink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach TCX: %w", err))
		}
	}
	if a.legacy != nil {
		if err := a.legacy.remove(a.nl); err != nil {
			errs = append(errs, err)
		}
	}
	if a.nl != nil {
		a.nl.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loader: close attachment: %w", err)
	}
	return nil
}

// legacyFilter remembers what a legacy attach created.
type legacyFilter struct {
	attrs        netlink.FilterAttrs
	createdQdisc bool
	linkIndex    int
}

func clsactQdisc(ifindex int) *netlink.Clsact {
	return &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
}

// retryDump repeats a netlink dump interrupted by a concurrent change.
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		r   T
		err error
	)
	for range 5 {
		r, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return r, err
}

// hasClsact reports whether the link has a clsact qdisc; an "ingress" qdisc
// (which excludes clsact) is an error.
func hasClsact(nl tcNetlink, lnk netlink.Link) (bool, error) {
	qdiscs, err := retryDump(func() ([]netlink.Qdisc, error) { return nl.QdiscList(lnk) })
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		if q.Attrs().Parent != netlink.HANDLE_CLSACT {
			continue
		}
		switch q.Type() {
		case "clsact":
			return true, nil
		case "ingress":
			return false, fmt.Errorf("%s has an ingress qdisc, which excludes clsact", lnk.Attrs().Name)
		}
	}
	return false, nil
}

func listBpfFilters(nl tcNetlink, lnk netlink.Link, parent uint32) ([]*netlink.BpfFilter, error) {
	fs, err := retryDump(func() ([]netlink.Filter, error) { return nl.FilterList(lnk, parent) })
	if err != nil {
		return nil, fmt.Errorf("list filters: %w", err)
	}
	var out []*netlink.BpfFilter
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			out = append(out, bf)
		}
	}
	return out, nil
}

// attachLegacy adds the cls_bpf filter (program fd, kernel id progID or 0 if
// unknown) on the clsact egress hook, creating the qdisc if needed.
func attachLegacy(nl tcNetlink, lnk netlink.Link, fd, progID int) (*legacyFilter, error) {
	ifindex := lnk.Attrs().Index
	lf := &legacyFilter{linkIndex: ifindex}

	have, err := hasClsact(nl, lnk)
	if err != nil {
		return nil, err
	}
	if !have {
		if err := nl.QdiscAdd(clsactQdisc(ifindex)); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add clsact qdisc: %w", err)
		} else if err == nil {
			lf.createdQdisc = true
		}
	}

	// Priority 0: the kernel picks one (ahead of existing filters); we
	// return TC_ACT_UNSPEC, so later filters still run.
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_EGRESS,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         LegacyFilterName,
		DirectAction: true,
	}
	if err := nl.FilterAdd(f); err != nil {
		_ = lf.removeQdisc(nl)
		return nil, fmt.Errorf("add %s filter: %w", LegacyFilterName, err)
	}

	// Find the filter again to learn the priority the kernel gave it.
	bfs, err := listBpfFilters(nl, lnk, netlink.HANDLE_MIN_EGRESS)
	if err == nil {
		err = fmt.Errorf("filter %s (program %d) not found after adding it", LegacyFilterName, progID)
		for _, bf := range bfs {
			if bf.Name == LegacyFilterName && (progID == 0 || bf.Id == progID) {
				lf.attrs, err = bf.FilterAttrs, nil
				break
			}
		}
	}
	if err != nil {
		// Cannot identify our filter: remove every filter with our name
		// and program id rather than leave it behind.
		for _, bf := range bfs {
			if bf.Name == LegacyFilterName && bf.Id == progID && progID != 0 {
				bf.Fd = -1
				_ = nl.FilterDel(bf)
			}
		}
		_ = lf.removeQdisc(nl)
		return nil, err
	}
	lf.attrs.LinkIndex = ifindex
	return lf, nil
}

// remove deletes the filter and, if we created it and it is now unused, the
// clsact qdisc.
func (lf *legacyFilter) remove(nl tcNetlink) error {
	var errs []error
	err := nl.FilterDel(&netlink.BpfFilter{FilterAttrs: lf.attrs, Fd: -1})
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("delete %s filter: %w", LegacyFilterName, err))
	}
	if err := lf.removeQdisc(nl); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (lf *legacyFilter) removeQdisc(nl tcNetlink) error {
	if !lf.createdQdisc {
		return nil
	}
	lnk, err := nl.LinkByIndex(lf.linkIndex)
	if err != nil {
		return nil // interface gone, and the qdisc with it
	}
	// Leave the qdisc to whoever added filters to it in the meantime.
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := retryDump(func() ([]netlink.Filter, error) { return nl.FilterList(lnk, parent) })
		if err != nil {
			return fmt.Errorf("delete clsact qdisc: list filters: %w", err)
		}
		if len(fs) > 0 {
			return nil
		}
	}
	if err := nl.QdiscDel(clsactQdisc(lf.linkIndex)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	lf.createdQdisc = false
	return nil
}

// CleanupStale removes legacy TC filters named turnpath_* (ingress and egress)
// left on the interface by a run that crashed: bpf_links (TCX, XDP) die with
// their process, cls_bpf filters do not. A filter whose program some live
// process still holds (another turnpath run) is left alone. It works in the
// calling thread's network namespace. The clsact qdisc is left in place.
func CleanupStale(ifindex int) error {
	nl, err := newNetlink()
	if err != nil {
		return fmt.Errorf("loader: cleanup: netlink: %w", err)
	}
	defer nl.Close()
	_, err = cleanupStale(nl, ifindex)
	return err
}

func cleanupStale(nl tcNetlink, ifindex int) (int, error) {
	lnk, err := nl.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("loader: cleanup: interface %d: %w", ifindex, err)
	}
	have, err := hasClsact(nl, lnk)
	if err != nil || !have {
		return 0, nil // no clsact: no filters of ours
	}
	var (
		errs    []error
		removed int
	)
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		bfs, err := listBpfFilters(nl, lnk, parent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, bf := range bfs {
			if !strings.HasPrefix(bf.Name, LegacyFilterPrefix) {
				continue
			}
			// A live run's filter: its process holds the program. Only a crashed
			// run's filter has nobody behind it.
			if bf.Id != 0 && len(programHolders(uint32(bf.Id))) > 0 {
				continue
			}
			bf.Fd = -1
			if err := nl.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete filter %s prio %d: %w", bf.Name, bf.Priority, err))
				continue
			}
			removed++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("loader: cleanup: %w", err)
	}
	return removed, nil
}
