package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Probe wire format (what Build produces; the lead copies this into DESIGN.md).
//
// IPv4 header (20 bytes, IHL 5, no options):
//
//	ver/ihl 0x45 | TOS (Builder.TOS) | total length (fixed per flow)
//	IP ID = probe id | flags/fragment offset = 0 (DF clear; Builder.DontFragment sets DF)
//	TTL = ttl | protocol 17/1/6 | header checksum | src | dst
//
// IPv6 header (40 bytes): version 6, traffic class Builder.TOS, flow label
// Flow.Label() (fixed per flow, 20 bits, nonzero), payload length (fixed per
// flow), next header 17/58/6, hop limit = ttl, src, dst. No extension headers.
//
// UDP: sport = Flow.SPort, dport = Flow.DPort, length, checksum = probe id.
// The checksum is forced by the 2 steering bytes of the payload (payload.go):
// with S the ones' complement sum of pseudo-header + UDP header (checksum 0) +
// payload (steering 0), the steering word is X = ~id +' ~S; it is written
// big-endian when it sits at an even offset of the UDP segment and
// byte-swapped at an odd offset (hex payloads of odd length). Since a valid id
// is never 0 or 0xffff, the checksum field is never 0 (= "no checksum" on IPv4).
//
// TCP SYN: sport, dport, seq = id<<16, ack 0, data offset 6 (24 bytes), flags
// SYN only, window 64240, urgent 0, one option MSS (kind 2, length 4, 1460 on
// IPv4, 1440 on IPv6), correct checksum. No payload (the payload spec is ignored).
// A SYN-ACK or RST-ACK answers with ack = (id<<16)+1, so id = (ack-1)>>16 and
// (ack-1)&0xffff == 0.
//
// ICMP / ICMPv6 echo request ("Paris ICMP"; ones' complement arithmetic
// written +'):
//
//	offset 0  type 8 (ICMPv4) / 128 (ICMPv6), code 0
//	offset 2  checksum: the same for every probe of the flow
//	offset 4  identifier I = icmpIdentifier(F, id), see below
//	offset 6  sequence   = probe id (big endian)
//	offset 8  data: nonce (4 bytes, BE) | flowtag (4 bytes, BE) | hex: user bytes
//
// F is the flow's ICMP base, Flow.SPort (1..0xfffe, taken from the same
// configured "sport range" as UDP/TCP source ports; DPort is unused). The
// identifier is chosen so that I +' seq == F, i.e.
//
//	I = F - id          if F >= id
//	I = F - id - 1      if F <  id   (mod 2^16)
//
// Because the checksum covers I + seq + (constant type/code/data, and on
// ICMPv6 the pseudo-header with a fixed length), the checksum is constant per
// flow, and so are the first 4 bytes (type, code, checksum) that classic
// per-flow load balancers hash.
//
// How TC egress and XDP recognise an ICMP probe (cheap, no table): for an echo
// request (TC egress), an echo reply (XDP) or the echo request quoted in a
// Time Exceeded / Destination Unreachable (XDP), with ident and seq read as
// big-endian u16 at offsets 4 and 6 of the (quoted) ICMP header:
//
//	__u32 s = (__u32)ident + seq;
//	if (s > 0xffff) s -= 0xffff;          // end-around carry, s is F
//	probe iff s >= sport_lo && s <= sport_hi && (seq & 0xff) != 0 && (seq >> 8) != 0xff
//	key = { daddr = probe dst (echo reply: its source; quote: quoted dst),
//	        sport = s, id = seq }
//
// The fold is exact: I + seq is F when F >= id (no carry), and F + 0xffff when
// F < id, which folds back to F. Optionally XDP can check the echo data (echo
// replies and quotes longer than 8 bytes of ICMP) for data[0:4] == nonce; the
// flowtag in data[4:8] names the flow via the `flows` map. On IPv4 the IP ID
// is also the id (as for UDP and TCP).

// ICMP and ICMPv6 message types turnpath sends or parses.
const (
	icmp4EchoReply     = 0
	icmp4Unreachable   = 3
	icmp4EchoRequest   = 8
	icmp4TimeExceeded  = 11
	icmp4ParamProblem  = 12
	icmp6Unreachable   = 1
	icmp6PacketTooBig  = 2
	icmp6TimeExceeded  = 3
	icmp6ParamProblem  = 4
	icmp6EchoRequest   = 128
	icmp6EchoReply     = 129
	ipv4HeaderLen      = 20
	ipv6HeaderLen      = 40
	udpHeaderLen       = 8
	icmpHeaderLen      = 8
	icmpEchoTagLen     = 8 // nonce | flowtag
	tcpHeaderLen       = 24
	tcpSYNWindow       = 64240
	tcpMSSv4           = 1460
	tcpMSSv6           = 1440
	tcpFlagFIN         = 0x01
	tcpFlagSYN         = 0x02
	tcpFlagRST         = 0x04
	tcpFlagACK         = 0x10
	ipv4FlagDF         = 0x4000
	maxIPv4TotalLength = 0xffff
	maxIPv6PayloadLen  = 0xffff
)

