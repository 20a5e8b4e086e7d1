package engine

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
	"github.com/vishvananda/netlink"
)

// EBPF is the kernel fast path: probes are timestamped at TC egress, replies matched at XDP
// and delivered through the ring buffer, both timestamps from the same kernel clock.
type EBPF struct {
	cfg      Config
	ft       *flowTable
	sender   *hostnet.Sender
	payloads sizedPayloads
	objs     *loader.Objects
	attach   []*loader.Attachment
	reader   *loader.EventReader
	sentMono sendTimes // Go-side send times (CLOCK_MONOTONIC), for replies TC has no time for
	batch    []hostnet.BatchProbe
	gen      *genSender // Config.Generator
	genWhy   error      // why Config.Generator is not used
	genRuns  uint64     // BPF_PROG_RUN calls of a generator that was closed
	// lastBatch is when SendBatch last ran (KernelNow): while batches come, the reader
	// goroutine turns the kernel's wakeups off and polls (drainLoop).
	lastBatch atomic.Int64
	quietMu   sync.Mutex  // serialises switching quiet mode
	quietOn   atomic.Bool // the kernel writes events without wakeups (loader.Objects.SetQuiet)
	// wallOff is wall clock minus CLOCK_MONOTONIC (ns), so a kernel timestamp converts to
	// a wall time without a clock read; renewed while the reader runs (syncClock).
	wallOff atomic.Int64
	replies chan trace.Reply
	errs    chan error
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// NewEBPF opens the BPF objects (pinned by an earlier run when it can: loader.Open) and
// attaches the programs on every interface in cfg.Ifindexes.
func NewEBPF(cfg Config) (*EBPF, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.sendMethodsFromEnv(); err != nil {
		return nil, err
	}
	if len(cfg.Ifindexes) == 0 {
		return nil, errors.New("ebpf engine: no interface to attach to")
	}
	lo, hi := cfg.sportRange()
	proto := uint8(cfg.shape()[0].Proto)
	// Pinned objects when possible: loading and verifying costs more than a one-path
	// trace (loader/pin.go).
	objs, err := loader.Open(loader.Config{Proto: proto, SportLo: lo, SportHi: hi, DPort: cfg.shape()[0].DPort,
		Nonce: cfg.Nonce, NonceOff: nonceOff(probe.Proto(proto), cfg.Payload), Drop: true},
		loader.OpenOptions{NoPin: cfg.NoPin || os.Getenv("TURNPATH_BPF_PIN") == "off"})
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
		a, err := objs.Attach(idx)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.attach = append(e.attach, a)
	}
	if e.reader, err = objs.EventsWithOptions(loader.EventsOptions{Fallback: cfg.NoNetpoll}); err != nil {
		e.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	v4, v6 := cfg.families()
	if e.sender, err = hostnet.NewSender(v4, v6); err != nil {
		e.Close()
		return nil, err
	}
	e.cfg.configure(e.sender)
	e.sender.EnablePacket()
	if cfg.Generator {
		// Where the generator cannot run, the batches take AF_PACKET (genWhy says why).
		e.gen, e.genWhy = openGenerator(objs, &cfg)
	}
	e.payloads.base = cfg.Payload
	if err := hostnet.WatchLinks(cfg.Ifindexes, e.errs, e.done); err != nil {
		e.Close()
		return nil, err
	}
	e.syncClock()
	e.wg.Add(1)
	go e.readLoop()
	return e, nil
}

// syncClock renews wallOff (the wall clock may be stepped or slewed meanwhile).
func (e *EBPF) syncClock() {
	e.wallOff.Store(time.Now().UnixNano() - int64(loader.KernelNow()))
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

func (e *EBPF) Name() string                { return "ebpf" }
func (e *EBPF) Replies() <-chan trace.Reply { return e.replies }
func (e *EBPF) Errors() <-chan error        { return e.errs }

// Admit registers target t's flowtag with XDP when the flows come from Config.FlowOf
// (trace.Engine.Admit); with Config.Flows every flow is registered from the start.
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
	err = e.sender.Send(f, id, p.TTL, tagOf(p.Target), e.cfg.Nonce, e.payloads.of(f, p.Size))
	e.drainHere()
	return err
}

// SendBatch builds and sends probes with as few system calls as the kernel allows
// (hostnet.Sender.SendBatch: sendmmsg), each timestamped at TC egress like a probe of
// Send, then reads the replies already in the ring buffer. It returns how many were sent
// and the first error; probes that fail are skipped.
func (e *EBPF) SendBatch(ps []trace.Probe) (int, error) {
	var firstErr error
	b := e.batch[:0]
	now := loader.KernelNow() // the Go-side fallback time: one clock read per batch
	for _, p := range ps {
		f, ok := e.ft.flow(p.Target)
		if !ok {
			firstErr = cmp.Or(firstErr, fmt.Errorf("probe for unknown target %d", p.Target))
			continue
		}
		id, err := probe.MakeID(p.TTL, p.Attempt)
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		e.sentMono.put(p, now)
		b = append(b, hostnet.BatchProbe{Flow: f, ID: id, TTL: p.TTL, Tag: tagOf(p.Target), Payload: e.payloads.of(f, p.Size)})
	}
	e.batch = b
	e.lastBatch.Store(int64(now))
	if !e.quietOn.Load() {
		e.quiet()
	}
	var n int
	var err error
	if e.gen != nil {
		n, err = e.sendGen(b)
	} else {
		n, err = e.sender.SendBatch(b, e.cfg.Nonce)
	}
	e.drainHere()
	return n, cmp.Or(firstErr, err)
}

// openGenerator opens the in-kernel generator for cfg's first interface, parked (its
// program kept in the kernel's XDP dispatcher) on an idle veth in a private namespace;
// nil and why not where it cannot be used.
func openGenerator(objs *loader.Objects, cfg *Config) (*genSender, error) {
	// XDP transmit (what live frames' XDP_TX becomes) drops what the driver cannot take
	// without telling the sender: only an interface that counts its XDP transmits
	// (veth) lets the engine see how many frames left.
	ifc, err := netlink.LinkByIndex(cfg.Ifindexes[0])
	if err != nil {
		return nil, fmt.Errorf("generator: interface %d: %w", cfg.Ifindexes[0], err)
	}
	xmit, err := hostnet.NewXDPXmitCounter(ifc.Attrs().Name)
	if err != nil {
		return nil, fmt.Errorf("generator: %s (a %s device) does not count its XDP transmits: %w", ifc.Attrs().Name, ifc.Type(), err)
	}
	g := &genSender{xmit: xmit}
	if g.last, err = xmit.Read(); err != nil {
		g.close()
		return nil, fmt.Errorf("generator: %w", err)
	}
	if g.Generator, err = objs.NewGenerator(cfg.Ifindexes[0]); err != nil {
		g.close()
		return nil, fmt.Errorf("generator: %w", err)
	}
	if err = g.ParkPrivate(); err != nil {
		g.close()
		return nil, fmt.Errorf("generator: %w", err)
	}
	return g, nil
}

// genSender is the generator with the counter that tells how many of its frames left.
type genSender struct {
	*loader.Generator
	xmit      *hostnet.XDPXmitCounter
	last      uint64               // the counter after the last run
	sent      uint64               // frames that left
	runs      uint64               // BPF_PROG_RUN calls
	worked    bool                 // some frame left: the interface's peer takes XDP frames
	unchecked int                  // frames sent since the counter was last read
	inRun     []hostnet.BatchProbe // the probes of the run being built
	rest      []hostnet.BatchProbe // what it cannot send (no L2 path, too big, another interface)
}

func (g *genSender) close() error {
	var errs []error
	if g.Generator != nil {
		errs = append(errs, g.Generator.Close())
	}
	return errors.Join(append(errs, g.xmit.Close())...)
}

// genCheckEvery: how often (in runs) the generator's frames are counted once some left.
const genCheckEvery = 8

// errGenNoPeer: a veth's peer without an XDP program or GRO drops every XDP frame.
var errGenNoPeer = errors.New("generator: no frame reached the interface's peer (a veth whose other end has neither an XDP program nor GRO)")

// sendGen sends b with the in-kernel generator, GenSlots at a time; probes it cannot take
// go through the sender. The interface's XDP transmit counter says how many frames of
// each run left: those are sent, the rest lost. When the first run gets none through,
// the generator is closed and the batches take the sender from then on.
func (e *EBPF) sendGen(b []hostnet.BatchProbe) (int, error) {
	g := e.gen
	now := time.Now()
	g.rest = g.rest[:0]
	sent := 0
	var firstErr error
	for len(b) > 0 && e.gen != nil {
		g.inRun = g.inRun[:0]
		for len(b) > 0 && len(g.inRun) < loader.GenSlots {
			p := b[0]
			b = b[1:]
			k := len(g.inRun)
			n, ifindex, err := e.sender.BuildFrame(g.Slot(k), p, e.cfg.Nonce, now)
			if err != nil || ifindex != e.cfg.Ifindexes[0] {
				g.rest = append(g.rest, p)
				continue
			}
			g.Set(k, n, loader.ProbeKey{Dst: p.Flow.Dst, SPort: p.Flow.SPort, ID: uint16(p.ID)})
			g.inRun = append(g.inRun, p)
		}
		k := len(g.inRun)
		if k == 0 {
			continue
		}
		g.runs++
		if err := g.Run(k, 0); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		g.sent += uint64(k)
		// The counter is read after every run until a frame got through, then after
		// every genCheckEvery runs (a read costs about what the program spends on a
		// run's frames): a shortfall is taken from that run's count (never below 0)
		// and reported.
		g.unchecked += k
		if g.worked && g.runs%genCheckEvery != 0 {
			sent += k
			continue
		}
		count, err := g.xmit.Read()
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		left := int(min(count-g.last, uint64(g.unchecked)))
		short := g.unchecked - left
		g.last, g.unchecked = count, 0
		switch {
		case left == 0 && !g.worked:
			// Nothing gets through here: the sender from now on, these included.
			g.rest = append(g.rest, g.inRun...)
			g.rest = append(g.rest, b...)
			b = nil
			e.genWhy = errGenNoPeer
			e.genRuns += g.runs
			firstErr = cmp.Or(firstErr, g.close())
			e.gen = nil
			continue
		case short > 0:
			firstErr = cmp.Or(firstErr, fmt.Errorf("generator: the driver dropped %d frames", short))
		}
		g.worked = true
		sent += max(k-short, 0)
		g.sent -= uint64(short)
	}
	if len(g.rest) > 0 {
		n, err := e.sender.SendBatch(g.rest, e.cfg.Nonce)
		sent += n
		firstErr = cmp.Or(firstErr, err)
	}
	return sent, firstErr
}

// SendStats counts the probes each send method carried and the send system calls.
func (e *EBPF) SendStats() hostnet.SendStats {
	st := e.sender.Stats()
	if e.gen != nil {
		st.Gen, st.Calls = e.gen.sent, st.Calls+e.gen.runs
	}
	st.Calls += e.genRuns
	return st
}

// Methods says how the engine sends (SendBatch; Send always uses sendto) and receives.
func (e *EBPF) Methods() (send, recv string) {
	send = e.sender.Method()
	switch {
	case e.gen != nil:
		send = SendGen
	case e.genWhy != nil:
		send += " (" + e.genWhy.Error() + ")"
	}
	return send, e.reader.Method()
}

// SendGen is the in-kernel generator's send method (Config.Generator).
const SendGen = "in-kernel generator (BPF_PROG_RUN, live XDP frames), one run per batch"

// drainHere reads the replies pending in the ring buffer from the sending goroutine, as far
// as the replies channel has room (it never blocks: the caller may be the one that reads
// Replies), unless the reader goroutine is at it.
func (e *EBPF) drainHere() {
	if !e.reader.Pending() {
		return
	}
	e.reader.Drain(true, e.roomForReply, e.deliverNow)
}

func (e *EBPF) roomForReply() bool { return len(e.replies) < cap(e.replies) }

// deliverNow hands over a reply without blocking: Drain checked the room first, and only
// drainers (holding the reader's lock) add to the channel.
func (e *EBPF) deliverNow(ev *loader.Event) {
	if rep, ok := e.convert(ev); ok {
		select {
		case e.replies <- rep:
		default:
		}
	}
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
		if e.gen != nil {
			errs = append(errs, e.gen.close())
		}
		errs = append(errs, e.objs.Close())
	})
	return errors.Join(errs...)
}

