package conformance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
)

// The behaviour table: every personality on netstack and emulated on the
// kernel, case by case, each observed only through what a user of a
// backlog.Listener sees. Where package kernel's documentation says that
// emulation reproduces a rule, both transports must give the same
// observation, and that observation must be the personality's prediction.
//
// Clients connect one at a time, each from a port of its own, and the next
// one starts only once the listener has decided about the last (its queue
// counted it as queued, refused, ignored or reset), so no timing decides an
// outcome.

// behaviour is one row of the table: what to do with a listener, and what
// to observe.
type behaviour struct {
	name string
	// applies, if set, says whether the case means anything for p.
	applies func(p backlog.Personality) bool
	// observe runs the case and returns what it saw.
	observe func(t *testing.T, b *bench) any
	// predict returns what it should see under p.
	predict func(p backlog.Personality) any
}

// bench is a listener under test and its clients.
type bench struct {
	t    *testing.T
	srv  server
	p    backlog.Personality
	base int // the first client's port
	next int // the next client's number
}

// decided counts the connection attempts the queue has made up its mind
// about.
func decided(s backlog.Stats) uint64 { return s.Queued + s.Refused + s.Ignored + s.Reset }

// client connects one more client and returns its number once the queue
// has decided about it. A client the queue turns away is closed.
func (b *bench) client() int {
	b.t.Helper()
	i := b.next
	b.next++
	before := b.srv.l.Stats()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		conn    net.Conn
		dialErr error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		conn, dialErr = b.srv.dial(ctx, b.base+i)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for decided(b.srv.l.Stats()) <= decided(before) {
		if time.Now().After(deadline) {
			select {
			case <-done:
				b.t.Fatalf("client %d: connect: %v; the listener never heard of it (%v)", i, dialErr, b.srv.l.Stats())
			default:
				b.t.Fatalf("client %d: the listener never decided about it (%v)", i, b.srv.l.Stats())
			}
		}
		time.Sleep(time.Millisecond)
	}
	// An ignored client would retransmit its SYN: end its connect now.
	// Any other connect ends by itself, and must: cancelling one that
	// has just completed would reset it.
	if b.srv.l.Stats().Ignored > before.Ignored {
		cancel()
	}
	<-done
	if conn != nil {
		b.t.Cleanup(func() { conn.Close() })
	}
	return i
}

// clients connects n clients.
func (b *bench) clients(n int) {
	for range n {
		b.client()
	}
}

// drain accepts until nothing more is waiting and returns the numbers of
// the clients it accepted, in order.
func (b *bench) drain() []int {
	b.t.Helper()
	var got []int
	for b.srv.l.Stats().Len > 0 {
		c := b.accept()
		if c < 0 {
			break
		}
		got = append(got, c)
	}
	return got
}

// accept takes one connection and returns its client's number, or -1 if
// none came within a second.
func (b *bench) accept() int {
	b.t.Helper()
	d := b.srv.l.(interface{ SetDeadline(time.Time) error })
	d.SetDeadline(time.Now().Add(time.Second))
	defer d.SetDeadline(time.Time{})
	c, err := b.srv.l.Accept()
	if err != nil {
		return -1
	}
	defer c.Close()
	return b.clientOf(c.RemoteAddr())
}

// clientOf returns the number a client's port stands for.
func (b *bench) clientOf(a net.Addr) int { return a.(*net.TCPAddr).Port - b.base }

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// errClass names an error by what a caller can test with errors.Is.
func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, net.ErrClosed):
		return "net.ErrClosed"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "os.ErrDeadlineExceeded"
	case errors.Is(err, backlog.ErrRelisten) && errors.Is(err, syscall.EINVAL):
		return "backlog.ErrRelisten+EINVAL"
	case errors.Is(err, backlog.ErrRelisten):
		return "backlog.ErrRelisten"
	case errors.Is(err, syscall.EINVAL):
		return "EINVAL"
	}
	return "other: " + err.Error()
}

// fullQueue is what a full queue shows: how many wait, which clients are
// served, and how many were turned away.
type fullQueue struct {
	Len      int
	Accepted []int
}

// relisten is what listen() again shows.
type relisten struct {
	Err      string
	Backlog  int
	Len      int
	Accepted []int
}

// kb295079 is what a client arriving after an accept on a full queue meets.
type kb295079 struct {
	// QueuedRightAfter says whether a client arriving before the thread
	// yields is queued; Deferred how many the queue refused for want of
	// the slot alone.
	QueuedRightAfter bool
	Deferred         uint64
	// QueuedAfterBlock says whether one arriving after accept() blocked
	// is queued.
	QueuedAfterBlock bool
}

