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
	// SetBacklog calls listen() again with n, passed as it is (0 means 0;
	// see "Saying the backlog" in the package documentation), under the
	// rules of the listener's system: the stored backlog changes (or, on
	// some systems, does not), waiting connections beyond it may be reset,
	// or the call fails.
	SetBacklog(n int) error
	// Stats returns the queue's gauges and counters. What the transport
	// cannot observe is marked in Stats.Unobserved, and reads 0.
	Stats() Stats
}

// The marker values of a ListenConfig's Backlog, in package kernel and
// package netstack alike. There, 0 is the zero value and means the
// system's default; these say what a number cannot.
const (
	// ZeroBacklog asks for a backlog of exactly 0 (on Linux, one waiting
	// connection).
	ZeroBacklog = math.MinInt
	// MaxBacklog asks for the largest backlog the system allows: every
	// system modelled here turns a negative request into its maximum.
	MaxBacklog = -1
)

// Exactly returns the ListenConfig Backlog that asks listen() for n itself:
// ZeroBacklog for 0, n otherwise. It is the one conversion a caller holding
// the number it wants passed to listen() needs.
func Exactly(n int) int {
	if n == 0 {
		return ZeroBacklog
	}
	return n
}

// ListenRequest returns what a ListenConfig's Backlog asks listen() for:
// dflt, the system's default, for 0; 0 for ZeroBacklog; anything else
// itself. Both transports call it, so that the rule is written once.
func ListenRequest(configured, dflt int) int {
	switch configured {
	case 0:
		return dflt
	case ZeroBacklog:
		return 0
	}
	return configured
}
