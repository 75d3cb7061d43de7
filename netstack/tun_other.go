//go:build !linux

package netstack

import (
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// TUNConfig configures AttachTUN.
type TUNConfig struct {
	Name         string
	Addrs        []netip.Addr
	MTU          uint32
	Clock        tcpip.Clock
	KernelPrefix netip.Prefix
}

// AttachTUN needs Linux; elsewhere it returns an error.
func AttachTUN(cfg TUNConfig) (*Host, error) {
	return nil, errors.New("netstack: TUN attachment needs Linux")
}
