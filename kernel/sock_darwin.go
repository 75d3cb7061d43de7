package kernel

import (
	"syscall"

	"github.com/backlog-dev/backlog"
	"golang.org/x/sys/unix"
)

// somaxconnName is the sysctl that caps the backlog (XNU
// bsd/kern/uipc_socket.c solisten).
const somaxconnName = "kern.ipc.somaxconn"

func hostPersonality(somaxconn int) backlog.Personality {
	return backlog.Darwin(backlog.DarwinConfig{Somaxconn: somaxconn})
}

// newSocket creates a close-on-exec socket. XNU has no SOCK_CLOEXEC, so the
// flag is set under syscall.ForkLock, as the net package does.
func newSocket(family, sotype int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := unix.Socket(family, sotype, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}

// queue computes the stored backlog from kern.ipc.somaxconn with XNU's
// clamp (backlog.Darwin, bsd/kern/uipc_socket.c solisten): XNU has no socket
// option that reports so_qlimit or so_qlen, so the length reads 0 and
// ReadBack is false.
func (s *sysListener) queue() (queueState, error) {
	return queueState{Backlog: s.computed(int(s.requested.Load()))}, nil
}
