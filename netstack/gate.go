package netstack

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The gate sits between a host's NIC and its link, and is where every
// personality is enforced on the wire. gVisor's own listening endpoint does
// the handshakes, with a backlog so large that it never decides anything
// itself; the gate sees each packet first and asks the listener's
// backlog.Queue:
//
//   - A SYN to a listening port: passed to the stack (which answers with a
//     SYN-ACK), dropped (ignore), answered with a RST the gate writes
//     (refuse), or answered with a SYN cookie the gate writes itself.
//   - The first ACK of a half-open connection: passed (the connection is
//     queued), dropped (the accept queue is full; the SYN-ACK will be sent
//     again), or reset.
//   - SYN-ACKs leaving the host: the first is kept, the stack's own
//     retransmissions are dropped, and the kept copy is sent again on the
//     personality's schedule, until it gives up and the half-open connection
//     is removed.
//   - A valid SYN-cookie ACK: the connection is rebuilt in the stack from a
//     synthetic SYN and ACK, and its sequence numbers are translated for the
//     rest of its life, as Linux's SYNPROXY target does.
//
// Everything else passes untouched.
type gate struct {
	nested.Endpoint
	stack   *stack.Stack
	child   stack.LinkEndpoint
	mss     uint16
	cookies *cookieJar

	// listeners is an immutable map from local port to the listeners on
	// it, replaced whole when one is added or removed, so that the packet
	// path reads it without a lock.
	listeners atomic.Pointer[map[uint16][]*Listener]

	mu sync.Mutex
	// conns holds every connection the gate is responsible for between
	// its SYN and its delivery to the listener: half-open ones and those
	// whose handshake completed but that gVisor has not handed over yet.
	conns map[stack.TransportEndpointID]*pending
	// proxied holds connections born from SYN cookies, whose sequence
	// numbers the gate translates.
	proxied  map[stack.TransportEndpointID]*proxy
	nProxied atomic.Int32
	// passed remembers SYNs passed uncounted because their 4-tuple still
	// had a live connection: if the stack answers one with a SYN-ACK, that
	// connection was in fact gone (gVisor had not yet processed its
	// reset), and the SYN is decided then.
	passed map[stack.TransportEndpointID]passedSYN
	closed bool
}

// passedSYN is a SYN passed without a decision.
type passedSYN struct {
	isn uint32
	mss uint16
	at  tcpip.MonotonicTime
}

// maxPassed bounds the SYNs remembered in gate.passed.
const maxPassed = 1024

// pending is one connection between its SYN and accept(): what the
// listener's Queue holds.
type pending struct {
	l     *Listener
	id    stack.TransportEndpointID
	proto tcpip.NetworkProtocolNumber
	isn   uint32 // the client's initial sequence number
	start tcpip.MonotonicTime

	// Guarded by gate.mu.
	state      pendingState
	synack     []byte // the first SYN-ACK, sent again on schedule
	serverISN  uint32
	retx       int // SYN-ACK retransmissions sent
	allowRetx  int // SYN-ACKs the stack may send in answer to repeated SYNs
	timer      tcpip.Timer
	ep         tcpip.Endpoint // the established endpoint, once delivered
	wq         *waiter.Queue
	delivered  chan struct{} // closed on delivery or death
	cookieBorn bool
}

type pendingState uint8

