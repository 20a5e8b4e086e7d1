package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/turnpath/turnpath/probe"
)

// BPF_PROG_TEST_RUN tests on crafted frames. They need root (or CAP_BPF +
// CAP_NET_ADMIN) and skip otherwise.

const (
	sportLo = 40000
	sportHi = 40063
	dportT  = 3478
	nonceT  = 0x5ca1ab1e
)

var (
	local4   = netip.MustParseAddr("192.0.2.1")
	target4  = netip.MustParseAddr("198.51.100.7")
	router4  = netip.MustParseAddr("203.0.113.9")
	stunAlt4 = netip.MustParseAddr("198.51.100.8")
	local6   = netip.MustParseAddr("2001:db8::1")
	target6  = netip.MustParseAddr("2001:db8:1::7")
	router6  = netip.MustParseAddr("2001:db8:2::9")
)

func udpConfig(drop bool) Config {
	return Config{Proto: ProtoUDP, SportLo: sportLo, SportHi: sportHi, DPort: dportT, Nonce: nonceT, Drop: drop}
}

func loadT(t *testing.T, cfg Config) *Objects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF")
	}
	o, err := Load(cfg)
	if err != nil {
		var ve *VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("%+v", err)
		}
		t.Skipf("cannot load BPF: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// registerFlow registers the flow a test probe's flowtag stands for.
func registerFlow(t *testing.T, o *Objects, tag uint32, dst netip.Addr, sport uint16) {
	t.Helper()
	if err := o.SetFlow(tag, dst, sport); err != nil {
		t.Fatal(err)
	}
}

func eventsT(t *testing.T, o *Objects) *EventReader {
	t.Helper()
	rd, err := o.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// readEvents reads exactly n events, then checks that no more are pending.
func readEvents(t *testing.T, rd *EventReader, n int) []Event {
	t.Helper()
	var evs []Event
	rd.SetDeadline(time.Now().Add(2 * time.Second))
	for len(evs) < n {
		e, err := rd.Read()
		if err != nil {
			t.Fatalf("read event %d of %d: %v", len(evs)+1, n, err)
		}
		evs = append(evs, e)
	}
	rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if e, err := rd.Read(); err == nil {
		t.Fatalf("unexpected extra event %+v", e)
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
	return evs
}

func runTC(t *testing.T, o *Objects, frame []byte) {
	t.Helper()
	ret, err := o.RunTCEgress(frame)
	if err != nil {
		t.Fatalf("run tc: %v", err)
	}
	if ret != TCActUnspec {
		t.Fatalf("tc verdict %d, want TC_ACT_UNSPEC", int32(ret))
	}
}

func stats(t *testing.T, o *Objects) Stats {
	t.Helper()
	s, err := o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ---- probes as sent ----

// udpPacket4 is an IPv4 UDP probe (IP ID = UDP checksum = id, DF set).
func udpPacket4(dst netip.Addr, sport, id uint16, ttl uint8) []byte {
	return ipv4(local4, dst, 17, ip4opts{id: id, ttl: ttl, fragOff: 0x4000}, udp(sport, dportT, id, make([]byte, 20)))
}

func udpPacket6(dst netip.Addr, sport, id uint16, hlim uint8) []byte {
	return ipv6(local6, dst, 17, hlim, 0x12345, udp(sport, dportT, id, make([]byte, 20)))
}

// timeExceeded4 wraps a quote into an ICMP Time Exceeded from router4.
func timeExceeded4(from netip.Addr, quote []byte) []byte {
	return eth(etherIPv4, ipv4(from, local4, 1, ip4opts{ttl: 254, id: 999}, icmp(11, 0, [4]byte{}, quote)))
}

func timeExceeded6(from netip.Addr, quote []byte) []byte {
	return eth(etherIPv6, ipv6(from, local6, 58, 253, 0, icmp6(from, local6, 3, 0, [4]byte{}, quote)))
}

func TestTCEgress(t *testing.T) {
	o := loadT(t, udpConfig(true))

	probe4 := eth(etherIPv4, udpPacket4(target4, 40001, 0x0105, 5))
	probe6 := eth(etherIPv6, udpPacket6(target6, 40002, 0x0203, 3))
	vlan := append(append(append([]byte{}, probe4[:12]...), 0x81, 0x00, 0x00, 0x07), probe4[12:]...)

	before := KernelNow()
	runTC(t, o, probe4)
	runTC(t, o, probe6)
	runTC(t, o, eth(etherIPv4, udpPacket4(target4, 40003, 0x0407, 7))[:14+20+8]) // headers only
	runTC(t, o, vlan)

	for _, k := range []ProbeKey{
		{target4, 40001, 0x0105},
		{target6, 40002, 0x0203},
		{target4, 40003, 0x0407},
	} {
		ts, ok := o.SentTimestamp(k)
		if !ok {
			t.Errorf("no sent entry for %+v", k)
			continue
		}
		if ts < before || ts > KernelNow() {
			t.Errorf("%+v: timestamp %d not in [%d, now]", k, ts, before)
		}
	}

	// Not probes: nothing recorded.
	n := stats(t, o).TxSeen
	if n != 4 {
		t.Errorf("TxSeen = %d, want 4", n)
	}
	notProbes := map[string][]byte{
		"sport below range":  eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 9}, udp(sportLo-1, dportT, 9, nil))),
		"sport above range":  eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 9}, udp(sportHi+1, dportT, 9, nil))),
		"other dport":        eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 9}, udp(40001, 53, 9, nil))),
		"tcp":                eth(etherIPv4, ipv4(local4, target4, 6, ip4opts{id: 9}, tcp(40001, dportT, 9<<16, 0, 0x02))),
		"icmp echo":          eth(etherIPv4, buildProbe(t, icmpFlow(target4, 40001), 9, 3, 7, nonceT, "none")),
		"non-first fragment": eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 9, fragOff: 0x0010}, udp(40001, dportT, 9, nil))),
		"ipv6 ext header":    eth(etherIPv6, ipv6(local6, target6, 0, 64, 0, append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udp(40001, dportT, 9, nil)...))),
		"truncated udp":      eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 9}, udp(40001, dportT, 9, nil)))[:14+20+6],
		"arp":                pad(eth(etherARP, make([]byte, 28)), 60),
		"bad ip version":     eth(etherIPv4, append([]byte{0x65}, make([]byte, 19)...)),
	}
	for name, f := range notProbes {
		runTC(t, o, f)
		if got := stats(t, o).TxSeen; got != n {
			t.Errorf("%s: recorded as a probe", name)
			n = got
		}
	}
	if _, ok := o.SentTimestamp(ProbeKey{target4, 40001, 9}); ok {
		t.Error("non-probe recorded")
	}
}

