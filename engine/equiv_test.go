package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// The same replies through both engines' conversion and verification must give the same
// answer: the socket engine parses the packet (probe.Parse*), the eBPF engine runs the
// real XDP program on the frame (BPF_PROG_TEST_RUN) and converts its event (replyOf);
// both verify against the probe sent and convert with traceReply.

const equivNonce = 0x7e57ab1e

var (
	eqLocal4  = netip.MustParseAddr("198.18.1.1")
	eqTarget4 = netip.MustParseAddr("198.19.1.7")
	eqRouter4 = netip.MustParseAddr("198.18.3.2")
	eqNAT4    = netip.MustParseAddr("198.18.99.1")
	eqLocal6  = netip.MustParseAddr("fd51::1")
	eqTarget6 = netip.MustParseAddr("fd51:1:1::7")
	eqRouter6 = netip.MustParseAddr("fd51:0:0:3::2")
)

type equivCase struct {
	name  string
	flow  probe.Flow
	pay   string
	id    probe.ID
	reply func(sent []byte) (ip []byte) // the reply IP packet, given the probe as sent
}

func TestEnginesAgree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF")
	}
	udp4 := probe.Flow{Src: eqLocal4, Dst: eqTarget4, Proto: probe.ProtoUDP, SPort: 50001, DPort: 3478}
	udp6 := probe.Flow{Src: eqLocal6, Dst: eqTarget6, Proto: probe.ProtoUDP, SPort: 50002, DPort: 3478}
	icmp4 := probe.Flow{Src: eqLocal4, Dst: eqTarget4, Proto: probe.ProtoICMP, SPort: 50003}
	icmp6 := probe.Flow{Src: eqLocal6, Dst: eqTarget6, Proto: probe.ProtoICMP, SPort: 50004}
	tcp4 := probe.Flow{Src: eqLocal4, Dst: eqTarget4, Proto: probe.ProtoTCP, SPort: 50005, DPort: 443}
	tcp6 := probe.Flow{Src: eqLocal6, Dst: eqTarget6, Proto: probe.ProtoTCP, SPort: 50006, DPort: 443}

	routerTTL1 := func(sent []byte) []byte { q := clone(sent); setTTL(q, 1); return q }
	te4 := func(from netip.Addr, ext []byte, rest [4]byte) func([]byte) []byte {
		return func(sent []byte) []byte {
			return ip4(from, eqLocal4, 1, 250, icmp4msg(11, 0, rest, append(routerTTL1(sent), ext...)))
		}
	}
	te6 := func(sent []byte) []byte {
		return ip6(eqRouter6, eqLocal6, 58, 61, icmp6msg(eqRouter6, eqLocal6, 3, 0, [4]byte{}, routerTTL1(sent)))
	}
	mpls := mplsExt(19380)
	cases := []equivCase{
		{"time exceeded v4, full quote", udp4, "stun", 0x0103, te4(eqRouter4, nil, [4]byte{})},
		{"time exceeded v4, 8-byte quote", udp4, "stun", 0x0203, func(s []byte) []byte {
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(11, 0, [4]byte{}, routerTTL1(s)[:28]))
		}},
		{"time exceeded v6", udp6, "stun", 0x0104, te6},
		{"time exceeded v4 with RFC 4884 MPLS", udp4, "stun", 0x0105, func(s []byte) []byte {
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(11, 0, [4]byte{0, 32, 0, 0}, append(pad(routerTTL1(s), 128), mpls...)))
		}},
		{"time exceeded v4 with compat MPLS (length 0)", udp4, "stun", 0x0106, func(s []byte) []byte {
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(11, 0, [4]byte{}, append(pad(routerTTL1(s), 128), mpls...)))
		}},
		{"time exceeded v4 with MPLS and an RFC 5837 interface", udp4, "stun", 0x010d, func(s []byte) []byte {
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(11, 0, [4]byte{0, 32, 0, 0}, append(pad(routerTTL1(s), 128), mplsIfaceExt(19380, "ge-0/0/1")...)))
		}},
		{"port unreachable v4 from the target", udp4, "none", 0x0107, func(s []byte) []byte {
			return ip4(eqTarget4, eqLocal4, 1, 58, icmp4msg(3, 3, [4]byte{}, clone(s)))
		}},
		{"port unreachable v6", udp6, "none", 0x0108, func(s []byte) []byte {
			return ip6(eqTarget6, eqLocal6, 58, 57, icmp6msg(eqTarget6, eqLocal6, 1, 4, [4]byte{}, clone(s)))
		}},
		{"fragmentation needed v4", udp4, "stun", 0x0109, func(s []byte) []byte {
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(3, 4, [4]byte{0, 0, 0x05, 0x14}, routerTTL1(s)))
		}},
		{"packet too big v6", udp6, "stun", 0x010c, func(s []byte) []byte {
			return ip6(eqRouter6, eqLocal6, 58, 61, icmp6msg(eqRouter6, eqLocal6, 2, 0, [4]byte{0, 0, 0x05, 0x14}, routerTTL1(s)))
		}},
		{"fragmentation needed v4, 8-byte quote", udp4, "stun", 0x020c, func(s []byte) []byte {
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(3, 4, [4]byte{0, 0, 0x05, 0x14}, routerTTL1(s)[:28]))
		}},
		{"NAT: quoted source rewritten", udp4, "stun", 0x010a, func(s []byte) []byte {
			q := routerTTL1(s)
			copy(q[12:16], eqNAT4.AsSlice())
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(11, 0, [4]byte{}, q))
		}},
		{"NAT: UDP checksum rewritten", udp4, "stun", 0x010b, func(s []byte) []byte {
			q := routerTTL1(s)
			q[26], q[27] = 0x12, 0x34
			return ip4(eqRouter4, eqLocal4, 1, 250, icmp4msg(11, 0, [4]byte{}, q))
		}},
		{"time exceeded quoting an echo v4", icmp4, "none", 0x0202, te4(eqRouter4, nil, [4]byte{})},
		{"time exceeded quoting an echo v6", icmp6, "none", 0x0203, te6},
		{"echo reply v4", icmp4, "none", 0x0304, func(s []byte) []byte { return echoReply(s, 60) }},
		{"echo reply v6", icmp6, "hex:c0ffee", 0x0305, func(s []byte) []byte { return echoReply(s, 60) }},
		{"SYN-ACK v4", tcp4, "none", 0x0306, func(s []byte) []byte { return tcpAnswer(s, 0x12, 59) }},
		{"RST-ACK v6", tcp6, "none", 0x0307, func(s []byte) []byte { return tcpAnswer(s, 0x14, 59) }},
		{"time exceeded quoting a SYN", tcp4, "none", 0x0108, te4(eqRouter4, nil, [4]byte{})},
		{"STUN success v4 with a mapped address", udp4, "stun", 0x0409, func(s []byte) []byte {
			return stunAnswer(s, 0x0101, xorMapped(s, netip.MustParseAddrPort("203.0.113.50:61000")), 57)
		}},
		{"STUN error 401 v6", udp6, "turn", 0x040a, func(s []byte) []byte {
			return stunAnswer(s, 0x0113, errorCode401(), 57)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pay, err := probe.ParsePayload(c.pay)
			if err != nil {
				t.Fatal(err)
			}
			var b probe.Builder
			sent, err := b.Build(nil, c.flow, c.id, c.id.TTL(), 1, equivNonce, pay)
			if err != nil {
				t.Fatal(err)
			}
			sent = clone(sent)
			reply := c.reply(sent)
			p := sentProbe(c.flow, 1, c.id)

			sock, err := viaSocket(reply, c.flow, &p)
			if err != nil {
				t.Fatalf("socket engine: %v", err)
			}
			kern, err := viaKernel(t, sent, reply, c.flow, pay, &p)
			if err != nil {
				t.Fatalf("ebpf engine: %v", err)
			}
			if !reflect.DeepEqual(comparable(sock), comparable(kern)) {
				t.Errorf("engines disagree:\nsocket %+v\nebpf   %+v", comparable(sock), comparable(kern))
			}
			if sock.Kind == 0 || sock.Probe.TTL != c.id.TTL() {
				t.Errorf("reply %+v", sock)
			}
			if c.id == 0x010d { // what text, json and csv show under the hop
				want := []trace.IfaceInfo{{Role: "incoming", IfIndex: 7, Name: "ge-0/0/1", Addr: eqRouter4, MTU: 1500}}
				if !reflect.DeepEqual(sock.Interfaces, want) || len(sock.MPLS) != 1 || sock.MPLS[0].Label != 19380 {
					t.Errorf("extensions: mpls %+v interfaces %+v", sock.MPLS, sock.Interfaces)
				}
			}
			if sock.Kind == probe.KindPacketTooBig && sock.MTU != 1300 {
				t.Errorf("MTU %d, want 1300", sock.MTU)
			}
		})
	}
}

