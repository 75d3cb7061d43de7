package kernel

import "time"

// QueueWaitOf reads a connection's time in the accept queue as Accept
// does, for tests that compare it with the time they measured.
var QueueWaitOf = queueWait

// ListeningOnly lists the listening sockets with one dump of the
// listening hash per family, without their request sockets: the reading
// Sockets made before it counted SYN queues, for benchmarks to compare.
func ListeningOnly() (n int, err error) {
	err = allListeners(func(diagEntry) { n++ })
	return n, err
}

// SetOverloadClock makes the overload policy of l run on now instead of
// the wall clock, so that a test decides when an interval has passed; the
// waits still come from the kernel.
func SetOverloadClock(l *Listener, now func() time.Time) { l.shed.SetClock(now) }

// Overloaded reports whether l applies an overload policy at all.
func Overloaded(l *Listener) bool { return l.shed != nil }
