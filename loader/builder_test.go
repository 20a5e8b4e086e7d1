package loader

import (
	"encoding/binary"
	"testing"

	"github.com/turnpath/turnpath/probe"
)

// The end-to-end contract between the Go packet builder and the kernel: a
// probe made by probe.Builder, run through TC egress, is recorded under
// exactly one `sent` key, {dst, sport, id}, the key Go derives from the
// packet (probe.ProbeFromPacket; probe.Matcher keys outstanding probes the
// same way). Where the kernel reads the id on the wire:
//
//	UDP over IPv4   IP ID            UDP over IPv6   UDP checksum
//	TCP SYN         seq >> 16        ICMP echo       sequence (sport = ident +' seq)
func TestBuilderProbeKeys(t *testing.T) {
	icmpCfg := Config{Proto: ProtoICMP, SportLo: sportLo, SportHi: sportHi}
	tcpCfg := Config{Proto: ProtoTCP, SportLo: sportLo, SportHi: sportHi, DPort: 443}
	udp4 := probe.Flow{Src: local4, Dst: target4, Proto: probe.ProtoUDP, SPort: 40001, DPort: dportT}
	udp6 := probe.Flow{Src: local6, Dst: target6, Proto: probe.ProtoUDP, SPort: sportHi, DPort: dportT}
	tcp4 := probe.Flow{Src: local4, Dst: target4, Proto: probe.ProtoTCP, SPort: 40005, DPort: 443}
	tcp6 := probe.Flow{Src: local6, Dst: target6, Proto: probe.ProtoTCP, SPort: 40006, DPort: 443}

	be16 := func(off int) func([]byte) uint16 {
		return func(pkt []byte) uint16 { return binary.BigEndian.Uint16(l4Of(pkt)[off:]) }
	}
	ipID := func(pkt []byte) uint16 { return binary.BigEndian.Uint16(pkt[4:]) }

	cases := []struct {
		name    string
		cfg     Config
		flow    probe.Flow
		id      uint16
		payload string
		wireID  func(pkt []byte) uint16 // the field the kernel takes the id from
		stun    bool                    // also answer it (XDP STUN match)
	}{
		{"udp stun v4", udpConfig(true), udp4, 0x0105, "stun", ipID, true},
		{"udp stun v6", udpConfig(true), udp6, 0x0203, "stun", be16(6), true},
		{"udp turn v4, last attempt", udpConfig(true), udp4, 0xfe40, "turn", ipID, true},
		{"udp odd hex v6 (byte-swapped steering)", udpConfig(true), udp6, 0x0a11, "hex:0102030405", be16(6), false},
		{"tcp syn v4", tcpCfg, tcp4, 0x0301, "none", be16(4), false},
		{"tcp syn v6", tcpCfg, tcp6, 0x0302, "none", be16(4), false},
		{"icmp echo v4", icmpCfg, icmpFlow(target4, 40003), 0x0a02, "none", be16(6), false},
		{"icmp echo v6, base < id", icmpCfg, icmpFlow(target6, sportLo), 0xc805, "hex:aa", be16(6), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			switch {
			case c.payload == "stun" || c.payload == "turn":
				cfg.NonceOff = NonceOffSTUN
			case cfg.Proto == ProtoICMP:
				cfg.NonceOff, cfg.Nonce = NonceOffEcho, nonceT
			}
			o := loadT(t, cfg)
			const tag = 21
			registerFlow(t, o, tag, c.flow.Dst, c.flow.SPort)
			pkt := buildProbe(t, c.flow, c.id, uint8(c.id), tag, nonceT, c.payload)
			key := ProbeKey{Dst: c.flow.Dst, SPort: c.flow.SPort, ID: c.id}

			want(t, "id on the wire", c.wireID(pkt), c.id)
			gp, err := probe.ProbeFromPacket(pkt, tag, 0)
			if err != nil {
				t.Fatal(err)
			}
			want(t, "Go key", ProbeKey{gp.Flow.Dst, gp.Flow.SPort, uint16(gp.ID)}, key)

			runTC(t, o, eth(etherOf(pkt), pkt))
			keys, err := o.sentKeys()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 || keys[0] != key {
				t.Fatalf("sent keys %+v, want exactly [%+v]", keys, key)
			}
			tx, _ := o.SentTimestamp(key)

			if !c.stun {
				return
			}
			// The relay's answer echoes the transaction id (nonce | flowtag |
			// id | steering): XDP resolves it to the same key.
			tid := l4Of(pkt)[8+8 : 8+20]
			if err := o.SetFlow(tag, c.flow.Dst, c.flow.SPort); err != nil {
				t.Fatal(err)
			}
			ans := make([]byte, 20)
			binary.BigEndian.PutUint16(ans[0:], 0x0101)
			binary.BigEndian.PutUint32(ans[4:], 0x2112A442)
			copy(ans[8:], tid)
			var frame []byte
			if c.flow.Dst.Is4() {
				frame = eth(etherIPv4, ipv4(c.flow.Dst, local4, 17, ip4opts{ttl: 57}, udp(dportT, c.flow.SPort, 0, ans)))
			} else {
				frame = eth(etherIPv6, ipv6(c.flow.Dst, local6, 17, 57, 0, udp(dportT, c.flow.SPort, 0, ans)))
			}
			rd := eventsT(t, o)
			ret, err := o.RunXDP(frame)
			if err != nil {
				t.Fatal(err)
			}
			want(t, "verdict", ret, XDPDrop)
			e := readEvents(t, rd, 1)[0]
			want(t, "kind", e.Kind, KindSTUN)
			want(t, "event key", e.Key(), key)
			want(t, "flowtag", e.FlowTag, tag)
			want(t, "tx", e.TxNs, tx)
		})
	}
}
