package probe

// Matching: which outstanding probe a parsed Reply answers, and what the reply says about
// the path on the way (NAT, rewritten fields, duplicates). Both engines verify through
// Verify: the socket engine via Matcher, the eBPF engine on the replies the kernel matched.

import (
	"errors"
	"net/netip"
	"time"
)

// Probe is an outstanding probe as the Matcher knows it.
type Probe struct {
	Flow Flow
	Tag  FlowTag
	ID   ID
	TTL  uint8
	Len  uint16 // IP packet length as sent (PacketLen); 0: do not check
	// Checksum is the transport checksum as sent (UDP: the id; ICMP: the
	// flow's constant, see ICMPChecksum; TCP: the SYN's). 0: do not check.
	Checksum uint16
	SentNS   int64 // send time, any monotonic ns clock shared with the rx times
}

// Flags are observations made while matching a reply.
type Flags uint32

// Match flags.
const (
	// FlagDuplicate: this probe was already matched by an earlier reply.
	FlagDuplicate Flags = 1 << iota
	// FlagChecksumRewritten: the quoted transport checksum differs from the
	// one sent while the id still matched (IPv4 UDP: quoted IP ID = id,
	// checksum ≠ id: Dublin traceroute's NAT signal).
	FlagChecksumRewritten
	// FlagIPIDRewritten: IPv4 quoted IP ID ≠ id (matched by checksum/seq).
	FlagIPIDRewritten
	// FlagSeqRewritten: quoted TCP seq ≠ id<<16 (matched by IP ID).
	FlagSeqRewritten
	// FlagNATSrc: quoted source address ≠ the probe's source (NAT on the
	// way out, quoted after translation).
	FlagNATSrc
	// FlagNATPort: quoted source port (ICMP base) ≠ the probe's (matched via
	// the flowtag in a long quote).
	FlagNATPort
	// FlagNATDst: quoted destination address or port ≠ the probe's.
	FlagNATDst
	// FlagNATMapped: STUN (XOR-)MAPPED-ADDRESS ≠ the probe's source address/port.
	FlagNATMapped
	// FlagQuotedTTL: a Time Exceeded quotes a TTL > 1 (the value is in
	// Reply.QuotedTTL): a router that forwards with TTL 1 or rewrites TTLs.
	FlagQuotedTTL
	// FlagLengthChanged: quoted IP length ≠ the length sent.
	FlagLengthChanged
	// FlagFlowLabelChanged: quoted IPv6 flow label ≠ the one sent.
	FlagFlowLabelChanged
	// FlagOtherResponder: an echo reply, TCP or STUN answer came from an
	// address (or STUN port) other than the probe's destination.
	FlagOtherResponder
	// FlagBadChecksum: the reply's own ICMPv4 checksum did not verify.
	FlagBadChecksum
	// FlagViaTag: the probe was found through the reply's flowtag (STUN
	// transaction id / echo data), not through (dst, sport, id).
	FlagViaTag
)

var flagNames = [...]string{"duplicate", "checksum-rewritten", "ipid-rewritten", "seq-rewritten",
	"nat-src", "nat-port", "nat-dst", "nat-mapped", "quoted-ttl", "length-changed",
	"flowlabel-changed", "other-responder", "bad-checksum", "via-tag"}

// String lists the set flags, separated by '|'.
func (f Flags) String() string {
	s := ""
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	return s
}

// Match errors.
var (
	ErrUnknownProbe  = errors.New("probe: reply matches no outstanding probe")
	ErrStale         = errors.New("probe: reply is older than its probe or arrived after the timeout")
	ErrProtoMismatch = errors.New("probe: reply does not fit the probe's protocol")
	ErrProbeExists   = errors.New("probe: a probe with this (dst, sport, id) is already outstanding")
)

