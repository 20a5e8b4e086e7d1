package probe

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

var (
	router4 = netip.MustParseAddr("198.18.0.1")
	router6 = netip.MustParseAddr("fd51:0:0:1::1")
)

// quoteOpts says how a synthetic router quotes the probe.
type quoteOpts struct {
	n        int          // bytes of transport to quote: 0 = all, 8 = RFC 792 minimum
	ttl      uint8        // quoted TTL (default 1)
	mutate   func([]byte) // applied to the quoted datagram (IP header checksum fixed after)
	ext      []byte       // RFC 4884 extension structure
	compat   bool         // extensions without the length field (pre-RFC 4884)
	typ      uint8        // ICMP type (default Time Exceeded)
	code     uint8
	word     uint32 // second 32-bit word (MTU, pointer); RFC 4884 length is or-ed in
	replyTTL uint8
}

// quoteOf returns the original datagram as a router quotes it.
func quoteOf(pkt []byte, o quoteOpts) []byte {
	q := append([]byte(nil), pkt...)
	ttl := o.ttl
	if ttl == 0 {
		ttl = 1
	}
	if q[0]>>4 == 4 {
		q[8] = ttl
	} else {
		q[7] = ttl
	}
	if o.mutate != nil {
		o.mutate(q)
	}
	hl := 40
	if q[0]>>4 == 4 {
		hl = int(q[0]&0xf) * 4
		q[10], q[11] = 0, 0
		binary.BigEndian.PutUint16(q[10:], Checksum(q[:hl]))
	}
	if o.n > 0 && hl+o.n < len(q) {
		q = q[:hl+o.n]
	}
	return q
}

// icmpError builds the ICMP error message (header + quote + extensions).
func icmpError(fam Family, quote []byte, o quoteOpts) []byte {
	typ := o.typ
	if typ == 0 {
		typ = icmp4TimeExceeded
		if fam == IPv6 {
			typ = icmp6TimeExceeded
		}
	}
	m := []byte{typ, o.code, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(m[4:], o.word)
	if len(o.ext) > 0 {
		if len(quote) < 128 {
			quote = append(quote, make([]byte, 128-len(quote))...)
		}
		unit := 4
		if fam == IPv6 {
			unit = 8
		}
		if r := len(quote) % unit; r != 0 {
			quote = append(quote, make([]byte, unit-r)...)
		}
		if o.compat {
			quote = quote[:128]
		} else if fam == IPv4 {
			m[5] = byte(len(quote) / 4)
		} else {
			m[4] = byte(len(quote) / 8)
		}
	}
	m = append(m, quote...)
	m = append(m, o.ext...)
	return m
}

// synthV4 wraps an ICMPv4 message in the IPv4 header a router at `from`
// sends to `to` (with checksums).
func synthV4(from, to netip.Addr, ttl uint8, icmpMsg []byte) []byte {
	binary.BigEndian.PutUint16(icmpMsg[2:], 0)
	binary.BigEndian.PutUint16(icmpMsg[2:], Checksum(icmpMsg))
	h := make([]byte, 20, 20+len(icmpMsg))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(icmpMsg)))
	binary.BigEndian.PutUint16(h[4:], 0x4242)
	h[8], h[9] = ttl, 1
	f, t := from.As4(), to.As4()
	copy(h[12:], f[:])
	copy(h[16:], t[:])
	binary.BigEndian.PutUint16(h[10:], Checksum(h))
	return append(h, icmpMsg...)
}

// finishV6 computes the ICMPv6 checksum of m sent from → to.
func finishV6(from, to netip.Addr, m []byte) []byte {
	binary.BigEndian.PutUint16(m[2:], 0)
	binary.BigEndian.PutUint16(m[2:], ^fold(sum(pseudoSum(from, to, 58, len(m)), m)))
	return m
}

// routerReply builds what a Linux router at `router` sends for probe pkt:
// the full IPv4 packet, or the ICMPv6 message (raw sockets give no header).
func routerReply(t testing.TB, pkt []byte, router netip.Addr, o quoteOpts) []byte {
	t.Helper()
	q := quoteOf(pkt, o)
	if pkt[0]>>4 == 4 {
		ttl := o.replyTTL
		if ttl == 0 {
			ttl = 62
		}
		return synthV4(router, netip.AddrFrom4([4]byte(pkt[12:16])), ttl, icmpError(IPv4, q, o))
	}
	return finishV6(router, netip.AddrFrom16([16]byte(pkt[8:24])), icmpError(IPv6, q, o))
}

func parseRouterReply(t testing.TB, fam Family, router netip.Addr, b []byte) (Reply, error) {
	t.Helper()
	if fam == IPv4 {
		return ParseICMPv4(b)
	}
	return ParseICMPv6(router, 61, b)
}

