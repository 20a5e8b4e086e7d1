package probe

import "testing"

func TestMakeID(t *testing.T) {
	tests := []struct {
		ttl, attempt uint8
		want         ID
		err          error
	}{
		{1, 0, 0x0001, nil},
		{255, 0, 0x00ff, nil},
		{1, 1, 0x0101, nil},
		{30, 2, 0x021e, nil},
		{255, 254, 0xfeff, nil},
		{0, 0, 0, ErrZeroTTL},
		{0, 3, 0, ErrZeroTTL},
		{1, 255, 0, ErrAttempt255},
	}
	for _, tt := range tests {
		got, err := MakeID(tt.ttl, tt.attempt)
		if err != tt.err || got != tt.want {
			t.Errorf("MakeID(%d, %d) = %#x, %v; want %#x, %v", tt.ttl, tt.attempt, got, err, tt.want, tt.err)
		}
	}
}

func TestIDRoundTripAll(t *testing.T) {
	n := 0
	for ttl := 0; ttl < 256; ttl++ {
		for a := 0; a < 256; a++ {
			id, err := MakeID(uint8(ttl), uint8(a))
			if err != nil {
				if ttl != 0 && a != 255 {
					t.Fatalf("MakeID(%d,%d): %v", ttl, a, err)
				}
				continue
			}
			n++
			if id == 0 || id == 0xffff || !id.Valid() {
				t.Fatalf("MakeID(%d,%d) = %#x: special value", ttl, a, id)
			}
			if id.TTL() != uint8(ttl) || id.Attempt() != uint8(a) {
				t.Fatalf("round trip %d,%d -> %d,%d", ttl, a, id.TTL(), id.Attempt())
			}
		}
	}
	if n != 255*255 {
		t.Fatalf("%d valid ids, want %d", n, 255*255)
	}
	if ID(0).Valid() || ID(0xffff).Valid() || ID(0xff01).Valid() || ID(0x0100).Valid() {
		t.Fatal("invalid ids reported valid")
	}
	if s := ID(0x021e).String(); s != "30/2 (0x021e)" {
		t.Fatalf("String = %q", s)
	}
}
