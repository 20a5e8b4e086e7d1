package probe

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestNATDetection(t *testing.T) {
	id := mustID(t, 3, 0)
	type tc struct {
		name   string
		fam    Family
		spec   string
		o      quoteOpts
		flags  Flags
		err    error
		viaTag bool
	}
	setU16 := func(off int, v uint16) func([]byte) {
		return func(q []byte) { binary.BigEndian.PutUint16(q[off:], v) }
	}
	cases := []tc{
		{name: "checksum rewritten (Dublin)", fam: IPv4, spec: "stun", o: quoteOpts{n: 8, mutate: setU16(26, 0x1234)}, flags: FlagChecksumRewritten},
		{name: "checksum zeroed", fam: IPv4, spec: "none", o: quoteOpts{n: 8, mutate: setU16(26, 0)}, flags: FlagChecksumRewritten},
		{name: "IP ID rewritten", fam: IPv4, spec: "stun", o: quoteOpts{n: 8, mutate: setU16(4, 0x9999)}, flags: FlagIPIDRewritten},
		{name: "source NAT", fam: IPv4, spec: "stun", o: quoteOpts{n: 8, mutate: func(q []byte) { copy(q[12:16], []byte{10, 0, 0, 5}) }}, flags: FlagNATSrc},
		{name: "NAPT port, long quote", fam: IPv4, spec: "stun", o: quoteOpts{mutate: func(q []byte) {
			binary.BigEndian.PutUint16(q[20:], 61000)
			binary.BigEndian.PutUint16(q[26:], 0x4321)
		}}, flags: FlagNATPort | FlagChecksumRewritten | FlagViaTag, viaTag: true},
		{name: "NAPT port, 8-byte quote", fam: IPv4, spec: "stun", o: quoteOpts{n: 8, mutate: setU16(20, 61000)}, err: ErrUnknownProbe},
		{name: "quoted TTL 2", fam: IPv4, spec: "stun", o: quoteOpts{n: 8, ttl: 2}, flags: FlagQuotedTTL},
		{name: "length changed", fam: IPv4, spec: "stun", o: quoteOpts{n: 8, mutate: setU16(2, 60)}, flags: FlagLengthChanged},
		{name: "stale nonce in long quote", fam: IPv4, spec: "stun", o: quoteOpts{mutate: setU16(36, 0xdead)}, err: ErrNonce},
		{name: "v6 flow label changed", fam: IPv6, spec: "stun", o: quoteOpts{n: 8, mutate: func(q []byte) { q[3] ^= 1 }}, flags: FlagFlowLabelChanged},
		{name: "v6 source NAT66", fam: IPv6, spec: "stun", o: quoteOpts{n: 8, mutate: func(q []byte) { q[23] ^= 1 }}, flags: FlagNATSrc},
		{name: "v6 checksum rewritten", fam: IPv6, spec: "stun", o: quoteOpts{n: 8, mutate: setU16(46, 0x1234)}, err: ErrUnknownProbe},
		{name: "v6 checksum rewritten, long quote", fam: IPv6, spec: "stun", o: quoteOpts{mutate: setU16(46, 0x1234)}, flags: FlagChecksumRewritten | FlagViaTag, viaTag: true},
	}
	for _, c := range cases {
		m := NewMatcher(testNonce, 0)
		pkt := sentProbe(t, m, udpFlow(c.fam), id, c.spec, 10)
		r, err := parseRouterReply(t, c.fam, routerFor(c.fam), routerReply(t, pkt, routerFor(c.fam), c.o))
		if err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		mr, err := m.Match(&r, 20)
		if !errors.Is(err, c.err) {
			t.Fatalf("%s: err %v, want %v", c.name, err, c.err)
		}
		if err == nil && (mr.Flags != c.flags || mr.Probe.ID != id) {
			t.Errorf("%s: flags %v, want %v", c.name, mr.Flags, c.flags)
		}
	}
}

func TestStaleAndUnknownRejected(t *testing.T) {
	id := mustID(t, 4, 1)
	m := NewMatcher(testNonce, 2*time.Second)
	f := udpFlow(IPv4)
	pkt := sentProbe(t, m, f, id, "stun", int64(10*time.Second))
	r, err := ParseICMPv4(routerReply(t, pkt, router4, quoteOpts{n: 8}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Match(&r, int64(9*time.Second)); err != ErrStale {
		t.Errorf("reply before send: %v", err)
	}
	if _, err := m.Match(&r, int64(13*time.Second)); err != ErrStale {
		t.Errorf("reply after timeout: %v", err)
	}
	// Another id of the same flow (e.g. a previous attempt) is unknown.
	other := r
	other.ID = mustID(t, 4, 0)
	other.QuotedIPID, other.QuotedChecksum = uint16(other.ID), uint16(other.ID)
	if _, err := m.Match(&other, int64(11*time.Second)); err != ErrUnknownProbe {
		t.Errorf("other id: %v", err)
	}
	// Another destination.
	other = r
	other.Quoted.Dst = netip.MustParseAddr("198.51.100.8")
	if _, err := m.Match(&other, int64(11*time.Second)); err != ErrUnknownProbe {
		t.Errorf("other dst: %v", err)
	}
	if _, err := m.Match(&r, int64(11*time.Second)); err != nil {
		t.Errorf("good reply: %v", err)
	}
	if err := m.Add(Probe{Flow: f, ID: id}); err != ErrProbeExists {
		t.Errorf("re-adding: %v", err)
	}
	m.Remove(f.Dst, f.SPort, id)
	if _, err := m.Match(&r, int64(11*time.Second)); err != ErrUnknownProbe {
		t.Errorf("removed: %v", err)
	}
	sentProbe(t, m, f, id, "stun", 5)
	sentProbe(t, m, f, mustID(t, 5, 1), "stun", 50)
	if n := m.Expire(10); n != 1 || m.Len() != 1 {
		t.Errorf("Expire removed %d, %d left", n, m.Len())
	}
	if _, err := m.Match(&r, 0); err != ErrUnknownProbe {
		t.Errorf("expired: %v", err)
	}
	// A protocol mismatch under the same key is not a match.
	m2 := NewMatcher(testNonce, 0)
	sentProbe(t, m2, withProto(f, ProtoTCP, f.SPort, f.DPort), id, "none", 1)
	if _, err := m2.Match(&r, 0); err != ErrProtoMismatch {
		t.Errorf("proto mismatch: %v", err)
	}
}
