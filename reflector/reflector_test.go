package reflector

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
)

// The reflector's answers must look like real routers' answers to both of turnpath's
// matchers: probe.Matcher (socket engine) and the XDP program (eBPF engine). Probes are
// made by the real builder, answers are checked field by field and then handed to both
// matchers.

var (
	macProber    = []byte{0x02, 0, 0, 0, 0, 0x01}
	macReflector = []byte{0x02, 0, 0, 0, 0, 0x02}
	src4         = netip.MustParseAddr("198.18.255.253")
	src6         = netip.MustParseAddr("fd51:ffff:ffff:ffff::1")
	testNonce    = uint32(0x7e57ab1e)
)

func testConfig(depth int) Config {
	return Config{Depth: depth,
		Responder4: netip.MustParseAddr("198.18.254.0"), Responder6: netip.MustParseAddr("fd51:ffff:ffff:fffe::"),
		Dst4: netip.MustParsePrefix("198.18.0.0/15"), Dst6: netip.MustParsePrefix("fd51::/16"),
		Self4: netip.MustParseAddr("198.18.255.254"), Self6: netip.MustParseAddr("fd51:ffff:ffff:ffff::2")}
}

func loadTest(t *testing.T, depth int) *Objects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: BPF")
	}
	o, err := Load(testConfig(depth))
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func frame(ethertype uint16, pkt []byte) []byte {
	b := make([]byte, 14, 14+len(pkt))
	copy(b[0:6], macReflector)
	copy(b[6:12], macProber)
	binary.BigEndian.PutUint16(b[12:], ethertype)
	return append(b, pkt...)
}

type probeCase struct {
	name  string
	flow  probe.Flow
	pay   string
	ttl   uint8
	depth int
}

func flow(dst string, proto probe.Proto) probe.Flow {
	d := netip.MustParseAddr(dst)
	s := src4
	if d.Is6() {
		s = src6
	}
	return probe.Flow{Src: s, Dst: d, Proto: proto, SPort: 50000, DPort: 3478}
}

func build(t *testing.T, c probeCase) (pkt []byte, id probe.ID, p probe.Payload) {
	t.Helper()
	id, err := probe.MakeID(c.ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err = probe.ParsePayload(c.pay)
	if err != nil {
		t.Fatal(err)
	}
	var b probe.Builder
	pkt, err = b.Build(nil, c.flow, id, c.ttl, 7, testNonce, p)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), pkt...), id, p
}

func TestReflectorAnswers(t *testing.T) {
	const depth = 6
	o := loadTest(t, depth)
	cases := []probeCase{
		{"v4 udp stun hop 3", flow("198.19.1.1", probe.ProtoUDP), "stun", 3, depth},
		{"v4 udp none hop 1", flow("198.19.1.2", probe.ProtoUDP), "none", 1, depth},
		{"v4 udp destination", flow("198.19.1.1", probe.ProtoUDP), "stun", 6, depth},
		{"v4 udp past destination", flow("198.19.1.1", probe.ProtoUDP), "stun", 9, depth},
		{"v4 tcp hop 2", flow("198.19.2.1", probe.ProtoTCP), "none", 2, depth},
		{"v4 tcp destination", flow("198.19.2.1", probe.ProtoTCP), "none", 7, depth},
		{"v4 icmp hop 5", flow("198.18.3.3", probe.ProtoICMP), "none", 5, depth},
		{"v4 icmp destination", flow("198.18.3.3", probe.ProtoICMP), "none", 6, depth},
		{"v6 udp stun hop 4", flow("fd51:1::5", probe.ProtoUDP), "stun", 4, depth},
		{"v6 udp destination", flow("fd51:1::5", probe.ProtoUDP), "turn", 8, depth},
		{"v6 tcp hop 1", flow("fd51:1::6", probe.ProtoTCP), "none", 1, depth},
		{"v6 icmp hop 2", flow("fd51:1::7", probe.ProtoICMP), "none", 2, depth},
		{"v6 icmp destination", flow("fd51:1::7", probe.ProtoICMP), "none", 6, depth},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkt, id, pay := build(t, c)
			v6 := c.flow.Dst.Is6()
			et := uint16(0x0800)
			if v6 {
				et = 0x86dd
			}
			verdict, out, err := o.Run(frame(et, pkt))
			if err != nil {
				t.Fatal(err)
			}
			if verdict != XDPTX {
				t.Fatalf("verdict %d, want XDP_TX", verdict)
			}
			if !bytes.Equal(out[0:6], macProber) || !bytes.Equal(out[6:12], macReflector) {
				t.Errorf("MACs not swapped: dst %x src %x", out[0:6], out[6:12])
			}
			if binary.BigEndian.Uint16(out[12:]) != et {
				t.Errorf("ethertype %#x", binary.BigEndian.Uint16(out[12:]))
			}
			dest := int(c.ttl) >= c.depth
			wantFrom := c.flow.Dst
			if !dest {
				wantFrom = responder(testConfig(depth), c.ttl, v6)
			}
			r := checkAnswer(t, out[14:], pkt, c, v6, dest, wantFrom)
			matchSocket(t, r, c.flow, id, pay, c.ttl)
			matchXDP(t, frame(et, pkt), out, c.flow, id, dest, wantFrom)
		})
	}
}

