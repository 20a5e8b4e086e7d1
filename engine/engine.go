// Package engine runs probes for packages trace and mda (it implements trace.Engine): it
// builds and sends them (hostnet.Sender) and turns whatever answers into trace.Replies. Two engines share everything but the receive
// path, so they are compared on equal terms:
//
//   - ebpf: TC egress stamps each probe with the kernel's send time, XDP matches the replies
//     in the kernel and hands them over through a ring buffer with the receive time; the RTT
//     is rx-tx of two kernel timestamps.
//   - socket: raw ICMP sockets and UDP sockets bound to the probe's source port (the relay's
//     STUN answers), kernel receive timestamps (SO_TIMESTAMPNS), the send time taken in Go
//     just before sendto, and probe.Matcher for the matching the XDP program does in-kernel.
package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// Config is what both engines need to know.
type Config struct {
	// Flows holds one flow per trace target, in target order. All flows share protocol and
	// destination port; source ports may differ (MDA) but must be few and close together,
	// since the kernel side matches a source port range.
	Flows []probe.Flow
	// FlowOf, set instead of Flows, gives target t's flow on demand, for long target
	// lists: the engine asks for it when trace admits t (trace.Engine.Admit) and forgets it
	// at Release, so memory grows with trace's window, not with the list. Shape then
	// holds one flow per (source address, source port) the targets use, with any of
	// their destinations: protocol, ports, families and the sockets to open come from
	// it, and every flow FlowOf returns must fit it.
	FlowOf  func(target int) (probe.Flow, error)
	Shape   []probe.Flow
	Payload probe.Payload
	Nonce   uint32
	// Ifindexes are the interfaces the routes to the targets leave by.
	Ifindexes []int
	// Timeout after which a reply is stale (socket engine's matcher).
	Timeout time.Duration
	// DontFragment sets DF on IPv4 probes (path MTU discovery, with trace.Probe.Size).
	DontFragment bool
	// NoPin makes the eBPF engine load its BPF objects for this run only instead of
	// reusing pinned ones (loader.Open; also TURNPATH_BPF_PIN=off).
	NoPin bool
	// NoBatch and NoNetpoll force the eBPF engine's fallbacks (tests, the capacity
	// benchmark's baseline): SendBatch sends probe by probe with sendto instead of
	// sendmmsg, and replies come through cilium/ebpf's ringbuf.Reader, one event per read,
	// instead of the mmap reader drained in batches and in the sending loop.
	NoBatch, NoNetpoll bool
	// NoPacket keeps SendBatch off AF_PACKET (sendmmsg on the raw sockets); Ring uses
	// the AF_PACKET TX ring instead of sendmmsg on it. TURNPATH_SEND (SendEnv) sets the
	// same from the environment.
	NoPacket, Ring bool
	// Generator sends SendBatch's probes with the in-kernel generator (loader.Generator:
	// BPF_PROG_RUN with live frames, the timestamp taken by the generator instead of TC
	// egress); measured in the capacity benchmark, not a default.
	Generator bool
}

// SendEnv is the environment variable that chooses the batched send method: "packet"
// (sendmmsg on AF_PACKET, the default where a destination allows it), "ring" (the
// AF_PACKET TX ring), "gen" (the in-kernel generator), "mmsg" (sendmmsg on the raw
// sockets) or "sendto" (one probe per call); empty or "auto": the default.
const SendEnv = "TURNPATH_SEND"

// sendMethodsFromEnv applies SendEnv to the Config's send switches.
func (c *Config) sendMethodsFromEnv() error {
	switch v := os.Getenv(SendEnv); v {
	case "", "auto", "packet":
	case "ring":
		c.Ring = true
	case "gen":
		c.Generator = true
	case "mmsg":
		c.NoPacket = true
	case "sendto":
		c.NoBatch = true
	default:
		return fmt.Errorf("%s=%q: want auto, packet, ring, gen, mmsg or sendto", SendEnv, v)
	}
	return nil
}

// configure applies the Config's send switches to a Sender.
func (c *Config) configure(s *hostnet.Sender) {
	s.DontFragment(c.DontFragment)
	if c.NoBatch {
		s.NoBatch()
	}
	if c.NoPacket {
		s.NoPacket()
	}
	if c.Ring {
		s.UseRing()
	}
}

// sizedPayloads is the payload of each probe size a run asks for (path MTU discovery
// uses a handful: the interface MTU and the MTUs routers report). Not safe for
// concurrent use: the engines send from one goroutine.
type sizedPayloads struct {
	base  probe.Payload
	sized map[[2]uint16]probe.Payload // (size, family) -> payload
}

