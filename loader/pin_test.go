package loader

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testPinDir is a pin directory of the test's own on the host's bpffs, removed afterwards.
func testPinDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF")
	}
	root, err := pinDir("", true)
	if err != nil {
		t.Skipf("no bpffs: %v", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	dir := filepath.Join(filepath.Dir(root), "turnpath-test-"+hex.EncodeToString(rnd[:]))
	t.Cleanup(func() {
		if _, inUse, err := RemovePinned(dir); err != nil || len(inUse) > 0 {
			t.Errorf("remove %s: %v, in use %v", dir, err, inUse)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s left behind", dir)
		}
	})
	return dir
}

func openT(t *testing.T, cfg Config, dir string) *Objects {
	t.Helper()
	o, err := Open(cfg, OpenOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// A slot is reused by the next run, which gets its own configuration and none of the
// earlier run's state: its probes' `sent` entries no longer make replies ours, its flows
// and counters are gone, and what it left in the ring buffer is not read.
func TestPinnedSlotReuse(t *testing.T) {
	dir := testPinDir(t)
	cfg := udpConfig(true)
	cfg.Nonce, cfg.NonceOff = 0, 0 // replies are ours only through `sent`

	o1, err := Open(cfg, OpenOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if o1.How() != HowCreated {
		t.Fatalf("first run: %s, want %s", o1.PinNote(), HowCreated)
	}
	probe := udpPacket4(target4, 40001, 0x0105, 5)
	runTC(t, o1, eth(etherIPv4, probe))
	registerFlow(t, o1, 7, target4, 40001)
	if _, ok := o1.flowOf(7); !ok {
		t.Fatal("flow 7 not registered")
	}
	te := timeExceeded4(router4, udpPacket4(target4, 40001, 0x0105, 1))
	if v, err := o1.RunXDP(te); err != nil || v != XDPDrop {
		t.Fatalf("first run: verdict %d, %v; want drop", v, err)
	}
	if s := stats(t, o1); s.TxSeen != 1 || s.RxMatched != 1 {
		t.Fatalf("first run stats %+v", s)
	}
	slot := o1.pinDir
	o1.Close() // the event stays unread in the ring buffer

	cfg2 := cfg
	cfg2.DPort = dportT // same flow shape, a new run
	o2 := openT(t, cfg2, dir)
	if o2.How() != HowReused || o2.pinDir != slot {
		t.Fatalf("second run: %s, want %s of %s", o2.PinNote(), HowReused, slot)
	}
	if s := stats(t, o2); s != (Stats{}) {
		t.Errorf("counters not reset: %+v", s)
	}
	if _, ok := o2.flowOf(7); ok {
		t.Error("flow 7 of the earlier run still registered")
	}
	rd := eventsT(t, o2)
	rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if e, err := rd.Read(); err == nil {
		t.Fatalf("the earlier run's event read: %+v", e)
	}
	rd.SetDeadline(time.Time{})
	// The same reply again: its `sent` entry is the earlier run's, so not ours now.
	if v, err := o2.RunXDP(te); err != nil || v != XDPPass {
		t.Fatalf("second run, earlier run's probe: verdict %d, %v; want pass", v, err)
	}
	if s := stats(t, o2); s.RxMatched != 0 || s.RxForeign != 1 {
		t.Errorf("second run stats %+v, want the reply foreign", s)
	}
	// Its own probe, the same key: ours.
	runTC(t, o2, eth(etherIPv4, probe))
	if v, err := o2.RunXDP(te); err != nil || v != XDPDrop {
		t.Fatalf("second run, own probe: verdict %d, %v; want drop", v, err)
	}
	if evs := readEvents(t, rd, 1); evs[0].TxNs == 0 {
		t.Errorf("no tx timestamp: %+v", evs[0])
	}
}

// Runs at the same time each get a slot of their own; past PinSlots they load their own
// objects. A slot whose holder is gone (kill -9 included: the flock dies with the
// process) is free again.
func TestPinnedSlotsConcurrent(t *testing.T) {
	dir := testPinDir(t)
	cfg := udpConfig(true)
	var held []*Objects
	slots := map[string]bool{}
	for i := range PinSlots + 1 {
		o, err := Open(cfg, OpenOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, o)
		if i < PinSlots {
			if o.pinDir == "" || slots[o.pinDir] {
				t.Fatalf("run %d: %s", i, o.PinNote())
			}
			slots[o.pinDir] = true
		} else if o.How() != HowFresh || o.pinDir != "" {
			t.Fatalf("run past the pool: %s, want fresh objects", o.PinNote())
		}
	}
	list, err := PinnedSlots(dir)
	if err != nil || len(list) != PinSlots {
		t.Fatalf("PinnedSlots: %d, %v", len(list), err)
	}
	for _, s := range list {
		if !s.InUse || !s.Current || !slices.Contains(s.Objects, pinReady) {
			t.Errorf("slot %+v", s)
		}
	}
	// cleanup leaves slots in use alone.
	if removed, inUse, err := RemovePinned(dir); err != nil || len(removed) != 0 || len(inUse) != PinSlots {
		t.Fatalf("RemovePinned while in use: removed %v, in use %v, %v", removed, inUse, err)
	}
	freed := held[1].pinDir
	held[1].Close()
	o := openT(t, cfg, dir)
	if o.pinDir != freed || o.How() != HowReused {
		t.Errorf("after a run ended: %s, want %s reused", o.PinNote(), freed)
	}
	for _, o := range held {
		o.Close()
	}
}

// A slot a creator left incomplete (killed while pinning) is filled afresh; other versions'
// idle slots are removed when a slot is created, their busy ones kept.
func TestPinnedSlotRepairAndVersions(t *testing.T) {
	dir := testPinDir(t)
	cfg := udpConfig(true)
	o := openT(t, cfg, dir)
	slot := o.pinDir
	o.Close()
	if err := os.Remove(filepath.Join(slot, pinReady)); err != nil {
		t.Fatal(err)
	}
	// Another version: one idle slot, one held.
	other := filepath.Join(dir, "v-000000000000")
	idle, busy := filepath.Join(other, "0"), filepath.Join(other, "1")
	fd, err := lockDir(busy, true)
	if err != nil {
		if err := os.MkdirAll(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if fd, err = lockDir(busy, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(idle, 0o700); err != nil {
		t.Fatal(err)
	}
	o2 := openT(t, cfg, dir)
	if o2.pinDir != slot || o2.How() != HowCreated {
		t.Fatalf("incomplete slot: %s, want %s created again", o2.PinNote(), slot)
	}
	if _, err := os.Stat(idle); err == nil {
		t.Error("another version's idle slot kept")
	}
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("another version's busy slot removed: %v", err)
	}
	unix.Close(fd)
	o2.Close()
}

func TestVersion(t *testing.T) {
	v := Version()
	if len(v) != len("v-")+12 || v != Version() {
		t.Errorf("Version() = %q", v)
	}
}
