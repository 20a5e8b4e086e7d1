package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/enrich"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func traceCommand() *cli.Command {
	return &cli.Command{
		Name:      "trace",
		Usage:     "trace the path to STUN/TURN relays: all TTLs at once, flow-stable, with the relay's own answer",
		ArgsUsage: "TARGET... (or -f FILE)",
		Description: "Sends Paris-style probes (fixed 5-tuple) for every TTL in parallel and reports each hop,\n" +
			"its RTTs and hints, and how the relay answered. Exit 0 when every target was reached,\n" +
			"1 when some was not, 2 for bad input, 3 for runtime errors (privileges, BPF, no route).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read targets from `FILE` (one per line, # comments; - for stdin)"},
			&cli.StringFlag{Name: "proto", Value: "udp", Usage: "probe protocol: udp, icmp or tcp"},
			&cli.UintFlag{Name: "port", Aliases: []string{"p"}, Value: 3478, Usage: "destination port (udp, tcp)"},
			&cli.UintFlag{Name: "sport", Value: 50000, Usage: "source port: the flow id; fixed for the whole trace (Paris)"},
			&cli.StringFlag{Name: "payload", Usage: "UDP payload: stun, turn, ms-turn, hex:<bytes>, none (default: stun on port 3478, else none)"},
			&cli.IntFlag{Name: "first-ttl", Value: 1, Usage: "first TTL to probe"},
			&cli.IntFlag{Name: "max-ttl", Aliases: []string{"m"}, Value: 30, Usage: "last TTL to probe (1..255)"},
			&cli.IntFlag{Name: "queries", Aliases: []string{"q"}, Value: 3, Usage: "probes per hop"},
			&cli.DurationFlag{Name: "wait", Aliases: []string{"w"}, Value: time.Second, Usage: "longest wait for an answer (the wait adapts to the RTTs seen, up to this)"},
			&cli.Float64Flag{Name: "rate", Value: 1000, Usage: "probes per second over all targets (0: no cap)"},
			&cli.StringFlag{Name: "engine", Value: "auto", Usage: "auto, ebpf or socket"},
			&cli.BoolFlag{Name: "numeric", Aliases: []string{"n"}, Usage: "do not look up PTR names"},
			&cli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "resolve names to IPv4 only"},
			&cli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "resolve names to IPv6 only"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text, json, jsonl or csv"},
		},
		Action: runTrace,
	}
}

type traceFlags struct {
	proto   probe.Proto
	port    uint16
	sport   uint16
	payload probe.Payload
	opts    trace.Options
	engine  string
	format  string
	family  int
}

func parseTraceFlags(c *cli.Context) (*traceFlags, error) {
	tf := &traceFlags{engine: c.String("engine"), format: c.String("format")}
	switch c.String("proto") {
	case "udp":
		tf.proto = probe.ProtoUDP
	case "icmp":
		tf.proto = probe.ProtoICMP
	case "tcp":
		tf.proto = probe.ProtoTCP
	default:
		return nil, fmt.Errorf("unknown --proto %q (udp, icmp, tcp)", c.String("proto"))
	}
	if c.Uint("port") == 0 || c.Uint("port") > 65535 {
		return nil, fmt.Errorf("--port %d out of range 1..65535", c.Uint("port"))
	}
	if c.Uint("sport") == 0 || c.Uint("sport") > 65535 {
		return nil, fmt.Errorf("--sport %d out of range 1..65535", c.Uint("sport"))
	}
	tf.port, tf.sport = uint16(c.Uint("port")), uint16(c.Uint("sport"))
	spec := c.String("payload")
	if spec == "" {
		spec = "none"
		if tf.port == 3478 && tf.proto == probe.ProtoUDP {
			spec = "stun"
		}
	}
	var err error
	if tf.payload, err = probe.ParsePayload(spec); err != nil {
		return nil, err
	}
	tf.opts = trace.DefaultOptions()
	tf.opts.FirstTTL, tf.opts.MaxTTL = c.Int("first-ttl"), c.Int("max-ttl")
	tf.opts.Queries, tf.opts.Wait, tf.opts.Rate = c.Int("queries"), c.Duration("wait"), c.Float64("rate")
	if tf.opts.MinWait > tf.opts.Wait {
		tf.opts.MinWait = tf.opts.Wait
	}
	if err := tf.opts.Validate(); err != nil {
		return nil, err
	}
	if !slices.Contains([]string{"auto", "ebpf", "socket"}, tf.engine) {
		return nil, fmt.Errorf("unknown --engine %q (auto, ebpf, socket)", tf.engine)
	}
	if !report.ValidFormat(tf.format) {
		return nil, fmt.Errorf("unknown --format %q (%s)", tf.format, strings.Join(report.Formats, ", "))
	}
	switch {
	case c.Bool("ipv4") && c.Bool("ipv6"):
		return nil, errors.New("-4 and -6 exclude each other")
	case c.Bool("ipv4"):
		tf.family = 4
	case c.Bool("ipv6"):
		tf.family = 6
	}
	return tf, nil
}

