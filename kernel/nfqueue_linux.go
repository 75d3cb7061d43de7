package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// The nfnetlink_queue protocol (include/uapi/linux/netfilter/nfnetlink.h,
// nfnetlink_queue.h; the kernel side is net/netfilter/nfnetlink_queue.c).
// Every message is a netlink header, a struct nfgenmsg (family, version,
// and the queue number in network order), then attributes. Unlike the
// netlink header and the attribute headers, attribute payloads are in
// network order.
const (
	nfnlSubsysQueue = 3 // NFNL_SUBSYS_QUEUE

	nfqnlMsgPacket  = 0 // NFQNL_MSG_PACKET: kernel to user
	nfqnlMsgVerdict = 1 // NFQNL_MSG_VERDICT: user to kernel
	nfqnlMsgConfig  = 2 // NFQNL_MSG_CONFIG

	nfqaCfgCmd      = 1 // struct nfqnl_msg_config_cmd
	nfqaCfgParams   = 2 // struct nfqnl_msg_config_params
	nfqaCfgQueueMax = 3 // __be32
	nfqaCfgMask     = 4 // __be32
	nfqaCfgFlags    = 5 // __be32

	nfqnlCfgCmdBind   = 1
	nfqnlCfgCmdUnbind = 2
	nfqnlCopyPacket   = 2
	nfqaCfgFFailOpen  = 1 // NFQA_CFG_F_FAIL_OPEN

	nfqaPacketHdr  = 1  // struct nfqnl_msg_packet_hdr
	nfqaVerdictHdr = 2  // struct nfqnl_msg_verdict_hdr
	nfqaMark       = 3  // __be32
	nfqaPayload    = 10 // the packet from its network header

	nfDrop   = 0 // NF_DROP
	nfAccept = 1 // NF_ACCEPT

	nfgenMsgLen = 4
)

// queueCopy is how much of each packet the kernel copies to us: enough for
// an IPv6 header, extension headers of a reasonable size, and the TCP
// header's ports, sequence number and flags.
const queueCopy = 128

// queueMaxLen bounds the packets the kernel holds waiting for a verdict;
// beyond it, with FAIL_OPEN, they pass undecided rather than being dropped.
const queueMaxLen = 4096

// nfqueue is one bound netfilter queue. Its reader waits in poll(2) on the
// socket and an eventfd, on a thread of its own, rather than in Go's
// network poller: a SYN waits for its verdict while the reader wakes, and a
// thread blocked in poll wakes sooner than a goroutine parked on the
// poller. Writing the eventfd (stop) ends the wait. Its methods other than
// stop are for one goroutine at a time: they share the message buffer.
type nfqueue struct {
	fd, stopFD int
	closed     bool
	num        uint16
	seq        uint32
	buf        []byte
	out        []byte
}

// openQueue binds the first free queue number from first on, counting up
// at most tries times. A number bound by another program fails with EBUSY
// (nfqnl_recv_config), and the next is tried.
func openQueue(first uint16, tries int) (*nfqueue, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	// Room for bursts of SYNs (SO_RCVBUFFORCE passes rmem_max, as root),
	// and no ENOBUFS: a lost notification would leave its packet waiting
	// for a verdict until the queue is unbound.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	q := &nfqueue{fd: fd, stopFD: stop, buf: make([]byte, 64<<10)}
	for i := 0; i < tries; i++ {
		q.num = first + uint16(i)
		err = q.config(cfgCmd(nfqnlCfgCmdBind))
		if errors.Is(err, unix.EBUSY) {
			continue
		}
		break
	}
	if err != nil {
		q.release()
		return nil, fmt.Errorf("binding a netfilter queue: %w", err)
	}
	var params [5]byte
	binary.BigEndian.PutUint32(params[0:], queueCopy)
	params[4] = nfqnlCopyPacket
	var maxLen, flags [4]byte
	binary.BigEndian.PutUint32(maxLen[:], queueMaxLen)
	binary.BigEndian.PutUint32(flags[:], nfqaCfgFFailOpen)
	err = q.config(
		nlattr{nfqaCfgParams, params[:]},
		nlattr{nfqaCfgQueueMax, maxLen[:]},
		nlattr{nfqaCfgMask, flags[:]},
		nlattr{nfqaCfgFlags, flags[:]},
	)
	if err != nil {
		q.unbind()
		q.release()
		return nil, fmt.Errorf("configuring netfilter queue %d: %w", q.num, err)
	}
	return q, nil
}

