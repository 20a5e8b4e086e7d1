package monitor

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/hopstat"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

var t0 = time.Unix(1_000_000, 0)

func testState(n, maxTTL int) *state {
	opt := DefaultOptions()
	opt.MaxTTL, opt.Interval, opt.Wait = maxTTL, 10*time.Millisecond, 50*time.Millisecond
	return newState(n, opt)
}

// sendRound starts round r and sends every TTL of every target.
func sendRound(s *state, r int) {
	s.startRound(r)
	for _, t := range s.targets {
		for ttl := s.opt.FirstTTL; ttl <= s.opt.MaxTTL; ttl++ {
			s.sent(t, ttl, r, t0)
		}
	}
	s.rounds[len(s.rounds)-1].sending = false
}

func answer(target, ttl, r int, from string) *trace.Reply {
	return &trace.Reply{Probe: probeFor(target, ttl, r), Kind: probe.KindTimeExceeded,
		From: netip.MustParseAddr(from), RTT: time.Duration(ttl) * time.Millisecond}
}

// Probes in flight count neither as sent nor as lost; closing the round makes the
// unanswered ones lost.
func TestMonitorInFlightNotLost(t *testing.T) {
	s := testState(1, 3)
	sendRound(s, 0)
	s.reply(answer(0, 1, 0, "10.0.0.1"), t0)
	tg := s.targets[0]
	for k, h := range tg.Hops {
		if h.Loss() != 0 {
			t.Errorf("TTL %d: loss %v while in flight", k+1, h.Loss())
		}
	}
	if h := tg.Hops[1]; h.InFlight() != 1 || h.Sent() != 0 {
		t.Errorf("TTL 2: in flight %d sent %d, want 1 and 0", h.InFlight(), h.Sent())
	}
	s.closeRound()
	if h := tg.Hops[1]; h.Sent() != 1 || h.Received() != 0 || h.Loss() != 100 {
		t.Errorf("TTL 2 after close: sent %d received %d loss %v", h.Sent(), h.Received(), h.Loss())
	}
	if h := tg.Hops[0]; h.Sent() != 1 || h.Received() != 1 {
		t.Errorf("TTL 1 after close: sent %d received %d", h.Sent(), h.Received())
	}
}

// A reply after its round was closed as lost is dropped and counted late: it is not
// credited to that round, nor to the next one.
func TestMonitorLateReplyDropped(t *testing.T) {
	s := testState(1, 2)
	sendRound(s, 0)
	s.closeRound()
	sendRound(s, 1)
	s.reply(answer(0, 2, 0, "10.0.0.2"), t0) // round 0's, late
	tg := s.targets[0]
	if tg.Late != 1 {
		t.Errorf("late %d, want 1", tg.Late)
	}
	if h := tg.Hops[1]; h.Received() != 0 || h.Sent() != 1 || h.InFlight() != 1 {
		t.Errorf("TTL 2: received %d sent %d in flight %d, want 0 1 1", h.Received(), h.Sent(), h.InFlight())
	}
	s.reply(answer(0, 2, 1, "10.0.0.2"), t0) // round 1's, on time
	if h := tg.Hops[1]; h.Received() != 1 || h.Sent() != 2 {
		t.Errorf("TTL 2: received %d sent %d, want 1 2", h.Received(), h.Sent())
	}
}

// A reply for a round still open is credited to it, even when a later round is open too.
func TestMonitorLateReplyToOpenRound(t *testing.T) {
	s := testState(1, 1)
	sendRound(s, 0)
	sendRound(s, 1)
	s.reply(answer(0, 1, 1, "10.0.0.1"), t0)
	s.reply(answer(0, 1, 0, "10.0.0.1"), t0)
	s.closeRound()
	s.closeRound()
	if h := s.targets[0].Hops[0]; h.Sent() != 2 || h.Received() != 2 || s.targets[0].Late != 0 {
		t.Errorf("sent %d received %d late %d, want 2 2 0", h.Sent(), h.Received(), s.targets[0].Late)
	}
}

