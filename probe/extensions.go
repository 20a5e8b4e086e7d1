package probe

import (
	"encoding/binary"
	"net/netip"
)

// RFC 4884 ICMP extensions: where the structure is in an ICMP error
// (splitQuote, LooksLikeExtension) and what it says (ParseExtensions).

// Limits of the fixed-size (allocation-free) Extensions decoding.
const (
	MaxMPLSEntries  = 16
	MaxInterfaces   = 4
	MaxUnknownExt   = 4
	maxIfNameLength = 63
)

// MPLSEntry is one RFC 4950 MPLS label stack entry.
type MPLSEntry struct {
	Label uint32 // 20 bits
	TC    uint8  // traffic class (formerly EXP), 3 bits
	S     bool   // bottom of stack
	TTL   uint8
}

// IfRole is the RFC 5837 interface role.
type IfRole uint8

// RFC 5837 interface roles.
const (
	IfRoleIncoming IfRole = 0 // the incoming IP interface
	IfRoleSubIP    IfRole = 1 // sub-IP component of the incoming interface
	IfRoleOutgoing IfRole = 2 // the outgoing IP interface
	IfRoleNextHop  IfRole = 3 // the IP next hop
)

func (r IfRole) String() string {
	switch r {
	case IfRoleIncoming:
		return "incoming"
	case IfRoleSubIP:
		return "sub-ip"
	case IfRoleOutgoing:
		return "outgoing"
	}
	return "next-hop"
}

// InterfaceInfo is one RFC 5837 Interface Information Object.
type InterfaceInfo struct {
	Role       IfRole
	HasIfIndex bool
	IfIndex    uint32
	Addr       netip.Addr // invalid if absent
	HasMTU     bool
	MTU        uint32
	nameLen    uint8
	name       [maxIfNameLength]byte
}

// Name returns the interface name ("" if absent).
func (i *InterfaceInfo) Name() string { return string(i.name[:i.nameLen]) }

// ExtObject is an extension object turnpath does not decode.
type ExtObject struct {
	Class, CType uint8
	Data         []byte // aliases the parsed buffer
}

// Extensions is a decoded RFC 4884 extension structure. It has fixed-size
// arrays so decoding does not allocate; entries beyond the limits are
// counted in Dropped.
type Extensions struct {
	Raw      []byte // the whole structure (aliases the parsed buffer)
	Version  uint8
	Checksum uint16 // as transmitted; 0: none transmitted
	// ChecksumBad is set when a checksum was transmitted and the structure
	// does not verify. The structure is decoded anyway (as tshark does); it
	// is not checked when the structure is cut short (ErrExtTruncated).
	ChecksumBad bool
	NumMPLS     int
	MPLSStack   [MaxMPLSEntries]MPLSEntry
	NumIfaces   int
	Ifaces      [MaxInterfaces]InterfaceInfo
	NumUnknown  int
	Unknown     [MaxUnknownExt]ExtObject
	Dropped     int
}

// MPLS returns the decoded MPLS label stack entries (top first).
func (e *Extensions) MPLS() []MPLSEntry { return e.MPLSStack[:e.NumMPLS] }

// Interfaces returns the decoded RFC 5837 interface objects.
func (e *Extensions) Interfaces() []InterfaceInfo { return e.Ifaces[:e.NumIfaces] }

// Objects returns the objects that were not decoded.
func (e *Extensions) Objects() []ExtObject { return e.Unknown[:e.NumUnknown] }

// compatQuoteLen is the size of the "original datagram" field that routers
// predating RFC 4884 (the RFC 4950 / draft-ietf-mpls-icmp era) put before
// their extension structure, without setting the RFC 4884 length field (RFC
// 4884 §5). It is also the least an RFC 4884 original datagram field holds
// when extensions follow (§3).
const compatQuoteLen = 128

// splitQuote separates the "original datagram" of an ICMP error (the bytes
// after the 8-byte ICMP header) from the extension structure that follows
// it, if any. n is the RFC 4884 length field, unit its unit (4 bytes on
// ICMPv4, 8 on ICMPv6); unit 0: the message type has no length field.
//
//   - n != 0 (RFC 4884): the datagram is n*unit bytes and the structure
//     follows (FindExtension: or after 128 bytes, for routers that put the
//     unpadded length there); an impossible length (past the end) means no
//     extensions.
//   - n == 0: a structure in the pre-RFC 4884 layout after a 128-byte
//     datagram (LooksLikeExtension). On IPv6 only when the quoted datagram
//     is itself at most 128 bytes (its payload length says so): ICMPv6
//     errors quote up to 1232 bytes of the probe, so after a longer probe
//     the bytes after 128 are its own. (tshark looks for ICMPv6 extensions
//     only where the length field says.)
func splitQuote(fam Family, quote []byte, n, unit int) (q, ext []byte) {
	if unit == 0 {
		return quote, nil
	}
	if n != 0 {
		ql := n * unit
		if ql > len(quote) {
			return quote, nil
		}
		return quote[:ql], FindExtension(quote[ql:], ql)
	}
	if len(quote) < compatQuoteLen+8 || !LooksLikeExtension(quote[compatQuoteLen:]) {
		return quote, nil
	}
	if fam == IPv6 && (quote[0]>>4 != 6 || ipv6HeaderLen+int(binary.BigEndian.Uint16(quote[4:])) > compatQuoteLen) {
		return quote, nil
	}
	return quote[:compatQuoteLen], quote[compatQuoteLen:]
}

