package netstack

import (
	"sync"
	"sync/atomic"

	"github.com/backlog-dev/backlog/internal/ring"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
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
//
// The gate's files split it by concern: this one has the registry of
// listeners and the link plumbing, gate_handshake.go the decisions at the
// SYN and the final ACK, gate_schedule.go the SYN-ACK schedule and
// gate_synproxy.go the connections born from SYN cookies.
//
// Lock order: gate.mu, then a listener's backlog.Queue (whose methods never
// call out). Nothing that can reach gVisor's packet path runs under gate.mu:
// a decision collects its packets and aborts as effects, applied once the
// lock is released, because gVisor may answer an injected segment at once
// through WritePackets, which takes gate.mu again. Methods named ...Locked
// expect gate.mu held.
type gate struct {
	nested.Endpoint
	// up is the NIC the gate delivers to, as Attach last set it: read
	// on every packet without the lock nested.Endpoint takes.
	up      atomic.Pointer[upstream]
	stack   *stack.Stack
	child   stack.LinkEndpoint
	mss     uint16
	cookies *cookieJar
	// beforeReplay, set by tests before any traffic, runs as a rebuilt
	// cookie handshake starts handing gVisor what its client sent.
	beforeReplay func()

	// listeners maps a local port to its listeners; the packet path reads
	// it without a lock, and adding or removing a listener, under mu,
	// replaces one port's entry.
	listeners portTable

	mu sync.Mutex
	// conns holds every connection the gate is responsible for between
	// its SYN and its delivery to the listener: half-open ones and those
	// whose handshake completed but that gVisor has not handed over yet.
	conns connTable
	// proxied holds connections born from SYN cookies, whose sequence
	// numbers the gate translates.
	proxied  map[stack.TransportEndpointID]*proxy
	nProxied atomic.Int32
	// retiring holds the translations of cookie-born connections that
	// have ended, oldest first, until retireTimer retires them.
	retiring    ring.Ring[retiree]
	retireTimer tcpip.Timer
	// sched times every half-open connection's SYN-ACKs.
	sched schedule
	// passed remembers SYNs passed uncounted because their 4-tuple still
	// had a live connection: if the stack answers one with a SYN-ACK, that
	// connection was in fact gone (gVisor had not yet processed its
	// reset), and the SYN is decided then.
	passed map[stack.TransportEndpointID]passedSYN
	// heldByKey counts the connections in conns by tupleKey (mayHold).
	heldByKey [heldSlots]atomic.Int32
	// resets remembers the latest connections their clients reset, and
	// held the SYNs that followed such a reset before the stack had
	// processed it (see holdSYNLocked).
	resets resetRing
	held   map[*heldSYN]struct{}
	closed bool
}

// effects are what a decision made under gate.mu asks to be done once the
// lock is released: gVisor may answer an injected segment at once, through
// WritePackets, which takes the lock again.
type effects struct {
	in    []tcpSpec
	out   [][]byte
	abort []tcpip.Endpoint
}

func (fx *effects) inject(t tcpSpec) { fx.in = append(fx.in, t) }

func (fx *effects) send(b []byte) { fx.out = append(fx.out, b) }

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

// ringKeep is the most room the gate's queues keep once a burst that grew
// them is over.
const ringKeep = 64

func newGate(s *stack.Stack, child stack.LinkEndpoint, mtu uint32) *gate {
	g := &gate{
		stack:   s,
		child:   child,
		mss:     uint16(mtu - header.IPv4MinimumSize - header.TCPMinimumSize),
		cookies: newCookieJar(),
		proxied: map[stack.TransportEndpointID]*proxy{},
		passed:  map[stack.TransportEndpointID]passedSYN{},
		held:    map[*heldSYN]struct{}{},
		// It holds what bursts bring, and empties again.
		retiring: ring.Ring[retiree]{Keep: ringKeep},
	}
	g.Endpoint.Init(child, g)
	return g
}

func (g *gate) addListener(l *Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.listeners.get(l.port)
	g.listeners.set(l.port, append(old[:len(old):len(old)], l))
}

func (g *gate) removeListener(l *Listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var keep []*Listener
	for _, x := range g.listeners.get(l.port) {
		if x != l {
			keep = append(keep, x)
		}
	}
	g.listeners.set(l.port, keep)
}

// portTable maps a local port to the listeners on it. Each port's entry is
// an immutable slice behind an atomic pointer, in pages of 256 ports made on
// first use, so that a lookup is two atomic loads and adding or removing a
// listener costs the same however many others there are.
type portTable struct {
	pages [256]atomic.Pointer[portPage]
}

type portPage [256]atomic.Pointer[[]*Listener]

// get returns the listeners on port; the caller must not change the slice.
func (t *portTable) get(port uint16) []*Listener {
	pg := t.pages[port>>8].Load()
	if pg == nil {
		return nil
	}
	if ls := pg[port&0xff].Load(); ls != nil {
		return *ls
	}
	return nil
}

// set replaces the listeners on port. Writers must be serialised.
func (t *portTable) set(port uint16, ls []*Listener) {
	pg := t.pages[port>>8].Load()
	if pg == nil {
		pg = new(portPage)
		t.pages[port>>8].Store(pg)
	}
	if len(ls) == 0 {
		pg[port&0xff].Store(nil)
		return
	}
	pg[port&0xff].Store(&ls)
}

// quiet reports whether an arriving segment other than a SYN or a RST,
// with key its tupleKey (read from b only if needed), is none of the
// listeners' on its port: none holds a handshake of the segment's 4-tuple
// or has sent a SYN cookie that may still come back. Then it can only be a
// live connection's, which the gate lets by.
func (g *gate) quiet(ls []*Listener, b []byte) bool {
	asked, may := false, false
	for _, l := range ls {
		if l.lastCookie.Load() != 0 && l.cookiesRecent(g.stack.Clock().NowMonotonic()) {
			return false
		}
		if l.held.Load() > 0 && !asked {
			asked, may = true, g.mayHold(keyOfPacket(b))
		}
	}
	return !may
}

// listenerFor returns the listener a segment arriving for id belongs to.
func (g *gate) listenerFor(proto tcpip.NetworkProtocolNumber, id stack.TransportEndpointID) *Listener {
	for _, l := range g.listeners.get(id.LocalPort) {
		if l.accepts(proto, id.LocalAddress) {
			return l
		}
	}
	return nil
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	if g.sched.timer != nil {
		g.sched.timer.Stop()
	}
	if g.retireTimer != nil {
		g.retireTimer.Stop()
	}
	for h := range g.held {
		h.timer.Stop()
	}
	g.mu.Unlock()
}

// upstream is what the gate delivers to.
type upstream struct{ stack.NetworkDispatcher }

// Attach implements stack.LinkEndpoint.
func (g *gate) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		g.up.Store(nil)
	} else {
		g.up.Store(&upstream{d})
	}
	g.Endpoint.Attach(d)
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: packets from the
// link pass through the gate on their way to the NIC.
func (g *gate) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if g.inbound(pkt) {
		g.deliverUp(proto, pkt)
	}
}

