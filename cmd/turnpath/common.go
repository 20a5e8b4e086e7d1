package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/pace"
	"github.com/turnpath/turnpath/probe"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
)

// Flag parsing and target handling shared by the probing commands.

// probingFlags are the flags every probing command has, with one meaning everywhere;
// each command adds its own (sport, format, and what its algorithm needs).
func probingFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read targets from `FILE` (one per line, # comments; - for stdin)"},
		&cli.StringFlag{Name: "proto", Value: "udp", Usage: "probe protocol: udp, icmp (echo; the flow id is the identifier base) or tcp (SYN)"},
		&cli.UintFlag{Name: "port", Aliases: []string{"p"}, Value: 3478, Usage: "destination port (udp, tcp)"},
		&cli.StringFlag{Name: "payload", Usage: "UDP payload: stun, turn, ms-turn, hex:<bytes>, none (default: stun on port 3478, else none)"},
		&cli.IntFlag{Name: "first-ttl", Value: 1, Usage: "first TTL to probe"},
		&cli.IntFlag{Name: "max-ttl", Aliases: []string{"m"}, Value: 30, Usage: "last TTL to probe (1..255)"},
		&cli.DurationFlag{Name: "wait", Aliases: []string{"w"}, Value: time.Second, Usage: "longest wait for an answer (the wait adapts to the RTTs seen, up to this)"},
		&cli.Float64Flag{Name: "rate", Value: 1000, Usage: "probes per second over all targets (0: no cap)"},
		&cli.StringFlag{Name: "engine", Value: "auto", Usage: "auto (eBPF, else the socket engine, saying why), ebpf or socket"},
		&cli.BoolFlag{Name: "numeric", Aliases: []string{"n"}, Usage: "do not look up PTR names"},
		&cli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "resolve names to IPv4 only"},
		&cli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "resolve names to IPv6 only"},
	}
}

func parseProto(s string) (probe.Proto, error) {
	switch s {
	case "udp":
		return probe.ProtoUDP, nil
	case "icmp":
		return probe.ProtoICMP, nil
	case "tcp":
		return probe.ProtoTCP, nil
	}
	return 0, fmt.Errorf("unknown --proto %q (udp, icmp, tcp)", s)
}

// portFlag reads --port.
func portFlag(c *cli.Context) (uint16, error) {
	if c.Uint("port") == 0 || c.Uint("port") > 65535 {
		return 0, fmt.Errorf("--port %d out of range 1..65535", c.Uint("port"))
	}
	return uint16(c.Uint("port")), nil
}

// maxSport is the highest source port a flow can use: the ICMP flow base must not be
// 0xffff (DESIGN.md), and the engines refuse it for every protocol.
const maxSport = 65534

// sportFlag reads --sport, a source port in 1..maxSport.
func sportFlag(c *cli.Context) (uint16, error) {
	s := c.Uint("sport")
	if s == 0 || s > maxSport {
		return 0, fmt.Errorf("--sport %d out of range 1..%d", s, maxSport)
	}
	return uint16(s), nil
}

// checkSportRange: the flows consecutive source ports from sport must all be usable.
func checkSportRange(sport uint16, flows int) error {
	if last := int(sport) + flows - 1; last > maxSport {
		return fmt.Errorf("--sport %d with %d flows per target (--max-flows): the flows would use source ports up to %d, past %d", sport, flows, last, maxSport)
	}
	return nil
}

// finiteFlags refuses NaN and infinities in every float flag of the command (the flag
// parser takes "NaN" and "Inf"): they would pass range checks written as comparisons.
func finiteFlags(c *cli.Context) error {
	for _, f := range c.Command.Flags {
		ff, ok := f.(*cli.Float64Flag)
		if !ok {
			continue
		}
		if v := c.Float64(ff.Name); math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("--%s %v: must be a finite number", ff.Name, v)
		}
	}
	return nil
}

// checkRate: 0 is no cap; anything else a finite number of probes per second the pacers
// can turn into an interval.
func checkRate(rate float64) error {
	if err := pace.CheckRate(rate); err != nil {
		return fmt.Errorf("--%w", err)
	}
	return nil
}

// checkOutputPath makes sure a file can be written at path (its directory exists, is a
// directory and takes new files; path is not a directory) before a run that ends by
// writing it. It leaves nothing behind.
func checkOutputPath(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: directory %s does not exist", path, dir)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s: a parent of %s is not a directory", path, dir)
	case err == nil && !fi.IsDir():
		return fmt.Errorf("%s: %s is not a directory", path, dir)
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".turnpath-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%s: cannot write in %s: %w", path, dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// probing is what the flags every probing command shares say (probingFlags).
type probing struct {
	proto   probe.Proto
	port    uint16
	payload probe.Payload
	engine  string
	family  int
}

