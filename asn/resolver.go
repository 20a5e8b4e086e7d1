package asn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// askGrace is how long a Lookup waits past its deadline for the source to give up.
const askGrace = 200 * time.Millisecond

// Stats count what a Resolver did, for the run metadata.
type Stats struct {
	Source    string `json:"source"`
	Lookups   int    `json:"lookups"`    // addresses asked of the source
	CacheHits int    `json:"cache_hits"` // answered from the disk cache (an earlier run's answers)
	Private   int    `json:"private"`    // answered locally (private ranges)
	Failures  int    `json:"failures"`   // addresses the source did not answer in time: AS?
}

// Resolver looks addresses up through a Source with the policy every command shares:
// private ranges answered locally, each address asked once per run (memory) and once per
// TTL across runs (the disk cache), lookups bounded by Timeout however slow the source
// is, one warning for a run's failures.
type Resolver struct {
	src Source
	// Timeout bounds one Lookup call (default 3 s): a dead or slow source costs the run
	// this much at most, its addresses then show AS?.
	Timeout time.Duration
	// LookupPrivate asks the source about private ranges too (labs and private IRRs,
	// whose addresses are exactly such ranges); off, they answer locally.
	LookupPrivate bool
	// CacheDir holds the disk cache ("" none); TTL is how long an entry stays valid
	// (default 24 h). Failures are never written.
	CacheDir string
	TTL      time.Duration
	// Warn gets the one warning line of a run whose lookups failed (nil: none).
	Warn func(string)
	// Now is the clock of the disk cache's TTL.
	Now func() time.Time

	mu      sync.Mutex
	mem     map[netip.Addr]Info
	pending map[netip.Addr]chan struct{}
	loaded  bool
	fresh   map[netip.Addr]Info // answers not yet on disk
	disk    map[netip.Addr]bool // answers from the disk cache not yet counted as hits
	stats   Stats
	warned  bool
}

// NewResolver wraps src with the defaults.
func NewResolver(src Source) *Resolver {
	return &Resolver{src: src, Timeout: 3 * time.Second, TTL: 24 * time.Hour, Now: time.Now,
		mem: map[netip.Addr]Info{}, pending: map[netip.Addr]chan struct{}{}, fresh: map[netip.Addr]Info{},
		stats: Stats{Source: src.Name()}}
}

