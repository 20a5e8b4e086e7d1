package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
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

// ---- matching ----

// Probe is an outstanding probe as the Matcher knows it.
type Probe struct {
	Flow Flow
	Tag  FlowTag
	ID   ID
	TTL  uint8
	Len  uint16 // IP packet length as sent (PacketLen); 0: do not check
	// Checksum is the transport checksum as sent (UDP: the id; ICMP: the
	// flow's constant, see ICMPChecksum; TCP: the SYN's). 0: do not check.
	Checksum uint16
	SentNS   int64 // send time, any monotonic ns clock shared with the rx times
}

// Flags are observations made while matching a reply.
type Flags uint32

// Match flags.
const (
	// FlagDuplicate: this probe was already matched by an earlier reply.
	FlagDuplicate Flags = 1 << iota
	// FlagChecksumRewritten: the quoted transport checksum differs from the
	// one sent while the id still matched (IPv4 UDP: quoted IP ID = id,
	// checksum ≠ id: Dublin traceroute's NAT signal).
	FlagChecksumRewritten
	// FlagIPIDRewritten: IPv4 quoted IP ID ≠ id (matched by checksum/seq).
	FlagIPIDRewritten
	// FlagSeqRewritten: quoted TCP seq ≠ id<<16 (matched by IP ID).
	FlagSeqRewritten
	// FlagNATSrc: quoted source address ≠ the probe's source (NAT on the
	// way out, quoted after translation).
	FlagNATSrc
	// FlagNATPort: quoted source port (ICMP base) ≠ the probe's (matched via
	// the flowtag in a long quote).
	FlagNATPort
	// FlagNATDst: quoted destination address or port ≠ the probe's.
	FlagNATDst
	// FlagNATMapped: STUN (XOR-)MAPPED-ADDRESS ≠ the probe's source address/port.
	FlagNATMapped
	// FlagQuotedTTL: a Time Exceeded quotes a TTL > 1 (the value is in
	// Reply.QuotedTTL): a router that forwards with TTL 1 or rewrites TTLs.
	FlagQuotedTTL
	// FlagLengthChanged: quoted IP length ≠ the length sent.
	FlagLengthChanged
	// FlagFlowLabelChanged: quoted IPv6 flow label ≠ the one sent.
	FlagFlowLabelChanged
	// FlagOtherResponder: an echo reply, TCP or STUN answer came from an
	// address (or STUN port) other than the probe's destination.
	FlagOtherResponder
	// FlagBadChecksum: the reply's own ICMPv4 checksum did not verify.
	FlagBadChecksum
	// FlagViaTag: the probe was found through the reply's flowtag (STUN
	// transaction id / echo data), not through (dst, sport, id).
	FlagViaTag
)

var flagNames = [...]string{"duplicate", "checksum-rewritten", "ipid-rewritten", "seq-rewritten",
	"nat-src", "nat-port", "nat-dst", "nat-mapped", "quoted-ttl", "length-changed",
	"flowlabel-changed", "other-responder", "bad-checksum", "via-tag"}

// String lists the set flags, separated by '|'.
func (f Flags) String() string {
	s := ""
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	return s
}

// Match errors.
var (
	ErrUnknownProbe  = errors.New("probe: reply matches no outstanding probe")
	ErrStale         = errors.New("probe: reply is older than its probe or arrived after the timeout")
	ErrProtoMismatch = errors.New("probe: reply does not fit the probe's protocol")
	ErrProbeExists   = errors.New("probe: a probe with this (dst, sport, id) is already outstanding")
)