// etherOf is the ethertype for an IP packet.
func etherOf(pkt []byte) uint16 {
	if pkt[0]>>4 == 6 {
		return etherIPv6
	}
	return etherIPv4
}

// TestTCEgressICMP: echo requests made by probe.Builder (DESIGN.md "ICMP
// echo, bit by bit") are recorded under {dst, F, seq}, the key Go derives
// from the packet (probe.ProbeFromPacket: Flow.SPort = ident +' seq, ID = seq).
func TestTCEgressICMP(t *testing.T) {
	o := loadT(t, Config{Proto: ProtoICMP, SportLo: sportLo, SportHi: sportHi})
	probes := []struct {
		name    string
		dst     netip.Addr
		base    uint16 // F
		id      uint16
		payload string
	}{
		{"v4", target4, 40001, 0x0105, "none"},
		{"v6", target6, 40002, 0x0203, "none"},
		{"v4 base < id (end-around carry)", target4, sportLo, 0xa001, "none"},
		{"v6 base < id, attempt 254", target6, sportHi, 0xfe07, "none"},
		{"v4 hex payload", target4, 40010, 0x0307, "hex:deadbeef01"},
		{"v6 hex payload", target6, 40011, 0x0308, "hex:0102030405"},
	}
	before := KernelNow()
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			pkt := buildProbe(t, icmpFlow(p.dst, p.base), p.id, uint8(p.id), 7, nonceT, p.payload)
			l4 := l4Of(pkt)
			want(t, "identifier", binary.BigEndian.Uint16(l4[4:]), echoIdent(p.base, p.id))
			want(t, "seq", binary.BigEndian.Uint16(l4[6:]), p.id)
			key := ProbeKey{p.dst, p.base, p.id}
			gp, err := probe.ProbeFromPacket(pkt, 7, 0)
			if err != nil {
				t.Fatal(err)
			}
			want(t, "Go key", ProbeKey{gp.Flow.Dst, gp.Flow.SPort, uint16(gp.ID)}, key)

			runTC(t, o, eth(etherOf(pkt), pkt))
			ts, ok := o.SentTimestamp(key)
			if !ok {
				t.Fatalf("no sent entry for %+v", key)
			}
			if ts < before || ts > KernelNow() {
				t.Errorf("timestamp %d not in [%d, now]", ts, before)
			}
		})
	}
	n := stats(t, o).TxSeen
	want(t, "TxSeen", n, uint64(len(probes)))

	// Not probes: nothing recorded.
	const base, id = 40001, 0x0105
	data := make([]byte, 8)
	notProbes := map[string][]byte{
		"base below range":     eth(etherIPv4, buildProbe(t, icmpFlow(target4, sportLo-1), id, 3, 7, nonceT, "none")),
		"base above range v6":  eth(etherIPv6, buildProbe(t, icmpFlow(target6, sportHi+1), id, 3, 7, nonceT, "none")),
		"id with ttl byte 0":   eth(etherIPv4, ipv4(local4, target4, 1, ip4opts{id: 0x0100}, icmp(8, 0, echoRest(echoIdent(base, 0x0100), 0x0100), data))),
		"id with attempt 255":  eth(etherIPv4, ipv4(local4, target4, 1, ip4opts{id: 0xff05}, icmp(8, 0, echoRest(echoIdent(base, 0xff05), 0xff05), data))),
		"v6 id with ttl 0":     eth(etherIPv6, ipv6(local6, target6, 58, 3, 0, icmp6(local6, target6, 128, 0, echoRest(echoIdent(base, 0x0200), 0x0200), data))),
		"echo reply going out": eth(etherIPv4, ipv4(local4, target4, 1, ip4opts{id: id}, icmp(0, 0, echoRest(echoIdent(base, id), id), data))),
		"code 1":               eth(etherIPv4, ipv4(local4, target4, 1, ip4opts{id: id}, icmp(8, 1, echoRest(echoIdent(base, id), id), data))),
		"icmpv4 over ipv6":     eth(etherIPv6, ipv6(local6, target6, 1, 3, 0, icmp(8, 0, echoRest(echoIdent(base, id), id), data))),
		"udp":                  eth(etherIPv4, udpPacket4(target4, base, id, 3)),
		"truncated echo":       eth(etherIPv4, buildProbe(t, icmpFlow(target4, base), 0x0106, 3, 7, nonceT, "none"))[:14+20+7],
	}
	for name, f := range notProbes {
		runTC(t, o, f)
		if got := stats(t, o).TxSeen; got != n {
			t.Errorf("%s: recorded as a probe", name)
			n = got
		}
	}
}

func TestTCEgressTCP(t *testing.T) {
	// SYN only; id = seq >> 16.
	ot := loadT(t, Config{Proto: ProtoTCP, SportLo: sportLo, SportHi: sportHi, DPort: 443})
	runTC(t, ot, eth(etherIPv4, ipv4(local4, target4, 6, ip4opts{id: 0x0301, ttl: 1}, tcp(40010, 443, 0x0301<<16, 0, 0x02))))
	runTC(t, ot, eth(etherIPv4, ipv4(local4, target4, 6, ip4opts{id: 1}, tcp(40011, 443, 0x0302<<16, 5, 0x14)))) // RST+ACK: not a probe
	if _, ok := ot.SentTimestamp(ProbeKey{target4, 40010, 0x0301}); !ok {
		t.Error("TCP SYN probe not recorded")
	}
	if _, ok := ot.SentTimestamp(ProbeKey{target4, 40011, 0x0302}); ok {
		t.Error("TCP RST recorded as a probe")
	}
}

type xdpCase struct {
	name    string
	seed    [][]byte // frames run through TC egress first
	flows   map[uint32]ProbeKey
	frame   []byte
	runs    int // default 1
	verdict uint32
	events  int
	check   func(t *testing.T, evs []Event)
	stats   func(t *testing.T, d Stats)
}

func (s Stats) sub(b Stats) Stats {
	return Stats{
		TxSeen: s.TxSeen - b.TxSeen, TxUpdateErr: s.TxUpdateErr - b.TxUpdateErr,
		RxMatched: s.RxMatched - b.RxMatched, RxNoTx: s.RxNoTx - b.RxNoTx,
		RxUnmatchedICMP: s.RxUnmatchedICMP - b.RxUnmatchedICMP, RingbufDrops: s.RingbufDrops - b.RingbufDrops,
		Truncated: s.Truncated - b.Truncated, STUNNoFlow: s.STUNNoFlow - b.STUNNoFlow,
		TxForeign: s.TxForeign - b.TxForeign, RxForeign: s.RxForeign - b.RxForeign,
	}
}

