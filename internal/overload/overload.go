// Package overload applies a backlog.Overload policy at a listener's
// Accept: it reads how long each connection the queue gives up waited,
// asks a backlog.Shedder whether to serve or reset it, and, serving newest
// first, keeps the connections it has taken but not yet served in a stack
// of its own. Both transports wrap their Accept with it: package kernel
// around the socket, package netstack around its acceptor.
//
// Without LIFO every connection goes straight from the transport's Accept
// to the caller, or to a reset: no goroutine, no hand-off, nothing held.
// With LIFO, while a queue forms, a connection taken from the transport is
// held, every other one waiting is taken too (Config.Poll, which never
// blocks), and the newest is served; the callers that find nothing held
// while another is already in the transport's Accept wait for what it
// brings. The package starts no goroutine.
package overload

import (
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/deadline"
)

// Config says how a Listener reaches the queue it governs.
type Config struct {
	// Policy is the policy; it must be enabled and valid.
	Policy backlog.Overload
	// Accept takes the oldest waiting connection, blocking until there is
	// one, the listener closes or its deadline passes, as
	// net.Listener.Accept does.
	Accept func() (net.Conn, error)
	// Poll takes the oldest waiting connection if there is one, without
	// blocking. Nil means the transport cannot, and Policy.LIFO is then
	// ignored (the transport refuses such a policy before it gets here).
	Poll func() (net.Conn, bool)
	// Wait returns how long c waited in the queue before Accept or Poll
	// took it, and false if the transport could not tell; such a
	// connection is served.
	Wait func(c net.Conn) (time.Duration, bool)
	// Reset ends c with a reset (RST), for a connection shed.
	Reset func(c net.Conn)
	// Observe records the wait of a connection served (Stats.QueueWait).
	Observe func(time.Duration)
	// SetBacklog calls listen() again, for Policy.SizeBacklog; Requested
	// is the backlog the application asked for at the start. Nil
	// SetBacklog leaves the backlog alone.
	SetBacklog func(n int) error
	Requested  int
	// Network and Addr name the listener in errors.
	Network string
	Addr    net.Addr
	// Now is the clock the policy runs on; nil means time.Now. Tests
	// replace it.
	Now func() time.Time
}

// maxHeld bounds the connections a Listener holds while serving newest
// first; beyond it, the rest stay in the transport's queue.
const maxHeld = 1024

// A Listener applies the policy to one listener's Accept. Its methods are
// safe for use by many goroutines at once.
type Listener struct {
	cfg      Config
	now      func() time.Time
	closed   chan struct{}
	deadline deadline.Deadline
	overdue  atomic.Uint64

	mu      sync.Mutex
	shedder *backlog.Shedder
	// held are the connections taken but not yet served or reset, in the
	// order they were taken: oldest first.
	held []heldConn
	// pullers counts the callers in cfg.Accept; polling says that one is
	// taking what else waits.
	pullers int
	polling bool
	// waiters counts the callers waiting on wake.
	waiters int
	// wake is closed, and replaced, whenever held gains connections or a
	// caller returns from cfg.Accept, for the callers waiting for either.
	wake     chan struct{}
	isClosed bool
	// requested is the backlog the application asked for last.
	requested int

	resizeMu sync.Mutex // orders the calls of listen() again
}

// heldConn is a connection taken from the queue, with the moment it
// entered it.
type heldConn struct {
	c     net.Conn
	since time.Time
}

