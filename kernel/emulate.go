package kernel

import (
	"net"
	"os"
	"sync"
	"time"

	"github.com/backlog-dev/backlog"
)

// emulation is a personality's queue in front of the kernel's: a goroutine
// takes every connection from the kernel and offers it to q.
type emulation struct {
	q  *backlog.Queue[net.Conn]
	wg sync.WaitGroup
}

// emulate is the emulation goroutine: it accepts from the kernel until the
// listener closes, offers each connection to the queue, and resets what the
// personality does not queue. The handshake is already complete, so Offer
// (SYN and final ACK in one step) is the only event the queue sees.
func (l *Listener) emulate() {
	defer l.emu.wg.Done()
	var delay time.Duration
	for {
		c, err := l.acceptKernel(false)
		if err != nil {
			if l.isClosed() {
				return
			}
			// An unexpected failure: never spin on it.
			delay = nextDelay(delay)
			if l.pause(delay, false) != nil {
				return
			}
			continue
		}
		delay = 0
		o, evicted, ok := l.emu.q.Offer(c)
		if ok {
			abort(evicted)
		}
		if o != backlog.Queued {
			abort(c)
		}
	}
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// acceptQueued takes the oldest connection from the emulated queue, waiting
// for one. Before it waits it tells the queue that the accepting thread
// yields, which is when a personality with the KB 295079 defect gives back
// the slots freed by earlier accepts.
func (l *Listener) acceptQueued() (net.Conn, error) {
	q := l.emu.q
	for {
		expired := l.deadline.Done()
		select {
		case <-l.done:
			return nil, l.opError("accept", net.ErrClosed)
		case <-expired:
			return nil, l.opError("accept", os.ErrDeadlineExceeded)
		default:
		}
		if c, ok := q.Accept(); ok {
			return c, nil
		}
		q.Yield()
		select {
		case <-q.Ready():
		case <-l.done:
			return nil, l.opError("accept", net.ErrClosed)
		case <-expired:
			return nil, l.opError("accept", os.ErrDeadlineExceeded)
		}
	}
}
