package report

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/turnpath/turnpath/monitor"
)

// MonitorSchema names the JSON document of `monitor --format json`.
const MonitorSchema = "turnpath.monitor/v1"

// MonitorRun is the turnpath.monitor/v1 document (`turnpath monitor --format json`); the
// text report prints the same.
type MonitorRun struct {
	Schema       string            `json:"schema"`
	Version      string            `json:"version"`
	Engine       string            `json:"engine"`
	EngineReason string            `json:"engine_reason,omitempty"`
	Started      time.Time         `json:"started"`
	Finished     time.Time         `json:"finished"`
	Rounds       int               `json:"rounds"`
	Options      MonitorOptions    `json:"options"`
	Thresholds   MonitorThresholds `json:"thresholds"`
	Targets      []MonitorTarget   `json:"targets"`
}

type MonitorOptions struct {
	Proto      string  `json:"proto"`
	Port       uint16  `json:"port"`
	SPort      uint16  `json:"sport"`
	Payload    string  `json:"payload"`
	FirstTTL   int     `json:"first_ttl"`
	MaxTTL     int     `json:"max_ttl"`
	IntervalMS float64 `json:"interval_ms"`
	Cycles     int     `json:"cycles"`
	WaitMS     float64 `json:"wait_ms"`
	Rate       float64 `json:"rate"`
}

type MonitorThresholds struct {
	Name     string  `json:"name"`
	RTTMS    float64 `json:"rtt_ms"`
	LossPct  float64 `json:"loss_pct"`
	JitterMS float64 `json:"jitter_ms"`
}

type MonitorTarget struct {
	Target  string     `json:"target"`
	Addr    netip.Addr `json:"addr"`
	Source  netip.Addr `json:"source"`
	Reached bool       `json:"reached"`
	DestTTL int        `json:"dest_ttl,omitempty"`
	// PathLoss is null while the destination never answered: unknown, not 100 %.
	PathLoss   *float64       `json:"path_loss_pct"`
	Verdict    MonitorVerdict `json:"verdict"`
	Late       int            `json:"late_replies"`
	Duplicates int            `json:"duplicate_replies"`
	Events     []MonitorEvent `json:"events"`
	Hops       []MonitorHop   `json:"hops"`
}

type MonitorVerdict struct {
	Pass     bool     `json:"pass"`
	Reasons  []string `json:"reasons"`
	FirstTTL int      `json:"first_ttl,omitempty"`
}

type MonitorEvent struct {
	Time   time.Time   `json:"time"`
	Round  int         `json:"round"`
	Kind   string      `json:"kind"`
	TTL    int         `json:"ttl"`
	From   *netip.Addr `json:"from,omitempty"`
	OldTTL int         `json:"old_ttl,omitempty"`
}

type MonitorHop struct {
	TTL        int                `json:"ttl"`
	Sent       int                `json:"sent"`
	Received   int                `json:"received"`
	Silent     bool               `json:"silent"`
	Loss       float64            `json:"loss_pct"`
	Forward    float64            `json:"forward_loss_pct"`
	Reply      float64            `json:"reply_loss_pct"`
	Last       float64            `json:"last_ms"`
	Avg        float64            `json:"avg_ms"`
	Best       float64            `json:"best_ms"`
	Worst      float64            `json:"worst_ms"`
	StdDev     float64            `json:"stdev_ms"`
	Gmean      float64            `json:"gmean_ms"`
	Jitter     float64            `json:"jitter_ms"`
	JitterMean float64            `json:"jitter_avg_ms"`
	JitterMax  float64            `json:"jitter_max_ms"`
	Interarr   float64            `json:"interarrival_jitter_ms"` // RFC 3550's J, not mtr's 16·J
	Responders []MonitorResponder `json:"responders"`
}

type MonitorResponder struct {
	Addr  netip.Addr `json:"addr"`
	Name  string     `json:"name,omitempty"`
	Count int        `json:"count"`
	Share float64    `json:"share"`
}

// BuildMonitorTarget assembles one monitored target's report: statistics from hopstat,
// loss attribution and the verdict from monitor; names (nil: none) for the responders.
func BuildMonitorTarget(info TargetInfo, t *monitor.Target, th monitor.Thresholds, names Namer) MonitorTarget {
	ts := t.Snapshot()
	td := MonitorTarget{Target: info.Name, Addr: info.Addr, Source: info.Source, Reached: t.Reached(), DestTTL: ts.DestTTL,
		Late: ts.Late, Duplicates: ts.Dups, Events: []MonitorEvent{}, Hops: []MonitorHop{}}
	if ts.PathLossKnown {
		td.PathLoss = &ts.PathLoss
	}
	v := t.Judge(th)
	td.Verdict = MonitorVerdict{Pass: v.Pass, Reasons: v.Reasons, FirstTTL: v.FirstTTL}
	if td.Verdict.Reasons == nil {
		td.Verdict.Reasons = []string{}
	}
	for _, e := range t.Events {
		ed := MonitorEvent{Time: e.Time.UTC(), Round: e.Round, Kind: string(e.Kind), TTL: e.TTL, OldTTL: e.OldTTL}
		if e.From.IsValid() {
			ed.From = &e.From
		}
		td.Events = append(td.Events, ed)
	}
	for _, h := range ts.Hops {
		td.Hops = append(td.Hops, MonitorHopOf(h, names))
	}
	return td
}

