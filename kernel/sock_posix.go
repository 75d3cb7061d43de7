//go:build linux || darwin || freebsd

package kernel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"golang.org/x/sys/unix"
)

// sysListener is the system side of a Listener on systems where this
// package creates the socket itself.
type sysListener struct {
	// rc reaches the runtime's descriptor for the socket, for getsockopt
	// and listen() again.
	rc    syscall.RawConn
	unix  bool
	inode uint64
	// family is the socket's address family: AF_INET, AF_INET6 (dual-stack
	// too) or AF_UNIX.
	family uint8
	// requested is the backlog last passed to listen().
	requested atomic.Int64

	// spare is the descriptor held back for shedding, or -1.
	spareMu sync.Mutex
	spare   int
}

// endpoint is a resolved local address and the socket that binds it.
type endpoint struct {
	family int
	v6only bool
	// dual is set for "tcp" on a wildcard address, which falls back to
	// IPv4 alone where IPv6 is unavailable.
	dual    bool
	port    int
	addr    netip.Addr
	path    string // unix
	zoneID  uint32
	network string // "tcp4", "tcp6" or "unix", for Control
}

func (e endpoint) sockaddr() unix.Sockaddr {
	switch e.family {
	case unix.AF_UNIX:
		return &unix.SockaddrUnix{Name: e.path}
	case unix.AF_INET:
		return &unix.SockaddrInet4{Port: e.port, Addr: e.addr.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: e.port, Addr: e.addr.As16(), ZoneId: e.zoneID}
}

// netAddr is the address as the net package shows it, for errors.
func (e endpoint) netAddr() net.Addr {
	if e.family == unix.AF_UNIX {
		return &net.UnixAddr{Name: e.path, Net: "unix"}
	}
	a := &net.TCPAddr{Port: e.port, Zone: e.addr.Zone()}
	if !e.dual {
		a.IP = e.addr.AsSlice()
	}
	return a
}

// resolve turns network and address into an endpoint, choosing the address
// family as net.Listen does (net/ipsock_posix.go favoriteAddrFamily): "tcp"
// on a wildcard address is one IPv6 socket that also accepts IPv4, "tcp6" is
// IPv6 only, "tcp4" IPv4 only.
func resolve(ctx context.Context, network, address string) (endpoint, error) {
	if network == "unix" {
		if address == "" {
			return endpoint{}, &net.AddrError{Err: "missing address", Addr: address}
		}
		return endpoint{family: unix.AF_UNIX, path: address, network: "unix"}, nil
	}
	host, service, err := net.SplitHostPort(address)
	if err != nil {
		return endpoint{}, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, network, service)
	if err != nil {
		return endpoint{}, err
	}
	var ip netip.Addr
	if host != "" {
		ip, err = netip.ParseAddr(host)
		if err != nil {
			ip, err = lookupHost(ctx, network, host)
			if err != nil {
				return endpoint{}, err
			}
		}
	}
	e := endpoint{port: port, addr: ip}
	if z := ip.Zone(); z != "" {
		if id, err := strconv.ParseUint(z, 10, 32); err == nil {
			e.zoneID = uint32(id)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			e.zoneID = uint32(ifi.Index)
		} else {
			return endpoint{}, err
		}
	}
	wildcard := !ip.IsValid() || ip.IsUnspecified()
	switch {
	case network == "tcp4":
		if ip.IsValid() && !ip.Unmap().Is4() {
			return endpoint{}, &net.AddrError{Err: "no suitable address found", Addr: address}
		}
		if !ip.IsValid() {
			e.addr = netip.IPv4Unspecified()
		}
		e.family, e.network = unix.AF_INET, "tcp4"
	case network == "tcp6":
		if ip.Is4() {
			return endpoint{}, &net.AddrError{Err: "no suitable address found", Addr: address}
		}
		if !ip.IsValid() {
			e.addr = netip.IPv6Unspecified()
		}
		e.family, e.v6only, e.network = unix.AF_INET6, true, "tcp6"
	case wildcard:
		e.family, e.dual, e.network = unix.AF_INET6, true, "tcp6"
		e.addr = netip.IPv6Unspecified()
	case ip.Unmap().Is4():
		e.family, e.network = unix.AF_INET, "tcp4"
	default:
		e.family, e.network = unix.AF_INET6, "tcp6"
	}
	return e, nil
}

// lookupHost resolves a host name and, as net.Listen does, listens on the
// first IPv4 address when the network allows one.
func lookupHost(ctx context.Context, network, host string) (netip.Addr, error) {
	ipNet := map[string]string{"tcp": "ip", "tcp4": "ip4", "tcp6": "ip6"}[network]
	ips, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() && network != "tcp6" {
			return ip.Unmap(), nil
		}
	}
	for _, ip := range ips {
		if ip.Is6() && !ip.Is4In6() {
			return ip, nil
		}
	}
	return netip.Addr{}, &net.AddrError{Err: "no suitable address found", Addr: host}
}