// A second reply for an answered probe is a duplicate: dropped.
func TestMonitorDuplicateDropped(t *testing.T) {
	s := testState(1, 1)
	sendRound(s, 0)
	s.reply(answer(0, 1, 0, "10.0.0.1"), t0)
	s.reply(answer(0, 1, 0, "10.0.0.1"), t0)
	s.closeRound()
	tg := s.targets[0]
	if h := tg.Hops[0]; h.Sent() != 1 || h.Received() != 1 || tg.Dups != 1 {
		t.Errorf("sent %d received %d dups %d, want 1 1 1", h.Sent(), h.Received(), tg.Dups)
	}
}

// Past 255 rounds the attempt numbers wrap: round 255 sends attempt 0 again. Its reply
// goes to round 255; round 0's reply coming that late (round 0 long closed) would carry
// the same id and cannot be told apart, which is why the wait is capped below 255
// intervals; a reply for a closed round with a wrapped id is late, not credited.
func TestMonitorAttemptWrap(t *testing.T) {
	s := testState(1, 1)
	for r := range 255 {
		sendRound(s, r)
		if r != 254 {
			s.reply(answer(0, 1, r, "10.0.0.1"), t0)
		}
		s.closeRound()
	}
	sendRound(s, 255)
	if p := probeFor(0, 1, 255); p.Attempt != 0 {
		t.Fatalf("round 255 attempt %d, want 0", p.Attempt)
	}
	s.reply(answer(0, 1, 254, "10.0.0.1"), t0) // round 254's, closed as lost: late
	sendRound(s, 256)
	s.reply(answer(0, 1, 256, "10.0.0.1"), t0)
	s.closeRound() // round 255: lost
	s.reply(answer(0, 1, 255, "10.0.0.1"), t0)
	s.closeRound()
	tg := s.targets[0]
	h := tg.Hops[0]
	if h.Sent() != 257 || h.Received() != 255 || tg.Late != 2 || tg.Dups != 0 {
		t.Errorf("sent %d received %d late %d dups %d, want 257 255 2 0", h.Sent(), h.Received(), tg.Late, tg.Dups)
	}
}

// The wait is capped so that no attempt number is reused while its round is open.
func TestMonitorWaitCapped(t *testing.T) {
	opt := DefaultOptions()
	opt.Interval, opt.Wait = 10*time.Millisecond, time.Hour
	s := newState(1, opt)
	if s.opt.Wait > maxOpenRounds*opt.Interval || s.ring > attempts {
		t.Errorf("wait %v ring %d: rounds could reuse an open attempt", s.opt.Wait, s.ring)
	}
}

// hop builds a hop's statistics from a loss pattern.
func hop(ttl int, lost []bool, from string) hopstat.Hop {
	h := hopstat.Hop{TTL: ttl}
	for _, l := range lost {
		if l {
			h.Lost()
		} else {
			h.Add(hopstat.Sample{From: netip.MustParseAddr(from), RTT: time.Duration(ttl) * time.Millisecond})
		}
	}
	return h
}

// pattern is n rounds of which each is lost with probability p, independently.
func pattern(rng *rand.Rand, n int, p float64) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = rng.Float64() < p
	}
	return out
}

// Random loss after hop 3, independent per probe: forward loss at hop 3 onward, none
// before, and almost no reply loss, where a per-round rule would call most of it reply loss.
func TestMonitorForwardLoss(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	const n = 2000
	tg := &Target{DestTTL: 6}
	for ttl := 1; ttl <= 6; ttl++ {
		p := 0.0
		if ttl >= 3 {
			p = 0.10
		}
		tg.Hops = append(tg.Hops, hop(ttl, pattern(rng, n, p), "10.0.0.1"))
	}
	for _, hl := range tg.Losses() {
		switch {
		case hl.TTL < 3 && hl.Forward > 0.5:
			t.Errorf("TTL %d: forward loss %.1f%% before the lossy link", hl.TTL, hl.Forward)
		case hl.TTL >= 3 && math.Abs(hl.Forward-10) > 2:
			t.Errorf("TTL %d: forward loss %.1f%%, want 10 ± 2", hl.TTL, hl.Forward)
		case hl.Reply > 2:
			t.Errorf("TTL %d: reply loss %.1f%%, want ~0", hl.TTL, hl.Reply)
		}
	}
	if pl, ok := tg.PathLoss(); !ok || math.Abs(pl-10) > 2 {
		t.Errorf("path loss %.1f%% (%v), want 10 ± 2", pl, ok)
	}
}

