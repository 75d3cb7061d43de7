package netstack

// Handshakes: the gate's decisions at the SYN and the final ACK, and the end of
// a pending connection.

import (
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// passedSYN is a SYN passed without a decision.
type passedSYN struct {
	isn uint32
	syn header.TCPSynOptions
	at  tcpip.MonotonicTime
}

// maxPassed bounds the SYNs remembered in gate.passed.
const maxPassed = 1024

// pending is one connection between its SYN and accept(): what the
// listener's Queue holds. What the gate needs to decide its packets is in
// its handshake, which it drops once gVisor has handed the connection over
// (but for a cookie-born connection, whose translation outlives it): a
// connection that waits for accept() keeps 32 bytes here, less than the
// list element gVisor's own accept queue would keep for it.
type pending struct {
	*handshake // nil once delivered; guarded by gate.mu
	// Set by deliver, under gate.mu; read by take.
	ep    *tcp.Endpoint
	wq    *waiter.Queue
	start tcpip.MonotonicTime // when its SYN (or cookie ACK) arrived
}

// handshake is what the gate knows of a pending connection until gVisor
// hands it over. Guarded by gate.mu.
type handshake struct {
	l     *Listener
	id    stack.TransportEndpointID
	proto tcpip.NetworkProtocolNumber
	isn   uint32 // the client's initial sequence number
	key   uint32 // tupleKey of id

	st         pendingState
	cookieBorn bool
	// answered is set once the SYN has had its answer: the stack's
	// SYN-ACK left, or the connection died first (see answer).
	answered  bool
	synack    []byte // the first SYN-ACK, sent again on schedule
	serverISN uint32
	retx      int32               // SYN-ACK retransmissions the schedule has sent
	resent    int32               // ms from start to the last repeated SYN answered, plus one; 0 if none
	due       tcpip.MonotonicTime // when the schedule next needs it
	slot      int                 // its place in gate.sched, plus one; 0 if none
}

// state is e's state: its handshake's, or delivered once that is gone.
func (e *pending) state() pendingState {
	if e.handshake == nil {
		return stateDelivered
	}
	return e.st
}

// isAnswered reports whether e's SYN has had its answer. A delivered
// connection has, and has no handshake left to say so: it may still wait
// in its listener's answers behind a SYN the stack has not answered yet
// (one gVisor dropped, say, which the client's retransmission brings
// back).
func (e *pending) isAnswered() bool { return e.handshake == nil || e.answered }

// cookie reports whether e was born of a SYN cookie.
func (e *pending) cookie() bool { return e.handshake != nil && e.cookieBorn }

type pendingState uint8

const (
	stateHalfOpen   pendingState = iota + 1
	stateCompleting              // final ACK passed; waiting for gVisor to hand it over
	stateDelivered
	stateDead
)

// syn decides a SYN to a listening port; b is its packet.
func (g *gate) syn(l *Listener, s *seg, b []byte, fx *effects) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return true
	}
	key := keyOf(s.id)
	if e := g.conns.get(key, s.id); e != nil {
		if e.state() == stateHalfOpen && s.seq == e.isn {
			// The client sent its SYN again.
			if r := l.p.OnRepeatSYN; r.Resend {
				g.repeatSYNLocked(e, r, fx)
				return false // answered as the system answers it; the stack never sees it
			}
			// Left to the stack: gVisor's handshake endpoint answers
			// with a bare ACK at most every 500 ms
			// (allowOutOfWindowAck), as RFC 793 answers a segment
			// outside the window, or its listening endpoint drops it,
			// finding the 4-tuple taken. The client waits for the
			// schedule's next SYN-ACK.
		}
		return true
	}
	if g.live(s) {
		if g.holdSYNLocked(s, key, b) {
			return false
		}
		// A SYN to a live connection never reaches the listener; one to a
		// connection in TIME-WAIT may start a new one, which the stack
		// hands to the listener, so it is counted. Should the stack answer
		// this one with a SYN-ACK after all, outbound decides it then.
		g.rememberPassedLocked(s)
		return true
	}
	_, o := g.admitLocked(l, s.proto, s.id, key, s.seq, s.syn, g.stack.Clock().NowMonotonic(), fx)
	return o == backlog.HalfOpen
}

