// Package transport opens a listener with a personality and a backlog on
// one of the project's transports, and gives a way to dial it: the
// in-process netstack network, netstack attached to a TUN device for this
// host's kernel clients, or this host's kernel itself, with the personality
// emulated in front of the kernel's queue when it is not the host's own.
// The lab, serve and the conformance suite all open their listeners here,
// so the choice is made once.
package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
	"github.com/backlog-dev/backlog/netstack"
)

// The transports.
const (
	// Netstack is gVisor's TCP/IP in user space, where the gate decides
	// every SYN: in process, or over a TUN device (Config.TUN).
	Netstack = "netstack"
	// Kernel is this host's kernel.
	Kernel = "kernel"
)

// Names lists the transports, for messages.
var Names = []string{Netstack, Kernel}

// Config says what to open.
type Config struct {
	// Transport is Netstack (the default) or Kernel.
	Transport string
	// Personality is the system whose rules the listener follows. The zero
	// value means this host's, with its settings where they can be read
	// (kernel.HostPersonality).
	Personality backlog.Personality
	// Backlog is the number passed to listen(), as it is: 0 means 0.
	Backlog int
	// Network and Address are where to listen: by default "tcp4" on
	// 127.0.0.1 with a free port on the kernel, "tcp" on port 80 of the
	// server host on netstack. On a TUN device the host is the device's
	// user-space address.
	Network, Address string
	// TUN, for Netstack, attaches the server host to a TUN device instead
	// of an in-process network: clients are then this host's kernel's.
	TUN *netstack.TUNConfig
	// Emulate, for Kernel, emulates the personality even when it is the
	// host's own.
	Emulate bool
	// Emulation, for Kernel, says how an emulated personality is
	// followed: kernel.ListenConfig.Emulation.
	Emulation kernel.Emulation
	// ReusePort, for Kernel, sets SO_REUSEPORT.
	ReusePort bool
	// Overload is the listener's overload policy (backlog.Overload); the
	// zero value is none. On the kernel it needs the host's own rules
	// (no emulation).
	Overload backlog.Overload
	// Logger receives the kernel's warning about a clamped backlog. Nil
	// discards it.
	Logger *slog.Logger
}

// A Server is an open listener and the way clients reach it.
type Server struct {
	// Listener is the listener.
	Listener backlog.Listener
	// Transport and Personality are what it runs on and under.
	Transport   string
	Personality backlog.Personality
	// Emulated is set on the kernel transport when a queue with the
	// personality's rules sits in front of the kernel's (package kernel
	// says what that reproduces).
	Emulated bool
	// Target is the address clients dial.
	Target string

	dial    func(ctx context.Context, laddr string) (net.Conn, error)
	network *netstack.Network // in process
	host    *netstack.Host    // over TUN
	client  string            // the clients' own address, for DialFrom
}

// Open opens a listener as cfg says.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Personality.Name == "" {
		cfg.Personality = Host()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Transport {
	case "", Netstack:
		if cfg.TUN != nil {
			return openTUN(ctx, cfg)
		}
		return openNetstack(ctx, cfg)
	case Kernel:
		return openKernel(ctx, cfg)
	}
	return nil, fmt.Errorf("unknown transport %q; valid: %s, %s", cfg.Transport, Netstack, Kernel)
}

// Host returns the rules of the kernel this program runs on, with its
// settings where they can be read, and its system's defaults otherwise.
func Host() backlog.Personality {
	if p, err := kernel.HostPersonality(); err == nil {
		return p
	}
	return backlog.Host()
}

// Emulates reports whether the kernel transport puts a queue with p's rules
// in front of the kernel's: whenever p is not the host's own.
func Emulates(p backlog.Personality) bool {
	host, err := kernel.HostPersonality()
	return err != nil || host.String() != p.String()
}

func openKernel(ctx context.Context, cfg Config) (*Server, error) {
	network, address := cfg.Network, cfg.Address
	if address == "" {
		network, address = "tcp4", "127.0.0.1:0"
	}
	if network == "" {
		network = "tcp"
	}
	lc := kernel.ListenConfig{Backlog: backlog.Exactly(cfg.Backlog), ReusePort: cfg.ReusePort, Logger: cfg.Logger, Emulation: cfg.Emulation, Overload: cfg.Overload}
	emulated := cfg.Emulate || Emulates(cfg.Personality)
	if emulated {
		lc.Personality = cfg.Personality
	}
	l, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	target := dialable(l.Addr().(*net.TCPAddr))
	return &Server{
		Listener: l, Transport: Kernel, Personality: cfg.Personality, Emulated: emulated, Target: target,
		client: "127.0.0.1", dial: kernelDial(target),
	}, nil
}

