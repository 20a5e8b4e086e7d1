// Package trace schedules a Paris-style parallel traceroute over an Engine and assembles the
// hops. It knows nothing of packets or sockets, so its logic is tested against a fake network.
//
// The schedule: every TTL of every target is probed at once (paced by a token bucket), TTL-major
// so consecutive probes go to different targets and no router sees a burst for one of them.
// The first answer from a destination fixes its distance: probes past it are skipped, and
// the remaining attempts (queries 2..q) for TTLs up to it are queued right away instead of
// waiting for round one's silent hops to time out. The trace ends when every probe sent has an
// answer, or when the adaptive timeout (a multiple of the largest RTT seen, within
// [MinWait, Wait]) has passed since the last send.
//
// Long target lists go through a window: at most Options.Window targets are traced at
// once, the next ones enter (in list order) as others finish, and each finished target's
// Result is handed over (Stream) and forgotten. Memory therefore grows with the window,
// not with the list. Each target finishes on its own: when every probe it sent within
// its limit is answered, or the adaptive timeout has passed since its own last send.
package trace

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/pace"
	"github.com/turnpath/turnpath/probe"
)

// Options tune a run.
type Options struct {
	FirstTTL int           // first TTL probed (1..255)
	MaxTTL   int           // last TTL probed (FirstTTL..255)
	Queries  int           // probes per hop (1..254)
	Wait     time.Duration // cap on the wait for stragglers after the last send
	MinWait  time.Duration // floor of the adaptive wait
	Rate     float64       // probes per second over all targets; 0 = unpaced
	Burst    int           // token-bucket burst
	// Window caps the targets traced at once (0: DefaultWindow). Targets enter in list
	// order as others finish; the engine is told (Engine.Admit, Release).
	Window int
	// Progress, if set, is called from the run loop after each send and reply.
	Progress func(Progress)
	// Size, if set, is the IP packet length of target t's probes (0: the payload's own).
	// With PMTU it is where discovery starts (the interface's MTU).
	Size func(target int) int
	// PMTU discovers each target's path MTU: a Packet Too Big (IPv4 fragmentation
	// needed) answer lowers the target's probe size to the MTU the router reports and
	// the probe goes again at that size, until the destination answers. The engine must
	// send with DF set.
	PMTU bool
}

// Progress is a snapshot for a progress line.
type Progress struct {
	Sent, Answered, Targets, Reached int
}

// DefaultWindow is the window when Options.Window is 0: up to 1024 targets at once keep
// a few hundred KiB of state and at most 1024*MaxTTL*Queries probes outstanding (the
// eBPF engine's kernel table holds 65536).
const DefaultWindow = 1024

// DefaultOptions match what mtr/trippy users expect, with a much shorter wait thanks to
// adaptive timeouts.
func DefaultOptions() Options {
	return Options{FirstTTL: 1, MaxTTL: 30, Queries: 3, Wait: time.Second, MinWait: 50 * time.Millisecond, Rate: 1000, Burst: 64}
}

// Validate reports options a user could get wrong.
func (o *Options) Validate() error {
	if err := CheckTTLs(o.FirstTTL, o.MaxTTL); err != nil {
		return err
	}
	switch {
	case o.Queries < 1 || o.Queries > 254:
		return fmt.Errorf("queries %d out of range 1..254", o.Queries)
	case o.Wait <= 0:
		return fmt.Errorf("wait %v must be positive", o.Wait)
	case o.Window < 0:
		return fmt.Errorf("window %d must not be negative", o.Window)
	}
	return pace.CheckRate(o.Rate)
}

// minSize is the smallest probe path MTU discovery goes down to: IPv4's minimum MTU
// (RFC 791). IPv6's is 1280, which no conforming router reports below.
const minSize = 68

// plateaus are the MTUs to try when a router reports none (RFC 1191 section 7).
var plateaus = []int{32000, 17914, 8166, 4352, 2002, 1492, 1280, 1006, 508, 296, 68}

// maxResends bounds how often one probe goes again after Packet Too Big answers.
const maxResends = 8