// rxHook is where the reply matcher (rx_frame) runs: XDP, or TCX ingress for a run that
// found the XDP hook taken. Cases state XDP verdicts; at TCX ingress XDPDrop stands for
// TCXDrop and XDPPass for TCX_NEXT (TCActUnspec).
type rxHook struct {
	name       string
	run        func(*Objects, []byte) (uint32, error)
	drop, pass uint32
}

var (
	atXDP = rxHook{"xdp", (*Objects).RunXDP, XDPDrop, XDPPass}
	atTCX = rxHook{"tcx", (*Objects).RunTCXIngress, TCXDrop, TCActUnspec}
)

// verdict is the hook's verdict for an XDP one.
func (h rxHook) verdict(xdp uint32) uint32 {
	switch xdp {
	case XDPDrop:
		return h.drop
	case XDPPass:
		return h.pass
	}
	return xdp
}

func runXDPCases(t *testing.T, o *Objects, cases []xdpCase) {
	runRxCases(t, o, atXDP, cases)
}

// runRxCases runs the cases through the matcher at hook h.
func runRxCases(t *testing.T, o *Objects, h rxHook, cases []xdpCase) {
	rd := eventsT(t, o)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range c.seed {
				runTC(t, o, f)
			}
			for tag, k := range c.flows {
				if err := o.SetFlow(tag, k.Dst, k.SPort); err != nil {
					t.Fatal(err)
				}
			}
			before := stats(t, o)
			runs := max(c.runs, 1)
			for range runs {
				ret, err := h.run(o, c.frame)
				if err != nil {
					t.Fatalf("run %s: %v", h.name, err)
				}
				if w := h.verdict(c.verdict); ret != w {
					t.Fatalf("%s verdict %d, want %d", h.name, int32(ret), int32(w))
				}
			}
			evs := readEvents(t, rd, c.events)
			if c.check != nil {
				c.check(t, evs)
			}
			if c.stats != nil {
				c.stats(t, stats(t, o).sub(before))
			}
		})
	}
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// stunFromExt parses an event's ext (KindSTUN) as the eBPF engine does.
func stunFromExt(e Event) (probe.Reply, error) {
	return probe.ParseSTUNAnswer(netip.AddrPortFrom(e.Responder, e.DPort), e.Ext, nonceT)
}

func parseSTUNExt(t *testing.T, e Event) probe.Reply {
	t.Helper()
	r, err := stunFromExt(e)
	if err != nil {
		t.Fatalf("ParseSTUNAnswer(ext %x): %v", e.Ext, err)
	}
	return r
}

// mappedT is the XOR-MAPPED-ADDRESS of the crafted STUN answers (a NAT).
var mappedT = netip.MustParseAddrPort("203.0.113.50:61000")

// The STUN classes (package probe is shadowed in TestXDPUDP).
const (
	classSuccess = probe.STUNSuccess
	classError   = probe.STUNError
)

