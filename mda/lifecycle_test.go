package mda

import (
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Unix(1000, 0)

// A probe backing off is re-sent after its pause, which counts as a back-off; one on
// trial counts as a trial too.
func TestLifecyclePauses(t *testing.T) {
	var h hop
	h.send(0, t0)
	if h.st != stSent || h.tries != 1 {
		t.Fatalf("first send: %v, %d tries", h.st, h.tries)
	}
	h.pause(stBackingOff, time.Second)
	if h.st != stBackingOff || !h.readyAt.Equal(t0.Add(time.Second)) || !h.pausing() {
		t.Fatalf("backing off: %v ready at %v", h.st, h.readyAt)
	}
	// Asked again (next planning pass), it keeps its time, whatever the kind.
	h.pause(stOnTrial, 5*time.Second)
	if h.st != stOnTrial || !h.readyAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("put on trial while paused: %v ready at %v", h.st, h.readyAt)
	}
	h.send(1, t0.Add(time.Second))
	if h.st != stSent || h.backoffs != 1 || h.trials != 1 || !h.readyAt.IsZero() || h.pausing() {
		t.Fatalf("trial sent: %v, %d back-offs, %d trials", h.st, h.backoffs, h.trials)
	}
	h.pause(stBackingOff, 2*time.Second)
	h.resendNow()
	if h.st != stSent || !h.readyAt.IsZero() {
		t.Fatalf("pause dropped: %v ready at %v", h.st, h.readyAt)
	}
	h.send(2, t0.Add(2*time.Second))
	if h.backoffs != 1 || h.tries != 3 {
		t.Fatalf("re-sent at once counted as a back-off: %d back-offs, %d tries", h.backoffs, h.tries)
	}
}

// A hold lasts until the next release, and a pause in progress survives it: the TTL
// stays paused meanwhile.
func TestLifecycleHold(t *testing.T) {
	var rep, h hop
	h.send(0, t0)
	h.pause(stBackingOff, time.Second)
	h.hold(&rep)
	if h.st != stHeld || h.blocker != &rep || !h.pausing() || !h.st.open() {
		t.Fatalf("held: %v, blocker %p, pausing %v", h.st, h.blocker, h.pausing())
	}
	h.release()
	if h.st != stBackingOff || h.blocker != nil || !h.readyAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("released: %v, blocker %p, ready at %v", h.st, h.blocker, h.readyAt)
	}
	h.release() // not held: nothing to do
	if h.st != stBackingOff {
		t.Fatalf("released twice: %v", h.st)
	}
}

// Silent calls are provisional: one made before rate limiting showed is re-opened (its
// trials start over), any is doubted when the next hop answers other flows; an answer
// counts whatever the state.
func TestLifecycleSilent(t *testing.T) {
	var h hop
	h.send(0, t0)
	h.pause(stOnTrial, time.Second)
	h.send(1, t0.Add(time.Second))
	h.callSilent(true)
	if h.st != stSilentUntried || !h.st.silent() || !h.st.unanswered() || h.st.open() {
		t.Fatalf("called silent untried: %v", h.st)
	}
	h.reopen()
	if h.st != stSent || h.trials != 0 {
		t.Fatalf("re-opened: %v, %d trials", h.st, h.trials)
	}
	h.callSilent(false)
	if h.st != stSilent {
		t.Fatalf("called silent: %v", h.st)
	}
	h.doubt()
	if h.st != stSent {
		t.Fatalf("doubted: %v", h.st)
	}
	h.giveUp()
	if h.st != stGivenUp || h.st.unanswered() {
		t.Fatalf("given up: %v", h.st)
	}
	from := netip.MustParseAddr("198.18.1.2")
	h.answer(Answer{From: from, Unreachable: true, RTT: time.Millisecond}, 3)
	if h.st != stAnswered || h.end != endUnreachable || h.addr != from || h.ansIn != 3 {
		t.Fatalf("answered late: %v, end %v, from %v", h.st, h.end, h.addr)
	}
}

// The destination wins over an unreachable in the same answer.
func TestLifecycleAnswerEnd(t *testing.T) {
	for _, c := range []struct {
		a    Answer
		want flowEnd
	}{
		{Answer{}, endNone},
		{Answer{Dest: true}, endDest},
		{Answer{Unreachable: true}, endUnreachable},
		{Answer{Dest: true, Unreachable: true}, endDest},
	} {
		var h hop
		h.send(0, t0)
		h.answer(c.a, 0)
		if h.end != c.want {
			t.Errorf("%+v: end %v, want %v", c.a, h.end, c.want)
		}
	}
}

func TestProbeStateString(t *testing.T) {
	for s, want := range map[probeState]string{
		stUnprobed: "unprobed", stSent: "sent", stBackingOff: "backing off", stOnTrial: "on trial",
		stHeld: "held", stAnswered: "answered", stSilent: "silent", stSilentUntried: "silent untried",
		stGivenUp: "given up", stGivenUp + 1: "probeState(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", s, got, want)
		}
	}
}

// A probe paused at a TTL closes the TTL to new probes only until it is due, held or
// no longer wanted included: the wanted probe behind it is sent then, not forgotten
// (an exploration used to end with it unsent under ICMP limits).
func TestBatchPauseEnds(t *testing.T) {
	o := DefaultOptions()
	o.FirstTTL, o.MaxTTL = 1, 4
	for _, held := range []bool{false, true} {
		r := newExplorer(nil, 0, o, nil)
		a, _ := r.newFlow()
		b, _ := r.newFlow()
		a.hops[3].send(0, t0)
		a.hops[3].pause(stBackingOff, time.Second)
		if held {
			a.hops[3].hold(&b.hops[2])
		}
		a.hops[3].want = held // held: the rules still want it; else: they no longer do
		b.hops[3].want = true

		reqs, wait := r.batch(t0.Add(100 * time.Millisecond))
		if len(reqs) != 0 || wait != 900*time.Millisecond {
			t.Fatalf("held %v: during the pause: %v, wait %v; want nothing, wait 900ms", held, reqs, wait)
		}
		reqs, _ = r.batch(t0.Add(time.Second))
		if len(reqs) != 1 || reqs[0].Flow != b.id || reqs[0].TTL != 3 {
			t.Fatalf("held %v: after the pause: %v, want flow %d at TTL 3", held, reqs, b.id)
		}
	}
}

// A wanted probe re-sent after its pause goes alone at its TTL: the new ones wait for
// the next round, so that the router's refilled budget answers the re-send first.
func TestBatchResendFirst(t *testing.T) {
	o := DefaultOptions()
	o.FirstTTL, o.MaxTTL = 1, 4
	r := newExplorer(nil, 0, o, nil)
	a, _ := r.newFlow()
	b, _ := r.newFlow()
	a.hops[3].send(0, t0)
	a.hops[3].pause(stBackingOff, time.Second)
	a.hops[3].want, b.hops[3].want = true, true
	reqs, _ := r.batch(t0.Add(time.Second))
	if len(reqs) != 1 || reqs[0].Flow != a.id {
		t.Fatalf("re-send round: %v, want only flow %d", reqs, a.id)
	}
	a.hops[3].want = false // answered or not, the next planning pass decides
	reqs, _ = r.batch(t0.Add(time.Second))
	if len(reqs) != 1 || reqs[0].Flow != b.id {
		t.Fatalf("next round: %v, want flow %d", reqs, b.id)
	}
}
