package metrics

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
	"github.com/backlog-dev/backlog/netstack"
)

// TestNetstackListener exports a Windows NT 4.0 Workstation listener with
// backlog 2 after three clients (two queued, one refused) and one accept.
func TestNetstackListener(t *testing.T) {
	n := netstack.NewNetwork(nil)
	defer n.Close()
	srv, _ := n.NewHost()
	cli, _ := n.NewHost()
	l, err := srv.Listen(context.Background(), "tcp", ":80", &netstack.ListenConfig{Personality: backlog.MustLookup("winnt4-workstation"), Backlog: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 3; i++ {
		if c, err := cli.Dial(context.Background(), "tcp", "198.18.0.1:80"); err == nil {
			defer c.Close()
		}
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	col := NewCollector()
	col.Add(l, Labels{Listener: "198.18.0.1:80", Personality: "winnt4-workstation", Transport: "netstack"})
	want := `
# HELP backlog_listener_accepted_total Connections accept() took from the queue.
# TYPE backlog_listener_accepted_total counter
backlog_listener_accepted_total{inode="",listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
# HELP backlog_listener_queue_capacity How many completed connections can wait for accept() (on Linux the stored backlog plus one).
# TYPE backlog_listener_queue_capacity gauge
backlog_listener_queue_capacity{inode="",listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 2
# HELP backlog_listener_queue_length Completed connections waiting for accept().
# TYPE backlog_listener_queue_length gauge
backlog_listener_queue_length{inode="",listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
# HELP backlog_listener_refused_total SYNs answered with a reset: the client's connect fails with ECONNREFUSED.
# TYPE backlog_listener_refused_total counter
backlog_listener_refused_total{inode="",listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
# HELP backlog_listener_listen_drops_total Connection attempts the listener dropped or refused for any reason, overflows included (as TcpExt ListenDrops counts them).
# TYPE backlog_listener_listen_drops_total counter
backlog_listener_listen_drops_total{inode="",listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"backlog_listener_accepted_total", "backlog_listener_queue_capacity", "backlog_listener_queue_length",
		"backlog_listener_refused_total", "backlog_listener_listen_drops_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	// netstack observes every value, and the wait; it has no sk_drops.
	if n := testutil.CollectAndCount(col); n != len(backlog.StatFields)+1 {
		t.Errorf("%d metrics for one listener; want %d", n, len(backlog.StatFields)+1)
	}
	col.Remove(l)
	if n := testutil.CollectAndCount(col); n != 0 {
		t.Errorf("%d metrics after Remove", n)
	}
}

// gather registers c alone in a pedantic registry, gathers it, lints the
// exposition with promlint, and returns the value of each series by name
// and label set.
func gather(t *testing.T, c prometheus.Collector) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = map[string]float64{}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			got[mf.GetName()][strings.Join(labels, ",")] = v
		}
	}
	return got
}

// one returns the value of the only series of name.
func one(t *testing.T, got map[string]map[string]float64, name string) float64 {
	t.Helper()
	if len(got[name]) != 1 {
		t.Fatalf("%s: %d series; want 1: %v", name, len(got[name]), got[name])
	}
	for _, v := range got[name] {
		return v
	}
	return 0
}

// TestKernelListener exports a kernel listener with backlog 1 that never
// accepts: two connections wait, and the SYNs of the two after them are
// dropped, which the socket's own drop count shows. What the kernel does
// not report per socket has no series at all, and the exposition is
// promlint-clean.
func TestKernelListener(t *testing.T) {
	l, err := (&kernel.ListenConfig{Backlog: 1}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no kernel listener here: %v", err)
	}
	defer l.Close()
	for i := 0; i < 4; i++ {
		if c, err := net.DialTimeout("tcp", l.Addr().String(), 200*time.Millisecond); err == nil {
			defer c.Close()
		}
	}
	col := NewCollector()
	col.Add(l, Labels{Listener: l.Addr().String(), Personality: "linux", Transport: "kernel"})
	got := gather(t, col)
	if one(t, got, "backlog_listener_queue_length") != 2 || one(t, got, "backlog_listener_queue_capacity") != 2 || one(t, got, "backlog_listener_backlog") != 1 {
		t.Errorf("gauges %v; want queue 2, capacity 2, backlog 1", got)
	}
	if v := one(t, got, "backlog_listener_dropped_total"); v < 2 {
		t.Errorf("dropped_total %v; want at least the 2 clients' SYNs", v)
	}
	for _, absent := range []string{"backlog_listener_listen_overflows_total", "backlog_listener_listen_drops_total",
		"backlog_listener_refused_total", "backlog_listener_syncookies_sent_total", "backlog_listener_syns_total"} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s is exported, though the kernel does not report it per socket", absent)
		}
	}
	if _, ok := got["backlog_listener_queue_wait_seconds"]; !ok {
		t.Errorf("no queue wait histogram")
	}
}

// TestReusePortShards: two SO_REUSEPORT shards with the same labels, in
// one collector, are two sets of series told apart by inode, and the
// scrape succeeds.
func TestReusePortShards(t *testing.T) {
	lc := kernel.ListenConfig{Backlog: 4, ReusePort: true}
	a, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no kernel listener here: %v", err)
	}
	defer a.Close()
	b, err := lc.Listen(context.Background(), "tcp4", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	col := NewCollector()
	labels := Labels{Listener: a.Addr().String(), Personality: "linux", Transport: "kernel"}
	col.Add(a, labels)
	col.Add(b, labels)
	got := gather(t, col)
	if n := len(got["backlog_listener_backlog"]); n != 2 {
		t.Errorf("%d backlog series for two shards: %v", n, got["backlog_listener_backlog"])
	}
}

// TestEveryStatHasAMetric: each value backlog.StatFields lists has a
// series name and a help text, and no two share a name.
func TestEveryStatHasAMetric(t *testing.T) {
	names := map[string]bool{"dropped_total": true, "queue_wait_seconds": true}
	for _, f := range backlog.StatFields {
		m, ok := statMetrics[f.Stat]
		if !ok || m.name == "" || m.help == "" {
			t.Errorf("%s has no metric", f.Name)
			continue
		}
		if names[m.name] {
			t.Errorf("%s: name %s used twice", f.Name, m.name)
		}
		names[m.name] = true
		if strings.HasSuffix(m.name, "_total") == f.Gauge {
			t.Errorf("%s: %s is a gauge %v with the wrong suffix", f.Name, m.name, f.Gauge)
		}
	}
	if len(statMetrics) != len(backlog.StatFields) {
		t.Errorf("%d metrics for %d values", len(statMetrics), len(backlog.StatFields))
	}
}
