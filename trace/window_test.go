package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// windowedNet is a fakeNet that checks the Admit/Release contract: probes only for admitted
// targets, never more than the window at once, every target admitted and released once.
type windowedNet struct {
	*fakeNet
	mu        sync.Mutex
	window    int
	active    map[int]bool
	admitted  map[int]bool
	maxActive int
	err       error
}

func (w *windowedNet) Admit(t int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.admitted[t] {
		w.err = errors.Join(w.err, fmt.Errorf("target %d admitted twice", t))
	}
	w.admitted[t], w.active[t] = true, true
	w.maxActive = max(w.maxActive, len(w.active))
	return nil
}

func (w *windowedNet) Release(t int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.active[t] {
		w.err = errors.Join(w.err, fmt.Errorf("target %d released but not active", t))
	}
	delete(w.active, t)
}

func (w *windowedNet) Send(p Probe) error {
	w.mu.Lock()
	ok := w.active[p.Target]
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("probe %+v for a target outside the window", p)
	}
	return w.fakeNet.Send(p)
}

func newWindowedNet(n, window int) *windowedNet {
	f := newFakeNet(50 * time.Microsecond)
	for i := 0; i < n; i++ {
		path := labPath()
		if i%7 == 3 {
			path = path[:1] // shorter paths finish earlier: targets finish out of order
		}
		f.paths = append(f.paths, path)
		f.dest = append(f.dest, netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}))
	}
	return &windowedNet{fakeNet: f, window: window, active: map[int]bool{}, admitted: map[int]bool{}}
}

func TestStreamWindow(t *testing.T) {
	const n, window = 500, 37
	w := newWindowedNet(n, window)
	o := fastOpts()
	o.Window = window
	// The fake network's RTTs are nominal: give its delivery (slow under -race) slack.
	o.MinWait = o.Wait
	got := map[int]Result{}
	err := Stream(context.Background(), w, n, o, func(r Result) error {
		if _, dup := got[r.Target]; dup {
			return fmt.Errorf("target %d emitted twice", r.Target)
		}
		got[r.Target] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	if w.maxActive > window || len(w.active) != 0 || len(w.admitted) != n {
		t.Fatalf("max active %d (window %d), still active %d, admitted %d of %d", w.maxActive, window, len(w.active), len(w.admitted), n)
	}
	if len(got) != n {
		t.Fatalf("%d results, want %d", len(got), n)
	}
	for i, r := range got {
		want := 5
		if i%7 == 3 {
			want = 2
		}
		if !r.Reached || r.DestTTL != want || len(r.Hops) != want || r.Sent < 3*want || r.Sent > 30+2*want {
			t.Fatalf("target %d: reached %v at %d, %d hops, sent %d", i, r.Reached, r.DestTTL, len(r.Hops), r.Sent)
		}
		if r.Hops[want-1].Replies[0].From != w.dest[i] {
			t.Errorf("target %d: destination answer from %v", i, r.Hops[want-1].Replies[0].From)
		}
	}
}

// A window smaller than the list gives the same results as one holding every target.
func TestRunWindowSameResults(t *testing.T) {
	const n = 60
	var all [2][]Result
	for i, window := range []int{0, 7} {
		w := newWindowedNet(n, window)
		w.silentDest = true
		o := fastOpts()
		o.Window = window
		o.MaxTTL = 8
		res, err := Run(context.Background(), w, n, o)
		if err != nil {
			t.Fatal(err)
		}
		all[i] = res
	}
	for i := range all[0] {
		a, b := all[0][i], all[1][i]
		if a.Reached != b.Reached || a.DestTTL != b.DestTTL || len(a.Hops) != len(b.Hops) || a.Sent != b.Sent {
			t.Errorf("target %d: window 0 %v/%d/%d/%d, window 7 %v/%d/%d/%d", i,
				a.Reached, a.DestTTL, len(a.Hops), a.Sent, b.Reached, b.DestTTL, len(b.Hops), b.Sent)
		}
	}
}

// Cancelling a stream emits the targets in the window, not those never started.
func TestStreamCancelEmitsWindow(t *testing.T) {
	w := newWindowedNet(100, 10)
	w.silentDest = true
	o := fastOpts()
	o.Window = 10
	o.Wait, o.MinWait = 10*time.Second, 10*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	var got []int
	go func() {
		for w.sentCount() < 100 {
			sleepShort()
		}
		cancel()
	}()
	err := Stream(ctx, w, 100, o, func(r Result) error { got = append(got, r.Target); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if len(got) != 10 {
		t.Fatalf("emitted %v, want the 10 targets of the window", got)
	}
}

// A stopped stream (cancelled, or an engine error) hands over the targets it probed,
// marked unfinished, and not those it admitted but never sent a probe for; every
// admitted target is released, none is admitted after the stop.
func TestStreamStopSkipsUnprobed(t *testing.T) {
	for _, stop := range []string{"cancel", "engine error"} {
		w := newWindowedNet(200, 50)
		w.silentDest = true
		o := fastOpts()
		o.Window = 50
		o.Rate, o.Burst = 200, 1 // TTL-major: the first probes go to targets 0, 1, 2 ...
		o.Wait, o.MinWait = 10*time.Second, 10*time.Second
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for w.sentCount() < 5 {
				sleepShort()
			}
			if stop == "cancel" {
				cancel()
			} else {
				w.errs <- errors.New("interface gone")
			}
		}()
		var got []Result
		err := Stream(ctx, w, 200, o, func(r Result) error { got = append(got, r); return nil })
		cancel()
		if err == nil {
			t.Fatalf("%s: no error", stop)
		}
		if len(got) < 5 || len(got) > 10 {
			t.Errorf("%s: emitted %d targets, want the 5-10 probed", stop, len(got))
		}
		for _, r := range got {
			if r.Sent == 0 || !r.Unfinished {
				t.Errorf("%s: target %d emitted with %d probes, unfinished %v", stop, r.Target, r.Sent, r.Unfinished)
			}
		}
		if w.err != nil || len(w.active) != 0 || len(w.admitted) != 50 {
			t.Errorf("%s: %v; still active %d, admitted %d (want the first window, 50)", stop, w.err, len(w.active), len(w.admitted))
		}
	}
}

// A cancelled context stops an unpaced run before it sends the whole window.
func TestStreamCancelledSendsNothing(t *testing.T) {
	w := newWindowedNet(3000, 0)
	w.silentDest = true
	o := fastOpts() // unpaced
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	emitted := 0
	err := Stream(ctx, w, 3000, o, func(Result) error { emitted++; return nil })
	if !errors.Is(err, context.Canceled) || w.sentCount() != 0 || emitted != 0 {
		t.Errorf("err %v, %d probes sent, %d targets emitted; want context.Canceled, 0, 0", err, w.sentCount(), emitted)
	}
}
