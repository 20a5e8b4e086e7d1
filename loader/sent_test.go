package loader

import (
	"errors"
	"testing"
	"time"
)

// `sent` is 4-way set-associative: a probe sent again keeps its slot, a fifth probe of a
// full set takes the oldest one's, the other three stay; Go finds entries by the same
// hash as the kernel.
func TestSentSetAssociative(t *testing.T) {
	o := loadT(t, udpConfig(true))
	// Five probes of one flow whose keys fall into the same set.
	var keys []ProbeKey
	want := uint32(0)
	for i := 0; len(keys) < 5 && i < 64*0xfe00; i++ {
		id, sport := uint16(i%0xfe00)+0x0101, sportLo+uint16(i/0xfe00)
		if !validID(id) {
			continue
		}
		k := ProbeKey{Dst: target4, SPort: sport, ID: id}
		raw := k.raw()
		s := sentSetOf(&raw)
		if len(keys) == 0 {
			want = s
		}
		if s == want {
			keys = append(keys, k)
		}
	}
	if len(keys) < 5 {
		t.Fatalf("found %d keys of one set", len(keys))
	}
	send := func(k ProbeKey) {
		t.Helper()
		runTC(t, o, eth(etherIPv4, udpPacket4(k.Dst, k.SPort, k.ID, uint8(k.ID))))
	}
	for _, k := range keys[:4] {
		send(k)
	}
	for _, k := range keys[:4] {
		if _, ok := o.SentTimestamp(k); !ok {
			t.Fatalf("%+v not in sent", k)
		}
	}
	first, _ := o.SentTimestamp(keys[0])
	send(keys[0]) // again: its own slot, newer
	if ts, ok := o.SentTimestamp(keys[0]); !ok || ts <= first {
		t.Fatalf("resent probe: %d, %v (was %d)", ts, ok, first)
	}
	send(keys[4]) // the set is full: keys[1], now the oldest, gives way
	for i, k := range keys {
		_, ok := o.SentTimestamp(k)
		if ok != (i != 1) {
			t.Errorf("key %d (%+v) in sent: %v", i, k, ok)
		}
	}
	got, err := o.sentKeys()
	if err != nil || len(got) != 4 {
		t.Errorf("sent holds %d probes (%v), want 4", len(got), err)
	}
}

func validID(id uint16) bool { return id&0xff != 0 && id>>8 != 0xff }

// `flows` is an array of 65536 slots (tag & 0xffff): a tag whose slot a live flow holds is
// refused, a deleted one frees it, and deleting another tag leaves the slot alone.
func TestFlowSlots(t *testing.T) {
	o := loadT(t, udpConfig(true))
	registerFlow(t, o, 1, target4, 40001)
	if err := o.SetFlow(1+1<<16, target6, 40002); err == nil {
		t.Fatal("a second flow in a held slot accepted")
	}
	if err := o.DeleteFlow(1 + 1<<16); err != nil {
		t.Fatal(err)
	}
	if fv, ok := o.flowOf(1); !ok || fv.Sport != 40001 {
		t.Fatalf("flow 1 after deleting another tag: %+v %v", fv, ok)
	}
	if err := o.DeleteFlow(1); err != nil {
		t.Fatal(err)
	}
	registerFlow(t, o, 1+1<<16, target6, 40002)
	if _, ok := o.flowOf(1); ok {
		t.Error("flow 1 still there")
	}
	if fv, ok := o.flowOf(1 + 1<<16); !ok || fv.Sport != 40002 {
		t.Errorf("flow %d: %+v %v", 1+1<<16, fv, ok)
	}
	if err := o.SetFlow(0, target4, 1); err == nil {
		t.Error("flowtag 0 accepted")
	}
}

// Close wakes a Read blocked on the ring buffer, which then says ErrClosed (for every
// reader: the engine's and the benchmark's loops end on it).
func TestEventReaderClose(t *testing.T) {
	o := loadT(t, udpConfig(true))
	for _, fallback := range []bool{false, true} {
		rd, err := o.EventsWithOptions(EventsOptions{Fallback: fallback})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := rd.Read()
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		rd.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("fallback %v: Read after Close: %v, want ErrClosed", fallback, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("fallback %v: Read still blocked after Close", fallback)
		}
		if _, err := rd.Read(); !errors.Is(err, ErrClosed) {
			t.Errorf("fallback %v: second Read: %v", fallback, err)
		}
	}
}