// A router rate-limiting its answers shows reply loss, not forward loss; a silent router
// is silent, not 100 % loss.
func TestMonitorReplyLossAndSilent(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	const n = 1000
	tg := &Target{DestTTL: 5}
	tg.Hops = []hopstat.Hop{
		hop(1, pattern(rng, n, 0), "10.0.0.1"),
		hop(2, pattern(rng, n, 0.4), "10.0.0.2"),
		{TTL: 3},
		hop(4, pattern(rng, n, 0), "10.0.0.4"),
		hop(5, pattern(rng, n, 0), "10.0.0.5"),
	}
	for range n {
		tg.Hops[2].Lost()
	}
	ls := tg.Losses()
	if ls[1].Forward != 0 || math.Abs(ls[1].Reply-40) > 5 {
		t.Errorf("rate-limited hop: forward %.1f%% reply %.1f%%, want 0 (the path after it loses nothing) and ~40", ls[1].Forward, ls[1].Reply)
	}
	if !ls[2].Silent || ls[2].Forward != 0 || ls[2].Reply != 0 {
		t.Errorf("silent hop: %+v", ls[2])
	}
	if v := tg.Judge(Teams); !v.Pass {
		t.Errorf("verdict %+v, want pass", v)
	}
}

// The verdict fails on path loss and names the first hop with forward loss.
func TestMonitorVerdict(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	const n = 1000
	tg := &Target{DestTTL: 4}
	for ttl := 1; ttl <= 4; ttl++ {
		p := 0.0
		if ttl >= 3 {
			p = 0.05
		}
		tg.Hops = append(tg.Hops, hop(ttl, pattern(rng, n, p), "10.0.0.1"))
	}
	v := tg.Judge(Teams)
	if v.Pass || v.FirstTTL != 3 || len(v.Reasons) != 1 {
		t.Errorf("verdict %+v, want fail at TTL 3 on loss", v)
	}
	if v := tg.Judge(Thresholds{RTT: 100, Loss: 10, Jitter: 30}); !v.Pass {
		t.Errorf("verdict %+v with a 10%% loss limit, want pass", v)
	}
	if v := tg.Judge(Thresholds{RTT: 2.5, Loss: 10, Jitter: 30}); v.Pass || v.FirstTTL != 3 {
		t.Errorf("verdict %+v with a 2.5 ms RTT limit, want fail at TTL 3", v)
	}
	if v := (&Target{Hops: []hopstat.Hop{{TTL: 1}}}).Judge(Teams); v.Pass {
		t.Error("unreached destination passes")
	}
}