// shrinkTo is the backlog the relisten cases shrink to; they start from 3.
const shrinkTo = 1

var behaviours = []behaviour{
	{
		name: "stored backlog and capacity",
		observe: func(t *testing.T, b *bench) any {
			s := b.srv.l.Stats()
			return [2]int{b.srv.l.Backlog(), s.Capacity}
		},
		predict: func(p backlog.Personality) any {
			stored, capacity := p.Listen(3)
			return [2]int{stored, capacity}
		},
	},
	{
		name: "full queue for completed connections",
		observe: func(t *testing.T, b *bench) any {
			c := b.srv.l.Stats().Capacity
			b.clients(c + 2)
			return fullQueue{Len: b.srv.l.Stats().Len, Accepted: b.drain()}
		},
		predict: func(p backlog.Personality) any {
			_, c := p.Listen(3)
			return fullQueue{Len: c, Accepted: seq(0, c)}
		},
	},
	{
		name: "listen again, grow",
		observe: func(t *testing.T, b *bench) any {
			b.clients(b.srv.l.Stats().Capacity)
			err := b.srv.l.SetBacklog(5)
			b.client()
			return relisten{Err: errClass(err), Backlog: b.srv.l.Backlog(), Len: b.srv.l.Stats().Len, Accepted: b.drain()}
		},
		predict: func(p backlog.Personality) any {
			stored, c := p.Listen(3)
			if p.Relisten == backlog.RelistenUnchanged {
				return relisten{Err: "nil", Backlog: stored, Len: c, Accepted: seq(0, c)}
			}
			stored, c2 := p.Listen(5)
			n := min(c+1, c2)
			return relisten{Err: "nil", Backlog: stored, Len: n, Accepted: seq(0, n)}
		},
	},
	{
		name: "listen again, shrink",
		observe: func(t *testing.T, b *bench) any {
			b.clients(b.srv.l.Stats().Capacity)
			err := b.srv.l.SetBacklog(shrinkTo)
			// Resets of the excess reach the clients, not the queue:
			// the queue shows what it kept.
			return relisten{Err: errClass(err), Backlog: b.srv.l.Backlog(), Len: b.srv.l.Stats().Len, Accepted: b.drain()}
		},
		predict: func(p backlog.Personality) any {
			stored, c := p.Listen(3)
			newStored, newC := p.Listen(shrinkTo)
			switch p.Relisten {
			case backlog.RelistenUnchanged:
				return relisten{Err: "nil", Backlog: stored, Len: c, Accepted: seq(0, c)}
			case backlog.RelistenFail:
				if c > newC {
					return relisten{Err: "backlog.ErrRelisten+EINVAL", Backlog: stored, Len: c, Accepted: seq(0, c)}
				}
			case backlog.RelistenUpdateResetExcess:
				return relisten{Err: "nil", Backlog: newStored, Len: newC, Accepted: seq(0, newC)}
			}
			return relisten{Err: "nil", Backlog: newStored, Len: c, Accepted: seq(0, c)}
		},
	},
	{
		name: "Close twice, Accept and SetBacklog after Close",
		observe: func(t *testing.T, b *bench) any {
			b.clients(1)
			first := b.srv.l.Close()
			second := b.srv.l.Close()
			_, accept := b.srv.l.Accept()
			relisten := b.srv.l.SetBacklog(2)
			return []string{errClass(first), errClass(second), errClass(accept), errClass(relisten)}
		},
		predict: func(backlog.Personality) any {
			return []string{"nil", "net.ErrClosed", "net.ErrClosed", "net.ErrClosed"}
		},
	},
	{
		name: "deadlines",
		observe: func(t *testing.T, b *bench) any {
			l := b.srv.l
			d := l.(interface{ SetDeadline(time.Time) error })
			d.SetDeadline(time.Now().Add(20 * time.Millisecond))
			_, empty := l.Accept()
			b.clients(1)
			// As with net.TCPListener, a deadline that has passed
			// fails Accept even while a connection waits.
			d.SetDeadline(time.Now().Add(-time.Second))
			_, past := l.Accept()
			// A deadline in the future again: the waiting one comes.
			d.SetDeadline(time.Now().Add(2 * time.Second))
			c, cleared := l.Accept()
			who := -1
			if c != nil {
				who = b.clientOf(c.RemoteAddr())
				c.Close()
			}
			l.Close()
			d.SetDeadline(time.Now().Add(-time.Second))
			_, closed := l.Accept()
			return []any{errClass(empty), errClass(past), errClass(cleared), who, errClass(closed)}
		},
		predict: func(backlog.Personality) any {
			return []any{"os.ErrDeadlineExceeded", "os.ErrDeadlineExceeded", "nil", 0, "net.ErrClosed"}
		},
	},
	{
		name: "KB 295079: the slot freed by accept()",
		observe: func(t *testing.T, b *bench) any {
			// The queue is full (backlog 2 under the case's long
			// quantum, see newBench); one accept frees a slot.
			c := b.srv.l.Stats().Capacity
			b.clients(c)
			b.accept()
			var o kb295079
			before := b.srv.l.Stats()
			b.client()
			after := b.srv.l.Stats()
			o.QueuedRightAfter = after.Queued > before.Queued
			o.Deferred = after.DeferredRefusals
			// The thread takes what waits, then blocks in accept():
			// a yield, whatever the quantum.
			for b.srv.l.Stats().Len > 0 {
				b.accept()
			}
			d := b.srv.l.(interface{ SetDeadline(time.Time) error })
			d.SetDeadline(time.Now().Add(10 * time.Millisecond))
			b.srv.l.Accept()
			d.SetDeadline(time.Time{})
			before = b.srv.l.Stats()
			b.client()
			o.QueuedAfterBlock = b.srv.l.Stats().Queued > before.Queued
			return o
		},
		predict: func(p backlog.Personality) any {
			if p.DeferredSlotReturn {
				return kb295079{QueuedRightAfter: false, Deferred: 1, QueuedAfterBlock: true}
			}
			return kb295079{QueuedRightAfter: true, QueuedAfterBlock: true}
		},
	},
	{
		name:    "KB 295079: pre-emption after a quantum",
		applies: func(p backlog.Personality) bool { return p.DeferredSlotReturn },
		observe: func(t *testing.T, b *bench) any {
			c := b.srv.l.Stats().Capacity
			b.clients(c)
			b.accept()
			// Nothing more is asked of the listener: after one
			// quantum the accepting thread is pre-empted, and the slot
			// is back.
			deadline := time.Now().Add(5 * time.Second)
			for b.srv.l.Stats().Unavailable > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			before := b.srv.l.Stats()
			b.client()
			return b.srv.l.Stats().Queued > before.Queued
		},
		predict: func(backlog.Personality) any { return true },
	},
}

