// Package session opens what every probing command needs and closes it again: routes to
// the targets, the engine (eBPF or socket, chosen in one place, attached once for the
// whole run), the flows' shape, and the enrichment of the answers (PTR names). A command
// parses its flags, opens a session, runs its algorithm over the session's engine
// (trace.Stream, mda.RunMany, ...) and formats the result; it does no route lookup,
// engine choice or name resolution of its own.
//
// The parts that touch the kernel (route lookup, engine constructors, the resolver) are
// fields with real defaults, so the logic is tested without privileges.
package session

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/enrich"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// Engine kinds a user may ask for (--engine).
const (
	EngineAuto   = "auto"   // eBPF when it loads and attaches, else the socket engine, saying why
	EngineEBPF   = "ebpf"   // eBPF or fail
	EngineSocket = "socket" // the socket engine
)

// EngineKinds are the valid --engine values.
var EngineKinds = []string{EngineAuto, EngineEBPF, EngineSocket}

// ErrInterrupted is returned when the context ends while targets are being routed.
var ErrInterrupted = errors.New("interrupted")

// ProbeTooBigError refuses probes larger than their interface's MTU (bad input: the raw
// sockets do not fragment, the first send would fail).
type ProbeTooBigError struct {
	Size, MTU int
	Ifname    string
}

// ProbeTooSmallError refuses a probe size below what the payload needs.
type ProbeTooSmallError struct{ Size, Min int }

func (e *ProbeTooSmallError) Error() string {
	return fmt.Sprintf("probe size %d is below the %d bytes these probes need", e.Size, e.Min)
}

func (e *ProbeTooBigError) Error() string {
	return fmt.Sprintf("probe of %d bytes exceeds the MTU %d of %s", e.Size, e.MTU, e.Ifname)
}

// Spec is what a probing run needs to know before its first probe.
type Spec struct {
	Engine  string        // EngineAuto, EngineEBPF, EngineSocket
	Proto   probe.Proto   // probe protocol
	Port    uint16        // destination port (UDP, TCP)
	Payload probe.Payload // UDP payload
	// Timeout bounds how long the socket engine remembers a probe (0: its default).
	Timeout time.Duration
	// Size is the probes' IP packet length (0: the payload's own); it must fit every
	// route's interface.
	Size int
	// Numeric: no PTR lookups.
	Numeric bool
	// NameTimeout bounds the PTR lookups of one Names call (default 3 s).
	NameTimeout time.Duration
}

// Session is one probing run's shared parts. Open it with New, route the targets with
// Route, open the engine with Open, and Close it at the end.
type Session struct {
	spec Spec

	// Lookup finds the route to a destination (hostnet.Lookup).
	Lookup func(netip.Addr) (hostnet.Route, error)
	// MTU is the MTU of an interface (0: unknown, no check).
	MTU func(ifindex int) int
	// NewEBPF and NewSocket open the engines (engine.NewEBPF, engine.NewSocket).
	NewEBPF   func(engine.Config) (trace.Engine, error)
	NewSocket func(engine.Config) (trace.Engine, error)
	// Resolver looks PTR names up (nil with Spec.Numeric).
	Resolver *enrich.Names
	// AS looks up who holds the answering addresses (nil: no --asn); asn.go.
	AS  *asn.Resolver
	asn asnState
	// Vanished names an interface of the map (ifindex → name) that is gone or down
	// (vanishedLink): nil when all are there.
	Vanished func(map[int]string) error

	routes  []hostnet.Route
	mtus    []int        // each route's interface MTU (0: unknown)
	first   []netip.Addr // the first target of each route
	routeOf []int32
	ifaces  map[int]string // the interfaces the run's probes leave by
	eng     trace.Engine
	why     string
}

