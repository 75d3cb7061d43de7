package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// sock_diag wire format (include/uapi/linux/inet_diag.h, unix_diag.h,
// sock_diag.h). Multi-byte fields are in host order except ports and
// addresses, which are in network order.
const (
	nlmsgHdrLen      = 16
	inetDiagReqV2Len = 56 // inet_diag_req_v2 with its inet_diag_sockid
	inetDiagMsgLen   = 72 // inet_diag_msg
	unixDiagReqLen   = 24 // unix_diag_req
	unixDiagMsgLen   = 16 // unix_diag_msg

	inetDiagSKMemInfo = 7  // INET_DIAG_SKMEMINFO: u32[SK_MEMINFO_VARS]
	inetDiagSKV6Only  = 11 // INET_DIAG_SKV6ONLY: u8
	unixDiagRQLen     = 4  // UNIX_DIAG_RQLEN: struct unix_diag_rqlen
	udiagShowRQLen    = 0x10

	tcpListen = 10 // TCP_LISTEN in include/net/tcp_states.h
)

var native = binary.NativeEndian

// diagEntry is one socket of a sock_diag reply.
type diagEntry struct {
	family         uint8
	addr           netip.Addr
	port           uint16
	v6only         bool
	rqueue, wqueue uint32
	uid            uint32
	inode          uint64
	drops          uint64
}

// sockDiag sends one request on a new NETLINK_SOCK_DIAG socket of the
// calling thread's network namespace and calls visit with the body of each
// reply, until the end of a dump or, without dump, the single reply.
func sockDiag(body []byte, dump bool, visit func([]byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	msg := make([]byte, nlmsgHdrLen+len(body))
	flags := uint16(unix.NLM_F_REQUEST)
	if dump {
		flags |= unix.NLM_F_DUMP
	}
	native.PutUint32(msg[0:], uint32(len(msg)))
	native.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	native.PutUint16(msg[6:], flags)
	native.PutUint32(msg[8:], 1) // sequence number
	copy(msg[nlmsgHdrLen:], body)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom", err)
		}
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(native.Uint32(b[0:]))
			if l < nlmsgHdrLen || l > len(b) {
				return errors.New("sock_diag: malformed netlink message")
			}
			payload := b[nlmsgHdrLen:l]
			// NLMSG_DONE and NLMSG_ERROR carry an error number
			// first, negated; 0 means none.
			var errno int32
			if len(payload) >= 4 {
				errno = -int32(native.Uint32(payload))
			}
			switch native.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				if errno > 0 {
					return os.NewSyscallError("sock_diag", unix.Errno(errno))
				}
				return nil
			case unix.NLMSG_ERROR:
				if errno != 0 {
					return os.NewSyscallError("sock_diag", unix.Errno(errno))
				}
				if !dump {
					return nil
				}
			default:
				visit(payload)
				if !dump {
					return nil
				}
			}
			b = b[min(len(b), (l+3)&^3):]
		}
	}
}

// attrs calls f with the type and payload of each netlink attribute in b.
func attrs(b []byte, f func(typ uint16, data []byte)) {
	for len(b) >= 4 {
		l := int(native.Uint16(b[0:]))
		if l < 4 || l > len(b) {
			return
		}
		f(native.Uint16(b[2:])&0x3fff, b[4:l])
		b = b[min(len(b), (l+3)&^3):]
	}
}

// listeners dumps the listening TCP sockets of one address family. Asking
// for the listening state alone makes the kernel walk its listening hash
// only, not the established connections (net/ipv4/inet_diag.c
// inet_diag_dump_icsk).
func listeners(family uint8, visit func(diagEntry)) error {
	req := make([]byte, inetDiagReqV2Len)
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	req[2] = 1 << (inetDiagSKMemInfo - 1)
	native.PutUint32(req[4:], 1<<tcpListen)
	var perr error
	err := sockDiag(req, true, func(m []byte) {
		if len(m) < inetDiagMsgLen {
			perr = errors.New("sock_diag: short inet_diag_msg")
			return
		}
		e := diagEntry{
			family: m[0],
			port:   binary.BigEndian.Uint16(m[4:]),
			rqueue: native.Uint32(m[56:]),
			wqueue: native.Uint32(m[60:]),
			uid:    native.Uint32(m[64:]),
			inode:  uint64(native.Uint32(m[68:])),
		}
		if m[1] != tcpListen {
			return
		}
		if e.family == unix.AF_INET {
			e.addr = netip.AddrFrom4([4]byte(m[8:12]))
		} else {
			e.addr = netip.AddrFrom16([16]byte(m[8:24]))
		}
		attrs(m[inetDiagMsgLen:], func(typ uint16, data []byte) {
			switch {
			case typ == inetDiagSKMemInfo && len(data) >= 4*(unix.SK_MEMINFO_DROPS+1):
				e.drops = uint64(native.Uint32(data[4*unix.SK_MEMINFO_DROPS:]))
			case typ == inetDiagSKV6Only && len(data) >= 1:
				e.v6only = data[0] != 0
			}
		})
		visit(e)
	})
	if err == nil {
		err = perr
	}
	return err
}

