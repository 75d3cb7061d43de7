package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestRepliesLeaveInDecisionOrder: three SYNs back to back at a linux
// listener whose SYN queue holds two; the third gets a cookie, which the
// gate writes itself at once, yet its SYN-ACK must leave after the stack's
// two. And a Windows queue that refuses the second SYN must not send the
// reset before the first SYN's SYN-ACK.
func TestRepliesLeaveInDecisionOrder(t *testing.T) {
	for _, tt := range []struct {
		personality string
		peers       int
		last        header.TCPFlags
	}{
		{"linux", 3, header.TCPFlagSyn | header.TCPFlagAck},
		{"winnt4-workstation", 2, header.TCPFlagRst | header.TCPFlagAck},
	} {
		t.Run(tt.personality, func(t *testing.T) {
			n, srv, _ := pair(t, nil)
			l := listen(t, srv, tt.personality, 1)
			var peers []*rawPeer
			for i := 0; i < tt.peers; i++ {
				peers = append(peers, newRawPeer(t, n, serverAddr, "198.18.99.1", uint16(46000+i), time.Time{}))
			}
			for _, p := range peers {
				p.syn()
			}
			var last uint64
			for i, p := range peers {
				h := p.await(t, 1)[0]
				want := header.TCPFlagSyn | header.TCPFlagAck
				if i == len(peers)-1 {
					want = tt.last
				}
				if h.flags != want {
					t.Errorf("peer %d heard %v; want %v", i, h.flags, want)
				}
				if h.order < last {
					t.Errorf("peer %d's answer left before peer %d's", i, i-1)
				}
				last = h.order
			}
			if tt.personality == "linux" {
				if s := l.Stats(); s.SyncookiesSent != 1 {
					t.Errorf("%d cookies sent; want 1", s.SyncookiesSent)
				}
			}
		})
	}
}

// cookiePeer is a raw peer that offers every option a Linux client does.
func cookieSYN(p *rawPeer, tsval uint32) {
	t := p.segment(header.TCPFlagSyn, p.isn, 0)
	t.mss, t.wsOK, t.ws, t.sackPerm, t.ts, t.tsval = 1460, true, 7, true, true, tsval
	p.sendSpec(t)
}

// TestCookieCarriesOptions: a cookie SYN-ACK answers a SYN with
// timestamps, window scaling and SACK as Linux's does: the client's window
// scale and SACK-permitted ride in the low bits of its timestamp, and it
// offers the window scale and SACK the connection will have. The
// connection rebuilt from the ACK has them all.
func TestCookieCarriesOptions(t *testing.T) {
	n, srv, _ := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", 5)
	p := newRawPeer(t, n, serverAddr, "198.18.99.1", 46100, time.Time{})
	cookieSYN(p, 1000)
	sa := p.await(t, 1)[0]
	if sa.flags != header.TCPFlagSyn|header.TCPFlagAck || !sa.ts || sa.tsecr != 1000 {
		t.Fatalf("answer to the SYN: %+v; want a SYN-ACK echoing tsval 1000", sa)
	}
	if !sa.syn.SACKPermitted || sa.syn.WS != l.rcvScale {
		t.Errorf("cookie SYN-ACK offers SACK %v, window scale %d; want true, %d", sa.syn.SACKPermitted, sa.syn.WS, l.rcvScale)
	}
	if ws, sack := cookieOptions(sa.tsval); ws != 7 || !sack {
		t.Errorf("the cookie's timestamp carries window scale %d, SACK %v; want 7, true", ws, sack)
	}
	ack := p.segment(header.TCPFlagAck, p.isn+1, sa.seq+1)
	ack.ts, ack.tsval, ack.tsecr = true, 1001, sa.tsval
	p.sendSpec(ack)
	c := acceptWithin(t, l)
	defer c.Close()
	ep := c.(*Conn).ep.(*tcp.Endpoint)
	if !ep.SACKPermitted || !ep.SendTSOk {
		t.Errorf("the rebuilt connection: SACK %v, timestamps %v; want both", ep.SACKPermitted, ep.SendTSOk)
	}
	// The server's first data carries a timestamp later than the
	// cookie's, as the client expects (PAWS, RFC 7323), and echoes the
	// client's.
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	h := p.await(t, 2)[1]
	if string(h.payload) != "hi" || h.seq != sa.seq+1 || !h.ts || h.tsval-sa.tsval >= 1<<31 || h.tsecr != 1001 {
		t.Errorf("server data: %+v; want \"hi\" at seq %d, tsval after %d, tsecr 1001", h, sa.seq+1, sa.tsval)
	}
}

func acceptWithin(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	l.SetDeadline(time.Now().Add(5 * time.Second))
	defer l.SetDeadline(time.Time{})
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return c
}

// TestCookieFirstSegmentsHeld: a client that sends data with its cookie
// ACK, and more right behind it, while the gate is still rebuilding the
// handshake in the stack, loses none of it. The raw peer never sends
// anything again, so a segment dropped would never arrive.
func TestCookieFirstSegmentsHeld(t *testing.T) {
	n, srv, _ := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", 5)
	p := newRawPeer(t, n, serverAddr, "198.18.99.1", 46200, time.Time{})
	p.syn()
	sa := p.await(t, 1)[0]
	first := p.segment(header.TCPFlagAck|header.TCPFlagPsh, p.isn+1, sa.seq+1)
	first.payload = []byte("GET / ")
	second := p.segment(header.TCPFlagAck|header.TCPFlagPsh, p.isn+1+6, sa.seq+1)
	second.payload = []byte("HTTP/1.0")
	p.sendSpec(first)
	p.sendSpec(second)
	c := acceptWithin(t, l)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 14)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "GET / HTTP/1.0" {
		t.Fatalf("the server read %q, %v; want both segments", got, err)
	}
}

