package probe

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// refSum is an independent, byte-at-a-time ones' complement sum of the
// concatenation of parts (odd total length padded with a zero byte).
func refSum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		w := uint32(all[i]) << 8
		if i+1 < len(all) {
			w |= uint32(all[i+1])
		}
		s += w
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refPseudo builds the pseudo-header bytes for src, dst, proto and length.
func refPseudo(src, dst netip.Addr, proto uint8, n int) []byte {
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		b := append(append([]byte{}, s[:]...), d[:]...)
		return append(b, 0, proto, byte(n>>8), byte(n))
	}
	s, d := src.As16(), dst.As16()
	b := append(append([]byte{}, s[:]...), d[:]...)
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto)
}

var (
	src4 = netip.MustParseAddr("192.0.2.10")
	dst4 = netip.MustParseAddr("198.51.100.7")
	src6 = netip.MustParseAddr("2001:db8::10")
	dst6 = netip.MustParseAddr("2001:db8:ffff::7")
)

const (
	testNonce = 0xa1b2c3d4
	testTag   = FlowTag(0x00000107)
)

func udpFlow(fam Family) Flow {
	if fam == IPv4 {
		return Flow{Src: src4, Dst: dst4, Proto: ProtoUDP, SPort: 50000, DPort: 3478}
	}
	return Flow{Src: src6, Dst: dst6, Proto: ProtoUDP, SPort: 50000, DPort: 3478}
}

func withProto(f Flow, p Proto, sport, dport uint16) Flow {
	f.Proto, f.SPort, f.DPort = p, sport, dport
	return f
}