// allListeners dumps the listening TCP sockets of both families.
func allListeners(visit func(diagEntry)) error {
	if err := listeners(unix.AF_INET, visit); err != nil {
		return err
	}
	err := listeners(unix.AF_INET6, visit)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT) {
		// No IPv6 in this kernel: nothing listens there.
		return nil
	}
	return err
}

func (e diagEntry) socket() Socket {
	return Socket{
		Addr:      netip.AddrPortFrom(e.addr, e.port),
		DualStack: e.family == unix.AF_INET6 && !e.v6only && e.addr.IsUnspecified(),
		Inode:     e.inode,
		UID:       e.uid,
		Len:       int(e.rqueue),
		Backlog:   int(e.wqueue),
		Drops:     e.drops,
	}
}

// Sockets lists every listening TCP socket, IPv4 and IPv6, of the calling
// thread's network namespace (normally the process's), with its queue, its
// stored backlog, its drop count and the process that holds it. The queue
// figures come from one sock_diag dump per address family, which visits
// listening sockets only (net/ipv4/inet_diag.c; net/ipv4/tcp_diag.c
// tcp_diag_get_info reports a listener's accept-queue length as
// idiag_rqueue and its backlog as idiag_wqueue). The holders come from
// scanning /proc/PID/fd for "socket:[inode]" links, as `ss -p` does; a
// socket whose holder cannot be read (another user's process, without
// privilege) has PID 0. The result is sorted by port, then address.
func Sockets() ([]Socket, error) {
	var out []Socket
	err := allListeners(func(e diagEntry) { out = append(out, e.socket()) })
	if err != nil {
		return nil, err
	}
	sortSockets(out)
	byInode := make(map[uint64]*Socket, len(out))
	for i := range out {
		byInode[out[i].Inode] = &out[i]
	}
	findHolders(byInode)
	return out, nil
}

// SocketByInode returns the listening TCP socket with the given inode
// number, without looking for its holder: cheaper than Sockets, for
// watching one socket. The error wraps os.ErrNotExist when no listening
// socket of the calling thread's network namespace has that inode.
func SocketByInode(inode uint64) (Socket, error) {
	var (
		s     Socket
		found bool
	)
	err := allListeners(func(e diagEntry) {
		if e.inode == inode && !found {
			s, found = e.socket(), true
		}
	})
	if err != nil {
		return Socket{}, err
	}
	if !found {
		return Socket{}, fmt.Errorf("kernel: no listening TCP socket with inode %d: %w", inode, os.ErrNotExist)
	}
	return s, nil
}

// unixDiag looks up one unix-domain socket by inode (net/unix/diag.c
// unix_diag_get_exact) and returns its queue pair.
func unixDiag(inode uint64) (diagEntry, error) {
	req := make([]byte, unixDiagReqLen)
	req[0] = unix.AF_UNIX
	native.PutUint32(req[4:], ^uint32(0)) // all states
	native.PutUint32(req[8:], uint32(inode))
	native.PutUint32(req[12:], udiagShowRQLen)
	native.PutUint32(req[16:], ^uint32(0)) // no cookie
	native.PutUint32(req[20:], ^uint32(0))
	var (
		e     diagEntry
		found bool
	)
	err := sockDiag(req, false, func(m []byte) {
		if len(m) < unixDiagMsgLen || uint64(native.Uint32(m[4:])) != inode {
			return
		}
		e.inode = inode
		attrs(m[unixDiagMsgLen:], func(typ uint16, data []byte) {
			if typ == unixDiagRQLen && len(data) >= 8 {
				e.rqueue, e.wqueue = native.Uint32(data[0:]), native.Uint32(data[4:])
				found = true
			}
		})
	})
	if err != nil {
		return e, err
	}
	if !found {
		return e, fmt.Errorf("unix_diag: no queue for inode %d: %w", inode, os.ErrNotExist)
	}
	return e, nil
}
