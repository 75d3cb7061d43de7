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

// ShapeDifferences says, one sentence each, where a listener that follows
// p at the SYN on the Linux kernel (ListenConfig.Emulation EmulateAtSYN, or
// Shape) differs from the real system. The package documentation explains
// each.
func ShapeDifferences(p backlog.Personality) []string {
	var d []string
	host := backlog.MustLookup("linux")
	synack := "the SYN-ACK and its retransmissions are the host kernel's (Linux: after 1 s, doubling, net.ipv4.tcp_synack_retries times)"
	if len(p.SYNACK.At) > 0 && p.SYNACK.String() != host.SYNACK.String() {
		synack += ", not this system's (" + p.SYNACK.String() + ")"
	}
	d = append(d, synack)
	if p.OnRepeatSYN.Resend && p.OnRepeatSYN != host.OnRepeatSYN {
		d = append(d, "a client's repeated SYN is answered by the host kernel ("+host.OnRepeatSYN.String()+"), not as this system answers it ("+p.OnRepeatSYN.String()+")")
	}
	if !p.HalfOpen.Shared {
		switch p.OnACKFull {
		case backlog.ACKDrop:
			d = append(d, "a final ACK that finds the queue full is not dropped: the kernel has completed the handshake, so the connection waits in the shaper until accept() frees a slot (a listener of another program: it waits in that listener's queue, beside the emulated one)")
		case backlog.ACKReset:
			d = append(d, "a final ACK that finds the queue full is reset once the kernel has completed the handshake: the client may have sent data by then")
		}
	}
	d = append(d, "a handshake counts as half-open from its SYN until the shaper sees it completed (at once on its own listener; within 2 ms, or at the next SYN, on another program's)")
	if p.HalfOpen.OnFull == backlog.SYNCookie || p.HalfOpen.AlwaysCookie {
		d = append(d, "a SYN the system would answer with a SYN cookie is answered by the kernel as it answers any, and counted as a cookie")
	}
	if p.OnFull == backlog.SYNEvict {
		d = append(d, "an evicted half-open connection is dropped from the kernel's SYN queue (SOCK_DESTROY) without a reset; its client's ACK, if it comes, is answered with one")
	}
	if p.DeferredSlotReturn {
		d = append(d, "on another program's listener the shaper cannot see the accepting thread yield: a slot freed by accept() comes back at the next SYN")
	}
	return d
}