// sysListen creates, binds and listens on a socket with backlog n, then
// hands it to the runtime's network poller through net.FileListener (which
// keeps a duplicate; the original is closed here).
func (lc *ListenConfig) sysListen(ctx context.Context, network, address string, n int, _ bool) (net.Listener, *sysListener, error) {
	e, err := resolve(ctx, network, address)
	if err != nil {
		return nil, nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	fd, call, err := lc.socket(&e, n)
	if err != nil {
		if call != "" {
			err = os.NewSyscallError(call, err)
		}
		return nil, nil, &net.OpError{Op: "listen", Net: network, Addr: e.netAddr(), Err: err}
	}
	s := &sysListener{unix: e.family == unix.AF_UNIX, family: uint8(e.family), spare: -1}
	s.requested.Store(int64(n))
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		s.inode = uint64(st.Ino)
	}
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, nil, &net.OpError{Op: "listen", Net: network, Addr: e.netAddr(), Err: err}
	}
	if ul, ok := ln.(*net.UnixListener); ok && e.path[0] != '@' {
		ul.SetUnlinkOnClose(true)
	}
	if s.rc, err = ln.(syscall.Conn).SyscallConn(); err != nil {
		ln.Close()
		return nil, nil, &net.OpError{Op: "listen", Net: network, Addr: e.netAddr(), Err: err}
	}
	if lc.ShedLoad {
		if s.spare, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			ln.Close()
			return nil, nil, &net.OpError{Op: "listen", Net: network, Addr: ln.Addr(), Err: os.NewSyscallError("open", err)}
		}
	}
	return ln, s, nil
}

// socket creates the listening socket. On failure it returns the name of
// the system call that failed, if any.
func (lc *ListenConfig) socket(e *endpoint, n int) (fd int, call string, err error) {
	sotype := unix.SOCK_STREAM
	fd, err = newSocket(e.family, sotype)
	if err != nil && e.dual && errors.Is(err, unix.EAFNOSUPPORT) {
		// No IPv6 here: the wildcard listens on IPv4 alone.
		e.family, e.dual, e.network, e.addr = unix.AF_INET, false, "tcp4", netip.IPv4Unspecified()
		fd, err = newSocket(e.family, sotype)
	}
	if err != nil {
		return -1, "socket", err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	isTCP := e.family != unix.AF_UNIX
	if isTCP {
		// As net.Listen does (net/sockopt_posix.go
		// setDefaultListenerSockopts), so that a restarted server can
		// bind while old connections linger in TIME_WAIT.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return -1, "setsockopt", err
		}
	}
	if e.family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(e.v6only)); err != nil {
			return -1, "setsockopt", err
		}
	}
	if lc.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return -1, "setsockopt", err
		}
	}
	if lc.Control != nil {
		addr := e.netAddr().String()
		if err := lc.Control(e.network, addr, fdConn(fd)); err != nil {
			return -1, "", err
		}
	}
	if err := unix.Bind(fd, e.sockaddr()); err != nil {
		return -1, "bind", err
	}
	if lc.DeferAccept != 0 {
		if !isTCP {
			return -1, "", unsupported("TCP_DEFER_ACCEPT on a unix socket")
		}
		if call, err := setDeferAccept(fd, lc.DeferAccept); err != nil {
			return -1, call, err
		}
	}
	if lc.FastOpen != 0 {
		if !isTCP {
			return -1, "", unsupported("TCP_FASTOPEN on a unix socket")
		}
		if call, err := setFastOpen(fd, lc.FastOpen); err != nil {
			return -1, call, err
		}
	}
	if err := unix.Listen(fd, int(backlog.CInt(n))); err != nil {
		return -1, "listen", err
	}
	ok = true
	return fd, "", nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fdConn is the syscall.RawConn a Control hook receives: the socket before
