package kernel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/deadline"
)

// socketListener is the plain listener: a socket with the backlog asked
// for, accepted through Go's poller, as small as net.Listen's apart from
// the read-back and the ride through descriptor exhaustion.
type socketListener struct {
	ln       net.Listener
	sys      *sysListener
	network  string
	shedLoad bool
	logger   *slog.Logger

	// onDescriptors, if set, hears when accept() runs out of descriptors
	// and when they are back: the emulation's queue needs to know under a
	// Winsock provider model. Set before the first accept.
	onDescriptors func(available bool)

	// requested is the backlog last asked for; stored the last one read
	// back (or computed where the system offers no read-back).
	requested, stored atomic.Int64
	// accepted counts connections taken from the kernel; shed those reset
	// for lack of descriptors; starved the accept() calls that failed for
	// lack of descriptors or memory.
	accepted, shed, starved atomic.Uint64

	// halfN and halfOK are the last reading of the SYN queue, made at
	// halfAt.
	halfMu sync.Mutex
	halfAt time.Time
	halfN  int
	halfOK bool

	mu       sync.Mutex // serialises SetBacklog and Close
	closed   bool
	done     chan struct{}
	deadline deadline.Deadline
}

// listenSocket creates the socket and listens with requested; exact says
// that the caller chose the backlog (where the runtime owns the socket,
// only the default can be had).
func (lc *ListenConfig) listenSocket(ctx context.Context, network, address string, requested int, exact bool, logger *slog.Logger) (*socketListener, error) {
	ln, sys, err := lc.sysListen(ctx, network, address, requested, exact)
	if err != nil {
		return nil, err
	}
	s := &socketListener{
		ln:       ln,
		sys:      sys,
		network:  network,
		shedLoad: lc.ShedLoad,
		logger:   logger,
		done:     make(chan struct{}),
	}
	s.requested.Store(int64(requested))
	s.stored.Store(int64(sys.computed(requested)))
	return s, nil
}

func (s *socketListener) Addr() net.Addr { return s.ln.Addr() }

func (s *socketListener) Accept() (net.Conn, error) { return s.accept(true) }

func (s *socketListener) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.opError("close", net.ErrClosed)
	}
	s.closed = true
	close(s.done)
	s.deadline.Stop()
	err := s.ln.Close()
	if e := s.sys.close(); err == nil && e != nil {
		err = s.opError("close", e)
	}
	return err
}

func (s *socketListener) SetDeadline(t time.Time) error {
	if d, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		if err := d.SetDeadline(t); err != nil {
			return err
		}
	}
	s.deadline.Set(t)
	return nil
}

func (s *socketListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := s.ln.(syscall.Conn)
	if !ok {
		return nil, s.opError("raw-control", errors.ErrUnsupported)
	}
	return sc.SyscallConn()
}

func (s *socketListener) Backlog() int {
	if q, err := s.sys.queue(); err == nil {
		s.note(q)
	}
	return int(s.stored.Load())
}

func (s *socketListener) SetBacklog(n int) error {
	if n == backlog.ZeroBacklog {
		n = 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.opError("listen", net.ErrClosed)
	}
	if err := s.sys.listen(n); err != nil {
		return s.opError("listen", err)
	}
	s.requested.Store(int64(n))
	s.stored.Store(int64(s.sys.computed(n)))
	s.warnIfClamped(n, s.Backlog())
	return nil
}

// kernelOnly is what the kernel does not report per socket. ListenDrops
// is among it: the socket's own drop count (SocketStats.Drops) counts
// other things too.
const kernelOnly = backlog.StatHalfOpen | backlog.StatSYNs | backlog.StatQueued | backlog.StatRefused |
	backlog.StatIgnored | backlog.StatEvicted | backlog.StatExpired | backlog.StatDeferredRefusals |
	backlog.StatListenOverflows | backlog.StatListenDrops | backlog.StatTCPReqQFullDrop |
	backlog.StatTCPReqQFullDoCookies | backlog.StatSyncookiesSent | backlog.StatSyncookiesRecv

func (s *socketListener) KernelStats() (Stats, error) {
	q, err := s.sys.queue()
	if err == nil {
		s.note(q)
	} else {
		q = queueState{Backlog: int(s.stored.Load())}
		err = s.opError("getsockopt", err)
	}
	st := Stats{SocketStats: SocketStats{
		KernelBacklog: q.Backlog,
		KernelLen:     q.Len,
		ReadBack:      q.ReadBack,
		Drops:         q.Drops,
		Shed:          s.shed.Load(),
		Starved:       s.starved.Load(),
		Inode:         s.sys.inode,
	}}
	st.Requested = int(s.requested.Load())
	st.Backlog = q.Backlog
	st.Capacity = capacityOf(q.Backlog)
	st.Len = q.Len
	st.Accepted = s.accepted.Load()
	st.Reset = st.Shed
	st.Unobserved = kernelOnly
	if n, ok := s.halfOpen(); ok {
		st.HalfOpen = n
		st.Unobserved &^= backlog.StatHalfOpen
	}
	if !q.ReadBack {
		st.Unobserved |= backlog.StatLen
	}
	return st, err
}

