package netstack

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backlog-dev/backlog/internal/ring"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/acceptor"
	"github.com/backlog-dev/backlog/internal/overload"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
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
	// 0 itself (package backlog, "Saying the backlog", has the rules).
	Backlog int
	// Overload, unless it is the zero value, resets instead of serving
	// the connections that waited past its Target while the queue stands
	// (backlog.Overload), with the wait measured from the SYN as
	// Stats.QueueWait is; the sheds are counted in Stats.Overdue. It acts
	// at Accept, on connections the personality has already queued, so it
	// adds nothing to the rules on the wire. LIFO and SizeBacklog are not
	// available here: the queue gives up its oldest connection only, and
	// listen() again follows the personality's rule, which on some systems
	// resets the excess. The zero value changes nothing.
	Overload backlog.Overload
}

// A Listener is a listening socket on a host: a net.Listener whose queue
// follows its personality at the SYN and at the final ACK, and that
// implements backlog.Listener.
type Listener struct {
	host  *Host
	gate  *gate
	p     backlog.Personality
	q     *backlog.Queue[*pending]
	acc   *acceptor.Acceptor[*pending]
	ep    tcpip.Endpoint
	tep   stack.TransportEndpoint
	wq    waiter.Queue
	addr  *net.TCPAddr
	port  uint16
	proto tcpip.NetworkProtocolNumber
	local tcpip.Address // zero: any address
	dual  bool          // an IPv6 listener that also takes IPv4

	lastCookie atomic.Int64 // monotonic ns of the last SYN cookie sent; 0 if none
	// held counts the connections of this listener the gate holds
	// (gate.conns): while there are none, and no cookie may come back, an
	// ACK to its port is a live connection's.
	held atomic.Int32
	// rcvScale is the window scale gVisor offers on this listener's
	// connections, which a cookie SYN-ACK must offer too.
	rcvScale int
	// aged counts this listener's half-open handshakes whose SYN-ACK the
	// schedule has sent again at least once: the ones Linux calls no
	// longer young (HalfOpen.PruneOld). Guarded by gate.mu.
	aged int
	// answers are the replies to this listener's SYNs in the order the
	// gate decided them, guarded by gate.mu (see answer).
	answers ring.Ring[answer]
	// handover, on gate.mu, wakes an Accept waiting for gVisor to hand
	// over a connection the queue gave it (take): the gate broadcasts
	// when it delivers one, or one dies.
	handover sync.Cond

	// waits gathers how long accepted connections waited, by the stack's
	// clock.
	waits backlog.QueueWaitRecorder
	// shed applies the overload policy; nil without one.
	shed *overload.Listener

	// wg counts the drain goroutine.
	wg sync.WaitGroup
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
	opErr := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	if h.gate == nil {
		return nil, opErr(errors.New("a host without a gate has no listeners of this package"))
	}
	if err := checkOverload(c.Overload); err != nil {
		return nil, opErr(err)
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
	q, err := backlog.NewQueue[*pending](c.Personality, backlog.ListenRequest(c.Backlog, math.MaxInt32))
	if err != nil {
		return nil, opErr(err)
	}
	l := &Listener{host: h, gate: h.gate, p: c.Personality, q: q, proto: proto, local: fa.Addr, dual: dual, answers: ring.Ring[answer]{Keep: ringKeep}}
	l.handover.L = &h.gate.mu
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
	l.rcvScale = windowScale(h.stack, ep)
	l.port = bound.Port
	ip := net.IP(bound.Addr.AsSlice())
	if bound.Addr.BitLen() == 0 {
		ip = net.IPv4zero
		if proto == ipv6.ProtocolNumber {
			ip = net.IPv6zero
		}
	}
	l.addr = &net.TCPAddr{IP: ip, Port: int(bound.Port)}
	l.acc = acceptor.New(acceptor.Config[*pending]{
		Queue:   q,
		Network: "tcp",
		Addr:    l.addr,
		Take:    l.take,
		// Completed connections are reset, at Close as by listen() again.
		// At Close, half-open ones are reset where they share the limit
		// with completed ones (BSD soabort, Winsock); where they live in
		// a SYN queue of their own (Linux inet_csk_listen_stop, gVisor,
		// FreeBSD's syncache) they are dropped without a word.
		Reset: func(e *pending, closing bool) { l.gate.resetPending(e, !closing || l.p.HalfOpen.Shared) },
		// The queue takes a connection at its final ACK; gVisor hands it
		// over once its processor has handled that ACK (deliver).
		Handover: true,
	})
	if c.Overload.Enabled() {
		l.shed = overload.New(overload.Config{
			Policy:  c.Overload,
			Accept:  l.acc.Accept,
			Wait:    func(c net.Conn) (time.Duration, bool) { return c.(*Conn).waited, true },
			Reset:   func(c net.Conn) { c.(*Conn).Abort() },
			Observe: l.waits.Observe,
			Network: "tcp",
			Addr:    l.addr,
			// The clock the waits are measured by.
			Now: h.stack.Clock().Now,
		})
	}
	h.gate.addListener(l)
	l.wg.Add(1)
	go l.drain()
	return l, nil
}

// windowScale returns the window scale gVisor offers on the connections of
// the listening endpoint ep: for its receive buffer, or for the largest one
// when receive buffers are tuned automatically (gVisor's
// rcvWndScaleForHandshake).
func windowScale(s *stack.Stack, ep tcpip.Endpoint) int {
	size := ep.SocketOptions().GetReceiveBufferSize()
	var moderate tcpip.TCPModerateReceiveBufferOption
	if s.TransportProtocolOption(tcp.ProtocolNumber, &moderate) == nil && bool(moderate) {
		var rs tcpip.TCPReceiveBufferSizeRangeOption
		if s.TransportProtocolOption(tcp.ProtocolNumber, &rs) == nil {
			size = int64(rs.Max)
		}
	}
	return tcp.FindWndScale(seqnum.Size(size))
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
// hands it to the gate, until the listener closes. (A waiter callback on
// gVisor's goroutine saves this goroutine's hop, but it runs holding the
// new endpoint's lock and takes the listener's; with it, a lab interrupted
// on a terminal once failed to stop under CI's load, cause not found, and
// the goroutine was put back.)
func (l *Listener) drain() {
	defer l.wg.Done()
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		ep, wq, err := l.ep.Accept(nil)
		if err == nil {
			if ep := l.gate.deliver(l, ep, wq); ep != nil {
				ep.Abort()
			}
			continue
		}
		if _, wouldBlock := err.(*tcpip.ErrWouldBlock); !wouldBlock {
			return // the endpoint closed
		}
		select {
		case <-notify:
		case <-l.acc.Closed():
			return
		}
	}
}

// Accept waits for and returns the next connection, oldest first. After
// Close it returns an error wrapping net.ErrClosed, whatever the deadline;
// as with net.TCPListener, a deadline already past fails it even while
// connections wait.
//
// With an Overload policy it first resets the connections the policy
// sheds.
func (l *Listener) Accept() (net.Conn, error) {
	if l.shed != nil {
		return l.shed.Accept()
	}
	return l.acc.Accept()
}

// take waits for gVisor to hand over the endpoint of a connection the
// queue gave to Accept, and wraps it.
func (l *Listener) take(e *pending, closed <-chan struct{}) (net.Conn, bool) {
	g := l.gate
	g.mu.Lock()
	for e.state() == stateCompleting {
		select {
		case <-closed:
			g.mu.Unlock()
			return nil, false
		default:
		}
		l.handover.Wait()
	}
	ep, wq, cookie := e.ep, e.wq, e.cookie()
	var id stack.TransportEndpointID
	if cookie {
		id = e.id
	}
	g.mu.Unlock()
	if ep == nil {
		return nil, false // reset before gVisor handed it over
	}
	c := newConn(gonet.NewTCPConn(wq, ep), ep)
	c.waited = time.Duration(l.gate.stack.Clock().NowMonotonic().Sub(e.start))
	if l.shed == nil {
		// Under a policy, only the connections served count.
		l.waits.Observe(c.waited)
	}
	if cookie {
		c.onClose = func() { l.gate.retireLater(id) }
	}
	return c, true
}

// SetDeadline sets the time after which Accept fails with an error wrapping
// os.ErrDeadlineExceeded. The zero time means no deadline.
func (l *Listener) SetDeadline(t time.Time) error {
	if l.shed != nil {
		l.shed.SetDeadline(t)
	}
	return l.acc.SetDeadline(t)
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

// Stats returns the queue's gauges and counters. QueueWait is measured by
// the host's clock from the SYN the gate admitted (or the cookie ACK that
// made the connection) to the Accept that took it: in process the
// handshake takes microseconds, so this is the time in the queue, save
// for a connection whose final ACK found the queue full and was held back
// half-open (Linux's rule), whose wait then counts the hold too; the
// kernel's figure starts at the final ACK that got in.
func (l *Listener) Stats() backlog.Stats {
	s := l.q.Stats()
	if l.shed != nil {
		s.Overdue = l.shed.Overdue()
		s.Reset += s.Overdue
	}
	s.QueueWait = l.waits.Snapshot()
	s.Unobserved &^= backlog.StatQueueWait
	return s
}

// SetBacklog calls listen() again with n: depending on the personality, the
// stored backlog changes, pending connections beyond it are reset (clients
// see ECONNRESET), the backlog is left as it was, or the call fails with an
// error wrapping backlog.ErrRelisten and syscall.EINVAL.
func (l *Listener) SetBacklog(n int) error { return l.acc.SetBacklog(n) }

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops listening: a blocked Accept returns, and the listener's
// goroutine is stopped before Close returns. Completed connections waiting
// for accept() are reset, as every system does. Half-open ones are reset
// where they share the limit with completed ones (BSD soabort, Winsock);
// where they live in a SYN queue of their own (Linux inet_csk_listen_stop,
// gVisor, FreeBSD's syncache) they are dropped without a word. A second
// Close returns an error wrapping net.ErrClosed.
func (l *Listener) Close() error {
	if l.shed != nil {
		l.shed.Close()
	}
	if err := l.acc.Close(); err != nil {
		return err
	}
	l.gate.mu.Lock()
	l.handover.Broadcast() // an Accept waiting in take sees the close
	l.gate.mu.Unlock()
	l.gate.removeListener(l)
	l.ep.Close()
	l.wg.Wait()
	// gVisor may hand over a connection before its endpoint closed;
	// whatever is left is reset.
	for {
		ep, _, err := l.ep.Accept(nil)
		if err != nil {
			break
		}
		ep.Abort()
	}
	l.gate.dropListener(l)
	return nil
}

func (l *Listener) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: l.addr, Err: err}
}

func (l *Listener) String() string {
	return fmt.Sprintf("netstack listener %v (%s, backlog %d)", l.addr, l.p, l.q.Backlog())
}

// checkOverload says why a policy cannot be applied here, or nil.
func checkOverload(o backlog.Overload) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if o.LIFO || o.SizeBacklog {
		return fmt.Errorf("%w: LIFO and SizeBacklog on netstack: %w", backlog.ErrOverload, errors.ErrUnsupported)
	}
	return nil
}
