package backlog

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Overload is what a listener does when its application cannot keep up:
// which waiting connections it resets instead of serving, and in which
// order it serves the others. The zero value is no policy: every
// connection is served, oldest first, as accept() has always done.
//
// A deep accept queue turns overload into waiting: by the time accept()
// reaches the connection at its head, that client may have given up, and
// the server spends its capacity on answers nobody reads. The policy
// bounds the wait instead. It is CoDel's rule (Nichols and Jacobson,
// "Controlling Queue Delay", ACM Queue 10(5), 2012; RFC 8289) in the form
// Facebook applies to its servers' request queues (Maurer, "Fail at
// Scale", ACM Queue 13(8), 2015):
//
//   - The signal is the time the oldest waiting connection has waited, at
//     the moment accept() reaches it: CoDel's sojourn time, measured at
//     dequeue. A queue is standing once that wait has stayed above Target
//     for a whole Interval: the first_above_time test of RFC 8289's
//     dequeue pseudocode, which is CoDel's "minimum wait over an interval
//     above the target".
//     A burst that drains below Target within an Interval is served
//     untouched, however long it made clients wait.
//   - While the queue stands, every connection that has waited past
//     Target is reset: Fail at Scale's short timeout (M) while the queue
//     has not been empty for N. RFC 8289 instead drops one packet at a
//     time, the next after Interval/sqrt(count) (its control law), because
//     a TCP sender slows down one round trip after a drop and a drop more
//     would be wasted; clients arriving at an accept queue do not slow
//     down, and a control law that needs thousands of drops to reach the
//     rate of the excess arrivals would leave the queue standing for
//     seconds. Fail at Scale drops every request past the short timeout,
//     and so does this policy.
//   - The queue stops standing once no wait above Target has been seen for
//     an Interval: the signal Fail at Scale takes from the queue having
//     been empty, read from the waits, which a transport always has,
//     rather than from the queue's length, which a kernel listener
//     reports only to a system call.
//
// The policy needs each connection's wait, which only a transport can
// read (package kernel from the kernel's own account, on Linux; package
// netstack from its clock); a [Shedder] applies it, and the transport acts
// on its verdicts and counts them in [Stats.Overdue].
type Overload struct {
	// Target is the longest a connection may have waited in the accept
	// queue and still be served while the queue stands. Zero means no
	// policy. Fail at Scale uses 5 ms for requests inside a data centre,
	// and RFC 8289 the same for packets; an accept queue whose wait the
	// kernel reports in timer ticks (1 to 10 ms) needs a target of several
	// ticks to tell a wait past it from one within it.
	Target time.Duration

	// Interval is how long the oldest waiting connection must stay past
	// Target before the queue counts as standing, and how long no wait
	// past Target must be seen before it no longer does: the longest
	// burst that is served untouched. Zero means DefaultInterval.
	Interval time.Duration

	// LIFO serves the newest waiting connection first while a queue is
	// forming (the oldest has waited past Target) or standing, and the
	// oldest first otherwise: Fail at Scale's adaptive LIFO, so that the
	// connections served are those whose clients are most likely still
	// there, while the oldest age past Target and are reset. False always
	// serves the oldest first.
	LIFO bool

	// SizeBacklog, while the queue stands, calls listen() again with about
	// the accept rate times Target (the rate measured over the last
	// Interval), never more than the application asked for, and restores
	// the application's backlog once the queue no longer stands: excess
	// SYNs are then dropped by the kernel before they cost an accept()
	// and a reset, as h2o lowers its backlog to shed load
	// (h2o/h2o#2853, max_conn_backlog). A client whose SYN is dropped
	// retransmits it a second later, where one that is reset knows at
	// once. False leaves the backlog alone.
	SizeBacklog bool
}

// DefaultInterval is Overload's Interval when none is given: the 100 ms of
// RFC 8289 (its INTERVAL constant) and of Fail at Scale (N).
const DefaultInterval = 100 * time.Millisecond

// ErrOverload is wrapped by the errors Overload.Validate returns.
var ErrOverload = errors.New("overload policy")