// Verify checks that reply r answers probe p (already found by key) and
// returns what it observed. It is a pure function; nonce is this run's nonce.
func Verify(r *Reply, p *Probe, nonce uint32) (Flags, error) {
	var fl Flags
	f := &p.Flow
	if r.HasTag && r.Nonce != nonce {
		return 0, ErrNonce
	}
	if r.BadChecksum {
		fl |= FlagBadChecksum
	}
	switch r.Kind {
	case KindTimeExceeded, KindUnreachable, KindPacketTooBig, KindParamProblem:
		q := &r.Quoted
		if q.Proto != f.Proto {
			return 0, ErrProtoMismatch
		}
		if q.Src != f.Src {
			fl |= FlagNATSrc
		}
		if q.SPort != f.SPort {
			fl |= FlagNATPort
		}
		if q.Dst != f.Dst || (f.Proto != ProtoICMP && q.DPort != f.DPort) {
			fl |= FlagNATDst
		}
		if r.Kind == KindTimeExceeded && r.QuotedTTL > 1 {
			fl |= FlagQuotedTTL
		}
		if p.Len != 0 && r.QuotedLen != p.Len {
			fl |= FlagLengthChanged
		}
		fam := f.Family()
		if fam == IPv6 && q.FlowLabel != f.Label() {
			fl |= FlagFlowLabelChanged
		}
		if fam == IPv4 && r.QuotedIPID != uint16(p.ID) {
			fl |= FlagIPIDRewritten
		}
		switch f.Proto {
		case ProtoUDP:
			if r.QuotedChecksum != uint16(p.ID) {
				fl |= FlagChecksumRewritten
			}
		case ProtoICMP:
			if p.Checksum != 0 && r.QuotedChecksum != p.Checksum {
				fl |= FlagChecksumRewritten
			}
		case ProtoTCP:
			if r.QuotedTCPSeq != uint32(p.ID)<<16 {
				fl |= FlagSeqRewritten
			}
			if p.Checksum != 0 && r.QuoteLen >= HeaderLen(fam)+18 && r.QuotedChecksum != p.Checksum {
				fl |= FlagChecksumRewritten
			}
		}
	case KindEchoReply:
		if f.Proto != ProtoICMP {
			return 0, ErrProtoMismatch
		}
		if r.Responder != f.Dst {
			fl |= FlagOtherResponder
		}
	case KindTCP:
		if f.Proto != ProtoTCP {
			return 0, ErrProtoMismatch
		}
		if r.Responder != f.Dst || r.Quoted.DPort != f.DPort {
			fl |= FlagOtherResponder
		}
	case KindSTUN:
		if f.Proto != ProtoUDP {
			return 0, ErrProtoMismatch
		}
		if r.Responder != f.Dst || r.Quoted.DPort != f.DPort {
			fl |= FlagOtherResponder
		}
		if m := r.STUN.Mapped; m.IsValid() && (m.Addr().Unmap() != f.Src || m.Port() != f.SPort) {
			fl |= FlagNATMapped
		}
	default:
		return 0, ErrProtoMismatch
	}
	return fl, nil
}

// MatchResult is a matched reply.
type MatchResult struct {
	Probe Probe
	Flags Flags
	RTTNS int64 // rxNS - Probe.SentNS
	Count int   // replies matched to this probe so far, this one included
}

type probeKey struct {
	dst   netip.Addr
	sport uint16
	id    ID
}

type probeSlot struct {
	p Probe
	n int
}

// Matcher holds the outstanding probes of a run, keyed like the kernel's
// `sent` map by (dst, sport, id), and the flows by flowtag. It is not safe
// for concurrent use.
type Matcher struct {
	// Nonce is this run's nonce: replies carrying another nonce are stale.
	Nonce uint32
	// Timeout: replies that arrive later than SentNS+Timeout are stale (0:
	// no limit).
	Timeout time.Duration

	probes map[probeKey]int32 // index into slots
	slots  []probeSlot
	free   []int32
	flows  map[FlowTag]Flow
}

// NewMatcher returns an empty Matcher for a run with the given nonce.
func NewMatcher(nonce uint32, timeout time.Duration) *Matcher {
	return &Matcher{Nonce: nonce, Timeout: timeout,
		probes: make(map[probeKey]int32), flows: make(map[FlowTag]Flow)}
}

func keyOf(p *Probe) probeKey { return probeKey{p.Flow.Dst, p.Flow.SPort, p.ID} }

// AddFlow registers a flow under its flowtag (Add does this too).
func (m *Matcher) AddFlow(tag FlowTag, f Flow) { m.flows[tag] = f.Normalize() }

// Flow returns the flow registered under tag.
func (m *Matcher) Flow(tag FlowTag) (Flow, bool) { f, ok := m.flows[tag]; return f, ok }

