package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// Section 3: timestamp accuracy. Every probe's RTT as turnpath reports it, against the
// RTT the wire saw: tcpdump on the client's interface, in the client namespace,
// nanosecond timestamps. Probe and reply are paired in the capture by the probe id
// (UDP checksum; the quoted one in ICMP errors; the transaction id in STUN answers).

const (
	tsTargets = 8    // 198.19.1.1 .. 198.19.1.8 (t1: Time Exceeded from 8 routers, STUN from coturn)
	tsMaxTTL  = 10   // every hop and the relay
	tsQueries = 6    // probes per hop
	tsRate    = 2000 // probes per second
	tsSPort   = 50000
	tsDPort   = 3478
)

// tsRun is one capture.
type tsRun struct {
	Engine   string  `json:"engine"`
	Load     string  `json:"load"`
	Round    int     `json:"round"`
	Reported int     `json:"reported"` // answered probes with an RTT
	Matched  int     `json:"matched"`  // of those, found with their reply in the capture
	Dropped  int     `json:"capture_dropped"`
	MedianUS float64 `json:"median_abs_error_us"`
	P99US    float64 `json:"p99_abs_error_us"`
	BiasUS   float64 `json:"median_error_us"` // signed: reported - capture
	// ErrorsNs are reported - capture RTT of every matched probe.
	ErrorsNs []int64 `json:"errors_ns"`
	Error    string  `json:"error,omitempty"`
}

