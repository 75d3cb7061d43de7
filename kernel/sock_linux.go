package kernel

import (
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// somaxconnName names the setting that caps the backlog, for the warning.
const somaxconnName = "net.core.somaxconn"

// hostSOMAXCONN is SOMAXCONN in the C headers of this system: 4096 since
// Linux 5.4 (include/linux/socket.h).
const hostSOMAXCONN = unix.SOMAXCONN

// newSocket creates a close-on-exec socket. It is left blocking:
// net.FileListener makes the runtime's duplicate non-blocking, and a
// blocking descriptor keeps os.NewFile from registering it with the poller
// on the way.
func newSocket(family, sotype int) (int, error) {
	return unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
}

// setDeferAccept sets TCP_DEFER_ACCEPT, which takes whole seconds
// (net/ipv4/tcp.c do_tcp_setsockopt turns them into a number of SYN-ACK
// retransmissions).
func setDeferAccept(fd int, d time.Duration) (string, error) {
	secs := int((d + time.Second - 1) / time.Second)
	return "setsockopt", unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
}

// setFastOpen sets TCP_FASTOPEN, whose value is the length of the queue of
// pending Fast Open requests (net/ipv4/tcp.c do_tcp_setsockopt,
// fastopen_queue_tune).
func setFastOpen(fd int, qlen int) (string, error) {
	return "setsockopt", unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN, qlen)
}

// queue reads the kernel's accept queue. For TCP that is one pass under the
// descriptor lock: getsockopt TCP_INFO, whose tcpi_unacked and tcpi_sacked
// are the queue length and the stored backlog for a listener (net/ipv4/tcp.c
// tcp_get_info), and SO_MEMINFO, whose SK_MEMINFO_DROPS is sk_drops
// (net/core/sock.c sk_get_meminfo; Linux 4.12 and later, else Drops stays
// 0). Unix-domain listeners have no TCP_INFO and are read through unix_diag.
func (s *sysListener) queue() (queueState, error) {
	if s.unix {
		return s.unixQueue()
	}
	var (
		info       unix.TCPInfo
		mem        [unix.SK_MEMINFO_VARS]uint32
		ierr, merr error
	)
	err := s.rc.Control(func(fd uintptr) {
		ierr = getsockopt(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO, unsafe.Pointer(&info), unsafe.Sizeof(info))
		merr = getsockopt(int(fd), unix.SOL_SOCKET, unix.SO_MEMINFO, unsafe.Pointer(&mem), unsafe.Sizeof(mem))
	})
	if err != nil {
		return queueState{}, err
	}
	if ierr != nil {
		return queueState{}, os.NewSyscallError("getsockopt", ierr)
	}
	q := queueState{Len: int(info.Unacked), Backlog: int(info.Sacked), ReadBack: true}
	if merr == nil {
		q.Drops, q.HaveDrops = uint64(mem[unix.SK_MEMINFO_DROPS]), true
	}
	return q, nil
}

// unixQueue reads a unix-domain listener's queue through unix_diag, which
// reports the queue length and the stored backlog as its rqlen pair
// (net/unix/diag.c sk_diag_show_rqlen), and its drop count through
// SO_MEMINFO.
func (s *sysListener) unixQueue() (queueState, error) {
	e, err := unixDiag(s.inode)
	if err != nil {
		return queueState{}, err
	}
	q := queueState{Len: int(e.rqueue), Backlog: int(e.wqueue), ReadBack: true}
	var mem [unix.SK_MEMINFO_VARS]uint32
	var merr error
	if s.rc.Control(func(fd uintptr) {
		merr = getsockopt(int(fd), unix.SOL_SOCKET, unix.SO_MEMINFO, unsafe.Pointer(&mem), unsafe.Sizeof(mem))
	}) == nil && merr == nil {
		q.Drops, q.HaveDrops = uint64(mem[unix.SK_MEMINFO_DROPS]), true
	}
	return q, nil
}

// getsockopt reads a socket option into the size bytes at p. The kernel
// copies at most size bytes, so a struct older or newer than the running
// kernel's is fine.
func getsockopt(fd, level, name int, p unsafe.Pointer, size uintptr) error {
	n := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(p), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// defaultBacklog is what net.Listen passes to listen() (net/sock_linux.go
// maxListenerBacklog): net.core.somaxconn, or 128 when it cannot be read.
func defaultBacklog() int {
	n, err := Somaxconn()
	if err != nil || n == 0 {
		return syscall.SOMAXCONN
	}
	return n
}

// Somaxconn returns the largest backlog the system stores: on Linux
// net.core.somaxconn of the calling thread's network namespace.
func Somaxconn() (int, error) {
	return readSysctl("net/core/somaxconn")
}

// measuresQueueWait says that queueWait can read a connection's time in
// the accept queue here.
const measuresQueueWait = true

// tcpInfoThroughLastDataSent is how much of struct tcp_info queueWait
// asks for: up to and including tcpi_last_data_sent. The kernel fills in
// the whole struct and copies as much as was asked for (net/ipv4/tcp.c
// do_tcp_getsockopt).
var tcpInfoThroughLastDataSent = unsafe.Offsetof(unix.TCPInfo{}.Last_data_sent) + unsafe.Sizeof(unix.TCPInfo{}.Last_data_sent)

// queueWait returns how long a connection accept() has just returned
// waited in the accept queue: its TCP_INFO tcpi_last_data_sent, the time
// since it last sent data, which is the time since the kernel created it
// at the final ACK as long as it has sent nothing yet, and a server sends
// nothing before accept(). net/ipv4/tcp_minisocks.c
// tcp_create_openreq_child sets the child's lsndtime to the jiffies of
// its creation (newtp->lsndtime = tcp_jiffies32, since the tcp_jiffies32
// rework of Linux 4.13; before, to treq->snt_synack, the time its first
// SYN-ACK was sent, one handshake earlier), and net/ipv4/tcp.c tcp_get_info reports
// now minus lsndtime in milliseconds, counted in timer ticks (1 to 10 ms,
// CONFIG_HZ). A Fast Open connection, queued at its SYN, and one held back
// by TCP_DEFER_ACCEPT, queued when its data came, are measured from that
// moment, which is when they entered the queue.
func queueWait(c net.Conn) (time.Duration, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	r := tcpInfoReaders.Get().(*tcpInfoReader)
	defer tcpInfoReaders.Put(r)
	if rc.Control(r.fn) != nil || r.err != nil {
		return 0, false
	}
	return time.Duration(r.info.Last_data_sent) * time.Millisecond, true
}

// tcpInfoReader reads TCP_INFO with no allocation: its buffer and the
// function Control calls are made once.
type tcpInfoReader struct {
	info unix.TCPInfo
	err  error
	fn   func(fd uintptr)
}

var tcpInfoReaders = sync.Pool{New: func() any {
	r := new(tcpInfoReader)
	r.fn = func(fd uintptr) {
		r.err = getsockopt(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO, unsafe.Pointer(&r.info), tcpInfoThroughLastDataSent)
	}
	return r
}}
