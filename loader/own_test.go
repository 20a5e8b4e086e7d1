package loader

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/turnpath/turnpath/probe"
)

// Two runs on one host use the same ports, and other programs send from them too: each
// run's programs record and take only what that run sent (issue: a second run reported
// every router as silent because the first one's XDP dropped its ICMP errors).

const nonceB = 0x0badcafe // a second run's nonce

func stunConfig(nonce uint32) Config {
	return Config{Proto: ProtoUDP, SportLo: sportLo, SportHi: sportHi, DPort: dportT, Nonce: nonce,
		NonceOff: NonceOffSTUN, Drop: true}
}

// stunProbe is a STUN probe from sport to dst; its flowtag is tagOf(sport).
func stunProbe(t *testing.T, dst netip.Addr, sport, id uint16, ttl uint8, nonce uint32) []byte {
	src := local4
	if dst.Is6() {
		src = local6
	}
	f := probe.Flow{Src: src, Dst: dst, Proto: probe.ProtoUDP, SPort: sport, DPort: dportT}
	return buildProbe(t, f, id, ttl, probe.FlowTag(tagOf(sport)), nonce, "stun")
}

// tagOf is the test flows' flowtag: one per source port.
func tagOf(sport uint16) uint32 { return uint32(sport) - sportLo + 1 }

func TestTCEgressTakesOnlyOwnProbes(t *testing.T) {
	o := loadT(t, stunConfig(nonceT))
	unregistered := netip.MustParseAddr("198.51.100.99")
	for sp := uint16(40001); sp <= 40006; sp++ { // every flow but the unregistered one
		if sp != 40005 {
			registerFlow(t, o, tagOf(sp), target4, sp)
		}
	}

	own := stunProbe(t, target4, 40001, 0x0105, 5, nonceT)
	runTC(t, o, eth(etherIPv4, own))
	if _, ok := o.SentTimestamp(ProbeKey{target4, 40001, 0x0105}); !ok {
		t.Fatal("own probe not recorded")
	}
	// A TURN client's Binding request from a port in the range: TTL 64, its own
	// transaction id, IP ID and checksum unrelated.
	client := ipv4(local4, target4, 17, ip4opts{id: 0x4d2, ttl: 64},
		udp(40002, dportT, 0x1234, stunAnswer(0x0001, 0x11223344, 5, 0x0140, nil)))
	otherRun := stunProbe(t, target4, 40003, 0x0105, 5, nonceB) // same scheme, another nonce
	badTTL := stunProbe(t, target4, 40004, 0x0105, 9, nonceT)   // TTL 9, id says 5
	noFlow := stunProbe(t, unregistered, 40005, 0x0105, 5, nonceT)
	ipidOff := append([]byte{}, stunProbe(t, target4, 40006, 0x0105, 5, nonceT)...)
	ipidOff[4], ipidOff[5] = 0x77, 0x77 // IP ID no longer the checksum's id
	ipidOff[10], ipidOff[11] = 0, 0
	copy(ipidOff[10:], be16bytes(checksum(ipidOff[:20], 0)))

	before := stats(t, o)
	for name, pkt := range map[string][]byte{
		"another program's packet": client, "another run's probe": otherRun,
		"TTL not the id's": badTTL, "unregistered flow": noFlow, "IPv4 ID not the checksum": ipidOff,
	} {
		runTC(t, o, eth(etherIPv4, pkt))
		if d := stats(t, o).sub(before); d.TxSeen != 0 {
			t.Errorf("%s: recorded as this run's probe", name)
		}
	}
	want(t, "foreign", stats(t, o).sub(before).TxForeign, 5)
	for _, sp := range []uint16{40002, 40003, 40004, 40006} {
		for _, id := range []uint16{0x0105, 0x04d2} {
			if _, ok := o.SentTimestamp(ProbeKey{target4, sp, id}); ok {
				t.Errorf("sport %d id %#x recorded", sp, id)
			}
		}
	}
}

// TestRepliesGoToTheirOwnRun: runs A and B trace the same target from the same port;
// each takes only its own replies, whatever it sent itself.
func TestRepliesGoToTheirOwnRun(t *testing.T) {
	a := loadT(t, stunConfig(nonceT))
	b := loadT(t, stunConfig(nonceB))
	rdA, rdB := eventsT(t, a), eventsT(t, b)

	for _, o := range []*Objects{a, b} {
		registerFlow(t, o, tagOf(40001), target4, 40001)
	}
	// Both send TTL 5 to target4 from 40001: the same key in both `sent` maps.
	sentA, sentB := stunProbe(t, target4, 40001, 0x0105, 5, nonceT), stunProbe(t, target4, 40001, 0x0105, 5, nonceB)
	for _, o := range []*Objects{a, b} {
		runTC(t, o, eth(etherIPv4, sentA))
		runTC(t, o, eth(etherIPv4, sentB))
	}
	quoteOf := func(pkt []byte) []byte { q := append([]byte{}, pkt...); q[8] = 1; return q } // TTL 1 at the router

	// A full quote (Linux routers quote up to 576 bytes) shows B's nonce: A passes it
	// untouched and unreported, B takes it.
	teB := timeExceeded4(router4, quoteOf(sentB))
	verdict(t, a, teB, XDPPass)
	verdict(t, b, teB, XDPDrop)
	if evs := readEvents(t, rdB, 1); evs[0].Flags&FlagNonce == 0 || evs[0].TxNs == 0 {
		t.Errorf("B's event: flags %#x tx %d, want the nonce seen and a tx time", evs[0].Flags, evs[0].TxNs)
	}
	readEvents(t, rdA, 0)
	// The same through TCX ingress (a run that found XDP taken).
	tcx(t, a, teB, TCActUnspec)
	tcx(t, b, teB, TCXDrop)
	readEvents(t, rdB, 1)
	readEvents(t, rdA, 0)

	// An 8-byte quote of a probe only B sent (TTL 6): A has no `sent` entry for it.
	onlyB := stunProbe(t, target4, 40001, 0x0106, 6, nonceB)
	runTC(t, a, eth(etherIPv4, onlyB))
	runTC(t, b, eth(etherIPv4, onlyB))
	te8 := timeExceeded4(router4, quoteOf(onlyB)[:28])
	verdict(t, a, te8, XDPPass)
	readEvents(t, rdA, 0)
	verdict(t, b, te8, XDPDrop)
	readEvents(t, rdB, 1)

	// A quote cut before the nonce, zero-padded to 128 bytes as RFC 4884 asks: the
	// padding is no nonce, so the `sent` entry decides.
	padded := timeExceeded4(router4, pad(quoteOf(onlyB)[:28], 128))
	verdict(t, b, padded, XDPDrop)
	readEvents(t, rdB, 1)
}

