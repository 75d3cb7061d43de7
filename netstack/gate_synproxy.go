package netstack

// The SYN-cookie proxy: a connection born from a valid cookie ACK is rebuilt in
// gVisor from a synthetic handshake, and its sequence numbers translated for
// the rest of its life, as Linux's SYNPROXY target does.

import (
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// proxy is a connection rebuilt from a SYN cookie: the client numbers the
// server's bytes from the cookie, gVisor from its own ISN.
type proxy struct {
	e      *pending
	cookie uint32 // the server ISN the client knows
	mss    uint16
	window uint16
	open   bool   // false until gVisor's SYN-ACK was seen
	delta  uint32 // cookie - gVisor's ISN
}

// proxyFor returns the translation of a cookie-born connection, or nil; it
// takes no lock while there are none.
func (g *gate) proxyFor(id stack.TransportEndpointID) *proxy {
	if g.nProxied.Load() == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.proxied[id]
}

// cookieACK handles an ACK to a listening port for which the gate holds
// nothing: the final ACK of a cookie handshake, or anything else.
func (g *gate) cookieACK(l *Listener, s *seg, fx *effects) bool {
	if s.flags.Contains(header.TCPFlagFin) || g.live(s) {
		return true // a live connection's segment (asked first: cheaper than a cookie)
	}
	mss, ok := g.cookies.check(s.id, s.seq-1, s.ack-1, g.stack.Clock().Now())
	if !ok || !s.checksumValid() {
		return true
	}
	e := &pending{
		l: l, id: s.id, proto: s.proto, isn: s.seq - 1,
		start:     g.stack.Clock().NowMonotonic(),
		delivered: make(chan struct{}),
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.proxied[s.id] != nil {
		return false
	}
	switch l.q.CookieACK(e) {
	case backlog.Queued:
		e.state, e.cookieBorn = stateCompleting, true
		g.conns[s.id] = e
		g.proxied[s.id] = &proxy{e: e, cookie: s.ack - 1, mss: mss, window: s.window}
		g.nProxied.Add(1)
		// Rebuild the handshake in the stack: its SYN-ACK is caught on
		// the way out (outbound), answered there, and never sent.
		fx.inject(tcpSpec{
			proto: s.proto, src: s.id.RemoteAddress, dst: s.id.LocalAddress,
			sport: s.id.RemotePort, dport: s.id.LocalPort,
			seq: e.isn, flags: header.TCPFlagSyn, window: s.window, mss: mss,
		})
	case backlog.Reset:
		fx.sendSpec(resetFor(s))
	}
	return false
}

// translateIn moves an arriving segment of a cookie-born connection into
// gVisor's sequence space. A reset ends the connection, and with it the
// translation, so that the 4-tuple is free for a new one at once.
func (g *gate) translateIn(p *proxy, s *seg) bool {
	g.mu.Lock()
	open, delta := p.open, p.delta
	g.mu.Unlock()
	if !open {
		return false // not rebuilt yet; the client sends it again
	}
	if s.flags.Contains(header.TCPFlagAck) {
		s.rewriteAck(s.ack - delta)
	}
	if s.flags.Contains(header.TCPFlagRst) {
		g.retire(s.id)
	}
	return true
}

// translateOut moves a leaving segment of a cookie-born connection into the
// sequence space the client knows, or answers gVisor's SYN-ACK of the
// rebuilt handshake.
func (g *gate) translateOut(p *proxy, s *seg) bool {
	g.mu.Lock()
	if !p.open {
		if s.flags&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn|header.TCPFlagAck {
			g.mu.Unlock()
			return false
		}
		p.open = true
		p.delta = p.cookie - s.seq
		g.mu.Unlock()
		// Answering from inside WritePackets is safe: the stack queues
		// the segment for its processor.
		g.injectIn(tcpSpec{
			proto: s.proto, src: s.id.RemoteAddress, dst: s.id.LocalAddress,
			sport: s.id.RemotePort, dport: s.id.LocalPort,
			seq: p.e.isn + 1, ack: s.seq + 1, flags: header.TCPFlagAck, window: p.window,
		})
		return false
	}
	delta := p.delta
	g.mu.Unlock()
	s.rewriteSeq(s.seq + delta)
	if s.flags.Contains(header.TCPFlagRst) {
		g.retire(s.id)
	}
	return true
}

// retireLater retires a cookie-born connection's translation once its last
// segments are gone.
func (g *gate) retireLater(id stack.TransportEndpointID) {
	g.stack.Clock().AfterFunc(timeWaitMargin, func() { g.retire(id) })
}

// retire forgets the translation of a cookie-born connection once it can
// carry no more segments.
func (g *gate) retire(id stack.TransportEndpointID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.proxied[id]; ok {
		delete(g.proxied, id)
		g.nProxied.Add(-1)
	}
}

// timeWaitMargin is how long a retired cookie connection's translation is
// kept after its close, so that its last segments (FIN, TIME-WAIT ACKs) are
// still translated: longer than gVisor's TIME-WAIT (60 s).
const timeWaitMargin = 90 * time.Second
