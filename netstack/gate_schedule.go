package netstack

// The SYN-ACK schedule: the gate, not gVisor, sends a half-open connection's
// SYN-ACK again, on the personality's timetable, and gives up when it says.

// stopTimer stops e's timer and lets it go, with the closure that holds e.
func (e *pending) stopTimer() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
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
