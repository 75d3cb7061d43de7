package backlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Stats is a snapshot of a queue: its gauges, then counters that only grow.
// Counters named after Linux's TcpExt counters (/proc/net/netstat) count the
// same events; the others are this package's.
//
// A transport fills in what it can observe and marks the rest in
// Unobserved: such a value reads 0 but is not a measurement, and Stats
// marshals it to JSON as null and prints it as "n/a". A Queue observes
// everything but QueueWait, which its transport measures. Stats compare
// with ==.
type Stats struct {
	// Requested is the backlog last passed to listen().
	Requested int `json:"requested"`
	// Backlog is the stored backlog.
	Backlog int `json:"backlog"`
	// Capacity is how many completed connections can wait.
	Capacity int `json:"capacity"`
	// Len is how many completed connections wait for accept().
	Len int `json:"queued_now"`
	// HalfOpen is how many handshakes are under way.
	HalfOpen int `json:"half_open_now"`
	// Unavailable is how many slots freed by accept() have not come back
	// yet (KB 295079 defect, or exhausted descriptors under a Winsock
	// provider model).
	Unavailable int `json:"unavailable_now"`

	// SYNs counts SYNs offered to the queue.
	SYNs uint64 `json:"syns"`
	// Queued counts connections that entered the accept queue.
	Queued uint64 `json:"queued"`
	// Accepted counts connections taken by accept().
	Accepted uint64 `json:"accepted"`
	// Refused counts SYNs answered with RST.
	Refused uint64 `json:"refused"`
	// Ignored counts SYNs and cookie ACKs dropped without an answer.
	Ignored uint64 `json:"ignored"`
	// Reset counts connections reset after their handshake: overflow
	// under a reset rule, the excess of listen() again, and Close.
	Reset uint64 `json:"reset"`
	// Evicted counts half-open connections displaced by newer SYNs.
	Evicted uint64 `json:"evicted"`
	// Expired counts half-open connections that gave up.
	Expired uint64 `json:"expired"`
	// DeferredRefusals counts SYNs turned away only because a slot freed
	// by accept() had not come back yet (the KB 295079 defect).
	DeferredRefusals uint64 `json:"deferred_refusals"`

	// ListenOverflows counts connection attempts that found the accept
	// queue full, at the SYN or at the final ACK.
	ListenOverflows uint64 `json:"listen_overflows"`
	// ListenDrops counts connection attempts the listener dropped or
	// refused for any reason, overflows included.
	ListenDrops uint64 `json:"listen_drops"`
	// TCPReqQFullDrop counts SYNs dropped because the SYN queue was full
	// and cookies were off.
	TCPReqQFullDrop uint64 `json:"tcp_req_q_full_drop"`
	// TCPReqQFullDoCookies counts SYNs answered with a cookie because the
	// SYN queue was full (or cookies are always on).
	TCPReqQFullDoCookies uint64 `json:"tcp_req_q_full_do_cookies"`
	// SyncookiesSent counts SYN cookies sent.
	SyncookiesSent uint64 `json:"syncookies_sent"`
	// SyncookiesRecv counts valid SYN-cookie ACKs that became connections.
	SyncookiesRecv uint64 `json:"syncookies_recv"`

	// Overdue counts connections reset instead of served because they had
	// waited past the target of the listener's Overload policy while its
	// queue stood. accept() took them, so Accepted counts them, and so
	// does Reset; QueueWait does not, since it has the waits of the
	// connections served. Without a policy it stays 0.
	Overdue uint64 `json:"overdue"`

	// QueueWait is how long accepted connections waited in the accept
	// queue. A Queue has no clock: the transport measures it (package
	// kernel from the kernel's own account, package netstack from its
	// clock) and marks it unobserved where it cannot.
	QueueWait QueueWait `json:"queue_wait"`

	// Unobserved marks the values above that the transport cannot see.
	Unobserved Stat `json:"-"`
}

// A Stat names values of Stats, one bit each, for Stats.Unobserved. A Stat
// with several bits set names them all.
type Stat uint32

// The values of Stats.
const (
	StatRequested Stat = 1 << iota
	StatBacklog
	StatCapacity
	StatLen
	StatHalfOpen
	StatUnavailable
	StatSYNs
	StatQueued
	StatAccepted
	StatRefused
	StatIgnored
	StatReset
	StatEvicted
	StatExpired
	StatDeferredRefusals
	StatListenOverflows
	StatListenDrops
	StatTCPReqQFullDrop
	StatTCPReqQFullDoCookies
	StatSyncookiesSent
	StatSyncookiesRecv
	// StatQueueWait is Stats.QueueWait, a histogram: StatFields, which
	// lists the numbers, does not have it.
	StatQueueWait
	// StatOverdue is Stats.Overdue; it comes last so that the bits above
	// keep their values.
	StatOverdue
)

