package kernel

import (
	"fmt"
	"net"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/overload"
)

// applyOverload puts the policy of lc in front of l's Accept, or says why
// it cannot: the policy reads every connection's wait from the kernel,
// which only Linux TCP listeners report, and works on the kernel's own
// queue, not on an emulated one.
func (lc *ListenConfig) applyOverload(l *Listener) error {
	o := lc.Overload
	if err := o.Validate(); err != nil {
		return err
	}
	if !o.Enabled() {
		return nil
	}
	switch {
	case l.waits == nil && lc.SkipQueueWait:
		return fmt.Errorf("%w: it needs the queue wait, which SkipQueueWait turns off", backlog.ErrOverload)
	case l.waits == nil:
		return unsupported(fmt.Sprintf("an overload policy on a %s listener here: the kernel does not report how long a connection waited", l.sock.network))
	case lc.Personality.Name != "":
		return unsupported("an overload policy with a Personality: it applies to the kernel's own queue")
	}
	s := l.sock
	cfg := overload.Config{
		Policy:    o,
		Accept:    s.Accept,
		Wait:      queueWait,
		Reset:     abort,
		Observe:   l.waits.Observe,
		Requested: int(s.requested.Load()),
		Network:   s.network,
		Addr:      s.Addr(),
	}
	if o.LIFO {
		if cfg.Poll = s.poll; !canPoll {
			return unsupported("serving newest first (Overload.LIFO) here: it needs a non-blocking accept4")
		}
	}
	if o.SizeBacklog {
		cfg.SetBacklog = s.SetBacklog
	}
	l.shed = overload.New(cfg)
	return nil
}

// overloadAccept is Accept under the policy.
func (l *Listener) overloadAccept() (net.Conn, error) { return l.shed.Accept() }

// overloadStats adds the policy's resets to s.
func (l *Listener) overloadStats(s *Stats) {
	if l.shed == nil {
		return
	}
	n := l.shed.Overdue()
	s.Overdue = n
	s.Reset += n
}

// setDeadlineOverload passes the deadline to the callers waiting for a
// held connection.
func (l *Listener) setDeadlineOverload(t time.Time) {
	if l.shed != nil {
		l.shed.SetDeadline(t)
	}
}