// Enabled reports whether o is a policy at all: whether it has a Target.
func (o Overload) Enabled() bool { return o.Target > 0 }

// Validate reports what makes o unusable: a negative duration, or options
// without a Target. The zero value is valid.
func (o Overload) Validate() error {
	switch {
	case o.Target < 0:
		return fmt.Errorf("%w: target %v is negative", ErrOverload, o.Target)
	case o.Interval < 0:
		return fmt.Errorf("%w: interval %v is negative", ErrOverload, o.Interval)
	case o.Target == 0 && (o.Interval != 0 || o.LIFO || o.SizeBacklog):
		return fmt.Errorf("%w: interval, LIFO and backlog sizing need a target", ErrOverload)
	}
	return nil
}

// interval returns Interval or its default.
func (o Overload) interval() time.Duration {
	if o.Interval > 0 {
		return o.Interval
	}
	return DefaultInterval
}

// String returns "none", or the policy: "codel target=50ms interval=100ms
// lifo sized-backlog".
func (o Overload) String() string {
	if !o.Enabled() {
		return "none"
	}
	s := fmt.Sprintf("codel target=%v interval=%v", o.Target, o.interval())
	if o.LIFO {
		s += " lifo"
	}
	if o.SizeBacklog {
		s += " sized-backlog"
	}
	return s
}

// Verdict is what a Shedder decides for the oldest waiting connection.
type Verdict uint8

const (
	// Serve: the connection stays to be served.
	Serve Verdict = iota
	// Shed: the connection has waited past the target while the queue
	// stands; it is to be reset instead of served.
	Shed
)

