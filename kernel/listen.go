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
// With ListenConfig.Personality set, a goroutine accepts every connection
// from the kernel as soon as it arrives and offers it to a backlog.Queue
// governed by that personality; Accept takes from that queue. The kernel's
// own queue is set to its maximum and kept empty. What the personality
// refuses, resets or ignores is closed with SO_LINGER 0, which sends a reset.
// This differs from the real system, and from package netstack, in ways no
// user-space code can avoid: the kernel has already completed the handshake,
// so a client that a real system would refuse sees its connect() succeed and
// then a reset (ECONNRESET on its first read or write, or from connect itself
// when the reset outruns it) instead of ECONNREFUSED; a client the system
// would ignore also gets that reset instead of silence and a SYN
// retransmission; and nothing is ever half-open in the queue, so SYN-queue limits, SYN cookies and the eviction of half-open
// connections (macOS) are not reproduced. Stored backlog, capacity, the
// outcome of a full queue for completed connections, listen() again (reset
// the excess, refuse to shrink, keep the old value) and the KB 295079
// deferred slot are reproduced exactly.
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

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/deadline"
)

// MaxBacklog, as a backlog, asks for the largest backlog the system allows:
// every system this package supports turns a negative request into its
// maximum (net.core.somaxconn on Linux, kern.ipc.somaxconn on BSDs).
const MaxBacklog = -1

// A ListenConfig says how to create a listening socket. Its zero value is
// valid and listens as net.Listen does.
type ListenConfig struct {
	// Backlog is passed to listen() exactly, with values beyond the range of
	// a C int saturated rather than truncated. Zero means the system
	// default, as net.Listen picks it (net.core.somaxconn on Linux), or
	// with a Personality the largest backlog it allows;
	// backlog.ZeroBacklog asks for 0 itself (one waiting connection on
	// Linux). Negative values (MaxBacklog) and values above the system
	// maximum, such as SOMAXCONN, ask for the maximum.
	Backlog int

	// ReusePort sets SO_REUSEPORT before bind, so several listeners can
	// share one address and the kernel spreads connections among them.
	// False leaves it unset.
	ReusePort bool

	// DeferAccept sets TCP_DEFER_ACCEPT on Linux: the kernel keeps a
	// connection out of the accept queue until its first data arrives, or
	// until about this long has passed (whole seconds, rounded up). Zero
	// leaves it unset. Elsewhere a non-zero value is an error.
	DeferAccept time.Duration

	// FastOpen enables TCP Fast Open with a queue of this many pending
	// Fast Open requests (TCP_FASTOPEN). Zero leaves it off. It also needs
	// the server bit of net.ipv4.tcp_fastopen on Linux.
	FastOpen int

	// Control, if not nil, is called after the socket is created and its
	// default options set, before bind, as net.ListenConfig.Control is.
	// network is "tcp4", "tcp6" or "unix"; address is the address to bind.
	Control func(network, address string, c syscall.RawConn) error

	// Personality, if not nil, puts a backlog.Queue with these rules in
	// front of the kernel's queue: see the package documentation for what
	// emulation reproduces and what it cannot. Nil means no emulation.
	Personality *backlog.Personality

	// ShedLoad keeps a spare descriptor, and resets waiting clients while
	// the process has no free descriptor, instead of letting them wait.
	// False lets them wait until descriptors are back.
	ShedLoad bool

	// Logger receives the warning logged when the system stores a smaller
	// backlog than the one asked for. Nil means slog.Default().
	Logger *slog.Logger
}

// Listen listens on address with the given backlog: it is ListenConfig{Backlog:
// backlog}.Listen with a background context.
func Listen(network, address string, backlog int) (*Listener, error) {
	lc := ListenConfig{Backlog: backlog}
	return lc.Listen(context.Background(), network, address)
}

