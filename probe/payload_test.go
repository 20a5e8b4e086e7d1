package probe

import (
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/pion/stun/v3"
)

func TestParsePayload(t *testing.T) {
	tests := []struct {
		spec  string
		kind  PayloadKind
		len   int
		steer int
	}{
		{"stun", PayloadSTUN, 20, 18},
		{"STUN", PayloadSTUN, 20, 18},
		{"turn", PayloadTURN, 28, 18},
		{"ms-turn", PayloadMSTURN, 104, 18},
		{"none", PayloadNone, 2, 0},
		{"hex:de", PayloadHex, 3, 1},
		{"hex:deadbeef", PayloadHex, 6, 4},
		{"hex:0xDEADBEEF01", PayloadHex, 7, 5},
		{"hex:de:ad be-ef_01", PayloadHex, 7, 5},
	}
	for _, tt := range tests {
		p, err := ParsePayload(tt.spec)
		if err != nil {
			t.Errorf("ParsePayload(%q): %v", tt.spec, err)
			continue
		}
		if p.Kind() != tt.kind || p.Len() != tt.len || p.SteeringOffset() != tt.steer {
			t.Errorf("ParsePayload(%q) = kind %v len %d steer %d; want %v %d %d", tt.spec, p.Kind(), p.Len(), p.SteeringOffset(), tt.kind, tt.len, tt.steer)
		}
		if p.IsSTUN() != (tt.kind >= PayloadSTUN) {
			t.Errorf("%q IsSTUN = %v", tt.spec, p.IsSTUN())
		}
		tmpl := p.Template()
		if len(tmpl) != p.Len() || tmpl[p.SteeringOffset()] != 0 || tmpl[p.SteeringOffset()+1] != 0 {
			t.Errorf("%q template %x", tt.spec, tmpl)
		}
		// String round-trips.
		q, err := ParsePayload(p.String())
		if err != nil || !bytes.Equal(q.Template(), tmpl) {
			t.Errorf("%q: String %q does not round-trip", tt.spec, p.String())
		}
	}
	var zero Payload
	if zero.Kind() != PayloadNone || zero.Len() != 2 || zero.String() != "none" {
		t.Error("zero Payload is not none")
	}
	if p, _ := ParsePayload("hex:0102"); !bytes.Equal(p.UserBytes(), []byte{1, 2}) {
		t.Error("UserBytes")
	}
}

func TestParsePayloadErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"hex:abc", "invalid hex payload: odd number of hex digits (3)"},
		{"hex:zz", `invalid hex payload: 'z' is not a hex digit`},
		{"hex:", "invalid hex payload: no bytes"},
		{"hex:0x", "invalid hex payload: no bytes"},
		{"hex:" + strings.Repeat("00", MaxHexPayload+1), "invalid hex payload: 65506 bytes, at most 65505"},
		{"dns", `unknown payload "dns"`},
	}
	for _, tt := range tests {
		_, err := ParsePayload(tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePayload(%.20q) error %v, want %q", tt.spec, err, tt.want)
		}
	}
}

func loadSeed(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/ms-turn-allocate.hex")
	if err != nil {
		t.Fatal(err)
	}
	var h string
	for _, l := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(l, "#") {
			h += strings.TrimSpace(l)
		}
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMSTURNSeed(t *testing.T) {
	seed := loadSeed(t)
	if len(seed) != 104 || !bytes.Equal(seed, msTURNSeed[:]) {
		t.Fatalf("embedded seed differs from testdata (%d bytes)", len(seed))
	}
	m := &stun.Message{Raw: append([]byte(nil), seed...)}
	if err := m.Decode(); err != nil {
		t.Fatalf("seed does not decode as STUN: %v", err)
	}
	if m.Type.Method != stun.MethodAllocate || m.Type.Class != stun.ClassRequest {
		t.Fatalf("seed type %v", m.Type)
	}
	want := []stun.AttrType{0x000f, 0x8008, stun.AttrUsername, 0x0010, 0x8006}
	if len(m.Attributes) != len(want) {
		t.Fatalf("seed attributes %v", m.Attributes)
	}
	for i, a := range m.Attributes {
		if a.Type != want[i] {
			t.Errorf("attr %d = %v, want %v", i, a.Type, want[i])
		}
	}
	p, _ := ParsePayload("ms-turn")
	tmpl := p.Template()
	if !bytes.Equal(tmpl[:8], seed[:8]) || !bytes.Equal(tmpl[20:], seed[20:]) || !bytes.Equal(tmpl[8:20], make([]byte, 12)) {
		t.Fatal("ms-turn template is not the seed with a zero transaction id")
	}
}

func TestTransactionIDLayout(t *testing.T) {
	var tid [12]byte
	PutTransactionID(tid[:], 0x01020304, 0x05060708, 0x090a, 0x0b0c)
	if hex.EncodeToString(tid[:]) != "0102030405060708090a0b0c" {
		t.Fatalf("tid %x", tid)
	}
	n, tag, id, st := SplitTransactionID(tid[:])
	if n != 0x01020304 || tag != 0x05060708 || id != 0x090a || st != 0x0b0c {
		t.Fatal("SplitTransactionID")
	}
}
