package probe

import (
	"net/netip"
	"testing"
)

func TestProtoWire(t *testing.T) {
	if ProtoICMP.Wire(IPv4) != 1 || ProtoICMP.Wire(IPv6) != 58 || ProtoUDP.Wire(IPv6) != 17 || ProtoTCP.Wire(IPv4) != 6 {
		t.Fatal("Wire mapping wrong")
	}
	for _, fam := range []Family{IPv4, IPv6} {
		for _, p := range []Proto{ProtoICMP, ProtoUDP, ProtoTCP} {
			got, ok := ProtoFromWire(fam, p.Wire(fam))
			if !ok || got != p {
				t.Errorf("ProtoFromWire(%d, %d) = %v, %v", fam, p.Wire(fam), got, ok)
			}
		}
	}
	if _, ok := ProtoFromWire(IPv4, 58); ok {
		t.Error("58 on IPv4 accepted")
	}
	if _, ok := ProtoFromWire(IPv6, 1); ok {
		t.Error("1 on IPv6 accepted")
	}
}

func TestFlowFamilyAndValidate(t *testing.T) {
	v4 := Flow{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.7"), Proto: ProtoUDP, SPort: 50000, DPort: 3478}
	if v4.Family() != IPv4 || v4.Validate() != nil {
		t.Fatalf("v4: %v %v", v4.Family(), v4.Validate())
	}
	mapped := v4
	mapped.Dst = netip.MustParseAddr("::ffff:198.51.100.7")
	if mapped.Family() != IPv4 || mapped.Validate() != nil {
		t.Fatal("IPv4-mapped dst not treated as IPv4")
	}
	v6 := Flow{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:1::9"), Proto: ProtoICMP, SPort: 33000}
	if v6.Family() != IPv6 || v6.Validate() != nil {
		t.Fatalf("v6: %v %v", v6.Family(), v6.Validate())
	}
	bad := []struct {
		f   Flow
		err error
	}{
		{Flow{}, ErrNoAddr},
		{Flow{Src: netip.IPv4Unspecified(), Dst: v4.Dst, Proto: ProtoUDP, SPort: 1, DPort: 1}, ErrNoAddr},
		{Flow{Src: v6.Src, Dst: v4.Dst, Proto: ProtoUDP, SPort: 1, DPort: 1}, ErrFamilyMix},
		{Flow{Src: v4.Src, Dst: v4.Dst, Proto: 47, SPort: 1, DPort: 1}, ErrBadProto},
		{Flow{Src: v4.Src, Dst: v4.Dst, Proto: ProtoUDP, SPort: 1}, ErrNoDstPort},
		{Flow{Src: v4.Src, Dst: v4.Dst, Proto: ProtoICMP, SPort: 0}, ErrBadFlowPort},
		{Flow{Src: v4.Src, Dst: v4.Dst, Proto: ProtoICMP, SPort: 0xffff}, ErrBadFlowPort},
		{Flow{Src: v6.Src, Dst: v6.Dst, Proto: ProtoICMP, SPort: 5, FlowLabel: 1 << 20}, ErrFlowLabelBits},
	}
	for _, b := range bad {
		if err := b.f.Validate(); err != b.err {
			t.Errorf("Validate(%v) = %v, want %v", b.f, err, b.err)
		}
	}
}

func TestStableFlowLabel(t *testing.T) {
	f := Flow{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:1::9"), Proto: ProtoUDP, SPort: 50000, DPort: 3478}
	l := f.StableFlowLabel()
	if l == 0 || l > 0xfffff {
		t.Fatalf("label %#x out of range", l)
	}
	if f.StableFlowLabel() != l || f.Label() != l {
		t.Fatal("label not stable")
	}
	// Golden value: the derivation must not change between releases
	// (labels must be the same in every run).
	if l != 0x2bedd {
		t.Errorf("StableFlowLabel = %#x, golden %#x", l, 0x2bedd)
	}
	g := f
	g.SPort++
	if g.StableFlowLabel() == l {
		t.Error("sport change did not change the label")
	}
	g = f
	g.FlowLabel = 0x12345
	if g.Label() != 0x12345 || g.StableFlowLabel() != l {
		t.Error("explicit label not honoured / affects derivation")
	}
	n := f.Normalize()
	if n.FlowLabel != l {
		t.Error("Normalize did not fill the label")
	}
	seen := map[uint32]int{}
	for sp := uint16(1); sp < 5000; sp++ {
		g := f
		g.SPort = sp
		x := g.StableFlowLabel()
		if x == 0 || x > 0xfffff {
			t.Fatalf("label %#x", x)
		}
		seen[x]++
	}
	if len(seen) < 4950 {
		t.Errorf("only %d distinct labels for 4999 flows", len(seen))
	}
}
