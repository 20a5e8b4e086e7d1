package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Kind is the kind of a reply.
type Kind uint8

// Reply kinds.
const (
	KindUnknown      Kind = iota
	KindTimeExceeded      // ICMP 11 / ICMPv6 3
	KindUnreachable       // ICMP 3 / ICMPv6 1, all codes
	KindPacketTooBig      // ICMPv6 2, ICMPv4 3 code 4 (fragmentation needed)
	KindParamProblem      // ICMP 12 / ICMPv6 4
	KindEchoReply         // ICMP 0 / ICMPv6 129
	KindSTUN              // STUN/TURN answer from the relay
	KindTCP               // TCP SYN-ACK or RST-ACK from the target
)

func (k Kind) String() string {
	switch k {
	case KindTimeExceeded:
		return "time-exceeded"
	case KindUnreachable:
		return "unreachable"
	case KindPacketTooBig:
		return "packet-too-big"
	case KindParamProblem:
		return "parameter-problem"
	case KindEchoReply:
		return "echo-reply"
	case KindSTUN:
		return "stun"
	case KindTCP:
		return "tcp"
	}
	return "unknown"
}

// IsError reports whether k is an ICMP error that quotes the probe.
func (k Kind) IsError() bool {
	return k == KindTimeExceeded || k == KindUnreachable || k == KindPacketTooBig || k == KindParamProblem
}

// Reply is a parsed reply. Slices in it (ExtRaw, Ext.Raw, STUN.Reason,
// Ext.Unknown[].Data) alias the parsed buffer.
type Reply struct {
	Kind      Kind
	Responder netip.Addr // source address of the reply
	// Local is our address as the reply's destination (ParseICMPv4 and
	// ParseTCPv4 only; invalid otherwise).
	Local    netip.Addr
	ICMPType uint8
	ICMPCode uint8
	ReplyTTL uint8 // TTL / hop limit the reply arrived with (0 if unknown)
	// ReplyIPID is the IP ID of an IPv4 reply's own header (HasReplyIPID set):
	// routers draw it from a counter per router or per interface, which is what
	// alias resolution compares (Ally, MBT). IPv6 replies have none.
	ReplyIPID    uint16
	HasReplyIPID bool
	// MTU is the next-hop MTU of KindPacketTooBig (ICMPv4 Unreachable code 4,
	// ICMPv6 Packet Too Big; 0 otherwise).
	MTU uint32
	// Pointer is the Parameter Problem pointer.
	Pointer uint32
	// BadChecksum is set when the ICMPv4 checksum of the reply does not
	// verify (ICMPv6 checksums need our address and are checked by the kernel).
	BadChecksum bool

	// Quoted is the probe's flow as quoted by an ICMP error (src, dst, proto,
	// sport, dport, IPv6 flow label). For ICMP probes SPort is the ICMP base
	// F = ident +' seq. For echo replies, TCP and STUN answers it is the flow
	// reconstructed from the reply (Dst = responder, SPort/DPort = our
	// ports as far as the reply shows them; Src = Local if known).
	Quoted Flow
	// ID is the probe id the reply carries: quoted IP ID (IPv4 UDP), quoted
	// UDP checksum (IPv6 UDP), echo seq (ICMP), TCP seq>>16 or (ack-1)>>16,
	// the STUN transaction id. 0 if none.
	ID ID
	// HasQuote is set for ICMP errors (the fields below are valid).
	HasQuote       bool
	QuotedTTL      uint8  // TTL / hop limit of the quoted probe as the reporting router saw it
	QuotedIPID     uint16 // IPv4 IP ID (IPv6: low 16 bits of a fragment header's id, else 0)
	QuotedLen      uint16 // quoted IPv4 total length / IPv6 40+payload length
	QuotedChecksum uint16 // quoted UDP/ICMP checksum; TCP if quoted (else 0)
	QuotedTCPSeq   uint32 // quoted TCP sequence number (TCP probes)
	ICMPIdent      uint16 // echo identifier (echo replies and quoted echo requests)
	QuoteLen       int    // bytes of the original datagram quoted (IP header included)

	// HasTag is set when the reply carries turnpath's nonce and flowtag: a
	// STUN answer, an echo reply, or a quote long enough to include the
	// STUN transaction id / ICMP echo data.
	HasTag    bool
	Nonce     uint32
	Tag       FlowTag
	PayloadID ID // probe id from a (quoted) STUN transaction id, 0 if none

	// TCPFlags are the flags of a TCP answer.
	TCPFlags uint8

	// ExtRaw is the RFC 4884 extension structure (nil if none; see
	// splitQuote for where it is looked for), Ext its decoding and ExtErr
	// the decoding error, if any: Ext keeps what was decoded before it (see
	// ParseExtensions). A checksum mismatch is Ext.ChecksumBad, not an error.
	ExtRaw []byte
	Ext    Extensions
	ExtErr error

	// STUN is set for KindSTUN.
	STUN STUNInfo

	// KernelMatched: the reply was matched in the kernel (the eBPF engine's event),
	// not parsed from the packet here. Where that differs by nature: the kernel keyed
	// the match on the quoted destination and source port (a NAT rewrite of either
	// leaves the reply unmatched, so FlagNATDst/FlagNATPort never show), on TCP's
	// seq>>16 (QuotedTCPSeq is that id << 16), and it does not verify the ICMP checksum
	// (BadChecksum is always false). Quoted.Tag is not copied.
	KernelMatched bool
}

