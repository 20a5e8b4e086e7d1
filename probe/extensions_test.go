package probe

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// trippyPacket returns the captured packet of trippyPackets with this name,
// parsed.
func trippyPacket(t *testing.T, name string) (Reply, []byte) {
	t.Helper()
	for _, p := range trippyPackets() {
		if p.Name == name {
			r, err := parseIP(p.Data)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return r, p.Data
		}
	}
	t.Fatalf("no packet %s", name)
	return Reply{}, nil
}

func wantMPLS(t *testing.T, what string, e *Extensions, want ...MPLSEntry) {
	t.Helper()
	if got := e.MPLS(); len(got) != len(want) || (len(want) > 0 && !equalMPLS(got, want)) {
		t.Fatalf("%s: MPLS %+v, want %+v", what, got, want)
	}
}

func equalMPLS(a, b []MPLSEntry) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCompatExtensionChecksums: an extension structure after a 128-byte
// quote with the RFC 4884 length field 0 (pre-RFC 4884 routers) is decoded
// whatever its checksum: good, 0 (none transmitted) or bad (flagged).
func TestCompatExtensionChecksums(t *testing.T) {
	ext := buildExt(mplsObj(MPLSEntry{Label: 19380, S: true, TTL: 1}),
		ifObj(IfRoleIncoming, 3, netip.MustParseAddr("198.18.9.1"), "et-0/0/0", 0))
	for _, fam := range []Family{IPv4, IPv6} {
		for _, tc := range []struct {
			name string
			ck   int
			bad  bool
		}{{"good", -1, false}, {"zero", 0, false}, {"bad", 0x1234, true}} {
			e := withExtChecksum(ext, tc.ck)
			for _, proto := range []Proto{ProtoUDP, ProtoICMP, ProtoTCP} {
				m := NewMatcher(testNonce, 0)
				id := mustID(t, 4, 1)
				pkt := sentProbe(t, m, flowFor(fam, proto), id, "stun", 1)
				raw := routerReply(t, pkt, routerFor(fam), quoteOpts{ext: e, compat: true})
				r, err := parseRouterReply(t, fam, routerFor(fam), raw)
				if err != nil {
					t.Fatalf("v%d %s %v: %v", fam, tc.name, proto, err)
				}
				if !bytes.Equal(r.ExtRaw, e) || r.ExtErr != nil || r.QuoteLen != compatQuoteLen {
					t.Fatalf("v%d %s %v: ext %x err %v quote %d", fam, tc.name, proto, r.ExtRaw, r.ExtErr, r.QuoteLen)
				}
				wantMPLS(t, tc.name, &r.Ext, MPLSEntry{Label: 19380, S: true, TTL: 1})
				if r.Ext.ChecksumBad != tc.bad || r.Ext.NumIfaces != 1 || r.Ext.Ifaces[0].Name() != "et-0/0/0" {
					t.Fatalf("v%d %s: %+v", fam, tc.name, r.Ext)
				}
				if mr, err := m.Match(&r, 0); err != nil || mr.Flags != 0 {
					t.Fatalf("v%d %s: match %v %v", fam, tc.name, mr.Flags, err)
				}
			}
		}
	}
}

// TestRFC4884BadChecksumDecoded: with the length field set, a bad checksum
// is flagged and the objects decoded.
func TestRFC4884BadChecksumDecoded(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		m := NewMatcher(testNonce, 0)
		pkt := sentProbe(t, m, udpFlow(fam), mustID(t, 9, 0), "stun", 1)
		e := withExtChecksum(testExt(), 0xffff)
		r, err := parseRouterReply(t, fam, routerFor(fam), routerReply(t, pkt, routerFor(fam), quoteOpts{ext: e}))
		if err != nil || r.ExtErr != nil || !r.Ext.ChecksumBad || r.Ext.Checksum != 0xffff {
			t.Fatalf("v%d: %v %v %+v", fam, err, r.ExtErr, r.Ext)
		}
		r.Ext.Checksum = 1 // checkTestExt wants one
		checkTestExt(t, &r.Ext)
	}
}

