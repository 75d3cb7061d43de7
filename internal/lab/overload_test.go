package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
)

// TestOverloadAccounts runs a short overload experiment on the kernel
// transport and checks what holds however fast the machine is: every
// client ends one way, the work wasted is the work whose client got no
// answer, the resets the clients saw are the policy's, Go's listener keeps
// no account, and the timeline adds up to the counts.
func TestOverloadAccounts(t *testing.T) {
	cfg := OverloadConfig{
		Transport: transport.Kernel, Rate: 300, Duration: 600 * time.Millisecond,
		GiveUp: 300 * time.Millisecond, Service: 20 * time.Millisecond, Workers: 2, Rounds: 2,
	}
	o := backlog.Overload{Target: 40 * time.Millisecond, Interval: 50 * time.Millisecond}
	for _, name := range []string{PolicyNetListen, PolicyCoDel, PolicyLIFO} {
		p, err := ParsePolicy(name, o, cfg.Capacity())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Policies = append(cfg.Policies, p)
	}
	res, err := RunOverload(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 6 || len(res.Summary) != 3 || res.Interrupted {
		t.Fatalf("%d runs, %d summaries, interrupted %v; want 6, 3, false", len(res.Runs), len(res.Summary), res.Interrupted)
	}
	if res.Load != 3 || res.CapacityPerSec != 100 {
		t.Errorf("load %v of a capacity of %v; want 3 of 100", res.Load, res.CapacityPerSec)
	}
	for i, r := range res.Runs {
		if want := cfg.Policies[i%3].Name; r.Policy != want || r.Round != i/3+1 {
			t.Errorf("run %d is %s round %d; want %s round %d, the policies taking turns", i, r.Policy, r.Round, want, i/3+1)
		}
		if r.Offered != r.Answered+r.Reset+r.GaveUp+r.Failed || r.Offered == 0 {
			t.Errorf("%s: %d offered, %d answered + %d reset + %d gave up + %d failed", r.Policy, r.Offered, r.Answered, r.Reset, r.GaveUp, r.Failed)
		}
		if r.Wasted != r.Served-r.Answered || r.Wasted < 0 {
			t.Errorf("%s: %d wasted of %d served with %d answered", r.Policy, r.Wasted, r.Served, r.Answered)
		}
		if r.Policy == PolicyNetListen {
			if r.Listener != nil || r.Reset != 0 {
				t.Errorf("net.Listen: listener stats %v, %d reset; want none", r.Listener, r.Reset)
			}
		} else if r.Listener == nil || uint64(r.Reset) > r.Listener.Overdue {
			t.Errorf("%s: clients saw %d resets; the listener reset %v overdue", r.Policy, r.Reset, r.Listener)
		}
		var answered float64
		for _, s := range r.Timeline {
			answered += s.AnsweredPerSec * timelineStep.Seconds()
		}
		if math.Round(answered) != float64(r.Answered) {
			t.Errorf("%s: the timeline has %v answers; the run %d", r.Policy, answered, r.Answered)
		}
		if (r.LatencyMS == nil) != (r.Answered == 0) || len(r.Latencies) != r.Answered {
			t.Errorf("%s: latency %v, %d latencies, for %d answered", r.Policy, r.LatencyMS, len(r.Latencies), r.Answered)
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Runs []map[string]any `json:"runs"`
	}
	json.Unmarshal(b, &back)
	if v, ok := back.Runs[0]["listener"]; !ok || v != nil {
		t.Errorf("net.Listen's listener marshals as %v; want null", v)
	}

	var svg bytes.Buffer
	if err := WriteOverloadSVG(&svg, []OverloadResult{res, res}); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&svg)
	panels := 0
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			for _, a := range se.Attr {
				if a.Name.Local == "fill" && a.Value == "none" {
					panels++
				}
			}
		}
	}
	if panels != 6 {
		t.Errorf("the chart of two experiments has %d panels; want 6", panels)
	}
}

// TestOverloadInterrupted: a context that ends stops the experiment at
// once, marks it and its last run, and leaves that run out of the
// summary.
func TestOverloadInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	p, _ := ParsePolicy(PolicyCoDel, backlog.Overload{Target: 20 * time.Millisecond}, 100)
	start := time.Now()
	res, err := RunOverload(ctx, OverloadConfig{Rate: 200, Duration: time.Minute, Workers: 2, Service: 20 * time.Millisecond, Policies: []OverloadPolicy{p}, Rounds: 3})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the experiment took %v after its context ended", took)
	}
	if !res.Interrupted || len(res.Runs) != 1 || !res.Runs[0].Interrupted || len(res.Summary) != 0 {
		t.Errorf("interrupted %v, %d runs (interrupted %v), %d summaries; want true, 1 (true), 0",
			res.Interrupted, len(res.Runs), len(res.Runs) > 0 && res.Runs[0].Interrupted, len(res.Summary))
	}
}

func TestParsePolicy(t *testing.T) {
	o := backlog.Overload{Target: 50 * time.Millisecond, Interval: 100 * time.Millisecond}
	for _, c := range []struct {
		name string
		want OverloadPolicy
	}{
		{"net.Listen", OverloadPolicy{Name: "net.Listen", NetListen: true}},
		{"small", OverloadPolicy{Name: "small", Backlog: 20}},
		{"large", OverloadPolicy{Name: "large", Backlog: largeBacklog}},
		{"backlog=7", OverloadPolicy{Name: "backlog=7", Backlog: 7}},
		{"codel", OverloadPolicy{Name: "codel", Overload: o}},
		{"codel+lifo", OverloadPolicy{Name: "codel+lifo", Overload: backlog.Overload{Target: o.Target, Interval: o.Interval, LIFO: true}}},
		{"codel+sized", OverloadPolicy{Name: "codel+sized", Overload: backlog.Overload{Target: o.Target, Interval: o.Interval, SizeBacklog: true}}},
	} {
		got, err := ParsePolicy(c.name, o, 400)
		if err != nil || got != c.want {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "fifo", "backlog=0", "backlog=x"} {
		if _, err := ParsePolicy(bad, o, 400); err == nil || !strings.Contains(err.Error(), "unknown policy") {
			t.Errorf("ParsePolicy(%q): %v; want unknown policy", bad, err)
		}
	}
}

func TestSpread(t *testing.T) {
	if s := spreadOf(nil); s != nil {
		t.Errorf("spreadOf(nil) = %v; want nil: nothing measured is not 0", s)
	}
	if s := *spreadOf([]float64{3, 1, 2}); s != (Spread{2, 1, 3}) {
		t.Errorf("spreadOf(3,1,2) = %+v", s)
	}
	if s := *spreadOf([]float64{4, 1, 2, 3}); s != (Spread{2.5, 1, 4}) {
		t.Errorf("spreadOf(4,1,2,3) = %+v", s)
	}
}
