package hostnet

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AF_PACKET sending: the probe's IP packet behind the Ethernet header the kernel's
// neighbour code would have written, handed to the device's transmit path
// (dev_queue_xmit) without routing, the raw socket or IP output per packet. The qdisc
// layer is kept on purpose (no PACKET_QDISC_BYPASS: packet_direct_xmit skips it, and
// with it the TC egress hook that timestamps every probe), and so is the device's
// transmit path. The socket has protocol 0, so it receives nothing: no copy of any
// frame, ours or anyone's, is queued to it.
//
// What it skips: the host's netfilter OUTPUT and POSTROUTING hooks (like any packet
// socket) and the kernel's own next-hop choice — which is why it is used only for
// destinations with one next hop and a resolved neighbour (l2Cache), the rest going
// through the raw sockets.
type packetConn struct {
	fd int
	// The TX ring (PACKET_TX_RING, TPACKET_V2), nil when the kernel refused it or it is
	// forced off: sendmmsg on the socket then. The kernel walks the ring from where its
	// last flush stopped, so frames are filled in the same circular order: head is the
	// next frame to fill, pending how many were committed since the last flush.
	ring          []byte
	frameSize     int
	frames        int
	head, pending int
	// desync: a flush left frames unsent (an error stopped the kernel's walk), so its
	// position in the ring may no longer be head: the Sender opens a new socket.
	desync bool
}

// TX ring geometry: 512 frames of 2 KiB (1 MiB of kernel memory per run). A frame
// holds a probe of up to 2 KiB - 32 bytes (bigger probes: sendmmsg on the same socket).
const (
	ringFrameSize = 2048
	ringFrames    = 512
	ringBlockSize = 1 << 16
	// ringData is where a TX frame's data starts: TPACKET2_HDRLEN minus the
	// sockaddr_ll the kernel leaves room for (TPACKET_ALIGN(sizeof(tpacket2_hdr))).
	ringData = 32
)

func openPacketConn(ring bool) (*packetConn, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, PrivErr("open AF_PACKET socket", err)
	}
	c := &packetConn{fd: fd}
	if ring {
		if err := c.setupRing(); err != nil {
			c.ring = nil
		}
	}
	return c, nil
}

func (c *packetConn) setupRing() error {
	if err := unix.SetsockoptInt(c.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fmt.Errorf("set TPACKET_V2: %w", err)
	}
	// A frame the kernel cannot send (a malformed one) is marked and skipped instead of
	// stopping the whole flush.
	if err := unix.SetsockoptInt(c.fd, unix.SOL_PACKET, unix.PACKET_LOSS, 1); err != nil {
		return fmt.Errorf("set PACKET_LOSS: %w", err)
	}
	req := unix.TpacketReq{Block_size: ringBlockSize, Block_nr: ringFrames * ringFrameSize / ringBlockSize,
		Frame_size: ringFrameSize, Frame_nr: ringFrames}
	if err := unix.SetsockoptTpacketReq(c.fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fmt.Errorf("set PACKET_TX_RING: %w", err)
	}
	ring, err := unix.Mmap(c.fd, 0, ringFrames*ringFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map TX ring: %w", err)
	}
	c.ring, c.frameSize, c.frames = ring, ringFrameSize, ringFrames
	return nil
}

func (c *packetConn) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&c.ring[i*c.frameSize]))
}

// full: every frame is committed; flush before the next.
func (c *packetConn) full() bool { return c.pending == c.frames }

// frame returns the next frame's data area (all of it), nil when the ring is full or
// the kernel still holds that frame.
func (c *packetConn) frame() []byte {
	if c.full() || atomic.LoadUint32(c.status(c.head)) != unix.TP_STATUS_AVAILABLE {
		return nil
	}
	off := c.head*c.frameSize + ringData
	n := c.frameSize - ringData
	return c.ring[off : off+n : off+n]
}

// commit hands the frame just filled (n bytes) to the kernel's next flush.
func (c *packetConn) commit(n int) {
	hdr := (*unix.Tpacket2Hdr)(unsafe.Pointer(&c.ring[c.head*c.frameSize]))
	hdr.Len = uint32(n)
	atomic.StoreUint32(&hdr.Status, unix.TP_STATUS_SEND_REQUEST)
	c.head = (c.head + 1) % c.frames
	c.pending++
}

// flushRing makes the kernel send every committed frame (one sendto, which returns once
// all of them left: no MSG_DONTWAIT) out of ifindex with EtherType proto, and returns
// how many it sent.
func (c *packetConn) flushRing(ifindex int, proto uint16) (int, error) {
	n := c.pending
	if n == 0 {
		return 0, nil
	}
	sa := unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(proto), Ifindex: int32(ifindex)}
	var err error
	for {
		_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(c.fd), 0, 0, 0, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			err = fmt.Errorf("send TX ring: %w", errno)
		}
		break
	}
	sent := 0
	for j := range n {
		st := c.status((c.head - n + j + c.frames) % c.frames)
		switch atomic.LoadUint32(st) {
		case unix.TP_STATUS_SEND_REQUEST:
			// Left unsent: an error stopped the kernel's walk at or before it.
			atomic.StoreUint32(st, unix.TP_STATUS_AVAILABLE)
			c.desync = true
		case unix.TP_STATUS_WRONG_FORMAT:
			atomic.StoreUint32(st, unix.TP_STATUS_AVAILABLE)
		default:
			// Available again, or still being sent (TP_STATUS_SENDING: the kernel
			// holds the skb behind a queue and frees the frame when done; frame()
			// does not hand it out before).
			sent++
		}
	}
	c.pending = 0
	if err == nil && sent < n {
		err = errors.New("send TX ring: frames refused")
	}
	return sent, err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *packetConn) close() error {
	var errs []error
	if c.ring != nil {
		errs = append(errs, unix.Munmap(c.ring))
		c.ring = nil
	}
	errs = append(errs, unix.Close(c.fd))
	return errors.Join(errs...)
}
