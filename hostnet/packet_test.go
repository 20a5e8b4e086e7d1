package hostnet_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/reflector"
	"github.com/turnpath/turnpath/reflector/reflectortest"
	"golang.org/x/sys/unix"
)

// Every batched send method puts the same frame on the wire: the IP packet the raw
// socket sends (what probe.Builder built, the IPv4 header checksum included), behind the
// Ethernet header the kernel's neighbour code writes. The frames are read back as they
// leave the prober's interface (a tap: an ETH_P_ALL packet socket sees outgoing frames).
func TestSendMethodsSameBytes(t *testing.T) {
	n := reflectortest.Up(t, "rfb", 4)
	payload, err := probe.ParsePayload("stun")
	if err != nil {
		t.Fatal(err)
	}
	methods := []struct {
		name  string
		setup func(*hostnet.Sender)
		count func(hostnet.SendStats) uint64
		want  string
	}{
		{"raw sendmmsg", (*hostnet.Sender).NoPacket, func(s hostnet.SendStats) uint64 { return s.RawMmsg }, hostnet.SendMmsg},
		{"AF_PACKET sendmmsg", func(*hostnet.Sender) {}, func(s hostnet.SendStats) uint64 { return s.PacketMmsg }, hostnet.SendPacketMmsg},
		{"AF_PACKET TX ring", (*hostnet.Sender).UseRing, func(s hostnet.SendStats) uint64 { return s.Ring }, hostnet.SendRing},
		{"sendto", (*hostnet.Sender).NoBatch, func(s hostnet.SendStats) uint64 { return s.SendTo }, hostnet.SendTo},
	}
	for _, v6 := range []bool{false, true} {
		dst := reflector.Target(1, v6)
		f := probe.Flow{Src: n.Source(dst), Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}
		id, err := probe.MakeID(3, 1)
		if err != nil {
			t.Fatal(err)
		}
		want, err := (&probe.Builder{}).Build(nil, f, id, 3, 7, 0x5eedbeef, payload)
		if err != nil {
			t.Fatal(err)
		}
		var first []byte // the first method's frame
		for _, m := range methods {
			var frame []byte
			if err := n.Do(func() error {
				tap := openTap(t, n.Ifindex())
				defer unix.Close(tap)
				s, err := hostnet.NewSender(!v6, v6)
				if err != nil {
					return err
				}
				defer s.Close()
				m.setup(s)
				s.EnablePacket()
				if got := s.Method(); got != m.want {
					t.Errorf("%s: method %q, want %q", m.name, got, m.want)
				}
				ps := []hostnet.BatchProbe{{Flow: f, ID: id, TTL: 3, Tag: 7, Payload: payload}}
				if sent, err := s.SendBatch(ps, 0x5eedbeef); sent != 1 || err != nil {
					t.Fatalf("%s: SendBatch: %d sent, %v", m.name, sent, err)
				}
				if got := m.count(s.Stats()); got != 1 {
					t.Errorf("%s: %+v: the probe did not take this method", m.name, s.Stats())
				}
				frame = readOutgoing(t, tap, want)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(frame[14:], want) {
				t.Errorf("v6 %v, %s: IP packet on the wire\n%x\nwant (probe.Builder)\n%x", v6, m.name, frame[14:], want)
			}
			if first == nil {
				first = frame
			} else if !bytes.Equal(frame[:14], first[:14]) {
				t.Errorf("v6 %v, %s: Ethernet header %x, the kernel's (raw socket) %x", v6, m.name, frame[:14], first[:14])
			}
		}
	}
}

// openTap opens a packet socket that sees every frame leaving ifindex.
func openTap(t *testing.T, ifindex int) int {
	t.Helper()
	const ethPAll = 0x0003
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(ethPAll)))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return fd
}

// readOutgoing returns the first outgoing frame to the probe's destination (the tap
// sees the reflector's answers and neighbour discovery too).
func readOutgoing(t *testing.T, fd int, probePkt []byte) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	dst := probePkt[16:20] // IPv4 destination
	if probePkt[0]>>4 == 6 {
		dst = probePkt[24:40]
	}
	for range 100 {
		k, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("read tap: %v", err)
		}
		sa, ok := from.(*unix.SockaddrLinklayer)
		if !ok || sa.Pkttype != unix.PACKET_OUTGOING || k < 14+len(probePkt) {
			continue
		}
		ip := buf[14:k]
		if ip[0]>>4 == 4 && bytes.Equal(ip[16:20], dst) || ip[0]>>4 == 6 && bytes.Equal(ip[24:40], dst) {
			return append([]byte(nil), buf[:k]...)
		}
	}
	t.Fatal("no outgoing probe seen")
	return nil
}

func htons(v uint16) uint16 { return binary.BigEndian.Uint16([]byte{byte(v), byte(v >> 8)}) }