// halfOpenEvery is how often KernelStats reads the SYN queue again.
const halfOpenEvery = time.Second

// halfOpen counts the socket's request sockets (handshakes waiting for
// their final ACK) through sock_diag, where the kernel can tell them
// apart: on Linux, for a TCP socket alone on its address, read from the
// namespace of the calling thread. The reading walks the kernel's whole
// established hash (readListenTable says what that costs), so it is kept
// and read again only once halfOpenEvery has passed.
func (s *socketListener) halfOpen() (int, bool) {
	a, ok := s.ln.Addr().(*net.TCPAddr)
	if !ok || s.sys.inode == 0 || s.sys.family == 0 {
		return 0, false
	}
	s.halfMu.Lock()
	defer s.halfMu.Unlock()
	if now := time.Now(); s.halfAt.IsZero() || now.Sub(s.halfAt) >= halfOpenEvery {
		s.halfN, s.halfOK = halfOpen(s.sys.inode, s.sys.family, uint16(a.Port))
		s.halfAt = now
	}
	return s.halfN, s.halfOK
}

// note records a read-back.
func (s *socketListener) note(q queueState) { s.stored.Store(int64(q.Backlog)) }

// warnIfClamped logs one warning when the system stored less than was asked
// for, as Redis does when tcp-backlog exceeds somaxconn.
func (s *socketListener) warnIfClamped(requested, stored int) {
	if !clamped(requested, stored) {
		return
	}
	attrs := []any{
		slog.String("addr", s.Addr().String()),
		slog.Int("requested", requested),
		slog.Int("stored", stored),
	}
	msg := "listen backlog lower than requested"
	if limit, err := Somaxconn(); err == nil {
		attrs = append(attrs, slog.Int("somaxconn", limit))
		msg += "; raise " + somaxconnName
	}
	s.logger.Warn(msg, attrs...)
}

func (s *socketListener) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: s.network, Addr: s.ln.Addr(), Err: err}
}

// accept takes the next connection from the kernel, riding out descriptor
// exhaustion. userDeadline says whether the deadline set with SetDeadline
// bounds the wait (it does not for the emulation goroutine).
func (s *socketListener) accept(userDeadline bool) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err == nil {
			s.accepted.Add(1)
			if delay > 0 {
				s.descriptors(true)
			}
			return c, nil
		}
		if !starved(err) {
			return nil, err
		}
		s.starved.Add(1)
		s.descriptors(false)
		if s.shedLoad && noDescriptors(err) {
			c, shed, serr := s.sys.shed(s.ln, shedPoll)
			switch {
			case c != nil:
				s.accepted.Add(1)
				s.descriptors(true)
				return c, nil
			case shed:
				s.shed.Add(1)
				delay = 0
				continue
			case errors.Is(serr, errNoClient):
				// The poll was the wait.
				if err := s.stopped(userDeadline); err != nil {
					return nil, err
				}
				delay = 0
				continue
			case serr != nil && !errors.Is(serr, errNoSpare):
				return nil, serr
			}
		}
		delay = nextDelay(delay)
		if err := s.pause(delay, userDeadline); err != nil {
			return nil, err
		}
	}
}

func (s *socketListener) descriptors(available bool) {
	if s.onDescriptors != nil {
		s.onDescriptors(available)
	}
}

// Descriptor-exhaustion back-off: from minDelay, doubling, up to maxDelay.
// With ShedLoad, the listener instead polls its queue for a client to reset
// for up to shedPoll at a time, so that one is reset within that.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
	shedPoll = 50 * time.Millisecond
)

func nextDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minDelay
	}
	return min(2*d, maxDelay)
}

// pause waits d, or until Close or, when userDeadline is set, the deadline.
func (s *socketListener) pause(d time.Duration, userDeadline bool) error {
	t := time.NewTimer(d)
	defer t.Stop()
	var expired <-chan struct{}
	if userDeadline {
		expired = s.deadline.Done()
	}
	select {
	case <-t.C:
		return nil
	case <-s.done:
		return s.opError("accept", net.ErrClosed)
	case <-expired:
		return s.opError("accept", os.ErrDeadlineExceeded)
	}
}

// stopped returns the error Accept ends with if Close was called or, when
// userDeadline is set, the deadline has passed; nil otherwise.
func (s *socketListener) stopped(userDeadline bool) error {
	select {
	case <-s.done:
		return s.opError("accept", net.ErrClosed)
	default:
	}
	if userDeadline {
		select {
		case <-s.deadline.Done():
			return s.opError("accept", os.ErrDeadlineExceeded)
		default:
		}
	}
	return nil
}

// isClosed reports whether Close was called.
func (s *socketListener) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
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
// could be held; errNoClient that no client came to be shed.
var (
	errNoSpare  = errors.New("no spare descriptor")
	errNoClient = errors.New("no client waiting")
)

// queueState is one read-back of the kernel's queue.
type queueState struct {
	Len, Backlog int
	Drops        uint64
	// ReadBack is false when Backlog is computed rather than read, and Len
	// unknown.
	ReadBack bool
	// HaveDrops says that Drops was read.
	HaveDrops bool
}
