package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/reflector"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/trace"
	"golang.org/x/sys/unix"
)

// CapacityOptions tune a capacity run.
type CapacityOptions struct {
	Engine  string  // "ebpf" or "socket"
	Probes  int     // probes to send (default 1,000,000)
	Rate    float64 // probes per second; 0 = as fast as the engine takes them
	Targets int     // distinct targets (flows), default 256; TTLs cycle 1..Depth per target
	IPv6    bool    // probe IPv6 targets instead of IPv4
	Payload string  // UDP payload (default "stun")
	// CPU is the core the whole process is pinned to for the run (GOMAXPROCS 1, every
	// thread's affinity), so the figures are "on one core"; -1 leaves scheduling alone.
	CPU int
	// Drain is how long to wait for answers after the last send (default 300 ms).
	Drain time.Duration
	// Batch > 0 sends that many probes per call through the engine's SendBatch (eBPF:
	// sendmmsg, replies drained in the sending loop); 0 calls Send per probe.
	Batch int
	// Baseline forces the eBPF engine's fallbacks, the path before batching: sendto per
	// probe and cilium's ringbuf.Reader goroutine (engine.Config NoBatch, NoNetpoll).
	Baseline bool
	// Send forces the batched send method (with Batch): "mmsg" (sendmmsg on the raw
	// sockets), "ring" (the AF_PACKET TX ring); "" the engine's choice (sendmmsg on
	// AF_PACKET where it can).
	Send string
}

// batchSender is the engines' batched send (engine.EBPF.SendBatch).
type batchSender interface {
	SendBatch([]trace.Probe) (int, error)
}

// CapacityResult is what a capacity run measured.
type CapacityResult struct {
	Engine  string `json:"engine"`
	Variant string `json:"variant,omitempty"` // "batch", "baseline", "" (Send per probe)
	Methods string `json:"methods,omitempty"` // how the engine sent and received
	Probes  int    `json:"probes"`
	Targets int    `json:"targets"`
	Depth   int    `json:"depth"`
	CPU     int    `json:"cpu"` // -1: not pinned
	// Sent probes (Send returned nil), Matched replies delivered by the engine's Replies
	// channel, Lost = Sent - Matched, Answered by the reflector (its XDP counters).
	Sent     int64  `json:"sent"`
	Matched  int64  `json:"matched"`
	Lost     int64  `json:"lost"`
	Answered uint64 `json:"answered"`
	// Kernel counts the matched replies whose RTT comes from two kernel timestamps
	// (eBPF: TC egress and XDP); the others fell back to a Go-side send time.
	Kernel   int64 `json:"kernel_timestamps"`
	SendErrs int64 `json:"send_errors"`
	// Seconds from the first send to the last send; MatchSeconds from the first send to
	// the last reply.
	Seconds      float64 `json:"seconds"`
	MatchSeconds float64 `json:"match_seconds"`
	SentPerSec   float64 `json:"sent_per_sec"`
	MatchPerSec  float64 `json:"matched_per_sec"`
	// CPU time of this process over the run (getrusage: every thread; softirq work done
	// in our threads' context is included unless the kernel accounts IRQ time apart).
	CPUSecondsUser float64 `json:"cpu_seconds_user"`
	CPUSecondsSys  float64 `json:"cpu_seconds_sys"`
	// The pinned core's busy time (/proc/stat: everything but idle and iowait) and the
	// softirq part of it. On that core run our threads, the veth transmit and, in
	// softirq, both XDP programs (the reflector's too: the "network" costs CPU here).
	CoreBusySeconds    float64 `json:"core_busy_seconds"`
	CoreSoftirqSeconds float64 `json:"core_softirq_seconds"`
	NSPerProbe         float64 `json:"ns_per_probe"` // core busy (or user+sys unpinned) / sent
	// Send is what the engine's sender counted (eBPF): probes per method, system calls.
	Send *hostnet.SendStats `json:"send,omitempty"`
}

func (o *CapacityOptions) defaults() error {
	if o.Engine != "ebpf" && o.Engine != "socket" {
		return fmt.Errorf("bench: capacity: engine %q (ebpf, socket)", o.Engine)
	}
	if o.Probes <= 0 {
		o.Probes = 1_000_000
	}
	if o.Targets <= 0 {
		o.Targets = 256
	}
	if o.Payload == "" {
		o.Payload = "stun"
	}
	if o.Drain <= 0 {
		o.Drain = 300 * time.Millisecond
	}
	switch o.Send {
	case "", "mmsg", "ring", "gen":
	default:
		return fmt.Errorf("bench: capacity: send method %q (mmsg, ring, gen, or empty)", o.Send)
	}
	if o.CPU >= runtime.NumCPU() {
		return fmt.Errorf("bench: capacity: no CPU %d", o.CPU)
	}
	return nil
}

