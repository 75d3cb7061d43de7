package backlog

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// A Personality is the listen() rules of one system, as data: how a requested
// backlog is stored, how many connections can wait, what a connection attempt
// meets when the queue is full, and what calling listen() again does.
//
// The values come from the documents and sources cited in Sources and in the
// doc comment of the function that builds each personality (see All). A
// Personality is a plain value: copy it, change a field and hand it to
// NewQueue to model a variant.
type Personality struct {
	// Name is the canonical name, as accepted by Lookup.
	Name string
	// Params is the canonical form of the parameters this value was built
	// with ("somaxconn=128,syncookies=0"), or "" for the defaults.
	Params string
	// Aliases are other names Lookup accepts.
	Aliases []string
	// System is the system the rules describe, for people.
	System string
	// Sources lists where the rules come from.
	Sources []string
	// Notes says, in a sentence or two, what is modelled rather than
	// documented.
	Notes string

	// Clamp turns a requested backlog into the stored one.
	Clamp Clamp
	// SOMAXCONN is the value an application passes when it writes SOMAXCONN
	// on this system.
	SOMAXCONN int
	// Capacity turns the stored backlog into the number of connections that
	// can wait for accept().
	Capacity CapacityRule
	// HalfOpen says how connections whose handshake is not finished are
	// limited.
	HalfOpen HalfOpenRule
	// OnFull is what a SYN meets when the accept queue is full.
	OnFull SYNAction
	// OnACKFull is what the final ACK of a handshake meets when the accept
	// queue is full by then.
	OnACKFull ACKAction
	// OnCookieACKFull is what a valid SYN-cookie ACK meets when the accept
	// queue is full. The zero value drops it: nothing is held, so nothing is
	// retransmitted by the server.
	OnCookieACKFull ACKAction
	// Relisten is what listen() on a listening socket does.
	Relisten Relisten
	// DeferredSlotReturn reproduces the Windows 2000 SP1 Winsock Direct
	// defect (KB 295079): a slot freed by accept() comes back only once the
	// accepting thread yields (Queue.Yield), not at once.
	DeferredSlotReturn bool
	// Quantum is, under DeferredSlotReturn, how long the accepting thread
	// runs after accept() before the scheduler pre-empts it, which is when
	// the freed slot comes back if the thread has not blocked in accept()
	// again by then. Zero means DefaultQuantum.
	Quantum time.Duration
	// SlotsNeedDescriptors is the Winsock provider model of seeds 001 and 003:
	// each slot is backed by a socket descriptor, so while descriptors are
	// exhausted a slot freed by accept() is not refilled, and a later listen()
	// or accept() refills the queue once descriptors are back
	// (Queue.SetDescriptors).
	SlotsNeedDescriptors bool

	// ClientSYN is when this system's TCP client sends its SYN again while
	// it waits for an answer, and when connect() gives up.
	ClientSYN Schedule
	// SYNACK is when this system sends its SYN-ACK again while it waits for
	// the final ACK, and when it forgets the half-open connection.
	SYNACK Schedule
	// OnRepeatSYN is what this system does with a client's SYN that comes
	// again while its connection is half-open. The zero value leaves it to
	// the transport's own TCP.
	OnRepeatSYN RepeatSYN
}

// DefaultQuantum is a Windows 2000 Professional thread quantum: two clock
// ticks of 10 to 15 ms (Windows 2000 Server runs threads for 12 ticks).
const DefaultQuantum = 30 * time.Millisecond

// YieldAfter returns how long after an accept() the accepting thread yields
// by pre-emption under DeferredSlotReturn: Quantum, or DefaultQuantum.
func (p Personality) YieldAfter() time.Duration {
	if p.Quantum > 0 {
		return p.Quantum
	}
	return DefaultQuantum
}

// String returns the name and, if any, the parameters: "linux" or
// "linux:somaxconn=128".
func (p Personality) String() string {
	if p.Params == "" {
		return p.Name
	}
	return p.Name + ":" + p.Params
}

// Stored returns the backlog the system keeps for listen(requested).
//
// A Go int beyond the 32-bit range of C's int is first saturated to that
// range: no C caller can pass it, and saturating keeps "huge" meaning "huge"
// instead of wrapping to whatever the low 32 bits say.
func (p Personality) Stored(requested int) int { return p.Clamp.Apply(requested) }

