package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Down removes the lab with this prefix: its coturn and dnsmasq processes (by recorded
// PID, after checking /proc/PID/cmdline is still ours), its namespaces, the client's
// resolv.conf and the state directory. It also cleans up a half-built lab left by a
// crash. Only the namespaces <prefix>-<node> of known nodes are touched. If nothing of
// the lab exists, it returns an error matching ErrNotUp ("no lab with prefix tp is up").
func Down(ctx context.Context, prefix string) error {
	if err := ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	if !anythingPresent(prefix) {
		return fmt.Errorf("lab down: %w", &notUpError{prefix})
	}
	if err := checkPrivileges(); err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	unlock, err := lockRunDir(ctx)
	if err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	defer unlock()
	// A corrupt state file must not stop the cleanup: the names are known anyway.
	st, serr := readState(prefix)
	if err := teardown(prefix, st); err != nil {
		return fmt.Errorf("lab down: %w", joinErrors(serr, err))
	}
	return nil
}

// clientEtcDir is where `ip netns exec` finds per-namespace /etc files.
func clientEtcDir(prefix string) string {
	return filepath.Join("/etc/netns", NSName(prefix, DefaultTopology().Client()))
}

// anythingPresent reports whether any trace of the lab exists.
func anythingPresent(prefix string) bool {
	for _, p := range []string{stateDir(prefix), clientEtcDir(prefix)} {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return len(presentNamespaces(prefix, nil)) > 0 || len(strayProcs(prefix)) > 0
}

// presentNamespaces lists the existing namespaces of the lab: <prefix>-<node> for the
// default topology's nodes plus whatever st recorded.
func presentNamespaces(prefix string, st *state) []string {
	var names []string
	for _, n := range DefaultTopology().Nodes {
		names = append(names, NSName(prefix, n.Name))
	}
	if st != nil {
		names = append(names, st.Namespaces...)
	}
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if _, err := os.Lstat(nsPath(n)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// teardown removes everything of the lab; st may be nil or partial.
func teardown(prefix string, st *state) error {
	var errs []error
	var mu sync.Mutex
	addErr := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}

	// Processes first: they hold the namespaces open.
	procs := strayProcs(prefix)
	if st != nil {
		procs = append(st.Processes, procs...)
	}
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for _, p := range procs {
		if p.PID <= 1 || seen[p.PID] {
			continue
		}
		seen[p.PID] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			addErr(stopProcess(p))
		}()
	}
	wg.Wait()

	for _, ns := range presentNamespaces(prefix, st) {
		addErr(deleteNS(ns))
	}

	files := []string{filepath.Join(clientEtcDir(prefix), "resolv.conf")}
	if st != nil {
		files = append(files, st.Files...)
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			addErr(fmt.Errorf("remove %s: %w", f, err))
		}
		// The per-namespace /etc directory, then /etc/netns, if we emptied them.
		dir := filepath.Dir(f)
		if filepath.Dir(dir) == "/etc/netns" {
			_ = os.Remove(dir)
			_ = os.Remove("/etc/netns")
		}
	}
	if err := os.RemoveAll(stateDir(prefix)); err != nil {
		addErr(fmt.Errorf("remove %s: %w", stateDir(prefix), err))
	}
	return joinErrors(errs...)
}

// health describes what is wrong with a recorded lab, or returns nil.
func health(st *state) error {
	var errs []error
	for _, ns := range st.Namespaces {
		if !nsExists(ns) {
			errs = append(errs, fmt.Errorf("namespace %s missing", ns))
		}
	}
	for _, p := range st.Processes {
		if !isOurs(p) {
			errs = append(errs, fmt.Errorf("%s (pid %d) not running", p.Name, p.PID))
		}
	}
	return joinErrors(errs...)
}
