package kernel

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// A request socket (TCP_NEW_SYN_RECV) is reported with the state
// tcpSynRecv (net/ipv4/inet_diag.c inet_req_diag_fill).
const sockDestroy = 21 // SOCK_DESTROY (include/uapi/linux/sock_diag.h)

// diagExact is the answer to a lookup of one socket.
type diagExact struct {
	state          uint8
	rqueue, wqueue uint32
}

// exactRequest builds an inet_diag_req_v2 naming one socket by its local
// and remote address and port. The kernel looks it up as an arriving
// packet would be (net/ipv4/inet_diag.c inet_diag_find_one_icsk:
// established and request sockets first, then listeners), so a zero remote
// finds the listener of local.
func exactRequest(local, remote netip.AddrPort) []byte {
	req := make([]byte, inetDiagReqV2Len)
	if local.Addr().Is4() {
		req[0] = unix.AF_INET
	} else {
		req[0] = unix.AF_INET6
	}
	req[1] = unix.IPPROTO_TCP
	native.PutUint32(req[4:], ^uint32(0)) // every state
	binary.BigEndian.PutUint16(req[8:], local.Port())
	binary.BigEndian.PutUint16(req[10:], remote.Port())
	la, ra := local.Addr().As16(), remote.Addr().As16()
	if local.Addr().Is4() {
		l4, r4 := local.Addr().As4(), remote.Addr().As4()
		copy(req[12:], l4[:])
		copy(req[28:], r4[:])
	} else {
		copy(req[12:], la[:])
		copy(req[28:], ra[:])
	}
	// idiag_if 0; cookie INET_DIAG_NOCOOKIE.
	native.PutUint32(req[48:], ^uint32(0))
	native.PutUint32(req[52:], ^uint32(0))
	return req
}

// diagConn is a sock_diag socket kept open, so that a shaper's lookups
// are made in the namespace it started in whatever thread asks, without a
// new socket each. Its methods are not safe for concurrent use.
type diagConn struct {
	fd  int
	seq uint32
	buf []byte
}

// openDiag opens a sock_diag socket in the calling thread's namespace.
func openDiag() (*diagConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// A reply lost to a signal or a slow reader must not block a SYN's
	// verdict for long.
	tv := unix.Timeval{Sec: 1}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &diagConn{fd: fd, buf: make([]byte, 8192)}, nil
}

func (d *diagConn) close() { unix.Close(d.fd) }

// request sends one message for one socket and calls visit with the
// payload of each reply of its sequence number until the answer ends.
func (d *diagConn) request(typ uint16, flags uint16, body []byte, visit func(typ uint16, payload []byte)) error {
	d.seq++
	msg := make([]byte, nlmsgHdrLen+len(body))
	native.PutUint32(msg[0:], uint32(len(msg)))
	native.PutUint16(msg[4:], typ)
	native.PutUint16(msg[6:], unix.NLM_F_REQUEST|flags)
	native.PutUint32(msg[8:], d.seq)
	copy(msg[nlmsgHdrLen:], body)
	if err := unix.Sendto(d.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom", err)
		}
		ours, done := false, false
		walkNetlink(d.buf[:n], func(t uint16, seq uint32, payload []byte) {
			if seq != d.seq {
				return // the late answer to an earlier request
			}
			ours = true
			visit(t, payload)
			done = done || t == unix.NLMSG_ERROR || t == unix.NLMSG_DONE || flags&unix.NLM_F_ACK == 0
		})
		if ours && done {
			return nil
		}
	}
}

// lookup finds one TCP socket. The error wraps os.ErrNotExist when there
// is none.
func (d *diagConn) lookup(local, remote netip.AddrPort) (diagExact, error) {
	var (
		e     diagExact
		found bool
		derr  error
	)
	err := d.request(unix.SOCK_DIAG_BY_FAMILY, 0, exactRequest(local, remote), func(typ uint16, m []byte) {
		switch {
		case typ == unix.NLMSG_ERROR && len(m) >= 4:
			if e := -int32(native.Uint32(m)); e != 0 {
				derr = unix.Errno(e)
			}
		case typ == unix.SOCK_DIAG_BY_FAMILY && len(m) >= inetDiagMsgLen:
			e = diagExact{state: m[1], rqueue: native.Uint32(m[56:]), wqueue: native.Uint32(m[60:])}
			found = true
		}
	})
	if err == nil {
		err = derr
	}
	if errors.Is(err, unix.ENOENT) || (err == nil && !found) {
		return e, os.ErrNotExist
	}
	if err != nil {
		return e, os.NewSyscallError("sock_diag", err)
	}
	return e, nil
}

// destroy asks the kernel to abort one TCP socket (SOCK_DESTROY, as `ss
// -K` does; net/ipv4/tcp.c tcp_abort): a connection is reset, and a
// request socket is dropped from its listener's SYN queue without a word
// to the client. It needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN.
func (d *diagConn) destroy(local, remote netip.AddrPort) error {
	var derr error
	err := d.request(sockDestroy, unix.NLM_F_ACK, exactRequest(local, remote), func(typ uint16, m []byte) {
		if typ == unix.NLMSG_ERROR && len(m) >= 4 {
			if e := -int32(native.Uint32(m)); e != 0 {
				derr = os.NewSyscallError("sock_destroy", unix.Errno(e))
			}
		}
	})
	if err == nil {
		err = derr
	}
	return err
}
