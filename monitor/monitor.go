// Package monitor watches the paths to a list of targets in rounds, as mtr does: every
// Interval one probe for every TTL of every target's one Paris flow, with per-hop
// statistics (hopstat) kept up to date round after round, loss split into the part the
// path itself loses (forward loss) and the part only a router's own answers lose (reply
// loss: ICMP rate limiting), path changes as events, and a verdict per target. It is
// pure over a trace.Engine, so its logic is tested against a fake network.
//
// Rounds and probe ids. Round r sends attempt r mod 255 (ids are ttl|attempt<<8, attempt
// 0..254), so one id comes back every 255 rounds. A reply is credited to the round whose
// probe is still awaited with that attempt at that TTL; the wait is capped below 250
// intervals, so at most one such round is ever open. A reply for a round already closed
// (its probe counted lost) is late and dropped, a second reply for an answered probe a
// duplicate, dropped too: neither can land in a later round that reuses the id.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/turnpath/turnpath/hopstat"
	"github.com/turnpath/turnpath/pace"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/trace"
)

// MinInterval is the shortest interval between rounds. Below it the rounds of a path a
// few milliseconds long overlap so much that most probes of a round are still in flight
// when the next one leaves, and timer granularity makes the interval itself noisy.
const MinInterval = 10 * time.Millisecond

// attempts is the number of distinct attempt numbers in a probe id (0..254).
const attempts = 255

// maxOpenRounds caps how many rounds may await answers at once, below attempts with
// room to spare: the wait is clamped to that many intervals so an id is never reused
// while the round that sent it is open.
const maxOpenRounds = 250

// DefaultRecheck is how often (every Nth round) the TTLs past a known destination are
// probed again: a path that grew shows up, without tripling the probes of every round.
const DefaultRecheck = 10

// Options tune a monitor run.
type Options struct {
	FirstTTL, MaxTTL int
	Interval         time.Duration // between round starts, at least MinInterval
	// Cycles stops after that many rounds (then waits for the last round's answers);
	// 0 runs until the context is cancelled.
	Cycles int
	// Wait caps the wait for a round's answers; the wait adapts to the RTTs seen (pace.Timeout),
	// from MinWait up. It is clamped to maxOpenRounds intervals.
	Wait, MinWait time.Duration
	Rate          float64 // probes per second over all targets; 0 unpaced
	Burst         int
	Recheck       int // every Nth round probes past the destination (0: DefaultRecheck)
	// Round, if set, is called after each round is closed with its number (from 0).
	Round func(int)
	// Snapshot, if set, is called in the run loop after a round is closed (at most every
	// SnapshotEvery) with a copy of every target's results: a live view reads it in its
	// own goroutine without racing the run. It must not block for long.
	Snapshot      func(*Snapshot)
	SnapshotEvery time.Duration
	// SnapshotEvents puts each target's kept path changes into its snapshots.
	SnapshotEvents bool
	// Sample, if set, is told of every reply credited to its round (see SampleFunc).
	Sample SampleFunc
	// Reset, if set, starts the statistics afresh whenever it receives (see state.reset).
	Reset <-chan struct{}
	// Reopen, if set, is asked for a new engine when the run's engine fails (its error,
	// a send error, or Check's): it decides whether the cause is one a run outlives (the
	// interface went away or down, a route changed), waits as long as it takes for the
	// way out to be back, and returns the new engine and the targets whose route changed.
	// Its error ends the run. Without Reopen an engine failure ends the run.
	Reopen func(ctx context.Context, cause error) (eng trace.Engine, moved []int, err error)
	// Check, if set, is called every CheckEvery (default 10 s) between rounds: an error
	// (a target's route changed) is treated like an engine failure.
	Check      func() error
	CheckEvery time.Duration
}

// DefaultOptions are mtr's pace with trace's limits.
func DefaultOptions() Options {
	return Options{FirstTTL: 1, MaxTTL: 30, Interval: time.Second, Wait: time.Second,
		MinWait: 50 * time.Millisecond, Rate: 1000, Burst: 64, Recheck: DefaultRecheck}
}

