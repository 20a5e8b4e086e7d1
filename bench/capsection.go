package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/reflector"
)

// Capacity: the engine driven directly (trace.Engine, no scheduler), as fast as it takes
// probes, with the whole process on one core: the batched eBPF path, the path before it
// (the baseline, measured in the same rounds) and the socket engine.
const (
	capProbes  = 600_000 // probes per run
	capRounds  = 5       // rounds; each runs every variant, in rotating order
	capTargets = 256     // distinct targets (flows), TTLs 1..capDepth each
	capDepth   = 8       // the reflector's destination hop
	capTarget  = 1e6     // the goal, probes per second with the eBPF engine
	capBatch   = 256     // probes per SendBatch call
)

// capVariant is one way of driving an engine.
type capVariant struct {
	Key, Engine, Name string
	Batch             int    // CapacityOptions.Batch
	Baseline          bool   // CapacityOptions.Baseline
	Send              string // CapacityOptions.Send
}

var capEngines = []capVariant{
	{Key: "ebpf-gen", Engine: "ebpf", Name: "eBPF, in-kernel generator", Batch: capBatch, Send: "gen"},
	{Key: "ebpf", Engine: "ebpf", Name: "eBPF, AF_PACKET batches", Batch: capBatch},
	{Key: "ebpf-ring", Engine: "ebpf", Name: "eBPF, AF_PACKET TX ring", Batch: capBatch, Send: "ring"},
	{Key: "ebpf-mmsg", Engine: "ebpf", Name: "eBPF, raw sendmmsg (baseline: the path before)", Batch: capBatch, Send: "mmsg"},
	{Key: "ebpf-before", Engine: "ebpf", Name: "eBPF, sendto per probe (the first fallback)", Baseline: true},
	{Key: "socket", Engine: "socket", Name: "socket"},
}

func (v capVariant) opts(probes, cpu int) CapacityOptions {
	return CapacityOptions{Engine: v.Engine, Probes: probes, Targets: capTargets, CPU: cpu, Batch: v.Batch,
		Baseline: v.Baseline, Send: v.Send}
}

// capRun is one capacity run.
type capRun struct {
	Round   int    `json:"round"`
	Variant string `json:"key"`
	CapacityResult
	// StealSeconds is the pinned core's steal time over the run (/proc/stat: the
	// hypervisor ran something else); CoreBusySeconds includes it.
	StealSeconds float64 `json:"steal_seconds"`
	Error        string  `json:"error,omitempty"`
}

type capRaw struct {
	Probes  int      `json:"probes_per_run"`
	Targets int      `json:"targets"`
	Depth   int      `json:"depth"`
	CPU     int      `json:"cpu"`
	Rounds  int      `json:"rounds"`
	Batch   int      `json:"batch"`
	Runs    []capRun `json:"runs"`
	// Profiles are the perf shares (percent of the core's samples) by variant and row.
	Profiles map[string]map[string]float64 `json:"profiles,omitempty"`
}

// CapacityCPU is the core capacity runs are pinned to: the last one (on a 2-core machine, the
// one that is not CPU 0).
func CapacityCPU() int { return runtime.NumCPU() - 1 }

