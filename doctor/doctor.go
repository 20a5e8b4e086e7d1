// Package doctor answers "what can turnpath do here, and what should I fix?" for `turnpath check`.
//
// It inspects the running kernel and process (kernel release, BTF, capabilities), then does
// the real thing instead of guessing: it loads the BPF programs and attaches them to the
// interface the route to a target uses, and detaches again. The result names the engine a
// trace would use and, for every missing piece, what to do about it.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/turnpath/turnpath/hostnet"
	"golang.org/x/sys/unix"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Item is one line of the report.
type Item struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Report is the whole answer.
type Report struct {
	Kernel    string `json:"kernel"`
	Target    string `json:"target,omitempty"`
	Interface string `json:"interface,omitempty"`
	Engine    string `json:"engine"`
	EngineWhy string `json:"engine_reason"`
	// Send and Receive say how that engine would send probes and receive replies.
	Send    string `json:"send,omitempty"`
	Receive string `json:"receive,omitempty"`
	Items   []Item `json:"checks"`
}

// Usable reports whether some engine can run a trace.
func (r *Report) Usable() bool { return r.Engine != "none" }

// BPF is the part of the loader the doctor needs: load the programs, attach them to ifindex,
// and take everything down again. attach is the attach mode used ("tcx", "legacy tc").
type BPF interface {
	Load() (unload func() error, err error)
	Attach(ifindex int) (mode string, detach func() error, err error)
}

// Methods is what a BPF implementation may also tell: how the eBPF engine would send and
// receive here, and what it keeps pinned between runs (items for the report).
type Methods interface {
	Methods() (send, receive string, items []Item)
}

// SendMethod is what a BPF implementation may also tell once the target's route is
// known: how the eBPF engine's batches would leave for it (AF_PACKET needs a resolved
// next hop on an Ethernet device). It replaces Methods' send line.
type SendMethod interface {
	SendMethod(rt hostnet.Route) string
}

// Socket engine methods (doctor has no engine to ask).
const (
	socketSend    = "sendto on raw sockets, one probe per call"
	socketReceive = "raw ICMP and UDP sockets, kernel receive timestamps (SO_TIMESTAMPNS)"
)

// Options selects what to check.
type Options struct {
	// Target, when set, is resolved and routed to find the interface to attach to.
	Target string
	BPF    BPF
}