const (
	stateHalfOpen   pendingState = iota + 1
	stateCompleting              // final ACK passed; waiting for gVisor to hand it over
	stateDelivered
	stateDead
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

// effects are what a decision made under gate.mu asks to be done once the
// lock is released: gVisor may answer an injected segment at once, through
// WritePackets, which takes the lock again.
type effects struct {
	in    []tcpSpec
	out   [][]byte
	abort []tcpip.Endpoint
}

func (fx *effects) inject(t tcpSpec)   { fx.in = append(fx.in, t) }
func (fx *effects) send(b []byte)      { fx.out = append(fx.out, b) }
func (fx *effects) sendSpec(t tcpSpec) { fx.out = append(fx.out, t.build()) }

// apply carries out fx. The caller must not hold g.mu.
func (g *gate) apply(fx *effects) {
	for _, b := range fx.out {
		g.writeOut(b)
	}
	for _, t := range fx.in {
		g.injectIn(t)
	}
	for _, ep := range fx.abort {
		ep.Abort()
	}
}

func newGate(s *stack.Stack, child stack.LinkEndpoint, mtu uint32) *gate {
	g := &gate{
		stack:   s,
		child:   child,
		mss:     uint16(mtu - header.IPv4MinimumSize - header.TCPMinimumSize),
		cookies: newCookieJar(),
		conns:   map[stack.TransportEndpointID]*pending{},
		proxied: map[stack.TransportEndpointID]*proxy{},
		passed:  map[stack.TransportEndpointID]passedSYN{},
	}
	g.Endpoint.Init(child, g)
	empty := map[uint16][]*Listener{}
	g.listeners.Store(&empty)
	return g
}

func (g *gate) addListener(l *Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.listeners.Load()
	m := make(map[uint16][]*Listener, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[l.port] = append(append([]*Listener(nil), m[l.port]...), l)
	g.listeners.Store(&m)
}

func (g *gate) removeListener(l *Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.listeners.Load()
	m := make(map[uint16][]*Listener, len(old))
	for k, v := range old {
		if k != l.port {
			m[k] = v
			continue
		}
		var keep []*Listener
		for _, x := range v {
			if x != l {
				keep = append(keep, x)
			}
		}
		if len(keep) > 0 {
			m[k] = keep
		}
	}
	g.listeners.Store(&m)
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

// listenerFor returns the listener a segment arriving for id belongs to.
func (g *gate) listenerFor(proto tcpip.NetworkProtocolNumber, id stack.TransportEndpointID) *Listener {
	for _, l := range (*g.listeners.Load())[id.LocalPort] {
		if l.accepts(proto, id.LocalAddress) {
			return l
		}
	}
	return nil
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	for _, e := range g.conns {
		e.stopTimer()
	}
	g.mu.Unlock()
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: packets from the
// link pass through the gate on their way to the NIC.
func (g *gate) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if g.inbound(pkt) {
		g.Endpoint.DeliverNetworkPacket(proto, pkt)
	}
}

// WritePackets implements stack.LinkWriter: packets from the NIC pass
// through the gate on their way to the link.
func (g *gate) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	keep := -1 // the first packet to drop, if any
	for i, pkt := range all {
		if !g.outbound(pkt) {
			keep = i
			break
		}
	}
	if keep < 0 {
		return g.child.WritePackets(pkts)
	}
	var rest stack.PacketBufferList
	for i, pkt := range all {
		if i < keep || (i > keep && g.outbound(pkt)) {
			pkt.IncRef()
			rest.PushBack(pkt)
		}
	}
	dropped := len(all) - rest.Len() // dropped on purpose: reported as written
	if rest.Len() == 0 {
		return dropped, nil
	}
	n, err := g.child.WritePackets(rest)
	rest.DecRef()
	return dropped + n, err
}

// injectIn hands a packet the gate made to the stack as if it had arrived.
func (g *gate) injectIn(t tcpSpec) {
	b := t.build()
	pkt := newPacket(b)
	g.Endpoint.DeliverNetworkPacket(t.proto, pkt)
	pkt.DecRef()
}

// writeOut sends bytes the gate made to the link.
func (g *gate) writeOut(b []byte) {
	var l stack.PacketBufferList
	pkt := newPacket(b)
	pkt.NetworkProtocolNumber = protoOf(b)
	l.PushBack(pkt)
	g.child.WritePackets(l)
	l.DecRef()
}

// bytesOf returns a packet's bytes, contiguous, without copying when they
// already are.
func bytesOf(pkt *stack.PacketBuffer) []byte {
	b, _ := pkt.Data().PullUp(pkt.Data().Size())
	return b
}

// inbound decides an arriving packet's fate and reports whether to pass it
// to the stack.
func (g *gate) inbound(pkt *stack.PacketBuffer) bool {
	s, ok := parse(bytesOf(pkt), true)
	if !ok {
		return true
	}
	if p := g.proxyFor(s.id); p != nil {
		if s.flags&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn || g.live(&s) {
			return g.translateIn(p, &s)
		}
		// A new connection on the 4-tuple of a cookie-born one that is
		// over: its translation must not touch the new one.
		g.retire(s.id)
	}
	l := g.listenerFor(s.proto, s.id)
	if l == nil {
		return true
	}
	switch f := s.flags; {
	case f.Contains(header.TCPFlagRst):
		g.peerReset(&s)
		return true
	case f&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagFin) == header.TCPFlagSyn:
		if !s.checksumValid() {
			return true // the stack drops it
		}
		var fx effects
		pass := g.syn(l, &s, &fx)
		g.apply(&fx)
		return pass
	case f.Contains(header.TCPFlagAck) && !f.Contains(header.TCPFlagSyn):
		var fx effects
		pass := g.ack(l, &s, &fx)
		g.apply(&fx)
		return pass
	}
	return true
}

// syn decides a SYN to a listening port.
func (g *gate) syn(l *Listener, s *seg, fx *effects) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return true
	}
	if e := g.conns[s.id]; e != nil {
		if e.state == stateHalfOpen && s.seq == e.isn {
			// The client sent its SYN again: the stack answers it with
			// its SYN-ACK once more, as Linux does (tcp_check_req).
			e.allowRetx++
		}
		return true
	}
	if g.live(s) {
		// A SYN to a live connection never reaches the listener; one to a
		// connection in TIME-WAIT may start a new one, which the stack
		// hands to the listener, so it is counted. Should the stack answer
		// this one with a SYN-ACK after all, outbound decides it then.
		g.rememberPassedLocked(s)
		return true
	}
	_, o := g.admitLocked(l, s.proto, s.id, s.seq, s.mss, g.stack.Clock().NowMonotonic(), fx)
	return o == backlog.HalfOpen
}