func runCapacity(ctx context.Context, env *Env) (*Result, error) {
	probes, rounds := env.Runs(capProbes, 100_000), env.Runs(capRounds, 1)
	cpu := CapacityCPU()
	res := &Result{Text: []string{
		fmt.Sprintf("Probes per second turnpath's engines send and match against the reflector: `bpf/reflector.c`, an XDP "+
			"program on the far end of a veth that answers every probe with a well-formed ICMP Time Exceeded (XDP_TX), or "+
			"with the destination's answer at hop %d, so that nothing but turnpath and the kernel limits the rate. "+
			"Each run drives one engine directly (`trace.Engine`, no scheduler, no report) with **%s probes, unpaced**, "+
			"cycling over %d targets × TTL 1..%d × attempts, so every probe has an answer. Six ways: **eBPF, in-kernel "+
			"generator** — `SendBatch` builds the frames into a memory-mapped BPF array and one `BPF_PROG_RUN` with "+
			"`BPF_F_TEST_XDP_LIVE_FRAMES` sends the batch: the program copies each frame, writes its send time into `sent` "+
			"(the frames pass no TC egress: the generator timestamps them) and returns XDP_TX, a transmit on the probing "+
			"interface; its program is kept attached to an idle veth in a private network namespace so that a run costs "+
			"no rewrite of kernel text, and the interface's XDP transmit counter tells how many frames left; **eBPF, AF_PACKET "+
			"batches** (the default) — %d probes per `SendBatch` in every batched way; here the probes behind the next hop's Ethernet header, "+
			"one `sendmmsg` on an AF_PACKET socket (no routing, raw socket or IP output per probe; the device's queue and "+
			"so TC egress kept: every probe timestamped there); **eBPF, AF_PACKET TX ring** — the same frames in a "+
			"`PACKET_TX_RING` (TPACKET_V2), one `send` per batch; **eBPF, raw sendmmsg** — the path before, measured as "+
			"the baseline in the same rounds: one `sendmmsg` on the raw socket per batch; in all four the replies are read "+
			"from the ring buffer's mapped pages in the sending loop and, between batches, by a reader polling every 0.5 ms "+
			"while the kernel writes events without waking anyone (`BPF_RB_NO_WAKEUP`); **eBPF, sendto** — the first "+
			"fallback: `Send` per probe, one goroutine reading one event per wakeup through cilium/ebpf's `ringbuf.Reader`; "+
			"**socket** — the socket engine, `Send` per probe. The whole process runs on **one core** (CPU %d: GOMAXPROCS 1 "+
			"and every thread's affinity), and so do, in softirq, the veth and both XDP programs: the figures are one core "+
			"doing the prober's *and* the network's work. %s, each running every way in rotating order; the figures are "+
			"the median over rounds with (min–max). This machine is shared (another engineer's lab tests ran meanwhile): "+
			"other processes run on the core too, *core busy* counts their time as well, and the absolute figures are "+
			"noisy; the same-round ratios are the comparison.",
			capDepth, group(probes), capTargets, capDepth, capBatch, cpu, plural(rounds, "round")),
		"*sent/s*: probes sent / time from the first send to the last; *matched/s*: replies the engine " +
			"delivered and matched / time from the first send to the last reply; *kernel timestamps*: share of the matched " +
			"replies whose RTT is the difference of two kernel timestamps (TC egress, XDP; the socket engine takes the send " +
			"time in Go); *lost*: sent − matched; *core busy*: share of the run the pinned core was not idle " +
			"(`/proc/stat`), *of which steal* the time this virtual machine's hypervisor ran something else on it; " +
			"*CPU per probe*: that busy time / probes sent, of which *softirq* is the kernel's receive side " +
			"(veth, XDP programs, the IP stack on the way in); *user / sys* are turnpath's own threads (`getrusage`).",
	}}
	n, down, err := env.reflectorUp(ctx, "cap", capDepth)
	if err != nil {
		return res, err
	}
	defer down()
	raw := capRaw{Probes: probes, Targets: capTargets, Depth: capDepth, CPU: cpu, Rounds: rounds, Batch: capBatch}
	// A short unmeasured run each first: BPF objects (pinned after the first) and page cache warm.
	for _, v := range capEngines {
		if _, err := Capacity(ctx, n, v.opts(20_000, cpu)); err != nil {
			return res, fmt.Errorf("warm-up %s: %w", v.Name, err)
		}
	}
	for r := range rounds {
		for k := range capEngines {
			v := capEngines[(r+k)%len(capEngines)]
			steal0 := stealSeconds(cpu)
			c, err := Capacity(ctx, n, v.opts(probes, cpu))
			run := capRun{Round: r, Variant: v.Key, CapacityResult: c, StealSeconds: stealSeconds(cpu) - steal0}
			if err != nil {
				run.Error = err.Error()
			}
			raw.Runs = append(raw.Runs, run)
			env.Logf("capacity %-12s round %d: sent %d in %.2fs = %.0f/s, matched %.0f/s, lost %d, %.0f ns/probe (softirq %.0f %%, steal %.2fs) %s",
				v.Key, r+1, c.Sent, c.Seconds, c.SentPerSec, c.MatchPerSec, c.Lost, c.NSPerProbe,
				100*c.CoreSoftirqSeconds/max(c.CoreBusySeconds, 1e-9), run.StealSeconds, run.Error)
			if ctx.Err() != nil {
				res.Raw = raw
				return res, ctx.Err()
			}
		}
	}

	type series struct{ sent, matched, lostPct, kernel, busy, steal, ns, softirq, user, sys []float64 }
	by := map[string]*series{}
	perRound := map[string][]float64{} // sent/s by variant, indexed by round (NaN: failed)
	methods := map[string]string{}
	for _, v := range capEngines {
		by[v.Key] = &series{}
		perRound[v.Key] = make([]float64, rounds)
		for i := range perRound[v.Key] {
			perRound[v.Key][i] = nan
		}
	}
	for _, r := range raw.Runs {
		if r.Error != "" {
			res.Notes = append(res.Notes, fmt.Sprintf("%s, round %d: %s", r.Variant, r.Round+1, r.Error))
			continue
		}
		s := by[r.Variant]
		if s == nil || r.Sent == 0 {
			continue
		}
		methods[r.Variant] = r.Methods
		sent := float64(r.Sent)
		s.sent = append(s.sent, r.SentPerSec)
		s.matched = append(s.matched, r.MatchPerSec)
		s.lostPct = append(s.lostPct, 100*float64(r.Lost)/sent)
		if r.Matched > 0 {
			s.kernel = append(s.kernel, float64(r.Kernel)/float64(r.Matched))
		}
		s.ns = append(s.ns, r.NSPerProbe)
		if r.MatchSeconds > 0 {
			s.busy = append(s.busy, min(1, r.CoreBusySeconds/r.MatchSeconds))
			s.steal = append(s.steal, min(1, r.StealSeconds/r.MatchSeconds))
		}
		s.softirq = append(s.softirq, r.CoreSoftirqSeconds*1e9/sent)
		s.user = append(s.user, r.CPUSecondsUser*1e9/sent)
		s.sys = append(s.sys, r.CPUSecondsSys*1e9/sent)
		perRound[r.Variant][r.Round] = r.SentPerSec
	}
	t := Table{Columns: []string{"engine", "how it sends and receives", "sent/s", "matched/s", "lost", "kernel timestamps", "core busy",
		"of which steal", "CPU per probe", "of which softirq", "turnpath user / sys per probe", "runs"}}
	for _, v := range capEngines {
		s := by[v.Key]
		t.Rows = append(t.Rows, []string{v.Name, methods[v.Key], kilo(Summarize(s.sent)), kilo(Summarize(s.matched)),
			Summarize(s.lostPct).Format("%.2f", " %"), Summarize(s.kernel).Percent(), Summarize(s.busy).Percent(), Summarize(s.steal).Percent(), micro(Summarize(s.ns)), micro(Summarize(s.softirq)),
			fmt.Sprintf("%.1f / %.1f µs", Summarize(s.user).Median/1000, Summarize(s.sys).Median/1000), strconv.Itoa(len(s.sent))})
	}
	res.Tables = append(res.Tables, t)
	ratio := func(a, b string) Summary { return Summarize(Ratios(perRound[a], perRound[b])) }
	genBefore, genPacket := ratio("ebpf-gen", "ebpf-mmsg"), ratio("ebpf-gen", "ebpf")
	before, first := ratio("ebpf", "ebpf-mmsg"), ratio("ebpf", "ebpf-before")
	ring, vsSocket := ratio("ebpf-ring", "ebpf"), ratio("ebpf", "socket")
	if before.N > 0 {
		res.Tables = append(res.Tables, Table{Title: "Same-round ratios (sent/s):",
			Columns: []string{"generator / raw sendmmsg (the path before)", "generator / AF_PACKET", "AF_PACKET / raw sendmmsg",
				"AF_PACKET / sendto per probe", "TX ring / AF_PACKET sendmmsg", "AF_PACKET / socket engine"},
			Rows: [][]string{{genBefore.Times(), genPacket.Times(), before.Times(), first.Times(), ring.Times(), vsSocket.Times()}}})
	}

	prof := capProfiles(ctx, env, n, cpu, res)
	raw.Profiles = prof

	if eb, pk := by["ebpf-gen"], by["ebpf"]; len(eb.sent) > 0 && len(pk.sent) > 0 {
		es, ps := Summarize(eb.sent), Summarize(pk.sent)
		// Of the target, rounded down: 99.96 % must not read 100 % next to "not reached".
		share := math.Floor(1000*es.Median/capTarget) / 10
		verdict := "**not reached**"
		if es.Median >= capTarget && Summarize(eb.lostPct).Max == 0 && Summarize(eb.kernel).Min == 1 {
			verdict = "**reached**"
		}
		nsProbe := Summarize(eb.ns).Median
		sat := Summary{N: 1, Median: 1e9 / nsProbe, Min: 1e9 / nsProbe, Max: 1e9 / nsProbe}
		target := fmt.Sprintf("Target ≥ 1 M probes/s sent and matched with the eBPF engine on one core, 0 lost, a kernel "+
			"timestamp on every matched probe: %s with the in-kernel generator — %s probes/s (%.1f %%; lost %s, kernel timestamps %s), "+
			"%s the path before (raw sendmmsg) and %s AF_PACKET in the same rounds. The default send method, AF_PACKET "+
			"batches (the generator is asked for with `TURNPATH_SEND=gen`: it runs only where the interface counts its XDP "+
			"transmits and its peer takes XDP frames — a veth with XDP or GRO on its other end, as here), sends %s probes/s, "+
			"%s the path before and %s sendto per probe.",
			verdict, kilo(es), share, Summarize(eb.lostPct).Format("%.2f", " %"), Summarize(eb.kernel).Percent(),
			genBefore.Times(), genPacket.Times(), kilo(ps), before.Times(), first.Times())
		reason := fmt.Sprintf("What remains with the generator: %.1f µs of core time per probe (busy time / probes, other "+
			"processes on the core included), so a saturated core would send about %s probes/s.", nsProbe/1000, kilo(sat))
		if p := prof["ebpf-gen"]; p != nil {
			reason += fmt.Sprintf(" Its profile below: the generator runs (`BPF_PROG_RUN`) take %.0f %% of the core — "+
				"the generator program itself %.0f %% (copying each frame, the send timestamp into `sent`), and, between its "+
				"batches of 64, the receive side in softirq %.0f %% (the reflector's XDP_TX — the network's work, here on the "+
				"prober's core — and the prober's XDP match, %.0f %%); no skb, qdisc or TC on the way out. Go takes the rest: "+
				"reading and converting replies %.0f %%, building the frames %.1f %%, the route and neighbour cache %.1f %%.",
				p["gen"], p["genprog"], p["softirq"], p["xdp"], p["read"], p["build"], p["l2"])
		}
		if p := prof["ebpf"]; p != nil {
			reason += fmt.Sprintf(" With AF_PACKET the send system calls take %.0f %%: the socket's own part (`packet_sendmsg`: "+
				"an skb per frame, straight to the device's queue, no routing or IP output) and inside it the TC egress "+
				"program (%.0f %%) and the receive side (%.0f %%, of which veth copying each frame for XDP %.0f %%).",
				p["sendto"], p["tc"], p["softirq"], p["cow"])
		}
		reason += " The TX ring is no faster than sendmmsg on AF_PACKET here: its frames reach the veth as page " +
			"fragments, which veth copies again for XDP (`skb_copy_ubufs`); a NIC could take them as they are."
		res.Text = slices.Insert(res.Text, 1, target, reason)
		ss := Summarize(by["socket"].sent)
		bs := Summarize(by["ebpf-mmsg"].sent)
		res.Headlines = append(res.Headlines, fmt.Sprintf("Capacity on one core, against the XDP reflector (%s probes per run, unpaced): "+
			"eBPF engine with the in-kernel generator (`TURNPATH_SEND=gen`) **%s probes/s sent**, %s matched/s, lost %s, "+
			"%s of core time per probe; with AF_PACKET batches (the default) %s — %s and %s the path before (raw sendmmsg, %s "+
			"sent/s in the same rounds); socket engine %s sent/s. Target ≥ 1 M probes/s with eBPF on one core: %s (%.1f %%).",
			group(probes), kilo(es), kilo(Summarize(eb.matched)), Summarize(eb.lostPct).Format("%.2f", " %"), micro(Summarize(eb.ns)),
			kilo(ps), genBefore.Times(), before.Times(), kilo(bs), kilo(ss), verdict, share))
	}
	res.Raw = raw
	res.Commands = append([]string{
		fmt.Sprintf("tpbench capacity -engine ebpf -batch %d -send gen -probes %d -cpu %d     # the in-kernel generator; one run on its own reflector network (namespaces tpcap-*, -prefix), JSON out", capBatch, probes, cpu),
		fmt.Sprintf("tpbench capacity -engine ebpf -batch %d -probes %d -cpu %d     # AF_PACKET batches (the default)", capBatch, probes, cpu),
		fmt.Sprintf("tpbench capacity -engine ebpf -batch %d -send ring -probes %d -cpu %d     # the TX ring", capBatch, probes, cpu),
		fmt.Sprintf("tpbench capacity -engine ebpf -batch %d -send mmsg -probes %d -cpu %d     # the path before: raw sendmmsg", capBatch, probes, cpu),
		fmt.Sprintf("tpbench capacity -engine ebpf -baseline -probes %d -cpu %d     # sendto per probe", probes, cpu),
		fmt.Sprintf("tpbench capacity -engine socket -probes %d -cpu %d", probes, cpu),
		fmt.Sprintf("TP_CAPACITY_PROBES=%d TP_CAPACITY_CPU=%d go test -count=1 -run TestCapacity -v ./bench/   # every way, as a test", probes, cpu),
	}, res.Commands...)
	return res, nil
}

