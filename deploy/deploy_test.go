// Package deploy holds what runs turnpath at scale: the container image (../Dockerfile),
// Kubernetes manifests, Prometheus rules and scrape configuration. No cluster and no
// image builder run here, so the tests check what can be checked without them: the
// manifests decoded strictly against the real Kubernetes API types and held to the
// security model (non-root, four capabilities, not privileged), their turnpath
// arguments against the real CLI, the rules and the scrape configuration with
// promtool, and the image's security model itself — the static binary with the
// Dockerfile's file capabilities, run as its non-root user with only those four
// capabilities in its bounding set — tracing a lab target with the eBPF engine.
package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/turnpath/turnpath/lab"
	"github.com/turnpath/turnpath/lab/labtest"
)

// The image's user and capabilities: the Dockerfile, the manifests and the test agree.
var (
	imageUser = 65532
	caps      = []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "NET_RAW"}
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tpx-deploy-*")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "turnpath")
	// As the Dockerfile builds it: static, cgo-free.
	cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "../cmd/turnpath")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // the non-root run reaches the binary
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// manifest is one decoded file of kubernetes/.
type manifest struct {
	file string
	obj  any
	pod  *corev1.PodSpec
}

func decodeManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var out []manifest
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("\n---")) {
			t.Errorf("%s: one object a file", f)
		}
		var tm struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(b, &tm); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		m := manifest{file: f}
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			m.obj = &corev1.Namespace{}
		case "v1 ConfigMap":
			m.obj = &corev1.ConfigMap{}
		case "apps/v1 DaemonSet":
			ds := &appsv1.DaemonSet{}
			m.obj, m.pod = ds, &ds.Spec.Template.Spec
		case "batch/v1 CronJob":
			cj := &batchv1.CronJob{}
			m.obj, m.pod = cj, &cj.Spec.JobTemplate.Spec.Template.Spec
		case "batch/v1 Job":
			j := &batchv1.Job{}
			m.obj, m.pod = j, &j.Spec.Template.Spec
		default:
			t.Fatalf("%s: unexpected %s %s", f, tm.APIVersion, tm.Kind)
		}
		// Strict: a misspelt or misplaced field is an error, as the API server's
		// strict field validation would make it.
		if err := yaml.UnmarshalStrict(b, m.obj); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		out = append(out, m)
	}
	return out
}

func TestKubernetesManifests(t *testing.T) {
	ms := decodeManifests(t)
	kinds := map[string]bool{}
	configMaps := map[string]bool{}
	for _, m := range ms {
		kinds[fmt.Sprintf("%T", m.obj)] = true
		if cm, ok := m.obj.(*corev1.ConfigMap); ok {
			configMaps[cm.Name] = true
			if cm.Namespace != "turnpath" {
				t.Errorf("%s: namespace %q", m.file, cm.Namespace)
			}
		}
	}
	for _, k := range []string{"*v1.Namespace", "*v1.ConfigMap", "*v1.DaemonSet", "*v1.CronJob", "*v1.Job"} {
		if !kinds[k] {
			t.Errorf("no %s manifest", k)
		}
	}
	for _, m := range ms {
		if m.pod == nil {
			continue
		}
		checkPod(t, m, configMaps)
	}
}