// icmpIdentifier returns the echo identifier I with I +' id == base.
func icmpIdentifier(base uint16, id ID) uint16 {
	if base >= uint16(id) {
		return base - uint16(id)
	}
	return base - uint16(id) - 1
}

// ICMPBase recovers the flow's ICMP base F from an echo identifier and
// sequence number: F = ident +' seq (the inverse of the identifier choice).
func ICMPBase(ident, seq uint16) uint16 {
	s := uint32(ident) + uint32(seq)
	if s > 0xffff {
		s -= 0xffff
	}
	return uint16(s)
}

// HeaderLen returns the IP header length Build writes for fam (20 or 40).
func HeaderLen(fam Family) int {
	if fam == IPv6 {
		return ipv6HeaderLen
	}
	return ipv4HeaderLen
}

// l4Len is the transport segment length of a probe of flow f with payload p.
func l4Len(f Flow, p Payload) int {
	switch f.Proto {
	case ProtoUDP:
		return udpHeaderLen + p.Len()
	case ProtoICMP:
		return icmpHeaderLen + icmpEchoTagLen + len(p.user) + p.pad
	case ProtoTCP:
		return tcpHeaderLen
	}
	return 0
}

// PacketLen returns the length of the IP packets Build makes for flow f and
// payload p (IPv4 total length; IPv6 40 + payload length). It is the same for
// every probe of the flow.
func PacketLen(f Flow, p Payload) int { return HeaderLen(f.Family()) + l4Len(f, p) }

// Errors returned by Build.
var (
	ErrInvalidID = errors.New("probe: invalid probe id (ttl byte 0 or attempt byte 255)")
	ErrZeroHop   = errors.New("probe: ttl/hop limit 0")
	ErrTooBig    = errors.New("probe: packet too big for the IP length field")
)

// Builder builds probe packets. The zero value is ready to use; a Builder is
// not safe for concurrent use (use one per goroutine).
type Builder struct {
	// TOS is the IPv4 TOS / IPv6 traffic class byte (DSCP<<2 | ECN).
	TOS uint8
	// DontFragment sets DF on IPv4 probes (default clear).
	DontFragment bool

	buf []byte
	// Per-flow cache: the last flow built (as passed in), its validated and
	// unmapped form, its IPv6 label and the sum of its two addresses.
	cacheOK   bool
	cacheIn   Flow
	cacheFlow Flow
	cacheSum  uint64
}

// flow validates f (cached for the last flow) and returns it unmapped, with
// the wire flow label in FlowLabel and the address part of the pseudo-header sum.
func (b *Builder) flow(f Flow) (Flow, uint64, error) {
	if b.cacheOK && f == b.cacheIn {
		return b.cacheFlow, b.cacheSum, nil
	}
	if err := f.Validate(); err != nil {
		return Flow{}, 0, err
	}
	in := f
	f.Src, f.Dst = f.Src.Unmap(), f.Dst.Unmap()
	if f.Family() == IPv6 {
		f.FlowLabel = f.Label()
	}
	s := pseudoSum(f.Src, f.Dst, 0, 0)
	b.cacheOK, b.cacheIn, b.cacheFlow, b.cacheSum = true, in, f, s
	return f, s, nil
}

