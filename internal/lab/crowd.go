package lab

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// A crowd is a set of clients connecting to one place, one after another,
// and what each met: every client ends in exactly one of connected,
// refused, timed out, failed and unfinished; a connected one may then be
// reset.
type crowd struct {
	dial    func(ctx context.Context) (net.Conn, error)
	n       int
	arrival time.Duration
	timeout time.Duration
	// dropped, where the server counts the SYNs it drops without an
	// answer, reads that count; nil where it cannot (see settle).
	dropped func() uint64

	wg       sync.WaitGroup
	mu       sync.Mutex
	counts   Counts // Accepted stays zero: the crowd cannot see the server
	resolved int
	times    []time.Duration
	errs     map[string]int
	conns    []net.Conn
	// finishing is set once finish has taken the connections to close.
	finishing bool
}

func newCrowd(n int, arrival, timeout time.Duration, dial func(context.Context) (net.Conn, error)) *crowd {
	c := &crowd{dial: dial, n: n, arrival: arrival, timeout: timeout, errs: map[string]int{}}
	c.counts.Clients = n
	return c
}

// start launches the clients, arrival apart; they stop when ctx ends. A
// client that ctx stops before its connect has an answer is unfinished,
// not timed out: it was not given its time.
func (c *crowd) start(ctx context.Context) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.launch(ctx) }()
}

// launch starts one client after another, each arrival after the one
// before by the clock and, where the crowd can see the server's drops,
// not before the server has dealt with the one before (settle).
func (c *crowd) launch(ctx context.Context) {
	t0 := time.Now()
	var prev <-chan struct{}
	var dropped uint64
	for i := 0; i < c.n; i++ {
		if !sleep(ctx, time.Until(t0.Add(time.Duration(i)*c.arrival))) || !c.settle(ctx, prev, dropped) {
			for ; i < c.n; i++ {
				c.record(0, errUnfinished)
			}
			return
		}
		if c.dropped != nil {
			dropped = c.dropped()
		}
		done := make(chan struct{})
		c.wg.Add(1)
		go func() { defer c.wg.Done(); c.client(ctx, done) }()
		prev = done
	}
}

// settle waits until the client before (done closes when its connect has
// returned) has been dealt with by the server: answered, so that its
// final ACK is on the wire ahead of the next SYN, or dropped, which the
// server's count of drops shows as it moves past dropped. Spaced by the
// clock alone, a machine too busy to run a client in time lets its
// handshake overlap the next one's, and one more client than the rule
// allows can finish a handshake (the listener drops its final ACK). A
// burst (arrival 0) is not settled: overlap is what it is for. The wait
// ends at the latest when the client's connect times out. An earlier
// client's retried SYN dropped meanwhile ends it early, which leaves the
// clock alone in charge, as without settling.
func (c *crowd) settle(ctx context.Context, done <-chan struct{}, dropped uint64) bool {
	if done == nil || c.dropped == nil || c.arrival == 0 {
		return ctx.Err() == nil
	}
	poll := time.NewTicker(settlePoll)
	defer poll.Stop()
	for {
		select {
		case <-done:
			return true
		case <-ctx.Done():
			return false
		default:
		}
		if c.dropped() != dropped {
			return true
		}
		select {
		case <-done:
			return true
		case <-ctx.Done():
			return false
		case <-poll.C:
		}
	}
}

// settlePoll is how often settle looks at the server's count of drops.
const settlePoll = 100 * time.Microsecond

// errUnfinished marks a connect that was stopped, or never started,
// because the run ended first.
var errUnfinished = errors.New("unfinished")

func (c *crowd) client(ctx context.Context, done chan<- struct{}) {
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	t0 := time.Now()
	conn, err := c.dial(dctx)
	took := time.Since(t0)
	close(done)
	if err != nil && ctx.Err() != nil && !errors.Is(dctx.Err(), context.DeadlineExceeded) {
		// Stopped from outside before the client's own deadline.
		err = errUnfinished
	}
	c.record(took, err)
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.finishing {
		// Connected just as the run ended, after finish had closed the
		// others: a read would wait for a server that closes only once
		// finish has returned.
		c.mu.Unlock()
		conn.Close()
		return
	}
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	// The client waits; a reset shows as an error on read.
	_, err = conn.Read(make([]byte, 1))
	if isReset(err) && ctx.Err() == nil {
		c.mu.Lock()
		c.counts.Reset++
		c.mu.Unlock()
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

// record counts the outcome of one client's connect. A reset during
// connect() (the handshake completed, then a reset came before connect
// returned) counts as connected and reset, with no connect time.
func (c *crowd) record(took time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resolved++
	switch {
	case err == nil:
		c.counts.Connected++
		c.times = append(c.times, took)
		return
	case errors.Is(err, errUnfinished):
		c.counts.Unfinished++
		return
	case isReset(err):
		c.counts.Connected++
		c.counts.Reset++
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT):
		c.counts.TimedOut++
	case errors.Is(err, syscall.ECONNREFUSED):
		c.counts.Refused++
	default:
		c.counts.Failed++
	}
	c.errs[errName(err)]++
}

// allResolved reports whether every client's connect has an outcome.
func (c *crowd) allResolved() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolved == c.n
}

func (c *crowd) snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts
}

// finish closes every connection and waits for the clients to end. The
// caller cancels their context first.
func (c *crowd) finish() {
	c.mu.Lock()
	c.finishing = true
	conns := slices.Clone(c.conns)
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	c.wg.Wait()
}

// outcome returns the final counts, connect times and errors.
func (c *crowd) outcome() (Counts, []time.Duration, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs map[string]int
	if len(c.errs) > 0 {
		errs = c.errs
	}
	return c.counts, slices.Clone(c.times), errs
}

// errName names a connect error by its errno, or by its text.
func errName(err error) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &errno):
		return errnoName(errno)
	}
	return err.Error()
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ECONNREFUSED:
		return "ECONNREFUSED"
	case syscall.ECONNRESET:
		return "ECONNRESET"
	case syscall.ETIMEDOUT:
		return "ETIMEDOUT"
	case syscall.EADDRNOTAVAIL:
		return "EADDRNOTAVAIL"
	case syscall.ENETUNREACH:
		return "ENETUNREACH"
	}
	return e.Error()
}