func TestXDPUDP(t *testing.T) {
	o := loadT(t, udpConfig(true))

	// STUN answers whose message bytes must show up in Event.Ext.
	stunBinding := stunAnswer(0x0101, nonceT, 11, 0x0102, append(xorMapped4(mappedT), stunAttr(0x8022, []byte("test"))...))
	stunAlloc401 := stunAnswer(0x0113, nonceT, 12, 0x0203, bytes.Join([][]byte{
		errorCode(401, "Unauthorized"),
		stunAttr(0x0015, []byte("0123456789abcdef")), // NONCE
		stunAttr(0x0014, []byte("turnpath.test")),    // REALM
	}, nil))
	stunBinding6 := stunAnswer(0x0101, nonceT, 13, 0x0304, xorMapped4(mappedT))
	stunBig := stunAnswer(0x0101, nonceT, 14, 0x0102, append(xorMapped4(mappedT), stunAttr(0x8022, bytes.Repeat([]byte{'s'}, 150))...))
	// UDP length claims the whole 401 answer, the frame holds 28 bytes of it.
	stunCut := eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57, totalLen: 20 + 8 + len(stunAlloc401)},
		udp(dportT, 40031, 0, stunAlloc401[:28])))
	binary.BigEndian.PutUint16(stunCut[14+20+4:], uint16(8+len(stunAlloc401)))
	// UDP length 16: 8 bytes of STUN message, the rest of the frame is not.
	stunShortLen := eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40035, 0, stunAnswer(0x0101, nonceT, 16, 0x0102, nil))))
	binary.BigEndian.PutUint16(stunShortLen[14+20+4:], 16)
	stunZeroLen := append([]byte{}, stunShortLen...)
	binary.BigEndian.PutUint16(stunZeroLen[14+20+4:], 0)

	probe := udpPacket4(target4, 40001, 0x0105, 1)
	probeEth := eth(etherIPv4, udpPacket4(target4, 40001, 0x0105, 5)) // as sent: TTL 5
	probe6 := udpPacket6(target6, 40002, 0x0203, 1)

	// RFC 4884: original datagram padded to 128 bytes (length 32 words),
	// then an extension structure with an RFC 4950 MPLS object.
	ext := mplsExtension(16004, 24001)
	rest := [4]byte{0, 32, 0, 0}
	te4ext := eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 250}, icmp(11, 0, rest, append(pad(append([]byte{}, probe...), 128), ext...))))
	// ICMPv6: length in 64-bit words, at byte 4.
	te6ext := eth(etherIPv6, ipv6(router6, local6, 58, 60, 0, icmp6(router6, local6, 3, 0, [4]byte{16, 0, 0, 0}, append(pad(append([]byte{}, probe6...), 128), ext...))))
	bigExt := append([]byte{0x20, 0, 0, 0}, bytes.Repeat([]byte{0xee}, 200)...)
	te4big := eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 250}, icmp(11, 0, rest, append(pad(append([]byte{}, probe...), 128), bigExt...))))

	// Quote with IPv4 options (ihl 6) in the quoted header.
	probeOpts := ipv4(local4, target4, 17, ip4opts{id: 0x0106, ttl: 1, options: []byte{1, 1, 1, 0}}, udp(40001, dportT, 0x0106, make([]byte, 20)))

	cases := []xdpCase{
		{
			name:    "time exceeded v4 full quote",
			seed:    [][]byte{probeEth},
			frame:   timeExceeded4(router4, probe),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindTimeExceeded)
				want(t, "family", e.Family, 4)
				want(t, "proto", e.Proto, 17)
				want(t, "responder", e.Responder, router4)
				want(t, "target", e.Target, target4)
				want(t, "quoted src", e.QuotedSrc, local4)
				want(t, "sport", e.SPort, 40001)
				want(t, "dport", e.DPort, dportT)
				want(t, "id", e.ID, 0x0105)
				want(t, "icmp type", e.ICMPType, 11)
				want(t, "icmp code", e.ICMPCode, 0)
				want(t, "quoted ttl", e.QuotedTTL, 1)
				want(t, "reply ttl", e.ReplyTTL, 254)
				want(t, "quoted ipid", e.QuotedIPID, 0x0105)
				want(t, "quoted csum", e.QuotedCsum, 0x0105)
				want(t, "quoted len", e.QuotedLen, uint16(len(probe)))
				want(t, "flags", e.Flags, FlagReplyIPID)
				want(t, "reply ip id", e.ReplyIPID, binary.BigEndian.Uint16(timeExceeded4(router4, probe)[14+4:]))
				want(t, "ext", len(e.Ext), 0)
				if e.TxNs == 0 || e.RxNs < e.TxNs {
					t.Errorf("tx %d rx %d", e.TxNs, e.RxNs)
				}
				want(t, "key", e.Key(), ProbeKey{target4, 40001, 0x0105})
			},
			stats: func(t *testing.T, d Stats) {
				want(t, "matched", d.RxMatched, 1)
				want(t, "no tx", d.RxNoTx, 0)
			},
		},
		{
			// Nothing says it is ours (no `sent` entry, no nonce in 8 bytes):
			// another run's or program's, passed and not reported.
			name:    "time exceeded v4 8-byte quote without sent entry",
			frame:   timeExceeded4(router4, udpPacket4(target4, 40005, 0x0207, 1)[:28]),
			verdict: XDPPass, events: 0,
			stats: func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1); want(t, "matched", d.RxMatched, 0) },
		},
		{
			name:    "time exceeded v4 quote with IP options",
			seed:    [][]byte{eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 0x0106, ttl: 6, options: []byte{1, 1, 1, 0}}, udp(40001, dportT, 0x0106, make([]byte, 20))))},
			frame:   timeExceeded4(router4, probeOpts),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "id", evs[0].ID, 0x0106)
				want(t, "quoted len", evs[0].QuotedLen, uint16(len(probeOpts)))
			},
		},
		{
			name:    "time exceeded v6",
			seed:    [][]byte{eth(etherIPv6, udpPacket6(target6, 40002, 0x0203, 3))},
			frame:   timeExceeded6(router6, probe6),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindTimeExceeded)
				want(t, "family", e.Family, 6)
				want(t, "responder", e.Responder, router6)
				want(t, "target", e.Target, target6)
				want(t, "quoted src", e.QuotedSrc, local6)
				want(t, "sport", e.SPort, 40002)
				want(t, "id", e.ID, 0x0203)
				want(t, "icmp type", e.ICMPType, 3)
				want(t, "quoted ttl", e.QuotedTTL, 1)
				want(t, "reply ttl", e.ReplyTTL, 253)
				want(t, "flow label", e.QuotedFlowLabel, 0x12345)
				want(t, "quoted csum", e.QuotedCsum, 0x0203)
				if e.TxNs == 0 {
					t.Error("no tx timestamp")
				}
			},
		},
		{
			name:    "port unreachable from the target",
			seed:    [][]byte{eth(etherIPv4, udpPacket4(target4, 40007, 0x0a01, 1))},
			frame:   eth(etherIPv4, ipv4(target4, local4, 1, ip4opts{ttl: 60}, icmp(3, 3, [4]byte{}, udpPacket4(target4, 40007, 0x0a01, 1)))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindDestUnreach)
				want(t, "code", e.ICMPCode, 3)
				want(t, "responder", e.Responder, target4)
				want(t, "target", e.Target, target4)
				want(t, "id", e.ID, 0x0a01)
			},
		},
		{
			name:    "port unreachable v6",
			seed:    [][]byte{eth(etherIPv6, udpPacket6(target6, 40008, 0x0a02, 2))},
			frame:   eth(etherIPv6, ipv6(target6, local6, 58, 60, 0, icmp6(target6, local6, 1, 4, [4]byte{}, udpPacket6(target6, 40008, 0x0a02, 1)))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "kind", evs[0].Kind, KindDestUnreach)
				want(t, "code", evs[0].ICMPCode, 4)
				want(t, "id", evs[0].ID, 0x0a02)
			},
		},
		{
			name:    "RFC 4884 + RFC 4950 MPLS extension v4",
			frame:   te4ext,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				if !bytes.Equal(e.Ext, ext) {
					t.Errorf("ext = %x, want %x", e.Ext, ext)
				}
				want(t, "icmp info", e.ICMPInfo, 32<<16)
				want(t, "flags", e.Flags&FlagExtTrunc, 0)
			},
		},
		{
			name:    "bytes after the IP packet are not extension bytes",
			frame:   append(append([]byte{}, te4ext...), 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				if !bytes.Equal(evs[0].Ext, ext) {
					t.Errorf("ext = %x, want %x", evs[0].Ext, ext)
				}
			},
		},
		{
			name:    "RFC 4884 extension v6",
			seed:    [][]byte{eth(etherIPv6, udpPacket6(target6, 40002, 0x0203, 3))},
			frame:   te6ext,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				if !bytes.Equal(evs[0].Ext, ext) {
					t.Errorf("ext = %x, want %x", evs[0].Ext, ext)
				}
			},
		},
		{
			name:    "extension longer than 128 bytes",
			frame:   te4big,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "ext len", len(evs[0].Ext), ExtMax)
				want(t, "ext trunc", evs[0].Flags&FlagExtTrunc, FlagExtTrunc)
				if !bytes.Equal(evs[0].Ext, bigExt[:ExtMax]) {
					t.Error("ext bytes differ")
				}
			},
		},
		{
			name:    "extension length beyond the frame",
			frame:   eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 250}, icmp(11, 0, [4]byte{0, 40, 0, 0}, probe))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) { want(t, "ext len", len(evs[0].Ext), 0) },
		},
		{
			name:    "STUN success answer",
			seed:    [][]byte{eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 0x0102, ttl: 2}, udp(40020, dportT, 0x0102, stunAnswer(0x0001, nonceT, 7, 0x0102, nil))))},
			flows:   map[uint32]ProbeKey{7: {Dst: target4, SPort: 40020}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40020, 0, stunAnswer(0x0101, nonceT, 7, 0x0102, make([]byte, 12))))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindSTUN)
				want(t, "stun type", e.STUNType, 0x0101)
				want(t, "flowtag", e.FlowTag, 7)
				want(t, "responder", e.Responder, target4)
				want(t, "target", e.Target, target4)
				want(t, "sport", e.SPort, 40020)
				want(t, "dport", e.DPort, dportT)
				want(t, "id", e.ID, 0x0102)
				want(t, "reply ttl", e.ReplyTTL, 57)
				want(t, "flags", e.Flags, FlagNonce|FlagReplyIPID)
				if e.TxNs == 0 {
					t.Error("no tx timestamp")
				}
			},
		},
		{
			name:    "STUN error answer from another address of the server",
			seed:    [][]byte{eth(etherIPv4, ipv4(local4, target4, 17, ip4opts{id: 0x0203, ttl: 3}, udp(40021, dportT, 0x0203, stunAnswer(0x0003, nonceT, 8, 0x0203, nil))))},
			flows:   map[uint32]ProbeKey{8: {Dst: target4, SPort: 40021}},
			frame:   eth(etherIPv4, ipv4(stunAlt4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40021, 0, stunAnswer(0x0113, nonceT, 8, 0x0203, nil)))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "stun type", e.STUNType, 0x0113)
				want(t, "responder", e.Responder, stunAlt4)
				want(t, "target", e.Target, target4)
				want(t, "id", e.ID, 0x0203)
				if e.TxNs == 0 {
					t.Error("no tx timestamp")
				}
			},
		},
		{
			name:    "STUN answer v6 with unknown flowtag",
			frame:   eth(etherIPv6, ipv6(target6, local6, 17, 57, 0, udp(dportT, 40022, 0, stunAnswer(0x0101, nonceT, 99, 0x0304, nil)))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "family", e.Family, 6)
				want(t, "responder", e.Responder, target6)
				want(t, "target valid", e.Target.IsValid(), false)
				want(t, "flags", e.Flags, FlagNoFlow|FlagNoTx|FlagNonce)
				want(t, "sport", e.SPort, 40022)
			},
			stats: func(t *testing.T, d Stats) { want(t, "stun no flow", d.STUNNoFlow, 1) },
		},
		{
			name:    "STUN answer with another nonce",
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40020, 0, stunAnswer(0x0101, nonceT+1, 7, 0x0102, nil)))),
			verdict: XDPPass,
		},
		{
			name:    "STUN answer to a port outside the range",
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, sportHi+1, 0, stunAnswer(0x0101, nonceT, 7, 0x0102, nil)))),
			verdict: XDPPass,
		},
		{
			name:    "truncated STUN answer",
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40020, 0, stunAnswer(0x0101, nonceT, 7, 0x0102, nil)[:12]))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "truncated", d.Truncated, 1) },
		},
		{
			name:    "STUN Binding success: ext holds the message with XOR-MAPPED-ADDRESS",
			flows:   map[uint32]ProbeKey{11: {Dst: target4, SPort: 40030}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40030, 0, stunBinding))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindSTUN)
				want(t, "ext len", len(e.Ext), len(stunBinding))
				want(t, "ext trunc", e.Flags&FlagExtTrunc, 0)
				if !bytes.Equal(e.Ext, stunBinding) {
					t.Errorf("ext = %x, want %x", e.Ext, stunBinding)
				}
				r := parseSTUNExt(t, e)
				want(t, "mapped", r.STUN.Mapped, mappedT)
				want(t, "class", r.STUN.Class, classSuccess)
			},
		},
		{
			name:    "STUN Allocate 401: ext holds the message with ERROR-CODE",
			flows:   map[uint32]ProbeKey{12: {Dst: target4, SPort: 40031}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40031, 0, stunAlloc401))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "stun type", e.STUNType, 0x0113)
				want(t, "ext len", len(e.Ext), len(stunAlloc401))
				want(t, "ext trunc", e.Flags&FlagExtTrunc, 0)
				if !bytes.Equal(e.Ext, stunAlloc401) {
					t.Errorf("ext = %x, want %x", e.Ext, stunAlloc401)
				}
				r := parseSTUNExt(t, e)
				want(t, "error code", r.STUN.ErrorCode, 401)
				want(t, "class", r.STUN.Class, classError)
			},
		},
		{
			name:    "STUN answer v6: ext holds the message",
			flows:   map[uint32]ProbeKey{13: {Dst: target6, SPort: 40032}},
			frame:   eth(etherIPv6, ipv6(target6, local6, 17, 57, 0, udp(dportT, 40032, 0, stunBinding6))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				if !bytes.Equal(evs[0].Ext, stunBinding6) {
					t.Errorf("ext = %x, want %x", evs[0].Ext, stunBinding6)
				}
			},
		},
		{
			name:    "STUN answer longer than 128 bytes: first 128 bytes, truncated flag",
			flows:   map[uint32]ProbeKey{14: {Dst: target4, SPort: 40033}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40033, 0, stunBig))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "ext len", len(e.Ext), ExtMax)
				want(t, "ext trunc", e.Flags&FlagExtTrunc, FlagExtTrunc)
				if !bytes.Equal(e.Ext, stunBig[:ExtMax]) {
					t.Errorf("ext = %x, want %x", e.Ext, stunBig[:ExtMax])
				}
			},
		},
		{
			name:    "STUN answer of exactly 128 bytes is not truncated",
			flows:   map[uint32]ProbeKey{15: {Dst: target4, SPort: 40034}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40034, 0, stunBig[:ExtMax]))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "ext len", len(evs[0].Ext), ExtMax)
				want(t, "ext trunc", evs[0].Flags&FlagExtTrunc, 0)
			},
		},
		{
			name:    "STUN header only: 20 bytes of ext",
			flows:   map[uint32]ProbeKey{16: {Dst: target4, SPort: 40035}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40035, 0, stunAnswer(0x0101, nonceT, 16, 0x0102, nil)))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				if w := stunAnswer(0x0101, nonceT, 16, 0x0102, nil); !bytes.Equal(evs[0].Ext, w) {
					t.Errorf("ext = %x, want %x", evs[0].Ext, w)
				}
			},
		},
		{
			name:    "STUN answer with 1..3 trailing bytes: they are dropped",
			flows:   map[uint32]ProbeKey{16: {Dst: target4, SPort: 40035}},
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40035, 0, append(append([]byte{}, stunBinding...), 1, 2, 3)))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				if !bytes.Equal(evs[0].Ext, stunBinding) {
					t.Errorf("ext = %x, want %x", evs[0].Ext, stunBinding)
				}
			},
		},
		{
			name:    "STUN answer cut by the frame end (UDP length beyond it)",
			flows:   map[uint32]ProbeKey{12: {Dst: target4, SPort: 40031}},
			frame:   stunCut,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "ext len", len(e.Ext), 28)
				if !bytes.Equal(e.Ext, stunAlloc401[:28]) {
					t.Errorf("ext = %x, want %x", e.Ext, stunAlloc401[:28])
				}
				if _, err := stunFromExt(e); err == nil {
					t.Error("ParseSTUNAnswer accepted a cut message")
				}
			},
		},
		{
			name:    "STUN answer with a UDP length shorter than the header",
			flows:   map[uint32]ProbeKey{16: {Dst: target4, SPort: 40035}},
			frame:   stunShortLen,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "ext len", len(evs[0].Ext), 8)
			},
		},
		{
			name:    "STUN answer with UDP length 0: no ext",
			flows:   map[uint32]ProbeKey{16: {Dst: target4, SPort: 40035}},
			frame:   stunZeroLen,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "ext len", len(evs[0].Ext), 0)
			},
		},
		{
			name:    "time exceeded quoting another port",
			frame:   timeExceeded4(router4, ipv4(local4, target4, 17, ip4opts{id: 5, ttl: 1}, udp(33434, 33435, 5, nil))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
		{
			name:    "time exceeded quoting another dport",
			frame:   timeExceeded4(router4, ipv4(local4, target4, 17, ip4opts{id: 5, ttl: 1}, udp(40001, 53, 5, nil))),
			verdict: XDPPass,
		},
		{
			name:    "time exceeded quoting TCP",
			frame:   timeExceeded4(router4, ipv4(local4, target4, 6, ip4opts{id: 5, ttl: 1}, tcp(40001, dportT, 5<<16, 0, 2))),
			verdict: XDPPass,
		},
		{
			name:    "time exceeded quoting a non-first fragment",
			frame:   timeExceeded4(router4, ipv4(local4, target4, 17, ip4opts{id: 5, ttl: 1, fragOff: 0x0003}, udp(40001, dportT, 5, nil))),
			verdict: XDPPass,
		},
		{
			name:    "truncated quote (7 transport bytes)",
			frame:   timeExceeded4(router4, probe[:27]),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "truncated", d.Truncated, 1) },
		},
		{
			name:    "truncated quote (IP header cut)",
			frame:   timeExceeded4(router4, probe[:12]),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "truncated", d.Truncated, 1) },
		},
		{
			name:    "truncated frame (cut inside the ICMP header)",
			frame:   timeExceeded4(router4, probe)[:14+20+5],
			verdict: XDPPass,
		},
		{
			name:    "outer fragment",
			frame:   eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 250, fragOff: 0x2000}, icmp(11, 0, [4]byte{}, probe))),
			verdict: XDPPass,
		},
		{
			name:    "outer IPv6 extension header",
			frame:   eth(etherIPv6, ipv6(router6, local6, 0, 60, 0, append([]byte{58, 0, 1, 4, 0, 0, 0, 0}, icmp6(router6, local6, 3, 0, [4]byte{}, probe6)...))),
			verdict: XDPPass,
		},
		{
			name:    "quoted IPv6 extension header",
			frame:   timeExceeded6(router6, ipv6(local6, target6, 44, 1, 0, append([]byte{17, 0, 0, 1, 0, 0, 0, 1}, udp(40002, dportT, 0x0203, nil)...))),
			verdict: XDPPass,
		},
		{
			name:    "echo reply in UDP mode",
			frame:   eth(etherIPv4, echoReplyOf(buildProbe(t, icmpFlow(target4, 40001), 0x0102, 9, 7, nonceT, "none"), 60)),
			verdict: XDPPass,
		},
		{
			name:    "plain UDP",
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 60}, udp(53, 40001, 0, make([]byte, 30)))),
			verdict: XDPPass,
		},
		{
			name:    "arp",
			frame:   pad(eth(etherARP, make([]byte, 28)), 60),
			verdict: XDPPass,
		},
		{
			name:    "runt",
			frame:   eth(etherIPv4, []byte{0x45}),
			verdict: XDPPass,
		},
		{
			name:    "duplicate reply: one event per copy",
			frame:   timeExceeded4(router4, probe),
			runs:    2,
			verdict: XDPDrop, events: 2,
			check: func(t *testing.T, evs []Event) {
				if evs[0].Key() != evs[1].Key() || evs[0].TxNs != evs[1].TxNs || evs[0].TxNs == 0 {
					t.Errorf("duplicates differ: %+v / %+v", evs[0], evs[1])
				}
			},
		},
	}
	runXDPCases(t, o, cases)
}