func mustPayload(t testing.TB, spec string) Payload {
	t.Helper()
	p, err := ParsePayload(spec)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustID(t testing.TB, ttl, attempt uint8) ID {
	t.Helper()
	id, err := MakeID(ttl, attempt)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// checkIPHeader decodes the IP header with x/net and checks every field.
// It returns the transport segment.
func checkIPHeader(t *testing.T, pkt []byte, f Flow, id ID, ttl uint8, wire uint8, b *Builder) []byte {
	t.Helper()
	if f.Family() == IPv4 {
		h, err := ipv4.ParseHeader(pkt)
		if err != nil {
			t.Fatalf("ipv4.ParseHeader: %v", err)
		}
		wantFlags := ipv4.HeaderFlags(0)
		if b.DontFragment {
			wantFlags = ipv4.DontFragment
		}
		if h.Version != 4 || h.Len != 20 || h.TOS != int(b.TOS) || h.TotalLen != len(pkt) || h.ID != int(id) ||
			h.Flags != wantFlags || h.FragOff != 0 || h.TTL != int(ttl) || h.Protocol != int(wire) ||
			!h.Src.Equal(f.Src.AsSlice()) || !h.Dst.Equal(f.Dst.AsSlice()) || len(h.Options) != 0 {
			t.Fatalf("IPv4 header %+v", h)
		}
		if refSum(pkt[:20]) != 0xffff {
			t.Fatalf("IPv4 header checksum %#x wrong", h.Checksum)
		}
		return pkt[20:]
	}
	h, err := ipv6.ParseHeader(pkt)
	if err != nil {
		t.Fatalf("ipv6.ParseHeader: %v", err)
	}
	if h.Version != 6 || h.TrafficClass != int(b.TOS) || h.FlowLabel != int(f.Label()) || h.FlowLabel == 0 ||
		h.PayloadLen != len(pkt)-40 || h.NextHeader != int(wire) || h.HopLimit != int(ttl) ||
		!h.Src.Equal(f.Src.AsSlice()) || !h.Dst.Equal(f.Dst.AsSlice()) {
		t.Fatalf("IPv6 header %+v", h)
	}
	return pkt[40:]
}

func TestBuildUDP(t *testing.T) {
	specs := []string{"stun", "turn", "ms-turn", "none", "hex:01", "hex:0102", "hex:010203", "hex:0102030405", "hex:ffffffffffffffff"}
	ids := []ID{0x0001, 0x0002, 0x00ff, 0x0101, 0x1e05, 0xfe01, 0xfeff, 0x8080, 0x7f7f}
	for _, fam := range []Family{IPv4, IPv6} {
		for _, spec := range specs {
			p := mustPayload(t, spec)
			f := udpFlow(fam)
			var b Builder
			for _, id := range ids {
				ttl := id.TTL()
				pkt, err := b.Build(nil, f, id, ttl, testTag, testNonce, p)
				if err != nil {
					t.Fatalf("%d %s %v: %v", fam, spec, id, err)
				}
				if len(pkt) != PacketLen(f, p) {
					t.Fatalf("len %d, PacketLen %d", len(pkt), PacketLen(f, p))
				}
				seg := checkIPHeader(t, pkt, f, id, ttl, 17, &b)
				if got := binary.BigEndian.Uint16(seg[0:]); got != f.SPort {
					t.Fatalf("sport %d", got)
				}
				if got := binary.BigEndian.Uint16(seg[2:]); got != f.DPort {
					t.Fatalf("dport %d", got)
				}
				if got := int(binary.BigEndian.Uint16(seg[4:])); got != len(seg) || got != 8+p.Len() {
					t.Fatalf("udp length %d, seg %d", got, len(seg))
				}
				if got := binary.BigEndian.Uint16(seg[6:]); got != uint16(id) {
					t.Fatalf("%d %s: udp checksum %#x, want id %#x", fam, spec, got, id)
				}
				if s := refSum(refPseudo(f.Src, f.Dst, 17, len(seg)), seg); s != 0xffff {
					t.Fatalf("%d %s id %#x: UDP checksum does not verify (sum %#x)", fam, spec, id, s)
				}
				pl := seg[8:]
				if p.IsSTUN() {
					checkSTUNProbe(t, pl, p, id)
				} else {
					if !bytes.Equal(pl[:len(p.UserBytes())], p.UserBytes()) {
						t.Fatalf("user bytes %x", pl)
					}
				}
			}
		}
	}
}

// TestBuildUDPAllIDs checks the checksum steering for every valid id, on
// both families and both steering alignments.
func TestBuildUDPAllIDs(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		for _, spec := range []string{"stun", "hex:abcdef"} {
			p := mustPayload(t, spec)
			f := udpFlow(fam)
			var b Builder
			buf := make([]byte, 0, 256)
			for ttl := 1; ttl <= 255; ttl++ {
				for a := 0; a <= 254; a++ {
					id := ID(ttl | a<<8)
					pkt, err := b.Build(buf, f, id, 64, testTag, testNonce, p)
					if err != nil {
						t.Fatal(err)
					}
					seg := pkt[HeaderLen(fam):]
					if binary.BigEndian.Uint16(seg[6:]) != uint16(id) || refSum(refPseudo(f.Src, f.Dst, 17, len(seg)), seg) != 0xffff {
						t.Fatalf("%d %s id %#x: checksum steering failed", fam, spec, id)
					}
				}
			}
		}
	}
}

// checkSTUNProbe decodes a STUN probe payload with pion/stun.
func checkSTUNProbe(t *testing.T, pl []byte, p Payload, id ID) {
	t.Helper()
	if !stun.IsMessage(pl) {
		t.Fatal("not a STUN message")
	}
	m := &stun.Message{Raw: append([]byte(nil), pl...)}
	if err := m.Decode(); err != nil {
		t.Fatalf("pion decode: %v", err)
	}
	if m.Type.Class != stun.ClassRequest {
		t.Fatalf("class %v", m.Type.Class)
	}
	if int(m.Length)+20 != len(pl) {
		t.Fatalf("STUN length %d for %d bytes", m.Length, len(pl))
	}
	n, tag, gotID, _ := SplitTransactionID(m.TransactionID[:])
	if n != testNonce || tag != testTag || gotID != id {
		t.Fatalf("tid %x", m.TransactionID)
	}
	if m.Contains(stun.AttrFingerprint) || m.Contains(stun.AttrMessageIntegrity) {
		t.Fatal("FINGERPRINT/MESSAGE-INTEGRITY present")
	}
	switch p.Kind() {
	case PayloadSTUN:
		if m.Type != stun.BindingRequest || len(m.Attributes) != 0 {
			t.Fatalf("binding %v %v", m.Type, m.Attributes)
		}
	case PayloadTURN:
		if m.Type.Method != stun.MethodAllocate || len(m.Attributes) != 1 {
			t.Fatalf("allocate %v %v", m.Type, m.Attributes)
		}
		v, err := m.Get(stun.AttrRequestedTransport)
		if err != nil || !bytes.Equal(v, []byte{17, 0, 0, 0}) {
			t.Fatalf("REQUESTED-TRANSPORT %x %v", v, err)
		}
	case PayloadMSTURN:
		if !bytes.Equal(pl[:8], msTURNSeed[:8]) || !bytes.Equal(pl[20:], msTURNSeed[20:]) {
			t.Fatal("ms-turn differs from the seed outside the transaction id")
		}
	}
}

func TestBuildICMP(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		for _, spec := range []string{"none", "stun", "hex:0102030405"} {
			for _, base := range []uint16{1, 2, 0x00ff, 0x0100, 33434, 0x8000, 0xfeff, 0xfffe} {
				p := mustPayload(t, spec)
				f := withProto(udpFlow(fam), ProtoICMP, base, 0)
				var b Builder
				want, err := ICMPChecksum(f, testTag, testNonce, p)
				if err != nil {
					t.Fatal(err)
				}
				wire := ProtoICMP.Wire(fam)
				for ttl := 1; ttl <= 255; ttl += 7 {
					for a := 0; a <= 254; a += 23 {
						id := ID(ttl | a<<8)
						pkt, err := b.Build(nil, f, id, uint8(ttl), testTag, testNonce, p)
						if err != nil {
							t.Fatal(err)
						}
						seg := checkIPHeader(t, pkt, f, id, uint8(ttl), wire, &b)
						if len(seg) != 16+len(p.UserBytes()) {
							t.Fatalf("icmp length %d", len(seg))
						}
						// Independent checksum verification.
						var s uint16
						if fam == IPv4 {
							s = refSum(seg)
						} else {
							s = refSum(refPseudo(f.Src, f.Dst, 58, len(seg)), seg)
						}
						if s != 0xffff {
							t.Fatalf("ICMP checksum does not verify")
						}
						if ck := binary.BigEndian.Uint16(seg[2:]); ck != want {
							t.Fatalf("%d base %d id %#x: checksum %#x, flow constant %#x", fam, base, id, ck, want)
						}
						// Decode with x/net/icmp.
						proto := 1
						if fam == IPv6 {
							proto = 58
						}
						m, err := icmp.ParseMessage(proto, seg)
						if err != nil {
							t.Fatal(err)
						}
						if (fam == IPv4 && m.Type != ipv4.ICMPTypeEcho) || (fam == IPv6 && m.Type != ipv6.ICMPTypeEchoRequest) || m.Code != 0 {
							t.Fatalf("type %v code %d", m.Type, m.Code)
						}
						e := m.Body.(*icmp.Echo)
						if e.Seq != int(id) {
							t.Fatalf("seq %d", e.Seq)
						}
						if ICMPBase(uint16(e.ID), uint16(e.Seq)) != base {
							t.Fatalf("ident %#x + seq %#x does not fold to base %#x", e.ID, e.Seq, base)
						}
						wantData := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, testNonce), uint32(testTag))
						wantData = append(wantData, p.UserBytes()...)
						if !bytes.Equal(e.Data, wantData) {
							t.Fatalf("data %x", e.Data)
						}
					}
				}
			}
		}
	}
}

