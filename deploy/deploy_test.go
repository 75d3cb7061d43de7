package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/backlog-dev/backlog/cmd/backlog/cli"
	"github.com/backlog-dev/backlog/kernel"
)

// binary is the command built as the Dockerfile builds it, by TestMain.
var binary string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "backlog-deploy")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// Another user runs the binary in TestCapabilities.
		os.Chmod(dir, 0o755)
		if runtime.GOOS == "linux" {
			binary = filepath.Join(dir, "backlog")
			if out, err := buildAsDockerfile(binary); err != nil {
				fmt.Fprintf(os.Stderr, "building as deploy/Dockerfile does: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// dockerfile is the Dockerfile's instructions, one per line, with their
// continuation lines joined and comments left out.
func dockerfile(t testing.TB) []string {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// buildRun is the Dockerfile's RUN line that builds the command.
var buildRun = regexp.MustCompile(`^RUN (CGO_ENABLED=0) go build (.*) -o (\S+) (\./cmd/backlog)$`)

// buildAsDockerfile builds the command into out with the environment and
// flags of the Dockerfile's build line.
func buildAsDockerfile(out string) ([]byte, error) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if m := buildRun.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			cmd := exec.Command("go", append(append([]string{"build"}, strings.Fields(m[2])...), "-o", out, m[4])...)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), m[1])
			return cmd.CombinedOutput()
		}
	}
	return nil, fmt.Errorf("no RUN CGO_ENABLED=0 go build ... ./cmd/backlog line in the Dockerfile")
}

// TestDockerfile checks what can be checked without a Docker engine: the
// build stage uses the Go of go.mod and builds the command statically (the
// build itself is TestMain's), the final image holds that binary alone,
// and its default command runs the exporter, which serves the backlog
// series.
func TestDockerfile(t *testing.T) {
	lines := dockerfile(t)
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if len(lines) == 0 || lines[0] != "FROM golang:"+string(goVersion[1])+" AS build" {
		t.Errorf("first line %q; want FROM golang:%s AS build (go.mod's Go)", lines[0], goVersion[1])
	}
	var built, final string
	var cmd []string
	for _, l := range lines {
		switch {
		case buildRun.MatchString(l):
			built = buildRun.FindStringSubmatch(l)[3]
		case strings.HasPrefix(l, "FROM ") && !strings.Contains(l, " AS "):
			final = l
		case strings.HasPrefix(l, "COPY --from=build "):
			if f := strings.Fields(l); f[2] != built {
				t.Errorf("the final image copies %s; the build wrote %s", f[2], built)
			}
		case strings.HasPrefix(l, "ENTRYPOINT "), strings.HasPrefix(l, "CMD "):
			var words []string
			if err := json.Unmarshal([]byte(l[strings.IndexByte(l, ' ')+1:]), &words); err != nil {
				t.Errorf("%s: not in exec form: %v", l, err)
			}
			cmd = append(cmd, words...)
		}
	}
	if final != "FROM scratch" {
		t.Errorf("final stage %q; want FROM scratch: the binary is static", final)
	}
	if len(cmd) < 2 || cmd[0] != "/backlog" || cmd[1] != "exporter" {
		t.Fatalf("entrypoint and command %q; want /backlog exporter ...", cmd)
	}
	if binary == "" {
		t.Skip("runs the Linux binary")
	}
	out, err := exec.Command(binary, append(cmd[1:], "--once")...).Output()
	if err != nil {
		t.Fatalf("%s %v --once: %v", binary, cmd[1:], err)
	}
	for _, want := range []string{"backlog_socket_backlog{", "backlog_exporter_build_info{", "process_open_fds "} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the image's command serves no %s", want)
		}
	}
}

