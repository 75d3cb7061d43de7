package netstack

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/deadline"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// ListenConfig says how a host listens. The zero value listens as the system
// this program runs on (backlog.Host()) with the largest backlog it allows.
type ListenConfig struct {
	// Personality is the system whose listen() rules the listener
	// follows. The zero value means backlog.Host().
	Personality backlog.Personality
	// Backlog is the backlog passed to listen(), clamped as the
	// personality says. Zero means the largest the personality allows,
	// which is what Go's net.Listen asks for; backlog.ZeroBacklog asks for
	// 0 itself.
	Backlog int
}

// yieldQuantum is how long an accepting thread runs before it is
// pre-empted, for the KB 295079 defect: a Windows 2000 workstation quantum
// is two clock ticks of 10 to 15 ms.
const yieldQuantum = 30 * time.Millisecond

// A Listener is a listening socket on a host: a net.Listener whose queue
// follows its personality at the SYN and at the final ACK, and that
// implements backlog.Listener.
type Listener struct {
	host  *Host
	gate  *gate
	p     backlog.Personality
	q     *backlog.Queue[*pending]
	ep    tcpip.Endpoint
	tep   stack.TransportEndpoint
	wq    waiter.Queue
	addr  *net.TCPAddr
	port  uint16
	proto tcpip.NetworkProtocolNumber
	local tcpip.Address // zero: any address
	dual  bool          // an IPv6 listener that also takes IPv4

	lastCookie atomic.Int64 // monotonic ns of the last SYN cookie sent; 0 if none

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup

	deadline deadline.Deadline
	mu       sync.Mutex
	yield    *time.Timer
}

var _ backlog.Listener = (*Listener)(nil)

// Listen listens on address ("host:port"; an empty host means every
// address) on network "tcp" (IPv4 and IPv6), "tcp4" or "tcp6". A port of 0
// picks a free one.
func (h *Host) Listen(ctx context.Context, network, address string, cfg *ListenConfig) (*Listener, error) {
	var c ListenConfig
	if cfg != nil {
		c = *cfg
	}
	if c.Personality.Name == "" {
		c.Personality = backlog.Host()
	}
	switch c.Backlog {
	case 0:
		c.Backlog = math.MaxInt32
	case backlog.ZeroBacklog:
		c.Backlog = 0
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	fa, proto, err := resolve(network, address)
	if err != nil {
		return nil, opErr(err)
	}
	dual := network == "tcp" && fa.Addr.BitLen() == 0
	if dual {
		proto = ipv6.ProtocolNumber
	}
	q, err := backlog.NewQueue[*pending](c.Personality, c.Backlog)
	if err != nil {
		return nil, opErr(err)
	}
	l := &Listener{host: h, gate: h.gate, p: c.Personality, q: q, proto: proto, local: fa.Addr, dual: dual,
		closed: make(chan struct{})}
	ep, terr := h.stack.NewEndpoint(tcp.ProtocolNumber, proto, &l.wq)
	if terr != nil {
		return nil, opErr(errnoOf(terr, "socket"))
	}
	if proto == ipv6.ProtocolNumber {
		ep.SocketOptions().SetV6Only(!dual)
	}
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, opErr(errnoOf(terr, "bind"))
	}
	// gVisor's listener only does the handshakes: its own queue is made too
	// large to ever decide anything, and the gate decides instead.
	if terr := ep.Listen(1 << 30); terr != nil {
		ep.Close()
		return nil, opErr(errnoOf(terr, "listen"))
	}
	bound, terr := ep.GetLocalAddress()
	if terr != nil {
		ep.Close()
		return nil, opErr(errnoOf(terr, "getsockname"))
	}
	l.ep = ep
	l.tep = ep.(stack.TransportEndpoint)
	l.port = bound.Port
	ip := net.IP(bound.Addr.AsSlice())
	if bound.Addr.BitLen() == 0 {
		ip = net.IPv4zero
		if proto == ipv6.ProtocolNumber {
			ip = net.IPv6zero
		}
	}
	l.addr = &net.TCPAddr{IP: ip, Port: int(bound.Port)}
	h.gate.addListener(l)
	l.wg.Add(1)
	go l.drain()
	return l, nil
}

// accepts reports whether a segment of the given protocol to local belongs
// to this listener.
func (l *Listener) accepts(proto tcpip.NetworkProtocolNumber, local tcpip.Address) bool {
	if proto != l.proto && !(l.dual && proto == ipv4.ProtocolNumber) {
		return false
	}
	return l.local.BitLen() == 0 || l.local == local
}

func (l *Listener) noteCookie(now tcpip.MonotonicTime) {
	l.lastCookie.Store(now.Sub(tcpip.MonotonicTime{}).Nanoseconds() + 1)
}

// cookiesRecent reports whether a SYN cookie sent by this listener may
// still come back.
func (l *Listener) cookiesRecent(now tcpip.MonotonicTime) bool {
	last := l.lastCookie.Load()
	if last == 0 {
		return false
	}
	age := time.Duration(now.Sub(tcpip.MonotonicTime{}).Nanoseconds() - last)
	return age <= (cookieMaxAge+1)*cookieTick
}

