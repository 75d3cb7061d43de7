package kernel

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backlog-dev/backlog"
)

// synSide is the SYN half of an emulation at the SYN: the shaper asks it
// about every SYN for the listener, and it tells the queue about every
// handshake the kernel completes. Its lock orders the three events the
// queue must see in the order they happen: a SYN decided, a connection
// taken from the kernel, a slot freed by accept().
//
// Every connection the kernel completed is taken from its queue before a
// SYN is decided (drain), under the same lock, so a decision always sees
// the handshakes completed before it: the kernel's queue, whose backlog is
// the maximum, only ever holds connections for the moment between their
// final ACK and the next drain.
type synSide struct {
	e      *emulator
	shaper *synShaper
	diag   *diagConn
	// listener is a duplicate of the listening descriptor, read through
	// Go's poller: a listener's own RawConn cannot wait for readability.
	listener *os.File
	lrc      syscall.RawConn

	mu sync.Mutex
	// half holds the connections whose SYN was passed and whose
	// handshake the kernel has not completed, by their addresses; order
	// lists them, and the parked ones, oldest first, for expiry.
	half    map[connKey]*pending
	cookies map[connKey]time.Time
	order   []*pending
	// parked are completed connections the queue kept half-open because
	// their final ACK found it full (ACKDrop): they enter when accept()
	// frees a slot.
	parked []*pending
	// horizon is how long the host kernel keeps a half-open connection
	// (net.ipv4.tcp_synack_retries); a half-open entry older than that is
	// expired.
	horizon time.Duration
}

type connKey struct{ remote, local netip.AddrPort }

// startAtSYN starts a shaper for e's listener.
func startAtSYN(e *emulator) (*synSide, error) {
	if e.sock.sys.unix {
		return nil, errors.New("a unix-domain socket has no SYNs")
	}
	a := e.sock.Addr().(*net.TCPAddr)
	ap := a.AddrPort()
	ip := ap.Addr().Unmap()
	var families []netip.Addr
	switch {
	case !ip.IsUnspecified():
		families = []netip.Addr{ip}
	case e.sock.network == "tcp4" || ip.Is4():
		families = []netip.Addr{netip.IPv4Unspecified()}
	case e.sock.network == "tcp6":
		families = []netip.Addr{netip.IPv6Unspecified()}
	default:
		families = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	}
	s := &synSide{
		e:       e,
		half:    make(map[connKey]*pending),
		cookies: make(map[connKey]time.Time),
		horizon: synackHorizon(),
	}
	var (
		dup  int
		derr error
	)
	err := e.sock.sys.rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	// The duplicate shares the socket's O_NONBLOCK, so os.NewFile hands
	// it to the poller.
	s.listener = os.NewFile(uintptr(dup), "listener")
	if s.lrc, err = s.listener.SyscallConn(); err != nil {
		s.listener.Close()
		return nil, err
	}
	d, err := openDiag()
	if err != nil {
		s.listener.Close()
		return nil, err
	}
	s.diag = d
	sh, err := startShaper(families, ap.Port(), s.decide)
	if err != nil {
		d.close()
		s.listener.Close()
		return nil, err
	}
	s.shaper = sh
	return s, nil
}

// synackHorizon is when the host kernel gives up a half-open connection:
// its SYN-ACK timer starts at 1 s and doubles, and after
// tcp_synack_retries retransmissions (5 by default) the next expiry drops
// the request (net/ipv4/inet_connection_sock.c reqsk_timer_handler), at
// 2^(retries+1)-1 seconds: 63 s.
func synackHorizon() time.Duration {
	r, err := readSysctl("net/ipv4/tcp_synack_retries")
	if err != nil || r < 0 || r > 20 {
		r = 5
	}
	return time.Duration(1<<(r+1)-1) * time.Second
}

func (s *synSide) lock()   { s.mu.Lock() }
func (s *synSide) unlock() { s.mu.Unlock() }

func keyOf(remote, local netip.AddrPort) connKey {
	return connKey{
		remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()),
		local:  netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
	}
}

// decide is the shaper's question: what to do with this SYN.
func (s *synSide) decide(seg tcpSegment) synVerdict {
	s.lock()
	defer s.unlock()
	s.lrc.Control(func(fd uintptr) { s.drainLocked(int(fd)) })
	k := keyOf(seg.src, seg.dst)
	if _, ok := s.half[k]; ok {
		// A retransmission of a SYN already passed: the kernel answers
		// it again.
		return synPass
	}
	now := time.Now()
	s.expireLocked(now)
	p := &pending{remote: k.remote, local: k.local, at: now}
	o, victim, evicted := s.e.q.SYN(p)
	if evicted {
		s.evictLocked(victim)
	}
	switch o {
	case backlog.HalfOpen:
		s.half[k] = p
		s.order = append(s.order, p)
		return synPass
	case backlog.Cookie:
		s.cookies[k] = now
		return synPass
	case backlog.Refused:
		return synRefuse
	}
	return synIgnore
}

