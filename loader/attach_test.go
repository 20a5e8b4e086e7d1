package loader

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/probe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Attach tests: a throwaway pair of network namespaces (tpl-<random>-a/-b)
// joined by a veth. Nothing is ever attached in the root namespace.

// inNetns runs fn on a dedicated OS thread switched into ns. The thread stays
// locked and is discarded when the goroutine ends, so a namespace switch can
// never leak to other goroutines.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func newNamedNetns(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	// As the lab makes them (/run/netns prepared like `ip netns add`), so an `ip netns
	// add` of a test running in parallel cannot hide them.
	if err := lab.CreateNS(name); err != nil {
		t.Skipf("cannot create network namespace %s: %v", name, err)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		lab.DeleteNS(name)
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if err := lab.DeleteNS(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return h
}

type vethPair struct {
	nsA, nsB   netns.NsHandle
	hA, hB     *netlink.Handle
	idxA, idxB int
	macA       net.HardwareAddr
	addrA      netip.Addr
	addrB      netip.Addr
}

func setupVeth(t *testing.T) *vethPair {
	t.Helper()
	if unix.Geteuid() != 0 {
		t.Skip("needs root")
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	base := "tpl-" + hex.EncodeToString(rnd[:])
	p := &vethPair{
		nsA:   newNamedNetns(t, base+"-a"),
		nsB:   newNamedNetns(t, base+"-b"),
		addrA: netip.MustParseAddr("192.0.2.1"),
		addrB: netip.MustParseAddr("192.0.2.2"),
	}
	var err error
	if p.hA, err = netlink.NewHandleAt(p.nsA); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.hA.Close)
	if p.hB, err = netlink.NewHandleAt(p.nsB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.hB.Close)

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "tpa"},
		PeerName:      "tpb",
		PeerNamespace: netlink.NsFd(p.nsB),
	}
	if err := p.hA.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr string
		idx  *int
	}{{p.hA, "tpa", "192.0.2.1/24", &p.idxA}, {p.hB, "tpb", "192.0.2.2/24", &p.idxB}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		*side.idx = l.Attrs().Index
		a, _ := netlink.ParseAddr(side.addr)
		if err := side.h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if lo, err := side.h.LinkByName("lo"); err == nil {
			_ = side.h.LinkSetUp(lo)
		}
		if side.h == p.hA {
			p.macA = l.Attrs().HardwareAddr
		}
	}
	return p
}

// state describes what is attached to tpa.
type state struct {
	tcx     []ebpf.ProgramID
	filters []*netlink.BpfFilter // egress
	clsact  bool
	xdpProg uint32
}

func (p *vethPair) state(t *testing.T) state {
	t.Helper()
	var s state
	err := inNetns(p.nsA, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: p.idxA, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		for _, ap := range res.Programs {
			s.tcx = append(s.tcx, ap.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("query tcx: %v", err)
	}
	l, err := p.hA.LinkByIndex(p.idxA)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		s.xdpProg = x.ProgId
	}
	qs, err := p.hA.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			s.clsact = true
		}
	}
	if s.clsact {
		fs, err := p.hA.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				s.filters = append(s.filters, bf)
			}
		}
	}
	return s
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Skip("kernel does not report program ids")
	}
	return id
}

func (p *vethPair) attach(t *testing.T, o *Objects, opts AttachOptions) *Attachment {
	t.Helper()
	var att *Attachment
	err := inNetns(p.nsA, func() error {
		var err error
		att, err = o.AttachWithOptions(p.idxA, opts)
		return err
	})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { att.Close() })
	return att
}

