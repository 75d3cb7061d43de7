package netstack

// The SYN-ACK schedule: the gate, not gVisor, sends a half-open connection's
// SYN-ACK again, on the personality's timetable, and gives up when it says.
// A completed connection stays on it until gVisor hands it over, to be
// looked for in gVisor now and then (handoverCheck).
//
// One timer serves every handshake of a gate: the half-open connections
// wait in a heap ordered by when each next needs the gate, and the clock's
// timer is set for the first of them. A handshake costs a place in the heap,
// not a timer and a closure of its own.

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// schedule is a gate's heap of timed handshakes. Guarded by gate.mu.
type schedule struct {
	heap  []*pending
	timer tcpip.Timer
	// armed is whether timer is set, and for when.
	armed   bool
	armedAt tcpip.MonotonicTime
}

// armLocked schedules e from its SYN: for its first SYN-ACK retransmission
// once the stack's SYN-ACK has left, for the moment its personality gives up
// on it until then. Each step after that is timed from the one before
// (tickLocked), so that answering a repeated SYN can restart the schedule
// (repeatSYNLocked).
func (g *gate) armLocked(e *pending) {
	sched := e.l.p.SYNACK
	if e.synack != nil {
		e.due = e.start.Add(sched.Step(0))
	} else {
		e.due = e.start.Add(sched.GiveUp)
	}
	g.placeLocked(e)
}

// placeLocked puts e, its due time set, in its place on the schedule.
func (g *gate) placeLocked(e *pending) {
	if e.slot == 0 {
		g.sched.push(e)
	} else {
		g.sched.fix(e.slot - 1)
	}
	g.rearmLocked()
}

// handoverCheck is how long a completed connection may wait for gVisor to
// hand it over before the gate looks for it in gVisor, and then again as
// long as it waits. gVisor hands a connection over within milliseconds of
// its final ACK; one whose endpoint gVisor no longer has, which it will
// never hand over, dies there, and Accept passes it by instead of waiting
// for it for good. (A client's reset that overtook its ACK into gVisor did
// that; the gate keeps them in order now, and this is what remains if
// anything else ever makes gVisor lose one.)
const handoverCheck = 250 * time.Millisecond

// armHandoverLocked schedules e, completed, for a look in gVisor.
func (g *gate) armHandoverLocked(e *pending) {
	e.due = g.stack.Clock().NowMonotonic().Add(handoverCheck)
	g.placeLocked(e)
}

// inStackLocked reports whether gVisor has an endpoint for e's 4-tuple
// other than the listener: the handshake endpoint it will hand over, or
// the connection it has handed over already. A cookie-born connection
// whose rebuilt handshake gVisor has not answered yet has no endpoint there
// until gVisor's processor takes the synthetic SYN: it counts as there for
// rebuildGrace.
func (g *gate) inStackLocked(e *pending, now tcpip.MonotonicTime) bool {
	if p := g.proxied[e.id]; e.cookieBorn && p != nil && !p.open.Load() && !p.opening && now.Sub(e.start) < rebuildGrace {
		return true
	}
	ep, ok := g.stack.FindTransportEndpoint(e.proto, tcp.ProtocolNumber, e.id, nicID).(*tcp.Endpoint)
	return ok && ep.EndpointState() != tcp.StateListen
}

// rebuildGrace is how long gVisor may take to answer a rebuilt handshake's
// synthetic SYN before a cookie-born connection counts as lost.
const rebuildGrace = 2 * time.Second

// unscheduleLocked takes e off the schedule, if it is on it.
func (g *gate) unscheduleLocked(e *pending) {
	if e.slot != 0 {
		g.sched.remove(e.slot - 1)
		g.rearmLocked()
	}
}

// rearmLocked sets the clock's timer for the first handshake due, if it
// is not set for it already.
func (g *gate) rearmLocked() {
	s := &g.sched
	if len(s.heap) == 0 || g.closed {
		return // a timer that fires for nothing stops there
	}
	due := s.heap[0].due
	if s.armed && !due.Before(s.armedAt) {
		return
	}
	wait := max(due.Sub(g.stack.Clock().NowMonotonic()), 0)
	if s.timer == nil {
		s.timer = g.stack.Clock().AfterFunc(wait, g.fire)
	} else {
		s.timer.Stop()
		s.timer.Reset(wait)
	}
	s.armed, s.armedAt = true, due
}

// fire runs when the timer fires: every handshake due by now gets its
// retransmission or its end.
func (g *gate) fire() {
	var fx effects
	defer g.apply(&fx)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sched.armed = false
	if g.closed {
		return
	}
	now := g.stack.Clock().NowMonotonic()
	for len(g.sched.heap) > 0 && !now.Before(g.sched.heap[0].due) {
		e := g.sched.heap[0]
		g.sched.remove(0)
		g.tickLocked(e, now, &fx)
	}
	g.rearmLocked()
}

// tickLocked is e's turn: a retransmission or the end, or for a completed
// connection a look in gVisor.
func (g *gate) tickLocked(e *pending, now tcpip.MonotonicTime, fx *effects) {
	if e.state() == stateCompleting {
		if g.inStackLocked(e, now) {
			g.armHandoverLocked(e)
			return
		}
		g.unholdLocked(e)
		if p := g.proxied[e.id]; p != nil && e.cookieBorn {
			g.retireLocked(p)
		}
		g.endLocked(e)
		return
	}
	if e.state() != stateHalfOpen || g.conns.get(e.key, e.id) != e {
		return
	}
	l := e.l
	sched := l.p.SYNACK
	retries := len(sched.At)
	if l.p.HalfOpen.PruneOld {
		half := l.q.HalfOpen()
		retries = l.p.SYNACKRetries(half, max(half-l.aged, 0), l.q.Backlog())
	}
	if e.synack == nil || int(e.retx) >= retries {
		// The stack never answered, or the last retransmission has had
		// its wait: the personality gives up.
		if l.q.Expire(e) {
			g.killLocked(e, false, fx)
		}
		return
	}
	if e.retx == 0 {
		l.aged++
	}
	e.retx++
	fx.send(e.synack)
	// From when it was due, not from now: a late timer does not shift
	// the rest.
	e.due = e.due.Add(sched.Step(int(e.retx)))
	g.placeLocked(e)
}

// The heap, by due time; a pending's slot is its index plus one, 0 when it
// is not in the heap.

func (s *schedule) push(e *pending) {
	s.heap = append(s.heap, e)
	e.slot = len(s.heap)
	s.up(len(s.heap) - 1)
}

func (s *schedule) remove(i int) {
	last := len(s.heap) - 1
	e := s.heap[i]
	if i != last {
		s.swap(i, last)
	}
	s.heap[last] = nil
	s.heap = s.heap[:last]
	e.slot = 0
	if i != last {
		s.fix(i)
	}
}

func (s *schedule) fix(i int) {
	if !s.down(i) {
		s.up(i)
	}
}

func (s *schedule) less(i, j int) bool { return s.heap[i].due.Before(s.heap[j].due) }

func (s *schedule) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.heap[i].slot, s.heap[j].slot = i+1, j+1
}

func (s *schedule) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !s.less(i, parent) {
			return
		}
		s.swap(i, parent)
		i = parent
	}
}

func (s *schedule) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(s.heap) {
			break
		}
		j := l
		if r := l + 1; r < len(s.heap) && s.less(r, l) {
			j = r
		}
		if !s.less(j, i) {
			break
		}
		s.swap(i, j)
		i = j
	}
	return i > start
}