// New starts a session with the real kernel-facing parts.
func New(spec Spec) (*Session, error) {
	if !slices.Contains(EngineKinds, spec.Engine) {
		return nil, fmt.Errorf("unknown engine %q (%s)", spec.Engine, strings.Join(EngineKinds, ", "))
	}
	if spec.NameTimeout == 0 {
		spec.NameTimeout = 3 * time.Second
	}
	s := &Session{spec: spec, Lookup: lookup, MTU: ifaceMTU, ifaces: map[int]string{}, Vanished: vanishedLink,
		NewEBPF:   func(c engine.Config) (trace.Engine, error) { return engine.NewEBPF(c) },
		NewSocket: func(c engine.Config) (trace.Engine, error) { return engine.NewSocket(c) }}
	if !spec.Numeric {
		s.Resolver = enrich.NewNames()
	}
	return s, nil
}

// lookup is hostnet.Lookup with a hint for IPv6 hosts without IPv6.
func lookup(dst netip.Addr) (hostnet.Route, error) {
	rt, err := hostnet.Lookup(dst)
	if err != nil && errors.Is(err, hostnet.ErrNoRoute) && !dst.Is4() {
		err = fmt.Errorf("%w (is IPv6 configured here?)", err)
	}
	return rt, err
}

func ifaceMTU(ifindex int) int {
	ifc, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return 0 // gone already: the engine says so
	}
	return ifc.MTU
}

// Flow is the flow toward dst from route rt with source port sport, as this session's
// probes make it.
func (s *Session) Flow(rt hostnet.Route, dst netip.Addr, sport uint16) probe.Flow {
	return probe.Flow{Src: rt.Src, Dst: dst, Proto: s.spec.Proto, SPort: sport, DPort: s.spec.Port}
}

// Route looks up the route of every target before any probe leaves (so a missing route
// stops the run first), checks that the probes fit their interface's MTU, and notes the
// interfaces the engine must watch. Targets keep only the index of their route: a long
// list costs a few bytes per target. ctx is checked between targets: Ctrl-C during a
// long list returns ErrInterrupted at once.
func (s *Session) Route(ctx context.Context, dsts []netip.Addr) error {
	s.routes, s.mtus, s.first, s.routeOf = s.routes[:0], s.mtus[:0], s.first[:0], make([]int32, len(dsts))
	for i, dst := range dsts {
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		rt, err := s.Lookup(dst)
		if err != nil {
			return err
		}
		j := slices.IndexFunc(s.routes, func(r hostnet.Route) bool { return r.Src == rt.Src && r.Ifindex == rt.Ifindex })
		if j < 0 {
			mtu := s.MTU(rt.Ifindex)
			n := probe.PacketLen(s.Flow(rt, dst, 1), s.spec.Payload)
			if s.spec.Size > 0 {
				if s.spec.Size < n {
					return &ProbeTooSmallError{Size: s.spec.Size, Min: n}
				}
				n = s.spec.Size
			}
			if mtu > 0 && n > mtu {
				return &ProbeTooBigError{Size: n, MTU: mtu, Ifname: rt.Ifname}
			}
			j = len(s.routes)
			s.routes, s.mtus, s.first = append(s.routes, rt), append(s.mtus, mtu), append(s.first, dst)
			s.ifaces[rt.Ifindex] = rt.Ifname
		}
		s.routeOf[i] = int32(j)
	}
	if ctx.Err() != nil {
		return ErrInterrupted
	}
	return nil
}

// RouteOf is the route of target i (after Route).
func (s *Session) RouteOf(i int) hostnet.Route { return s.routes[s.routeOf[i]] }

// MTUOf is the MTU of the interface target i's probes leave by (0: unknown): where path
// MTU discovery starts.
func (s *Session) MTUOf(i int) int { return s.mtus[s.routeOf[i]] }

// Config is the engine configuration for the routed targets: the interfaces to attach
// to, one flow of each source address as the shape, a fresh nonce. The caller adds the
// flows (Flows, or FlowOf for flows made on admission).
func (s *Session) Config(sport uint16) engine.Config {
	cfg := engine.Config{Payload: s.spec.Payload, Nonce: Nonce(), Timeout: s.spec.Timeout}
	for i, rt := range s.routes {
		if !slices.Contains(cfg.Ifindexes, rt.Ifindex) {
			cfg.Ifindexes = append(cfg.Ifindexes, rt.Ifindex)
		}
		if !slices.ContainsFunc(cfg.Shape, func(f probe.Flow) bool { return f.Src == rt.Src }) {
			cfg.Shape = append(cfg.Shape, s.Flow(rt, s.first[i], sport))
		}
	}
	return cfg
}

