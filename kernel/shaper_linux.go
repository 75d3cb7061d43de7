package kernel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/backlog-dev/backlog"
)

// A Shaper puts a listening socket of this host, whoever holds it, under
// another system's rules at the SYN, until Close: every SYN for it is
// decided by a backlog.Queue with the personality's rules, fed from the
// listener's real queue, and passed to the kernel, dropped or refused with
// a reset. See the package documentation for what differs from the real
// system.
type Shaper struct {
	shaper *synShaper
	diag   *diagConn
	sock   Socket

	mu sync.Mutex
	q  *backlog.Queue[*pending]
	// half holds the SYNs passed whose handshake the kernel had not
	// completed at the last look; order lists them oldest first.
	half  map[connKey]*pending
	order []*pending
	// aside counts connections in the listener's queue that the
	// personality's queue does not hold: reset by the shaper but not yet
	// accepted, let in although the personality would have dropped
	// their final ACK, or there before the shaper started.
	aside   int
	kernel  diagExact
	horizon time.Duration
	// local is where the last SYN was going: the listener the follower
	// reads.
	local netip.AddrPort

	// The follower looks at the handshakes under way every
	// followEvery while there are any, so that a final ACK is seen
	// within that, not only at the next SYN.
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// followEvery is how often the follower looks while handshakes are under
// way.
const followEvery = 2 * time.Millisecond

// Shape starts shaping the listener at cfg.Addr. It needs CAP_NET_ADMIN,
// iptables and ip6tables, and a kernel with nfnetlink_queue and the xt
// NFQUEUE target; the error says which is missing. It acts in the calling
// thread's network namespace. ctx bounds nothing yet and is for future
// use.
func Shape(ctx context.Context, cfg ShapeConfig) (*Shaper, error) {
	if err := cfg.Personality.Validate(); err != nil {
		return nil, err
	}
	sock, err := findListener(cfg.Addr)
	if err != nil {
		return nil, err
	}
	requested := cfg.Backlog
	if requested == 0 {
		requested = sock.Backlog
	}
	q, err := backlog.NewQueue[*pending](cfg.Personality, backlog.ListenRequest(requested, sock.Backlog))
	if err != nil {
		return nil, err
	}
	d, err := openDiag()
	if err != nil {
		return nil, err
	}
	s := &Shaper{
		diag: d, sock: sock, q: q, half: make(map[connKey]*pending), horizon: synackHorizon(),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	s.aside = sock.Len
	var families []netip.Addr
	ip := cfg.Addr.Addr().Unmap()
	switch {
	case !ip.IsUnspecified():
		families = []netip.Addr{ip}
	case sock.DualStack:
		families = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	case sock.Addr.Addr().Is4():
		families = []netip.Addr{netip.IPv4Unspecified()}
	default:
		families = []netip.Addr{netip.IPv6Unspecified()}
	}
	sh, err := startShaper(families, cfg.Addr.Port(), s.decide)
	if err != nil {
		d.close()
		return nil, err
	}
	s.shaper = sh
	go s.follow()
	return s, nil
}

// follow is the follower goroutine.
func (s *Shaper) follow() {
	defer close(s.done)
	t := time.NewTimer(followEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		}
		for busy := true; busy; {
			t.Reset(followEvery)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			s.mu.Lock()
			s.followLocked(s.local, time.Now())
			busy = len(s.order) > 0
			s.mu.Unlock()
		}
	}
}

// findListener returns the listening socket a SYN to a would reach.
func findListener(a netip.AddrPort) (Socket, error) {
	var (
		best  Socket
		found bool
	)
	want := a.Addr().Unmap()
	err := allListeners(func(e diagEntry) {
		s := e.socket()
		if s.Addr.Port() != a.Port() || found && !best.Addr.Addr().IsUnspecified() {
			return
		}
		have := s.Addr.Addr().Unmap()
		if want.IsUnspecified() || have == want || have.IsUnspecified() && (have.Is4() == want.Is4() || s.DualStack) {
			best, found = s, true
		}
	})
	if err != nil {
		return Socket{}, err
	}
	if !found {
		return Socket{}, fmt.Errorf("kernel: no listening TCP socket on %v: %w", a, os.ErrNotExist)
	}
	return best, nil
}

func (s *Shaper) decide(seg tcpSegment) synVerdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(seg.src, seg.dst)
	if p, ok := s.half[k]; ok && !p.gone {
		return synPass // a retransmission of a SYN passed
	}
	now := time.Now()
	s.local = k.local
	s.followLocked(k.local, now)
	p := &pending{remote: k.remote, local: k.local, at: now}
	o, victim, evicted := s.q.SYN(p)
	if evicted && !victim.gone {
		victim.gone = true
		delete(s.half, connKey{victim.remote, victim.local})
		s.diag.destroy(victim.local, victim.remote)
	}
	switch o {
	case backlog.HalfOpen, backlog.Cookie:
		p.cookie = o == backlog.Cookie
		s.half[k] = p
		s.order = append(s.order, p)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return synPass
	case backlog.Refused:
		return synRefuse
	}
	return synIgnore
}