// Validate reports options a user could get wrong.
func (o *Options) Validate() error {
	switch {
	case o.Interval < MinInterval:
		return fmt.Errorf("interval %v below the minimum %v", o.Interval, MinInterval)
	case o.Cycles < 0:
		return fmt.Errorf("cycles %d must not be negative", o.Cycles)
	case o.Wait <= 0:
		return fmt.Errorf("wait %v must be positive", o.Wait)
	}
	if err := trace.CheckTTLs(o.FirstTTL, o.MaxTTL); err != nil {
		return err
	}
	return pace.CheckRate(o.Rate)
}

// EventKind says what changed on a path.
type EventKind string

const (
	// NewResponder: an address answered at a TTL where it had not before.
	NewResponder EventKind = "responder"
	// NewDistance: the destination answered at another TTL than before, or a router
	// answered where the destination used to (0: distance unknown again).
	NewDistance EventKind = "distance"
	// NewRoute: after an outage the target's probes leave by another interface or
	// source address.
	NewRoute EventKind = "route"
)

// maxEvents bounds the events a target keeps: a flapping path (two responders taking
// turns, a distance that comes and goes) must not grow a long run's memory. The oldest
// are dropped first and counted (Target.EventsDropped).
const maxEvents = 1000

// Outage is a time the run could not probe: its engine failed (the interface went away
// or down, a route changed) until Reopen brought a new one. Probes in flight when it
// began count neither as answered nor lost, and no round starts during it.
type Outage struct {
	Start, End time.Time // End zero: the run ended during the outage
	Cause      string
}

// Event is one path change.
type Event struct {
	Time   time.Time
	Round  int
	Kind   EventKind
	TTL    int
	From   netip.Addr // NewResponder: the new address
	OldTTL int        // NewDistance: the previous distance (0 unknown)
}

// slot states of a probe.
const (
	free uint8 = iota
	awaited
	answered
	lost
)

// slot is the probe of one round at one (target, TTL): the round that sent it, when,
// and what became of it. A target keeps ring slots per TTL, indexed by round mod ring;
// 16 bytes each, since a short interval with a long wait needs up to 251 of them.
type slot struct {
	sent  int64 // Unix nanoseconds
	round int32
	state uint8
}

// Target is one target's state: its hops and what the run saw.
type Target struct {
	Index   int
	Hops    []hopstat.Hop // by TTL − FirstTTL
	DestTTL int           // the destination's distance; 0 unknown
	Events  []Event       // the newest maxEvents path changes
	// EventsDropped counts the oldest events dropped beyond maxEvents.
	EventsDropped int
	Late          int // replies after their round was closed (dropped)
	Dups          int // second replies for a probe already answered (dropped)

	slots    []slot                // TTL-major: (ttl−FirstTTL)*ring + round%ring
	seen     []map[netip.Addr]bool // responders seen per TTL, for NewResponder
	from     []netip.Addr          // per TTL: the router that answered last (whose budget a probe there draws on); valid: a router (not the destination) answered there
	held     []bool                // per TTL: its router's budget held a probe back (Losses)
	knewDest bool                  // a distance was known once: a new one is a change
}

// event records a path change, dropping the oldest beyond maxEvents.
func (t *Target) event(e Event) {
	if len(t.Events) == maxEvents {
		n := copy(t.Events, t.Events[maxEvents/10:])
		t.Events = t.Events[:n]
		t.EventsDropped += maxEvents / 10
	}
	t.Events = append(t.Events, e)
}

// round is a round in flight.
type round struct {
	num      int
	sending  bool
	lastSend time.Time
	open     int // probes awaited
}

// state is a run's bookkeeping, apart from time and the engine: what tests drive directly.
type state struct {
	opt     Options
	ring    int
	targets []*Target
	rounds  []*round // open rounds, oldest first
	last    int      // the newest round started; −1 before the first
	closed  int      // rounds closed
	timeout pace.Timeout

	started  time.Time // for snapshots
	lastSnap time.Time

	// The schedule, kept across an outage: the next round to start and when, the round
	// being sent and its send cursor (TTL-major).
	next    int
	nextAt  time.Time
	cur     *round
	ttl, ti int
	slipped int // rounds that started late because the previous one's sends overran
	outages []Outage
	down    *Outage // the outage going on
	budgets *budgets
	// guess is, by (distance, TTL), the router that answered there last for any target:
	// whose budget a probe draws on at a TTL where this target has had no answer yet.
	guess map[[2]int]netip.Addr
}

