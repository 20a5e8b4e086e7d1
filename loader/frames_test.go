package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/turnpath/turnpath/probe"
)

// Frame builders for the tests: plain encoding/binary, checksums computed
// where they matter (ICMP echo), arbitrary where BPF does not look. Probes
// whose encoding is part of the Go <-> kernel contract (ICMP echo; the
// builder tests) are made by the real builder, probe.Builder.

var (
	macA = []byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = []byte{0x02, 0, 0, 0, 0, 0x0b}
)

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
)

func eth(ethertype uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], macB)
	copy(b[6:12], macA)
	binary.BigEndian.PutUint16(b[12:], ethertype)
	return append(b, payload...)
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

type ip4opts struct {
	id       uint16
	ttl      uint8
	tos      uint8
	fragOff  uint16 // flags + offset, host order (0x2000 = MF, 0x4000 = DF)
	options  []byte // multiple of 4
	totalLen int    // override tot_len (0: computed)
}

func ipv4(src, dst netip.Addr, proto uint8, o ip4opts, payload []byte) []byte {
	hl := 20 + len(o.options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = o.tos
	tl := hl + len(payload)
	if o.totalLen != 0 {
		tl = o.totalLen
	}
	binary.BigEndian.PutUint16(b[2:], uint16(tl))
	binary.BigEndian.PutUint16(b[4:], o.id)
	binary.BigEndian.PutUint16(b[6:], o.fragOff)
	ttl := o.ttl
	if ttl == 0 {
		ttl = 64
	}
	b[8] = ttl
	b[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	copy(b[20:], o.options)
	binary.BigEndian.PutUint16(b[10:], checksum(b, 0))
	return append(b, payload...)
}

func ipv6(src, dst netip.Addr, nh uint8, hlim uint8, flow uint32, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	binary.BigEndian.PutUint32(b[0:], 6<<28|flow&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nh
	b[7] = hlim
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	return append(b, payload...)
}

// udp builds a UDP header + payload with the given checksum field value.
func udp(sport, dport, csum uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(b[6:], csum)
	return append(b, payload...)
}

// tcp builds a 20-byte TCP header.
func tcp(sport, dport uint16, seq, ack uint32, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	return b
}

// icmp builds an ICMPv4 message with a correct checksum.
func icmp(typ, code uint8, rest [4]byte, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	copy(b[4:8], rest[:])
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], checksum(b, 0))
	return b
}

// icmp6 builds an ICMPv6 message with a correct checksum (pseudo header).
func icmp6(src, dst netip.Addr, typ, code uint8, rest [4]byte, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	copy(b[4:8], rest[:])
	b = append(b, body...)
	var ph []byte
	s, d := src.As16(), dst.As16()
	ph = append(ph, s[:]...)
	ph = append(ph, d[:]...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(b)))
	ph = append(ph, 0, 0, 0, 58)
	var sum uint32
	for i := 0; i < len(ph); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ph[i:]))
	}
	binary.BigEndian.PutUint16(b[2:], checksum(b, sum))
	return b
}

// buildProbe builds the IP packet of probe id of flow f exactly as turnpath
// sends it (probe.Builder.Build). payload is a probe.ParsePayload spec.
func buildProbe(t testing.TB, f probe.Flow, id uint16, ttl uint8, tag probe.FlowTag, nonce uint32, payload string) []byte {
	t.Helper()
	p, err := probe.ParsePayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	var b probe.Builder
	pkt, err := b.Build(make([]byte, 0, 128), f, probe.ID(id), ttl, tag, nonce, p)
	if err != nil {
		t.Fatalf("build %v id %#04x: %v", f, id, err)
	}
	return pkt
}

// icmpFlow is an ICMP echo flow with base F from local4/local6 to dst.
func icmpFlow(dst netip.Addr, base uint16) probe.Flow {
	src := local4
	if dst.Is6() {
		src = local6
	}
	return probe.Flow{Src: src, Dst: dst, Proto: probe.ProtoICMP, SPort: base}
}

// echoIdent is the identifier DESIGN.md prescribes for base F and probe id:
// F - id if F >= id, else F - id - 1 (mod 2^16), so that ident +' id == F.
func echoIdent(base, id uint16) uint16 {
	if base >= id {
		return base - id
	}
	return base - id - 1
}

