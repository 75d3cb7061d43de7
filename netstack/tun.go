package netstack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// TUNConfig configures AttachTUN.
type TUNConfig struct {
	// Name is the TUN device, created if it does not exist ("tun0").
	Name string
	// Addrs are the user-space host's addresses. At least one is needed.
	Addrs []netip.Addr
	// MTU is the link MTU; zero means 1500.
	MTU uint32
	// Clock drives the host's timers; nil means the real clock.
	Clock tcpip.Clock
	// KernelPrefix, when valid, is given to the device on the kernel's
	// side (an IPv4 address and its prefix, "198.18.0.1/15"), so that the
	// kernel routes the prefix, and the host's addresses in it, to the
	// device. The zero value leaves the kernel's side to the caller.
	KernelPrefix netip.Prefix
}
