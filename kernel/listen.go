package kernel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/overload"
)

// A ListenConfig says how to create a listening socket. Its zero value is
// valid and listens as net.Listen does.
type ListenConfig struct {
	// Backlog is passed to listen() exactly, with values beyond the range of
	// a C int saturated rather than truncated. Zero means the system
	// default, as net.Listen picks it (net.core.somaxconn on Linux), or
	// with a Personality the largest backlog it allows;
	// backlog.ZeroBacklog asks for 0 itself (one waiting connection on
	// Linux). Negative values (backlog.MaxBacklog) and values above the
	// system maximum, such as SOMAXCONN, ask for the maximum. The package
	// documentation of backlog has these rules in one place ("Saying the
	// backlog").
	Backlog int

	// ReusePort sets SO_REUSEPORT before bind, so several listeners can
	// share one address and the kernel spreads connections among them.
	// False leaves it unset.
	ReusePort bool

	// DeferAccept sets TCP_DEFER_ACCEPT on Linux: the kernel keeps a
	// connection out of the accept queue until its first data arrives, or
	// until about this long has passed (whole seconds, rounded up). Zero
	// leaves it unset. Elsewhere a non-zero value is an error.
	DeferAccept time.Duration

	// FastOpen enables TCP Fast Open with a queue of this many pending
	// Fast Open requests (TCP_FASTOPEN). Zero leaves it off. It also needs
	// the server bit of net.ipv4.tcp_fastopen on Linux.
	FastOpen int

	// Control, if not nil, is called after the socket is created and its
	// default options set, before bind, as net.ListenConfig.Control is.
	// network is "tcp4", "tcp6" or "unix"; address is the address to bind.
	Control func(network, address string, c syscall.RawConn) error

	// Personality, unless it is the zero value, puts a backlog.Queue with
	// these rules in front of the kernel's queue: see the package
	// documentation for what emulation reproduces and what it cannot. The
	// zero value means no emulation: the kernel's own rules.
	Personality backlog.Personality

	// Emulation says how a Personality is followed: at the SYN, by a
	// shaper that decides every SYN in user space before the kernel
	// answers it (Linux, with CAP_NET_ADMIN and iptables), or after
	// accept(), by resetting what the personality would not have queued.
	// The zero value, EmulateAuto, uses the shaper when it can and falls
	// back otherwise, logging why in one line (Listener.Emulation reports
	// it too). The package documentation says what each reproduces.
	Emulation Emulation

	// ShedLoad keeps a spare descriptor, and resets waiting clients while
	// the process has no free descriptor, instead of letting them wait.
	// False lets them wait until descriptors are back.
	ShedLoad bool

	// Logger receives the warning logged when the system stores a smaller
	// backlog than the one asked for. Nil means slog.Default().
	Logger *slog.Logger

	// SkipQueueWait leaves out the measure of each accepted connection's
	// time in the accept queue (Stats.QueueWait): on Linux one getsockopt
	// TCP_INFO per Accept, about 1 % of accept throughput (BENCHMARKS.md).
	// Stats.QueueWait is then unobserved. False measures it where the
	// system can (Linux TCP listeners).
	SkipQueueWait bool

	// Overload, unless it is the zero value, resets instead of serving
	// the connections that waited past its Target while the queue stands,
	// and can serve newest first and size the backlog (backlog.Overload
	// says how, and why). It needs the queue wait: Linux TCP listeners
	// only, without SkipQueueWait and without a Personality. The sheds are
	// counted in Stats.Overdue. The zero value changes nothing.
	Overload backlog.Overload
}

// Listen listens on address with the given backlog: it is ListenConfig{Backlog:
// backlog}.Listen with a background context.
func Listen(network, address string, backlog int) (*Listener, error) {
	lc := ListenConfig{Backlog: backlog}
	return lc.Listen(context.Background(), network, address)
}