func TestXDPNoDrop(t *testing.T) {
	o := loadT(t, udpConfig(false))
	probe := udpPacket4(target4, 40001, 0x0105, 1)
	runXDPCases(t, o, []xdpCase{
		{
			name:    "time exceeded passes when drop is off",
			seed:    [][]byte{eth(etherIPv4, udpPacket4(target4, 40001, 0x0105, 5))},
			frame:   timeExceeded4(router4, probe),
			verdict: XDPPass, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "id", evs[0].ID, 0x0105)
				if evs[0].TxNs == 0 {
					t.Error("no tx")
				}
			},
		},
		{
			name:    "STUN passes when drop is off",
			frame:   eth(etherIPv4, ipv4(target4, local4, 17, ip4opts{ttl: 57}, udp(dportT, 40020, 0, stunAnswer(0x0101, nonceT, 7, 0x0102, nil)))),
			verdict: XDPPass, events: 1,
		},
	})
}

// goReply parses a reply IP packet (ICMP or ICMPv6) with the Go parser.
func goReply(t *testing.T, pkt []byte) probe.Reply {
	t.Helper()
	var r probe.Reply
	var err error
	if pkt[0]>>4 == 6 {
		r, err = probe.ParseICMPv6(netip.AddrFrom16([16]byte(pkt[8:24])), int(pkt[7]), pkt[40:])
	} else {
		r, err = probe.ParseICMPv4(pkt)
	}
	if err != nil {
		t.Fatalf("Go parser: %v", err)
	}
	return r
}