// sentProbe builds a probe and registers it in m.
func sentProbe(t testing.TB, m *Matcher, f Flow, id ID, spec string, sentNS int64) []byte {
	t.Helper()
	var b Builder
	pkt, err := b.Build(make([]byte, 0, 256), f, id, id.TTL(), testTag, testNonce, mustPayload(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ProbeFromPacket(pkt, testTag, sentNS)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Add(p); err != nil {
		t.Fatal(err)
	}
	return pkt
}

func flowFor(fam Family, proto Proto) Flow {
	switch proto {
	case ProtoICMP:
		return withProto(udpFlow(fam), ProtoICMP, 33434, 0)
	case ProtoTCP:
		return withProto(udpFlow(fam), ProtoTCP, 40001, 443)
	}
	return udpFlow(fam)
}

func routerFor(fam Family) netip.Addr {
	if fam == IPv4 {
		return router4
	}
	return router6
}

func TestRoundTripTimeExceeded(t *testing.T) {
	type tc struct {
		proto Proto
		spec  string
	}
	cases := []tc{{ProtoUDP, "stun"}, {ProtoUDP, "turn"}, {ProtoUDP, "ms-turn"}, {ProtoUDP, "none"}, {ProtoUDP, "hex:abcdef"},
		{ProtoICMP, "none"}, {ProtoICMP, "hex:0102"}, {ProtoTCP, "none"}}
	for _, fam := range []Family{IPv4, IPv6} {
		for _, c := range cases {
			for _, n := range []int{0, 8} {
				m := NewMatcher(testNonce, time.Second)
				f := flowFor(fam, c.proto)
				id := mustID(t, 5, 2)
				pkt := sentProbe(t, m, f, id, c.spec, 1000)
				// A second flow and other ids must not be confused with it.
				g := f
				g.SPort++
				sentProbe(t, m, g, id, c.spec, 1000)
				sentProbe(t, m, f, mustID(t, 6, 2), c.spec, 1000)

				raw := routerReply(t, pkt, routerFor(fam), quoteOpts{n: n})
				r, err := parseRouterReply(t, fam, routerFor(fam), raw)
				if err != nil {
					t.Fatalf("%d %v %s n=%d: parse: %v", fam, c.proto, c.spec, n, err)
				}
				if r.Kind != KindTimeExceeded || r.Responder != routerFor(fam) || !r.HasQuote || r.QuotedTTL != 1 || r.ID != id {
					t.Fatalf("reply %+v", r)
				}
				if r.BadChecksum {
					t.Fatal("bad checksum on a good reply")
				}
				if int(r.QuotedLen) != len(pkt) {
					t.Fatalf("quoted len %d, sent %d", r.QuotedLen, len(pkt))
				}
				wantTag := n == 0 && (c.proto == ProtoICMP || (c.proto == ProtoUDP && c.spec != "none" && c.spec[:3] != "hex"))
				if r.HasTag != wantTag || (wantTag && (r.Tag != testTag || r.Nonce != testNonce)) {
					t.Fatalf("HasTag %v tag %#x nonce %#x, want %v", r.HasTag, r.Tag, r.Nonce, wantTag)
				}
				q := r.Quoted
				q.FlowLabel = 0
				want := f.Normalize()
				want.FlowLabel = 0
				if q != want {
					t.Fatalf("quoted flow %v, want %v", q, want)
				}
				mr, err := m.Match(&r, 1500)
				if err != nil {
					t.Fatalf("%d %v %s n=%d: match: %v", fam, c.proto, c.spec, n, err)
				}
				if mr.Probe.ID != id || mr.Probe.Flow != f.Normalize() || mr.Flags != 0 || mr.RTTNS != 500 || mr.Count != 1 {
					t.Fatalf("match %+v flags %v", mr, mr.Flags)
				}
				mr, err = m.Match(&r, 1600)
				if err != nil || mr.Flags != FlagDuplicate || mr.Count != 2 {
					t.Fatalf("duplicate: %+v %v", mr, err)
				}
			}
		}
	}
}

// A hex: payload that happens to be a STUN message (with someone else's
// transaction id) is not mistaken for turnpath's transaction id.
func TestHexSTUNLookalike(t *testing.T) {
	m := NewMatcher(testNonce, 0)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	id := mustID(t, 2, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), id, "hex:"+hex.EncodeToString(req.Raw), 1)
	r, err := ParseICMPv4(routerReply(t, pkt, router4, quoteOpts{}))
	if err != nil || r.HasTag {
		t.Fatalf("HasTag %v err %v", r.HasTag, err)
	}
	if mr, err := m.Match(&r, 0); err != nil || mr.Flags != 0 {
		t.Fatalf("%v %v", mr.Flags, err)
	}
}

func TestUnreachableAndFriends(t *testing.T) {
	id := mustID(t, 9, 0)
	for code := uint8(0); code <= 15; code++ {
		m := NewMatcher(testNonce, 0)
		pkt := sentProbe(t, m, udpFlow(IPv4), id, "stun", 1)
		o := quoteOpts{typ: icmp4Unreachable, code: code, ttl: 55, n: 8}
		if code == 4 {
			o.word = 1400
		}
		r, err := ParseICMPv4(routerReply(t, pkt, dst4, o))
		want := KindUnreachable
		if code == 4 { // fragmentation needed: one kind with ICMPv6 packet too big
			want = KindPacketTooBig
		}
		if err != nil || r.Kind != want || r.ICMPCode != code || r.QuotedTTL != 55 {
			t.Fatalf("code %d: %+v %v", code, r, err)
		}
		if code == 4 && r.MTU != 1400 {
			t.Fatalf("MTU %d", r.MTU)
		}
		if mr, err := m.Match(&r, 0); err != nil || mr.Flags != 0 {
			t.Fatalf("code %d: match %v %v", code, mr.Flags, err)
		}
	}
	for code := uint8(0); code <= 8; code++ {
		m := NewMatcher(testNonce, 0)
		pkt := sentProbe(t, m, udpFlow(IPv6), id, "turn", 1)
		r, err := ParseICMPv6(dst6, 50, routerReply(t, pkt, dst6, quoteOpts{typ: icmp6Unreachable, code: code}))
		if err != nil || r.Kind != KindUnreachable || r.ICMPCode != code || r.ReplyTTL != 50 {
			t.Fatalf("v6 code %d: %+v %v", code, r, err)
		}
		if _, err := m.Match(&r, 0); err != nil {
			t.Fatal(err)
		}
	}
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv6), id, "stun", 1)
	r, err := ParseICMPv6(router6, -1, routerReply(t, pkt, router6, quoteOpts{typ: icmp6PacketTooBig, word: 1280, ttl: 9}))
	if err != nil || r.Kind != KindPacketTooBig || r.MTU != 1280 || r.ReplyTTL != 0 {
		t.Fatalf("PTB %+v %v", r, err)
	}
	if _, err := m.Match(&r, 0); err != nil {
		t.Fatal(err)
	}
	r, err = ParseICMPv6(router6, 64, routerReply(t, pkt, router6, quoteOpts{typ: icmp6ParamProblem, code: 1, word: 40}))
	if err != nil || r.Kind != KindParamProblem || r.Pointer != 40 {
		t.Fatalf("param problem %+v %v", r, err)
	}
	pkt4 := sentProbe(t, m, udpFlow(IPv4), id, "stun", 1)
	r, err = ParseICMPv4(routerReply(t, pkt4, router4, quoteOpts{typ: icmp4ParamProblem, word: 0x0c000000}))
	if err != nil || r.Kind != KindParamProblem || r.Pointer != 12 {
		t.Fatalf("v4 param problem %+v %v", r, err)
	}
	// Not replies to probes.
	for _, typ := range []uint8{5, 8, 13} {
		if _, err := ParseICMPv4(synthV4(router4, src4, 60, []byte{typ, 0, 0, 0, 0, 0, 0, 0})); err != ErrNotProbeReply {
			t.Errorf("type %d: %v", typ, err)
		}
	}
	for _, typ := range []uint8{128, 133, 135} {
		if _, err := ParseICMPv6(router6, 1, []byte{typ, 0, 0, 0, 0, 0, 0, 0}); err != ErrNotProbeReply {
			t.Errorf("v6 type %d: %v", typ, err)
		}
	}
}