// The profile: one more run per variant while perf samples the pinned core.
const (
	profProbes  = 500_000
	profDelayMS = 1000 // past the engine's setup
	profSeconds = 3
)

// profRows are what the profile table shows: a key, a label and the symbols whose
// inclusive share (perf --children) make the row.
var profRows = []struct {
	Key, Label string
	Match      func(sym string) bool
}{
	{"gen", "generator runs (`BPF_PROG_RUN` with live frames, one per batch: the program, XDP transmit and what runs between its batches)",
		symIs("bpf_prog_test_run_xdp")},
	{"genprog", "↳ the generator program (copy the frame, the send timestamp into `sent`)", symSuffix("_xdp_gen")},
	{"sendto", "send system calls (`sendto` per probe or TX ring flush, or `sendmmsg` per batch: the socket, TC egress, veth transmit and what runs inside it)",
		symIs("__sys_sendto", "__sys_sendmmsg")},
	{"raw", "↳ raw socket: routing, IP output (`raw_sendmsg`)", symIs("raw_sendmsg")},
	{"packet", "↳ AF_PACKET (`packet_sendmsg`: an skb per frame, to the device's queue)", symIs("packet_sendmsg")},
	{"tc", "↳ TC egress program (eBPF: the send timestamp into `sent`)", symSuffix("_tcx_egress")},
	{"softirq", "↳ receive side in softirq (`net_rx_action`: veth, both XDP programs, IP input; mostly run inside the send calls)", symIs("net_rx_action")},
	{"cow", "↳↳ veth copying each frame for XDP (`skb_pp_cow_data`)", symIs("skb_pp_cow_data")},
	{"xdp", "↳↳ prober's XDP program (eBPF: match, ring-buffer output and its wakeup)", symSuffix("_xdp_rx")},
	{"wakeup", "↳↳↳ of which waking the reader (irq_work self-interrupt: a write to the APIC)", symIs("irq_work_queue")},
	{"reflector", "↳↳ reflector's XDP program (the network's work)", symSuffix("_xdp_reflect")},
	{"read", "Go: reading and converting replies (eBPF: ring buffer; socket: `recvmsg` loop and parsing)",
		symIs("github.com/cilium/ebpf/ringbuf.(*Reader).ReadInto", "github.com/turnpath/turnpath/engine.(*Socket).recvLoop",
			"github.com/turnpath/turnpath/loader.(*EventReader).Drain", "github.com/turnpath/turnpath/engine.(*EBPF).readLoop")},
	{"build", "Go: building probes", symIs("github.com/turnpath/turnpath/probe.(*Builder).Build")},
	{"l2", "Go: the route and neighbour cache (AF_PACKET)", symIs("github.com/turnpath/turnpath/hostnet.(*l2Cache).get")},
	{"matcher", "Go: registering probes for matching (socket engine)", symIs("github.com/turnpath/turnpath/probe.(*Matcher).Add")},
	{"schedule", "scheduler (`__schedule`: threads blocking and waking)", symIs("__schedule")},
}

