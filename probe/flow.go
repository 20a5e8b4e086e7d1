package probe

import (
	"errors"
	"fmt"
	"net/netip"
)

// Proto is the probe protocol. One enum for both families: ProtoICMP means
// ICMP (1) on IPv4 and ICMPv6 (58) on IPv6; see Wire.
type Proto uint8

// Probe protocols. The values are the IPv4 protocol numbers.
const (
	ProtoICMP Proto = 1
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
)

// Wire protocol numbers that differ between families.
const (
	wireICMPv4 = 1
	wireICMPv6 = 58
)

// Wire returns the IP protocol / IPv6 next-header number of p in family fam.
func (p Proto) Wire(fam Family) uint8 {
	if p == ProtoICMP && fam == IPv6 {
		return wireICMPv6
	}
	return uint8(p)
}

// ProtoFromWire maps a wire protocol number back to a Proto (58 → ProtoICMP on
// IPv6). ok is false for protocols turnpath does not probe with.
func ProtoFromWire(fam Family, n uint8) (p Proto, ok bool) {
	switch {
	case n == wireICMPv4 && fam == IPv4, n == wireICMPv6 && fam == IPv6:
		return ProtoICMP, true
	case n == uint8(ProtoTCP):
		return ProtoTCP, true
	case n == uint8(ProtoUDP):
		return ProtoUDP, true
	}
	return Proto(n), false
}

// String returns "udp", "icmp", "tcp" or "proto(N)".
func (p Proto) String() string {
	switch p {
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Family is the IP version of a flow: IPv4 (4) or IPv6 (6); 0 is invalid.
type Family uint8

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// FlowTag is the 32-bit index Go assigns to a flow (target, sport). It is
// carried in the STUN transaction id and the ICMP echo data, and the kernel
// `flows` map turns it back into (dst addr, sport).
type FlowTag uint32

// Flow is a Paris flow: every probe of a flow has the same 5-tuple (and, on
// IPv6, the same flow label) so per-flow ECMP keeps it on one path.
//
// For ProtoICMP, SPort is the flow's ICMP "base" F (see packet.go: the echo
// identifier is chosen so that identifier +' seq == F) and DPort is unused (0).
type Flow struct {
	Src, Dst     netip.Addr
	Proto        Proto
	SPort, DPort uint16
	// FlowLabel is the IPv6 flow label (20 bits). 0 means "derive it with
	// StableFlowLabel" when building packets. Ignored on IPv4.
	FlowLabel uint32
}

// Family returns IPv4 or IPv6 after Dst (IPv4-mapped IPv6 counts as IPv4), or
// 0 if Dst is invalid.
func (f Flow) Family() Family {
	switch {
	case !f.Dst.IsValid():
		return 0
	case f.Dst.Unmap().Is4():
		return IPv4
	}
	return IPv6
}

// Normalize unmaps IPv4-mapped addresses and, on IPv6, fills in the stable
// flow label if FlowLabel is 0. Flows stored in a Matcher are normalized.
func (f Flow) Normalize() Flow {
	f.Src = f.Src.Unmap()
	f.Dst = f.Dst.Unmap()
	if f.Family() == IPv6 {
		f.FlowLabel = f.Label()
	} else {
		f.FlowLabel = 0
	}
	return f
}

// Label returns the flow label used on the wire: FlowLabel (masked to 20
// bits) if nonzero, else StableFlowLabel().
func (f Flow) Label() uint32 {
	if l := f.FlowLabel & 0xfffff; l != 0 {
		return l
	}
	return f.StableFlowLabel()
}

// StableFlowLabel derives a flow label from (src, dst, proto, sport, dport):
// FNV-1a over those fields, folded to 20 bits, never 0. It is a pure function
// of the flow, so it is the same in every run and on every host.
func (f Flow) StableFlowLabel() uint32 {
	const (
		offset = 2166136261
		prime  = 16777619
	)
	h := uint32(offset)
	mix := func(b byte) { h ^= uint32(b); h *= prime }
	s, d := f.Src.Unmap().As16(), f.Dst.Unmap().As16()
	for _, b := range s {
		mix(b)
	}
	for _, b := range d {
		mix(b)
	}
	mix(byte(f.Proto))
	mix(byte(f.SPort >> 8))
	mix(byte(f.SPort))
	mix(byte(f.DPort >> 8))
	mix(byte(f.DPort))
	l := (h ^ h>>20) & 0xfffff
	if l == 0 {
		l = 1
	}
	return l
}

// Errors returned by Validate.
var (
	ErrNoAddr        = errors.New("probe: flow needs valid source and destination addresses")
	ErrFamilyMix     = errors.New("probe: flow mixes IPv4 and IPv6 addresses")
	ErrBadProto      = errors.New("probe: flow protocol must be udp, icmp or tcp")
	ErrBadFlowPort   = errors.New("probe: flow source port (ICMP base) must be 1..65534")
	ErrNoDstPort     = errors.New("probe: udp/tcp flow needs a destination port")
	ErrFlowLabelBits = errors.New("probe: flow label must fit in 20 bits")
)

// Validate checks that f can be built: both addresses valid and of one family,
// a known protocol, SPort in 1..65534 (the ICMP base must not be 0 or 0xffff,
// see packet.go), DPort nonzero for UDP/TCP, FlowLabel < 2^20.
func (f Flow) Validate() error {
	if !f.Src.IsValid() || !f.Dst.IsValid() || f.Src.Unmap().IsUnspecified() {
		return ErrNoAddr
	}
	if f.Src.Unmap().Is4() != f.Dst.Unmap().Is4() {
		return ErrFamilyMix
	}
	switch f.Proto {
	case ProtoUDP, ProtoTCP:
		if f.DPort == 0 {
			return ErrNoDstPort
		}
	case ProtoICMP:
	default:
		return ErrBadProto
	}
	if f.SPort == 0 || f.SPort == 0xffff {
		return ErrBadFlowPort
	}
	if f.FlowLabel > 0xfffff {
		return ErrFlowLabelBits
	}
	return nil
}

// String formats the flow as "udp 192.0.2.1:50000 > 198.51.100.1:3478".
func (f Flow) String() string {
	s := fmt.Sprintf("%s %s > %s", f.Proto, netip.AddrPortFrom(f.Src, f.SPort), netip.AddrPortFrom(f.Dst, f.DPort))
	if f.Family() == IPv6 {
		s += fmt.Sprintf(" label %#05x", f.Label())
	}
	return s
}