func TestIPv4Options(t *testing.T) {
	id := mustID(t, 2, 0)
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), id, "stun", 1)
	// Quote a probe that grew a Record Route option (IHL 7) on the way.
	withOpts := append(append(append([]byte{}, pkt[:20]...), 7, 7, 4, 0, 0, 0, 0, 1), pkt[20:]...)
	withOpts[0] = 0x47
	binary.BigEndian.PutUint16(withOpts[2:], uint16(len(withOpts)))
	for _, n := range []int{0, 8} {
		q := quoteOf(withOpts, quoteOpts{n: n})
		raw := synthV4(router4, src4, 250, icmpError(IPv4, q, quoteOpts{}))
		// And options in the outer header too (IHL 6).
		raw = append(append(append([]byte{}, raw[:20]...), 1, 1, 1, 0), raw[20:]...)
		raw[0] = 0x46
		binary.BigEndian.PutUint16(raw[2:], uint16(len(raw)))
		r, err := ParseICMPv4(raw)
		if err != nil {
			t.Fatal(err)
		}
		if r.Quoted.SPort != 50000 || r.Quoted.DPort != 3478 || r.ID != id || r.ReplyTTL != 250 {
			t.Fatalf("%+v", r)
		}
		mr, err := m.Match(&r, 0)
		if err != nil || mr.Flags&^(FlagLengthChanged|FlagDuplicate) != 0 || mr.Flags&FlagLengthChanged == 0 {
			t.Fatalf("n=%d: %v %v", n, mr.Flags, err)
		}
	}
	// Ethernet padding after the IP packet is ignored.
	raw := append(routerReply(t, pkt, router4, quoteOpts{n: 8}), 0, 0, 0, 0, 0, 0)
	if r, err := ParseICMPv4(raw); err != nil || r.BadChecksum {
		t.Fatalf("padding: %v %v", err, r.BadChecksum)
	}
}

// ---- extensions ----

func buildExt(objs ...[]byte) []byte {
	b := []byte{0x20, 0, 0, 0}
	for _, o := range objs {
		b = append(b, o...)
	}
	binary.BigEndian.PutUint16(b[2:], Checksum(b))
	return b
}

func extObj(class, ctype uint8, data []byte) []byte {
	o := []byte{0, 0, class, ctype}
	binary.BigEndian.PutUint16(o, uint16(4+len(data)))
	return append(o, data...)
}

func mplsObj(es ...MPLSEntry) []byte {
	var d []byte
	for _, e := range es {
		v := e.Label<<12 | uint32(e.TC)<<9 | uint32(e.TTL)
		if e.S {
			v |= 0x100
		}
		d = binary.BigEndian.AppendUint32(d, v)
	}
	return extObj(1, 1, d)
}

func ifObj(role IfRole, ifIndex uint32, addr netip.Addr, name string, mtu uint32) []byte {
	ctype := uint8(role) << 6
	var d []byte
	if ifIndex != 0 {
		ctype |= 0x08
		d = binary.BigEndian.AppendUint32(d, ifIndex)
	}
	if addr.IsValid() {
		ctype |= 0x04
		afi := uint16(1)
		if addr.Is6() {
			afi = 2
		}
		d = binary.BigEndian.AppendUint16(d, afi)
		d = append(d, 0, 0)
		d = append(d, addr.AsSlice()...)
	}
	if name != "" {
		ctype |= 0x02
		n := 1 + len(name)
		n = (n + 3) &^ 3
		sub := make([]byte, n)
		sub[0] = byte(n)
		copy(sub[1:], name)
		d = append(d, sub...)
	}
	if mtu != 0 {
		ctype |= 0x01
		d = binary.BigEndian.AppendUint32(d, mtu)
	}
	return extObj(2, ctype, d)
}