// sameAsGo checks that the kernel's event names the probe the Go reply
// parser names: source port (ICMP echo: base F; Quoted.SPort), id, echo
// identifier, probe destination; and that both read the same packet-too-big
// MTU out of it.
func sameAsGo(t *testing.T, e Event, reply []byte) {
	t.Helper()
	r := goReply(t, reply)
	want(t, "sport vs Go", e.SPort, r.Quoted.SPort)
	want(t, "id vs Go", e.ID, uint16(r.ID))
	if e.Proto == ProtoICMP || e.Proto == ProtoICMPv6 {
		want(t, "identifier vs Go", e.DPort, r.ICMPIdent)
	}
	want(t, "target vs Go", e.Target, r.Quoted.Dst)
	// probe.ParseICMPv4 files Fragmentation Needed under Unreachable (its code 4)
	// with the MTU set; either way it is what the kernel calls packet too big.
	goTooBig := r.Kind == probe.KindPacketTooBig || e.Family == 4 && r.Kind == probe.KindUnreachable && r.ICMPCode == 4
	want(t, "packet too big vs Go", e.Kind == KindPacketTooBig, goTooBig)
	want(t, "MTU vs Go", e.MTU(), r.MTU)
}

func TestXDPICMPEcho(t *testing.T) {
	o := loadT(t, Config{Proto: ProtoICMP, SportLo: sportLo, SportHi: sportHi, Drop: true})

	// Probes as sent (Go builder) and as a router quotes them (TTL 1).
	sent := func(dst netip.Addr, base, id uint16, payload string) []byte {
		return buildProbe(t, icmpFlow(dst, base), id, uint8(id), 7, nonceT, payload)
	}
	quoted := func(dst netip.Addr, base, id uint16, payload string) []byte {
		return buildProbe(t, icmpFlow(dst, base), id, 1, 7, nonceT, payload)
	}
	req4 := sent(target4, 40001, 0x0102, "hex:7475726e70617468")
	req6 := sent(target6, 40002, 0x0203, "none")
	wrap4 := sent(target4, sportLo, 0xa001, "none") // F < id
	other := sent(stunAlt4, 40004, 0x0105, "none")  // never seeded
	rep4, rep6, repWrap := echoReplyOf(req4, 55), echoReplyOf(req6, 55), echoReplyOf(wrap4, 55)
	te4 := timeExceeded4(router4, quoted(target4, 40001, 0x0102, "hex:7475726e70617468"))
	te6 := timeExceeded6(router6, quoted(target6, 40002, 0x0203, "none")[:48])
	teWrap := timeExceeded4(router4, quoted(target4, sportLo, 0xa001, "none")[:28])
	unreach := eth(etherIPv4, ipv4(router4, local4, 1, ip4opts{ttl: 250}, icmp(3, 13, [4]byte{}, quoted(target4, 40005, 0x0302, "none"))))
	cs4 := binary.BigEndian.Uint16(l4Of(req4)[2:])
	data := make([]byte, 8)
	echo := func(typ uint8, base, seq uint16) []byte {
		return icmp(typ, 0, echoRest(echoIdent(base, seq), seq), data)
	}

	runXDPCases(t, o, []xdpCase{
		{
			name:    "echo reply v4 with sent entry",
			seed:    [][]byte{eth(etherIPv4, req4)},
			frame:   eth(etherIPv4, rep4),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindEcho)
				want(t, "family", e.Family, 4)
				want(t, "proto", e.Proto, 1)
				want(t, "sport (base F)", e.SPort, 40001)
				want(t, "dport (identifier)", e.DPort, echoIdent(40001, 0x0102))
				want(t, "id", e.ID, 0x0102)
				want(t, "responder", e.Responder, target4)
				want(t, "target", e.Target, target4)
				want(t, "icmp type", e.ICMPType, 0)
				want(t, "reply ttl", e.ReplyTTL, 55)
				want(t, "flags", e.Flags, FlagReplyIPID)
				want(t, "reply ip id", e.ReplyIPID, binary.BigEndian.Uint16(rep4[4:]))
				want(t, "key", e.Key(), ProbeKey{target4, 40001, 0x0102})
				if e.TxNs == 0 || e.RxNs < e.TxNs {
					t.Errorf("tx %d rx %d", e.TxNs, e.RxNs)
				}
				sameAsGo(t, e, rep4)
			},
			stats: func(t *testing.T, d Stats) { want(t, "matched", d.RxMatched, 1) },
		},
		{
			name:    "echo reply v6 with sent entry",
			seed:    [][]byte{eth(etherIPv6, req6)},
			frame:   eth(etherIPv6, rep6),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "family", e.Family, 6)
				want(t, "proto", e.Proto, 58)
				want(t, "sport (base F)", e.SPort, 40002)
				want(t, "dport (identifier)", e.DPort, echoIdent(40002, 0x0203))
				want(t, "id", e.ID, 0x0203)
				want(t, "icmp type", e.ICMPType, 129)
				want(t, "responder", e.Responder, target6)
				want(t, "key", e.Key(), ProbeKey{target6, 40002, 0x0203})
				if e.TxNs == 0 {
					t.Error("no tx")
				}
				sameAsGo(t, e, rep6)
			},
		},
		{
			name:    "echo reply, base < id (end-around carry)",
			seed:    [][]byte{eth(etherIPv4, wrap4)},
			frame:   eth(etherIPv4, repWrap),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "key", e.Key(), ProbeKey{target4, sportLo, 0xa001})
				want(t, "dport (identifier)", e.DPort, echoIdent(sportLo, 0xa001))
				if e.TxNs == 0 {
					t.Error("no tx")
				}
				sameAsGo(t, e, repWrap)
			},
		},
		{
			// Probe-shaped, but this run never sent it (and the run has no nonce
			// to tell): someone else's ping, passed and not reported.
			name:    "echo reply without sent entry is someone else's",
			frame:   eth(etherIPv4, echoReplyOf(other, 55)),
			verdict: XDPPass, events: 0,
			stats: func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1) },
		},
		{
			name:    "someone else's echo reply (base out of range)",
			frame:   eth(etherIPv4, ipv4(target4, local4, 1, ip4opts{ttl: 55}, icmp(0, 0, echoRest(0x1234, 1), data))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
		{
			name:    "echo reply with base in range, ttl byte 0",
			frame:   eth(etherIPv4, ipv4(target4, local4, 1, ip4opts{ttl: 55}, echo(0, 40001, 0x0300))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
		{
			name:    "echo reply v6 with base in range, attempt 255",
			frame:   eth(etherIPv6, ipv6(target6, local6, 58, 55, 0, icmp6(target6, local6, 129, 0, echoRest(echoIdent(40001, 0xff02), 0xff02), data))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
		{
			name:    "echo request to us (someone pings us)",
			frame:   eth(etherIPv4, ipv4(target4, local4, 1, ip4opts{ttl: 55}, echo(8, 40001, 0x0102))),
			verdict: XDPPass,
		},
		{
			name:    "time exceeded v4 quoting an echo probe",
			seed:    [][]byte{eth(etherIPv4, req4)},
			frame:   te4,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindTimeExceeded)
				want(t, "proto", e.Proto, 1)
				want(t, "sport (base F)", e.SPort, 40001)
				want(t, "dport (identifier)", e.DPort, echoIdent(40001, 0x0102))
				want(t, "id", e.ID, 0x0102)
				want(t, "responder", e.Responder, router4)
				want(t, "target", e.Target, target4)
				want(t, "quoted src", e.QuotedSrc, local4)
				want(t, "quoted ttl", e.QuotedTTL, 1)
				want(t, "quoted ipid", e.QuotedIPID, 0x0102)
				want(t, "quoted csum (request checksum)", e.QuotedCsum, cs4)
				want(t, "key", e.Key(), ProbeKey{target4, 40001, 0x0102})
				if e.TxNs == 0 {
					t.Error("no tx")
				}
				sameAsGo(t, e, te4[14:])
			},
		},
		{
			name:    "time exceeded v6 quoting an echo probe (8 bytes)",
			seed:    [][]byte{eth(etherIPv6, req6)},
			frame:   te6,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindTimeExceeded)
				want(t, "proto", e.Proto, 58)
				want(t, "sport (base F)", e.SPort, 40002)
				want(t, "dport (identifier)", e.DPort, echoIdent(40002, 0x0203))
				want(t, "id", e.ID, 0x0203)
				want(t, "target", e.Target, target6)
				if e.TxNs == 0 {
					t.Error("no tx")
				}
				sameAsGo(t, e, te6[14:])
			},
		},
		{
			name:    "time exceeded quoting a base < id echo (8 bytes)",
			seed:    [][]byte{eth(etherIPv4, wrap4)},
			frame:   teWrap,
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				want(t, "key", evs[0].Key(), ProbeKey{target4, sportLo, 0xa001})
				sameAsGo(t, evs[0], teWrap[14:])
			},
		},
		{
			name:    "unreachable quoting an echo without sent entry: someone else's",
			frame:   unreach,
			verdict: XDPPass, events: 0,
			stats: func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1) },
		},
		{
			name:    "time exceeded quoting an echo outside the range",
			frame:   timeExceeded4(router4, quoted(target4, sportHi+1, 0x0102, "none")),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
		{
			name:    "time exceeded quoting an echo with an invalid id",
			frame:   timeExceeded4(router4, ipv4(local4, target4, 1, ip4opts{ttl: 1, id: 0x0200}, echo(8, 40001, 0x0200))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
		{
			name:    "time exceeded quoting an echo reply",
			frame:   timeExceeded4(router4, ipv4(local4, target4, 1, ip4opts{ttl: 1, id: 0x0102}, echo(0, 40001, 0x0102))),
			verdict: XDPPass,
			stats:   func(t *testing.T, d Stats) { want(t, "unmatched", d.RxUnmatchedICMP, 1) },
		},
	})
}

