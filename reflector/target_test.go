package reflector

import (
	"net/netip"
	"testing"
)

func TestTargets(t *testing.T) {
	seen := map[netip.Addr]bool{}
	for _, i := range []int{0, 1, 65535, 65536, MaxTargets4 - 1} {
		a := Target(i, false)
		if !probed4.Contains(a) || seen[a] || a.As4()[2] >= 254 && a.As4()[1] == 18 {
			t.Errorf("target %d = %s", i, a)
		}
		seen[a] = true
	}
	if a := Target(70000, true); !probed6.Contains(a) || link6.Contains(a) {
		t.Errorf("v6 target %s", a)
	}
}
