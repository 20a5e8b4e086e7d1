package main

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/turnpath/turnpath/probe"
	"github.com/urfave/cli/v2"
)

// Flag parsing and target handling shared by the probing commands.

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

// portFlags reads --port and --sport.
func portFlags(c *cli.Context) (port, sport uint16, err error) {
	if c.Uint("port") == 0 || c.Uint("port") > 65535 {
		return 0, 0, fmt.Errorf("--port %d out of range 1..65535", c.Uint("port"))
	}
	if c.Uint("sport") == 0 || c.Uint("sport") > 65535 {
		return 0, 0, fmt.Errorf("--sport %d out of range 1..65535", c.Uint("sport"))
	}
	return uint16(c.Uint("port")), uint16(c.Uint("sport")), nil
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

// routeTo looks the route to dst up: its source address goes into the checksums, its
// interface is where the BPF programs attach.
func routeTo(dst netip.Addr) (probe.Route, error) {
	rt, err := probe.Lookup(dst)
	if err != nil && errors.Is(err, probe.ErrNoRoute) && !dst.Is4() {
		err = fmt.Errorf("%w (is IPv6 configured here?)", err)
	}
	return rt, err
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
