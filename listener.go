package backlog

import (
	"math"
	"net"
)

// A Listener is a net.Listener whose pending-connection queue can be read
// and resized: what both transports (package kernel and package netstack)
// return, and what the backlog command and its metrics work with.
type Listener interface {
	net.Listener
	// Backlog returns the stored backlog: what the system made of the
	// requested one.
	Backlog() int
	// SetBacklog calls listen() again with n, under the rules of the
	// listener's system: the stored backlog changes (or, on some systems,
	// does not), waiting connections beyond it may be reset, or the call
	// fails.
	SetBacklog(n int) error
	// Stats returns the queue's gauges and counters. A transport fills in
	// what it can observe and leaves the rest zero.
	Stats() Stats
}

// ZeroBacklog, as the Backlog of a kernel or netstack ListenConfig, asks for
// a backlog of exactly 0. A Backlog of 0 there means the system's default
// (its largest), as it does for net.Listen, since Go's own listeners offer no
// other way to ask.
const ZeroBacklog = math.MinInt
