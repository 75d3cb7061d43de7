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

	tcpSynRecv = 3  // TCP_SYN_RECV in include/net/tcp_states.h
	tcpListen  = 10 // TCP_LISTEN
)

var native = binary.NativeEndian

// diagEntry is one socket of a sock_diag reply.
type diagEntry struct {
	family         uint8
	state          uint8
	retrans        uint8
	addr           netip.Addr
	port           uint16
	v6only         bool
	rqueue, wqueue uint32
	uid            uint32
	inode          uint64
	drops          uint64
	// full is set when the reply carried SK_MEMINFO, which only a full
	// socket has: a request socket's reply (inet_req_diag_fill) has no
	// such attribute.
	full bool
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

// dumpTCP dumps the TCP sockets of one address family in the given states
// (a mask of 1<<state), on local port sport or, with 0, any port. Asking
// for the listening state alone makes the kernel walk its listening hash
// only; any other state makes it walk the established hash too, where
// request sockets live (net/ipv4/inet_diag.c inet_diag_dump_icsk; the
// established-hash walk skips entries on other local ports when sport is
// given, and adds TCP_NEW_SYN_RECV to the states when TCP_SYN_RECV is
// asked for).
func dumpTCP(family uint8, states uint32, sport uint16, visit func(diagEntry)) error {
	req := make([]byte, inetDiagReqV2Len)
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	req[2] = 1 << (inetDiagSKMemInfo - 1)
	native.PutUint32(req[4:], states)
	binary.BigEndian.PutUint16(req[8:], sport) // inet_diag_sockid.idiag_sport
	var perr error
	err := sockDiag(req, true, func(m []byte) {
		e, err := decodeInetDiag(m)
		if err != nil {
			perr = err
			return
		}
		if states&(1<<e.state) == 0 {
			return
		}
		visit(e)
	})
	if err == nil {
		err = perr
	}
	return err
}

// decodeInetDiag decodes one inet_diag_msg and the attributes after it.
func decodeInetDiag(m []byte) (diagEntry, error) {
	if len(m) < inetDiagMsgLen {
		return diagEntry{}, errors.New("sock_diag: short inet_diag_msg")
	}
	e := diagEntry{
		family:  m[0],
		state:   m[1],
		retrans: m[3],
		port:    binary.BigEndian.Uint16(m[4:]),
		rqueue:  native.Uint32(m[56:]),
		wqueue:  native.Uint32(m[60:]),
		uid:     native.Uint32(m[64:]),
		inode:   uint64(native.Uint32(m[68:])),
	}
	switch e.family {
	case unix.AF_INET:
		e.addr = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		e.addr = netip.AddrFrom16([16]byte(m[8:24]))
	default:
		return diagEntry{}, fmt.Errorf("sock_diag: address family %d in an inet_diag_msg", e.family)
	}
	attrs(m[inetDiagMsgLen:], func(typ uint16, data []byte) {
		switch {
		case typ == inetDiagSKMemInfo && len(data) >= 4*(unix.SK_MEMINFO_DROPS+1):
			e.drops = uint64(native.Uint32(data[4*unix.SK_MEMINFO_DROPS:]))
			e.full = true
		case typ == inetDiagSKV6Only && len(data) >= 1:
			e.v6only = data[0] != 0
		}
	})
	return e, nil
}

// listeners dumps the listening TCP sockets of one address family.
func listeners(family uint8, visit func(diagEntry)) error {
	return dumpTCP(family, 1<<tcpListen, 0, visit)
}

// bothFamilies runs dump for IPv4, then IPv6, where a kernel without IPv6
// has nothing.
func bothFamilies(dump func(family uint8) error) error {
	if err := dump(unix.AF_INET); err != nil {
		return err
	}
	err := dump(unix.AF_INET6)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT) {
		// No IPv6 in this kernel: nothing listens there.
		return nil
	}
	return err
}

// allListeners dumps the listening TCP sockets of both families.
func allListeners(visit func(diagEntry)) error {
	return bothFamilies(func(family uint8) error { return listeners(family, visit) })
}

