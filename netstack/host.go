package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const nicID tcpip.NICID = 1

// A Host is one user-space TCP/IP stack (gVisor's netstack) with its
// addresses. Its listeners follow a personality at every SYN and final ACK;
// its clients are ordinary gVisor TCP clients.
type Host struct {
	stack *stack.Stack
	link  stack.LinkEndpoint // what the gate wraps: a network port or a TUN device
	gate  *gate
	addrs []netip.Addr

	// net is the in-process network the host is on, or nil.
	net *Network

	closeOnce sync.Once
	onClose   func()
}

// newHost builds a stack on link with the given addresses. onClose, if not
// nil, runs after the stack is gone.
func newHost(clock tcpip.Clock, link stack.LinkEndpoint, mtu uint32, addrs []netip.Addr, onClose func()) (*Host, error) {
	return newHostGated(clock, link, mtu, addrs, onClose, true)
}

// newHostGated is newHost, with or without a gate: a host without one is
// gVisor's stack and nothing else, the baseline the benchmarks hold the
// gate against; it has no listeners of this package.
func newHostGated(clock tcpip.Clock, link stack.LinkEndpoint, mtu uint32, addrs []netip.Addr, onClose func(), gated bool) (*Host, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
		Clock:              clock,
		// A connection to the host's own address leaves through the
		// link and comes back through the gate, so that its listeners'
		// rules hold for it too: gVisor's local shortcut would pass it
		// to the listener unseen.
		HandleLocal: false,
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	h := &Host{stack: s, link: link, addrs: addrs, onClose: onClose}
	var nic stack.LinkEndpoint = link
	if gated {
		h.gate = newGate(s, link, mtu)
		nic = h.gate
	}
	if err := s.CreateNICWithOptions(nicID, nic, stack.NICOptions{}); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("netstack: creating NIC: %s", err)
	}
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() && !a.Is4In6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: addrOf(a).WithPrefix()}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			s.Destroy()
			return nil, fmt.Errorf("netstack: adding address %v: %s", a, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return h, nil
}

// Addrs returns the host's addresses.
func (h *Host) Addrs() []netip.Addr { return append([]netip.Addr(nil), h.addrs...) }

// addr returns the host's first address of the family asked for: IPv6 if
// v6 is set, IPv4 otherwise.
func (h *Host) addr(v6 bool) (netip.Addr, bool) {
	for _, a := range h.addrs {
		if a.Is6() == v6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Stack returns the host's gVisor stack, for what this package does not
// wrap.
func (h *Host) Stack() *stack.Stack { return h.stack }

// Close shuts the host down: its connections and listeners end and its
// goroutines stop. Hosts of a Network are closed with the network.
func (h *Host) Close() error {
	h.close()
	return nil
}

func (h *Host) close() {
	h.closeOnce.Do(func() {
		if h.gate != nil {
			h.gate.close()
		}
		// What delivers packets stops first: a reader of the link
		// blocked on the stack's lock while the stack removes the NIC
		// under that lock would wait forever, since fdbased's Attach(nil)
		// waits for its readers.
		if p, ok := h.link.(*port); ok {
			p.stop()
		} else {
			h.link.Attach(nil)
		}
		h.stack.Close()
		h.stack.Wait()
		h.stack.Destroy()
		if h.onClose != nil {
			h.onClose()
		}
	})
}

// resolve turns "host:port" into a gVisor address on network "tcp", "tcp4"
// or "tcp6". An empty host means any address of the family ("tcp" means
// IPv4).
func resolve(network, address string) (tcpip.FullAddress, tcpip.NetworkProtocolNumber, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return tcpip.FullAddress{}, 0, err
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return tcpip.FullAddress{}, 0, fmt.Errorf("invalid port %q", portStr)
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: uint16(p)}
	proto := ipv4.ProtocolNumber
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return fa, 0, fmt.Errorf("%q is not an IP address (an in-process network has no names)", host)
		}
		a = a.Unmap()
		if !a.IsUnspecified() {
			fa.Addr = addrOf(a)
		}
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
	}
	switch network {
	case "tcp":
	case "tcp4":
		if proto != ipv4.ProtocolNumber {
			return fa, 0, fmt.Errorf("%s is not an IPv4 address", host)
		}
	case "tcp6":
		proto = ipv6.ProtocolNumber
		if host != "" && fa.Addr.Len() == 4 {
			return fa, 0, fmt.Errorf("%s is not an IPv6 address", host)
		}
	default:
		return fa, 0, net.UnknownNetworkError(network)
	}
	return fa, proto, nil
}