// A run over a fake network: N cycles, every probe completed, forward loss attributed to
// the hops past the lossy router, nothing late.
func TestMonitorRun(t *testing.T) {
	paths := [][]netip.Addr{
		{addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3"), {}, addr("10.0.0.5")},
		{addr("10.1.0.1"), addr("10.1.0.2")},
	}
	f := newFakeNet(200*time.Microsecond, paths, []netip.Addr{addr("192.0.2.1"), addr("192.0.2.2")})
	f.dropAt, f.fwdLoss = 2, 0.10
	defer f.Close()
	opt := DefaultOptions()
	// A generous wait: on a busy machine no answer may come after its round closed.
	opt.MaxTTL, opt.Interval, opt.Cycles, opt.Wait, opt.MinWait = 10, MinInterval, 300, 200*time.Millisecond, 200*time.Millisecond
	opt.Rate = 0
	res, err := Run(context.Background(), f, 2, opt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rounds != 300 {
		t.Errorf("rounds %d, want 300", res.Rounds)
	}
	for i, tg := range res.Targets {
		if tg.DestTTL != len(paths[i])+1 {
			t.Errorf("target %d: distance %d, want %d", i, tg.DestTTL, len(paths[i])+1)
		}
		if len(tg.Events) != 0 || tg.Late != 0 {
			t.Errorf("target %d: events %v late %d", i, tg.Events, tg.Late)
		}
		for _, h := range tg.Path() {
			if h.Sent() != 300 || h.InFlight() != 0 {
				t.Errorf("target %d TTL %d: sent %d in flight %d, want 300 0", i, h.TTL, h.Sent(), h.InFlight())
			}
		}
		for _, hl := range tg.Losses() {
			switch {
			case hl.TTL == 4 && i == 0:
				if !hl.Silent {
					t.Errorf("target 0 TTL 4: %+v, want silent", hl)
				}
			case hl.TTL <= 2 && hl.Forward > 1:
				t.Errorf("target %d TTL %d: forward %.1f%% before the lossy link", i, hl.TTL, hl.Forward)
			case hl.TTL > 2 && math.Abs(hl.Forward-10) > 5:
				t.Errorf("target %d TTL %d: forward %.1f%%, want 10 ± 5", i, hl.TTL, hl.Forward)
			}
		}
	}
	// TTLs past the destination are re-checked every DefaultRecheck rounds only.
	// (A lost probe to the destination in the first rounds, or its answer arriving after
	// the next round started on a busy machine, delays learning the distance: each such
	// round costs the 7 probes past the destination.)
	if want := 2*300*10 - (300-300/DefaultRecheck)*(10-6+10-3); f.sent < want || f.sent > want+70 {
		t.Errorf("sent %d probes, want %d (+ a few)", f.sent, want)
	}
}

// Cancelling returns what was seen; probes in flight are not lost.
func TestMonitorCancel(t *testing.T) {
	f := newFakeNet(time.Hour, [][]netip.Addr{{addr("10.0.0.1")}}, []netip.Addr{addr("192.0.2.1")})
	defer f.Close()
	opt := DefaultOptions()
	opt.MaxTTL, opt.Interval, opt.Wait, opt.MinWait = 2, MinInterval, 5*time.Second, 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, f, 1, opt)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	for _, h := range res.Targets[0].Hops {
		if h.Sent() != 0 || h.InFlight() == 0 {
			t.Errorf("TTL %d: sent %d in flight %d, want 0 and some", h.TTL, h.Sent(), h.InFlight())
		}
	}
}

func TestMonitorValidate(t *testing.T) {
	for _, o := range []Options{
		{FirstTTL: 1, MaxTTL: 30, Interval: 5 * time.Millisecond, Wait: time.Second},
		{FirstTTL: 1, MaxTTL: 30, Interval: time.Second, Wait: time.Second, Cycles: -1},
		{FirstTTL: 5, MaxTTL: 3, Interval: time.Second, Wait: time.Second},
	} {
		if o.Validate() == nil {
			t.Errorf("%+v: valid", o)
		}
	}
}

// Path changes are events: a new responder at a TTL, the destination nearer (where a
// router answered) or farther (a router answers where it did). Learning the path in the
// first rounds, answers in any order, is not a change.
func TestMonitorPathEvents(t *testing.T) {
	s := testState(1, 4)
	dest := func(ttl, r int) *trace.Reply {
		return &trace.Reply{Probe: probeFor(0, ttl, r), Kind: probe.KindSTUN, From: addr("192.0.2.1"), RTT: time.Millisecond}
	}
	sendRound(s, 0)
	s.reply(dest(4, 0), t0) // past the destination, first: learning
	s.reply(dest(3, 0), t0)
	s.reply(answer(0, 1, 0, "10.0.0.1"), t0)
	s.reply(answer(0, 2, 0, "10.0.0.2"), t0)
	s.closeRound()
	tg := s.targets[0]
	if tg.DestTTL != 3 || len(tg.Events) != 0 {
		t.Fatalf("after round 0: distance %d events %v, want 3 and none", tg.DestTTL, tg.Events)
	}
	sendRound(s, 1)
	s.reply(answer(0, 2, 1, "10.0.9.2"), t0.Add(time.Second)) // another router at TTL 2
	s.reply(answer(0, 3, 1, "10.0.0.3"), t0.Add(time.Second)) // a router where the destination was
	s.closeRound()
	sendRound(s, 2)
	s.reply(dest(4, 2), t0.Add(2*time.Second)) // the destination one farther
	s.reply(answer(0, 2, 2, "10.0.0.2"), t0)   // the old router again: no event
	s.closeRound()
	sendRound(s, 3)
	s.reply(dest(3, 3), t0.Add(3*time.Second)) // back where a router answered: nearer
	s.closeRound()
	want := []Event{
		{Time: t0.Add(time.Second), Round: 1, Kind: NewResponder, TTL: 2, From: addr("10.0.9.2")},
		{Time: t0.Add(time.Second), Round: 1, Kind: NewResponder, TTL: 3, From: addr("10.0.0.3")},
		{Time: t0.Add(time.Second), Round: 1, Kind: NewDistance, TTL: 0, OldTTL: 3},
		{Time: t0.Add(2 * time.Second), Round: 2, Kind: NewDistance, TTL: 4, OldTTL: 0},
		{Time: t0.Add(3 * time.Second), Round: 3, Kind: NewDistance, TTL: 3, OldTTL: 4},
	}
	if len(tg.Events) != len(want) {
		t.Fatalf("events %+v, want %+v", tg.Events, want)
	}
	for i := range want {
		if tg.Events[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, tg.Events[i], want[i])
		}
	}
}

