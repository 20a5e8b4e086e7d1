// Package hostnet is the host's side of probing: the raw sockets the probes leave through
// (Sender, RawFile, PrivErr), the kernel's route to a destination (Lookup) and link events
// (WatchLinks). It does the syscalls and netlink requests that package probe, pure wire
// code, leaves out; the engines, session, doctor and bench use it.
package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"time"
	"unsafe"

	"github.com/turnpath/turnpath/probe"
	"golang.org/x/sys/unix"
)

// Sender writes complete IP packets, so turnpath controls the IP ID, the flow label and
// every checksum: one by one (Send) on IPPROTO_RAW sockets (IP_HDRINCL is implied, also
// on IPv6 since Linux 4.5), or in batches (SendBatch) behind their Ethernet header on an
// AF_PACKET socket where the destination allows it (packet.go), else with sendmmsg on
// the raw sockets. Both engines send through it, so they emit identical probes.
type Sender struct {
	fd4, fd6 int
	b        probe.Builder
	buf      []byte

	// SendBatch's message buffers, reused: raw sockets by family, and AF_PACKET.
	raw4, raw6, packet msgBatch
	noBatch            bool // sendmmsg unavailable (or forced off): SendBatch sends one by one

	pc       *packetConn // nil: AF_PACKET off (NoPacket) or unavailable (no capability)
	l2       *l2Cache
	noPacket bool
	ring     bool // UseRing: the TX ring instead of sendmmsg on the AF_PACKET socket
	stats    SendStats
}

// SendStats counts the probes each way carried and the send system calls made.
type SendStats struct {
	Ring, PacketMmsg, RawMmsg, SendTo uint64 // probes sent
	Gen                               uint64 // probes sent by the in-kernel generator (engine.EBPF, BuildFrame)
	Calls                             uint64 // send system calls (sendto, sendmmsg, TX ring flushes)
}

// Send methods (Sender.Method).
const (
	SendRing       = "AF_PACKET TX ring (TPACKET_V2), one send per batch"
	SendPacketMmsg = "sendmmsg on AF_PACKET, batches"
	SendMmsg       = "sendmmsg on raw sockets, batches"
	SendTo         = "sendto on raw sockets, one probe per call"
)

// mmsghdr is struct mmsghdr (linux/socket.h); Go pads it like C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// msgBatch is the messages of one sendmmsg: a buffer, an iovec and an address each,
// sized before a batch is built (so the pointers between them stay valid).
type msgBatch struct {
	pkts  [][]byte
	iovs  []unix.Iovec
	names [][32]byte // a sockaddr_in, sockaddr_in6 or sockaddr_ll
	msgs  []mmsghdr
	n     int
}

func (m *msgBatch) reserve(n int) {
	m.n = 0
	if len(m.msgs) >= n {
		return
	}
	pkts := make([][]byte, n)
	copy(pkts, m.pkts)
	m.pkts = pkts
	m.iovs = make([]unix.Iovec, n)
	m.names = make([][32]byte, n)
	m.msgs = make([]mmsghdr, n)
}

// buf is the next message's buffer, of at least size bytes (a buffer of its own per
// message: Build given nil would use the builder's one buffer for all of them).
func (m *msgBatch) buf(size int) []byte {
	if cap(m.pkts[m.n]) < size {
		m.pkts[m.n] = make([]byte, 0, max(size, 1536))
	}
	return m.pkts[m.n][:size]
}

// add makes pkt (built in buf's buffer) the next message, to the address name.
func (m *msgBatch) add(pkt []byte, name unsafe.Pointer, namelen int) {
	k := m.n
	m.pkts[k] = pkt
	copy(m.names[k][:], unsafe.Slice((*byte)(name), namelen))
	m.iovs[k] = unix.Iovec{Base: &pkt[0]}
	m.iovs[k].SetLen(len(pkt))
	m.msgs[k] = mmsghdr{}
	m.msgs[k].hdr.Iov = &m.iovs[k]
	m.msgs[k].hdr.SetIovlen(1)
	m.msgs[k].hdr.Name = &m.names[k][0]
	m.msgs[k].hdr.Namelen = uint32(namelen)
	m.n++
}

// BatchProbe is one probe of a SendBatch: what Send takes.
type BatchProbe struct {
	Flow    probe.Flow
	ID      probe.ID
	TTL     uint8
	Tag     probe.FlowTag
	Payload probe.Payload
}

// DontFragment sets DF on the IPv4 probes sent from now on (path MTU discovery: a router
// answers a probe too big for the next link with fragmentation needed instead of
// fragmenting it). IPv6 routers never fragment.
func (s *Sender) DontFragment(on bool) { s.b.DontFragment = on }