// Parse errors. They are static values: parsing never allocates.
var (
	ErrTruncated       = errors.New("probe: truncated packet")
	ErrNotIPv4         = errors.New("probe: not an IPv4 packet")
	ErrNotIPv6         = errors.New("probe: not an IPv6 packet")
	ErrNotICMP         = errors.New("probe: not an ICMP packet")
	ErrNotTCP          = errors.New("probe: not a TCP packet")
	ErrNotProbeReply   = errors.New("probe: not a reply to a probe (ICMP type or TCP flags)")
	ErrTruncatedQuote  = errors.New("probe: ICMP error quotes less than the IP header and 8 bytes")
	ErrBadID           = errors.New("probe: reply carries no valid probe id")
	ErrExtTruncated    = errors.New("probe: truncated ICMP extension structure")
	ErrExtVersion      = errors.New("probe: ICMP extension version is not 2")
	ErrExtObjectLength = errors.New("probe: bad ICMP extension object length")
)

// ErrExtChecksum is no longer returned.
//
// Deprecated: ParseExtensions decodes a structure whose checksum does not
// verify and sets Extensions.ChecksumBad.
var ErrExtChecksum = errors.New("probe: ICMP extension checksum mismatch")

// ParseICMPv4 parses a full IPv4 packet carrying ICMP, as a raw IPPROTO_ICMP
// socket delivers it (IP header, options allowed, then the ICMP message).
func ParseICMPv4(pkt []byte) (Reply, error) {
	var r Reply
	err := parseICMPv4(pkt, &r)
	return r, err
}

// ParseICMPv4Into is ParseICMPv4 writing into *r (which it resets), for
// loops that reuse one Reply instead of copying it.
func ParseICMPv4Into(r *Reply, pkt []byte) error {
	*r = Reply{}
	return parseICMPv4(pkt, r)
}

func parseICMPv4(pkt []byte, r *Reply) error {
	icmp, err := ipv4Body(pkt, wireICMPv4, ErrNotICMP, r)
	if err != nil {
		return err
	}
	return parseICMP(IPv4, icmp, r)
}

