package netstack

// The SYN-cookie proxy: a connection born from a valid cookie ACK is rebuilt in
// gVisor from a synthetic handshake, and its sequence numbers and timestamps
// translated for the rest of its life, as Linux's SYNPROXY target does
// (net/netfilter/nf_synproxy_core.c: synproxy_send_server_syn,
// synproxy_tstamp_adjust). The client never waits for the rebuild: what it
// sends meanwhile, its ACK first, is held and handed to gVisor once gVisor
// has answered the synthetic SYN, in order.

import (
	"sync/atomic"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// proxy is a connection rebuilt from a SYN cookie: the client numbers the
// server's bytes from the cookie and reads the server's timestamps from the
// cookie's, gVisor from its own ISN and clock.
type proxy struct {
	id stack.TransportEndpointID

	// open is set once, under gate.mu, when gVisor has answered the
	// synthetic SYN and been handed what the client sent meanwhile. The
	// translation below is fixed from then on and read without a lock.
	open atomic.Bool
	// opening is set, under gate.mu, from gVisor's answer until open:
	// the translation is fixed, and what the client sent is being handed
	// over (replay).
	opening bool
	// delta is the client's numbering of the server's bytes minus
	// gVisor's; tsDelta the same for the server's timestamps (0 without
	// them).
	delta, tsDelta uint32
	// rescale, when not zero, is gVisor's window scale minus the one the
	// cookie SYN-ACK told the client: windows leaving are rescaled.
	rescale int

	// Guarded by gate.mu while the handshake is rebuilt, then dropped.
	e        *pending
	cookie   uint32   // the server ISN the client knows
	cookieTS uint32   // the tsval the client knows, which it echoed
	held     [][]byte // the cookie ACK, then what came after it
	heldLen  int
}

// Bounds on what a proxy holds while its handshake is rebuilt: beyond them
// the client's segments are dropped, and it sends them again.
const (
	maxHeldSegments = 64
	maxHeldBytes    = 256 << 10
)

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

// cookieSYNACK returns the SYN-ACK that answers a SYN with a cookie: the
// cookie as its ISN and, when the client sent timestamps, its window
// scale and SACK-permitted in the timestamp (net/ipv4/syncookies.c
// cookie_init_timestamp) and the listener's own window scale and SACK in
// its options, as gVisor will use them. Without timestamps only the MSS
// survives a cookie, and the SYN-ACK offers nothing else (Linux clears the
// other options then: tcp_conn_request).
func (g *gate) cookieSYNACK(l *Listener, proto tcpip.NetworkProtocolNumber, id stack.TransportEndpointID, isn uint32, syn header.TCPSynOptions) tcpSpec {
	t := tcpSpec{
		proto: proto, src: id.LocalAddress, dst: id.RemoteAddress,
		sport: id.LocalPort, dport: id.RemotePort,
		seq:   g.cookies.make(id, isn, syn.MSS, g.stack.Clock().Now()),
		ack:   isn + 1,
		flags: header.TCPFlagSyn | header.TCPFlagAck, window: 65535, mss: g.mss,
	}
	if syn.TS {
		t.ts, t.tsecr = true, syn.TSVal
		t.tsval = cookieTimestamp(g.tcpClock(), syn.WS, syn.SACKPermitted)
		t.wsOK, t.ws = syn.WS >= 0, l.rcvScale
		t.sackPerm = syn.SACKPermitted
	}
	return t
}

// tcpClock is the gate's timestamp clock, in milliseconds.
func (g *gate) tcpClock() uint32 {
	return uint32(g.stack.Clock().NowMonotonic().Sub(tcpip.MonotonicTime{}).Milliseconds())
}

// cookieACK handles a segment that acknowledges something on a listening
// port for which the gate holds nothing: the final ACK of a cookie
// handshake, perhaps with data or a FIN (Linux's cookie_v4_check looks at
// any such segment), or anything else. A valid cookie that meets a full
// queue is dropped without a word, whatever the segment carries; once
// there is room, a later segment builds the connection.
func (g *gate) cookieACK(l *Listener, s *seg, b []byte, fx *effects) bool {
	if g.live(s) {
		return true // a live connection's segment (asked first: cheaper than a cookie)
	}
	mss, ok := g.cookies.check(s.id, s.seq-1, s.ack-1, g.stack.Clock().Now())
	if !ok || !s.checksumValid() {
		return true
	}
	syn := header.TCPSynOptions{MSS: mss, WS: -1}
	tsval, tsecr, ts := s.timestamps()
	if ts {
		syn.TS, syn.TSVal = true, tsval
		syn.WS, syn.SACKPermitted = cookieOptions(tsecr)
	}
	e := &pending{
		handshake: &handshake{l: l, id: s.id, key: keyOf(s.id), proto: s.proto, isn: s.seq - 1},
		start:     g.stack.Clock().NowMonotonic(),
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.proxied[s.id] != nil {
		return false
	}
	switch l.q.CookieACK(e) {
	case backlog.Queued:
		e.st, e.cookieBorn = stateCompleting, true
		g.holdLocked(e)
		g.armHandoverLocked(e)
		p := &proxy{id: s.id, e: e, cookie: s.ack - 1, cookieTS: tsecr}
		p.holdLocked(b)
		g.proxied[s.id] = p
		g.nProxied.Add(1)
		// Rebuild the handshake in the stack: its SYN-ACK is caught on
		// the way out (translateOut), answered there, and never sent.
		fx.inject(tcpSpec{
			proto: s.proto, src: s.id.RemoteAddress, dst: s.id.LocalAddress,
			sport: s.id.RemotePort, dport: s.id.LocalPort,
			seq: e.isn, flags: header.TCPFlagSyn, window: s.window, mss: mss,
			wsOK: syn.WS >= 0, ws: syn.WS, sackPerm: syn.SACKPermitted,
			ts: syn.TS, tsval: syn.TSVal,
		})
	case backlog.Reset:
		fx.sendSpec(resetFor(s))
	}
	return false
}

// holdLocked keeps a copy of a packet of the client's while the handshake
// is rebuilt, within the bounds.
func (p *proxy) holdLocked(b []byte) {
	if len(p.held) >= maxHeldSegments || p.heldLen+len(b) > maxHeldBytes {
		return
	}
	p.held = append(p.held, append([]byte(nil), b...))
	p.heldLen += len(b)
}

// translateIn moves an arriving segment of a cookie-born connection into
// gVisor's numbering, or holds it while the handshake is rebuilt. A reset
// ends the connection, and with it the translation, so that the 4-tuple is
// free for a new one at once.
func (g *gate) translateIn(p *proxy, s *seg, b []byte) bool {
	if !p.open.Load() {
		var fx effects
		g.mu.Lock()
		if !p.open.Load() {
			if s.flags.Contains(header.TCPFlagRst) && !p.opening {
				g.abortRebuildLocked(p, &fx)
			} else {
				// Held, a reset too once gVisor has answered: it goes
				// to gVisor behind the client's ACK (replay).
				p.holdLocked(b)
			}
			g.mu.Unlock()
			g.apply(&fx)
			return false
		}
		g.mu.Unlock()
	}
	p.toServer(s)
	if s.flags.Contains(header.TCPFlagRst) {
		g.retire(p)
	}
	return true
}

// toServer rewrites a segment from the client into gVisor's numbering:
// its acknowledgment, its SACK blocks and its timestamp echo.
func (p *proxy) toServer(s *seg) {
	if s.flags.Contains(header.TCPFlagAck) {
		s.rewriteAck(s.ack - p.delta)
	}
	s.addSACK(-p.delta)
	if p.tsDelta != 0 {
		s.addTimestamps(0, -p.tsDelta)
	}
}

// toClient rewrites a segment from gVisor into the client's numbering: its
// sequence number, its timestamp, and its window if the scales differ.
func (p *proxy) toClient(s *seg) {
	s.rewriteSeq(s.seq + p.delta)
	if p.tsDelta != 0 {
		s.addTimestamps(p.tsDelta, 0)
	}
	if p.rescale != 0 {
		w := uint32(s.window)
		if p.rescale > 0 {
			w <<= p.rescale
		} else {
			w >>= -p.rescale
		}
		s.setWindow(uint16(min(w, 0xffff)))
	}
}

// translateOut moves a leaving segment of a cookie-born connection into the
// client's numbering, or answers gVisor's SYN-ACK of the rebuilt handshake
// with what the client has sent so far.
func (g *gate) translateOut(p *proxy, s *seg) bool {
	if !p.open.Load() {
		g.mu.Lock()
		synack := s.flags&(header.TCPFlagSyn|header.TCPFlagAck) == header.TCPFlagSyn|header.TCPFlagAck
		if !p.open.Load() && !p.opening {
			if !synack {
				g.mu.Unlock()
				return false
			}
			replay := g.openLocked(p, s)
			g.mu.Unlock()
			g.replay(p, replay)
			return false
		}
		opening := p.opening
		g.mu.Unlock()
		if opening && synack {
			return false // gVisor's SYN-ACK again: the client's ACK is on its way
		}
		// Otherwise gVisor answers what it was handed: the translation is
		// fixed, and the client must not wait for a retransmission.
	}
	p.toClient(s)
	if s.flags.Contains(header.TCPFlagRst) {
		g.retire(p)
	}
	return true
}

// openLocked fixes the translation from gVisor's SYN-ACK of the rebuilt
// handshake and returns what the client sent, its ACK first, in gVisor's
// numbering, for the caller to hand gVisor once the lock is released
// (replay). Injecting from inside WritePackets is safe: the stack queues
// the segments for its processor, behind the SYN-ACK's own handling.
func (g *gate) openLocked(p *proxy, synack *seg) (replay []rawPacket) {
	l := p.e.l
	p.delta = p.cookie - synack.seq
	if tsval, _, ok := synack.timestamps(); ok {
		p.tsDelta = p.cookieTS - tsval
	}
	if synack.syn.WS >= 0 {
		p.rescale = synack.syn.WS - l.rcvScale
	}
	p.opening, p.e = true, nil
	return p.takeHeldLocked()
}

// takeHeldLocked returns what the proxy held, in gVisor's numbering.
func (p *proxy) takeHeldLocked() (replay []rawPacket) {
	held := p.held
	p.held, p.heldLen = nil, 0
	for _, b := range held {
		if s, ok := parse(b, true); ok {
			p.toServer(&s)
			replay = append(replay, rawPacket{s.proto, b})
		}
	}
	return replay
}

// replay hands gVisor what the client sent while its handshake was
// rebuilt, in order, and opens the translation only once nothing is left.
// What arrives meanwhile is held behind the rest: a client's reset that
// overtook its ACK would end gVisor's half-open endpoint, and the
// connection the queue holds would never be handed over, an Accept waiting
// for it for good (a stress of short-lived clients under SYN cookies did
// that, with -race).
func (g *gate) replay(p *proxy, replay []rawPacket) {
	if g.beforeReplay != nil {
		g.beforeReplay()
	}
	for {
		for _, r := range replay {
			g.injectBytes(r.proto, r.b)
		}
		g.mu.Lock()
		if len(p.held) == 0 {
			p.opening = false
			p.open.Store(true)
			g.mu.Unlock()
			return
		}
		replay = p.takeHeldLocked()
		g.mu.Unlock()
	}
}

// rawPacket is a packet's bytes and its network protocol.
type rawPacket struct {
	proto tcpip.NetworkProtocolNumber
	b     []byte
}

// abortRebuildLocked ends a handshake being rebuilt that the client reset:
// the half-open endpoint in the stack goes, and the connection the queue
// holds dies before anyone accepts it.
func (g *gate) abortRebuildLocked(p *proxy, fx *effects) {
	if e := p.e; e != nil {
		fx.inject(tcpSpec{
			proto: e.proto, src: e.id.RemoteAddress, dst: e.id.LocalAddress,
			sport: e.id.RemotePort, dport: e.id.LocalPort,
			seq: e.isn + 1, flags: header.TCPFlagRst,
		})
		if e.state() == stateCompleting {
			g.forgetLocked(e, fx)
		}
	}
	g.retireLocked(p)
}

// retireLater retires a cookie-born connection's translation once its last
// segments are gone, timeWaitMargin after it ended: no timer of its own,
// one for the oldest of them, and at most maxRetiring wait at once, the
// oldest leaving early beyond that, as Linux drops TIME-WAIT sockets beyond
// net.ipv4.tcp_max_tw_buckets.
func (g *gate) retireLater(id stack.TransportEndpointID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.proxied[id]
	if p == nil {
		return
	}
	g.retiring.Push(retiree{p: p, at: g.stack.Clock().NowMonotonic().Add(timeWaitMargin)})
	for g.retiring.Len() > maxRetiring {
		r, _ := g.retiring.Pop()
		g.retireLocked(r.p)
	}
	if g.retireTimer == nil {
		g.retireTimer = g.stack.Clock().AfterFunc(timeWaitMargin, g.sweepRetiring)
	}
}

// sweepRetiring retires what has waited long enough, and waits for the
// next.
func (g *gate) sweepRetiring() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.stack.Clock().NowMonotonic()
	for {
		r, ok := g.retiring.Peek()
		if !ok {
			g.retireTimer = nil
			return
		}
		if wait := r.at.Sub(now); wait > 0 {
			g.retireTimer.Reset(wait)
			return
		}
		g.retiring.Pop()
		g.retireLocked(r.p)
	}
}

// retire forgets the translation of a cookie-born connection once it can
// carry no more segments.
func (g *gate) retire(p *proxy) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.retireLocked(p)
}

func (g *gate) retireLocked(p *proxy) {
	if g.proxied[p.id] == p {
		delete(g.proxied, p.id)
		g.nProxied.Add(-1)
	}
}

// retiree is a translation waiting to be retired at a time.
type retiree struct {
	p  *proxy
	at tcpip.MonotonicTime
}

// timeWaitMargin is how long a retired cookie connection's translation is
// kept after its close, so that its last segments (FIN, TIME-WAIT ACKs) are
// still translated: longer than gVisor's TIME-WAIT (60 s). maxRetiring
// bounds how many wait.
const (
	timeWaitMargin = 90 * time.Second
	maxRetiring    = 1 << 16
)
