package probe

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestChecksumAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		if got, want := fold(sum(0, b)), refSum(b); got != want && !(got == 0 && want == 0xffff) && !(got == 0xffff && want == 0) {
			t.Fatalf("len %d: sum %#x, reference %#x", n, got, want)
		}
		// Inserting the checksum makes the whole verify (even lengths).
		if n >= 2 && n%2 == 0 {
			b[0], b[1] = 0, 0
			c := Checksum(b)
			b[0], b[1] = byte(c>>8), byte(c)
			if refSum(b) != 0xffff {
				t.Fatalf("len %d: checksum does not verify", n)
			}
		}
	}
	// RFC 1071 §3 example.
	if s := fold(sum(0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7})); s != 0xddf2 {
		t.Fatalf("RFC 1071 example: %#x", s)
	}
}

func TestOnesAdd(t *testing.T) {
	for _, c := range []struct{ a, b, want uint16 }{
		{1, 2, 3}, {0xffff, 1, 1}, {0xfffe, 2, 1}, {0x8000, 0x8000, 1}, {0, 0, 0}, {0xffff, 0, 0xffff},
	} {
		if got := onesAdd(c.a, c.b); got != c.want {
			t.Errorf("onesAdd(%#x,%#x) = %#x, want %#x", c.a, c.b, got, c.want)
		}
	}
}

func TestPseudoSum(t *testing.T) {
	for _, p := range [][2]netip.Addr{{src4, dst4}, {src6, dst6}} {
		got := fold(pseudoSum(p[0], p[1], 17, 1234))
		want := refSum(refPseudo(p[0], p[1], 17, 1234))
		if got != want {
			t.Errorf("%v: %#x, want %#x", p, got, want)
		}
	}
}
