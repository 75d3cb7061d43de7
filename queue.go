package backlog

import (
	"errors"
	"fmt"
	"sync"

	"github.com/backlog-dev/backlog/internal/ring"
)

// Outcome is what became of a connection attempt at one step.
type Outcome uint8

const (
	// HalfOpen: the SYN was answered and the connection waits for the
	// final ACK. Established also returns it when the final ACK was dropped
	// because the accept queue was full: the server sends its SYN-ACK again.
	HalfOpen Outcome = iota + 1
	// Cookie: the SYN was answered with a SYN cookie; nothing is held until
	// a valid final ACK comes back (CookieACK).
	Cookie
	// Queued: the handshake is complete and the connection waits for
	// accept().
	Queued
	// Ignored: dropped without an answer; a client retransmits.
	Ignored
	// Refused: answered with RST at the SYN; the client's connect fails with
	// ECONNREFUSED (WSAECONNREFUSED).
	Refused
	// Reset: the connection was reset after its handshake: a final ACK met
	// a full queue under a reset rule, listen() again dropped the excess, or
	// the listener closed.
	Reset
	// Evicted: a half-open connection displaced by a newer SYN.
	Evicted
	// Expired: a half-open connection whose final ACK never came.
	Expired
	// Accepted: taken by accept().
	Accepted
	// Stale: an event for a connection the queue does not hold: already
	// evicted, expired, reset by Listen or Close, or never seen. It is not
	// counted again; answer a stray final ACK with RST, as TCP does.
	Stale
)

var outcomeNames = [...]string{
	HalfOpen: "half-open",
	Cookie:   "cookie",
	Queued:   "queued",
	Ignored:  "ignored",
	Refused:  "refused",
	Reset:    "reset",
	Evicted:  "evicted",
	Expired:  "expired",
	Accepted: "accepted",
	Stale:    "stale",
}

// String returns the outcome in lower case: "queued", "refused", …
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// ErrRelisten is returned, wrapped, by Queue.Listen when the personality's
// rule makes listen() fail: more connections wait than the new backlog
// holds (gVisor answers EINVAL).
var ErrRelisten = errors.New("listen again: more connections wait than the new backlog holds")

// ErrClosed is returned by Queue.Listen after Close.
var ErrClosed = errors.New("backlog: queue closed")

// A Queue is the pending-connection queue of one listening socket, governed
// by a Personality. It holds values of type T, typically a transport's
// handle on a connection, from the SYN (half-open) through the completed
// handshake (queued) until accept().
//
// A transport reports wire events as calls: SYN when a SYN arrives,
// Established when a handshake completes, CookieACK when a valid SYN-cookie
// ACK arrives, Expire when a half-open handshake gives up, Accept when the
// application accepts, and Listen when it calls listen() again. Each call
// returns what to do as an Outcome: answer, ignore, refuse with RST, or
// reset. Offer does SYN and Established in one step, for transports whose
// handshakes complete before the queue sees them.
//
// A Queue is safe for use by many goroutines at once: every method takes
// one mutex, does a constant amount of work (Listen and Close: proportional
// to what they return) and never blocks or calls out while holding it. It
// starts no goroutines. Waiting for a connection is the caller's: Ready
// returns a channel that receives after a connection is queued.
type Queue[T comparable] struct {
	mu        sync.Mutex
	p         Personality
	requested int
	backlog   int
	capacity  int
	halfLimit int
	ready     ring.Ring[T]
	half      halfOpenSet[T]
	// owedYield counts slots freed by accept() that come back only when the
	// accepting thread yields (KB 295079). owedFD counts slots freed while
	// descriptors were exhausted, refilled by a later Accept or Listen.
	owedYield, owedFD int
	noFDs             bool
	closed            bool
	stats             Stats
	notify            chan struct{}
}

// NewQueue returns an empty queue for a socket that called listen(backlog)
// under personality p.
func NewQueue[T comparable](p Personality, backlog int) (*Queue[T], error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	q := &Queue[T]{p: p, notify: make(chan struct{}, 1)}
	q.half.index = make(map[T]*halfNode[T])
	q.setBacklogLocked(backlog)
	return q, nil
}

