package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pion/stun/v3"
)

// STUN message layout (RFC 5389 §6):
//
//	0       2        4              8                                    20
//	| type  | length | magic cookie | transaction id (12 bytes)          | attributes...
//
// turnpath's transaction id (DESIGN.md):
//
//	tid[0:4]   nonce    (big endian, random per run)
//	tid[4:8]   flowtag  (big endian)
//	tid[8:10]  probe id (big endian)
//	tid[10:12] steering (the 2 bytes that force the UDP checksum to the probe id)
//
// So in the UDP payload of every STUN-kind probe the nonce is at 8..12, the
// flowtag at 12..16, the probe id at 16..18 and the steering bytes at 18..20.
const (
	stunHeaderLen   = 20
	stunMagicCookie = 0x2112A442
	stunTIDOffset   = 8
	stunSteerOffset = stunTIDOffset + 10 // 18
)

// STUN message types (method | class) turnpath sends or expects.
const (
	STUNBindingRequest  = 0x0001
	STUNBindingSuccess  = 0x0101
	STUNBindingError    = 0x0111
	STUNAllocateRequest = 0x0003
	STUNAllocateSuccess = 0x0103
	STUNAllocateError   = 0x0113
)

// STUN attribute types decoded in answers.
const (
	stunAttrMappedAddress     = 0x0001
	stunAttrErrorCode         = 0x0009
	stunAttrXORRelayedAddress = 0x0016
	stunAttrXORMappedAddress  = 0x0020
	stunAttrMSXORMapped       = 0x8020 // pre-RFC 5389 / MS-TURN XOR-MAPPED-ADDRESS
)

// msTURNSeed is the MS-TURN Allocate request from the Skype for Business
// Network Assessment Tool, as quoted in the German seed
// (shared/seeds/traceroute-turn-udp3478.de.txt, PowerShell $byteBuffer):
// 104 bytes = 20-byte header (type 0x0003, length 0x0054 = 84) + attributes
// MAGIC-COOKIE 0x000F, MS-VERSION 0x8008 = 4, USERNAME 0x0006 (48 bytes),
// BANDWIDTH 0x0010 = 350, 0x8006 = 1. Bytes 8..19 (transaction id) are
// replaced per probe.
var msTURNSeed = [...]byte{
	0x00, 0x03, 0x00, 0x54, 0x21, 0x12, 0xa4, 0x42, 0xd2, 0x79, 0xaa, 0x56, 0x87, 0x86, 0x48,
	0x73, 0x8f, 0x92, 0xef, 0x58, 0x00, 0x0f, 0x00, 0x04, 0x72, 0xc6, 0x4b, 0xc6, 0x80, 0x08,
	0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x06, 0x00, 0x30, 0x04, 0x00, 0x00, 0x1c, 0x00,
	0x09, 0xbe, 0x58, 0x24, 0xe4, 0xc5, 0x1c, 0x33, 0x4c, 0xd2, 0x3f, 0x50, 0xf1, 0x5d, 0xce,
	0x81, 0xff, 0xa9, 0xbe, 0x00, 0x00, 0x00, 0x01, 0xeb, 0x15, 0x53, 0xbd, 0x75, 0xe2, 0xca,
	0x14, 0x1e, 0x36, 0x31, 0xbb, 0xe3, 0xf5, 0x4a, 0xa1, 0x32, 0x45, 0xcb, 0xf9, 0x00, 0x10,
	0x00, 0x04, 0x00, 0x00, 0x01, 0x5e, 0x80, 0x06, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
}

// stunTemplate encodes a STUN request of type t with the given attributes and
// an all-zero transaction id, using pion/stun.
func stunTemplate(t stun.MessageType, setters ...stun.Setter) ([]byte, error) {
	all := append([]stun.Setter{stun.NewTransactionIDSetter([stun.TransactionIDSize]byte{}), t}, setters...)
	m, err := stun.Build(all...)
	if err != nil {
		return nil, fmt.Errorf("encode STUN %s: %w", t, err)
	}
	return append([]byte(nil), m.Raw...), nil
}

// bindingTemplate is an RFC 5389 Binding Request: header only, no attributes
// (no FINGERPRINT: it would cover the steering bytes).
func bindingTemplate() ([]byte, error) { return stunTemplate(stun.BindingRequest) }

// allocateTemplate is an RFC 5766 Allocate request with REQUESTED-TRANSPORT
// (0x0019) = UDP (17) and no credentials: a TURN server answers 401.
func allocateTemplate() ([]byte, error) {
	return stunTemplate(stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{uint8(ProtoUDP), 0, 0, 0}})
}

// PutTransactionID writes turnpath's 12-byte STUN transaction id into tid.
func PutTransactionID(tid []byte, nonce uint32, tag FlowTag, id ID, steer uint16) {
	_ = tid[11]
	binary.BigEndian.PutUint32(tid[0:], nonce)
	binary.BigEndian.PutUint32(tid[4:], uint32(tag))
	binary.BigEndian.PutUint16(tid[8:], uint16(id))
	binary.BigEndian.PutUint16(tid[10:], steer)
}

// SplitTransactionID is the inverse of PutTransactionID; tid must be 12 bytes.
func SplitTransactionID(tid []byte) (nonce uint32, tag FlowTag, id ID, steer uint16) {
	_ = tid[11]
	return binary.BigEndian.Uint32(tid[0:]), FlowTag(binary.BigEndian.Uint32(tid[4:])),
		ID(binary.BigEndian.Uint16(tid[8:])), binary.BigEndian.Uint16(tid[10:])
}

