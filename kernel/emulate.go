package kernel

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/acceptor"
)

// emulator is a personality's queue in front of the kernel's: it wraps the
// plain listener, takes every connection from it as soon as it arrives, and
// offers each to the queue. The accept side is the acceptor package
// netstack uses too.
type emulator struct {
	sock *socketListener
	q    *backlog.Queue[net.Conn]
	acc  *acceptor.Acceptor[net.Conn]
	wg   sync.WaitGroup
}

// emulate starts the emulation on s, whose queue must be empty and never
// accepted from by anyone else.
func emulate(s *socketListener, q *backlog.Queue[net.Conn]) *emulator {
	e := &emulator{sock: s, q: q}
	e.acc = acceptor.New(acceptor.Config[net.Conn]{
		Queue:   q,
		Network: s.network,
		Addr:    s.Addr(),
		Reset:   func(c net.Conn, _ bool) { abort(c) },
	})
	if q.Personality().SlotsNeedDescriptors {
		s.onDescriptors = q.SetDescriptors
	}
	e.wg.Add(1)
	go e.run()
	return e
}

// run is the emulation goroutine: it accepts from the kernel until the
// listener closes, offers each connection to the queue, and resets what the
// personality does not queue. The handshake is already complete, so Offer
// (SYN and final ACK in one step) is the only event the queue sees.
func (e *emulator) run() {
	defer e.wg.Done()
	var delay time.Duration
	for {
		c, err := e.sock.accept(false)
		if err != nil {
			if e.sock.isClosed() {
				return
			}
			// An unexpected failure: never spin on it.
			delay = nextDelay(delay)
			if e.sock.pause(delay, false) != nil {
				return
			}
			continue
		}
		delay = 0
		o, evicted, ok := e.q.Offer(c)
		if ok {
			abort(evicted)
		}
		if o != backlog.Queued {
			abort(c)
		}
	}
}

func (e *emulator) Accept() (net.Conn, error) { return e.acc.Accept() }

// Close resets what the queue holds, closes the socket and waits for the
// emulation goroutine.
func (e *emulator) Close() error {
	if err := e.acc.Close(); err != nil {
		return err
	}
	err := e.sock.Close()
	e.wg.Wait()
	return err
}

func (e *emulator) SetDeadline(t time.Time) error { return e.acc.SetDeadline(t) }

func (e *emulator) Backlog() int { return e.q.Backlog() }

func (e *emulator) SetBacklog(n int) error {
	if err := e.acc.SetBacklog(n); err != nil {
		return err
	}
	e.warnIfClamped(n, e.q.Backlog())
	return nil
}

// emulatedOnly is what an emulated queue cannot see: the kernel completes
// every handshake before the queue hears of it.
const emulatedOnly = backlog.StatHalfOpen | backlog.StatSYNs | backlog.StatEvicted | backlog.StatExpired |
	backlog.StatTCPReqQFullDrop | backlog.StatTCPReqQFullDoCookies | backlog.StatSyncookiesSent | backlog.StatSyncookiesRecv

// KernelStats returns the emulated queue's statistics, with the sheds
// added, beside the kernel queue's own figures (its sk_drops in Drops).
func (e *emulator) KernelStats() (Stats, error) {
	s, err := e.sock.KernelStats()
	s.Stats = e.q.Stats()
	s.Reset += s.Shed
	s.Unobserved = emulatedOnly
	return s, err
}

// warnIfClamped logs one warning when the emulated system stored less than
// was asked for.
func (e *emulator) warnIfClamped(requested, stored int) {
	if !clamped(requested, stored) {
		return
	}
	e.sock.logger.Warn("listen backlog lower than requested",
		slog.String("addr", e.sock.Addr().String()),
		slog.Int("requested", requested),
		slog.Int("stored", stored),
		slog.String("personality", e.q.Personality().String()))
}