func TestXDPTCP(t *testing.T) {
	o := loadT(t, Config{Proto: ProtoTCP, SportLo: sportLo, SportHi: sportHi, DPort: 443, Drop: true})
	syn := ipv4(local4, target4, 6, ip4opts{id: 0x0301, ttl: 1}, tcp(40010, 443, 0x0301<<16, 0, 0x02))
	runXDPCases(t, o, []xdpCase{
		{
			name:    "SYN-ACK",
			seed:    [][]byte{eth(etherIPv4, syn)},
			frame:   eth(etherIPv4, ipv4(target4, local4, 6, ip4opts{ttl: 50}, tcp(443, 40010, 777, 0x0301<<16+1, 0x12))),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) {
				e := evs[0]
				want(t, "kind", e.Kind, KindTCP)
				want(t, "sport", e.SPort, 40010)
				want(t, "dport", e.DPort, 443)
				want(t, "id", e.ID, 0x0301)
				want(t, "flags", e.TCPFlags, 0x12)
				if e.TxNs == 0 {
					t.Error("no tx")
				}
			},
		},
		{
			name:    "RST+ACK v6 without sent entry: someone else's",
			frame:   eth(etherIPv6, ipv6(target6, local6, 6, 50, 0, tcp(443, 40011, 0, 0x0405<<16+1, 0x14))),
			verdict: XDPPass, events: 0,
			stats: func(t *testing.T, d Stats) { want(t, "foreign", d.RxForeign, 1) },
		},
		{
			name:    "time exceeded quoting the SYN",
			frame:   timeExceeded4(router4, syn[:28]),
			verdict: XDPDrop, events: 1,
			check: func(t *testing.T, evs []Event) { want(t, "id", evs[0].ID, 0x0301) },
		},
		{
			name:    "plain ACK",
			frame:   eth(etherIPv4, ipv4(target4, local4, 6, ip4opts{ttl: 50}, tcp(443, 40010, 777, 5, 0x10))),
			verdict: XDPPass,
		},
	})
}