// TestOtherApplicationsKeepTheirErrors: a plain UDP socket's port unreachable and
// fragmentation-needed messages pass untouched while a run is active.
func TestOtherApplicationsKeepTheirErrors(t *testing.T) {
	o := loadT(t, stunConfig(nonceT))
	rd := eventsT(t, o)
	// The run traces target4 from 40001, so that flow is registered and probed.
	registerFlow(t, o, tagOf(40001), target4, 40001)
	runTC(t, o, eth(etherIPv4, stunProbe(t, target4, 40001, 0x0101, 1, nonceT)))

	// The application: 40001 -> target4:3478 too, with its own STUN request.
	app := ipv4(local4, target4, 17, ip4opts{id: 0x0101, ttl: 64},
		udp(40001, dportT, 0x0101, stunAnswer(0x0001, 0x11223344, 5, 0x0140, nil)))
	runTC(t, o, eth(etherIPv4, app)) // not recorded: TTL 64
	for name, frame := range map[string][]byte{
		"port unreachable": eth(etherIPv4, ipv4(target4, local4, 1, ip4opts{ttl: 60}, icmp(3, 3, [4]byte{}, app))),
		"frag needed":      eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 60}, icmp(3, 4, [4]byte{0, 0, 0x05, 0x14}, app))),
	} {
		ret, err := o.RunXDP(frame)
		if err != nil {
			t.Fatal(err)
		}
		if ret != XDPPass {
			t.Errorf("%s: verdict %d, want pass", name, ret)
		}
	}
	readEvents(t, rd, 0)
}

// TestCompatExtensionCopied: a router of the RFC 4950 era puts the MPLS extension
// after a 128-byte quote with the RFC 4884 length field 0; the event carries those
// bytes (FlagExtCompat) and Go decodes the label, as the socket engine does.
func TestCompatExtensionCopied(t *testing.T) {
	o := loadT(t, udpConfig(true))
	rd := eventsT(t, o)
	sent := udpPacket4(target4, 40009, 0x0103, 3)
	runTC(t, o, eth(etherIPv4, sent))
	q := append([]byte{}, sent...)
	q[8] = 1
	ext := mplsExtension(19380)
	frame := timeExceeded4(router4, append(pad(q, 128), ext...)) // length field 0
	verdict(t, o, frame, XDPDrop)
	e := readEvents(t, rd, 1)[0]
	if e.Flags&FlagExtCompat == 0 || !bytes.Equal(e.Ext, ext) {
		t.Fatalf("flags %#x ext %x, want FlagExtCompat and %x", e.Flags, e.Ext, ext)
	}
	if !probe.LooksLikeExtension(e.Ext) {
		t.Fatal("Go does not take the copied bytes for an extension")
	}
	x, err := probe.ParseExtensions(e.Ext)
	if err != nil || len(x.MPLS()) != 1 || x.MPLS()[0].Label != 19380 {
		t.Fatalf("MPLS %+v, err %v", x.MPLS(), err)
	}
	// A long quote without extension: bytes are copied but are no extension.
	long := append([]byte{}, sent...)
	long = append(long[:20+8], bytes.Repeat([]byte{0x42}, 200)...)
	verdict(t, o, timeExceeded4(router4, long), XDPDrop)
	if e := readEvents(t, rd, 1)[0]; probe.LooksLikeExtension(e.Ext) {
		t.Errorf("quote bytes %x taken for an extension", e.Ext)
	}
}

func verdict(t *testing.T, o *Objects, frame []byte, want uint32) {
	t.Helper()
	ret, err := o.RunXDP(frame)
	if err != nil {
		t.Fatal(err)
	}
	if ret != want {
		t.Fatalf("XDP verdict %d, want %d", ret, want)
	}
}

func tcx(t *testing.T, o *Objects, frame []byte, want uint32) {
	t.Helper()
	ret, err := o.RunTCXIngress(frame)
	if err != nil {
		t.Fatal(err)
	}
	if ret != want {
		t.Fatalf("TCX ingress verdict %d, want %d", int32(ret), int32(want))
	}
}

func be16bytes(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
