// Package kernel is a listener on real operating-system sockets whose listen
// backlog is the one you ask for, read back from the kernel, resizable while
// it listens, and observable. Use it where a Go server would call net.Listen.
//
// Go's net.Listen always asks for the host's maximum backlog and offers no
// way to choose another, read back what the kernel stored, or change it
// (golang/go#39000). A ListenConfig here creates the socket itself, calls
// listen() with exactly the backlog asked for, and hands the socket to Go's
// network poller, so Accept blocks without spinning, deadlines work, Close
// unblocks a pending Accept, and http.Serve or grpc.Server.Serve take the
// Listener as they take any net.Listener. Accepted connections are the
// *net.TCPConn and *net.UnixConn values net.Listen would give.
//
// # What the Linux kernel does with the backlog
//
// net/socket.c __sys_listen compares the request as an unsigned number with
// net.core.somaxconn and keeps the smaller, so a negative request means "the
// maximum" and 0 stays 0. net/ipv4/af_inet.c inet_listen (and
// net/unix/af_unix.c unix_listen) store it in sk_max_ack_backlog; on a socket
// that already listens they store the new value and do nothing else, so
// SetBacklog never drops a waiting connection: a smaller backlog only makes
// new arrivals wait until accept() has drained the queue below it.
// include/net/sock.h sk_acceptq_is_full reports a full queue only when more
// than the backlog wait, so a backlog of N holds N+1 completed connections.
// A SYN that finds the queue full is dropped without an answer
// (net/ipv4/tcp_input.c tcp_conn_request), and tcp_listendrop
// (include/net/tcp.h) counts it in the socket's own sk_drops and in the
// namespace's ListenDrops.
//
// Read-back on Linux comes from the kernel itself: net/ipv4/tcp.c
// tcp_get_info reports, for a listening socket, the accept-queue length as
// tcpi_unacked and the stored backlog as tcpi_sacked, the same two numbers
// `ss -lnt` shows as Recv-Q and Send-Q (net/ipv4/tcp_diag.c
// tcp_diag_get_info). The drop count is SO_MEMINFO's SK_MEMINFO_DROPS
// (net/core/sock.c sk_get_meminfo), what `ss -lntm` shows as d. Unix-domain
// listeners are read through unix_diag (net/unix/diag.c
// sk_diag_show_rqlen).
//
// # The SYN queue and the time in the queue
//
// Sockets counts, for every listening address, the handshakes waiting for
// their final ACK: inet_diag lists request sockets in TCP_SYN_RECV when
// asked for that state (net/ipv4/inet_diag.c inet_req_diag_fill), from
// the established hash, where they live since Linux 4.4. A request socket
// does not name its listener, so it is attributed as the kernel's lookup
// chose it (the specific address before the wildcard), and within an
// SO_REUSEPORT group, whose member the kernel picked by a seeded hash, to
// the group as a whole (Socket.Group says how many share it). Asking for
// request sockets makes the kernel walk every bucket of its established
// hash, so a reading costs milliseconds, not microseconds (BENCHMARKS.md
// has the figures with 30,000 listeners under a flood).
//
// On Linux, Accept reads how long each connection waited in the accept
// queue from the kernel's own account: the accepted socket's TCP_INFO
// tcpi_last_data_sent, the time since the kernel created it at the final
// ACK (net/ipv4/tcp_minisocks.c tcp_create_openreq_child sets lsndtime),
// in milliseconds, counted in timer ticks (jiffies): exact in ticks, and
// within a tick of the true wait as long as the ticks keep time; on a
// virtual machine whose ticks come late and then catch up, the figure can
// exceed the true wait by the ticks that were late (8 ms seen on the
// machine the tests ran on). Stats.QueueWait gathers the
// waits in a histogram; ListenConfig.SkipQueueWait turns the reading off.
// This was checked on Linux 6.18, the one kernel at hand
// (TestQueueWaitWithinATick); by the source it holds since 4.13, whose
// tcp_create_openreq_child sets lsndtime to tcp_jiffies32, the moment of
// creation; earlier kernels set it to treq->snt_synack, when the first
// SYN-ACK went out, so there the figure also counts the handshake (and any
// SYN-ACK retransmissions before the final ACK).
//
// # Other systems
//
// On FreeBSD the backlog is exact and read back with SO_LISTENQLIMIT and
// SO_LISTENQLEN (sys/kern/uipc_socket.c sogetopt). On macOS it is exact, but
// XNU has no socket option that reads it back, so Backlog computes it from
// kern.ipc.somaxconn with the rules of backlog.Darwin and the queue length
// reads 0. Sockets, SocketByInode and ReadCounters are Linux only. On
// Windows and the remaining systems Go's runtime owns socket creation, so
// only the default backlog (0) is available, Backlog reports the documented
// value (backlog.Windows on Windows), and SetBacklog fails with an error
// wrapping errors.ErrUnsupported, unless a Personality is set: emulation
// works everywhere.
//
// # Personality emulation
//
// With ListenConfig.Personality set and the emulation after accept()
// (ListenConfig.Emulation EmulateAfterAccept, or EmulateAuto where the
// shaper described under "At the SYN" cannot run), the listener wraps the
// plain one, as golang.org/x/net/netutil's LimitListener wraps a listener:
// a goroutine
// accepts every connection from the kernel as soon as it arrives and offers
// it to a backlog.Queue governed by that personality, and Accept takes from
// that queue. The kernel's own queue is set to its maximum and kept empty.
// The accept side (deadlines, Close, listen() again, the KB 295079 quantum)
// is the one package netstack uses, so the two agree wherever emulation can
// reproduce a rule. What the personality refuses, resets or ignores is
// closed with SO_LINGER 0, which sends a reset.
//
// This differs from the real system, and from package netstack, in ways no
// user-space code above the socket can avoid: the kernel has already
// completed the handshake, so a client that a real system would refuse sees
// its connect() succeed and then a reset (ECONNRESET on its first read or
// write, or from connect itself when the reset outruns it) instead of
// ECONNREFUSED; a client the system would ignore also gets that reset
// instead of silence and a SYN retransmission; and nothing is ever half-open
// in the queue, so SYN-queue limits, SYN cookies and the eviction of
// half-open connections (macOS) are not reproduced, and Stats marks the
// half-open count and the SYN-level counters as unobserved. Stored backlog,
// capacity, which completed connections a full queue keeps and which it
// turns away, listen() again (reset the excess, refuse to shrink, keep the
// old value), Close, deadlines and the KB 295079 deferred slot (after one
// Personality.Quantum, or when Accept blocks) are reproduced exactly; the
// conformance suite (internal/conformance) checks each against package
// netstack.
//
// # At the SYN
//
// With ListenConfig.Emulation EmulateAtSYN, or EmulateAuto (the zero value)
// where this process can, the personality is followed at the SYN on Linux,
// as a real system follows it: every SYN for the listener is sent by a
// netfilter rule to a queue that the listener reads
// (net/netfilter/nfnetlink_queue.c, spoken over a NETLINK_NETFILTER
// socket), and the personality's queue decides it before the kernel sees
// it: passed to the kernel, which answers it; dropped, so that the client
// hears nothing and retransmits on its own schedule; or refused, with a
// reset the kernel sends from a filter rule
// (net/ipv4/netfilter/nf_reject_ipv4.c), so that the client's connect fails
// with ECONNREFUSED. The kernel's own queue is set to its maximum, and
// before each SYN is decided every connection the kernel completed is taken
// from it and reported to the personality's queue, so each decision sees
// the handshakes completed before it. Shape does the same for a listener
// of another program: the handshakes it passed are looked up by address
// (net/ipv4/inet_diag.c), and the listener's accept-queue length, read the
// same way, says what its application accepted.
//
// It needs CAP_NET_ADMIN, iptables (ip6tables for IPv6) and a kernel with
// nfnetlink_queue and the xt NFQUEUE and REJECT targets. Under EmulateAuto,
// when any is missing, the listener says so in one log line (level Info)
// and Listener.Emulation reports the fallback and its reason. The rules sit
// in mangle INPUT (the queue) and filter INPUT (the reset of refused SYNs),
// carry a comment naming their owner, and are removed at Close; the queue
// has --queue-bypass, and the kernel unbinds it when its socket closes, so
// the rules of a shaper that was killed let SYNs through, and the next
// shaper to start removes them. SYNs the kernel held for a verdict when a
// shaper stops are dropped; their clients retransmit them.
//
// Where it differs from the real system (ShapeDifferences lists it per
// personality, and `backlog personalities NAME` shows it): the SYN-ACK and
// its retransmissions are the host kernel's, not the personality's
// schedule, and so is the answer to a client's repeated SYN (Linux's
// tcp_check_req, where the system has a rule of its own, as FreeBSD's
// syncache_add); a final ACK that finds the queue full meets a connection the
// kernel has already completed, so a drop rule (linux, gvisor) becomes a
// wait in the shaper until accept() frees a slot (another program's
// listener: a wait in its own queue, beside the emulated one), and a reset
// rule (freebsd) resets the connection after its handshake, as FreeBSD
// does; a handshake is half-open from its SYN until the shaper sees it
// completed (at once on its own listener, within 2 ms on another's); a SYN
// the system would answer with a cookie is answered as any other; an
// evicted half-open connection (darwin) is dropped from the kernel's SYN
// queue without a reset to its client; and on another program's listener
// a slot freed by accept() under the KB 295079 defect comes back at once.
//
// Each SYN costs a round trip to user space: on loopback in a namespace on
// a 2-core machine the connection rate of one client at a time fell to
// about 0.45 of the unshaped port's (about 100 µs more per connection: the
// wake-up of the shaper's thread and of the SYN's reinjection, and the
// netfilter tables every packet of the namespace then crosses, which alone
// cost about 15 µs per connection), and with 8 clients at once to 0.5 to
// 0.65 (BenchmarkShaper).
//
// # Overload
//
// With ListenConfig.Overload, Accept reads each connection's wait as
// above and asks a backlog.Shedder whether to serve it: while the queue
// stands (its oldest connection has waited past the target for an
// interval), a connection that waited past the target is closed with
// SO_LINGER 0, which sends a reset, and Accept goes on to the next;
// Stats.Overdue counts them. The kernel's queue gives up its oldest
// connection only, so to serve the newest first (Overload.LIFO) Accept
// takes every waiting connection while a queue forms: accept4 on the
// non-blocking socket, inside RawConn.Control, until EAGAIN, and keeps
// them, at most 1024, until they are served, reset as overdue, or reset
// by Close. Overload.SizeBacklog calls listen() again, which on Linux only
// stores the new backlog (above), so a smaller one drops SYNs early
// without touching what waits. The policy needs the queue wait, so it is
// available on Linux TCP listeners without a Personality.
//
// # Running out of descriptors
//
// When accept() fails with EMFILE or ENFILE (or ENOBUFS, ENOMEM) on Linux or
// a BSD, Accept does not return the error: it waits, 5 ms at first and
// doubling to 1 s, and tries again, so a server keeps its listener, burns no
// CPU, and resumes on its own once descriptors are back; Close and deadlines
// still end the wait. Linux fails accept() for want of a descriptor before
// it looks at the queue (net/socket.c __sys_accept4_file calls
// get_unused_fd_flags first), so without the wait a retrying server would
// spin. With ListenConfig.ShedLoad
// the listener also keeps a spare descriptor: while none is free it closes
// the spare, accepts the next client (waiting for one in the network poller),
// resets it and reopens the spare, so clients get a prompt reset instead of
// hanging; the sheds are counted in Stats.Shed. A client that arrives once
// descriptors are back is served instead. With a Personality whose slots
// need descriptors (backlog.Personality.SlotsNeedDescriptors), the emulated
// queue is told when descriptors run out and come back.
package kernel
