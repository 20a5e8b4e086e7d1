package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"github.com/turnpath/turnpath/asn"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/turnpath/turnpath/monitor"
)

// MonitorSchema names the JSON document of `monitor --format json`.
const MonitorSchema = "turnpath.monitor/v1"

// MonitorRun is the turnpath.monitor/v1 document (`turnpath monitor --format json`); the
// text report prints the same.
type MonitorRun struct {
	Schema       string         `json:"schema"`
	Version      string         `json:"version"`
	Engine       string         `json:"engine"`
	EngineReason string         `json:"engine_reason,omitempty"`
	Started      time.Time      `json:"started"`
	Finished     time.Time      `json:"finished"`
	Rounds       int            `json:"rounds"`
	Slipped      int            `json:"slipped_rounds"`
	Options      MonitorOptions `json:"options"`
	// Thresholds is null without a verdict (--verdict none).
	Thresholds *MonitorThresholds `json:"thresholds"`
	Outages    []MonitorOutage    `json:"outages"`
	Targets    []MonitorTarget    `json:"targets"`
	// ASN counts the AS lookups (--asn; absent without).
	ASN *asn.Stats `json:"asn_lookups,omitempty"`
}

// MonitorOutage is a time the run could not probe (monitor.Outage).
type MonitorOutage struct {
	Start time.Time `json:"start"`
	// End is null when the run ended during the outage.
	End   *time.Time `json:"end"`
	Cause string     `json:"cause"`
}

// MonitorRecord is one line of `monitor --format jsonl`: a target's statistics so far,
// every --emit and once more at the end (final).
type MonitorRecord struct {
	Schema  string    `json:"schema"`
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	Rounds  int       `json:"rounds"`
	Final   bool      `json:"final"`
	// Outages counts the run's outages so far; Down is set in the record written when
	// one begins (the way out is lost: the run waits for it).
	Outages int  `json:"outages"`
	Down    bool `json:"down,omitempty"`
	MonitorTarget
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
	PathLoss *float64 `json:"path_loss_pct"`
	// Verdict is null without a verdict (--verdict none).
	Verdict    *MonitorVerdict `json:"verdict"`
	Late       int             `json:"late_replies"`
	Duplicates int             `json:"duplicate_replies"`
	// Events are the path changes kept (the newest 1000; EventsDropped older ones are not).
	Events        []MonitorEvent `json:"events"`
	EventsDropped int            `json:"events_dropped,omitempty"`
	Hops          []MonitorHop   `json:"hops"`
	// ASPath is the ASes the path crosses (--asn), as in trace.
	ASPath []string `json:"as_path,omitempty"`
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
	TTL      int  `json:"ttl"`
	Sent     int  `json:"sent"`
	Received int  `json:"received"`
	Silent   bool `json:"silent"`
	// RateLimited: never answered this target, though a router answered others there.
	RateLimited bool               `json:"rate_limited,omitempty"`
	Loss        float64            `json:"loss_pct"`
	Forward     float64            `json:"forward_loss_pct"`
	Reply       float64            `json:"reply_loss_pct"`
	Last        float64            `json:"last_ms"`
	Avg         float64            `json:"avg_ms"`
	Best        float64            `json:"best_ms"`
	Worst       float64            `json:"worst_ms"`
	StdDev      float64            `json:"stdev_ms"`
	Gmean       float64            `json:"gmean_ms"`
	Jitter      float64            `json:"jitter_ms"`
	JitterMean  float64            `json:"jitter_avg_ms"`
	JitterMax   float64            `json:"jitter_max_ms"`
	Interarr    float64            `json:"interarrival_jitter_ms"` // RFC 3550's J, not mtr's 16·J
	Responders  []MonitorResponder `json:"responders"`
}

type MonitorResponder struct {
	Addr  netip.Addr `json:"addr"`
	Name  string     `json:"name,omitempty"`
	AS    *asn.Info  `json:"as,omitempty"` // --asn
	Count int        `json:"count"`
	Share float64    `json:"share"`
}