// checkPod holds a workload to the image's security model and its arguments to the CLI.
func checkPod(t *testing.T, m manifest, configMaps map[string]bool) {
	t.Helper()
	for _, v := range m.pod.Volumes {
		if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
			t.Errorf("%s: volume %s: no ConfigMap %s in kubernetes/", m.file, v.Name, v.ConfigMap.Name)
		}
	}
	if len(m.pod.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", m.file, len(m.pod.Containers))
	}
	c := &m.pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil || sc.Capabilities == nil:
		t.Fatalf("%s: no securityContext.capabilities", m.file)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("%s: privileged", m.file)
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != int64(imageUser):
		t.Errorf("%s: want runAsNonRoot and runAsUser %d", m.file, imageUser)
	case sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation false sets no_new_privs: the file capabilities would be ignored", m.file)
	case !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("%s: drop %v, want [ALL]", m.file, sc.Capabilities.Drop)
	case !slices.Equal(sortedCaps(sc.Capabilities.Add), sortedCaps(caps)):
		t.Errorf("%s: add %v, want %v", m.file, sc.Capabilities.Add, caps)
	}
	if len(c.Args) == 0 {
		t.Fatalf("%s: no args", m.file)
	}
	cmd, flags := c.Args[0], flagsOf(c.Args[1:])
	help, err := exec.Command(binPath, cmd, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: turnpath %s --help: %v\n%s", m.file, cmd, err, help)
	}
	for f := range flags {
		if !regexp.MustCompile(`(?m)(^|[\s,])` + regexp.QuoteMeta(f) + `\b`).Match(help) {
			t.Errorf("%s: turnpath %s has no %s", m.file, cmd, f)
		}
	}
	if addr, ok := flags["--listen"]; ok {
		_, port, _ := strings.Cut(addr, ":")
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
			return p.Name == "metrics" && strconv.Itoa(int(p.ContainerPort)) == port
		}) {
			t.Errorf("%s: --listen %s but no container port \"metrics\" %s", m.file, addr, port)
		}
	}
	switch o := m.obj.(type) {
	case *appsv1.DaemonSet:
		if !o.Spec.Template.Spec.HostNetwork || cmd != "monitor" || flags["--listen"] == "" {
			t.Errorf("%s: want monitor --listen on the host network", m.file)
		}
	case *batchv1.Job:
		if o.Spec.CompletionMode == nil || *o.Spec.CompletionMode != batchv1.IndexedCompletion || o.Spec.Completions == nil {
			t.Fatalf("%s: want an Indexed Job with completions", m.file)
		}
		if want := fmt.Sprintf("auto/%d", *o.Spec.Completions); flags["--shard"] != want {
			t.Errorf("%s: --shard %q, want %q (one shard per completion index)", m.file, flags["--shard"], want)
		}
	case *batchv1.CronJob:
		if o.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
			t.Errorf("%s: concurrencyPolicy %q, want Forbid", m.file, o.Spec.ConcurrencyPolicy)
		}
	}
}

// flagsOf maps the --flags of args to their values ("" for a flag without one).
func flagsOf(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			v = args[i+1]
			i++
		}
		out[k] = v
	}
	return out
}

func sortedCaps(c []corev1.Capability) []corev1.Capability {
	c = slices.Clone(c)
	slices.Sort(c)
	return c
}

func needPromtool(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (make deps installs prometheus)")
	}
}

