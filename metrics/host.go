package metrics

import (
	"strconv"
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

	mu   sync.Mutex // one reading at a time
	last time.Duration
}

// NewHostCollector returns a collector that reads as cfg says.
func NewHostCollector(cfg HostConfig) *HostCollector { return &HostCollector{cfg: cfg} }

var (
	socketLabels  = []string{"netns", "address", "inode", "process"}
	addressLabels = []string{"netns", "address"}
	netnsLabels   = []string{"netns"}

	hostDescs = struct {
		queueLength, backlog, capacity, dropped, info *prometheus.Desc
		synQueue, synRetrans, sockets, imbalance      *prometheus.Desc
		netnsInfo, netnsUp, scrape                    *prometheus.Desc
		overflows, drops, reqFullDrop, reqFullCookies *prometheus.Desc
		cookiesSent, cookiesRecv, cookiesFailed       *prometheus.Desc
	}{
		queueLength: prometheus.NewDesc("backlog_socket_queue_length", "Completed connections waiting for accept() on the listening socket (ss Recv-Q).", socketLabels, nil),
		backlog:     prometheus.NewDesc("backlog_socket_backlog", "The listening socket's stored backlog (ss Send-Q): the smaller of what the program passed to listen() and net.core.somaxconn.", socketLabels, nil),
		capacity:    prometheus.NewDesc("backlog_socket_queue_capacity", "How many completed connections can wait for accept() on the socket: the stored backlog plus one on Linux.", socketLabels, nil),
		dropped:     prometheus.NewDesc("backlog_socket_dropped_total", droppedHelp, socketLabels, nil),
		info:        prometheus.NewDesc("backlog_socket_info", "1 for every listening TCP socket, with the process holding it (pid 0 when it could not be read) and the socket's owner.", append(socketLabels, "pid", "uid"), nil),

		synQueue:   prometheus.NewDesc("backlog_address_syn_queue_length", "Handshakes to the listening address waiting for their final ACK: request sockets in SYN_RECV (ss -n state syn-recv); for an SO_REUSEPORT group, the group's, since the kernel does not say which member holds each.", addressLabels, nil),
		synRetrans: prometheus.NewDesc("backlog_address_syn_retransmitted", "Handshakes to the listening address waiting for their final ACK whose SYN-ACK was sent more than once, as those of a SYN flood from forged sources are.", addressLabels, nil),
		sockets:    prometheus.NewDesc("backlog_address_sockets", "Listening sockets on the address: more than one is an SO_REUSEPORT group.", addressLabels, nil),
		imbalance:  prometheus.NewDesc("backlog_address_queue_imbalance", "For an SO_REUSEPORT group, the fullest member's queue length over its capacity minus the emptiest member's: 0 when even, 1 when one member is full while another is empty.", addressLabels, nil),

		netnsInfo: prometheus.NewDesc("backlog_netns_info", "1 for every network namespace read, with its inode and the lowest-numbered process in it.", append(netnsLabels, "inode", "pid", "process"), nil),
		netnsUp:   prometheus.NewDesc("backlog_exporter_netns_up", "1 if the network namespace's sockets and counters were read at this scrape, 0 if not (its other series are then absent).", netnsLabels, nil),
		scrape:    prometheus.NewDesc("backlog_exporter_scrape_seconds", "How long reading every listening socket, namespace and holder took at this scrape.", nil, nil),

		overflows:      prometheus.NewDesc("backlog_netns_listen_overflows_total", "SYNs and final ACKs that found an accept queue of the namespace full (TcpExt ListenOverflows).", netnsLabels, nil),
		drops:          prometheus.NewDesc("backlog_netns_listen_drops_total", "SYNs and final ACKs a listener of the namespace dropped for any reason, overflows included (TcpExt ListenDrops).", netnsLabels, nil),
		reqFullDrop:    prometheus.NewDesc("backlog_netns_req_q_full_drop_total", "SYNs dropped because a SYN queue was full and SYN cookies were off (TcpExt TCPReqQFullDrop).", netnsLabels, nil),
		reqFullCookies: prometheus.NewDesc("backlog_netns_req_q_full_do_cookies_total", "SYNs answered with a SYN cookie because a SYN queue was full or cookies are always on (TcpExt TCPReqQFullDoCookies).", netnsLabels, nil),
		cookiesSent:    prometheus.NewDesc("backlog_netns_syncookies_sent_total", "SYN cookies sent (TcpExt SyncookiesSent).", netnsLabels, nil),
		cookiesRecv:    prometheus.NewDesc("backlog_netns_syncookies_recv_total", "ACKs that carried a valid SYN cookie (TcpExt SyncookiesRecv).", netnsLabels, nil),
		cookiesFailed:  prometheus.NewDesc("backlog_netns_syncookies_failed_total", "ACKs that carried an invalid SYN cookie (TcpExt SyncookiesFailed).", netnsLabels, nil),
	}
)

