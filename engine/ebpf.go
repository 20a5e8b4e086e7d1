package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// EBPF is the kernel fast path: probes are timestamped at TC egress, replies matched at XDP
// and delivered through the ring buffer, both timestamps from the same kernel clock.
type EBPF struct {
	cfg      Config
	ft       *flowTable
	sender   *probe.Sender
	objs     *loader.Objects
	attach   []*loader.Attachment
	reader   *loader.EventReader
	sentMono sendTimes // Go-side send times (CLOCK_MONOTONIC), for replies TC has no time for
	replies  chan trace.Reply
	errs     chan error
	done     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// NewEBPF loads and attaches the programs on every interface in cfg.Ifindexes.
func NewEBPF(cfg Config) (*EBPF, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(cfg.Ifindexes) == 0 {
		return nil, errors.New("ebpf engine: no interface to attach to")
	}
	lo, hi := cfg.sportRange()
	proto := uint8(cfg.shape()[0].Proto)
	objs, err := loader.Load(loader.Config{Proto: proto, SportLo: lo, SportHi: hi, DPort: cfg.shape()[0].DPort,
		Nonce: cfg.Nonce, NonceOff: nonceOff(probe.Proto(proto), cfg.Payload), Drop: true})
	if err != nil {
		return nil, err
	}
	e := &EBPF{cfg: cfg, ft: newFlowTable(&cfg), objs: objs,
		replies: make(chan trace.Reply, 4096), errs: make(chan error, 4), done: make(chan struct{})}
	for i, f := range cfg.Flows {
		if err := objs.SetFlow(uint32(tagOf(i)), f.Dst, f.SPort); err != nil {
			e.Close()
			return nil, fmt.Errorf("register flow: %w", err)
		}
	}
	for _, idx := range cfg.Ifindexes {
		_ = loader.CleanupStale(idx) // legacy filters of a crashed run
		a, err := objs.Attach(idx)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.attach = append(e.attach, a)
	}
	if e.reader, err = objs.Events(); err != nil {
		e.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	v4, v6 := cfg.families()
	if e.sender, err = probe.NewSender(v4, v6); err != nil {
		e.Close()
		return nil, err
	}
	if err := probe.WatchLinks(cfg.Ifindexes, e.errs, e.done); err != nil {
		e.Close()
		return nil, err
	}
	e.wg.Add(1)
	go e.readLoop()
	return e, nil
}

// nonceOff is where this run's probes carry the nonce (loader.Config.NonceOff), so the
// kernel side tells them, and the replies to them, from another run's.
func nonceOff(proto probe.Proto, p probe.Payload) uint16 {
	switch {
	case proto == probe.ProtoICMP:
		return loader.NonceOffEcho
	case proto == probe.ProtoUDP && p.IsSTUN():
		return loader.NonceOffSTUN
	}
	return 0
}

// Rx reports where each interface's replies are matched (XDP, or TCX ingress when
// another program held XDP), in Config.Ifindexes order.
func (e *EBPF) Rx() []loader.RxHook {
	out := make([]loader.RxHook, len(e.attach))
	for i, a := range e.attach {
		out[i] = a.Rx()
	}
	return out
}

func (e *EBPF) Name() string                { return "ebpf" }
func (e *EBPF) Replies() <-chan trace.Reply { return e.replies }
func (e *EBPF) Errors() <-chan error        { return e.errs }

// Admit registers target t's flowtag with XDP when the flows come from Config.FlowOf
// (trace.Windowed); with Config.Flows every flow is registered from the start.
func (e *EBPF) Admit(t int) error {
	f, add, err := e.ft.admit(t)
	if err != nil || !add {
		return err
	}
	if err := e.objs.SetFlow(uint32(tagOf(t)), f.Dst, f.SPort); err != nil {
		e.ft.release(t)
		return fmt.Errorf("register flow: %w", err)
	}
	return nil
}

// Release forgets target t (Config.FlowOf): its flowtag leaves the kernel's table, which
// holds 65536, so a run over more targets stays within it.
func (e *EBPF) Release(t int) {
	if _, ok := e.ft.release(t); ok {
		_ = e.objs.DeleteFlow(uint32(tagOf(t)))
	}
}

// Send builds and sends one probe; TC egress records its kernel send time.
func (e *EBPF) Send(p trace.Probe) error {
	f, ok := e.ft.flow(p.Target)
	if !ok {
		return fmt.Errorf("probe for unknown target %d", p.Target)
	}
	id, err := probe.MakeID(p.TTL, p.Attempt)
	if err != nil {
		return err
	}
	e.sentMono.put(p, loader.KernelNow())
	return e.sender.Send(f, id, p.TTL, tagOf(p.Target), e.cfg.Nonce, e.cfg.Payload)
}

// Close detaches every program and releases everything, collecting all errors.
func (e *EBPF) Close() error {
	var errs []error
	e.once.Do(func() {
		close(e.done)
		if e.reader != nil {
			errs = append(errs, e.reader.Close())
		}
		e.wg.Wait()
		for _, a := range e.attach {
			errs = append(errs, a.Close())
		}
		if e.sender != nil {
			errs = append(errs, e.sender.Close())
		}
		errs = append(errs, e.objs.Close())
	})
	return errors.Join(errs...)
}

func (e *EBPF) readLoop() {
	defer e.wg.Done()
	for {
		ev, err := e.reader.Read()
		if err != nil {
			if errors.Is(err, loader.ErrClosed) {
				return
			}
			select {
			case <-e.done:
				return
			default:
			}
			continue
		}
		rep, ok := e.convert(&ev)
		if !ok {
			continue
		}
		select {
		case e.replies <- rep:
		case <-e.done:
			return
		}
	}
}

func (e *EBPF) convert(ev *loader.Event) (trace.Reply, bool) {
	var t int
	var ok bool
	if ev.Kind == loader.KindSTUN {
		t, ok = e.ft.byTag(ev.FlowTag)
	} else {
		t, ok = e.ft.lookup(ev.Target, ev.SPort)
	}
	id := probe.ID(ev.ID)
	if !ok || !id.Valid() {
		return trace.Reply{}, false
	}
	f, ok := e.ft.flow(t)
	if !ok {
		return trace.Reply{}, false // released meanwhile
	}
	tp := toTraceProbe(t, id)
	rep := trace.Reply{Probe: tp, From: ev.Responder, ICMPType: ev.ICMPType, ICMPCode: ev.ICMPCode,
		ReplyTTL: ev.ReplyTTL, QuotedTTL: ev.QuotedTTL, Received: time.Now()}
	var fl probe.Flags
	switch ev.Kind {
	case loader.KindTimeExceeded:
		rep.Kind = trace.KindTimeExceeded
		rep.MPLS = mplsOf(eventExt(ev))
	case loader.KindDestUnreach:
		rep.Kind = trace.KindUnreachable
		rep.MPLS = mplsOf(eventExt(ev))
	case loader.KindEcho:
		rep.Kind = trace.KindEcho
	case loader.KindSTUN:
		rep.Kind = trace.KindSTUN
		if s, ok := e.stunOf(ev); ok {
			rep.STUN = stunInfo(s)
			if m := s.Mapped; m.IsValid() && (m.Addr().Unmap() != f.Src.Unmap() || m.Port() != f.SPort) {
				fl |= probe.FlagNATMapped
			}
		} else {
			// Not parseable (too short): the class from the message type alone.
			rep.STUN = &trace.STUNInfo{Class: "success"}
			if ev.STUNType&0x0110 == 0x0110 {
				rep.STUN.Class = "error"
			}
		}
	case loader.KindTCP:
		rep.Kind = trace.KindTCP
	default:
		return trace.Reply{}, false
	}
	if rtt := ev.RTT(); rtt > 0 {
		rep.RTT, rep.Kernel = rtt, true
	} else {
		if sent := e.sentMono.get(tp); sent != 0 && ev.RxNs > sent {
			rep.RTT = time.Duration(ev.RxNs - sent)
		}
	}
	if ev.QuotedSrc.IsValid() && ev.QuotedSrc != f.Src.Unmap() {
		fl |= probe.FlagNATSrc
	}
	if f.Proto == probe.ProtoUDP && rep.Kind != trace.KindSTUN && rep.Kind != trace.KindEcho && ev.QuotedCsum != 0 && ev.QuotedCsum != ev.ID {
		fl |= probe.FlagChecksumRewritten
	}
	rep.NAT = natNote(fl, ev.QuotedSrc)
	return rep, true
}

// eventExt is the RFC 4884 extension structure of an ICMP error event: what follows the
// quote, or, after a 128-byte quote with the length field 0 (FlagExtCompat), those bytes
// when they look like an extension, as the socket engine decides for the same packet.
func eventExt(ev *loader.Event) []byte {
	if ev.Flags&loader.FlagExtCompat != 0 && !probe.LooksLikeExtension(ev.Ext) {
		return nil
	}
	return ev.Ext
}

// stunOf parses the STUN answer the XDP program copied into ev.Ext (at most loader.ExtMax
// bytes: see loader.Event.Ext) like the socket engine parses the whole datagram. A message
// longer than what was copied (FlagExtTrunc, or cut by the frame) would fail the declared
// length check: it is parsed up to its last attribute that is complete in ev.Ext, so
// ERROR-CODE and XOR-MAPPED-ADDRESS, which servers put first, are still reported.
func (e *EBPF) stunOf(ev *loader.Event) (*probe.STUNInfo, bool) {
	msg := stunPrefix(ev.Ext)
	if msg == nil {
		return nil, false
	}
	r, err := probe.ParseSTUNAnswer(netip.AddrPortFrom(ev.Responder, ev.DPort), msg, e.cfg.Nonce)
	if err != nil {
		return nil, false
	}
	return &r.STUN, true
}

// stunHeaderLen is the size of the STUN header (RFC 5389 §6).
const stunHeaderLen = 20

// stunPrefix returns b when it holds the whole STUN message its header declares, else a
// copy cut after the last attribute complete in b with the header's length adjusted, or
// nil when b is shorter than a STUN header.
func stunPrefix(b []byte) []byte {
	if len(b) < stunHeaderLen {
		return nil
	}
	declared := int(binary.BigEndian.Uint16(b[2:]))
	if stunHeaderLen+declared <= len(b) {
		return b
	}
	n := 0 // attribute bytes complete in b
	for attrs := b[stunHeaderLen:]; len(attrs) >= 4; {
		l := 4 + int(binary.BigEndian.Uint16(attrs[2:]))
		l += (4 - l%4) % 4
		if l > len(attrs) || n+l > declared {
			break
		}
		n += l
		attrs = attrs[l:]
	}
	out := append([]byte(nil), b[:stunHeaderLen+n]...)
	binary.BigEndian.PutUint16(out[2:], uint16(n))
	return out
}

// sendTimes remembers the Go-side send time of the most recent probes, in a fixed table
// (memory does not grow with the probes sent): TC egress stamps every probe in the
// kernel, so this is only the fallback for a reply whose `sent` entry is gone (the LRU
// map evicted it) or was never made (a probe that left by an interface without the TC
// program). Slot = hash of the probe; a newer probe overwrites an older one in its slot.
// Lock-free: the key is written after the time and checked before and after reading it.
type sendTimes struct {
	slots [sendTimeSlots]struct{ key, ns atomic.Uint64 }
}

const sendTimeSlots = 1 << 14

func sendKey(p trace.Probe) uint64 {
	return uint64(p.Target)<<16 | uint64(p.TTL)<<8 | uint64(p.Attempt) | 1<<63
}

func (s *sendTimes) slot(k uint64) int {
	return int((k * 0x9e3779b97f4a7c15) >> (64 - 14))
}

func (s *sendTimes) put(p trace.Probe, ns uint64) {
	k := sendKey(p)
	sl := &s.slots[s.slot(k)]
	sl.key.Store(0)
	sl.ns.Store(ns)
	sl.key.Store(k)
}

func (s *sendTimes) get(p trace.Probe) uint64 {
	k := sendKey(p)
	sl := &s.slots[s.slot(k)]
	if sl.key.Load() != k {
		return 0
	}
	ns := sl.ns.Load()
	if sl.key.Load() != k {
		return 0
	}
	return ns
}
