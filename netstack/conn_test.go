package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// TestConnContract runs x/net's conformance suite for net.Conn on a
// connection between two in-process hosts.
func TestConnContract(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		n := NewNetwork(nil)
		srv, _ := n.NewHost()
		cli, _ := n.NewHost()
		l, err := srv.Listen(context.Background(), "tcp", ":80", nil)
		if err != nil {
			n.Close()
			return nil, nil, nil, err
		}
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			accepted <- c
		}()
		c1, err = cli.Dial(context.Background(), "tcp", serverAddr+":80")
		if err != nil {
			l.Close()
			n.Close()
			return nil, nil, nil, err
		}
		c2 = <-accepted
		stop = func() {
			c1.Close()
			c2.Close()
			l.Close()
			n.Close()
		}
		return c1, c2, stop, nil
	})
}

// TestErrorsAreErrnos checks that in-process errors wrap errno values as a
// kernel socket's would.
func TestErrorsAreErrnos(t *testing.T) {
	_, srv, cli := pair(t, nil)
	// No listener on the port: the stack answers with RST.
	if _, err := cli.Dial(context.Background(), "tcp", serverAddr+":81"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to a closed port: %v; want ECONNREFUSED", err)
	}
	var opErr *net.OpError
	_, err := cli.Dial(context.Background(), "tcp", serverAddr+":81")
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		t.Errorf("dial error %T %v is not a *net.OpError for dial", err, err)
	}
	l := listen(t, srv, "linux", 5)
	if _, err := srv.Listen(context.Background(), "tcp", ":80", nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second listener on the port: %v; want EADDRINUSE", err)
	}
	c, err := cli.Dial(context.Background(), "tcp", serverAddr+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("deadline error %v is not a net.Error timeout", err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.(*Conn).Abort()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after the peer aborted: %v; want ECONNRESET", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cli.Dial(ctx, "tcp", serverAddr+":80"); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with a cancelled context: %v; want context.Canceled", err)
	}
}

// TestCloseUnblocksAccept: Close makes a blocked Accept return net.ErrClosed,
// and a deadline makes it return os.ErrDeadlineExceeded.
func TestCloseUnblocksAccept(t *testing.T) {
	_, srv, _ := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	l.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := l.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Accept past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	l.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	// Closed wins over a deadline that has passed, as with Go's listeners.
	l.SetDeadline(time.Now().Add(-time.Second))
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener past its deadline: %v; want net.ErrClosed", err)
	}
}

// TestNoAllocationsOnTheDataPath: the errno mapping every Read, Write and
// Close goes through allocates nothing when there is no error, which is
// every call on a healthy connection, nor for the io.EOF that ends every
// connection's reads.
func TestNoAllocationsOnTheDataPath(t *testing.T) {
	for _, err := range []error{nil, io.EOF} {
		if n := testing.AllocsPerRun(100, func() { _ = mapErr(err) }); n != 0 {
			t.Errorf("mapErr(%v) allocates %.0f times", err, n)
		}
		if got := mapErr(err); got != err {
			t.Errorf("mapErr(%v) = %v; want it as it is", err, got)
		}
	}
}