// responder is the address hop ttl answers from.
func responder(cfg Config, ttl uint8, v6 bool) netip.Addr {
	if !v6 {
		b := cfg.Responder4.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(ttl))
		return netip.AddrFrom4(b)
	}
	b := cfg.Responder6.As16()
	binary.BigEndian.PutUint16(b[14:], binary.BigEndian.Uint16(b[14:])+uint16(ttl))
	return netip.AddrFrom16(b)
}

func replyTTL(hop uint8) uint8 {
	if hop <= 64 {
		return 64 - (hop - 1)
	}
	return 255 - (hop - 1)
}

// checkAnswer checks the IP packet the reflector made and parses it like the socket
// engine does.
func checkAnswer(t *testing.T, ans, sent []byte, c probeCase, v6, dest bool, from netip.Addr) probe.Reply {
	t.Helper()
	echo := dest && c.flow.Proto == probe.ProtoICMP
	var r probe.Reply
	var err error
	if !v6 {
		if probe.Checksum(ans[:20]) != 0 {
			t.Errorf("IPv4 header checksum wrong")
		}
		if got := netip.AddrFrom4([4]byte(ans[12:16])); got != from {
			t.Errorf("from %s, want %s", got, from)
		}
		if got := netip.AddrFrom4([4]byte(ans[16:20])); got != c.flow.Src {
			t.Errorf("to %s, want %s", got, c.flow.Src)
		}
		if ans[8] != replyTTL(c.ttl) {
			t.Errorf("reply TTL %d, want %d", ans[8], replyTTL(c.ttl))
		}
		tl := int(binary.BigEndian.Uint16(ans[2:]))
		if tl != len(ans) {
			t.Errorf("total length %d, frame has %d", tl, len(ans))
		}
		if probe.Checksum(ans[20:tl]) != 0 {
			t.Errorf("ICMP checksum wrong")
		}
		r, err = probe.ParseICMPv4(ans)
	} else {
		if got := netip.AddrFrom16([16]byte(ans[8:24])); got != from {
			t.Errorf("from %s, want %s", got, from)
		}
		if got := netip.AddrFrom16([16]byte(ans[24:40])); got != c.flow.Src {
			t.Errorf("to %s, want %s", got, c.flow.Src)
		}
		if ans[7] != replyTTL(c.ttl) {
			t.Errorf("reply hop limit %d, want %d", ans[7], replyTTL(c.ttl))
		}
		pl := int(binary.BigEndian.Uint16(ans[4:]))
		if 40+pl != len(ans) {
			t.Errorf("payload length %d, frame has %d", pl, len(ans)-40)
		}
		if icmp6Checksum(ans[8:24], ans[24:40], ans[40:40+pl]) != 0 {
			t.Errorf("ICMPv6 checksum wrong")
		}
		r, err = probe.ParseICMPv6(from, int(ans[7]), ans[40:])
	}
	if err != nil {
		t.Fatalf("parse answer: %v", err)
	}
	if r.BadChecksum {
		t.Errorf("parser saw a bad checksum")
	}
	switch {
	case echo:
		if r.Kind != probe.KindEchoReply {
			t.Fatalf("kind %v, want echo reply", r.Kind)
		}
		return r
	case dest:
		if r.Kind != probe.KindUnreachable || (!v6 && (r.ICMPType != 3 || r.ICMPCode != 3)) || (v6 && (r.ICMPType != 1 || r.ICMPCode != 4)) {
			t.Fatalf("kind %v type %d code %d, want port unreachable", r.Kind, r.ICMPType, r.ICMPCode)
		}
	default:
		if r.Kind != probe.KindTimeExceeded || r.ICMPCode != 0 {
			t.Fatalf("kind %v code %d, want time exceeded", r.Kind, r.ICMPCode)
		}
	}
	// The quote is the probe's IP header and first 8 transport bytes, with the TTL a real
	// path leaves in it.
	hl := 20
	if v6 {
		hl = 40
	}
	q := ans[hl+8:]
	if len(q) != hl+8 {
		t.Fatalf("quote of %d bytes, want %d", len(q), hl+8)
	}
	wantTTL := uint8(1)
	if dest {
		wantTTL = c.ttl - uint8(c.depth) + 1
	}
	if r.QuotedTTL != wantTTL {
		t.Errorf("quoted TTL %d, want %d", r.QuotedTTL, wantTTL)
	}
	want := append([]byte(nil), sent[:hl+8]...)
	if !v6 {
		want[8] = wantTTL
		want[10], want[11] = 0, 0
		binary.BigEndian.PutUint16(want[10:], probe.Checksum(want[:20]))
	} else {
		want[7] = wantTTL
	}
	if !bytes.Equal(q, want) {
		t.Errorf("quote\n got %x\nwant %x", q, want)
	}
	return r
}