// CheckTTLs reports a TTL range a user could get wrong (first..max within 1..255).
func CheckTTLs(first, maxTTL int) error {
	switch {
	case first < 1 || first > 255:
		return fmt.Errorf("first TTL %d out of range 1..255", first)
	case maxTTL < 1 || maxTTL > 255:
		return fmt.Errorf("max TTL %d out of range 1..255", maxTTL)
	case maxTTL < first:
		return fmt.Errorf("max TTL %d below first TTL %d", maxTTL, first)
	}
	return nil
}

// Hop is one TTL of one target.
type Hop struct {
	TTL     int
	Replies []*Reply // by attempt, len Queries; nil = no answer
	// Status, Candidates and From come from a many-target scan (package scan); a trace
	// leaves them empty. Status says what the hop is (answered, inferred, silent,
	// rate-limited, lost); an inferred hop is one of Candidates (one: that one), found by
	// the probes of the targets From.
	Status     string
	Candidates []netip.Addr
	From       []netip.Addr
}

// Result is one target's trace.
type Result struct {
	Target  int // index in the target list
	Hops    []Hop
	Reached bool
	// DestTTL is the distance of the destination, or of the hop that ended the trace with an
	// unreachable (Reached false); 0 when nothing ended it.
	DestTTL int
	Sent    int
	Start   time.Time // when the target entered the window
	End     time.Time // when it finished (or the run stopped)
	// Unfinished: the run stopped (cancelled, engine error) while this target was in the
	// window: not every probe was sent or waited for.
	Unfinished bool
	// PathMTU (Options.PMTU) is the size of the probes that reached the destination, or
	// the size discovery was down to when it did not (0: not discovering).
	PathMTU int
	// TooBig is the Packet Too Big answer that set PathMTU (nil: none came): its From is
	// the router in front of the narrowest link, its MTU what that router reported.
	TooBig *Reply
}

// target is the state of one target in the window.
type target struct {
	idx      int
	replies  []*Reply // by (ttl-FirstTTL)*Queries + attempt
	sent     []bool   // same index
	dest     int      // TTL that ended it (0 unknown)
	reached  bool
	extra    bool // attempts 1..q-1 queued
	queued   int  // probes of this target in the queue
	pending  int  // sent within the limit and not answered
	sentN    int
	maxTTL   int     // highest TTL answered
	size     int     // probe size now (0: the payload's own)
	slotSize []int   // size each slot was last sent with (PMTU)
	resends  []uint8 // sends of each slot after Packet Too Big (PMTU)
	tooBig   *Reply  // the Packet Too Big answer with the smallest MTU
	start    time.Time
	lastSend time.Time
	elem     *list.Element // in run.bySend
}

type run struct {
	opt    Options
	eng    Engine
	emit   func(Result) error
	n      int
	next   int // next target to admit
	active map[int]*target
	bySend *list.List // active targets by last send, oldest first
	queue  []Probe
	head   int // queue[head:] is pending
	// batch: the probes taken from the queue and not sent yet (flush), batchSt their
	// targets.
	batch   []Probe
	batchSt []*target
	timeout pace.Timeout
	sentAll int
	answers int
	reached int
}

// Run traces n targets over eng. It returns when done, or with ctx's error when cancelled
// (results so far are still returned), or with an engine error. It keeps every Result:
// for long lists use Stream.
func Run(ctx context.Context, eng Engine, n int, opt Options) ([]Result, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, errors.New("no targets")
	}
	out := make([]Result, n)
	start := time.Now()
	for i := range out {
		out[i] = Result{Target: i, Start: start}
	}
	err := Stream(ctx, eng, n, opt, func(r Result) error {
		out[r.Target] = r
		return nil
	})
	end := time.Now()
	for i := range out {
		if out[i].End.IsZero() {
			out[i].End = end
		}
	}
	return out, err
}

