// Command mpcompare runs turnpath multipath, scamper tracelb and dublin-traceroute side by
// side on one target of a lab it brings up itself, and prints a Markdown table: wall time,
// probes sent, links found against the lab's ground truth, false links. Slow: tracelb
// takes minutes. Run as root from the repository:
//
//	go run ./scripts/mpcompare -profile fast
//
// Every tool runs inside the lab's client namespace, whose routes lead only into the lab.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/turnpath/turnpath/bench"
	"github.com/turnpath/turnpath/lab"
)

type outcome struct {
	tool, cmd  string
	wall       time.Duration
	probes     int
	links      map[[2]string]bool
	reached    bool
	err        error
	found      int
	falseLinks []string
}

func main() {
	profile := flag.String("profile", "fast", "lab profile: fast or realistic")
	target := flag.String("target", "198.19.1.1", "lab target")
	bin := flag.String("bin", "bin/turnpath", "turnpath binary")
	skip := flag.String("skip", "", "comma-separated tools to skip (tracelb, dublin)")
	flag.Parse()
	if err := run(*profile, *target, *bin, *skip); err != nil {
		fmt.Fprintln(os.Stderr, "mpcompare:", err)
		os.Exit(1)
	}
}

func run(profile, target, bin, skip string) error {
	dst, err := netip.ParseAddr(target)
	if err != nil {
		return fmt.Errorf("parse target: %w", err)
	}
	for _, t := range []string{"scamper", "dublin-traceroute"} {
		if _, err := exec.LookPath(t); err != nil {
			if out, err := exec.Command("scripts/apt-need.sh", "scamper", "dublin-traceroute").CombinedOutput(); err != nil {
				return fmt.Errorf("install peers: %v\n%s", err, out)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	l, err := lab.Up(ctx, lab.Options{Prefix: "tpcmp" + profile[:1], Profile: profile})
	cancel()
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	defer l.Down(context.Background())
	tt, ok := l.Truth().TargetTruth(dst)
	if !ok {
		return fmt.Errorf("%s is not a lab target", dst)
	}
	truth := bench.TruthLinks(tt)
	ns := l.ClientNS()
	// dublin-traceroute (libtins) will not start without a default route. This one leads
	// to the lab's first router like every other route of the client namespace.
	gw := "198.18.1.2"
	if !dst.Is4() {
		gw = "fd51:0:0:1::2"
	}
	if out, err := exec.Command("ip", "-n", ns, "route", "replace", "default", "via", gw).CombinedOutput(); err != nil {
		return fmt.Errorf("add default route into the lab: %v %s", err, out)
	}
	pause := func() {
		if profile == lab.ProfileRealistic {
			time.Sleep(10 * time.Second) // let the routers' ICMP budgets refill between tools
		}
	}
	var res []*outcome
	res = append(res, turnpath(ns, bin, dst))
	if !strings.Contains(skip, "tracelb") {
		// Both ways tracelb can vary the flow: its default (the destination port, from
		// 33435: closed ports, so the destination answers with port unreachables), and
		// turnpath's way (the source port, to the relay's port 3478, which answers STUN
		// only: tracelb never recognises the destination).
		for _, method := range []string{"", "-P udp-sport -d 3478 "} {
			pause()
			res = append(res, tracelb(ns, dst, method))
		}
	}
	if !strings.Contains(skip, "dublin") {
		pause()
		res = append(res, dublin(ns, dst))
	}
	fmt.Printf("Lab profile %s, target %s: %d true links (silent routers as the anonymous hop after the last answering interface).\n\n", profile, dst, len(truth))
	fmt.Println("| tool | wall time | probes | links found | false links | reached | command |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, o := range res {
		if o.err != nil {
			fmt.Printf("| %s | error: %v | | | | | `%s` |\n", o.tool, o.err, o.cmd)
			continue
		}
		for lk := range truth {
			if o.links[lk] {
				o.found++
			}
		}
		for lk := range o.links {
			if !truth[lk] {
				o.falseLinks = append(o.falseLinks, lk[0]+"→"+lk[1])
			}
		}
		fmt.Printf("| %s | %.2f s | %d | %d/%d | %d %s | %v | `%s` |\n", o.tool, o.wall.Seconds(), o.probes, o.found, len(truth),
			len(o.falseLinks), strings.Join(o.falseLinks, " "), o.reached, o.cmd)
	}
	return nil
}

func inNS(ns string, timeout time.Duration, dir string, args ...string) ([]byte, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return append(out.Bytes(), errb.Bytes()...), time.Since(start), err
}

func turnpath(ns, bin string, dst netip.Addr) *outcome {
	args := []string{bin, "multipath", "-n", "--format", "json", dst.String()}
	o := &outcome{tool: "turnpath multipath", cmd: strings.Join(args, " ")}
	out, wall, err := inNS(ns, 5*time.Minute, "", args...)
	o.wall = wall
	if err != nil {
		o.err = fmt.Errorf("%v: %s", err, firstLine(out))
		return o
	}
	var doc struct {
		Targets []struct {
			Reached bool `json:"reached"`
			Sent    int  `json:"probes_sent"`
			Links   []struct{ From, To string }
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil || len(doc.Targets) != 1 {
		o.err = fmt.Errorf("parse json: %v", err)
		return o
	}
	t := doc.Targets[0]
	o.probes, o.reached, o.links = t.Sent, t.Reached, map[[2]string]bool{}
	for _, l := range t.Links {
		o.links[[2]string{l.From, l.To}] = true
	}
	return o
}

// tracelb runs scamper's MDA at the same confidence with the given probe method options
// and parses its text output: "a -> b" links, "a -> * -> b" through silent hops.
func tracelb(ns string, dst netip.Addr, method string) *outcome {
	c := "tracelb " + method + "-c 99" // turnpath multipath's default confidence
	args := []string{"scamper", "-O", "text", "-c", c, "-i", dst.String()}
	tool := "scamper tracelb"
	if method != "" {
		tool += " " + strings.TrimSpace(method)
	}
	o := &outcome{tool: tool, cmd: `scamper -O text -c "` + c + `" -i ` + dst.String()}
	out, wall, err := inNS(ns, 20*time.Minute, "", args...)
	o.wall = wall
	if err != nil {
		o.err = fmt.Errorf("%v: %s", err, firstLine(out))
		return o
	}
	o.probes, o.links, o.reached, o.err = bench.TracelbLinks(out, dst)
	return o
}

// dublin runs dublin-traceroute (20 flows, destination ports 3478..3497) and parses
// the trace.json it writes.
func dublin(ns string, dst netip.Addr) *outcome {
	dir, err := os.MkdirTemp("", "mpcompare-dublin")
	o := &outcome{tool: "dublin-traceroute", cmd: "dublin-traceroute " + dst.String() + " --dport=3478 --max-ttl=12"}
	if err != nil {
		o.err = err
		return o
	}
	defer os.RemoveAll(dir)
	out, wall, err := inNS(ns, 5*time.Minute, dir, "dublin-traceroute", dst.String(), "--dport=3478", "--max-ttl=12")
	o.wall = wall
	if err != nil {
		o.err = fmt.Errorf("%v: %s", err, firstLine(out))
		return o
	}
	b, err := os.ReadFile(filepath.Join(dir, "trace.json"))
	if err != nil {
		o.err = err
		return o
	}
	o.links = map[[2]string]bool{}
	o.probes, o.reached, o.err = bench.DublinLinks(b, dst, o.links)
	return o
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
