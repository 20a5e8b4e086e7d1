package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Formats the trace command accepts.
var Formats = []string{"text", "json", "jsonl", "csv"}

// ValidFormat reports whether f is one of Formats.
func ValidFormat(f string) bool {
	for _, v := range Formats {
		if v == f {
			return true
		}
	}
	return false
}

// WriteJSON writes the whole run as one indented JSON document.
func WriteJSON(w io.Writer, r *Run) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// JSONLine is one line of `--format jsonl`: a target with the run's identity, so each line
// stands alone when a cron job appends them to a file.
type JSONLine struct {
	Schema  string  `json:"schema"`
	Version string  `json:"turnpath_version"`
	Engine  string  `json:"engine"`
	Options Options `json:"options"`
	Target
}

// WriteJSONLine writes one target as one line.
func WriteJSONLine(w io.Writer, r *Run, t Target) error {
	return json.NewEncoder(w).Encode(JSONLine{Schema: Schema, Version: r.Version, Engine: r.Engine, Options: r.Options, Target: t})
}

// CSVHeader is the first line of `--format csv`: one row per probe.
var CSVHeader = []string{"started", "target", "address", "reached", "ttl", "attempt", "answered", "from", "rtt_ms",
	"kind", "icmp_type", "icmp_code", "reply_ttl", "quoted_ttl", "nat", "mpls", "interfaces"}

// CSVASHeader are the columns AS lookups add (--asn): the responder's AS and its name.
var CSVASHeader = []string{"asn", "as_name"}

// CSVPMTUHeader are the columns PMTU adds (trace --pmtu): the target's path MTU and the
// MTU the hop's router reported, on every row.
var CSVPMTUHeader = []string{"path_mtu", "mtu"}

// CSV writes rows; the header comes once, before the first target.
type CSV struct {
	w      *csv.Writer
	header bool
	// PMTU adds the CSVPMTUHeader columns (set before the first Write).
	PMTU bool
	// AS adds the CSVASHeader columns (set before the first Write).
	AS bool
}

// NewCSV starts a CSV stream.
func NewCSV(w io.Writer) *CSV { return &CSV{w: csv.NewWriter(w)} }

// Write appends one target's probes.
func (c *CSV) Write(t Target) error {
	if !c.header {
		h := slices.Clone(CSVHeader)
		if c.PMTU {
			h = append(h, CSVPMTUHeader...)
		}
		if c.AS {
			h = append(h, CSVASHeader...)
		}
		if err := c.w.Write(h); err != nil {
			return err
		}
		c.header = true
	}
	for _, h := range t.Hops {
		for _, p := range h.Probes {
			row := []string{t.Started.UTC().Format("2006-01-02T15:04:05.000Z"), t.Name, t.Address, strconv.FormatBool(t.Reached),
				strconv.Itoa(h.TTL), strconv.Itoa(p.Attempt), strconv.FormatBool(p.Answered), p.From, "",
				p.Kind, "", "", "", "", p.NAT, mplsString(p.MPLS), ifaceString(p.Interfaces)}
			if p.Answered {
				row[8] = strconv.FormatFloat(p.RTTMS, 'f', 3, 64)
				row[10], row[11] = strconv.Itoa(int(p.ICMPType)), strconv.Itoa(int(p.ICMPCode))
				row[12], row[13] = strconv.Itoa(int(p.ReplyTTL)), strconv.Itoa(int(p.QuotedTTL))
			}
			if c.PMTU {
				row = append(row, strconv.Itoa(t.PathMTU), "")
				if h.MTU > 0 {
					row[len(row)-1] = strconv.Itoa(h.MTU)
				}
			}
			if c.AS {
				row = append(row, "", "")
				if in, ok := asOfAddr(h, p.From); ok && p.Answered {
					row[len(row)-2], row[len(row)-1] = in.String(), in.Name
				}
			}
			if err := c.w.Write(row); err != nil {
				return err
			}
		}
	}
	c.w.Flush()
	return c.w.Error()
}