// String returns "serve" or "shed".
func (v Verdict) String() string {
	switch v {
	case Serve:
		return "serve"
	case Shed:
		return "shed"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// A Shedder applies an Overload policy to one queue. It is a state
// machine with no clock: the transport passes the time with every call,
// so that a test can drive it with any times it likes. It is not safe for
// concurrent use; the transport calls it under its own lock.
type Shedder struct {
	o Overload

	// above is when the oldest waiting connection was first seen past the
	// target since a wait within it was last seen (RFC 8289's
	// first_above_time, less its interval); zero when the last wait seen
	// was within the target.
	above time.Time
	// lastAbove is when a wait past the target was last seen.
	lastAbove time.Time
	standing  bool

	// The accept rate, for SizeBacklog: connections served since window
	// began, and the rate of the last whole window.
	window    time.Time
	served    int
	rate      float64
	rateKnown bool
	// sized is set while the backlog is the policy's, sizedTo.
	sized   bool
	sizedTo int
}

// NewShedder returns a Shedder for o, which must be valid (Validate).
func NewShedder(o Overload) *Shedder { return &Shedder{o: o} }

// Overload returns the policy the Shedder applies.
func (s *Shedder) Overload() Overload { return s.o }

// Decide is told, at now, how long the oldest connection still waiting
// (the one accept() takes next) has waited, and returns whether to reset
// it. A queue forms with the first wait past the target, and stands once
// the waits seen have stayed past it for an interval; it no longer forms
// or stands once a wait within the target is seen, or, for a standing
// one, once no wait past the target has been seen for an interval. The transport calls it for every connection it takes from the
// queue, in the order it takes them; serving newest first, it calls it for
// the oldest before every connection it serves, and resets the oldest as
// long as the verdict is Shed. A policy that is not Enabled always
// returns Serve.
func (s *Shedder) Decide(now time.Time, oldest time.Duration) Verdict {
	if !s.o.Enabled() {
		return Serve
	}
	s.expire(now)
	s.roll(now)
	if oldest <= s.o.Target {
		// Within the target: a forming queue has drained (RFC 8289 resets
		// first_above_time when the sojourn falls below the target).
		s.above = time.Time{}
		return Serve
	}
	s.lastAbove = now
	switch {
	case s.standing:
		return Shed
	case s.above.IsZero():
		s.above = now
		return Serve
	case now.Sub(s.above) >= s.o.interval():
		s.standing = true
		return Shed
	}
	return Serve
}

// expire ends a standing or forming queue once no wait past the target
// has been seen for an interval: between the two, the queue may have
// drained and filled again, and a new burst is given its interval.
func (s *Shedder) expire(now time.Time) {
	if !s.lastAbove.IsZero() && now.Sub(s.lastAbove) >= s.o.interval() {
		s.standing = false
		s.above = time.Time{}
	}
}

// Standing reports whether the queue stands at now: whether the waits
// seen have stayed past the target for an interval, and one past it has
// been seen within the last interval.
func (s *Shedder) Standing(now time.Time) bool {
	s.expire(now)
	return s.standing
}

// LIFO reports whether to serve the newest waiting connection first at
// now: with Overload.LIFO, while a queue is forming or standing.
func (s *Shedder) LIFO(now time.Time) bool {
	if !s.o.LIFO {
		return false
	}
	s.expire(now)
	return s.standing || !s.above.IsZero()
}

// Served tells the Shedder that a connection was served at now: the
// accept rate that SizeBacklog sizes the backlog by counts them.
func (s *Shedder) Served(now time.Time) {
	s.roll(now)
	s.served++
}

// roll closes the rate window once an interval has passed.
func (s *Shedder) roll(now time.Time) {
	if s.window.IsZero() {
		s.window = now
		return
	}
	if d := now.Sub(s.window); d >= s.o.interval() {
		s.rate, s.rateKnown = float64(s.served)/d.Seconds(), true
		s.served = 0
		s.window = now
	}
}

// Backlog returns the backlog to call listen() again with at now, and
// whether it differs from the last one the Shedder returned: with
// Overload.SizeBacklog, while the queue stands, the accept rate of the
// last interval times the target, rounded up, at least 1 and at most
// requested; once the queue no longer stands, requested itself. requested
// is the backlog the application asked for, passed to listen() as it is
// (a negative one, "the maximum", bounds nothing).
func (s *Shedder) Backlog(now time.Time, requested int) (n int, change bool) {
	if !s.o.SizeBacklog || !s.o.Enabled() {
		return 0, false
	}
	s.roll(now)
	if s.Standing(now) && s.rateKnown {
		want := max(1, int(math.Ceil(s.rate*s.o.Target.Seconds())))
		if requested >= 0 {
			want = min(want, requested)
		}
		if s.sized && s.sizedTo == want {
			return 0, false
		}
		s.sized, s.sizedTo = true, want
		return want, true
	}
	if !s.sized {
		return 0, false
	}
	s.sized = false
	return requested, true
}

// Sized reports whether the backlog is the policy's now, as Backlog last
// returned it, and which.
func (s *Shedder) Sized() (sized bool, n int) { return s.sized, s.sizedTo }

// ParseOverload reads a policy as String writes it, or as a list of
// key=value options separated by commas or spaces: "none"; "codel
// target=50ms"; "target=50ms,interval=100ms,lifo,sized-backlog". A bare
// duration is the target: "50ms".
func ParseOverload(s string) (Overload, error) {
	var o Overload
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return o, nil
	}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, hasValue := strings.Cut(f, "=")
		var err error
		switch {
		case k == "codel" && !hasValue:
		case k == "lifo" && !hasValue:
			o.LIFO = true
		case k == "sized-backlog" && !hasValue:
			o.SizeBacklog = true
		case k == "target" && hasValue:
			o.Target, err = time.ParseDuration(v)
		case k == "interval" && hasValue:
			o.Interval, err = time.ParseDuration(v)
		case !hasValue:
			o.Target, err = time.ParseDuration(k)
			if err != nil {
				return Overload{}, fmt.Errorf("%w: %q: want target=D, interval=D, lifo or sized-backlog", ErrOverload, f)
			}
		default:
			return Overload{}, fmt.Errorf("%w: %q: want target=D, interval=D, lifo or sized-backlog", ErrOverload, f)
		}
		if err != nil {
			return Overload{}, fmt.Errorf("%w: %q: %v", ErrOverload, f, err)
		}
	}
	if o.Target == 0 {
		return Overload{}, fmt.Errorf("%w: %q has no target", ErrOverload, s)
	}
	return o, o.Validate()
}