// admitLocked asks the listener's queue about a SYN from id with ISN isn
// and MSS option mss, which arrived at start, and carries out the answer:
// a half-open connection is recorded and timed (the stack answers it), a
// cookie or a refusal is written to the client, an evicted handshake is
// ended. It returns the outcome, and the pending connection when admitted.
func (g *gate) admitLocked(l *Listener, proto tcpip.NetworkProtocolNumber, id stack.TransportEndpointID, isn uint32, mss uint16, start tcpip.MonotonicTime, fx *effects) (*pending, backlog.Outcome) {
	e := &pending{
		l: l, id: id, proto: proto, isn: isn, start: start,
		state:     stateHalfOpen,
		delivered: make(chan struct{}),
	}
	o, victim, evicted := l.q.SYN(e)
	if evicted {
		g.killLocked(victim, true, fx)
	}
	toClient := tcpSpec{
		proto: proto, src: id.LocalAddress, dst: id.RemoteAddress,
		sport: id.LocalPort, dport: id.RemotePort, ack: isn + 1,
	}
	switch o {
	case backlog.HalfOpen:
		g.conns[id] = e
		g.armLocked(e)
		return e, o
	case backlog.Cookie:
		now := g.stack.Clock().NowMonotonic()
		l.noteCookie(now)
		toClient.seq = g.cookies.make(id, isn, mss, g.stack.Clock().Now())
		toClient.flags, toClient.window, toClient.mss = header.TCPFlagSyn|header.TCPFlagAck, 65535, g.mss
		fx.sendSpec(toClient)
	case backlog.Refused:
		toClient.flags = header.TCPFlagRst | header.TCPFlagAck
		fx.sendSpec(toClient)
	}
	return nil, o
}

// rememberPassedLocked notes a SYN passed without a decision, within
// maxPassed: beyond it, old entries go, and if none is old the SYN is
// simply not remembered (its client may wait for a retransmission).
func (g *gate) rememberPassedLocked(s *seg) {
	now := g.stack.Clock().NowMonotonic()
	if len(g.passed) >= maxPassed {
		for id, p := range g.passed {
			if now.Sub(p.at) > time.Second {
				delete(g.passed, id)
			}
		}
		if len(g.passed) >= maxPassed {
			return
		}
	}
	g.passed[s.id] = passedSYN{isn: s.seq, mss: s.mss, at: now}
}

// ack decides an ACK to a listening port: the final ACK of a handshake the
// gate holds, perhaps that of a cookie handshake, or a live connection's.
func (g *gate) ack(l *Listener, s *seg, fx *effects) bool {
	g.mu.Lock()
	if e := g.conns[s.id]; e != nil {
		defer g.mu.Unlock()
		return g.finalACKLocked(l, e, s, fx)
	}
	g.mu.Unlock()
	if l.cookiesRecent(g.stack.Clock().NowMonotonic()) {
		return g.cookieACK(l, s, fx)
	}
	return true
}