// Verify checks that reply r answers probe p (already found by key) and
// returns what it observed. It is a pure function; nonce is this run's nonce.
func Verify(r *Reply, p *Probe, nonce uint32) (Flags, error) {
	var fl Flags
	f := &p.Flow
	if r.HasTag && r.Nonce != nonce {
		return 0, ErrNonce
	}
	if r.BadChecksum {
		fl |= FlagBadChecksum
	}
	switch r.Kind {
	case KindTimeExceeded, KindUnreachable, KindPacketTooBig, KindParamProblem:
		q := &r.Quoted
		if q.Proto != f.Proto {
			return 0, ErrProtoMismatch
		}
		if q.Src != f.Src {
			fl |= FlagNATSrc
		}
		if q.SPort != f.SPort {
			fl |= FlagNATPort
		}
		if q.Dst != f.Dst || (f.Proto != ProtoICMP && q.DPort != f.DPort) {
			fl |= FlagNATDst
		}
		if r.Kind == KindTimeExceeded && r.QuotedTTL > 1 {
			fl |= FlagQuotedTTL
		}
		if p.Len != 0 && r.QuotedLen != p.Len {
			fl |= FlagLengthChanged
		}
		fam := f.Family()
		if fam == IPv6 && q.FlowLabel != f.Label() {
			fl |= FlagFlowLabelChanged
		}
		if fam == IPv4 && r.QuotedIPID != uint16(p.ID) {
			fl |= FlagIPIDRewritten
		}
		switch f.Proto {
		case ProtoUDP:
			if r.QuotedChecksum != uint16(p.ID) {
				fl |= FlagChecksumRewritten
			}
		case ProtoICMP:
			if p.Checksum != 0 && r.QuotedChecksum != p.Checksum {
				fl |= FlagChecksumRewritten
			}
		case ProtoTCP:
			if r.QuotedTCPSeq != uint32(p.ID)<<16 {
				fl |= FlagSeqRewritten
			}
			if p.Checksum != 0 && r.QuoteLen >= HeaderLen(fam)+18 && r.QuotedChecksum != p.Checksum {
				fl |= FlagChecksumRewritten
			}
		}
	case KindEchoReply:
		if f.Proto != ProtoICMP {
			return 0, ErrProtoMismatch
		}
		if r.Responder != f.Dst {
			fl |= FlagOtherResponder
		}
	case KindTCP:
		if f.Proto != ProtoTCP {
			return 0, ErrProtoMismatch
		}
		if r.Responder != f.Dst || r.Quoted.DPort != f.DPort {
			fl |= FlagOtherResponder
		}
	case KindSTUN:
		if f.Proto != ProtoUDP {
			return 0, ErrProtoMismatch
		}
		if r.Responder != f.Dst || r.Quoted.DPort != f.DPort {
			fl |= FlagOtherResponder
		}
		if m := r.STUN.Mapped; m.IsValid() && (m.Addr().Unmap() != f.Src || m.Port() != f.SPort) {
			fl |= FlagNATMapped
		}
	default:
		return 0, ErrProtoMismatch
	}
	return fl, nil
}

// MatchResult is a matched reply.
type MatchResult struct {
	Probe Probe
	Flags Flags
	RTTNS int64 // rxNS - Probe.SentNS
	Count int   // replies matched to this probe so far, this one included
}

type probeKey struct {
	dst   netip.Addr
	sport uint16
	id    ID
}

type probeSlot struct {
	p Probe
	n int
}

// Matcher holds the outstanding probes of a run, keyed like the kernel's
// `sent` map by (dst, sport, id), and the flows by flowtag. It is not safe
// for concurrent use.
type Matcher struct {
	// Nonce is this run's nonce: replies carrying another nonce are stale.
	Nonce uint32
	// Timeout: replies that arrive later than SentNS+Timeout are stale (0:
	// no limit).
	Timeout time.Duration

	probes map[probeKey]int32 // index into slots
	slots  []probeSlot
	free   []int32
	flows  map[FlowTag]Flow
}

// NewMatcher returns an empty Matcher for a run with the given nonce.
func NewMatcher(nonce uint32, timeout time.Duration) *Matcher {
	return &Matcher{Nonce: nonce, Timeout: timeout,
		probes: make(map[probeKey]int32), flows: make(map[FlowTag]Flow)}
}

func keyOf(p *Probe) probeKey { return probeKey{p.Flow.Dst, p.Flow.SPort, p.ID} }

// AddFlow registers a flow under its flowtag (Add does this too).
func (m *Matcher) AddFlow(tag FlowTag, f Flow) { m.flows[tag] = f.Normalize() }

// Flow returns the flow registered under tag.
func (m *Matcher) Flow(tag FlowTag) (Flow, bool) { f, ok := m.flows[tag]; return f, ok }