func testExt() []byte {
	return buildExt(
		mplsObj(MPLSEntry{Label: 16004, TC: 0, S: false, TTL: 1}, MPLSEntry{Label: 299792, TC: 5, S: true, TTL: 1}),
		ifObj(IfRoleIncoming, 7, netip.MustParseAddr("198.18.3.1"), "ge-0/0/1.0", 1500),
		ifObj(IfRoleOutgoing, 0, netip.MustParseAddr("fd51:0:0:3::1"), "", 9000),
		extObj(3, 1, []byte{1, 2, 3, 4}),
	)
}

func checkTestExt(t *testing.T, e *Extensions) {
	t.Helper()
	if e.Version != 2 || e.Checksum == 0 {
		t.Fatalf("ext header %+v", e)
	}
	ls := e.MPLS()
	want := []MPLSEntry{{16004, 0, false, 1}, {299792, 5, true, 1}}
	if len(ls) != 2 || ls[0] != want[0] || ls[1] != want[1] {
		t.Fatalf("MPLS %+v", ls)
	}
	ifs := e.Interfaces()
	if len(ifs) != 2 {
		t.Fatalf("interfaces %+v", ifs)
	}
	a, b := &ifs[0], &ifs[1]
	if a.Role != IfRoleIncoming || !a.HasIfIndex || a.IfIndex != 7 || a.Addr != netip.MustParseAddr("198.18.3.1") ||
		a.Name() != "ge-0/0/1.0" || !a.HasMTU || a.MTU != 1500 {
		t.Fatalf("iface 0 %+v name %q", a, a.Name())
	}
	if b.Role != IfRoleOutgoing || b.HasIfIndex || b.Addr != netip.MustParseAddr("fd51:0:0:3::1") || b.Name() != "" || b.MTU != 9000 {
		t.Fatalf("iface 1 %+v", b)
	}
	if o := e.Objects(); len(o) != 1 || o[0].Class != 3 || !bytes.Equal(o[0].Data, []byte{1, 2, 3, 4}) {
		t.Fatalf("unknown objects %+v", o)
	}
}

func TestExtensions(t *testing.T) {
	ext := testExt()
	e, err := ParseExtensions(ext)
	if err != nil {
		t.Fatal(err)
	}
	checkTestExt(t, &e)

	id := mustID(t, 7, 0)
	for _, fam := range []Family{IPv4, IPv6} {
		for _, compat := range []bool{false, true} {
			for _, n := range []int{0, 8} {
				m := NewMatcher(testNonce, 0)
				pkt := sentProbe(t, m, udpFlow(fam), id, "stun", 1)
				raw := routerReply(t, pkt, routerFor(fam), quoteOpts{n: n, ext: ext, compat: compat})
				r, err := parseRouterReply(t, fam, routerFor(fam), raw)
				if err != nil {
					t.Fatalf("%d compat=%v: %v", fam, compat, err)
				}
				if !bytes.Equal(r.ExtRaw, ext) || r.ExtErr != nil {
					t.Fatalf("%d compat=%v n=%d: ext raw %x err %v", fam, compat, n, r.ExtRaw, r.ExtErr)
				}
				checkTestExt(t, &r.Ext)
				if mr, err := m.Match(&r, 0); err != nil || mr.Flags != 0 {
					t.Fatalf("match %v %v", mr.Flags, err)
				}
			}
		}
	}
	// A bad extension checksum is flagged, the structure decoded anyway and
	// the quote still matches.
	bad := withExtChecksum(ext, 0xbad)
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), id, "stun", 1)
	r, err := ParseICMPv4(routerReply(t, pkt, router4, quoteOpts{ext: bad}))
	if err != nil || r.ExtErr != nil || !r.Ext.ChecksumBad || r.Ext.Checksum != 0xbad {
		t.Fatalf("bad ext checksum: %v %v %+v", err, r.ExtErr, r.Ext)
	}
	if ls := r.Ext.MPLS(); len(ls) != 2 || ls[0].Label != 16004 || r.Ext.NumIfaces != 2 || r.Ext.NumUnknown != 1 {
		t.Fatalf("bad ext checksum: decoded %+v", r.Ext)
	}
	if _, err := m.Match(&r, 0); err != nil {
		t.Fatal(err)
	}
	// No checksum transmitted (0) is fine.
	if e, err := ParseExtensions(withExtChecksum(ext, 0)); err != nil || e.NumMPLS != 2 || e.Checksum != 0 || e.ChecksumBad {
		t.Fatalf("zero checksum: %v %+v", err, e)
	}
}