func TestAttach(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := "tcx"
		if legacy {
			name = "legacy"
		}
		t.Run(name, func(t *testing.T) {
			p := setupVeth(t)
			o := loadT(t, udpConfig(true))
			rd := eventsT(t, o)

			att := p.attach(t, o, AttachOptions{ForceLegacyTC: legacy})
			t.Logf("tc mode %s, xdp mode %q", att.TCMode(), att.XDPMode())

			s := p.state(t)
			if s.xdpProg != uint32(progID(t, o.objs.XdpRx)) {
				t.Errorf("XDP program %d attached, want %d", s.xdpProg, progID(t, o.objs.XdpRx))
			}
			if legacy {
				if att.TCMode() != TCModeLegacy {
					t.Errorf("mode %s", att.TCMode())
				}
				if len(s.tcx) != 0 {
					t.Errorf("TCX programs attached: %v", s.tcx)
				}
				if !s.clsact || len(s.filters) != 1 || s.filters[0].Name != LegacyFilterName ||
					s.filters[0].Id != int(progID(t, o.objs.TcEgress)) || !s.filters[0].DirectAction {
					t.Errorf("legacy filter: clsact %v, filters %+v", s.clsact, s.filters)
				}
			} else {
				if att.TCMode() != TCModeTCX {
					t.Errorf("mode %s", att.TCMode())
				}
				if !slices.Equal(s.tcx, []ebpf.ProgramID{progID(t, o.objs.TcxEgress)}) {
					t.Errorf("TCX programs %v", s.tcx)
				}
				if s.clsact {
					t.Error("clsact created in TCX mode")
				}
			}

			sendThroughVeth(t, p, o, rd)

			if err := att.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if err := att.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			if s := p.state(t); len(s.tcx) != 0 || s.clsact || len(s.filters) != 0 || s.xdpProg != 0 {
				t.Errorf("left behind: %+v", s)
			}
		})
	}
}

// sendRaw sends a complete IPv4 packet from namespace ns (IPPROTO_RAW).
func sendRaw(t *testing.T, ns netns.NsHandle, dst netip.Addr, pkt []byte) {
	t.Helper()
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
}

// waitSent waits for TC egress to record key and returns its timestamp.
func waitSent(t *testing.T, o *Objects, key ProbeKey) uint64 {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ts, ok := o.SentTimestamp(key); ok {
			return ts
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe %+v sent through the veth was not recorded by TC egress", key)
		}
	}
}

// TestICMPEchoThroughVeth sends an echo probe made by probe.Builder from A;
// B's kernel answers it like any host would (identifier, sequence and data
// echoed) and XDP on A matches the reply to the `sent` entry TC egress made.
func TestICMPEchoThroughVeth(t *testing.T) {
	p := setupVeth(t)
	o := loadT(t, Config{Proto: ProtoICMP, SportLo: sportLo, SportHi: sportHi, Drop: true})
	rd := eventsT(t, o)
	att := p.attach(t, o, AttachOptions{})
	t.Logf("tc mode %s, xdp mode %q", att.TCMode(), att.XDPMode())

	const base, id = 40007, 0x0b03 // ttl 3, attempt 11
	f := probe.Flow{Src: p.addrA, Dst: p.addrB, Proto: probe.ProtoICMP, SPort: base}
	req := buildProbe(t, f, id, uint8(id&0xff), 5, nonceT, "hex:c0ffee")
	registerFlow(t, o, 5, p.addrB, base)
	key := ProbeKey{Dst: p.addrB, SPort: base, ID: id}
	sendRaw(t, p.nsA, p.addrB, req)
	tx := waitSent(t, o, key)

	rd.SetDeadline(time.Now().Add(3 * time.Second))
	for {
		e, err := rd.Read()
		if err != nil {
			t.Fatalf("no event for B's echo reply: %v", err)
		}
		if e.Kind != KindEcho {
			continue
		}
		want(t, "key", e.Key(), key)
		want(t, "dport (identifier)", e.DPort, echoIdent(base, id))
		want(t, "responder", e.Responder, p.addrB)
		want(t, "tx", e.TxNs, tx)
		if e.RTT() <= 0 {
			t.Errorf("rtt %v", e.RTT())
		}
		t.Logf("echo round trip: rtt %v", e.RTT())
		break
	}
	if st, _ := o.Stats(); st.TxSeen != 1 || st.RxMatched != 1 {
		t.Errorf("stats %+v", st)
	}
}

