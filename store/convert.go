package store

import (
	"time"

	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/report"
)

// The views of what the commands report: the store keeps the path (who answered at each
// TTL, how fast, how much was lost), not the report's every probe.

func ptr(x float64) *float64 { return &x }

// asNumber is the AS number a lookup found; nil for none (no lookup, a private address,
// a failed lookup), so that history compares only numbers that were known both times.
func asNumber(in *asn.Info) *int64 {
	if in == nil || in.Private || in.Failed || in.ASN == 0 {
		return nil
	}
	n := int64(in.ASN)
	return &n
}

// TraceView is the view of one target of a trace report.
func TraceView(t report.Target) View {
	v := View{Time: t.Started.UTC(), Name: t.Name, Address: t.Address, Source: t.Source,
		Reached: t.Reached, DestTTL: t.DestTTL, Sent: t.Sent}
	for _, h := range t.Hops {
		count := map[string]int{}
		for _, p := range h.Probes {
			if p.Answered && p.From != "" {
				count[p.From]++
			}
		}
		hop := Hop{TTL: h.TTL, Sent: h.Sent, Received: h.Received, Loss: ptr(h.LossPct),
			RTTMin: h.MinMS, RTTAvg: h.AvgMS, RTTMax: h.MaxMS}
		for i, a := range h.Addresses {
			r := Responder{Address: a, Count: count[a]}
			if len(h.AS) == len(h.Addresses) { // --asn
				r.ASN = asNumber(&h.AS[i])
			}
			hop.Responders = append(hop.Responders, r)
		}
		if t.Reached && h.TTL == t.DestTTL {
			v.PathLoss = ptr(h.LossPct)
		}
		v.Hops = append(v.Hops, hop)
	}
	return v
}

// MultipathView is the view of one target of a multipath report: every node that
// answered at each TTL (silent hops are no responders), and the links between nodes.
func MultipathView(t report.MultipathDocTarget, at time.Time) View {
	v := View{Time: at.UTC(), Name: t.Name, Address: t.Address, Source: t.Source, Reached: t.Reached, Sent: t.Sent}
	for i, d := range t.DestTTLs {
		if i == 0 || d < v.DestTTL {
			v.DestTTL = d
		}
		v.DestTTLMax = max(v.DestTTLMax, d)
	}
	nodes := map[string]report.MultipathDocNode{}
	for _, n := range t.Nodes {
		nodes[n.ID] = n
	}
	for _, h := range t.Hops {
		hop := Hop{TTL: h.TTL}
		for _, id := range h.Nodes {
			n := nodes[id]
			if n.Address == "" {
				continue
			}
			hop.Responders = append(hop.Responders, Responder{Address: n.Address, Count: n.Flows, RTTAvg: n.AvgMS, ASN: asNumber(n.AS)})
			if hop.RTTAvg == nil || n.AvgMS != nil && *n.AvgMS < *hop.RTTAvg {
				hop.RTTMin, hop.RTTAvg = n.MinMS, n.AvgMS // the fastest branch
			}
		}
		v.Hops = append(v.Hops, hop)
	}
	for _, l := range t.Links {
		v.Links = append(v.Links, Link{From: l.From, To: l.To, Flows: l.Flows, TTLs: l.TTLs})
	}
	return v
}

// MonitorView is the view of one target of a monitor snapshot: interval seq, at the
// snapshot's time, statistics since the run began (as the report shows them).
func MonitorView(ts monitor.TargetSnapshot, at time.Time, seq int, name, address, source string) View {
	v := View{Seq: seq, Time: at.UTC(), Name: name, Address: address, Source: source,
		Reached: ts.DestTTL > 0, DestTTL: ts.DestTTL}
	if ts.PathLossKnown {
		v.PathLoss = ptr(ts.PathLoss)
	}
	for _, h := range ts.Hops {
		hop := Hop{TTL: h.TTL, Sent: h.Sent, Received: h.Received, Loss: ptr(h.Loss), Forward: ptr(h.Forward), Reply: ptr(h.Reply)}
		v.Sent += h.Sent
		if h.Received > 0 {
			hop.RTTMin, hop.RTTAvg, hop.RTTMax, hop.Jitter = ptr(h.Best), ptr(h.Avg), ptr(h.Worst), ptr(h.Jitter)
		}
		for _, r := range h.Responders {
			hop.Responders = append(hop.Responders, Responder{Address: r.Addr.String(), Count: r.Count})
		}
		v.Hops = append(v.Hops, hop)
	}
	return v
}