// ipv4Body validates an outer IPv4 header, fills Responder/Local/ReplyTTL and
// returns the transport bytes.
func ipv4Body(pkt []byte, proto uint8, errProto error, r *Reply) ([]byte, error) {
	if len(pkt) < ipv4HeaderLen {
		return nil, ErrTruncated
	}
	if pkt[0]>>4 != 4 {
		return nil, ErrNotIPv4
	}
	ihl := int(pkt[0]&0xf) * 4
	if ihl < ipv4HeaderLen || ihl > len(pkt) {
		return nil, ErrTruncated
	}
	if pkt[9] != proto {
		return nil, errProto
	}
	end := len(pkt)
	if tl := int(binary.BigEndian.Uint16(pkt[2:])); tl >= ihl && tl < end {
		end = tl // drop link-layer padding
	}
	r.Responder = netip.AddrFrom4([4]byte(pkt[12:16]))
	r.Local = netip.AddrFrom4([4]byte(pkt[16:20]))
	r.ReplyTTL = pkt[8]
	r.ReplyIPID, r.HasReplyIPID = binary.BigEndian.Uint16(pkt[4:]), true
	return pkt[ihl:end], nil
}

// ParseICMPv6 parses an ICMPv6 message as a raw IPPROTO_ICMPV6 socket
// delivers it (no IP header): src is the sender, hopLimit the received hop
// limit (from IPV6_RECVHOPLIMIT; < 0 if unknown).
func ParseICMPv6(src netip.Addr, hopLimit int, icmp []byte) (Reply, error) {
	var r Reply
	err := parseICMPv6(src, hopLimit, icmp, &r)
	return r, err
}

// ParseICMPv6Into is ParseICMPv6 writing into *r (which it resets).
func ParseICMPv6Into(r *Reply, src netip.Addr, hopLimit int, icmp []byte) error {
	*r = Reply{}
	return parseICMPv6(src, hopLimit, icmp, r)
}

func parseICMPv6(src netip.Addr, hopLimit int, icmp []byte, r *Reply) error {
	r.Responder = src.Unmap()
	if hopLimit >= 0 && hopLimit <= 255 {
		r.ReplyTTL = uint8(hopLimit)
	}
	return parseICMP(IPv6, icmp, r)
}

// parseICMP parses an ICMP/ICMPv6 message (header first).
func parseICMP(fam Family, icmp []byte, r *Reply) error {
	if len(icmp) < icmpHeaderLen {
		return ErrTruncated
	}
	r.ICMPType, r.ICMPCode = icmp[0], icmp[1]
	// lenAt, lenUnit: RFC 4884 length field position and unit (0: none).
	var lenAt, lenUnit int
	if fam == IPv4 {
		if Checksum(icmp) != 0 {
			r.BadChecksum = true
		}
		switch icmp[0] {
		case icmp4TimeExceeded:
			r.Kind, lenAt, lenUnit = KindTimeExceeded, 5, 4
		case icmp4Unreachable:
			r.Kind, lenAt, lenUnit = KindUnreachable, 5, 4
			if icmp[1] == 4 {
				// Fragmentation needed: the IPv4 packet too big, one kind for both
				// families (RFC 1191 next-hop MTU; 0 from older routers).
				r.Kind = KindPacketTooBig
				r.MTU = uint32(binary.BigEndian.Uint16(icmp[6:]))
			}
		case icmp4ParamProblem:
			r.Kind, lenAt, lenUnit = KindParamProblem, 5, 4
			r.Pointer = uint32(icmp[4])
		case icmp4EchoReply:
			r.Kind = KindEchoReply
		default:
			return ErrNotProbeReply
		}
	} else {
		switch icmp[0] {
		case icmp6TimeExceeded:
			r.Kind, lenAt, lenUnit = KindTimeExceeded, 4, 8
		case icmp6Unreachable:
			r.Kind, lenAt, lenUnit = KindUnreachable, 4, 8
		case icmp6PacketTooBig:
			r.Kind = KindPacketTooBig
			r.MTU = binary.BigEndian.Uint32(icmp[4:])
		case icmp6ParamProblem:
			r.Kind = KindParamProblem
			r.Pointer = binary.BigEndian.Uint32(icmp[4:])
		case icmp6EchoReply:
			r.Kind = KindEchoReply
		default:
			return ErrNotProbeReply
		}
	}

	if r.Kind == KindEchoReply {
		return parseEcho(icmp, r, false)
	}

	var n int
	if lenAt != 0 {
		n = int(icmp[lenAt])
	}
	quote, ext := splitQuote(fam, icmp[icmpHeaderLen:], n, lenUnit)
	if len(ext) > 0 {
		r.ExtRaw = ext
		r.ExtErr = parseExtensions(ext, &r.Ext)
	}
	return parseQuote(fam, quote, r)
}

