package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"github.com/turnpath/turnpath/probe"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/turnpath/turnpath/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, d)
	}
}

// sample: r1, r2, a silent hop, a slow control plane at TTL 4, then the relay answers STUN
// from another address of the server.
func sample() (TargetInfo, trace.Result) {
	t0 := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	a := netip.MustParseAddr
	te := func(ttl int, from string, rtt time.Duration, replyTTL uint8) *trace.Reply {
		return &trace.Reply{Kind: probe.KindTimeExceeded, From: a(from), RTT: rtt, Kernel: true, ICMPType: 11, ReplyTTL: replyTTL, QuotedTTL: 1,
			Probe: trace.Probe{TTL: uint8(ttl)}}
	}
	stun := &trace.Reply{Kind: probe.KindSTUN, From: a("198.18.14.2"), RTT: 310 * time.Microsecond, Kernel: true, ReplyTTL: 56,
		STUN: &trace.STUNInfo{Class: "success", Mapped: netip.MustParseAddrPort("198.18.1.2:50000")}}
	res := trace.Result{Target: 0, Reached: true, DestTTL: 5, Sent: 40, Start: t0, End: t0.Add(160 * time.Millisecond),
		Hops: []trace.Hop{
			{TTL: 1, Replies: []*trace.Reply{te(1, "198.18.1.1", 50*time.Microsecond, 64), te(1, "198.18.1.1", 45*time.Microsecond, 64), nil}},
			{TTL: 2, Replies: []*trace.Reply{te(2, "198.18.2.1", 90*time.Microsecond, 63), te(2, "198.18.2.1", 80*time.Microsecond, 63), te(2, "198.18.2.1", 85*time.Microsecond, 63)}},
			{TTL: 3, Replies: []*trace.Reply{nil, nil, nil}},
			{TTL: 4, Replies: []*trace.Reply{te(4, "198.18.4.1", 4*time.Millisecond, 61), te(4, "198.18.5.1", 5*time.Millisecond, 61), te(4, "198.18.4.1", 6*time.Millisecond, 61)}},
			{TTL: 5, Replies: []*trace.Reply{stun, stun, stun}},
		}}
	return TargetInfo{Name: "relay.lab", Addr: a("198.19.1.1"), Source: a("198.18.1.2"), Family: 4}, res
}

func sampleRun(tgt Target) *Run {
	return &Run{Schema: Schema, Version: "test", Engine: "ebpf", EngineReason: "test",
		Started: tgt.Started, Finished: tgt.Finished,
		Options: Options{Proto: "udp", Port: 3478, SPort: 50000, Payload: "stun", FirstTTL: 1, MaxTTL: 30, Queries: 3, WaitMS: 1000, Rate: 1000},
		Targets: []Target{tgt}}
}

func names(a netip.Addr) string {
	if a == netip.MustParseAddr("198.18.1.1") {
		return "r1.lab.turnpath.test"
	}
	return ""
}

func TestBuild(t *testing.T) {
	info, res := sample()
	tgt := Build(info, res, names)
	if !tgt.Reached || tgt.DestTTL != 5 || tgt.How != "STUN success from 198.18.14.2" {
		t.Errorf("target: reached %v dest %d how %q", tgt.Reached, tgt.DestTTL, tgt.How)
	}
	h1 := tgt.Hops[0]
	if h1.Received != 2 || h1.LossPct < 33 || h1.LossPct > 34 || *h1.MinMS != 0.045 {
		t.Errorf("hop 1: %+v", h1)
	}
	if tgt.Hops[2].Received != 0 || tgt.Hops[2].MinMS != nil || len(tgt.Hops[2].Addresses) != 0 {
		t.Errorf("silent hop: %+v", tgt.Hops[2])
	}
	h4 := tgt.Hops[3]
	if len(h4.Addresses) != 2 || h4.Addresses[0] != "198.18.4.1" {
		t.Errorf("hop 4 responders %v", h4.Addresses)
	}
	if len(h4.Notes) != 2 { // two responders + RTT inversion
		t.Errorf("hop 4 notes %q", h4.Notes)
	}
	if got := h1.Probes[0].ReturnHops; got != 1 {
		t.Errorf("return hops from TTL 64 = %d, want 1", got)
	}
}

func TestGolden(t *testing.T) {
	info, res := sample()
	tgt := Build(info, res, names)
	run := sampleRun(tgt)

	var text, js, jl, cs bytes.Buffer
	if err := WriteText(&text, run, tgt); err != nil {
		t.Fatal(err)
	}
	golden(t, "trace.txt", text.Bytes())
	if err := WriteJSON(&js, run); err != nil {
		t.Fatal(err)
	}
	golden(t, "trace.json", js.Bytes())
	if err := WriteJSONLine(&jl, run, tgt); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(jl.Bytes(), []byte("\n")) != 1 {
		t.Error("jsonl: want exactly one line per target")
	}
	var back JSONLine
	if err := json.Unmarshal(jl.Bytes(), &back); err != nil || back.Schema != Schema || back.Address != "198.19.1.1" {
		t.Errorf("jsonl round trip: %v %+v", err, back)
	}
	c := NewCSV(&cs)
	if err := c.Write(tgt); err != nil {
		t.Fatal(err)
	}
	golden(t, "trace.csv", cs.Bytes())
}

func TestReturnHops(t *testing.T) {
	for in, want := range map[uint8]int{64: 1, 60: 5, 128: 1, 120: 9, 255: 1, 250: 6, 0: 0} {
		if got := ReturnHops(in); got != want {
			t.Errorf("ReturnHops(%d) = %d, want %d", in, got, want)
		}
	}
}

// The hints of a hop in words, in the order the probes showed them; the destination's
// answer shows none.
func TestBuildHints(t *testing.T) {
	a := netip.MustParseAddr
	te := func(from string, replyTTL, quoted uint8, nat string) *trace.Reply {
		return &trace.Reply{Kind: probe.KindTimeExceeded, From: a(from), RTT: time.Millisecond, ReplyTTL: replyTTL, QuotedTTL: quoted, NAT: nat}
	}
	dest := &trace.Reply{Kind: probe.KindSTUN, From: a("198.19.1.1"), RTT: time.Millisecond, ReplyTTL: 40, QuotedTTL: 9, NAT: "STUN mapped address differs"}
	res := trace.Result{Reached: true, DestTTL: 3, Hops: []trace.Hop{
		{TTL: 1, Replies: []*trace.Reply{te("10.0.0.1", 64, 1, ""), te("10.0.0.1", 64, 1, "")}},
		{TTL: 2, Replies: []*trace.Reply{nil, te("10.0.0.2", 63, 1, "UDP checksum rewritten"), te("10.0.0.3", 58, 2, "")}},
		{TTL: 3, Replies: []*trace.Reply{dest, dest}},
	}}
	tgt := Build(TargetInfo{Name: "x", Addr: a("198.19.1.1"), Source: a("10.0.0.9"), Family: 4}, res, nil)
	want := [][]string{nil, {
		"2 responders at this TTL (route change or per-packet load balancing)",
		"NAT: UDP checksum rewritten",
		"quoted TTL 2 (expected 1): a hop before does not decrement TTL, or the router quotes late",
		"return path ~7 hops vs 2 forward: asymmetric route",
	}, {"NAT: STUN mapped address differs"}}
	for i, w := range want {
		if d := cmp.Diff(w, tgt.Hops[i].Notes); d != "" {
			t.Errorf("hop %d notes (-want +got):\n%s", i+1, d)
		}
	}
}