// Listen creates a socket listening on address and returns it as a
// Listener. network is "tcp", "tcp4", "tcp6" or "unix", and address is as
// for net.Listen: "tcp" on a wildcard address listens on both IPv4 and IPv6,
// as net.Listen does. ctx bounds the name resolution only.
//
// Errors are *net.OpError values wrapping the failed system call, so
// errors.Is(err, syscall.EADDRINUSE) and the like work.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (*Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	requested, kernelRequest := lc.Backlog, lc.Backlog
	exact := true
	switch {
	case lc.Personality != nil:
		if requested == 0 {
			requested = math.MaxInt32 // Personality.Maximum
		} else if requested == backlog.ZeroBacklog {
			requested = 0
		}
		// The kernel queue only has to hold connections until the
		// emulation loop takes them: give it all the room there is.
		kernelRequest, exact = MaxBacklog, false
	case requested == 0:
		requested = defaultBacklog()
		kernelRequest, exact = requested, false
	case requested == backlog.ZeroBacklog:
		requested, kernelRequest = 0, 0
	}
	var q *backlog.Queue[net.Conn]
	if lc.Personality != nil {
		var err error
		if q, err = backlog.NewQueue[net.Conn](*lc.Personality, requested); err != nil {
			return nil, &net.OpError{Op: "listen", Net: network, Err: err}
		}
	}
	ln, sys, err := lc.sysListen(ctx, network, address, kernelRequest, exact)
	if err != nil {
		return nil, err
	}
	l := &Listener{
		ln:       ln,
		sys:      sys,
		network:  network,
		shedLoad: lc.ShedLoad,
		logger:   lc.Logger,
		done:     make(chan struct{}),
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	l.requested.Store(int64(requested))
	l.stored.Store(int64(sys.computed(kernelRequest)))
	if q != nil {
		l.emu = &emulation{q: q}
		l.emu.wg.Add(1)
		go l.emulate()
	}
	l.warnIfClamped(requested, l.Backlog())
	return l, nil
}

// A Listener is a listening socket whose backlog can be read back, changed
// and watched. It implements backlog.Listener. Its methods are safe for use
// by many goroutines at once.
type Listener struct {
	ln       net.Listener
	sys      *sysListener
	network  string
	shedLoad bool
	logger   *slog.Logger
	emu      *emulation

	// requested is the backlog last asked for; stored the last one read
	// back (or computed where the system offers no read-back).
	requested, stored atomic.Int64
	// accepted counts connections taken from the kernel; shed those reset
	// for lack of descriptors; starved the accept() calls that failed for
	// lack of descriptors or memory.
	accepted, shed, starved atomic.Uint64

	mu       sync.Mutex // serialises SetBacklog and Close
	closed   bool
	done     chan struct{}
	deadline deadline.Deadline
}

var _ backlog.Listener = (*Listener)(nil)

// Addr returns the listener's network address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Accept waits for and returns the next connection. While the process has
// no free descriptor it keeps waiting (see the package documentation)
// instead of failing. With a Personality it takes the oldest connection the
// emulated queue holds.
func (l *Listener) Accept() (net.Conn, error) {
	if l.emu != nil {
		return l.acceptQueued()
	}
	return l.acceptKernel(true)
}

// Close closes the listener. A pending Accept returns an error that wraps
// net.ErrClosed. With a Personality, the emulation goroutine has stopped and
// every connection still queued has been reset when Close returns.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.opError("close", net.ErrClosed)
	}
	l.closed = true
	close(l.done)
	l.deadline.Stop()
	err := l.ln.Close()
	if l.emu != nil {
		l.emu.wg.Wait()
		for _, c := range l.emu.q.Close() {
			abort(c)
		}
	}
	if e := l.sys.close(); err == nil && e != nil {
		err = l.opError("close", e)
	}
	return err
}

// SetDeadline sets the deadline for Accept; the zero time means none. An
// Accept waiting when the deadline passes returns an error whose Timeout
// method reports true and which wraps os.ErrDeadlineExceeded.
func (l *Listener) SetDeadline(t time.Time) error {
	if l.emu == nil {
		if d, ok := l.ln.(interface{ SetDeadline(time.Time) error }); ok {
			if err := d.SetDeadline(t); err != nil {
				return err
			}
		}
	}
	l.deadline.Set(t)
	return nil
}

// SyscallConn returns a raw network connection to the listening socket, as
// (*net.TCPListener).SyscallConn does.
func (l *Listener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.ln.(syscall.Conn)
	if !ok {
		return nil, l.opError("raw-control", errors.ErrUnsupported)
	}
	return sc.SyscallConn()
}

// Backlog returns the stored backlog. Without a Personality it is read from
// the kernel on Linux and FreeBSD, and computed from the documented rules
// elsewhere (see the package documentation); with one, it is what the
// emulated system stores. After Close it is the last value seen.
func (l *Listener) Backlog() int {
	if l.emu != nil {
		return l.emu.q.Backlog()
	}
	if q, err := l.sys.queue(); err == nil {
		l.note(q)
	}
	return int(l.stored.Load())
}

