package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/metrics"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/unattended"
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
			"Interfaces that answer for one router (IP ID counters, reply TTLs) are resolved from\n" +
			"the replies and count as one router in the stopping rules; --level router draws them\n" +
			"as one node.\n" +
			"Exit 0 when every target was reached, 1 when some was not, 2 for bad input, 3 for\n" +
			"runtime errors, 4 when another run holds --lock.",
		Flags: append(append(append(probingFlags(), asnFlags()...),
			&cli.UintFlag{Name: "sport", DefaultText: "random", Usage: "first source port: flow i uses sport+i. Without it every run draws its own (32768 and up, shown in the report as the\n\tfirst sport, JSON flow_base), so a rerun samples the routers' hashes anew; give it to repeat a run's flows exactly"},
			&cli.Float64Flag{Name: "confidence", Aliases: []string{"c"}, Value: 99, Usage: "confidence in percent (0 < c < 100) that every next hop of every interface is found"},
			&cli.BoolFlag{Name: "full", Usage: "classic MDA at every hop (as scamper tracelb) instead of MDA-Lite"},
			&cli.IntFlag{Name: "max-flows", Value: 256, Usage: "flows (source ports) per target at most"},
			&cli.IntFlag{Name: "max-probes", Value: 20000, Usage: "probes per target at most"},
			&cli.BoolFlag{Name: "join", Value: true, Usage: "targets of one prefix (IPv4 /24, IPv6 /64) share the graph explored for the first of them: each other one is probed\n\tback from its destination (a few probes) until its flow joins that graph, and explored in full only if it does not"},
			&cli.IntFlag{Name: "parallel", Value: 32, Usage: "targets explored at once, in waves of 1, 2, 4 ... up to this (each wave reuses the hops earlier ones established; 1: one after the other)"},
			&cli.DurationFlag{Name: "rate-limit-wait", Value: time.Second, Usage: "first back-off before re-probing a router that ran out of ICMP budget (doubles, up to 8x)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text, json, dot (Graphviz) or svg"},
			&cli.StringFlag{Name: "level", Value: "interface", Usage: "interface (a node per interface, routers answering from several marked) or router (a node per router)"},
			&cli.StringFlag{Name: "svg", Usage: "also write the graph as SVG to `FILE`"},
			textfileFlag(),
		), unattendedFlags()...),
		Action: unattendedAction("multipath", runMultipath),
	}
}

type multipathFlags struct {
	probing
	opts      mda.Options
	popts     mda.ProberOptions
	format    string
	level     string // "interface" or "router"
	svg       string
	fixedBase bool   // --sport given: else each run draws its flow base
	sport     uint16 // --sport
}

func parseMultipathFlags(c *cli.Context) (*multipathFlags, error) {
	mf := &multipathFlags{format: c.String("format"), level: c.String("level"), svg: c.String("svg")}
	var err error
	if mf.probing, err = parseProbing(c); err != nil {
		return nil, err
	}
	maxFlows := c.Int("max-flows")
	if maxFlows < 1 || maxFlows > maxSport {
		return nil, fmt.Errorf("--max-flows %d out of range 1..%d (one source port each, 1..%d)", maxFlows, maxSport, maxSport)
	}
	// The flows per target are known once the targets are: the source port range is
	// checked (--sport) or drawn then. Until then port 1 stands in for checking the
	// other options.
	if mf.fixedBase = c.IsSet("sport"); mf.fixedBase {
		if mf.sport, err = sportFlag(c); err != nil {
			return nil, err
		}
	}
	o := mda.DefaultOptions()
	o.Confidence, o.Full = c.Float64("confidence"), c.Bool("full")
	o.FirstTTL, o.MaxTTL = c.Int("first-ttl"), c.Int("max-ttl")
	o.FlowBase, o.MaxFlows, o.MaxProbes = 1, maxFlows, c.Int("max-probes")
	o.RateLimitBackoff = c.Duration("rate-limit-wait")
	o.Parallel = c.Int("parallel")
	o.Join = c.Bool("join")
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
	mf.popts.MinWait = min(mf.popts.MinWait, mf.popts.Wait)
	if !slices.Contains(report.MultipathFormats, mf.format) {
		return nil, fmt.Errorf("unknown --format %q (text, json, dot, svg)", mf.format)
	}
	if mf.level != "interface" && mf.level != "router" {
		return nil, fmt.Errorf("unknown --level %q (interface or router)", mf.level)
	}
	// The picture is written after the run: find out now if it cannot be.
	if mf.svg != "" {
		if err := checkOutputPath(mf.svg); err != nil {
			return nil, fmt.Errorf("--svg %w", err)
		}
	}
	if err := checkTextfileFlag(c, "multipath"); err != nil {
		return nil, err
	}
	return mf, nil
}

// minFlows is the fewest flows per target turnpath lowers --max-flows to when many
// targets share the engine's flow table: fewer would truncate most explorations.
const minFlows = 32

// flowsPerTarget is how many flows each of n targets gets: --max-flows, lowered so that
// n x flows fits the engine's flow table, but not below minFlows (or --max-flows, if the
// user asked for fewer).
func flowsPerTarget(n, maxFlows int) (int, error) {
	room := mda.MaxEngineTargets / n
	if room >= maxFlows {
		return maxFlows, nil
	}
	if floor := min(maxFlows, minFlows); room < floor {
		if maxFlows < minFlows {
			return 0, fmt.Errorf("%d targets: at most %d in one run with --max-flows %d", n, mda.MaxEngineTargets/floor, maxFlows)
		}
		return 0, fmt.Errorf("%d targets: at most %d in one run (each needs %d flows or more; the engine tracks %d)", n, mda.MaxEngineTargets/floor, floor, mda.MaxEngineTargets)
	}
	return room, nil
}