func newState(n int, opt Options) *state {
	if opt.Recheck <= 0 {
		opt.Recheck = DefaultRecheck
	}
	// The wait is clamped so that no more than maxOpenRounds rounds are ever open: an
	// attempt number then belongs to one open round at most.
	if limit := maxOpenRounds * opt.Interval; opt.Wait > limit {
		opt.Wait = limit
	}
	if opt.MinWait > opt.Wait {
		opt.MinWait = opt.Wait
	}
	ring := int(opt.Wait/opt.Interval) + 3
	ring = min(ring, maxOpenRounds+1)
	s := &state{opt: opt, ring: ring, last: -1, timeout: pace.Timeout{Min: opt.MinWait, Max: opt.Wait},
		budgets: newBudgets(opt.Interval), guess: map[[2]int]netip.Addr{}}
	nttl := opt.MaxTTL - opt.FirstTTL + 1
	for i := range n {
		t := &Target{Index: i, Hops: make([]hopstat.Hop, nttl), slots: make([]slot, nttl*ring),
			seen: make([]map[netip.Addr]bool, nttl), from: make([]netip.Addr, nttl),
			held: make([]bool, nttl)}
		for k := range t.Hops {
			t.Hops[k].TTL = opt.FirstTTL + k
		}
		s.targets = append(s.targets, t)
	}
	return s
}

// wants says whether round r probes target t at ttl: every TTL up to the destination,
// and past it only every Recheck rounds (and always while the distance is unknown).
func (s *state) wants(t *Target, ttl, r int) bool {
	return t.DestTTL == 0 || ttl <= t.DestTTL || r%s.opt.Recheck == 0
}

// affords says whether the budget of the router last seen at t's ttl has a probe for it
// at now, and takes it (budget.go); the destination's TTLs are never held back.
func (s *state) affords(t *Target, ttl int, now time.Time) bool {
	if t.DestTTL != 0 && ttl >= t.DestTTL {
		return true
	}
	k := ttl - s.opt.FirstTTL
	a := t.from[k]
	if !a.IsValid() && t.DestTTL != 0 {
		a = s.guess[[2]int{t.DestTTL, ttl}]
	}
	if !a.IsValid() || s.budgets.allow(a, now) {
		return true
	}
	t.held[k] = true
	return false
}

func (s *state) roundByNum(r int) *round {
	if len(s.rounds) == 0 {
		return nil
	}
	i := r - s.rounds[0].num
	if i < 0 || i >= len(s.rounds) {
		return nil
	}
	return s.rounds[i]
}

// startRound opens round r. A round still open ring−1 rounds later (the sends were
// late) is closed first, so its slots are not overwritten while awaited.
func (s *state) startRound(r int) *round {
	for len(s.rounds) > 0 && s.rounds[0].num <= r-(s.ring-1) {
		s.closeRound()
	}
	rd := &round{num: r, sending: true}
	s.rounds = append(s.rounds, rd)
	s.last = r
	return rd
}

// sent records round r's probe to target t at ttl, sent at now.
func (s *state) sent(t *Target, ttl, r int, now time.Time) {
	k := ttl - s.opt.FirstTTL
	sl := &t.slots[k*s.ring+r%s.ring]
	*sl = slot{round: int32(r), sent: now.UnixNano(), state: awaited}
	t.Hops[k].Await()
	if rd := s.roundByNum(r); rd != nil {
		rd.open++
		rd.lastSend = now
	}
}

// probeFor is the probe of round r to ttl.
func probeFor(target, ttl, r int) trace.Probe {
	return trace.Probe{Target: target, TTL: uint8(ttl), Attempt: uint8(r % attempts)}
}