func TestParseExtensionsErrors(t *testing.T) {
	good := testExt()
	tests := []struct {
		b   []byte
		err error
	}{
		{nil, ErrExtTruncated},
		{[]byte{0x20, 0}, ErrExtTruncated},
		{[]byte{0x10, 0, 0, 0}, ErrExtVersion},
		{good[:len(good)-2], ErrExtTruncated},
		{buildExt([]byte{0, 2, 1, 1}), ErrExtObjectLength},
		{buildExt([]byte{0, 12, 1, 1, 0, 0, 0, 0}), ErrExtTruncated},
		{buildExt(extObj(1, 1, []byte{1, 2, 3})), ErrExtObjectLength},
		{buildExt(extObj(2, 0x08, []byte{1, 2})), ErrExtObjectLength},
		{buildExt(extObj(2, 0x04, []byte{0, 3, 0, 0, 1, 2, 3, 4})), ErrExtObjectLength},
		{buildExt(extObj(2, 0x02, []byte{9, 'a', 'b', 'c'})), ErrExtObjectLength},
		{buildExt([]byte{0, 4, 1}), ErrExtTruncated},
	}
	for i, tt := range tests {
		if _, err := ParseExtensions(tt.b); err != tt.err {
			t.Errorf("%d: %v, want %v", i, err, tt.err)
		}
	}
	// Limits: more entries than the fixed arrays hold are counted, not stored.
	var es []MPLSEntry
	for i := 0; i < MaxMPLSEntries+3; i++ {
		es = append(es, MPLSEntry{Label: uint32(i)})
	}
	objs := [][]byte{mplsObj(es...)}
	for i := 0; i < MaxInterfaces+MaxUnknownExt+2; i++ {
		objs = append(objs, ifObj(IfRoleNextHop, uint32(i+1), netip.Addr{}, "", 0), extObj(9, 9, nil))
	}
	e, err := ParseExtensions(buildExt(objs...))
	if err != nil || e.NumMPLS != MaxMPLSEntries || e.NumIfaces != MaxInterfaces || e.NumUnknown != MaxUnknownExt ||
		e.Dropped != 3+(MaxInterfaces+MaxUnknownExt+2)*2-MaxInterfaces-MaxUnknownExt {
		t.Fatalf("limits: %v %d %d %d dropped %d", err, e.NumMPLS, e.NumIfaces, e.NumUnknown, e.Dropped)
	}
}

// ---- echo replies ----

// echoReply turns an echo request probe into the target's echo reply.
func echoReply(t testing.TB, pkt []byte, from netip.Addr, dataLen int) (v4 []byte, v6 []byte) {
	if pkt[0]>>4 == 4 {
		m := append([]byte(nil), pkt[20:]...)
		m[0] = icmp4EchoReply
		if dataLen >= 0 {
			m = m[:8+dataLen]
		}
		return synthV4(from, netip.AddrFrom4([4]byte(pkt[12:16])), 57, m), nil
	}
	m := append([]byte(nil), pkt[40:]...)
	m[0] = icmp6EchoReply
	if dataLen >= 0 {
		m = m[:8+dataLen]
	}
	return nil, finishV6(from, netip.AddrFrom16([16]byte(pkt[8:24])), m)
}

func TestEchoReply(t *testing.T) {
	id := mustID(t, 12, 1)
	for _, fam := range []Family{IPv4, IPv6} {
		for _, dataLen := range []int{-1, 0} {
			for _, anycast := range []bool{false, true} {
				m := NewMatcher(testNonce, 0)
				f := flowFor(fam, ProtoICMP)
				pkt := sentProbe(t, m, f, id, "hex:0102", 1)
				from := f.Dst
				if anycast {
					from = routerFor(fam)
				}
				v4, v6 := echoReply(t, pkt, from, dataLen)
				var r Reply
				var err error
				if fam == IPv4 {
					r, err = ParseICMPv4(v4)
				} else {
					r, err = ParseICMPv6(from, 57, v6)
				}
				if err != nil || r.Kind != KindEchoReply || r.ID != id || r.Quoted.SPort != f.SPort || r.HasTag != (dataLen != 0) {
					t.Fatalf("%d: %+v %v", fam, r, err)
				}
				mr, err := m.Match(&r, 2)
				switch {
				case anycast && dataLen == 0:
					if err != ErrUnknownProbe {
						t.Fatalf("anycast without data: %v", err)
					}
				case anycast:
					if err != nil || mr.Flags != FlagOtherResponder|FlagViaTag {
						t.Fatalf("anycast: %v %v", mr.Flags, err)
					}
				default:
					if err != nil || mr.Flags != 0 || mr.Probe.ID != id {
						t.Fatalf("echo: %v %v", mr.Flags, err)
					}
				}
			}
		}
	}
	// A reply carrying another run's nonce is stale.
	m := NewMatcher(testNonce+1, 0)
	pkt := sentProbe(t, m, flowFor(IPv4, ProtoICMP), id, "none", 1)
	v4, _ := echoReply(t, pkt, dst4, -1)
	r, _ := ParseICMPv4(v4)
	if _, err := m.Match(&r, 0); err != ErrNonce {
		t.Fatalf("stale echo: %v", err)
	}
}

// ---- TCP ----

func tcpAnswer(from, to netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8) []byte {
	s := make([]byte, 20)
	binary.BigEndian.PutUint16(s, sport)
	binary.BigEndian.PutUint16(s[2:], dport)
	binary.BigEndian.PutUint32(s[4:], seq)
	binary.BigEndian.PutUint32(s[8:], ack)
	s[12], s[13] = 5<<4, flags
	binary.BigEndian.PutUint16(s[16:], ^fold(sum(pseudoSum(from, to, 6, len(s)), s)))
	if from.Is6() {
		return s
	}
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], 40)
	h[8], h[9] = 50, 6
	f, tt := from.As4(), to.As4()
	copy(h[12:], f[:])
	copy(h[16:], tt[:])
	binary.BigEndian.PutUint16(h[10:], Checksum(h))
	return append(h, s...)
}

