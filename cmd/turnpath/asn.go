package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/session"
	"github.com/turnpath/turnpath/trace"
	"github.com/urfave/cli/v2"
)

// AS lookups (--asn): the flags trace, multipath and `turnpath asn` share, and the
// resolver they open (package asn).

func asnFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "asn", Usage: "look up each hop's AS from `SOURCE`: radb, cymru-dns, cymru-whois or file:PATH (off by default: it sends the hop addresses to a third party)"},
		&cli.BoolFlag{Name: "z", Usage: "look up ASes from Team Cymru's DNS (as mtr -z; --asn cymru-dns)"},
		&cli.StringFlag{Name: "whois", Usage: "whois server `HOST[:PORT]` of --asn radb (default whois.radb.net) or cymru-whois (whois.cymru.com)"},
		&cli.StringFlag{Name: "dns-server", Usage: "DNS server `HOST[:PORT]` of --asn cymru-dns (default the system resolver)"},
		&cli.StringFlag{Name: "cache-dir", Value: asn.DefaultCacheDir(), Usage: "where AS answers are cached between runs (\"\": no disk cache)"},
		&cli.DurationFlag{Name: "asn-timeout", Value: 3 * time.Second, Usage: "longest wait for AS answers: a slower source shows AS? and one warning"},
		&cli.DurationFlag{Name: "asn-cache-ttl", Value: 24 * time.Hour, Usage: "how long a cached AS answer is used"},
		&cli.BoolFlag{Name: "asn-private", Usage: "ask the source about private, shared, documentation and benchmark addresses too (a lab, a private IRR) instead of answering them locally as private"},
	}
}

// asnSource is the --asn value ("" none): -z is cymru-dns.
func asnSource(c *cli.Context) (string, error) {
	spec := c.String("asn")
	if c.Bool("z") {
		if spec != "" && spec != "cymru-dns" {
			return "", fmt.Errorf("-z (cymru-dns) and --asn %s exclude each other", spec)
		}
		spec = "cymru-dns"
	}
	return spec, nil
}

// newASNResolver opens the resolver the flags ask for (nil without --asn or -z). Bad
// flags and a missing or malformed data file are the user's (exit 2).
func newASNResolver(c *cli.Context, spec string) (*asn.Resolver, error) {
	if spec == "" {
		return nil, nil
	}
	if c.Duration("asn-timeout") <= 0 {
		return nil, usageError("--asn-timeout %v: must be positive", c.Duration("asn-timeout"))
	}
	src, err := asn.NewSource(spec, asn.Config{Whois: c.String("whois"), DNSServer: c.String("dns-server")})
	var fe *asn.FileError
	switch {
	case errors.As(err, &fe), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return nil, usageError("--asn: %w", err)
	case err != nil:
		return nil, usageError("%w", err)
	}
	r := asn.NewResolver(src)
	r.Timeout, r.TTL = c.Duration("asn-timeout"), c.Duration("asn-cache-ttl")
	r.CacheDir, r.LookupPrivate = c.String("cache-dir"), c.Bool("asn-private")
	w := c.App.ErrWriter
	r.Warn = func(s string) { fmt.Fprintf(w, "turnpath: warning: %s\n", s) }
	return r, nil
}

// openASN gives the session its AS resolver when the flags ask for one.
func openASN(c *cli.Context, cmd string, sess *session.Session) error {
	spec, err := asnSource(c)
	if err != nil {
		return usageError("%s: %w", cmd, err)
	}
	r, err := newASNResolver(c, spec)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			ee.err = fmt.Errorf("%s: %w", cmd, ee.err)
		}
		return err
	}
	sess.AS = r
	return nil
}