// Add records an outstanding probe (its flow is normalized, see
// Flow.Normalize). It fails if the same (dst, sport, id) is outstanding.
func (m *Matcher) Add(p Probe) error {
	if !p.ID.Valid() {
		return ErrInvalidID
	}
	p.Flow = p.Flow.Normalize()
	k := keyOf(&p)
	if _, dup := m.probes[k]; dup {
		return ErrProbeExists
	}
	var i int32
	if n := len(m.free); n > 0 {
		i, m.free = m.free[n-1], m.free[:n-1]
		m.slots[i] = probeSlot{p: p}
	} else {
		i = int32(len(m.slots))
		m.slots = append(m.slots, probeSlot{p: p})
	}
	m.probes[k] = i
	if old, ok := m.flows[p.Tag]; !ok || old != p.Flow {
		m.flows[p.Tag] = p.Flow
	}
	return nil
}

// Remove forgets an outstanding probe; later replies to it are rejected.
func (m *Matcher) Remove(dst netip.Addr, sport uint16, id ID) {
	k := probeKey{dst.Unmap(), sport, id}
	if i, ok := m.probes[k]; ok {
		m.release(k, i)
	}
}

func (m *Matcher) release(k probeKey, i int32) {
	delete(m.probes, k)
	m.slots[i] = probeSlot{}
	m.free = append(m.free, i)
}

// Expire forgets the probes sent before beforeNS and returns how many.
func (m *Matcher) Expire(beforeNS int64) int {
	n := 0
	for k, i := range m.probes {
		if m.slots[i].p.SentNS < beforeNS {
			m.release(k, i)
			n++
		}
	}
	return n
}

// Len returns the number of outstanding probes.
func (m *Matcher) Len() int { return len(m.probes) }

// lookup finds the probe a reply belongs to; viaTag says it was found
// through the flowtag.
func (m *Matcher) lookup(r *Reply) (slot *probeSlot, viaTag bool) {
	var dst netip.Addr
	switch r.Kind {
	case KindEchoReply, KindTCP:
		dst = r.Responder
	case KindSTUN:
		// only via the flowtag
	default:
		dst = r.Quoted.Dst
	}
	sport := r.Quoted.SPort
	if dst.IsValid() {
		try := func(id ID) *probeSlot {
			if i, ok := m.probes[probeKey{dst, sport, id}]; ok {
				return &m.slots[i]
			}
			return nil
		}
		if s := try(r.ID); s != nil {
			return s, false
		}
		if r.HasQuote && r.Quoted.Family() == IPv4 {
			// IPv4: the IP ID, the UDP checksum and the TCP seq all carry
			// the id; whichever survived a rewrite finds the probe.
			if ipid := ID(r.QuotedIPID); ipid != r.ID {
				if s := try(ipid); s != nil {
					return s, false
				}
			}
			if ck := ID(r.QuotedChecksum); r.Quoted.Proto == ProtoUDP && ck != r.ID {
				if s := try(ck); s != nil {
					return s, false
				}
			}
		}
	}
	if r.HasTag && r.Nonce == m.Nonce {
		f, ok := m.flows[r.Tag]
		if !ok {
			return nil, false
		}
		id := r.ID
		if r.PayloadID != 0 {
			id = r.PayloadID
		}
		if i, ok := m.probes[probeKey{f.Dst, f.SPort, id}]; ok {
			return &m.slots[i], true
		}
	}
	return nil, false
}

// Match finds and verifies the outstanding probe reply r answers; rxNS is
// the receive time on the probes' clock (0: do not check times). Replies to
// unknown or removed probes, with another run's nonce, arriving before their
// probe was sent or after the timeout are rejected. A second reply to the
// same probe matches with FlagDuplicate.
func (m *Matcher) Match(r *Reply, rxNS int64) (MatchResult, error) {
	if r.HasTag && r.Nonce != m.Nonce {
		return MatchResult{}, ErrNonce
	}
	s, viaTag := m.lookup(r)
	if s == nil {
		return MatchResult{}, ErrUnknownProbe
	}
	fl, err := Verify(r, &s.p, m.Nonce)
	if err != nil {
		return MatchResult{}, err
	}
	if viaTag {
		fl |= FlagViaTag
	}
	var rtt int64
	if rxNS != 0 {
		rtt = rxNS - s.p.SentNS
		if rtt < 0 || (m.Timeout > 0 && rtt > int64(m.Timeout)) {
			return MatchResult{}, ErrStale
		}
	}
	s.n++
	if s.n > 1 {
		fl |= FlagDuplicate
	}
	return MatchResult{Probe: s.p, Flags: fl, RTTNS: rtt, Count: s.n}, nil
}
