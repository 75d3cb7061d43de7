package kernel

import (
	"net/netip"

	"github.com/backlog-dev/backlog"
)

// ShapeConfig says which listening socket of this host to put under
// another system's rules, at the SYN: see Shape.
type ShapeConfig struct {
	// Addr is the listener's address and port. An unspecified address
	// (0.0.0.0 or ::) shapes the SYNs for the port on every address of
	// that family, and both families for a dual-stack listener.
	Addr netip.AddrPort
	// Personality is the system whose rules the listener follows. It
	// must not be the zero value.
	Personality backlog.Personality
	// Backlog is the backlog the emulated system is asked for, as
	// ListenConfig.Backlog is with a Personality. Zero means the backlog
	// the listener itself stored, read from the kernel.
	Backlog int
}

// ShaperStats is what a Shaper reports: the personality's queue, and what
// the shaper did with the packets it saw.
type ShaperStats struct {
	backlog.Stats
	// KernelLen and KernelBacklog are the listener's own accept queue
	// and stored backlog, as last read.
	KernelLen     int `json:"kernel_queued_now"`
	KernelBacklog int `json:"kernel_backlog"`
	// Passed, Dropped and Refused count verdicts on SYNs; Unreadable
	// counts packets passed because their headers could not be read.
	Passed     uint64 `json:"passed"`
	Dropped    uint64 `json:"dropped"`
	Refused    uint64 `json:"refused_rst"`
	Unreadable uint64 `json:"unreadable"`
	// StaleRules is how many rules of shapers that had died this one
	// removed when it started.
	StaleRules int `json:"stale_rules_removed"`
	// Queue is the netfilter queue number the shaper reads.
	Queue uint16 `json:"nfqueue"`
}