// followLocked brings the personality's queue up to date with the
// kernel's: each handshake under way is looked up (inet_diag, by its
// addresses) and, once the kernel has completed it, reported to the
// queue; then the listener's accept-queue length says how many the
// application has accepted since.
func (s *Shaper) followLocked(local netip.AddrPort, now time.Time) {
	keep := s.order[:0]
	for _, p := range s.order {
		if p.gone {
			continue
		}
		st, err := s.diag.lookup(p.local, p.remote)
		switch {
		case err == nil && st.state == tcpSynRecv:
			if now.Sub(p.at) < s.horizon {
				keep = append(keep, p)
				continue
			}
			s.q.Expire(p)
		case err == nil || errors.Is(err, os.ErrNotExist):
			// Completed, whether still queued, accepted, or
			// accepted and gone already.
			s.completedLocked(p)
		default:
			keep = append(keep, p) // ask again at the next SYN
			continue
		}
		p.gone = true
		delete(s.half, connKey{p.remote, p.local})
	}
	clear(s.order[len(keep):])
	s.order = keep

	l, err := s.diag.lookup(local, netip.AddrPortFrom(unspecifiedLike(local.Addr()), 0))
	if err != nil || l.state != tcpListen {
		return
	}
	s.kernel = l
	held := s.q.Len() + s.aside
	for ; held > int(l.rqueue); held-- {
		if s.aside > 0 {
			s.aside--
			continue
		}
		s.q.Accept()
		s.q.Yield()
	}
	// More wait than the shaper knows of: connections it never saw.
	s.aside += int(l.rqueue) - held
}

func unspecifiedLike(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// completedLocked tells the queue that the kernel completed p's
// handshake, and acts on what the queue says.
func (s *Shaper) completedLocked(p *pending) {
	var o backlog.Outcome
	if p.cookie {
		o = s.q.CookieACK(p)
	} else {
		o = s.q.Established(p)
	}
	switch o {
	case backlog.Queued:
	case backlog.HalfOpen:
		// The personality drops this final ACK, but the kernel has
		// queued the connection already: it waits beside the queue.
		s.q.Expire(p)
		s.aside++
	default:
		// Reset at the final ACK: the connection is aborted where it
		// waits, and stays in the listener's queue, dead, until the
		// application accepts it.
		s.diag.destroy(p.local, p.remote)
		s.aside++
	}
}

// Stats returns the personality's queue and the shaper's verdicts.
func (s *Shaper) Stats() ShaperStats {
	s.mu.Lock()
	st := ShaperStats{Stats: s.q.Stats(), KernelLen: int(s.kernel.rqueue), KernelBacklog: int(s.kernel.wqueue)}
	s.mu.Unlock()
	sh := s.shaper
	st.Passed, st.Dropped, st.Refused, st.Unreadable = sh.passed.Load(), sh.ignored.Load(), sh.refused.Load(), sh.unreadable.Load()
	st.StaleRules, st.Queue = sh.stale, sh.queueNum()
	return st
}

// Socket returns the shaped listener as found when shaping started.
func (s *Shaper) Socket() Socket { return s.sock }

// Close removes the shaper's rules and stops it; SYNs reach the listener
// undecided from then on. Only the first call does anything.
func (s *Shaper) Close() error {
	err := s.shaper.close()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.diag != nil {
		s.diag.close()
		s.diag = nil
	}
	return err
}