// CapacityOf returns how many completed connections can wait for accept()
// when the stored backlog is stored.
func (p Personality) CapacityOf(stored int) int { return p.Capacity.Apply(stored) }

// Listen returns what listen(requested) becomes: the stored backlog and the
// number of completed connections that can wait.
func (p Personality) Listen(requested int) (stored, capacity int) {
	stored = p.Stored(requested)
	return stored, p.CapacityOf(stored)
}

// Maximum returns the largest backlog a plain request gets stored: what
// listen(INT_MAX) gives. On most systems SOMAXCONN gives the same; on FreeBSD
// with kern.ipc.soacceptqueue raised above 128 it gives only 128, and on
// Windows SOMAXCONN_HINT reaches beyond it.
func (p Personality) Maximum() int { return p.Stored(math.MaxInt32) }

// HalfOpenLimit returns how many half-open connections can exist for the
// stored backlog: the capacity itself when they share it with completed
// connections.
func (p Personality) HalfOpenLimit(stored int) int {
	switch {
	case p.HalfOpen.Shared:
		return p.CapacityOf(stored)
	case p.HalfOpen.Fixed > 0:
		return p.HalfOpen.Fixed
	default:
		return stored + p.HalfOpen.Extra
	}
}

// FullVerdict summarises, in one word, what a client meets when the queue
// is full: "ignore" (silence; the client retransmits its SYN), "refuse" (a
// reset), "evict" (a half-open connection is displaced to make room) or
// "cookie" (the SYN is answered statelessly). A system that answers the SYN
// and decides at the final ACK is described by that decision.
func (p Personality) FullVerdict() string {
	if p.OnFull == SYNAnswer {
		if p.OnACKFull == ACKReset {
			return "refuse"
		}
		return "ignore"
	}
	return p.OnFull.String()
}

// HalfOpenString describes how half-open connections are limited: "shared"
// (they take slots of the capacity), "N+1", "N", or a fixed number.
func (p Personality) HalfOpenString() string {
	h := p.HalfOpen
	switch {
	case h.Shared:
		return "shared"
	case h.AlwaysCookie:
		return "none (cookies)"
	case h.Fixed > 0:
		return fmt.Sprintf("%d, then %s", h.Fixed, h.OnFull)
	case h.Extra > 0:
		return fmt.Sprintf("N+%d, then %s", h.Extra, h.OnFull)
	}
	return "N, then " + h.OnFull.String()
}

// SYNACKRetries returns how many times a half-open connection's SYN-ACK is
// sent again before it is given up, decided each time its timer fires, when
// halfOpen connections of its listener are half-open, young of them (itself
// among them, if it is) have not had a retransmission yet, and backlog is
// the stored backlog. It is the schedule's count, unless HalfOpen.PruneOld
// holds and twice halfOpen exceeds max(8, backlog): then, down to 2, one
// fewer for as long as halfOpen reaches twice, four times, eight times …
// young, so that the older the queue, the sooner its old entries go and
// half the room stays for new ones (Linux
// net/ipv4/inet_connection_sock.c, reqsk_timer_handler).
func (p Personality) SYNACKRetries(halfOpen, young, backlog int) int {
	retries := len(p.SYNACK.At)
	if !p.HalfOpen.PruneOld || halfOpen*2 <= max(8, backlog) {
		return retries
	}
	for y := young * 2; retries > 2 && halfOpen >= y; y *= 2 {
		retries--
	}
	return retries
}

// Validate reports whether p is usable by a Queue.
func (p Personality) Validate() error {
	if p.Name == "" {
		return fmt.Errorf("backlog: personality has no name")
	}
	if p.OnFull < SYNIgnore || p.OnFull > SYNAnswer || p.OnFull == SYNCookie {
		return fmt.Errorf("backlog: personality %s: OnFull %v is not a choice for a full accept queue", p.Name, p.OnFull)
	}
	if p.OnACKFull != ACKDrop && p.OnACKFull != ACKReset {
		return fmt.Errorf("backlog: personality %s: OnACKFull must be ACKDrop or ACKReset", p.Name)
	}
	if p.Relisten < RelistenUpdate || p.Relisten > RelistenFail {
		return fmt.Errorf("backlog: personality %s: Relisten %d is unknown", p.Name, p.Relisten)
	}
	if !p.HalfOpen.Shared && p.HalfOpen.OnFull != SYNIgnore && p.HalfOpen.OnFull != SYNCookie {
		return fmt.Errorf("backlog: personality %s: HalfOpen.OnFull must be SYNIgnore or SYNCookie", p.Name)
	}
	if p.HalfOpen.Shared && p.OnFull == SYNAnswer {
		return fmt.Errorf("backlog: personality %s: a shared limit cannot answer SYNs beyond it", p.Name)
	}
	return nil
}

