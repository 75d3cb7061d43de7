package cli

import (
	"encoding/json"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// probeHost matches what the probe's text says about the host: the kernel
// release, somaxconn and the counters.
var probeHost = regexp.MustCompile(`Linux \S+ on|somaxconn [0-9]+|\+[0-9]+`)

func normalizeProbe(s string) string {
	return probeHost.ReplaceAllStringFunc(s, func(m string) string {
		switch {
		case strings.HasPrefix(m, "Linux"):
			return "Linux RELEASE on"
		case strings.HasPrefix(m, "somaxconn"):
			return "somaxconn N"
		}
		return "+N"
	})
}

// TestProbeGolden runs the probe in process without the long watch, so
// that nothing in it depends on timing: on this host's kernel, the linux
// rules match every check, and Windows NT 4.0 Workstation's (N, refuse)
// differ where they should, with exit status 1.
func TestProbeGolden(t *testing.T) {
	requireLinux(t)
	for _, tt := range []struct {
		file string
		code int
		args []string
	}{
		{"probe_linux.golden", 0, []string{"probe", "--personality", "linux", "--backlog", "0", "--backlog", "1", "--backlog", "3", "--watch", "0"}},
		{"probe_nt4.golden", 1, []string{"probe", "--personality", "winnt4-workstation", "--backlog", "2", "--watch", "0"}},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != tt.code {
			t.Fatalf("backlog %s: exit %d, want %d: %s", strings.Join(tt.args, " "), code, tt.code, errOut)
		}
		if tt.code == 1 && errOut != "backlog: 3 of 4 checks differ from winnt4-workstation\n" {
			t.Errorf("stderr %q; want the count of checks that differ", errOut)
		}
		golden(t, tt.file, normalizeProbe(out))
	}
}

// TestProbeJSON checks the facts the probe reports against the Linux rules
// in SPEC.md (N+1 wait, a full queue ignores SYNs, each one counted as a
// drop, negative and too-large backlogs become somaxconn), and its
// read-back against ss while the queues are full.
func TestProbeJSON(t *testing.T) {
	requireLinux(t)
	somaxconn, err := kernel.Somaxconn()
	if err != nil {
		t.Fatal(err)
	}
	requireSS(t)
	var mu sync.Mutex
	ss := map[string][2]int{}
	probeFull = func(addr string) {
		// On the probe's goroutines: no t.Fatal here.
		recvQ, sendQ, err := ssListener(int(netip.MustParseAddrPort(addr).Port()))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("ss: %v", err)
			return
		}
		ss[addr] = [2]int{recvQ, sendQ}
	}
	defer func() { probeFull = nil }()
	const maxc = 50
	code, out, errOut := run(t, "probe", "--json", "--watch", "0", "--timeout", "150ms", "--max-clients", strconv.Itoa(maxc),
		"--backlog", "0", "--backlog", "2", "--backlog", "-1", "--backlog", strconv.Itoa(somaxconn+1000))
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	var r probeJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Somaxconn != somaxconn || r.Differ != 0 || len(r.Listeners) != 4 || r.Counters == nil {
		t.Fatalf("somaxconn %d, differ %d, %d listeners, counters %v", r.Somaxconn, r.Differ, len(r.Listeners), r.Counters)
	}
	for _, l := range r.Listeners[:2] {
		n := l.Requested
		if !l.ReadBack || l.Stored != n || !l.Filled || l.Connected != n+1 || l.Queue != n+1 || l.NotQueued != 0 {
			t.Errorf("listen(%d): %+v; want stored %d read back, %d connected and queued", n, l.probeMeasure, n, n+1)
		}
		if l.Overflow.Outcome != "ignored" || l.Overflow.Error != "" || l.Drops != 1 || len(l.RetransmitS) != 0 {
			t.Errorf("listen(%d): overflow %+v, drops %d, retransmits %v; want ignored, 1 drop, none", n, l.Overflow, l.Drops, l.RetransmitS)
		}
		if got, ok := ss[l.Address]; !ok || got != [2]int{l.Queue, l.Stored} {
			t.Errorf("listen(%d): ss Recv-Q, Send-Q = %v; probe read back %d, %d", n, got, l.Queue, l.Stored)
		}
	}
	for _, l := range r.Listeners[2:] {
		if fits := somaxconn+2 <= maxc; l.Stored != somaxconn || l.Filled != fits {
			t.Errorf("listen(%d): stored %d, filled %v; want %d, filled %v", l.Requested, l.Stored, l.Filled, somaxconn, fits)
		}
	}
	if r.Counters.ListenDrops < 2 {
		t.Errorf("ListenDrops grew by %d; want at least the 2 SYNs dropped", r.Counters.ListenDrops)
	}
}

