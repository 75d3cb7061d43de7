package metrics

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backlog-dev/backlog/kernel"
)

// HostConfig says what a HostCollector reads. Its zero value reads the
// listening sockets of the collector's own network namespace, with their
// holders.
type HostConfig struct {
	// AllNamespaces reads every network namespace kernel.Namespaces finds
	// (each container's), entering each with setns, which needs
	// CAP_SYS_ADMIN; false reads the process's own.
	AllNamespaces bool
	// SkipHolders leaves out the scan of /proc for the processes holding
	// the sockets: the process label is then empty.
	SkipHolders bool
	// Namespaces, if not nil, are the namespaces to read instead
	// (kernel.OpenNamespace names one), and AllNamespaces is ignored.
	Namespaces []kernel.Namespace
}

// A HostCollector exports every listening TCP socket of a host, whoever
// holds it, read afresh at each scrape through sock_diag
// (kernel.SocketsWithoutHolders), with the namespace's TcpExt counters
// (kernel.ReadCounters). Per socket, labelled netns, address (as ss shows
// it: "0.0.0.0:80", "*:80" for a dual-stack wildcard), inode (unique, so
// the members of an SO_REUSEPORT group never collide) and process:
//
//	backlog_socket_queue_length       completed connections waiting for accept() (ss Recv-Q)
//	backlog_socket_backlog            the stored backlog (ss Send-Q)
//	backlog_socket_queue_capacity     how many completed connections can wait
//	backlog_socket_dropped_total      the socket's sk_drops (ss -m d), which is not ListenDrops
//	backlog_socket_info               1, with pid and uid labels
//
// Per listening address (an SO_REUSEPORT group, or one socket), labelled
// netns and address:
//
//	backlog_address_syn_queue_length      handshakes waiting for their final ACK
//	backlog_address_syn_retransmitted     those whose SYN-ACK was sent more than once
//	backlog_address_sockets               listening sockets on the address
//	backlog_address_queue_imbalance       fullest member's share of its queue minus the emptiest's (groups only)
//
// Per namespace, labelled netns, the TcpExt counters of /proc/net/netstat
// (backlog_netns_listen_overflows_total, _listen_drops_total,
// _req_q_full_drop_total, _req_q_full_do_cookies_total,
// _syncookies_sent_total, _syncookies_recv_total,
// _syncookies_failed_total), backlog_netns_info, and
// backlog_exporter_netns_up, 0 when the namespace could not be read (its
// other series are then absent, not 0). backlog_exporter_scrape_seconds
// is how long the last reading took.
type HostCollector struct {
	cfg HostConfig

	mu sync.Mutex // one reading at a time
}

// NewHostCollector returns a collector that reads as cfg says.
func NewHostCollector(cfg HostConfig) *HostCollector { return &HostCollector{cfg: cfg} }

var (
	// In alphabetical order, as client_golang writes them.
	socketLabels  = []string{"address", "inode", "netns", "process"}
	addressLabels = []string{"address", "netns"}
	netnsLabels   = []string{"netns"}
)

// hostFamily is one metric family of a HostCollector: its name, help,
// type and label names, from which both Collect's descriptions and
// WriteText's text come.
type hostFamily struct {
	name, help string
	counter    bool
	labels     []string
	desc       *prometheus.Desc
}

func family(name, help string, counter bool, labels ...string) *hostFamily {
	return &hostFamily{name: name, help: help, counter: counter, labels: labels,
		desc: prometheus.NewDesc(name, help, labels, nil)}
}

