package probe

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// PayloadKind says what a UDP probe carries.
type PayloadKind uint8

// Payload kinds (ParsePayload spec in parentheses).
const (
	PayloadNone   PayloadKind = iota // "none": 2 steering bytes only
	PayloadHex                       // "hex:<bytes>": user bytes + 2 steering bytes
	PayloadSTUN                      // "stun": RFC 5389 Binding Request, 20 bytes
	PayloadTURN                      // "turn": RFC 5766 Allocate, REQUESTED-TRANSPORT=UDP, 28 bytes
	PayloadMSTURN                    // "ms-turn": the seed's MS-TURN Allocate, 104 bytes
)

func (k PayloadKind) String() string {
	switch k {
	case PayloadNone:
		return "none"
	case PayloadHex:
		return "hex"
	case PayloadSTUN:
		return "stun"
	case PayloadTURN:
		return "turn"
	case PayloadMSTURN:
		return "ms-turn"
	}
	return fmt.Sprintf("payload(%d)", uint8(k))
}

// MaxHexPayload is the largest hex: payload (user bytes): an IPv4 UDP datagram
// holds at most 65507 bytes, 2 of which are the steering bytes.
const MaxHexPayload = 65507 - 2

// Payload is a parsed payload spec: an immutable template of the UDP payload
// with a zero transaction id (STUN kinds) and zero steering bytes. The zero
// Payload is "none".
type Payload struct {
	kind  PayloadKind
	tmpl  []byte // whole UDP payload; nil for the zero value (none)
	steer int    // offset of the 2 steering bytes in the UDP payload
	user  []byte // hex: the user's bytes (also used as ICMP echo data)
	pad   int    // ICMP echo: zero bytes after the user's (Sized); UDP: in tmpl
}

// ParsePayload parses a payload spec: "stun", "turn", "ms-turn", "none" or
// "hex:<bytes>" (hex digits, optional 0x prefix, optional ':' '-' '_' or
// space separators between bytes). Keywords are case-insensitive.
func ParsePayload(spec string) (Payload, error) {
	s := strings.TrimSpace(spec)
	low := strings.ToLower(s)
	switch {
	case low == "none" || low == "":
		return Payload{kind: PayloadNone, tmpl: []byte{0, 0}, steer: 0}, nil
	case low == "stun":
		t, err := bindingTemplate()
		if err != nil {
			return Payload{}, err
		}
		return Payload{kind: PayloadSTUN, tmpl: t, steer: stunSteerOffset}, nil
	case low == "turn":
		t, err := allocateTemplate()
		if err != nil {
			return Payload{}, err
		}
		return Payload{kind: PayloadTURN, tmpl: t, steer: stunSteerOffset}, nil
	case low == "ms-turn" || low == "msturn":
		t := append([]byte(nil), msTURNSeed[:]...)
		clear(t[stunTIDOffset:stunHeaderLen])
		return Payload{kind: PayloadMSTURN, tmpl: t, steer: stunSteerOffset}, nil
	case strings.HasPrefix(low, "hex:"):
		b, err := parseHex(s[len("hex:"):])
		if err != nil {
			return Payload{}, err
		}
		t := make([]byte, len(b)+2)
		copy(t, b)
		return Payload{kind: PayloadHex, tmpl: t, steer: len(b), user: t[:len(b):len(b)]}, nil
	}
	return Payload{}, fmt.Errorf("unknown payload %q (want stun, turn, ms-turn, hex:<bytes> or none)", spec)
}

func parseHex(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X") {
		s = s[2:]
	}
	s = strings.Map(func(r rune) rune {
		switch r {
		case ':', '-', '_', ' ', '\t':
			return -1
		}
		return r
	}, s)
	if s == "" {
		return nil, errors.New("invalid hex payload: no bytes (use \"none\" for an empty payload)")
	}
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("invalid hex payload: odd number of hex digits (%d)", len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		var ie hex.InvalidByteError
		if errors.As(err, &ie) {
			return nil, fmt.Errorf("invalid hex payload: %q is not a hex digit", rune(ie))
		}
		return nil, fmt.Errorf("invalid hex payload: %w", err)
	}
	if len(b) > MaxHexPayload {
		return nil, fmt.Errorf("invalid hex payload: %d bytes, at most %d", len(b), MaxHexPayload)
	}
	return b, nil
}