// Listen creates a socket listening on address and returns it as a
// Listener. network is "tcp", "tcp4", "tcp6" or "unix", and address is as
// for net.Listen: "tcp" on a wildcard address listens on both IPv4 and IPv6,
// as net.Listen does. ctx bounds the name resolution only.
//
// Errors are *net.OpError values wrapping the failed system call, so
// errors.Is(err, syscall.EADDRINUSE) and the like work.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (*Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	logger := lc.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if lc.Personality.Name == "" {
		requested := backlog.ListenRequest(lc.Backlog, defaultBacklog())
		s, err := lc.listenSocket(ctx, network, address, requested, lc.Backlog != 0, logger)
		if err != nil {
			return nil, err
		}
		s.warnIfClamped(requested, s.Backlog())
		l := lc.newListener(s, s)
		if err := lc.applyOverload(l); err != nil {
			s.Close()
			return nil, &net.OpError{Op: "listen", Net: network, Addr: s.Addr(), Err: err}
		}
		return l, nil
	}
	if lc.Overload != (backlog.Overload{}) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: unsupported("an overload policy with a Personality: it applies to the kernel's own queue")}
	}
	// The kernel queue only has to hold connections until the emulation
	// takes them: give it all the room there is.
	requested := backlog.ListenRequest(lc.Backlog, math.MaxInt32)
	q, err := backlog.NewQueue[*pending](lc.Personality, requested)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	s, err := lc.listenSocket(ctx, network, address, backlog.MaxBacklog, false, logger)
	if err != nil {
		return nil, err
	}
	e, err := emulate(s, q, lc.Emulation)
	if err != nil {
		s.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: s.Addr(), Err: err}
	}
	e.warnIfClamped(requested, q.Backlog())
	return lc.newListener(e, s), nil
}

func (lc *ListenConfig) newListener(front queueListener, s *socketListener) *Listener {
	l := &Listener{front: front, sock: s}
	if measuresQueueWait && !lc.SkipQueueWait && s.network != "unix" {
		l.waits = new(backlog.QueueWaitRecorder)
	}
	return l
}

// Emulation is how a kernel listener follows a Personality.
type Emulation uint8

const (
	// EmulateAuto decides at the SYN when this process can, and after
	// accept() otherwise.
	EmulateAuto Emulation = iota
	// EmulateAtSYN decides every SYN before the kernel answers it, or
	// fails Listen with the reason it cannot.
	EmulateAtSYN
	// EmulateAfterAccept lets the kernel complete every handshake and
	// resets the connections the personality would have turned away.
	EmulateAfterAccept
	// EmulateNone is what Listener.Emulation reports without a
	// Personality: the kernel's own rules.
	EmulateNone
)

var emulationNames = [...]string{EmulateAuto: "auto", EmulateAtSYN: "syn", EmulateAfterAccept: "accept", EmulateNone: "none"}

// String returns "auto", "syn", "accept" or "none".
func (m Emulation) String() string {
	if int(m) < len(emulationNames) {
		return emulationNames[m]
	}
	return fmt.Sprintf("Emulation(%d)", uint8(m))
}

// ParseEmulation reads what String writes ("none" excepted).
func ParseEmulation(s string) (Emulation, error) {
	for m, name := range emulationNames[:EmulateNone] {
		if s == name {
			return Emulation(m), nil
		}
	}
	return 0, fmt.Errorf("unknown emulation %q; valid: auto, syn, accept", s)
}

// A Listener is a listening socket whose backlog can be read back, changed
// and watched. It implements backlog.Listener. Its methods are safe for use
// by many goroutines at once.
type Listener struct {
	// front is what Accept and the queue's methods go to: the socket
	// itself, or the emulation wrapping it.
	front queueListener
	sock  *socketListener
	// waits gathers the time each accepted connection waited; nil where
	// it is not measured.
	waits *backlog.QueueWaitRecorder
	// shed applies the overload policy; nil without one.
	shed *overload.Listener
}

// queueListener is what the socket listener and the emulation that wraps it
// both provide.
type queueListener interface {
	Accept() (net.Conn, error)
	Close() error
	SetDeadline(t time.Time) error
	Backlog() int
	SetBacklog(n int) error
	KernelStats() (Stats, error)
}

var _ backlog.Listener = (*Listener)(nil)

// Emulation reports how the listener follows its Personality:
// EmulateAtSYN, EmulateAfterAccept, or EmulateNone without one. When
// EmulateAuto fell back to EmulateAfterAccept, fallback says why, in the
// words of the log line it wrote ("no CAP_NET_ADMIN", "iptables is not
// installed", …); otherwise it is empty.
func (l *Listener) Emulation() (mode Emulation, fallback string) {
	if e, ok := l.front.(*emulator); ok {
		return e.mode, e.fallback
	}
	return EmulateNone, ""
}

// Addr returns the listener's network address.
func (l *Listener) Addr() net.Addr { return l.sock.Addr() }