// The families, in the order WriteText writes them.
var (
	famQueueLength = family("backlog_socket_queue_length", "Completed connections waiting for accept() on the listening socket (ss Recv-Q).", false, socketLabels...)
	famBacklog     = family("backlog_socket_backlog", "The listening socket's stored backlog (ss Send-Q): the smaller of what the program passed to listen() and net.core.somaxconn.", false, socketLabels...)
	famCapacity    = family("backlog_socket_queue_capacity", "How many completed connections can wait for accept() on the socket: the stored backlog plus one on Linux.", false, socketLabels...)
	famDropped     = family("backlog_socket_dropped_total", droppedHelp, true, socketLabels...)
	famInfo        = family("backlog_socket_info", "1 for every listening TCP socket, with the process holding it (pid 0 when it could not be read) and the socket's owner.", false, "address", "inode", "netns", "pid", "process", "uid")

	famSynQueue   = family("backlog_address_syn_queue_length", "Handshakes to the listening address waiting for their final ACK: request sockets in SYN_RECV (ss -n state syn-recv); for an SO_REUSEPORT group, the group's, since the kernel does not say which member holds each.", false, addressLabels...)
	famSynRetrans = family("backlog_address_syn_retransmitted", "Handshakes to the listening address waiting for their final ACK whose SYN-ACK was sent more than once, as those of a SYN flood from forged sources are.", false, addressLabels...)
	famSockets    = family("backlog_address_sockets", "Listening sockets on the address: more than one is an SO_REUSEPORT group.", false, addressLabels...)
	famImbalance  = family("backlog_address_queue_imbalance", "For an SO_REUSEPORT group, the fullest member's queue length over its capacity minus the emptiest member's: 0 when even, 1 when one member is full while another is empty.", false, addressLabels...)

	famNetnsInfo = family("backlog_netns_info", "1 for every network namespace read, with its inode and the lowest-numbered process in it.", false, "inode", "netns", "pid", "process")
	famNetnsUp   = family("backlog_exporter_netns_up", "1 if the network namespace's sockets and counters were read at this scrape, 0 if not (its other series are then absent).", false, netnsLabels...)
	famScrape    = family("backlog_exporter_scrape_seconds", "How long reading every listening socket, namespace and holder took at this scrape.", false)

	famOverflows      = family("backlog_netns_listen_overflows_total", "SYNs and final ACKs that found an accept queue of the namespace full (TcpExt ListenOverflows).", true, netnsLabels...)
	famDrops          = family("backlog_netns_listen_drops_total", "SYNs and final ACKs a listener of the namespace dropped for any reason, overflows included (TcpExt ListenDrops).", true, netnsLabels...)
	famReqFullDrop    = family("backlog_netns_req_q_full_drop_total", "SYNs dropped because a SYN queue was full and SYN cookies were off (TcpExt TCPReqQFullDrop).", true, netnsLabels...)
	famReqFullCookies = family("backlog_netns_req_q_full_do_cookies_total", "SYNs answered with a SYN cookie because a SYN queue was full or cookies are always on (TcpExt TCPReqQFullDoCookies).", true, netnsLabels...)
	famCookiesSent    = family("backlog_netns_syncookies_sent_total", "SYN cookies sent (TcpExt SyncookiesSent).", true, netnsLabels...)
	famCookiesRecv    = family("backlog_netns_syncookies_recv_total", "ACKs that carried a valid SYN cookie (TcpExt SyncookiesRecv).", true, netnsLabels...)
	famCookiesFailed  = family("backlog_netns_syncookies_failed_total", "ACKs that carried an invalid SYN cookie (TcpExt SyncookiesFailed).", true, netnsLabels...)

	hostFamilies = []*hostFamily{famQueueLength, famBacklog, famCapacity, famDropped, famInfo,
		famSynQueue, famSynRetrans, famSockets, famImbalance,
		famNetnsInfo, famNetnsUp, famScrape,
		famOverflows, famDrops, famReqFullDrop, famReqFullCookies, famCookiesSent, famCookiesRecv, famCookiesFailed}
)

// Describe implements prometheus.Collector.
func (c *HostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range hostFamilies {
		ch <- f.desc
	}
}

// NamespaceReading is one namespace as a HostCollector read it.
type NamespaceReading struct {
	Namespace kernel.Namespace
	Sockets   []kernel.Socket
	Counters  kernel.Counters
	// Err says why the namespace could not be read; Sockets and Counters
	// are then empty.
	Err error
}

