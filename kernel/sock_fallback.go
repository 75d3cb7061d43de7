//go:build !linux && !darwin && !freebsd

package kernel

import (
	"context"
	"net"
	"runtime"
	"time"

	"github.com/backlog-dev/backlog"
)

// sysListener is the system side of a Listener where Go's runtime creates
// the socket: this package cannot adopt a socket it made itself into the
// runtime's poller there (net.FileListener is not implemented on Windows),
// so the runtime's choice of backlog stands.
type sysListener struct {
	inode  uint64
	family uint8 // 0: not known
}

// sysListen listens through net.ListenConfig. It fails, with an error
// wrapping errors.ErrUnsupported, when asked for an exact backlog or for an
// option net.ListenConfig cannot set.
func (lc *ListenConfig) sysListen(ctx context.Context, network, address string, _ int, exact bool) (net.Listener, *sysListener, error) {
	var err error
	switch {
	case exact:
		err = unsupported("choosing the backlog on " + runtime.GOOS + " (set a Personality to emulate one)")
	case lc.DeferAccept != 0:
		err = unsupported("TCP_DEFER_ACCEPT on " + runtime.GOOS)
	case lc.FastOpen != 0:
		err = unsupported("TCP_FASTOPEN on " + runtime.GOOS)
	case lc.ReusePort:
		err = unsupported("SO_REUSEPORT on " + runtime.GOOS)
	case lc.ShedLoad:
		err = unsupported("shedding load on " + runtime.GOOS)
	}
	if err != nil {
		return nil, nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	nlc := net.ListenConfig{Control: lc.Control}
	ln, err := nlc.Listen(ctx, network, address)
	if err != nil {
		return nil, nil, err
	}
	return ln, &sysListener{}, nil
}

// listen fails: the runtime owns the socket, and on Windows a second
// listen() leaves the backlog unchanged anyway (backlog.Windows).
func (s *sysListener) listen(int) error {
	return unsupported("listen() again on " + runtime.GOOS)
}

// queue reports the documented backlog for the request the runtime made
// (defaultBacklog); the length cannot be read.
func (s *sysListener) queue() (queueState, error) {
	return queueState{Backlog: s.computed(defaultBacklog())}, nil
}

// computed returns what the host's personality stores for a request of n.
func (s *sysListener) computed(int) int { return backlog.Host().Stored(defaultBacklog()) }

// shed is not available: there is no spare descriptor.
func (s *sysListener) shed(net.Listener, time.Duration) (net.Conn, bool, error) {
	return nil, false, errNoSpare
}

func (s *sysListener) close() error { return nil }