// BuildMonitorTarget assembles one monitored target's report from its snapshot
// (monitor.Target.Snapshot with events): statistics from hopstat, loss attribution and
// the verdict (th nil: none) from monitor; names (nil: none) for the responders.
func BuildMonitorTarget(info TargetInfo, ts monitor.TargetSnapshot, th *monitor.Thresholds, names Namer) MonitorTarget {
	td := MonitorTarget{Target: info.Name, Addr: info.Addr, Source: info.Source, Reached: ts.DestTTL != 0, DestTTL: ts.DestTTL,
		Late: ts.Late, Duplicates: ts.Dups, Events: []MonitorEvent{}, EventsDropped: ts.EventsDropped, Hops: []MonitorHop{}}
	if ts.PathLossKnown {
		td.PathLoss = &ts.PathLoss
	}
	if th != nil {
		v := ts.Judge(*th)
		td.Verdict = &MonitorVerdict{Pass: v.Pass, Reasons: v.Reasons, FirstTTL: v.FirstTTL}
		if td.Verdict.Reasons == nil {
			td.Verdict.Reasons = []string{}
		}
	}
	td.Events = MonitorEvents(ts.Changes)
	for _, h := range ts.Hops {
		hd := MonitorHopOf(h, names)
		if info.AS != nil {
			for k := range hd.Responders {
				in := info.AS(hd.Responders[k].Addr)
				hd.Responders[k].AS = &in
				if k == 0 {
					td.ASPath = appendAS(td.ASPath, in)
				}
			}
		}
		td.Hops = append(td.Hops, hd)
	}
	if info.AS != nil && td.ASPath == nil {
		td.ASPath = []string{}
	}
	return td
}

// MonitorEvents are path changes as the outputs show them.
func MonitorEvents(evs []monitor.Event) []MonitorEvent {
	out := make([]MonitorEvent, 0, len(evs))
	for _, e := range evs {
		ed := MonitorEvent{Time: e.Time.UTC(), Round: e.Round, Kind: string(e.Kind), TTL: e.TTL, OldTTL: e.OldTTL}
		if e.From.IsValid() {
			ed.From = &e.From
		}
		out = append(out, ed)
	}
	return out
}

// MonitorOutages are a run's outages as the outputs show them.
func MonitorOutages(os []monitor.Outage) []MonitorOutage {
	out := make([]MonitorOutage, 0, len(os))
	for _, o := range os {
		od := MonitorOutage{Start: o.Start.UTC(), Cause: o.Cause}
		if !o.End.IsZero() {
			end := o.End.UTC()
			od.End = &end
		}
		out = append(out, od)
	}
	return out
}