// kernelDial returns a dial function for clients of this host's kernel. A
// client given its local port may take it while an earlier connection from
// it lingers in TIME_WAIT (SO_REUSEADDR), as a client that reuses ports on
// purpose does.
func kernelDial(target string) func(ctx context.Context, laddr string) (net.Conn, error) {
	return func(ctx context.Context, laddr string) (net.Conn, error) {
		var d net.Dialer
		if laddr != "" {
			a, err := net.ResolveTCPAddr("tcp", laddr)
			if err != nil {
				return nil, err
			}
			d.LocalAddr = a
			d.Control = reuseAddr
		}
		return d.DialContext(ctx, "tcp", target)
	}
}

// dialable returns the address a client of this host dials to reach a
// listener on a: loopback for a wildcard.
func dialable(a *net.TCPAddr) string {
	ip := a.IP
	switch {
	case ip.Equal(net.IPv6zero):
		ip = net.IPv6loopback
	case ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

// netstackAddress is where a netstack listener listens: by default "tcp"
// on port 80 of the server host.
func (c Config) netstackAddress() (network, address string) {
	network, address = c.Network, c.Address
	if network == "" {
		network = "tcp"
	}
	if address == "" {
		address = ":80"
	}
	return network, address
}

func (c Config) netstackConfig() *netstack.ListenConfig {
	return &netstack.ListenConfig{Personality: c.Personality, Backlog: backlog.Exactly(c.Backlog), Overload: c.Overload}
}

func openNetstack(ctx context.Context, cfg Config) (*Server, error) {
	n := netstack.NewNetwork(nil)
	srv, err := n.NewHost()
	if err != nil {
		n.Close()
		return nil, err
	}
	cli, err := n.NewHost()
	if err != nil {
		n.Close()
		return nil, err
	}
	network, address := cfg.netstackAddress()
	l, err := srv.Listen(ctx, network, address, cfg.netstackConfig())
	if err != nil {
		n.Close()
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	target := net.JoinHostPort(srv.Addrs()[0].String(), strconv.Itoa(port))
	return &Server{
		Listener: l, Transport: Netstack, Personality: cfg.Personality, Target: target,
		network: n, client: cli.Addrs()[0].String(),
		dial: func(ctx context.Context, laddr string) (net.Conn, error) {
			return cli.DialFrom(ctx, "tcp", laddr, target)
		},
	}, nil
}

func openTUN(ctx context.Context, cfg Config) (*Server, error) {
	h, err := netstack.AttachTUN(*cfg.TUN)
	if err != nil {
		return nil, err
	}
	network, address := cfg.netstackAddress()
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		h.Close()
		return nil, err
	}
	if host == "" || host == "0.0.0.0" {
		host = cfg.TUN.Addrs[0].String()
	}
	l, err := h.Listen(ctx, network, net.JoinHostPort(host, port), cfg.netstackConfig())
	if err != nil {
		h.Close()
		return nil, err
	}
	target := net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	client := ""
	if p := cfg.TUN.KernelPrefix; p.IsValid() {
		client = p.Addr().String()
	}
	return &Server{
		Listener: l, Transport: Netstack, Personality: cfg.Personality, Target: target,
		host: h, client: client, dial: kernelDial(target),
	}, nil
}

// Dial connects a client to the listener.
func (s *Server) Dial(ctx context.Context) (net.Conn, error) { return s.dial(ctx, "") }

// DialFrom connects a client from the given port of the clients' address,
// so that a test can tell its clients apart by port.
func (s *Server) DialFrom(ctx context.Context, port int) (net.Conn, error) {
	host := s.client
	if host == "" {
		host = "0.0.0.0"
	}
	return s.dial(ctx, net.JoinHostPort(host, strconv.Itoa(port)))
}

// Close closes the listener and whatever it runs on. A second Close
// returns the listener's error for it.
func (s *Server) Close() error {
	err := s.Listener.Close()
	if s.network != nil {
		s.network.Close()
	}
	if s.host != nil {
		s.host.Close()
	}
	return err
}
