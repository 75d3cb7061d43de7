package lab

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCrowdSettles: where the server's drops can be seen, a client does
// not start before the one before it has been answered or dropped, however
// long past its arrival that is; a burst is not held back.
func TestCrowdSettles(t *testing.T) {
	release := make(chan struct{})
	var started, drops atomic.Uint64
	secondBlocked := make(chan struct{})
	dial := func(ctx context.Context) (net.Conn, error) {
		switch started.Add(1) {
		case 1: // answered, but only when the test says so
			<-release
			return nil, syscall.ECONNREFUSED
		case 2: // dropped by the server: no answer until the run ends
			drops.Add(1)
			close(secondBlocked)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, syscall.ECONNREFUSED
	}
	c := newCrowd(3, time.Millisecond, time.Minute, dial)
	c.dropped = drops.Load
	ctx, cancel := context.WithCancel(context.Background())
	c.start(ctx)

	// Twenty arrivals pass; the second client still waits for the first.
	time.Sleep(20 * time.Millisecond)
	if n := started.Load(); n != 1 {
		t.Errorf("%d clients started while the first had no answer; want 1", n)
	}
	close(release)
	<-secondBlocked
	// The second is dropped and never answered: the third goes anyway.
	deadline := time.Now().Add(10 * time.Second)
	for started.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := started.Load(); n != 3 {
		t.Errorf("%d clients started after the second was dropped; want 3", n)
	}
	cancel()
	c.finish()
	got, _, _ := c.outcome()
	if got.Refused != 2 || got.Unfinished != 1 {
		t.Errorf("outcome %+v; want 2 refused and 1 unfinished", got)
	}
}

// TestCrowdBurstNotSettled: arrival 0 starts every client at once, drops
// seen or not.
func TestCrowdBurstNotSettled(t *testing.T) {
	var started atomic.Int32
	all := make(chan struct{})
	const n = 4
	c := newCrowd(n, 0, time.Minute, func(ctx context.Context) (net.Conn, error) {
		if started.Add(1) == n {
			close(all)
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	c.dropped = func() uint64 { return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	c.start(ctx)
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Errorf("%d of %d clients of a burst started", started.Load(), n)
	}
	cancel()
	c.finish()
	if got, _, _ := c.outcome(); got.Unfinished != n {
		t.Errorf("outcome %+v; want %d unfinished", got, n)
	}
}

// TestCrowdFinishWhileConnecting: a client whose connect completes as the
// run ends, after finish has taken the connections to close, closes its
// own rather than wait on it; finish returns. (It waited on a read that
// only the server's close would end, which came after finish: an
// interrupted lab hung, now and then, under CI's load.)
func TestCrowdFinishWhileConnecting(t *testing.T) {
	dialing, release := make(chan struct{}), make(chan struct{})
	server := make(chan net.Conn, 1)
	c := newCrowd(1, time.Millisecond, time.Minute, func(ctx context.Context) (net.Conn, error) {
		close(dialing)
		<-release
		a, b := net.Pipe()
		server <- b
		return a, nil // connected just as the run ended
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.start(ctx)
	<-dialing
	cancel()
	finished := make(chan struct{})
	go func() { c.finish(); close(finished) }()
	for {
		c.mu.Lock()
		f := c.finishing
		c.mu.Unlock()
		if f {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	srv := <-server
	defer srv.Close() // what ends the client's read if it waits after all
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("finish waits for a client that connected as the run ended")
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the server's end reads %v; want EOF, the client having closed", err)
	}
}
