package probe

import (
	"testing"

	"github.com/pion/stun/v3"
)

func TestSTUNMessageType(t *testing.T) {
	classes := []stun.MessageClass{stun.ClassRequest, stun.ClassIndication, stun.ClassSuccessResponse, stun.ClassErrorResponse}
	for method := stun.Method(0); method < 0x1000; method += 7 {
		for i, c := range classes {
			v := stun.NewType(method, c).Value()
			m, cl := stunMessageType(v)
			if m != uint16(method) || cl != STUNClass(i) {
				t.Fatalf("%#x: method %#x class %v, want %#x %d", v, m, cl, method, i)
			}
		}
	}
	for _, c := range []struct {
		v      uint16
		method uint16
		class  STUNClass
	}{
		{STUNBindingRequest, 1, STUNRequest}, {STUNBindingSuccess, 1, STUNSuccess}, {STUNBindingError, 1, STUNError},
		{STUNAllocateRequest, 3, STUNRequest}, {STUNAllocateSuccess, 3, STUNSuccess}, {STUNAllocateError, 3, STUNError},
	} {
		if m, cl := stunMessageType(c.v); m != c.method || cl != c.class {
			t.Errorf("%#04x: %#x %v", c.v, m, cl)
		}
	}
}

func TestSTUNTemplates(t *testing.T) {
	b, err := bindingTemplate()
	if err != nil || len(b) != 20 || b[0] != 0 || b[1] != 1 || b[2] != 0 || b[3] != 0 {
		t.Fatalf("binding %x %v", b, err)
	}
	a, err := allocateTemplate()
	if err != nil || len(a) != 28 || a[1] != 3 || a[3] != 8 || a[20] != 0 || a[21] != 0x19 || a[23] != 4 || a[24] != 17 {
		t.Fatalf("allocate %x %v", a, err)
	}
	for _, tmpl := range [][]byte{b, a} {
		for _, x := range tmpl[8:20] {
			if x != 0 {
				t.Fatalf("transaction id not zero: %x", tmpl)
			}
		}
	}
}
