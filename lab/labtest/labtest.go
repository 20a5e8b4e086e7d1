// Package labtest brings up a private netns lab for one test and tears it down after it.
package labtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// Up brings up a lab with a random prefix starting with stem (so parallel test binaries
// never share one) and removes it when the test ends. It skips the test unless root.
func Up(t testing.TB, stem, profile string) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and BPF")
	}
	b := make([]byte, 3)
	rand.Read(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Prefix: stem + hex.EncodeToString(b), Profile: profile})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}
