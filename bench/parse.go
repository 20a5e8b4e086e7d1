package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/turnpath/turnpath/report"
)

// Parsers of the probers' own output. Each returns one Observation per target.

// ParseTraceroute parses traceroute-style text: Linux traceroute ("traceroute to X (X),
// 15 hops max, ...") and scamper's text output ("traceroute from S to X"), one or more
// traces. Hop lines are "TTL  addr rtt ms [addr rtt ms | *]..."; names in front of
// "(addr)", annotations (!H, !X, ...) and RTTs are skipped.
func ParseTraceroute(out []byte) ([]*Observation, error) {
	var obs []*Observation
	var cur *Observation
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "traceroute" {
			target, err := tracerouteTarget(f)
			if err != nil {
				return nil, err
			}
			cur = NewObservation(target)
			obs = append(obs, cur)
			continue
		}
		ttl, err := strconv.Atoi(f[0])
		if err != nil || ttl < 1 || ttl > 255 {
			continue // warnings, scamper's "stop" lines, ...
		}
		if cur == nil {
			return nil, fmt.Errorf("hop line before any header: %q", line)
		}
		cur.Probed(ttl)
		for _, tok := range f[1:] {
			tok = strings.Trim(tok, "()")
			if a, err := netip.ParseAddr(tok); err == nil {
				cur.Add(ttl, a)
			}
		}
	}
	if len(obs) == 0 {
		return nil, errors.New("no traceroute header")
	}
	return obs, sc.Err()
}

// tracerouteTarget finds the destination in "traceroute to X (A), ..." or "traceroute
// from S to X".
func tracerouteTarget(f []string) (netip.Addr, error) {
	for i := 1; i+1 < len(f); i++ {
		if f[i] != "to" {
			continue
		}
		for _, cand := range []string{strings.Trim(strings.TrimSuffix(f[min(i+2, len(f)-1)], ","), "()"), f[i+1]} {
			if a, err := netip.ParseAddr(cand); err == nil {
				return a.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("no destination in %q", strings.Join(f, " "))
}

var (
	mtrHop  = regexp.MustCompile(`^\s*(\d+)\.\|--\s+(\S+)`)
	mtrMore = regexp.MustCompile("^\\s+(?:\\|\\s+`\\|--\\s+)?(\\S+)\\s*$")
	mtrDest = regexp.MustCompile(`^\s*(?:HOST:|Start:)`)
)

// ParseMTRReport parses `mtr --report` (or --report-wide) output for target: hop
// lines "  N.|-- addr  Loss% ...", "???" for no answer, and the lines mtr adds under a
// hop for further responders (just the address, indented; older versions draw
// "    |  `|-- addr").
func ParseMTRReport(out []byte, target netip.Addr) (*Observation, error) {
	o := NewObservation(target)
	ttl := 0
	header := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if mtrDest.MatchString(line) {
			header = true
			continue
		}
		if m := mtrHop.FindStringSubmatch(line); m != nil {
			ttl, _ = strconv.Atoi(m[1])
			o.Probed(ttl)
			if a, err := netip.ParseAddr(m[2]); err == nil {
				o.Add(ttl, a)
			}
			continue
		}
		if m := mtrMore.FindStringSubmatch(line); m != nil && ttl > 0 {
			if a, err := netip.ParseAddr(m[1]); err == nil {
				o.Add(ttl, a)
			}
		}
	}
	if !header {
		return nil, errors.New("not an mtr report (no HOST: line)")
	}
	return o, sc.Err()
}

// scamperTrace is the part of scamper's JSON trace record (-O json) we read.
type scamperTrace struct {
	Type       string `json:"type"`
	Dst        string `json:"dst"`
	StopReason string `json:"stop_reason"`
	HopCount   int    `json:"hop_count"`
	ProbeCount int    `json:"probe_count"`
	FirstHop   int    `json:"firsthop"`
	Hops       []struct {
		Addr     string `json:"addr"`
		ProbeTTL int    `json:"probe_ttl"`
	} `json:"hops"`
}

// ParseScamperJSON parses scamper's JSON output (one object per line; "trace" records
// become observations, cycle records are skipped). TTLs firsthop..hop_count were probed.
func ParseScamperJSON(out []byte) ([]*Observation, error) {
	var obs []*Observation
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var t scamperTrace
		if err := dec.Decode(&t); err != nil {
			if err == io.EOF {
				break
			}
			return nil, fmt.Errorf("scamper json: %w", err)
		}
		if t.Type != "trace" {
			continue
		}
		dst, err := netip.ParseAddr(t.Dst)
		if err != nil {
			return nil, fmt.Errorf("scamper json: bad dst %q", t.Dst)
		}
		o := NewObservation(dst.Unmap())
		o.Probes = t.ProbeCount
		for ttl := max(t.FirstHop, 1); ttl <= t.HopCount; ttl++ {
			o.Probed(ttl)
		}
		for _, h := range t.Hops {
			if a, err := netip.ParseAddr(h.Addr); err == nil {
				o.Add(h.ProbeTTL, a)
			}
		}
		obs = append(obs, o)
	}
	return obs, nil
}

// ParseTurnpathJSON parses `turnpath trace --format json` (schema turnpath.trace/v1).
func ParseTurnpathJSON(out []byte) (*report.Run, []*Observation, error) {
	var run report.Run
	if err := json.Unmarshal(out, &run); err != nil {
		return nil, nil, fmt.Errorf("turnpath json: %w", err)
	}
	if run.Schema != report.Schema {
		return nil, nil, fmt.Errorf("turnpath json: schema %q, want %q", run.Schema, report.Schema)
	}
	var obs []*Observation
	for _, t := range run.Targets {
		dst, err := netip.ParseAddr(t.Address)
		if err != nil {
			return nil, nil, fmt.Errorf("turnpath json: bad address %q", t.Address)
		}
		o := NewObservation(dst.Unmap())
		o.Probes = t.Sent
		for _, h := range t.Hops {
			o.Probed(h.TTL)
			for _, s := range h.Addresses {
				if a, err := netip.ParseAddr(s); err == nil {
					o.Add(h.TTL, a)
				}
			}
		}
		obs = append(obs, o)
	}
	return &run, obs, nil
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Pkg         string  `json:"pkg"`
	Name        string  `json:"name"` // without the -GOMAXPROCS suffix
	Iterations  int64   `json:"iterations"`
	NsPerOp     float64 `json:"ns_per_op"`
	MBPerS      float64 `json:"mb_per_s,omitempty"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
}

var goBenchProcs = regexp.MustCompile(`-\d+$`)

// ParseGoBench parses `go test -bench -benchmem` output (any -count).
func ParseGoBench(out []byte) ([]GoBench, error) {
	var res []GoBench
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "pkg:" {
			pkg = f[1]
			continue
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		b := GoBench{Pkg: pkg, Name: goBenchProcs.ReplaceAllString(f[0], ""), Iterations: n}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("go bench: bad value %q in %q", f[i], sc.Text())
			}
			switch f[i+1] {
			case "ns/op":
				b.NsPerOp = v
			case "MB/s":
				b.MBPerS = v
			case "B/op":
				b.BytesPerOp = v
			case "allocs/op":
				b.AllocsPerOp = v
			}
		}
		res = append(res, b)
	}
	if len(res) == 0 {
		return nil, errors.New("go bench: no benchmark lines")
	}
	return res, sc.Err()
}