// parseEcho fills r from an echo reply (or a quoted echo request if quoted).
func parseEcho(icmp []byte, r *Reply, quoted bool) error {
	ident := binary.BigEndian.Uint16(icmp[4:])
	seq := binary.BigEndian.Uint16(icmp[6:])
	r.ICMPIdent = ident
	r.ID = ID(seq)
	r.Quoted.Proto = ProtoICMP
	r.Quoted.SPort = ICMPBase(ident, seq)
	if quoted {
		r.QuotedChecksum = binary.BigEndian.Uint16(icmp[2:])
	} else {
		r.Quoted.Src = r.Local
		r.Quoted.Dst = r.Responder
	}
	if data := icmp[icmpHeaderLen:]; len(data) >= icmpEchoTagLen {
		r.HasTag = true
		r.Nonce = binary.BigEndian.Uint32(data)
		r.Tag = FlowTag(binary.BigEndian.Uint32(data[4:]))
	}
	return nil
}

// parseQuote parses the original datagram quoted by an ICMP error.
func parseQuote(fam Family, q []byte, r *Reply) error {
	r.HasQuote = true
	r.QuoteLen = len(q)
	var l4 []byte
	var wire uint8
	if fam == IPv4 {
		if len(q) < ipv4HeaderLen || q[0]>>4 != 4 {
			return ErrTruncatedQuote
		}
		ihl := int(q[0]&0xf) * 4
		if ihl < ipv4HeaderLen || ihl+8 > len(q) {
			return ErrTruncatedQuote
		}
		r.QuotedLen = binary.BigEndian.Uint16(q[2:])
		r.QuotedIPID = binary.BigEndian.Uint16(q[4:])
		r.QuotedTTL = q[8]
		wire = q[9]
		r.Quoted.Src = netip.AddrFrom4([4]byte(q[12:16]))
		r.Quoted.Dst = netip.AddrFrom4([4]byte(q[16:20]))
		l4 = q[ihl:]
	} else {
		if len(q) < ipv6HeaderLen || q[0]>>4 != 6 {
			return ErrTruncatedQuote
		}
		r.Quoted.FlowLabel = binary.BigEndian.Uint32(q) & 0xfffff
		r.QuotedLen = binary.BigEndian.Uint16(q[4:]) + ipv6HeaderLen
		wire = q[6]
		r.QuotedTTL = q[7]
		r.Quoted.Src = netip.AddrFrom16([16]byte(q[8:24]))
		r.Quoted.Dst = netip.AddrFrom16([16]byte(q[24:40]))
		l4 = q[ipv6HeaderLen:]
		// Skip extension headers (bounded).
		for i := 0; i < 8; i++ {
			var hl int
			switch wire {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(l4) < 8 {
					return ErrTruncatedQuote
				}
				hl = (int(l4[1]) + 1) * 8
			case 44: // fragment
				if len(l4) < 8 {
					return ErrTruncatedQuote
				}
				hl = 8
				r.QuotedIPID = uint16(binary.BigEndian.Uint32(l4[4:]))
			case 51: // AH
				if len(l4) < 8 {
					return ErrTruncatedQuote
				}
				hl = (int(l4[1]) + 2) * 4
			default:
				hl = -1
			}
			if hl < 0 {
				break
			}
			if hl > len(l4) {
				return ErrTruncatedQuote
			}
			wire, l4 = l4[0], l4[hl:]
		}
	}
	if len(l4) < 8 {
		return ErrTruncatedQuote
	}
	proto, ok := ProtoFromWire(fam, wire)
	r.Quoted.Proto = proto
	if !ok {
		return nil
	}
	switch proto {
	case ProtoUDP:
		r.Quoted.SPort = binary.BigEndian.Uint16(l4)
		r.Quoted.DPort = binary.BigEndian.Uint16(l4[2:])
		r.QuotedChecksum = binary.BigEndian.Uint16(l4[6:])
		if fam == IPv4 && ID(r.QuotedIPID).Valid() {
			r.ID = ID(r.QuotedIPID)
		} else {
			r.ID = ID(r.QuotedChecksum)
		}
		// A quoted STUN probe (stun, turn, ms-turn) shows our nonce and
		// flowtag. Its STUN length must fill the UDP datagram exactly, which
		// a hex: payload that happens to be a STUN message (followed by the
		// steering bytes) never does.
		udpLen := int(binary.BigEndian.Uint16(l4[4:]))
		if pl := l4[udpHeaderLen:]; len(pl) >= stunHeaderLen && binary.BigEndian.Uint32(pl[4:]) == stunMagicCookie &&
			stunHeaderLen+int(binary.BigEndian.Uint16(pl[2:])) == udpLen-udpHeaderLen {
			nonce, tag, id, _ := SplitTransactionID(pl[stunTIDOffset:stunHeaderLen])
			r.HasTag, r.Nonce, r.Tag, r.PayloadID = true, nonce, tag, id
		}
	case ProtoICMP:
		want := uint8(icmp4EchoRequest)
		if fam == IPv6 {
			want = icmp6EchoRequest
		}
		if l4[0] != want {
			return nil // not one of our probes: leave ID 0
		}
		parseEcho(l4, r, true)
	case ProtoTCP:
		r.Quoted.SPort = binary.BigEndian.Uint16(l4)
		r.Quoted.DPort = binary.BigEndian.Uint16(l4[2:])
		r.QuotedTCPSeq = binary.BigEndian.Uint32(l4[4:])
		r.ID = ID(r.QuotedTCPSeq >> 16)
		if len(l4) >= 18 {
			r.QuotedChecksum = binary.BigEndian.Uint16(l4[16:])
		}
	}
	return nil
}

