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
# HELP backlog_listener_accepted_total Connections the application accepted.
# TYPE backlog_listener_accepted_total counter
backlog_listener_accepted_total{listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
# HELP backlog_listener_queue_capacity How many completed connections can wait for accept().
# TYPE backlog_listener_queue_capacity gauge
backlog_listener_queue_capacity{listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 2
# HELP backlog_listener_queue_length Connections waiting for accept().
# TYPE backlog_listener_queue_length gauge
backlog_listener_queue_length{listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
# HELP backlog_listener_refused_total SYNs answered with a reset.
# TYPE backlog_listener_refused_total counter
backlog_listener_refused_total{listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
# HELP backlog_listener_dropped_total Connection attempts the listener dropped or refused for any reason (TcpExt ListenDrops).
# TYPE backlog_listener_dropped_total counter
backlog_listener_dropped_total{listener="198.18.0.1:80",personality="winnt4-workstation",transport="netstack"} 1
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"backlog_listener_accepted_total", "backlog_listener_queue_capacity", "backlog_listener_queue_length",
		"backlog_listener_refused_total", "backlog_listener_dropped_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if n := testutil.CollectAndCount(col); n != len(metrics) {
		t.Errorf("%d metrics for one listener; want %d", n, len(metrics))
	}
	col.Remove(l)
	if n := testutil.CollectAndCount(col); n != 0 {
		t.Errorf("%d metrics after Remove", n)
	}
}

// TestKernelListener exports a kernel listener with backlog 1 that never
// accepts: two connections wait, and the SYNs of the two after them are
// dropped, which the socket's own drop count shows.
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
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetGauge() != nil {
				got[mf.GetName()] = m.GetGauge().GetValue()
			} else {
				got[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["backlog_listener_queue_length"] != 2 || got["backlog_listener_queue_capacity"] != 2 || got["backlog_listener_backlog"] != 1 {
		t.Errorf("gauges %v; want queue 2, capacity 2, backlog 1", got)
	}
	if got["backlog_listener_dropped_total"] < 2 {
		t.Errorf("dropped_total %v; want at least the 2 clients' SYNs", got["backlog_listener_dropped_total"])
	}
}
