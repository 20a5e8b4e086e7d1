package engine

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// One path from a reply to what trace sees, for both engines: the socket engine parses
// the packet into a probe.Reply, the eBPF engine turns the kernel's event into the same
// type (replyOf); both verify it against the probe that was sent (probe.Verify, directly
// or through probe.Matcher) and convert it with traceReply. The engines cannot drift
// apart: adding a reply kind means teaching probe and replyOf, nothing else here.

// traceReply converts a verified reply to probe id of target t, received at received,
// into trace's terms.
func traceReply(t int, id probe.ID, r *probe.Reply, fl probe.Flags, received time.Time) (trace.Reply, bool) {
	if !usedByTrace(r.Kind) {
		return trace.Reply{}, false
	}
	rep := trace.Reply{
		Probe: toTraceProbe(t, id), Kind: r.Kind, From: r.Responder.Unmap(),
		ICMPType: r.ICMPType, ICMPCode: r.ICMPCode, ReplyTTL: r.ReplyTTL, QuotedTTL: r.QuotedTTL,
		NAT: natNote(fl, r.Quoted.Src), Received: received,
	}
	rep.MPLS, rep.Interfaces = extOf(r.ExtRaw)
	if r.Kind == probe.KindSTUN {
		rep.STUN = stunInfo(&r.STUN)
	}
	rep.MTU = r.MTU
	// A STUN answer reaches the socket engine without its IP header: only ICMP and TCP
	// replies carry the IP ID in both engines.
	if r.HasReplyIPID && r.Kind != probe.KindSTUN {
		rep.ReplyIPID, rep.HasReplyIPID = r.ReplyIPID, true
	}
	return rep, true
}

// sentProbe is the probe of flow f with id as the engines send it: what Verify compares a
// reply with (the socket engine's matcher keeps the same).
func sentProbe(f probe.Flow, tag probe.FlowTag, id probe.ID) probe.Probe {
	p := probe.Probe{Flow: f, Tag: tag, ID: id, TTL: id.TTL()}
	if f.Proto == probe.ProtoUDP {
		p.Checksum = uint16(id)
	}
	return p
}

// replyOf turns a kernel event into the reply the socket engine would have parsed from
// the same packet (Reply.KernelMatched says where the two differ by nature), in r, which
// must be zero (a probe.Reply is about 1 KiB: filled in place, not copied). It returns
// false for an event that cannot be a reply to this run (an unknown kind).
func replyOf(ev *loader.Event, nonce uint32, r *probe.Reply) bool {
	fam := probe.IPv4
	if ev.Family == 6 {
		fam = probe.IPv6
	}
	r.Responder, r.ICMPType, r.ICMPCode = ev.Responder, ev.ICMPType, ev.ICMPCode
	r.ReplyTTL, r.ID, r.KernelMatched = ev.ReplyTTL, probe.ID(ev.ID), true
	if ev.Flags&loader.FlagReplyIPID != 0 {
		r.ReplyIPID, r.HasReplyIPID = ev.ReplyIPID, true
	}
	proto, _ := probe.ProtoFromWire(fam, ev.Proto)
	switch ev.Kind {
	case loader.KindTimeExceeded, loader.KindDestUnreach, loader.KindPacketTooBig:
		switch ev.Kind {
		case loader.KindTimeExceeded:
			r.Kind = probe.KindTimeExceeded
		case loader.KindDestUnreach:
			r.Kind = probe.KindUnreachable
		default: // IPv4 fragmentation needed, ICMPv6 packet too big
			r.Kind, r.MTU = probe.KindPacketTooBig, ev.MTU()
		}
		r.HasQuote = true
		r.Quoted = probe.Flow{Src: ev.QuotedSrc, Dst: ev.Target, Proto: proto, SPort: ev.SPort, DPort: ev.DPort,
			FlowLabel: ev.QuotedFlowLabel}
		r.QuotedTTL, r.QuotedIPID, r.QuotedChecksum = ev.QuotedTTL, ev.QuotedIPID, ev.QuotedCsum
		r.QuotedLen = ev.QuotedLen
		if fam == probe.IPv6 {
			r.QuotedLen += 40 // the kernel reports the payload length, probe the packet's
		}
		switch proto {
		case probe.ProtoICMP:
			// The kernel reports the echo identifier as the port; the flow's base is
			// the sport, as in a parsed quote.
			r.ICMPIdent, r.Quoted.DPort = ev.DPort, 0
		case probe.ProtoTCP:
			r.QuotedTCPSeq = uint32(ev.ID) << 16 // what the kernel keyed on
		}
		if ext := eventExt(ev); len(ext) > 0 {
			r.ExtRaw = ext
			r.Ext, r.ExtErr = probe.ParseExtensions(ext)
		}
	case loader.KindEcho:
		r.Kind = probe.KindEchoReply
		r.ICMPIdent = ev.DPort
		r.Quoted = probe.Flow{Dst: ev.Responder, Proto: probe.ProtoICMP, SPort: ev.SPort}
	case loader.KindTCP:
		r.Kind, r.TCPFlags = probe.KindTCP, ev.TCPFlags
		r.Quoted = probe.Flow{Dst: ev.Responder, Proto: probe.ProtoTCP, SPort: ev.SPort, DPort: ev.DPort}
	case loader.KindSTUN:
		if s, ok := stunOf(ev, nonce); ok {
			s.KernelMatched = true
			*r = s
			return true
		}
		// Not parseable (cut short): the class from the message type alone.
		r.Kind = probe.KindSTUN
		r.Quoted = probe.Flow{Dst: ev.Responder, Proto: probe.ProtoUDP, DPort: ev.DPort}
		r.STUN.Class = probe.STUNSuccess
		if ev.STUNType&0x0110 == 0x0110 {
			r.STUN.Class = probe.STUNError
		}
	default:
		return false
	}
	if ev.Flags&loader.FlagNonce != 0 {
		// The kernel saw the run's nonce in the reply (echo data, a long quote).
		r.HasTag, r.Nonce = true, nonce
	}
	return true
}