func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("promtool", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The alerting rules: valid, and firing (and not) where the Teams thresholds say.
func TestAlertRules(t *testing.T) {
	needPromtool(t)
	promtool(t, "prometheus", "check", "rules", "turnpath-rules.yml")
	promtool(t, "prometheus", "test", "rules", "turnpath-rules.test.yml")
}

// The scrape configuration, with its rule file. Debian's Prometheus is built without
// Kubernetes service discovery: there the kubernetes_sd_configs job is checked with a
// static target in its place (its relabelling still is), and its discovery block
// decoded here.
func TestScrapeConfig(t *testing.T) {
	needPromtool(t)
	b, err := os.ReadFile("prometheus/prometheus-scrape.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("promtool", "check", "config", "prometheus/prometheus-scrape.yml").CombinedOutput()
	if !strings.Contains(string(out), "field kubernetes_sd_configs not found") {
		promtool(t, ".", "check", "config", "prometheus/prometheus-scrape.yml")
		return
	}
	t.Log("promtool lacks Kubernetes service discovery: checking the kubernetes job with a static target")
	jobs, _ := cfg["scrape_configs"].([]any)
	found := false
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		sd, ok := job["kubernetes_sd_configs"]
		if !ok {
			continue
		}
		found = true
		raw, _ := json.Marshal(sd)
		var sds []struct {
			Role       string `json:"role"`
			Namespaces struct {
				Names []string `json:"names"`
			} `json:"namespaces"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sds); err != nil || len(sds) != 1 || sds[0].Role != "pod" || !slices.Equal(sds[0].Namespaces.Names, []string{"turnpath"}) {
			t.Errorf("kubernetes_sd_configs %s: want role pod in namespace turnpath (%v)", raw, err)
		}
		delete(job, "kubernetes_sd_configs")
		job["static_configs"] = []any{map[string]any{"targets": []any{"127.0.0.1:9469"}}}
	}
	if !found {
		t.Fatal("no kubernetes_sd_configs job")
	}
	b, err = yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "scrape.yml"), b, 0o644)
	rules, _ := os.ReadFile("prometheus/turnpath-rules.yml")
	os.WriteFile(filepath.Join(dir, "turnpath-rules.yml"), rules, 0o644)
	promtool(t, dir, "check", "config", "scrape.yml")
}

// dockerfileCaps are the capabilities the Dockerfile's setcap gives the binary, and its
// USER.
func dockerfile(t *testing.T) (setcap string, user int) {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, "CGO_ENABLED=0 go build") {
		t.Error("Dockerfile: not a CGO_ENABLED=0 build")
	}
	m := regexp.MustCompile(`setcap (\S+) /usr/local/bin/turnpath`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("Dockerfile: no setcap of /usr/local/bin/turnpath")
	}
	u := regexp.MustCompile(`(?m)^USER (\d+):\d+$`).FindStringSubmatch(s)
	if u == nil {
		t.Fatal("Dockerfile: no numeric USER")
	}
	user, _ = strconv.Atoi(u[1])
	return m[1], user
}

// The image's security model without a container runtime: the binary built as the
// Dockerfile builds it is static; given the Dockerfile's file capabilities and run as
// its user with a bounding set of only the four capabilities (what --cap-drop ALL plus
// the four --cap-add leave a container), it traces a lab target with the eBPF engine.
func TestImageSecurityModel(t *testing.T) {
	setcap, user := dockerfile(t)
	if user != imageUser || user == 0 {
		t.Errorf("Dockerfile USER %d, want %d", user, imageUser)
	}
	var want []string
	for _, c := range caps {
		want = append(want, "cap_"+strings.ToLower(string(c)))
	}
	if setcap != strings.Join(want, ",")+"=ep" {
		t.Errorf("Dockerfile setcap %s, want %s=ep", setcap, strings.Join(want, ","))
	}
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a dynamic loader: not static")
		}
	}
	f.Close()
	for _, tool := range []string{"setcap", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	l := labtest.Up(t, "tpx", lab.ProfileFast)
	if out, err := exec.Command("setcap", setcap, binPath).CombinedOutput(); err != nil {
		t.Fatalf("setcap: %v\n%s", err, out)
	}
	bounding := "-all"
	for _, c := range want {
		bounding += ",+" + strings.TrimPrefix(c, "cap_")
	}
	run := func(extra ...string) (string, error) {
		args := append([]string{"netns", "exec", l.ClientNS(), "setpriv", "--reuid", strconv.Itoa(user), "--regid", strconv.Itoa(user),
			"--clear-groups", "--inh-caps=-all", "--bounding-set=" + bounding, binPath}, extra...)
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("ip", args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
		}
		return stdout.String(), nil
	}
	out, err := run("trace", "--format", "json", "-n", "-q", "1", "198.19.1.1")
	if err != nil {
		t.Fatalf("trace as uid %d with %s: %v", user, setcap, err)
	}
	var doc struct {
		Engine  string `json:"engine"`
		Targets []struct {
			Reached bool `json:"reached"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("trace json: %v\n%s", err, out)
	}
	if doc.Engine != "ebpf" || len(doc.Targets) != 1 || !doc.Targets[0].Reached {
		t.Errorf("engine %q, targets %+v: want the eBPF engine reaching 198.19.1.1", doc.Engine, doc.Targets)
	}
	// Without the file capabilities the same user gets nowhere: they are what works.
	exec.Command("setcap", "-r", binPath).Run()
	if _, err := run("trace", "--format", "json", "-n", "-q", "1", "--engine", "ebpf", "198.19.1.1"); err == nil {
		t.Error("trace without file capabilities succeeded: the test proves nothing")
	}
}