// WriteText prints one target like traceroute does, with notes under the hops they concern.
func WriteText(w io.Writer, r *Run, t Target) error {
	var b strings.Builder
	name := t.Address
	if t.Name != t.Address {
		name = fmt.Sprintf("%s (%s)", t.Name, t.Address)
	}
	fmt.Fprintf(&b, "turnpath to %s from %s, %s/%d sport %d, payload %s, engine %s\n",
		name, t.Source, r.Options.Proto, r.Options.Port, r.Options.SPort, r.Options.Payload, r.Engine)
	for _, h := range t.Hops {
		fmt.Fprintf(&b, "%3d  ", h.TTL)
		last := ""
		probes := h.Probes
		if h.Status == "inferred" && h.Received == 0 {
			probes = nil // its own probe went unanswered: what is known comes from others
			// Nothing of this target answered here: what the other targets' probes say.
			switch {
			case len(h.Addresses) == 1:
				b.WriteString(h.Addresses[0])
				if n := nameOf(h, h.Addresses[0]); n != "" {
					fmt.Fprintf(&b, " (%s)", n)
				}
				if in, ok := asOfAddr(h, h.Addresses[0]); ok {
					fmt.Fprintf(&b, " [%s]", in.Label())
				}
			default:
				b.WriteString(strings.Join(h.Candidates, " | "))
			}
			b.WriteString("  (inferred)")
		}
		for i, p := range probes {
			if i > 0 {
				b.WriteString("  ")
			}
			if !p.Answered {
				b.WriteString("*")
				continue
			}
			if p.From != last {
				b.WriteString(p.From)
				if n := nameOf(h, p.From); n != "" {
					fmt.Fprintf(&b, " (%s)", n)
				}
				if in, ok := asOfAddr(h, p.From); ok {
					fmt.Fprintf(&b, " [%s]", in.Label())
				}
				b.WriteString("  ")
				last = p.From
			}
			fmt.Fprintf(&b, "%.3f ms", p.RTTMS)
		}
		if h.TTL == t.DestTTL {
			fmt.Fprintf(&b, "  [%s]", t.How)
		}
		b.WriteByte('\n')
		for _, l := range extLines(h) {
			fmt.Fprintf(&b, "     %s\n", l)
		}
		for _, n := range h.Notes {
			fmt.Fprintf(&b, "     ! %s\n", n)
		}
		if n := statusNote(h); n != "" {
			fmt.Fprintf(&b, "     ! %s\n", n)
		}
	}
	asPath := ""
	if len(t.ASPath) > 0 {
		asPath = "; AS path " + strings.Join(t.ASPath, " ")
	}
	if t.Reached {
		fmt.Fprintf(&b, "reached in %d hops: %s; %d probes, %.0f ms%s\n", t.DestTTL, t.How, t.Sent, t.DurationMS, asPath)
	} else {
		fmt.Fprintf(&b, "not reached: %s; %d probes, %.0f ms%s\n", t.How, t.Sent, t.DurationMS, asPath)
	}
	if t.PathMTU > 0 {
		fmt.Fprintf(&b, "path MTU %d: %s\n", t.PathMTU, mtuWhere(t))
	}
	for _, n := range t.Notes {
		fmt.Fprintf(&b, "! %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mtuWhere says where the path MTU comes from, for the summary line.
func mtuWhere(t Target) string {
	switch {
	case t.PathMTUHop > 0:
		return fmt.Sprintf("the link after hop %d (%s) is the narrowest", t.PathMTUHop, t.PathMTUFrom)
	case t.PathMTUFrom != "":
		return fmt.Sprintf("%s asked for it", t.PathMTUFrom)
	case !t.Reached:
		return "the largest size tried (the destination did not answer)"
	}
	return "no router asked for less"
}

func nameOf(h Hop, addr string) string {
	for i, a := range h.Addresses {
		if a == addr && i < len(h.Names) {
			return h.Names[i]
		}
	}
	return ""
}
