package netstack

import (
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// A Conn is a TCP connection of an in-process or TUN-attached host. It is a
// net.Conn whose errors wrap the errno a Linux socket would give:
// errors.Is(err, syscall.ECONNRESET) for a reset, os.ErrDeadlineExceeded
// for a deadline.
type Conn struct {
	*gonet.TCPConn
	ep        tcpip.Endpoint
	closeOnce sync.Once
	onClose   func()
	// waited is how long the connection waited in the accept queue, for
	// an accepted one.
	waited time.Duration
}

func newConn(c *gonet.TCPConn, ep tcpip.Endpoint) *Conn { return &Conn{TCPConn: c, ep: ep} }

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	return n, mapErr(err)
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	return n, mapErr(err)
}

// Close implements net.Conn.
func (c *Conn) Close() error {
	err := mapErr(c.TCPConn.Close())
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error { return mapErr(c.TCPConn.CloseRead()) }

// CloseWrite shuts down the writing side, sending a FIN.
func (c *Conn) CloseWrite() error { return mapErr(c.TCPConn.CloseWrite()) }

// Abort resets the connection: the peer sees ECONNRESET.
func (c *Conn) Abort() {
	c.ep.Abort()
	c.Close()
}

// errnoByText maps the text of gVisor's errors, which gonet passes on as
// plain strings, back onto errnos.
var errnoByText = func() map[string]syscall.Errno {
	m := map[string]syscall.Errno{}
	for _, e := range []tcpip.Error{
		&tcpip.ErrConnectionReset{}, &tcpip.ErrConnectionRefused{}, &tcpip.ErrConnectionAborted{},
		&tcpip.ErrAborted{}, &tcpip.ErrTimeout{}, &tcpip.ErrClosedForSend{}, &tcpip.ErrClosedForReceive{},
		&tcpip.ErrNotConnected{}, &tcpip.ErrNetworkUnreachable{}, &tcpip.ErrHostUnreachable{},
		&tcpip.ErrNoBufferSpace{}, &tcpip.ErrInvalidEndpointState{},
	} {
		m[e.String()] = errnoFor(e)
	}
	return m
}()

// mapErr rewrites the error inside a gonet *net.OpError as an errno, and a
// gonet timeout as os.ErrDeadlineExceeded, as Go's own sockets report them.
//
// gonet returns its *net.OpError unwrapped, and io.EOF as it is, so a type
// assertion finds it: errors.As would move its target to the heap on every
// call, io.EOF at the end of each connection's reads included.
func mapErr(err error) error {
	op, ok := err.(*net.OpError)
	if !ok || op.Err == nil {
		return err // nil, io.EOF and the rest, as they are
	}
	if t, ok := op.Err.(interface{ Timeout() bool }); ok && t.Timeout() {
		c := *op
		c.Err = os.ErrDeadlineExceeded
		return &c
	}
	if errno, ok := errnoByText[op.Err.Error()]; ok {
		c := *op
		c.Err = os.NewSyscallError(op.Op, errno)
		return &c
	}
	return err
}
