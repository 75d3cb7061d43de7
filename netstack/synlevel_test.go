package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const serverAddr = "198.18.0.1"

func synACKs(h []heard) []heard {
	var out []heard
	for _, x := range h {
		if x.flags == header.TCPFlagSyn|header.TCPFlagAck {
			out = append(out, x)
		}
	}
	return out
}

// TestSYNACKScheduleOnTheWire sends one SYN that is never acknowledged to a
// listener of each personality, under a virtual clock, and records when the
// server sends its SYN-ACK: once at once, then exactly at the personality's
// retransmission times, never after it gives up, when the half-open
// connection is gone and counted as expired.
func TestSYNACKScheduleOnTheWire(t *testing.T) {
	for _, p := range backlog.All() {
		t.Run(p.Name, func(t *testing.T) {
			clock := faketime.NewManualClock()
			n, srv, _ := pair(t, &NetworkConfig{Clock: clock})
			l := listen(t, srv, p.Name, 5)
			peer := newRawPeer(t, n, serverAddr, "198.18.99.1", 40000, time.Time{})
			peer.syn()
			peer.await(t, 1)
			clock.Advance(p.SYNACK.GiveUp + 30*time.Second)
			waitFor(t, "the half-open connection to expire", func() bool { return l.HalfOpen() == 0 })

			var at []time.Duration
			for _, h := range synACKs(peer.heard()) {
				at = append(at, h.at)
			}
			want := append([]time.Duration{0}, p.SYNACK.At...)
			if !slices.Equal(at, want) {
				t.Errorf("SYN-ACKs at %v; want %v (gives up at %v)", at, want, p.SYNACK.GiveUp)
			}
			for _, h := range peer.heard() {
				if h.flags&header.TCPFlagRst != 0 {
					t.Errorf("the server sent a RST at %v; giving up is silent", h.at)
				}
			}
			if s := l.Stats(); s.Expired != 1 {
				t.Errorf("Expired = %d; want 1", s.Expired)
			}
		})
	}
}

// handshakeToHalfOpen has a raw peer send a SYN and returns the server's
// ISN from its SYN-ACK.
func handshakeToHalfOpen(t *testing.T, peer *rawPeer) uint32 {
	t.Helper()
	peer.syn()
	h := peer.await(t, 1)
	if h[0].flags != header.TCPFlagSyn|header.TCPFlagAck || h[0].ack != peer.isn+1 {
		t.Fatalf("answer to SYN: %+v", h[0])
	}
	return h[0].seq
}

func fillWithClients(t *testing.T, cli *Host, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if got, err := try(t, cli, serverAddr+":80", time.Second); got != connected {
			t.Fatalf("filling client %d: %s (%v)", i, got, err)
		}
	}
}

// TestLinuxFinalACKDroppedOnFullQueue: with tcp_abort_on_overflow=0, the
// final ACK that finds the accept queue full is dropped: the client believes
// it is connected, the server keeps the request and sends its SYN-ACK again,
// and the client's next ACK after an accept() completes the connection.
func TestLinuxFinalACKDroppedOnFullQueue(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", 1) // capacity 2, SYN queue 2
	peer := newRawPeer(t, n, serverAddr, "198.18.99.1", 40001, time.Time{})
	isn := handshakeToHalfOpen(t, peer)
	fillWithClients(t, cli, 2) // the accept queue is now full
	peer.ackSYNACK(isn)
	waitFor(t, "the ACK to be counted as an overflow", func() bool { return l.Stats().ListenOverflows == 1 })
	if l.HalfOpen() != 1 || l.Len() != 2 {
		t.Fatalf("after the dropped ACK: %d half-open, %d queued; want 1, 2", l.HalfOpen(), l.Len())
	}
	// The SYN-ACK comes again (1 s after the SYN).
	h := peer.await(t, 2)
	if h[1].flags != header.TCPFlagSyn|header.TCPFlagAck || h[1].seq != isn {
		t.Fatalf("second segment: %+v; want the SYN-ACK again", h[1])
	}
	if _, err := l.Accept(); err != nil {
		t.Fatal(err)
	}
	peer.ackSYNACK(isn)
	waitFor(t, "the connection to be queued", func() bool { return l.Len() == 2 && l.HalfOpen() == 0 })
}