func symIs(names ...string) func(string) bool {
	return func(s string) bool { return slices.Contains(names, s) }
}

func symSuffix(suf string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, "bpf_prog_") && strings.HasSuffix(s, suf) }
}

// capProfiles runs one capacity run per variant under `perf record` on the pinned core
// and adds the breakdown table (and its commands) to res. It returns the shares in
// percent by variant and row key; nil when perf is missing or fails (a note says why).
func capProfiles(ctx context.Context, env *Env, n *reflector.Net, cpu int, res *Result) map[string]map[string]float64 {
	if !Have("perf") {
		res.Notes = append(res.Notes, "No CPU profile: `perf` is not installed (Debian: linux-perf).")
		return nil
	}
	out := map[string]map[string]float64{}
	var recArgv, repArgv []string
	probes, secs := env.Runs(profProbes, 300_000), env.Runs(profSeconds, 1)
	var nsamples []string
	for _, v := range capEngines {
		data := filepath.Join(env.Dir, "capacity-"+v.Key+".perf")
		recArgv = []string{"perf", "record", "-q", "-g", "-C", strconv.Itoa(cpu), "-D", strconv.Itoa(profDelayMS), "-o", data,
			"--", "sleep", strconv.Itoa(profDelayMS/1000 + secs)} // perf counts the delay in the workload's time
		if other := (cpu + 1) % runtime.NumCPU(); other != cpu && Have("taskset") {
			recArgv = append([]string{"taskset", "-c", strconv.Itoa(other)}, recArgv...) // perf itself off the measured core
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rec := exec.CommandContext(pctx, recArgv[0], recArgv[1:]...)
		var stderr strings.Builder
		rec.Stderr = &stderr
		err := rec.Start()
		if err == nil {
			// Enough probes to outlast perf's window whatever the rate; the run stops
			// when perf is done.
			runCtx, stop := context.WithCancel(ctx)
			werrc := make(chan error, 1)
			go func() { werrc <- rec.Wait(); stop() }()
			var c CapacityResult
			c, err = Capacity(runCtx, n, v.opts(probes*10, cpu))
			if errors.Is(err, context.Canceled) && ctx.Err() == nil {
				err = nil
			}
			if werr := <-werrc; err == nil && werr != nil {
				err = fmt.Errorf("perf record: %w: %s", werr, oneLine(stderr.String()))
			}
			stop()
			env.Logf("capacity %-12s profiled run: %.0f/s sent", v.Key, c.SentPerSec)
		}
		cancel()
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("No CPU profile for %s: %v", v.Name, err))
			return nil
		}
		repArgv = []string{"perf", "report", "-i", data, "--children", "--sort", "sym", "-g", "none", "--stdio"}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		rep, err := exec.CommandContext(rctx, repArgv[0], repArgv[1:]...).Output()
		cancel()
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("No CPU profile for %s: perf report: %v", v.Name, err))
			return nil
		}
		shares, samples := profileShares(rep)
		if samples < 100*secs {
			res.Notes = append(res.Notes, fmt.Sprintf("No CPU profile for %s: perf took %d samples in %d s", v.Name, samples, secs))
			return nil
		}
		out[v.Key] = shares
		nsamples = append(nsamples, fmt.Sprintf("%s ~%d", v.Name, samples))
	}
	cols := []string{""}
	for _, v := range capEngines {
		cols = append(cols, v.Name)
	}
	t := Table{Title: fmt.Sprintf("Where the core's time goes: one more unpaced run per way while `perf record` "+
		"samples CPU %d for %d s (%s samples); share of the samples in each function and everything it calls (perf's cpu-clock samples the busy core: the "+
		"idle periods draw none here; other processes on the core draw their share; rows overlap: a row marked ↳ runs, mostly, inside the one above it):",
		cpu, secs, strings.Join(nsamples, ", ")),
		Columns: cols}
	for _, r := range profRows {
		row := []string{r.Label}
		for _, v := range capEngines {
			if x := out[v.Key][r.Key]; x > 0 {
				row = append(row, fmt.Sprintf("%.1f %%", x))
			} else {
				row = append(row, "–")
			}
		}
		t.Rows = append(t.Rows, row)
	}
	res.Tables = append(res.Tables, t)
	show := func(argv []string) string {
		return strings.ReplaceAll(env.display(argv), "capacity-"+capEngines[len(capEngines)-1].Key+".perf", "capacity-WAY.perf")
	}
	res.Commands = append(res.Commands, show(recArgv)+"   # while a capacity run is on CPU "+strconv.Itoa(cpu), show(repArgv))
	return out
}