func cfgCmd(cmd byte) nlattr {
	return nlattr{nfqaCfgCmd, []byte{cmd, 0, 0, 0}} // command, pad, pf (unused since Linux 3.8)
}

type nlattr struct {
	typ  uint16
	data []byte
}

// message builds a netlink message to the queue subsystem in q.out.
func (q *nfqueue) message(typ uint16, flags uint16, attrs ...nlattr) []byte {
	b := q.out[:0]
	b = native.AppendUint32(b, 0) // length, set below
	b = native.AppendUint16(b, nfnlSubsysQueue<<8|typ)
	b = native.AppendUint16(b, unix.NLM_F_REQUEST|flags)
	q.seq++
	b = native.AppendUint32(b, q.seq)
	b = native.AppendUint32(b, 0) // to the kernel
	b = append(b, unix.AF_UNSPEC, 0 /* NFNETLINK_V0 */)
	b = binary.BigEndian.AppendUint16(b, q.num)
	for _, a := range attrs {
		b = native.AppendUint16(b, uint16(4+len(a.data)))
		b = native.AppendUint16(b, a.typ)
		b = append(b, a.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	native.PutUint32(b, uint32(len(b)))
	q.out = b
	return b
}

// config sends a configuration message and waits for its acknowledgement.
// It is used before packets flow, so every reply read is the answer.
func (q *nfqueue) config(attrs ...nlattr) error {
	msg := q.message(nfqnlMsgConfig, unix.NLM_F_ACK, attrs...)
	if err := q.write(msg); err != nil {
		return err
	}
	for {
		n, err := q.read()
		if err != nil {
			return err
		}
		var ackErr error
		acked := false
		walkNetlink(q.buf[:n], func(typ uint16, seq uint32, payload []byte) {
			if typ == unix.NLMSG_ERROR && seq == q.seq && len(payload) >= 4 {
				acked = true
				if e := -int32(native.Uint32(payload)); e != 0 {
					ackErr = os.NewSyscallError("nfqueue config", unix.Errno(e))
				}
			}
		})
		if acked {
			return ackErr
		}
	}
}

// write sends one message to the kernel. A netlink message to the kernel
// is processed within sendto, so the socket never fills.
func (q *nfqueue) write(b []byte) error {
	for {
		err := unix.Sendto(q.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("sendto", err)
	}
}

// errQueueClosed is what read returns once close was called.
var errQueueClosed = errors.New("netfilter queue closed")

// read waits for the next datagram, in q.buf, or for close.
func (q *nfqueue) read() (int, error) {
	fds := []unix.PollFd{{Fd: int32(q.fd), Events: unix.POLLIN}, {Fd: int32(q.stopFD), Events: unix.POLLIN}}
	for {
		n, _, err := unix.Recvfrom(q.fd, q.buf, 0)
		if err == nil {
			return n, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			return 0, os.NewSyscallError("recvfrom", err)
		}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return 0, os.NewSyscallError("poll", err)
		}
		if fds[1].Revents != 0 {
			return 0, errQueueClosed
		}
	}
}

// verdict tells the kernel what to do with packet id; mark, unless it is
// noMark, replaces the packet's mark (nfqnl_recv_verdict).
func (q *nfqueue) verdict(id uint32, v uint32, mark uint32, setMark bool) error {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:], v)
	binary.BigEndian.PutUint32(hdr[4:], id)
	attrs := []nlattr{{nfqaVerdictHdr, hdr[:]}}
	if setMark {
		var m [4]byte
		binary.BigEndian.PutUint32(m[:], mark)
		attrs = append(attrs, nlattr{nfqaMark, m[:]})
	}
	return q.write(q.message(nfqnlMsgVerdict, 0, attrs...))
}