// TestLinuxAbortOnOverflowResets: with tcp_abort_on_overflow=1 the same ACK
// is answered with RST.
func TestLinuxAbortOnOverflowResets(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux:abort_on_overflow=1", 1)
	peer := newRawPeer(t, n, serverAddr, "198.18.99.1", 40002, time.Time{})
	isn := handshakeToHalfOpen(t, peer)
	fillWithClients(t, cli, 2)
	peer.ackSYNACK(isn)
	h := peer.await(t, 2)
	if h[1].flags != header.TCPFlagRst || h[1].seq != isn+1 {
		t.Errorf("answer to the ACK: %+v; want RST with seq %d", h[1], isn+1)
	}
	waitFor(t, "the request to go", func() bool { return l.HalfOpen() == 0 })
	if s := l.Stats(); s.Reset != 1 {
		t.Errorf("Reset = %d; want 1", s.Reset)
	}
}

// serveEach accepts connections until the listener closes and hands each
// to handle, in the accepting goroutine.
func serveEach(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		handle(c)
	}
}

// echo accepts connections and echoes them until the listener closes.
func echo(l net.Listener) {
	serveEach(l, func(c net.Conn) { go func() { io.Copy(c, c); c.Close() }() })
}

func echoOnce(t *testing.T, c interface {
	io.ReadWriter
}) {
	t.Helper()
	msg := make([]byte, 100_000) // many segments each way, through the translation
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !slices.Equal(got, msg) {
		t.Fatalf("echo: %v", err)
	}
}

// TestSYNCookiesBeyondTheSYNQueue: with tcp_syncookies=1, SYNs beyond the SYN
// queue are answered with cookies; a client that answers one gets a working
// connection, rebuilt from its ACK, that carries data both ways.
func TestSYNCookiesBeyondTheSYNQueue(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", 1) // SYN queue holds 2
	go echo(l)
	for i := 0; i < 2; i++ {
		handshakeToHalfOpen(t, newRawPeer(t, n, serverAddr, "198.18.99.1", uint16(41000+i), time.Time{}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, "tcp", serverAddr+":80")
	if err != nil {
		t.Fatalf("dial with a full SYN queue: %v", err)
	}
	defer c.Close()
	echoOnce(t, c)
	s := l.Stats()
	if s.SyncookiesSent != 1 || s.SyncookiesRecv != 1 || s.TCPReqQFullDoCookies != 1 || s.HalfOpen != 2 {
		t.Errorf("stats %+v; want 1 cookie sent and received, the 2 half-open untouched", s)
	}
}

// TestCookieConnectionPortReuse: a client that resets a cookie-born
// connection and reuses its port gets a working new connection: the old
// one's sequence translation ends with it. (The reuse waits until the stack
// has processed the reset: gVisor handles segments on goroutines of its own,
// so a SYN sent within microseconds of the reset reaches the dying endpoint
// and is lost, and the client sends it again a second later.)
func TestCookieConnectionPortReuse(t *testing.T) {
	_, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", 5)
	go echo(l)
	id := stack.TransportEndpointID{
		LocalAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), LocalPort: 80,
		RemoteAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), RemotePort: 45000,
	}
	for round := 0; round < 3; round++ {
		waitFor(t, "the previous connection to go", func() bool {
			return !srv.gate.live(&seg{proto: ipv4.ProtocolNumber, id: id})
		})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		c, err := cli.DialFrom(ctx, "tcp", "198.18.0.2:45000", serverAddr+":80")
		cancel()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		echoOnce(t, c)
		c.(*Conn).Abort()
	}
	if s := l.Stats(); s.SyncookiesRecv != 3 {
		t.Errorf("SyncookiesRecv = %d; want 3", s.SyncookiesRecv)
	}
}

// TestSYNCookiesAlways: with tcp_syncookies=2 every SYN gets a cookie and
// nothing is held, yet connections work.
func TestSYNCookiesAlways(t *testing.T) {
	_, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", 5)
	go echo(l)
	for i := 0; i < 3; i++ {
		c, err := cli.Dial(context.Background(), "tcp", serverAddr+":80")
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c)
		c.Close()
	}
	if s := l.Stats(); s.SyncookiesSent != 3 || s.SyncookiesRecv != 3 {
		t.Errorf("stats %+v; want 3 cookies sent and received", s)
	}
}

// TestNoCookiesFullSYNQueueDrops: with tcp_syncookies=0 a SYN that finds the
// SYN queue full is dropped (TCPReqQFullDrop): the client hears nothing.
func TestNoCookiesFullSYNQueueDrops(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=0", 1)
	for i := 0; i < 2; i++ {
		handshakeToHalfOpen(t, newRawPeer(t, n, serverAddr, "198.18.99.1", uint16(42000+i), time.Time{}))
	}
	if got, err := try(t, cli, serverAddr+":80", 400*time.Millisecond); got != timedOut {
		t.Errorf("client with a full SYN queue: %s (%v); want timed out", got, err)
	}
	if s := l.Stats(); s.TCPReqQFullDrop != 1 {
		t.Errorf("TCPReqQFullDrop = %d; want 1", s.TCPReqQFullDrop)
	}
}

