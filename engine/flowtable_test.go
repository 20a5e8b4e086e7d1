package engine

import (
	"net/netip"
	"testing"

	"github.com/turnpath/turnpath/probe"
)

func TestFlowTableLazy(t *testing.T) {
	src := netip.MustParseAddr("198.18.1.1")
	dst := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}) }
	mk := func(i int) probe.Flow {
		return probe.Flow{Src: src, Dst: dst(i), Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}
	}
	cfg := Config{FlowOf: func(i int) (probe.Flow, error) {
		if i == 13 {
			return probe.Flow{Src: src, Dst: dst(i), Proto: probe.ProtoUDP, SPort: 40000, DPort: 3478}, nil
		}
		return mk(i), nil
	}, Shape: []probe.Flow{mk(0)}}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ft := newFlowTable(&cfg)
	for i := 0; i < 300; i++ {
		f, add, err := ft.admit(i)
		if i == 13 {
			if err == nil {
				t.Fatal("a flow outside the shape was admitted")
			}
			continue
		}
		if err != nil || !add || f != mk(i) {
			t.Fatalf("admit %d: %v %v %v", i, f, add, err)
		}
	}
	if got, ok := ft.lookup(dst(200), 50000); !ok || got != 200 {
		t.Errorf("lookup: %d %v", got, ok)
	}
	if got, ok := ft.byTag(uint32(tagOf(200))); !ok || got != 200 {
		t.Errorf("byTag: %d %v", got, ok)
	}
	for i := 0; i < 300; i++ {
		ft.release(i)
	}
	if _, ok := ft.flow(200); ok {
		t.Error("released flow still known")
	}
	if _, ok := ft.lookup(dst(200), 50000); ok {
		t.Error("released flow still found by key")
	}
	if len(ft.lazy) != 0 || len(ft.byKey) != 0 {
		t.Errorf("table not empty: %d %d", len(ft.lazy), len(ft.byKey))
	}

	bad := Config{FlowOf: cfg.FlowOf, Flows: []probe.Flow{mk(1)}, Shape: cfg.Shape}
	if bad.validate() == nil {
		t.Error("Flows and FlowOf together accepted")
	}
	if err := (&Config{FlowOf: cfg.FlowOf}).validate(); err == nil {
		t.Error("FlowOf without Shape accepted")
	}
}