// Describe implements prometheus.Collector.
func (c *HostCollector) Describe(ch chan<- *prometheus.Desc) {
	d := hostDescs
	for _, x := range []*prometheus.Desc{d.queueLength, d.backlog, d.capacity, d.dropped, d.info,
		d.synQueue, d.synRetrans, d.sockets, d.imbalance, d.netnsInfo, d.netnsUp, d.scrape,
		d.overflows, d.drops, d.reqFullDrop, d.reqFullCookies, d.cookiesSent, d.cookiesRecv, d.cookiesFailed} {
		ch <- x
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
	if c.cfg.AllNamespaces {
		var err error
		if nss, err = kernel.Namespaces(); err != nil {
			return nil, err
		}
	} else {
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

// Collect implements prometheus.Collector.
func (c *HostCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	readings, err := c.Read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(hostDescs.scrape, err)
		return
	}
	d := hostDescs
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	for _, r := range readings {
		ns := r.Namespace.Label()
		if r.Err != nil {
			gauge(d.netnsUp, 0, ns)
			continue
		}
		gauge(d.netnsUp, 1, ns)
		gauge(d.netnsInfo, 1, ns, strconv.FormatUint(r.Namespace.Inode, 10), strconv.Itoa(r.Namespace.PID), r.Namespace.Process)
		k := r.Counters
		counter(d.overflows, k.ListenOverflows, ns)
		counter(d.drops, k.ListenDrops, ns)
		counter(d.reqFullDrop, k.TCPReqQFullDrop, ns)
		counter(d.reqFullCookies, k.TCPReqQFullDoCookies, ns)
		counter(d.cookiesSent, k.SyncookiesSent, ns)
		counter(d.cookiesRecv, k.SyncookiesRecv, ns)
		counter(d.cookiesFailed, k.SyncookiesFailed, ns)
		groups := map[string][]kernel.Socket{}
		var order []string
		for _, s := range r.Sockets {
			addr, inode := s.Key(), strconv.FormatUint(s.Inode, 10)
			gauge(d.queueLength, float64(s.Len), ns, addr, inode, s.Process)
			gauge(d.backlog, float64(s.Backlog), ns, addr, inode, s.Process)
			gauge(d.capacity, float64(s.Capacity()), ns, addr, inode, s.Process)
			counter(d.dropped, s.Drops, ns, addr, inode, s.Process)
			gauge(d.info, 1, ns, addr, inode, s.Process, strconv.Itoa(s.PID), strconv.FormatUint(uint64(s.UID), 10))
			if _, seen := groups[addr]; !seen {
				order = append(order, addr)
			}
			groups[addr] = append(groups[addr], s)
		}
		for _, addr := range order {
			g := groups[addr]
			gauge(d.synQueue, float64(g[0].SynQueue), ns, addr)
			gauge(d.synRetrans, float64(g[0].SynRetransmitted), ns, addr)
			gauge(d.sockets, float64(len(g)), ns, addr)
			if len(g) > 1 {
				gauge(d.imbalance, kernel.Imbalance(g), ns, addr)
			}
		}
	}
	c.last = time.Since(start)
	gauge(d.scrape, c.last.Seconds())
}
