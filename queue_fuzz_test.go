package backlog

import (
	"fmt"
	"slices"
	"testing"
)

// FuzzQueue drives a queue with any sequence of SYNs, handshakes, cookie
// ACKs, offers, accepts, expiries, re-listens, yields and descriptor changes,
// and checks it against a model after every step:
//   - it never admits beyond its capacity,
//   - accept() returns connections in the order they were queued,
//   - every connection is in exactly one state, and ends in exactly one
//     outcome: accepted, refused, ignored, reset, evicted, expired, or still
//     pending (queued, half-open, or answered with a cookie) at the end,
//   - the queue's counters agree with the outcomes callers saw.
func FuzzQueue(f *testing.F) {
	f.Add([]byte{0, 5, 0, 0, 0, 0, 0, 0, 0, 4, 3, 3, 3, 3, 3, 3, 3})
	f.Add([]byte{12, 1, 0, 0, 1, 1, 1, 2, 1, 3, 4, 4, 6, 0, 3, 3, 3})
	f.Add([]byte{6, 3, 3, 3, 3, 3, 4, 7, 3, 4, 4, 7, 3, 3})
	f.Add([]byte{9, 2, 0, 0, 0, 0, 5, 1, 0, 0, 14, 1, 1})
	f.Add([]byte{11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1})
	f.Add([]byte{7, 1, 8, 3, 3, 4, 4, 3, 3, 15, 3, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		all := All()
		extra := []string{"linux:syncookies=0,max_syn_backlog=8", "linux:syncookies=2", "linux:abort_on_overflow=1"}
		var p Personality
		if i := int(data[0]) % (len(all) + len(extra)); i < len(all) {
			p = all[i]
		} else {
			p = MustLookup(extra[i-len(all)])
		}
		m := newModel(t, p, int(data[1]%12)-2)
		for _, b := range data[2:] {
			m.step(b)
		}
		m.finish()
	})
}

type state uint8

const (
	stHalf state = iota + 1
	stCookie
	stQueued
	stDone
)

type model struct {
	t       *testing.T
	q       *Queue[int]
	next    int
	state   map[int]state
	fate    map[int]Outcome
	queued  []int // arrival order of completed connections
	half    []int // arrival order of half-open connections
	cookies []int
	counts  map[Outcome]uint64
}

func newModel(t *testing.T, p Personality, backlog int) *model {
	q, err := NewQueue[int](p, backlog)
	if err != nil {
		t.Fatal(err)
	}
	return &model{t: t, q: q, state: map[int]state{}, fate: map[int]Outcome{}, counts: map[Outcome]uint64{}}
}

func (m *model) end(c int, o Outcome) {
	if m.state[c] == stDone {
		m.t.Fatalf("%s: connection %d ended twice: %v, then %v", m.q.p, c, m.fate[c], o)
	}
	m.remove(c)
	m.state[c] = stDone
	m.fate[c] = o
	m.counts[o]++
}

func (m *model) remove(c int) {
	m.queued = slices.DeleteFunc(m.queued, func(x int) bool { return x == c })
	m.half = slices.DeleteFunc(m.half, func(x int) bool { return x == c })
	m.cookies = slices.DeleteFunc(m.cookies, func(x int) bool { return x == c })
}

// enqueue records c as completed. Admission never takes the queue past its
// capacity; on systems that count from the SYN, admission happened then (a
// handshake admitted before listen() shrank the queue still completes into
// it, as BSD's soisconnected does), so the check is made at the SYN.
func (m *model) enqueue(c int) {
	wasHalf := m.state[c] == stHalf
	m.remove(c)
	m.state[c] = stQueued
	m.queued = append(m.queued, c)
	if !m.q.p.HalfOpen.Shared {
		if got, c := m.q.Len(), m.q.Capacity(); got > c {
			m.t.Fatalf("%s: %d queued after an admission; capacity %d", m.q.p, got, c)
		}
	} else if !wasHalf {
		m.checkShared()
	}
}

func (m *model) checkShared() {
	s := m.q.Stats()
	if s.Len+s.HalfOpen+s.Unavailable > s.Capacity {
		m.t.Fatalf("%s: %d queued + %d half-open + %d unavailable > capacity %d after an admission", m.q.p, s.Len, s.HalfOpen, s.Unavailable, s.Capacity)
	}
}

func (m *model) syn(c int, o Outcome, victim int, evicted bool) {
	if evicted {
		if m.state[victim] != stHalf {
			m.t.Fatalf("%s: evicted %d, which was not half-open", m.q.p, victim)
		}
		m.end(victim, Evicted)
	}
	switch o {
	case HalfOpen:
		m.state[c] = stHalf
		m.half = append(m.half, c)
		if m.q.p.HalfOpen.Shared {
			m.checkShared()
		}
	case Cookie:
		m.state[c] = stCookie
		m.cookies = append(m.cookies, c)
	case Queued:
		m.enqueue(c)
	case Ignored, Refused, Reset:
		m.end(c, o)
	default:
		m.t.Fatalf("%s: SYN/Offer returned %v", m.q.p, o)
	}
}

