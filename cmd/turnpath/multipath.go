package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/urfave/cli/v2"
)

func multipathCommand() *cli.Command {
	return &cli.Command{
		Name:      "multipath",
		Usage:     "find every ECMP branch to STUN/TURN relays (MDA with a confidence bound)",
		ArgsUsage: "TARGET... (or -f FILE)",
		Description: "Varies only the flow id (the source port), each flow Paris-stable, and probes until every\n" +
			"interface's next hops are all found with the given confidence (Multipath Detection\n" +
			"Algorithm; MDA-Lite, escalating to full MDA where a hop load-balances). Hops of all\n" +
			"flows are probed in parallel; hops common to several targets are explored once.\n" +
			"Exit 0 when every target was reached, 1 when some was not, 2 for bad input, 3 for\n" +
			"runtime errors.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read targets from `FILE` (one per line, # comments; - for stdin)"},
			&cli.StringFlag{Name: "proto", Value: "udp", Usage: "probe protocol: udp, tcp or icmp (the flow id is the source port; for icmp the echo identifier)"},
			&cli.UintFlag{Name: "port", Aliases: []string{"p"}, Value: 3478, Usage: "destination port (udp, tcp)"},
			&cli.UintFlag{Name: "sport", Value: 50000, Usage: "first source port: flow i uses sport+i"},
			&cli.StringFlag{Name: "payload", Usage: "UDP payload: stun, turn, ms-turn, hex:<bytes>, none (default: stun on port 3478, else none)"},
			&cli.Float64Flag{Name: "confidence", Aliases: []string{"c"}, Value: 95, Usage: "confidence in percent (0 < c < 100) that every next hop of every interface is found"},
			&cli.BoolFlag{Name: "full", Usage: "classic MDA at every hop (as scamper tracelb) instead of MDA-Lite"},
			&cli.IntFlag{Name: "first-ttl", Value: 1, Usage: "first TTL to probe"},
			&cli.IntFlag{Name: "max-ttl", Aliases: []string{"m"}, Value: 30, Usage: "last TTL to probe (1..255)"},
			&cli.IntFlag{Name: "max-flows", Value: 256, Usage: "flows (source ports) per target at most"},
			&cli.IntFlag{Name: "max-probes", Value: 20000, Usage: "probes per target at most"},
			&cli.IntFlag{Name: "parallel", Value: 32, Usage: "targets explored at once, in waves of 1, 2, 4 ... up to this (each wave reuses the hops earlier ones established; 1: one after the other)"},
			&cli.DurationFlag{Name: "wait", Aliases: []string{"w"}, Value: time.Second, Usage: "longest wait for an answer (adapts to the RTTs seen, up to this)"},
			&cli.DurationFlag{Name: "rate-limit-wait", Value: time.Second, Usage: "first back-off before re-probing a router that ran out of ICMP budget (doubles, up to 8x)"},
			&cli.Float64Flag{Name: "rate", Value: 1000, Usage: "probes per second (0: no cap)"},
			&cli.StringFlag{Name: "engine", Value: "auto", Usage: "auto, ebpf or socket"},
			&cli.BoolFlag{Name: "numeric", Aliases: []string{"n"}, Usage: "do not look up PTR names"},
			&cli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "resolve names to IPv4 only"},
			&cli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "resolve names to IPv6 only"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text, json, dot (Graphviz) or svg"},
			&cli.StringFlag{Name: "svg", Usage: "also write the graph as SVG to `FILE`"},
		},
		Action: runMultipath,
	}
}

type multipathFlags struct {
	proto   probe.Proto
	port    uint16
	payload probe.Payload
	opts    mda.Options
	popts   mda.ProberOptions
	engine  string
	format  string
	svg     string
	family  int
}

func parseMultipathFlags(c *cli.Context) (*multipathFlags, error) {
	mf := &multipathFlags{engine: c.String("engine"), format: c.String("format"), svg: c.String("svg")}
	var err error
	if mf.proto, err = parseProto(c.String("proto")); err != nil {
		return nil, err
	}
	var sport uint16
	if mf.port, sport, err = portFlags(c); err != nil {
		return nil, err
	}
	if mf.payload, err = defaultPayload(c.String("payload"), mf.proto, mf.port); err != nil {
		return nil, err
	}
	o := mda.DefaultOptions()
	o.Confidence, o.Full = c.Float64("confidence"), c.Bool("full")
	o.FirstTTL, o.MaxTTL = c.Int("first-ttl"), c.Int("max-ttl")
	o.FlowBase, o.MaxFlows, o.MaxProbes = sport, c.Int("max-flows"), c.Int("max-probes")
	o.RateLimitBackoff = c.Duration("rate-limit-wait")
	o.Parallel = c.Int("parallel")
	if err := o.Validate(); err != nil {
		if errors.Is(err, mda.ErrConfidence) {
			return nil, fmt.Errorf("--confidence %v: must be above 0 and below 100 (percent)", o.Confidence)
		}
		return nil, err
	}
	mf.opts = o
	mf.popts = mda.DefaultProberOptions()
	mf.popts.Wait, mf.popts.Rate = c.Duration("wait"), c.Float64("rate")
	if mf.popts.Wait <= 0 {
		return nil, fmt.Errorf("--wait %v must be positive", mf.popts.Wait)
	}
	if mf.popts.Rate < 0 {
		return nil, fmt.Errorf("--rate %v must not be negative", mf.popts.Rate)
	}
	mf.popts.MinWait = min(mf.popts.MinWait, mf.popts.Wait)
	if !slices.Contains([]string{"auto", "ebpf", "socket"}, mf.engine) {
		return nil, fmt.Errorf("unknown --engine %q (auto, ebpf, socket)", mf.engine)
	}
	if !slices.Contains(report.MultipathFormats, mf.format) {
		return nil, fmt.Errorf("unknown --format %q (text, json, dot, svg)", mf.format)
	}
	if mf.family, err = familyFlag(c); err != nil {
		return nil, err
	}
	return mf, nil
}

