package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// synVerdict is what the shaper does with one SYN.
type synVerdict uint8

const (
	synPass   synVerdict = iota // to the kernel, which answers it
	synIgnore                   // dropped: the client retransmits
	synRefuse                   // answered with a reset
)

// synShaper is a netfilter queue and the rules that feed it the SYNs for
// one listening address, with a goroutine that asks decide about each.
type synShaper struct {
	ns     *netns
	q      *nfqueue
	rules  *ruleSet
	decide func(tcpSegment) synVerdict
	// Stale is how many rules of dead shapers the start removed.
	stale int

	closeOnce sync.Once
	closed    atomic.Bool
	done      chan struct{}
	// passed, ignored and refused count verdicts; unreadable counts
	// packets passed because their headers could not be read.
	passed, ignored, refused, unreadable atomic.Uint64
	// verdictErrs counts verdicts the kernel did not take.
	verdictErrs atomic.Uint64
}

// shaperQueueBase is the first netfilter queue number a shaper tries.
const shaperQueueBase = 0x4200

// startShaper installs the rules for SYNs to port on each of families
// (their unspecified address means any address of that family) and starts
// deciding them. It runs in the calling thread's network namespace, and
// needs CAP_NET_ADMIN, nfnetlink_queue and iptables.
func startShaper(families []netip.Addr, port uint16, decide func(tcpSegment) synVerdict) (*synShaper, error) {
	if err := canShape(); err != nil {
		return nil, err
	}
	ns, err := currentNetns()
	if err != nil {
		return nil, err
	}
	stale, err := removeStaleRules(ns)
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("removing rules of shapers that are gone: %w", err)
	}
	var q *nfqueue
	err = ns.do(func() error {
		var err error
		q, err = openQueue(shaperQueueBase+uint16(os.Getpid()%256)*16, 1024)
		return err
	})
	if err != nil {
		ns.close()
		return nil, err
	}
	rules, err := installRules(ns, families, port, q.num)
	if err != nil {
		q.unbind()
		q.release()
		ns.close()
		return nil, err
	}
	s := &synShaper{ns: ns, q: q, rules: rules, decide: decide, stale: stale, done: make(chan struct{})}
	go s.run()
	return s, nil
}

// canShape reports, as an error, what this process lacks to shape: the
// capability CAP_NET_ADMIN (to bind a queue and install rules) or
// iptables.
func canShape() error {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.NewSyscallError("capget", err)
	}
	if data[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 {
		return errNoCapability
	}
	return nil
}

var errNoCapability = errors.New("no CAP_NET_ADMIN")

func (s *synShaper) run() {
	defer close(s.done)
	// The reader blocks in poll(2): a thread of its own, given back when
	// the goroutine ends.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		n, err := s.q.read()
		if err != nil {
			// Close is the only way out: the socket has no other
			// failure a retry would mend, and the kernel passes
			// packets on (--queue-bypass) once it is gone.
			return
		}
		parsePackets(s.q.buf[:n], s.handle)
	}
}

func (s *synShaper) handle(p queuedPacket, ok bool) {
	v := synPass
	if ok && p.syn.flags&(tcpSYN|tcpACK|tcpRST|tcpFIN) == tcpSYN {
		v = s.decide(p.syn)
	} else {
		s.unreadable.Add(1)
	}
	var err error
	switch v {
	case synIgnore:
		s.ignored.Add(1)
		err = s.q.verdict(p.id, nfDrop, 0, false)
	case synRefuse:
		s.refused.Add(1)
		err = s.q.verdict(p.id, nfAccept, p.mark|refuseMark, true)
	default:
		s.passed.Add(1)
		err = s.q.verdict(p.id, nfAccept, 0, false)
	}
	if err != nil {
		s.verdictErrs.Add(1)
	}
}

// close removes the rules, unbinds the queue and waits for the goroutine.
// SYNs that were waiting for a verdict are dropped by the kernel; their
// clients retransmit them to the unshaped port.
func (s *synShaper) close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		err = s.rules.remove()
		// The reader stops before the queue is unbound: both write
		// messages on the socket.
		s.q.stop()
		<-s.done
		if e := s.q.unbind(); err == nil {
			err = e
		}
		s.q.release()
		s.ns.close()
	})
	return err
}

// queueNum returns the netfilter queue number the shaper bound.
func (s *synShaper) queueNum() uint16 { return s.q.num }