// New returns a Listener for cfg.
func New(cfg Config) *Listener {
	l := &Listener{
		cfg:       cfg,
		now:       cfg.Now,
		closed:    make(chan struct{}),
		shedder:   backlog.NewShedder(cfg.Policy),
		wake:      make(chan struct{}),
		requested: cfg.Requested,
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l
}

// Accept returns the next connection to serve: the oldest, or while a
// queue forms under LIFO the newest, after resetting every connection the
// policy sheds. It fails as the transport's Accept does, and, as
// net.TCPListener, fails once the deadline has passed even while
// connections are held.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		if err := l.stopped(); err != nil {
			return nil, err
		}
		l.mu.Lock()
		now := l.now()
		if l.cfg.Poll != nil && !l.polling && l.shedder.LIFO(now) {
			// Newest first: what waits in the transport's queue is newer
			// than anything held.
			l.polling = true
			l.mu.Unlock()
			l.pollAll()
			l.mu.Lock()
			now = l.now()
		}
		c, shed := l.fromHeldLocked(now)
		if c != nil {
			l.mu.Unlock()
			l.reset(shed)
			l.resize(now)
			return c, nil
		}
		if l.pullers > 0 && l.cfg.Poll != nil && l.shedder.LIFO(now) {
			// Whatever comes next comes through the caller already in
			// Accept, and it holds it for everyone: wait for it.
			wake, expired := l.wake, l.deadline.Done()
			l.waiters++
			l.mu.Unlock()
			l.reset(shed)
			select {
			case <-wake:
			case <-l.closed:
			case <-expired:
			}
			l.mu.Lock()
			l.waiters--
			l.mu.Unlock()
			continue
		}
		l.pullers++
		l.mu.Unlock()
		l.reset(shed)

		c, err := l.cfg.Accept()
		var w time.Duration
		known := false
		if err == nil {
			w, known = l.cfg.Wait(c)
		}
		l.mu.Lock()
		l.pullers--
		l.signalLocked()
		if err != nil {
			l.mu.Unlock()
			return nil, err
		}
		if l.isClosed {
			l.mu.Unlock()
			l.cfg.Reset(c)
			return nil, l.opError(net.ErrClosed)
		}
		now = l.now()
		if !known {
			l.shedder.Served(now)
			l.mu.Unlock()
			l.resize(now)
			return c, nil
		}
		if l.cfg.Poll != nil && (len(l.held) > 0 || l.shedder.LIFO(now)) {
			// Newest first: hold it with everything else waiting, and
			// choose among them.
			l.holdLocked(heldConn{c, now.Add(-w)})
			poll := !l.polling
			l.polling = true
			l.mu.Unlock()
			if poll {
				l.pollAll()
			}
			continue
		}
		if l.shedder.Decide(now, w) == backlog.Shed {
			l.mu.Unlock()
			l.overdue.Add(1)
			l.cfg.Reset(c)
			continue
		}
		l.shedder.Served(now)
		l.mu.Unlock()
		l.cfg.Observe(w)
		l.resize(now)
		return c, nil
	}
}

// fromHeldLocked resets the held connections the policy sheds, oldest
// first, and takes the one to serve: the newest while the policy serves
// newest first, the oldest otherwise. It returns the shed connections for
// the caller to reset once the lock is released.
func (l *Listener) fromHeldLocked(now time.Time) (net.Conn, []net.Conn) {
	var shed []net.Conn
	for len(l.held) > 0 && l.shedder.Decide(now, now.Sub(l.held[0].since)) == backlog.Shed {
		shed = append(shed, l.held[0].c)
		l.held[0] = heldConn{}
		l.held = l.held[1:]
	}
	l.overdue.Add(uint64(len(shed)))
	if len(l.held) == 0 {
		return nil, shed
	}
	i := 0
	if l.shedder.LIFO(now) {
		i = len(l.held) - 1
	}
	h := l.held[i]
	l.held = slices.Delete(l.held, i, i+1)
	l.shedder.Served(now)
	l.cfg.Observe(now.Sub(h.since))
	return h.c, shed
}

// holdLocked adds a connection to the held ones. The transport's queue
// gives them up oldest first, so the order they are taken in is the order
// they entered it: exact, where the waits the transport reads are rounded
// (to timer ticks on Linux) and cannot order connections that came within
// one.
func (l *Listener) holdLocked(h heldConn) {
	l.held = append(l.held, h)
	l.signalLocked()
}