// lateNet answers round 0's probes only after the run has closed that round: in a real
// run they are counted late, never credited to a later round.
type lateNet struct {
	*fakeNet
	delay time.Duration
}

func (l *lateNet) Send(p trace.Probe) error {
	if p.Attempt != 0 {
		return l.fakeNet.Send(p)
	}
	rep := trace.Reply{Probe: p, Kind: probe.KindTimeExceeded, From: addr("10.0.0.1"), RTT: l.delay}
	time.AfterFunc(l.delay, func() { l.replies <- rep })
	return nil
}

func TestMonitorRunLateReply(t *testing.T) {
	f := newFakeNet(100*time.Microsecond, [][]netip.Addr{{addr("10.0.0.1")}}, []netip.Addr{addr("192.0.2.1")})
	defer f.Close()
	l := &lateNet{fakeNet: f, delay: 150 * time.Millisecond}
	opt := DefaultOptions()
	opt.MaxTTL, opt.Interval, opt.Cycles, opt.Wait, opt.MinWait, opt.Rate = 2, 20*time.Millisecond, 20, 30*time.Millisecond, 30*time.Millisecond, 0
	res, err := Run(context.Background(), l, 1, opt)
	if err != nil {
		t.Fatal(err)
	}
	tg := res.Targets[0]
	if tg.Late != 2 {
		t.Errorf("late %d, want 2 (round 0's two probes)", tg.Late)
	}
	for _, h := range tg.Hops {
		if h.Sent() != 20 || h.Received() != 19 {
			t.Errorf("TTL %d: sent %d received %d, want 20 19", h.TTL, h.Sent(), h.Received())
		}
	}
}

// Over many runs of the same 10 % forward loss (1000 rounds, four answering hops past
// the lossy link), the hops' rates differ by sampling noise only: the attribution must
// not turn that noise into reply loss, but in a rare run, and forward loss stays within
// 4 points of the truth.
func TestMonitorForwardLossNoise(t *testing.T) {
	rng := rand.New(rand.NewSource(10))
	reply, forward := 0, 0
	const runs = 300
	for range runs {
		tg := &Target{DestTTL: 8}
		for ttl := 1; ttl <= 8; ttl++ {
			p := 0.0
			if ttl >= 5 {
				p = 0.10
			}
			tg.Hops = append(tg.Hops, hop(ttl, pattern(rng, 1000, p), "10.0.0.1"))
		}
		r, f := false, false
		for _, hl := range tg.Losses() {
			r = r || hl.Reply > 3
			f = f || hl.TTL >= 5 && math.Abs(hl.Forward-10) > 4 || hl.TTL < 5 && hl.Forward != 0
		}
		if r {
			reply++
		}
		if f {
			forward++
		}
	}
	t.Logf("of %d runs: %d with reply loss > 3 points, %d with forward loss off by > 4", runs, reply, forward)
	if reply > runs/100 || forward > runs/100 {
		t.Errorf("of %d runs: %d with reply loss > 3 points, %d with forward loss off by > 4; want 1 %% at most", runs, reply, forward)
	}
}