// listenTable is the listening sockets of one dump with the request
// sockets (half-open handshakes) counted per listening address.
type listenTable struct {
	listeners []diagEntry
	// members counts the listeners of each listening address.
	members map[listenKey]int
	// syn and retrans count, per listening address, the request sockets
	// and those whose SYN-ACK was sent more than once.
	syn, retrans map[listenKey]int
}

// listenKey is what the sockets of one SO_REUSEPORT group share: local
// address and port, and for the IPv6 wildcard whether it takes IPv4 too.
type listenKey struct {
	addr netip.AddrPort
	dual bool
}

func (e diagEntry) key() listenKey {
	return listenKey{netip.AddrPortFrom(e.addr, e.port), e.family == unix.AF_INET6 && !e.v6only && e.addr.IsUnspecified()}
}

// readListenTable dumps the listening sockets and the request sockets of
// one address family, or of both with family 0, on port sport or, with 0,
// every port. A request socket has its listener's family, so one family's
// dump has all the requests of its listeners.
//
// Asking for request sockets makes the kernel walk every bucket of its
// established hash, empty or not, whatever port is asked for: about 1.6 ms
// a family on a host whose hash has 262,144 buckets (net.ipv4.
// tcp_ehash_entries; a namespace shares the host's unless
// tcp_child_ehash_entries gave it one of its own), against 35 µs for the
// listening sockets alone.
func readListenTable(family uint8, sport uint16) (*listenTable, error) {
	t := &listenTable{members: map[listenKey]int{}, syn: map[listenKey]int{}, retrans: map[listenKey]int{}}
	// Requests are counted by local address first, and each address is
	// given to its listener once: a flood holds many requests to few
	// addresses.
	type reqKey struct {
		family uint8
		addr   netip.AddrPort
	}
	type reqCount struct{ n, retrans int }
	reqs := map[reqKey]reqCount{}
	dump := bothFamilies
	if family != 0 {
		dump = func(f func(uint8) error) error { return f(family) }
	}
	err := dump(func(family uint8) error {
		return dumpTCP(family, 1<<tcpListen|1<<tcpSynRecv, sport, func(e diagEntry) {
			switch {
			case e.state == tcpListen:
				t.members[e.key()]++
				t.listeners = append(t.listeners, e)
			case !e.full:
				// A request socket. A full socket in SYN_RECV is a Fast
				// Open child, already in the accept queue, or the odd
				// simultaneous open.
				k := reqKey{e.family, netip.AddrPortFrom(e.addr, e.port)}
				c := reqs[k]
				c.n++
				if e.retrans > 0 {
					c.retrans++
				}
				reqs[k] = c
			}
		})
	})
	if err != nil {
		return nil, err
	}
	for r, c := range reqs {
		if k, ok := t.owner(r.family, r.addr); ok {
			t.syn[k] += c.n
			t.retrans[k] += c.retrans
		}
	}
	return t, nil
}

// owner returns the listening address a request socket belongs to. The
// dump does not name a request's listener (inet_req_diag_fill leaves the
// inode and uid 0), so it is found as the kernel found it: a listener
// bound to the request's own local address first, then the wildcard
// (net/ipv4/inet_hashtables.c __inet_lookup_listener and compute_score).
// A request socket has its listener's address family
// (net/ipv4/tcp_input.c inet_reqsk_alloc copies it), so an IPv4 SYN taken
// by a dual-stack IPv6 listener shows as an IPv6 request to a v4-mapped
// address, and belongs to the IPv6 wildcard. Within an SO_REUSEPORT group
// the kernel picked a member by a hash of the connection with a secret
// seed (net/core/sock_reuseport.c reuseport_select_sock), which cannot be
// redone here, so requests are counted for the group.
func (t *listenTable) owner(family uint8, local netip.AddrPort) (listenKey, bool) {
	port := local.Port()
	candidates := []listenKey{{addr: local}}
	if family == unix.AF_INET {
		candidates = append(candidates, listenKey{addr: netip.AddrPortFrom(netip.IPv4Unspecified(), port)})
	} else {
		any6 := netip.AddrPortFrom(netip.IPv6Unspecified(), port)
		candidates = append(candidates, listenKey{addr: any6}, listenKey{addr: any6, dual: true})
	}
	for _, k := range candidates {
		if t.members[k] > 0 {
			return k, true
		}
	}
	return listenKey{}, false
}

