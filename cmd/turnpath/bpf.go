package main

import (
	"fmt"
	"sync"

	"github.com/turnpath/turnpath/doctor"
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
	// A crashed run may have left legacy filters; remove them before judging the interface.
	_ = loader.CleanupStale(ifindex)
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
	send = "sendto on raw sockets, one probe per call (trace, multipath, monitor)"
	if hostnet.BatchSupported() {
		send += "; sendmmsg batches for high-rate callers (SendBatch)"
	}
	send += "; every probe timestamped at TC egress"
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