// drain takes every connection gVisor established for this listener and
// hands it to the gate, until the listener closes.
func (l *Listener) drain() {
	defer l.wg.Done()
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		ep, wq, err := l.ep.Accept(nil)
		if err == nil {
			l.gate.deliver(l, ep, wq)
			continue
		}
		if _, wouldBlock := err.(*tcpip.ErrWouldBlock); !wouldBlock {
			return // the endpoint closed
		}
		select {
		case <-notify:
		case <-l.closed:
			return
		}
	}
}

// Accept waits for and returns the next connection, oldest first. After
// Close it returns an error wrapping net.ErrClosed, whatever the deadline.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		select {
		case <-l.closed:
			return nil, l.opErr("accept", net.ErrClosed)
		default:
		}
		e, ok := l.q.Accept()
		if ok {
			select {
			case <-e.delivered:
			case <-l.closed:
				return nil, l.opErr("accept", net.ErrClosed)
			}
			if e.ep == nil {
				continue // reset before gVisor handed it over
			}
			l.armYield()
			c := newConn(gonet.NewTCPConn(e.wq, e.ep), e.ep)
			if e.cookieBorn {
				id := e.id
				c.onClose = func() { l.gate.retireLater(id) }
			}
			return c, nil
		}
		// The accepting thread blocks: under the KB 295079 defect, that
		// is when the slots it freed come back.
		l.q.Yield()
		select {
		case <-l.q.Ready():
		case <-l.deadline.Done():
			return nil, l.opErr("accept", os.ErrDeadlineExceeded)
		case <-l.closed:
			return nil, l.opErr("accept", net.ErrClosed)
		}
	}
}

// armYield pre-empts the accepting thread one quantum after an accept, for
// personalities with the KB 295079 defect.
func (l *Listener) armYield() {
	if !l.p.DeferredSlotReturn {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.yield == nil {
		l.yield = time.AfterFunc(yieldQuantum, l.q.Yield)
	} else {
		l.yield.Reset(yieldQuantum)
	}
}

// SetDeadline sets the time after which Accept fails with an error wrapping
// os.ErrDeadlineExceeded. The zero time means no deadline.
func (l *Listener) SetDeadline(t time.Time) error {
	l.deadline.Set(t)
	return nil
}

// Backlog returns the stored backlog.
func (l *Listener) Backlog() int { return l.q.Backlog() }

// Capacity returns how many completed connections can wait.
func (l *Listener) Capacity() int { return l.q.Capacity() }

// Len returns how many completed connections wait for Accept.
func (l *Listener) Len() int { return l.q.Len() }

// HalfOpen returns how many handshakes are under way.
func (l *Listener) HalfOpen() int { return l.q.HalfOpen() }

// Personality returns the rules the listener follows.
func (l *Listener) Personality() backlog.Personality { return l.p }

// Stats returns the queue's gauges and counters.
func (l *Listener) Stats() backlog.Stats { return l.q.Stats() }

// SetBacklog calls listen() again with n: depending on the personality, the
// stored backlog changes, pending connections beyond it are reset (clients
// see ECONNRESET), the backlog is left as it was, or the call fails with an
// error wrapping syscall.EINVAL.
func (l *Listener) SetBacklog(n int) error {
	reset, err := l.q.Listen(n)
	for _, e := range reset {
		l.gate.resetPending(e, true)
	}
	switch {
	case errors.Is(err, backlog.ErrRelisten):
		return l.opErr("listen", os.NewSyscallError("listen", syscall.EINVAL))
	case errors.Is(err, backlog.ErrClosed):
		return l.opErr("listen", net.ErrClosed)
	case err != nil:
		return l.opErr("listen", err)
	}
	return nil
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops listening: a blocked Accept returns, and the listener's
// goroutine is stopped before Close returns. Completed connections waiting
// for accept() are reset, as every system does. Half-open ones are reset
// where they share the limit with completed ones (BSD soabort, Winsock);
// where they live in a SYN queue of their own (Linux inet_csk_listen_stop,
// gVisor, FreeBSD's syncache) they are dropped without a word.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.gate.removeListener(l)
		close(l.closed)
		for _, e := range l.q.Close() {
			l.gate.resetPending(e, l.p.HalfOpen.Shared)
		}
		l.ep.Close()
		l.wg.Wait()
		// gVisor may hand over a connection before its endpoint
		// closed; whatever is left is reset.
		for {
			ep, _, err := l.ep.Accept(nil)
			if err != nil {
				break
			}
			ep.Abort()
		}
		l.gate.dropListener(l)
		l.deadline.Stop()
		l.mu.Lock()
		if l.yield != nil {
			l.yield.Stop()
		}
		l.mu.Unlock()
	})
	return nil
}

func (l *Listener) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: l.addr, Err: err}
}

func (l *Listener) String() string {
	return fmt.Sprintf("netstack listener %v (%s, backlog %d)", l.addr, l.p, l.q.Backlog())
}