// ParseTCPv4 parses a full IPv4 packet carrying a TCP segment (raw
// IPPROTO_TCP socket). Only SYN-ACK and RST-ACK answers to probes are accepted.
func ParseTCPv4(pkt []byte) (Reply, error) {
	var r Reply
	seg, err := ipv4Body(pkt, uint8(ProtoTCP), ErrNotTCP, &r)
	if err != nil {
		return r, err
	}
	return r, parseTCP(seg, &r)
}

// ParseTCPv6 parses a TCP segment from src (raw IPv6 sockets deliver no IP
// header); hopLimit < 0 if unknown.
func ParseTCPv6(src netip.Addr, hopLimit int, seg []byte) (Reply, error) {
	var r Reply
	r.Responder = src.Unmap()
	if hopLimit >= 0 && hopLimit <= 255 {
		r.ReplyTTL = uint8(hopLimit)
	}
	return r, parseTCP(seg, &r)
}

func parseTCP(seg []byte, r *Reply) error {
	if len(seg) < 20 {
		return ErrTruncated
	}
	flags := seg[13]
	r.Kind = KindTCP
	r.TCPFlags = flags
	r.Quoted = Flow{
		Src: r.Local, Dst: r.Responder, Proto: ProtoTCP,
		SPort: binary.BigEndian.Uint16(seg[2:]), DPort: binary.BigEndian.Uint16(seg[0:]),
	}
	if flags&tcpFlagACK == 0 || flags&(tcpFlagSYN|tcpFlagRST) == 0 {
		return ErrNotProbeReply
	}
	seq := binary.BigEndian.Uint32(seg[8:]) - 1
	if seq&0xffff != 0 || !ID(seq>>16).Valid() {
		return ErrBadID
	}
	r.ID = ID(seq >> 16)
	return nil
}