func TestTCP(t *testing.T) {
	id := mustID(t, 14, 0)
	for _, fam := range []Family{IPv4, IPv6} {
		f := flowFor(fam, ProtoTCP)
		for _, flags := range []uint8{tcpFlagSYN | tcpFlagACK, tcpFlagRST | tcpFlagACK} {
			m := NewMatcher(testNonce, 0)
			sentProbe(t, m, f, id, "none", 1)
			raw := tcpAnswer(f.Dst, f.Src, f.DPort, f.SPort, 0x11223344, uint32(id)<<16+1, flags)
			var r Reply
			var err error
			if fam == IPv4 {
				r, err = ParseTCPv4(raw)
			} else {
				r, err = ParseTCPv6(f.Dst, 50, raw)
			}
			if err != nil || r.Kind != KindTCP || r.ID != id || r.TCPFlags != flags || r.ReplyTTL != 50 {
				t.Fatalf("%+v %v", r, err)
			}
			if mr, err := m.Match(&r, 0); err != nil || mr.Flags != 0 {
				t.Fatalf("match %v %v", mr.Flags, err)
			}
		}
	}
	if _, err := ParseTCPv6(dst6, 1, tcpAnswer(dst6, src6, 443, 40001, 1, uint32(id)<<16+2, tcpFlagSYN|tcpFlagACK)); err != ErrBadID {
		t.Errorf("bad ack: %v", err)
	}
	if _, err := ParseTCPv6(dst6, 1, tcpAnswer(dst6, src6, 443, 40001, 1, uint32(id)<<16+1, tcpFlagSYN)); err != ErrNotProbeReply {
		t.Errorf("SYN without ACK: %v", err)
	}
	if _, err := ParseTCPv4(synthV4(router4, src4, 1, make([]byte, 8))); err != ErrNotTCP {
		t.Errorf("ICMP as TCP: %v", err)
	}
	// Time Exceeded quoting a SYN whose seq a firewall randomised: found by IP ID.
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, flowFor(IPv4, ProtoTCP), id, "none", 1)
	r, err := ParseICMPv4(routerReply(t, pkt, router4, quoteOpts{n: 8, mutate: func(q []byte) {
		binary.BigEndian.PutUint32(q[24:], 0xdeadbeef)
	}}))
	if err != nil {
		t.Fatal(err)
	}
	if mr, err := m.Match(&r, 0); err != nil || mr.Flags != FlagSeqRewritten {
		t.Fatalf("seq rewritten: %v %v", mr.Flags, err)
	}
}

// ---- STUN ----

func probeTID(t *testing.T, pkt []byte) [stun.TransactionIDSize]byte {
	hl := HeaderLen(IPv4)
	if pkt[0]>>4 == 6 {
		hl = HeaderLen(IPv6)
	}
	return [12]byte(pkt[hl+8+8 : hl+8+20])
}

func TestSTUNAnswers(t *testing.T) {
	id := mustID(t, 15, 0)
	for _, fam := range []Family{IPv4, IPv6} {
		f := udpFlow(fam)
		for _, spec := range []string{"stun", "turn", "ms-turn"} {
			m := NewMatcher(testNonce, 0)
			pkt := sentProbe(t, m, f, id, spec, 1)
			tid := probeTID(t, pkt)
			from := netip.AddrPortFrom(f.Dst, f.DPort)

			// Binding success with our own address: no NAT.
			ok := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: net.IP(f.Src.AsSlice()), Port: int(f.SPort)}, stun.Fingerprint)
			r, err := ParseSTUNAnswer(from, ok.Raw, testNonce)
			if err != nil || r.Kind != KindSTUN || r.ID != id || r.Tag != testTag || r.STUN.Type != STUNBindingSuccess ||
				r.STUN.Class != STUNSuccess || r.STUN.Mapped != netip.AddrPortFrom(f.Src, f.SPort) {
				t.Fatalf("%s success: %+v %v", spec, r, err)
			}
			mr, err := m.Match(&r, 5)
			if err != nil || mr.Flags != FlagViaTag || mr.Probe.ID != id {
				t.Fatalf("%s success match: %v %v", spec, mr.Flags, err)
			}

			// Behind a NAT.
			nat := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: net.IPv4(203, 0, 113, 5), Port: 61000})
			r, err = ParseSTUNAnswer(from, nat.Raw, testNonce)
			if err != nil || r.STUN.Mapped != netip.MustParseAddrPort("203.0.113.5:61000") {
				t.Fatalf("NAT: %+v %v", r.STUN, err)
			}
			if mr, err := m.Match(&r, 5); err != nil || mr.Flags != FlagViaTag|FlagNATMapped|FlagDuplicate {
				t.Fatalf("NAT match: %v %v", mr.Flags, err)
			}

			// TURN Allocate 401 from another address of the relay.
			e401 := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
				stun.CodeUnauthorized, stun.NewRealm("turnpath.test"), stun.NewNonce("abcdef"), stun.NewSoftware("coturn"))
			other := netip.AddrPortFrom(routerFor(fam), 3478)
			r, err = ParseSTUNAnswer(other, e401.Raw, testNonce)
			if err != nil || r.STUN.Type != STUNAllocateError || r.STUN.Class != STUNError || r.STUN.Method != 3 ||
				r.STUN.ErrorCode != 401 || string(r.STUN.Reason) != "Unauthorized" || r.STUN.Mapped.IsValid() {
				t.Fatalf("401: %+v %v", r.STUN, err)
			}
			if mr, err := m.Match(&r, 5); err != nil || mr.Flags != FlagViaTag|FlagOtherResponder|FlagDuplicate {
				t.Fatalf("401 match: %v %v", mr.Flags, err)
			}

			// Another run's answer.
			if _, err := ParseSTUNAnswer(from, ok.Raw, testNonce+1); err != ErrNonce {
				t.Fatalf("stale: %v", err)
			}
		}
	}
	// Old-style MAPPED-ADDRESS only, IPv6 XOR-MAPPED-ADDRESS, relayed address.
	var tid [12]byte
	PutTransactionID(tid[:], testNonce, testTag, 0x0102, 7)
	m1 := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		&stun.MappedAddress{IP: net.IPv4(192, 0, 2, 99), Port: 1234},
		&stun.XORMappedAddress{IP: net.ParseIP("2001:db8::99"), Port: 4321})
	xr := stun.XORMappedAddress{IP: net.ParseIP("2001:db8:5::1"), Port: 50001}
	if err := xr.AddToAs(m1, stun.AttrXORRelayedAddress); err != nil {
		t.Fatal(err)
	}
	m1.Encode()
	r, err := ParseSTUNAnswer(netip.MustParseAddrPort("[2001:db8:ffff::7]:3478"), m1.Raw, testNonce)
	if err != nil || r.STUN.Mapped != netip.MustParseAddrPort("[2001:db8::99]:4321") || r.STUN.Type != STUNAllocateSuccess ||
		r.STUN.Relayed != netip.MustParseAddrPort("[2001:db8:5::1]:50001") {
		t.Fatalf("v6 xor: %+v %v", r.STUN, err)
	}
	m2 := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingSuccess, &stun.MappedAddress{IP: net.IPv4(192, 0, 2, 99), Port: 1234})
	if r, err := ParseSTUNAnswer(netip.MustParseAddrPort("1.2.3.4:3478"), m2.Raw, testNonce); err != nil || r.STUN.Mapped != netip.MustParseAddrPort("192.0.2.99:1234") {
		t.Fatalf("mapped: %+v %v", r.STUN, err)
	}

	// Malformed and non-answers.
	req := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingRequest)
	ind := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodBinding, stun.ClassIndication))
	badCookie := append([]byte(nil), m2.Raw...)
	badCookie[4] ^= 1
	longLen := append([]byte(nil), m2.Raw...)
	binary.BigEndian.PutUint16(longLen[2:], 400)
	badID := stun.MustBuild(stun.NewTransactionIDSetter([12]byte{0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 1, 7, 0xff, 0x01}), stun.BindingSuccess)
	bad := []struct {
		b   []byte
		err error
	}{
		{req.Raw, ErrNotSTUNResponse},
		{ind.Raw, ErrNotSTUNResponse},
		{badCookie, ErrNotSTUN},
		{m2.Raw[:10], ErrSTUNTruncated},
		{m2.Raw[:len(m2.Raw)-4], ErrSTUNTruncated},
		{longLen, ErrSTUNTruncated},
		{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotSTUN},
		{badID.Raw, ErrBadID},
	}
	for i, b := range bad {
		if _, err := ParseSTUNAnswer(netip.MustParseAddrPort("1.2.3.4:3478"), b.b, testNonce); err != b.err {
			t.Errorf("%d: %v, want %v", i, err, b.err)
		}
	}
}