func runTimestamps(ctx context.Context, env *Env) (*Result, error) {
	res := &Result{Text: []string{
		fmt.Sprintf("Each run traces %d relays (198.19.1.1–%d, fast profile) with %d probes per hop up to TTL %d at %d probes/s "+
			"while `tcpdump` captures the client's interface with nanosecond timestamps. Every answered probe's RTT as the "+
			"engine reported it is compared with the RTT between the probe and its reply in the capture (paired by probe id: "+
			"the UDP checksum, quoted in Time Exceeded, and the STUN transaction id). Error = reported − capture; the table "+
			"gives the median and the 99th percentile of |error| per run (median over runs, min–max), and the median signed "+
			"error (bias). *Loaded*: `stress-ng --cpu 2` keeps both cores busy.", tsTargets, tsTargets, tsQueries, tsMaxTTL, tsRate),
		"**socket** is `turnpath trace --engine socket` itself (send time taken in Go before `sendto`, receive time from " +
			"`SO_TIMESTAMPNS`). **eBPF**: the eBPF engine drops the replies it matches at XDP, before any capture on that " +
			"interface could see them, so `tpbench ebpf-rtt` runs the engine's parts — the same BPF objects, probes and RTT " +
			"(XDP receive − TC egress timestamp, both `bpf_ktime_get_ns`) — with the drop turned off.",
		"Where the clocks sit: on send, TC egress (eBPF) stamps the probe just before the capture's tap does, while " +
			"the socket engine reads Go's clock before the `sendto` system call; on receive, the XDP program (eBPF) runs " +
			"before the packet reaches the capture's tap, while `SO_TIMESTAMPNS` (socket) is the same receive timestamp " +
			"the capture records. So the eBPF engine's RTTs come out slightly shorter than the capture's (negative bias) " +
			"and the socket engine's slightly longer (positive bias): at the microsecond level the capture is the " +
			"reference, not the truth.",
	}}
	if !Have("tcpdump") {
		return res, errors.New("tcpdump is not installed")
	}
	l, err := env.Lab(ctx, lab.ProfileFast)
	if err != nil {
		return res, err
	}
	var targets []netip.Addr
	for _, a := range l.Targets("wildcard") {
		if a.Is4() && a.As4()[3] >= 1 && len(targets) < tsTargets {
			targets = append(targets, a)
		}
	}
	engines := []string{"eBPF", "socket"}
	loads := []string{"idle", "loaded"}
	rounds := env.Runs(5, 2)
	var runs []tsRun
	for _, load := range loads {
		var stress *Background
		if load == "loaded" {
			if !Have("stress-ng") {
				res.Notes = append(res.Notes, "loaded runs skipped: stress-ng is not installed")
				continue
			}
			if stress, err = env.Start(nil, "stress-ng", "--cpu", "2", "--timeout", "300s", "--quiet"); err != nil {
				return res, err
			}
			if err := sleep(ctx, time.Second); err != nil {
				stress.Stop(3 * time.Second)
				return res, err
			}
		}
		for r := range rounds {
			for k := range engines {
				eng := engines[(r+k)%len(engines)]
				run := tsCapture(ctx, env, l, eng, targets)
				run.Load, run.Round = load, r
				if run.Error != "" {
					env.Logf("timestamps %s %s: %s", eng, load, run.Error)
				} else {
					env.Logf("timestamps %-6s %-6s matched %d/%d median %.2f µs p99 %.2f µs bias %.2f µs",
						eng, load, run.Matched, run.Reported, run.MedianUS, run.P99US, run.BiasUS)
				}
				runs = append(runs, run)
				if ctx.Err() != nil {
					break
				}
			}
		}
		if stress != nil {
			if stress.Exited() {
				res.Notes = append(res.Notes, "stress-ng ended before the loaded runs did")
			}
			stress.Stop(3 * time.Second)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	res.Raw = runs
	t := Table{Columns: []string{"engine", "machine", "runs", "probes matched", "median abs error", "p99 abs error",
		"bias (median signed error)", "all samples: median / p99"}}
	cell := map[string]Summary{}
	for _, load := range loads {
		for _, eng := range engines {
			var med, p99, bias []float64
			var all []float64
			matched, reported, n := 0, 0, 0
			for _, r := range runs {
				if r.Engine != eng || r.Load != load {
					continue
				}
				if r.Error != "" {
					res.Notes = append(res.Notes, fmt.Sprintf("%s, %s, round %d: %s", eng, load, r.Round+1, r.Error))
				}
				if r.Matched == 0 {
					continue
				}
				n++
				med, p99, bias = append(med, r.MedianUS), append(p99, r.P99US), append(bias, r.BiasUS)
				matched, reported = matched+r.Matched, reported+r.Reported
				for _, e := range r.ErrorsNs {
					all = append(all, math.Abs(float64(e))/1e3)
				}
			}
			if n == 0 {
				continue
			}
			cell[eng+"/"+load] = Summarize(med)
			cell[eng+"/"+load+"/p99"] = Summarize(p99)
			t.Rows = append(t.Rows, []string{eng, load, strconv.Itoa(n), fmt.Sprintf("%d of %d", matched, reported),
				Summarize(med).Format("%.1f", " µs"), Summarize(p99).Format("%.1f", " µs"), Summarize(bias).Format("%.1f", " µs"),
				fmt.Sprintf("%.1f / %.1f µs", Quantile(all, 0.5), Quantile(all, 0.99))})
		}
	}
	res.Tables = append(res.Tables, t)
	if e, s := cell["eBPF/loaded"], cell["socket/loaded"]; e.N > 0 && s.N > 0 {
		res.Headlines = append(res.Headlines, fmt.Sprintf("Timestamp accuracy with both cores loaded: eBPF median |RTT error| "+
			"**%s**, p99 %s; socket engine %s, p99 %s; against tcpdump on the client's interface (target: median ≤ 10 µs).",
			e.Format("%.1f", " µs"), cell["eBPF/loaded/p99"].Format("%.1f", " µs"), s.Format("%.1f", " µs"),
			cell["socket/loaded/p99"].Format("%.1f", " µs")))
	}
	pcapArgs := tcpdumpArgs(l.ClientIfName(), "run.pcap")
	ts := make([]string, len(targets))
	for i, a := range targets {
		ts[i] = a.String()
	}
	res.Commands = []string{
		env.display(pcapArgs) + " &",
		env.display(append(socketTSArgs(env), ts...)),
		env.display(append(ebpfTSArgs(env), ts...)),
		"stress-ng --cpu 2 --timeout 300s --quiet &   # loaded runs",
	}
	return res, nil
}

func tcpdumpArgs(ifname, file string) []string {
	return []string{"tcpdump", "-i", ifname, "-w", file, "-n", "-s", "256", "-B", "16384", "-Z", "root",
		"--time-stamp-precision=nano", "--immediate-mode", "-U", "udp port 3478 or icmp or icmp6"}
}

func socketTSArgs(env *Env) []string {
	return []string{env.Turnpath, "trace", "-n", "--engine", "socket", "--format", "json",
		"--rate", strconv.Itoa(tsRate), "-q", strconv.Itoa(tsQueries), "-m", strconv.Itoa(tsMaxTTL)}
}

func ebpfTSArgs(env *Env) []string {
	return []string{env.Self, "ebpf-rtt", "-rate", strconv.Itoa(tsRate), "-q", strconv.Itoa(tsQueries),
		"-m", strconv.Itoa(tsMaxTTL)}
}

var tcpdumpDropped = regexp.MustCompile(`(\d+) packets? dropped by kernel`)

// tsCapture runs one engine once under tcpdump and compares the RTTs.
func tsCapture(ctx context.Context, env *Env, l *lab.Lab, engine string, targets []netip.Addr) tsRun {
	run := tsRun{Engine: engine}
	file := filepath.Join(env.Dir, "ts.pcap")
	_ = os.Remove(file)
	pr, pw := io.Pipe()
	capture, err := env.Start(pw, tcpdumpArgs(l.ClientIfName(), file)...)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	ready := make(chan struct{})
	var stderr strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "listening on") {
				once()
			}
		}
		once()
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
	}
	ts := make([]string, len(targets))
	for i, a := range targets {
		ts[i] = a.String()
	}
	var samples []RTTSample
	var perr error
	if engine == "socket" {
		o := env.Exec(ctx, 30*time.Second, append(socketTSArgs(env), ts...)...)
		samples, perr = turnpathSamples(o)
	} else {
		o := env.Exec(ctx, 30*time.Second, append(ebpfTSArgs(env), ts...)...)
		samples, perr = ebpfSamples(o)
	}
	_ = sleep(ctx, 100*time.Millisecond)
	capture.Stop(3 * time.Second)
	pw.Close()
	wg.Wait()
	if m := tcpdumpDropped.FindStringSubmatch(stderr.String()); m != nil {
		run.Dropped, _ = strconv.Atoi(m[1])
	}
	if perr != nil {
		run.Error = perr.Error()
		return run
	}
	b, err := os.ReadFile(file)
	if err != nil {
		run.Error = fmt.Sprintf("capture: %v (tcpdump: %s)", err, oneLine(stderr.String()))
		return run
	}
	pkts, err := ReadPcap(b)
	if err != nil && len(pkts) == 0 {
		run.Error = fmt.Sprintf("capture: %v", err)
		return run
	}
	wire := CaptureRTTs(pkts, CaptureFlow{SPort: tsSPort, DPort: tsDPort, Targets: targets})
	compareRTTs(&run, samples, wire)
	return run
}

