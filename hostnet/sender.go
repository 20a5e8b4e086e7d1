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
	"unsafe"

	"github.com/turnpath/turnpath/probe"
	"golang.org/x/sys/unix"
)

// Sender writes complete IP packets on IPPROTO_RAW sockets (IP_HDRINCL is implied, also on
// IPv6 since Linux 4.5), so turnpath controls the IP ID, the flow label and every checksum.
// Both engines send through it, so they emit identical probes.
type Sender struct {
	fd4, fd6 int
	b        probe.Builder
	buf      []byte

	// SendBatch's buffers, reused: one packet, iovec, address and mmsghdr per probe.
	pkts    [][]byte
	iovs    []unix.Iovec
	names4  []unix.RawSockaddrInet4
	names6  []unix.RawSockaddrInet6
	msgs    []mmsghdr
	noBatch bool // sendmmsg unavailable (or forced off): SendBatch sends one by one
}

// Send methods (Sender.Method).
const (
	SendMmsg = "sendmmsg on raw sockets, batches"
	SendTo   = "sendto on raw sockets, one probe per call"
)

// mmsghdr is struct mmsghdr (linux/socket.h); Go pads it like C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
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
	if err != nil {
		return fmt.Errorf("send probe to %s: %w", dst, err)
	}
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

// Method says how SendBatch sends: SendMmsg, or SendTo where sendmmsg is unavailable.
func (s *Sender) Method() string {
	if s.noBatch {
		return SendTo
	}
	return SendMmsg
}

// SendBatch builds and writes the probes with as few system calls as it can: one
// sendmmsg per run of probes of one family (the same packets Send writes, in order, each
// through the kernel's routing and TC egress as with sendto). It returns how many were
// sent and the first error; a probe that fails is skipped and the rest still go.
func (s *Sender) SendBatch(ps []BatchProbe, nonce uint32) (int, error) {
	if s.noBatch {
		return s.sendEach(ps, nonce)
	}
	if cap(s.msgs) < len(ps) {
		s.pkts = make([][]byte, len(ps))
		s.iovs = make([]unix.Iovec, len(ps))
		s.names4 = make([]unix.RawSockaddrInet4, len(ps))
		s.names6 = make([]unix.RawSockaddrInet6, len(ps))
		s.msgs = make([]mmsghdr, len(ps))
	}
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	sent, k := 0, 0 // k: messages built in the current run of one family
	fam := 0
	flush := func() {
		if k > 0 {
			n, err := s.sendmmsg(fam, s.msgs[:k])
			sent += n
			if err != nil {
				fail(err)
			}
			k = 0
		}
	}
	for _, p := range ps {
		dst := p.Flow.Dst.Unmap()
		f := unix.AF_INET6
		if dst.Is4() {
			f = unix.AF_INET
		}
		if f != fam {
			flush()
			fam = f
		}
		if s.pkts[k] == nil {
			// A buffer of its own per message (Build given nil would use the builder's
			// one buffer for all of them).
			s.pkts[k] = make([]byte, 0, 1280)
		}
		pkt, err := s.b.Build(s.pkts[k][:0], p.Flow, p.ID, p.TTL, p.Tag, nonce, p.Payload)
		if err != nil {
			fail(fmt.Errorf("build probe: %w", err))
			continue
		}
		s.pkts[k] = pkt
		m := &s.msgs[k]
		*m = mmsghdr{}
		s.iovs[k] = unix.Iovec{Base: &pkt[0]}
		s.iovs[k].SetLen(len(pkt))
		m.hdr.Iov = &s.iovs[k]
		m.hdr.SetIovlen(1)
		if f == unix.AF_INET {
			s.names4[k] = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.As4()}
			m.hdr.Name = (*byte)(unsafe.Pointer(&s.names4[k]))
			m.hdr.Namelen = unix.SizeofSockaddrInet4
		} else {
			// Port 0: a raw IPv6 socket would take it as the protocol.
			s.names6[k] = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.As16()}
			m.hdr.Name = (*byte)(unsafe.Pointer(&s.names6[k]))
			m.hdr.Namelen = unix.SizeofSockaddrInet6
		}
		k++
	}
	flush()
	return sent, firstErr
}

// sendmmsg writes msgs on the family's socket, again after a partial write, skipping a
// message the kernel refuses. It returns how many went out and the first error.
func (s *Sender) sendmmsg(fam int, msgs []mmsghdr) (int, error) {
	fd := s.fd6
	if fam == unix.AF_INET {
		fd = s.fd4
	}
	var firstErr error
	sent := 0
	for len(msgs) > 0 {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.ENOSYS:
			// No sendmmsg here (a kernel or seccomp filter without it): these one by one,
			// the next batches with sendto.
			s.noBatch = true
			for i := range msgs {
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
	runtime.KeepAlive(s.pkts)
	return sent, firstErr
}

func (s *Sender) sendEach(ps []BatchProbe, nonce uint32) (int, error) {
	var firstErr error
	sent := 0
	for _, p := range ps {
		if err := s.Send(p.Flow, p.ID, p.TTL, p.Tag, nonce, p.Payload); err != nil {
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