// NewSender opens the raw sockets for the families needed.
func NewSender(v4, v6 bool) (*Sender, error) {
	s := &Sender{fd4: -1, fd6: -1}
	var err error
	if v4 {
		if s.fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return nil, PrivErr("open raw IPv4 socket", err)
		}
	}
	if v6 {
		if s.fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			s.Close()
			return nil, PrivErr("open raw IPv6 socket", err)
		}
	}
	// Send what is asked whatever path MTU the kernel has learnt (from a Packet Too Big
	// the socket engine lets through): path MTU discovery sends probes bigger than a
	// narrow link on purpose, and a refused send would end the run.
	if s.fd4 >= 0 {
		_ = unix.SetsockoptInt(s.fd4, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	}
	if s.fd6 >= 0 {
		_ = unix.SetsockoptInt(s.fd6, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
	}
	return s, nil
}

// Send builds and writes one probe.
func (s *Sender) Send(f probe.Flow, id probe.ID, ttl uint8, tag probe.FlowTag, nonce uint32, p probe.Payload) error {
	pkt, err := s.b.Build(s.buf[:0], f, id, ttl, tag, nonce, p)
	if err != nil {
		return fmt.Errorf("build probe: %w", err)
	}
	s.buf = pkt
	dst := f.Dst.Unmap()
	if dst.Is4() {
		sa := &unix.SockaddrInet4{Addr: dst.As4()}
		err = unix.Sendto(s.fd4, pkt, 0, sa)
	} else {
		// The port field of a raw IPv6 sockaddr must be 0 (it would be taken as the protocol).
		sa := &unix.SockaddrInet6{Addr: dst.As16()}
		err = unix.Sendto(s.fd6, pkt, 0, sa)
	}
	s.stats.Calls++
	if err != nil {
		return fmt.Errorf("send probe to %s: %w", dst, err)
	}
	s.stats.SendTo++
	return nil
}

// BatchSupported reports whether the kernel has sendmmsg (a call with no messages on a
// UDP socket: nothing is sent, no privilege needed).
func BatchSupported() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var m mmsghdr
	_, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m)), 0, 0, 0, 0)
	return errno != unix.ENOSYS
}

// NoBatch makes SendBatch send probe by probe with sendto (the fallback, forced: tests and
// the benchmark's baseline).
func (s *Sender) NoBatch() { s.noBatch = true }

// NoPacket keeps SendBatch off AF_PACKET: sendmmsg on the raw sockets (forced: tests,
// benchmarks, TURNPATH_SEND).
func (s *Sender) NoPacket() { s.noPacket = true }

// UseRing makes SendBatch fill a TX ring (PACKET_TX_RING) and flush it with one send,
// instead of one sendmmsg on the AF_PACKET socket. On veth (the capacity benchmark)
// it is the slower of the two: the ring's pages reach the device as fragments, which
// veth copies again for XDP (BENCHMARKS.md, capacity); a NIC could take them as they are.
func (s *Sender) UseRing() { s.ring = true }

// Stats returns how many probes each way carried so far, and the system calls made.
func (s *Sender) Stats() SendStats { return s.stats }

// Method says how SendBatch sends to destinations that allow it: AF_PACKET (the TX ring,
// or sendmmsg), else sendmmsg on the raw sockets, or sendto where sendmmsg is
// unavailable or forced off. Destinations AF_PACKET cannot reach (no resolved neighbour
// yet, a multipath route, a device without Ethernet header) always take the raw sockets.
func (s *Sender) Method() string {
	if s.noBatch {
		return SendTo
	}
	if s.packetConn() == nil {
		return SendMmsg
	}
	if s.pc.ring != nil {
		return SendRing
	}
	return SendPacketMmsg
}

// EnablePacket opens the AF_PACKET socket SendBatch sends on where a destination allows
// it, and the netlink socket it reads the routes and neighbours with: both in the
// calling thread's network namespace, the one the probes leave from (call it where
// NewSender was called). Without it, or when it fails,
// SendBatch uses the raw sockets. NoPacket and UseRing must come before it.
func (s *Sender) EnablePacket() {
	if s.noPacket || s.noBatch || s.pc != nil {
		return
	}
	l2, err := newL2Cache()
	if err != nil {
		return
	}
	pc, err := openPacketConn(s.ring)
	if err != nil {
		l2.close()
		return
	}
	s.pc, s.l2 = pc, l2
}

