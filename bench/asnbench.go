package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// AS lookups offline: what `--asn file:` costs with the full @ip-location-db/asn dataset
// (scripts/asn-data.sh fetches it with npm pack): the time a run takes to load the table
// and answer, its peak RSS, and the lookups a second of the loaded table (the Go
// benchmark of one lookup).

func runASN(ctx context.Context, env *Env) (*Result, error) {
	dir := filepath.Join(env.Opts.RepoDir, ".cache", "ip-location-db", "package")
	res := &Result{Text: []string{"`turnpath asn --asn file:DIR` with the full npm dataset `@ip-location-db/asn` " +
		"(`scripts/asn-data.sh`), answering two public addresses offline: wall time of the whole run (reading and sorting " +
		"the table, then the lookups) and peak RSS (GNU `time`), 3 runs; and one lookup in the loaded table " +
		"(`BenchmarkASNFind`), as lookups a second on one core."}}
	if _, err := os.Stat(filepath.Join(dir, "asn-ipv4.csv")); err != nil {
		cmd := exec.CommandContext(ctx, filepath.Join(env.Opts.RepoDir, "scripts", "asn-data.sh"))
		cmd.Dir = env.Opts.RepoDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return res, fmt.Errorf("asn-data.sh: %w: %s", err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "asn-ipv4.csv")); err != nil {
			res.Notes = append(res.Notes, "the dataset could not be fetched (npm): not measured")
			return res, nil
		}
	}
	ranges := 0
	for _, f := range []string{"asn-ipv4.csv", "asn-ipv6.csv"} {
		ranges += countFileLines(filepath.Join(dir, f))
	}
	argv := []string{timeBinary, "-f", "%e %M", "-o", "/dev/stderr", env.Turnpath, "asn", "--asn", "file:" + dir,
		"--cache-dir", "", "--format", "json", "8.8.8.8", "52.114.132.46"}
	var wall, rss []float64
	for range env.Runs(3, 1) {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return res, fmt.Errorf("turnpath asn: %w: %s", err, stderr.String())
		}
		if !strings.Contains(string(out), "15169") {
			return res, fmt.Errorf("turnpath asn: 8.8.8.8 not answered AS15169: %s", out)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		f := strings.Fields(lines[len(lines)-1])
		if len(f) != 2 {
			return res, fmt.Errorf("GNU time wrote %q", stderr.String())
		}
		w, err1 := strconv.ParseFloat(f[0], 64)
		kb, err2 := strconv.ParseFloat(f[1], 64)
		if err := errors.Join(err1, err2); err != nil {
			return res, fmt.Errorf("GNU time wrote %q: %w", stderr.String(), err)
		}
		wall, rss = append(wall, w), append(rss, kb/1024)
	}
	bargv := []string{"go", "test", "-run", "^$", "-bench", "BenchmarkASNFind", "-count", strconv.Itoa(env.Runs(5, 1)), "-benchtime", "200ms", "./asn/"}
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	bcmd := exec.CommandContext(bctx, bargv[0], bargv[1:]...)
	bcmd.Dir = env.Opts.RepoDir
	out, err := bcmd.CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("go test -bench: %w: %s", err, lastLines(string(out), 5))
	}
	benches, err := ParseGoBench(out)
	if err != nil {
		return res, err
	}
	var rate []float64
	for _, b := range benches {
		if b.NsPerOp > 0 {
			rate = append(rate, 1e9/b.NsPerOp)
		}
	}
	res.Raw = map[string]any{"ranges": ranges, "wall_seconds": wall, "peak_rss_mib": rss, "lookups_per_second": rate}
	res.Tables = append(res.Tables, Table{Columns: []string{"ranges", "load and answer (wall)", "peak RSS", "lookups/s (loaded table)"},
		Rows: [][]string{{group(ranges), Summarize(wall).Format("%.2f", " s"), Summarize(rss).Format("%.1f", " MiB"), Summarize(rate).Scale(1e-6).Format("%.2f", " M")}}})
	res.Headlines = append(res.Headlines, fmt.Sprintf("Offline AS data: the full npm dataset (%s ranges) loads and answers in **%s** "+
		"with **%s** peak RSS; the loaded table answers **%s lookups/s**.", group(ranges), Summarize(wall).Format("%.2f", " s"),
		Summarize(rss).Format("%.1f", " MiB"), Summarize(rate).Scale(1e-6).Format("%.2f", " M")))
	res.Commands = append(res.Commands, CommandLine(argv), CommandLine(bargv))
	return res, nil
}

// countFileLines counts a file's lines (0 when unreadable).
func countFileLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}