// TestTrippyCapturedExtensions: ICMP errors captured in the wild (trippy's
// test suite).
func TestTrippyCapturedExtensions(t *testing.T) {
	// Pre-RFC 4884 layout, checksum good: label 19380 (the socket engine
	// decoded it before; the eBPF engine needs LooksLikeExtension on the
	// bytes after the 128-byte quote).
	r, raw := trippyPacket(t, "trippy-v4-te-compat-mpls-19380")
	wantMPLS(t, "19380", &r.Ext, MPLSEntry{Label: 19380, TC: 0, S: true, TTL: 1})
	if r.ExtErr != nil || r.Ext.ChecksumBad || r.Quoted.Src != netip.MustParseAddr("192.168.1.21") ||
		r.Quoted.Proto != ProtoICMP || r.ICMPIdent != 0x65da || r.ID != 0x8242 || r.QuoteLen != 128 {
		t.Fatalf("19380: %v %+v", r.ExtErr, r)
	}
	after := raw[20+8+128:]
	if !LooksLikeExtension(after) {
		t.Fatalf("LooksLikeExtension(%x) = false", after)
	}
	if e, err := ParseExtensions(after); err != nil || e.NumMPLS != 1 || e.MPLSStack[0].Label != 19380 {
		t.Fatalf("ParseExtensions: %v %+v", err, e)
	}

	// RFC 4884 length of the unpadded datagram (17 words, 68 bytes), the
	// structure after the 128-byte padded field (trippy issue 804).
	r, raw = trippyPacket(t, "trippy-v4-te-len17-ext-at-128-mpls-416240")
	wantMPLS(t, "416240", &r.Ext, MPLSEntry{Label: 416240, TC: 0, S: true, TTL: 1})
	if r.ExtErr != nil || r.QuoteLen != 68 || r.Quoted.Dst != netip.MustParseAddr("93.184.216.34") || r.QuotedTTL != 2 {
		t.Fatalf("416240: %v %+v", r.ExtErr, r)
	}
	// The eBPF engine's path: at most 128 bytes copied from the length on.
	after = raw[20+8+68:]
	if len(after) > 128 {
		after = after[:128]
	}
	e := FindExtension(after, 68)
	if x, err := ParseExtensions(e); err != nil || x.NumMPLS != 1 || x.MPLSStack[0].Label != 416240 {
		t.Fatalf("FindExtension(%x, 68) = %x: %v %+v", after, e, err, x)
	}
	if e := FindExtension(withExtChecksum(testExt(), 0), 68); !bytes.Equal(e, withExtChecksum(testExt(), 0)) {
		t.Fatalf("a structure at the length moved: %x", e)
	}
	// The same on IPv6: length 10 (80 bytes), structure at 128.
	r, _ = trippyPacket(t, "trippy-v6-te-len10-ext-at-128-mpls-27121-2")
	wantMPLS(t, "27121", &r.Ext, MPLSEntry{Label: 27121, TC: 4, S: false, TTL: 1}, MPLSEntry{Label: 2, TC: 4, S: true, TTL: 255})
	if r.ExtErr != nil || r.QuoteLen != 80 || r.ICMPIdent != 10848 || r.ID != 33010 {
		t.Fatalf("27121: %v %+v", r.ExtErr, r)
	}
	// Length field past the end of the message: no extensions.
	r, _ = trippyPacket(t, "trippy-v6-te-len16-past-end")
	if r.ExtRaw != nil || r.ICMPIdent != 13448 || r.ID != 33012 {
		t.Fatalf("len16: %x %+v", r.ExtRaw, r)
	}
	// Compliant, no extensions.
	r, _ = trippyPacket(t, "trippy-v4-te-rfc4884-no-ext")
	if r.ExtRaw != nil || r.QuoteLen != 68 || r.ID != 0x8244 {
		t.Fatalf("no ext: %x %+v", r.ExtRaw, r)
	}
}