// Open opens the engine the spec asks for, once for the whole run: for auto it tries
// eBPF first and falls back to the socket engine, with the reason (Why).
func (s *Session) Open(cfg engine.Config) (trace.Engine, error) {
	if s.eng != nil {
		return nil, errors.New("open engine: already open")
	}
	e, why, err := openEngine(s.spec.Engine, cfg, s.NewEBPF, s.NewSocket)
	if err != nil {
		return nil, err
	}
	s.eng, s.why = e, why
	return e, nil
}

// OpenEngine is the engine choice on its own, for callers without targets to route (the
// capacity benchmark): kind is one of EngineKinds; it returns the engine and why it was
// chosen.
func OpenEngine(kind string, cfg engine.Config) (trace.Engine, string, error) {
	if !slices.Contains(EngineKinds, kind) {
		return nil, "", fmt.Errorf("unknown engine %q (%s)", kind, strings.Join(EngineKinds, ", "))
	}
	return openEngine(kind, cfg,
		func(c engine.Config) (trace.Engine, error) { return engine.NewEBPF(c) },
		func(c engine.Config) (trace.Engine, error) { return engine.NewSocket(c) })
}

func openEngine(kind string, cfg engine.Config, newEBPF, newSocket func(engine.Config) (trace.Engine, error)) (trace.Engine, string, error) {
	if kind == EngineSocket {
		e, err := newSocket(cfg)
		return e, "requested with --engine socket", err
	}
	e, err := newEBPF(cfg)
	if err == nil {
		return e, "BPF programs attached: kernel timestamps at TC egress and XDP", nil
	}
	if kind == EngineEBPF {
		return nil, "", fmt.Errorf("ebpf engine: %w", err)
	}
	why := "ebpf engine unavailable: " + firstLine(err.Error())
	so, serr := newSocket(cfg)
	if serr != nil {
		return nil, "", fmt.Errorf("%s; socket engine: %w", why, serr)
	}
	return so, why, nil
}

// Why says why the open engine was chosen.
func (s *Session) Why() string { return s.why }

// FellBack reports whether auto had to take the socket engine (the user should hear why).
func (s *Session) FellBack() bool {
	return s.spec.Engine == EngineAuto && s.eng != nil && s.eng.Name() != "ebpf"
}

// Failure is the error of a run the engine ended (not a cancellation): the interface that
// went away rather than the send that failed because of it. Ask before Close.
func (s *Session) Failure(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	if lerr := s.Vanished(s.ifaces); lerr != nil {
		return lerr
	}
	return err
}

// vanishedLink names the interface a failed run lost, if it did: sends through a deleted
// interface fail with "network is unreachable", which names the wrong culprit.
func vanishedLink(ifaces map[int]string) error {
	idx := make([]int, 0, len(ifaces))
	for i := range ifaces {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		ifc, err := net.InterfaceByIndex(i)
		switch {
		case err != nil:
			return fmt.Errorf("interface %s disappeared", ifaces[i])
		case ifc.Flags&net.FlagUp == 0:
			return fmt.Errorf("interface %s went down", ifaces[i])
		}
	}
	return nil
}

// Names is the enrichment step: the PTR names of addrs, looked up concurrently within
// the spec's NameTimeout (a slow resolver costs that at most); nil with Numeric.
func (s *Session) Names(addrs []netip.Addr) func(netip.Addr) string {
	waitAS := s.lookupAS(addrs) // beside the PTR lookups, within its own bound
	defer waitAS()
	if s.Resolver == nil {
		return nil
	}
	if len(addrs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.spec.NameTimeout)
		s.Resolver.Resolve(ctx, addrs)
		cancel()
	}
	return s.Resolver.Name
}

// Close closes the engine (again: a no-op).
func (s *Session) Close() error {
	s.saveAS()
	if s.eng == nil {
		return nil
	}
	return s.eng.Close()
}

// Nonce is a fresh per-run nonce (never 0: 0 turns STUN matching off).
func Nonce() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if n := binary.BigEndian.Uint32(b[:]); n != 0 {
			return n
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