func TestReturnHops(t *testing.T) {
	tests := []struct {
		ttl  uint8
		init uint8
		hops int
	}{
		{248, 255, 7}, // the German seed's hop 6 (he assumed 254 → 6)
		{115, 128, 13},
		{57, 64, 7},
		{64, 64, 0},
		{65, 128, 63},
		{128, 128, 0},
		{129, 255, 126},
		{255, 255, 0},
		{1, 64, 63},
	}
	for _, tt := range tests {
		if InitialTTL(tt.ttl) != tt.init || ReturnHops(tt.ttl) != tt.hops {
			t.Errorf("ttl %d: initial %d hops %d, want %d %d", tt.ttl, InitialTTL(tt.ttl), ReturnHops(tt.ttl), tt.init, tt.hops)
		}
	}
}

func TestProbeFromPacket(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		for _, proto := range []Proto{ProtoUDP, ProtoICMP, ProtoTCP} {
			f := flowFor(fam, proto)
			id := mustID(t, 3, 4)
			var b Builder
			pkt, err := b.Build(nil, f, id, 3, testTag, testNonce, mustPayload(t, "stun"))
			if err != nil {
				t.Fatal(err)
			}
			p, err := ProbeFromPacket(pkt, testTag, 77)
			if err != nil {
				t.Fatal(err)
			}
			hl := HeaderLen(fam)
			ck := binary.BigEndian.Uint16(pkt[hl+6:])
			switch proto {
			case ProtoICMP:
				ck = binary.BigEndian.Uint16(pkt[hl+2:])
			case ProtoTCP:
				ck = binary.BigEndian.Uint16(pkt[hl+16:])
			}
			if p.Flow != f.Normalize() || p.ID != id || p.TTL != 3 || int(p.Len) != len(pkt) || p.Checksum != ck || p.Tag != testTag || p.SentNS != 77 {
				t.Fatalf("%d %v: %+v", fam, proto, p)
			}
		}
	}
	if _, err := ProbeFromPacket(nil, 0, 0); err == nil {
		t.Fatal("nil packet")
	}
}

// TestTruncatedNeverPanics parses every prefix of a set of valid replies.
func TestTruncatedNeverPanics(t *testing.T) {
	m := NewMatcher(testNonce, 0)
	id := mustID(t, 3, 0)
	var v4s, v6s [][]byte
	for _, proto := range []Proto{ProtoUDP, ProtoICMP, ProtoTCP} {
		p4 := sentProbe(t, m, flowFor(IPv4, proto), id, "stun", 1)
		p6 := sentProbe(t, m, flowFor(IPv6, proto), id, "stun", 1)
		for _, o := range []quoteOpts{{}, {n: 8}, {ext: testExt()}, {ext: testExt(), compat: true}} {
			v4s = append(v4s, routerReply(t, p4, router4, o))
			v6s = append(v6s, routerReply(t, p6, router6, o))
		}
	}
	for _, b := range v4s {
		for i := 0; i <= len(b); i++ {
			if r, err := ParseICMPv4(b[:i]); err == nil {
				m.Match(&r, 0)
			}
		}
	}
	for _, b := range v6s {
		for i := 0; i <= len(b); i++ {
			if r, err := ParseICMPv6(router6, 1, b[:i]); err == nil {
				m.Match(&r, 0)
			}
		}
	}
	full := v4s[0]
	if _, err := ParseICMPv4(full[:20+8+20+7]); err != ErrTruncatedQuote {
		t.Errorf("7-byte quote: %v", err)
	}
	if _, err := ParseICMPv4(full[:19]); err != ErrTruncated {
		t.Errorf("short header: %v", err)
	}
}