// compareRTTs fills run's statistics from the reported samples and the capture.
func compareRTTs(run *tsRun, samples []RTTSample, wire map[ProbeKey]time.Duration) {
	var abs, signed []float64
	for _, s := range samples {
		run.Reported++
		w, ok := wire[s.Key()]
		if !ok {
			continue
		}
		e := s.RTTNs - w.Nanoseconds()
		run.ErrorsNs = append(run.ErrorsNs, e)
		abs = append(abs, math.Abs(float64(e))/1e3)
		signed = append(signed, float64(e)/1e3)
	}
	run.Matched = len(abs)
	if run.Matched > 0 {
		run.MedianUS, run.P99US, run.BiasUS = Quantile(abs, 0.5), Quantile(abs, 0.99), Quantile(signed, 0.5)
	}
}

// turnpathSamples reads the per-probe RTTs of `turnpath trace --format json`.
func turnpathSamples(o Outcome) ([]RTTSample, error) {
	if o.Err != nil {
		return nil, fmt.Errorf("turnpath: %w", o.Err)
	}
	run, _, err := ParseTurnpathJSON(o.Stdout)
	if err != nil {
		return nil, fmt.Errorf("%w (stderr: %s)", err, oneLine(string(o.Stderr)))
	}
	var out []RTTSample
	for _, t := range run.Targets {
		dst, err := netip.ParseAddr(t.Address)
		if err != nil {
			return nil, err
		}
		for _, h := range t.Hops {
			for _, p := range h.Probes {
				if p.Answered && p.RTTMS > 0 {
					out = append(out, RTTSample{Dst: dst, TTL: h.TTL, Attempt: p.Attempt, RTTNs: int64(math.Round(p.RTTMS * 1e6))})
				}
			}
		}
	}
	return out, nil
}

func ebpfSamples(o Outcome) ([]RTTSample, error) {
	if o.Err != nil || o.ExitCode != 0 {
		return nil, fmt.Errorf("ebpf-rtt: exit %d %v: %s", o.ExitCode, o.Err, oneLine(string(o.Stderr)))
	}
	var r EBPFRTTResult
	if err := json.Unmarshal(o.Stdout, &r); err != nil {
		return nil, fmt.Errorf("ebpf-rtt: %w", err)
	}
	return r.Samples, nil
}