// MonitorHopOf is one hop of a snapshot (monitor.Target.Snapshot) as the outputs show
// it; names (nil: none) for its responders.
func MonitorHopOf(h monitor.HopSnapshot, names Namer) MonitorHop {
	hd := MonitorHop{TTL: h.TTL, Sent: h.Sent, Received: h.Received, Silent: h.Silent, RateLimited: h.RateLimited,
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
	switch {
	case h.Silent:
		return fmt.Sprintf("%3d. %-*s %6s %6s %6s %5d\n", h.TTL, w, "???", "silent", "-", "-", h.Sent)
	case h.RateLimited:
		return fmt.Sprintf("%3d. %-*s %6s %6s %6s %5d  rate-limited: answers other targets\n", h.TTL, w, "???", "-", "-", "-", h.Sent)
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
	for _, o := range doc.Outages {
		end := "the end of the run"
		if o.End != nil {
			end = o.End.Format(time.RFC3339) + fmt.Sprintf(" (%.1f s)", o.End.Sub(o.Start).Seconds())
		}
		fmt.Fprintf(&b, "outage %s to %s: %s\n", o.Start.Format(time.RFC3339), end, o.Cause)
	}
	if doc.Slipped > 0 {
		fmt.Fprintf(&b, "%d rounds started late: the probes of a round did not fit in --interval at --rate %g/s\n", doc.Slipped, doc.Options.Rate)
	}
	for i, t := range doc.Targets {
		if i > 0 || b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "turnpath monitor to %s (%s) from %s, %d rounds every %gms, engine %s\n",
			t.Target, t.Addr, t.Source, doc.Rounds, doc.Options.IntervalMS, doc.Engine)
		hostOf := func(h MonitorHop, r MonitorResponder) string {
			host := r.Addr.String()
			if r.Name != "" {
				host = r.Name + " (" + host + ")"
			}
			if r.AS != nil {
				host = r.AS.String() + " " + host // as mtr -z
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
			if h.Silent || h.RateLimited {
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
			fmt.Fprintf(&b, "path loss %.1f%% (the destination's own answers)", *t.PathLoss)
		default:
			b.WriteString("path loss unknown: the destination did not answer")
		}
		if t.ASPath != nil {
			fmt.Fprintf(&b, "; AS path %s", strings.Join(t.ASPath, " "))
		}
		b.WriteString("\n")
		if t.EventsDropped > 0 {
			fmt.Fprintf(&b, "(%d older path changes not kept)\n", t.EventsDropped)
		}
		for _, e := range t.Events {
			at := fmt.Sprintf("event %s round %d:", e.Time.Format(time.RFC3339), e.Round)
			switch e.Kind {
			case string(monitor.NewResponder):
				fmt.Fprintf(&b, "%s new responder %s at TTL %d\n", at, e.From, e.TTL)
			case string(monitor.NewRoute):
				fmt.Fprintf(&b, "%s probes leave by another interface or source after the outage\n", at)
			default:
				fmt.Fprintf(&b, "%s destination distance %d, was %d\n", at, e.TTL, e.OldTTL)
			}
		}
		th := doc.Thresholds
		if th == nil || t.Verdict == nil {
			continue
		}
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

// MonitorCSVHeader is the first line of `monitor --format csv`: one row per hop of each
// target, every --emit and at the end (final).
var MonitorCSVHeader = []string{"time", "final", "rounds", "target", "address", "reached", "path_loss_pct", "verdict",
	"ttl", "silent", "sent", "received", "loss_pct", "forward_loss_pct", "reply_loss_pct", "last_ms", "avg_ms",
	"best_ms", "worst_ms", "stdev_ms", "gmean_ms", "jitter_ms", "jitter_avg_ms", "jitter_max_ms",
	"interarrival_jitter_ms", "responders", "rate_limited"}

// MonitorCSV writes monitor records as CSV rows; the header comes once.
type MonitorCSV struct {
	w      *csv.Writer
	header bool
}

// NewMonitorCSV starts a CSV stream.
func NewMonitorCSV(w io.Writer) *MonitorCSV { return &MonitorCSV{w: csv.NewWriter(w)} }

// Write writes rec's hops, one row each, and flushes.
func (c *MonitorCSV) Write(rec MonitorRecord) error {
	if !c.header {
		c.header = true
		if err := c.w.Write(MonitorCSVHeader); err != nil {
			return err
		}
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	pathLoss, verdict := "", ""
	if rec.PathLoss != nil {
		pathLoss = f(*rec.PathLoss)
	}
	if rec.Verdict != nil {
		verdict = "fail"
		if rec.Verdict.Pass {
			verdict = "pass"
		}
	}
	for _, h := range rec.Hops {
		var rs []string
		for _, r := range h.Responders {
			rs = append(rs, r.Addr.String()+"="+strconv.FormatFloat(r.Share, 'f', 3, 64))
		}
		row := []string{rec.Time.Format(time.RFC3339Nano), strconv.FormatBool(rec.Final), strconv.Itoa(rec.Rounds),
			rec.Target, rec.Addr.String(), strconv.FormatBool(rec.Reached), pathLoss, verdict,
			strconv.Itoa(h.TTL), strconv.FormatBool(h.Silent), strconv.Itoa(h.Sent), strconv.Itoa(h.Received),
			f(h.Loss), f(h.Forward), f(h.Reply), f(h.Last), f(h.Avg), f(h.Best), f(h.Worst), f(h.StdDev),
			f(h.Gmean), f(h.Jitter), f(h.JitterMean), f(h.JitterMax), f(h.Interarr), strings.Join(rs, ";"),
			strconv.FormatBool(h.RateLimited)}
		if err := c.w.Write(row); err != nil {
			return err
		}
	}
	c.w.Flush()
	return c.w.Error()
}

// WriteMonitorRecord writes rec as one JSON line.
func WriteMonitorRecord(w io.Writer, rec MonitorRecord) error {
	return json.NewEncoder(w).Encode(rec)
}