// emulationTransports are the transports the table compares.
func emulationTransports() []tr {
	trs := []tr{netstackTransport()}
	if runtime.GOOS == "linux" {
		trs = append(trs, kernelTransport(true))
	}
	return trs
}

// newBench opens a listener for a case: listen(3), or listen(2) for the KB
// 295079 cases, whose first one runs with a quantum long enough that no
// pre-emption can happen while it looks.
func newBench(t *testing.T, x tr, c behaviour, p backlog.Personality) *bench {
	n := 3
	switch c.name {
	case "KB 295079: the slot freed by accept()":
		n = 2
		p.Quantum = time.Hour
	case "KB 295079: pre-emption after a quantum":
		n = 2
	}
	srv := x.start(t, p, n)
	t.Cleanup(func() {
		srv.l.Close()
		srv.shutdown()
	})
	return &bench{t: t, srv: srv, p: p, base: portRange(12)}
}

// TestBehaviourTable runs every case against every personality on every
// transport that claims it, and compares.
func TestBehaviourTable(t *testing.T) {
	for _, p := range backlog.All() {
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			for _, c := range behaviours {
				if c.applies != nil && !c.applies(p) {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					want := c.predict(p)
					seen := map[string]any{}
					for _, x := range emulationTransports() {
						t.Run(x.name, func(t *testing.T) {
							got := c.observe(t, newBench(t, x, c, p))
							seen[x.name] = got
							if !reflect.DeepEqual(got, want) {
								t.Errorf("%s on %s: %+v; the personality predicts %+v", c.name, x.name, got, want)
							}
						})
					}
					if len(seen) == 2 && !reflect.DeepEqual(seen["netstack"], seen["kernel-emulated"]) {
						t.Errorf("the transports disagree: netstack %s, kernel emulation %s",
							fmt.Sprintf("%+v", seen["netstack"]), fmt.Sprintf("%+v", seen["kernel-emulated"]))
					}
				})
			}
		})
	}
}