// TestCookieACKWithFINOnFullQueue: a FIN that carries a valid cookie ACK
// while the accept queue is full is dropped without a word, as Linux's
// cookie_v4_check drops it when tcp_v4_syn_recv_sock finds the queue full;
// the client's next segment, once there is room, builds the connection.
func TestCookieACKWithFINOnFullQueue(t *testing.T) {
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", backlog.ZeroBacklog) // one can wait
	p := newRawPeer(t, n, serverAddr, "198.18.99.1", 46300, time.Time{})
	p.syn()
	sa := p.await(t, 1)[0]
	// Only now is the queue full: a SYN that finds it full is dropped,
	// cookies or not (tcp_conn_request).
	fillWithClients(t, cli, 1)
	before := l.Stats()
	p.send(header.TCPFlagAck|header.TCPFlagFin, p.isn+1, sa.seq+1)
	waitFor(t, "the FIN to meet the full queue", func() bool { return l.Stats().ListenOverflows > before.ListenOverflows })
	if s := l.Stats(); s.SyncookiesRecv != before.SyncookiesRecv || s.Len != 1 {
		t.Errorf("after the FIN: %d cookies received, %d queued; want %d, 1", s.SyncookiesRecv, s.Len, before.SyncookiesRecv)
	}
	acceptWithin(t, l).Close() // room for one
	data := p.segment(header.TCPFlagAck|header.TCPFlagPsh, p.isn+1, sa.seq+1)
	data.payload = []byte("late")
	p.sendSpec(data)
	c := acceptWithin(t, l)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
		t.Fatalf("read %q, %v; want \"late\"", got, err)
	}
	for _, h := range p.heard() {
		if h.flags.Contains(header.TCPFlagRst) {
			t.Errorf("the peer was reset: %+v", h)
		}
	}
}

// TestCookieConnectionsLetGo: once a cookie-born connection is open the
// gate keeps only its translation, not the connection: closed ones hold
// neither the endpoint nor what arrived during the rebuild.
func TestCookieConnectionsLetGo(t *testing.T) {
	_, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", 5)
	go echo(l)
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := cli.Dial(ctx, "tcp", serverAddr+":80")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c)
		c.Close()
	}
	g := srv.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, p := range g.proxied {
		if p.e != nil || p.held != nil {
			t.Errorf("%v: the translation still holds its connection (%v) or %d segments", id, p.e != nil, len(p.held))
		}
	}
}

// TestCookieResetBehindACK: a client that resets a cookie-born connection
// just as gVisor has answered the rebuilt handshake, before the gate has
// handed gVisor the client's ACK, gets its reset delivered behind the ACK:
// the connection completes in gVisor, is handed over and accepted, and
// reads as reset. Ahead of the ACK, the reset ended gVisor's half-open
// endpoint, nothing was ever handed over, and Accept waited for good.
func TestCookieResetBehindACK(t *testing.T) {
	n, srv, _ := pair(t, nil)
	l := listen(t, srv, "linux:syncookies=2", 5)
	p := newRawPeer(t, n, serverAddr, "198.18.99.1", 46400, time.Time{})
	var once sync.Once
	var rst []byte
	srv.gate.beforeReplay = func() {
		once.Do(func() {
			// The client's reset arrives now, through the gate.
			pkt := newPacket(rst)
			srv.gate.DeliverNetworkPacket(ipv4.ProtocolNumber, pkt)
			pkt.DecRef()
		})
	}
	p.syn()
	sa := p.await(t, 1)[0]
	if sa.flags != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("answer to the SYN: %+v; want a cookie SYN-ACK", sa)
	}
	rst = p.segment(header.TCPFlagRst, p.isn+1, 0).build()
	p.ackSYNACK(sa.seq)
	c := acceptWithin(t, l)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reading the accepted connection: %v; want ECONNRESET", err)
	}
	if st := l.Stats(); st.SyncookiesRecv != 1 || st.Accepted != 1 {
		t.Errorf("stats: %d cookie ACKs, %d accepted; want 1 and 1", st.SyncookiesRecv, st.Accepted)
	}
}

// TestLostHandshakeNotAwaited: a connection that completed at the gate but
// whose endpoint gVisor then lost (here a reset handed to gVisor alone,
// ahead of the final ACK) is never handed over; Accept passes it by once
// the gate has looked for it in gVisor, instead of waiting for it for
// good, and a connection behind it is accepted.
func TestLostHandshakeNotAwaited(t *testing.T) {
	n, srv, _ := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	lost := newRawPeer(t, n, serverAddr, "198.18.99.1", 46500, time.Time{})
	lost.syn()
	sa := lost.await(t, 1)[0]
	srv.gate.injectBytes(ipv4.ProtocolNumber, lost.segment(header.TCPFlagRst, lost.isn+1, 0).build())
	lost.ackSYNACK(sa.seq)
	waitFor(t, "the gate to queue the lost connection", func() bool { return l.Stats().Queued == 1 })

	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	next := newRawPeer(t, n, serverAddr, "198.18.99.2", 46501, time.Time{})
	next.syn()
	next.ackSYNACK(next.await(t, 1)[0].seq)
	select {
	case err := <-accepted:
		if err != nil {
			t.Errorf("Accept: %v; want the second connection", err)
		}
	case <-time.After(10 * time.Second):
		l.Close()
		t.Fatal("Accept still waits for the connection gVisor lost")
	}
	if st := l.Stats(); st.Queued != 2 || st.Len != 0 {
		t.Errorf("stats: %d queued, %d waiting; want 2 and 0", st.Queued, st.Len)
	}
}
