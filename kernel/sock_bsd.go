//go:build darwin || freebsd

package kernel

import (
	"strconv"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"golang.org/x/sys/unix"
)

// hostSOMAXCONN is SOMAXCONN in the C headers of this system (sys/socket.h:
// 128).
const hostSOMAXCONN = unix.SOMAXCONN

// setDeferAccept fails: the BSDs delay accept() with accept filters
// (SO_ACCEPTFILTER on FreeBSD), a different interface this package does not
// offer.
func setDeferAccept(int, time.Duration) (string, error) {
	return "", unsupported("TCP_DEFER_ACCEPT")
}

// setFastOpen turns TCP Fast Open on. The BSDs take an on/off switch
// rather than a queue length (FreeBSD sys/netinet/tcp_usrreq.c
// tcp_default_ctloutput; XNU bsd/netinet/tcp_usrreq.c tcp_ctloutput).
func setFastOpen(fd int, _ int) (string, error) {
	return "setsockopt", unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 1)
}

// defaultBacklog is what net.Listen passes to listen() (net/sock_bsd.go
// maxListenerBacklog): the somaxconn sysctl, at most 65535, or SOMAXCONN
// when it cannot be read.
func defaultBacklog() int {
	n, err := Somaxconn()
	if err != nil || n == 0 {
		return syscall.SOMAXCONN
	}
	return min(n, 1<<16-1)
}

// Somaxconn returns the largest backlog the system stores: the sysctl
// kern.ipc.somaxconn on macOS, kern.ipc.soacceptqueue on FreeBSD.
func Somaxconn() (int, error) {
	n, err := unix.SysctlUint32(somaxconnName)
	return int(n), err
}

// HostPersonality returns the listen() rules of the running system with its
// somaxconn sysctl (backlog.Darwin or backlog.FreeBSD). When the sysctl
// cannot be read the default of 128 is kept and the error says so.
func HostPersonality() (backlog.Personality, error) {
	n, err := Somaxconn()
	if err != nil {
		n = 128
	}
	p := hostPersonality(n)
	if n != 128 {
		p.Params = "somaxconn=" + strconv.Itoa(n)
	}
	return p, err
}