// StatField describes one value of Stats: its bit, its JSON name, and how
// to read it. StatFields lists them in the order of the struct, so that
// JSON, text and metrics can go through the values without naming each.
type StatField struct {
	Stat Stat
	// Name is the value's JSON key.
	Name string
	// Gauge is set for a value that goes up and down; the others are
	// counters that only grow.
	Gauge bool
	// Value reads the value from s.
	Value func(s *Stats) uint64
	set   func(s *Stats, v uint64)
}

// StatFields is every number of Stats, in order; QueueWait, a histogram,
// comes after them in JSON.
var StatFields = []StatField{
	{StatRequested, "requested", true, func(s *Stats) uint64 { return uint64(s.Requested) }, func(s *Stats, v uint64) { s.Requested = int(v) }},
	{StatBacklog, "backlog", true, func(s *Stats) uint64 { return uint64(s.Backlog) }, func(s *Stats, v uint64) { s.Backlog = int(v) }},
	{StatCapacity, "capacity", true, func(s *Stats) uint64 { return uint64(s.Capacity) }, func(s *Stats, v uint64) { s.Capacity = int(v) }},
	{StatLen, "queued_now", true, func(s *Stats) uint64 { return uint64(s.Len) }, func(s *Stats, v uint64) { s.Len = int(v) }},
	{StatHalfOpen, "half_open_now", true, func(s *Stats) uint64 { return uint64(s.HalfOpen) }, func(s *Stats, v uint64) { s.HalfOpen = int(v) }},
	{StatUnavailable, "unavailable_now", true, func(s *Stats) uint64 { return uint64(s.Unavailable) }, func(s *Stats, v uint64) { s.Unavailable = int(v) }},
	{StatSYNs, "syns", false, func(s *Stats) uint64 { return s.SYNs }, func(s *Stats, v uint64) { s.SYNs = v }},
	{StatQueued, "queued", false, func(s *Stats) uint64 { return s.Queued }, func(s *Stats, v uint64) { s.Queued = v }},
	{StatAccepted, "accepted", false, func(s *Stats) uint64 { return s.Accepted }, func(s *Stats, v uint64) { s.Accepted = v }},
	{StatRefused, "refused", false, func(s *Stats) uint64 { return s.Refused }, func(s *Stats, v uint64) { s.Refused = v }},
	{StatIgnored, "ignored", false, func(s *Stats) uint64 { return s.Ignored }, func(s *Stats, v uint64) { s.Ignored = v }},
	{StatReset, "reset", false, func(s *Stats) uint64 { return s.Reset }, func(s *Stats, v uint64) { s.Reset = v }},
	{StatEvicted, "evicted", false, func(s *Stats) uint64 { return s.Evicted }, func(s *Stats, v uint64) { s.Evicted = v }},
	{StatExpired, "expired", false, func(s *Stats) uint64 { return s.Expired }, func(s *Stats, v uint64) { s.Expired = v }},
	{StatDeferredRefusals, "deferred_refusals", false, func(s *Stats) uint64 { return s.DeferredRefusals }, func(s *Stats, v uint64) { s.DeferredRefusals = v }},
	{StatListenOverflows, "listen_overflows", false, func(s *Stats) uint64 { return s.ListenOverflows }, func(s *Stats, v uint64) { s.ListenOverflows = v }},
	{StatListenDrops, "listen_drops", false, func(s *Stats) uint64 { return s.ListenDrops }, func(s *Stats, v uint64) { s.ListenDrops = v }},
	{StatTCPReqQFullDrop, "tcp_req_q_full_drop", false, func(s *Stats) uint64 { return s.TCPReqQFullDrop }, func(s *Stats, v uint64) { s.TCPReqQFullDrop = v }},
	{StatTCPReqQFullDoCookies, "tcp_req_q_full_do_cookies", false, func(s *Stats) uint64 { return s.TCPReqQFullDoCookies }, func(s *Stats, v uint64) { s.TCPReqQFullDoCookies = v }},
	{StatSyncookiesSent, "syncookies_sent", false, func(s *Stats) uint64 { return s.SyncookiesSent }, func(s *Stats, v uint64) { s.SyncookiesSent = v }},
	{StatSyncookiesRecv, "syncookies_recv", false, func(s *Stats) uint64 { return s.SyncookiesRecv }, func(s *Stats, v uint64) { s.SyncookiesRecv = v }},
	{StatOverdue, "overdue", false, func(s *Stats) uint64 { return s.Overdue }, func(s *Stats, v uint64) { s.Overdue = v }},
}

