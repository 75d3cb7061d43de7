package lab

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math"
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
	if r.Connected+r.Refused+r.TimedOut+r.Failed+r.Unfinished != r.Clients {
		t.Errorf("%s: connected %d + refused %d + timed out %d + failed %d + unfinished %d != %d clients", r.Personality, r.Connected, r.Refused, r.TimedOut, r.Failed, r.Unfinished, r.Clients)
	}
	if r.Interrupted || r.Unfinished != 0 || r.Failed != 0 {
		t.Errorf("%s: interrupted %v, %d unfinished, %d failed (%v) in a run left to end", r.Personality, r.Interrupted, r.Unfinished, r.Failed, r.Errors)
	}
	if r.Accepted+r.Reset+r.Waiting != r.Connected || r.Waiting < 0 {
		t.Errorf("%s: accepted %d + reset %d + waiting %d != connected %d", r.Personality, r.Accepted, r.Reset, r.Waiting, r.Connected)
	}
	return r
}

// TestLabPerPersonality checks what the lab reports for a backlog of 5, an
// application that never accepts, and clients arriving one after another.
// Linux decides a SYN by the connections completed so far, so a client
// whose SYN a busy machine delivers before the previous handshake ended is
// answered, and its final ACK then dropped: it counts as connected, not
// timed out (orSooner). The other systems here count a handshake from its
// SYN, and the order of arrivals does not change their counts.
func TestLabPerPersonality(t *testing.T) {
	for _, tt := range []struct {
		name                                string
		connected, refused, reset, timedOut int
		orSooner                            bool
	}{
		{"winnt4-workstation", 5, 10, 0, 0, false},
		{"irsock", 2, 4, 0, 0, false},
		{"linux", 6, 0, 0, 12, true},
		{"freebsd", 24, 0, 16, 0, false},
		{"lwip", 5, 0, 0, 10, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runLab(t, Config{
				Personality: backlog.MustLookup(tt.name), Backlog: 5,
				Arrival: 10 * time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 500 * time.Millisecond,
			})
			// A reset right after the handshake can reach a client before
			// its connect returns, which then fails with ECONNRESET: it
			// connected and was reset, as the others.
			connected, timedOut := tt.connected, tt.timedOut
			if tt.orSooner && r.Connected > connected && r.Connected+r.TimedOut == connected+timedOut {
				connected, timedOut = r.Connected, r.TimedOut
			}
			if r.Connected != connected || r.Refused != tt.refused || r.Reset != tt.reset || r.TimedOut != timedOut {
				t.Errorf("connected %d, refused %d, reset %d, timed out %d (%v); want %d, %d, %d, %d",
					r.Connected, r.Refused, r.Reset, r.TimedOut, r.Errors, tt.connected, tt.refused, tt.reset, tt.timedOut)
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

// TestSVG draws two runs and checks the drawing: well-formed XML with the
// run's title, one panel per run with its queue and capacity lines, and
// its clients' outcomes drawn as bands as thick as their counts: Windows
// NT's refused clients show, and no run has a band it did not meet.
func TestSVG(t *testing.T) {
	var results []Result
	for _, name := range []string{"linux", "winnt4-workstation"} {
		results = append(results, runLab(t, Config{Personality: backlog.MustLookup(name), Backlog: 3, Arrival: time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 300 * time.Millisecond}))
	}
	var b strings.Builder
	if err := WriteSVG(&b, results, "listen(3) on netstack"); err != nil {
		t.Fatal(err)
	}
	type shape struct {
		Title  string `xml:"title"`
		Points string `xml:"points,attr"`
	}
	var doc struct {
		XMLName   xml.Name `xml:"svg"`
		Polylines []shape  `xml:"polyline"`
		Polygons  []shape  `xml:"polygon"`
		Texts     []string `xml:"text"`
	}
	if err := xml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not well-formed SVG: %v", err)
	}
	lines := map[string]bool{}
	for _, p := range doc.Polylines {
		if strings.Count(p.Points, ",") >= 2 {
			lines[p.Title] = true
		}
	}
	// height is how thick a band gets. Its outline runs along its top
	// left to right and back along its bottom, so the k-th point from
	// the start and the k-th from the end lie at one moment. The band's
	// extent is not its thickness: an empty band rises with the bands
	// below it.
	height := map[string]float64{}
	for _, p := range doc.Polygons {
		var ys []float64
		for _, pt := range strings.Fields(p.Points) {
			var x, y float64
			fmt.Sscanf(pt, "%f,%f", &x, &y)
			ys = append(ys, y)
		}
		for k := 0; k < len(ys)/2; k++ {
			height[p.Title] = math.Max(height[p.Title], ys[len(ys)-1-k]-ys[k])
		}
	}
	texts := strings.Join(doc.Texts, "\n")
	if !strings.Contains(texts, "backlog lab: listen(3) on netstack") {
		t.Errorf("no title in:\n%s", texts)
	}
	for _, r := range results {
		for _, l := range []string{" queue", " capacity"} {
			if !lines[r.Personality+l] {
				t.Errorf("no line %q", r.Personality+l)
			}
		}
		if !strings.Contains(texts, finalCounts(r)) {
			t.Errorf("no %q in:\n%s", finalCounts(r), texts)
		}
	}
	// A band is drawn when its outcome happened. Linux never refuses and
	// Windows NT refuses what does not fit; whether a Linux client times
	// out depends on whether its SYN met a full queue or a handshake
	// still open, which a busy machine decides, so its band is checked
	// against the run's own count.
	for band, want := range map[string]bool{
		"linux refused": false, "linux timed out": results[0].TimedOut > 0, "linux connected, waiting": true,
		"winnt4-workstation refused": true, "winnt4-workstation timed out": false,
	} {
		if got := height[band] > 1; got != want {
			t.Errorf("band %q drawn %v (height %.1f); want %v; runs ended %q, %q", band, got, height[band], want, finalCounts(results[0]), finalCounts(results[1]))
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

// TestLabInterrupted stops a run from outside once the queue is full, with
// the other clients' SYNs unanswered and their 30 s far from over: they are
// unfinished, not timed out, and the result says it was interrupted. (On a
// busy machine a client's SYN may meet a handshake still open rather than
// the full queue and be answered, its final ACK then dropped: it counts as
// connected, so three or more connect.)
func TestLabInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Run(ctx, Config{
		Personality: backlog.MustLookup("linux:syncookies=0"), Backlog: 2, Clients: 10, Arrival: 5 * time.Millisecond,
		Accept: AcceptPolicy{Never: true}, Timeout: 30 * time.Second,
		Progress: func(p Progress) {
			if p.Connected >= 3 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Interrupted || r.Connected < 3 || r.Connected+r.Unfinished != 10 || r.TimedOut != 0 || r.Refused != 0 || r.Failed != 0 {
		t.Errorf("interrupted %v: connected %d, unfinished %d, timed out %d, refused %d, failed %d (%v); want interrupted, 3 or more connected, the rest of the 10 unfinished, none timed out, refused or failed",
			r.Interrupted, r.Connected, r.Unfinished, r.TimedOut, r.Refused, r.Failed, r.Errors)
	}
	if r.ConnectMS.Count != r.Connected {
		t.Errorf("connect times of %d clients; want one for each of the %d connected", r.ConnectMS.Count, r.Connected)
	}
}

// TestPercentilesOfNothing: with no client connected the percentiles are
// unknown, null in JSON, not 0.
func TestPercentilesOfNothing(t *testing.T) {
	b, err := json.Marshal(percentiles(nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"count":0,"p50":null,"p90":null,"p99":null,"max":null}` {
		t.Errorf("empty percentiles: %s", b)
	}
	b, _ = json.Marshal(percentiles([]time.Duration{2 * time.Millisecond}))
	if string(b) != `{"count":1,"p50":2,"p90":2,"p99":2,"max":2}` {
		t.Errorf("one connect time: %s", b)
	}
}
