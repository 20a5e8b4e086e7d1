package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Unprivileged tests: struct layout, decoding, config validation, errors.

func TestStructLayout(t *testing.T) {
	var e TurnpathTpEvent
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(tp_event)", unsafe.Sizeof(e), 232},
		{"responder", unsafe.Offsetof(e.Responder), 16},
		{"flowtag", unsafe.Offsetof(e.Flowtag), 64},
		{"icmp_info", unsafe.Offsetof(e.IcmpInfo), 68}, // the MTU of TP_KIND_PKT_TOO_BIG
		{"sport", unsafe.Offsetof(e.Sport), 76},
		{"ext_len", unsafe.Offsetof(e.ExtLen), 90},
		{"kind", unsafe.Offsetof(e.Kind), 92},
		{"flags", unsafe.Offsetof(e.Flags), 101},
		{"ext", unsafe.Offsetof(e.Ext), 104},
		{"sizeof(probe_key)", unsafe.Sizeof(TurnpathProbeKey{}), 20},
		{"sizeof(flow_val)", unsafe.Sizeof(TurnpathFlowVal{}), 32},
		{"sizeof(tp_stats)", unsafe.Sizeof(TurnpathTpStats{}), 80},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d (bpf/turnpath.h)", c.name, c.got, c.want)
		}
	}
	if len(e.Ext) != ExtMax {
		t.Errorf("ext is %d bytes, ExtMax %d", len(e.Ext), ExtMax)
	}
}

func rawEvent(r TurnpathTpEvent) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&r)), unsafe.Sizeof(r))...)
}

func TestDecodeEvent(t *testing.T) {
	r := TurnpathTpEvent{
		RxNs: 2000, TxNs: 1500,
		Responder: netip.MustParseAddr("203.0.113.9").As16(),
		Target:    netip.MustParseAddr("2001:db8::7").As16(),
		Sport:     40001, Dport: 3478, Id: 0x0105,
		Kind: uint8(KindTimeExceeded), Family: 6, Proto: 17, IcmpType: 3,
		QuotedTtl: 1, ReplyTtl: 250, Flags: FlagExtTrunc, ExtLen: 3,
	}
	copy(r.Ext[:], []byte{0x20, 0, 0xaa, 0xbb})
	e, err := DecodeEvent(rawEvent(r))
	if err != nil {
		t.Fatal(err)
	}
	if e.Responder != netip.MustParseAddr("203.0.113.9") || !e.Responder.Is4() {
		t.Errorf("responder %v (IPv4 must be unmapped)", e.Responder)
	}
	if e.Target != netip.MustParseAddr("2001:db8::7") || e.QuotedSrc.IsValid() {
		t.Errorf("target %v quoted src %v", e.Target, e.QuotedSrc)
	}
	if e.Kind != KindTimeExceeded || e.Kind.String() != "time-exceeded" || e.SPort != 40001 || e.ID != 0x0105 ||
		e.ReplyTTL != 250 || e.RTT() != 500 || string(e.Ext) != "\x20\x00\xaa" {
		t.Errorf("decoded %+v", e)
	}
	if e.Key() != (ProbeKey{netip.MustParseAddr("2001:db8::7"), 40001, 0x0105}) {
		t.Errorf("key %+v", e.Key())
	}
	if _, err := DecodeEvent(make([]byte, 100)); err == nil {
		t.Error("short record decoded")
	}
	r.ExtLen = 999 // corrupt: clamped
	if e, _ := DecodeEvent(rawEvent(r)); len(e.Ext) != ExtMax {
		t.Errorf("ext %d bytes", len(e.Ext))
	}
}

// TestEventMTU: the MTU is read only from a packet-too-big event, whose icmp_info the
// kernel has reduced to it; other kinds' icmp_info (RFC 4884 length...) is no MTU.
func TestEventMTU(t *testing.T) {
	for _, c := range []struct {
		kind Kind
		info uint32
		want uint32
	}{
		{KindPacketTooBig, 1300, 1300},
		{KindPacketTooBig, 0x01000500, 0x01000500}, // IPv6 jumbo
		{KindPacketTooBig, 0, 0},                   // Fragmentation Needed before RFC 1191
		{KindDestUnreach, 32<<16 | 1300, 0},
		{KindTimeExceeded, 1300, 0},
	} {
		e, err := DecodeEvent(rawEvent(TurnpathTpEvent{Kind: uint8(c.kind), IcmpInfo: c.info}))
		if err != nil {
			t.Fatal(err)
		}
		if got := e.MTU(); got != c.want {
			t.Errorf("%v with icmp_info %#x: MTU %d, want %d", c.kind, c.info, got, c.want)
		}
	}
	if s := KindPacketTooBig.String(); s != "packet-too-big" {
		t.Errorf("KindPacketTooBig is %q", s)
	}
}

func TestProbeKeyRaw(t *testing.T) {
	k := ProbeKey{Dst: netip.MustParseAddr("198.51.100.7"), SPort: 1, ID: 2}.raw()
	want := [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 51, 14: 100, 15: 7}
	if k.Daddr != want {
		t.Errorf("daddr %x, want IPv4-mapped %x", k.Daddr, want)
	}
}

type fakeRing struct {
	recs     [][]byte
	deadline time.Time
	closed   bool
}