// MonitorHopOf is one hop of a snapshot (monitor.Target.Snapshot) as the outputs show
// it; names (nil: none) for its responders.
func MonitorHopOf(h monitor.HopSnapshot, names Namer) MonitorHop {
	hd := MonitorHop{TTL: h.TTL, Sent: h.Sent, Received: h.Received, Silent: h.Silent,
		Loss: h.Loss, Forward: h.Forward, Reply: h.Reply, Last: h.Last, Avg: h.Avg,
		Best: h.Best, Worst: h.Worst, StdDev: h.StdDev, Gmean: h.Gmean, Jitter: h.Jitter,
		JitterMean: h.JitterMean, JitterMax: h.JitterMax, Interarr: h.Interarrival,
		Responders: []MonitorResponder{}}
	for _, r := range h.Responders {
		rd := MonitorResponder{Addr: r.Addr, Count: r.Count, Share: r.Share}
		if names != nil {
			rd.Name = names(r.Addr)
		}
		hd.Responders = append(hd.Responders, rd)
	}
	return hd
}

// MonitorHeader is the header of the monitor table with a host column w wide: the text
// report's and the live view's.
func MonitorHeader(w int) string {
	return fmt.Sprintf("%-4s %-*s %6s %6s %6s %5s %7s %7s %7s %7s %7s %7s\n",
		"TTL", w, "Host", "Loss%", "Fwd%", "Rpl%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev", "Javg")
}

// MonitorRow is hop h's line of the monitor table, host in a column w wide ("???" and
// "silent" for a hop that never answered).
func MonitorRow(h MonitorHop, host string, w int) string {
	if h.Silent {
		return fmt.Sprintf("%3d. %-*s %6s %6s %6s %5d\n", h.TTL, w, "???", "silent", "-", "-", h.Sent)
	}
	return fmt.Sprintf("%3d. %-*s %6.1f %6.1f %6.1f %5d %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f\n",
		h.TTL, w, host, h.Loss, h.Forward, h.Reply, h.Sent, h.Last, h.Avg, h.Best, h.Worst, h.StdDev, h.JitterMean)
}

// WriteMonitorJSON writes the document, indented.
func WriteMonitorJSON(w io.Writer, run *MonitorRun) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(run)
}

// WriteMonitorText prints an mtr --report-style table per target, with the loss split
// into forward (Fwd%) and reply (Rpl%) loss, and the verdict.
func WriteMonitorText(w io.Writer, doc *MonitorRun) error {
	var b strings.Builder
	for i, t := range doc.Targets {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "turnpath monitor to %s (%s) from %s, %d rounds every %gms, engine %s\n",
			t.Target, t.Addr, t.Source, doc.Rounds, doc.Options.IntervalMS, doc.Engine)
		hostOf := func(h MonitorHop, r MonitorResponder) string {
			host := r.Addr.String()
			if r.Name != "" {
				host = r.Name + " (" + host + ")"
			}
			if len(h.Responders) > 1 {
				host += fmt.Sprintf(" %.0f%%", 100*r.Share)
			}
			return host
		}
		// The host column is as wide as its longest entry, so names keep the columns
		// aligned (mtr cuts them instead).
		w := 40
		for _, h := range t.Hops {
			for _, r := range h.Responders {
				w = max(w, len(hostOf(h, r)))
			}
		}
		b.WriteString(MonitorHeader(w))
		for _, h := range t.Hops {
			if h.Silent {
				b.WriteString(MonitorRow(h, "", w))
				continue
			}
			for k, r := range h.Responders {
				host := hostOf(h, r)
				if k > 0 {
					fmt.Fprintf(&b, "     %s\n", host)
					continue
				}
				b.WriteString(MonitorRow(h, host, w))
			}
		}
		switch {
		case t.PathLoss != nil:
			fmt.Fprintf(&b, "path loss %.1f%% (the destination's own answers)\n", *t.PathLoss)
		default:
			b.WriteString("path loss unknown: the destination did not answer\n")
		}
		for _, e := range t.Events {
			switch e.Kind {
			case string(monitor.NewResponder):
				fmt.Fprintf(&b, "event %s round %d: new responder %s at TTL %d\n", e.Time.Format(time.RFC3339), e.Round, e.From, e.TTL)
			default:
				fmt.Fprintf(&b, "event %s round %d: destination distance %d, was %d\n", e.Time.Format(time.RFC3339), e.Round, e.TTL, e.OldTTL)
			}
		}
		th := doc.Thresholds
		limits := fmt.Sprintf("%s: RTT < %g ms, path loss < %g %%, jitter < %g ms", th.Name, th.RTTMS, th.LossPct, th.JitterMS)
		if t.Verdict.Pass {
			fmt.Fprintf(&b, "verdict: pass (%s)\n", limits)
			continue
		}
		fmt.Fprintf(&b, "verdict: FAIL: %s (%s)", strings.Join(t.Verdict.Reasons, "; "), limits)
		if t.Verdict.FirstTTL > 0 {
			fmt.Fprintf(&b, "; first appears at TTL %d", t.Verdict.FirstTTL)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
