package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

// Kind says what kind of reply an Event is (TP_KIND_* in bpf/turnpath.h).
type Kind uint8

const (
	KindTimeExceeded Kind = 1 // ICMP 11 / ICMPv6 3 quoting a probe
	KindDestUnreach  Kind = 2 // ICMP 3 (not code 4) / ICMPv6 1 quoting a probe
	KindEcho         Kind = 3 // echo reply to an ICMP echo probe
	KindSTUN         Kind = 4 // STUN/TURN answer carrying our nonce
	KindTCP          Kind = 5 // TCP SYN-ACK or RST answering a SYN probe
	// KindPacketTooBig: ICMP 3 code 4 (Fragmentation Needed) / ICMPv6 2 (Packet Too Big)
	// quoting a probe; Event.MTU is the next-hop MTU.
	KindPacketTooBig Kind = 6
)

func (k Kind) String() string {
	switch k {
	case KindTimeExceeded:
		return "time-exceeded"
	case KindDestUnreach:
		return "dest-unreach"
	case KindEcho:
		return "echo"
	case KindSTUN:
		return "stun"
	case KindTCP:
		return "tcp"
	case KindPacketTooBig:
		return "packet-too-big"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event flag bits (TP_F_* in bpf/turnpath.h).
const (
	FlagNoTx     uint8 = 0x01 // no `sent` entry: TxNs is 0
	FlagExtTrunc uint8 = 0x02 // the extension structure / STUN answer was longer than 128 bytes
	FlagNoFlow   uint8 = 0x04 // STUN: flowtag unknown, Target is invalid
	FlagQuoteMF  uint8 = 0x08 // the quoted IPv4 header had MF set
	FlagNonce    uint8 = 0x10 // the reply carries the run's nonce: certainly this run's
	// FlagExtCompat: Ext holds the bytes after a 128-byte quote whose RFC 4884 length
	// field was 0; they are an extension structure only if they look like one (RFC 4884 §5).
	FlagExtCompat uint8 = 0x20
	// FlagReplyIPID: ReplyIPID holds the IP ID of an IPv4 reply's own header.
	FlagReplyIPID uint8 = 0x40
)

// ExtMax is the maximum number of RFC 4884 extension / STUN answer bytes in an Event.
const ExtMax = 128

// eventSize is sizeof(struct tp_event).
const eventSize = int(unsafe.Sizeof(TurnpathTpEvent{}))

// Event is one matched reply, decoded from struct tp_event.
type Event struct {
	Kind   Kind
	Family uint8 // 4 or 6
	Proto  uint8 // probe protocol: 17, 6, 1 (ICMP) or 58 (ICMPv6)

	Responder netip.Addr // source of the reply (router, target or STUN server)
	Target    netip.Addr // probe destination (invalid for STUN with FlagNoFlow)
	QuotedSrc netip.Addr // quoted source address (ICMP errors; NAT detection), else invalid

	SPort uint16 // key source port; ICMP echo: the flow base F = identifier +' seq
	DPort uint16 // probe destination port; ICMP echo: the echo identifier
	ID    uint16 // probe id

	ICMPType, ICMPCode uint8
	// ICMPInfo is ICMP header bytes 4..7 (RFC 4884 length, ...), except for
	// KindPacketTooBig, where the kernel has put the MTU alone there (see MTU).
	ICMPInfo uint32

	QuotedTTL       uint8  // TTL / hop limit in the quote (ICMP errors)
	ReplyTTL        uint8  // TTL / hop limit of the reply itself
	ReplyIPID       uint16 // IP ID of an IPv4 reply's own header (FlagReplyIPID)
	QuotedTOS       uint8  // quoted TOS / traffic class
	QuotedIPID      uint16 // quoted IPv4 ID
	QuotedCsum      uint16 // quoted UDP / ICMP checksum (0 for TCP)
	QuotedLen       uint16 // quoted IPv4 total length / IPv6 payload length
	QuotedFlowLabel uint32 // quoted IPv6 flow label

	STUNType uint16 // STUN message type (KindSTUN)
	FlowTag  uint32 // STUN flowtag (KindSTUN)
	TCPFlags uint8  // TCP flags (KindTCP)

	RxNs, TxNs uint64 // bpf_ktime_get_ns at XDP and at TC egress (0: unknown)
	Flags      uint8  // Flag* bits

	// Ext is the RFC 4884 extension (ICMP errors: header + objects) or the first bytes of
	// the STUN answer (KindSTUN: the message from its header, bounded by the UDP length),
	// at most ExtMax bytes, copied in 32-bit units (a trailing 1..3 bytes are dropped; a
	// well-formed STUN message is a multiple of 4 bytes). FlagExtTrunc: there was more.
	Ext []byte
}

// RTT is RxNs - TxNs, or 0 when the tx timestamp is unknown.
func (e *Event) RTT() time.Duration {
	if e.TxNs == 0 || e.RxNs < e.TxNs {
		return 0
	}
	return time.Duration(e.RxNs - e.TxNs)
}

// MTU is the next-hop MTU a KindPacketTooBig event reports (ICMPv4 bytes 6..7, RFC 1191;
// ICMPv6 bytes 4..7), 0 for every other kind. A Fragmentation Needed from a router older
// than RFC 1191 says 0 too: the MTU is then unknown.
func (e *Event) MTU() uint32 {
	if e.Kind != KindPacketTooBig {
		return 0
	}
	return e.ICMPInfo
}

// Key is the `sent` key the event was matched with.
func (e *Event) Key() ProbeKey {
	return ProbeKey{Dst: e.Target, SPort: e.SPort, ID: e.ID}
}

func optAddr(b [16]byte) netip.Addr {
	if b == ([16]byte{}) {
		return netip.Addr{}
	}
	return addrFrom16(b)
}

// DecodeEvent decodes one ring-buffer record (struct tp_event, host byte order).
func DecodeEvent(raw []byte) (Event, error) {
	var e Event
	err := DecodeEventInto(raw, &e)
	return e, err
}

// DecodeEventInto decodes one record into e without allocating: e.Ext reuses its backing
// array (so it is valid until the next decode into e).
func DecodeEventInto(raw []byte, e *Event) error {
	if len(raw) < eventSize {
		return fmt.Errorf("loader: short event: %d bytes, want %d", len(raw), eventSize)
	}
	var r TurnpathTpEvent
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r)), eventSize), raw)

	ext := e.Ext[:0]
	*e = Event{
		Kind:            Kind(r.Kind),
		Family:          r.Family,
		Proto:           r.Proto,
		Responder:       addrFrom16(r.Responder),
		Target:          optAddr(r.Target),
		QuotedSrc:       optAddr(r.QuotedSrc),
		SPort:           r.Sport,
		DPort:           r.Dport,
		ID:              r.Id,
		ICMPType:        r.IcmpType,
		ICMPCode:        r.IcmpCode,
		ICMPInfo:        r.IcmpInfo,
		QuotedTTL:       r.QuotedTtl,
		ReplyTTL:        r.ReplyTtl,
		ReplyIPID:       r.ReplyIpid,
		QuotedTOS:       r.QuotedTos,
		QuotedIPID:      r.QuotedIpid,
		QuotedCsum:      r.QuotedCsum,
		QuotedLen:       r.QuotedLen,
		QuotedFlowLabel: r.QuotedFlow,
		STUNType:        r.StunType,
		FlowTag:         r.Flowtag,
		TCPFlags:        r.TcpFlags,
		RxNs:            r.RxNs,
		TxNs:            r.TxNs,
		Flags:           r.Flags,
	}
	if n := int(r.ExtLen); n > 0 {
		n = min(n, ExtMax)
		e.Ext = append(ext, r.Ext[:n]...)
	}
	return nil
}

