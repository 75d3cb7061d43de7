package lab

import (
	"net"
	"sync"
	"time"
)

// Paced returns l with Accept held to the policy: the first accept waits
// p.After, later ones come no faster than p.Rate a second, and with p.Never
// Accept blocks until Close. Closing the paced listener closes l.
func Paced(l net.Listener, p AcceptPolicy) net.Listener {
	pl := &paced{Listener: l, p: p, closed: make(chan struct{}), next: time.Now().Add(p.After)}
	if p.Rate > 0 {
		pl.gap = time.Duration(float64(time.Second) / p.Rate)
	}
	return pl
}

type paced struct {
	net.Listener
	p      AcceptPolicy
	gap    time.Duration
	closed chan struct{}
	once   sync.Once

	mu   sync.Mutex
	next time.Time // the earliest the next accept may start
}

// Accept implements net.Listener.
func (pl *paced) Accept() (net.Conn, error) {
	if pl.p.Never {
		<-pl.closed
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: pl.Addr(), Err: net.ErrClosed}
	}
	pl.mu.Lock()
	wait := time.Until(pl.next)
	pl.next = time.Now().Add(max(wait, 0)).Add(pl.gap)
	pl.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-pl.closed:
			t.Stop()
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: pl.Addr(), Err: net.ErrClosed}
		}
	}
	return pl.Listener.Accept()
}

// Close implements net.Listener.
func (pl *paced) Close() error {
	pl.once.Do(func() { close(pl.closed) })
	return pl.Listener.Close()
}
