package trace

import (
	"github.com/turnpath/turnpath/probe"
	"net/netip"
	"time"
)

// Probe is one packet the scheduler asks an engine to send. The engine owns packet building
// and the table of outstanding probes; the scheduler only thinks in (target, ttl, attempt).
type Probe struct {
	Target  int   // index into the target list
	TTL     uint8 // 1..255
	Attempt uint8 // 0..254
	// Size is the IP packet length to send (path MTU discovery); 0: the payload's own.
	// Replies do not say it: a reply's Probe has Size 0.
	Size uint16
}

// Reply is one answer matched to a probe.
type Reply struct {
	Probe     Probe
	Kind      probe.Kind    // one vocabulary with the wire package and both engines
	From      netip.Addr    // the responder (router interface, or the relay's answering address)
	RTT       time.Duration // from kernel timestamps when Kernel is true
	Kernel    bool          // RTT measured from kernel tx/rx timestamps
	ICMPType  uint8
	ICMPCode  uint8
	ReplyTTL  uint8 // TTL/hop limit of the reply as received
	QuotedTTL uint8 // TTL left in the quoted probe (1 expected for Time Exceeded)
	// ReplyIPID is the IP ID of an IPv4 ICMP or TCP reply's own header (HasReplyIPID):
	// a router's counter, the evidence alias resolution compares.
	ReplyIPID    uint16
	HasReplyIPID bool
	MTU          uint32 // next-hop MTU of a probe.KindPacketTooBig (0: the router did not say)
	NAT          string
	STUN         *STUNInfo
	MPLS         []MPLSLabel
	// Interfaces are the RFC 5837 interface objects of an ICMP error: which of the
	// router's interfaces the probe came in by or would have left by.
	Interfaces []IfaceInfo
	Received   time.Time
}

// STUNInfo is what the relay said.
type STUNInfo struct {
	Class     string         `json:"class"`                // "success" or "error"
	ErrorCode int            `json:"error_code,omitempty"` // e.g. 401 for an unauthenticated Allocate
	Mapped    netip.AddrPort `json:"mapped"`               // XOR-MAPPED-ADDRESS: our address as the relay sees it
}

// MPLSLabel is one RFC 4950 label stack entry.
type MPLSLabel struct {
	Label uint32 `json:"label"`
	TC    uint8  `json:"tc"`
	S     bool   `json:"s"`
	TTL   uint8  `json:"ttl"`
}

// IfaceInfo is one RFC 5837 Interface Information Object (absent parts zero).
type IfaceInfo struct {
	Role    string     `json:"role"` // incoming, sub-ip, outgoing, next-hop
	IfIndex uint32     `json:"ifindex,omitempty"`
	Name    string     `json:"name,omitempty"`
	Addr    netip.Addr `json:"addr,omitzero"`
	MTU     uint32     `json:"mtu,omitempty"`
}

// Reached reports whether the reply comes from the destination (or the relay on its behalf).
func (r *Reply) Reached() bool {
	switch r.Kind {
	case probe.KindSTUN, probe.KindEchoReply, probe.KindTCP:
		return true
	case probe.KindUnreachable:
		// Port (3) / protocol (2) unreachable, or ICMPv6 port unreachable (4): the probe got there.
		return r.ICMPCode == 3 && r.ICMPType == 3 || r.ICMPCode == 2 && r.ICMPType == 3 || r.ICMPType == 1 && r.ICMPCode == 4
	}
	return false
}

// Engine sends probes and delivers replies matched to them. Implementations: the eBPF engine
// (kernel timestamps, XDP matching) and the socket engine (raw sockets), both in package engine.
type Engine interface {
	Name() string
	// Send transmits one probe; it must not block for long (the scheduler paces).
	Send(p Probe) error
	// Replies delivers matched replies until the engine is closed.
	Replies() <-chan Reply
	// Errors delivers fatal runtime errors (interface gone, socket closed).
	Errors() <-chan error
	// Admit comes before target's first probe and Release after its last reply is
	// wanted: an engine holds a target's flow (its flowtag, its kernel registration)
	// only in between, so memory grows with trace's window, not with the list. Replies
	// for a released target are dropped. An engine given a fixed list of flows has them
	// all from the start (Admit is then a no-op): a special case.
	Admit(target int) error
	Release(target int)
	Close() error
}
