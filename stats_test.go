package backlog

import (
	"encoding/json"
	"strings"
	"testing"
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
	// A queue observes everything: its JSON has no null.
	q, _ := NewQueue[int](MustLookup("linux"), 5)
	b, _ := json.Marshal(q.Stats())
	var m map[string]any
	json.Unmarshal(b, &m)
	if len(m) != len(StatFields) {
		t.Errorf("Stats marshals %d values; StatFields has %d", len(m), len(StatFields))
	}
	for k, v := range m {
		if v == nil {
			t.Errorf("a queue's %s is null", k)
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
