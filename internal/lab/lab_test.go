package lab

import (
	"context"
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
)

func runLab(t *testing.T, cfg Config) Result {
	t.Helper()
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Every client ends in exactly one outcome.
	if r.Connected+r.Refused+r.TimedOut != r.Clients {
		t.Errorf("%s: connected %d + refused %d + timed out %d != %d clients", r.Personality, r.Connected, r.Refused, r.TimedOut, r.Clients)
	}
	if r.Accepted+r.Reset+r.Waiting != r.Connected || r.Waiting < 0 {
		t.Errorf("%s: accepted %d + reset %d + waiting %d != connected %d", r.Personality, r.Accepted, r.Reset, r.Waiting, r.Connected)
	}
	return r
}

// TestLabPerPersonality checks what the lab reports for a backlog of 5, an
// application that never accepts, and clients arriving one after another.
func TestLabPerPersonality(t *testing.T) {
	for _, tt := range []struct {
		name                                string
		connected, refused, reset, timedOut int
	}{
		{"winnt4-workstation", 5, 10, 0, 0},
		{"irsock", 2, 4, 0, 0},
		{"linux", 6, 0, 0, 12},
		{"freebsd", 24, 0, 16, 0},
		{"lwip", 5, 0, 0, 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runLab(t, Config{
				Personality: backlog.MustLookup(tt.name), Backlog: 5,
				Arrival: 10 * time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 500 * time.Millisecond,
			})
			// A reset right after the handshake can reach a client before
			// its connect returns, which then fails with ECONNRESET:
			// counted as refused. Either way it was reset.
			early := r.Errors["ECONNRESET"]
			if r.Connected+early != tt.connected || r.Refused-early != tt.refused || r.Reset+early != tt.reset || r.TimedOut != tt.timedOut {
				t.Errorf("connected %d, refused %d, reset %d (and %d at connect), timed out %d; want %d, %d, %d, %d",
					r.Connected, r.Refused, r.Reset, early, r.TimedOut, tt.connected, tt.refused, tt.reset, tt.timedOut)
			}
			if r.InQueue != r.Capacity {
				t.Errorf("%d in the queue at the end; want the capacity, %d", r.InQueue, r.Capacity)
			}
			if r.Accepted != 0 {
				t.Errorf("accepted %d with --accept none", r.Accepted)
			}
		})
	}
}

// TestLabAcceptingApplication: with an application that accepts as fast as
// it can and room for every client, every client of a refusing system gets
// in and is accepted, and the run is recorded.
func TestLabAcceptingApplication(t *testing.T) {
	r := runLab(t, Config{Personality: backlog.MustLookup("windows"), Backlog: 50, Clients: 50, Arrival: time.Millisecond, Timeout: time.Second})
	if r.Connected != 50 || r.Accepted != 50 {
		t.Errorf("connected %d, accepted %d of 50; want all", r.Connected, r.Accepted)
	}
	if len(r.Timeline) == 0 || r.ConnectMS.Max == 0 {
		t.Errorf("no timeline or connect times recorded")
	}
}

// TestLabAcceptRate: a slow application (20/s) behind a Linux queue lets
// ignored clients in on their SYN retransmissions, and its pace shows in the
// time the run takes.
func TestLabAcceptRate(t *testing.T) {
	r := runLab(t, Config{
		Personality: backlog.MustLookup("linux"), Backlog: 1, Clients: 6,
		Arrival: 2 * time.Millisecond, Accept: AcceptPolicy{Rate: 20}, Timeout: 2500 * time.Millisecond,
	})
	if r.Accepted < 3 {
		t.Errorf("accepted %d; want the first 2 and some retransmitting clients", r.Accepted)
	}
	if r.ConnectMS.Max < 900 {
		t.Errorf("slowest connect %.0f ms; a retransmitting client takes at least 1 s", r.ConnectMS.Max)
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(ds)
	if p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 {
		t.Errorf("percentiles of 1..100 ms: %+v", p)
	}
	if (percentiles(nil) != Percentiles{}) {
		t.Error("percentiles of nothing are not zero")
	}
}

// TestSVG draws two runs and checks the drawing: well-formed XML, one queue
// line and one connect-time line per run, and a legend naming each.
func TestSVG(t *testing.T) {
	var results []Result
	for _, name := range []string{"linux", "winnt4-workstation"} {
		results = append(results, runLab(t, Config{Personality: backlog.MustLookup(name), Backlog: 3, Arrival: time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 300 * time.Millisecond}))
	}
	var b strings.Builder
	if err := WriteSVG(&b, results); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName   xml.Name `xml:"svg"`
		Polylines []struct {
			Title  string `xml:"title"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
		Texts []string `xml:"text"`
	}
	if err := xml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not well-formed SVG: %v", err)
	}
	want := map[string]bool{"linux queue": false, "linux connect times": false, "winnt4-workstation queue": false, "winnt4-workstation connect times": false}
	for _, p := range doc.Polylines {
		if _, ok := want[p.Title]; ok && strings.Count(p.Points, ",") >= 2 {
			want[p.Title] = true
		}
	}
	for title, seen := range want {
		if !seen {
			t.Errorf("no line %q with points", title)
		}
	}
	legend := strings.Join(doc.Texts, "\n")
	for _, r := range results {
		entry := fmt.Sprintf("%s (%d/%d)", r.Personality, r.Connected, r.Clients)
		if !strings.Contains(legend, entry) {
			t.Errorf("legend has no %q:\n%s", entry, legend)
		}
	}
}

// TestLabRelisten calls listen() again during a run: Windows NT 4.0 Server
// resets the waiting connections beyond the new backlog, Linux keeps them
// and only stores the new value, gVisor refuses to shrink below what waits.
func TestLabRelisten(t *testing.T) {
	for _, tt := range []struct {
		name          string
		reset         int
		stored        int
		err           bool
		stillConnects int
	}{
		{"winnt4-server", 3, 2, false, 2},
		{"linux", 0, 2, false, 5},
		{"gvisor", 0, 5, true, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Five clients connect at once; a second later, listen(2).
			r := runLab(t, Config{
				Personality: backlog.MustLookup(tt.name), Backlog: 5, Clients: 5,
				Accept: AcceptPolicy{Never: true}, Timeout: 500 * time.Millisecond,
				Relisten: []Relisten{{After: time.Second, Backlog: 2}},
			})
			if len(r.Relistens) != 1 {
				t.Fatalf("%d listen() agains reported; want 1", len(r.Relistens))
			}
			rl := r.Relistens[0]
			if rl.Stored != tt.stored || (rl.Err != "") != tt.err || rl.Backlog != 2 {
				t.Errorf("listen(2) again: %+v; want backlog %d, failure %v", rl, tt.stored, tt.err)
			}
			if r.Connected != 5 || r.Reset != tt.reset || r.InQueue != tt.stillConnects {
				t.Errorf("connected %d, reset %d, in the queue %d; want 5, %d, %d", r.Connected, r.Reset, r.InQueue, tt.reset, tt.stillConnects)
			}
		})
	}
}
