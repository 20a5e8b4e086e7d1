package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// A small reader for the classic pcap files tcpdump writes (-w), enough to time probes
// and their replies: Ethernet or raw IP link types, micro- or nanosecond timestamps.

// Packet is one captured frame.
type Packet struct {
	Time time.Time
	Data []byte // from the network header (link header removed)
}

const (
	linkEthernet = 1
	linkRaw      = 101
	linkSLL      = 113
)

// ReadPcap parses a pcap file.
func ReadPcap(b []byte) ([]Packet, error) {
	if len(b) < 24 {
		return nil, errors.New("pcap: short file header")
	}
	var bo binary.ByteOrder
	nano := false
	switch m := binary.LittleEndian.Uint32(b); m {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo, nano = binary.LittleEndian, m == 0xa1b23c4d
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo, nano = binary.BigEndian, m == 0x4d3cb2a1
	default:
		return nil, fmt.Errorf("pcap: bad magic %#x (pcapng is not supported)", m)
	}
	link := bo.Uint32(b[20:]) & 0x0fffffff
	var pkts []Packet
	for off := 24; off < len(b); {
		if off+16 > len(b) {
			return pkts, errors.New("pcap: truncated record header")
		}
		sec, frac := int64(bo.Uint32(b[off:])), int64(bo.Uint32(b[off+4:]))
		incl := int(bo.Uint32(b[off+8:]))
		off += 16
		if off+incl > len(b) {
			return pkts, errors.New("pcap: truncated record")
		}
		data := b[off : off+incl]
		off += incl
		if !nano {
			frac *= 1000
		}
		net, ok := stripLink(link, data)
		if !ok {
			continue
		}
		pkts = append(pkts, Packet{Time: time.Unix(sec, frac), Data: net})
	}
	return pkts, nil
}

// stripLink removes the link header; ok is false for non-IP frames.
func stripLink(link uint32, d []byte) ([]byte, bool) {
	var et uint16
	switch link {
	case linkRaw:
		return d, len(d) > 0
	case linkEthernet:
		if len(d) < 14 {
			return nil, false
		}
		et, d = binary.BigEndian.Uint16(d[12:]), d[14:]
		for et == 0x8100 || et == 0x88a8 { // VLAN tags
			if len(d) < 4 {
				return nil, false
			}
			et, d = binary.BigEndian.Uint16(d[2:]), d[4:]
		}
	case linkSLL:
		if len(d) < 16 {
			return nil, false
		}
		et, d = binary.BigEndian.Uint16(d[14:]), d[16:]
	default:
		return nil, false
	}
	return d, et == 0x0800 || et == 0x86dd
}

// ProbeKey names a probe in a capture: its destination and its probe id (the UDP
// checksum, which turnpath steers to the id in both families; see DESIGN.md).
type ProbeKey struct {
	Dst netip.Addr
	ID  uint16
}

// CaptureFlow says which packets of a capture are probes and replies: UDP probes from SPort
// to DPort, ICMP errors quoting them, and STUN answers carrying the flowtag of Targets
// (flowtag i+1 is Targets[i], as turnpath numbers its flows).
type CaptureFlow struct {
	SPort, DPort uint16
	Targets      []netip.Addr
}

// Classify tells whether an IP packet is a probe (out=true) or a reply to one.
func (f CaptureFlow) Classify(ip []byte) (key ProbeKey, out, ok bool) {
	_, dst, proto, l4, ok := ipHeader(ip)
	if !ok {
		return ProbeKey{}, false, false
	}
	switch proto {
	case 17:
		if len(l4) < 8 {
			return ProbeKey{}, false, false
		}
		sp, dp := binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		if sp == f.SPort && dp == f.DPort {
			return ProbeKey{Dst: dst, ID: binary.BigEndian.Uint16(l4[6:])}, true, true
		}
		if sp == f.DPort && dp == f.SPort {
			return f.stunKey(l4[8:])
		}
	case 1, 58:
		if len(l4) < 8 {
			return ProbeKey{}, false, false
		}
		typ := l4[0]
		isErr := (proto == 1 && (typ == 11 || typ == 3)) || (proto == 58 && (typ == 3 || typ == 1))
		if !isErr {
			return ProbeKey{}, false, false
		}
		_, qdst, qproto, ql4, qok := ipHeader(l4[8:])
		if !qok || qproto != 17 || len(ql4) < 8 {
			return ProbeKey{}, false, false
		}
		if binary.BigEndian.Uint16(ql4) != f.SPort || binary.BigEndian.Uint16(ql4[2:]) != f.DPort {
			return ProbeKey{}, false, false
		}
		return ProbeKey{Dst: qdst, ID: binary.BigEndian.Uint16(ql4[6:])}, false, true
	}
	return ProbeKey{}, false, false
}

// stunKey reads the flowtag and probe id from a STUN answer's transaction id (nonce,
// flowtag, probe id, steering; DESIGN.md).
func (f CaptureFlow) stunKey(p []byte) (ProbeKey, bool, bool) {
	if len(p) < 20 || binary.BigEndian.Uint32(p[4:]) != 0x2112a442 {
		return ProbeKey{}, false, false
	}
	tag := int(binary.BigEndian.Uint32(p[12:]))
	if tag < 1 || tag > len(f.Targets) {
		return ProbeKey{}, false, false
	}
	return ProbeKey{Dst: f.Targets[tag-1], ID: binary.BigEndian.Uint16(p[16:])}, false, true
}

// ipHeader parses an IPv4 or IPv6 header (the quote in an ICMP error may be cut short
// after the first 8 transport bytes, which is all we need).
func ipHeader(b []byte) (src, dst netip.Addr, proto uint8, l4 []byte, ok bool) {
	if len(b) < 1 {
		return
	}
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		return src, dst, b[9], b[ihl:], true
	case 6:
		if len(b) < 40 {
			return
		}
		// Extension headers are not followed: turnpath's probes have none.
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		return src, dst, b[6], b[40:], true
	}
	return
}

// CaptureRTTs pairs every probe of a capture with its first reply: the RTT as the wire
// saw it. Probes sent twice with the same key keep the first send time.
func CaptureRTTs(pkts []Packet, f CaptureFlow) map[ProbeKey]time.Duration {
	sent := map[ProbeKey]time.Time{}
	rtt := map[ProbeKey]time.Duration{}
	for _, p := range pkts {
		k, out, ok := f.Classify(p.Data)
		if !ok {
			continue
		}
		if out {
			if _, dup := sent[k]; !dup {
				sent[k] = p.Time
			}
			continue
		}
		if t, ok := sent[k]; ok {
			if _, done := rtt[k]; !done {
				rtt[k] = p.Time.Sub(t)
			}
		}
	}
	return rtt
}