// SetBacklog calls listen() again with n, passed exactly as a
// ListenConfig.Backlog is except that 0 means 0 (as does
// backlog.ZeroBacklog). On Linux, and on the BSDs, this only stores the new
// backlog (net/ipv4/af_inet.c inet_listen; FreeBSD sys/kern/uipc_socket.c
// solisten_proto): connections already waiting stay, however many there
// are, and new ones wait until accept() has brought the queue below the new
// limit. With a Personality the emulated system's rule applies instead
// (backlog.Relisten): waiting connections beyond the new backlog may be
// reset, or the call may fail with an error wrapping both
// backlog.ErrRelisten and syscall.EINVAL, as gVisor fails.
func (l *Listener) SetBacklog(n int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.opError("listen", net.ErrClosed)
	}
	if n == backlog.ZeroBacklog {
		n = 0
	}
	if l.emu != nil {
		reset, err := l.emu.q.Listen(n)
		for _, c := range reset {
			abort(c)
		}
		if err != nil {
			// gVisor answers EINVAL (backlog.GVisor).
			return l.opError("listen", fmt.Errorf("%w: %w", os.NewSyscallError("listen", syscall.EINVAL), err))
		}
		l.warnIfClamped(n, l.emu.q.Backlog())
		return nil
	}
	if err := l.sys.listen(n); err != nil {
		return l.opError("listen", err)
	}
	l.requested.Store(int64(n))
	l.stored.Store(int64(l.sys.computed(n)))
	l.warnIfClamped(n, l.Backlog())
	return nil
}

// Stats returns the listener's gauges and counters as backlog.Stats:
// Requested, Backlog, Capacity and Len, Accepted, Reset (connections shed
// for lack of descriptors) and ListenDrops (the socket's own drop count,
// which on Linux counts every SYN or final ACK the listener dropped,
// overflows included). The kernel keeps no per-socket count of overflows
// apart from drops, nor of half-open connections, so ListenOverflows and
// HalfOpen stay zero: ReadCounters has the namespace-wide counters. With a
// Personality the queue's own statistics are returned, with the kernel's
// drops and the sheds added.
//
// It costs two getsockopt calls on Linux (TCP_INFO and SO_MEMINFO), about
// two microseconds: cheap enough to call many times a second.
func (l *Listener) Stats() backlog.Stats {
	s, _ := l.KernelStats()
	return s.Stats
}

// Stats is what KernelStats reports: the listener's backlog.Stats and what
// only a kernel listener has.
type Stats struct {
	backlog.Stats
	// KernelBacklog and KernelLen are the kernel's stored backlog and
	// accept-queue length. Without a Personality they equal Backlog and
	// Len; with one, they describe the kernel queue beneath the emulated
	// one, which the emulation keeps nearly empty.
	KernelBacklog int `json:"kernel_backlog"`
	KernelLen     int `json:"kernel_queued_now"`
	// ReadBack reports whether KernelBacklog and KernelLen were read from
	// the kernel. When false they are computed from the documented rules
	// and KernelLen is 0.
	ReadBack bool `json:"read_back"`
	// Drops is the socket's own drop counter (Linux sk_drops, `ss -lntm`
	// d): SYNs and final ACKs the listener dropped. Zero where the system
	// does not keep one.
	Drops uint64 `json:"drops"`
	// Shed counts connections reset because the process had no free
	// descriptor (ListenConfig.ShedLoad).
	Shed uint64 `json:"shed"`
	// Starved counts accept() calls that failed for lack of descriptors or
	// memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
	Starved uint64 `json:"starved"`
	// Inode is the socket's inode number, as Sockets and `ss -e` show it,
	// or 0 where there is none.
	Inode uint64 `json:"inode"`
}

// KernelStats returns the listener's statistics with what only the kernel
// transport has. The error reports a failed read-back (for instance after
// Close); the counters kept in user space are filled in regardless.
func (l *Listener) KernelStats() (Stats, error) {
	q, err := l.sys.queue()
	if err == nil {
		l.note(q)
	} else {
		q = queueState{Backlog: int(l.stored.Load())}
		err = l.opError("getsockopt", err)
	}
	s := Stats{
		KernelBacklog: q.Backlog,
		KernelLen:     q.Len,
		ReadBack:      q.ReadBack,
		Drops:         q.Drops,
		Shed:          l.shed.Load(),
		Starved:       l.starved.Load(),
		Inode:         l.sys.inode,
	}
	if l.emu != nil {
		s.Stats = l.emu.q.Stats()
		s.Reset += s.Shed
		s.ListenDrops += s.Drops
		return s, err
	}
	s.Requested = int(l.requested.Load())
	s.Backlog = q.Backlog
	s.Capacity = capacityOf(q.Backlog)
	s.Len = q.Len
	s.Accepted = l.accepted.Load()
	s.Reset = s.Shed
	s.ListenDrops = s.Drops
	return s, err
}

