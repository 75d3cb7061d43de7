package netstack

import (
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
)

// AttachTUN returns a host whose link is a TUN device, so that programs using
// the kernel's TCP reach its listeners. The device is opened (or created) in
// the network namespace of the calling thread and brought up. Routing the
// host's addresses to it is done with KernelPrefix, or by the caller, for
// example with "ip addr add 198.18.0.1/15 dev tun0" when the host has
// 198.18.0.2. Needs CAP_NET_ADMIN. Close the host with Host.Close.
func AttachTUN(cfg TUNConfig) (*Host, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("netstack: AttachTUN needs a device name")
	}
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("netstack: AttachTUN needs the host's addresses")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Clock == nil {
		cfg.Clock = tcpip.NewStdClock()
	}
	fd, err := tun.Open(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("netstack: opening TUN device %s: %w", cfg.Name, err)
	}
	if err := linkUp(cfg.Name, cfg.MTU, cfg.KernelPrefix); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// One processor: packets reach the gate in the order they came off the
	// device, as on a kernel's receive path. gVisor's default spreads
	// them over GOMAXPROCS goroutines by a hash of the 4-tuple, so that of
	// two SYNs racing for one free slot either could be decided first.
	link, err := fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: cfg.MTU, ProcessorsPerChannel: 1})
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netstack: TUN link: %w", err)
	}
	h, err := newHost(cfg.Clock, link, cfg.MTU, cfg.Addrs, func() { unix.Close(fd) })
	if err != nil {
		link.Close()
		unix.Close(fd)
		return nil, err
	}
	return h, nil
}

// linkUp sets the device's MTU and, if valid, its kernel-side IPv4 address
// and netmask, and brings it up (SIOCSIFMTU, SIOCSIFADDR, SIOCSIFNETMASK,
// SIOCSIFFLAGS).
func linkUp(name string, mtu uint32, kernel netip.Prefix) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint32(mtu)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("netstack: setting MTU of %s: %w", name, err)
	}
	if kernel.IsValid() {
		if !kernel.Addr().Is4() {
			return fmt.Errorf("netstack: the kernel side of %s takes an IPv4 prefix, not %v", name, kernel)
		}
		a := kernel.Addr().As4()
		if err := ifr.SetInet4Addr(a[:]); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
			return fmt.Errorf("netstack: giving %s the address %v: %w", name, kernel.Addr(), err)
		}
		m := [4]byte{}
		for i := 0; i < kernel.Bits(); i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		if err := ifr.SetInet4Addr(m[:]); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
			return fmt.Errorf("netstack: setting the netmask of %s: %w", name, err)
		}
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netstack: reading flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netstack: bringing %s up: %w", name, err)
	}
	return nil
}