// TestShortLengthFieldPrefersStructureAtLength: a structure right at a
// short RFC 4884 length is taken there, not at 128.
func TestShortLengthFieldPrefersStructureAtLength(t *testing.T) {
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), mustID(t, 2, 0), "stun", 1)
	ext := buildExt(mplsObj(MPLSEntry{Label: 77, S: true, TTL: 1}))
	msg := icmpError(IPv4, quoteOf(pkt, quoteOpts{}), quoteOpts{})
	msg[5] = byte((len(msg) - 8) / 4)
	msg = append(msg, ext...)
	// Pad to more than 128 bytes of quote with a second structure at 128.
	for len(msg) < 8+compatQuoteLen {
		msg = append(msg, 0)
	}
	msg = append(msg, buildExt(mplsObj(MPLSEntry{Label: 88, S: true, TTL: 1}))...)
	r, err := ParseICMPv4(synthV4(router4, src4, 60, msg))
	if err != nil || r.ExtErr != ErrExtObjectLength { // the zero padding after it is no object
		t.Fatalf("%v %v", err, r.ExtErr)
	}
	wantMPLS(t, "at length", &r.Ext, MPLSEntry{Label: 77, S: true, TTL: 1})
}

// TestIPv6CompatOnlyAfterShortDatagrams: on IPv6 the pre-RFC 4884 layout is
// taken only when the quoted datagram is at most 128 bytes.
func TestIPv6CompatOnlyAfterShortDatagrams(t *testing.T) {
	ext := buildExt(mplsObj(MPLSEntry{Label: 5, S: true, TTL: 1}))
	for _, tc := range []struct {
		spec string
		want bool
	}{{"stun", true}, {"hex:" + strings.Repeat("20", 120), false}} {
		m := NewMatcher(testNonce, 0)
		pkt := sentProbe(t, m, udpFlow(IPv6), mustID(t, 3, 0), tc.spec, 1)
		r, err := ParseICMPv6(router6, 60, routerReply(t, pkt, router6, quoteOpts{ext: ext, compat: true}))
		if err != nil || (r.ExtRaw != nil) != tc.want {
			t.Fatalf("%d-byte probe: %v ext %x", len(pkt), err, r.ExtRaw)
		}
	}
	// IPv4 keeps the layout after a longer datagram (its checksum or shape
	// says it is a structure).
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), mustID(t, 3, 0), "hex:"+strings.Repeat("20", 140), 1)
	r, err := ParseICMPv4(routerReply(t, pkt, router4, quoteOpts{ext: withExtChecksum(ext, 0), compat: true}))
	if err != nil || r.ExtRaw == nil || r.Ext.NumMPLS != 1 {
		t.Fatalf("v4 long probe: %v %x", err, r.ExtRaw)
	}
}

// bigExt is a structure longer than 128 bytes: an MPLS stack, then
// interface objects with names.
func bigExt() []byte {
	return buildExt(mplsObj(MPLSEntry{Label: 100, TTL: 1}, MPLSEntry{Label: 200, S: true, TTL: 1}),
		ifObj(IfRoleIncoming, 11, netip.MustParseAddr("fd51:0:0:9::1"), "HundredGigE0/0/0/11.3001", 9000),
		ifObj(IfRoleOutgoing, 12, netip.MustParseAddr("fd51:0:0:a::1"), "HundredGigE0/0/0/12.3002", 9000),
		ifObj(IfRoleNextHop, 13, netip.MustParseAddr("fd51:0:0:a::2"), "", 9000))
}