// Accept waits for and returns the next connection. While the process has
// no free descriptor it keeps waiting (see the package documentation)
// instead of failing. With a Personality it takes the oldest connection the
// emulated queue holds. On Linux it reads how long the connection waited
// (Stats.QueueWait; with a Personality, the time in the kernel's queue and
// the emulated one together), unless ListenConfig.SkipQueueWait is set.
//
// With an Overload policy it resets the connections the policy sheds
// before it returns one, and while the policy serves newest first it
// returns the newest.
func (l *Listener) Accept() (net.Conn, error) {
	if l.shed != nil {
		return l.overloadAccept()
	}
	c, err := l.front.Accept()
	if err == nil && l.waits != nil {
		if d, ok := queueWait(c); ok {
			l.waits.Observe(d)
		}
	}
	return c, err
}

// Close closes the listener. A pending Accept returns an error that wraps
// net.ErrClosed, and so does a second Close. With a Personality, the
// emulation goroutine has stopped and every connection still queued has
// been reset when Close returns.
//
// With an Overload policy serving newest first, the connections it held
// are reset too.
func (l *Listener) Close() error {
	if l.shed != nil {
		l.shed.Close()
	}
	return l.front.Close()
}

// SetDeadline sets the deadline for Accept; the zero time means none. An
// Accept waiting when the deadline passes returns an error whose Timeout
// method reports true and which wraps os.ErrDeadlineExceeded; as with
// net.TCPListener, a deadline already past fails Accept even while
// connections wait.
func (l *Listener) SetDeadline(t time.Time) error {
	l.setDeadlineOverload(t)
	return l.front.SetDeadline(t)
}

// SyscallConn returns a raw network connection to the listening socket, as
// (*net.TCPListener).SyscallConn does.
func (l *Listener) SyscallConn() (syscall.RawConn, error) { return l.sock.SyscallConn() }

// Backlog returns the stored backlog. Without a Personality it is read from
// the kernel on Linux and FreeBSD, and computed from the documented rules
// elsewhere (see the package documentation); with one, it is what the
// emulated system stores. After Close it is the last value seen.
func (l *Listener) Backlog() int { return l.front.Backlog() }

// SetBacklog calls listen() again with n, passed exactly as a
// ListenConfig.Backlog is except that 0 means 0 (as does
// backlog.ZeroBacklog). On Linux, and on the BSDs, this only stores the new
// backlog (net/ipv4/af_inet.c inet_listen; FreeBSD sys/kern/uipc_socket.c
// solisten_proto): connections already waiting stay, however many there
// are, and new ones wait until accept() has brought the queue below the new
// limit. With a Personality the emulated system's rule applies instead
// (backlog.Relisten): waiting connections beyond the new backlog may be
// reset, or the call may fail with an error wrapping both
// backlog.ErrRelisten and syscall.EINVAL, as gVisor fails.
//
// With an Overload policy that sizes the backlog, n is also the backlog
// restored once the policy no longer sizes it.
func (l *Listener) SetBacklog(n int) error {
	if l.shed != nil {
		return l.shed.SetBacklog(n, l.front.SetBacklog)
	}
	return l.front.SetBacklog(n)
}

// Stats returns the listener's gauges and counters as backlog.Stats:
// Requested, Backlog, Capacity and Len, HalfOpen, Accepted, Reset
// (connections shed for lack of descriptors) and QueueWait. What the
// kernel does not report per socket (the SYN-level counters, overflows and
// ListenDrops) is marked in Unobserved: ReadCounters has the
// namespace-wide counters, and KernelStats the socket's own drop count,
// sk_drops, which is not its ListenDrops (SocketStats.Drops says how they
// differ). With a Personality the queue's own statistics are returned,
// with the sheds added.
//
// HalfOpen is the number of request sockets (handshakes waiting for their
// final ACK) that sock_diag lists for the listener's address, on Linux, in
// the network namespace of the calling thread. It is unobserved when the
// listener shares its address with others (SO_REUSEPORT: the kernel does
// not say which member holds a request), when Stats is called from
// another namespace than the listener's, and elsewhere than on Linux.
// Reading it walks the kernel's whole established hash (about 1.6 ms on a
// host with 262,144 buckets), so it is read at most once a second and is
// up to a second old.
//
// QueueWait is how long the connections Accept returned had waited in the
// queue, read from the kernel's account in milliseconds (Accept says how).
//
// The rest costs two getsockopt calls on Linux (TCP_INFO and SO_MEMINFO),
// about two microseconds: cheap enough to call many times a second.
func (l *Listener) Stats() backlog.Stats {
	s, _ := l.KernelStats()
	return s.Stats
}

