package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// run runs the command in process and returns its exit status and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestGoldenText(t *testing.T) {
	for _, tt := range []struct {
		file string
		args []string
	}{
		{"explain_300.golden", []string{"explain", "300"}},
		{"explain_edges.golden", []string{"explain", "--personality", "linux", "--personality", "windows", "-1", "0", "SOMAXCONN", "SOMAXCONN_HINT(1000)"}},
		{"explain_defaults.golden", []string{"explain", "--defaults", "--personality", "linux:somaxconn=4096", "--personality", "darwin"}},
		{"personalities.golden", []string{"personalities"}},
		{"personalities_detail.golden", []string{"personalities", "linux:somaxconn=128", "win2000-sp1-wsd"}},
		{"help.golden", []string{"help"}},
		{"help_lab.golden", []string{"help", "lab"}},
		{"help_lab_overload.golden", []string{"help", "lab", "--overload"}},
		{"help_probe.golden", []string{"probe", "--help"}},
		{"help_top.golden", []string{"help", "top"}},
		{"help_exporter.golden", []string{"help", "exporter"}},
		{"help_serve.golden", []string{"serve", "-h"}},
		{"help_fill.golden", []string{"help", "fill"}},
		{"help_shape.golden", []string{"help", "shape"}},
		{"help_explain.golden", []string{"help", "explain"}},
		{"help_personalities.golden", []string{"help", "personalities"}},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != 0 || errOut != "" {
			t.Fatalf("backlog %s: exit %d, stderr %q", strings.Join(tt.args, " "), code, errOut)
		}
		golden(t, tt.file, out)
	}
}

// TestExplainJSON300 checks `backlog explain --json 300` against SPEC.md for
// every personality.
func TestExplainJSON300(t *testing.T) {
	code, out, _ := run(t, "explain", "--json", "300")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	want := map[string][4]any{ // backlog, capacity, on_full, relisten
		"winsock1.1":         {5, 5, "refuse", "update"},
		"winnt3.5":           {100, 100, "refuse", "update-reset-excess"},
		"winnt4-workstation": {5, 5, "refuse", "update-reset-excess"},
		"winnt4-server":      {200, 200, "refuse", "update-reset-excess"},
		"wince":              {5, 5, "refuse", "update-reset-excess"},
		"irsock":             {2, 2, "refuse", "update-reset-excess"},
		"win2000-sp1-wsd":    {200, 200, "refuse", "update-reset-excess"},
		"wsp":                {200, 200, "refuse", "update-reset-excess"},
		"windows":            {200, 200, "refuse", "unchanged"},
		"bsd4.3":             {5, 8, "ignore", "update"},
		"freebsd":            {128, 193, "refuse", "update"},
		"darwin":             {128, 128, "evict", "update"},
		"linux":              {300, 301, "ignore", "update"},
		"gvisor":             {300, 301, "ignore", "fail"},
		"lwip":               {255, 255, "ignore", "update"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows; want %d", len(rows), len(want))
	}
	for _, r := range rows {
		name, _ := r["personality"].(string)
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected personality %q", name)
			continue
		}
		if r["requested"] != 300.0 || r["backlog"] != float64(w[0].(int)) || r["capacity"] != float64(w[1].(int)) || r["on_full"] != w[2] || r["relisten"] != w[3] {
			t.Errorf("%s: %v; want backlog %v, capacity %v, on_full %v, relisten %v", name, r, w[0], w[1], w[2], w[3])
		}
	}
}

func TestPersonalitiesJSON(t *testing.T) {
	code, out, _ := run(t, "personalities", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var ps []personalityJSON
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 15 {
		t.Fatalf("%d personalities; want 15", len(ps))
	}
	for _, p := range ps {
		if len(p.Sources) == 0 || p.ClientSYN.GiveUp == 0 {
			t.Errorf("%s: no sources or client schedule", p.Name)
		}
	}
}

func TestFlagsAnywhereAndNegativeBacklogs(t *testing.T) {
	code, out, _ := run(t, "explain", "-5", "--json", "--personality=darwin")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rows []explainJSON
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Requested != -5 || rows[0].Backlog != 128 {
		t.Errorf("darwin listen(-5) = %+v; want requested -5, backlog 128", rows)
	}
}

func TestCommandHelpExitsZero(t *testing.T) {
	code, out, _ := run(t, "explain", "-h")
	if code != 0 || !strings.HasPrefix(out, "Usage: backlog explain") {
		t.Errorf("explain -h: exit %d, %q", code, out)
	}
}
