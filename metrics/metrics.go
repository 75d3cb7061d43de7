// Package metrics exports listen queues as Prometheus metrics: Collector
// for the listeners of this program, from either transport, and
// HostCollector for every listening TCP socket of a host, whoever holds
// it, which `backlog exporter` serves.
//
// # A program's own listeners
//
// Collector exports one series per value of backlog.Stats, driven by
// backlog.StatFields, so a value added there is exported here (a test
// checks that each has a name and a help text). A value the transport
// cannot observe is absent, not a series that reads 0 forever: on a
// kernel listener without emulation there is no refused, ignored,
// listen_overflows or syncookies series. Every series carries the labels
// listener (its address), personality, transport and inode (the socket's
// inode on the kernel transport, empty on netstack), so that SO_REUSEPORT
// shards on one address stay apart. Gauges:
//
//	backlog_listener_requested_backlog    the backlog last passed to listen()
//	backlog_listener_backlog              the stored backlog
//	backlog_listener_queue_capacity       how many completed connections can wait
//	backlog_listener_queue_length         completed connections waiting for accept()
//	backlog_listener_half_open            handshakes waiting for their final ACK
//	backlog_listener_unavailable_slots    slots freed by accept() not back yet (KB 295079)
//
// Counters, named after the TcpExt counters of /proc/net/netstat where the
// meaning is the same (node_exporter exports those host-wide as
// node_netstat_TcpExt_*):
//
//	backlog_listener_syns_total                    SYNs offered to the queue
//	backlog_listener_queued_total                  connections that entered the accept queue
//	backlog_listener_accepted_total                connections accept() took
//	backlog_listener_refused_total                 SYNs answered with a reset
//	backlog_listener_ignored_total                 SYNs and cookie ACKs dropped without an answer
//	backlog_listener_reset_total                   connections reset after their handshake
//	backlog_listener_evicted_total                 half-open connections displaced by newer SYNs
//	backlog_listener_expired_total                 half-open connections that gave up
//	backlog_listener_deferred_refusals_total       SYNs refused for a slot not back yet (KB 295079)
//	backlog_listener_listen_overflows_total        attempts that found the accept queue full (ListenOverflows)
//	backlog_listener_listen_drops_total            attempts dropped or refused for any reason (ListenDrops)
//	backlog_listener_req_q_full_drop_total         SYNs dropped on a full SYN queue (TCPReqQFullDrop)
//	backlog_listener_req_q_full_do_cookies_total   SYNs answered with a cookie (TCPReqQFullDoCookies)
//	backlog_listener_syncookies_sent_total         SYN cookies sent (SyncookiesSent)
//	backlog_listener_syncookies_recv_total         SYN cookies that came back valid (SyncookiesRecv)
//	backlog_listener_overdue_total                 connections reset for waiting past the overload target
//	backlog_listener_dropped_total                 the kernel socket's sk_drops (kernel transport, Linux)
//
// and the histogram backlog_listener_queue_wait_seconds, how long accepted
// connections waited in the accept queue.
//
// dropped_total is not listen_drops_total: it is the socket's own sk_drops,
// which the kernel adds to for a SYN or final ACK dropped on a full queue
// (as it does ListenDrops) but also for every segment it discards for the
// listener for another reason; kernel.SocketStats.Drops has the list.
package metrics