func runTrace(c *cli.Context) error {
	tf, err := parseTraceFlags(c)
	if err != nil {
		return usageError("trace: %w", err)
	}
	names := c.Args().Slice()
	if f := c.String("file"); f != "" {
		more, err := readTargetFile(f)
		if err != nil {
			return usageError("trace: %w", err)
		}
		names = append(names, more...)
	}
	if len(names) == 0 {
		return usageError("trace: no target (turnpath trace TARGET... or -f FILE)")
	}
	ctx := c.Context
	targets, err := resolveTargets(ctx, names, tf.family)
	if err != nil {
		return usageError("trace: %w", err)
	}
	targets = dedupe(targets)

	// Route every target: the source address goes into the checksums, the interface is where
	// the BPF programs attach.
	infos := make([]report.TargetInfo, len(targets))
	cfg := engine.Config{Payload: tf.payload, Nonce: randomNonce()}
	for i, t := range targets {
		rt, err := probe.Lookup(t.Addr)
		if err != nil {
			if errors.Is(err, probe.ErrNoRoute) && !t.Addr.Is4() {
				err = fmt.Errorf("%w (is IPv6 configured here?)", err)
			}
			return runtimeError(fmt.Errorf("trace: %w", err))
		}
		cfg.Flows = append(cfg.Flows, probe.Flow{Src: rt.Src, Dst: t.Addr, Proto: tf.proto, SPort: tf.sport, DPort: tf.port})
		if !slices.Contains(cfg.Ifindexes, rt.Ifindex) {
			cfg.Ifindexes = append(cfg.Ifindexes, rt.Ifindex)
		}
		fam := 6
		if t.Addr.Is4() {
			fam = 4
		}
		infos[i] = report.TargetInfo{Name: t.Name, Addr: t.Addr, Source: rt.Src, Family: fam}
	}
	if tf.proto != probe.ProtoUDP {
		cfg.Payload, _ = probe.ParsePayload("none")
	}

	eng, why, err := openEngine(tf.engine, cfg)
	if err != nil {
		return runtimeError(fmt.Errorf("trace: %w", err))
	}
	defer eng.Close()
	if tf.engine == "auto" && eng.Name() != "ebpf" {
		fmt.Fprintf(c.App.ErrWriter, "turnpath: using the socket engine: %s\n", why)
	}

	opts := tf.opts
	prog := newProgress(c.App.ErrWriter, len(targets))
	opts.Progress = prog.update
	started := time.Now()
	results, runErr := trace.Run(ctx, eng, len(targets), opts)
	prog.done()
	if cerr := eng.Close(); cerr != nil && runErr == nil {
		runErr = fmt.Errorf("close engine: %w", cerr)
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runtimeError(fmt.Errorf("trace: %w", runErr))
	}

	var namer report.Namer
	if !c.Bool("numeric") && results != nil {
		nm := enrich.NewNames()
		var addrs []netip.Addr
		for _, r := range results {
			for _, h := range r.Hops {
				for _, rep := range h.Replies {
					if rep != nil {
						addrs = append(addrs, rep.From)
					}
				}
			}
		}
		nctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		nm.Resolve(nctx, addrs)
		cancel()
		namer = nm.Name
	}
	run := &report.Run{Schema: report.Schema, Version: version, Engine: eng.Name(), EngineReason: why,
		Started: started, Finished: time.Now(), Options: report.Options{
			Proto: c.String("proto"), Port: tf.port, SPort: tf.sport, Payload: cfg.Payload.String(),
			FirstTTL: opts.FirstTTL, MaxTTL: opts.MaxTTL, Queries: opts.Queries,
			WaitMS: float64(opts.Wait) / 1e6, Rate: opts.Rate}}
	allReached := true
	for i, r := range results {
		t := report.Build(infos[i], r, namer)
		allReached = allReached && t.Reached
		run.Targets = append(run.Targets, t)
	}
	if err := writeRun(c.App.Writer, tf.format, run); err != nil {
		return runtimeError(fmt.Errorf("trace: write output: %w", err))
	}
	if runErr != nil {
		return runtimeError(errors.New("trace: interrupted"))
	}
	if !allReached {
		return &exitError{code: exitNotReached, err: errors.New("trace: not every target was reached")}
	}
	return nil
}

func writeRun(w io.Writer, format string, run *report.Run) error {
	switch format {
	case "json":
		return report.WriteJSON(w, run)
	case "csv":
		c := report.NewCSV(w)
		for _, t := range run.Targets {
			if err := c.Write(t); err != nil {
				return err
			}
		}
		return nil
	}
	for i, t := range run.Targets {
		var err error
		if format == "jsonl" {
			err = report.WriteJSONLine(w, run, t)
		} else {
			if i > 0 {
				fmt.Fprintln(w)
			}
			err = report.WriteText(w, run, t)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// openEngine picks the engine; for auto it tries eBPF first and says why it fell back.
func openEngine(kind string, cfg engine.Config) (trace.Engine, string, error) {
	if kind == "socket" {
		e, err := engine.NewSocket(cfg)
		return e, "requested with --engine socket", err
	}
	e, err := engine.NewEBPF(cfg)
	if err == nil {
		return e, "BPF programs attached: kernel timestamps at TC egress and XDP", nil
	}
	if kind == "ebpf" {
		return nil, "", fmt.Errorf("ebpf engine: %w", err)
	}
	why := "ebpf engine unavailable: " + firstLine(err.Error())
	s, serr := engine.NewSocket(cfg)
	if serr != nil {
		return nil, "", fmt.Errorf("%s; socket engine: %w", why, serr)
	}
	return s, why, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func dedupe(ts []target) []target {
	seen := map[netip.Addr]bool{}
	out := ts[:0]
	for _, t := range ts {
		if !seen[t.Addr] {
			seen[t.Addr] = true
			out = append(out, t)
		}
	}
	return out
}

func randomNonce() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if n := binary.BigEndian.Uint32(b[:]); n != 0 { // 0 turns STUN matching off
			return n
		}
	}
}

// progress shows a one-line counter on a terminal and nothing otherwise (cron, pipes).
type progress struct {
	w     io.Writer
	tty   bool
	last  time.Time
	shown bool
}

func newProgress(w io.Writer, n int) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) update(s trace.Progress) {
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.shown = true
	fmt.Fprintf(p.w, "\r\033[Kprobes sent %d, answered %d, targets reached %d/%d", s.Sent, s.Answered, s.Reached, s.Targets)
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
