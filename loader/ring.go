package loader

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// netRing reads the `events` ring buffer straight from its memory-mapped pages, and waits
// for it through the Go netpoller, not in a blocking epoll_wait of its own (cilium's
// ringbuf.Reader): with GOMAXPROCS 1 a reader blocked in a system call holds the only P
// and the sending goroutine waits for sysmon to take it back. Records can also be drained
// without waiting (Drain), from the sending loop: at a high rate the replies are read
// where the probes are sent, without a goroutine hand-off per batch.
//
// Wakeups: the kernel wakes a waiting reader only when it commits a record into a ring the
// reader had emptied (bpf_ringbuf_commit without flags); a reader that drains in batches
// thus gets one wakeup per batch, not per event.
type netRing struct {
	cons, prod []byte   // the consumer page (rw), the producer page + data twice (ro)
	consPos    *uintptr // in cons
	prodPos    *uintptr // in prod
	data       []byte
	mask       uintptr
	file       *os.File // a dup of the map's fd, registered with the netpoller
	raw        syscall.RawConn
	closeOnce  sync.Once
	closed     atomic.Bool
}

func newNetRing(m *ebpf.Map) (*netRing, error) {
	size := int(m.MaxEntries())
	if size == 0 || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two", size)
	}
	page := os.Getpagesize()
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup ring buffer fd: %w", err)
	}
	r := &netRing{mask: uintptr(size - 1)}
	if r.cons, err = unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap consumer page: %w", err)
	}
	if r.prod, err = unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		_ = unix.Munmap(r.cons)
		unix.Close(fd)
		return nil, fmt.Errorf("mmap data pages: %w", err)
	}
	r.consPos = (*uintptr)(unsafe.Pointer(&r.cons[0]))
	r.prodPos = (*uintptr)(unsafe.Pointer(&r.prod[0]))
	r.data = r.prod[page:]
	// Non-blocking, so os.NewFile registers it with the netpoller (a ring buffer map
	// fd is pollable: readable while records are pending).
	if err := unix.SetNonblock(fd, true); err != nil {
		r.unmap()
		unix.Close(fd)
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	r.file = os.NewFile(uintptr(fd), "turnpath-events")
	// Unmapped once unreachable, never under a reader that may still be draining.
	cons, prod := r.cons, r.prod
	runtime.AddCleanup(r, func(struct{}) {
		_ = unix.Munmap(prod)
		_ = unix.Munmap(cons)
	}, struct{}{})
	if r.raw, err = r.file.SyscallConn(); err != nil {
		r.close()
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	return r, nil
}

func (r *netRing) unmap() {
	if r.prod != nil {
		_ = unix.Munmap(r.prod)
	}
	if r.cons != nil {
		_ = unix.Munmap(r.cons)
	}
	r.prod, r.cons = nil, nil
}

// pending reports whether a record may be waiting (the producer is ahead).
func (r *netRing) pending() bool {
	return atomic.LoadUintptr(r.prodPos) != atomic.LoadUintptr(r.consPos)
}

// next returns the next committed record's bytes (valid until commit), or nil when there is
// none yet. Discarded records are skipped.
func (r *netRing) next() (rec []byte, newCons uintptr) {
	for {
		prod := atomic.LoadUintptr(r.prodPos)
		cons := atomic.LoadUintptr(r.consPos)
		if prod-cons < 8 {
			return nil, 0
		}
		// The header's length word is read atomically: the kernel's xchg that clears
		// the busy bit publishes the record (see cilium/ebpf ringbuf).
		l := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if l&unix.BPF_RINGBUF_BUSY_BIT != 0 {
			return nil, 0 // not committed yet: try again later
		}
		n := uintptr(l &^ (unix.BPF_RINGBUF_BUSY_BIT | unix.BPF_RINGBUF_DISCARD_BIT))
		start := (cons + 8) & r.mask
		end := cons + 8 + (n+7)&^7
		if l&unix.BPF_RINGBUF_DISCARD_BIT != 0 {
			atomic.StoreUintptr(r.consPos, end)
			continue
		}
		// The data pages are mapped twice in a row, so a record that wraps is contiguous.
		return r.data[start : start+n], end
	}
}

func (r *netRing) commit(cons uintptr) { atomic.StoreUintptr(r.consPos, cons) }

// wait blocks in the netpoller until a record may be pending, the deadline passes or the
// ring is closed.
func (r *netRing) wait() error {
	// The ring fd never "reads": false parks the goroutine in the netpoller until the
	// kernel's wakeup makes the fd readable.
	if r.closed.Load() {
		return ErrClosed
	}
	err := r.raw.Read(func(uintptr) bool { return r.pending() })
	// A closed file reports "use of closed file" (internal/poll), not os.ErrClosed.
	if err != nil && (r.closed.Load() || errors.Is(err, os.ErrClosed)) {
		return ErrClosed
	}
	return err
}

func (r *netRing) setDeadline(t time.Time) { _ = r.file.SetReadDeadline(t) }

func (r *netRing) close() error {
	var err error
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		err = r.file.Close() // wakes a waiter
	})
	return err
}

// ReadInto implements ringReader for EventReader.Read (tests, the blocking path).
func (r *netRing) ReadInto(rec *ringbuf.Record) error {
	for {
		if b, end := r.next(); b != nil {
			rec.RawSample = append(rec.RawSample[:0], b...)
			r.commit(end)
			return nil
		}
		if err := r.wait(); err != nil {
			return err
		}
	}
}

func (r *netRing) SetDeadline(t time.Time) { r.setDeadline(t) }
func (r *netRing) Close() error            { return r.close() }