// ClampKind names the shape of a system's backlog clamp.
type ClampKind uint8

const (
	// ClampNearest replaces values outside [Min, Max] by the nearest one.
	ClampNearest ClampKind = iota
	// ClampUnsigned compares the request as an unsigned number: anything
	// above Max, including every negative value, becomes Max; 0 stays 0.
	ClampUnsigned
	// ClampNegativeOrAbove turns negative values and values above Max into
	// Max; 0 stays 0.
	ClampNegativeOrAbove
	// ClampNonPositiveOrAbove turns values up to 0 and values above Max into
	// Max.
	ClampNonPositiveOrAbove
	// ClampWinsockHint is Winsock 2 on Windows 2000 and later: SOMAXCONN
	// (0x7fffffff) becomes Max; a negative value is SOMAXCONN_HINT(n) = -n
	// and keeps n within [HintMin, HintMax]; anything else is kept within
	// [Min, Max].
	ClampWinsockHint
)

// A Clamp turns a requested backlog into the stored one.
type Clamp struct {
	Kind             ClampKind
	Min, Max         int
	HintMin, HintMax int
}

// WinsockSOMAXCONN is SOMAXCONN in winsock2.h.
const WinsockSOMAXCONN = 0x7fffffff

// SomaxconnHint is Winsock's SOMAXCONN_HINT(n): a request for a backlog of n
// that Windows 8 and later honour within [200, 65535].
func SomaxconnHint(n int) int { return -n }

// Apply returns the stored backlog for requested.
func (c Clamp) Apply(requested int) int {
	v := CInt(requested)
	switch c.Kind {
	case ClampUnsigned:
		if uint32(v) > uint32(c.Max) {
			return c.Max
		}
		return int(v)
	case ClampNegativeOrAbove:
		if v < 0 || int(v) > c.Max {
			return c.Max
		}
		return int(v)
	case ClampNonPositiveOrAbove:
		if v <= 0 || int(v) > c.Max {
			return c.Max
		}
		return int(v)
	case ClampWinsockHint:
		switch {
		case v == WinsockSOMAXCONN:
			return c.Max
		case v < 0:
			return nearest(-int(v), c.HintMin, c.HintMax)
		}
		return nearest(int(v), c.Min, c.Max)
	default:
		return nearest(int(v), c.Min, c.Max)
	}
}

// String describes the clamp: "1..5", "0..4096, negative → 4096", …
func (c Clamp) String() string {
	switch c.Kind {
	case ClampUnsigned:
		return fmt.Sprintf("0..%d, negative → %d", c.Max, c.Max)
	case ClampNegativeOrAbove:
		return fmt.Sprintf("0..%d, negative → %d", c.Max, c.Max)
	case ClampNonPositiveOrAbove:
		return fmt.Sprintf("1..%d, 0 or negative → %d", c.Max, c.Max)
	case ClampWinsockHint:
		return fmt.Sprintf("%d..%d; SOMAXCONN → %d; SOMAXCONN_HINT(n) → %d..%d", c.Min, c.Max, c.Max, c.HintMin, c.HintMax)
	}
	if c.Min == c.Max {
		return fmt.Sprintf("always %d", c.Min)
	}
	return fmt.Sprintf("%d..%d", c.Min, c.Max)
}

// CInt returns v as the C int a listen() call receives, saturated to the
// 32-bit range rather than truncated: a huge request stays huge, instead of
// becoming whatever its low 32 bits say.
func CInt(v int) int32 {
	switch {
	case v > math.MaxInt32:
		return math.MaxInt32
	case v < math.MinInt32:
		return math.MinInt32
	}
	return int32(v)
}

func nearest(v, lo, hi int) int {
	return min(max(v, lo), hi)
}

