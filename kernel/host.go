package kernel

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
)

// Counters are the namespace-wide TCP counters about listen queues, named
// as in the TcpExt lines of /proc/net/netstat (net/ipv4/proc.c
// snmp4_net_list), which Linux keeps per network namespace. They only grow;
// Sub gives the change between two readings.
type Counters struct {
	// ListenOverflows counts SYNs and final ACKs that found an accept queue
	// full (net/ipv4/tcp_input.c tcp_conn_request, net/ipv4/tcp_ipv4.c
	// tcp_v4_syn_recv_sock).
	ListenOverflows uint64 `json:"listen_overflows"`
	// ListenDrops counts everything a listener dropped, overflows included
	// (include/net/tcp.h tcp_listendrop).
	ListenDrops uint64 `json:"listen_drops"`
	// TCPReqQFullDrop counts SYNs dropped because the SYN queue was full
	// and SYN cookies were off (net/ipv4/tcp_input.c tcp_syn_flood_action).
	TCPReqQFullDrop uint64 `json:"tcp_req_q_full_drop"`
	// TCPReqQFullDoCookies counts SYNs answered with a cookie because the
	// SYN queue was full or cookies are always on.
	TCPReqQFullDoCookies uint64 `json:"tcp_req_q_full_do_cookies"`
	// SyncookiesSent counts SYN cookies sent.
	SyncookiesSent uint64 `json:"syncookies_sent"`
	// SyncookiesRecv counts valid SYN-cookie ACKs received.
	SyncookiesRecv uint64 `json:"syncookies_recv"`
	// SyncookiesFailed counts ACKs that carried an invalid SYN cookie.
	SyncookiesFailed uint64 `json:"syncookies_failed"`
}

// Sub returns c minus prev, field by field: what happened between two
// readings.
func (c Counters) Sub(prev Counters) Counters {
	return Counters{
		ListenOverflows:      c.ListenOverflows - prev.ListenOverflows,
		ListenDrops:          c.ListenDrops - prev.ListenDrops,
		TCPReqQFullDrop:      c.TCPReqQFullDrop - prev.TCPReqQFullDrop,
		TCPReqQFullDoCookies: c.TCPReqQFullDoCookies - prev.TCPReqQFullDoCookies,
		SyncookiesSent:       c.SyncookiesSent - prev.SyncookiesSent,
		SyncookiesRecv:       c.SyncookiesRecv - prev.SyncookiesRecv,
		SyncookiesFailed:     c.SyncookiesFailed - prev.SyncookiesFailed,
	}
}

// A Socket is one listening TCP socket of the host, as Sockets reports it.
type Socket struct {
	// Addr is the local address and port. A socket that listens on both
	// IPv4 and IPv6 has the IPv6 wildcard here and DualStack set.
	Addr      netip.AddrPort `json:"addr"`
	DualStack bool           `json:"dual_stack,omitempty"`
	// Inode is the socket's inode number: "socket:[inode]" in /proc/PID/fd.
	Inode uint64 `json:"inode"`
	// UID owns the socket.
	UID uint32 `json:"uid"`
	// Len is how many completed connections wait for accept() (ss Recv-Q).
	Len int `json:"queued_now"`
	// Backlog is the stored backlog (ss Send-Q).
	Backlog int `json:"backlog"`
	// Drops is the socket's own drop count (ss -m, d): Linux sk_drops,
	// which is not the namespace's ListenDrops (see SocketStats.Drops).
	Drops uint64 `json:"drops"`
	// SynQueue is how many handshakes to the socket's address and port
	// wait for their final ACK: the request sockets in SYN_RECV that `ss
	// -n state syn-recv` lists. SynRetransmitted is how many of them had
	// their SYN-ACK sent again at least once, as the handshakes of a SYN
	// flood from forged sources do. When several sockets share the address
	// (Group > 1) both are the group's: the kernel does not say which
	// member holds a request socket.
	SynQueue         int `json:"syn_queue"`
	SynRetransmitted int `json:"syn_retransmitted"`
	// Group is how many listening sockets share this one's address and
	// port (an SO_REUSEPORT group), itself included: 1 when it is alone.
	Group int `json:"group"`
	// PID and Process are the process holding the socket (the lowest PID
	// when several share it) and its name (/proc/PID/comm), or 0 and "" when
	// no holder could be read.
	PID     int    `json:"pid"`
	Process string `json:"process"`
}

// String formats the socket's address as ss does: "*:80" for a dual-stack
// wildcard, "0.0.0.0:80", "[::1]:80".
func (s Socket) String() string {
	if s.DualStack {
		return "*:" + strconv.Itoa(int(s.Addr.Port()))
	}
	return s.Addr.String()
}

// Capacity returns how many completed connections can wait on the socket
// on this host: the stored backlog plus one on Linux.
func (s Socket) Capacity() int { return capacityOf(s.Backlog) }

// Fullness returns how full the socket's accept queue is: the connections
// waiting over how many can wait on this host (the stored backlog plus
// one on Linux), from 0 to 1, or more for a queue that holds more than it
// admits (after SetBacklog lowered it). A queue with no room at all is as
// full as it is long.
func (s Socket) Fullness() float64 {
	c := s.Capacity()
	if c <= 0 {
		return float64(s.Len)
	}
	return float64(s.Len) / float64(c)
}

// Key returns what the sockets of one SO_REUSEPORT group share, as
// String shows it: "*:80", "0.0.0.0:80", "[::1]:80".
func (s Socket) Key() string { return s.String() }

// Imbalance returns how unevenly the members of an SO_REUSEPORT group are
// loaded: the fullest member's Fullness minus the emptiest's, 0 when they
// are even (or there is one), 1 when one member is full while another is
// empty. The kernel spreads new connections over a group by a hash of
// each connection (net/core/sock_reuseport.c reuseport_select_sock), not by
// how full a member is, so one member that accepts slowly fills up while
// its siblings sit empty.
func Imbalance(members []Socket) float64 {
	if len(members) < 2 {
		return 0
	}
	lo, hi := members[0].Fullness(), members[0].Fullness()
	for _, m := range members[1:] {
		f := m.Fullness()
		lo, hi = min(lo, f), max(hi, f)
	}
	return hi - lo
}

// sortSockets orders sockets by port, then address, then inode.
func sortSockets(s []Socket) {
	slices.SortFunc(s, func(a, b Socket) int {
		if c := cmp.Compare(a.Addr.Port(), b.Addr.Port()); c != 0 {
			return c
		}
		if c := a.Addr.Addr().Compare(b.Addr.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Inode, b.Inode)
	})
}

// A Namespace is one network namespace of the host, as Namespaces finds
// it.
type Namespace struct {
	// Inode identifies the namespace: the number in "net:[4026531840]",
	// what readlink /proc/PID/ns/net shows.
	Inode uint64 `json:"inode"`
	// Name is its name under /run/netns (ip netns, CNI plugins), or "".
	Name string `json:"name,omitempty"`
	// PID and Process are the lowest-numbered process found in it and its
	// name, or 0 and "" for a namespace only a name holds.
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
	// Self is set for the namespace of the calling thread.
	Self bool `json:"self,omitempty"`

	// path opens the namespace.
	path string
}

// Label returns how the namespace is named in metrics and listings: its
// name if it has one, else "net:[INODE]".
func (n Namespace) Label() string {
	if n.Name != "" {
		return n.Name
	}
	return "net:[" + strconv.FormatUint(n.Inode, 10) + "]"
}