// KernelStats returns the listener's statistics with what only the kernel
// transport has. The error reports a failed read-back (for instance after
// Close); the counters kept in user space are filled in regardless.
func (l *Listener) KernelStats() (Stats, error) {
	s, err := l.front.KernelStats()
	l.overloadStats(&s)
	if l.waits != nil {
		s.QueueWait = l.waits.Snapshot()
		s.Unobserved &^= backlog.StatQueueWait
	} else {
		s.Unobserved |= backlog.StatQueueWait
	}
	return s, err
}

// Stats is what KernelStats reports: the listener's backlog.Stats and what
// only a kernel listener has.
type Stats struct {
	backlog.Stats
	SocketStats
}

// SocketStats is what a kernel listener reports beyond backlog.Stats.
type SocketStats struct {
	// KernelBacklog and KernelLen are the kernel's stored backlog and
	// accept-queue length. Without a Personality they equal Backlog and
	// Len; with one, they describe the kernel queue beneath the emulated
	// one, which the emulation keeps nearly empty.
	KernelBacklog int `json:"kernel_backlog"`
	KernelLen     int `json:"kernel_queued_now"`
	// ReadBack reports whether KernelBacklog and KernelLen were read from
	// the kernel. When false they are computed from the documented rules
	// and KernelLen is 0.
	ReadBack bool `json:"read_back"`
	// Drops is the socket's own drop counter (Linux sk_drops, `ss -lntm`
	// d), zero where the system does not keep one. It is not the
	// listener's share of the namespace's TcpExt ListenDrops:
	// include/net/tcp.h tcp_listendrop adds one to both for a SYN dropped
	// on a full queue (net/ipv4/tcp_input.c tcp_conn_request) or a final
	// ACK that finds it full (net/ipv4/tcp_ipv4.c tcp_v4_syn_recv_sock),
	// but sk_drops also counts every segment tcp_v4_rcv discards for the
	// socket (discard_and_relse: a socket filter, an MD5 or TCP-AO
	// failure, IP_MINTTL, a full socket backlog while the listener is
	// locked, and any segment for a handshake that tcp_check_req does not
	// turn into a connection: so a final ACK that overflows the queue
	// counts twice, and a bare final ACK under TCP_DEFER_ACCEPT, or a reset
	// answered with a challenge ACK, once, none of them in ListenDrops),
	// and ListenDrops counts for every listener of the namespace.
	// TestSkDropsAreNotListenDrops measures each.
	Drops uint64 `json:"drops"`
	// Shed counts connections reset because the process had no free
	// descriptor (ListenConfig.ShedLoad).
	Shed uint64 `json:"shed"`
	// Starved counts accept() calls that failed for lack of descriptors or
	// memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
	Starved uint64 `json:"starved"`
	// Inode is the socket's inode number, as Sockets and `ss -e` show it,
	// or 0 where there is none.
	Inode uint64 `json:"inode"`
}

// MarshalJSON writes the listener's backlog.Stats, with null for what was
// not observed, followed by the SocketStats.
func (s Stats) MarshalJSON() ([]byte, error) {
	rest, err := json.Marshal(s.SocketStats)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	s.Stats.AppendJSONFields(&b)
	b.WriteByte(',')
	b.Write(rest[1:])
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Stats) UnmarshalJSON(data []byte) error {
	if err := json.Unmarshal(data, &s.SocketStats); err != nil {
		return err
	}
	return s.Stats.UnmarshalJSON(data)
}

// isSOMAXCONN reports whether n is a SOMAXCONN constant a program may pass
// meaning "the maximum": Go's syscall value or the host's.
func isSOMAXCONN(n int) bool {
	return n == syscall.SOMAXCONN || n == hostSOMAXCONN
}

// clamped reports whether the system stored less than was asked for, leaving
// out requests that mean "the default" or "the maximum" (0, negative,
// SOMAXCONN, and anything from the largest C int up).
func clamped(requested, stored int) bool {
	return requested > 0 && requested < math.MaxInt32 && !isSOMAXCONN(requested) && stored < requested
}

// abort closes c with a reset rather than an orderly shutdown.
func abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// hostCapacity is the host system's capacity rule (N+1 on Linux).
var hostCapacity = sync.OnceValue(func() backlog.CapacityRule { return backlog.Host().Capacity })

// capacityOf returns how many completed connections the host's kernel lets
// wait for a stored backlog.
func capacityOf(stored int) int { return hostCapacity().Apply(stored) }

// unsupported returns an error wrapping errors.ErrUnsupported that says
// what is missing.
func unsupported(what string) error {
	return fmt.Errorf("%s: %w", what, errors.ErrUnsupported)
}
