package reflector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Config is what the XDP program is specialised for (its `volatile const`s).
type Config struct {
	// Depth is the hop of the destination (1..255): probes with a TTL below it get a Time
	// Exceeded, the others the destination's answer.
	Depth int
	// Responder4 and Responder6 are the bases of the responder addresses: hop h answers
	// from Responder4 + h (IPv4) and from Responder6 with h added to its last 16 bits.
	Responder4, Responder6 netip.Addr
	// Dst4 and Dst6 are the probed prefixes (IPv6: at most /64); an invalid prefix turns a
	// family off. Self4 and Self6, the reflector's own addresses, are never answered.
	Dst4, Dst6   netip.Prefix
	Self4, Self6 netip.Addr
}

func (c Config) validate() error {
	switch {
	case c.Depth < 1 || c.Depth > 255:
		return fmt.Errorf("reflector: depth %d out of range 1..255", c.Depth)
	case c.Dst4.IsValid() && (!c.Dst4.Addr().Is4() || !c.Responder4.Is4()):
		return errors.New("reflector: IPv4 prefix needs an IPv4 responder base")
	case c.Dst6.IsValid() && (!c.Dst6.Addr().Is6() || c.Dst6.Addr().Is4In6() || !c.Responder6.Is6() || c.Dst6.Bits() > 64):
		return errors.New("reflector: IPv6 prefix must be IPv6, at most /64, with an IPv6 responder base")
	case !c.Dst4.IsValid() && !c.Dst6.IsValid():
		return errors.New("reflector: no prefix to answer for")
	}
	return nil
}

// Objects are the loaded reflector program and its counters.
type Objects struct {
	objs ReflectorObjects
}

func u32of(a netip.Addr) uint32 {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func mask4(p netip.Prefix) uint32 {
	if !p.IsValid() {
		return 0
	}
	return ^uint32(0) << (32 - p.Bits())
}

// be64 is the first 8 bytes of an address as the program reads them from a packet: a
// little-endian load of network-order bytes.
func be64(b []byte) uint64 { return binary.LittleEndian.Uint64(b[:8]) }

// words is an IPv6 address as four 32-bit loads of its network-order bytes.
func words(a netip.Addr) [4]uint32 {
	b := a.As16()
	var w [4]uint32
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

// Load specialises the program for cfg and loads it; nothing is attached yet.
func Load(cfg Config) (*Objects, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	spec, err := LoadReflector()
	if err != nil {
		return nil, fmt.Errorf("reflector: %w", err)
	}
	var hi6, mask6 uint64
	var resp6, self6 [4]uint32
	if cfg.Dst6.IsValid() {
		a := cfg.Dst6.Masked().Addr().As16()
		var m [16]byte
		for i := 0; i < cfg.Dst6.Bits(); i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		hi6, mask6 = be64(a[:]), be64(m[:])
		resp6 = words(cfg.Responder6)
		if cfg.Self6.IsValid() {
			self6 = words(cfg.Self6)
		}
	}
	for name, val := range map[string]any{
		ReflectorVarCfgDepth:    uint8(cfg.Depth),
		ReflectorVarCfgResp4:    u32of(cfg.Responder4),
		ReflectorVarCfgResp6:    resp6,
		ReflectorVarCfgDst4:     u32of(cfg.Dst4.Masked().Addr()),
		ReflectorVarCfgDst4Mask: mask4(cfg.Dst4),
		ReflectorVarCfgSelf4:    u32of(cfg.Self4),
		ReflectorVarCfgDst6Hi:   hi6,
		ReflectorVarCfgDst6Mask: mask6,
		ReflectorVarCfgSelf6:    self6,
	} {
		v, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("reflector: BPF object has no variable %q", name)
		}
		if err := v.Set(val); err != nil {
			return nil, fmt.Errorf("reflector: set %s: %w", name, err)
		}
	}
	_ = rlimit.RemoveMemlock()
	o := &Objects{}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("reflector: BPF verifier: %+v", ve)
		}
		return nil, fmt.Errorf("reflector: load: %w", err)
	}
	return o, nil
}

// Close releases the program and maps (an attachment keeps the program alive until it
// is closed too).
func (o *Objects) Close() error { return o.objs.Close() }

// Attach attaches the program to the interface (XDP in driver mode: veth has it) and
// returns the link; closing it detaches.
func (o *Objects) Attach(ifindex int) (link.Link, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: o.objs.XdpReflect, Interface: ifindex})
	if err != nil {
		return nil, fmt.Errorf("reflector: attach XDP to ifindex %d: %w", ifindex, err)
	}
	return l, nil
}

// XDP verdicts returned by Run.
const (
	XDPDrop uint32 = 1
	XDPPass uint32 = 2
	XDPTX   uint32 = 3
)

// Run runs the program once on an Ethernet frame (BPF_PROG_TEST_RUN) and returns its
// verdict and the frame as the program left it (the answer, for XDPTX).
func (o *Objects) Run(frame []byte) (uint32, []byte, error) {
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := o.objs.XdpReflect.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("reflector: test run: %w", err)
	}
	return ret, opts.DataOut, nil
}

// Stats are the program's counters summed over CPUs.
type Stats struct {
	TimeExceeded, Unreachable, Echo, Passed, Errors uint64
}

// Answered is the number of answers sent.
func (s Stats) Answered() uint64 { return s.TimeExceeded + s.Unreachable + s.Echo }

// Stats reads the counters.
func (o *Objects) Stats() (Stats, error) {
	var per []ReflectorReflStats
	if err := o.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("reflector: read stats: %w", err)
	}
	var s Stats
	for _, c := range per {
		s.TimeExceeded += c.TimeExceeded
		s.Unreachable += c.Unreachable
		s.Echo += c.Echo
		s.Passed += c.Passed
		s.Errors += c.Errors
	}
	return s, nil
}
