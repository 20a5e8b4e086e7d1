package engine

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/turnpath/turnpath/loader"
	"github.com/turnpath/turnpath/probe"
)

// Reading a Time Exceeded from the ring buffer allocates nothing: the record is decoded
// into a reused loader.Event and verified and converted on the stack (the reply itself
// goes over a channel by value). STUN answers and ICMP extensions allocate what they
// carry (a *trace.STUNInfo, MPLS labels).
func TestConvertTimeExceededAllocs(t *testing.T) {
	dst := netip.MustParseAddr("198.19.0.7")
	f := probe.Flow{Src: netip.MustParseAddr("198.18.0.1"), Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}
	cfg := Config{Flows: []probe.Flow{f}, Nonce: 0x1234}
	e := &EBPF{cfg: cfg, ft: newFlowTable(&cfg)}
	id, _ := probe.MakeID(3, 1)
	var r loader.TurnpathTpEvent
	r.Kind, r.Family, r.Proto = uint8(loader.KindTimeExceeded), 4, 17
	// Addresses as the kernel stores them: IPv4-mapped (As16 of an IPv4 address).
	r.Responder = netip.MustParseAddr("10.0.0.3").As16()
	r.Target = dst.As16()
	r.QuotedSrc = f.Src.As16()
	r.Sport, r.Dport, r.Id = 50000, 3478, uint16(id)
	r.QuotedIpid, r.QuotedCsum, r.QuotedTtl, r.IcmpType = uint16(id), uint16(id), 1, 11
	r.RxNs, r.TxNs = 2000, 1000
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&r)), unsafe.Sizeof(r))
	var ev loader.Event
	if err := loader.DecodeEventInto(raw, &ev); err != nil {
		t.Fatal(err)
	}
	if rep, ok := e.convert(&ev); !ok || rep.Probe.TTL != 3 || rep.RTT != 1000 || !rep.Kernel {
		t.Fatalf("convert: %+v %v", rep, ok)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_ = loader.DecodeEventInto(raw, &ev)
		_, _ = e.convert(&ev)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per Time Exceeded", allocs)
	}
}