// note records a read-back.
func (l *Listener) note(q queueState) { l.stored.Store(int64(q.Backlog)) }

// warnIfClamped logs one warning when the system stored less than was asked
// for, as Redis does when tcp-backlog exceeds somaxconn. Requests that mean
// "the default" or "the maximum" (0, negative, SOMAXCONN, and anything from
// the largest C int up) are not warned about.
func (l *Listener) warnIfClamped(requested, stored int) {
	if requested <= 0 || requested >= math.MaxInt32 || isSOMAXCONN(requested) || stored >= requested {
		return
	}
	attrs := []any{
		slog.String("addr", l.Addr().String()),
		slog.Int("requested", requested),
		slog.Int("stored", stored),
	}
	msg := "listen backlog lower than requested"
	if l.emu != nil {
		attrs = append(attrs, slog.String("personality", l.emu.q.Personality().String()))
	} else if limit, err := Somaxconn(); err == nil {
		attrs = append(attrs, slog.Int("somaxconn", limit))
		msg += "; raise " + somaxconnName
	}
	l.logger.Warn(msg, attrs...)
}

// isSOMAXCONN reports whether n is a SOMAXCONN constant a program may pass
// meaning "the maximum": Go's syscall value or the host's.
func isSOMAXCONN(n int) bool {
	return n == syscall.SOMAXCONN || n == hostSOMAXCONN
}

func (l *Listener) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: l.network, Addr: l.ln.Addr(), Err: err}
}

// acceptKernel takes the next connection from the kernel, riding out
// descriptor exhaustion. userDeadline says whether the deadline set with
// SetDeadline bounds the wait (it does not for the emulation goroutine).
func (l *Listener) acceptKernel(userDeadline bool) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err == nil {
			l.accepted.Add(1)
			if delay > 0 && l.emu != nil {
				l.emu.q.SetDescriptors(true)
			}
			return c, nil
		}
		if !starved(err) {
			return nil, err
		}
		l.starved.Add(1)
		if l.emu != nil {
			l.emu.q.SetDescriptors(false)
		}
		if l.shedLoad && noDescriptors(err) {
			c, shed, serr := l.sys.shed(l.ln)
			switch {
			case c != nil:
				l.accepted.Add(1)
				if l.emu != nil {
					l.emu.q.SetDescriptors(true)
				}
				return c, nil
			case shed:
				l.shed.Add(1)
				delay = 0
				continue
			case serr != nil && !errors.Is(serr, errNoSpare):
				return nil, serr
			}
		}
		delay = nextDelay(delay)
		if err := l.pause(delay, userDeadline); err != nil {
			return nil, err
		}
	}
}

// Descriptor-exhaustion back-off: from minDelay, doubling, up to maxDelay.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

func nextDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minDelay
	}
	return min(2*d, maxDelay)
}

// pause waits d, or until Close or, when userDeadline is set, the deadline.
func (l *Listener) pause(d time.Duration, userDeadline bool) error {
	t := time.NewTimer(d)
	defer t.Stop()
	var expired <-chan struct{}
	if userDeadline {
		expired = l.deadline.Done()
	}
	select {
	case <-t.C:
		return nil
	case <-l.done:
		return l.opError("accept", net.ErrClosed)
	case <-expired:
		return l.opError("accept", os.ErrDeadlineExceeded)
	}
}

// starved reports whether err is an accept() failure for lack of
// descriptors or kernel memory: one that goes away by itself.
func starved(err error) bool {
	return noDescriptors(err) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func noDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// errNoSpare says that shedding was impossible because no spare descriptor
// could be held.
var errNoSpare = errors.New("no spare descriptor")

// abort closes c with a reset rather than an orderly shutdown.
func abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// queueState is one read-back of the kernel's queue.
type queueState struct {
	Len, Backlog int
	Drops        uint64
	// ReadBack is false when Backlog is computed rather than read.
	ReadBack bool
}

// hostCapacity is the host system's capacity rule (N+1 on Linux).
var hostCapacity = sync.OnceValue(func() backlog.CapacityRule { return backlog.Host().Capacity })

// capacityOf returns how many completed connections the host's kernel lets
// wait for a stored backlog.
func capacityOf(stored int) int { return hostCapacity().Apply(stored) }

// unsupported returns an error wrapping errors.ErrUnsupported that says
// what is missing.
func unsupported(what string) error {
	return fmt.Errorf("%s: %w", what, errors.ErrUnsupported)
}
