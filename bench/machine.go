package bench

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where the benchmarks ran.
type Machine struct {
	Kernel   string            `json:"kernel"`
	OS       string            `json:"os"`
	CPU      string            `json:"cpu"`
	Cores    int               `json:"cores"`
	MemoryGB float64           `json:"memory_gib"`
	Go       string            `json:"go"`
	Turnpath string            `json:"turnpath"`
	Commit   string            `json:"commit"`
	Tools    map[string]string `json:"tools"`
	// LoadAvg is /proc/loadavg when the bench started: other work on the machine shows here.
	LoadAvg string `json:"loadavg"`
}

// toolVersions are how each peer reports its version, and what of that to keep.
var toolVersions = []struct {
	name string
	argv []string
	re   *regexp.Regexp
}{
	{"traceroute", []string{"traceroute", "--version"}, regexp.MustCompile(`version (\S+)`)},
	{"mtr", []string{"mtr", "--version"}, regexp.MustCompile(`mtr (\S+)`)},
	{"scamper", []string{"scamper", "-v"}, regexp.MustCompile(`version (\S+)`)},
	{"tcpdump", []string{"tcpdump", "--version"}, regexp.MustCompile(`tcpdump version (\S+)`)},
	{"libpcap", []string{"tcpdump", "--version"}, regexp.MustCompile(`libpcap version (\S+)`)},
	{"stress-ng", []string{"stress-ng", "--version"}, regexp.MustCompile(`version (\S+)`)},
	{"perf", []string{"perf", "--version"}, regexp.MustCompile(`perf version (\S+)`)},
}

// DescribeMachine collects kernel, CPU, memory and tool versions.
func DescribeMachine(ctx context.Context, turnpath, repo string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Tools: map[string]string{}}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		m.Kernel = unix.ByteSliceToString(uts.Release[:]) + " " + unix.ByteSliceToString(uts.Machine[:])
	}
	m.OS = osRelease()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		m.LoadAvg = strings.Join(f[:min(3, len(f))], " ")
	}
	m.CPU = cpuModel()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.MemoryGB = float64(int(kb/1024/1024*10+0.5)) / 10
			}
		}
	}
	m.Go = firstLine(run(ctx, repo, "go", "version"))
	if m.Go == "" {
		m.Go = runtime.Version()
	}
	m.Turnpath = firstLine(run(ctx, "", turnpath, "version"))
	m.Commit = firstLine(run(ctx, repo, "git", "describe", "--tags", "--always", "--dirty"))
	for _, t := range toolVersions {
		if mm := t.re.FindStringSubmatch(run(ctx, "", t.argv...)); mm != nil {
			m.Tools[t.name] = mm[1]
		} else {
			m.Tools[t.name] = "not installed"
		}
	}
	return m
}

// run returns a command's combined output ("" on failure to start), bounded in time.
func run(ctx context.Context, dir string, argv ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