// Stats returns the counts so far.
func (r *Resolver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Start looks addrs up in the background (while a run is still probing); a later Lookup
// of them waits for these answers instead of asking again.
func (r *Resolver) Start(addrs []netip.Addr) {
	go r.Lookup(context.Background(), addrs)
}

// Lookup returns an Info for every valid address of addrs within Timeout: what the
// caches or the source say, Private for private ranges, Failed where the source did not
// answer in time.
func (r *Resolver) Lookup(ctx context.Context, addrs []netip.Addr) map[netip.Addr]Info {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	out := make(map[netip.Addr]Info, len(addrs))
	var ask []netip.Addr
	var wait []chan struct{}
	r.mu.Lock()
	r.loadDisk()
	for _, a := range addrs {
		a = a.Unmap()
		if _, seen := out[a]; seen || !a.IsValid() {
			continue
		}
		if !r.LookupPrivate && Private(a) {
			out[a] = Info{Private: true}
			r.stats.Private++
			continue
		}
		if in, ok := r.mem[a]; ok {
			out[a] = in
			if r.disk[a] {
				r.stats.CacheHits++
				delete(r.disk, a)
			}
			continue
		}
		if ch, ok := r.pending[a]; ok {
			wait = append(wait, ch)
			out[a] = Info{Failed: true} // until the pending lookup says otherwise
			continue
		}
		ch := make(chan struct{})
		r.pending[a] = ch
		wait = append(wait, ch)
		ask = append(ask, a)
		out[a] = Info{Failed: true}
	}
	r.stats.Lookups += len(ask)
	r.mu.Unlock()

	var asked chan struct{}
	if len(ask) > 0 {
		asked = make(chan struct{})
		go func() {
			defer close(asked)
			r.ask(ctx, ask)
		}()
	}
	for _, ch := range wait {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	if asked != nil {
		// The source has the same deadline: a moment more and its failures are counted
		// and warned about before the caller prints (or exits).
		select {
		case <-asked:
		case <-time.After(askGrace):
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, in := range out {
		if in.Failed {
			if got, ok := r.mem[a]; ok {
				out[a] = got
			}
		}
	}
	return out
}

// ask queries the source and records the answers; an address it did not answer is a
// failure for the rest of the run (not asked again, not written to disk).
func (r *Resolver) ask(ctx context.Context, addrs []netip.Addr) {
	got, err := r.src.Lookup(ctx, addrs)
	r.mu.Lock()
	defer r.mu.Unlock()
	failed := 0
	for _, a := range addrs {
		in, ok := got[a]
		if !ok {
			in = Info{Failed: true}
			failed++
		} else {
			r.fresh[a] = in
		}
		r.mem[a] = in
		close(r.pending[a])
		delete(r.pending, a)
	}
	r.stats.Failures += failed
	if failed > 0 && !r.warned && r.Warn != nil {
		r.warned = true
		why := "no answer"
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			why = fmt.Sprintf("no answer within %v", r.Timeout)
		case err != nil:
			why = err.Error()
		}
		r.Warn(fmt.Sprintf("AS lookup via %s failed for %d of %d addresses (shown as AS?): %s", r.src.Name(), failed, len(addrs), firstLine(why)))
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// The disk cache: one JSON file per source (its name says the server), entries with
// their expiry. It is read once, and written back by Save merged with what other runs
// wrote meanwhile, through a temporary file renamed over it (readers never see half a
// file).

type diskEntry struct {
	Info    Info      `json:"info"`
	Expires time.Time `json:"expires"`
}

type diskFile struct {
	Version int                  `json:"version"`
	Entries map[string]diskEntry `json:"entries"`
}

const diskVersion = 1

// remote reports whether the source is worth a disk cache (a file is its own cache).
func (r *Resolver) remote() bool {
	_, local := r.src.(*File)
	return !local
}

func (r *Resolver) cachePath() string {
	name := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-':
			return c
		}
		return '_'
	}, r.src.Name())
	return filepath.Join(r.CacheDir, "asn-"+name+".json")
}

// readDisk reads the cache file; a missing or unreadable one is an empty cache.
func (r *Resolver) readDisk() map[string]diskEntry {
	b, err := os.ReadFile(r.cachePath())
	if err != nil {
		return map[string]diskEntry{}
	}
	var f diskFile
	if json.Unmarshal(b, &f) != nil || f.Version != diskVersion || f.Entries == nil {
		return map[string]diskEntry{}
	}
	return f.Entries
}

// loadDisk fills memory with the valid entries of the disk cache, once. Called locked.
func (r *Resolver) loadDisk() {
	if r.loaded || r.CacheDir == "" || !r.remote() {
		r.loaded = true
		return
	}
	r.loaded = true
	now := r.Now()
	for k, e := range r.readDisk() {
		a, err := netip.ParseAddr(k)
		if err != nil || !now.Before(e.Expires) || e.Info.Failed {
			continue
		}
		r.mem[a] = e.Info
		if r.disk == nil {
			r.disk = map[netip.Addr]bool{}
		}
		r.disk[a] = true
	}
}

// Save writes the answers of this run to the disk cache (nothing without CacheDir).
func (r *Resolver) Save() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.CacheDir == "" || !r.remote() || len(r.fresh) == 0 {
		return nil
	}
	if err := os.MkdirAll(r.CacheDir, 0o700); err != nil {
		return fmt.Errorf("create cache dir: %w", err)
	}
	now := r.Now()
	entries := r.readDisk()
	for k, e := range entries {
		if !now.Before(e.Expires) {
			delete(entries, k)
		}
	}
	for a, in := range r.fresh {
		entries[a.String()] = diskEntry{Info: in, Expires: now.Add(r.TTL)}
	}
	b, err := json.Marshal(diskFile{Version: diskVersion, Entries: entries})
	if err != nil {
		return fmt.Errorf("encode asn cache: %w", err)
	}
	if err := writeAtomic(r.cachePath(), b); err != nil {
		return err
	}
	r.fresh = map[netip.Addr]Info{}
	return nil
}

// writeAtomic replaces path with b: a temporary file in the same directory, synced, then
// renamed over it.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".asn-*.tmp")
	if err != nil {
		return fmt.Errorf("write asn cache: %w", err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write asn cache %s: %w", path, werr)
	}
	return nil
}

// DefaultCacheDir is the user cache directory's turnpath folder ("" when there is none).
func DefaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "turnpath")
}

// Known is what the resolver knows of a without asking: the answer of an earlier
// Lookup, Private for a private range, else Failed.
func (r *Resolver) Known(a netip.Addr) Info {
	a = a.Unmap()
	if !r.LookupPrivate && Private(a) {
		return Info{Private: true}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if in, ok := r.mem[a]; ok {
		return in
	}
	return Info{Failed: true}
}
