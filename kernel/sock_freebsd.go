package kernel

import (
	"os"

	"github.com/backlog-dev/backlog"
	"golang.org/x/sys/unix"
)

// somaxconnName is the sysctl that caps the backlog (sys/kern/uipc_socket.c;
// kern.ipc.somaxconn is its older name).
const somaxconnName = "kern.ipc.soacceptqueue"

func hostPersonality(somaxconn int) backlog.Personality {
	return backlog.FreeBSD(backlog.FreeBSDConfig{Somaxconn: somaxconn})
}

// newSocket creates a close-on-exec socket, left blocking as on Linux.
func newSocket(family, sotype int) (int, error) {
	return unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
}

// queue reads the listen queue with SO_LISTENQLIMIT (the stored backlog,
// so_qlimit) and SO_LISTENQLEN (completed connections waiting, so_qlen),
// as sys/kern/uipc_socket.c sogetopt reports them. FreeBSD keeps no
// per-socket drop count.
func (s *sysListener) queue() (queueState, error) {
	var q queueState
	var lerr, nerr error
	err := s.rc.Control(func(fd uintptr) {
		q.Backlog, lerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_LISTENQLIMIT)
		q.Len, nerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_LISTENQLEN)
	})
	if err != nil {
		return queueState{}, err
	}
	if lerr != nil {
		return queueState{}, os.NewSyscallError("getsockopt", lerr)
	}
	if nerr != nil {
		return queueState{}, os.NewSyscallError("getsockopt", nerr)
	}
	q.ReadBack = true
	return q, nil
}