// the runtime knows it.
type fdConn int

func (c fdConn) Control(f func(fd uintptr)) error { f(uintptr(c)); return nil }

func (c fdConn) Read(func(fd uintptr) bool) error {
	return unsupported("Read on a socket that is not yet listening")
}

func (c fdConn) Write(func(fd uintptr) bool) error {
	return unsupported("Write on a socket that is not yet listening")
}

// listen calls listen() again on the live socket.
func (s *sysListener) listen(n int) error {
	var lerr error
	err := s.rc.Control(func(fd uintptr) {
		lerr = unix.Listen(int(fd), int(backlog.CInt(n)))
	})
	if err != nil {
		return err
	}
	if lerr != nil {
		return os.NewSyscallError("listen", lerr)
	}
	s.requested.Store(int64(n))
	return nil
}

// computed returns the backlog the host stores for a request of n,
// computed from its somaxconn and the clamp rule of its personality: the
// value reported where the kernel cannot be asked.
func (s *sysListener) computed(n int) int {
	p := backlog.Host()
	if limit, err := Somaxconn(); err == nil {
		p.Clamp.Max = limit
	}
	return p.Stored(n)
}

// shed handles one waiting client while the process has no free
// descriptor. It waits up to wait for a connection to be in the kernel's
// queue (poll(2) on the listening socket, which takes no descriptor),
// keeping the spare meanwhile, and fails with errNoClient if none came: the
// spare is given up only when accept() can take the client at once, so
// that nothing else in the process takes the descriptor while the listener
// waits. Then it closes the spare, accepts through ln, and reopens the
// spare. If the spare cannot be reopened, descriptors are still exhausted
// and the client is reset (shed is true). If it can, descriptors have come
// back and the client is returned. It fails with errNoSpare when no spare
// is held and none can be opened, or when something else took the freed
// descriptor first.
//
// net.TCPListener's raw connection cannot wait for readability
// (net/rawconn.go rawListener.Read fails with EINVAL), so the wait is a
// poll(2) of the socket inside RawConn.Control.
func (s *sysListener) shed(ln net.Listener, wait time.Duration) (c net.Conn, shed bool, err error) {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	if s.spare < 0 {
		if s.spare = openSpare(); s.spare < 0 {
			return nil, false, errNoSpare
		}
	}
	if ready, err := s.readable(wait); err != nil {
		return nil, false, err
	} else if !ready {
		return nil, false, errNoClient
	}
	unix.Close(s.spare)
	c, err = ln.Accept()
	s.spare = openSpare()
	switch {
	case err != nil && starved(err):
		return nil, false, errNoSpare
	case err != nil:
		return nil, false, err
	case s.spare >= 0:
		return c, false, nil
	}
	abort(c)
	s.spare = openSpare()
	return nil, true, nil
}

// readable reports whether a connection waits in the listening socket's
// queue, waiting up to d for one.
func (s *sysListener) readable(d time.Duration) (bool, error) {
	var n int
	var perr error
	err := s.rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, perr = unix.Poll(fds, int(d/time.Millisecond))
			if perr != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return false, err
	}
	if perr != nil {
		return false, os.NewSyscallError("poll", perr)
	}
	return n > 0, nil
}

// openSpare opens the descriptor held back for shedding, or returns -1.
func openSpare() int {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// close releases the spare descriptor. The socket itself belongs to the
// net.Listener.
func (s *sysListener) close() error {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	if s.spare >= 0 {
		unix.Close(s.spare)
		s.spare = -1
	}
	return nil
}
