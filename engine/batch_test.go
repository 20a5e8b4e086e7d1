package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/reflector"
	"github.com/turnpath/turnpath/reflector/reflectortest"
	"github.com/turnpath/turnpath/trace"
)

// The eBPF engine's send and receive methods and its pinned objects, each forced off in
// turn (the fallbacks):
// every probe sent by SendBatch (IPv4 and IPv6 mixed in one batch) or Send is answered
// once, from the responder of its TTL, with the RTT from two kernel timestamps, and the
// engine says which methods it used.
func TestEBPFMethods(t *testing.T) {
	n := reflectortest.Up(t, "rfm", 4)
	if err := n.UseEngine("ebpf"); err != nil {
		t.Fatal(err)
	}
	payload, err := probe.ParsePayload("stun")
	if err != nil {
		t.Fatal(err)
	}
	// Targets 0..3 IPv4, 4..7 IPv6: a batch holds runs of both families.
	const targets = 8
	var flows []probe.Flow
	for i := range targets {
		dst := reflector.Target(i%4, i >= 4)
		flows = append(flows, probe.Flow{Src: n.Source(dst), Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478})
	}
	for _, c := range []struct {
		name                   string
		noBatch, noPoll, noPin bool
		noPacket, ring         bool
		wantSend, wantRcv      string
	}{
		{"default", false, false, false, false, false, hostnet.SendPacketMmsg, loader.RecvNetpoll},
		{"TX ring", false, false, false, false, true, hostnet.SendRing, loader.RecvNetpoll},
		{"generator", false, false, false, false, false, engine.SendGen, loader.RecvNetpoll},
		{"no AF_PACKET", false, false, false, true, false, hostnet.SendMmsg, loader.RecvNetpoll},
		{"no sendmmsg", true, false, false, false, false, hostnet.SendTo, loader.RecvNetpoll},
		{"no netpoll reader", false, true, false, false, false, hostnet.SendPacketMmsg, loader.RecvReader},
		{"not pinned", false, false, true, false, false, hostnet.SendPacketMmsg, loader.RecvNetpoll},
		{"none", true, true, true, true, false, hostnet.SendTo, loader.RecvReader},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := engine.Config{Flows: flows, Payload: payload, Nonce: 0x5eedbeef, Ifindexes: []int{n.Ifindex()},
				NoBatch: c.noBatch, NoNetpoll: c.noPoll, NoPin: c.noPin, NoPacket: c.noPacket, Ring: c.ring,
				Generator: c.wantSend == engine.SendGen}
			var e *engine.EBPF
			if err := n.Do(func() error {
				var err error
				e, err = engine.NewEBPF(cfg)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := e.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			if send, recv := e.Methods(); send != c.wantSend || recv != c.wantRcv {
				t.Errorf("methods %q, %q; want %q, %q", send, recv, c.wantSend, c.wantRcv)
			}
			want := map[trace.Probe]bool{}
			var batch []trace.Probe
			for attempt := range uint8(3) {
				for ttl := uint8(1); ttl <= 4; ttl++ {
					for tg := range targets {
						p := trace.Probe{Target: tg, TTL: ttl, Attempt: attempt}
						want[p] = true
						if attempt == 2 {
							if err := e.Send(p); err != nil { // the one-probe path too
								t.Fatal(err)
							}
							continue
						}
						batch = append(batch, p)
					}
				}
			}
			batched := uint64(len(batch))
			for len(batch) > 0 {
				k := min(len(batch), 24)
				if sent, err := e.SendBatch(batch[:k]); sent != k || err != nil {
					t.Fatalf("SendBatch: %d of %d sent, %v", sent, k, err)
				}
				batch = batch[k:]
			}
			// Every batched probe went the way Methods names (the reflector network's
			// neighbour entries are permanent: AF_PACKET from the first batch on);
			// Send always takes sendto.
			st := e.SendStats()
			byMethod := map[string]uint64{engine.SendGen: st.Gen, hostnet.SendPacketMmsg: st.PacketMmsg, hostnet.SendRing: st.Ring,
				hostnet.SendMmsg: st.RawMmsg, hostnet.SendTo: st.SendTo - targets*4}
			if got := byMethod[c.wantSend]; got != batched || st.Gen+st.PacketMmsg+st.Ring+st.RawMmsg+st.SendTo != batched+targets*4 {
				t.Errorf("send stats %+v: want %d batched probes by %s", st, batched, c.wantSend)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for len(want) > 0 {
				select {
				case r := <-e.Replies():
					if !want[r.Probe] {
						t.Fatalf("unexpected or duplicate reply %+v", r.Probe)
					}
					delete(want, r.Probe)
					v6 := r.Probe.Target >= 4
					if int(r.Probe.TTL) < n.Depth() && r.From != n.Responder(int(r.Probe.TTL), v6) {
						t.Errorf("%+v answered by %s", r.Probe, r.From)
					}
					if !r.Kernel || r.RTT <= 0 {
						t.Errorf("%+v: RTT %v, kernel timestamps %v", r.Probe, r.RTT, r.Kernel)
					}
				case err := <-e.Errors():
					t.Fatal(err)
				case <-ctx.Done():
					t.Fatalf("%d probes unanswered, e.g. %v", len(want), first(want))
				}
			}
			// Replies of probes sent after a pause still arrive (the reader has left its
			// quiet mode, or drains them from Send).
			time.Sleep(20 * time.Millisecond)
			if err := e.Send(trace.Probe{Target: 0, TTL: 1, Attempt: 9}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-e.Replies():
				if r.Probe != (trace.Probe{Target: 0, TTL: 1, Attempt: 9}) {
					t.Errorf("reply %+v", r.Probe)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no reply after a pause")
			}
		})
	}
}

func first(m map[trace.Probe]bool) trace.Probe {
	for p := range m {
		return p
	}
	return trace.Probe{}
}

// More replies than the Replies channel holds, none read while the batches go out: the
// sending loop stops draining when the channel is full, and the reader goroutine delivers
// the rest once they are read, after the sending stopped (the kernel's wakeups off while
// the batches came: it polls, then switches them back on).
func TestEBPFBatchBacklog(t *testing.T) {
	n := reflectortest.Up(t, "rfb", 4)
	if err := n.UseEngine("ebpf"); err != nil {
		t.Fatal(err)
	}
	payload, err := probe.ParsePayload("stun")
	if err != nil {
		t.Fatal(err)
	}
	var flows []probe.Flow
	for i := range 16 {
		dst := reflector.Target(i, false)
		flows = append(flows, probe.Flow{Src: n.Source(dst), Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478})
	}
	var e *engine.EBPF
	if err := n.Do(func() error {
		e, err = engine.NewEBPF(engine.Config{Flows: flows, Payload: payload, Nonce: 0xbac10c, Ifindexes: []int{n.Ifindex()}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const total = 6000
	var batch []trace.Probe
	sent := 0
	for i := range total {
		batch = append(batch, trace.Probe{Target: i % 16, TTL: uint8(1 + i/16%4), Attempt: uint8(i / 64)})
		if len(batch) == 64 || i == total-1 {
			k, err := e.SendBatch(batch)
			if err != nil {
				t.Fatal(err)
			}
			sent += k
			batch = batch[:0]
		}
	}
	time.Sleep(50 * time.Millisecond) // past the quiet mode's idle time
	got := map[trace.Probe]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < sent {
		select {
		case r := <-e.Replies():
			got[r.Probe] = true
		case <-timeout:
			t.Fatalf("%d of %d replies", len(got), sent)
		}
	}
}
