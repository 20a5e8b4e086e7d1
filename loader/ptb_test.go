package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/turnpath/turnpath/probe"
)

// ICMP Fragmentation Needed (IPv4 Unreachable code 4, RFC 1191) and ICMPv6 Packet Too Big
// quoting one of the run's probes are their own kind, KindPacketTooBig, with the next-hop
// MTU; the own-reply rules are those of every ICMP error. Before, Fragmentation Needed
// was reported as KindDestUnreach and Packet Too Big passed unseen.

const (
	mtuT     = 1300 // next-hop MTU the routers report
	bigProbe = 1400 // probe size (IP header included), too big for mtuT
)

// bigSTUNProbe is a STUN probe of the run's flow grown to size bytes with zeros, DF set
// on IPv4, as a probe sized to find the path MTU is: the lengths follow, the UDP checksum
// field (the probe id) stays, the nonce stays where TC egress and the quotes show it.
func bigSTUNProbe(t *testing.T, dst netip.Addr, sport, id uint16, ttl uint8, nonce uint32, size int) []byte {
	t.Helper()
	p := pad(stunProbe(t, dst, sport, id, ttl, nonce), size)
	if dst.Is6() {
		binary.BigEndian.PutUint16(p[4:], uint16(size-40))
		binary.BigEndian.PutUint16(p[40+4:], uint16(size-40))
		return p
	}
	ihl := int(p[0]&0xf) * 4
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	p[6] |= 0x40 // DF
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], checksum(p[:ihl], 0))
	binary.BigEndian.PutUint16(p[ihl+4:], uint16(size-ihl))
	return p
}

// atHop is the probe as the router at hop n quotes it: TTL / hop limit lowered by the
// n-1 routers before it.
func atHop(pkt []byte, n uint8) []byte {
	q := append([]byte{}, pkt...)
	if q[0]>>4 == 6 {
		q[7] -= n - 1
	} else {
		q[8] -= n - 1
	}
	return q
}

// fragNeeded4 is a Fragmentation Needed from router4 quoting quote: MTU in bytes 6..7,
// rfc4884 in byte 5.
func fragNeeded4(quote []byte, mtu uint16, rfc4884 uint8) []byte {
	rest := [4]byte{0, rfc4884}
	binary.BigEndian.PutUint16(rest[2:], mtu)
	return eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 252, id: 77}, icmp(3, 4, rest, quote)))
}

// packetTooBig6 is an ICMPv6 Packet Too Big from router6 quoting quote: MTU in bytes 4..7.
func packetTooBig6(quote []byte, mtu uint32) []byte {
	var rest [4]byte
	binary.BigEndian.PutUint32(rest[:], mtu)
	return eth(etherIPv6, ipv6(router6, local6, 58, 61, 0, icmp6(router6, local6, 2, 0, rest, quote)))
}

// quote4 is what Linux routers put in an ICMPv4 error: at most 576 bytes in all, so
// 548 bytes of the probe. quote6 is what fits an ICMPv6 error in 1280 bytes (RFC 4443).
func quote4(pkt []byte) []byte { return pkt[:min(len(pkt), 576-20-8)] }
func quote6(pkt []byte) []byte { return pkt[:min(len(pkt), 1280-40-8)] }

func TestPacketTooBig(t *testing.T) {
	for _, h := range []rxHook{atXDP, atTCX} {
		t.Run(h.name, func(t *testing.T) { testPacketTooBig(t, h) })
	}
}