// ringReader is the part of *ringbuf.Reader EventReader uses.
type ringReader interface {
	ReadInto(*ringbuf.Record) error
	SetDeadline(time.Time)
	Close() error
}

// EventReader reads matched replies from the `events` ring buffer. Read, Wait and Close
// may be called from different goroutines; Read and Drain are serialised internally.
type EventReader struct {
	rd   ringReader
	ring *netRing // nil with the fallback reader: no Drain, Wait reads
	mu   sync.Mutex
	rec  ringbuf.Record
	ev   Event // Drain's, reused
}

// ErrClosed is returned by EventReader.Read after Close.
var ErrClosed = os.ErrClosed

// Receive methods (EventReader.Method).
const (
	// RecvNetpoll: the ring buffer's pages read directly, drained in batches (also from
	// the sending loop), waits through the Go netpoller.
	RecvNetpoll = "ring buffer: mmap, batched drain, netpoller"
	// RecvReader: cilium/ebpf's ringbuf.Reader, one record per Read, waits in epoll_wait
	// (the fallback, and the way before).
	RecvReader = "ring buffer: ringbuf.Reader, one event per read"
)

// EventsOptions tune Events.
type EventsOptions struct {
	// Fallback uses cilium/ebpf's ringbuf.Reader instead of the netpoller reader.
	Fallback bool
}

