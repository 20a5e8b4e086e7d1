package hostnet_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/lab"
)

// inNewNetns runs fn (through lab.InNetNS) in a fresh network namespace set up by the ip commands
// (run with -n NAME), and removes the namespace after.
func inNewNetns(t *testing.T, setup [][]string, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("tproute%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v %s", err, out)
		}
	})
	for _, args := range setup {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	if err := lab.InNetNS(name, func() error { fn(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestLookupNexthops(t *testing.T) {
	setup := [][]string{
		{"link", "add", "d0", "type", "veth", "peer", "name", "d1"},
		{"link", "set", "d1", "up"},
		{"link", "set", "d0", "up"},
		{"addr", "add", "198.18.250.1/24", "dev", "d0"},
		{"addr", "add", "fd51:250::1/64", "dev", "d0", "nodad"},
		{"route", "add", "198.18.200.0/24", "via", "198.18.250.2"},
		{"route", "add", "198.18.201.0/24", "nexthop", "via", "198.18.250.2", "nexthop", "via", "198.18.250.3", "nexthop", "via", "198.18.250.4"},
		{"-6", "route", "add", "fd51:200::/64", "via", "fd51:250::2"},
		{"-6", "route", "add", "fd51:201::/64", "nexthop", "via", "fd51:250::2", "nexthop", "via", "fd51:250::3"},
	}
	inNewNetns(t, setup, func() {
		for dst, want := range map[string]int{
			"198.18.200.9": 1, "198.18.201.9": 3, "198.18.250.7": 1, // on-link: one next hop, the target
			"fd51:200::9": 1, "fd51:201::9": 2, "fd51:250::7": 1,
		} {
			rt, err := hostnet.Lookup(netip.MustParseAddr(dst))
			if err != nil {
				t.Errorf("lookup %s: %v", dst, err)
				continue
			}
			if rt.Nexthops != want || rt.Ifname != "d0" {
				t.Errorf("lookup %s: %d next hops via %q, want %d via d0", dst, rt.Nexthops, rt.Ifname, want)
			}
		}
		if _, err := hostnet.Lookup(netip.MustParseAddr("198.19.0.1")); !errors.Is(err, hostnet.ErrNoRoute) {
			t.Errorf("lookup without a route: %v, want ErrNoRoute", err)
		}
	})
}