// reply credits rep to the round whose probe it answers, if that round still awaits it.
func (s *state) reply(rep *trace.Reply, now time.Time) {
	ti := rep.Probe.Target
	ttl := int(rep.Probe.TTL)
	if ti < 0 || ti >= len(s.targets) || ttl < s.opt.FirstTTL || ttl > s.opt.MaxTTL {
		return
	}
	t := s.targets[ti]
	k := ttl - s.opt.FirstTTL
	// The round that sent this attempt most recently; an older one with the same attempt
	// is at least 255 rounds back, long closed.
	newest := s.last
	a := int(rep.Probe.Attempt)
	if a >= attempts || newest < 0 {
		t.Late++
		return
	}
	r := newest - ((newest-a)%attempts+attempts)%attempts
	if r < 0 {
		t.Late++
		return
	}
	sl := &t.slots[k*s.ring+r%s.ring]
	switch {
	case int(sl.round) != r || sl.state == free || sl.state == lost:
		t.Late++
		return
	case sl.state == answered:
		t.Dups++
		return
	}
	sl.state = answered
	if rd := s.roundByNum(r); rd != nil {
		rd.open--
	}
	rtt := rep.RTT
	if rtt <= 0 {
		// An engine without a timestamp for the probe: the time since it was handed over.
		rtt = now.Sub(time.Unix(0, sl.sent))
	}
	s.timeout.Observe(rtt)
	sample := hopstat.Sample{From: rep.From, RTT: rtt, TimeExceeded: rep.Kind == probe.KindTimeExceeded,
		QuotedTTL: rep.QuotedTTL, NAT: rep.NAT}
	t.Hops[k].Add(sample)
	s.opt.Sample.call(ti, ttl, rtt, rep.From, rep.Reached())
	if t.seen[k] == nil {
		t.seen[k] = map[netip.Addr]bool{}
	}
	if !t.seen[k][rep.From] {
		// The first responder at a TTL is the path being learnt; a later new one a change.
		if len(t.seen[k]) > 0 {
			t.event(Event{Time: now, Round: r, Kind: NewResponder, TTL: ttl, From: rep.From})
		}
		t.seen[k][rep.From] = true
	}
	if !rep.Reached() {
		t.from[k] = rep.From
		if t.DestTTL != 0 && ttl < t.DestTTL {
			s.guess[[2]int{t.DestTTL, ttl}] = rep.From
		}
	}
	switch {
	case rep.Reached() && (t.DestTTL == 0 || ttl < t.DestTTL):
		// While the distance is first learnt, answers from past the destination come in
		// any order and lost probes hide it: a shorter distance is a change only where a
		// router used to answer, or once a known distance was lost.
		if t.knewDest && t.DestTTL == 0 || t.from[k].IsValid() {
			t.event(Event{Time: now, Round: r, Kind: NewDistance, TTL: ttl, OldTTL: t.DestTTL})
		}
		t.DestTTL, t.knewDest = ttl, true
	case !rep.Reached() && t.DestTTL != 0 && ttl >= t.DestTTL:
		// A router answers where the destination did: the path grew. Probe every TTL
		// until the destination answers again.
		t.event(Event{Time: now, Round: r, Kind: NewDistance, TTL: 0, OldTTL: t.DestTTL})
		t.DestTTL = 0
	}
}

// due reports whether the oldest open round may be closed at now: all its probes left and
// either all are answered or the wait since its last send has passed.
func (s *state) due(now time.Time) bool {
	if len(s.rounds) == 0 {
		return false
	}
	rd := s.rounds[0]
	return !rd.sending && (rd.open == 0 || !now.Before(rd.lastSend.Add(s.timeout.Duration())))
}

// closeAt is when the oldest open round's wait ends (zero: none is waiting).
func (s *state) closeAt() time.Time {
	if len(s.rounds) == 0 || s.rounds[0].sending {
		return time.Time{}
	}
	return s.rounds[0].lastSend.Add(s.timeout.Duration())
}

