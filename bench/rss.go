package bench

import (
	"context"
	"time"

	"github.com/turnpath/turnpath/reflector"
)

// Peak RSS of a turnpath run: reflector.(*Net).PeakRSSOf measures it through GNU time,
// so the runner's own memory cannot leak in (see there).

// RSSOptions are one peak-RSS measurement.
type RSSOptions struct {
	Turnpath string   // the binary
	List     string   // file with Targets target addresses, one a line (WriteTargets)
	Targets  int      // lines in List
	Engine   string   // "ebpf" or "socket"
	Args     []string // trace flags after `-f LIST --format jsonl -n --engine ENGINE`
	Timeout  time.Duration
}

// RSSArgv is the command PeakRSS runs (inside the prober namespace, rssFile is time's output).
func RSSArgv(ns, rssFile string, o RSSOptions) []string {
	return reflector.RSSArgv(ns, rssFile, o.Turnpath, o.List, o.Engine, o.Args)
}

// PeakRSS runs turnpath over the list in n's prober namespace and returns its peak RSS
// (in reflector.RSSResult, with the jsonl lines and reached targets counted). Exit code 1
// (some target not reached) is not an error.
func PeakRSS(ctx context.Context, n *reflector.Net, o RSSOptions) (reflector.RSSResult, error) {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	return n.PeakRSSOf(ctx, o.Turnpath, o.List, o.Targets, reflector.RSSOptions{Engine: o.Engine, Args: o.Args, Timeout: o.Timeout})
}

// WriteTargets writes the first n IPv4 targets the reflector answers for
// (reflector.Target(0..n-1)), one a line.
func WriteTargets(path string, n int) error { return reflector.WriteTargets(path, n, false) }