func (m *model) pick(list []int, b byte) (int, bool) {
	if len(list) == 0 {
		return 0, false
	}
	return list[int(b>>4)%len(list)], true
}

func (m *model) step(b byte) {
	switch b % 10 {
	case 0, 1:
		c := m.next
		m.next++
		o, victim, evicted := m.q.SYN(c)
		m.syn(c, o, victim, evicted)
	case 2:
		c, ok := m.pick(m.half, b)
		if !ok {
			return
		}
		switch o := m.q.Established(c); o {
		case Queued:
			m.enqueue(c)
		case HalfOpen: // ACK dropped; stays half-open
		case Reset:
			m.end(c, Reset)
		default:
			m.t.Fatalf("%s: Established(%d) = %v for a half-open connection", m.q.p, c, o)
		}
	case 3:
		c := m.next
		m.next++
		o, victim, evicted := m.q.Offer(c)
		m.syn(c, o, victim, evicted)
	case 4, 5:
		c, ok := m.q.Accept()
		if len(m.queued) == 0 {
			if ok {
				m.t.Fatalf("%s: accepted %d from an empty queue", m.q.p, c)
			}
			return
		}
		if !ok || c != m.queued[0] {
			m.t.Fatalf("%s: accepted %d, %v; want %d (FIFO)", m.q.p, c, ok, m.queued[0])
		}
		m.end(c, Accepted)
	case 6:
		c, ok := m.pick(m.cookies, b)
		if !ok {
			return
		}
		switch o := m.q.CookieACK(c); o {
		case Queued:
			m.enqueue(c)
		case Ignored, Reset:
			m.end(c, o)
		default:
			m.t.Fatalf("%s: CookieACK = %v", m.q.p, o)
		}
	case 7:
		c, ok := m.pick(m.half, b)
		if !ok {
			return
		}
		if !m.q.Expire(c) {
			m.t.Fatalf("%s: Expire(%d) of a half-open connection reported false", m.q.p, c)
		}
		m.end(c, Expired)
	case 8:
		backlog := int(b>>4) - 3
		if b&0x80 != 0 {
			backlog = 1 << 40
		}
		reset, err := m.q.Listen(backlog)
		if err != nil {
			if m.q.p.Relisten != RelistenFail {
				m.t.Fatalf("%s: Listen(%d): %v", m.q.p, backlog, err)
			}
			return
		}
		for _, c := range reset {
			if st := m.state[c]; st != stHalf && st != stQueued {
				m.t.Fatalf("%s: Listen reset %d, which was not pending", m.q.p, c)
			}
			// The newest go first, so the oldest keep their place.
			if i := slices.Index(m.queued, c); i >= 0 && i != len(m.queued)-1 {
				m.t.Fatalf("%s: Listen reset queued %d before newer ones %v", m.q.p, c, m.queued)
			}
			m.end(c, Reset)
		}
		if m.q.p.Relisten == RelistenUpdateResetExcess {
			s := m.q.Stats()
			pending := s.Len
			if m.q.p.HalfOpen.Shared {
				pending += s.HalfOpen
			}
			if pending > s.Capacity {
				m.t.Fatalf("%s: %d pending after listen(%d) with capacity %d", m.q.p, pending, backlog, s.Capacity)
			}
		}
	case 9:
		if b&0x10 != 0 {
			m.q.Yield()
		} else {
			m.q.SetDescriptors(b&0x20 != 0)
		}
	}
	m.check()
}

func (m *model) check() {
	if got, want := m.q.Len(), len(m.queued); got != want {
		m.t.Fatalf("%s: Len() = %d; model has %d", m.q.p, got, want)
	}
	if got, want := m.q.HalfOpen(), len(m.half); got != want {
		m.t.Fatalf("%s: HalfOpen() = %d; model has %d", m.q.p, got, want)
	}
}

func (m *model) finish() {
	// Drain in order, then close: everything still pending ends reset.
	for len(m.queued) > 0 {
		m.step(4)
	}
	for _, c := range m.q.Close() {
		m.end(c, Reset)
	}
	for c := 0; c < m.next; c++ {
		switch m.state[c] {
		case stDone, stCookie:
		default:
			m.t.Fatalf("%s: connection %d left in state %d after Close", m.q.p, c, m.state[c])
		}
	}
	s := m.q.Stats()
	got := fmt.Sprint(s.Accepted, s.Refused, s.Evicted, s.Expired, s.Reset)
	want := fmt.Sprint(m.counts[Accepted], m.counts[Refused], m.counts[Evicted], m.counts[Expired], m.counts[Reset])
	if got != want {
		m.t.Fatalf("%s: counters accepted/refused/evicted/expired/reset = %s; callers saw %s", m.q.p, got, want)
	}
	// Ignored also counts ACKs dropped without a record (cookie ACKs), so it
	// is at least what callers saw end that way.
	if s.Ignored < m.counts[Ignored] {
		m.t.Fatalf("%s: Ignored = %d; callers saw %d", m.q.p, s.Ignored, m.counts[Ignored])
	}
}
