package engine

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// EBPF is the kernel fast path: probes are timestamped at TC egress, replies matched at XDP
// and delivered through the ring buffer, both timestamps from the same kernel clock.
type EBPF struct {
	cfg      Config
	ix       *index
	sender   *probe.Sender
	objs     *loader.Objects
	attach   []*loader.Attachment
	reader   *loader.EventReader
	mu       sync.Mutex
	sentMono map[trace.Probe]uint64 // Go-side send time (CLOCK_MONOTONIC) when TC missed one
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
	proto := uint8(cfg.Flows[0].Proto)
	objs, err := loader.Load(loader.Config{Proto: proto, SportLo: lo, SportHi: hi, DPort: cfg.Flows[0].DPort,
		Nonce: cfg.Nonce, Drop: true})
	if err != nil {
		return nil, err
	}
	e := &EBPF{cfg: cfg, ix: newIndex(cfg.Flows), objs: objs, sentMono: map[trace.Probe]uint64{},
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

func (e *EBPF) Name() string                { return "ebpf" }
func (e *EBPF) Replies() <-chan trace.Reply { return e.replies }
func (e *EBPF) Errors() <-chan error        { return e.errs }

// Send builds and sends one probe; TC egress records its kernel send time.
func (e *EBPF) Send(p trace.Probe) error {
	f := e.cfg.Flows[p.Target]
	id, err := probe.MakeID(p.TTL, p.Attempt)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.sentMono[p] = loader.KernelNow()
	e.mu.Unlock()
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
		t, ok = e.ix.byTag(ev.FlowTag)
	} else {
		t, ok = e.ix.lookup(ev.Target, ev.SPort)
	}
	id := probe.ID(ev.ID)
	if !ok || !id.Valid() {
		return trace.Reply{}, false
	}
	tp := toTraceProbe(t, id)
	rep := trace.Reply{Probe: tp, From: ev.Responder, ICMPType: ev.ICMPType, ICMPCode: ev.ICMPCode,
		ReplyTTL: ev.ReplyTTL, QuotedTTL: ev.QuotedTTL, MPLS: mplsOf(ev.Ext), Received: time.Now()}
	switch ev.Kind {
	case loader.KindTimeExceeded:
		rep.Kind = trace.KindTimeExceeded
	case loader.KindDestUnreach:
		rep.Kind = trace.KindUnreachable
	case loader.KindEcho:
		rep.Kind = trace.KindEcho
	case loader.KindSTUN:
		rep.Kind = trace.KindSTUN
		rep.STUN = &trace.STUNInfo{Class: "success"}
		if ev.STUNType&0x0110 == 0x0110 {
			rep.STUN.Class = "error"
		}
	case loader.KindTCP:
		rep.Kind = trace.KindTCP
	default:
		return trace.Reply{}, false
	}
	if rtt := ev.RTT(); rtt > 0 {
		rep.RTT, rep.Kernel = rtt, true
	} else {
		e.mu.Lock()
		sent := e.sentMono[tp]
		e.mu.Unlock()
		if sent != 0 && ev.RxNs > sent {
			rep.RTT = time.Duration(ev.RxNs - sent)
		}
	}
	f := e.cfg.Flows[t]
	var fl probe.Flags
	if ev.QuotedSrc.IsValid() && ev.QuotedSrc != f.Src.Unmap() {
		fl |= probe.FlagNATSrc
	}
	if f.Proto == probe.ProtoUDP && rep.Kind != trace.KindSTUN && rep.Kind != trace.KindEcho && ev.QuotedCsum != 0 && ev.QuotedCsum != ev.ID {
		fl |= probe.FlagChecksumRewritten
	}
	rep.NAT = natNote(fl, ev.QuotedSrc)
	return rep, true
}
