package unattended

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFileCommitAndAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.json")
	if err := os.WriteFile(p, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "new")
	if got := readFile(t, p); got != "old\n" {
		t.Fatalf("before commit: %q", got)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "old\n" {
		t.Fatalf("after abort: %q", got)
	}
	f, err = Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "new")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Abort(); err != nil { // the deferred Abort after a Commit
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "new\n" {
		t.Fatalf("after commit: %q", got)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the old file's 0640", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d files, want only out.json", len(ents))
	}
}

func TestFileBadPath(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{filepath.Join(dir, "nope", "out"), dir, ""} {
		if _, err := Create(p); err == nil {
			t.Errorf("Create(%q): no error", p)
		}
	}
}

// A run killed while writing through the fallback leaves its temporary file; the next
// run into the directory removes it, but not that of a live writer.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, ".out.json.999999999.123"+tmpSuffix) // no such PID
	live := filepath.Join(dir, ".out.json."+strconv.Itoa(os.Getpid())+".456"+tmpSuffix)
	other := filepath.Join(dir, ".other.999999999.1"+tmpSuffix)
	for _, p := range []string{dead, live, other} {
		os.WriteFile(p, nil, 0o600)
	}
	removeStale(dir, "out.json")
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead writer's file stayed")
	}
	for _, p := range []string{live, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed", filepath.Base(p))
		}
	}
}

func TestLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "job.lock")
	ctx := context.Background()
	a, err := Acquire(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(ctx, p, 0)
	var held *HeldError
	if !errors.As(err, &held) || held.PID != os.Getpid() {
		t.Fatalf("second acquire: %v, want held by pid %d", err, os.Getpid())
	}
	start := time.Now()
	_, err = Acquire(ctx, p, 200*time.Millisecond)
	if !errors.As(err, &held) || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("waiting acquire: %v after %v", err, time.Since(start))
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err = Acquire(cctx, p, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled wait: %v", err)
	}
	go func() {
		time.Sleep(150 * time.Millisecond)
		a.Release()
	}()
	b, err := Acquire(ctx, p, 5*time.Second)
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	b.Release()
	b.Release()
	if _, err := Acquire(ctx, filepath.Join(p, "x"), 0); err == nil {
		t.Error("lock under a file: no error")
	}
}

// Every target is in exactly one of N shards, whatever N, and in the same one when the
// list changes.
func TestShardCoversOnce(t *testing.T) {
	var all []string
	for i := range 2000 {
		all = append(all, fmt.Sprintf("198.19.%d.%d", i/256, i%256))
	}
	for _, n := range []int{1, 2, 3, 7, 16, 100} {
		seen := map[string]int{}
		for k := 1; k <= n; k++ {
			for _, name := range (Shard{K: k, N: n}).Select(all) {
				seen[name]++
			}
		}
		for _, name := range all {
			if seen[name] != 1 {
				t.Fatalf("N=%d: %s in %d shards", n, name, seen[name])
			}
		}
	}
	s := Shard{K: 2, N: 7}
	sub := s.Select(all[500:1500]) // a shorter list: the same targets stay
	for _, name := range sub {
		if !s.Holds(name) {
			t.Fatalf("%s moved", name)
		}
	}
	if len(s.Select(all)) < 2000/7/2 {
		t.Errorf("shard 2/7 holds %d of 2000: badly balanced", len(s.Select(all)))
	}
}

func TestParseShard(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == IndexEnv {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		spec, idx string
		want      Shard
		bad       bool
	}{
		{"", "", Shard{}, false},
		{"1/3", "", Shard{1, 3}, false},
		{"3/3", "", Shard{3, 3}, false},
		{"auto/4", "0", Shard{1, 4}, false},
		{"auto/4", "3", Shard{4, 4}, false},
		{"auto/4", "4", Shard{}, true},
		{"auto/4", "", Shard{}, true},
		{"0/3", "", Shard{}, true},
		{"4/3", "", Shard{}, true},
		{"1/0", "", Shard{}, true},
		{"x/2", "", Shard{}, true},
		{"2", "", Shard{}, true},
		{"1/-2", "", Shard{}, true},
	} {
		got, err := ParseShard(tc.spec, env(tc.idx))
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("%q (index %q): %v %v", tc.spec, tc.idx, got, err)
		}
	}
}