func TestParseAllocs(t *testing.T) {
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), mustID(t, 3, 0), "stun", 1)
	raw := routerReply(t, pkt, router4, quoteOpts{ext: testExt()})
	allocs := testing.AllocsPerRun(100, func() {
		r, err := ParseICMPv4(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Match(&r, 2); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("parse+match allocates %.1f times", allocs)
	}
}

// ---- fuzzing ----

func fuzzSeeds(t testing.TB, fam Family) (*Matcher, [][]byte) {
	m := NewMatcher(testNonce, 0)
	var out [][]byte
	id := mustID(t, 3, 0)
	for _, proto := range []Proto{ProtoUDP, ProtoICMP, ProtoTCP} {
		p := sentProbe(t, m, flowFor(fam, proto), id, "stun", 1)
		for _, o := range []quoteOpts{{}, {n: 8}, {ext: testExt()}, {ext: testExt(), compat: true}, {typ: 3, code: 3}} {
			out = append(out, routerReply(t, p, routerFor(fam), o))
		}
		if proto == ProtoICMP {
			v4, v6 := echoReply(t, p, flowFor(fam, proto).Dst, -1)
			out = append(out, append(v4, v6...))
		}
	}
	return m, out
}

func FuzzParseICMPv4(f *testing.F) {
	m, seeds := fuzzSeeds(f, IPv4)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseICMPv4(b)
		if err != nil {
			return
		}
		if r.ExtRaw != nil {
			ParseExtensions(r.ExtRaw)
		}
		if mr, err := m.Match(&r, 0); err == nil && mr.Probe.Flow.Family() != IPv4 {
			t.Fatalf("IPv4 reply matched %v", mr.Probe.Flow)
		}
	})
}

func FuzzParseICMPv6(f *testing.F) {
	m, seeds := fuzzSeeds(f, IPv6)
	for _, s := range seeds {
		f.Add(s, uint8(60))
	}
	f.Fuzz(func(t *testing.T, b []byte, hl uint8) {
		r, err := ParseICMPv6(router6, int(hl), b)
		if err != nil {
			return
		}
		if mr, err := m.Match(&r, 0); err == nil && mr.Probe.Flow.Family() != IPv6 {
			t.Fatalf("IPv6 reply matched %v", mr.Probe.Flow)
		}
	})
}

func FuzzParseExtensions(f *testing.F) {
	f.Add(testExt())
	f.Add([]byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 1, 0})
	f.Add(bigExt()[:128])
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseExtensions(b) // what decoded is kept on errors too
		if e.NumMPLS > MaxMPLSEntries || e.NumIfaces > MaxInterfaces || e.NumUnknown > MaxUnknownExt {
			t.Fatal("limits exceeded")
		}
		if err == ErrExtTruncated && e.ChecksumBad {
			t.Fatal("checksum judged on a truncated structure")
		}
	})
}

func FuzzParseSTUNAnswer(f *testing.F) {
	var tid [12]byte
	PutTransactionID(tid[:], testNonce, testTag, 0x0102, 7)
	f.Add(stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(1, 2, 3, 4), Port: 5}, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		stun.CodeUnauthorized, stun.NewRealm("r")).Raw)
	m := NewMatcher(testNonce, 0)
	m.Add(Probe{Flow: udpFlow(IPv4), Tag: testTag, ID: 0x0102})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseSTUNAnswer(netip.MustParseAddrPort("198.51.100.7:3478"), b, testNonce)
		if err != nil {
			return
		}
		if r.Nonce != testNonce || !r.ID.Valid() {
			t.Fatal("accepted a bad nonce/id")
		}
		m.Match(&r, 0)
	})
}

// ---- benchmarks ----

func BenchmarkParseMatch(b *testing.B) {
	for _, fam := range []Family{IPv4, IPv6} {
		name := map[Family]string{IPv4: "v4", IPv6: "v6"}[fam]
		m := NewMatcher(testNonce, 0)
		// A realistic table: 32 flows × 30 TTLs outstanding.
		var pkt []byte
		for sp := uint16(0); sp < 32; sp++ {
			for ttl := uint8(1); ttl <= 30; ttl++ {
				f := udpFlow(fam)
				f.SPort += sp
				p := sentProbe(b, m, f, mustID(b, ttl, 0), "stun", 1)
				if sp == 7 && ttl == 9 {
					pkt = p
				}
			}
		}
		raw := routerReply(b, pkt, routerFor(fam), quoteOpts{})
		b.Run(name+"-into", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			var r Reply
			for b.Loop() {
				var err error
				if fam == IPv4 {
					err = ParseICMPv4Into(&r, raw)
				} else {
					err = ParseICMPv6Into(&r, router6, 60, raw)
				}
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.Match(&r, 2); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				var r Reply
				var err error
				if fam == IPv4 {
					r, err = ParseICMPv4(raw)
				} else {
					r, err = ParseICMPv6(router6, 60, raw)
				}
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.Match(&r, 2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