// eventExt is the RFC 4884 extension structure of an ICMP error event: what follows the
// quote, or, after a 128-byte quote with the length field 0 (FlagExtCompat), those bytes
// when they look like an extension, as the socket engine decides for the same packet.
func eventExt(ev *loader.Event) []byte {
	if ev.Flags&loader.FlagExtCompat != 0 && !probe.LooksLikeExtension(ev.Ext) {
		return nil
	}
	return ev.Ext
}

// stunOf parses the STUN answer the XDP program copied into ev.Ext (at most loader.ExtMax
// bytes: see loader.Event.Ext) like the socket engine parses the whole datagram. A message
// longer than what was copied (FlagExtTrunc, or cut by the frame) would fail the declared
// length check: it is parsed up to its last attribute that is complete in ev.Ext, so
// ERROR-CODE and XOR-MAPPED-ADDRESS, which servers put first, are still reported.
func stunOf(ev *loader.Event, nonce uint32) (probe.Reply, bool) {
	msg := stunPrefix(ev.Ext)
	if msg == nil {
		return probe.Reply{}, false
	}
	r, err := probe.ParseSTUNAnswer(netip.AddrPortFrom(ev.Responder, ev.DPort), msg, nonce)
	if err != nil {
		return probe.Reply{}, false
	}
	r.ReplyTTL = ev.ReplyTTL
	return r, true
}

// stunHeaderLen is the size of the STUN header (RFC 5389 §6).
const stunHeaderLen = 20

// stunPrefix returns b when it holds the whole STUN message its header declares, else a
// copy cut after the last attribute complete in b with the header's length adjusted, or
// nil when b is shorter than a STUN header.
func stunPrefix(b []byte) []byte {
	if len(b) < stunHeaderLen {
		return nil
	}
	declared := int(binary.BigEndian.Uint16(b[2:]))
	if stunHeaderLen+declared <= len(b) {
		return b
	}
	n := 0 // attribute bytes complete in b
	for attrs := b[stunHeaderLen:]; len(attrs) >= 4; {
		l := 4 + int(binary.BigEndian.Uint16(attrs[2:]))
		l += (4 - l%4) % 4
		if l > len(attrs) || n+l > declared {
			break
		}
		n += l
		attrs = attrs[l:]
	}
	out := append([]byte(nil), b[:stunHeaderLen+n]...)
	binary.BigEndian.PutUint16(out[2:], uint16(n))
	return out
}