// deliverUp hands a packet to the NIC.
func (g *gate) deliverUp(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if up := g.up.Load(); up != nil {
		up.DeliverNetworkPacket(proto, pkt)
	}
}

// WritePackets implements stack.LinkWriter: packets from the NIC pass
// through the gate on their way to the link. Replies of the gate's own that
// waited for one of them leave right after.
func (g *gate) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var after effects
	defer g.apply(&after)
	all := pkts.AsSlice()
	keep := -1 // the first packet to drop, if any
	for i, pkt := range all {
		if !g.outbound(pkt, &after) {
			keep = i
			break
		}
	}
	if keep < 0 {
		return g.child.WritePackets(pkts)
	}
	var rest stack.PacketBufferList
	for i, pkt := range all {
		if i < keep || (i > keep && g.outbound(pkt, &after)) {
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
func (g *gate) injectIn(t tcpSpec) { g.injectBytes(t.proto, t.build()) }

// injectBytes hands a packet's bytes to the stack as if they had arrived.
func (g *gate) injectBytes(proto tcpip.NetworkProtocolNumber, b []byte) {
	pkt := newPacket(b)
	g.deliverUp(proto, pkt)
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
	b := bytesOf(pkt)
	// The fast way out: a packet for no listening port, while no
	// cookie-born connection needs translating, or a segment of an
	// established connection to a listening port that holds no handshake
	// and has sent no cookie lately.
	dport, flags, ok := peekTCP(b)
	if !ok {
		return true
	}
	proxies := g.nProxied.Load() > 0
	if !proxies {
		ls := g.listeners.get(dport)
		switch {
		case ls == nil:
			return true
		case flags&(header.TCPFlagSyn|header.TCPFlagRst) == 0:
			if g.quiet(ls, b) {
				return true
			}
		case flags&header.TCPFlagSyn == 0:
			// A reset, most often a client's end of a live connection:
			// if the gate holds nothing of its 4-tuple, it is only noted.
			if key := keyOfPacket(b); !g.mayHold(key) {
				g.resets.note(key, g.stack.Clock().NowMonotonic())
				return true
			}
		}
	}
	s, ok := parse(b, true)
	if !ok {
		return true
	}
	if proxies {
		if p := g.proxyFor(s.id); p != nil {
			if s.flags&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn || !p.open.Load() || g.live(&s) {
				return g.translateIn(p, &s, b)
			}
			// A new connection on the 4-tuple of a cookie-born one that
			// is over: its translation must not touch the new one.
			g.retire(p)
		}
	}
	l := g.listenerFor(s.proto, s.id)
	if l == nil {
		return true
	}
	pass := g.decide(l, &s, b)
	if pass && s.valid {
		// The gate summed its checksums to decide it: the stack, which
		// would sum them again, takes the packet as a NIC with checksum
		// offload would hand it over.
		pkt.RXChecksumValidated = true
	}
	return pass
}

// decide decides a segment to a listener's port and reports whether to
// pass it to the stack.
func (g *gate) decide(l *Listener, s *seg, b []byte) bool {
	switch f := s.flags; {
	case f.Contains(header.TCPFlagRst):
		g.peerReset(s)
		return true
	case f&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagFin) == header.TCPFlagSyn:
		if !s.checksumValid() {
			return true // the stack drops it
		}
		var fx effects
		pass := g.syn(l, s, b, &fx)
		g.apply(&fx)
		return pass
	case f.Contains(header.TCPFlagAck) && !f.Contains(header.TCPFlagSyn):
		var fx effects
		pass := g.ack(l, s, b, &fx)
		g.apply(&fx)
		return pass
	}
	return true
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

// outbound decides a leaving packet's fate and reports whether to send it.
func (g *gate) outbound(pkt *stack.PacketBuffer, after *effects) bool {
	// The fast way out: only SYN-ACKs matter, unless a cookie-born
	// connection needs translating.
	proxies := g.nProxied.Load() > 0
	if !proxies {
		th := pkt.TransportHeader().Slice()
		if pkt.TransportProtocolNumber != header.TCPProtocolNumber || len(th) < header.TCPMinimumSize ||
			header.TCP(th).Flags()&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn|header.TCPFlagAck {
			return true
		}
	}
	s, ok := parseOutbound(pkt)
	if !ok {
		return true
	}
	if proxies {
		if p := g.proxyFor(s.id); p != nil {
			return g.translateOut(p, &s)
		}
		if s.flags&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn|header.TCPFlagAck {
			return true
		}
	}
	l := g.listenerFor(s.proto, s.id)
	if l == nil {
		return true
	}
	var fx effects
	defer g.apply(&fx)
	g.mu.Lock()
	defer g.mu.Unlock()
	key := keyOf(s.id)
	e := g.conns.get(key, s.id)
	if e == nil {
		if p, ok := g.passed[s.id]; ok && s.ack == p.isn+1 {
			delete(g.passed, s.id)
			e, _ = g.admitLocked(l, s.proto, s.id, key, p.isn, p.syn, p.at, &fx)
		}
	}
	if e == nil || e.state() == stateDead {
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
	if e.state() != stateHalfOpen {
		// The final ACK has passed, and the stack, which has not yet
		// processed it, sends its SYN-ACK again: the schedule is over,
		// and the handshake must not go back on it.
		return false
	}
	if e.synack == nil {
		// Its bytes, from the header views, as one copy: a SYN-ACK of the
		// stack's carries no data.
		e.synack = make([]byte, 0, len(s.ip)+len(s.tcp)+s.payload)
		e.synack = append(append(e.synack, s.ip...), s.tcp...)
		if s.payload > 0 {
			e.synack = append(e.synack, pkt.Data().AsRange().ToSlice()...)
		}
		e.serverISN = s.seq
		g.armLocked(e)
		g.answeredLocked(e, after)
		return true
	}
	return false // the stack's own retransmission: the gate keeps the schedule
}