// CapacityRule turns a stored backlog into how many completed connections
// can wait for accept().
type CapacityRule uint8

const (
	// CapacityExact: a backlog of N holds N.
	CapacityExact CapacityRule = iota
	// CapacityPlusOne: a backlog of N holds N+1, because the queue is full
	// only when it holds more than N (Linux include/net/sock.h
	// sk_acceptq_is_full).
	CapacityPlusOne
	// CapacityThreeHalves: a backlog of N holds ⌊3N/2⌋+1, because a new
	// connection is refused only when more than 3N/2 wait (BSD sonewconn).
	CapacityThreeHalves
)

// Apply returns the capacity for the stored backlog n.
func (r CapacityRule) Apply(n int) int {
	switch r {
	case CapacityPlusOne:
		return n + 1
	case CapacityThreeHalves:
		return 3*n/2 + 1
	}
	return n
}

// String returns "N", "N+1" or "3N/2+1".
func (r CapacityRule) String() string {
	switch r {
	case CapacityPlusOne:
		return "N+1"
	case CapacityThreeHalves:
		return "3N/2+1"
	}
	return "N"
}

// HalfOpenRule says how connections whose handshake is not finished are
// limited.
type HalfOpenRule struct {
	// Shared means half-open connections take slots of the same limit as
	// completed ones, from the SYN until accept().
	Shared bool
	// When not shared, the limit is the stored backlog plus Extra, or Fixed
	// when Fixed is positive.
	Extra int
	Fixed int
	// OnFull is what a SYN meets when the separate half-open limit is
	// reached: SYNIgnore or SYNCookie.
	OnFull SYNAction
	// AlwaysCookie answers every SYN with a cookie and keeps no half-open
	// state (Linux tcp_syncookies=2).
	AlwaysCookie bool
	// MaxSynBacklog, when positive and cookies are off, drops a SYN once
	// fewer than a quarter of MaxSynBacklog half-open places remain (Linux
	// net/ipv4/tcp_input.c tcp_conn_request, tcp_max_syn_backlog).
	MaxSynBacklog int
	// PruneOld gives old half-open connections fewer SYN-ACK
	// retransmissions while more than half the room is taken (Linux
	// reqsk_timer_handler): see Personality.SYNACKRetries.
	PruneOld bool
}

// SYNAction is what a SYN meets.
type SYNAction uint8

const (
	// SYNIgnore drops the SYN silently; the client sends it again later.
	SYNIgnore SYNAction = iota + 1
	// SYNRefuse answers with RST; the client's connect fails at once.
	SYNRefuse
	// SYNEvict displaces the oldest half-open connection to make room, and
	// ignores the SYN when there is none or when that did not make room.
	SYNEvict
	// SYNCookie answers with a SYN cookie and keeps nothing.
	SYNCookie
	// SYNAnswer answers as usual; the queue is checked at the final ACK.
	SYNAnswer
)

// String returns "ignore", "refuse", "evict", "cookie" or "answer".
func (a SYNAction) String() string {
	switch a {
	case SYNIgnore:
		return "ignore"
	case SYNRefuse:
		return "refuse"
	case SYNEvict:
		return "evict"
	case SYNCookie:
		return "cookie"
	case SYNAnswer:
		return "answer"
	}
	return fmt.Sprintf("SYNAction(%d)", uint8(a))
}

// ACKAction is what the final ACK of a handshake meets when the accept queue
// is full.
type ACKAction uint8

const (
	// ACKDrop drops the ACK: the connection stays half-open, the server
	// sends its SYN-ACK again, and the client already believes it is
	// connected.
	ACKDrop ACKAction = iota + 1
	// ACKReset answers with RST: the client's connection is reset.
	ACKReset
)

// String returns "drop" or "reset".
func (a ACKAction) String() string {
	switch a {
	case ACKDrop:
		return "drop"
	case ACKReset:
		return "reset"
	}
	return fmt.Sprintf("ACKAction(%d)", uint8(a))
}

// Relisten is what listen() on a socket that already listens does.
type Relisten uint8

const (
	// RelistenUpdate stores the new backlog; nothing queued is dropped, and
	// new arrivals wait until the queue is below the new limit.
	RelistenUpdate Relisten = iota + 1
	// RelistenUpdateResetExcess stores the new backlog and resets the
	// pending connections beyond it.
	RelistenUpdateResetExcess
	// RelistenUnchanged succeeds and keeps the old backlog.
	RelistenUnchanged
	// RelistenFail fails when more connections wait than the new backlog
	// holds, and updates otherwise.
	RelistenFail
)

