package kernel

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// canPoll says that poll can take a connection without blocking here.
const canPoll = true

// poll takes the oldest connection waiting in the kernel's queue if there
// is one, without waiting: accept4 on the listening socket, which the
// runtime keeps non-blocking, so that an empty queue answers EAGAIN. It
// runs inside RawConn.Control, which holds a reference to the descriptor
// but not its read lock, so it does not queue behind an Accept already
// waiting in the poller (Go lets one Accept at a time hold that lock).
// The new descriptor is handed to the runtime as net.FileConn does, which
// keeps a duplicate.
func (s *socketListener) poll() (net.Conn, bool) {
	nfd := -1
	var aerr error
	err := s.sys.rc.Control(func(fd uintptr) {
		for {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			// As Go's own accept loop: a connection reset while it
			// waited is skipped, an interrupted call is made again.
			if aerr != unix.EINTR && aerr != unix.ECONNABORTED {
				return
			}
		}
	})
	if err != nil || aerr != nil {
		return nil, false
	}
	f := os.NewFile(uintptr(nfd), "")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, false
	}
	s.accepted.Add(1)
	return c, true
}