// TestParseExtensionsCut: a structure cut short (the eBPF engine copies at
// most 128 bytes) keeps what decoded: leading objects, the whole entries of
// an MPLS stack it ends in; ErrExtTruncated, checksum not judged.
func TestParseExtensionsCut(t *testing.T) {
	big := bigExt()
	if len(big) <= 128 {
		t.Fatalf("bigExt is %d bytes", len(big))
	}
	e, err := ParseExtensions(big[:128])
	if err != ErrExtTruncated || e.ChecksumBad || e.NumMPLS != 2 || e.NumIfaces != 1 ||
		e.Ifaces[0].Name() != "HundredGigE0/0/0/11.3001" || e.Ifaces[0].IfIndex != 11 {
		t.Fatalf("cut at 128: %v %+v", err, e)
	}
	if !LooksLikeExtension(big[:128]) {
		t.Fatal("LooksLikeExtension(cut) = false")
	}
	// Cut inside the MPLS stack: the whole entries.
	e, err = ParseExtensions(big[:4+4+4+2])
	if err != ErrExtTruncated || e.NumMPLS != 1 || e.MPLSStack[0].Label != 100 || e.NumIfaces != 0 {
		t.Fatalf("cut in MPLS: %v %+v", err, e)
	}
	// Every cut: never more than the whole; cut inside an object it is
	// ErrExtTruncated (checksum not judged), at an object boundary it looks
	// whole and its checksum fails.
	for n := 0; n <= len(big); n++ {
		e, err := ParseExtensions(big[:n])
		if e.NumMPLS > 2 || e.NumIfaces > 3 || (err == nil) == (n < len(big) && !e.ChecksumBad) ||
			(err != nil && (err != ErrExtTruncated || e.ChecksumBad)) {
			t.Fatalf("cut %d: %v %+v", n, err, e)
		}
	}
	// The eBPF engine's path: 128 bytes after a 128-byte quote, length field 0.
	m := NewMatcher(testNonce, 0)
	pkt := sentProbe(t, m, udpFlow(IPv4), mustID(t, 6, 0), "stun", 1)
	raw := routerReply(t, pkt, router4, quoteOpts{ext: big, compat: true})
	r, err := ParseICMPv4(raw)
	if err != nil || r.ExtErr != nil || r.Ext.NumIfaces != 3 || r.Ext.ChecksumBad {
		t.Fatalf("whole: %v %v %+v", err, r.ExtErr, r.Ext)
	}
	copied := raw[20+8+128 : 20+8+128+128]
	if !LooksLikeExtension(copied) {
		t.Fatal("eBPF copy not recognised")
	}
	if e, err := ParseExtensions(copied); err != ErrExtTruncated || e.NumMPLS != 2 || e.NumIfaces != 1 {
		t.Fatalf("eBPF copy: %v %+v", err, e)
	}
}

