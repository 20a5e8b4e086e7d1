package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadTargetFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	os.WriteFile(good, []byte("# relays\n198.19.1.1\n\n  relay.example.test  # comment\nfd51:1:2::1\n"), 0o644)
	names, err := readTargetFile(good)
	if err != nil || strings.Join(names, ",") != "198.19.1.1,relay.example.test,fd51:1:2::1" {
		t.Fatalf("names %v err %v", names, err)
	}
	for content, want := range map[string]string{
		"198.19.1.1 198.19.1.2\n": "bad.txt:1: one target per line",
		"ok.test\nbad_host!\n":    "bad.txt:2:",
		"# nothing\n\n":           "no targets",
	} {
		bad := filepath.Join(dir, "bad.txt")
		os.WriteFile(bad, []byte(content), 0o644)
		if _, err := readTargetFile(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", content, err, want)
		}
	}
	if _, err := readTargetFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestResolveTargets(t *testing.T) {
	ctx := context.Background()
	got, err := resolveTargets(ctx, []string{"198.19.1.1", "::ffff:198.19.1.2"}, 0)
	if err != nil || got[0].Addr.String() != "198.19.1.1" || got[1].Addr.String() != "198.19.1.2" {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := resolveTargets(ctx, []string{"fd51::1"}, 4); err == nil {
		t.Error("IPv6 literal accepted with -4")
	}
	if _, err := resolveTargets(ctx, []string{"no-such-host.invalid"}, 0); err == nil || !strings.Contains(err.Error(), "unknown host") {
		t.Errorf("unknown host: %v", err)
	}
}

// Ctrl-C while names are looked up is an interruption, not an unknown host.
func TestResolveTargetsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := resolveTargets(ctx, []string{"relay.example.test"}, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}