// comparable drops what differs by when and how it was measured.
func comparable(r trace.Reply) trace.Reply {
	r.RTT, r.Kernel, r.Received = 0, false, time.Time{}
	return r
}

// viaSocket is the socket engine's path: parse the packet as its sockets deliver it.
func viaSocket(ip []byte, f probe.Flow, p *probe.Probe) (trace.Reply, error) {
	var r probe.Reply
	var err error
	v6 := ip[0]>>4 == 6
	proto := ip[9]
	if v6 {
		proto = ip[6]
	}
	switch {
	case proto == 17: // the relay's answer on the bound UDP socket
		hl := 20
		if v6 {
			hl = 40
		}
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		ttl := ip[8]
		if v6 {
			src, ttl = netip.AddrFrom16([16]byte(ip[8:24])), ip[7]
		}
		r, err = probe.ParseSTUNAnswer(netip.AddrPortFrom(src, binary.BigEndian.Uint16(ip[hl:])), ip[hl+8:], equivNonce)
		r.ReplyTTL = ttl
	case proto == 6 && !v6:
		r, err = probe.ParseTCPv4(ip)
	case proto == 6:
		r, err = probe.ParseTCPv6(netip.AddrFrom16([16]byte(ip[8:24])), int(ip[7]), ip[40:])
	case !v6:
		r, err = probe.ParseICMPv4(ip)
	default:
		r, err = probe.ParseICMPv6(netip.AddrFrom16([16]byte(ip[8:24])), int(ip[7]), ip[40:])
	}
	if err != nil {
		return trace.Reply{}, err
	}
	fl, err := probe.Verify(&r, p, equivNonce)
	if err != nil {
		return trace.Reply{}, err
	}
	rep, ok := traceReply(0, p.ID, &r, fl, time.Now())
	if !ok {
		return rep, errors.New("not a reply trace uses")
	}
	return rep, nil
}

