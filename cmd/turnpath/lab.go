package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/turnpath/turnpath/lab"
)

// labCommand wires `turnpath lab ...` to package lab; all logic lives there.
func labCommand() *cli.Command {
	prefixFlag := &cli.StringFlag{
		Name:  "prefix",
		Value: lab.DefaultPrefix,
		Usage: "namespace name prefix: the lab's namespaces are `NAME`-client, NAME-r1, ... (letters, digits, '_')",
	}
	return &cli.Command{
		Name:  "lab",
		Usage: "build, inspect and remove the built-in network lab",
		Description: `The lab is a set of network namespaces joined only to each other (never to the host):

   client - r1 - r2 =< r3a r3b r3c >= r4 =< r5a | r5b - r5c >= r6 - r7(silent) - r8 - t1
             |    \- r9 - t2
            dns

Links use 198.18.N.0/24 and fd51:0:0:N::/64; targets are 198.19.1.0/24 + fd51:1:1::/120
on t1 (group "wildcard": one coturn on the wildcard address, answers from t1's link
address) and 198.19.2.1-16 + fd51:1:2::1-16 on t2 (group "bound": a coturn listener per
address). r2 and r4 are ECMP routers (L4 hash, fixed seeds); r7 never sends ICMP errors.
dnsmasq in <prefix>-dns has PTR names <node>-link<N>.lab.turnpath.test.

Run a prober inside the client namespace with 'turnpath lab exec -- CMD'. Compare its
output with 'turnpath lab truth'. up, down and exec need root; status and truth do not.

Exit codes: 0 ok, 2 bad flags or arguments, 3 the environment failed (not root, a missing
tool, lab not up, netlink errors).`,
		Subcommands: []*cli.Command{
			{
				Name:      "up",
				Usage:     "build the lab and start coturn and dnsmasq",
				UsageText: "turnpath lab up [--profile fast|realistic] [--prefix NAME]",
				Description: `Profiles: "fast" (default) lifts the routers' ICMP rate limits so parallel probing
sees every hop; "realistic" keeps Linux's defaults (1 ICMP error per second per
destination after a burst of 6, at most 1000/s).

If a healthy lab with the same prefix and profile is already up, this prints
"lab NAME is already up" and exits 0. With another profile it exits 3 (run 'lab down'
first). Leftovers of a crashed lab are reported (exit 3); 'lab down' removes them.
Exit codes: 0 up, 2 unknown profile or bad prefix, 3 not root, missing coturn/dnsmasq,
or building failed (everything built so far is removed again).`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "profile", Value: lab.DefaultProfile, Usage: "`PROFILE`: fast or realistic"},
					prefixFlag,
				},
				Action: labUp,
			},
			{
				Name:      "down",
				Usage:     "stop the lab's processes and remove its namespaces and files",
				UsageText: "turnpath lab down [--prefix NAME]",
				Description: `Removes coturn and dnsmasq (by recorded PID, after checking the PID is still
ours), the namespaces NAME-<node>, /etc/netns/NAME-client and /run/turnpath-lab/NAME.
Also cleans up a half-built lab. With nothing up it prints "no lab with prefix NAME is
up" and exits 3.`,
				Flags:  []cli.Flag{prefixFlag},
				Action: labDown,
			},
			{
				Name:        "status",
				Usage:       "show the lab's namespaces, processes and target groups",
				UsageText:   "turnpath lab status [--prefix NAME]",
				Description: "Exit codes: 0 the lab is up and healthy, 3 it is not up, half built or a process died.",
				Flags:       []cli.Flag{prefixFlag},
				Action:      labStatus,
			},
			{
				Name:      "truth",
				Usage:     "print the lab's ground truth (derived from the topology, not probed)",
				UsageText: "turnpath lab truth [--format json|text] [TARGET]",
				Description: `For every target (or only TARGET): family, group, who may answer at each TTL,
the TTLs at which the destination is reached (reached_at), the links between
consecutive hops, every ECMP path, where coturn's answers come from
(stun_reply_from) and where the target's own ICMP errors come from (unreachable_from).

A router answers from its address on the interface the probe came in on (IPv6 always;
IPv4 with icmp_errors_use_inbound_ifaddr=1, which the lab sets on every router), so a
router reached over several links answers from several addresses. "routers" lists
every router with its interfaces, and each target's "routers" the addresses each router
on its paths answers it from (the alias sets). Silent routers appear as
{"node":"r7","silent":true} and by name in links. The truth is the same for every
prefix; --prefix is accepted for symmetry.`,
				Flags: []cli.Flag{
					prefixFlag,
					&cli.StringFlag{Name: "format", Value: "json", Usage: "`FORMAT`: json or text"},
				},
				Action: labTruth,
			},
			{
				Name:      "exec",
				Usage:     "run a command inside the lab's client namespace",
				UsageText: "turnpath lab exec [--prefix NAME] -- CMD [ARG...]",
				Description: `Runs 'ip netns exec NAME-client CMD...', so /etc/resolv.conf points at the lab's
dnsmasq. The command's exit code is passed through.`,
				Flags:  []cli.Flag{prefixFlag},
				Action: labExec,
			},
			labWhoisdCommand(prefixFlag),
		},
	}
}