func (e *EBPF) readLoop() {
	defer e.wg.Done()
	if e.reader.Method() == loader.RecvNetpoll {
		e.drainLoop()
		return
	}
	for {
		e.syncClock()
		ev, err := e.reader.Read()
		if err != nil {
			if e.stopping(err) {
				return
			}
			continue
		}
		if !e.deliver(&ev) {
			return
		}
	}
}

// Quiet mode: while SendBatch runs, the sending loop reads the replies itself and the
// kernel's wakeup per first event of a batch (an irq_work, a thread woken: more than a
// match costs) is turned off; the reader goroutine then polls every quietPoll for what
// arrives between batches, and turns wakeups back on once no batch came for quietIdle.
// Switching on wakes the reader (a deadline of now), so whenever wakeups are off it is
// polling, and no reply waits longer than quietPoll.
const (
	quietPoll = 500 * time.Microsecond
	quietIdle = 2 * time.Millisecond
)

// quiet switches wakeups off (SendBatch).
func (e *EBPF) quiet() {
	if e.reader.Method() != loader.RecvNetpoll {
		return // the fallback reader only learns of events by wakeups
	}
	e.quietMu.Lock()
	defer e.quietMu.Unlock()
	if !e.quietOn.Load() && e.objs.SetQuiet(true) {
		e.quietOn.Store(true)
		e.reader.SetDeadline(time.Now()) // the reader polls from now on
	}
}

