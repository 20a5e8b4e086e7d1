// Command tpbench is `make bench`: it runs turnpath's benchmarks in the built-in lab and
// writes BENCHMARKS.md and the raw results as JSON. See package bench.
//
//	tpbench [-quick] [-only onepath,timestamps,...] [-turnpath bin/turnpath]
//	tpbench ebpf-rtt [-rate R] [-q N] [-m TTL] TARGET...   (helper, inside the lab's client namespace)
//	tpbench capacity [-engine ebpf|socket] [-probes N] [-cpu C] [-rate R]   (one capacity run, own reflector network)
//	tpbench rss [-engine ebpf|socket] [-targets N] [-turnpath bin/turnpath]   (one peak-RSS run, own reflector network)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/turnpath/turnpath/bench"
	"github.com/turnpath/turnpath/reflector"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	sub := ""
	if len(os.Args) > 1 {
		sub = os.Args[1]
	}
	switch sub {
	case "ebpf-rtt":
		err = ebpfRTT(ctx, os.Args[2:])
	case "capacity":
		err = capacity(ctx, os.Args[2:])
	case "rss":
		err = peakRSS(ctx, os.Args[2:])
	default:
		err = run(ctx, os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tpbench:", err)
		var ee exitError
		switch {
		case errors.As(err, &ee):
			os.Exit(int(ee))
		case ctx.Err() != nil:
			os.Exit(130)
		}
		os.Exit(3)
	}
}

// exitError is an exit code without a message of its own.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tpbench", flag.ContinueOnError)
	turnpath := fs.String("turnpath", "bin/turnpath", "the turnpath binary to measure")
	prefix := fs.String("prefix", "tpbench", "lab prefix (namespaces PREFIX-client, ...)")
	quick := fs.Bool("quick", false, "few runs, for development (writes bench/results/quick.* unless -out/-json are given)")
	only := fs.String("only", "", "comma-separated sections to run ("+sectionIDs()+")")
	out := fs.String("out", "BENCHMARKS.md", "Markdown report")
	js := fs.String("json", "BENCHMARKS.json", "raw results")
	repo := fs.String("repo", ".", "the turnpath repository (go test -bench, scripts/apt-need.sh)")
	timeout := fs.Duration("timeout", 25*time.Minute, "stop the whole run after this long (partial results are written)")
	merge := fs.String("merge", "", "with -only: take the other sections from this earlier report's JSON (each says so), e.g. BENCHMARKS.json")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick && !set["out"] {
		*out = filepath.Join(*repo, "bench", "results", "quick.md")
	}
	if *quick && !set["json"] {
		*js = filepath.Join(*repo, "bench", "results", "quick.json")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	opts := bench.Options{Turnpath: *turnpath, Self: self, RepoDir: *repo, Prefix: *prefix, Quick: *quick, Log: os.Stderr}
	if *only != "" {
		opts.Only = strings.Split(*only, ",")
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := bench.Run(rctx, opts)
	if ctx.Err() != nil {
		return ctx.Err() // interrupted: keep the previous report
	}
	if rep == nil {
		return err
	}
	if rep.Finished.IsZero() {
		rep.Finished = time.Now()
		rep.Seconds = rep.Finished.Sub(rep.Started).Seconds()
	}
	if *merge != "" {
		if merr := bench.MergeInto(rep, *merge); merr != nil {
			return merr
		}
	}
	if werr := rep.WriteFiles(*out, *js); werr != nil {
		return werr
	}
	fmt.Fprintf(os.Stderr, "tpbench: wrote %s and %s in %.0f s\n", *out, *js, rep.Seconds)
	if err != nil {
		return err
	}
	for _, s := range rep.Sections {
		if s.Status == bench.StatusFailed {
			return fmt.Errorf("section %s failed: %s", s.ID, s.Error)
		}
	}
	return nil
}

func sectionIDs() string {
	var ids []string
	for _, s := range bench.Sections {
		ids = append(ids, s.ID)
	}
	return strings.Join(ids, ",")
}

// ebpfRTT is the in-namespace helper of the timestamp section.
func ebpfRTT(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tpbench ebpf-rtt", flag.ContinueOnError)
	o := bench.EBPFRTTOptions{SPort: 50000, DPort: 3478, Wait: 200 * time.Millisecond}
	fs.Float64Var(&o.Rate, "rate", 2000, "probes per second")
	fs.IntVar(&o.Queries, "q", 6, "probes per hop")
	fs.IntVar(&o.MaxTTL, "m", 10, "last TTL")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	for _, a := range fs.Args() {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("bad target %q", a)
		}
		o.Targets = append(o.Targets, addr)
	}
	res, err := bench.EBPFRTT(ctx, o)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// capacity is one run of the capacity section, on its own reflector network of depth 8
// (namespaces tpcap-prober and tpcap-refl), printed as JSON.
func capacity(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tpbench capacity", flag.ContinueOnError)
	o := bench.CapacityOptions{Targets: 256}
	fs.StringVar(&o.Engine, "engine", "ebpf", "ebpf or socket")
	fs.IntVar(&o.Probes, "probes", 600_000, "probes to send")
	fs.IntVar(&o.CPU, "cpu", bench.CapacityCPU(), "core to pin the process to (-1: not pinned)")
	fs.Float64Var(&o.Rate, "rate", 0, "probes per second (0: unpaced)")
	fs.IntVar(&o.Batch, "batch", 0, "probes per SendBatch call (0: Send per probe)")
	fs.BoolVar(&o.Baseline, "baseline", false, "eBPF: the path before batching (sendto per probe, ringbuf.Reader goroutine)")
	fs.StringVar(&o.Send, "send", "", "eBPF with -batch: force a send method: mmsg (sendmmsg on raw sockets) or ring (AF_PACKET TX ring); empty: the engine's choice (sendmmsg on AF_PACKET)")
	prefix := fs.String("prefix", "tpcap", "name stem of the reflector network's namespaces")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitError(2)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	n, err := reflector.Up(ctx, reflector.Options{Prefix: *prefix, Depth: 8})
	if err != nil {
		return err
	}
	res, err := bench.Capacity(ctx, n, o)
	if err = errors.Join(err, n.Down()); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// peakRSS is one run of the memory section on its own reflector network (namespaces
// tprss-prober and tprss-refl): turnpath's peak RSS in bytes, as JSON.
func peakRSS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tpbench rss", flag.ContinueOnError)
	engine := fs.String("engine", "ebpf", "ebpf or socket")
	targets := fs.Int("targets", 100_000, "distinct targets in the list")
	turnpath := fs.String("turnpath", "bin/turnpath", "the turnpath binary to measure")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitError(2)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin, err := filepath.Abs(*turnpath)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tpbench-rss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	list := filepath.Join(dir, "targets.txt")
	if err := bench.WriteTargets(list, *targets); err != nil {
		return err
	}
	n, err := reflector.Up(ctx, reflector.Options{Prefix: "tprss", Depth: bench.MemoryDepth})
	if err != nil {
		return err
	}
	res, err := bench.PeakRSS(ctx, n, bench.RSSOptions{Turnpath: bin, List: list, Targets: *targets, Engine: *engine,
		Args: bench.MemoryTraceArgs()})
	if err = errors.Join(err, n.Down()); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
