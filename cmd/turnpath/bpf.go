package main

import (
	"fmt"
	"sync"

	"github.com/turnpath/turnpath/loader"
)

// bpfDoctor adapts the loader to doctor.BPF: load with a config that matches nothing real
// (nonce 0, port range of one unused port), so attaching for a check disturbs no traffic.
type bpfDoctor struct {
	mu   sync.Mutex
	objs *loader.Objects
}

func (d *bpfDoctor) Load() (func() error, error) {
	objs, err := loader.Load(loader.Config{Proto: loader.ProtoUDP, SportLo: 9, SportHi: 9, DPort: 9})
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
