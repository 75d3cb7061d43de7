package netstack

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// NetworkConfig configures an in-process network. The zero value works.
type NetworkConfig struct {
	// Clock drives every timer of every host: retransmissions, SYN-ACK
	// schedules, TIME_WAIT. Nil means the real clock. Tests pass a
	// faketime.ManualClock to run minutes of TCP timers in no time.
	Clock tcpip.Clock
	// MTU is the link MTU. Zero means 1500.
	MTU uint32
	// QueueLen is how many packets may wait for delivery to one host
	// before more are dropped, as a NIC's ring would. Zero means 4096.
	QueueLen int
}

// A Network joins in-process hosts: a packet one host sends reaches the host
// that has its destination address, through a bounded queue and a goroutine
// per host, like a NIC's receive ring. Nothing leaves the process.
type Network struct {
	clock    tcpip.Clock
	mtu      uint32
	queueLen int

	mu     sync.RWMutex
	hosts  map[tcpip.Address]*Host
	all    []*Host
	next   uint32 // last host number handed out
	closed bool

	// dropped counts packets dropped because a host's queue was full or
	// their destination unknown.
	dropped atomic.Uint64

	// tap, if set, sees every packet sent on the network, before delivery.
	tap atomic.Pointer[func(b []byte)]
}

// NewNetwork returns an empty network.
func NewNetwork(cfg *NetworkConfig) *Network {
	var c NetworkConfig
	if cfg != nil {
		c = *cfg
	}
	if c.Clock == nil {
		c.Clock = tcpip.NewStdClock()
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.QueueLen == 0 {
		c.QueueLen = 4096
	}
	return &Network{clock: c.Clock, mtu: c.MTU, queueLen: c.QueueLen, hosts: map[tcpip.Address]*Host{}}
}

// ErrNetworkClosed is returned for a host added to a closed network.
var ErrNetworkClosed = errors.New("netstack: network closed")

// NewHost adds a host with the given addresses. With none, the host gets the
// next free pair from 198.18.0.0/15 (the benchmarking range) and
// fdb1:ac6::/64: 198.18.0.1 and fdb1:ac6::1 for the first host, and so on.
func (n *Network) NewHost(addrs ...netip.Addr) (*Host, error) { return n.newHost(true, addrs...) }

// newHost adds a host, gated or not (see newHostGated).
func (n *Network) newHost(gated bool, addrs ...netip.Addr) (*Host, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrNetworkClosed
	}
	if len(addrs) == 0 {
		n.next++
		v4 := netip.AddrFrom4([4]byte{198, 18, byte(n.next >> 8), byte(n.next)})
		v6 := netip.MustParseAddr(fmt.Sprintf("fdb1:ac6::%x", n.next))
		addrs = []netip.Addr{v4, v6}
	}
	for _, a := range addrs {
		if _, taken := n.hosts[addrOf(a)]; taken {
			n.mu.Unlock()
			return nil, fmt.Errorf("netstack: address %v is taken", a)
		}
	}
	n.mu.Unlock()

	p := &port{net: n, in: make(chan []byte, n.queueLen), done: make(chan struct{})}
	h, err := newHostGated(n.clock, p, n.mtu, addrs, nil, gated)
	if err != nil {
		return nil, err
	}
	p.host = h

	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		h.close()
		return nil, ErrNetworkClosed
	}
	for _, a := range addrs {
		if _, taken := n.hosts[addrOf(a)]; taken {
			h.close()
			return nil, fmt.Errorf("netstack: address %v is taken", a)
		}
	}
	for _, a := range addrs {
		n.hosts[addrOf(a)] = h
	}
	n.all = append(n.all, h)
	h.onClose = func() { n.forget(h) }
	h.net = n
	p.wg.Add(1)
	go p.pump()
	return h, nil
}

// owned reports whether a host of the network has the address a.
func (n *Network) owned(a tcpip.Address) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	_, ok := n.hosts[a]
	return ok
}

// Dropped returns how many packets the network dropped: destination unknown
// or the destination host's queue full.
func (n *Network) Dropped() uint64 { return n.dropped.Load() }

// Close closes every host and stops the network's goroutines.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.all
	n.all, n.hosts = nil, nil
	n.mu.Unlock()
	for _, h := range hosts {
		h.close()
	}
	return nil
}

// forget removes a closed host, freeing its addresses.
func (n *Network) forget(h *Host) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for a, x := range n.hosts {
		if x == h {
			delete(n.hosts, a)
		}
	}
	n.all = slices.DeleteFunc(n.all, func(x *Host) bool { return x == h })
}

// deliver queues b for the host that has dst.
func (n *Network) deliver(dst tcpip.Address, b []byte) {
	if tap := n.tap.Load(); tap != nil {
		(*tap)(b)
	}
	n.mu.RLock()
	h := n.hosts[dst]
	n.mu.RUnlock()
	if h == nil {
		n.dropped.Add(1)
		return
	}
	p := h.link.(*port)
	select {
	case <-p.done:
	case p.in <- b:
	default:
		n.dropped.Add(1)
	}
}

func addrOf(a netip.Addr) tcpip.Address {
	a = a.Unmap()
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// port is a host's link to the network: an IP-level link endpoint (no link
// header, no address resolution) whose writes go to the destination host's
// queue.
type port struct {
	net  *Network
	host *Host
	in   chan []byte
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
}

// pump delivers queued packets to the host, one at a time.
func (p *port) pump() {
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case b := <-p.in:
			p.mu.RLock()
			d := p.dispatcher
			p.mu.RUnlock()
			if d == nil {
				continue
			}
			pkt := newPacket(b)
			d.DeliverNetworkPacket(protoOf(b), pkt)
			pkt.DecRef()
		}
	}
}

func (p *port) stop() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}

// WritePackets implements stack.LinkWriter: each packet goes to the host
// that has its destination address.
func (p *port) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		b := append([]byte(nil), v.AsSlice()...)
		v.Release()
		var dst tcpip.Address
		switch protoOf(b) {
		case header.IPv6ProtocolNumber:
			if len(b) < header.IPv6MinimumSize {
				continue
			}
			dst = header.IPv6(b).DestinationAddress()
		default:
			if len(b) < header.IPv4MinimumSize {
				continue
			}
			dst = header.IPv4(b).DestinationAddress()
		}
		p.net.deliver(dst, b)
	}
	return pkts.Len(), nil
}

func (p *port) Attach(d stack.NetworkDispatcher) {
	p.mu.Lock()
	p.dispatcher = d
	p.mu.Unlock()
}

func (p *port) IsAttached() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.dispatcher != nil
}

func (p *port) MTU() uint32                                  { return p.net.mtu }
func (p *port) SetMTU(uint32)                                {}
func (p *port) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (p *port) MaxHeaderLength() uint16                      { return 0 }
func (p *port) LinkAddress() tcpip.LinkAddress               { return "" }
func (p *port) SetLinkAddress(tcpip.LinkAddress)             {}
func (p *port) Wait()                                        {}
func (p *port) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (p *port) AddHeader(*stack.PacketBuffer)                {}
func (p *port) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (p *port) Close()                                       {}
func (p *port) SetOnCloseAction(func())                      {}