// FindExtension returns the extension structure in b, the bytes of an ICMP
// error that follow its original datagram field when the RFC 4884 length
// field (nonzero) says that field is quoteLen bytes: b itself, or, when b
// does not start with a structure, quoteLen < 128 and one (LooksLikeExtension)
// starts where a 128-byte field would end, the bytes from there. Some routers
// put the unpadded datagram's length in the field and the structure after
// the padding (trippy issue 804; captured on IPv4 and IPv6). b may be cut
// short (the eBPF engine's copy of the bytes after the field).
func FindExtension(b []byte, quoteLen int) []byte {
	if skip := compatQuoteLen - quoteLen; skip > 0 && len(b) >= skip+8 &&
		!LooksLikeExtension(b) && LooksLikeExtension(b[skip:]) {
		return b[skip:]
	}
	return b
}

// LooksLikeExtension reports whether b, the bytes that follow a 128-byte
// "original datagram" in an ICMP Time Exceeded, Destination Unreachable or
// Parameter Problem whose RFC 4884 length field is 0, are an ICMP extension
// structure in the pre-RFC 4884 layout (RFC 4884 §5), rather than more of
// the quoted datagram. b may be cut short (the eBPF engine hands over at
// most 128 bytes); pass it to ParseExtensions when this says yes.
//
// The checksum is not required: a structure with checksum 0 (none
// transmitted) or a bad one counts, as in tshark, provided its shape does:
// version 2, reserved bits 0, and a chain of objects, each a multiple of 4
// bytes, of known classes — RFC 4950 MPLS label stack (class 1, c-type 1,
// at least one entry), RFC 5837 interface information (class 2, reserved
// c-type bits 0, at least one sub-object), RFC 8335 interface
// identification (class 3, c-type 1-3), extended information (class 4) —
// that ends exactly at the end of b, or runs past it (cut short). Random
// bytes pass this with a probability below 10^-7. A nonzero
// checksum that verifies over b is accepted with a version of 2 and a
// first object that fits, whatever its class (the rule before the shape
// test existed).
func LooksLikeExtension(b []byte) bool {
	if len(b) < 8 || b[0]>>4 != 2 {
		return false
	}
	if binary.BigEndian.Uint16(b[2:]) != 0 && Checksum(b) == 0 {
		if ol := int(binary.BigEndian.Uint16(b[4:])); ol >= 4 && 4+ol <= len(b) {
			return true
		}
	}
	if b[0]&0x0f != 0 || b[1] != 0 {
		return false
	}
	objs := b[4:]
	for len(objs) >= 4 {
		ol := int(binary.BigEndian.Uint16(objs))
		if ol < 4 || ol%4 != 0 || !plausibleObject(objs[2], objs[3], ol) {
			return false
		}
		if ol > len(objs) {
			return true // cut short inside a plausible object
		}
		objs = objs[ol:]
	}
	return len(objs) == 0
}

// plausibleObject says whether an object header with this class, c-type and
// length is one a router sends (LooksLikeExtension).
func plausibleObject(class, ctype uint8, ol int) bool {
	switch class {
	case 1: // RFC 4950 MPLS label stack
		return ctype == 1 && ol >= 8
	case 2: // RFC 5837 interface information
		return ctype&0x30 == 0 && ctype&0x0f != 0 && ol >= 8
	case 3: // RFC 8335 interface identification
		return ctype >= 1 && ctype <= 3 && ol >= 8
	case 4: // extended information
		return true
	}
	return false
}

// ParseExtensions decodes an RFC 4884 ICMP extension structure: RFC 4950
// MPLS label stacks (class 1, c-type 1) and RFC 5837 interface information
// (class 2); other objects are returned raw.
//
// A checksum that does not verify is not an error: the structure is decoded
// and Extensions.ChecksumBad set. On an error, what was decoded before it is
// kept: the objects before the bad one, the whole entries of an MPLS object
// the structure ends in. So a structure cut at a fixed size (the eBPF engine
// copies at most 128 bytes) gives its leading objects and ErrExtTruncated.
// ErrExtVersion (version not 2) decodes nothing.
func ParseExtensions(b []byte) (Extensions, error) {
	var e Extensions
	err := parseExtensions(b, &e)
	return e, err
}