// Stream traces n targets over eng through a window of Options.Window targets and calls
// emit with each target's Result as soon as it is finished, in the order they finish; an
// error from emit stops the run. On cancellation or an engine error the targets in the
// window that were sent a probe are emitted as they are (Unfinished set), in target
// order; targets never probed are not emitted (the caller counts them: n minus the
// targets emitted), and the error is returned.
func Stream(ctx context.Context, eng Engine, n int, opt Options, emit func(Result) error) error {
	if err := opt.Validate(); err != nil {
		return err
	}
	if n <= 0 {
		return errors.New("no targets")
	}
	if opt.Window == 0 {
		opt.Window = DefaultWindow
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &run{opt: opt, eng: eng, emit: emit, n: n, active: map[int]*target{}, bySend: list.New(),
		// A reply after a target's wait still counts while the target is in the window,
		// so before any RTT is seen the wait need not be the cap.
		timeout: pace.Timeout{Min: opt.MinWait, Max: opt.Wait}}
	err := r.admit()
	if err == nil {
		err = r.loop(ctx)
	}
	if err != nil {
		if eerr := r.stop(); eerr != nil {
			return errors.Join(err, eerr)
		}
	}
	return err
}

// stop hands over, in target order, the targets of the window that were sent a probe,
// and releases every target of the window; nothing new is admitted.
func (r *run) stop() error {
	idx := make([]int, 0, len(r.active))
	for t := range r.active {
		idx = append(idx, t)
	}
	slices.Sort(idx)
	var err error
	for _, t := range idx {
		st := r.active[t]
		res := r.result(st)
		res.Unfinished = true
		r.forget(st)
		if st.sentN > 0 && err == nil {
			err = r.emit(res)
		}
	}
	return err
}

// admit fills the window with the next targets and queues their first round TTL-major.
func (r *run) admit() error {
	var batch []*target
	for len(r.active) < r.opt.Window && r.next < r.n {
		t := r.next
		r.next++
		if err := r.eng.Admit(t); err != nil {
			return fmt.Errorf("admit target %d: %w", t, err)
		}
		slots := (r.opt.MaxTTL - r.opt.FirstTTL + 1) * r.opt.Queries
		st := &target{idx: t, replies: make([]*Reply, slots), sent: make([]bool, slots), start: time.Now()}
		if r.opt.Size != nil {
			st.size = r.opt.Size(t)
		}
		if r.opt.PMTU {
			st.slotSize, st.resends = make([]int, slots), make([]uint8, slots)
		}
		st.elem = r.bySend.PushBack(st)
		r.active[t] = st
		batch = append(batch, st)
	}
	for ttl := r.opt.FirstTTL; ttl <= r.opt.MaxTTL; ttl++ {
		for _, st := range batch {
			r.push(st, Probe{Target: st.idx, TTL: uint8(ttl)})
		}
	}
	return nil
}

func (r *run) push(st *target, p Probe) {
	r.queue = append(r.queue, p)
	st.queued++
}

// pop removes the queue's head; the slice is compacted once half of it is consumed.
func (r *run) pop() {
	r.head++
	if r.head == len(r.queue) {
		r.queue, r.head = r.queue[:0], 0
	} else if r.head >= 1024 && r.head*2 >= len(r.queue) {
		n := copy(r.queue, r.queue[r.head:])
		r.queue, r.head = r.queue[:n], 0
	}
}

func (r *run) slot(ttl, attempt int) int { return (ttl-r.opt.FirstTTL)*r.opt.Queries + attempt }

func (r *run) loop(ctx context.Context) error {
	bucket := pace.NewBucket(r.opt.Rate, r.opt.Burst)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Send what the token bucket allows right now.
		now := time.Now()
		var delay time.Duration
		for r.head < len(r.queue) {
			p := r.queue[r.head]
			st := r.active[p.Target]
			if r.skip(st, p) {
				r.pop()
				st.queued--
				if err := r.maybeFinish(st); err != nil {
					return err
				}
				continue
			}
			if delay = bucket.Take(now); delay > 0 {
				break
			}
			r.pop()
			st.queued--
			p.Size = uint16(st.size)
			if st.slotSize != nil {
				st.slotSize[r.slot(int(p.TTL), int(p.Attempt))] = st.size
			}
			// Counted as sent now (a target with a probe in the batch is not finished
			// before it leaves); sent with the batch.
			r.batch = append(r.batch, p)
			r.batchSt = append(r.batchSt, st)
			st.sent[r.slot(int(p.TTL), int(p.Attempt))] = true
			st.sentN++
			st.pending++ // skip() let it through, so it is within the limit
			r.sentAll++
			r.progress()
			if len(r.batch) == MaxBatch {
				if err := r.flush(); err != nil {
					return err
				}
				now = time.Now()
				// An unpaced run can have a whole window queued: do not make Ctrl-C
				// wait for it.
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := r.drain(); err != nil {
					return err
				}
			}
		}
		if err := r.flush(); err != nil {
			return err
		}
		// Replies that are in count before any wait is declared over.
		if err := r.drain(); err != nil {
			return err
		}
		// Targets whose wait is over: give them their other attempts, or finish them
		// (which lets new targets in).
		queued := len(r.queue) - r.head
		wait, err := r.expire(time.Now())
		if err != nil {
			return err
		}
		if len(r.active) == 0 && r.next >= r.n {
			return nil
		}
		switch {
		case len(r.queue)-r.head > queued:
			continue // new probes: send what the bucket allows
		case queued > 0: // the bucket said wait
			delay = min(delay, wait)
		default:
			delay = wait
		}
		resetTimer(timer, delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-r.eng.Errors():
			return err
		case rep := <-r.eng.Replies():
			if err := r.record(&rep); err != nil {
				return err
			}
		case <-timer.C:
		}
	}
}