// reopenPacket replaces the AF_PACKET socket (the messages built for the old one's
// sendmmsg stay valid: they carry their own addresses).
func (s *Sender) reopenPacket() {
	old := s.pc
	pc, err := openPacketConn(old.ring != nil)
	if err != nil {
		return // keep the old one: sendmmsg on it still works
	}
	_ = old.close()
	s.pc = pc
}

// packetConn is the AF_PACKET socket; nil when off or unavailable.
func (s *Sender) packetConn() *packetConn {
	if s.noPacket || s.noBatch {
		return nil
	}
	return s.pc
}

// SendBatch builds and writes the probes with as few system calls as it can. A probe
// whose destination has one next hop with a resolved neighbour on an Ethernet device
// leaves by AF_PACKET (the TX ring, one send per batch, or one sendmmsg); the others by
// one sendmmsg per family on the raw sockets (their first probes make the kernel resolve
// the neighbour, so the next batches take AF_PACKET). The IP packets are the same bytes
// Send writes; every one goes through the device's qdisc layer and so TC egress. It
// returns how many were sent and the first error; a probe that fails is skipped and the
// rest still go.
func (s *Sender) SendBatch(ps []BatchProbe, nonce uint32) (int, error) {
	if s.noBatch {
		return s.sendEach(ps, nonce)
	}
	pc := s.packetConn()
	s.raw4.reserve(len(ps))
	s.raw6.reserve(len(ps))
	if pc != nil {
		s.packet.reserve(len(ps))
	}
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	sent := 0
	// The TX ring is flushed per (interface, EtherType): the kernel takes both from
	// the flush's address.
	ringIf, ringProto := 0, uint16(0)
	flushRing := func() {
		if pc == nil || pc.pending == 0 {
			return
		}
		n, err := pc.flushRing(ringIf, ringProto)
		s.stats.Calls++
		s.stats.Ring += uint64(n)
		sent += n
		if err != nil {
			fail(err)
		}
	}
	var now time.Time // one clock read per batch for the L2 cache's ages
	if pc != nil {
		now = time.Now()
	}
	for _, p := range ps {
		dst := p.Flow.Dst.Unmap()
		if pc != nil {
			l2, nudge, err := s.l2.get(p.Flow.Src.Unmap(), dst, now)
			if nudge {
				s.l2.nudge(l2, now) // this one by the raw socket (errNudge)
			}
			if err == nil && !nudge {
				proto := uint16(l2.Header[12])<<8 | uint16(l2.Header[13])
				if pc.ring != nil {
					if l2.Ifindex != ringIf || proto != ringProto || pc.full() {
						flushRing()
						ringIf, ringProto = l2.Ifindex, proto
					}
					if fr := pc.frame(); fr != nil {
						pkt, in, err := s.buildFrame(fr, l2, p, nonce)
						if err != nil {
							fail(err)
							continue
						}
						if in { // else too big for the frame
							pc.commit(14 + len(pkt))
							continue
						}
					}
				}
				buf := s.packet.buf(14 + 1280)
				pkt, in, err := s.buildFrame(buf, l2, p, nonce)
				if err != nil {
					fail(err)
					continue
				}
				if in {
					pkt = buf[:14+len(pkt)]
				} else {
					pkt = append(append(make([]byte, 0, 14+len(pkt)), l2.Header[:]...), pkt...)
				}
				sa := unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(proto), Ifindex: int32(l2.Ifindex)}
				s.packet.add(pkt, unsafe.Pointer(&sa), int(unsafe.Sizeof(sa)))
				continue
			}
		}
		m := &s.raw6
		if dst.Is4() {
			m = &s.raw4
		}
		pkt, err := s.b.Build(m.buf(1280)[:0], p.Flow, p.ID, p.TTL, p.Tag, nonce, p.Payload)
		if err != nil {
			fail(fmt.Errorf("build probe: %w", err))
			continue
		}
		if dst.Is4() {
			sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.As4()}
			m.add(pkt, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4)
		} else {
			// Port 0: a raw IPv6 socket would take it as the protocol.
			sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.As16()}
			m.add(pkt, unsafe.Pointer(&sa), unix.SizeofSockaddrInet6)
		}
	}
	flushRing()
	if pc != nil && pc.desync {
		// The kernel's place in the ring is unknown: a new socket and ring.
		s.reopenPacket()
		pc = s.pc
	}
	if pc != nil && s.packet.n > 0 {
		n, err := s.sendmmsg(pc.fd, &s.packet)
		s.stats.PacketMmsg += uint64(n)
		sent += n
		if err != nil {
			fail(err)
		}
	}
	for _, m := range []*msgBatch{&s.raw4, &s.raw6} {
		if m.n == 0 {
			continue
		}
		fd := s.fd6
		if m == &s.raw4 {
			fd = s.fd4
		}
		n, err := s.sendmmsg(fd, m)
		s.stats.RawMmsg += uint64(n)
		sent += n
		if err != nil {
			fail(err)
		}
	}
	return sent, firstErr
}