import (
	"runtime"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
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

var labelNames = []string{"listener", "personality", "transport", "inode"}

// statMetric names and describes the series of one value of
// backlog.Stats.
type statMetric struct {
	name, help string
}

// statMetrics has a series for every value of backlog.Stats.
var statMetrics = map[backlog.Stat]statMetric{
	backlog.StatRequested:   {"requested_backlog", "The backlog last passed to listen(), before the system clamped it."},
	backlog.StatBacklog:     {"backlog", "The stored backlog: what the system made of the requested one (on Linux the smaller of it and net.core.somaxconn)."},
	backlog.StatCapacity:    {"queue_capacity", "How many completed connections can wait for accept() (on Linux the stored backlog plus one)."},
	backlog.StatLen:         {"queue_length", "Completed connections waiting for accept()."},
	backlog.StatHalfOpen:    {"half_open", "Handshakes waiting for their final ACK: the SYN queue, or the half-open share of a queue that counts both."},
	backlog.StatUnavailable: {"unavailable_slots", "Slots freed by accept() that have not come back yet (the KB 295079 defect, or exhausted descriptors under a Winsock provider model)."},
	backlog.StatSYNs:        {"syns_total", "SYNs offered to the queue."},
	backlog.StatQueued:      {"queued_total", "Connections that entered the accept queue."},
	backlog.StatAccepted:    {"accepted_total", "Connections accept() took from the queue."},
	backlog.StatRefused:     {"refused_total", "SYNs answered with a reset: the client's connect fails with ECONNREFUSED."},
	backlog.StatIgnored:     {"ignored_total", "SYNs and SYN-cookie ACKs dropped without an answer: the client retransmits."},
	backlog.StatReset:       {"reset_total", "Connections reset after their handshake: a final ACK on a full queue under a reset rule, the excess of listen() again, Close, and on the kernel transport clients shed for lack of descriptors."},
	backlog.StatEvicted:     {"evicted_total", "Half-open connections displaced by newer SYNs."},
	backlog.StatExpired:     {"expired_total", "Half-open connections whose final ACK never came."},
	backlog.StatDeferredRefusals: {"deferred_refusals_total",
		"SYNs refused only because a slot freed by accept() had not come back yet (the KB 295079 defect)."},
	backlog.StatListenOverflows: {"listen_overflows_total",
		"Connection attempts that found the accept queue full, at the SYN or at the final ACK (as TcpExt ListenOverflows counts them)."},
	backlog.StatListenDrops: {"listen_drops_total",
		"Connection attempts the listener dropped or refused for any reason, overflows included (as TcpExt ListenDrops counts them)."},
	backlog.StatTCPReqQFullDrop: {"req_q_full_drop_total",
		"SYNs dropped because the SYN queue was full and SYN cookies were off (as TcpExt TCPReqQFullDrop counts them)."},
	backlog.StatTCPReqQFullDoCookies: {"req_q_full_do_cookies_total",
		"SYNs answered with a SYN cookie because the SYN queue was full or cookies are always on (as TcpExt TCPReqQFullDoCookies counts them)."},
	backlog.StatSyncookiesSent: {"syncookies_sent_total", "SYN cookies sent (as TcpExt SyncookiesSent counts them)."},
	backlog.StatSyncookiesRecv: {"syncookies_recv_total", "SYN-cookie ACKs that came back valid and became connections (as TcpExt SyncookiesRecv counts them)."},
	backlog.StatOverdue: {"overdue_total",
		"Connections reset instead of served because they had waited past the overload policy's target while the queue stood (also counted in accepted_total and reset_total)."},
}

// droppedHelp is the help of the sk_drops counters, here and in
// HostCollector.
const droppedHelp = "Segments the kernel dropped for this listening socket (Linux sk_drops, ss -m d): " +
	"not TcpExt ListenDrops, though both count a SYN or final ACK dropped on a full queue; " +
	"sk_drops counts an overflowing final ACK twice, and also counts every other segment it discards for the socket " +
	"(a bare final ACK under TCP_DEFER_ACCEPT, a reset answered with a challenge ACK, a socket filter, an MD5 or TCP-AO failure, IP_MINTTL, a full socket backlog)."

// queueWaitHelp is the help of the wait histograms.
const queueWaitHelp = "How long accepted connections waited in the accept queue, from the final ACK " +
	"(on netstack from the SYN) to accept(); on Linux read from TCP_INFO tcpi_last_data_sent, in timer ticks."

// descs are the descriptions of a Collector's series.
type descs struct {
	stat      map[backlog.Stat]*prometheus.Desc
	dropped   *prometheus.Desc
	queueWait *prometheus.Desc
}

var listenerDescs = sync.OnceValue(func() descs {
	d := descs{stat: map[backlog.Stat]*prometheus.Desc{}}
	for _, f := range backlog.StatFields {
		m := statMetrics[f.Stat]
		d.stat[f.Stat] = prometheus.NewDesc("backlog_listener_"+m.name, m.help, labelNames, nil)
	}
	d.dropped = prometheus.NewDesc("backlog_listener_dropped_total", droppedHelp, labelNames, nil)
	d.queueWait = prometheus.NewDesc("backlog_listener_queue_wait_seconds", queueWaitHelp, labelNames, nil)
	return d
})

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

// Add starts exporting l under the given labels. Listeners that share
// their labels (SO_REUSEPORT shards) are told apart by the inode label.
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
	d := listenerDescs()
	for _, f := range backlog.StatFields {
		ch <- d.stat[f.Stat]
	}
	ch <- d.dropped
	ch <- d.queueWait
}

// kernelListener is what a kernel listener adds to backlog.Listener.
type kernelListener interface {
	KernelStats() (kernel.Stats, error)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ls := make(map[backlog.Listener]Labels, len(c.listeners))
	for l, lb := range c.listeners {
		ls[l] = lb
	}
	c.mu.Unlock()
	d := listenerDescs()
	for l, lb := range ls {
		var (
			s     backlog.Stats
			inode string
			ks    kernel.Stats
			isK   bool
		)
		if k, ok := l.(kernelListener); ok {
			ks, _ = k.KernelStats()
			s, isK = ks.Stats, true
			if ks.Inode != 0 {
				inode = strconv.FormatUint(ks.Inode, 10)
			}
		} else {
			s = l.Stats()
		}
		values := []string{lb.Listener, lb.Personality, lb.Transport, inode}
		for _, f := range backlog.StatFields {
			if !s.Observed(f.Stat) {
				continue
			}
			kind := prometheus.CounterValue
			if f.Gauge {
				kind = prometheus.GaugeValue
			}
			ch <- prometheus.MustNewConstMetric(d.stat[f.Stat], kind, float64(int64(f.Value(&s))), values...)
		}
		if isK && runtime.GOOS == "linux" {
			ch <- prometheus.MustNewConstMetric(d.dropped, prometheus.CounterValue, float64(ks.Drops), values...)
		}
		if s.Observed(backlog.StatQueueWait) {
			ch <- queueWaitMetric(d.queueWait, s.QueueWait, values)
		}
	}
}

// queueWaitMetric turns a QueueWait into a Prometheus histogram.
func queueWaitMetric(desc *prometheus.Desc, h backlog.QueueWait, values []string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Buckets))
	var cum uint64
	for i, b := range backlog.QueueWaitBounds() {
		cum += h.Buckets[i]
		buckets[b.Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum.Seconds(), buckets, values...)
}