// randomBaseLo is where random flow bases start: high ports, as scamper's.
const randomBaseLo = 32768

// randomFlowBase draws the first source port of flows consecutive ones, all within
// randomBaseLo..maxSport (from lower down when there are more than fit there).
func randomFlowBase(flows int) uint16 {
	hi := maxSport - flows + 1
	lo := min(randomBaseLo, hi)
	return uint16(lo + mrand.IntN(hi-lo+1))
}

func runMultipath(c *cli.Context, u *unattendedRun) error {
	mf, err := parseMultipathFlags(c)
	if err != nil {
		return usageError("multipath: %w", err)
	}
	ctx := c.Context
	targets, err := targetsOf(c, "multipath", mf.family)
	if err != nil {
		return err
	}
	targets = dedupe(targets)
	// Few targets get many flows each; the engine's flow table bounds the product.
	flows, err := flowsPerTarget(len(targets), mf.opts.MaxFlows)
	if err != nil {
		return usageError("multipath: %w", err)
	}
	mf.opts.MaxFlows = flows
	mf.opts.FlowBase = mf.sport
	if !mf.fixedBase {
		mf.opts.FlowBase = randomFlowBase(flows)
	} else if err := checkSportRange(mf.sport, flows); err != nil {
		return usageError("multipath: %w", err)
	}
	layout, err := mda.NewLayout(len(targets), mf.opts.FlowBase, flows)
	if err != nil {
		return usageError("multipath: %w", err)
	}

	addrs := make([]netip.Addr, len(targets))
	for i, t := range targets {
		addrs[i] = t.Addr
	}
	sess, err := session.New(session.Spec{Engine: mf.engine, Proto: mf.proto, Port: mf.port, Payload: mf.payload,
		Numeric: c.Bool("numeric")})
	if err != nil {
		return usageError("multipath: %w", err)
	}
	defer sess.Close()
	if err := openASN(c, "multipath", sess); err != nil {
		return err
	}
	if err := routeAll(ctx, "multipath", sess, addrs); err != nil {
		return err
	}
	tmpl := make([]probe.Flow, len(targets))
	infos := make([]targetRoute, len(targets))
	for i, t := range targets {
		rt := sess.RouteOf(i)
		tmpl[i] = sess.Flow(rt, t.Addr, mf.opts.FlowBase)
		infos[i] = targetRoute{target: t, src: rt.Src}
	}
	// Not a multipath route: the first router is the same for every flow.
	mf.opts.OneFirstHop = func(i int) bool { return sess.RouteOf(i).Nexthops == 1 }
	cfg := sess.Config(mf.opts.FlowBase)
	cfg.Shape, cfg.Flows = nil, layout.EngineFlows(tmpl)
	eng, err := openEngine(c, "multipath", sess, cfg)
	if err != nil {
		return err
	}
	why := sess.Why()
	prober, err := mda.NewEngineProber(eng, layout, addrs, mf.popts)
	if err != nil {
		return runtimeError(fmt.Errorf("multipath: %w", err))
	}
	prog := &mdaProgress{p: newProgress(c.App.ErrWriter, len(targets)), inner: prober, targets: len(targets), last: map[int]bool{}}
	started := time.Now()
	graphs, runErr := mda.RunMany(ctx, prog, addrs, mf.opts)
	prog.p.done()
	prober.Close()
	// A run the engine ended (the interface went away) is reported like an interrupted
	// one: what was explored, then the error, naming the interface rather than the send
	// that failed because of it. Ask the interfaces before closing the engine.
	runErr = sess.Failure(runErr)
	if cerr := sess.Close(); cerr != nil && runErr == nil {
		runErr = fmt.Errorf("close engine: %w", cerr)
	}
	var unfinished map[int]bool // targets the run stopped in the middle of
	if runErr != nil {
		unfinished = prog.last
	}
	run := newMultipathRun(c, mf, sess, eng.Name(), why, started, infos, graphs, unfinished)
	u.addMultipath(run)
	if err := report.WriteMultipath(c.App.Writer, mf.format, run); err != nil {
		return runtimeError(fmt.Errorf("multipath: write output: %w", err))
	}
	if mf.svg != "" {
		if err := writeFileAtomic(mf.svg, func(w io.Writer) error { return report.WriteMultipath(w, "svg", run) }); err != nil {
			return runtimeError(fmt.Errorf("multipath: write svg: %w", err))
		}
	}
	if dir := c.String("textfile"); dir != "" {
		if err := metrics.WriteMultipath(dir, run); err != nil {
			return runtimeError(fmt.Errorf("multipath: %w", err))
		}
	}
	if runErr != nil {
		msg := "interrupted"
		if !errors.Is(runErr, context.Canceled) {
			msg = runErr.Error()
		}
		if note := notProbedNote(len(targets)-len(run.Targets), len(targets)); note != "" {
			msg += ": " + note
		}
		return runtimeError(errors.New("multipath: " + msg))
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

// mdaProgress counts probes for the progress line on a terminal, and remembers the
// targets of the last batch: those a stopped run stopped in the middle of.
type mdaProgress struct {
	p       *progress
	inner   mda.Prober
	targets int
	sent    int
	answers int
	last    map[int]bool
}

func (m *mdaProgress) Probe(ctx context.Context, reqs []mda.Request) ([]mda.Answer, error) {
	clear(m.last)
	for _, rq := range reqs {
		m.last[rq.Target] = true
	}
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

// writeFileAtomic writes a file that is replaced at once (unattended.File), so a reader
// never sees half a picture.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := unattended.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := write(f); err != nil {
		return err
	}
	return f.Commit()
}