// Add records an outstanding probe (its flow is normalized, see
// Flow.Normalize). It fails if the same (dst, sport, id) is outstanding.
func (m *Matcher) Add(p Probe) error {
	if !p.ID.Valid() {
		return ErrInvalidID
	}
	p.Flow = p.Flow.Normalize()
	k := keyOf(&p)
	if _, dup := m.probes[k]; dup {
		return ErrProbeExists
	}
	var i int32
	if n := len(m.free); n > 0 {
		i, m.free = m.free[n-1], m.free[:n-1]
		m.slots[i] = probeSlot{p: p}
	} else {
		i = int32(len(m.slots))
		m.slots = append(m.slots, probeSlot{p: p})
	}
	m.probes[k] = i
	if old, ok := m.flows[p.Tag]; !ok || old != p.Flow {
		m.flows[p.Tag] = p.Flow
	}
	return nil
}

// Remove forgets an outstanding probe; later replies to it are rejected.
func (m *Matcher) Remove(dst netip.Addr, sport uint16, id ID) {
	k := probeKey{dst.Unmap(), sport, id}
	if i, ok := m.probes[k]; ok {
		m.release(k, i)
	}
}

func (m *Matcher) release(k probeKey, i int32) {
	delete(m.probes, k)
	m.slots[i] = probeSlot{}
	m.free = append(m.free, i)
}

// Expire forgets the probes sent before beforeNS and returns how many.
func (m *Matcher) Expire(beforeNS int64) int {
	n := 0
	for k, i := range m.probes {
		if m.slots[i].p.SentNS < beforeNS {
			m.release(k, i)
			n++
		}
	}
	return n
}

// Len returns the number of outstanding probes.
func (m *Matcher) Len() int { return len(m.probes) }

// lookup finds the probe a reply belongs to; viaTag says it was found
// through the flowtag.
func (m *Matcher) lookup(r *Reply) (slot *probeSlot, viaTag bool) {
	var dst netip.Addr
	switch r.Kind {
	case KindEchoReply, KindTCP:
		dst = r.Responder
	case KindSTUN:
		// only via the flowtag
	default:
		dst = r.Quoted.Dst
	}
	sport := r.Quoted.SPort
	if dst.IsValid() {
		try := func(id ID) *probeSlot {
			if i, ok := m.probes[probeKey{dst, sport, id}]; ok {
				return &m.slots[i]
			}
			return nil
		}
		if s := try(r.ID); s != nil {
			return s, false
		}
		if r.HasQuote && r.Quoted.Family() == IPv4 {
			// IPv4: the IP ID, the UDP checksum and the TCP seq all carry
			// the id; whichever survived a rewrite finds the probe.
			if ipid := ID(r.QuotedIPID); ipid != r.ID {
				if s := try(ipid); s != nil {
					return s, false
				}
			}
			if ck := ID(r.QuotedChecksum); r.Quoted.Proto == ProtoUDP && ck != r.ID {
				if s := try(ck); s != nil {
					return s, false
				}
			}
		}
	}
	if r.HasTag && r.Nonce == m.Nonce {
		f, ok := m.flows[r.Tag]
		if !ok {
			return nil, false
		}
		id := r.ID
		if r.PayloadID != 0 {
			id = r.PayloadID
		}
		if i, ok := m.probes[probeKey{f.Dst, f.SPort, id}]; ok {
			return &m.slots[i], true
		}
	}
	return nil, false
}

// Match finds and verifies the outstanding probe reply r answers; rxNS is
// the receive time on the probes' clock (0: do not check times). Replies to
// unknown or removed probes, with another run's nonce, arriving before their
// probe was sent or after the timeout are rejected. A second reply to the
// same probe matches with FlagDuplicate.
func (m *Matcher) Match(r *Reply, rxNS int64) (MatchResult, error) {
	if r.HasTag && r.Nonce != m.Nonce {
		return MatchResult{}, ErrNonce
	}
	s, viaTag := m.lookup(r)
	if s == nil {
		return MatchResult{}, ErrUnknownProbe
	}
	fl, err := Verify(r, &s.p, m.Nonce)
	if err != nil {
		return MatchResult{}, err
	}
	if viaTag {
		fl |= FlagViaTag
	}
	var rtt int64
	if rxNS != 0 {
		rtt = rxNS - s.p.SentNS
		if rtt < 0 || (m.Timeout > 0 && rtt > int64(m.Timeout)) {
			return MatchResult{}, ErrStale
		}
	}
	s.n++
	if s.n > 1 {
		fl |= FlagDuplicate
	}
	return MatchResult{Probe: s.p, Flags: fl, RTTNS: rtt, Count: s.n}, nil
}