// Capacity drives a turnpath engine directly (trace.Engine Send and Replies, no
// scheduler) through the reflector network n as fast as it can, or at opts.Rate, and
// counts what comes back. The probes cycle over Targets targets, TTL 1..Depth and attempts 0..253, so
// every probe is answered (Depth-1 Time Exceeded, then the destination) and ids repeat
// only after Targets*Depth*254 probes. One goroutine sends and yields every 64 probes;
// another drains Replies. With CPU >= 0 the process runs on that core alone for the run
// (GOMAXPROCS and affinity are restored afterwards): do not run other work in the
// process meanwhile.
func Capacity(ctx context.Context, n *reflector.Net, opts CapacityOptions) (CapacityResult, error) {
	if err := opts.defaults(); err != nil {
		return CapacityResult{}, err
	}
	res := CapacityResult{Engine: opts.Engine, Probes: opts.Probes, Targets: opts.Targets, Depth: n.Depth(), CPU: opts.CPU}
	payload, err := probe.ParsePayload(opts.Payload)
	if err != nil {
		return res, err
	}
	flows := make([]probe.Flow, opts.Targets)
	for i := range flows {
		dst := reflector.Target(i, opts.IPv6)
		flows[i] = probe.Flow{Src: n.Source(dst), Dst: dst, Proto: probe.ProtoUDP, SPort: 50000, DPort: 3478}
	}
	if err := n.UseEngine(opts.Engine); err != nil {
		return res, err
	}
	cfg := engine.Config{Flows: flows, Payload: payload, Nonce: 0xca9ac17e, Ifindexes: []int{n.Ifindex()},
		Timeout: 2 * time.Second, NoBatch: opts.Baseline, NoNetpoll: opts.Baseline,
		NoPacket: opts.Send == "mmsg", Ring: opts.Send == "ring", Generator: opts.Send == "gen"}
	switch {
	case opts.Baseline:
		res.Variant = "baseline"
	case opts.Batch > 0:
		res.Variant = "batch"
	}
	var eng trace.Engine
	if err := n.Do(func() error {
		var err error
		eng, _, err = session.OpenEngine(opts.Engine, cfg)
		return err
	}); err != nil {
		return res, fmt.Errorf("bench: capacity: %s engine: %w", opts.Engine, err)
	}
	defer eng.Close()
	var batcher batchSender
	if opts.Batch > 0 {
		b, ok := eng.(batchSender)
		if !ok {
			return res, fmt.Errorf("bench: capacity: the %s engine cannot send in batches", opts.Engine)
		}
		batcher = b
	}
	if m, ok := eng.(interface{ Methods() (string, string) }); ok {
		send, recv := m.Methods()
		if batcher == nil {
			send = hostnet.SendTo
		}
		res.Methods = send + "; " + recv
	}
	before, err := n.Stats()
	if err != nil {
		return res, err
	}

	if opts.CPU >= 0 {
		restore, err := pinProcess(opts.CPU)
		if err != nil {
			return res, err
		}
		defer restore()
	}

	var matched, kernel atomic.Int64
	var lastReply atomic.Int64 // UnixNano
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case r := <-eng.Replies():
				matched.Add(1)
				if r.Kernel {
					kernel.Add(1)
				}
				// The time of the last reply: read when the channel is empty, which it is
				// after the last one (a clock read per reply costs more than a match here).
				if len(eng.Replies()) == 0 {
					lastReply.Store(time.Now().UnixNano())
				}
			case <-stop:
				return
			}
		}
	}()

	cpu0, err := readCPU(opts.CPU)
	if err != nil {
		return res, err
	}
	var ru0 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	var interval time.Duration
	if opts.Rate > 0 {
		interval = time.Duration(float64(time.Second) / opts.Rate)
	}
	depth := n.Depth()
	var sendErr error
	probeAt := func(i int) trace.Probe {
		return trace.Probe{Target: i % opts.Targets, TTL: uint8(1 + (i/opts.Targets)%depth),
			Attempt: uint8((i / (opts.Targets * depth)) % 254)}
	}
	if batcher != nil {
		batch := make([]trace.Probe, 0, opts.Batch)
		for i := 0; i < opts.Probes; {
			if ctx.Err() != nil {
				break
			}
			if interval > 0 {
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					time.Sleep(wait)
				}
			}
			batch = batch[:0]
			for ; i < opts.Probes && len(batch) < opts.Batch; i++ {
				batch = append(batch, probeAt(i))
			}
			sent, err := batcher.SendBatch(batch)
			res.Sent += int64(sent)
			if err != nil {
				res.SendErrs += int64(len(batch) - sent)
				sendErr = err
			}
			// Let the goroutine counting replies run (one P).
			runtime.Gosched()
		}
	}
	for i := 0; batcher == nil && i < opts.Probes; i++ {
		if i&63 == 63 {
			if ctx.Err() != nil {
				break
			}
			runtime.Gosched()
		}
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		}
		if err := eng.Send(probeAt(i)); err != nil {
			res.SendErrs++
			sendErr = err
			continue
		}
		res.Sent++
	}
	lastSend := time.Now()
	// Drain: until Drain has passed without a reply (or everything is in).
	for {
		last := time.Unix(0, lastReply.Load())
		if matched.Load() >= res.Sent || time.Since(last) > opts.Drain && time.Since(lastSend) > opts.Drain {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu1, err := readCPU(opts.CPU)
	if err != nil {
		return res, err
	}
	close(stop)
	<-done

	res.Matched = matched.Load()
	res.Kernel = kernel.Load()
	res.Lost = res.Sent - res.Matched
	res.Seconds = lastSend.Sub(start).Seconds()
	res.MatchSeconds = time.Unix(0, lastReply.Load()).Sub(start).Seconds()
	if res.Seconds > 0 {
		res.SentPerSec = float64(res.Sent) / res.Seconds
	}
	if res.MatchSeconds > 0 {
		res.MatchPerSec = float64(res.Matched) / res.MatchSeconds
	}
	res.CPUSecondsUser = tv(ru1.Utime) - tv(ru0.Utime)
	res.CPUSecondsSys = tv(ru1.Stime) - tv(ru0.Stime)
	if opts.CPU >= 0 {
		res.CoreBusySeconds = cpu1.busy - cpu0.busy
		res.CoreSoftirqSeconds = cpu1.softirq - cpu0.softirq
	}
	if res.Sent > 0 {
		busy := res.CoreBusySeconds
		if opts.CPU < 0 {
			busy = res.CPUSecondsUser + res.CPUSecondsSys
		}
		res.NSPerProbe = busy * 1e9 / float64(res.Sent)
	}
	if st, ok := eng.(interface{ SendStats() hostnet.SendStats }); ok {
		ss := st.SendStats()
		res.Send = &ss
	}
	after, err := n.Stats()
	if err == nil {
		res.Answered = after.Answered() - before.Answered()
	}
	if res.Sent == 0 && sendErr != nil {
		return res, fmt.Errorf("bench: capacity: send: %w", sendErr)
	}
	return res, ctx.Err()
}

func tv(t unix.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// pinProcess runs the process on one core: GOMAXPROCS 1 and every thread's affinity set
// to cpu (threads made later inherit it). It returns a function that undoes both.
func pinProcess(cpu int) (func(), error) {
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return nil, fmt.Errorf("bench: get affinity: %w", err)
	}
	one.Set(cpu)
	prev := runtime.GOMAXPROCS(1)
	setAll := func(set *unix.CPUSet) error {
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		var errs []error
		for _, t := range tids {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if err := setAll(&one); err != nil {
		_ = setAll(&all)
		runtime.GOMAXPROCS(prev)
		return nil, fmt.Errorf("bench: pin to CPU %d: %w", cpu, err)
	}
	return func() {
		_ = setAll(&all)
		runtime.GOMAXPROCS(prev)
	}, nil
}

type cpuTimes struct{ busy, softirq float64 }

// readCPU reads the busy and softirq seconds of one CPU from /proc/stat (zero for cpu < 0).
func readCPU(cpu int) (cpuTimes, error) {
	if cpu < 0 {
		return cpuTimes{}, nil
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("bench: read /proc/stat: %w", err)
	}
	want := "cpu" + strconv.Itoa(cpu) + " "
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, want) {
			continue
		}
		f := strings.Fields(line)[1:]
		var total, idle, softirq float64
		for i, s := range f {
			v, _ := strconv.ParseFloat(s, 64)
			v /= 100 // USER_HZ
			switch i {
			case 3, 4: // idle, iowait
				idle += v
			case 6:
				softirq = v
			}
			if i < 8 { // user..steal; guest time is already in user
				total += v
			}
		}
		return cpuTimes{busy: total - idle, softirq: softirq}, nil
	}
	return cpuTimes{}, fmt.Errorf("bench: no %q in /proc/stat", strings.TrimSpace(want))
}
