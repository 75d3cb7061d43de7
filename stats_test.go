package backlog

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestStatsUnobservedIsNotZero: what a transport cannot see marshals to
// null and prints as n/a, and reads back as unobserved, not as a 0.
func TestStatsUnobservedIsNotZero(t *testing.T) {
	s := Stats{Backlog: 5, Capacity: 6, Len: 2, Accepted: 7, Unobserved: StatHalfOpen | StatSYNs}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, want := range []string{`"half_open_now":null`, `"syns":null`, `"queued_now":2`, `"accepted":7`, `"listen_overflows":0`} {
		if !strings.Contains(js, want) {
			t.Errorf("JSON %s lacks %s", js, want)
		}
	}
	var back Stats
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Errorf("round trip: %+v; want %+v", back, s)
	}
	str := s.String()
	if !strings.Contains(str, "half_open_now=n/a") || !strings.Contains(str, "accepted=7") || strings.Contains(str, "refused=") {
		t.Errorf("String() = %q; want n/a for half_open_now, accepted=7 and no zero counters", str)
	}
	if s.Observed(StatHalfOpen) || !s.Observed(StatLen) {
		t.Errorf("Observed: half-open %v, len %v; want false, true", s.Observed(StatHalfOpen), s.Observed(StatLen))
	}
	if v, ok := s.Get(StatAccepted); v != 7 || !ok {
		t.Errorf("Get(StatAccepted) = %d, %v; want 7, true", v, ok)
	}
}

// TestStatFieldsCoverStats: every JSON key of Stats has a field entry, so
// that no value is left out of JSON, text or metrics.
func TestStatFieldsCoverStats(t *testing.T) {
	var all Stat
	names := map[string]bool{}
	for _, f := range StatFields {
		if all&f.Stat != 0 || names[f.Name] {
			t.Errorf("%s listed twice", f.Name)
		}
		all |= f.Stat
		names[f.Name] = true
	}
	// A queue observes everything but the wait, which needs a clock: its
	// JSON has no other null.
	q, _ := NewQueue[int](MustLookup("linux"), 5)
	b, _ := json.Marshal(q.Stats())
	var m map[string]any
	json.Unmarshal(b, &m)
	if len(m) != len(StatFields)+1 {
		t.Errorf("Stats marshals %d values; StatFields has %d, and queue_wait", len(m), len(StatFields))
	}
	for k, v := range m {
		if (v == nil) != (k == "queue_wait") {
			t.Errorf("a queue's %s is %v", k, v)
		}
	}
}

// TestListenRequest is the rule of "Saying the backlog".
func TestListenRequest(t *testing.T) {
	for _, c := range []struct{ configured, want int }{
		{0, 4096}, {ZeroBacklog, 0}, {MaxBacklog, -1}, {5, 5}, {Exactly(0), 0}, {Exactly(7), 7},
	} {
		if got := ListenRequest(c.configured, 4096); got != c.want {
			t.Errorf("ListenRequest(%d, 4096) = %d; want %d", c.configured, got, c.want)
		}
	}
}

// TestQueueWait: buckets by bound, quantiles rounded up to a bound, JSON
// in cumulative buckets that reads back, and Stats still comparable.
func TestQueueWait(t *testing.T) {
	var h QueueWait
	for _, d := range []time.Duration{0, time.Millisecond, 1500 * time.Microsecond, 40 * time.Millisecond, 3 * time.Second, 2 * time.Minute} {
		h.Observe(d)
	}
	want := [len(h.Buckets)]uint64{0: 2, 1: 1, 5: 1, 11: 1, 15: 1}
	if h.Buckets != want || h.Count != 6 {
		t.Errorf("buckets %v count %d; want %v, 6", h.Buckets, h.Count, want)
	}
	if d, ok := h.Quantile(0.5); !ok || d != 2*time.Millisecond {
		t.Errorf("p50 %v %v; want <= 2ms", d, ok)
	}
	if _, ok := h.Quantile(1); ok {
		t.Errorf("p100 is beyond the last bound, yet known")
	}
	if got := h.String(); got != "6 waits, mean 20.5071s, p50 <= 2ms, p99 > 1m0s" {
		t.Errorf("String() = %q", got)
	}
	s := Stats{Backlog: 5, QueueWait: h}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"queue_wait":{"count":6,"sum_seconds":123.0425,"buckets":[{"le":"0.001","count":2},{"le":"0.002","count":3}`) ||
		!strings.Contains(string(b), `{"le":"+Inf","count":6}]}`) {
		t.Errorf("JSON %s", b)
	}
	var back Stats
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Errorf("round trip: %+v; want %+v", back, s)
	}
	s.Unobserved = StatQueueWait
	b, _ = json.Marshal(s)
	if !strings.Contains(string(b), `"queue_wait":null`) {
		t.Errorf("unobserved wait: %s", b)
	}
	var r QueueWaitRecorder
	r.Observe(3 * time.Millisecond)
	r.Observe(-time.Second)
	if got := r.Snapshot(); got.Count != 2 || got.Buckets[0] != 1 || got.Buckets[2] != 1 || got.Sum != 3*time.Millisecond {
		t.Errorf("recorder: %+v", got)
	}
}

// TestStatsAdd: two shards' Stats add up, with Requested and Backlog the
// first's, the waits merged, and what one did not see unobserved.
func TestStatsAdd(t *testing.T) {
	a := Stats{Requested: 5, Backlog: 5, Capacity: 6, Len: 2, Accepted: 3, Unobserved: StatSYNs}
	b := Stats{Requested: 5, Backlog: 5, Capacity: 6, Len: 1, Accepted: 4, Unobserved: StatHalfOpen}
	a.QueueWait.Observe(time.Millisecond)
	b.QueueWait.Observe(time.Second)
	got := a.Add(b)
	var w QueueWait
	w.Observe(time.Millisecond)
	w.Observe(time.Second)
	want := Stats{Requested: 5, Backlog: 5, Capacity: 12, Len: 3, Accepted: 7, QueueWait: w, Unobserved: StatSYNs | StatHalfOpen}
	if got != want {
		t.Errorf("Add: %+v; want %+v", got, want)
	}
}
