// Package metrics exports listen queues as Prometheus metrics: a collector
// for any backlog.Listener, from either transport.
//
// Every metric carries the labels listener (its address), personality and
// transport. Gauges:
//
//	backlog_listener_queue_length      connections waiting for accept()
//	backlog_listener_queue_capacity    how many can wait
//	backlog_listener_backlog           the stored backlog
//	backlog_listener_half_open         handshakes under way (netstack)
//
// Counters, named after the TcpExt counters of /proc/net/netstat where the
// meaning is the same (node_exporter exports those host-wide as
// node_netstat_TcpExt_*), in the snake case Prometheus asks for:
//
//	backlog_listener_accepted_total             connections accepted
//	backlog_listener_refused_total              SYNs answered with RST
//	backlog_listener_ignored_total              SYNs dropped without an answer
//	backlog_listener_reset_total                connections reset after the handshake
//	backlog_listener_dropped_total              every drop (TcpExt ListenDrops)
//	backlog_listener_listen_overflows_total     drops because the accept queue was full (ListenOverflows)
//	backlog_listener_req_q_full_drop_total      SYNs dropped on a full SYN queue (TCPReqQFullDrop)
//	backlog_listener_syncookies_sent_total      SYN cookies sent (SyncookiesSent)
//	backlog_listener_syncookies_recv_total      SYN cookies that came back valid (SyncookiesRecv)
//
// A transport reports what it can see: on a kernel listener without
// emulation, refused, ignored, overflows and cookies stay at zero, and
// dropped is the socket's own drop count.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backlog-dev/backlog"
)

// Labels name one listener in the metrics.
type Labels struct {
	// Listener is its address, "127.0.0.1:8080".
	Listener string
	// Personality is the rules it follows, "linux".
	Personality string
	// Transport is "kernel" or "netstack".
	Transport string
}

func (l Labels) values() []string { return []string{l.Listener, l.Personality, l.Transport} }

var labelNames = []string{"listener", "personality", "transport"}

// metric is one exported value: its description, type, and where it comes
// from in backlog.Stats.
type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(backlog.Stats) float64
}

func gauge(name, help string, v func(backlog.Stats) float64) metric {
	return metric{prometheus.NewDesc("backlog_listener_"+name, help, labelNames, nil), prometheus.GaugeValue, v}
}

func counter(name, help string, v func(backlog.Stats) uint64) metric {
	return metric{prometheus.NewDesc("backlog_listener_"+name+"_total", help, labelNames, nil), prometheus.CounterValue,
		func(s backlog.Stats) float64 { return float64(v(s)) }}
}

var metrics = []metric{
	gauge("queue_length", "Connections waiting for accept().", func(s backlog.Stats) float64 { return float64(s.Len) }),
	gauge("queue_capacity", "How many completed connections can wait for accept().", func(s backlog.Stats) float64 { return float64(s.Capacity) }),
	gauge("backlog", "The stored backlog: what the system made of the requested one.", func(s backlog.Stats) float64 { return float64(s.Backlog) }),
	gauge("half_open", "Handshakes under way.", func(s backlog.Stats) float64 { return float64(s.HalfOpen) }),
	counter("accepted", "Connections the application accepted.", func(s backlog.Stats) uint64 { return s.Accepted }),
	counter("refused", "SYNs answered with a reset.", func(s backlog.Stats) uint64 { return s.Refused }),
	counter("ignored", "SYNs and cookie ACKs dropped without an answer.", func(s backlog.Stats) uint64 { return s.Ignored }),
	counter("reset", "Connections reset after their handshake.", func(s backlog.Stats) uint64 { return s.Reset }),
	counter("dropped", "Connection attempts the listener dropped or refused for any reason (TcpExt ListenDrops).", func(s backlog.Stats) uint64 { return s.ListenDrops }),
	counter("listen_overflows", "Connection attempts that found the accept queue full.", func(s backlog.Stats) uint64 { return s.ListenOverflows }),
	counter("req_q_full_drop", "SYNs dropped because the SYN queue was full and cookies were off.", func(s backlog.Stats) uint64 { return s.TCPReqQFullDrop }),
	counter("syncookies_sent", "SYN cookies sent.", func(s backlog.Stats) uint64 { return s.SyncookiesSent }),
	counter("syncookies_recv", "SYN cookies that came back valid.", func(s backlog.Stats) uint64 { return s.SyncookiesRecv }),
}

// A Collector exports the queues of the listeners added to it. It is safe
// for concurrent use; each scrape reads every listener's Stats once.
type Collector struct {
	mu        sync.Mutex
	listeners map[backlog.Listener]Labels
}

// NewCollector returns a collector with no listeners.
func NewCollector() *Collector {
	return &Collector{listeners: map[backlog.Listener]Labels{}}
}

// Add starts exporting l under the given labels.
func (c *Collector) Add(l backlog.Listener, labels Labels) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listeners[l] = labels
}

// Remove stops exporting l.
func (c *Collector) Remove(l backlog.Listener) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.listeners, l)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ls := make(map[backlog.Listener]Labels, len(c.listeners))
	for l, lb := range c.listeners {
		ls[l] = lb
	}
	c.mu.Unlock()
	for l, lb := range ls {
		s, values := l.Stats(), lb.values()
		for _, m := range metrics {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s), values...)
		}
	}
}
