// Command tpbench is `make bench`: it runs turnpath's benchmarks in the built-in lab and
// writes BENCHMARKS.md and the raw results as JSON. See package bench.
//
//	tpbench [-quick] [-only onepath,timestamps,...] [-turnpath bin/turnpath]
//	tpbench ebpf-rtt [-rate R] [-q N] [-m TTL] TARGET...   (helper, inside the lab's client namespace)
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "ebpf-rtt" {
		err = ebpfRTT(ctx, os.Args[2:])
	} else {
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
	timeout := fs.Duration("timeout", 14*time.Minute, "stop the whole run after this long (partial results are written)")
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
