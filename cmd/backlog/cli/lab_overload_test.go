package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// short is an overload experiment that takes about a second a policy.
var short = []string{"lab", "--overload", "--duration", "300ms", "--give-up", "200ms", "--workers", "2", "--service", "10ms", "--target", "20ms", "--rate", "2x"}

func TestLabOverloadText(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "o.svg")
	code, out, errOut := run(t, append(short, "--policies", "net.Listen,codel", "--rounds", "2", "--svg", svg)...)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"clients arrive at 400/s, 2x\nthe application's capacity of 200/s (2 workers, 10ms a request), for 300ms;",
		"Medians of 2 runs, the policies taking turns; --json has each run.",
		"POLICY      BACKLOG  GOODPUT/S", "\nnet.Listen  default  ", "\ncodel       ", "POLICY      WORK WASTED", "Charts written to " + svg,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(errOut, "round 1/2") != 2 || strings.Count(errOut, "round 2/2") != 2 {
		t.Errorf("progress on stderr: %q; want a line a run", errOut)
	}
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 80 {
			t.Errorf("a line wider than 80 columns: %q", l)
		}
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.HasPrefix(b, []byte("<svg")) {
		t.Errorf("the chart: %v, %.40q", err, b)
	}
}

func TestLabOverloadJSON(t *testing.T) {
	code, out, errOut := run(t, append(short, "--policies", "codel,small", "--rate", "2x,1x", "--json")...)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var rs []struct {
		Load    float64 `json:"load"`
		Summary []struct {
			Policy string `json:"policy"`
		} `json:"summary"`
		Runs []struct {
			Listener map[string]any `json:"listener"`
			Timeline []any          `json:"timeline"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rs) != 2 || rs[0].Load != 2 || rs[1].Load != 1 || len(rs[0].Summary) != 2 || rs[0].Summary[1].Policy != "small" {
		t.Fatalf("JSON: %+v", rs)
	}
	if r := rs[0].Runs[0]; r.Listener == nil || r.Listener["overdue"] == nil || r.Timeline != nil {
		t.Errorf("a run's listener %v (want its overdue count), timeline %v (want none without --timeline)", r.Listener, r.Timeline)
	}
}

// TestLabOverloadInterrupted: interrupted, the command prints what it has
// and exits 130.
func TestLabOverloadInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	code := Main(ctx, append(short, "--policies", "codel"), &out, &errOut)
	if code != 130 || !strings.Contains(out.String(), "Interrupted: the summary has the runs that ended") || !strings.Contains(errOut.String(), "interrupted") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 130 and the partial summary", code, out.String(), errOut.String())
	}
}