// repeatSYNLocked answers a half-open connection's repeated SYN by rule r:
// its SYN-ACK again, unless one answered the last repeat less than
// r.RateLimit ago, and its schedule restarted as r says. A SYN repeated
// before the stack has sent its first SYN-ACK gets nothing: that SYN-ACK is
// on its way.
func (g *gate) repeatSYNLocked(e *pending, r backlog.RepeatSYN, fx *effects) {
	if e.synack == nil {
		return
	}
	now := g.stack.Clock().NowMonotonic()
	since := now.Sub(e.start)
	if r.RateLimit > 0 && e.resent != 0 && since-time.Duration(e.resent-1)*time.Millisecond < r.RateLimit {
		return
	}
	e.resent = int32(since.Milliseconds()) + 1
	// Behind the answers still owed to SYNs decided before this one.
	g.answerLocked(e.l, e.synack, fx)
	sched := e.l.p.SYNACK
	switch r.Restart {
	case backlog.RestartTimer:
		e.due = now.Add(sched.Step(int(e.retx)))
	case backlog.RestartSchedule:
		if e.retx > 0 {
			e.l.aged--
		}
		e.retx = 0
		e.due = now.Add(sched.Step(0))
	default:
		return
	}
	g.placeLocked(e)
}

// admitLocked asks the listener's queue about a SYN from id with ISN isn
// and options syn, which arrived at start, and carries out the answer: a
// half-open connection is recorded and timed (the stack answers it), a
// cookie or a refusal is written to the client, an evicted handshake is
// ended. It returns the outcome, and the pending connection when admitted.
func (g *gate) admitLocked(l *Listener, proto tcpip.NetworkProtocolNumber, id stack.TransportEndpointID, key, isn uint32, syn header.TCPSynOptions, start tcpip.MonotonicTime, fx *effects) (*pending, backlog.Outcome) {
	e := &pending{
		handshake: &handshake{l: l, id: id, key: key, proto: proto, isn: isn, st: stateHalfOpen},
		start:     start,
	}
	o, victim, evicted := l.q.SYN(e)
	if evicted {
		g.killLocked(victim, true, fx)
	}
	switch o {
	case backlog.HalfOpen:
		g.holdLocked(e)
		g.armLocked(e)
		l.answers.Push(answer{e: e})
		return e, o
	case backlog.Cookie:
		l.noteCookie(g.stack.Clock().NowMonotonic())
		g.answerLocked(l, g.cookieSYNACK(l, proto, id, isn, syn).build(), fx)
	case backlog.Refused:
		g.answerLocked(l, tcpSpec{
			proto: proto, src: id.LocalAddress, dst: id.RemoteAddress,
			sport: id.LocalPort, dport: id.RemotePort,
			ack: isn + 1, flags: header.TCPFlagRst | header.TCPFlagAck,
		}.build(), fx)
	}
	return nil, o
}

// An answer is one decided SYN's reply, kept in the order the SYNs were
// decided, so that replies leave in that order whoever writes them: the
// stack's own SYN-ACK for a SYN passed to it (e), which comes once its
// processor has handled the SYN, or one the gate wrote at once (b), a
// cookie SYN-ACK or a reset, which must not overtake it. A listener's SYNs
// reach the stack in the order the gate passed them and its processor
// answers them in that order, so only the gate's own replies wait.
type answer struct {
	e *pending
	b []byte
}

// answerLocked sends b, the gate's reply to a SYN of l's, once every SYN
// decided before it has had its answer.
func (g *gate) answerLocked(l *Listener, b []byte, fx *effects) {
	if l.answers.Len() == 0 {
		fx.send(b)
		return
	}
	l.answers.Push(answer{b: b})
}

// answeredLocked notes that e's SYN has had its answer, its SYN-ACK having
// left or e having died, and sends the replies that waited for it.
func (g *gate) answeredLocked(e *pending, fx *effects) {
	if e.isAnswered() {
		return
	}
	e.answered = true
	q := &e.l.answers
	for {
		a, ok := q.Peek()
		if !ok || (a.e != nil && !a.e.isAnswered()) {
			return
		}
		q.Pop()
		if a.b != nil && fx != nil {
			fx.send(a.b)
		}
	}
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
	g.passed[s.id] = passedSYN{isn: s.seq, syn: s.syn, at: now}
}