// of is the payload that makes flow f's probes size bytes long (0: the base payload).
func (s *sizedPayloads) of(f probe.Flow, size uint16) probe.Payload {
	if size == 0 {
		return s.base
	}
	k := [2]uint16{size, uint16(f.Family())}
	if p, ok := s.sized[k]; ok {
		return p
	}
	if s.sized == nil {
		s.sized = map[[2]uint16]probe.Payload{}
	}
	p, _ := s.base.Sized(f, int(size))
	s.sized[k] = p
	return p
}

// shape is the flows that describe the run: all of them, or Shape for FlowOf.
func (c *Config) shape() []probe.Flow {
	if c.FlowOf != nil {
		return c.Shape
	}
	return c.Flows
}

func (c *Config) validate() error {
	if c.FlowOf != nil && len(c.Flows) > 0 {
		return errors.New("flows given both as a list and as FlowOf")
	}
	flows := c.shape()
	if len(flows) == 0 {
		return errors.New("no flows")
	}
	p, d := flows[0].Proto, flows[0].DPort
	for _, f := range flows {
		if f.Proto != p || f.DPort != d {
			return errors.New("all flows must share protocol and destination port")
		}
		if err := f.Validate(); err != nil {
			return fmt.Errorf("flow %v: %w", f, err)
		}
	}
	return nil
}

// families reports which IP versions the flows use.
func (c *Config) families() (v4, v6 bool) {
	for _, f := range c.shape() {
		if f.Family() == probe.IPv4 {
			v4 = true
		} else {
			v6 = true
		}
	}
	return
}

func (c *Config) sportRange() (lo, hi uint16) {
	lo, hi = 0xffff, 0
	for _, f := range c.shape() {
		lo, hi = min(lo, f.SPort), max(hi, f.SPort)
	}
	return
}

// tagOf is the flowtag of target t: 0 is reserved for "none".
func tagOf(t int) probe.FlowTag { return probe.FlowTag(t + 1) }

type flowKey struct {
	dst   netip.Addr
	sport uint16
}

// flowTable maps targets to flows and replies back to targets: a fixed list (Config.Flows,
// read-only, no locking), or the flows of the targets trace has admitted (Config.FlowOf).
type flowTable struct {
	n      int             // len(Config.Flows); 0 with FlowOf
	flows  []probe.Flow    // Config.Flows
	byKey  map[flowKey]int // (dst, sport) -> target
	flowOf func(int) (probe.Flow, error)
	shape  []probe.Flow
	mu     sync.RWMutex // guards lazy and byKey with FlowOf
	lazy   map[int]probe.Flow
}

func newFlowTable(cfg *Config) *flowTable {
	ft := &flowTable{n: len(cfg.Flows), flows: cfg.Flows, flowOf: cfg.FlowOf, shape: cfg.Shape,
		byKey: make(map[flowKey]int, len(cfg.Flows))}
	if ft.flowOf != nil {
		ft.lazy = map[int]probe.Flow{}
	}
	for i, f := range cfg.Flows {
		ft.byKey[flowKey{f.Dst.Unmap(), f.SPort}] = i
	}
	return ft
}

// flow returns target t's flow; false when t is unknown (or not admitted).
func (ft *flowTable) flow(t int) (probe.Flow, bool) {
	if ft.lazy == nil {
		if t < 0 || t >= ft.n {
			return probe.Flow{}, false
		}
		return ft.flows[t], true
	}
	ft.mu.RLock()
	f, ok := ft.lazy[t]
	ft.mu.RUnlock()
	return f, ok
}

func (ft *flowTable) lookup(dst netip.Addr, sport uint16) (int, bool) {
	if ft.lazy != nil {
		ft.mu.RLock()
		defer ft.mu.RUnlock()
	}
	t, ok := ft.byKey[flowKey{dst.Unmap(), sport}]
	return t, ok
}

func (ft *flowTable) byTag(tag uint32) (int, bool) {
	t := int(tag) - 1
	if tag == 0 {
		return 0, false
	}
	_, ok := ft.flow(t)
	return t, ok
}