func asnCommand() *cli.Command {
	return &cli.Command{
		Name:      "asn",
		Usage:     "look up who holds addresses: origin AS, its name, prefix and country",
		ArgsUsage: "ADDR...",
		Description: "Asks the --asn source (default cymru-dns) about each address, as trace --asn does for its\n" +
			"hops: private, shared, documentation and benchmark ranges answer locally (--asn-private\n" +
			"asks anyway). Exit 0 when every address was answered, 2 for bad input, 3 when the source\n" +
			"did not answer in time.",
		Flags: append(asnFlags(),
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"},
		),
		Action: runASN,
	}
}

// asnAnswer is one line of `turnpath asn --format json`.
type asnAnswer struct {
	Address string `json:"address"`
	asn.Info
	AS string `json:"as"` // AS64500, private, AS0, AS?
}

func runASN(c *cli.Context) error {
	format := c.String("format")
	if format != "text" && format != "json" {
		return usageError("asn: unknown --format %q (text, json)", format)
	}
	if c.NArg() == 0 {
		return usageError("asn: no address (turnpath asn ADDR...)")
	}
	var addrs []netip.Addr
	for _, s := range c.Args().Slice() {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || a.Zone() != "" {
			return usageError("asn: bad address %q", s)
		}
		addrs = append(addrs, a.Unmap())
	}
	spec, err := asnSource(c)
	if err != nil {
		return usageError("asn: %w", err)
	}
	if spec == "" {
		spec = "cymru-dns"
	}
	r, err := newASNResolver(c, spec)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			ee.err = fmt.Errorf("asn: %w", ee.err)
		}
		return err
	}
	r.Warn = nil // the command's error says it
	got := r.Lookup(c.Context, addrs)
	if err := r.Save(); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "turnpath: warning: %v\n", err)
	}
	failed := 0
	var out []asnAnswer
	for _, a := range addrs {
		in := got[a]
		if in.Failed {
			failed++
		}
		out = append(out, asnAnswer{Address: a.String(), Info: in, AS: in.String()})
	}
	if format == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return runtimeError(fmt.Errorf("asn: write output: %w", err))
		}
	} else {
		tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		for _, a := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Address, a.AS, dash(a.Prefix), dash(a.CC), a.Name)
		}
		if err := tw.Flush(); err != nil {
			return runtimeError(fmt.Errorf("asn: write output: %w", err))
		}
	}
	if failed > 0 {
		return runtimeError(fmt.Errorf("asn: %d of %d lookups via %s did not answer within %v", failed, len(addrs), r.Stats().Source, r.Timeout))
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// responders are the addresses that answered a target's probes.
func responders(r trace.Result) []netip.Addr {
	var out []netip.Addr
	for _, h := range r.Hops {
		for _, rep := range h.Replies {
			if rep != nil {
				out = append(out, rep.From)
			}
		}
	}
	return out
}

// labWhoisdCommand runs the lab's whois service in the foreground (hidden: the tests
// start it themselves; this is for trying --asn radb / cymru-whois in a lab by hand).
func labWhoisdCommand(prefix cli.Flag) *cli.Command {
	return &cli.Command{
		Name:   "whoisd",
		Usage:  "serve the lab's AS data by whois (IRRd and Team Cymru protocols) until interrupted",
		Hidden: true,
		Flags:  []cli.Flag{prefix, &cli.IntFlag{Name: "port", Value: 43, Usage: "TCP port on the lab resolver's addresses"}},
		Action: func(c *cli.Context) error {
			l, err := lab.Open(c.String("prefix"))
			if err != nil {
				return labError(err)
			}
			if p := c.Int("port"); p < 0 || p > 65535 {
				return usageError("lab whoisd: --port %d out of range", p)
			}
			srv, err := l.StartWhois(c.Int("port"))
			if err != nil {
				return runtimeError(fmt.Errorf("lab whoisd: %w", err))
			}
			defer srv.Close()
			for _, a := range srv.Addrs {
				fmt.Fprintf(c.App.Writer, "whois service on %s (--asn radb --whois %s --asn-private)\n", a, a)
			}
			<-c.Context.Done()
			return nil
		},
	}
}