// socket returns the i-th listener as a Socket, with its group's SYN
// queue.
func (t *listenTable) socket(i int) Socket {
	e := t.listeners[i]
	s := e.socket()
	k := e.key()
	s.SynQueue, s.SynRetransmitted, s.Group = t.syn[k], t.retrans[k], t.members[k]
	return s
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
// stored backlog, its drop count, its SYN queue, its SO_REUSEPORT group
// and the process that holds it. The figures come from one sock_diag dump
// per address family of the listening sockets and the request sockets
// (net/ipv4/inet_diag.c; net/ipv4/tcp_diag.c tcp_diag_get_info reports a
// listener's accept-queue length as idiag_rqueue and its backlog as
// idiag_wqueue; inet_req_diag_fill reports each request socket, with its
// SYN-ACK retransmissions). Reading the request sockets makes the kernel
// walk its established hash, whose size grows with the namespace's
// connections (BENCHMARKS.md has the cost). The holders come from
// scanning /proc/PID/fd for "socket:[inode]" links, as `ss -p` does; a
// socket whose holder cannot be read (another user's process, without
// privilege) has PID 0. The result is sorted by port, then address.
func Sockets() ([]Socket, error) {
	out, err := SocketsWithoutHolders()
	if err != nil {
		return nil, err
	}
	byInode := make(map[uint64]*Socket, len(out))
	for i := range out {
		byInode[out[i].Inode] = &out[i]
	}
	findHolders(byInode)
	return out, nil
}

// SocketsWithoutHolders is Sockets without the scan of /proc for the
// processes holding them: PID and Process are left empty. It is what a
// caller that does not show holders, or finds them its own way, pays.
func SocketsWithoutHolders() ([]Socket, error) {
	t, err := readListenTable(0, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Socket, len(t.listeners))
	for i := range t.listeners {
		out[i] = t.socket(i)
	}
	sortSockets(out)
	return out, nil
}

// SocketByInode returns the listening TCP socket with the given inode
// number, without looking for its holder: cheaper than Sockets, for
// watching one socket, since only its port's request sockets are read. The
// error wraps os.ErrNotExist when no listening socket of the calling
// thread's network namespace has that inode.
func SocketByInode(inode uint64) (Socket, error) {
	var (
		port   uint16
		family uint8
	)
	err := allListeners(func(e diagEntry) {
		if e.inode == inode {
			port, family = e.port, e.family
		}
	})
	if err != nil {
		return Socket{}, err
	}
	if family != 0 {
		t, err := readListenTable(family, port)
		if err != nil {
			return Socket{}, err
		}
		for i, e := range t.listeners {
			if e.inode == inode {
				return t.socket(i), nil
			}
		}
	}
	return Socket{}, fmt.Errorf("kernel: no listening TCP socket with inode %d: %w", inode, os.ErrNotExist)
}

// halfOpen returns the number of request sockets of the listening socket
// with the given inode, family and port, and whether it could be told: the
// socket must be listed by the calling thread's namespace (it is not when
// the listener lives in another) and alone on its address, since a request
// socket does not say which member of an SO_REUSEPORT group holds it.
func halfOpen(inode uint64, family uint8, port uint16) (int, bool) {
	t, err := readListenTable(family, port)
	if err != nil {
		return 0, false
	}
	for _, e := range t.listeners {
		if e.inode == inode {
			k := e.key()
			if t.members[k] != 1 {
				return 0, false
			}
			return t.syn[k], true
		}
	}
	return 0, false
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