// Events opens a reader on the ring buffer. One reader per Objects.
func (o *Objects) Events() (*EventReader, error) { return o.EventsWithOptions(EventsOptions{}) }

// EventsWithOptions is Events with options. The netpoller reader falls back to cilium's
// reader when the ring cannot be mapped.
func (o *Objects) EventsWithOptions(opts EventsOptions) (*EventReader, error) {
	r := &EventReader{}
	if !opts.Fallback {
		if ring, err := newNetRing(o.objs.Events); err == nil {
			r.ring, r.rd = ring, ring
		}
	}
	if r.rd == nil {
		rd, err := ringbuf.NewReader(o.objs.Events)
		if err != nil {
			return nil, fmt.Errorf("loader: open ring buffer: %w", err)
		}
		r.rd = rd
	}
	if o.drainOnOpen {
		// A pinned ring buffer may hold what an earlier run of the slot left unread:
		// not this run's replies. Its programs are detached, so nothing more comes.
		r.rd.SetDeadline(time.Now())
		for r.rd.ReadInto(&r.rec) == nil {
		}
		r.rd.SetDeadline(time.Time{})
	}
	return r, nil
}

// Method says how events are read: RecvNetpoll or RecvReader.
func (r *EventReader) Method() string {
	if r.ring != nil {
		return RecvNetpoll
	}
	return RecvReader
}

// Read blocks until the next event, the deadline (os.ErrDeadlineExceeded) or
// Close (ErrClosed).
func (r *EventReader) Read() (Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rd.ReadInto(&r.rec); err != nil {
		if errors.Is(err, os.ErrClosed) || errors.Is(err, ringbuf.ErrClosed) {
			return Event{}, ErrClosed
		}
		return Event{}, err
	}
	return DecodeEvent(r.rec.RawSample)
}

// Drain hands the events pending now to fn, one by one while room() says so, without
// waiting, and returns how many it read. The *Event is reused: fn must not keep it (or
// its Ext). With try set it returns 0 at once when another goroutine is reading. Only the
// netpoller reader drains; with the fallback reader Drain returns 0.
func (r *EventReader) Drain(try bool, room func() bool, fn func(*Event)) int {
	if r.ring == nil {
		return 0
	}
	if try {
		if !r.mu.TryLock() {
			return 0
		}
	} else {
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	n := 0
	for room() {
		b, end := r.ring.next()
		if b == nil {
			break
		}
		err := DecodeEventInto(b, &r.ev)
		r.ring.commit(end) // the record is copied out: the kernel may reuse its space
		n++
		if err == nil {
			fn(&r.ev)
		}
	}
	return n
}

// Pending reports whether events may be waiting (the netpoller reader; false otherwise).
func (r *EventReader) Pending() bool { return r.ring != nil && r.ring.pending() }

// Wait blocks until events may be pending, the deadline or Close (ErrClosed). Only for the
// netpoller reader (Drain them then); the fallback reader returns at once.
func (r *EventReader) Wait() error {
	if r.ring == nil {
		return nil
	}
	return r.ring.wait()
}

// SetDeadline makes Read and Wait return os.ErrDeadlineExceeded once t has passed and
// no event is pending; the zero time removes the deadline.
func (r *EventReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close interrupts a blocked Read or Wait and releases the reader.
func (r *EventReader) Close() error { return r.rd.Close() }
