package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestReconnectAfterServerClosedFirst: the server closes first, so its side
// of the connection sits in TIME-WAIT; a client that reconnects from the same
// port at once must connect at once (a SYN to a TIME-WAIT connection starts a
// new one, RFC 6191), not stall until TIME-WAIT ends (60 s), which is what a
// gVisor forwarder without a listening endpoint does.
func TestReconnectAfterServerClosedFirst(t *testing.T) {
	_, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("bye"))
			c.Close() // the server closes first
		}
	}()
	id := stack.TransportEndpointID{
		LocalAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), LocalPort: 80,
		RemoteAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), RemotePort: 40000,
	}
	inTimeWait := func() bool {
		ep, ok := srv.stack.FindTransportEndpoint(ipv4.ProtocolNumber, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint)
		return ok && ep.EndpointState() == tcp.StateTimeWait
	}
	for round := 0; round < 3; round++ {
		if round > 0 {
			waitFor(t, "the server's side to enter TIME-WAIT", inTimeWait)
		}
		var c net.Conn
		var err error
		var took time.Duration
		// The client's own previous connection may hold the port for a
		// moment (LAST-ACK); what is measured is the server's side.
		for try := 0; try < 200; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			start := time.Now()
			c, err = cli.DialFrom(ctx, "tcp", "198.18.0.2:40000", serverAddr+":80")
			took = time.Since(start)
			cancel()
			if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EADDRINUSE) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("round %d: dial from the same port: %v", round, err)
		}
		if took > 500*time.Millisecond {
			t.Errorf("round %d: connecting took %v", round, took)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "bye" {
			t.Fatalf("round %d: read %q", round, b)
		}
	}
}
