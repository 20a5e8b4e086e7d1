package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// AptPackages are the Debian packages the bench needs: the lab's services and the peers;
// time (GNU time) measures peak RSS, linux-perf profiles the capacity runs.
var AptPackages = []string{"coturn", "dnsmasq-base", "iproute2", "traceroute", "mtr-tiny", "scamper", "tcpdump", "stress-ng",
	"time", "linux-perf"}

// Run runs the selected sections and returns the report. The lab is brought down on
// every path out, including cancellation (Ctrl-C).
func Run(ctx context.Context, opts Options) (*Report, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (network namespaces, BPF, raw sockets)")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	rep := &Report{Schema: ReportSchema, Mode: "full", Started: time.Now(), Lab: opts.Prefix,
		Command: "make bench"}
	if opts.Quick {
		rep.Mode, rep.Command = "quick", "make bench BENCH_FLAGS=-quick"
	}
	env := &Env{Opts: opts}
	if err := aptNeed(ctx, opts); err != nil {
		env.Logf("installing peers: %v (sections without their tools say so)", err)
	}
	dir, err := os.MkdirTemp("", "tpbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	env.Dir = dir
	if env.Turnpath, err = copyExecutable(opts.Turnpath, filepath.Join(dir, "turnpath")); err != nil {
		return nil, err
	}
	if env.Self, err = copyExecutable(opts.Self, filepath.Join(dir, "tpbench")); err != nil {
		return nil, err
	}
	env.Machine = DescribeMachine(ctx, env.Turnpath, opts.RepoDir)
	rep.Machine = env.Machine
	// A lab of ours left by a crashed run would stop lab.Up.
	if err := env.downLab(); err != nil {
		return nil, fmt.Errorf("remove old lab %s: %w", opts.Prefix, err)
	}
	defer func() {
		if err := env.downLab(); err != nil {
			env.Logf("lab down: %v", err)
		}
	}()
	for _, s := range Sections {
		if len(opts.Only) > 0 && !slices.Contains(opts.Only, s.ID) {
			continue
		}
		res := runSection(ctx, env, s)
		rep.Sections = append(rep.Sections, res)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rep.Finished = time.Now()
	rep.Seconds = rep.Finished.Sub(rep.Started).Seconds()
	return rep, nil
}

func runSection(ctx context.Context, env *Env, s Section) *Result {
	env.Logf("section %s (budget %v)", s.ID, s.Budget)
	ctx, cancel := context.WithTimeout(ctx, 2*s.Budget)
	defer cancel()
	start := time.Now()
	res, err := s.Run(ctx, env)
	if res == nil {
		res = &Result{}
	}
	res.ID, res.Title = s.ID, s.Title
	res.Seconds = time.Since(start).Seconds()
	switch {
	case err != nil:
		res.Status, res.Error = StatusFailed, err.Error()
	case res.Status == "":
		res.Status = StatusOK
	}
	env.Logf("section %s: %s in %.1fs", s.ID, res.Status, res.Seconds)
	if err != nil {
		env.Logf("section %s: %v", s.ID, err)
	}
	return res
}

// aptNeed installs missing packages with scripts/apt-need.sh (apt-get update first).
func aptNeed(ctx context.Context, opts Options) error {
	script := filepath.Join(opts.RepoDir, "scripts", "apt-need.sh")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, AptPackages...)
	cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	return cmd.Run()
}

// copyExecutable copies src to dst (mode 0755) so that a rebuild of src during the run
// does not change what is measured.
func copyExecutable(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	return dst, nil
}

// WriteFiles writes BENCHMARKS.md and the JSON results.
func (r *Report) WriteFiles(mdPath, jsonPath string) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	js = compactNumberArrays(js)
	if err := os.MkdirAll(filepath.Dir(jsonPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	rel, err := filepath.Rel(filepath.Dir(mdPath), jsonPath)
	if err != nil {
		rel = jsonPath
	}
	if err := r.WriteMarkdown(&md, filepath.ToSlash(rel)); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(mdPath), 0o755); err != nil {
		return err
	}
	return os.WriteFile(mdPath, []byte(md.String()), 0o644)
}

var numberArray = regexp.MustCompile(`\[\s*-?[0-9.e+-]+(?:,\s*-?[0-9.e+-]+)*\s*\]`)

// compactNumberArrays puts arrays of numbers (the per-probe errors) on one line each.
func compactNumberArrays(js []byte) []byte {
	space := regexp.MustCompile(`\s+`)
	return numberArray.ReplaceAllFunc(js, func(m []byte) []byte { return space.ReplaceAll(m, nil) })
}

// display turns a command line into what a reader would type: the private copies of the
// binaries become turnpath and tpbench, and scratch files lose their directory.
func (e *Env) display(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		switch {
		case a == e.Turnpath:
			a = "turnpath"
		case a == e.Self:
			a = "tpbench"
		case e.Dir != "" && strings.HasPrefix(a, e.Dir+"/"):
			a = strings.TrimPrefix(a, e.Dir+"/")
		}
		out[i] = a
	}
	return CommandLine(out)
}
