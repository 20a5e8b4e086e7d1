package main

import (
	"net/netip"
	"time"

	"github.com/turnpath/turnpath/mda"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/session"
	"github.com/urfave/cli/v2"
)

// newMultipathRun assembles the report: one target per graph, PTR names unless -n.
// unfinished (non-nil when the run stopped) holds the targets it stopped in the middle
// of; targets it had not sent a probe for are left out.
func newMultipathRun(c *cli.Context, mf *multipathFlags, sess *session.Session, eng, why string, started time.Time, infos []targetRoute, gs []*mda.Graph, unfinished map[int]bool) *report.MultipathRun {
	mode := "mda-lite"
	if mf.opts.Full {
		mode = "mda"
	}
	run := &report.MultipathRun{Schema: report.MultipathSchema, Version: version, Engine: eng, EngineReason: why,
		Started: started.UTC(), Finished: time.Now().UTC(), Options: report.MultipathOptions{
			Proto: c.String("proto"), Port: mf.port, Payload: mf.payload.String(), FlowBase: mf.opts.FlowBase,
			Confidence: mf.opts.Confidence, Mode: mode, Level: mf.level, FirstTTL: mf.opts.FirstTTL, MaxTTL: mf.opts.MaxTTL}}
	var addrs []netip.Addr
	for _, g := range gs {
		for _, n := range g.Nodes {
			if n.Addr.IsValid() {
				addrs = append(addrs, n.Addr)
			}
		}
	}
	namer := report.Namer(sess.Names(addrs))
	run.ASN = sess.ASNStats()
	// Targets an interrupted run never probed are left out (the caller counts them), as
	// trace does.
	for i, in := range infos[:min(len(infos), len(gs))] {
		if unfinished != nil && gs[i].Sent == 0 {
			continue
		}
		fam := 6
		if in.target.Addr.Is4() {
			fam = 4
		}
		g := gs[i]
		if mf.level == "router" && g != nil {
			g = g.RouterGraph()
		}
		t := report.MultipathTarget{Name: in.target.Name, Addr: in.target.Addr, Source: in.src, Family: fam, Names: namer, AS: sess.ASOf(), Graph: g}
		if unfinished[i] {
			t.Notes = append(t.Notes, "interrupted: the exploration did not finish")
		}
		run.Targets = append(run.Targets, t)
	}
	return run
}