func parseExtensions(b []byte, e *Extensions) error {
	e.Raw = b
	if len(b) < 4 {
		return ErrExtTruncated
	}
	e.Version = b[0] >> 4
	e.Checksum = binary.BigEndian.Uint16(b[2:])
	e.ChecksumBad = e.Checksum != 0 && Checksum(b) != 0
	if e.Version != 2 {
		return ErrExtVersion
	}
	objs := b[4:]
	for len(objs) > 0 {
		if len(objs) < 4 {
			e.ChecksumBad = false // cut short: not verifiable
			return ErrExtTruncated
		}
		ol := int(binary.BigEndian.Uint16(objs))
		if ol < 4 {
			return ErrExtObjectLength
		}
		class, ctype := objs[2], objs[3]
		if ol > len(objs) {
			// The structure ends inside this object.
			e.ChecksumBad = false
			if class == 1 && ctype == 1 {
				e.addMPLS(objs[4:])
			}
			return ErrExtTruncated
		}
		data := objs[4:ol]
		objs = objs[ol:]
		switch {
		case class == 1 && ctype == 1:
			e.addMPLS(data)
			if len(data)%4 != 0 {
				return ErrExtObjectLength
			}
		case class == 2:
			if e.NumIfaces == MaxInterfaces {
				e.Dropped++
				continue
			}
			if err := parseInterfaceInfo(ctype, data, &e.Ifaces[e.NumIfaces]); err != nil {
				e.Ifaces[e.NumIfaces] = InterfaceInfo{}
				return err
			}
			e.NumIfaces++
		default:
			if e.NumUnknown == MaxUnknownExt {
				e.Dropped++
				continue
			}
			e.Unknown[e.NumUnknown] = ExtObject{Class: class, CType: ctype, Data: data}
			e.NumUnknown++
		}
	}
	return nil
}

// addMPLS decodes the whole 4-byte label stack entries in d.
func (e *Extensions) addMPLS(d []byte) {
	for ; len(d) >= 4; d = d[4:] {
		if e.NumMPLS == MaxMPLSEntries {
			e.Dropped++
			continue
		}
		v := binary.BigEndian.Uint32(d)
		e.MPLSStack[e.NumMPLS] = MPLSEntry{Label: v >> 12, TC: uint8(v>>9) & 7, S: v&0x100 != 0, TTL: uint8(v)}
		e.NumMPLS++
	}
}

// parseInterfaceInfo decodes an RFC 5837 Interface Information Object: the
// c-type is role(2) | reserved(2) | ifIndex | IPAddr | name | MTU, and the
// sub-objects follow in that order.
func parseInterfaceInfo(ctype uint8, d []byte, ii *InterfaceInfo) error {
	*ii = InterfaceInfo{Role: IfRole(ctype >> 6)}
	if ctype&0x08 != 0 {
		if len(d) < 4 {
			return ErrExtObjectLength
		}
		ii.HasIfIndex, ii.IfIndex, d = true, binary.BigEndian.Uint32(d), d[4:]
	}
	if ctype&0x04 != 0 {
		if len(d) < 4 {
			return ErrExtObjectLength
		}
		switch binary.BigEndian.Uint16(d) { // AFI
		case 1:
			if len(d) < 8 {
				return ErrExtObjectLength
			}
			ii.Addr, d = netip.AddrFrom4([4]byte(d[4:8])), d[8:]
		case 2:
			if len(d) < 20 {
				return ErrExtObjectLength
			}
			ii.Addr, d = netip.AddrFrom16([16]byte(d[4:20])), d[20:]
		default:
			return ErrExtObjectLength
		}
	}
	if ctype&0x02 != 0 {
		if len(d) < 1 {
			return ErrExtObjectLength
		}
		nl := int(d[0]) // includes the length octet; multiple of 4, <= 64
		if nl < 1 || nl > len(d) || nl > maxIfNameLength+1 {
			return ErrExtObjectLength
		}
		name := d[1:nl]
		for len(name) > 0 && name[len(name)-1] == 0 { // strip padding
			name = name[:len(name)-1]
		}
		ii.nameLen = uint8(copy(ii.name[:], name))
		d = d[nl:]
	}
	if ctype&0x01 != 0 {
		if len(d) < 4 {
			return ErrExtObjectLength
		}
		ii.HasMTU, ii.MTU = true, binary.BigEndian.Uint32(d)
	}
	return nil
}
