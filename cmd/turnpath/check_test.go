package main

import (
	"strings"
	"testing"
)

// check names the send method a run would use for the target, as TURNPATH_SEND and the
// route make it: AF_PACKET through the resolved next hop (or raw-socket sendmmsg until
// the first probes resolve it), raw-socket sendmmsg or sendto when forced.
func TestCheckSendMethod(t *testing.T) {
	_, _, inLab := cliLab(t, "tpck")
	for _, c := range []struct {
		env  string
		want []string // one of these
	}{
		{"", []string{"send: sendmmsg on AF_PACKET, batches on l1-r1, next hop 198.18.1.2 (",
			"send: sendmmsg on raw sockets, batches until the kernel resolves the next hop"}},
		{"ring", []string{"send: AF_PACKET TX ring (TPACKET_V2), one send per batch on l1-r1, next hop 198.18.1.2 (",
			"send: sendmmsg on raw sockets, batches until the kernel resolves the next hop"}},
		{"gen", []string{"send: in-kernel generator (BPF_PROG_RUN, live XDP frames), one run per batch where the interface counts"}},
		{"mmsg", []string{"send: sendmmsg on raw sockets, batches (TURNPATH_SEND=mmsg)"}},
		{"sendto", []string{"send: sendto on raw sockets, one probe per call"}},
	} {
		r := runEnv(t, []string{"TURNPATH_SEND=" + c.env}, inLab("check", "198.19.1.1")...)
		ok := false
		for _, w := range c.want {
			ok = ok || strings.Contains(r.stdout, w)
		}
		if r.code != 0 || !ok || !strings.Contains(r.stdout, "every probe timestamped at TC egress") {
			t.Errorf("TURNPATH_SEND=%s: exit %d, want a line starting %q\n%s%s", c.env, r.code, c.want[0], r.stdout, r.stderr)
		}
	}
}
