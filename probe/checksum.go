package probe

import (
	"encoding/binary"
	"net/netip"
)

// Internet checksum (RFC 1071) helpers. Sums are kept unfolded in a uint64
// accumulator and folded to 16 bits at the end.

// sum adds the bytes of b, as big-endian 16-bit words (an odd last byte is
// padded with a zero byte), to acc.
func sum(acc uint64, b []byte) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold folds a sum to 16 bits with end-around carry (ones' complement sum).
func fold(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// Checksum returns the RFC 1071 Internet checksum of b (the ones' complement
// of the ones' complement sum).
func Checksum(b []byte) uint16 { return ^fold(sum(0, b)) }

// onesAdd is 16-bit ones' complement addition.
func onesAdd(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s&0xffff + s>>16)
}

// pseudoSum is the sum of the TCP/UDP/ICMPv6 pseudo-header for src, dst,
// upper-layer length and protocol (RFC 768/793 for IPv4, RFC 8200 §8.1 for IPv6).
func pseudoSum(src, dst netip.Addr, proto uint8, length int) uint64 {
	var acc uint64
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = sum(acc, s[:])
		acc = sum(acc, d[:])
	} else {
		s, d := src.As16(), dst.As16()
		acc = sum(acc, s[:])
		acc = sum(acc, d[:])
	}
	return acc + uint64(proto) + uint64(length)
}