// unbind unbinds the queue, so that the kernel drops what still waits for
// a verdict (nfqnl_flush) and, with --queue-bypass, lets later packets
// pass. Closing the socket does as much (nfqnl_rcv_nl_event destroys the
// instances of a released socket), which is what makes a SIGKILL safe.
func (q *nfqueue) unbind() error {
	return q.write(q.message(nfqnlMsgConfig, 0, cfgCmd(nfqnlCfgCmdUnbind)))
}

// stop ends a read under way, and every later one.
func (q *nfqueue) stop() {
	var one [8]byte
	native.PutUint64(one[:], 1)
	unix.Write(q.stopFD, one[:])
}

// release closes the descriptors, once no read is under way.
func (q *nfqueue) release() {
	unix.Close(q.fd)
	unix.Close(q.stopFD)
}

// walkNetlink calls f with the type, sequence number and payload of each
// netlink message in b; it stops at a malformed one.
func walkNetlink(b []byte, f func(typ uint16, seq uint32, payload []byte)) {
	for len(b) >= nlmsgHdrLen {
		l := int(native.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return
		}
		f(native.Uint16(b[4:]), native.Uint32(b[8:]), b[nlmsgHdrLen:l])
		b = b[min(len(b), (l+3)&^3):]
	}
}

// queuedPacket is one packet the kernel waits for a verdict on.
type queuedPacket struct {
	id   uint32
	mark uint32
	syn  tcpSegment
}

// tcpSegment is what the shaper reads of a packet.
type tcpSegment struct {
	src, dst netip.AddrPort
	seq      uint32
	flags    uint8
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// parsePackets decodes the NFQNL_MSG_PACKET messages of one datagram. A
// packet whose headers cannot be read is returned with ok false in its
// segment's place (the zero tcpSegment), so that it still gets a verdict.
func parsePackets(b []byte, visit func(p queuedPacket, ok bool)) {
	walkNetlink(b, func(typ uint16, _ uint32, payload []byte) {
		if typ != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(payload) < nfgenMsgLen {
			return
		}
		var (
			p      queuedPacket
			haveID bool
			ok     bool
		)
		attrs(payload[nfgenMsgLen:], func(typ uint16, data []byte) {
			switch {
			case typ == nfqaPacketHdr && len(data) >= 4:
				p.id, haveID = binary.BigEndian.Uint32(data), true
			case typ == nfqaMark && len(data) >= 4:
				p.mark = binary.BigEndian.Uint32(data)
			case typ == nfqaPayload:
				p.syn, ok = parseTCP(data)
			}
		})
		if haveID {
			visit(p, ok)
		}
	})
}

// parseTCP reads the addresses, ports, sequence number and flags of an
// IPv4 or IPv6 packet carrying TCP. IPv6 extension headers are not
// followed: a SYN with one is reported as unreadable.
func parseTCP(b []byte) (tcpSegment, bool) {
	var s tcpSegment
	if len(b) < 1 {
		return s, false
	}
	var (
		src, dst netip.Addr
		tcp      []byte
	)
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return s, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl || b[9] != unix.IPPROTO_TCP {
			return s, false
		}
		// A fragment other than the first has no TCP header.
		if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			return s, false
		}
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		tcp = b[ihl:]
	case 6:
		if len(b) < 40 || b[6] != unix.IPPROTO_TCP {
			return s, false
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		tcp = b[40:]
	default:
		return s, false
	}
	if len(tcp) < 14 {
		return s, false
	}
	s.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:]))
	s.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:]))
	s.seq = binary.BigEndian.Uint32(tcp[4:])
	s.flags = tcp[13]
	return s, true
}
