package unattended

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Lock is an exclusive flock(2) on a file: held until Release or until the process ends
// (kill -9 included: the kernel drops it with the last descriptor), so a crashed run
// never leaves a stale lock. The file itself stays (removing it would let a third run
// lock a new file while the second still holds the old one).
type Lock struct {
	f *os.File
}

// HeldError is the lock being held by another run.
type HeldError struct {
	Path string
	PID  int // the holder's PID as it wrote it into the file; 0 unknown
}

func (e *HeldError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("lock %s is held by another run (pid %d)", e.Path, e.PID)
	}
	return fmt.Sprintf("lock %s is held by another run", e.Path)
}

// pollEvery is how often a waiting Acquire tries again: flock has no timeout of its own.
const pollEvery = 50 * time.Millisecond

// Acquire takes the lock at path (creating the file). When another run holds it, it
// tries again for up to wait (0: not at all) and then returns a *HeldError; ctx ends the
// wait early with ctx's error.
func Acquire(ctx context.Context, path string, wait time.Duration) (*Lock, error) {
	if path == "" {
		return nil, errors.New("open lock: empty path")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrPermission) {
		// Another user's lock file: flock works on a descriptor open for reading too
		// (the holder's PID is then not written).
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, unwrapPath(err))
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			held := &HeldError{Path: path, PID: holder(f)}
			f.Close()
			return nil, held
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(min(pollEvery, left)):
		}
	}
	// Say who holds it, for the message of the run that finds it held.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// holder reads the PID the holder wrote (0 when there is none yet).
func holder(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

// Release lets the next run have the lock. Safe on nil and twice.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}
