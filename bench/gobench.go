package bench

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The Go microbenchmarks of the hot paths (probe building, reply parsing and matching;
// the offline AS table's lookup has its own section, asnbench.go).

func goBenchArgs(quick bool) []string {
	count, benchtime := "5", "200ms"
	if quick {
		count, benchtime = "1", "50ms"
	}
	return []string{"go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", count, "-benchtime", benchtime, "./probe/..."}
}

func runGoBench(ctx context.Context, env *Env) (*Result, error) {
	argv := goBenchArgs(env.Opts.Quick)
	res := &Result{
		Text:     []string{"The hot paths in Go, on the host (no lab needed): every benchmark runs several times; ns/op is the median with (min–max)."},
		Commands: []string{CommandLine(argv)},
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = env.Opts.RepoDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("go test -bench: %w: %s", err, lastLines(string(out), 5))
	}
	benches, err := ParseGoBench(out)
	if err != nil {
		return res, err
	}
	res.Raw = benches
	var order []string
	by := map[string][]GoBench{}
	for _, b := range benches {
		if _, ok := by[b.Name]; !ok {
			order = append(order, b.Name)
		}
		by[b.Name] = append(by[b.Name], b)
	}
	t := Table{Columns: []string{"benchmark", "ns/op", "MB/s", "B/op", "allocs/op", "runs"}}
	for _, name := range order {
		var ns, mb, bytes, allocs []float64
		for _, b := range by[name] {
			ns, mb = append(ns, b.NsPerOp), append(mb, b.MBPerS)
			bytes, allocs = append(bytes, b.BytesPerOp), append(allocs, b.AllocsPerOp)
		}
		t.Rows = append(t.Rows, []string{"`" + name + "`", Summarize(ns).Format("%.1f", ""), Summarize(mb).Format("%.0f", ""),
			Summarize(bytes).Format("%.0f", ""), Summarize(allocs).Format("%.0f", ""), strconv.Itoa(len(ns))})
	}
	res.Tables = []Table{t}
	return res, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