// pollAll takes every connection waiting in the transport's queue, up to
// maxHeld held, and holds them.
func (l *Listener) pollAll() {
	defer func() {
		l.mu.Lock()
		l.polling = false
		l.mu.Unlock()
	}()
	for {
		l.mu.Lock()
		full := len(l.held) >= maxHeld || l.isClosed
		l.mu.Unlock()
		if full {
			return
		}
		c, ok := l.cfg.Poll()
		if !ok {
			return
		}
		w, known := l.cfg.Wait(c)
		l.mu.Lock()
		if l.isClosed {
			l.mu.Unlock()
			l.cfg.Reset(c)
			return
		}
		now := l.now()
		if !known {
			w = 0
		}
		l.holdLocked(heldConn{c, now.Add(-w)})
		l.mu.Unlock()
	}
}

// signalLocked wakes the callers waiting for a connection, if any.
func (l *Listener) signalLocked() {
	if l.waiters == 0 {
		return
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// reset resets the connections shed.
func (l *Listener) reset(shed []net.Conn) {
	for _, c := range shed {
		l.cfg.Reset(c)
	}
}

// resize calls listen() again if the policy sizes the backlog and the
// size it wants has changed.
func (l *Listener) resize(now time.Time) {
	if l.cfg.SetBacklog == nil || !l.cfg.Policy.SizeBacklog {
		return
	}
	l.mu.Lock()
	_, change := l.shedder.Backlog(now, l.requested)
	l.mu.Unlock()
	if !change {
		return
	}
	// Under resizeMu, apply what the policy wants now, so that two
	// changes decided one after the other are not applied out of order.
	l.resizeMu.Lock()
	defer l.resizeMu.Unlock()
	l.mu.Lock()
	n, closed := l.applicableLocked()
	l.mu.Unlock()
	if !closed {
		l.cfg.SetBacklog(n)
	}
}

// applicableLocked returns the backlog the policy wants now.
func (l *Listener) applicableLocked() (n int, closed bool) {
	if l.isClosed {
		return 0, true
	}
	if sized, to := l.shedder.Sized(); sized {
		return to, false
	}
	return l.requested, false
}

// SetBacklog records n as the application's backlog, the one restored
// once the policy no longer sizes it, and calls listen() again with it
// through set.
func (l *Listener) SetBacklog(n int, set func(int) error) error {
	l.resizeMu.Lock()
	defer l.resizeMu.Unlock()
	if err := set(n); err != nil {
		return err
	}
	if n == backlog.ZeroBacklog {
		n = 0
	}
	l.mu.Lock()
	l.requested = n
	l.mu.Unlock()
	return nil
}

// SetClock replaces the clock the policy runs on, for tests that drive
// it with times of their own; call it before the first Accept.
func (l *Listener) SetClock(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}

// SetDeadline sets the deadline for the callers waiting for a held
// connection; the transport's own Accept has it set separately.
func (l *Listener) SetDeadline(t time.Time) { l.deadline.Set(t) }

// Overdue returns how many connections were reset for waiting too long.
func (l *Listener) Overdue() uint64 { return l.overdue.Load() }

// Close resets the connections held, wakes the callers waiting for one,
// and makes every later Accept fail; the transport's listener is closed
// separately. A second Close does nothing.
func (l *Listener) Close() {
	l.mu.Lock()
	if l.isClosed {
		l.mu.Unlock()
		return
	}
	l.isClosed = true
	held := l.held
	l.held = nil
	close(l.closed)
	l.deadline.Stop()
	l.mu.Unlock()
	for _, h := range held {
		l.cfg.Reset(h.c)
	}
}

// stopped returns the error Accept fails with after Close or once the
// deadline has passed, or nil.
func (l *Listener) stopped() error {
	select {
	case <-l.closed:
		return l.opError(net.ErrClosed)
	default:
	}
	select {
	case <-l.deadline.Done():
		return l.opError(os.ErrDeadlineExceeded)
	default:
	}
	return nil
}

func (l *Listener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: l.cfg.Network, Addr: l.cfg.Addr, Err: err}
}
