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
// are compared and when they match: a predicted one too close to the end of
// the window is left out with the measured one that matches it, and
// Linux 6.5's schedule (1, 2, 3 s) is told apart from the older one (1, 3,
// 7 s).
func TestRetransmitComparison(t *testing.T) {
	s := func(fs ...float64) []time.Duration {
		var ds []time.Duration
		for _, f := range fs {
			ds = append(ds, time.Duration(math.Round(f*1000))*time.Millisecond)
		}
		return ds
	}
	linux := backlog.Linux(backlog.DefaultLinuxConfig()).ClientSYN.At
	old := backlog.Linux(backlog.LinuxConfig{Somaxconn: 4096, SynCookies: 1, SynRetries: 6}).ClientSYN.At
	measured := s(1.025, 2.05, 3.074)
	for _, tt := range []struct {
		name      string
		predicted []time.Duration
		window    time.Duration
		measured  []time.Duration
		want, got string
		same      bool
	}{
		{"linux, 3.5s", linux, 3500 * time.Millisecond, measured, "[1s 2s 3s]", "[1.025s 2.05s 3.074s]", true},
		{"3 at the edge", linux, 3050 * time.Millisecond, measured, "[1s 2s]", "[1.025s 2.05s]", true},
		{"3 at the edge, not seen", linux, 3050 * time.Millisecond, s(1.025, 2.05), "[1s 2s]", "[1.025s 2.05s]", true},
		{"before 6.5", old, 3500 * time.Millisecond, measured, "[1s 3s]", "[1.025s 2.05s 3.074s]", false},
		{"late", linux, 2500 * time.Millisecond, s(1.3, 2.05), "[1s 2s]", "[1.3s 2.05s]", false},
		{"missing", linux, 2500 * time.Millisecond, s(1.025), "[1s 2s]", "[1.025s]", false},
		{"none", linux, 300 * time.Millisecond, nil, "[]", "[]", true},
	} {
		want, got := comparedRetransmits(tt.predicted, tt.measured, tt.window)
		if w, g := durations(want), durations(got); w != tt.want || g != tt.got {
			t.Errorf("%s: compared %s with %s; want %s with %s", tt.name, g, w, tt.got, tt.want)
		}
		if same := sameTimes(want, got); same != tt.same {
			t.Errorf("%s: sameTimes = %v; want %v", tt.name, same, tt.same)
		}
	}
}

func durations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestProbeMisuse(t *testing.T) {
	tooMany := []string{"probe"}
	for i := range maxProbeBacklogs + 1 {
		tooMany = append(tooMany, "--backlog", strconv.Itoa(i))
	}
	for _, tt := range []struct {
		args    []string
		mention string
	}{
		{[]string{"probe", "--frob"}, "flag provided but not defined: -frob; flags: --backlog, --json, --max-clients, --personality, --timeout, --watch"},
		{[]string{"probe", "--backlog", "many"}, `--backlog "many": give an integer from -2147483648 to 2147483647`},
		{[]string{"probe", "--backlog", "1.5"}, `--backlog "1.5": give an integer`},
		{[]string{"probe", "--backlog", "99999999999"}, `--backlog "99999999999": give an integer`},
		{tooMany, "at most 16 --backlog values"},
		{[]string{"probe", "--watch", "-1s"}, "--watch must be from 0 to 3m0s"},
		{[]string{"probe", "--watch", "1h"}, "--watch must be from 0 to 3m0s"},
		{[]string{"probe", "--timeout", "0s"}, "--timeout must be from 1ms to 10s"},
		{[]string{"probe", "--max-clients", "0"}, "--max-clients must be from 1 to 20000"},
		{[]string{"probe", "--personality", "plan9"}, `unknown personality "plan9"; valid: all, winsock1.1,`},
		{[]string{"probe", "--personality", "all"}, `--personality takes one system, not "all"`},
		{[]string{"probe", "5"}, `unexpected argument "5"; give backlogs with --backlog N`},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tt.mention) || out != "" {
			t.Errorf("backlog %q: exit %d, stdout %q, stderr %q; want exit 2, no output and one line mentioning %q", tt.args, code, out, errOut, tt.mention)
		}
	}
}
