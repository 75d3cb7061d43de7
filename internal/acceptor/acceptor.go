// Package acceptor is the accept side of an emulated listen queue, written
// once for every transport that keeps its pending connections in a
// backlog.Queue: the kernel emulation and the netstack listener.
//
// An Acceptor owns what a listener does between the queue and the
// application: Accept waits for a queued connection, honours the deadline
// and Close, and tells the queue when the accepting thread yields (the KB
// 295079 deferred slot); SetBacklog calls listen() again and resets the
// connections it gives up; Close resets what waits. Errors are the ones
// net.TCPListener gives: *net.OpError wrapping net.ErrClosed,
// os.ErrDeadlineExceeded, or syscall.EINVAL for a listen() again that the
// personality makes fail.
package acceptor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/deadline"
)

// Config says how an Acceptor reaches its transport.
type Config[T comparable] struct {
	// Queue holds the pending connections.
	Queue *backlog.Queue[T]
	// Network and Addr name the listener in errors.
	Network string
	Addr    net.Addr
	// Take turns a connection taken from the queue into the one Accept
	// returns, waiting if the transport has not handed it over yet. It
	// returns false when the connection died meanwhile, or when closed is
	// closed first; Accept then goes on to the next. Nil returns the
	// connection itself, which must then be a net.Conn.
	Take func(t T, closed <-chan struct{}) (net.Conn, bool)
	// Reset ends a connection the queue gave up: the excess of listen()
	// again, or whatever waits at Close (closing set).
	Reset func(t T, closing bool)
	// Handover, if set, says that the transport hands a queued
	// connection over some time after the queue took it, and calls Wake
	// when it does (and when one dies): Accept then waits for Wake rather
	// than for the queue, so that it is not woken only to wait again in
	// Take.
	Handover bool
}

// An Acceptor is the accept side of one listener. Its methods are safe for
// use by many goroutines at once.
type Acceptor[T comparable] struct {
	cfg Config[T]
	q   *backlog.Queue[T]
	// yield, for a personality with the KB 295079 defect, whose accept()
	// slots come back only when the accepting thread yields, is how long
	// that thread runs before it is taken to be pre-empted; 0 otherwise.
	yield  time.Duration
	closed chan struct{}
	// ready wakes Accept: the queue's Ready, or handed, which Wake
	// signals, under Config.Handover.
	ready  <-chan struct{}
	handed chan struct{}

	deadline deadline.Deadline

	mu        sync.Mutex
	isClosed  bool
	yieldTime *time.Timer
}

// New returns an acceptor for cfg.Queue.
func New[T comparable](cfg Config[T]) *Acceptor[T] {
	a := &Acceptor[T]{cfg: cfg, q: cfg.Queue, closed: make(chan struct{}), ready: cfg.Queue.Ready()}
	if cfg.Handover {
		a.handed = make(chan struct{}, 1)
		a.ready = a.handed
	}
	if p := cfg.Queue.Personality(); p.DeferredSlotReturn {
		a.yield = p.YieldAfter()
	}
	return a
}

// Queue returns the queue behind the acceptor.
func (a *Acceptor[T]) Queue() *backlog.Queue[T] { return a.q }

// Closed returns a channel that is closed once Close has been called.
func (a *Acceptor[T]) Closed() <-chan struct{} { return a.closed }

// Accept waits for and returns the oldest queued connection. As with
// net.TCPListener, a deadline that has passed fails it even while
// connections wait, and Close fails it whatever the deadline.
//
// Before it waits, it tells the queue that the accepting thread yields;
// after it returns a connection, the thread is taken to be pre-empted one
// quantum later unless it has come back by then. Under the KB 295079 defect
// those are the moments the slots freed by accept() come back.
func (a *Acceptor[T]) Accept() (net.Conn, error) {
	for {
		// Closed first: it wins over a deadline that has passed too.
		select {
		case <-a.closed:
			return nil, a.opError("accept", net.ErrClosed)
		default:
		}
		expired := a.deadline.Done()
		select {
		case <-expired:
			return nil, a.opError("accept", os.ErrDeadlineExceeded)
		default:
		}
		if t, ok := a.q.Accept(); ok {
			if a.handed != nil && a.q.Len() > 0 {
				a.Wake() // for another Accept, as the queue does
			}
			c, ok := a.take(t)
			if !ok {
				continue
			}
			a.armYield()
			return c, nil
		}
		if a.yield != 0 {
			a.q.Yield() // only the KB 295079 defect owes slots to a yield
		}
		select {
		case <-a.ready:
		case <-a.closed:
		case <-expired:
		}
	}
}

// Wake wakes an Accept waiting for a connection, under Config.Handover:
// the transport has handed one over, or one died. It never blocks; a wake
// with no Accept waiting is kept for the next.
func (a *Acceptor[T]) Wake() {
	select {
	case a.handed <- struct{}{}:
	default:
	}
}

func (a *Acceptor[T]) take(t T) (net.Conn, bool) {
	if a.cfg.Take != nil {
		return a.cfg.Take(t, a.closed)
	}
	return any(t).(net.Conn), true
}

// armYield pre-empts the accepting thread one quantum after an accept, for
// personalities with the KB 295079 defect.
func (a *Acceptor[T]) armYield() {
	if a.yield == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.isClosed {
		return
	}
	if a.yieldTime == nil {
		a.yieldTime = time.AfterFunc(a.yield, a.q.Yield)
	} else {
		a.yieldTime.Reset(a.yield)
	}
}

// SetDeadline sets the time after which Accept fails with an error wrapping
// os.ErrDeadlineExceeded. The zero time means no deadline.
func (a *Acceptor[T]) SetDeadline(t time.Time) error {
	a.deadline.Set(t)
	return nil
}

// SetBacklog calls listen() again with n (0 and backlog.ZeroBacklog both
// mean 0) under the personality's Relisten
// rule and resets the connections beyond the new backlog that the rule
// gives up. Where the rule makes listen() fail, the error wraps both
// backlog.ErrRelisten and syscall.EINVAL, as gVisor fails.
func (a *Acceptor[T]) SetBacklog(n int) error {
	if n == backlog.ZeroBacklog {
		n = 0
	}
	reset, err := a.q.Listen(n)
	for _, t := range reset {
		a.cfg.Reset(t, false)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backlog.ErrClosed):
		return a.opError("listen", net.ErrClosed)
	case errors.Is(err, backlog.ErrRelisten):
		return a.opError("listen", fmt.Errorf("%w: %w", os.NewSyscallError("listen", syscall.EINVAL), err))
	}
	return a.opError("listen", err)
}

// Close stops accepting: a blocked Accept returns, the queue refuses what
// arrives from now on, and every connection it held is reset. Only the first
// call does anything; later ones return an error wrapping net.ErrClosed,
// as net.TCPListener's do.
func (a *Acceptor[T]) Close() error {
	a.mu.Lock()
	if a.isClosed {
		a.mu.Unlock()
		return a.opError("close", net.ErrClosed)
	}
	a.isClosed = true
	close(a.closed)
	if a.yieldTime != nil {
		a.yieldTime.Stop()
	}
	a.mu.Unlock()
	a.deadline.Stop()
	for _, t := range a.q.Close() {
		a.cfg.Reset(t, true)
	}
	return nil
}

func (a *Acceptor[T]) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: a.cfg.Network, Addr: a.cfg.Addr, Err: err}
}
