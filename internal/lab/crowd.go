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

	wg       sync.WaitGroup
	mu       sync.Mutex
	counts   Counts // Accepted stays zero: the crowd cannot see the server
	resolved int
	times    []time.Duration
	errs     map[string]int
	conns    []net.Conn
}

func newCrowd(n int, arrival, timeout time.Duration, dial func(context.Context) (net.Conn, error)) *crowd {
	c := &crowd{dial: dial, n: n, arrival: arrival, timeout: timeout, errs: map[string]int{}}
	c.counts.Clients = n
	return c
}

// start launches the clients; they stop when ctx ends. A client that
// ctx stops before its connect has an answer is unfinished, not timed
// out: it was not given its time.
func (c *crowd) start(ctx context.Context) {
	for i := 0; i < c.n; i++ {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if !sleep(ctx, time.Duration(i)*c.arrival) {
				c.record(0, errUnfinished)
				return
			}
			c.client(ctx)
		}()
	}
}

// errUnfinished marks a connect that was stopped, or never started,
// because the run ended first.
var errUnfinished = errors.New("unfinished")

func (c *crowd) client(ctx context.Context) {
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	t0 := time.Now()
	conn, err := c.dial(dctx)
	took := time.Since(t0)
	if err != nil && ctx.Err() != nil && !errors.Is(dctx.Err(), context.DeadlineExceeded) {
		// Stopped from outside before the client's own deadline.
		err = errUnfinished
	}
	c.record(took, err)
	if err != nil {
		return
	}
	c.mu.Lock()
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