// Read reads what Collect exports: every namespace asked for, its
// listening sockets and counters, and the sockets' holders.
func (c *HostCollector) Read() ([]NamespaceReading, error) {
	var nss []kernel.Namespace
	switch {
	case c.cfg.Namespaces != nil:
		nss = c.cfg.Namespaces
	case c.cfg.AllNamespaces:
		var err error
		if nss, err = kernel.Namespaces(); err != nil {
			return nil, err
		}
	default:
		self, err := kernel.CurrentNamespace()
		if err != nil {
			return nil, err
		}
		nss = []kernel.Namespace{self}
	}
	out := make([]NamespaceReading, len(nss))
	var all []kernel.Socket
	for i, ns := range nss {
		r := NamespaceReading{Namespace: ns}
		if err := ns.Do(func() {
			r.Sockets, r.Err = kernel.SocketsWithoutHolders()
			if r.Err == nil {
				r.Counters, r.Err = kernel.ReadCounters()
			}
		}); err != nil {
			r.Err = err
		}
		if r.Err != nil {
			r.Sockets, r.Counters = nil, kernel.Counters{}
		}
		out[i] = r
		all = append(all, r.Sockets...)
	}
	if !c.cfg.SkipHolders {
		kernel.FindHolders(all)
		for i := range out {
			n := copy(out[i].Sockets, all)
			all = all[n:]
		}
	}
	return out, nil
}

// samples calls emit with every series of the readings: its family,
// value and label values, family by family.
func samples(readings []NamespaceReading, took time.Duration, emit func(f *hostFamily, v float64, labels ...string)) {
	// Each socket's label values, made once.
	type labelled struct {
		s                        kernel.Socket
		ns, addr, inode, process string
	}
	type group struct {
		ns, addr string
		members  []kernel.Socket
	}
	var socks []labelled
	var groups []group
	for _, r := range readings {
		ns := r.Namespace.Label()
		at := map[string]int{}
		for _, s := range r.Sockets {
			k := s.Key()
			socks = append(socks, labelled{s, ns, k, strconv.FormatUint(s.Inode, 10), s.Process})
			i, ok := at[k]
			if !ok {
				i = len(groups)
				at[k] = i
				groups = append(groups, group{ns: ns, addr: k})
			}
			groups[i].members = append(groups[i].members, s)
		}
	}
	socket := func(f *hostFamily, v func(kernel.Socket) float64) {
		for _, l := range socks {
			emit(f, v(l.s), l.addr, l.inode, l.ns, l.process)
		}
	}
	socket(famQueueLength, func(s kernel.Socket) float64 { return float64(s.Len) })
	socket(famBacklog, func(s kernel.Socket) float64 { return float64(s.Backlog) })
	socket(famCapacity, func(s kernel.Socket) float64 { return float64(s.Capacity()) })
	socket(famDropped, func(s kernel.Socket) float64 { return float64(s.Drops) })
	for _, l := range socks {
		emit(famInfo, 1, l.addr, l.inode, l.ns, strconv.Itoa(l.s.PID), l.process, strconv.FormatUint(uint64(l.s.UID), 10))
	}
	address := func(f *hostFamily, v func(members []kernel.Socket) (float64, bool)) {
		for _, g := range groups {
			if x, ok := v(g.members); ok {
				emit(f, x, g.addr, g.ns)
			}
		}
	}
	address(famSynQueue, func(m []kernel.Socket) (float64, bool) { return float64(m[0].SynQueue), true })
	address(famSynRetrans, func(m []kernel.Socket) (float64, bool) { return float64(m[0].SynRetransmitted), true })
	address(famSockets, func(m []kernel.Socket) (float64, bool) { return float64(len(m)), true })
	address(famImbalance, func(m []kernel.Socket) (float64, bool) { return kernel.Imbalance(m), len(m) > 1 })
	for _, r := range readings {
		if r.Err == nil {
			n := r.Namespace
			emit(famNetnsInfo, 1, strconv.FormatUint(n.Inode, 10), n.Label(), strconv.Itoa(n.PID), n.Process)
		}
	}
	for _, r := range readings {
		emit(famNetnsUp, map[bool]float64{true: 1, false: 0}[r.Err == nil], r.Namespace.Label())
	}
	emit(famScrape, took.Seconds())
	counter := func(f *hostFamily, v func(kernel.Counters) uint64) {
		for _, r := range readings {
			if r.Err == nil {
				emit(f, float64(v(r.Counters)), r.Namespace.Label())
			}
		}
	}
	counter(famOverflows, func(k kernel.Counters) uint64 { return k.ListenOverflows })
	counter(famDrops, func(k kernel.Counters) uint64 { return k.ListenDrops })
	counter(famReqFullDrop, func(k kernel.Counters) uint64 { return k.TCPReqQFullDrop })
	counter(famReqFullCookies, func(k kernel.Counters) uint64 { return k.TCPReqQFullDoCookies })
	counter(famCookiesSent, func(k kernel.Counters) uint64 { return k.SyncookiesSent })
	counter(famCookiesRecv, func(k kernel.Counters) uint64 { return k.SyncookiesRecv })
	counter(famCookiesFailed, func(k kernel.Counters) uint64 { return k.SyncookiesFailed })
}