// drainLocked takes every completed connection from the kernel's queue and
// tells the queue, and reports whether accept() ran out of descriptors.
func (s *synSide) drainLocked(fd int) (starved bool) {
	sock := s.e.sock
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM):
			sock.starved.Add(1)
			sock.descriptors(false)
			return true
		default:
			// EAGAIN: nothing more waits.
			return false
		}
		f := os.NewFile(uintptr(nfd), "")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			// No descriptor for the duplicate: the connection is
			// lost, as if reset.
			sock.starved.Add(1)
			continue
		}
		sock.accepted.Add(1)
		sock.descriptors(true)
		s.completedLocked(c)
	}
}

// completedLocked tells the queue that the kernel completed c's handshake.
func (s *synSide) completedLocked(c net.Conn) {
	q := s.e.q
	k := keyOf(c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort())
	var o backlog.Outcome
	p, held := s.half[k]
	switch {
	case held:
		delete(s.half, k)
		p.conn = c
		o = q.Established(p)
	case !s.cookies[k].IsZero():
		delete(s.cookies, k)
		p = &pending{conn: c, remote: k.remote, local: k.local}
		o = q.CookieACK(p)
	default:
		// A SYN the shaper never saw: one passed before it started,
		// or while the kernel queue failed open.
		p = &pending{conn: c, remote: k.remote, local: k.local}
		var victim *pending
		var evicted bool
		o, victim, evicted = q.Offer(p)
		if evicted {
			s.evictLocked(victim)
		}
	}
	switch o {
	case backlog.Queued:
		p.gone = true
	case backlog.HalfOpen:
		// The final ACK found the queue full and was "dropped": the
		// connection waits for a slot, as the client's retransmitted
		// ACK would.
		s.parked = append(s.parked, p)
	default:
		p.gone = true
		abort(c)
	}
}

// evictLocked ends a half-open connection the queue displaced: one the
// kernel still has in its SYN queue is dropped from it (SOCK_DESTROY), one
// parked after its handshake is reset.
func (s *synSide) evictLocked(victim *pending) {
	victim.gone = true
	if victim.conn != nil {
		s.unpark(victim)
		abort(victim.conn)
		return
	}
	delete(s.half, connKey{victim.remote, victim.local})
	s.diag.destroy(victim.local, victim.remote)
}

func (s *synSide) unpark(p *pending) {
	for i, x := range s.parked {
		if x == p {
			s.parked = append(s.parked[:i], s.parked[i+1:]...)
			return
		}
	}
}

// expireLocked forgets the half-open connections older than the kernel
// keeps them, and resets parked ones as old.
func (s *synSide) expireLocked(now time.Time) {
	for len(s.order) > 0 {
		p := s.order[0]
		if !p.gone && now.Sub(p.at) < s.horizon {
			break
		}
		s.order = s.order[1:]
		if p.gone {
			continue
		}
		p.gone = true
		if s.e.q.Expire(p) && p.conn != nil {
			s.unpark(p)
			abort(p.conn)
		}
		delete(s.half, connKey{p.remote, p.local})
	}
	for k, at := range s.cookies {
		if now.Sub(at) >= s.horizon {
			delete(s.cookies, k)
		}
	}
}

// freed is told that accept() took a connection: parked ones may enter.
func (s *synSide) freed() {
	s.lock()
	defer s.unlock()
	for len(s.parked) > 0 {
		p := s.parked[0]
		switch s.e.q.Established(p) {
		case backlog.HalfOpen:
			return
		case backlog.Queued:
			p.gone = true
		default:
			p.gone = true
			abort(p.conn)
		}
		s.parked = s.parked[1:]
	}
}

// runAtSYN is the emulation goroutine at the SYN: whenever the kernel has a
// completed connection, it drains the queue under the lock.
func (e *emulator) runAtSYN() {
	defer e.wg.Done()
	s := e.at
	var delay time.Duration
	for {
		starved := false
		err := s.lrc.Read(func(fd uintptr) bool {
			s.lock()
			starved = s.drainLocked(int(fd))
			s.unlock()
			return starved
		})
		if err != nil {
			return // closed
		}
		if starved {
			delay = nextDelay(delay)
			if e.sock.pause(delay, false) != nil {
				return
			}
			continue
		}
		delay = 0
	}
}

// close stops the shaper: from now on SYNs reach the kernel undecided,
// and the queue, closed next, refuses what they become.
func (s *synSide) close() error { return s.shaper.close() }

// stop ends the drain: with the listener closed, the duplicate is the
// socket's last descriptor, and closing it ends the wait in runAtSYN.
func (s *synSide) stop() { s.listener.Close() }

// release frees what the drain may still use, once the emulation
// goroutine has stopped.
func (s *synSide) release() { s.diag.close() }
