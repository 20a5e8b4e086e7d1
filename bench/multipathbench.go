package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/mda"
)

// Multipath at scale: `turnpath multipath` against scamper's tracelb and
// dublin-traceroute on one relay of the lab (whose routers answer from the interface a
// probe came in by, so r4 answers from three addresses and r6 from two), then every relay
// of the lab in one run (fast profile) and 64 relays under Linux's ICMP limits (realistic
// profile). Links are scored against the lab's truth, a silent router as the silent hop
// after the last answering interface, as mda names it; routers (alias sets) against the
// truth's routers.

// mpTarget is what the bench reads of one target of `multipath --format json`.
type mpTarget struct {
	Address string `json:"address"`
	Reached bool   `json:"reached"`
	Sent    int    `json:"probes_sent"`
	Joined  string `json:"joined_from"`
	Links   []struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"links"`
	Routers []struct {
		Interfaces []string `json:"interfaces"`
	} `json:"routers"`
	// Interfaces that look like one router but that no evidence decided (no IP ID
	// counter, routers that do not rate-limit): each stays a router of its own.
	Unresolved []struct {
		Interfaces []string `json:"interfaces"`
	} `json:"unresolved_routers"`
}

// mpScore is a set of targets' links checked against the truth.
type mpScore struct {
	Targets  int `json:"targets"`
	Complete int `json:"complete"` // targets with every true link
	Missing  int `json:"missing_links"`
	False    int `json:"false_links"`
	Reached  int `json:"reached"`
	Probes   int `json:"probes"`
	Joined   int `json:"joined"`
	// Targets whose routers (alias sets) are the truth's; whose graph says some could
	// not be told (and has no wrong ones); the others.
	RoutersRight      int `json:"routers_right"`
	RoutersUnresolved int `json:"routers_unresolved"`
	RoutersWrong      int `json:"routers_wrong"`
}

// routers says how many targets had their routers right, unresolved or wrong.
func (s mpScore) routers() string {
	out := fmt.Sprintf("%d/%d right", s.RoutersRight, s.Targets)
	if s.RoutersUnresolved > 0 {
		out += fmt.Sprintf(", %d unresolved", s.RoutersUnresolved)
	}
	if s.RoutersWrong > 0 {
		out += fmt.Sprintf(", %d wrong", s.RoutersWrong)
	}
	return out
}

// TruthLinks are the links of tt's true paths, a silent router named as mda names the
// silent hop after the last answering interface. (scripts/mpcompare too.)
func TruthLinks(tt *lab.TargetTruth) map[[2]string]bool {
	out := map[[2]string]bool{}
	for _, l := range tt.LinksNamed(mda.AnonID) {
		out[l] = true
	}
	return out
}

// truthRouters are the truth's routers answering tt from several addresses, each as its
// sorted addresses joined by spaces.
func truthRouters(tt *lab.TargetTruth) []string {
	var out []string
	for _, r := range tt.Routers() {
		if len(r.Addrs) > 1 {
			var s []string
			for _, a := range r.Addrs {
				s = append(s, a.String())
			}
			out = append(out, strings.Join(s, " "))
		}
	}
	slices.Sort(out)
	return out
}

func scoreMultipath(out []byte, tr *lab.Truth) (mpScore, error) {
	var doc struct {
		Targets []mpTarget `json:"targets"`
	}
	var s mpScore
	if err := json.Unmarshal(out, &doc); err != nil {
		return s, fmt.Errorf("parse multipath json: %w", err)
	}
	for _, t := range doc.Targets {
		a, err := netip.ParseAddr(t.Address)
		if err != nil {
			return s, fmt.Errorf("parse target %q: %w", t.Address, err)
		}
		tt, ok := tr.TargetTruth(a)
		if !ok {
			return s, fmt.Errorf("%s is not a lab target", a)
		}
		s.Targets++
		s.Probes += t.Sent
		if t.Reached {
			s.Reached++
		}
		if t.Joined != "" {
			s.Joined++
		}
		want := TruthLinks(tt)
		got := map[[2]string]bool{}
		for _, l := range t.Links {
			k := [2]string{l.From, l.To}
			got[k] = true
			if !want[k] {
				s.False++
			}
		}
		miss := 0
		for k := range want {
			if !got[k] {
				miss++
			}
		}
		s.Missing += miss
		if miss == 0 {
			s.Complete++
		}
		var rs []string
		for _, r := range t.Routers {
			rs = append(rs, strings.Join(r.Interfaces, " "))
		}
		slices.Sort(rs)
		switch truth := truthRouters(tt); {
		case slices.Equal(rs, truth):
			s.RoutersRight++
		case len(t.Unresolved) > 0 && !slices.ContainsFunc(rs, func(r string) bool { return !slices.Contains(truth, r) }):
			s.RoutersUnresolved++ // what it grouped is right, the rest it says it could not tell
		default:
			s.RoutersWrong++
		}
	}
	return s, nil
}

// mpOutcome is one tool's run on one relay.
type mpOutcome struct {
	Tool    string  `json:"tool"`
	Command string  `json:"command"`
	Seconds float64 `json:"seconds"`
	Probes  int     `json:"probes"`
	Found   int     `json:"links_found"`
	Total   int     `json:"links_total"`
	False   int     `json:"false_links"`
	Reached bool    `json:"reached"`
	Routers string  `json:"routers,omitempty"`
	Error   string  `json:"error,omitempty"`
}

var tracelbHeader = regexp.MustCompile(`tracelb from \S+ to \S+, \d+ nodes, \d+ links, (\d+) probes`)

// TracelbLinks reads scamper tracelb's text output: the probes it sent, its links ("a ->
// b", "a -> * -> b" through silent hops), and whether a chain passed dst.
// (scripts/mpcompare too.)
func TracelbLinks(out []byte, dst netip.Addr) (probes int, links map[[2]string]bool, reached bool, err error) {
	m := tracelbHeader.FindSubmatch(out)
	if m == nil {
		return 0, nil, false, fmt.Errorf("no tracelb header in %s", firstLine(string(out)))
	}
	probes, _ = strconv.Atoi(string(m[1]))
	links = map[[2]string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " -> ") {
			reached = hopChain(links, strings.Split(line, " -> "), dst) || reached
		}
	}
	return probes, links, reached, nil
}

// hopChain adds the links of a hop sequence in which "*" is a silent hop (a silent
// hop's id is mda.AnonID, as the truth names it); trailing silent hops are where a tool
// gave up, not hops it claims. reached: the sequence passes dst.
func hopChain(links map[[2]string]bool, hops []string, dst netip.Addr) (reached bool) {
	for len(hops) > 0 && strings.TrimSpace(hops[len(hops)-1]) == "*" {
		hops = hops[:len(hops)-1]
	}
	var prev netip.Addr
	depth := 0
	last := ""
	for i, h := range hops {
		h = strings.TrimSpace(h)
		id := h
		if h == "*" {
			depth++
			id = mda.AnonID(prev, depth)
		} else if a, err := netip.ParseAddr(h); err == nil {
			prev, depth = a, 0
			reached = reached || a == dst
		} else {
			return reached
		}
		if i > 0 {
			links[[2]string{last, id}] = true
		}
		last = id
	}
	return reached
}

func (o *mpOutcome) score(links map[[2]string]bool, truth map[[2]string]bool) {
	o.Total = len(truth)
	for k := range links {
		if truth[k] {
			o.Found++
		} else {
			o.False++
		}
	}
}

func runMultipathBench(ctx context.Context, env *Env) (*Result, error) {
	res := &Result{Text: []string{"The lab's routers answer Time Exceeded from the interface a probe came in by " +
		"(`icmp_errors_use_inbound_ifaddr=1`, as IPv6 routers do), so r4 answers from three addresses and r6 from two; " +
		"r3a-c, r4 and r6 number their ICMP from one IP ID counter each, like vendor routers. One relay (198.19.1.1, " +
		"fast profile): turnpath multipath against scamper tracelb at the same confidence (99 %, turnpath's default) and " +
		"dublin-traceroute, measured in the same run, links " +
		"scored against `lab truth` (a silent router as the silent hop after the last answering interface). Then every relay " +
		"of the lab in one run (fast profile, `--rate 10000`), with and without `--join`, and 64 relays (16 of each group " +
		"and family) in the realistic profile (Linux's ICMP limits: a burst of 6, then one a second per router)."}}
	raw := map[string]any{}

	// One relay, three tools.
	l, err := env.Lab(ctx, lab.ProfileFast)
	if err != nil {
		return res, err
	}
	tr := l.Truth()
	dst := netip.MustParseAddr("198.19.1.1")
	tt, _ := tr.TargetTruth(dst)
	truth := TruthLinks(tt)
	var outs []mpOutcome
	// Five runs: each is a sample of the flows' hashes, and a run at 99 % per router can
	// still miss a branch now and then; the table shows every run.
	runs := env.Runs(5, 1)
	var tpProbes []int
	for i := range runs {
		argv := []string{env.Turnpath, "multipath", "-n", "--format", "json", dst.String()}
		o := env.Exec(ctx, 60*time.Second, argv...)
		oc := mpOutcome{Tool: "turnpath multipath", Command: env.display(argv), Seconds: o.Wall.Seconds()}
		if o.Err != nil || o.ExitCode != 0 {
			oc.Error = fmt.Sprintf("exit %d: %v %s", o.ExitCode, o.Err, firstLine(string(o.Stderr)))
		} else if s, err := scoreMultipath(o.Stdout, tr); err != nil {
			oc.Error = err.Error()
		} else {
			oc.Probes, oc.Found, oc.Total, oc.False, oc.Reached = s.Probes, len(truth)-s.Missing, len(truth), s.False, s.Reached == 1
			oc.Routers = s.routers()
			tpProbes = append(tpProbes, s.Probes)
		}
		if i == 0 {
			res.Commands = append(res.Commands, oc.Command)
		}
		outs = append(outs, oc)
		env.Logf("multipath %s: %.2fs %d probes %d/%d links %d false %s", oc.Tool, oc.Seconds, oc.Probes, oc.Found, oc.Total, oc.False, oc.Error)
	}
	if Have("scamper") {
		c := "tracelb -c 99"
		o := env.Exec(ctx, 10*time.Minute, "scamper", "-O", "text", "-c", c, "-i", dst.String())
		oc := mpOutcome{Tool: "scamper tracelb", Command: `scamper -O text -c "` + c + `" -i ` + dst.String(), Seconds: o.Wall.Seconds()}
		if o.Err != nil || o.ExitCode != 0 {
			oc.Error = fmt.Sprintf("exit %d: %v %s", o.ExitCode, o.Err, firstLine(string(o.Stderr)))
		} else if probes, links, reached, err := TracelbLinks(o.Stdout, dst); err != nil {
			oc.Error = err.Error()
		} else {
			oc.Probes, oc.Reached = probes, reached
			oc.score(links, truth)
		}
		res.Commands = append(res.Commands, oc.Command)
		outs = append(outs, oc)
		env.Logf("multipath %s: %.2fs %d probes %d/%d links %d false %s", oc.Tool, oc.Seconds, oc.Probes, oc.Found, oc.Total, oc.False, oc.Error)
	} else {
		res.Notes = append(res.Notes, "scamper tracelb skipped: not installed")
	}
	if Have("dublin-traceroute") {
		outs = append(outs, runDublin(ctx, env, dst, truth))
		res.Commands = append(res.Commands, outs[len(outs)-1].Command)
	} else {
		res.Notes = append(res.Notes, "dublin-traceroute skipped: not installed")
	}
	t := Table{Title: "One relay, fast profile: 198.19.1.1", Columns: []string{"tool", "wall time", "probes", "links found", "false links", "reached", "routers"}}
	for _, o := range outs {
		if o.Error != "" {
			t.Rows = append(t.Rows, []string{o.Tool, "error: " + o.Error, "", "", "", "", ""})
			continue
		}
		routers := o.Routers
		if routers == "" {
			routers = "–"
		}
		t.Rows = append(t.Rows, []string{o.Tool, fmt.Sprintf("%.2f s", o.Seconds), strconv.Itoa(o.Probes),
			fmt.Sprintf("%d/%d", o.Found, o.Total), strconv.Itoa(o.False), yesNo(o.Reached), routers})
	}
	res.Tables = append(res.Tables, t)
	raw["one_relay"] = outs
	for _, o := range outs {
		if o.Tool == "scamper tracelb" && o.Error == "" && o.Probes > 0 && len(tpProbes) > 0 {
			slices.Sort(tpProbes)
			med := tpProbes[len(tpProbes)/2]
			res.Headlines = append(res.Headlines, fmt.Sprintf("Multipath to one relay whose routers answer from their inbound interfaces: "+
				"turnpath %d probes (median of %d runs), %.0f %% of scamper tracelb's %d in the same run; routers resolved from the replies' IP IDs.",
				med, len(tpProbes), 100*float64(med)/float64(o.Probes), o.Probes))
		}
	}

	// Many relays.
	mt := Table{Title: "Many relays", Columns: []string{"profile", "relays", "options", "wall time", "probes", "per relay", "joined", "every link", "false links", "reached", "routers"}}
	var many []map[string]any
	for _, c := range []struct {
		profile string
		count   int // 0: every relay
		join    bool
	}{{lab.ProfileFast, 0, true}, {lab.ProfileFast, 0, false}, {lab.ProfileRealistic, 64, true}} {
		l, err := env.Lab(ctx, c.profile)
		if err != nil {
			return res, err
		}
		tr := l.Truth()
		targets := pickRelays(l.Topology(), c.count)
		var lines []string
		for _, a := range targets {
			lines = append(lines, a.String())
		}
		list := filepath.Join(env.Dir, fmt.Sprintf("mp-relays-%s-%d.txt", c.profile, len(targets)))
		if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			return res, err
		}
		opts := "--rate 10000"
		argv := []string{env.Turnpath, "multipath", "-n", "--format", "json", "--rate", "10000"}
		if !c.join {
			argv = append(argv, "--join=false")
			opts += " --join=false"
		}
		argv = append(argv, "-f", list)
		o := env.Exec(ctx, 10*time.Minute, argv...)
		row := []string{c.profile, strconv.Itoa(len(targets)), "`" + opts + "`", fmt.Sprintf("%.2f s", o.Wall.Seconds()), "", "", "", "", "", "", ""}
		rec := map[string]any{"profile": c.profile, "relays": len(targets), "options": opts, "seconds": o.Wall.Seconds(), "exit_code": o.ExitCode}
		if s, err := scoreMultipath(o.Stdout, tr); err != nil || o.ExitCode != 0 {
			row[4] = fmt.Sprintf("error: exit %d %v %s", o.ExitCode, err, firstLine(string(o.Stderr)))
		} else {
			row[4], row[5] = strconv.Itoa(s.Probes), fmt.Sprintf("%.1f", float64(s.Probes)/float64(max(s.Targets, 1)))
			row[6], row[7] = fmt.Sprintf("%d/%d", s.Joined, s.Targets), fmt.Sprintf("%d/%d", s.Complete, s.Targets)
			row[8], row[9], row[10] = strconv.Itoa(s.False), fmt.Sprintf("%d/%d", s.Reached, s.Targets), s.routers()
			rec["score"] = s
			env.Logf("multipath many %s %d %s: %.2fs %d probes (%.1f/relay) complete %d/%d false %d", c.profile, len(targets), opts,
				o.Wall.Seconds(), s.Probes, float64(s.Probes)/float64(max(s.Targets, 1)), s.Complete, s.Targets, s.False)
			if c.join {
				res.Headlines = append(res.Headlines, fmt.Sprintf("Multipath to %d relays (%s profile, `%s`): %.1f s, %.1f probes per relay, "+
					"every link for %d/%d, %d false.", len(targets), c.profile, opts, o.Wall.Seconds(), float64(s.Probes)/float64(max(s.Targets, 1)),
					s.Complete, s.Targets, s.False))
			}
		}
		many = append(many, rec)
		mt.Rows = append(mt.Rows, row)
		res.Commands = append(res.Commands, env.display(argv))
		if ctx.Err() != nil {
			break
		}
	}
	res.Tables = append(res.Tables, mt)
	raw["many"] = many
	res.Raw = raw
	return res, ctx.Err()
}

// pickRelays returns every relay of the lab (n 0), or n of them spread over the groups
// and families: the first n/4 of each.
func pickRelays(topo *lab.Topology, n int) []netip.Addr {
	all := topo.AllTargets()
	if n <= 0 || n >= len(all) {
		return all
	}
	var out []netip.Addr
	for _, g := range topo.Groups {
		var v4, v6 []netip.Addr
		for _, a := range g.Targets() {
			if a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		per := n / (2 * len(topo.Groups))
		out = append(out, v4[:min(per, len(v4))]...)
		out = append(out, v6[:min(per, len(v6))]...)
	}
	return out
}

// runDublin runs dublin-traceroute (20 flows, destination ports 3478..3497) in a scratch
// directory and scores the trace.json it writes. It will not start without a default
// route: one into the lab is added for it, and removed.
func runDublin(ctx context.Context, env *Env, dst netip.Addr, truth map[[2]string]bool) mpOutcome {
	oc := mpOutcome{Tool: "dublin-traceroute", Command: "dublin-traceroute " + dst.String() + " --dport=3478 --max-ttl=12"}
	dir, err := os.MkdirTemp(env.Dir, "dublin")
	if err != nil {
		oc.Error = err.Error()
		return oc
	}
	gw := "198.18.1.2"
	if o := env.Exec(ctx, 10*time.Second, "ip", "route", "replace", "default", "via", gw); o.ExitCode != 0 {
		oc.Error = "add default route into the lab: " + firstLine(string(o.Stderr))
		return oc
	}
	defer env.Exec(context.Background(), 10*time.Second, "ip", "route", "del", "default", "via", gw)
	o := env.Exec(ctx, 5*time.Minute, "sh", "-c", "cd "+dir+" && exec dublin-traceroute "+dst.String()+" --dport=3478 --max-ttl=12")
	oc.Seconds = o.Wall.Seconds()
	if o.Err != nil || o.ExitCode != 0 {
		oc.Error = fmt.Sprintf("exit %d: %v %s", o.ExitCode, o.Err, firstLine(string(o.Stderr)))
		return oc
	}
	b, err := os.ReadFile(filepath.Join(dir, "trace.json"))
	if err != nil {
		oc.Error = err.Error()
		return oc
	}
	links := map[[2]string]bool{}
	probes, reached, err := DublinLinks(b, dst, links)
	if err != nil {
		oc.Error = err.Error()
		return oc
	}
	oc.Probes, oc.Reached = probes, reached
	oc.score(links, truth)
	return oc
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// DublinLinks adds the links of dublin-traceroute's trace.json (b) to links: each flow's
// hops in TTL order, "*" where nothing answered. probes counts the probes it sent; reached:
// some flow reached dst. (scripts/mpcompare too.)
func DublinLinks(b []byte, dst netip.Addr, links map[[2]string]bool) (probes int, reached bool, err error) {
	var doc struct {
		Flows map[string][]struct {
			Received *struct {
				IP struct {
					Src string `json:"src"`
				} `json:"ip"`
			} `json:"received"`
		} `json:"flows"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, false, fmt.Errorf("parse trace.json: %w", err)
	}
	for _, hops := range doc.Flows {
		var seq []string
		for _, h := range hops {
			probes++
			if h.Received == nil {
				seq = append(seq, "*")
			} else {
				seq = append(seq, h.Received.IP.Src)
			}
		}
		reached = hopChain(links, seq, dst) || reached
	}
	return probes, reached, nil
}