// sendmmsg writes m's messages on fd, again after a partial write, skipping a message
// the kernel refuses. It returns how many went out and the first error.
func (s *Sender) sendmmsg(fd int, m *msgBatch) (int, error) {
	msgs := m.msgs[:m.n]
	var firstErr error
	sent := 0
	for len(msgs) > 0 {
		s.stats.Calls++
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.ENOSYS:
			// No sendmmsg here (a kernel or seccomp filter without it): these one by one,
			// the next batches with sendto.
			s.noBatch = true
			for i := range msgs {
				s.stats.Calls++
				if _, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[i].hdr)), 0); errno != 0 {
					if firstErr == nil {
						firstErr = fmt.Errorf("send probe: %w", errno)
					}
					continue
				}
				sent++
			}
			msgs = nil
		case errno != 0:
			// The first message failed: skip it, go on with the rest.
			if firstErr == nil {
				firstErr = fmt.Errorf("send probe: %w", errno)
			}
			msgs = msgs[1:]
		default:
			sent += int(r)
			msgs = msgs[r:]
		}
	}
	runtime.KeepAlive(m)
	return sent, firstErr
}

func (s *Sender) sendEach(ps []BatchProbe, nonce uint32) (int, error) {
	var firstErr error
	sent := 0
	for _, p := range ps {
		err := s.Send(p.Flow, p.ID, p.TTL, p.Tag, nonce, p.Payload)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sent++
	}
	return sent, firstErr
}

// Close closes the sockets.
func (s *Sender) Close() error {
	var errs []error
	if s.pc != nil {
		errs = append(errs, s.pc.close())
		s.l2.close()
		s.pc = nil
	}
	for _, fd := range []*int{&s.fd4, &s.fd6} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// PrivErr turns EPERM into a message that names the missing capability.
func PrivErr(what string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s: %w (needs root or CAP_NET_RAW: setcap cap_net_raw+ep turnpath)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// RawFile wraps a non-blocking socket so reads go through the Go netpoller and Close
// unblocks a pending read (a plain blocking recvmsg would not return on close).
func RawFile(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// AddrFromSockaddr converts a unix.Sockaddr into an address and port.
func AddrFromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// BuildFrame builds p as an Ethernet frame into dst (the bytes SendBatch's AF_PACKET
// methods send) for a sender of its own, such as the in-kernel generator. It returns the
// frame's length and the interface it must leave by; an error when the destination has
// no L2 path (see SendBatch) or the frame does not fit in dst. now ages the L2 cache.
func (s *Sender) BuildFrame(dst []byte, p BatchProbe, nonce uint32, now time.Time) (int, int, error) {
	if s.l2 == nil {
		return 0, 0, errors.New("build frame: AF_PACKET not enabled")
	}
	l2, nudge, err := s.l2.get(p.Flow.Src.Unmap(), p.Flow.Dst.Unmap(), now)
	if err != nil {
		return 0, 0, err
	}
	if nudge {
		return 0, 0, errNudge // for SendBatch, which sends it by the raw socket
	}
	if len(dst) < 14+probe.HeaderLen(p.Flow.Family()) {
		return 0, 0, probe.ErrTooBig
	}
	pkt, in, err := s.buildFrame(dst, l2, p, nonce)
	if err != nil {
		return 0, 0, err
	}
	if !in {
		return 0, 0, probe.ErrTooBig
	}
	return 14 + len(pkt), l2.Ifindex, nil
}

// buildFrame writes l2's Ethernet header into dst and builds the probe behind it. The
// IP packet comes back; in says it was built in dst (else dst was too small, and the
// packet is in a buffer of its own).
func (s *Sender) buildFrame(dst []byte, l2 *L2, p BatchProbe, nonce uint32) (pkt []byte, in bool, err error) {
	copy(dst, l2.Header[:])
	pkt, err = s.b.Build(dst[14:], p.Flow, p.ID, p.TTL, p.Tag, nonce, p.Payload)
	if err != nil {
		return nil, false, fmt.Errorf("build probe: %w", err)
	}
	return pkt, &pkt[0] == &dst[14], nil
}
