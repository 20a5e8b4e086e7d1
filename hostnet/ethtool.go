package hostnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// XDPXmitCounter reads how many XDP frames an interface has handed to its driver's XDP
// transmit so far (veth: the frames its peer accepted, "tx_queue_N_xdp_xmit" in
// `ethtool -S`). The in-kernel generator's frames leave that way, and a driver drops what
// it cannot take without telling the sender: comparing this counter before and after a
// run is how the engine knows how many of its probes really left.
type XDPXmitCounter struct {
	fd    int
	name  [unix.IFNAMSIZ]byte
	n     int   // the driver's number of statistics
	pick  []int // the indexes of the counters summed
	stats []byte
}

// ethtool's request headers (linux/ethtool.h).
type ethtoolGsset struct {
	cmd, reserved uint32
	mask          uint64
	data          uint32
}

type ethtoolGstrings struct {
	cmd, set, n uint32
}

type ethtoolStats struct {
	cmd, n uint32
}

const (
	ethSSStats    = 1  // ETH_SS_STATS
	ethGstringLen = 32 // ETH_GSTRING_LEN
)

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

// NewXDPXmitCounter finds the XDP transmit counters of ifname; an error when the driver
// has none (only veth is known to count them).
func NewXDPXmitCounter(ifname string) (*XDPXmitCounter, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open ethtool socket: %w", err)
	}
	c := &XDPXmitCounter{fd: fd}
	copy(c.name[:], ifname)
	// How many statistics, then their names.
	set := ethtoolGsset{cmd: unix.ETHTOOL_GSSET_INFO, mask: 1 << ethSSStats}
	if err := c.ioctl(unsafe.Pointer(&set)); err != nil || set.mask == 0 {
		c.Close()
		if err == nil {
			err = errors.ErrUnsupported
		}
		return nil, fmt.Errorf("ethtool statistics of %s: %w", ifname, err)
	}
	c.n = int(set.data)
	buf := make([]byte, int(unsafe.Sizeof(ethtoolGstrings{}))+c.n*ethGstringLen)
	*(*ethtoolGstrings)(unsafe.Pointer(&buf[0])) = ethtoolGstrings{cmd: unix.ETHTOOL_GSTRINGS, set: ethSSStats}
	if err := c.ioctl(unsafe.Pointer(&buf[0])); err != nil {
		c.Close()
		return nil, fmt.Errorf("ethtool statistic names of %s: %w", ifname, err)
	}
	names := buf[unsafe.Sizeof(ethtoolGstrings{}):]
	for i := range c.n {
		s := string(bytes.TrimRight(names[i*ethGstringLen:(i+1)*ethGstringLen], "\x00"))
		if strings.HasPrefix(s, "tx_queue_") && strings.HasSuffix(s, "_xdp_xmit") {
			c.pick = append(c.pick, i)
		}
	}
	if len(c.pick) == 0 {
		c.Close()
		return nil, fmt.Errorf("ethtool statistics of %s: no XDP transmit counter", ifname)
	}
	c.stats = make([]byte, int(unsafe.Sizeof(ethtoolStats{}))+c.n*8)
	return c, nil
}

func (c *XDPXmitCounter) ioctl(data unsafe.Pointer) error {
	req := ifreqData{name: c.name, data: uintptr(data)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req)))
	if errno != 0 {
		return errno
	}
	return nil
}

// Read returns the sum of the interface's XDP transmit counters.
func (c *XDPXmitCounter) Read() (uint64, error) {
	*(*ethtoolStats)(unsafe.Pointer(&c.stats[0])) = ethtoolStats{cmd: unix.ETHTOOL_GSTATS, n: uint32(c.n)}
	if err := c.ioctl(unsafe.Pointer(&c.stats[0])); err != nil {
		return 0, fmt.Errorf("read ethtool statistics: %w", err)
	}
	vals := c.stats[unsafe.Sizeof(ethtoolStats{}):]
	var sum uint64
	for _, i := range c.pick {
		sum += binary.NativeEndian.Uint64(vals[i*8:])
	}
	return sum, nil
}

// Close closes the socket.
func (c *XDPXmitCounter) Close() error { return unix.Close(c.fd) }
