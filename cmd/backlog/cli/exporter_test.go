package cli

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// series is one line of a text exposition: its labels and value.
type series struct {
	labels map[string]string
	value  float64
}

var seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// parseExposition reads a text exposition into its series by name, and
// fails the test if promlint finds a problem in it.
func parseExposition(t *testing.T, text string) map[string][]series {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	out := map[string][]series{}
	for _, line := range strings.Split(text, "\n") {
		m := seriesLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := series{labels: map[string]string{}}
		for _, l := range labelPair.FindAllStringSubmatch(m[3], -1) {
			s.labels[l[1]] = l[2]
		}
		s.value, _ = strconv.ParseFloat(m[4], 64)
		out[m[1]] = append(out[m[1]], s)
	}
	return out
}

// find returns the series of name whose labels include want.
func find(all map[string][]series, name string, want map[string]string) []series {
	var out []series
next:
	for _, s := range all[name] {
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// TestExporterOnce writes one scrape of this namespace: a listener of the
// test's, with two connections waiting, is there with its figures and
// its holder, the exposition is promlint-clean, and the usual
// collectors are there.
func TestExporterOnce(t *testing.T) {
	requireLinux(t)
	ln, port := queueListener(t, 3, 2, false)
	st, _ := ln.KernelStats()
	code, out, errOut := run(t, "exporter", "--once")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	all := parseExposition(t, out)
	sel := map[string]string{"address": fmt.Sprintf("127.0.0.1:%d", port), "inode": strconv.FormatUint(st.Inode, 10)}
	for name, want := range map[string]float64{
		"backlog_socket_queue_length": 2, "backlog_socket_backlog": 3, "backlog_socket_queue_capacity": 4, "backlog_socket_dropped_total": 0,
	} {
		got := find(all, name, sel)
		if len(got) != 1 || got[0].value != want || got[0].labels["process"] != selfComm(t) {
			t.Errorf("%s%v: %v; want one series of %v, process %q", name, sel, got, want, selfComm(t))
		}
	}
	if got := find(all, "backlog_address_syn_queue_length", map[string]string{"address": sel["address"]}); len(got) != 1 || got[0].value != 0 {
		t.Errorf("syn queue: %v; want 0", got)
	}
	for _, name := range []string{"backlog_exporter_build_info", "go_goroutines", "process_open_fds", "go_build_info", "backlog_netns_listen_overflows_total"} {
		if len(all[name]) == 0 {
			t.Errorf("no %s", name)
		}
	}
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}