// TestProbeRetransmits watches a client left out of a full queue past its
// first SYN retransmission. Only what the kernel guarantees is asserted:
// no answer, no retransmission before the initial 1 s RTO
// (include/net/tcp.h TCP_TIMEOUT_INIT), and every SYN counted as a drop.
func TestProbeRetransmits(t *testing.T) {
	requireLinux(t)
	code, out, errOut := run(t, "probe", "--json", "--backlog", "1", "--watch", "1500ms")
	if code != 0 {
		t.Logf("exit %d: %s (a loaded host may see the retransmission late)", code, errOut)
	}
	var r probeJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	l := r.Listeners[0]
	if l.Overflow.Outcome != "ignored" || len(l.RetransmitS) == 0 || l.RetransmitS[0] < 1 || len(l.RTOS) != len(l.RetransmitS) || l.RTOS[0] < 1 {
		t.Errorf("overflow %s, retransmits %v, RTO %v; want ignored, the first at 1 s or later, RTO 1 s or more", l.Overflow.Outcome, l.RetransmitS, l.RTOS)
	}
	if l.Drops != uint64(1+len(l.RetransmitS)) {
		t.Errorf("%d drops; want %d, one per SYN", l.Drops, 1+len(l.RetransmitS))
	}
	if r.WatchS != 1.5 || len(l.PredictedRetransmitS) != 1 || l.PredictedRetransmitS[0] != 1 {
		t.Errorf("watch %v s, predicted %v; want 1.5 and [1]", r.WatchS, l.PredictedRetransmitS)
	}
}

// TestRetransmitComparison checks, on made-up times, which retransmissions
// are compared and when they match: a predicted one that may fall either
// side of the end of the window is left out with the measured one in its
// place; Linux 6.5's schedule (1, 2, 3 s) is told apart from the older one
// (1, 3, 7 s); a retransmission seen late because the probe was kept from
// looking matches when the look before it came in time; one the kernel
// sent later than its timers allow does not.
func TestRetransmitComparison(t *testing.T) {
	s := func(fs ...float64) []span {
		var ss []span
		for _, f := range fs {
			d := time.Duration(math.Round(f*1000)) * time.Millisecond
			ss = append(ss, span{d - 5*time.Millisecond, d})
		}
		return ss
	}
	linux := backlog.Linux(backlog.DefaultLinuxConfig()).ClientSYN.At
	old := backlog.Linux(backlog.LinuxConfig{Somaxconn: 4096, SynCookies: 1, SynRetries: 6}).ClientSYN.At
	measured := s(1.025, 2.05, 3.074)
	ms := time.Millisecond
	for _, tt := range []struct {
		name      string
		predicted []time.Duration
		window    time.Duration
		measured  []span
		want, got string
		same      bool
	}{
		{"linux, 3.5s", linux, 3500 * ms, measured, "[1s 2s 3s]", "[1.025s 2.05s 3.074s]", true},
		{"3 at the edge", linux, 3050 * ms, measured, "[1s 2s]", "[1.025s 2.05s]", true},
		{"3 at the edge, not seen", linux, 3050 * ms, s(1.025, 2.05), "[1s 2s]", "[1.025s 2.05s]", true},
		{"before 6.5", old, 3500 * ms, measured, "[1s 3s]", "[1.025s 2.05s 3.074s]", false},
		{"kept from looking", linux, 3500 * ms, []span{{1000 * ms, 1180 * ms}, {2020 * ms, 2030 * ms}, {3060 * ms, 3070 * ms}}, "[1s 2s 3s]", "[1.18s 2.03s 3.07s]", true},
		{"late", linux, 2500 * ms, s(1.3, 2.05), "[1s 2s]", "[1.3s 2.05s]", false},
		{"missing", linux, 2500 * ms, s(1.025), "[1s 2s]", "[1.025s]", false},
		{"none", linux, 300 * ms, nil, "[]", "[]", true},
	} {
		want, got := comparedRetransmits(tt.predicted, tt.measured, tt.window)
		if w, g := durations(want), spanEnds(got); w != tt.want || g != tt.got {
			t.Errorf("%s: compared %s with %s; want %s with %s", tt.name, g, w, tt.got, tt.want)
		}
		if same := sameTimes(want, got); same != tt.same {
			t.Errorf("%s: sameTimes = %v; want %v", tt.name, same, tt.same)
		}
	}
}

// TestTimerLate checks the timer wheel's bounds against kernel/time/timer.c
// at the HZ values it takes: a 1 s timer lands on 8-jiffy steps (80 ms at
// HZ 100, 32 ms at HZ 250) or, at HZ 1000, 64-jiffy ones.
func TestTimerLate(t *testing.T) {
	if got, want := timerLate(time.Second), 90*time.Millisecond+timerSlack; got != want {
		t.Errorf("timerLate(1s) = %v; want %v (HZ 100: 8 jiffies and the tick)", got, want)
	}
	if got := timerLate(10 * time.Millisecond); got > 20*time.Millisecond+timerSlack {
		t.Errorf("timerLate(10ms) = %v; want a jiffy or two", got)
	}
	if got, want := timerLate(8*time.Second), 650*time.Millisecond+timerSlack; got != want {
		t.Errorf("timerLate(8s) = %v; want %v (HZ 100: 800 jiffies, 64-jiffy steps, and the tick)", got, want)
	}
}

func spanEnds(ss []span) string {
	ds := make([]time.Duration, len(ss))
	for i, sp := range ss {
		ds[i] = sp.hi
	}
	return durations(ds)
}

func durations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}