// Add returns s and o together, for listeners reported as one (the
// shards of an SO_REUSEPORT group): gauges and counters add up, the
// queue waits merge, Requested and Backlog are s's, and what either did
// not observe is unobserved.
func (s Stats) Add(o Stats) Stats {
	sum := s
	for _, f := range StatFields {
		if f.Stat != StatRequested && f.Stat != StatBacklog {
			f.set(&sum, f.Value(&s)+f.Value(&o))
		}
	}
	sum.QueueWait.Count += o.QueueWait.Count
	sum.QueueWait.Sum += o.QueueWait.Sum
	for i := range sum.QueueWait.Buckets {
		sum.QueueWait.Buckets[i] += o.QueueWait.Buckets[i]
	}
	sum.Unobserved |= o.Unobserved
	return sum
}

// Observed reports whether every value named by which was observed.
func (s Stats) Observed(which Stat) bool { return s.Unobserved&which == 0 }

// Get returns one value and whether it was observed.
func (s *Stats) Get(which Stat) (v uint64, ok bool) {
	for _, f := range StatFields {
		if f.Stat == which {
			return f.Value(s), s.Observed(which)
		}
	}
	return 0, false
}

// MarshalJSON writes the values as an object in the order of the struct,
// with null for each value that was not observed; queue_wait is a
// histogram (QueueWait.MarshalJSON).
func (s Stats) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	s.appendJSON(&b)
	b.WriteByte('}')
	return b.Bytes(), nil
}

// AppendJSONFields writes the values as the members of a JSON object,
// without its braces, for a type that embeds Stats and adds its own.
func (s Stats) AppendJSONFields(b *bytes.Buffer) { s.appendJSON(b) }

func (s Stats) appendJSON(b *bytes.Buffer) {
	for i, f := range StatFields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(f.Name)
		b.WriteString(`":`)
		if !s.Observed(f.Stat) {
			b.WriteString("null")
			continue
		}
		v := f.Value(&s)
		if f.Gauge {
			b.WriteString(strconv.FormatInt(int64(v), 10))
		} else {
			b.WriteString(strconv.FormatUint(v, 10))
		}
	}
	b.WriteString(`,"queue_wait":`)
	s.QueueWait.appendJSON(b, s.Observed(StatQueueWait))
}

// UnmarshalJSON reads what MarshalJSON writes: a null marks the value as not
// observed.
func (s *Stats) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	*s = Stats{}
	if raw, present := m["queue_wait"]; present {
		if string(raw) == "null" {
			s.Unobserved |= StatQueueWait
		} else if err := json.Unmarshal(raw, &s.QueueWait); err != nil {
			return err
		}
	}
	for _, f := range StatFields {
		raw, present := m[f.Name]
		if !present {
			continue
		}
		if string(raw) == "null" {
			s.Unobserved |= f.Stat
			continue
		}
		if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			f.set(s, uint64(v))
			continue
		}
		v, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return fmt.Errorf("backlog: stats %s: %s is not an integer", f.Name, raw)
		}
		f.set(s, v)
	}
	return nil
}

// String returns the values as "name=value" pairs in the order of the
// struct, leaving out counters that are zero, with "n/a" for what was not
// observed: "backlog=5 capacity=6 queued_now=2 half_open_now=n/a …"; the
// queue wait comes last when some were measured: "queue_wait=(3 waits,
// mean 1ms, …)".
func (s Stats) String() string {
	var parts []string
	for _, f := range StatFields {
		v := f.Value(&s)
		switch {
		case !s.Observed(f.Stat):
			parts = append(parts, f.Name+"=n/a")
		case f.Gauge && f.Stat == StatUnavailable && v == 0:
		case f.Gauge:
			parts = append(parts, f.Name+"="+strconv.FormatInt(int64(v), 10))
		case v != 0:
			parts = append(parts, f.Name+"="+strconv.FormatUint(v, 10))
		}
	}
	if s.Observed(StatQueueWait) && s.QueueWait.Count > 0 {
		parts = append(parts, "queue_wait=("+s.QueueWait.String()+")")
	}
	return strings.Join(parts, " ")
}
