package kernel

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/acceptor"
)

// emulator is a personality's queue in front of the kernel's: it wraps the
// plain listener, takes every connection from it as soon as it arrives, and
// offers each to the queue. The accept side is the acceptor package
// netstack uses too. With a SYN shaper (at, set on Linux when the shaper
// could start) the queue also hears of every SYN before the kernel does and
// decides it; without one, the handshake is already complete when the
// queue hears of a connection.
type emulator struct {
	sock *socketListener
	q    *backlog.Queue[*pending]
	acc  *acceptor.Acceptor[*pending]
	wg   sync.WaitGroup

	mode     Emulation
	fallback string
	at       *synSide
}

// pending is one connection attempt in the emulated queue: the kernel's
// connection once it has one, and the addresses that name it at the SYN.
type pending struct {
	conn          net.Conn // nil while the handshake is under way
	remote, local netip.AddrPort
	at            time.Time // when its SYN was decided
	gone          bool      // no longer held half-open by the shaper
	cookie        bool      // answered with a SYN cookie
}

// emulate starts the emulation on s, whose queue must be empty and never
// accepted from by anyone else. mode says whether to decide at the SYN:
// under EmulateAuto a shaper that cannot start is reported in one log line
// and emulation falls back to after accept(); under EmulateAtSYN it is an
// error.
func emulate(s *socketListener, q *backlog.Queue[*pending], mode Emulation) (*emulator, error) {
	e := &emulator{sock: s, q: q, mode: EmulateAfterAccept}
	e.acc = acceptor.New(acceptor.Config[*pending]{
		Queue:   q,
		Network: s.network,
		Addr:    s.Addr(),
		Take:    e.take,
		Reset:   func(p *pending, _ bool) { abortPending(p) },
	})
	if q.Personality().SlotsNeedDescriptors {
		s.onDescriptors = q.SetDescriptors
	}
	if mode != EmulateAfterAccept {
		at, err := startAtSYN(e)
		switch {
		case err == nil:
			e.at, e.mode = at, EmulateAtSYN
		case mode == EmulateAtSYN:
			return nil, err
		default:
			e.fallback = err.Error()
			s.logger.Info("personality emulated after accept(), not at the SYN",
				slog.String("addr", s.Addr().String()),
				slog.String("personality", q.Personality().String()),
				slog.String("reason", e.fallback))
		}
	}
	e.wg.Add(1)
	if e.at != nil {
		go e.runAtSYN()
	} else {
		go e.run()
	}
	return e, nil
}

func abortPending(p *pending) {
	if p.conn != nil {
		abort(p.conn)
	}
}

// take hands a queued connection to Accept. With a shaper, the slot it
// frees may let in a connection whose final ACK found the queue full.
func (e *emulator) take(p *pending, _ <-chan struct{}) (net.Conn, bool) {
	if e.at != nil {
		e.at.freed()
	}
	return p.conn, p.conn != nil
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
		p := &pending{conn: c}
		o, evicted, ok := e.q.Offer(p)
		if ok {
			abortPending(evicted)
		}
		if o != backlog.Queued {
			abort(c)
		}
	}
}

func (e *emulator) Accept() (net.Conn, error) { return e.acc.Accept() }

// Close stops the shaper, resets what the queue holds, closes the socket
// and waits for the emulation goroutine.
func (e *emulator) Close() error {
	var serr error
	if e.at != nil {
		serr = e.at.close()
	}
	if err := e.acc.Close(); err != nil {
		return err
	}
	err := e.sock.Close()
	if e.at != nil {
		e.at.stop()
	}
	e.wg.Wait()
	if e.at != nil {
		e.at.release()
	}
	if err == nil {
		err = serr
	}
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

// emulatedOnly is what an emulated queue cannot see after accept(): the
// kernel completes every handshake before the queue hears of it.
const emulatedOnly = backlog.StatHalfOpen | backlog.StatSYNs | backlog.StatEvicted | backlog.StatExpired |
	backlog.StatTCPReqQFullDrop | backlog.StatTCPReqQFullDoCookies | backlog.StatSyncookiesSent | backlog.StatSyncookiesRecv

// KernelStats returns the emulated queue's statistics, with the sheds
// added, beside the kernel queue's own figures (its sk_drops in Drops). At
// the SYN the queue sees every SYN and every handshake, and nothing is
// marked unobserved.
func (e *emulator) KernelStats() (Stats, error) {
	s, err := e.sock.KernelStats()
	s.Stats = e.q.Stats()
	s.Reset += s.Shed
	s.Unobserved = emulatedOnly
	if e.at != nil {
		s.Unobserved = 0
	}
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