// TestICMPIdentifierAll checks the identifier rule exhaustively for all
// bases and ids, the way the BPF side computes it.
func TestICMPIdentifierAll(t *testing.T) {
	for base := 1; base <= 0xfffe; base += 13 {
		for id := 1; id <= 0xfffe; id++ {
			ident := icmpIdentifier(uint16(base), ID(id))
			s := uint32(ident) + uint32(id) // BPF: s = ident + seq; if (s > 0xffff) s -= 0xffff;
			if s > 0xffff {
				s -= 0xffff
			}
			if s != uint32(base) {
				t.Fatalf("base %#x id %#x ident %#x -> %#x", base, id, ident, s)
			}
		}
	}
}

func TestBuildTCP(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		f := withProto(udpFlow(fam), ProtoTCP, 40001, 443)
		b := Builder{DontFragment: true, TOS: 0x10}
		for _, id := range []ID{1, 0x0203, 0xfeff} {
			pkt, err := b.Build(nil, f, id, id.TTL(), testTag, testNonce, mustPayload(t, "stun"))
			if err != nil {
				t.Fatal(err)
			}
			seg := checkIPHeader(t, pkt, f, id, id.TTL(), 6, &b)
			if len(seg) != 24 {
				t.Fatalf("tcp len %d", len(seg))
			}
			mss := uint16(1460)
			if fam == IPv6 {
				mss = 1440
			}
			if binary.BigEndian.Uint16(seg) != 40001 || binary.BigEndian.Uint16(seg[2:]) != 443 ||
				binary.BigEndian.Uint32(seg[4:]) != uint32(id)<<16 || binary.BigEndian.Uint32(seg[8:]) != 0 ||
				seg[12] != 6<<4 || seg[13] != tcpFlagSYN || binary.BigEndian.Uint16(seg[14:]) != 64240 ||
				binary.BigEndian.Uint16(seg[18:]) != 0 || seg[20] != 2 || seg[21] != 4 || binary.BigEndian.Uint16(seg[22:]) != mss {
				t.Fatalf("tcp header %x", seg)
			}
			if refSum(refPseudo(f.Src, f.Dst, 6, len(seg)), seg) != 0xffff {
				t.Fatal("TCP checksum does not verify")
			}
		}
	}
}

