package backlog

// Stats is a snapshot of a queue: its gauges, then counters that only grow.
// Counters named after Linux's TcpExt counters (/proc/net/netstat) count the
// same events; the others are this package's.
type Stats struct {
	// Requested is the backlog last passed to listen().
	Requested int `json:"requested"`
	// Backlog is the stored backlog.
	Backlog int `json:"backlog"`
	// Capacity is how many completed connections can wait.
	Capacity int `json:"capacity"`
	// Len is how many completed connections wait for accept().
	Len int `json:"queued_now"`
	// HalfOpen is how many handshakes are under way.
	HalfOpen int `json:"half_open_now"`
	// Unavailable is how many slots freed by accept() have not come back
	// yet (KB 295079 defect, or exhausted descriptors under a Winsock
	// provider model).
	Unavailable int `json:"unavailable_now"`

	// SYNs counts SYNs offered to the queue.
	SYNs uint64 `json:"syns"`
	// Queued counts connections that entered the accept queue.
	Queued uint64 `json:"queued"`
	// Accepted counts connections taken by accept().
	Accepted uint64 `json:"accepted"`
	// Refused counts SYNs answered with RST.
	Refused uint64 `json:"refused"`
	// Ignored counts SYNs and cookie ACKs dropped without an answer.
	Ignored uint64 `json:"ignored"`
	// Reset counts connections reset after their handshake: overflow
	// under a reset rule, the excess of listen() again, and Close.
	Reset uint64 `json:"reset"`
	// Evicted counts half-open connections displaced by newer SYNs.
	Evicted uint64 `json:"evicted"`
	// Expired counts half-open connections that gave up.
	Expired uint64 `json:"expired"`
	// DeferredRefusals counts SYNs turned away only because a slot freed
	// by accept() had not come back yet (the KB 295079 defect).
	DeferredRefusals uint64 `json:"deferred_refusals"`

	// ListenOverflows counts connection attempts that found the accept
	// queue full, at the SYN or at the final ACK.
	ListenOverflows uint64 `json:"listen_overflows"`
	// ListenDrops counts connection attempts the listener dropped or
	// refused for any reason, overflows included.
	ListenDrops uint64 `json:"listen_drops"`
	// TCPReqQFullDrop counts SYNs dropped because the SYN queue was full
	// and cookies were off.
	TCPReqQFullDrop uint64 `json:"tcp_req_q_full_drop"`
	// TCPReqQFullDoCookies counts SYNs answered with a cookie because the
	// SYN queue was full (or cookies are always on).
	TCPReqQFullDoCookies uint64 `json:"tcp_req_q_full_do_cookies"`
	// SyncookiesSent counts SYN cookies sent.
	SyncookiesSent uint64 `json:"syncookies_sent"`
	// SyncookiesRecv counts valid SYN-cookie ACKs that became connections.
	SyncookiesRecv uint64 `json:"syncookies_recv"`
}
