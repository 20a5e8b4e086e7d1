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