// closeRound closes the oldest open round: its probes still awaited are lost.
func (s *state) closeRound() {
	rd := s.rounds[0]
	s.rounds = s.rounds[1:]
	s.closed++
	r := rd.num
	for _, t := range s.targets {
		for k := range t.Hops {
			sl := &t.slots[k*s.ring+r%s.ring]
			if int(sl.round) != r {
				continue
			}
			// The round's tally of each router's answers and refusals (budget.go).
			a := t.from[k]
			router := a.IsValid() && (t.DestTTL == 0 || s.opt.FirstTTL+k < t.DestTTL)
			switch sl.state {
			case awaited:
				sl.state = lost
				t.Hops[k].Lost()
				if router {
					s.budgets.of(a).refused++
				}
			case answered:
				if router {
					s.budgets.of(a).got++
				}
			}
		}
	}
	s.budgets.settle(time.Now())
	if s.opt.Round != nil {
		s.opt.Round(r)
	}
	s.maybeSnapshot()
}

// ErrEngine wraps a runtime error the engine reported.
var ErrEngine = errors.New("engine failed")

// Run monitors n targets over eng until opt.Cycles rounds are done (and their answers
// waited for) or ctx is cancelled. It returns what was seen in both cases, with ctx's
// error in the second; probes still in flight then count neither as answered nor lost.
// With opt.Reopen an engine failure is an outage, not the end (see Outage).
func Run(ctx context.Context, eng trace.Engine, n int, opt Options) (*Result, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	s := newState(n, opt)
	admit := func(eng trace.Engine) error {
		for t := range n {
			if err := eng.Admit(t); err != nil {
				return fmt.Errorf("admit target %d: %w", t, err)
			}
		}
		return nil
	}
	if err := admit(eng); err != nil {
		return nil, err
	}
	started := time.Now()
	s.started = started
	s.nextAt = started
	var err error
	for {
		err = s.loop(ctx, eng)
		if err == nil || opt.Reopen == nil || ctx.Err() != nil {
			break
		}
		// An outage: what is in flight can no longer be answered; the run resumes with a
		// new engine once Reopen has one (or ends with Reopen's error).
		s.interrupt()
		o := Outage{Start: time.Now(), Cause: err.Error()}
		s.down = &o
		if opt.Snapshot != nil {
			opt.Snapshot(s.snapshot(o.Start)) // a live view shows the outage at once
		}
		neng, moved, rerr := opt.Reopen(ctx, err)
		s.down = nil
		if rerr == nil {
			rerr = admit(neng)
		}
		if rerr != nil {
			s.outages = append(s.outages, o)
			err = rerr
			if neng != nil {
				eng = neng
			}
			break
		}
		eng = neng
		o.End = time.Now()
		s.outages = append(s.outages, o)
		for _, i := range moved {
			if i >= 0 && i < n {
				s.targets[i].event(Event{Time: o.End, Round: s.next, Kind: NewRoute})
			}
		}
		s.nextAt = o.End
	}
	for t := range n {
		eng.Release(t)
	}
	return s.result(started, time.Now()), err
}

// interrupt ends the open rounds after the engine failed: their awaited probes are
// abandoned (neither answered nor lost) and the round being sent stops.
func (s *state) interrupt() {
	for _, rd := range s.rounds {
		for _, t := range s.targets {
			for k := range t.Hops {
				sl := &t.slots[k*s.ring+rd.num%s.ring]
				if int(sl.round) == rd.num && sl.state == awaited {
					sl.state = free
					t.Hops[k].Abandon()
				}
			}
		}
	}
	s.rounds, s.cur = s.rounds[:0], nil
}