func TestBuildErrors(t *testing.T) {
	var b Builder
	f := udpFlow(IPv4)
	p := mustPayload(t, "stun")
	if _, err := b.Build(nil, f, 0, 1, 0, 0, p); err != ErrInvalidID {
		t.Errorf("id 0: %v", err)
	}
	if _, err := b.Build(nil, f, 0xffff, 1, 0, 0, p); err != ErrInvalidID {
		t.Errorf("id 0xffff: %v", err)
	}
	if _, err := b.Build(nil, f, 1, 0, 0, 0, p); err != ErrZeroHop {
		t.Errorf("ttl 0: %v", err)
	}
	g := f
	g.DPort = 0
	if _, err := b.Build(nil, g, 1, 1, 0, 0, p); err != ErrNoDstPort {
		t.Errorf("dport 0: %v", err)
	}
	big := mustPayload(t, "hex:"+string(bytes.Repeat([]byte("00"), MaxHexPayload)))
	if _, err := b.Build(nil, f, 1, 1, 0, 0, big); err != nil {
		t.Errorf("max hex payload on IPv4: %v", err)
	}
	if _, err := b.Build(nil, withProto(f, ProtoICMP, 9, 0), 1, 1, 0, 0, big); err != ErrTooBig {
		t.Errorf("ICMP with max payload: %v", err)
	}
	if _, err := ICMPChecksum(f, 0, 0, p); err == nil {
		t.Error("ICMPChecksum of UDP flow")
	}
}

func TestBuildReusesBuffer(t *testing.T) {
	var b Builder
	f := udpFlow(IPv6)
	p := mustPayload(t, "turn")
	buf := make([]byte, 0, 1500)
	pkt, _ := b.Build(buf, f, 1, 1, 0, 0, p)
	if &pkt[0] != &buf[:1][0] {
		t.Fatal("Build did not use dst's storage")
	}
	a1, _ := b.Build(nil, f, 1, 1, 0, 0, p)
	a2, _ := b.Build(nil, f, 2, 2, 0, 0, p)
	if &a1[0] != &a2[0] {
		t.Fatal("Build(nil) did not reuse the internal buffer")
	}
	for _, proto := range []Proto{ProtoUDP, ProtoICMP, ProtoTCP} {
		ff := withProto(udpFlow(IPv4), proto, 40000, 3478)
		if proto == ProtoICMP {
			ff.DPort = 0
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := b.Build(buf, ff, 0x0203, 3, testTag, testNonce, p); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: Build allocates %.1f times", proto, allocs)
		}
	}
}

func TestPacketLen(t *testing.T) {
	tests := []struct {
		fam   Family
		proto Proto
		spec  string
		want  int
	}{
		{IPv4, ProtoUDP, "stun", 48},
		{IPv4, ProtoUDP, "turn", 56},
		{IPv4, ProtoUDP, "ms-turn", 132},
		{IPv4, ProtoUDP, "none", 30},
		{IPv4, ProtoUDP, "hex:010203", 33},
		{IPv6, ProtoUDP, "stun", 68},
		{IPv6, ProtoUDP, "ms-turn", 152},
		{IPv4, ProtoICMP, "stun", 36},
		{IPv4, ProtoICMP, "hex:0102", 38},
		{IPv6, ProtoICMP, "none", 56},
		{IPv4, ProtoTCP, "stun", 44},
		{IPv6, ProtoTCP, "stun", 64},
	}
	for _, tt := range tests {
		f := withProto(udpFlow(tt.fam), tt.proto, 1000, 3478)
		if got := PacketLen(f, mustPayload(t, tt.spec)); got != tt.want {
			t.Errorf("PacketLen(%d %v %s) = %d, want %d", tt.fam, tt.proto, tt.spec, got, tt.want)
		}
	}
}

func benchBuild(b *testing.B, f Flow, spec string) {
	p := mustPayload(b, spec)
	var bl Builder
	buf := make([]byte, 0, 1500)
	ids := [...]ID{0x0101, 0x0102, 0x0203, 0x001e}
	b.ReportAllocs()
	b.SetBytes(int64(PacketLen(f, p)))
	i := 0
	for b.Loop() {
		id := ids[i&3]
		i++
		if _, err := bl.Build(buf, f, id, id.TTL(), testTag, testNonce, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildUDP(b *testing.B) {
	b.Run("v4-stun", func(b *testing.B) { benchBuild(b, udpFlow(IPv4), "stun") })
	b.Run("v6-stun", func(b *testing.B) { benchBuild(b, udpFlow(IPv6), "stun") })
	b.Run("v4-ms-turn", func(b *testing.B) { benchBuild(b, udpFlow(IPv4), "ms-turn") })
}

func BenchmarkBuildICMP(b *testing.B) {
	b.Run("v4", func(b *testing.B) { benchBuild(b, withProto(udpFlow(IPv4), ProtoICMP, 33434, 0), "none") })
	b.Run("v6", func(b *testing.B) { benchBuild(b, withProto(udpFlow(IPv6), ProtoICMP, 33434, 0), "none") })
}

func BenchmarkBuildTCP(b *testing.B) {
	b.Run("v4", func(b *testing.B) { benchBuild(b, withProto(udpFlow(IPv4), ProtoTCP, 40001, 443), "none") })
}