// loud switches wakeups back on unless a batch came meanwhile (drainLoop).
func (e *EBPF) loud() {
	e.quietMu.Lock()
	defer e.quietMu.Unlock()
	if int64(loader.KernelNow())-e.lastBatch.Load() < int64(quietIdle) {
		return
	}
	e.objs.SetQuiet(false)
	e.quietOn.Store(false)
	e.reader.SetDeadline(time.Time{})
}

// drainLoop is the reader goroutine with the netpoller reader: it waits in the netpoller
// for the kernel's wakeup (one per batch of events: see loader's netRing), or polls in
// quiet mode, and drains what is there; the sending goroutine drains too (drainHere).
func (e *EBPF) drainLoop() {
	always := func() bool { return true }
	stopped := false
	deliver := func(ev *loader.Event) {
		if !stopped && !e.deliver(ev) {
			stopped = true
		}
	}
	for !stopped {
		if e.reader.Drain(false, always, deliver) > 0 {
			continue
		}
		if e.quietOn.Load() {
			if int64(loader.KernelNow())-e.lastBatch.Load() >= int64(quietIdle) {
				// Wakeups on first, then look again: an event committed before the
				// kernel saw the switch is drained now, any later one wakes us.
				e.loud()
				continue
			}
			e.reader.SetDeadline(time.Now().Add(quietPoll))
		}
		e.syncClock()
		if err := e.reader.Wait(); err != nil && e.stopping(err) {
			return
		}
	}
}