func (s *state) loop(ctx context.Context, eng trace.Engine) error {
	opt := s.opt
	bucket := pace.NewBucket(opt.Rate, max(opt.Burst, 1))
	timer := time.NewTimer(0)
	defer timer.Stop()
	checkEvery := opt.CheckEvery
	if checkEvery <= 0 {
		checkEvery = 10 * time.Second
	}
	nextCheck := time.Now().Add(checkEvery)
	var batch []trace.Probe
	var batchRound *round // the round batch's probes belong to
	for {
		// Replies already delivered are read before any round is closed: a loop that
		// woke late (a busy machine) must not count answers waiting in the channel lost.
		if err := s.drain(eng); err != nil {
			return err
		}
		now := time.Now()
		if opt.Check != nil && !now.Before(nextCheck) {
			if err := opt.Check(); err != nil {
				return err
			}
			nextCheck = now.Add(checkEvery)
		}
		// Close what is due; then start the next round when its time has come and the
		// previous one has left (a round whose sends overrun the interval delays the next).
		for s.due(now) {
			s.closeRound()
		}
		if s.cur == nil && (opt.Cycles == 0 || s.next < opt.Cycles) && !now.Before(s.nextAt) {
			s.cur = s.startRound(s.next)
			s.ttl, s.ti = opt.FirstTTL, 0
			s.nextAt = s.nextAt.Add(opt.Interval)
			if s.nextAt.Before(now) {
				// The sends overran: the schedule slips rather than bursting.
				s.nextAt = now
				if s.next > 0 {
					s.slipped++
				}
			}
			s.next++
		}
		var wake time.Duration = -1
		// The probes the bucket lets through go out in batches (trace.SendAll: one
		// SendBatch per batch where the engine has it); flush sends them and moves the
		// round's last send to after them.
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			_, err := trace.SendAll(eng, batch)
			batch = batch[:0]
			now = time.Now()
			if batchRound.open > 0 {
				batchRound.lastSend = now
			}
			if err != nil {
				return fmt.Errorf("send probe: %w", err)
			}
			return nil
		}
		for s.cur != nil {
			cur := s.cur
			if s.ttl > opt.MaxTTL {
				if err := flush(); err != nil {
					return err
				}
				cur.sending = false
				if cur.open == 0 {
					cur.lastSend = now
				}
				s.cur = nil
				break
			}
			// The targets take turns at being first: a limited router's answers go to
			// another target each round.
			ti := (s.ti + cur.num) % len(s.targets)
			t := s.targets[ti]
			if s.wants(t, s.ttl, cur.num) {
				if d := bucket.Take(now); d > 0 {
					wake = d
					break
				}
				// A router whose budget is spent is not asked: not sent, not counted
				// (this round's turn is another target's).
				if s.affords(t, s.ttl, now) {
					batch = append(batch, probeFor(ti, s.ttl, cur.num))
					batchRound = cur
					s.sent(t, s.ttl, cur.num, now)
					if len(batch) == trace.MaxBatch {
						if err := flush(); err != nil {
							return err
						}
					}
				}
			}
			if s.ti++; s.ti == len(s.targets) {
				s.ti, s.ttl = 0, s.ttl+1
			}
		}
		if err := flush(); err != nil {
			return err
		}
		if opt.Cycles > 0 && s.next >= opt.Cycles && s.cur == nil && len(s.rounds) == 0 {
			return nil
		}
		// Sleep until the next thing to do: a token, the next round, a round's wait.
		if wake < 0 {
			if s.cur == nil && (opt.Cycles == 0 || s.next < opt.Cycles) {
				wake = s.nextAt.Sub(now)
			}
			if at := s.closeAt(); !at.IsZero() && (wake < 0 || at.Sub(now) < wake) {
				wake = at.Sub(now)
			}
			if wake < 0 {
				wake = opt.Interval
			}
		}
		timer.Reset(max(wake, 0))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-eng.Errors():
			return fmt.Errorf("%w: %w", ErrEngine, err)
		case rep, ok := <-eng.Replies():
			if !ok {
				return fmt.Errorf("%w: replies closed", ErrEngine)
			}
			s.reply(&rep, time.Now())
		case <-opt.Reset:
			s.reset()
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// drain reads the replies waiting in the engine's channel, without blocking.
func (s *state) drain(eng trace.Engine) error {
	for {
		select {
		case rep, ok := <-eng.Replies():
			if !ok {
				return fmt.Errorf("%w: replies closed", ErrEngine)
			}
			s.reply(&rep, time.Now())
		default:
			return nil
		}
	}
}
