package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
)

// The eBPF engine drops the replies it matches at XDP (engine.NewEBPF sets
// loader.Config.Drop), so a capture on the client's interface, which sits behind XDP,
// never sees them. To time the eBPF engine against the wire, `tpbench ebpf-rtt` runs the
// engine's own parts — the same BPF objects (loader.Load), the same probes
// (hostnet.Sender), the same RTT (loader.Event.RTT: XDP receive minus TC egress
// timestamp) — with Drop off, so the capture sees every reply. It runs inside the lab's
// client namespace like every prober.

// RTTSample is one answered probe as a prober timed it.
type RTTSample struct {
	Dst     netip.Addr `json:"dst"`
	TTL     int        `json:"ttl"`
	Attempt int        `json:"attempt"`
	RTTNs   int64      `json:"rtt_ns"`
}

// Key is the probe's capture key (the probe id rides in the UDP checksum).
func (s RTTSample) Key() ProbeKey {
	return ProbeKey{Dst: s.Dst.Unmap(), ID: uint16(s.TTL) | uint16(s.Attempt)<<8}
}

// EBPFRTTOptions are the probes `tpbench ebpf-rtt` sends: every TTL of every target,
// Queries times, TTL-major across targets like turnpath, paced at Rate.
type EBPFRTTOptions struct {
	Targets      []netip.Addr
	SPort, DPort uint16
	MaxTTL       int
	Queries      int
	Rate         float64       // probes per second
	Wait         time.Duration // after the last probe
}

// EBPFRTTResult is what the helper prints (JSON).
type EBPFRTTResult struct {
	Sent    int         `json:"sent"`
	NoTx    int         `json:"no_tx"` // events without a TC egress timestamp (not timed)
	Samples []RTTSample `json:"samples"`
}

// EBPFRTT sends the probes with the eBPF engine's parts and returns the RTTs. It must run
// in the client namespace (as root).
func EBPFRTT(ctx context.Context, o EBPFRTTOptions) (*EBPFRTTResult, error) {
	if len(o.Targets) == 0 || o.MaxTTL < 1 || o.Queries < 1 || o.Rate <= 0 {
		return nil, errors.New("ebpf-rtt: need targets, max TTL, queries and a rate")
	}
	var flows []probe.Flow
	var ifs []int
	v4, v6 := false, false
	for _, t := range o.Targets {
		rt, err := hostnet.Lookup(t)
		if err != nil {
			return nil, err
		}
		flows = append(flows, probe.Flow{Src: rt.Src, Dst: t, Proto: probe.ProtoUDP, SPort: o.SPort, DPort: o.DPort})
		if !slices.Contains(ifs, rt.Ifindex) {
			ifs = append(ifs, rt.Ifindex)
		}
		v4, v6 = v4 || t.Unmap().Is4(), v6 || !t.Unmap().Is4()
	}
	var nb [4]byte
	_, _ = rand.Read(nb[:])
	nonce := binary.BigEndian.Uint32(nb[:]) | 1
	objs, err := loader.Load(loader.Config{Proto: uint8(probe.ProtoUDP), SportLo: o.SPort, SportHi: o.SPort,
		DPort: o.DPort, Nonce: nonce, Drop: false})
	if err != nil {
		return nil, err
	}
	defer objs.Close()
	for i, f := range flows {
		if err := objs.SetFlow(uint32(i+1), f.Dst, f.SPort); err != nil {
			return nil, err
		}
	}
	for _, idx := range ifs {
		a, err := objs.Attach(idx)
		if err != nil {
			return nil, err
		}
		defer a.Close()
	}
	rd, err := objs.Events()
	if err != nil {
		return nil, err
	}
	events := make(chan loader.Event, 1<<16)
	go func() {
		defer close(events)
		for {
			ev, err := rd.Read()
			if errors.Is(err, loader.ErrClosed) {
				return
			}
			if err == nil {
				events <- ev
			}
		}
	}()
	payload, err := probe.ParsePayload("stun")
	if err != nil {
		return nil, err
	}
	snd, err := hostnet.NewSender(v4, v6)
	if err != nil {
		rd.Close()
		return nil, err
	}
	defer snd.Close()

	res := &EBPFRTTResult{}
	start := time.Now()
	gap := time.Duration(float64(time.Second) / o.Rate)
send:
	for a := range o.Queries {
		for ttl := 1; ttl <= o.MaxTTL; ttl++ {
			for i, f := range flows {
				if d := time.Until(start.Add(time.Duration(res.Sent) * gap)); d > 0 {
					time.Sleep(d)
				}
				if ctx.Err() != nil {
					break send
				}
				id, err := probe.MakeID(uint8(ttl), uint8(a))
				if err != nil {
					rd.Close()
					return nil, err
				}
				if err := snd.Send(f, id, uint8(ttl), probe.FlowTag(i+1), nonce, payload); err != nil {
					rd.Close()
					return nil, fmt.Errorf("send: %w", err)
				}
				res.Sent++
			}
		}
	}
	_ = sleep(ctx, o.Wait)
	rd.Close()
	seen := map[ProbeKey]bool{}
	for ev := range events {
		dst := ev.Target
		if ev.Kind == loader.KindSTUN {
			if ev.FlowTag < 1 || int(ev.FlowTag) > len(flows) {
				continue
			}
			dst = flows[ev.FlowTag-1].Dst
		}
		id := probe.ID(ev.ID)
		if !id.Valid() {
			continue
		}
		s := RTTSample{Dst: dst.Unmap(), TTL: int(id.TTL()), Attempt: int(id.Attempt())}
		if seen[s.Key()] {
			continue
		}
		seen[s.Key()] = true
		rtt := ev.RTT()
		if rtt <= 0 {
			res.NoTx++
			continue
		}
		s.RTTNs = rtt.Nanoseconds()
		res.Samples = append(res.Samples, s)
	}
	return res, ctx.Err()
}