// An engine failure with Reopen is an outage: the probes in flight count neither answered
// nor lost, the run goes on with the new engine, a target whose route moved gets an event,
// and every round closed is complete.
func TestMonitorOutageReopens(t *testing.T) {
	paths := [][]netip.Addr{{addr("10.0.0.1"), addr("10.0.0.2")}, {addr("10.1.0.1")}}
	dest := []netip.Addr{addr("192.0.2.1"), addr("192.0.2.2")}
	first := newFakeNet(time.Millisecond, paths, dest)
	second := newFakeNet(time.Millisecond, paths, dest)
	defer first.Close()
	defer second.Close()
	opt := DefaultOptions()
	// A generous wait: a busy machine delaying the fake's answers must not make them lost.
	opt.Interval, opt.Cycles, opt.Wait, opt.MinWait, opt.Rate = 20*time.Millisecond, 30, 300*time.Millisecond, 300*time.Millisecond, 0
	var reopened int
	opt.Round = func(r int) {
		if r == 9 {
			first.errs <- errors.New("interface lab0 went down")
		}
	}
	opt.Reopen = func(ctx context.Context, cause error) (trace.Engine, []int, error) {
		reopened++
		if !strings.Contains(cause.Error(), "went down") {
			t.Errorf("reopen cause %v", cause)
		}
		time.Sleep(50 * time.Millisecond) // the interface coming back
		return second, []int{1}, nil
	}
	res, err := Run(context.Background(), first, 2, opt)
	if err != nil {
		t.Fatal(err)
	}
	if reopened != 1 || len(res.Outages) != 1 || res.Outages[0].End.Sub(res.Outages[0].Start) < 50*time.Millisecond {
		t.Fatalf("reopened %d, outages %+v", reopened, res.Outages)
	}
	if second.sent == 0 {
		t.Fatal("the new engine sent nothing")
	}
	if res.Rounds < 25 || res.Rounds > 30 {
		t.Errorf("rounds closed %d, want 30 less the one or two the outage interrupted", res.Rounds)
	}
	for i, tg := range res.Targets {
		for _, h := range tg.Path() {
			if h.Sent() != res.Rounds || h.InFlight() != 0 || h.Received() != h.Sent() {
				t.Errorf("target %d TTL %d: sent %d received %d in flight %d, want %d complete rounds, no loss",
					i, h.TTL, h.Sent(), h.Received(), h.InFlight(), res.Rounds)
			}
		}
		moved := slices.ContainsFunc(tg.Events, func(e Event) bool { return e.Kind == NewRoute })
		if moved != (i == 1) {
			t.Errorf("target %d: events %+v, want a route event only for target 1", i, tg.Events)
		}
	}
	if d := res.Down(); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("down %v", d)
	}
}

// Without Reopen, or when Reopen gives up, the engine's failure ends the run with what
// was seen and the outage recorded.
func TestMonitorOutageFatal(t *testing.T) {
	f := newFakeNet(time.Millisecond, [][]netip.Addr{{addr("10.0.0.1")}}, []netip.Addr{addr("192.0.2.1")})
	defer f.Close()
	opt := DefaultOptions()
	opt.Interval, opt.Wait, opt.MinWait, opt.Rate = 20*time.Millisecond, 100*time.Millisecond, 20*time.Millisecond, 0
	opt.Round = func(r int) {
		if r == 2 {
			f.errs <- errors.New("boom")
		}
	}
	res, err := Run(context.Background(), f, 1, opt)
	if !errors.Is(err, ErrEngine) || res == nil || res.Rounds < 3 {
		t.Fatalf("no reopen: err %v res %+v", err, res)
	}
	f2 := newFakeNet(time.Millisecond, [][]netip.Addr{{addr("10.0.0.1")}}, []netip.Addr{addr("192.0.2.1")})
	defer f2.Close()
	opt.Round = func(r int) {
		if r == 2 {
			f2.errs <- errors.New("boom")
		}
	}
	giveUp := errors.New("not recoverable")
	opt.Reopen = func(context.Context, error) (trace.Engine, []int, error) { return nil, nil, giveUp }
	res, err = Run(context.Background(), f2, 1, opt)
	if !errors.Is(err, giveUp) || len(res.Outages) != 1 || !res.Outages[0].End.IsZero() {
		t.Fatalf("give up: err %v outages %+v", err, res.Outages)
	}
}