// finalACKLocked decides an ACK for a connection the gate holds.
func (g *gate) finalACKLocked(l *Listener, e *pending, s *seg, fx *effects) bool {
	if e.state != stateHalfOpen {
		return true // completing: further segments go to the stack
	}
	if !e.haveSYNACK() || s.ack != e.serverISN+1 || !s.checksumValid() {
		return true // not the ACK of our SYN-ACK; the stack answers it
	}
	switch l.q.Established(e) {
	case backlog.Queued:
		e.state = stateCompleting
		e.stopTimer() // the schedule is over; the timer would keep e alive
		return true
	case backlog.HalfOpen:
		// The accept queue is full: the ACK is dropped, the SYN-ACK
		// schedule goes on.
		return false
	case backlog.Reset:
		g.killLocked(e, false, fx)
		fx.sendSpec(resetFor(s))
		return false
	}
	return true
}

func (e *pending) haveSYNACK() bool { return e.synack != nil }

// stopTimer stops e's timer and lets it go, with the closure that holds e.
func (e *pending) stopTimer() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
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

// live reports whether the stack holds a connection for s's 4-tuple that a
// SYN would not replace: one neither gone, nor dying after a reset, nor in
// TIME-WAIT. (For a 4-tuple it has no connection for, the stack returns the
// listener.)
func (g *gate) live(s *seg) bool {
	ep, ok := g.stack.FindTransportEndpoint(s.proto, tcp.ProtocolNumber, s.id, nicID).(*tcp.Endpoint)
	if !ok {
		return false
	}
	switch ep.EndpointState() {
	case tcp.StateListen, tcp.StateTimeWait, tcp.StateClose, tcp.StateError:
		return false
	}
	return true
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

// peerReset handles a RST from a client: a half-open connection ends.
func (g *gate) peerReset(s *seg) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.conns[s.id]
	if e == nil || e.state != stateHalfOpen {
		return
	}
	if e.l.q.Expire(e) {
		g.forgetLocked(e)
	}
}