// Build writes the complete IP packet for probe id of flow f with the given
// TTL (hop limit), flowtag, nonce and payload, and returns it.
//
// The packet is written into dst's storage (dst[:0] grown as needed) and
// returned; if dst is nil, the Builder's internal buffer is used and the
// result is valid until the next Build. With enough capacity Build does not
// allocate.
//
// The payload applies to UDP. ICMP echo data is nonce|flowtag followed by
// the user bytes of a hex: payload (other kinds add nothing). TCP SYNs carry
// no payload.
func (b *Builder) Build(dst []byte, f Flow, id ID, ttl uint8, tag FlowTag, nonce uint32, p Payload) ([]byte, error) {
	f, asum, err := b.flow(f)
	if err != nil {
		return nil, err
	}
	if !id.Valid() {
		return nil, ErrInvalidID
	}
	if ttl == 0 {
		return nil, ErrZeroHop
	}
	fam := f.Family()
	hl := HeaderLen(fam)
	ll := l4Len(f, p)
	n := hl + ll
	if (fam == IPv4 && n > maxIPv4TotalLength) || (fam == IPv6 && ll > maxIPv6PayloadLen) {
		return nil, ErrTooBig
	}
	useOwn := dst == nil
	if useOwn {
		dst = b.buf
	}
	if cap(dst) < n {
		dst = make([]byte, n, max(n, 128))
	}
	pkt := dst[:n]
	if useOwn {
		b.buf = pkt
	}
	wire := f.Proto.Wire(fam)

	// IP header.
	if fam == IPv4 {
		h := pkt[:ipv4HeaderLen]
		h[0] = 0x45
		h[1] = b.TOS
		binary.BigEndian.PutUint16(h[2:], uint16(n))
		binary.BigEndian.PutUint16(h[4:], uint16(id))
		var frag uint16
		if b.DontFragment {
			frag = ipv4FlagDF
		}
		binary.BigEndian.PutUint16(h[6:], frag)
		h[8] = ttl
		h[9] = wire
		h[10], h[11] = 0, 0
		s, d := f.Src.As4(), f.Dst.As4()
		copy(h[12:16], s[:])
		copy(h[16:20], d[:])
		binary.BigEndian.PutUint16(h[10:], Checksum(h))
	} else {
		h := pkt[:ipv6HeaderLen]
		binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(b.TOS)<<20|f.FlowLabel)
		binary.BigEndian.PutUint16(h[4:], uint16(ll))
		h[6] = wire
		h[7] = ttl
		s, d := f.Src.As16(), f.Dst.As16()
		copy(h[8:24], s[:])
		copy(h[24:40], d[:])
	}

	l4 := pkt[hl:]
	switch f.Proto {
	case ProtoUDP:
		binary.BigEndian.PutUint16(l4[0:], f.SPort)
		binary.BigEndian.PutUint16(l4[2:], f.DPort)
		binary.BigEndian.PutUint16(l4[4:], uint16(ll))
		l4[6], l4[7] = 0, 0
		p.writeUDPPayload(l4[udpHeaderLen:], nonce, tag, id)
		s := fold(sum(asum+uint64(wire)+uint64(ll), l4))
		x := onesAdd(^uint16(id), ^s)
		off := udpHeaderLen + p.steer
		if off%2 == 0 {
			l4[off], l4[off+1] = byte(x>>8), byte(x)
		} else {
			l4[off], l4[off+1] = byte(x), byte(x>>8)
		}
		binary.BigEndian.PutUint16(l4[6:], uint16(id))
	case ProtoICMP:
		if fam == IPv4 {
			l4[0] = icmp4EchoRequest
		} else {
			l4[0] = icmp6EchoRequest
		}
		l4[1] = 0
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[4:], icmpIdentifier(f.SPort, id))
		binary.BigEndian.PutUint16(l4[6:], uint16(id))
		binary.BigEndian.PutUint32(l4[8:], nonce)
		binary.BigEndian.PutUint32(l4[12:], uint32(tag))
		clear(l4[16+copy(l4[16:], p.user):]) // the padding of a sized probe
		var acc uint64
		if fam == IPv6 {
			acc = asum + uint64(wire) + uint64(ll)
		}
		binary.BigEndian.PutUint16(l4[2:], ^fold(sum(acc, l4)))
	case ProtoTCP:
		binary.BigEndian.PutUint16(l4[0:], f.SPort)
		binary.BigEndian.PutUint16(l4[2:], f.DPort)
		binary.BigEndian.PutUint32(l4[4:], uint32(id)<<16)
		binary.BigEndian.PutUint32(l4[8:], 0)
		l4[12] = (tcpHeaderLen / 4) << 4
		l4[13] = tcpFlagSYN
		binary.BigEndian.PutUint16(l4[14:], tcpSYNWindow)
		l4[16], l4[17], l4[18], l4[19] = 0, 0, 0, 0
		l4[20], l4[21] = 2, 4
		mss := uint16(tcpMSSv4)
		if fam == IPv6 {
			mss = tcpMSSv6
		}
		binary.BigEndian.PutUint16(l4[22:], mss)
		binary.BigEndian.PutUint16(l4[16:], ^fold(sum(asum+uint64(wire)+uint64(ll), l4)))
	}
	return pkt, nil
}

// ICMPChecksum returns the (constant) ICMP/ICMPv6 checksum of every echo
// probe of flow f with the given flowtag, nonce and payload, as Build writes it.
func ICMPChecksum(f Flow, tag FlowTag, nonce uint32, p Payload) (uint16, error) {
	if f.Proto != ProtoICMP {
		return 0, fmt.Errorf("probe: ICMPChecksum of a %s flow", f.Proto)
	}
	var b Builder
	pkt, err := b.Build(make([]byte, 0, PacketLen(f, p)), f, 1, 1, tag, nonce, p)
	if err != nil {
		return 0, err
	}
	hl := HeaderLen(f.Family())
	return binary.BigEndian.Uint16(pkt[hl+2:]), nil
}