func (q *Queue[T]) setBacklogLocked(requested int) {
	q.requested = requested
	q.backlog = q.p.Stored(requested)
	q.capacity = q.p.CapacityOf(q.backlog)
	q.halfLimit = q.p.HalfOpenLimit(q.backlog)
}

// Personality returns the rules the queue follows.
func (q *Queue[T]) Personality() Personality { return q.p }

// Backlog returns the stored backlog.
func (q *Queue[T]) Backlog() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.backlog
}

// Capacity returns how many completed connections can wait.
func (q *Queue[T]) Capacity() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.capacity
}

// Len returns how many completed connections wait for accept().
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ready.Len()
}

// HalfOpen returns how many handshakes are under way.
func (q *Queue[T]) HalfOpen() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.half.len()
}

// Ready returns a channel that receives a value after a connection is
// queued. It is a wake-up, not a count: after receiving, call Accept until it
// reports false.
func (q *Queue[T]) Ready() <-chan struct{} { return q.notify }

func (q *Queue[T]) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// acceptFullLocked reports whether the accept queue admits no more
// completed connections.
func (q *Queue[T]) acceptFullLocked() bool {
	return q.ready.Len() >= q.capacity
}

// sharedFullLocked reports whether a personality whose half-open
// connections share the limit has no free slot.
func (q *Queue[T]) sharedFullLocked() bool {
	return q.half.len()+q.ready.Len()+q.owedYield+q.owedFD >= q.capacity
}

// SYN records a SYN for t and returns what to do with it:
//   - HalfOpen: answer with a SYN-ACK; t is held until Established,
//     Expire or an eviction.
//   - Cookie: answer with a SYN cookie; nothing is held (see CookieACK).
//   - Ignored: send nothing.
//   - Refused: answer with RST.
//
// When the personality evicts to make room, evicted is the half-open entry
// displaced (reset it) and ok is true.
func (q *Queue[T]) SYN(t T) (o Outcome, evicted T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.synLocked(t, true)
}

// synLocked decides a SYN. With hold, an admitted t is held half-open;
// without, the caller completes its handshake at once (Offer), and the
// half-open set is left alone.
func (q *Queue[T]) synLocked(t T, hold bool) (o Outcome, evicted T, ok bool) {
	q.stats.SYNs++
	if q.closed {
		q.stats.Refused++
		return Refused, evicted, false
	}
	if q.p.HalfOpen.Shared {
		if q.sharedFullLocked() {
			if q.owedYield > 0 && !q.fullWithoutOwedLocked() {
				q.stats.DeferredRefusals++
			}
			switch q.p.OnFull {
			case SYNRefuse:
				return q.overflowLocked(Refused), evicted, false
			case SYNEvict:
				// XNU evicts one half-open connection and calls
				// sonewconn again, which may still find no room
				// (after listen() shrank the queue).
				if victim, found := q.half.popOldest(); found {
					q.stats.Evicted++
					if q.sharedFullLocked() {
						return q.overflowLocked(Ignored), victim, true
					}
					if hold {
						q.half.push(t)
					}
					return HalfOpen, victim, true
				}
			}
			return q.overflowLocked(Ignored), evicted, false
		}
		if hold {
			q.half.push(t)
		}
		return HalfOpen, evicted, false
	}

	// Separate SYN and accept queues, in the order of Linux's
	// tcp_conn_request: SYN-queue check, accept-queue check, then
	// tcp_max_syn_backlog.
	h := q.p.HalfOpen
	wantCookie := false
	if h.AlwaysCookie || q.half.len() >= q.halfLimit {
		if h.OnFull == SYNCookie {
			wantCookie = true
			q.stats.TCPReqQFullDoCookies++
		} else {
			q.stats.TCPReqQFullDrop++
			q.stats.ListenDrops++
			q.stats.Ignored++
			return Ignored, evicted, false
		}
	}
	if q.p.OnFull != SYNAnswer && q.acceptFullLocked() {
		return q.overflowLocked(Ignored), evicted, false
	}
	if !wantCookie && h.MaxSynBacklog > 0 && h.MaxSynBacklog-q.half.len() < h.MaxSynBacklog>>2 {
		q.stats.ListenDrops++
		q.stats.Ignored++
		return Ignored, evicted, false
	}
	if wantCookie {
		q.stats.SyncookiesSent++
		return Cookie, evicted, false
	}
	if hold {
		q.half.push(t)
	}
	return HalfOpen, evicted, false
}