func TestLooksLikeExtension(t *testing.T) {
	mpls := buildExt(mplsObj(MPLSEntry{Label: 19380, S: true, TTL: 1}))
	set := func(b []byte, i int, v byte) []byte {
		c := append([]byte(nil), b...)
		c[i] = v
		return c
	}
	yes := map[string][]byte{
		"mpls":                 mpls,
		"mpls checksum 0":      withExtChecksum(mpls, 0),
		"mpls checksum bad":    withExtChecksum(mpls, 0xbad),
		"all":                  testExt(),
		"all checksum 0":       withExtChecksum(testExt(), 0),
		"all checksum bad":     withExtChecksum(testExt(), 1),
		"iface":                buildExt(ifObj(IfRoleNextHop, 0, netip.MustParseAddr("198.18.0.9"), "", 0)),
		"interface id":         withExtChecksum(buildExt(extObj(3, 2, []byte{0, 0, 0, 7})), 0),
		"extended information": withExtChecksum(buildExt(extObj(4, 1, []byte{1, 2, 3, 4})), 0),
		"cut in an object":     withExtChecksum(testExt(), 0)[:20],
		"cut in an MPLS stack": buildExt([]byte{0, 40, 1, 1, 0, 0, 1, 1}),
		// The old rule: a verifying checksum, version 2, a first object that fits.
		"verifies, unknown class": buildExt(extObj(200, 9, []byte{1, 2, 3, 4})),
		"verifies, reserved set":  withExtChecksum(set(mpls, 1, 0x01), -1),
	}
	no := map[string][]byte{
		"short":                  mpls[:7],
		"header only":            withExtChecksum(mpls[:4], 0),
		"version 1":              withExtChecksum(set(mpls, 0, 0x10), 0),
		"reserved bits":          withExtChecksum(set(mpls, 1, 0x80), 0),
		"reserved nibble":        withExtChecksum(set(mpls, 0, 0x21), 0xbad),
		"unknown class":          withExtChecksum(buildExt(extObj(9, 1, []byte{1, 2, 3, 4})), 0),
		"mpls c-type 2":          withExtChecksum(set(mpls, 7, 2), 0),
		"empty mpls":             withExtChecksum(buildExt(extObj(1, 1, nil)), 0),
		"iface no sub-objects":   withExtChecksum(buildExt(extObj(2, 0x80, []byte{0, 0, 0, 0})), 0),
		"iface reserved c-type":  withExtChecksum(buildExt(extObj(2, 0x18, []byte{0, 0, 0, 1})), 0),
		"object length 6":        withExtChecksum(set(mpls, 5, 6), 0),
		"object length 0":        withExtChecksum(set(mpls, 5, 0), 0),
		"trailing bytes":         withExtChecksum(append(append([]byte(nil), mpls...), 0, 0, 0, 0), 0),
		"trailing partial":       withExtChecksum(append(append([]byte(nil), mpls...), 0x20), 0),
		"zeros":                  make([]byte, 64),
		"payload 0x5a":           bytes.Repeat([]byte{0x5a}, 64),
		"payload 0x20":           bytes.Repeat([]byte{0x20}, 64),
		"stun":                   append([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...),
		"verifies, no room":      buildExt([]byte{0, 40, 200, 1, 0, 0, 1, 1}),
		"verifies, object short": buildExt([]byte{0, 2, 1, 1, 0, 0, 1, 1}),
	}
	for name, b := range yes {
		if !LooksLikeExtension(b) {
			t.Errorf("%s (%x): false", name, b)
		}
	}
	for name, b := range no {
		if LooksLikeExtension(b) {
			t.Errorf("%s (%x): true", name, b)
		}
	}
	// Random payload bytes are not taken for a structure.
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 96)
	hits := 0
	for i := 0; i < 200000; i++ {
		for j := 0; j < len(b); j += 8 {
			binary.LittleEndian.PutUint64(b[j:], rng.Uint64())
		}
		if LooksLikeExtension(b[:8+rng.IntN(len(b)-8)]) {
			hits++
		}
	}
	if hits > 0 {
		t.Errorf("%d of 200000 random buffers look like extensions", hits)
	}
}

// TestCompatIgnoresQuotedPayload: bytes after 128 that are the probe's own
// payload stay in the quote.
func TestCompatIgnoresQuotedPayload(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		for _, spec := range []string{"hex:" + strings.Repeat("5a", 200), "hex:" + strings.Repeat("20", 200),
			"hex:" + strings.Repeat("00", 200), "ms-turn"} {
			m := NewMatcher(testNonce, 0)
			pkt := sentProbe(t, m, udpFlow(fam), mustID(t, 8, 0), spec, 1)
			r, err := parseRouterReply(t, fam, routerFor(fam), routerReply(t, pkt, routerFor(fam), quoteOpts{}))
			if err != nil || r.ExtRaw != nil || r.QuoteLen != len(pkt) {
				t.Fatalf("v%d %s: %v ext %x quote %d of %d", fam, spec[:6], err, r.ExtRaw, r.QuoteLen, len(pkt))
			}
		}
	}
}

func FuzzLooksLikeExtension(f *testing.F) {
	f.Add(testExt())
	f.Add(bigExt()[:128])
	f.Add(withExtChecksum(testExt(), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !LooksLikeExtension(b) {
			return
		}
		e, err := ParseExtensions(b)
		if err == ErrExtVersion || e.Version != 2 {
			t.Fatalf("accepted version %d: %v", e.Version, err)
		}
	})
}