func (f *fakeRing) ReadInto(r *ringbuf.Record) error {
	if f.closed {
		return fmt.Errorf("ringbuffer: %w", os.ErrClosed)
	}
	if len(f.recs) == 0 {
		return os.ErrDeadlineExceeded
	}
	r.RawSample, f.recs = f.recs[0], f.recs[1:]
	return nil
}
func (f *fakeRing) SetDeadline(t time.Time) { f.deadline = t }
func (f *fakeRing) Close() error            { f.closed = true; return nil }

func TestEventReader(t *testing.T) {
	fr := &fakeRing{recs: [][]byte{rawEvent(TurnpathTpEvent{Kind: uint8(KindSTUN), StunType: 0x0101})}}
	rd := &EventReader{rd: fr}
	rd.SetDeadline(time.Unix(1, 0))
	if !fr.deadline.Equal(time.Unix(1, 0)) {
		t.Error("deadline not passed on")
	}
	e, err := rd.Read()
	if err != nil || e.Kind != KindSTUN || e.STUNType != 0x0101 {
		t.Fatalf("%+v %v", e, err)
	}
	if _, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("err %v", err)
	}
	rd.Close()
	if _, err := rd.Read(); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := []Config{
		{Proto: ProtoUDP, SportLo: 1, SportHi: 1, DPort: 3478},
		{Proto: ProtoTCP, SportLo: 1000, SportHi: 2000, DPort: 443},
		{Proto: ProtoICMP, SportLo: 1, SportHi: 65535},
		{Proto: ProtoICMPv6, SportLo: 1, SportHi: 65535},
	}
	bad := []Config{
		{},
		{Proto: 47, SportLo: 1, SportHi: 2, DPort: 1},
		{Proto: ProtoUDP, SportLo: 1, SportHi: 2},
		{Proto: ProtoUDP, SportLo: 3, SportHi: 2, DPort: 1},
		{Proto: ProtoICMP, SportLo: 0, SportHi: 2},
	}
	for _, c := range good {
		if err := c.validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
		if _, err := Spec(c); err != nil {
			t.Errorf("Spec(%+v): %v", c, err)
		}
	}
	for _, c := range bad {
		if err := c.validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestSpecSetsVariables(t *testing.T) {
	spec, err := Spec(Config{Proto: ProtoTCP, SportLo: 100, SportHi: 200, DPort: 443, Nonce: 0xdeadbeef, Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	// One mutable variable, not constants: pinned programs serve run after run, each
	// writing its own configuration (pin.go).
	var c TurnpathTpCfg
	v := spec.Variables[TurnpathVarCfg]
	if v == nil {
		t.Fatal("no cfg variable")
	}
	if err := v.Get(&c); err != nil {
		t.Fatal(err)
	}
	if v.Constant() {
		t.Error("cfg is a constant: pinned programs could not be reconfigured")
	}
	if c.Proto != 6 || c.Drop != 1 || c.SportLo != 100 || c.SportHi != 200 || c.Dport != 443 || c.Nonce != 0xdeadbeef || c.StartNs != 0 {
		t.Errorf("got %+v", c)
	}
	if len(spec.Variables) != 1 || spec.Maps[".bss"] == nil || spec.Maps[".bss"].ValueSize != uint32(unsafe.Sizeof(c)) {
		t.Errorf("the configuration must be the only global (the .bss map a run writes whole): %d variables", len(spec.Variables))
	}
	for name, ps := range spec.Programs {
		if name == "xdp_rx" && ps.Type != ebpf.XDP || name != "xdp_rx" && ps.Type != ebpf.SchedCLS {
			t.Errorf("%s: type %v", name, ps.Type)
		}
	}
	if spec.Programs["tcx_egress"].AttachType != ebpf.AttachTCXEgress {
		t.Errorf("tcx_egress attach type %v", spec.Programs["tcx_egress"].AttachType)
	}
}

func TestVerifierErrorFormat(t *testing.T) {
	ve := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"0: (b7) r0 = 0", "R1 invalid mem access 'scalar'", "processed 2 insns"}}
	err := error(&VerifierError{Err: ve, wrapped: fmt.Errorf("program xdp_rx: %w", ve)})
	short := err.Error()
	full := fmt.Sprintf("%+v", err)
	if !strings.Contains(short, "xdp_rx") || strings.Contains(short, "\n") || strings.Contains(short, "processed 2 insns") {
		t.Errorf("short: %q", short)
	}
	if !strings.Contains(full, "0: (b7) r0 = 0") || !strings.Contains(full, "processed 2 insns") {
		t.Errorf("full: %q", full)
	}
	if !errors.Is(err, unix.EACCES) {
		t.Error("cause not unwrapped")
	}
	if perm := wrapPerm("load", fmt.Errorf("x: %w", unix.EPERM)); !errors.Is(perm, ErrPermission) || !strings.Contains(perm.Error(), "CAP_BPF") {
		t.Errorf("perm: %v", perm)
	}
}

// KernelNow reads the runtime's vDSO clock: it must be CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns (clock_gettime's reading falls between two of KernelNow's).
func TestKernelNowIsMonotonicClock(t *testing.T) {
	for range 5 {
		var ts unix.Timespec
		before := KernelNow()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		after := KernelNow()
		mono := uint64(ts.Nano())
		if mono < before || mono > after {
			t.Fatalf("clock_gettime(CLOCK_MONOTONIC) = %d outside KernelNow's [%d, %d]", mono, before, after)
		}
	}
}
