package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/lab"
)

// Many relays under routers' ICMP limits: every relay address of the lab (IPv4 and IPv6,
// both groups) traced in one run by `turnpath trace --scan` and by scamper, in the fast
// profile (no limits) and the realistic one (Linux's: a burst of 6 Time Exceeded, then one a
// second per router and prober). Hop recall counts TTLs right for each target (measured or
// inferred: an inferred hop with several candidates, its branch unmeasured, counts as not
// found, and no hop as wrong); union recall the lab's interfaces found by any target.

var scanProbers = []manyProber{
	{Name: "turnpath --scan", Options: "`trace --scan --rate 10000`",
		Argv: func(env *Env, list string) []string {
			return []string{env.Turnpath, "trace", "--scan", "-n", "--format", "json", "--rate", "10000", "-f", list}
		},
		Parse: func(out []byte) ([]*Observation, error) {
			_, obs, err := ParseTurnpathJSON(out)
			return obs, err
		}},
	{Name: "scamper", Tool: "scamper", Options: "`trace -P udp-paris -d 3478 -q 1 -w 1 -g 3 -m 15`, `-p 10000`",
		Argv: func(_ *Env, list string) []string {
			return []string{"scamper", "-O", "json", "-p", "10000", "-c", "trace -P udp-paris -d 3478 -q 1 -w 1 -g 3 -m 15", "-f", list}
		},
		Parse: ParseScamperJSON},
}

type scanRun struct {
	Profile string `json:"profile"`
	RunRecord
	Union      int `json:"union_found"`
	UnionTotal int `json:"union_total"`
}

func runScanBench(ctx context.Context, env *Env) (*Result, error) {
	res := &Result{Text: []string{"Every relay address of the lab (both target groups, IPv4 and IPv6) traced in one run " +
		"by `turnpath trace --scan` and by scamper, in the fast profile and in the realistic one (Linux routers' ICMP " +
		"limits: a burst of 6 Time Exceeded, then one a second per router and prober). Hop recall: TTLs right per target, " +
		"pooled (turnpath's inferred hops count when they name one interface; an inferred hop with several candidates, its " +
		"branch not measured, counts as not found). Union: the lab's router interfaces found by the run as a whole. One " +
		"round per profile and prober."}}
	var runs []scanRun
	t := Table{Columns: []string{"profile", "prober", "options", "wall time", "probes", "relays answered", "hop recall", "wrong", "union recall"}}
	for _, profile := range []string{lab.ProfileFast, lab.ProfileRealistic} {
		l, err := env.Lab(ctx, profile)
		if err != nil {
			return res, err
		}
		tr := l.Truth()
		targets := l.Topology().AllTargets()
		var lines []string
		union := map[netip.Addr]bool{}
		for _, a := range targets {
			lines = append(lines, a.String())
			tt, _ := tr.TargetTruth(a)
			for _, h := range tt.Hops() {
				for _, r := range h.Responders {
					if r.Addr.IsValid() && !r.Destination {
						union[r.Addr] = true
					}
				}
			}
		}
		list := filepath.Join(env.Dir, "relays-"+profile+".txt")
		if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			return res, err
		}
		for _, p := range scanProbers {
			if p.Tool != "" && !Have(p.Tool) {
				res.Notes = append(res.Notes, p.Name+" skipped: not installed")
				continue
			}
			rr, obs := runScored(ctx, env, p, list, tr, targets, 150*time.Second)
			rec := scanRun{Profile: profile, RunRecord: rr, UnionTotal: len(union)}
			if obs != nil {
				seen := map[netip.Addr]bool{}
				for _, ob := range obs {
					for _, as := range ob.Hops {
						for _, a := range as {
							if union[a] {
								seen[a] = true
							}
						}
					}
				}
				rec.Union = len(seen)
			}
			runs = append(runs, rec)
			row := []string{profile, p.Name, p.Options, fmt.Sprintf("%.2f s", rec.Seconds), "–", "–", "–", "–", "–"}
			if rec.Totals != nil {
				row[4], row[5] = strconv.Itoa(rec.Probes), fmt.Sprintf("%d/%d", rec.Totals.Reached, len(targets))
				row[6], row[7] = fmt.Sprintf("%.1f %%", 100*rec.Totals.Recall()), strconv.Itoa(rec.Totals.Wrong)
				row[8] = fmt.Sprintf("%d/%d (%.0f %%)", rec.Union, len(union), 100*float64(rec.Union)/float64(max(len(union), 1)))
				env.Logf("scan %-9s %-16s %6.2fs probes %d reached %d/%d recall %.1f%% union %d/%d", profile, p.Name, rec.Seconds,
					rec.Probes, rec.Totals.Reached, len(targets), 100*rec.Totals.Recall(), rec.Union, len(union))
			} else {
				res.Notes = append(res.Notes, fmt.Sprintf("%s, %s: %s", p.Name, profile, rec.Error))
			}
			t.Rows = append(t.Rows, row)
			if profile == lab.ProfileRealistic && p.Name == "turnpath --scan" && rec.Totals != nil {
				res.Headlines = append(res.Headlines, fmt.Sprintf("Many relays under real ICMP limits (%d addresses, realistic lab): "+
					"`trace --scan` %.1f s, every relay answered %d/%d, hop recall %.1f %%, union %d/%d interfaces, %d wrong.",
					len(targets), rec.Seconds, rec.Totals.Reached, len(targets), 100*rec.Totals.Recall(), rec.Union, len(union), rec.Totals.Wrong))
			}
			if ctx.Err() != nil {
				res.Raw = runs
				return res, ctx.Err()
			}
		}
		if len(res.Commands) == 0 {
			for _, p := range scanProbers {
				res.Commands = append(res.Commands, env.display(p.Argv(env, list)))
			}
		}
	}
	res.Tables = append(res.Tables, t)
	res.Raw = runs
	return res, nil
}