// ParseSTUNAnswer parses a STUN/TURN answer that arrived from `from`: it must
// be a success or error response (e.g. 0x0101 Binding success, 0x0113
// Allocate error 401) whose transaction id carries this run's nonce
// (ErrNonce otherwise: a stale answer). The flowtag and probe id come from
// the transaction id; STUN holds the type, ERROR-CODE and (XOR-)MAPPED-ADDRESS.
func ParseSTUNAnswer(from netip.AddrPort, payload []byte, nonce uint32) (Reply, error) {
	var r Reply
	err := parseSTUNAnswer(from, payload, nonce, &r)
	return r, err
}

func parseSTUNAnswer(from netip.AddrPort, payload []byte, nonce uint32, r *Reply) error {
	r.Kind = KindSTUN
	r.Responder = from.Addr().Unmap()
	r.Quoted = Flow{Dst: r.Responder, Proto: ProtoUDP, DPort: from.Port()}
	tid, err := parseSTUN(payload, &r.STUN)
	if err != nil {
		return err
	}
	n, tag, id, _ := SplitTransactionID(tid)
	r.HasTag, r.Nonce, r.Tag, r.PayloadID = true, n, tag, id
	if n != nonce {
		return ErrNonce
	}
	if !id.Valid() {
		return ErrBadID
	}
	r.ID = id
	return nil
}

// ProbeFromPacket parses a packet made by Builder.Build back into a Probe
// (flow, id, TTL, length, transport checksum). tag and sentNS are copied in.
func ProbeFromPacket(pkt []byte, tag FlowTag, sentNS int64) (Probe, error) {
	if len(pkt) == 0 {
		return Probe{}, ErrTruncated
	}
	var r Reply
	fam := IPv4
	if pkt[0]>>4 == 6 {
		fam = IPv6
	}
	if err := parseQuote(fam, pkt, &r); err != nil {
		return Probe{}, err
	}
	if !r.ID.Valid() {
		return Probe{}, ErrBadID
	}
	return Probe{Flow: r.Quoted, Tag: tag, ID: r.ID, TTL: r.QuotedTTL, Len: r.QuotedLen,
		Checksum: r.QuotedChecksum, SentNS: sentNS}, nil
}

// InitialTTL guesses the initial TTL a reply was sent with: the smallest of
// 64, 128 and 255 that is >= replyTTL.
func InitialTTL(replyTTL uint8) uint8 {
	switch {
	case replyTTL <= 64:
		return 64
	case replyTTL <= 128:
		return 128
	}
	return 255
}

// ReturnHops estimates the length of the return path: the number of routers
// that decremented the reply's TTL, InitialTTL(replyTTL) - replyTTL (the
// German seed: 248 → 7 with an initial 255, 115 → 13 with 128). A responder
// at forward hop t (probe TTL t) has t-1 routers before it, so
// ReturnHops ≠ t-1 means an asymmetric path (or an unusual initial TTL).
func ReturnHops(replyTTL uint8) int { return int(InitialTTL(replyTTL)) - int(replyTTL) }

// String is a short human-readable summary of the reply.
func (r *Reply) String() string {
	return fmt.Sprintf("%s from %s type %d code %d id %s quoted %s ttl %d", r.Kind, r.Responder,
		r.ICMPType, r.ICMPCode, r.ID, r.Quoted, r.QuotedTTL)
}