// read reads, one reading at a time, and says how long it took.
func (c *HostCollector) read() ([]NamespaceReading, time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	readings, err := c.Read()
	return readings, time.Since(start), err
}

// Collect implements prometheus.Collector.
func (c *HostCollector) Collect(ch chan<- prometheus.Metric) {
	readings, took, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(famScrape.desc, err)
		return
	}
	samples(readings, took, func(f *hostFamily, v float64, labels ...string) {
		kind := prometheus.GaugeValue
		if f.counter {
			kind = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(f.desc, kind, v, labels...)
	})
}

// WriteText reads as Collect does and writes the series in the
// Prometheus text format (version 0.0.4), straight, without the
// Registry's gathering, sorting and checking, which cost ten times the
// reading itself at 30,000 listeners (BENCHMARKS.md). Families come in a
// fixed order, each whole, series in the order of the sockets; a family
// without series is left out. It returns the reading's error before
// writing anything.
func (c *HostCollector) WriteText(w io.Writer) error {
	readings, took, err := c.read()
	if err != nil {
		return err
	}
	return writeText(w, readings, took)
}

// writeText writes the series of the readings in the text format.
func writeText(w io.Writer, readings []NamespaceReading, took time.Duration) error {
	bufs := map[*hostFamily]*bytes.Buffer{}
	samples(readings, took, func(f *hostFamily, v float64, labels ...string) {
		b := bufs[f]
		if b == nil {
			b = new(bytes.Buffer)
			bufs[f] = b
		}
		b.WriteString(f.name)
		if len(labels) > 0 {
			b.WriteByte('{')
			for i, l := range labels {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(f.labels[i])
				b.WriteString(`="`)
				escapeLabelValue(b, l)
				b.WriteByte('"')
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.Write(strconv.AppendFloat(b.AvailableBuffer(), v, 'g', -1, 64))
		b.WriteByte('\n')
	})
	for _, f := range hostFamilies {
		b := bufs[f]
		if b == nil {
			continue
		}
		typ := "gauge"
		if f.counter {
			typ = "counter"
		}
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(f.help), f.name, typ); err != nil {
			return err
		}
		if _, err := b.WriteTo(w); err != nil {
			return err
		}
	}
	return nil
}

// escapeLabelValue writes v as the text format quotes a label value: a
// backslash, a double quote and a newline escaped.
func escapeLabelValue(b *bytes.Buffer, v string) {
	if !strings.ContainsAny(v, "\\\"\n") {
		b.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
}