// Check's error is an engine failure: with Reopen the run goes on.
func TestMonitorCheckReopens(t *testing.T) {
	paths := [][]netip.Addr{{addr("10.0.0.1")}}
	f := newFakeNet(time.Millisecond, paths, []netip.Addr{addr("192.0.2.1")})
	defer f.Close()
	opt := DefaultOptions()
	opt.Interval, opt.Cycles, opt.Wait, opt.MinWait, opt.Rate = 10*time.Millisecond, 20, 50*time.Millisecond, 10*time.Millisecond, 0
	opt.CheckEvery = 50 * time.Millisecond
	checks := 0
	opt.Check = func() error {
		if checks++; checks == 1 {
			return errors.New("route to 192.0.2.1 changed")
		}
		return nil
	}
	opt.Reopen = func(context.Context, error) (trace.Engine, []int, error) { return f, []int{0}, nil }
	res, err := Run(context.Background(), f, 1, opt)
	if err != nil || len(res.Outages) != 1 || res.Targets[0].Events[len(res.Targets[0].Events)-1].Kind != NewRoute {
		t.Fatalf("err %v outages %+v events %+v", err, res.Outages, res.Targets[0].Events)
	}
}

// Events are capped: the oldest go first and are counted.
func TestMonitorEventsCapped(t *testing.T) {
	var tg Target
	for i := range maxEvents + 5 {
		tg.event(Event{Round: i})
	}
	if len(tg.Events) > maxEvents || tg.EventsDropped == 0 || tg.Events[len(tg.Events)-1].Round != maxEvents+4 ||
		tg.Events[0].Round != tg.EventsDropped {
		t.Fatalf("%d events, %d dropped, first %d", len(tg.Events), tg.EventsDropped, tg.Events[0].Round)
	}
}

// Twenty relays behind the same rate-limited routers (a burst of 6, then 10 answers a
// second): the monitor learns the limits and asks each router about as often as it
// answers, the targets taking turns; no hop of a limited router is called silent or
// shows forward loss the destinations do not have; the router that never answers stays
// silent.
func TestMonitorRouterBudgets(t *testing.T) {
	const n, rounds = 20, 40
	shared := []netip.Addr{addr("10.0.0.1"), addr("10.0.0.2"), {}, addr("10.0.0.4")}
	var paths [][]netip.Addr
	var dests []netip.Addr
	for i := range n {
		paths = append(paths, shared)
		dests = append(dests, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}))
	}
	f := newFakeNet(200*time.Microsecond, paths, dests)
	f.limits = map[netip.Addr]*fakeBucket{}
	for _, a := range shared {
		if a.IsValid() {
			f.limits[a] = newFakeBucket(6, 10)
		}
	}
	defer f.Close()
	opt := DefaultOptions()
	opt.MaxTTL, opt.Interval, opt.Cycles, opt.Wait, opt.MinWait = 8, 100*time.Millisecond, rounds, 90*time.Millisecond, 90*time.Millisecond
	opt.Rate = 0
	res, err := Run(context.Background(), f, n, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range res.TargetSnapshots(false) {
		if ts.DestTTL != len(shared)+1 || ts.PathLoss != 0 {
			t.Errorf("target %d: distance %d, path loss %.1f%%", ts.Index, ts.DestTTL, ts.PathLoss)
		}
		for _, h := range ts.Hops {
			switch {
			case h.TTL == 3 && !h.Silent:
				t.Errorf("target %d TTL 3 (never answers): %+v, want silent", ts.Index, h)
			case h.TTL != 3 && h.TTL < ts.DestTTL && h.Silent:
				t.Errorf("target %d TTL %d: a rate-limited router called silent (%d sent)", ts.Index, h.TTL, h.Sent)
			case h.Forward > 0:
				t.Errorf("target %d TTL %d: forward loss %.1f%%, the destination has none", ts.Index, h.TTL, h.Forward)
			}
		}
	}
	// Ungated, each router would be asked n a round: 800. It answers about 6 + 10 a
	// second over the 4 s; the monitor asks it not much more often.
	for a, b := range f.limits {
		if b.asked > 200 {
			t.Errorf("router %v asked %d times in %d rounds", a, b.asked, rounds)
		}
	}
}