// stopping reports whether a reader error ends the reader goroutine: the reader was
// closed, or the engine is closing (any other error is retried).
func (e *EBPF) stopping(err error) bool {
	if errors.Is(err, loader.ErrClosed) {
		return true
	}
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// deliver converts an event and hands the reply over, waiting for room; false once the
// engine is closing.
func (e *EBPF) deliver(ev *loader.Event) bool {
	rep, ok := e.convert(ev)
	if !ok {
		return true
	}
	select {
	case e.replies <- rep:
		return true
	case <-e.done:
		return false
	}
}

// convert verifies a kernel event like the socket engine verifies a parsed packet: the
// same reply type, the same probe.Verify, the same conversion (engine/reply.go).
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
	var r probe.Reply
	if !replyOf(ev, e.cfg.Nonce, &r) {
		return trace.Reply{}, false
	}
	p := sentProbe(f, tagOf(t), id)
	fl, err := probe.Verify(&r, &p, e.cfg.Nonce)
	if err != nil {
		return trace.Reply{}, false
	}
	// The wall time of the kernel's receive timestamp: no clock read per reply (on a
	// paravirtualised clock a read costs more than matching a reply).
	received := time.Unix(0, int64(ev.RxNs)+e.wallOff.Load())
	if ev.RxNs == 0 {
		received = time.Now()
	}
	rep, ok := traceReply(t, id, &r, fl, received)
	if !ok {
		return trace.Reply{}, false
	}
	tp := rep.Probe
	if rtt := ev.RTT(); rtt > 0 {
		rep.RTT, rep.Kernel = rtt, true
	} else if sent := e.sentMono.get(tp); sent != 0 && ev.RxNs > sent {
		rep.RTT = time.Duration(ev.RxNs - sent)
	}
	return rep, true
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