// Capability bits from linux/capability.h.
const (
	capNetAdmin = 12
	capNetRaw   = 13
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// Run performs all checks. It returns an error only for bad input: an unknown target (no
// report), or one there is no route to (the report too: every check but attaching, which
// needs the route's interface, with a failing route item; the error wraps
// hostnet.ErrNoRoute). Environment problems are items in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	r := &Report{Engine: "none"}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	r.add(kernelItem(r.Kernel))
	r.add(btfItem())

	caps, capErr := effectiveCaps()
	has := func(bit uint) bool { return capErr == nil && caps&(1<<bit) != 0 }
	bpfCap := has(capBPF) || has(capSysAdmin)
	r.add(capItem("CAP_BPF", bpfCap, "load BPF programs (CAP_BPF, or CAP_SYS_ADMIN on old kernels)",
		"run as root, or: setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep $(command -v turnpath)"))
	r.add(capItem("CAP_PERFMON", has(capPerfmon) || has(capSysAdmin), "read kernel timestamps in BPF programs",
		"grant cap_perfmon (see CAP_BPF)"))
	r.add(capItem("CAP_NET_ADMIN", has(capNetAdmin), "attach TC and XDP programs",
		"grant cap_net_admin (see CAP_BPF)"))
	rawOK := has(capNetRaw)
	r.add(capItem("CAP_NET_RAW", rawOK, "send probes on raw sockets (both engines)",
		"grant cap_net_raw (see CAP_BPF)"))

	ifindex := 0
	var route hostnet.Route
	var routeErr error
	if o.Target != "" {
		dst, err := resolve(ctx, o.Target)
		if err != nil {
			return nil, err
		}
		r.Target = dst.String()
		rt, err := hostnet.Lookup(dst)
		if err != nil {
			if !errors.Is(err, hostnet.ErrNoRoute) {
				return nil, err
			}
			routeErr = err
			r.add(Item{Name: "route", Status: Fail, Detail: "no route to " + r.Target,
				Fix: "add a route to it (ip route), or check the address"})
		} else {
			route = rt
			ifindex, r.Interface = rt.Ifindex, rt.Ifname
			r.add(Item{Name: "route", Status: OK, Detail: fmt.Sprintf("%s via %s", dst, rt.Ifname)})
		}
	}
	noAttach := "no target given (turnpath check TARGET)"
	if routeErr != nil {
		noAttach = "no route to " + r.Target
	}

	loaded, attached, why := false, false, ""
	if o.BPF == nil {
		r.add(Item{Name: "bpf load", Status: Skip, Detail: "no BPF loader"})
	} else if closeObjs, err := o.BPF.Load(); err != nil {
		why = "BPF programs do not load: " + oneLine(err)
		r.add(Item{Name: "bpf load", Status: Fail, Detail: oneLine(err), Fix: loadFix(err, bpfCap)})
	} else {
		loaded = true
		r.add(Item{Name: "bpf load", Status: OK, Detail: "TC egress and XDP programs pass the verifier"})
		if ifindex == 0 {
			r.add(Item{Name: "bpf attach", Status: Skip, Detail: noAttach})
		} else if mode, detach, err := o.BPF.Attach(ifindex); err != nil {
			why = fmt.Sprintf("BPF programs do not attach to %s: %s", r.Interface, oneLine(err))
			r.add(Item{Name: "bpf attach", Status: Fail, Detail: oneLine(err), Fix: "needs CAP_NET_ADMIN and a kernel with TCX (6.6+) or clsact, and XDP on the interface"})
		} else {
			attached = true
			derr := detach()
			st, detail := OK, fmt.Sprintf("attached to %s (%s) and detached", r.Interface, mode)
			if derr != nil {
				st, detail = Warn, fmt.Sprintf("attached to %s (%s) but detach failed: %s", r.Interface, mode, oneLine(derr))
			}
			r.add(Item{Name: "bpf attach", Status: st, Detail: detail})
		}
		if m, ok := o.BPF.(Methods); ok {
			send, recv, items := m.Methods()
			r.Send, r.Receive = send, recv
			if sm, ok := o.BPF.(SendMethod); ok && ifindex != 0 {
				r.Send = sm.SendMethod(route)
			}
			for _, it := range items {
				r.add(it)
			}
		}
		if err := closeObjs(); err != nil {
			r.add(Item{Name: "bpf unload", Status: Warn, Detail: oneLine(err)})
		}
	}

	switch {
	case loaded && (attached || ifindex == 0) && rawOK:
		r.Engine, r.EngineWhy = "ebpf", "BPF programs load and attach; kernel timestamps available"
		if ifindex == 0 {
			r.EngineWhy = "BPF programs load (attach not tried: " + noAttach + ")"
		}
	case rawOK:
		r.Engine, r.EngineWhy = "socket", why
		r.Send, r.Receive = socketSend, socketReceive
		if why == "" {
			r.EngineWhy = "BPF not available"
		}
		r.EngineWhy += "; falling back to plain sockets"
	default:
		r.EngineWhy = "no engine: raw sockets need CAP_NET_RAW"
		r.Send, r.Receive = "", ""
	}
	return r, routeErr
}

func (r *Report) add(it Item) { r.Items = append(r.Items, it) }

func kernelItem(release string) Item {
	maj, min := parseRelease(release)
	switch {
	case maj == 0:
		return Item{Name: "kernel", Status: Warn, Detail: "unknown release " + release}
	case maj > 6 || maj == 6 && min >= 6:
		return Item{Name: "kernel", Status: OK, Detail: release + " (TCX, ring buffer, XDP)"}
	case maj > 5 || maj == 5 && min >= 8:
		return Item{Name: "kernel", Status: Warn, Detail: release + " (no TCX: legacy tc fallback)", Fix: "Linux 6.6+ attaches with TCX links that die with the process"}
	default:
		return Item{Name: "kernel", Status: Fail, Detail: release + " (no BPF ring buffer before 5.8)", Fix: "use --engine socket, or Linux 5.8+"}
	}
}

func btfItem() Item {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return Item{Name: "btf", Status: Warn, Detail: "no /sys/kernel/btf/vmlinux", Fix: "a kernel built with CONFIG_DEBUG_INFO_BTF=y (turnpath's programs do not need CO-RE, so this is informational)"}
	}
	return Item{Name: "btf", Status: OK, Detail: "/sys/kernel/btf/vmlinux present"}
}

func capItem(name string, ok bool, what, fix string) Item {
	if ok {
		return Item{Name: name, Status: OK, Detail: what}
	}
	return Item{Name: name, Status: Fail, Detail: "missing: " + what, Fix: fix}
}

func loadFix(err error, haveCap bool) string {
	if errors.Is(err, unix.EPERM) || !haveCap {
		return "run as root or grant CAP_BPF+CAP_PERFMON; turnpath falls back to --engine socket"
	}
	return "kernel too old or BPF restricted (check /proc/sys/kernel/unprivileged_bpf_disabled, lockdown); turnpath falls back to --engine socket"
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("read capabilities: no CapEff line")
}

func parseRelease(s string) (int, int) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	maj, err1 := strconv.Atoi(parts[0])
	min, err2 := strconv.Atoi(strings.TrimLeftFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return maj, min
}

// resolve turns a host name or literal into one address.
func resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: unknown host", host)
	}
	return addrs[0].Unmap(), nil
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return s
}
