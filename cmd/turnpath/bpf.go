package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/turnpath/turnpath/doctor"
	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/loader"
)

// bpfDoctor adapts the loader to doctor.BPF: load with a config that matches nothing real
// (nonce 0, port range of one unused port), so attaching for a check disturbs no traffic.
type bpfDoctor struct {
	mu   sync.Mutex
	objs *loader.Objects
}

func (d *bpfDoctor) Load() (func() error, error) {
	// Open, as a run would: pinned objects when it can (and says so in Methods).
	objs, err := loader.Open(loader.Config{Proto: loader.ProtoUDP, SportLo: 9, SportHi: 9, DPort: 9}, loader.OpenOptions{})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.objs = objs
	d.mu.Unlock()
	return objs.Close, nil
}

func (d *bpfDoctor) Attach(ifindex int) (string, func() error, error) {
	d.mu.Lock()
	objs := d.objs
	d.mu.Unlock()
	if objs == nil {
		return "", nil, fmt.Errorf("attach: programs not loaded")
	}
	// Attach removes the legacy filters a crashed run may have left, where there can be any.
	a, err := objs.Attach(ifindex)
	if err != nil {
		return "", nil, err
	}
	if a.Rx() == loader.RxTCX {
		// Another program holds XDP: say whose, and that runs match at TCX ingress.
		who := "another program"
		if h, ok, err := loader.HolderOfXDP(ifindex); err == nil && ok {
			who = h.String()
		}
		return fmt.Sprintf("%s egress, TCX ingress: the XDP hook is taken (%s)",
			a.TCMode(), who), a.Close, nil
	}
	return fmt.Sprintf("%s egress, XDP %s", a.TCMode(), a.XDPMode()), a.Close, nil
}

// Methods tells doctor how a run of the eBPF engine would send and receive here, and what
// is pinned in bpffs.
func (d *bpfDoctor) Methods() (send, recv string, items []doctor.Item) {
	d.mu.Lock()
	objs := d.objs
	d.mu.Unlock()
	if objs == nil {
		return "", "", nil
	}
	send = sendLine(nil)
	recv = "XDP (or TCX ingress) matching, kernel receive timestamps"
	if rd, err := objs.Events(); err == nil {
		recv += "; " + rd.Method()
		rd.Close()
	}
	if objs.SetQuiet(false) {
		recv += "; wakeups off while a sending loop drains (BPF_RB_NO_WAKEUP, 0.5 ms poll)"
	}
	items = append(items, doctor.Item{Name: "bpf objects", Status: doctor.OK, Detail: objs.PinNote() +
		" (a run opens pinned objects in ~1 ms instead of loading and verifying them in ~30 ms)"})
	if objs.How() == loader.HowFresh {
		items[0].Status = doctor.Warn
		items[0].Fix = "mount bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf) so runs can reuse loaded programs"
	}
	slots, err := loader.PinnedSlots("")
	if err == nil && len(slots) > 0 {
		cur, busy, other := 0, 0, 0
		for _, s := range slots {
			switch {
			case !s.Current:
				other++
			default:
				cur++
			}
			if s.InUse {
				busy++
			}
		}
		items = append(items, doctor.Item{Name: "bpf pinned", Status: doctor.OK,
			Detail: fmt.Sprintf("%d slots of this version (%s), %d of other versions, %d in use now (this check's included); ~10 MiB of kernel memory each",
				cur, loader.Version(), other, busy),
			Fix: "turnpath cleanup removes those no run holds"})
	}
	return send, recv, items
}

// SendMethod says how a run's batches would leave for the target of rt (doctor.SendMethod).
func (d *bpfDoctor) SendMethod(rt hostnet.Route) string { return sendLine(&rt) }

// sendLine is check's "send:" line: how the eBPF engine sends the batches trace,
// multipath, monitor and scan hand it (engine.EBPF.SendBatch), as TURNPATH_SEND and the
// route to the target (when given) make it.
func sendLine(rt *hostnet.Route) string {
	const tail = "; every probe timestamped at TC egress"
	mode := os.Getenv(engine.SendEnv)
	if mode == "sendto" || !hostnet.BatchSupported() {
		return hostnet.SendTo + tail
	}
	if mode == "mmsg" {
		return hostnet.SendMmsg + " (" + engine.SendEnv + "=mmsg)" + tail
	}
	packet := hostnet.SendPacketMmsg
	switch mode {
	case "ring":
		packet = hostnet.SendRing
	case "gen":
		packet = engine.SendGen + " where the interface counts its XDP transmits and its peer takes XDP frames (a veth whose other end has an XDP program or GRO; checked on the first batch), else " + packet
	}
	if rt == nil {
		return packet + " where the next hop is resolved on an Ethernet device, else " + hostnet.SendMmsg + tail
	}
	l2, err := hostnet.ResolveL2(rt.Src, rt.Dst)
	switch {
	case err == nil:
		return fmt.Sprintf("%s on %s, next hop %s (%s)%s", packet, l2.Ifname, l2.Nexthop, net.HardwareAddr(l2.Header[:6]), tail)
	case errors.Is(err, hostnet.ErrNoNeighbor):
		return fmt.Sprintf("%s until the kernel resolves the next hop (the first probes make it), then %s: %v%s",
			hostnet.SendMmsg, packet, err, tail)
	}
	return fmt.Sprintf("%s (not AF_PACKET: %v)%s", hostnet.SendMmsg, err, tail)
}