// outbound decides a leaving packet's fate and reports whether to send it.
func (g *gate) outbound(pkt *stack.PacketBuffer) bool {
	s, ok := parseOutbound(pkt)
	if !ok {
		return true
	}
	if p := g.proxyFor(s.id); p != nil {
		return g.translateOut(p, &s)
	}
	if s.flags&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn|header.TCPFlagAck {
		return true
	}
	l := g.listenerFor(s.proto, s.id)
	if l == nil {
		return true
	}
	var fx effects
	defer g.apply(&fx)
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.conns[s.id]
	if e == nil {
		if p, ok := g.passed[s.id]; ok && s.ack == p.isn+1 {
			delete(g.passed, s.id)
			e, _ = g.admitLocked(l, s.proto, s.id, p.isn, p.mss, p.at, &fx)
		}
	}
	if e == nil || e.state == stateDead {
		// Every SYN the stack answers was passed by the gate, which
		// holds it until delivery; a SYN-ACK for anything else belongs to
		// a handshake the gate ended, or did not admit, just as the stack
		// started it. Drop it and end that handshake in the stack too.
		fx.inject(tcpSpec{
			proto: s.proto, src: s.id.RemoteAddress, dst: s.id.LocalAddress,
			sport: s.id.RemotePort, dport: s.id.LocalPort,
			seq: s.ack, flags: header.TCPFlagRst,
		})
		return false
	}
	if e.synack == nil {
		v := pkt.ToView()
		e.synack = append([]byte(nil), v.AsSlice()...)
		v.Release()
		e.serverISN = s.seq
		g.armLocked(e)
		return true
	}
	if e.allowRetx > 0 {
		e.allowRetx--
		return true
	}
	return false // the stack's own retransmission: the gate keeps the schedule
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

// armLocked sets e's timer for its next SYN-ACK retransmission, or for the
// moment its personality gives up on it.
func (g *gate) armLocked(e *pending) {
	sched := e.l.p.SYNACK
	next := sched.GiveUp
	if e.synack != nil && e.retx < len(sched.At) {
		next = sched.At[e.retx]
	}
	wait := next - g.stack.Clock().NowMonotonic().Sub(e.start)
	if wait < 0 {
		wait = 0
	}
	if e.timer != nil {
		e.timer.Stop()
		e.timer.Reset(wait)
		return
	}
	e.timer = g.stack.Clock().AfterFunc(wait, func() { g.tick(e) })
}

// tick runs when e's timer fires: a retransmission or the end.
func (g *gate) tick(e *pending) {
	var fx effects
	defer g.apply(&fx)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || e.state != stateHalfOpen || g.conns[e.id] != e {
		return
	}
	sched := e.l.p.SYNACK
	elapsed := g.stack.Clock().NowMonotonic().Sub(e.start)
	if elapsed >= sched.GiveUp {
		if e.l.q.Expire(e) {
			g.killLocked(e, false, &fx)
		}
		return
	}
	if e.synack != nil && e.retx < len(sched.At) && elapsed >= sched.At[e.retx] {
		e.retx++
		fx.send(e.synack)
	}
	g.armLocked(e)
}

// killLocked ends the handshake of e in the stack, without a word to the
// client unless rstClient is set, and forgets it.
func (g *gate) killLocked(e *pending, rstClient bool, fx *effects) {
	fx.inject(tcpSpec{
		proto: e.proto, src: e.id.RemoteAddress, dst: e.id.LocalAddress,
		sport: e.id.RemotePort, dport: e.id.LocalPort,
		seq: e.isn + 1, flags: header.TCPFlagRst,
	})
	if rstClient {
		fx.sendSpec(resetTo(e))
	}
	g.forgetLocked(e)
}

// resetTo returns a RST that a client in e's handshake accepts: in its
// window if it has seen the SYN-ACK, acknowledging its SYN otherwise.
func resetTo(e *pending) tcpSpec {
	r := tcpSpec{
		proto: e.proto, src: e.id.LocalAddress, dst: e.id.RemoteAddress,
		sport: e.id.LocalPort, dport: e.id.RemotePort,
	}
	if e.synack != nil {
		r.seq, r.flags = e.serverISN+1, header.TCPFlagRst
	} else {
		r.ack, r.flags = e.isn+1, header.TCPFlagRst|header.TCPFlagAck
	}
	return r
}

// forgetLocked drops everything the gate holds for e.
func (g *gate) forgetLocked(e *pending) {
	e.stopTimer()
	if g.conns[e.id] == e {
		delete(g.conns, e.id)
	}
	if e.state != stateDelivered {
		e.state = stateDead
		close(e.delivered)
	}
}

// deliver hands over an endpoint gVisor established for a listener: the
// connection the gate passed, or one it must now reset.
func (g *gate) deliver(l *Listener, ep tcpip.Endpoint, wq *waiter.Queue) {
	id := ep.(*tcp.Endpoint).TransportEndpointInfo.ID // set before the endpoint was queued
	g.mu.Lock()
	e := g.conns[id]
	if e != nil && e.l == l {
		delete(g.conns, id)
	}
	if e == nil || e.l != l || e.state != stateCompleting {
		g.mu.Unlock()
		ep.Abort() // not a connection the gate let through, or reset since
		if e != nil && e.cookieBorn {
			g.retireLater(id)
		}
		return
	}
	e.ep, e.wq = ep, wq
	e.state = stateDelivered
	close(e.delivered)
	g.mu.Unlock()
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

// resetPending resets a connection the listener's Queue gave up (listen()
// again, Close): a half-open one is ended in the stack, and the client told
// if tellHalfOpen is set; a completed one is aborted, which sends the client
// a RST.
func (g *gate) resetPending(e *pending, tellHalfOpen bool) {
	var fx effects
	g.mu.Lock()
	switch e.state {
	case stateHalfOpen:
		g.killLocked(e, tellHalfOpen, &fx)
	case stateCompleting:
		// gVisor has not handed it over: deliver aborts it when it does.
		e.state = stateDead
		close(e.delivered)
	case stateDelivered:
		fx.abort = append(fx.abort, e.ep)
	}
	g.mu.Unlock()
	g.apply(&fx)
}

// dropListener forgets every connection of l the gate still holds.
func (g *gate) dropListener(l *Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, e := range g.conns {
		if e.l == l {
			e.stopTimer()
			delete(g.conns, id)
			if e.state != stateDelivered && e.state != stateDead {
				e.state = stateDead
				close(e.delivered)
			}
		}
	}
}

// timeWaitMargin is how long a retired cookie connection's translation is
// kept after its close, so that its last segments (FIN, TIME-WAIT ACKs) are
// still translated: longer than gVisor's TIME-WAIT (60 s).
const timeWaitMargin = 90 * time.Second