// viaKernel is the eBPF engine's path: TC egress records the probe, XDP matches the
// reply, and the event is converted and verified.
func viaKernel(t *testing.T, sent, reply []byte, f probe.Flow, pay probe.Payload, p *probe.Probe) (trace.Reply, error) {
	o, err := loader.Load(loader.Config{Proto: uint8(f.Proto), SportLo: f.SPort, SportHi: f.SPort, DPort: f.DPort,
		Nonce: equivNonce, NonceOff: nonceOff(f.Proto, pay), Drop: true})
	if err != nil {
		t.Skipf("cannot load BPF: %v", err)
	}
	defer o.Close()
	rd, err := o.Events()
	if err != nil {
		return trace.Reply{}, err
	}
	defer rd.Close()
	if err := o.SetFlow(1, f.Dst, f.SPort); err != nil {
		return trace.Reply{}, err
	}
	if _, err := o.RunTCEgress(ether(sent)); err != nil {
		return trace.Reply{}, err
	}
	if _, err := o.RunXDP(ether(reply)); err != nil {
		return trace.Reply{}, err
	}
	rd.SetDeadline(time.Now().Add(time.Second))
	ev, err := rd.Read()
	if err != nil {
		return trace.Reply{}, err
	}
	var r probe.Reply
	if !replyOf(&ev, equivNonce, &r) {
		return trace.Reply{}, errors.New("event is no reply")
	}
	fl, err := probe.Verify(&r, p, equivNonce)
	if err != nil {
		return trace.Reply{}, err
	}
	rep, ok := traceReply(0, p.ID, &r, fl, time.Now())
	if !ok {
		return rep, errors.New("not a reply trace uses")
	}
	return rep, nil
}

// ---- packets ----

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func pad(b []byte, n int) []byte {
	for len(b) < n {
		b = append(b, 0)
	}
	return b
}

func setTTL(ip []byte, ttl uint8) {
	if ip[0]>>4 == 6 {
		ip[7] = ttl
		return
	}
	ip[8] = ttl
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], probe.Checksum(ip[:20]))
}

func ether(ip []byte) []byte {
	et := []byte{0x08, 0x00}
	if ip[0]>>4 == 6 {
		et = []byte{0x86, 0xdd}
	}
	f := append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2}, et...)
	return append(f, ip...)
}

func ip4(src, dst netip.Addr, proto, ttl uint8, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], 0x4242)
	h[8], h[9] = ttl, proto
	copy(h[12:16], src.AsSlice())
	copy(h[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], probe.Checksum(h))
	return append(h, payload...)
}

func ip6(src, dst netip.Addr, nh, hlim uint8, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = nh, hlim
	copy(h[8:24], src.AsSlice())
	copy(h[24:40], dst.AsSlice())
	return append(h, payload...)
}

func icmp4msg(typ, code uint8, rest [4]byte, body []byte) []byte {
	m := append([]byte{typ, code, 0, 0, rest[0], rest[1], rest[2], rest[3]}, body...)
	binary.BigEndian.PutUint16(m[2:], probe.Checksum(m))
	return m
}

// icmp6msg: the checksum is left 0 (the kernel verifies it before sockets see the
// message; neither engine looks at it).
func icmp6msg(_, _ netip.Addr, typ, code uint8, rest [4]byte, body []byte) []byte {
	return append([]byte{typ, code, 0, 0, rest[0], rest[1], rest[2], rest[3]}, body...)
}

