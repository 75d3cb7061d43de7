package netstack

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
)

// overloadPair opens a linux listener with the policy o on a network whose
// clock the test moves, so that every wait and every interval is exact.
func overloadPair(t *testing.T, o backlog.Overload) (*Listener, *Host, *faketime.ManualClock) {
	t.Helper()
	clock := faketime.NewManualClock()
	_, srv, cli := pair(t, &NetworkConfig{Clock: clock})
	l, err := srv.Listen(context.Background(), "tcp", ":80", &ListenConfig{Personality: backlog.MustLookup("linux"), Backlog: 16, Overload: o})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, cli, clock
}

// dialN dials n clients and waits until the listener queues them.
func dialN(t *testing.T, l *Listener, cli *Host, n, want int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := cli.Dial(context.Background(), "tcp", serverAddr+":80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	waitFor(t, "the clients to be queued", func() bool { return l.Len() == want })
	return cs
}

// takeOne accepts and returns which client it is.
func takeOne(t *testing.T, l *Listener, clients []net.Conn) int {
	t.Helper()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i, cl := range clients {
		if cl.LocalAddr().String() == c.RemoteAddr().String() {
			return i
		}
	}
	t.Fatalf("accepted %v, none of the clients", c.RemoteAddr())
	return -1
}

// TestOverloadOffNetstack: the zero Overload serves connections that
// waited a virtual second, oldest first, and counts nothing overdue.
func TestOverloadOffNetstack(t *testing.T) {
	l, cli, clock := overloadPair(t, backlog.Overload{})
	if l.shed != nil {
		t.Fatal("the zero Overload applies a policy")
	}
	cs := dialN(t, l, cli, 4, 4)
	clock.Advance(time.Second)
	for want := range cs {
		if got := takeOne(t, l, cs); got != want {
			t.Errorf("accept %d took %d", want, got)
		}
	}
	if s := l.Stats(); s.Overdue != 0 || s.Reset != 0 || s.QueueWait.Count != 4 {
		t.Errorf("Stats: overdue %d, reset %d, %d waits; want 0, 0, 4", s.Overdue, s.Reset, s.QueueWait.Count)
	}
}

// TestOverloadNetstack is TestOverloadShedsExactlyPastTarget of package
// kernel on the virtual clock: a burst past the target is served for an
// interval, then the queue stands and exactly the connections past the
// target are reset.
func TestOverloadNetstack(t *testing.T) {
	l, cli, clock := overloadPair(t, backlog.Overload{Target: 300 * time.Millisecond, Interval: 200 * time.Millisecond})
	xs := dialN(t, l, cli, 4, 4)
	clock.Advance(400 * time.Millisecond)
	for want := range 2 {
		if got := takeOne(t, l, xs); got != want {
			t.Fatalf("accept %d took X%d", want+1, got+1)
		}
		clock.Advance(100 * time.Millisecond)
	}
	ys := dialN(t, l, cli, 2, 4)
	all := append(append([]net.Conn{}, xs...), ys...)
	if a, b := takeOne(t, l, all), takeOne(t, l, all); a != 4 || b != 5 {
		t.Errorf("accepts took %d, %d; want Y1, Y2 (4, 5)", a, b)
	}
	for i, c := range xs[2:] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("X%d read %v; want a reset", i+3, err)
		}
	}
	for i, c := range append(xs[:2:2], ys...) {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a served client (%d) read %v; want nothing", i, err)
		}
	}
	if s := l.Stats(); s.Overdue != 2 || s.Reset != 2 || s.Accepted != 6 || s.QueueWait.Count != 4 {
		t.Errorf("Stats: overdue %d, reset %d, accepted %d, %d waits; want 2, 2, 6, 4", s.Overdue, s.Reset, s.Accepted, s.QueueWait.Count)
	}
}

// TestOverloadNetstackRefusesLIFO: newest first and a sized backlog are the
// kernel transport's alone.
func TestOverloadNetstackRefusesLIFO(t *testing.T) {
	_, srv, _ := pair(t, nil)
	for _, o := range []backlog.Overload{{Target: time.Second, LIFO: true}, {Target: time.Second, SizeBacklog: true}, {Target: -1}} {
		l, err := srv.Listen(context.Background(), "tcp", ":80", &ListenConfig{Overload: o})
		if err == nil {
			l.Close()
		}
		if !errors.Is(err, backlog.ErrOverload) {
			t.Errorf("%v: Listen: %v; want an ErrOverload", o, err)
		}
	}
}