// Dial connects to address on the named network ("tcp", "tcp4" or "tcp6")
// from this host. Errors are *net.OpError values that wrap an errno: a
// refused connection satisfies errors.Is(err, syscall.ECONNREFUSED), a
// reset one syscall.ECONNRESET, one that timed out in TCP
// syscall.ETIMEDOUT; when ctx ends first, the error wraps ctx.Err().
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return h.DialFrom(ctx, network, "", address)
}

// DialFrom is Dial from the local address laddr ("host:port"; an empty
// host or port 0 lets the host choose).
func (h *Host) DialFrom(ctx context.Context, network, laddr, address string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	fa, proto, err := resolve(network, address)
	if err != nil {
		return nil, opErr(err)
	}
	if fa.Addr.BitLen() == 0 {
		// An unspecified destination is this host, as on Linux
		// (net/ipv4/route.c ip_route_output_key_hash_rcu), so that a
		// listener on a wildcard address is reached through its Addr.
		a, ok := h.addr(proto == ipv6.ProtocolNumber)
		if !ok && network == "tcp" {
			a, ok = h.addr(proto != ipv6.ProtocolNumber)
		}
		if !ok {
			return nil, opErr(os.NewSyscallError("connect", syscall.EADDRNOTAVAIL))
		}
		fa.Addr = addrOf(a)
		if a.Is4() {
			proto = ipv4.ProtocolNumber
		}
	}
	if h.net != nil && !h.net.owned(fa.Addr) {
		// No host of the network has the address: nothing would ever
		// answer, and on a real network the last router would say so.
		return nil, opErr(os.NewSyscallError("connect", syscall.EHOSTUNREACH))
	}
	var wq waiter.Queue
	ep, terr := h.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, opErr(errnoOf(terr, "socket"))
	}
	if laddr != "" {
		la, _, err := resolve(network, laddr)
		if err != nil {
			ep.Close()
			return nil, opErr(err)
		}
		ep.SocketOptions().SetReuseAddress(true)
		if terr := ep.Bind(la); terr != nil {
			ep.Close()
			return nil, opErr(errnoOf(terr, "bind"))
		}
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(fa)
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Abort()
			return nil, opErr(ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(errnoOf(terr, "connect"))
	}
	return newConn(gonet.NewTCPConn(&wq, ep), ep), nil
}

// stringAddr is a net.Addr for a dial target that did not parse.
type stringAddr struct{ net, addr string }

func (a stringAddr) Network() string { return a.net }
func (a stringAddr) String() string  { return a.addr }

// errnoOf maps a gVisor error onto the errno a Linux socket would return,
// wrapped as an *os.SyscallError naming call.
func errnoOf(err tcpip.Error, call string) error {
	return os.NewSyscallError(call, errnoFor(err))
}

func errnoFor(err tcpip.Error) syscall.Errno {
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress, *tcpip.ErrNoPortAvailable:
		// Linux answers an exhausted ephemeral port range with
		// EADDRNOTAVAIL too (net/ipv4/inet_hashtables.c
		// __inet_hash_connect).
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrClosedForSend, *tcpip.ErrClosedForReceive:
		return syscall.EPIPE
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN
	case *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN
	case *tcpip.ErrConnectStarted, *tcpip.ErrAlreadyConnecting:
		return syscall.EALREADY
	case *tcpip.ErrNoBufferSpace:
		return syscall.ENOBUFS
	case *tcpip.ErrNotSupported:
		return syscall.EOPNOTSUPP
	case *tcpip.ErrWouldBlock:
		return syscall.EAGAIN
	case *tcpip.ErrMessageTooLong:
		return syscall.EMSGSIZE
	}
	return syscall.EINVAL
}
