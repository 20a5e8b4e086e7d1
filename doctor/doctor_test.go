package doctor

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/turnpath/turnpath/hostnet"
	"golang.org/x/sys/unix"
)

type fakeBPF struct {
	loadErr, attachErr error
	attached, detached bool
}

func (f *fakeBPF) Load() (func() error, error) {
	if f.loadErr != nil {
		return nil, f.loadErr
	}
	return func() error { return nil }, nil
}

func (f *fakeBPF) Attach(int) (string, func() error, error) {
	if f.attachErr != nil {
		return "", nil, f.attachErr
	}
	f.attached = true
	return "tcx", func() error { f.detached = true; return nil }, nil
}

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		in       string
		maj, min int
	}{
		{"6.18.44-fc-v669", 6, 18}, {"5.10.0-28-amd64", 5, 10}, {"4.19", 4, 19}, {"garbage", 0, 0}, {"", 0, 0},
	} {
		maj, min := parseRelease(tc.in)
		if maj != tc.maj || min != tc.min {
			t.Errorf("parseRelease(%q) = %d.%d, want %d.%d", tc.in, maj, min, tc.maj, tc.min)
		}
	}
}

func TestKernelItem(t *testing.T) {
	if it := kernelItem("6.6.0"); it.Status != OK {
		t.Errorf("6.6: %+v", it)
	}
	if it := kernelItem("5.15.0"); it.Status != Warn || it.Fix == "" {
		t.Errorf("5.15: %+v", it)
	}
	if it := kernelItem("4.19.0"); it.Status != Fail {
		t.Errorf("4.19: %+v", it)
	}
}

func item(r *Report, name string) Item {
	for _, it := range r.Items {
		if it.Name == name {
			return it
		}
	}
	return Item{}
}

func TestEngineChoice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("engine choice depends on CAP_NET_RAW: run as root")
	}
	ctx := context.Background()

	r, err := Run(ctx, Options{Target: "127.0.0.1", BPF: &fakeBPF{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Engine != "ebpf" || r.Interface != "lo" {
		t.Errorf("all ok: engine %q via %q, want ebpf via lo", r.Engine, r.Interface)
	}

	f := &fakeBPF{loadErr: errors.New("load program: operation not permitted")}
	r, _ = Run(ctx, Options{Target: "127.0.0.1", BPF: f})
	if r.Engine != "socket" || !strings.Contains(r.EngineWhy, "do not load") {
		t.Errorf("load fails: engine %q (%s), want socket", r.Engine, r.EngineWhy)
	}
	if it := item(r, "bpf load"); it.Status != Fail || it.Fix == "" {
		t.Errorf("load fails: item %+v", it)
	}

	f = &fakeBPF{attachErr: unix.EOPNOTSUPP}
	r, _ = Run(ctx, Options{Target: "127.0.0.1", BPF: f})
	if r.Engine != "socket" || item(r, "bpf attach").Status != Fail {
		t.Errorf("attach fails: engine %q, items %+v", r.Engine, r.Items)
	}

	f = &fakeBPF{}
	if _, err := Run(ctx, Options{Target: "127.0.0.1", BPF: f}); err != nil || !f.detached {
		t.Errorf("attach must be undone: detached=%v err=%v", f.detached, err)
	}
}

func TestBadTarget(t *testing.T) {
	if _, err := Run(context.Background(), Options{Target: "no-such-host.invalid"}); err == nil ||
		!strings.Contains(err.Error(), "unknown host") {
		t.Errorf("unknown host: err = %v", err)
	}
}

// A target with no route still gets the whole report (attach skipped: there is no
// interface to attach to), and the error says there is no route.
func TestNoRouteStillReports(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace without routes")
	}
	type result struct {
		r   *Report
		err error
	}
	f := &fakeBPF{}
	done := make(chan result)
	go func() {
		// This thread goes into a new network namespace (only lo, down: no route at
		// all) and is never unlocked, so it ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{err: err}
			return
		}
		r, err := Run(context.Background(), Options{Target: "198.18.77.1", BPF: f})
		done <- result{r, err}
	}()
	res := <-done
	if !errors.Is(res.err, hostnet.ErrNoRoute) {
		t.Fatalf("err %v, want no route", res.err)
	}
	if res.r == nil {
		t.Fatal("no report")
	}
	for _, want := range []struct {
		name string
		st   Status
	}{{"kernel", ""}, {"CAP_NET_RAW", OK}, {"route", Fail}, {"bpf load", OK}, {"bpf attach", Skip}} {
		it := item(res.r, want.name)
		if it.Name == "" || want.st != "" && it.Status != want.st {
			t.Errorf("item %q: %+v, want status %q", want.name, it, want.st)
		}
	}
	if f.attached || !strings.Contains(item(res.r, "route").Detail, "no route to 198.18.77.1") {
		t.Errorf("attached %v, route item %+v", f.attached, item(res.r, "route"))
	}
}