func icmp6Checksum(src, dst, msg []byte) uint16 {
	ph := make([]byte, 0, 40+len(msg))
	ph = append(ph, src...)
	ph = append(ph, dst...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(msg)))
	ph = append(ph, 0, 0, 0, 58)
	return probe.Checksum(append(ph, msg...))
}

// matchSocket: the socket engine's matcher finds the probe, with no NAT or rewrite flag.
func matchSocket(t *testing.T, r probe.Reply, f probe.Flow, id probe.ID, pay probe.Payload, ttl uint8) {
	t.Helper()
	m := probe.NewMatcher(testNonce, 0)
	pr := probe.Probe{Flow: f, Tag: 7, ID: id, TTL: ttl, Len: uint16(probe.PacketLen(f, pay))}
	if f.Proto == probe.ProtoUDP {
		pr.Checksum = uint16(id)
	}
	if err := m.Add(pr); err != nil {
		t.Fatal(err)
	}
	res, err := m.Match(&r, 0)
	if err != nil {
		t.Fatalf("socket matcher: %v (%s)", err, r.String())
	}
	if res.Probe.ID != id {
		t.Errorf("matched id %v, want %v", res.Probe.ID, id)
	}
	if bad := res.Flags &^ probe.FlagQuotedTTL; bad != 0 {
		t.Errorf("match flags %s", bad)
	}
}

// matchXDP: turnpath's own programs record the probe as sent (TC egress) and match the
// answer (XDP) and drop it.
func matchXDP(t *testing.T, sent, out []byte, f probe.Flow, id probe.ID, dest bool, from netip.Addr) {
	t.Helper()
	objs, err := loader.Load(loader.Config{Proto: uint8(f.Proto), SportLo: f.SPort, SportHi: f.SPort,
		DPort: f.DPort, Nonce: testNonce, Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	rd, err := objs.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if err := objs.SetFlow(1, f.Dst, f.SPort); err != nil {
		t.Fatal(err)
	}
	if _, err := objs.RunTCEgress(sent); err != nil {
		t.Fatal(err)
	}
	verdict, err := objs.RunXDP(out)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := objs.Stats()
	if st.RxMatched != 1 {
		t.Fatalf("turnpath XDP: verdict %d, stats %+v: answer not matched", verdict, st)
	}
	ev, err := rd.Read()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Responder != from || ev.Target != f.Dst.Unmap() || ev.ID != uint16(id) || ev.SPort != f.SPort {
		t.Errorf("event %+v: responder %s target %s id %d sport %d", ev, from, f.Dst, id, f.SPort)
	}
	wantKind := loader.KindTimeExceeded
	if dest {
		wantKind = loader.KindDestUnreach
		if f.Proto == probe.ProtoICMP {
			wantKind = loader.KindEcho
		}
	}
	if ev.Kind != wantKind {
		t.Errorf("event kind %v, want %v", ev.Kind, wantKind)
	}
	if f.Proto == probe.ProtoUDP && !dest && ev.QuotedCsum != uint16(id) {
		t.Errorf("quoted UDP checksum %#x, want the id %#x", ev.QuotedCsum, uint16(id))
	}
}

// Everything that is not a probe into the prefix passes untouched.
func TestReflectorPasses(t *testing.T) {
	o := loadTest(t, 4)
	stun := probeCase{flow: flow("198.19.1.1", probe.ProtoUDP), pay: "stun", ttl: 2}
	pkt, _, _ := build(t, stun)
	self := append([]byte(nil), pkt...)
	copy(self[16:20], testConfig(4).Self4.AsSlice())
	outside := append([]byte(nil), pkt...)
	copy(outside[16:20], []byte{10, 0, 0, 1})
	options := append([]byte(nil), pkt...)
	options[0] = 0x46
	frag := append([]byte(nil), pkt...)
	frag[7] = 0x10
	arp := make([]byte, 28)
	for name, f := range map[string][]byte{
		"arp":        frame(0x0806, arp),
		"to self":    frame(0x0800, self),
		"outside":    frame(0x0800, outside),
		"ip options": frame(0x0800, options),
		"fragment":   frame(0x0800, frag),
		"short":      frame(0x0800, pkt[:24]),
		"no IP":      frame(0x0800, nil),
	} {
		verdict, _, err := o.Run(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if verdict != XDPPass {
			t.Errorf("%s: verdict %d, want XDP_PASS", name, verdict)
		}
	}
	st, err := o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Answered() != 0 || st.Passed == 0 {
		t.Errorf("stats %+v", st)
	}
}