// daemonSet is the part of the DaemonSet the tests read.
type daemonSet struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				HostPID     bool  `yaml:"hostPID"`
				HostNetwork bool  `yaml:"hostNetwork"`
				Automount   *bool `yaml:"automountServiceAccountToken"`
				Containers  []struct {
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					SecurityContext struct {
						RunAsUser                *int  `yaml:"runAsUser"`
						Privileged               *bool `yaml:"privileged"`
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Drop []string `yaml:"drop"`
							Add  []string `yaml:"add"`
						} `yaml:"capabilities"`
						SeccompProfile struct {
							Type string `yaml:"type"`
						} `yaml:"seccompProfile"`
					} `yaml:"securityContext"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func readDaemonSet(t testing.TB) daemonSet {
	b, err := os.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds daemonSet
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false)
	if err := dec.Decode(&ds); err != nil {
		t.Fatal(err)
	}
	return ds
}

// daemonSetCaps are the capabilities the DaemonSet grants, and what the
// comment at its head says each is for.
var daemonSetCaps = []string{"DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"}

// TestDaemonSet checks the DaemonSet's shape and privileges: its selector
// picks its pods, the exporter's arguments are ones the command takes and
// listen where the port and the scrape annotation say, every capability
// is dropped but the three it documents, nothing privileged.
func TestDaemonSet(t *testing.T) {
	ds := readDaemonSet(t)
	if ds.Kind != "DaemonSet" {
		t.Fatalf("kind %q", ds.Kind)
	}
	spec := ds.Spec.Template.Spec
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not pick the template's pods (%v)", k, v, ds.Spec.Template.Metadata.Labels)
		}
	}
	if !spec.HostPID || spec.HostNetwork || spec.Automount == nil || *spec.Automount {
		t.Errorf("hostPID %v, hostNetwork %v, automountServiceAccountToken %v; want true, false, false", spec.HostPID, spec.HostNetwork, spec.Automount)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.Privileged == nil || *sc.Privileged ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v; want root (for the capabilities), unprivileged, no escalation, read-only root", sc)
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || !slices.Equal(slices.Sorted(slices.Values(sc.Capabilities.Add)), daemonSetCaps) {
		t.Errorf("capabilities drop %v add %v; want ALL and %v", sc.Capabilities.Drop, sc.Capabilities.Add, daemonSetCaps)
	}
	if sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("seccomp %q", sc.SeccompProfile.Type)
	}
	if len(c.Args) < 1 || c.Args[0] != "exporter" {
		t.Fatalf("args %q; want the exporter", c.Args)
	}
	i := slices.Index(c.Args, "--listen")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("args %q: no --listen", c.Args)
	}
	port := c.Args[i+1][strings.LastIndexByte(c.Args[i+1], ':')+1:]
	if len(c.Ports) != 1 || fmt.Sprint(c.Ports[0].ContainerPort) != port || ds.Spec.Template.Metadata.Annotations["prometheus.io/port"] != port {
		t.Errorf("--listen %s; container port %v, scrape annotation %q", c.Args[i+1], c.Ports, ds.Spec.Template.Metadata.Annotations["prometheus.io/port"])
	}
	// The command takes these arguments: run them once.
	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), append(slices.Clone(c.Args), "--once"), &out, &errOut); code != 0 {
		t.Errorf("backlog %s --once: exit %d: %s", strings.Join(c.Args, " "), code, errOut.String())
	}
}

// served runs the exporter once, in process, with an SO_REUSEPORT group
// of two listening so that every series it can serve is there, and
// returns the label names of each series it served (a histogram's
// _bucket, _sum and _count apart).
func served(t *testing.T) map[string]map[string]bool {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the exporter is Linux only")
	}
	lc := kernel.ListenConfig{ReusePort: true}
	a, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := lc.Listen(context.Background(), "tcp4", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), []string{"exporter", "--once"}, &out, &errOut); code != 0 {
		t.Fatalf("exporter --once: exit %d: %s", code, errOut.String())
	}
	names := map[string]map[string]bool{}
	line := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if names[m[1]] == nil {
			names[m[1]] = map[string]bool{}
		}
		for _, l := range label.FindAllStringSubmatch(m[2], -1) {
			names[m[1]][l[1]] = true
		}
	}
	return names
}

// targetLabels are what Prometheus adds to every series it scrapes.
var targetLabels = map[string]bool{"instance": true, "job": true}

// checkExpr checks that expr refers only to series the exporter serves,
// and only to labels those series have, and that every label the text
// uses ({{ $labels.x }}, or {{x}} in a legend) is on every one of them.
func checkExpr(t *testing.T, where, expr string, uses []string, series map[string]map[string]bool) {
	t.Helper()
	refs, err := readPromQL(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	for _, m := range refs.Metrics {
		if series[m] == nil {
			t.Errorf("%s: the exporter serves no %s (in %q)", where, m, expr)
		}
	}
	onSome := func(l string) bool {
		for _, m := range refs.Metrics {
			if series[m][l] {
				return true
			}
		}
		return targetLabels[l]
	}
	for _, l := range refs.Labels {
		if !onSome(l) {
			t.Errorf("%s: no series of %q has a label %s", where, expr, l)
		}
	}
	for _, l := range uses {
		for _, m := range refs.Metrics {
			if series[m] != nil && !series[m][l] && !targetLabels[l] {
				t.Errorf("%s: uses label %s, which %s does not have", where, l, m)
			}
		}
	}
}

var (
	alertLabelUse  = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	legendLabelUse = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// TestAlertRules parses the alerting rules as Prometheus' rule files are
// laid out and checks every rule: a name, an expression that refers only
// to what the exporter serves, a for duration, a severity, and
// annotations that use only labels the expression's series have. The
// rules the issue asks for are there.
func TestAlertRules(t *testing.T) {
	series := served(t)
	b, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("%s: no name, or a name used twice", where)
			}
			seen[r.Alert] = true
			if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
				t.Errorf("%s: for %q", where, r.For)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a severity, a summary and a description", where)
			}
			var uses []string
			for _, a := range r.Annotations {
				for _, m := range alertLabelUse.FindAllStringSubmatch(a, -1) {
					uses = append(uses, m[1])
				}
			}
			checkExpr(t, where, r.Expr, uses, series)
		}
	}
	for _, want := range []string{"ListenQueueNearlyFull", "ListenSocketDropping", "ReusePortGroupLopsided"} {
		if !seen[want] {
			t.Errorf("no rule %s", want)
		}
	}
}

// TestDashboard parses the Grafana dashboard and checks every panel's
// queries and the namespace variable's against what the exporter serves,
// and that each panel reads the dashboard's data source.
func TestDashboard(t *testing.T) {
	series := served(t)
	b, err := os.ReadFile("grafana/backlog-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("uid %q, title %q, %d panels", d.UID, d.Title, len(d.Panels))
	}
	vars := map[string]bool{}
	labelValues := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`)
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		m := labelValues.FindStringSubmatch(fmt.Sprint(q["query"]))
		if m == nil || !series[m[1]][m[2]] {
			t.Errorf("variable %s: query %v does not read a label the exporter serves", v.Name, q["query"])
		}
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.Datasource.UID != "${datasource}" || !vars["datasource"] {
			t.Errorf("panel %q: id %d twice, or data source %q not the dashboard's", p.Title, p.ID, p.Datasource.UID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			var uses []string
			for _, m := range legendLabelUse.FindAllStringSubmatch(tg.LegendFormat, -1) {
				uses = append(uses, m[1])
			}
			checkExpr(t, "panel "+p.Title, tg.Expr, uses, series)
		}
	}
}