// l4Of returns the transport part of an IP packet made by ipv4/ipv6 or
// probe.Builder (no IPv6 extension headers).
func l4Of(pkt []byte) []byte {
	if pkt[0]>>4 == 6 {
		return pkt[40:]
	}
	return pkt[int(pkt[0]&0xf)*4:]
}

// echoReplyOf is the echo reply a target sends for an echo request IP packet:
// addresses swapped, type 0 / 129, identifier, sequence and data echoed,
// checksum recomputed.
func echoReplyOf(req []byte, ttl uint8) []byte {
	l4 := l4Of(req)
	rest := [4]byte(l4[4:8])
	if req[0]>>4 == 6 {
		src := netip.AddrFrom16([16]byte(req[8:24]))
		dst := netip.AddrFrom16([16]byte(req[24:40]))
		return ipv6(dst, src, 58, ttl, 0, icmp6(dst, src, 129, 0, rest, l4[8:]))
	}
	src := netip.AddrFrom4([4]byte(req[12:16]))
	dst := netip.AddrFrom4([4]byte(req[16:20]))
	return ipv4(dst, src, 1, ip4opts{ttl: ttl}, icmp(0, 0, rest, l4[8:]))
}

func echoRest(id, seq uint16) [4]byte {
	var r [4]byte
	binary.BigEndian.PutUint16(r[0:], id)
	binary.BigEndian.PutUint16(r[2:], seq)
	return r
}

// stunAnswer builds a STUN message with turnpath's transaction id layout.
func stunAnswer(typ uint16, nonce, flowtag uint32, id uint16, attrs []byte) []byte {
	b := make([]byte, 20, 20+len(attrs))
	binary.BigEndian.PutUint16(b[0:], typ)
	binary.BigEndian.PutUint16(b[2:], uint16(len(attrs)))
	binary.BigEndian.PutUint32(b[4:], 0x2112A442)
	binary.BigEndian.PutUint32(b[8:], nonce)
	binary.BigEndian.PutUint32(b[12:], flowtag)
	binary.BigEndian.PutUint16(b[16:], id)
	b[18], b[19] = 0xab, 0xcd // steering bytes
	return append(b, attrs...)
}

// mplsExtension builds an RFC 4884 extension structure holding one RFC 4950
// MPLS label stack object with the given label stack entries.
func mplsExtension(labels ...uint32) []byte {
	obj := make([]byte, 4, 4+4*len(labels))
	binary.BigEndian.PutUint16(obj[0:], uint16(4+4*len(labels)))
	obj[2], obj[3] = 1, 1 // class 1 (MPLS label stack), c-type 1 (incoming)
	for i, l := range labels {
		e := l<<12 | 1 // label, TC 0, TTL 1
		if i == len(labels)-1 {
			e |= 1 << 8 // bottom of stack
		}
		obj = binary.BigEndian.AppendUint32(obj, e)
	}
	ext := []byte{0x20, 0, 0, 0} // version 2
	ext = append(ext, obj...)
	binary.BigEndian.PutUint16(ext[2:], checksum(ext, 0))
	return ext
}

func pad(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	return append(b, make([]byte, n-len(b))...)
}

// stunAttr builds one STUN attribute (type, length, value, zero padding to 4).
func stunAttr(typ uint16, val []byte) []byte {
	b := make([]byte, 4, 4+len(val)+3)
	binary.BigEndian.PutUint16(b[0:], typ)
	binary.BigEndian.PutUint16(b[2:], uint16(len(val)))
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// xorMapped4 is an IPv4 XOR-MAPPED-ADDRESS attribute (RFC 5389 §15.2).
func xorMapped4(ap netip.AddrPort) []byte {
	v := make([]byte, 8)
	v[1] = 0x01 // family IPv4
	binary.BigEndian.PutUint16(v[2:], ap.Port()^0x2112)
	a := ap.Addr().As4()
	binary.BigEndian.PutUint32(v[4:], binary.BigEndian.Uint32(a[:])^0x2112A442)
	return stunAttr(0x0020, v)
}

// errorCode is an ERROR-CODE attribute (RFC 5389 §15.6).
func errorCode(code int, reason string) []byte {
	v := []byte{0, 0, byte(code / 100), byte(code % 100)}
	return stunAttr(0x0009, append(v, reason...))
}