// ack decides an ACK to a listening port: the final ACK of a handshake the
// gate holds, perhaps that of a cookie handshake, or a live connection's.
func (g *gate) ack(l *Listener, s *seg, b []byte, fx *effects) bool {
	g.mu.Lock()
	if e := g.conns.get(keyOf(s.id), s.id); e != nil {
		defer g.mu.Unlock()
		return g.finalACKLocked(l, e, s, fx)
	}
	g.mu.Unlock()
	if l.cookiesRecent(g.stack.Clock().NowMonotonic()) {
		return g.cookieACK(l, s, b, fx)
	}
	return true
}

// finalACKLocked decides an ACK for a connection the gate holds.
func (g *gate) finalACKLocked(l *Listener, e *pending, s *seg, fx *effects) bool {
	if e.state() != stateHalfOpen {
		return true // completing: further segments go to the stack
	}
	if !e.haveSYNACK() || s.ack != e.serverISN+1 || !s.checksumValid() {
		return true // not the ACK of our SYN-ACK; the stack answers it
	}
	switch l.q.Established(e) {
	case backlog.Queued:
		e.leaveHalfOpenLocked()
		e.st = stateCompleting
		g.armHandoverLocked(e) // the SYN-ACK schedule is over
		e.synack = nil
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

// leaveHalfOpenLocked takes e, about to complete or end, out of its
// listener's count of aged handshakes, if it is in it.
func (e *pending) leaveHalfOpenLocked() {
	if e.st == stateHalfOpen && e.retx > 0 {
		e.l.aged--
	}
}

// peerReset handles a RST from a client: a half-open connection ends. A
// reset of an established connection is noted, so that a SYN for the same
// 4-tuple right behind it waits until the stack has processed it (see
// holdSYNLocked).
func (g *gate) peerReset(s *seg) {
	key := keyOf(s.id)
	if !g.mayHold(key) {
		g.resets.note(key, g.stack.Clock().NowMonotonic())
		return
	}
	var fx effects
	defer g.apply(&fx)
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.conns.get(key, s.id)
	if e == nil {
		g.resets.note(key, g.stack.Clock().NowMonotonic())
		return
	}
	if e.state() != stateHalfOpen {
		return
	}
	if e.l.q.Expire(e) {
		g.forgetLocked(e, &fx)
	}
}

// A SYN that follows a client's reset of the same 4-tuple within
// microseconds can reach the gate before gVisor's processor has handled
// the reset: the old endpoint is still established, so the stack queues
// the SYN behind the reset on it, and once the endpoint is gone the SYN is
// passed on from there (tcp.Endpoint tryDeliverSegmentFromClosedEndpoint)
// and may meet a reset: under -race, about one redial in 10,000 from the
// same port got ECONNREFUSED (TestReconnectAfterClientReset). Linux
// processes the reset at once, and the SYN finds the listener. The gate holds such a SYN instead and hands it to itself
// again once the old connection is gone, polling every synRetryEvery, for
// at most synRetryFor.
const (
	synRetryEvery = 200 * time.Microsecond
	synRetryFor   = 50 * time.Millisecond
)

// holdSYNLocked holds a copy of a SYN that chases a reset, and reports
// whether it did; key is the SYN's tupleKey.
func (g *gate) holdSYNLocked(s *seg, key uint32, b []byte) bool {
	if !g.resets.take(key, g.stack.Clock().NowMonotonic()) {
		return false
	}
	h := &heldSYN{proto: s.proto, s: *s, b: append([]byte(nil), b...), until: g.stack.Clock().NowMonotonic().Add(synRetryFor)}
	h.timer = g.stack.Clock().AfterFunc(synRetryEvery, func() { g.retrySYN(h) })
	g.held[h] = struct{}{}
	return true
}

// heldSYN is a SYN waiting for the connection it replaces to go.
type heldSYN struct {
	proto tcpip.NetworkProtocolNumber
	s     seg
	b     []byte
	until tcpip.MonotonicTime
	timer tcpip.Timer
}

// retrySYN hands a held SYN to the gate again once the old connection is
// gone, or once it has waited long enough.
func (g *gate) retrySYN(h *heldSYN) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	if g.live(&h.s) && g.stack.Clock().NowMonotonic().Before(h.until) {
		h.timer.Reset(synRetryEvery)
		g.mu.Unlock()
		return
	}
	delete(g.held, h)
	g.mu.Unlock()
	pkt := newPacket(h.b)
	g.DeliverNetworkPacket(h.proto, pkt)
	pkt.DecRef()
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
	g.forgetLocked(e, fx)
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

// forgetLocked drops everything the gate holds for e; replies that waited
// behind its SYN's answer go out through fx.
func (g *gate) forgetLocked(e *pending, fx *effects) {
	g.unscheduleLocked(e)
	g.answeredLocked(e, fx)
	g.unholdLocked(e)
	if e.state() != stateDelivered {
		g.endLocked(e)
	}
}

// endLocked marks e dead, for an Accept that waits for it in take.
func (g *gate) endLocked(e *pending) {
	e.leaveHalfOpenLocked()
	e.st = stateDead
	e.l.handover.Broadcast()
	e.l.acc.Wake()
}

// holdLocked records e, its key set, among the connections the gate
// holds, and unholdLocked forgets it if it is still there; the listener
// counts them, for the packet path's look at a port (quiet).
func (g *gate) holdLocked(e *pending) {
	if old := g.conns.get(e.key, e.id); old != nil {
		g.unholdLocked(old)
	}
	g.conns.put(e)
	e.l.held.Add(1)
	g.heldByKey[e.key%heldSlots].Add(1)
}

func (g *gate) unholdLocked(e *pending) {
	if !g.conns.remove(e) {
		return
	}
	e.l.held.Add(-1)
	g.heldByKey[e.key%heldSlots].Add(-1)
}

// shrinkAbove is how many entries a map or table of the gate's may have
// held before the gate replaces it, once empty, by a small one.
const shrinkAbove = 1024

// deliver hands over an endpoint gVisor established for a listener: the
// connection the gate passed, or one it must now reset, which it returns
// for the caller to abort once the gate's lock is released.
func (g *gate) deliver(l *Listener, ep tcpip.Endpoint, wq *waiter.Queue) (abort tcpip.Endpoint) {
	id := ep.(*tcp.Endpoint).TransportEndpointInfo.ID // set before the endpoint was queued
	g.mu.Lock()
	e := g.conns.get(keyOf(id), id)
	if e != nil && e.l == l {
		g.unholdLocked(e)
	}
	if e == nil || e.l != l || e.state() != stateCompleting {
		g.mu.Unlock()
		if e != nil && e.cookie() {
			g.retireLater(id)
		}
		return ep // not a connection the gate let through, or reset since
	}
	e.ep, e.wq = ep.(*tcp.Endpoint), wq
	g.unscheduleLocked(e) // the final ACK took it off; the heap must not keep it past its handshake
	if e.cookieBorn {
		e.st = stateDelivered // its handshake stays, for its translation's end
	} else {
		e.handshake = nil
	}
	l.handover.Broadcast()
	g.mu.Unlock()
	l.acc.Wake()
	return nil
}

// resetPending resets a connection the listener's Queue gave up (listen()
// again, Close): a half-open one is ended in the stack, and the client told
// if tellHalfOpen is set; a completed one is aborted, which sends the client
// a RST.
func (g *gate) resetPending(e *pending, tellHalfOpen bool) {
	var fx effects
	g.mu.Lock()
	switch e.state() {
	case stateHalfOpen:
		g.killLocked(e, tellHalfOpen, &fx)
	case stateCompleting:
		// gVisor has not handed it over: deliver aborts it when it does.
		g.endLocked(e)
	case stateDelivered:
		fx.abort = append(fx.abort, e.ep)
	}
	g.mu.Unlock()
	g.apply(&fx)
}

// dropListener forgets every connection of l the gate still holds, and
// the replies it had not sent yet.
func (g *gate) dropListener(l *Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for l.answers.Len() > 0 {
		l.answers.Pop()
	}
	var mine []*pending
	g.conns.all(func(e *pending) {
		if e.l == l {
			mine = append(mine, e)
		}
	})
	for _, e := range mine {
		g.unscheduleLocked(e)
		g.unholdLocked(e)
		if e.state() != stateDelivered && e.state() != stateDead {
			g.endLocked(e)
		}
	}
}
