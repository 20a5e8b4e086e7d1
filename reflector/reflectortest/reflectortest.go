// Package reflectortest brings up a private reflector network for one test and takes it
// down after it.
package reflectortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/turnpath/turnpath/reflector"
)

// Up brings up a reflector network of the given depth with a random prefix starting with
// stem (so parallel test binaries never share one) and takes it down when the test ends.
// It skips the test unless root.
func Up(t testing.TB, stem string, depth int) *reflector.Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and BPF")
	}
	b := make([]byte, 3)
	rand.Read(b)
	n, err := reflector.Up(context.Background(), reflector.Options{Prefix: stem + hex.EncodeToString(b), Depth: depth})
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	return n
}