// parseProbing reads and checks the shared probing flags.
func parseProbing(c *cli.Context) (probing, error) {
	pr := probing{engine: c.String("engine")}
	var err error
	if pr.proto, err = parseProto(c.String("proto")); err != nil {
		return pr, err
	}
	if err := finiteFlags(c); err != nil {
		return pr, err
	}
	if err := checkRate(c.Float64("rate")); err != nil {
		return pr, err
	}
	if pr.port, err = portFlag(c); err != nil {
		return pr, err
	}
	if pr.payload, err = defaultPayload(c.String("payload"), pr.proto, pr.port); err != nil {
		return pr, err
	}
	if !slices.Contains(session.EngineKinds, pr.engine) {
		return pr, fmt.Errorf("unknown --engine %q (%s)", pr.engine, strings.Join(session.EngineKinds, ", "))
	}
	if pr.family, err = familyFlag(c); err != nil {
		return pr, err
	}
	return pr, nil
}

// targetsOf reads a probing command's targets (arguments or -f FILE) and resolves them;
// Ctrl-C while resolving is an early interrupt, anything else bad input.
func targetsOf(c *cli.Context, cmd string, family int) ([]target, error) {
	names, err := targetNames(c)
	if err != nil {
		return nil, usageError("%s: %w", cmd, err)
	}
	if names, err = shardNames(c, names); err != nil {
		return nil, err // an empty shard: nothing to do
	}
	resolved, err := resolveTargets(c.Context, names, family)
	if errors.Is(err, context.Canceled) {
		return nil, interruptedEarly(cmd, len(names))
	}
	if err != nil {
		return nil, usageError("%s: %w", cmd, err)
	}
	return resolved, nil
}

// routeAll routes the targets through the session: Ctrl-C while routing a long list is
// an early interrupt, a probe larger than its interface's MTU bad input.
func routeAll(ctx context.Context, cmd string, sess *session.Session, addrs []netip.Addr) error {
	err := sess.Route(ctx, addrs)
	var big *session.ProbeTooBigError
	var small *session.ProbeTooSmallError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, session.ErrInterrupted):
		return interruptedEarly(cmd, len(addrs))
	case errors.As(err, &big), errors.As(err, &small):
		return usageError("%s: %w", cmd, err)
	}
	return runtimeError(fmt.Errorf("%s: %w", cmd, err))
}

// notProbedNote says how many of n targets a stopped run never probed ("" for none).
func notProbedNote(skipped, n int) string {
	if skipped <= 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d targets not probed", skipped, n)
}

// defaultPayload parses --payload: STUN toward UDP 3478, nothing elsewhere, and nothing
// at all for ICMP and TCP probes.
func defaultPayload(spec string, proto probe.Proto, port uint16) (probe.Payload, error) {
	if spec == "" {
		spec = "none"
		if port == 3478 && proto == probe.ProtoUDP {
			spec = "stun"
		}
	}
	p, err := probe.ParsePayload(spec)
	if err != nil {
		return p, err
	}
	if proto != probe.ProtoUDP {
		return probe.ParsePayload("none")
	}
	return p, nil
}

// familyFlag reads -4/-6: 0 for any family.
func familyFlag(c *cli.Context) (int, error) {
	switch {
	case c.Bool("ipv4") && c.Bool("ipv6"):
		return 0, errors.New("-4 and -6 exclude each other")
	case c.Bool("ipv4"):
		return 4, nil
	case c.Bool("ipv6"):
		return 6, nil
	}
	return 0, nil
}

// targetNames collects the targets of the command line and of -f FILE.
func targetNames(c *cli.Context) ([]string, error) {
	names := c.Args().Slice()
	if f := c.String("file"); f != "" {
		more, err := readTargetFile(f)
		if err != nil {
			return nil, err
		}
		names = append(names, more...)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no target (turnpath %s TARGET... or -f FILE)", c.Command.Name)
	}
	return names, nil
}

// line shows one status line on a terminal, at most every 100 ms.
func (p *progress) line(s string) {
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.shown = true
	fmt.Fprint(p.w, "\r\033[K"+s)
}

// openEngine opens the session's engine for cmd, saying on stderr (-v, or a terminal) when
// auto fell back to the socket engine, and why.
func openEngine(c *cli.Context, cmd string, sess *session.Session, cfg engine.Config) (trace.Engine, error) {
	eng, err := sess.Open(cfg)
	if err != nil {
		return nil, runtimeError(fmt.Errorf("%s: %w", cmd, err))
	}
	if sess.FellBack() {
		notef(c, "using the socket engine: %s", sess.Why())
	}
	return eng, nil
}

// targetInfo is what the reports know of routed target i beyond its result.
func targetInfo(targets *targetList, sess *session.Session, i int) report.TargetInfo {
	fam := 6
	if targets.addrs[i].Is4() {
		fam = 4
	}
	return report.TargetInfo{Name: targets.name(i), Addr: targets.addrs[i], Source: sess.RouteOf(i).Src, Family: fam, AS: sess.ASOf()}
}
