package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
	"golang.org/x/sys/unix"
)

// Socket is the plain-socket engine: the fallback where BPF cannot load, and the yardstick
// the eBPF engine is measured against.
type Socket struct {
	cfg      Config
	ft       *flowTable
	sender   *hostnet.Sender
	payloads sizedPayloads
	files    []*os.File
	mu       sync.Mutex // guards matcher, old, rotated
	// Outstanding probes live in two generations so memory stays bounded on long runs:
	// every Timeout, or every maxGeneration probes, the current matcher becomes the old
	// one and the old one is dropped. A probe is thus kept for at least Timeout (a reply
	// later than that is stale anyway) or maxGeneration later sends, whichever comes
	// first: at the default 1000 probes/s that is Timeout; past maxGeneration probes per
	// Timeout, answers slower than maxGeneration sends are lost (and memory stays bounded).
	matcher, old *probe.Matcher
	rotated      int64 // UnixNano of the last rotation
	replies      chan trace.Reply
	errs         chan error
	done         chan struct{}
	wg           sync.WaitGroup
	closeMu      sync.Once
}

// NewSocket opens the raw sockets and starts the receivers.
func NewSocket(cfg Config) (*Socket, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	v4, v6 := cfg.families()
	s := &Socket{cfg: cfg, ft: newFlowTable(&cfg), rotated: time.Now().UnixNano(),
		replies: make(chan trace.Reply, 4096), errs: make(chan error, 4), done: make(chan struct{})}
	s.matcher = s.newMatcher()
	var err error
	if s.sender, err = hostnet.NewSender(v4, v6); err != nil {
		return nil, err
	}
	s.sender.DontFragment(cfg.DontFragment)
	s.payloads.base = cfg.Payload
	// Receivers are opened before the first probe leaves, so no early answer is lost.
	if v4 {
		if err := s.openRaw(unix.AF_INET, unix.IPPROTO_ICMP, kindICMP); err != nil {
			s.Close()
			return nil, err
		}
	}
	if v6 {
		if err := s.openRaw(unix.AF_INET6, unix.IPPROTO_ICMPV6, kindICMP); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.shape()[0].Proto == probe.ProtoTCP {
		// Raw TCP sockets see a copy of every TCP segment: the SYN-ACKs and RSTs of targets.
		for _, fam := range []struct {
			on     bool
			family int
		}{{v4, unix.AF_INET}, {v6, unix.AF_INET6}} {
			if fam.on {
				if err := s.openRaw(fam.family, unix.IPPROTO_TCP, kindTCP); err != nil {
					s.Close()
					return nil, err
				}
			}
		}
	}
	if cfg.shape()[0].Proto == probe.ProtoUDP {
		if err := s.openUDP(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if len(cfg.Ifindexes) > 0 {
		if err := hostnet.WatchLinks(cfg.Ifindexes, s.errs, s.done); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *Socket) Name() string { return "socket" }

// Methods says how the socket engine sends and receives.
func (s *Socket) Methods() (send, recv string) {
	return hostnet.SendTo, "raw ICMP and UDP sockets, kernel receive timestamps (SO_TIMESTAMPNS)"
}

func (s *Socket) Replies() <-chan trace.Reply { return s.replies }
func (s *Socket) Errors() <-chan error        { return s.errs }

// Admit learns target t's flow from Config.FlowOf (trace.Engine.Admit); a no-op with
// Config.Flows.
func (s *Socket) Admit(t int) error {
	f, add, err := s.ft.admit(t)
	if err != nil || !add {
		return err
	}
	s.mu.Lock()
	s.matcher.AddFlow(tagOf(t), f)
	s.mu.Unlock()
	return nil
}

// Release forgets target t (Config.FlowOf). The matchers keep its flow until they are
// rotated out.
func (s *Socket) Release(t int) { s.ft.release(t) }

// Send builds, registers and sends one probe.
func (s *Socket) Send(p trace.Probe) error {
	f, ok := s.ft.flow(p.Target)
	if !ok {
		return fmt.Errorf("probe for unknown target %d", p.Target)
	}
	id, err := probe.MakeID(p.TTL, p.Attempt)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	pr := sentProbe(f, tagOf(p.Target), id)
	pr.SentNS = now
	s.mu.Lock()
	if now-s.rotated >= int64(s.cfg.Timeout) || s.matcher.Len() >= maxGeneration {
		s.old, s.matcher, s.rotated = s.matcher, s.newMatcher(), now
	}
	err = s.matcher.Add(pr)
	if errors.Is(err, probe.ErrProbeExists) {
		// The same probe again (path MTU discovery re-sends it smaller after a Packet
		// Too Big): it replaces the first, whose answer is in.
		s.matcher.Remove(pr.Flow.Dst, pr.Flow.SPort, pr.ID)
		err = s.matcher.Add(pr)
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("register probe: %w", err)
	}
	return s.sender.Send(f, id, p.TTL, tagOf(p.Target), s.cfg.Nonce, s.payloads.of(f, p.Size))
}

// maxGeneration caps the probes of one matcher generation (see Socket.matcher).
const maxGeneration = 1 << 15

// newMatcher is an empty matcher that knows every flow (for replies matched by flowtag).
func (s *Socket) newMatcher() *probe.Matcher {
	m := probe.NewMatcher(s.cfg.Nonce, s.cfg.Timeout)
	s.ft.each(func(t int, f probe.Flow) { m.AddFlow(tagOf(t), f) })
	return m
}

// Close stops the receivers and closes every socket.
func (s *Socket) Close() error {
	var errs []error
	s.closeMu.Do(func() {
		close(s.done)
		for _, f := range s.files {
			errs = append(errs, f.Close())
		}
		if s.sender != nil {
			errs = append(errs, s.sender.Close())
		}
		s.wg.Wait()
	})
	return errors.Join(errs...)
}

// What a receive socket carries.
type sockKind int

const (
	kindICMP sockKind = iota
	kindTCP
	kindUDP
)

func (s *Socket) openRaw(family, proto int, kind sockKind) error {
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return hostnet.PrivErr("open raw socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return fmt.Errorf("enable receive timestamps: %w", err)
	}
	bigReceiveBuffer(fd)
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("enable hop limit: %w", err)
		}
	}
	f, err := hostnet.RawFile(fd, "raw")
	if err != nil {
		return err
	}
	s.files = append(s.files, f)
	s.wg.Add(1)
	go s.recvLoop(f, family, kind)
	return nil
}

// openUDP binds the probes' source ports: the relay's answers arrive there, and a bound
// socket keeps the kernel from answering them with port unreachable.
func (s *Socket) openUDP() error {
	seen := map[netip.AddrPort]bool{}
	for _, fl := range s.cfg.shape() {
		ap := netip.AddrPortFrom(fl.Src.Unmap(), fl.SPort)
		if seen[ap] {
			continue
		}
		seen[ap] = true
		family := unix.AF_INET6
		var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		if ap.Addr().Is4() {
			family = unix.AF_INET
			sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open UDP socket: %w", err)
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		// The relay's answer's TTL, as the eBPF engine reports it (return-path length).
		if family == unix.AF_INET {
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
		} else {
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
		}
		bigReceiveBuffer(fd)
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind UDP %s: %w (another program uses this source port? try --sport)", ap, err)
		}
		f, err := hostnet.RawFile(fd, "udp")
		if err != nil {
			return err
		}
		s.files = append(s.files, f)
		s.wg.Add(1)
		go s.recvLoop(f, family, kindUDP)
	}
	return nil
}

// receiveBuffer is what the receive sockets ask for: a burst of answers to a fast run
// (thousands of probes in flight) must not overflow the default ~200 KiB.
const receiveBuffer = 8 << 20

// bigReceiveBuffer raises the socket's receive buffer: past net.core.rmem_max with
// CAP_NET_ADMIN (SO_RCVBUFFORCE), else up to it. Failure only costs capacity.
func bigReceiveBuffer(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
	}
}

func (s *Socket) recvLoop(f *os.File, family int, kind sockKind) {
	defer s.wg.Done()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 512)
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil || rerr != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if err != nil {
				return // closed
			}
			continue
		}
		rxNS, hopLimit := parseCmsgs(oob[:oobn])
		if rxNS == 0 {
			rxNS = time.Now().UnixNano()
		}
		src := hostnet.AddrFromSockaddr(from)
		var r probe.Reply
		switch {
		case kind == kindUDP:
			r, err = probe.ParseSTUNAnswer(src, buf[:n], s.cfg.Nonce)
			if hopLimit > 0 {
				r.ReplyTTL = uint8(hopLimit)
			}
		case kind == kindTCP && family == unix.AF_INET:
			r, err = probe.ParseTCPv4(buf[:n])
		case kind == kindTCP:
			r, err = probe.ParseTCPv6(src.Addr(), hopLimit, buf[:n])
		case family == unix.AF_INET:
			r, err = probe.ParseICMPv4(buf[:n])
		default:
			r, err = probe.ParseICMPv6(src.Addr(), hopLimit, buf[:n])
		}
		if err != nil {
			continue // not a reply to us: someone else's ICMP, a stale answer
		}
		s.mu.Lock()
		m, err := s.matcher.Match(&r, rxNS)
		if errors.Is(err, probe.ErrUnknownProbe) && s.old != nil {
			m, err = s.old.Match(&r, rxNS)
		}
		s.mu.Unlock()
		if err != nil {
			continue
		}
		rep, ok := s.convert(&r, &m)
		if !ok {
			continue
		}
		select {
		case s.replies <- rep:
		case <-s.done:
			return
		}
	}
}

func (s *Socket) convert(r *probe.Reply, m *probe.MatchResult) (trace.Reply, bool) {
	t, ok := s.ft.lookup(m.Probe.Flow.Dst, m.Probe.Flow.SPort)
	if !ok {
		return trace.Reply{}, false
	}
	rep, ok := traceReply(t, m.Probe.ID, r, m.Flags, time.Now())
	rep.RTT = time.Duration(m.RTTNS)
	return rep, ok
}

// parseCmsgs extracts SCM_TIMESTAMPNS (CLOCK_REALTIME ns) and the reply's TTL
// (IPV6_HOPLIMIT, or IP_TTL on the UDP sockets).
func parseCmsgs(oob []byte) (rxNS int64, hopLimit int) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, 0
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16:
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			rxNS = sec*1e9 + nsec
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4,
			m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL && len(m.Data) >= 4:
			hopLimit = int(binary.NativeEndian.Uint32(m.Data[0:4]))
		}
	}
	return rxNS, hopLimit
}
