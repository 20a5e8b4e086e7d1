package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// RunDir holds one state directory per lab: RunDir/<prefix>/state.json plus the
// generated configs and logs. It is on tmpfs, so a reboot (which also drops the
// namespaces) clears it.
const RunDir = "/run/turnpath-lab"

// procInfo is a process the lab started.
type procInfo struct {
	Name   string `json:"name"` // "coturn-wildcard", "dnsmasq"
	Node   string `json:"node"`
	Binary string `json:"binary"`
	PID    int    `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat, so a recycled PID is never mistaken
	// for ours.
	StartTime uint64 `json:"start_time"`
	Config    string `json:"config"`
	Log       string `json:"log"`
}

// state is RunDir/<prefix>/state.json. It is written before each step that creates
// something, so `lab down` can clean up after a crash at any point.
type state struct {
	Prefix     string     `json:"prefix"`
	Profile    string     `json:"profile"`
	Complete   bool       `json:"complete"`
	Created    time.Time  `json:"created"`
	Namespaces []string   `json:"namespaces"`
	Processes  []procInfo `json:"processes"`
	// Files outside the state directory that we created.
	Files []string `json:"files"`
}

func stateDir(prefix string) string  { return filepath.Join(RunDir, prefix) }
func statePath(prefix string) string { return filepath.Join(stateDir(prefix), "state.json") }

// readState returns the recorded state, or nil if there is none.
func readState(prefix string) (*state, error) {
	b, err := os.ReadFile(statePath(prefix))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse lab state %s: %w", statePath(prefix), err)
	}
	return &st, nil
}

// write replaces state.json atomically.
func (st *state) write() error {
	if err := os.MkdirAll(stateDir(st.Prefix), 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp := statePath(st.Prefix) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, statePath(st.Prefix)); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// lockRunDir serialises lab up/down across processes with flock on RunDir itself (a
// per-prefix lock file would have to be left behind after down).
func lockRunDir(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", RunDir, err)
	}
	fd, err := unix.Open(RunDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", RunDir, err)
	}
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", RunDir, err)
		}
		select {
		case <-ctx.Done():
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s (another lab up/down is running): %w", RunDir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }, nil
}
