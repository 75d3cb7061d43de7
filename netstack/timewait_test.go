package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestReconnectAfterServerClosedFirst: the server closes first, so its side
// of the connection sits in TIME-WAIT; a client that reconnects from the same
// port at once must connect at once (a SYN to a TIME-WAIT connection starts a
// new one, RFC 6191), with its first SYN, not stall until TIME-WAIT ends
// (60 s), which is what a gVisor forwarder without a listening endpoint does.
func TestReconnectAfterServerClosedFirst(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	go serveEach(l, func(c net.Conn) {
		c.Write([]byte("bye"))
		c.Close() // the server closes first
	})
	id := stack.TransportEndpointID{
		LocalAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), LocalPort: 80,
		RemoteAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), RemotePort: 40000,
	}
	inTimeWait := func() bool {
		ep, ok := srv.stack.FindTransportEndpoint(ipv4.ProtocolNumber, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint)
		return ok && ep.EndpointState() == tcp.StateTimeWait
	}
	sc := countSYNs(n, [4]byte{198, 18, 0, 2}, 40000)
	for round := 0; round < 3; round++ {
		if round > 0 {
			waitFor(t, "the server's side to enter TIME-WAIT", inTimeWait)
		}
		// The client's own previous connection may hold the port for a
		// moment (LAST-ACK). What is tested is the server's side.
		c := redial(t, cli, "198.18.0.2:40000")
		if got := sc.syns.Load(); got != int64(round+1) {
			t.Errorf("round %d: the client sent %d SYNs in %d rounds: a handshake waited for a retransmission", round, got, round+1)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "bye" {
			t.Fatalf("round %d: read %q", round, b)
		}
	}
}

// TestReconnectAfterClientReset: a client resets its connection and at once
// dials again from the same port. The gate sees the SYN while gVisor may
// not yet have handled the reset (it does so on its own goroutine), so the
// old connection still looks live and the SYN passes without a decision;
// when the listener answers it after all, the gate must decide it then, not
// drop the SYN-ACK as unknown and leave the client to retransmit its SYN a
// second later. Every round must take exactly one SYN.
func TestReconnectAfterClientReset(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	go serveEach(l, func(c net.Conn) { c.Write([]byte("hi")) })
	const client = "198.18.0.2:40001"
	sc := countSYNs(n, [4]byte{198, 18, 0, 2}, 40001)

	const rounds = 300
	for round := 0; round < rounds; round++ {
		c := redial(t, cli, client)
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			t.Fatalf("round %d: read: %v", round, err)
		}
		c.(*Conn).Abort() // RST, then the next SYN right behind it
		if got := sc.syns.Load(); got != int64(round+1) {
			t.Fatalf("round %d: the client sent %d SYNs in %d rounds (%d SYN-ACKs): a handshake waited for a retransmission", round, got, round+1, sc.synacks.Load())
		}
	}
}

// redial dials the server's port 80 from the client address from, trying
// again while the client's own stack still holds that port for an earlier
// connection (those attempts send nothing).
func redial(t *testing.T, cli *Host, from string) net.Conn {
	t.Helper()
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := cli.DialFrom(ctx, "tcp", from, serverAddr+":80")
		cancel()
		busy := errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE)
		if busy && try < 1000 {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		return c
	}
}

// synCounter counts, on the network's tap, the SYNs a client sends from one
// address and port, and the SYN-ACKs it is sent.
type synCounter struct{ syns, synacks atomic.Int64 }

func countSYNs(n *Network, addr [4]byte, port uint16) *synCounter {
	sc := &synCounter{}
	from := tcpip.AddrFrom4(addr)
	f := func(b []byte) {
		s, ok := parse(b, true)
		if !ok {
			return
		}
		switch {
		case s.flags == header.TCPFlagSyn && s.id.RemoteAddress == from && s.id.RemotePort == port:
			sc.syns.Add(1)
		case s.flags == header.TCPFlagSyn|header.TCPFlagAck && s.id.LocalAddress == from && s.id.LocalPort == port:
			sc.synacks.Add(1)
		}
	}
	n.tap.Store(&f)
	return sc
}