// sendThroughVeth sends a real UDP probe from A (raw socket, IP ID = probe
// id), checks TC egress recorded it, then has B send back an ICMP Time
// Exceeded quoting it and waits for the XDP event.
func sendThroughVeth(t *testing.T, p *vethPair, o *Objects, rd *EventReader) {
	t.Helper()
	const id = 0x0305
	probe := ipv4(p.addrA, p.addrB, 17, ip4opts{id: id, ttl: 5, fragOff: 0x4000}, udp(40033, dportT, id, make([]byte, 24)))
	key := ProbeKey{Dst: p.addrB, SPort: 40033, ID: id}
	registerFlow(t, o, 1, p.addrB, 40033)

	sendRaw(t, p.nsA, p.addrB, probe)
	tx := waitSent(t, o, key)

	te := ipv4(p.addrB, p.addrA, 1, ip4opts{ttl: 64}, icmp(11, 0, [4]byte{}, probe))
	sendRaw(t, p.nsB, p.addrA, te)
	rd.SetDeadline(time.Now().Add(3 * time.Second))
	for {
		e, err := rd.Read()
		if err != nil {
			t.Fatalf("no event for the Time Exceeded sent over the veth: %v", err)
		}
		if e.Kind != KindTimeExceeded || e.ID != id {
			continue // e.g. nothing else expected, but be tolerant
		}
		if e.Responder != p.addrB || e.Target != p.addrB || e.SPort != 40033 || e.TxNs != tx || e.RTT() <= 0 {
			t.Errorf("event %+v (tx %d)", e, tx)
		}
		t.Logf("veth round trip: rtt %v", e.RTT())
		break
	}
	st, _ := o.Stats()
	if st.TxSeen == 0 || st.RxMatched == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAttachFallsBackWhenTCXUnsupported(t *testing.T) {
	p := setupVeth(t)
	o := loadT(t, udpConfig(false))
	orig := attachTCX
	attachTCX = func(link.TCXOptions) (link.Link, error) {
		return nil, fmt.Errorf("attach tcx: %w", ebpf.ErrNotSupported)
	}
	t.Cleanup(func() { attachTCX = orig })

	att := p.attach(t, o, AttachOptions{})
	if att.TCMode() != TCModeLegacy {
		t.Fatalf("mode %s, want legacy", att.TCMode())
	}
	if s := p.state(t); len(s.filters) != 1 {
		t.Fatalf("filters %+v", s.filters)
	}
	if err := att.Close(); err != nil {
		t.Fatal(err)
	}
	if s := p.state(t); s.clsact || len(s.filters) != 0 || s.xdpProg != 0 {
		t.Errorf("left behind: %+v", s)
	}
}

// A crashed run leaves its cls_bpf filter behind (simulated by not closing
// the attachment); CleanupStale removes it, a later Close is harmless.
func TestCleanupStale(t *testing.T) {
	p := setupVeth(t)
	o := loadT(t, udpConfig(false))
	att := p.attach(t, o, AttachOptions{ForceLegacyTC: true})

	// A foreign filter that must survive.
	foreign := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: p.idxA, Parent: netlink.HANDLE_MIN_EGRESS, Handle: 1, Priority: 7, Protocol: unix.ETH_P_ALL},
		Fd:          o.objs.TcEgress.FD(), Name: "someone_else", DirectAction: true,
	}
	if err := p.hA.FilterAdd(foreign); err != nil {
		t.Fatal(err)
	}

	if err := inNetns(p.nsA, func() error { return CleanupStale(p.idxA) }); err != nil {
		t.Fatal(err)
	}
	s := p.state(t)
	if len(s.filters) != 1 || s.filters[0].Name != "someone_else" {
		t.Fatalf("after cleanup: %+v", s.filters)
	}
	if err := att.Close(); err != nil {
		t.Fatalf("close after cleanup: %v", err)
	}
	// The qdisc we created is still used by the foreign filter: kept.
	if s := p.state(t); !s.clsact || len(s.filters) != 1 {
		t.Errorf("after close: %+v", s)
	}
	_ = p.hA.FilterDel(foreign)
	// Cleanup on an interface without clsact is a no-op.
	if err := inNetns(p.nsB, func() error { return CleanupStale(p.idxB) }); err != nil {
		t.Error(err)
	}
}