// String returns "update", "update-reset-excess", "unchanged" or "fail".
func (r Relisten) String() string {
	switch r {
	case RelistenUpdate:
		return "update"
	case RelistenUpdateResetExcess:
		return "update-reset-excess"
	case RelistenUnchanged:
		return "unchanged"
	case RelistenFail:
		return "fail"
	}
	return fmt.Sprintf("Relisten(%d)", uint8(r))
}

// A Schedule is when a handshake segment is sent again and when the attempt
// is abandoned, both counted from the first transmission.
type Schedule struct {
	// At lists the retransmission times.
	At []time.Duration
	// GiveUp is when the attempt fails (for a client, connect() returns
	// ETIMEDOUT; for a server, the half-open connection is forgotten).
	GiveUp time.Duration
}

// String returns the schedule as "1s 3s 7s, gives up at 15s".
func (s Schedule) String() string {
	var b strings.Builder
	for i, d := range s.At {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shortDuration(d))
	}
	if len(s.At) == 0 {
		b.WriteString("none")
	}
	b.WriteString(", gives up at ")
	b.WriteString(shortDuration(s.GiveUp))
	return b.String()
}

// Step returns how long after retransmission i (0 for the first
// transmission) the next one comes, or, after the last, the attempt is
// abandoned.
func (s Schedule) Step(i int) time.Duration {
	i = min(max(i, 0), len(s.At))
	var prev time.Duration
	if i > 0 {
		prev = s.At[i-1]
	}
	if i < len(s.At) {
		return s.At[i] - prev
	}
	return s.GiveUp - prev
}

// RepeatSYN is what a server does with a SYN that comes again, with the same
// initial sequence number, while the connection it opened is half-open: the
// client's own retransmission, most often because the SYN-ACK was lost.
type RepeatSYN struct {
	// Resend is whether the SYN-ACK goes out again at once. Without it the
	// transport's TCP does what it does: the kernel transport's, its own
	// rule; netstack's (gVisor's) answers with at most a bare ACK, as RFC
	// 793 answers a segment outside the window, and the client waits for
	// the server's next SYN-ACK.
	Resend bool
	// Restart is what a resend does to the SYN-ACK schedule.
	Restart Restart
	// RateLimit, if not zero, is how long after a resend another repeated
	// SYN gets no answer at all.
	RateLimit time.Duration
}

// String describes the rule, as "SYN-ACK again, its timer restarted, at
// most once per 500ms".
func (r RepeatSYN) String() string {
	if !r.Resend {
		return "as the transport's TCP answers it"
	}
	s := "SYN-ACK again"
	switch r.Restart {
	case RestartTimer:
		s += ", its timer restarted"
	case RestartSchedule:
		s += ", its schedule started over"
	}
	if r.RateLimit > 0 {
		s += ", at most once per " + r.RateLimit.String()
	}
	return s
}

// Restart is what answering a repeated SYN does to the SYN-ACK schedule.
type Restart uint8

const (
	// RestartNone leaves the schedule as it was.
	RestartNone Restart = iota
	// RestartTimer waits from now as long as the schedule's current step:
	// the next retransmission comes one step after the resend, and the
	// steps after it follow as before.
	RestartTimer
	// RestartSchedule starts the schedule over from now, every
	// retransmission of it and its end included.
	RestartSchedule
)

func shortDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%gs", d.Seconds())
}

// backoff builds a schedule whose first retransmission comes after initial
// and whose later gaps are initial multiplied by each factor in turn.
func backoff(initial time.Duration, factors []int, giveUp time.Duration) Schedule {
	at := make([]time.Duration, 0, len(factors))
	var t time.Duration
	for _, f := range factors {
		t += initial * time.Duration(f)
		if t >= giveUp {
			break
		}
		at = append(at, t)
	}
	return Schedule{At: at, GiveUp: giveUp}
}

// doubling returns the factors 1, 2, 4, … for n retransmissions.
func doubling(n int) []int {
	f := make([]int, n)
	for i := range f {
		f[i] = 1 << i
	}
	return f
}