// STUNClass is the class of a STUN message (RFC 5389 §6).
type STUNClass uint8

// STUN classes.
const (
	STUNRequest    STUNClass = 0
	STUNIndication STUNClass = 1
	STUNSuccess    STUNClass = 2
	STUNError      STUNClass = 3
)

func (c STUNClass) String() string {
	switch c {
	case STUNRequest:
		return "request"
	case STUNIndication:
		return "indication"
	case STUNSuccess:
		return "success"
	case STUNError:
		return "error"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// STUNInfo is what a STUN/TURN answer told us.
type STUNInfo struct {
	Type      uint16    // full message type, e.g. 0x0101 Binding success, 0x0113 Allocate error
	Method    uint16    // 0x001 Binding, 0x003 Allocate
	Class     STUNClass // STUNSuccess or STUNError
	ErrorCode int       // ERROR-CODE class*100+number (e.g. 401), 0 if absent
	// Reason is the ERROR-CODE reason phrase. It aliases the parsed payload
	// (no copy, to stay allocation-free): copy it if the buffer is reused.
	Reason []byte
	// Mapped is XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS if that is all there
	// is): our address as the server saw it. Mapped ≠ the probe's source
	// means NAT. Invalid if absent.
	Mapped netip.AddrPort
	// Relayed is XOR-RELAYED-ADDRESS of an Allocate success, invalid if absent.
	Relayed netip.AddrPort
}

// Errors from STUN answer parsing.
var (
	ErrNotSTUN         = errors.New("probe: not a STUN message")
	ErrNotSTUNResponse = errors.New("probe: STUN message is not a success or error response")
	ErrSTUNTruncated   = errors.New("probe: truncated STUN message")
	ErrNonce           = errors.New("probe: nonce does not match this run (stale reply)")
)

// stunMessageType splits a STUN message type into method and class.
func stunMessageType(t uint16) (method uint16, class STUNClass) {
	method = t&0x000f | (t&0x00e0)>>1 | (t&0x3e00)>>2
	class = STUNClass((t>>7)&2 | (t>>4)&1)
	return
}

// parseSTUN validates a STUN response header and decodes the attributes
// turnpath cares about into info. It returns the transaction id slice.
func parseSTUN(b []byte, info *STUNInfo) (tid []byte, err error) {
	if len(b) < stunHeaderLen {
		return nil, ErrSTUNTruncated
	}
	if b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:]) != stunMagicCookie {
		return nil, ErrNotSTUN
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n%4 != 0 {
		return nil, ErrNotSTUN
	}
	if stunHeaderLen+n > len(b) {
		return nil, ErrSTUNTruncated
	}
	t := binary.BigEndian.Uint16(b)
	info.Type = t
	info.Method, info.Class = stunMessageType(t)
	if info.Class != STUNSuccess && info.Class != STUNError {
		return nil, ErrNotSTUNResponse
	}
	tid = b[stunTIDOffset:stunHeaderLen]
	attrs := b[stunHeaderLen : stunHeaderLen+n]
	var mapped, xorMapped netip.AddrPort
	for len(attrs) >= 4 {
		at := binary.BigEndian.Uint16(attrs)
		al := int(binary.BigEndian.Uint16(attrs[2:]))
		if 4+al > len(attrs) {
			return nil, ErrSTUNTruncated
		}
		v := attrs[4 : 4+al]
		switch at {
		case stunAttrXORMappedAddress, stunAttrMSXORMapped:
			if ap, ok := stunAddr(v, tid, true); ok && !xorMapped.IsValid() {
				xorMapped = ap
			}
		case stunAttrMappedAddress:
			if ap, ok := stunAddr(v, tid, false); ok && !mapped.IsValid() {
				mapped = ap
			}
		case stunAttrXORRelayedAddress:
			if ap, ok := stunAddr(v, tid, true); ok {
				info.Relayed = ap
			}
		case stunAttrErrorCode:
			if al >= 4 {
				info.ErrorCode = int(v[2]&0x7)*100 + int(v[3])
				info.Reason = v[4:]
			}
		}
		pad := (4 - al%4) % 4
		if 4+al+pad > len(attrs) {
			break
		}
		attrs = attrs[4+al+pad:]
	}
	if xorMapped.IsValid() {
		info.Mapped = xorMapped
	} else {
		info.Mapped = mapped
	}
	return tid, nil
}

// stunAddr decodes a (XOR-)MAPPED-ADDRESS value (RFC 5389 §15.1, §15.2).
func stunAddr(v, tid []byte, xor bool) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:])
	if xor {
		port ^= stunMagicCookie >> 16
	}
	switch v[1] {
	case 0x01:
		if len(v) < 8 {
			return netip.AddrPort{}, false
		}
		var a [4]byte
		copy(a[:], v[4:8])
		if xor {
			binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])^stunMagicCookie)
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case 0x02:
		if len(v) < 20 {
			return netip.AddrPort{}, false
		}
		var a [16]byte
		copy(a[:], v[4:20])
		if xor {
			var k [16]byte
			binary.BigEndian.PutUint32(k[:], stunMagicCookie)
			copy(k[4:], tid)
			for i := range a {
				a[i] ^= k[i]
			}
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a), port), true
	}
	return netip.AddrPort{}, false
}