// TestHalfOpenOnSharedLimits: on systems that count from the SYN, half-open
// handshakes take the slots: Windows refuses the next client, 4.3BSD ignores
// it, and macOS evicts the oldest half-open one (which is told with a RST) to
// let the client in.
func TestHalfOpenOnSharedLimits(t *testing.T) {
	for _, tt := range []struct {
		name  string
		want  outcome
		evict bool
	}{
		{"winnt4-server", refused, false},
		{"bsd4.3", timedOut, false},
		{"lwip", timedOut, false},
		{"darwin", connected, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, srv, cli := pair(t, nil)
			l := listen(t, srv, tt.name, 2)
			var peers []*rawPeer
			for i := 0; i < l.Capacity(); i++ {
				p := newRawPeer(t, n, serverAddr, "198.18.99.1", uint16(43000+i), time.Time{})
				handshakeToHalfOpen(t, p)
				peers = append(peers, p)
			}
			if got, err := try(t, cli, serverAddr+":80", 400*time.Millisecond); got != tt.want {
				t.Fatalf("client with every slot half-open: %s (%v); want %s", got, err, tt.want)
			}
			if tt.evict {
				h := peers[0].await(t, 2)
				if h[1].flags != header.TCPFlagRst {
					t.Errorf("the oldest half-open peer heard %+v; want a RST", h[1])
				}
				if s := l.Stats(); s.Evicted != 1 {
					t.Errorf("Evicted = %d; want 1", s.Evicted)
				}
			}
		})
	}
}

// TestExpiryFreesTheSlot: a half-open connection whose peer vanished gives
// up on the personality's schedule (Windows: 21 s) and frees its slot.
func TestExpiryFreesTheSlot(t *testing.T) {
	clock := faketime.NewManualClock()
	n, srv, cli := pair(t, &NetworkConfig{Clock: clock})
	l := listen(t, srv, "windows", 1)
	handshakeToHalfOpen(t, newRawPeer(t, n, serverAddr, "198.18.99.1", 44000, time.Time{}))
	if got, err := try(t, cli, serverAddr+":80", 200*time.Millisecond); got != refused {
		t.Fatalf("client while the slot is half-open: %s (%v); want refused", got, err)
	}
	clock.Advance(20 * time.Second)
	if l.HalfOpen() != 1 {
		t.Fatalf("expired before the personality gives up (21 s)")
	}
	clock.Advance(2 * time.Second)
	waitFor(t, "the expiry", func() bool { return l.HalfOpen() == 0 })
	if got, err := try(t, cli, serverAddr+":80", 200*time.Millisecond); got != connected {
		t.Errorf("client after the expiry: %s (%v); want connected", got, err)
	}
}

// TestRelistenPerPersonality: listen() again with a smaller backlog resets
// the excess on Windows NT (the newest clients read ECONNRESET), keeps it on
// Linux, and fails with EINVAL on gVisor.
func TestRelistenPerPersonality(t *testing.T) {
	t.Run("winnt4-server", func(t *testing.T) {
		_, srv, cli := pair(t, nil)
		l := listen(t, srv, "winnt4-server", 5)
		var conns []io.Reader
		for i := 0; i < 5; i++ {
			c, err := cli.Dial(context.Background(), "tcp", serverAddr+":80")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			conns = append(conns, c)
		}
		waitFor(t, "5 queued", func() bool { return l.Len() == 5 })
		if err := l.SetBacklog(2); err != nil {
			t.Fatal(err)
		}
		for i, c := range conns[2:] {
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client %d beyond the new backlog: %v; want ECONNRESET", i+3, err)
			}
		}
		if l.Len() != 2 {
			t.Errorf("%d left; want 2", l.Len())
		}
	})
	t.Run("linux", func(t *testing.T) {
		_, srv, cli := pair(t, nil)
		l := listen(t, srv, "linux", 5)
		fillWithClients(t, cli, 6)
		if err := l.SetBacklog(2); err != nil {
			t.Fatal(err)
		}
		if l.Len() != 6 || l.Backlog() != 2 {
			t.Errorf("after listen(2): %d queued, backlog %d; want 6, 2", l.Len(), l.Backlog())
		}
	})
	t.Run("gvisor", func(t *testing.T) {
		_, srv, cli := pair(t, nil)
		l := listen(t, srv, "gvisor", 3)
		fillWithClients(t, cli, 4)
		if err := l.SetBacklog(1); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("listen(1) with 4 waiting: %v; want EINVAL", err)
		}
		if err := l.SetBacklog(10); err != nil || l.Backlog() != 10 {
			t.Errorf("listen(10): %v, backlog %d", err, l.Backlog())
		}
	})
}
