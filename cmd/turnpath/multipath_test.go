package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLabMultipathCLI: the command as users run it in the lab: the table, JSON checked
// against the lab's truth, dot, the SVG file, exit codes, and Ctrl-C.
func TestLabMultipathCLI(t *testing.T) {
	prefix, client, inLab := cliLab(t, "tpm")

	// --sport: each run draws its flows otherwise, and a draw may miss a link (the 5% the
	// confidence bound leaves); these flows are known to find every one.
	// The lab's routers answer from their inbound interfaces: r4 from three addresses,
	// r6 from two. The router level draws each as one node: the lab's two diamonds.
	r := run(t, 30*time.Second, inLab("multipath", "--sport", "50000", "--level", "router", "198.19.1.1")...)
	if r.code != 0 || !strings.Contains(r.stdout, "2 diamonds") || !strings.Contains(r.stdout, "unequal branches") ||
		!strings.Contains(r.stdout, "lab.turnpath.test") || !strings.Contains(r.stdout, "2 routers answering from several interfaces") ||
		!strings.Contains(r.stdout, "router: also answers from 198.18.8.2, 198.18.9.2") {
		t.Fatalf("text: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("not a TTY: want nothing on stderr, got %q", r.stderr)
	}

	// JSON: the links against the truth the lab prints, for both families at once.
	svg := filepath.Join(t.TempDir(), "mp.svg")
	r = run(t, 60*time.Second, inLab("multipath", "-n", "--sport", "50000", "--format", "json", "--svg", svg, "198.19.1.1", "fd51:1:1::1")...)
	if r.code != 0 {
		t.Fatalf("json: exit %d\n%s", r.code, r.stderr)
	}
	var doc struct {
		Schema  string `json:"schema"`
		Targets []struct {
			Address string `json:"address"`
			Reached bool   `json:"reached"`
			Links   []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"links"`
			Diamonds []json.RawMessage `json:"diamonds"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Schema != "turnpath.multipath/v1" || len(doc.Targets) != 2 {
		t.Fatalf("json: %v %q %d", err, doc.Schema, len(doc.Targets))
	}
	for _, tg := range doc.Targets {
		tr := run(t, 10*time.Second, tp("lab", "truth", "--prefix", prefix, "--format", "json", tg.Address)...)
		var truth struct {
			Links []struct{ From, To string } `json:"links"`
		}
		if err := json.Unmarshal([]byte(tr.stdout), &truth); err != nil || len(truth.Links) == 0 {
			t.Fatalf("truth %s: %v\n%s", tg.Address, err, tr.stdout)
		}
		// Truth links name a silent router by its node name ("r7"), the graph by the
		// anonymous hop after an interface: compare the links between interfaces, both
		// ways (the mda package's lab test checks the anonymous ones too).
		addr := func(s string) bool { return !strings.HasPrefix(s, "*") && strings.ContainsAny(s, ".:") }
		want := map[string]bool{}
		for _, l := range truth.Links {
			if addr(l.From) && addr(l.To) {
				want[l.From+" "+l.To] = true
			}
		}
		got := map[string]bool{}
		for _, l := range tg.Links {
			if addr(l.From) && addr(l.To) {
				got[l.From+" "+l.To] = true
				if !want[l.From+" "+l.To] {
					t.Errorf("%s: false link %s -> %s", tg.Address, l.From, l.To)
				}
			}
		}
		for l := range want {
			if !got[l] {
				t.Errorf("%s: missed link %s", tg.Address, l)
			}
		}
		if !tg.Reached || len(want) < 10 {
			t.Errorf("%s: reached %v, %d links between interfaces", tg.Address, tg.Reached, len(want))
		}
	}
	f, err := os.Open(svg)
	if err != nil {
		t.Fatalf("--svg: %v", err)
	}
	dec := xml.NewDecoder(f)
	elems := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("svg is not XML: %v", err)
		}
		if _, ok := tok.(xml.StartElement); ok {
			elems++
		}
	}
	f.Close()
	if elems < 50 {
		t.Errorf("svg: %d elements", elems)
	}

	r = run(t, 30*time.Second, inLab("multipath", "-n", "--format", "dot", "198.19.2.1")...)
	if r.code != 0 || !strings.Contains(r.stdout, "digraph") || !strings.Contains(r.stdout, "rankdir=LR") {
		t.Errorf("dot: exit %d\n%s", r.code, r.stdout)
	}

	// A lab address nothing routes to: r1 answers net unreachable. Exit 1, the flows
	// end at r1.
	r = run(t, 60*time.Second, inLab("multipath", "-n", "--rate-limit-wait", "100ms", "198.19.200.1")...)
	if r.code != 1 || !strings.Contains(r.stdout, "unreachable: flows end here") {
		t.Errorf("unrouted: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// Ctrl-C in a long run (many targets, slow rate): exit 3, no BPF program left.
	list := filepath.Join(t.TempDir(), "targets.txt")
	var lines []string
	for i := 1; i <= 16; i++ {
		lines = append(lines, "198.19.1."+strconv.Itoa(i))
	}
	os.WriteFile(list, []byte(strings.Join(lines, "\n")), 0o644)
	cmd := exec.Command("ip", "netns", "exec", client, binPath, "multipath", "-n", "--rate", "20", "-f", list)
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	ids := runProgs(t, client)
	if len(ids) < 2 {
		t.Errorf("turnpath BPF programs during the run: %v, want XDP and TC egress", ids)
	}
	signalAndWait(t, cmd, syscall.SIGINT, 10*time.Second)
	if code := cmd.ProcessState.ExitCode(); code != 3 || !strings.Contains(se.String(), "interrupted") {
		t.Errorf("SIGINT: exit %d (%s)", code, se.String())
	}
	if left := progsLeft(t, ids); len(left) > 0 {
		t.Errorf("turnpath BPF programs %v still loaded after SIGINT", left)
	}
}