// labError maps package lab errors to exit codes.
func labError(err error) error {
	if err == nil {
		return nil
	}
	var ue *lab.UsageError
	if errors.As(err, &ue) {
		return &exitError{code: exitUsage, err: err}
	}
	return runtimeError(err)
}

func labUp(c *cli.Context) error {
	if c.Args().Present() {
		return usageError("lab up: unexpected argument %q", c.Args().First())
	}
	start := time.Now()
	l, err := lab.Up(c.Context, lab.Options{Prefix: c.String("prefix"), Profile: c.String("profile")})
	if err != nil {
		return labError(err)
	}
	w := c.App.Writer
	if l.Reused() {
		fmt.Fprintf(w, "lab %s is already up (profile %s)\n", l.Prefix(), l.Profile())
		return nil
	}
	fmt.Fprintf(w, "lab %s is up (profile %s) in %.1fs\n", l.Prefix(), l.Profile(), time.Since(start).Seconds())
	fmt.Fprintf(w, "client: netns %s, dev %s, %s %s\n", l.ClientNS(), l.ClientIfName(), l.ClientAddr(lab.IPv4), l.ClientAddr(lab.IPv6))
	for _, g := range l.Groups() {
		ts := l.Targets(g)
		fmt.Fprintf(w, "targets %s: %d addresses, %s .. %s\n", g, len(ts), ts[0], ts[len(ts)-1])
	}
	fmt.Fprintf(w, "try: turnpath lab exec --prefix %s -- ping -c1 %s\n", l.Prefix(), l.Targets(l.Groups()[0])[1])
	return nil
}

func labDown(c *cli.Context) error {
	if c.Args().Present() {
		return usageError("lab down: unexpected argument %q", c.Args().First())
	}
	prefix := c.String("prefix")
	if err := lab.Down(c.Context, prefix); err != nil {
		return labError(err)
	}
	fmt.Fprintf(c.App.Writer, "lab %s is down\n", prefix)
	return nil
}

func labStatus(c *cli.Context) error {
	if c.Args().Present() {
		return usageError("lab status: unexpected argument %q", c.Args().First())
	}
	st, err := lab.Status(c.String("prefix"))
	if err != nil {
		return labError(err)
	}
	st.Print(c.App.Writer)
	if err := st.Err(); err != nil {
		return runtimeError(fmt.Errorf("lab status: %w", err))
	}
	return nil
}

func labTruth(c *cli.Context) error {
	if err := lab.ValidatePrefix(c.String("prefix")); err != nil {
		return labError(err)
	}
	format := c.String("format")
	if format != "json" && format != "text" {
		return usageError("lab truth: unknown format %q (want json or text)", format)
	}
	if c.NArg() > 1 {
		return usageError("lab truth: want at most one TARGET, got %d", c.NArg())
	}
	tr := lab.DefaultTruth()
	all := tr.All()
	if c.NArg() == 1 {
		addr, err := netip.ParseAddr(c.Args().First())
		if err != nil {
			return usageError("lab truth: bad target address %q", c.Args().First())
		}
		tt, ok := tr.TargetTruth(addr)
		if !ok {
			return usageError("lab truth: %s is not a lab target (see turnpath lab status)", addr)
		}
		all = []*lab.TargetTruth{tt}
	}
	w := c.App.Writer
	if format == "text" {
		for _, tt := range all {
			tt.WriteText(w)
		}
		if c.NArg() == 0 {
			tr.Topology().WriteASText(w)
		}
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	var v any = tr
	if c.NArg() == 1 {
		v = all[0]
	}
	if err := enc.Encode(v); err != nil {
		return runtimeError(fmt.Errorf("write truth: %w", err))
	}
	return nil
}

func labExec(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return usageError("lab exec: missing command (turnpath lab exec -- CMD [ARG...])")
	}
	argv, err := lab.ExecArgs(c.String("prefix"), args)
	if err != nil {
		return labError(err)
	}
	// Replace this process: the command's exit code and signals pass straight through.
	if err := syscall.Exec(argv[0], argv, os.Environ()); err != nil {
		return runtimeError(fmt.Errorf("lab exec: run %s: %w", argv[0], err))
	}
	return nil
}
