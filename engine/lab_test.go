package engine_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/lab/labtest"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// labUp brings up a lab of its own for the test and removes it afterwards.
func labUp(t *testing.T, profile string) *lab.Lab {
	t.Helper()
	return labtest.Up(t, "tpe", profile)
}

// traceOnce traces dst from the lab's client with one engine and a fixed source port.
func traceOnce(t *testing.T, l *lab.Lab, kind string, dst netip.Addr, sport uint16) (trace.Result, string) {
	t.Helper()
	payload, err := probe.ParsePayload("stun")
	if err != nil {
		t.Fatal(err)
	}
	var eng trace.Engine
	err = l.Do(func() error {
		rt, err := hostnet.Lookup(dst)
		if err != nil {
			return err
		}
		cfg := engine.Config{Payload: payload, Nonce: 0x7e57ab1e, Ifindexes: []int{rt.Ifindex},
			Flows: []probe.Flow{{Src: rt.Src, Dst: dst, Proto: probe.ProtoUDP, SPort: sport, DPort: 3478}}}
		if kind == "ebpf" {
			eng, err = engine.NewEBPF(cfg)
		} else {
			eng, err = engine.NewSocket(cfg)
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s engine: %v", kind, err)
	}
	defer func() {
		if err := eng.Close(); err != nil {
			t.Errorf("close %s engine: %v", kind, err)
		}
	}()
	opts := trace.DefaultOptions()
	opts.MaxTTL = 16
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := trace.Run(ctx, eng, 1, opts)
	if err != nil {
		t.Fatalf("%s trace %s: %v", kind, dst, err)
	}
	if e, ok := eng.(*engine.EBPF); ok {
		// trace hands the engine batches: no probe goes one by one, fewer send calls
		// than probes, AF_PACKET or (until the next hop is resolved) raw-socket sendmmsg.
		st := e.SendStats()
		if st.SendTo != 0 || st.Ring != 0 || st.Gen != 0 || int(st.PacketMmsg+st.RawMmsg) != res[0].Sent || st.Calls >= uint64(res[0].Sent) {
			t.Errorf("%s: %d probes sent; send stats %+v", dst, res[0].Sent, st)
		}
		if send, _ := e.Methods(); os.Getenv(engine.SendEnv) == "gen" && !strings.Contains(send, "generator: no frame reached") {
			t.Errorf("%s: send method %q, want AF_PACKET saying why not the generator", dst, send)
		}
		labPacketProbes += st.PacketMmsg
	}
	return res[0], pathKey(res[0])
}

// labPacketProbes counts the probes the eBPF engine's traces sent by AF_PACKET.
var labPacketProbes uint64

// pathKey is the sequence of responders, "*" for silent TTLs.
func pathKey(r trace.Result) string {
	s := ""
	for _, h := range r.Hops {
		from := "*"
		for _, rep := range h.Replies {
			if rep != nil {
				from = rep.From.String()
				break
			}
		}
		s += fmt.Sprintf("%d:%s ", h.TTL, from)
	}
	return s
}

// checkTruth asserts that the trace reached the relay and that its hops are exactly one of
// the lab's true paths: right responder at every TTL, the silent router silent, every probe
// of a hop answered by the same router (a fixed flow never moves).
func checkTruth(t *testing.T, l *lab.Lab, kind string, dst netip.Addr, sport uint16, r trace.Result) {
	t.Helper()
	tt, ok := l.Truth().TargetTruth(dst)
	if !ok {
		t.Fatalf("no truth for %s", dst)
	}
	if !r.Reached {
		t.Fatalf("%s %s: not reached: %s", kind, dst, pathKey(r))
	}
	var match lab.Path
	for _, p := range tt.Paths() {
		if len(p) == r.DestTTL {
			ok := true
			for i, resp := range p[:len(p)-1] {
				for _, rep := range r.Hops[i].Replies {
					if resp.Silent && rep != nil || !resp.Silent && (rep == nil || rep.From != resp.Addr) {
						ok = false
					}
				}
			}
			if ok {
				match = p
			}
		}
	}
	if match == nil {
		t.Fatalf("%s %s: hops %s match no true path", kind, dst, pathKey(r))
	}
	fam := lab.IPv4
	if !dst.Is4() {
		fam = lab.IPv6
	}
	for _, rep := range r.Hops[r.DestTTL-1].Replies {
		if rep == nil || rep.Kind != probe.KindSTUN || rep.From != tt.STUNReplyFrom() || rep.STUN == nil || rep.STUN.Class != "success" {
			t.Fatalf("%s %s: destination answer %+v, want STUN success from %s", kind, dst, rep, tt.STUNReplyFrom())
		}
		// No NAT in the lab: the relay sees our own source address and port.
		if want := netip.AddrPortFrom(l.ClientAddr(fam), sport); rep.STUN.Mapped != want || rep.NAT != "" {
			t.Errorf("%s %s: mapped %v (nat %q), want %v", kind, dst, rep.STUN.Mapped, rep.NAT, want)
		}
	}
	for _, h := range r.Hops {
		for _, rep := range h.Replies {
			if rep == nil {
				continue
			}
			if kind == "ebpf" && !rep.Kernel {
				t.Errorf("ebpf: TTL %d: RTT not from kernel timestamps", h.TTL)
			}
			if rep.RTT <= 0 || rep.RTT > time.Second {
				t.Errorf("%s: TTL %d: RTT %v", kind, h.TTL, rep.RTT)
			}
		}
	}
}

func targets(l *lab.Lab) []netip.Addr {
	var out []netip.Addr
	for _, g := range []string{"wildcard", "bound"} {
		var v4, v6 bool
		for _, a := range l.Targets(g) {
			if a.Is4() && !v4 && a.As4()[3] != 0 {
				out, v4 = append(out, a), true
			}
			if !a.Is4() && !v6 && !a.IsUnspecified() && a.As16()[15] != 0 {
				out, v6 = append(out, a), true
			}
		}
	}
	return out
}

// TestTraceFastLab: both engines, IPv4 and IPv6, both coturn flavours, in the fast profile;
// flow stability and ECMP spreading.
func TestTraceFastLab(t *testing.T) {
	l := labUp(t, "fast")
	for _, dst := range targets(l) {
		res := map[string]string{}
		for _, kind := range []string{"ebpf", "socket"} {
			r, key := traceOnce(t, l, kind, dst, 50000)
			checkTruth(t, l, kind, dst, 50000, r)
			res[kind] = key
		}
		if res["ebpf"] != res["socket"] {
			t.Errorf("%s: engines disagree:\n ebpf   %s\n socket %s", dst, res["ebpf"], res["socket"])
		}
	}

	// Paris: one flow, one path, every time. Other source ports spread over the branches.
	dst := netip.MustParseAddr("198.19.1.9")
	_, first := traceOnce(t, l, "ebpf", dst, 50000)
	for i := 0; i < 3; i++ {
		if _, again := traceOnce(t, l, "ebpf", dst, 50000); again != first {
			t.Fatalf("same flow, another path:\n %s\n %s", first, again)
		}
	}
	paths := map[string]bool{}
	for sp := uint16(40000); sp < 40012; sp++ {
		r, key := traceOnce(t, l, "ebpf", dst, sp)
		checkTruth(t, l, "ebpf", dst, sp, r)
		paths[key] = true
	}
	if len(paths) < 2 {
		t.Errorf("12 source ports all took one path: %v", paths)
	}
	if labPacketProbes == 0 {
		t.Error("no trace sent by AF_PACKET")
	}

	// The in-kernel generator asked for where the veth's other end (a router's) takes
	// no XDP frames: its first run gets nothing through, the batches go by AF_PACKET
	// (traceOnce checks the counts) and the trace is right.
	t.Setenv(engine.SendEnv, "gen")
	r, _ := traceOnce(t, l, "ebpf", dst, 50000)
	checkTruth(t, l, "ebpf", dst, 50000, r)
}

// TestTraceRealisticLab: with Linux's router ICMP limits (burst 6, then 1/s), one trace per
// engine and family stays inside the budget and still sees every hop.
func TestTraceRealisticLab(t *testing.T) {
	l := labUp(t, "realistic")
	for _, dst := range []netip.Addr{netip.MustParseAddr("198.19.1.20"), netip.MustParseAddr("fd51:1:1::20")} {
		for _, kind := range []string{"ebpf", "socket"} {
			r, _ := traceOnce(t, l, kind, dst, 50000)
			checkTruth(t, l, kind, dst, 50000, r)
		}
	}
}