func runMultipath(c *cli.Context) error {
	mf, err := parseMultipathFlags(c)
	if err != nil {
		return usageError("multipath: %w", err)
	}
	names, err := targetNames(c)
	if err != nil {
		return usageError("multipath: %w", err)
	}
	ctx := c.Context
	targets, err := resolveTargets(ctx, names, mf.family)
	if err != nil {
		return usageError("multipath: %w", err)
	}
	targets = dedupe(targets)
	// Few targets get many flows each; the engine's flow table bounds the product.
	flows := min(mf.opts.MaxFlows, mda.MaxEngineTargets/len(targets))
	if flows < 32 {
		return usageError("multipath: %d targets: at most %d in one run", len(targets), mda.MaxEngineTargets/32)
	}
	mf.opts.MaxFlows = flows
	layout, err := mda.NewLayout(len(targets), mf.opts.FlowBase, flows)
	if err != nil {
		return usageError("multipath: %w", err)
	}

	tmpl := make([]probe.Flow, len(targets))
	infos := make([]targetRoute, len(targets))
	oneFirst := make([]bool, len(targets))
	cfg := engine.Config{Payload: mf.payload, Nonce: randomNonce()}
	for i, t := range targets {
		rt, err := routeTo(t.Addr)
		if err != nil {
			return runtimeError(fmt.Errorf("multipath: %w", err))
		}
		tmpl[i] = probe.Flow{Src: rt.Src, Dst: t.Addr, Proto: mf.proto, DPort: mf.port}
		if !slices.Contains(cfg.Ifindexes, rt.Ifindex) {
			cfg.Ifindexes = append(cfg.Ifindexes, rt.Ifindex)
		}
		infos[i] = targetRoute{target: t, src: rt.Src}
		oneFirst[i] = rt.Nexthops == 1
	}
	// Not a multipath route: the first router is the same for every flow.
	mf.opts.OneFirstHop = func(i int) bool { return oneFirst[i] }
	cfg.Flows = layout.EngineFlows(tmpl)
	eng, why, err := openEngine(mf.engine, cfg)
	if err != nil {
		return runtimeError(fmt.Errorf("multipath: %w", err))
	}
	defer eng.Close()
	if mf.engine == "auto" && eng.Name() != "ebpf" {
		fmt.Fprintf(c.App.ErrWriter, "turnpath: using the socket engine: %s\n", why)
	}
	addrs := make([]netip.Addr, len(targets))
	for i, t := range targets {
		addrs[i] = t.Addr
	}
	prober, err := mda.NewEngineProber(eng, layout, addrs, mf.popts)
	if err != nil {
		return runtimeError(fmt.Errorf("multipath: %w", err))
	}
	prog := &mdaProgress{p: newProgress(c.App.ErrWriter, len(targets)), inner: prober, targets: len(targets)}
	started := time.Now()
	graphs, runErr := mda.RunMany(ctx, prog, addrs, mf.opts)
	prog.p.done()
	prober.Close()
	if cerr := eng.Close(); cerr != nil && runErr == nil {
		runErr = fmt.Errorf("close engine: %w", cerr)
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runtimeError(fmt.Errorf("multipath: %w", runErr))
	}
	run := newMultipathRun(c, mf, eng.Name(), why, started, infos, graphs)
	if err := report.WriteMultipath(c.App.Writer, mf.format, run); err != nil {
		return runtimeError(fmt.Errorf("multipath: write output: %w", err))
	}
	if mf.svg != "" {
		if err := writeFileAtomic(mf.svg, func(w io.Writer) error { return report.WriteMultipath(w, "svg", run) }); err != nil {
			return runtimeError(fmt.Errorf("multipath: write svg: %w", err))
		}
	}
	if runErr != nil {
		return runtimeError(errors.New("multipath: interrupted"))
	}
	for _, g := range graphs {
		if !g.Reached {
			return &exitError{code: exitNotReached, err: errors.New("multipath: not every target was reached")}
		}
	}
	return nil
}

type targetRoute struct {
	target target
	src    netip.Addr
}

// mdaProgress counts probes for the progress line on a terminal.
type mdaProgress struct {
	p       *progress
	inner   mda.Prober
	targets int
	sent    int
	answers int
}

func (m *mdaProgress) Probe(ctx context.Context, reqs []mda.Request) ([]mda.Answer, error) {
	as, err := m.inner.Probe(ctx, reqs)
	m.sent += len(reqs)
	m.answers += len(as)
	target := 0
	if len(reqs) > 0 {
		target = reqs[0].Target
	}
	m.p.line(fmt.Sprintf("multipath: target %d/%d, probes sent %d, answered %d", target+1, m.targets, m.sent, m.answers))
	return as, err
}

// writeFileAtomic writes a file through a temporary file in the same directory, so a
// reader never sees half a picture.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".turnpath-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