func TestAttachRejectsBadInterface(t *testing.T) {
	p := setupVeth(t)
	o := loadT(t, udpConfig(false))
	lo, err := p.hA.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	err = inNetns(p.nsA, func() error {
		if _, err := o.Attach(0); err == nil {
			return errors.New("ifindex 0 accepted")
		}
		if _, err := o.Attach(9999); err == nil {
			return errors.New("missing interface accepted")
		}
		if a, err := o.Attach(lo.Attrs().Index); err == nil {
			a.Close()
			return errors.New("loopback accepted")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestSecondRunMatchesAtTCXIngress: a run that finds the XDP hook taken (by another
// run) matches at TCX ingress; each run gets exactly its own replies.
func TestSecondRunMatchesAtTCXIngress(t *testing.T) {
	p := setupVeth(t)
	a, b := loadT(t, stunConfig(nonceT)), loadT(t, stunConfig(nonceB))
	rdA, rdB := eventsT(t, a), eventsT(t, b)
	attA := p.attach(t, a, AttachOptions{})
	attB := p.attach(t, b, AttachOptions{})
	if attA.Rx() != RxXDP || attB.Rx() != RxTCX {
		t.Fatalf("rx hooks %s, %s; want %s, %s", attA.Rx(), attB.Rx(), RxXDP, RxTCX)
	}
	var holder XDPHolder
	if err := inNetns(p.nsA, func() error {
		h, ok, err := HolderOfXDP(p.idxA)
		if err == nil && !ok {
			err = errors.New("XDP hook reported free")
		}
		holder = h
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if holder.ProgID != uint32(progID(t, a.objs.XdpRx)) || holder.ProgName != "xdp_rx" {
		t.Errorf("holder %v, want run A's xdp_rx", holder)
	}

	const sport = 40033
	for _, o := range []*Objects{a, b} {
		registerFlow(t, o, 3, p.addrB, sport)
	}
	mk := func(id uint16, nonce uint32) []byte {
		f := probe.Flow{Src: p.addrA, Dst: p.addrB, Proto: probe.ProtoUDP, SPort: sport, DPort: dportT}
		return buildProbe(t, f, id, uint8(id&0xff), 3, nonce, "stun")
	}
	probeA, probeB := mk(0x0102, nonceT), mk(0x0103, nonceB)
	sendRaw(t, p.nsA, p.addrB, probeA)
	sendRaw(t, p.nsA, p.addrB, probeB)
	waitSent(t, a, ProbeKey{p.addrB, sport, 0x0102})
	waitSent(t, b, ProbeKey{p.addrB, sport, 0x0103})
	for _, q := range [][]byte{probeB, probeA} {
		sendRaw(t, p.nsB, p.addrA, ipv4(p.addrB, p.addrA, 1, ip4opts{ttl: 64}, icmp(11, 0, [4]byte{}, q)))
	}
	// B's kernel also answers each probe with a port unreachable: each run must see
	// both answers to its own probe and nothing of the other's.
	for _, c := range []struct {
		name string
		rd   *EventReader
		id   uint16
	}{{"A (XDP)", rdA, 0x0102}, {"B (TCX ingress)", rdB, 0x0103}} {
		kinds := map[Kind]bool{}
		c.rd.SetDeadline(time.Now().Add(time.Second))
		for len(kinds) < 2 {
			e, err := c.rd.Read()
			if err != nil {
				t.Fatalf("%s: got %v, then: %v", c.name, kinds, err)
			}
			if e.ID != c.id || e.RTT() <= 0 {
				t.Errorf("%s: event id %#x rtt %v, want id %#x", c.name, e.ID, e.RTT(), c.id)
			}
			kinds[e.Kind] = true
		}
		if !kinds[KindTimeExceeded] || !kinds[KindDestUnreach] {
			t.Errorf("%s: kinds %v", c.name, kinds)
		}
		c.rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
		if e, err := c.rd.Read(); err == nil {
			t.Errorf("%s: unexpected event %+v", c.name, e)
		}
	}
}