// fullWithoutOwedLocked reports whether the queue would be full even if
// every slot owed by a deferred return were back.
func (q *Queue[T]) fullWithoutOwedLocked() bool {
	return q.half.len()+q.ready.Len()+q.owedFD >= q.capacity
}

// overflowLocked counts a connection attempt turned away by a full accept
// queue and returns o.
func (q *Queue[T]) overflowLocked(o Outcome) Outcome {
	q.stats.ListenOverflows++
	q.stats.ListenDrops++
	switch o {
	case Refused:
		q.stats.Refused++
	case Ignored:
		q.stats.Ignored++
	case Reset:
		q.stats.Reset++
	}
	return o
}

// Established records that t's handshake completed (its final ACK arrived)
// and returns what to do:
//   - Queued: t waits for Accept.
//   - HalfOpen: the accept queue is full and the ACK is dropped; t stays
//     half-open and its SYN-ACK is sent again.
//   - Reset: the accept queue is full and the personality resets; answer
//     with RST.
//   - Stale: t is not held (see Stale).
func (q *Queue[T]) Established(t T) Outcome {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.establishedLocked(t)
}

func (q *Queue[T]) establishedLocked(t T) Outcome {
	if !q.half.contains(t) {
		return Stale
	}
	if !q.p.HalfOpen.Shared && q.acceptFullLocked() {
		if q.p.OnACKFull == ACKDrop {
			q.stats.ListenOverflows++
			q.stats.ListenDrops++
			return HalfOpen
		}
		q.half.remove(t)
		return q.overflowLocked(Reset)
	}
	q.half.remove(t)
	q.enqueueLocked(t)
	return Queued
}

func (q *Queue[T]) enqueueLocked(t T) {
	q.ready.Push(t)
	q.stats.Queued++
	q.wake()
}

// CookieACK records a final ACK that carries a valid SYN cookie for t, and
// returns Queued or, when the accept queue is full, what the personality's
// OnCookieACKFull rule says: Ignored (the ACK is dropped and nothing is
// held) or Reset.
func (q *Queue[T]) CookieACK(t T) Outcome {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cookieACKLocked(t)
}

func (q *Queue[T]) cookieACKLocked(t T) Outcome {
	if q.closed {
		q.stats.Reset++
		return Reset
	}
	if q.acceptFullLocked() {
		if q.p.OnCookieACKFull == ACKReset {
			return q.overflowLocked(Reset)
		}
		return q.overflowLocked(Ignored)
	}
	q.stats.SyncookiesRecv++
	q.enqueueLocked(t)
	return Queued
}

// Offer records a connection whose handshake has already completed, as SYN
// followed by Established (or CookieACK) in one step, and returns Queued,
// Ignored, Refused or Reset. evicted and ok are as for SYN.
func (q *Queue[T]) Offer(t T) (o Outcome, evicted T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	o, evicted, ok = q.synLocked(t, false)
	switch o {
	case HalfOpen:
		// Established at once, without holding t half-open meanwhile.
		if !q.p.HalfOpen.Shared && q.acceptFullLocked() {
			if q.p.OnACKFull == ACKReset {
				return q.overflowLocked(Reset), evicted, ok
			}
			// The ACK is dropped; with no one to send the SYN-ACK
			// again, the handshake is abandoned.
			q.stats.ListenOverflows++
			q.stats.ListenDrops++
			q.stats.Ignored++
			return Ignored, evicted, ok
		}
		q.enqueueLocked(t)
		o = Queued
	case Cookie:
		o = q.cookieACKLocked(t)
	}
	return o, evicted, ok
}

// Expire removes the half-open t whose handshake gave up (its SYN-ACKs went
// unanswered, or the peer reset it). It reports whether t was held.
func (q *Queue[T]) Expire(t T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.half.remove(t) {
		return false
	}
	q.stats.Expired++
	return true
}