// echoReply answers an echo request as a host does: type 0/129, everything else echoed.
func echoReply(req []byte, ttl uint8) []byte {
	if req[0]>>4 == 6 {
		m := clone(req[40:])
		m[0] = 129
		return ip6(netip.AddrFrom16([16]byte(req[24:40])), netip.AddrFrom16([16]byte(req[8:24])), 58, ttl, m)
	}
	m := clone(req[20:])
	m[0], m[2], m[3] = 0, 0, 0
	binary.BigEndian.PutUint16(m[2:], probe.Checksum(m))
	return ip4(netip.AddrFrom4([4]byte(req[16:20])), netip.AddrFrom4([4]byte(req[12:16])), 1, ttl, m)
}

// tcpAnswer answers a SYN with flags (SYN-ACK 0x12, RST-ACK 0x14), ack = seq + 1.
func tcpAnswer(syn []byte, flags, ttl uint8) []byte {
	hl := 20
	if syn[0]>>4 == 6 {
		hl = 40
	}
	s := syn[hl:]
	seg := make([]byte, 20)
	copy(seg[0:2], s[2:4])
	copy(seg[2:4], s[0:2])
	binary.BigEndian.PutUint32(seg[4:], 777)
	binary.BigEndian.PutUint32(seg[8:], binary.BigEndian.Uint32(s[4:])+1)
	seg[12], seg[13] = 5<<4, flags
	if hl == 40 {
		return ip6(netip.AddrFrom16([16]byte(syn[24:40])), netip.AddrFrom16([16]byte(syn[8:24])), 6, ttl, seg)
	}
	return ip4(netip.AddrFrom4([4]byte(syn[16:20])), netip.AddrFrom4([4]byte(syn[12:16])), 6, ttl, seg)
}

// stunAnswer is the relay's answer to a STUN probe: its transaction id, the message type
// and attributes given, from port 3478.
func stunAnswer(probePkt []byte, typ uint16, attrs []byte, ttl uint8) []byte {
	hl := 20
	if probePkt[0]>>4 == 6 {
		hl = 40
	}
	u := probePkt[hl:]
	msg := make([]byte, 20, 20+len(attrs))
	binary.BigEndian.PutUint16(msg[0:], typ)
	binary.BigEndian.PutUint16(msg[2:], uint16(len(attrs)))
	copy(msg[4:20], u[8+4:8+20]) // cookie + transaction id
	msg = append(msg, attrs...)
	d := make([]byte, 8, 8+len(msg))
	copy(d[0:2], u[2:4])
	copy(d[2:4], u[0:2])
	binary.BigEndian.PutUint16(d[4:], uint16(8+len(msg)))
	d = append(d, msg...)
	if hl == 40 {
		return ip6(netip.AddrFrom16([16]byte(probePkt[24:40])), netip.AddrFrom16([16]byte(probePkt[8:24])), 17, ttl, d)
	}
	return ip4(netip.AddrFrom4([4]byte(probePkt[16:20])), netip.AddrFrom4([4]byte(probePkt[12:16])), 17, ttl, d)
}

// xorMapped is an XOR-MAPPED-ADDRESS attribute (IPv4) for the probe's transaction.
func xorMapped(_ []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().As4()
	v := []byte{0, 1, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(v[2:], ap.Port()^0x2112)
	binary.BigEndian.PutUint32(v[4:], binary.BigEndian.Uint32(a[:])^0x2112A442)
	return append([]byte{0x00, 0x20, 0, 8}, v...)
}

func errorCode401() []byte {
	reason := []byte("Unauthorized")
	v := append([]byte{0, 0, 4, 1}, reason...)
	a := append([]byte{0x00, 0x09, 0, byte(len(v))}, v...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

// mplsExt is an RFC 4884 extension structure with one RFC 4950 label stack entry.
// mplsIfaceExt is an extension structure with an MPLS label and an RFC 5837 incoming
// interface object (ifIndex 7, the router's address, name, MTU 1500).
func mplsIfaceExt(label uint32, name string) []byte {
	ext := mplsExt(label)[:12]
	obj := []byte{0, 0, 2, 0<<6 | 0x0f, 0, 0, 0, 7, 0, 1, 0, 0}
	obj = append(obj, eqRouter4.AsSlice()...)
	nl := (1 + len(name) + 3) / 4 * 4
	sub := make([]byte, nl)
	sub[0] = byte(nl)
	copy(sub[1:], name)
	obj = append(obj, sub...)
	obj = append(obj, 0, 0, 0x05, 0xdc)
	binary.BigEndian.PutUint16(obj, uint16(len(obj)))
	ext = append(ext, obj...)
	ext[2], ext[3] = 0, 0
	binary.BigEndian.PutUint16(ext[2:], probe.Checksum(ext))
	return ext
}

func mplsExt(label uint32) []byte {
	ext := []byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(ext[8:], label<<12|1<<8|1)
	binary.BigEndian.PutUint16(ext[2:], probe.Checksum(ext))
	return ext
}
