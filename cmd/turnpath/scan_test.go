package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnpath/turnpath/report"
)

// scanTruth is what the scan tests read of `lab truth`.
type scanTruth struct {
	Targets []struct {
		Target    string `json:"target"`
		ReachedAt []int  `json:"reached_at"`
		Hops      []struct {
			TTL        int `json:"ttl"`
			Responders []struct {
				Node        string `json:"node"`
				Addr        string `json:"addr"`
				Silent      bool   `json:"silent"`
				Destination bool   `json:"destination"`
			} `json:"responders"`
		} `json:"hops"`
		Links []struct {
			From string `json:"from"`
			To   string `json:"to"`
		} `json:"links"`
	} `json:"targets"`
}

// scanLab scans every relay address of the lab (IPv4 and IPv6) and checks the report
// against the lab's truth: every relay reached at one of its distances, every hop before
// it answered, inferred or silent (silent only where the lab's silent router is, never
// rate-limited or lost), no address that the truth does not have at that TTL (measured
// or inferred, candidates included), and the union of interfaces and links complete.
func scanLab(t *testing.T, prefix string, inLab func(args ...string) []string, args ...string) *report.Run {
	t.Helper()
	r := run(t, 30*time.Second, tp("lab", "truth", "--prefix", prefix, "--format", "json")...)
	var truth scanTruth
	if err := json.Unmarshal([]byte(r.stdout), &truth); err != nil {
		t.Fatalf("lab truth: %v", err)
	}
	list := filepath.Join(t.TempDir(), "relays.txt")
	var lines []string
	for _, tg := range truth.Targets {
		lines = append(lines, tg.Target)
	}
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Plain `trace -f`: a list this long is scanned without asking.
	r = run(t, 120*time.Second, inLab(append(append([]string{"trace", "-n", "--format", "json"}, args...), "-f", list)...)...)
	if r.code != 0 {
		t.Fatalf("trace -f: exit %d: %s", r.code, r.stderr)
	}
	var doc report.Run
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Scan == nil || !doc.Scan.Auto || len(doc.Targets) != len(truth.Targets) {
		t.Fatalf("%d targets of %d, scan %+v", len(doc.Targets), len(truth.Targets), doc.Scan)
	}
	wantIfaces, wantLinks := map[string]bool{}, map[[2]string]bool{}
	anon := func(node, addr string) string {
		if addr == "" {
			return "*" // the silent router, by name in the truth
		}
		return addr
	}
	for i, tg := range truth.Targets {
		got := doc.Targets[i]
		addrsAt := map[int]map[string]bool{}
		silentAt := map[int]bool{}
		for _, h := range tg.Hops {
			addrsAt[h.TTL] = map[string]bool{}
			for _, rs := range h.Responders {
				switch {
				case rs.Silent:
					silentAt[h.TTL] = true
				case !rs.Destination:
					addrsAt[h.TTL][rs.Addr] = true
					wantIfaces[rs.Addr] = true
				}
			}
		}
		for _, l := range tg.Links {
			if strings.HasPrefix(l.To, "198.19.") || strings.HasPrefix(l.To, "fd51:1:") {
				continue // into the destination
			}
			from, to := l.From, l.To
			if !strings.Contains(from, ".") && !strings.Contains(from, ":") {
				from = anon(from, "")
			}
			if !strings.Contains(to, ".") && !strings.Contains(to, ":") {
				to = anon(to, "")
			}
			wantLinks[[2]string{from, to}] = true
		}
		if got.Address != tg.Target || !got.Reached || !contains(tg.ReachedAt, got.DestTTL) {
			t.Errorf("%s: reached %v at %d, truth %v", tg.Target, got.Reached, got.DestTTL, tg.ReachedAt)
			continue
		}
		// Consecutive hops this target's report names one interface each for (or the
		// silent router) must be a link of its true paths: a hop inferred onto the other
		// branch of a load balancer has an address of the right TTL, but not its links.
		links := map[[2]string]bool{}
		for _, l := range tg.Links {
			links[[2]string{nodeKey(l.From), nodeKey(l.To)}] = true
		}
		prev := ""
		for _, h := range got.Hops {
			if h.TTL > got.DestTTL {
				break
			}
			cur := ""
			switch {
			case h.TTL == got.DestTTL:
				cur = tg.Target
			case h.Status == "silent":
				cur = "*"
			case h.Status == "answered" && len(h.Addresses) == 1:
				cur = h.Addresses[0]
			case h.Status == "inferred" && len(h.Candidates) == 1:
				cur = h.Candidates[0]
			}
			if prev != "" && cur != "" && !links[[2]string{prev, cur}] {
				t.Errorf("%s TTL %d: %s after %s is not a link of its paths", tg.Target, h.TTL, cur, prev)
			}
			prev = cur
		}
		for _, h := range got.Hops {
			if h.TTL >= got.DestTTL {
				continue
			}
			var claimed []string
			switch h.Status {
			case "answered":
				claimed = h.Addresses
			case "inferred":
				claimed = h.Candidates
				if len(h.InferredFrom) == 0 {
					t.Errorf("%s TTL %d: inferred from nothing", tg.Target, h.TTL)
				}
			case "silent":
				if !silentAt[h.TTL] {
					t.Errorf("%s TTL %d: called silent, truth %v", tg.Target, h.TTL, addrsAt[h.TTL])
				}
			default:
				t.Errorf("%s TTL %d: %s, want answered, inferred or silent", tg.Target, h.TTL, h.Status)
			}
			for _, a := range claimed {
				if !addrsAt[h.TTL][a] {
					t.Errorf("%s TTL %d: %s %s, truth %v", tg.Target, h.TTL, h.Status, a, addrsAt[h.TTL])
				}
			}
		}
	}
	for _, a := range doc.Scan.Interfaces {
		delete(wantIfaces, a)
	}
	for _, l := range doc.Scan.Links {
		delete(wantLinks, [2]string{l.From, l.To})
	}
	if len(wantIfaces) > 0 || len(wantLinks) > 0 {
		t.Errorf("not found: interfaces %v, links %v", wantIfaces, wantLinks)
	}
	t.Logf("%d relays: %d probes (%.1f a relay), %.1f s, %d interfaces, %d links", len(doc.Targets), doc.Scan.Probes,
		float64(doc.Scan.Probes)/float64(len(doc.Targets)), doc.Scan.DurationMS/1000, len(doc.Scan.Interfaces), len(doc.Scan.Links))
	return &doc
}