func testPacketTooBig(t *testing.T, h rxHook) {
	o := loadT(t, stunConfig(nonceT))
	registerFlow(t, o, tagOf(40041), target4, 40041)
	registerFlow(t, o, tagOf(40042), target6, 40042)

	// Probes as sent (TTL 5 / 6, the id's) and as the router at hop 3 quotes them.
	sent4 := bigSTUNProbe(t, target4, 40041, 0x0105, 5, nonceT, bigProbe)
	sent4b := bigSTUNProbe(t, target4, 40041, 0x0206, 6, nonceT, bigProbe)
	sent6 := bigSTUNProbe(t, target6, 40042, 0x0105, 5, nonceT, bigProbe)
	sent6b := bigSTUNProbe(t, target6, 40042, 0x0206, 6, nonceT, bigProbe)
	fn4 := fragNeeded4(quote4(atHop(sent4, 3)), mtuT, 0)
	fn4short := fragNeeded4(atHop(sent4b, 3)[:28], mtuT, 0)
	ptb6 := packetTooBig6(quote6(atHop(sent6, 3)), mtuT)
	ptb6short := packetTooBig6(atHop(sent6b, 3)[:48], mtuT)
	// RFC 4884 in a Fragmentation Needed: length (32 words) in byte 5, MTU in 6..7.
	ext := mplsExtension(16004)
	fn4ext := fragNeeded4(append(atHop(sent4, 3)[:128], ext...), mtuT, 32)
	// A jumbo MTU fills byte 4, where other ICMPv6 errors keep the RFC 4884 length.
	const jumbo = 0x01000500
	ptb6jumbo := packetTooBig6(quote6(atHop(sent6, 3)), jumbo)
	// Another run (nonceB) traced the same flows: same keys, its nonce in the quotes.
	other4 := bigSTUNProbe(t, target4, 40041, 0x0105, 5, nonceB, bigProbe)
	other6 := bigSTUNProbe(t, target6, 40042, 0x0105, 5, nonceB, bigProbe)

	seed := func(pkts ...[]byte) [][]byte {
		var f [][]byte
		for _, p := range pkts {
			f = append(f, eth(etherOf(p), p))
		}
		return f
	}
	ptb := func(t *testing.T, e Event, frame []byte, mtu uint32, family uint8, typ, code uint8) {
		t.Helper()
		want(t, "kind", e.Kind, KindPacketTooBig)
		want(t, "kind name", e.Kind.String(), "packet-too-big")
		want(t, "MTU", e.MTU(), mtu)
		want(t, "icmp info", e.ICMPInfo, mtu)
		want(t, "family", e.Family, family)
		want(t, "proto", e.Proto, ProtoUDP)
		want(t, "icmp type", e.ICMPType, typ)
		want(t, "icmp code", e.ICMPCode, code)
		want(t, "no tx", e.Flags&FlagNoTx, 0)
		if e.TxNs == 0 || e.RxNs < e.TxNs {
			t.Errorf("tx %d rx %d", e.TxNs, e.RxNs)
		}
		sameAsGo(t, e, frame[14:])
	}

	runRxCases(t, o, h, []xdpCase{
		{
			name:    "fragmentation needed v4, 548-byte quote",
			seed:    seed(sent4),
			frame:   fn4,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				ptb(t, e, fn4, mtuT, 4, 3, 4)
				want(t, "responder", e.Responder, router4)
				want(t, "key", e.Key(), ProbeKey{target4, 40041, 0x0105})
				want(t, "quoted src", e.QuotedSrc, local4)
				want(t, "quoted len", e.QuotedLen, bigProbe)
				want(t, "quoted ttl", e.QuotedTTL, 3)
				want(t, "nonce seen", e.Flags&FlagNonce, FlagNonce)
				// Quote bytes past 128 are copied as for any ICMPv4 error with
				// the RFC 4884 length 0; Go sees they are no extension.
				want(t, "ext compat", e.Flags&FlagExtCompat, FlagExtCompat)
				if probe.LooksLikeExtension(e.Ext) {
					t.Errorf("quote bytes %x taken for an extension", e.Ext)
				}
			},
			stats: func(t *testing.T, d Stats) { want(t, "matched", d.RxMatched, 1) },
		},
		{
			name:    "fragmentation needed v4, 8-byte quote",
			seed:    seed(sent4b),
			frame:   fn4short,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				ptb(t, e, fn4short, mtuT, 4, 3, 4)
				want(t, "key", e.Key(), ProbeKey{target4, 40041, 0x0206})
				want(t, "quoted ttl", e.QuotedTTL, 4)
				want(t, "nonce seen", e.Flags&FlagNonce, 0)
			},
		},
		{
			name:    "fragmentation needed v4 with an RFC 4884 extension",
			seed:    seed(sent4),
			frame:   fn4ext,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				ptb(t, evs[0], fn4ext, mtuT, 4, 3, 4)
				want(t, "ext", string(evs[0].Ext), string(ext))
			},
		},
		{
			name:    "fragmentation needed v4 without an MTU (before RFC 1191)",
			seed:    seed(sent4),
			frame:   fragNeeded4(atHop(sent4, 3)[:28], 0, 0),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "kind", evs[0].Kind, KindPacketTooBig)
				want(t, "MTU", evs[0].MTU(), 0)
			},
		},
		{
			name:    "packet too big v6, 1232-byte quote",
			seed:    seed(sent6),
			frame:   ptb6,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				ptb(t, e, ptb6, mtuT, 6, 2, 0)
				want(t, "responder", e.Responder, router6)
				want(t, "key", e.Key(), ProbeKey{target6, 40042, 0x0105})
				want(t, "quoted src", e.QuotedSrc, local6)
				want(t, "quoted len", e.QuotedLen, bigProbe-40)
				want(t, "quoted hop limit", e.QuotedTTL, 3)
				want(t, "nonce seen", e.Flags&FlagNonce, FlagNonce)
				want(t, "ext", len(e.Ext), 0)
			},
			stats: func(t *testing.T, d Stats) { want(t, "matched", d.RxMatched, 1) },
		},
		{
			name:    "packet too big v6, 8-byte quote",
			seed:    seed(sent6b),
			frame:   ptb6short,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				ptb(t, e, ptb6short, mtuT, 6, 2, 0)
				want(t, "key", e.Key(), ProbeKey{target6, 40042, 0x0206})
				want(t, "quoted hop limit", e.QuotedTTL, 4)
				want(t, "nonce seen", e.Flags&FlagNonce, 0)
			},
		},
		{
			name:    "packet too big v6, jumbo MTU is no RFC 4884 length",
			seed:    seed(sent6),
			frame:   ptb6jumbo,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				ptb(t, evs[0], ptb6jumbo, jumbo, 6, 2, 0)
				want(t, "ext", len(evs[0].Ext), 0)
				want(t, "flags", evs[0].Flags&(FlagExtCompat|FlagExtTrunc), 0)
			},
		},
		{
			name:    "fragmentation needed v4 cut in the quoted UDP header",
			frame:   fragNeeded4(atHop(sent4, 3)[:27], mtuT, 0),
			verdict: XDPPass,
			stats: func(t *testing.T, d Stats) {
				want(t, "truncated", d.Truncated, 1)
				want(t, "matched", d.RxMatched, 0)
			},
		},
		{
			name:    "packet too big v6 cut in the quoted IPv6 header",
			frame:   packetTooBig6(atHop(sent6, 3)[:30], mtuT),
			verdict: XDPPass,
			stats: func(t *testing.T, d Stats) {
				want(t, "truncated", d.Truncated, 1)
				want(t, "matched", d.RxMatched, 0)
			},
		},
		{
			name:    "packet too big v6 cut in the quoted UDP header",
			frame:   packetTooBig6(atHop(sent6, 3)[:47], mtuT),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "truncated", d.Truncated, 1) },
		},
		{
			// Same key in `sent` (this run sent TTL 5 from 40041 too), but the quote
			// shows the other run's nonce: its reply, left alone.
			name:    "fragmentation needed v4 quoting another run's probe",
			seed:    seed(sent4),
			frame:   fragNeeded4(quote4(atHop(other4, 3)), mtuT, 0),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1) },
		},
		{
			name:    "packet too big v6 quoting another run's probe",
			seed:    seed(sent6),
			frame:   packetTooBig6(quote6(atHop(other6, 3)), mtuT),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1) },
		},
		{
			// 8 bytes, no `sent` entry: nothing says it is this run's.
			name:    "packet too big v6 quoting a probe this run never sent",
			frame:   packetTooBig6(atHop(bigSTUNProbe(t, target6, 40043, 0x0105, 5, nonceT, bigProbe), 3)[:48], mtuT),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1) },
		},
		{
			name:    "packet too big v6 quoting another port",
			frame:   packetTooBig6(ipv6(local6, target6, 17, 3, 0, udp(33434, 33435, 5, make([]byte, 1200))), mtuT),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
	})
}
