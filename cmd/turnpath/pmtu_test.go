package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// TestPathMTUInLab: one link of the path (r1 -> r2, shared by every target) narrowed to
// 1300 bytes; trace --pmtu reports 1300 and the hop in front of that link (r1, TTL 1),
// IPv4 and IPv6, with both engines, and still every hop of the path. Without --pmtu
// nothing of it shows.
func TestPathMTUInLab(t *testing.T) {
	prefix, _, inLab := cliLab(t, "tpmtu")
	for _, c := range [][]string{
		{"ip", "-n", prefix + "-r1", "link", "set", "l2-r2", "mtu", "1300"},
		{"ip", "-n", prefix + "-r2", "link", "set", "l2-r1", "mtu", "1300"},
	} {
		if r := run(t, 10*time.Second, c...); r.code != 0 {
			t.Fatalf("%v: %s", c, r.stderr)
		}
	}
	truth := lab.DefaultTruth()
	type doc struct {
		Options map[string]any `json:"options"`
		Targets []struct {
			Address     string     `json:"address"`
			Reached     bool       `json:"reached"`
			PathMTU     int        `json:"path_mtu"`
			PathMTUHop  int        `json:"path_mtu_hop"`
			PathMTUFrom string     `json:"path_mtu_from"`
			Hops        []traceHop `json:"hops"`
		} `json:"targets"`
	}
	for _, engine := range []string{"ebpf", "socket"} {
		for _, pmtu := range []bool{true, false} {
			args := []string{"trace", "-n", "--engine", engine, "--format", "json"}
			if pmtu {
				args = append(args, "--pmtu")
			}
			args = append(args, "198.19.1.1", "fd51:1:2::5")
			r := run(t, 60*time.Second, inLab(args...)...)
			if r.code != 0 {
				t.Fatalf("%s pmtu %v: exit %d: %s", engine, pmtu, r.code, r.stderr)
			}
			var d doc
			if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || len(d.Targets) != 2 {
				t.Fatalf("%s: %v\n%s", engine, err, r.stdout)
			}
			if _, ok := d.Options["pmtu"]; ok != pmtu {
				t.Errorf("%s pmtu %v: options %v", engine, pmtu, d.Options)
			}
			for _, tg := range d.Targets {
				tt, _ := truth.TargetTruth(netip.MustParseAddr(tg.Address))
				first := tt.AddrsAt(1)[0].String()
				if !pmtu {
					if tg.PathMTU != 0 || tg.PathMTUHop != 0 || strings.Contains(r.stdout, `"mtu"`) {
						t.Errorf("%s without --pmtu: %s path MTU %d hop %d", engine, tg.Address, tg.PathMTU, tg.PathMTUHop)
					}
					continue
				}
				if !tg.Reached || tg.PathMTU != 1300 || tg.PathMTUHop != 1 || tg.PathMTUFrom != first {
					t.Errorf("%s: %s reached %v, path MTU %d after hop %d (%s), want 1300 after hop 1 (%s)",
						engine, tg.Address, tg.Reached, tg.PathMTU, tg.PathMTUHop, tg.PathMTUFrom, first)
				}
				// Every hop still there: the probes that went past r1 were re-sent smaller.
				ok := false
				var diffs []string
				for _, p := range tt.Paths() {
					if d := pathDiff(p, tg.Hops); d == "" {
						ok = true
					} else {
						diffs = append(diffs, d)
					}
				}
				if !ok {
					t.Errorf("%s: %s hops match no path of the truth: %v", engine, tg.Address, diffs)
				}
			}
		}
	}
	// The text says it too.
	r := run(t, 60*time.Second, inLab("trace", "-n", "--pmtu", "fd51:1:2::5")...)
	if r.code != 0 || !strings.Contains(r.stdout, "path MTU 1300: the link after hop 1 (fd51:0:0:1::2) is the narrowest") ||
		!strings.Contains(r.stdout, "! packet too big for the next link: MTU 1300") {
		t.Errorf("text: exit %d\n%s", r.code, r.stdout)
	}
}