// Accept takes the oldest completed connection. ok is false when none waits.
//
// The slot it frees is available to the very next SYN, unless the
// personality defers it until Yield (the KB 295079 defect) or descriptors
// are exhausted (SetDescriptors) under a Winsock provider model.
func (q *Queue[T]) Accept() (t T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	t, ok = q.ready.Pop()
	if !ok {
		return t, false
	}
	q.stats.Accepted++
	if q.p.SlotsNeedDescriptors && q.noFDs {
		q.owedFD++
	} else {
		// Descriptors are available: this accept refills the queue
		// (seed 001: "a later call to listen or accept will refill the
		// queue").
		q.owedFD = 0
		if q.p.DeferredSlotReturn {
			q.owedYield++
		}
	}
	if q.ready.Len() > 0 {
		q.wake()
	}
	return t, true
}

// Yield tells the queue that the accepting thread was pre-empted or
// blocked. Under the KB 295079 defect, the slots freed by Accept since the
// last Yield become available only now; otherwise it does nothing.
func (q *Queue[T]) Yield() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.owedYield = 0
}

// SetDescriptors tells the queue whether socket descriptors are available.
// Under a Winsock provider model (Personality.SlotsNeedDescriptors), while
// they are not, slots freed by Accept are not refilled, so the queue shrinks
// as connections are accepted; once they are, the next Accept or Listen
// refills it to the current backlog (seeds 001 and 003). Other personalities
// keep their queue whatever happens to descriptors.
func (q *Queue[T]) SetDescriptors(available bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.noFDs = !available
}

// Listen applies listen(backlog) on the listening socket, under the
// personality's Relisten rule, and returns the pending connections that must
// be reset, newest first: half-open ones before completed ones, so those
// that have waited longest keep their place. Under RelistenFail it returns
// an error wrapping ErrRelisten, and changes nothing, when more connections
// wait than the new backlog holds.
func (q *Queue[T]) Listen(backlog int) (reset []T, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	if !q.noFDs {
		q.owedFD = 0
	}
	switch q.p.Relisten {
	case RelistenUnchanged:
		return nil, nil
	case RelistenFail:
		stored := q.p.Stored(backlog)
		if c := q.p.CapacityOf(stored); q.ready.Len() > c {
			return nil, fmt.Errorf("%w (%d waiting, capacity %d)", ErrRelisten, q.ready.Len(), c)
		}
	}
	q.setBacklogLocked(backlog)
	if q.p.Relisten != RelistenUpdateResetExcess {
		return nil, nil
	}
	excess := q.ready.Len() - q.capacity
	if q.p.HalfOpen.Shared {
		excess += q.half.len()
	}
	for ; excess > 0; excess-- {
		t, ok := q.half.popNewest()
		if !ok {
			t, _ = q.ready.PopNewest()
		}
		reset = append(reset, t)
	}
	q.stats.Reset += uint64(len(reset))
	return reset, nil
}

// Close stops the queue: every pending connection, half-open or complete, is
// returned to be reset (oldest completed first), and later SYNs are refused.
func (q *Queue[T]) Close() (reset []T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	for {
		t, ok := q.ready.Pop()
		if !ok {
			break
		}
		reset = append(reset, t)
	}
	for {
		t, ok := q.half.popOldest()
		if !ok {
			break
		}
		reset = append(reset, t)
	}
	q.stats.Reset += uint64(len(reset))
	q.wake()
	return reset
}

// Closed reports whether Close was called.
func (q *Queue[T]) Closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// Stats returns a snapshot of the queue's gauges and counters. Everything
// is observed but QueueWait, which a queue without a clock leaves to its
// transport.
func (q *Queue[T]) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Requested = q.requested
	s.Backlog = q.backlog
	s.Capacity = q.capacity
	s.Len = q.ready.Len()
	s.HalfOpen = q.half.len()
	s.Unavailable = q.owedYield + q.owedFD
	// A queue has no clock: the transport measures the wait.
	s.Unobserved = StatQueueWait
	return s
}