// TestVerifierComplexity loads every protocol variant and logs what the
// verifier had to do; it fails if a program gets anywhere near the limits.
func TestVerifierComplexity(t *testing.T) {
	for _, cfg := range []Config{
		udpConfig(true),
		{Proto: ProtoTCP, SportLo: 1, SportHi: 65535, DPort: 80},
		{Proto: ProtoICMP, SportLo: 1, SportHi: 65535},
	} {
		o := loadT(t, cfg)
		tc, err := o.tcEgress()
		if err != nil {
			t.Fatal(err)
		}
		ing, err := o.tcxIngress()
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range map[string]interface {
			Info() (*ebpf.ProgramInfo, error)
		}{"xdp_rx": o.objs.XdpRx, "tc_egress": tc, "tcx_egress": o.objs.TcxEgress, "tcx_ingress": ing} {
			info, err := p.Info()
			if err != nil {
				t.Fatal(err)
			}
			n, ok := info.VerifiedInstructions()
			insns, _ := info.Instructions()
			t.Logf("proto %2d %-10s: %4d instructions, %6d verified (%v)", cfg.Proto, name, len(insns), n, ok)
			if ok && n > 200_000 {
				t.Errorf("%s: %d verified instructions", name, n)
			}
		}
		o.Close()
	}
}
