// Package engine runs probes for package trace: it builds and sends them (probe.Sender) and
// turns whatever answers into trace.Replies. Two engines share everything but the receive
// path, so they are compared on equal terms:
//
//   - ebpf: TC egress stamps each probe with the kernel's send time, XDP matches the replies
//     in the kernel and hands them over through a ring buffer with the receive time; the RTT
//     is rx-tx of two kernel timestamps.
//   - socket: raw ICMP sockets and UDP sockets bound to the probe's source port (the relay's
//     STUN answers), kernel receive timestamps (SO_TIMESTAMPNS), the send time taken in Go
//     just before sendto, and probe.Matcher for the matching the XDP program does in-kernel.
package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// Config is what both engines need to know.
type Config struct {
	// Flows holds one flow per trace target, in target order. All flows share protocol and
	// destination port; source ports may differ (MDA) but must be few and close together,
	// since the kernel side matches a source port range.
	Flows   []probe.Flow
	Payload probe.Payload
	Nonce   uint32
	// Ifindexes are the interfaces the routes to the targets leave by.
	Ifindexes []int
	// Timeout after which a reply is stale (socket engine's matcher).
	Timeout time.Duration
}

func (c *Config) validate() error {
	if len(c.Flows) == 0 {
		return errors.New("no flows")
	}
	p, d := c.Flows[0].Proto, c.Flows[0].DPort
	for _, f := range c.Flows {
		if f.Proto != p || f.DPort != d {
			return errors.New("all flows must share protocol and destination port")
		}
		if err := f.Validate(); err != nil {
			return fmt.Errorf("flow %v: %w", f, err)
		}
	}
	return nil
}

// families reports which IP versions the flows use.
func (c *Config) families() (v4, v6 bool) {
	for _, f := range c.Flows {
		if f.Family() == probe.IPv4 {
			v4 = true
		} else {
			v6 = true
		}
	}
	return
}

func (c *Config) sportRange() (lo, hi uint16) {
	lo, hi = 0xffff, 0
	for _, f := range c.Flows {
		lo, hi = min(lo, f.SPort), max(hi, f.SPort)
	}
	return
}

// tagOf is the flowtag of target t: 0 is reserved for "none".
func tagOf(t int) probe.FlowTag { return probe.FlowTag(t + 1) }

type flowKey struct {
	dst   netip.Addr
	sport uint16
}

// index finds the target of a reply from (dst, sport) or from a flowtag.
type index struct {
	byKey map[flowKey]int
	n     int
}

func newIndex(flows []probe.Flow) *index {
	ix := &index{byKey: make(map[flowKey]int, len(flows)), n: len(flows)}
	for i, f := range flows {
		ix.byKey[flowKey{f.Dst.Unmap(), f.SPort}] = i
	}
	return ix
}

func (ix *index) lookup(dst netip.Addr, sport uint16) (int, bool) {
	t, ok := ix.byKey[flowKey{dst.Unmap(), sport}]
	return t, ok
}

func (ix *index) byTag(tag uint32) (int, bool) {
	t := int(tag) - 1
	return t, tag != 0 && t < ix.n
}

// toTraceProbe recovers (target, ttl, attempt) from a probe id.
func toTraceProbe(target int, id probe.ID) trace.Probe {
	return trace.Probe{Target: target, TTL: id.TTL(), Attempt: id.Attempt()}
}

func kindOf(k probe.Kind) (trace.Kind, bool) {
	switch k {
	case probe.KindTimeExceeded:
		return trace.KindTimeExceeded, true
	case probe.KindUnreachable:
		return trace.KindUnreachable, true
	case probe.KindEchoReply:
		return trace.KindEcho, true
	case probe.KindSTUN:
		return trace.KindSTUN, true
	case probe.KindTCP:
		return trace.KindTCP, true
	}
	return 0, false
}

func stunInfo(s *probe.STUNInfo) *trace.STUNInfo {
	class := "success"
	if s.Class == probe.STUNError {
		class = "error"
	}
	return &trace.STUNInfo{Class: class, ErrorCode: s.ErrorCode, Mapped: s.Mapped}
}

func mplsOf(ext []byte) []trace.MPLSLabel {
	if len(ext) == 0 {
		return nil
	}
	e, err := probe.ParseExtensions(ext)
	if err != nil {
		return nil
	}
	var out []trace.MPLSLabel
	for _, m := range e.MPLS() {
		out = append(out, trace.MPLSLabel{Label: m.Label, TC: m.TC, S: m.S, TTL: m.TTL})
	}
	return out
}

// natNote turns match flags into the NAT hint of a hop.
func natNote(fl probe.Flags, quotedSrc netip.Addr) string {
	var parts []string
	if fl&probe.FlagNATSrc != 0 {
		parts = append(parts, "source rewritten to "+quotedSrc.String())
	}
	if fl&probe.FlagNATPort != 0 {
		parts = append(parts, "source port rewritten")
	}
	if fl&probe.FlagChecksumRewritten != 0 {
		parts = append(parts, "UDP checksum rewritten")
	}
	if fl&probe.FlagNATDst != 0 {
		parts = append(parts, "destination rewritten")
	}
	if fl&probe.FlagNATMapped != 0 {
		parts = append(parts, "STUN mapped address differs from our source")
	}
	return strings.Join(parts, "; ")
}
