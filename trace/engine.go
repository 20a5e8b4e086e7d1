package trace

import (
	"net/netip"
	"time"
)

// Probe is one packet the scheduler asks an engine to send. The engine owns packet building
// and the table of outstanding probes; the scheduler only thinks in (target, ttl, attempt).
type Probe struct {
	Target  int   // index into the target list
	TTL     uint8 // 1..255
	Attempt uint8 // 0..254
}

// Kind says what a reply means for the trace.
type Kind uint8

const (
	KindTimeExceeded Kind = iota + 1 // an intermediate hop
	KindUnreachable                  // destination unreachable: port unreachable from the target = reached
	KindEcho                         // ICMP echo reply from the target
	KindSTUN                         // the relay's own STUN/TURN answer
	KindTCP                          // SYN-ACK or RST from the target
)

// Reply is one answer matched to a probe.
type Reply struct {
	Probe     Probe
	Kind      Kind
	From      netip.Addr    // the responder (router interface, or the relay's answering address)
	RTT       time.Duration // from kernel timestamps when Kernel is true
	Kernel    bool          // RTT measured from kernel tx/rx timestamps
	ICMPType  uint8
	ICMPCode  uint8
	ReplyTTL  uint8 // TTL/hop limit of the reply as received
	QuotedTTL uint8 // TTL left in the quoted probe (1 expected for Time Exceeded)
	NAT       string
	STUN      *STUNInfo
	MPLS      []MPLSLabel
	Received  time.Time
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

// Reached reports whether the reply comes from the destination (or the relay on its behalf).
func (r *Reply) Reached() bool {
	switch r.Kind {
	case KindSTUN, KindEcho, KindTCP:
		return true
	case KindUnreachable:
		// Port (3) / protocol (2) unreachable, or ICMPv6 port unreachable (4): the probe got there.
		return r.ICMPCode == 3 && r.ICMPType == 3 || r.ICMPCode == 2 && r.ICMPType == 3 || r.ICMPType == 1 && r.ICMPCode == 4
	}
	return false
}

// Engine sends probes and delivers replies matched to them. Implementations: the eBPF engine
// (kernel timestamps, XDP matching) and the socket engine (raw sockets), both in package probe.
type Engine interface {
	Name() string
	// Send transmits one probe; it must not block for long (the scheduler paces).
	Send(p Probe) error
	// Replies delivers matched replies until the engine is closed.
	Replies() <-chan Reply
	// Errors delivers fatal runtime errors (interface gone, socket closed).
	Errors() <-chan error
	Close() error
}

// pacer spaces sends: a token bucket with a burst, so one path's TTLs can leave together
// while the long-run rate stays capped.
type pacer struct {
	interval time.Duration
	burst    float64
	tokens   float64
	last     time.Time
}

func newPacer(rate float64, burst int) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	if burst < 1 {
		burst = 1
	}
	return &pacer{interval: time.Duration(float64(time.Second) / rate), burst: float64(burst), tokens: float64(burst)}
}

// take consumes a token if one is available at now and returns 0; otherwise it returns how
// long until one is, consuming nothing.
func (p *pacer) take(now time.Time) time.Duration {
	if p.interval == 0 {
		return 0
	}
	if !p.last.IsZero() {
		p.tokens += float64(now.Sub(p.last)) / float64(p.interval)
		if p.tokens > p.burst {
			p.tokens = p.burst
		}
	}
	p.last = now
	if p.tokens >= 1 {
		p.tokens--
		return 0
	}
	return time.Duration((1 - p.tokens) * float64(p.interval))
}