// nodeKey is a truth link's end as the scan names it: an address, or "*" for the silent
// router (which the truth names, having no address to give).
func nodeKey(s string) string {
	if !strings.Contains(s, ".") && !strings.Contains(s, ":") {
		return "*"
	}
	return s
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// The fast lab (no ICMP limits): every relay, complete and right, in a fraction of a
// second at --rate 10000; the text report marks inferred hops and says where from.
func TestTraceScanFastLab(t *testing.T) {
	prefix, _, inLab := cliLab(t, "tpscf")
	doc := scanLab(t, prefix, inLab, "--rate", "10000")
	if doc.Scan.DurationMS > 10_000 {
		t.Errorf("took %.1f s", doc.Scan.DurationMS/1000)
	}
	r := run(t, 60*time.Second, inLab("trace", "--scan", "-n", "198.19.1.1", "198.19.1.2", "198.19.1.3", "198.19.1.4", "198.19.1.5",
		"198.19.1.6", "198.19.1.7", "198.19.1.8", "198.19.1.9", "198.19.1.10")...)
	if r.code != 0 || !strings.Contains(r.stdout, "(inferred)") || !strings.Contains(r.stdout, "inferred from the probes of 198.19.1.") ||
		!strings.Contains(r.stdout, "silent: this router never answers") || !strings.Contains(r.stdout, "scan: 10 targets") {
		t.Errorf("text: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The union as Graphviz: Graphviz reads it; every interface and link of the JSON is in it.
	r = run(t, 60*time.Second, inLab("trace", "--scan", "-n", "--format", "dot", "198.19.1.1", "198.19.1.2", "198.19.1.3", "fd51:1:1::1", "fd51:1:1::2")...)
	if r.code != 0 || !strings.Contains(r.stdout, "digraph turnpath_scan") || !strings.Contains(r.stdout, "silent router") {
		t.Fatalf("dot: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, a := range []string{"198.18.1.2", "fd51:0:0:1::2", "198.18.2.2"} { // the first hops, on every path
		if !strings.Contains(r.stdout, `"`+a+`"`) {
			t.Errorf("dot: no node %s", a)
		}
	}
	if dot, err := exec.LookPath("dot"); err == nil {
		cmd := exec.Command(dot, "-Tsvg")
		cmd.Stdin = strings.NewReader(r.stdout)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "<svg") {
			t.Errorf("graphviz: %v %.200s", err, out)
		}
	}
	// And drawn: well-formed SVG with the same first hops.
	r = run(t, 60*time.Second, inLab("trace", "-n", "--format", "svg", "198.19.1.1", "198.19.1.2", "198.19.1.3", "fd51:1:1::1", "fd51:1:1::2")...)
	if err := xml.Unmarshal([]byte(r.stdout), new(struct {
		XMLName xml.Name `xml:"svg"`
	})); r.code != 0 || err != nil {
		t.Fatalf("svg: exit %d, %v\n%.300s\n%s", r.code, err, r.stdout, r.stderr)
	}
	for _, a := range []string{"198.18.1.2", "fd51:0:0:1::2", "198.18.2.2"} {
		if !strings.Contains(r.stdout, ">"+a+"<") {
			t.Errorf("svg: no box %s", a)
		}
	}
	if r := run(t, 10*time.Second, tp("trace", "--scan=false", "--format", "dot", "198.18.0.1")...); r.code != 2 {
		t.Errorf("--format dot with --scan=false: exit %d", r.code)
	}
}

// The realistic lab (Linux's router ICMP limits): the same completeness within a minute,
// and the routers' limits learnt.
func TestTraceScanRealisticLab(t *testing.T) {
	prefix, inLab := profileLab(t, "tpscr", "realistic")
	doc := scanLab(t, prefix, inLab)
	if doc.Scan.DurationMS > 60_000 {
		t.Errorf("took %.1f s", doc.Scan.DurationMS/1000)
	}
	limited := 0
	for _, r := range doc.Scan.Responders {
		if r.RateLimited {
			limited++
		}
	}
	if limited == 0 {
		t.Error("no router found rate-limited")
	}
}