// flush sends the probes the token bucket let through since the last flush, with one
// SendBatch where the engine has it (SendAll), and marks their targets' last send.
func (r *run) flush() error {
	if len(r.batch) == 0 {
		return nil
	}
	_, err := SendAll(r.eng, r.batch)
	now := time.Now()
	for _, st := range r.batchSt {
		st.lastSend = now
		r.bySend.MoveToBack(st.elem)
	}
	clear(r.batchSt) // no finished target kept alive
	r.batch, r.batchSt = r.batch[:0], r.batchSt[:0]
	if err != nil {
		return fmt.Errorf("send probe: %w", err)
	}
	return nil
}

// drain records the replies already delivered, without waiting: a long burst of sends
// must neither let the engine's channel overflow nor time out targets whose answers are
// in it.
func (r *run) drain() error {
	for {
		select {
		case rep := <-r.eng.Replies():
			if err := r.record(&rep); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// expire handles the targets whose adaptive wait since their last send is over and
// returns how long until the next one's is.
func (r *run) expire(now time.Time) (time.Duration, error) {
	to := r.timeout.Duration()
	for e := r.bySend.Front(); e != nil; {
		st := e.Value.(*target)
		e = e.Next()
		if st.queued > 0 {
			continue // still sending; its wait starts after its last probe
		}
		if left := st.lastSend.Add(to).Sub(now); left > 0 {
			return left, nil
		}
		if !st.extra && r.queueExtra(st) {
			continue
		}
		if err := r.finish(st); err != nil {
			return 0, err
		}
	}
	return to, nil
}

// skip drops queued probes past a destination's known distance.
func (r *run) skip(st *target, p Probe) bool {
	return st.dest != 0 && int(p.TTL) > st.dest
}

func (r *run) record(rep *Reply) error {
	p := rep.Probe
	st := r.active[p.Target]
	ttl, a := int(p.TTL), int(p.Attempt)
	if st == nil || ttl < r.opt.FirstTTL || ttl > r.opt.MaxTTL || a >= r.opt.Queries {
		return nil // finished, not admitted, or not ours
	}
	i := r.slot(ttl, a)
	if !st.sent[i] || st.replies[i] != nil {
		return nil // not sent, or a duplicate: first answer wins
	}
	if rep.Kind == probe.KindPacketTooBig && st.slotSize != nil && r.tooBig(st, i, rep) {
		return nil // goes again, smaller
	}
	if ttl <= r.limit(st) {
		st.pending--
	}
	st.replies[i] = rep
	st.maxTTL = max(st.maxTTL, ttl)
	r.answers++
	r.timeout.Observe(rep.RTT)
	final := rep.Reached() || rep.Kind == probe.KindUnreachable
	if final && (st.dest == 0 || ttl < st.dest) {
		r.shrinkLimit(st, ttl)
		st.dest = ttl
		if rep.Reached() && !st.reached {
			r.reached++
		}
		st.reached = rep.Reached()
		r.queueExtra(st)
	}
	r.progress()
	return r.maybeFinish(st)
}

// tooBig takes a Packet Too Big answer to slot i: the target's probes shrink to the MTU
// the router reports (or the next plateau below the probe's size when it reports none
// or nonsense), and the probe goes again at that size. It reports false when the
// answer is to be recorded as the slot's reply instead: the probe was no bigger than
// the size already known, or it went again too often.
func (r *run) tooBig(st *target, i int, rep *Reply) bool {
	sent := st.slotSize[i]
	if sent == 0 || st.resends[i] >= maxResends {
		return false
	}
	m := int(rep.MTU)
	if m == 0 || m >= sent {
		m = 0
		for _, pl := range plateaus {
			if pl < sent {
				m = pl
				break
			}
		}
	}
	if m < minSize {
		return false
	}
	if st.size == 0 || m < st.size {
		st.size = m
		st.tooBig = rep
	}
	// Answered, as far as waiting goes; the same probe (ttl, attempt) goes again.
	p := rep.Probe
	if int(p.TTL) <= r.limit(st) {
		st.pending--
	}
	st.sent[i] = false
	st.resends[i]++
	r.push(st, Probe{Target: p.Target, TTL: p.TTL, Attempt: p.Attempt})
	return true
}

// maybeFinish finishes a target with nothing left to send or wait for.
func (r *run) maybeFinish(st *target) error {
	if st.extra && st.queued == 0 && st.pending == 0 && r.active[st.idx] == st {
		return r.finish(st)
	}
	return nil
}

// shrinkLimit stops waiting for the unanswered probes of a target past its new limit d.
func (r *run) shrinkLimit(st *target, d int) {
	for ttl := d + 1; ttl <= r.limit(st); ttl++ {
		for a := 0; a < r.opt.Queries; a++ {
			if i := r.slot(ttl, a); st.sent[i] && st.replies[i] == nil {
				st.pending--
			}
		}
	}
}

// queueExtra queues attempts 1..q-1 for every TTL up to the target's limit, once, and
// reports whether it queued anything.
func (r *run) queueExtra(st *target) bool {
	if st.extra {
		return false
	}
	st.extra = true
	limit := r.limit(st)
	queued := false
	for a := 1; a < r.opt.Queries; a++ {
		for ttl := r.opt.FirstTTL; ttl <= limit; ttl++ {
			r.push(st, Probe{Target: st.idx, TTL: uint8(ttl), Attempt: uint8(a)})
			queued = true
		}
	}
	return queued
}

func (r *run) limit(st *target) int {
	if st.dest != 0 {
		return st.dest
	}
	return r.opt.MaxTTL
}

// finish hands the target's Result over, forgets it and lets the next targets in.
func (r *run) finish(st *target) error {
	res := r.result(st)
	r.forget(st)
	if err := r.emit(res); err != nil {
		return err
	}
	return r.admit()
}

// forget drops a target from the window and releases it.
func (r *run) forget(st *target) {
	delete(r.active, st.idx)
	r.bySend.Remove(st.elem)
	r.eng.Release(st.idx)
}

// result is the target's Result as it stands.
func (r *run) result(st *target) Result {
	res := Result{Target: st.idx, Reached: st.reached, DestTTL: st.dest, Sent: st.sentN, Start: st.start, End: time.Now(),
		TooBig: st.tooBig}
	if r.opt.PMTU {
		res.PathMTU = st.size
	}
	last := st.dest
	if last == 0 { // unreached: show up to the last TTL that answered
		last = st.maxTTL
	}
	for ttl := r.opt.FirstTTL; ttl <= last; ttl++ {
		i := r.slot(ttl, 0)
		res.Hops = append(res.Hops, Hop{TTL: ttl, Replies: st.replies[i : i+r.opt.Queries : i+r.opt.Queries]})
	}
	return res
}

func (r *run) progress() {
	if r.opt.Progress == nil {
		return
	}
	r.opt.Progress(Progress{Sent: r.sentAll, Answered: r.answers, Targets: r.n, Reached: r.reached})
}

func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}