// paddingAttr is the STUN attribute that makes a STUN probe bigger (Sized):
// comprehension-optional (>= 0x8000), so servers ignore it (RFC 5389 section 7.3.1)
// and still answer, and unassigned, so no server gives it a meaning.
const paddingAttr = 0x8fff

// Sized returns the payload that makes flow f's probes pktLen bytes long (IP header
// included), for path MTU discovery, and the length they really get: a STUN message
// grows by whole 32-bit words (one comprehension-optional attribute, ignored by
// servers), other UDP payloads and ICMP echo data by zero bytes. A length below the
// natural one gives the natural one; TCP SYNs do not grow.
func (p Payload) Sized(f Flow, pktLen int) (Payload, int) {
	natural := PacketLen(f, p)
	extra := pktLen - natural
	if extra <= 0 || f.Proto == ProtoTCP {
		return p, natural
	}
	switch f.Proto {
	case ProtoICMP:
		q := p
		q.pad += extra
		return q, natural + extra
	case ProtoUDP:
		q := p
		if p.IsSTUN() {
			extra &^= 3
			if extra < 4 {
				return p, natural
			}
			t := make([]byte, len(p.tmpl)+extra)
			copy(t, p.tmpl)
			a := t[len(p.tmpl):]
			binary.BigEndian.PutUint16(a[0:], paddingAttr)
			binary.BigEndian.PutUint16(a[2:], uint16(extra-4))
			binary.BigEndian.PutUint16(t[2:], binary.BigEndian.Uint16(t[2:])+uint16(extra))
			q.tmpl = t
			return q, natural + extra
		}
		t := make([]byte, p.Len()+extra)
		copy(t, p.Template())
		q.tmpl = t
		if p.user != nil {
			q.user = t[:len(p.user):len(p.user)]
		}
		return q, natural + extra
	}
	return p, natural
}

// Kind returns the payload kind.
func (p Payload) Kind() PayloadKind { return p.kind }

// IsSTUN reports whether the payload is a STUN message (stun, turn, ms-turn)
// carrying turnpath's transaction id.
func (p Payload) IsSTUN() bool {
	return p.kind == PayloadSTUN || p.kind == PayloadTURN || p.kind == PayloadMSTURN
}

// Len returns the UDP payload length in bytes, steering bytes included.
func (p Payload) Len() int {
	if p.tmpl == nil {
		return 2
	}
	return len(p.tmpl)
}

// SteeringOffset returns the offset of the 2 steering bytes in the UDP
// payload (18 for STUN kinds, the user length for hex, 0 for none).
func (p Payload) SteeringOffset() int { return p.steer }

// UserBytes returns the user's bytes of a hex payload (nil otherwise). The
// slice must not be modified.
func (p Payload) UserBytes() []byte { return p.user }

// Template returns a copy of the UDP payload template (zero transaction id,
// zero steering bytes).
func (p Payload) Template() []byte {
	if p.tmpl == nil {
		return []byte{0, 0}
	}
	return append([]byte(nil), p.tmpl...)
}

// String returns the spec ParsePayload accepts for p.
func (p Payload) String() string {
	if p.kind == PayloadHex {
		return "hex:" + hex.EncodeToString(p.user)
	}
	return p.kind.String()
}

// writeUDPPayload writes the payload for (nonce, tag, id) with zero steering
// bytes into b (len(b) == p.Len()).
func (p Payload) writeUDPPayload(b []byte, nonce uint32, tag FlowTag, id ID) {
	if p.tmpl == nil {
		b[0], b[1] = 0, 0
		return
	}
	copy(b, p.tmpl)
	if p.IsSTUN() {
		PutTransactionID(b[stunTIDOffset:stunHeaderLen], nonce, tag, id, 0)
	}
}