// admit fetches target t's flow (FlowOf) and returns it; with a fixed list it only
// reports whether the engine must register it (false: it already is).
func (ft *flowTable) admit(t int) (probe.Flow, bool, error) {
	if ft.lazy == nil {
		return probe.Flow{}, false, nil
	}
	f, err := ft.flowOf(t)
	if err != nil {
		return probe.Flow{}, false, err
	}
	if err := ft.fits(f); err != nil {
		return probe.Flow{}, false, fmt.Errorf("flow of target %d: %w", t, err)
	}
	ft.mu.Lock()
	ft.lazy[t] = f
	ft.byKey[flowKey{f.Dst.Unmap(), f.SPort}] = t
	ft.mu.Unlock()
	return f, true, nil
}

// fits checks a FlowOf flow against the shape the kernel side and the sockets were set
// up for.
func (ft *flowTable) fits(f probe.Flow) error {
	if err := f.Validate(); err != nil {
		return err
	}
	for _, s := range ft.shape {
		if s.Proto == f.Proto && s.DPort == f.DPort && s.SPort == f.SPort && s.Src.Unmap() == f.Src.Unmap() {
			return nil
		}
	}
	return fmt.Errorf("%v matches no flow of Config.Shape", f)
}

// release forgets target t (FlowOf) and returns its flow; false with a fixed list.
func (ft *flowTable) release(t int) (probe.Flow, bool) {
	if ft.lazy == nil {
		return probe.Flow{}, false
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	f, ok := ft.lazy[t]
	if !ok {
		return probe.Flow{}, false
	}
	delete(ft.lazy, t)
	if k := (flowKey{f.Dst.Unmap(), f.SPort}); ft.byKey[k] == t {
		delete(ft.byKey, k)
	}
	return f, true
}

// each calls fn for every known flow (the admitted ones with FlowOf).
func (ft *flowTable) each(fn func(t int, f probe.Flow)) {
	if ft.lazy == nil {
		for i, f := range ft.flows {
			fn(i, f)
		}
		return
	}
	ft.mu.RLock()
	defer ft.mu.RUnlock()
	for t, f := range ft.lazy {
		fn(t, f)
	}
}

// toTraceProbe recovers (target, ttl, attempt) from a probe id.
func toTraceProbe(target int, id probe.ID) trace.Probe {
	return trace.Probe{Target: target, TTL: id.TTL(), Attempt: id.Attempt()}
}

// usedByTrace says whether trace uses replies of kind k (not parameter problems).
func usedByTrace(k probe.Kind) bool {
	switch k {
	case probe.KindTimeExceeded, probe.KindUnreachable, probe.KindPacketTooBig,
		probe.KindEchoReply, probe.KindSTUN, probe.KindTCP:
		return true
	}
	return false
}

func stunInfo(s *probe.STUNInfo) *trace.STUNInfo {
	class := "success"
	if s.Class == probe.STUNError {
		class = "error"
	}
	return &trace.STUNInfo{Class: class, ErrorCode: s.ErrorCode, Mapped: s.Mapped}
}

// extOf decodes the RFC 4884 extensions of an ICMP error: its RFC 4950 MPLS label
// stack and RFC 5837 interface objects.
func extOf(ext []byte) ([]trace.MPLSLabel, []trace.IfaceInfo) {
	if len(ext) == 0 {
		return nil, nil
	}
	// ParseExtensions keeps what decoded before an error: a structure the kernel's
	// 128-byte copy cut inside an object still has its whole label entries.
	e, _ := probe.ParseExtensions(ext)
	var labels []trace.MPLSLabel
	for _, m := range e.MPLS() {
		labels = append(labels, trace.MPLSLabel{Label: m.Label, TC: m.TC, S: m.S, TTL: m.TTL})
	}
	var ifs []trace.IfaceInfo
	for _, i := range e.Interfaces() {
		ii := trace.IfaceInfo{Role: i.Role.String(), IfIndex: i.IfIndex, Name: i.Name(), Addr: i.Addr, MTU: i.MTU}
		ifs = append(ifs, ii)
	}
	return labels, ifs
}

// natNote turns match flags into the NAT hint of a hop.
func natNote(fl probe.Flags, quotedSrc netip.Addr) string {
	var parts []string
	if fl&probe.FlagNATSrc != 0 {
		parts = append(parts, "source rewritten to "+quotedSrc.String())
	}
	if fl&probe.FlagNATPort != 0 {
		parts = append(parts, "source port rewritten")
	}
	if fl&probe.FlagChecksumRewritten != 0 {
		parts = append(parts, "UDP checksum rewritten")
	}
	if fl&probe.FlagNATDst != 0 {
		parts = append(parts, "destination rewritten")
	}
	if fl&probe.FlagNATMapped != 0 {
		parts = append(parts, "STUN mapped address differs from our source")
	}
	return strings.Join(parts, "; ")
}
