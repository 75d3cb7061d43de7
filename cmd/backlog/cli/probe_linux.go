package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
	"golang.org/x/sys/unix"
)

// probeFull, when not nil, is called with a listener's address once its
// queue is full, while the left-out client waits: tests compare the
// read-back with ss there.
var probeFull func(addr string)

func probeSupported() error { return nil }

// probeListener listens on loopback with exactly cfg.requested, connects
// clients one after another without accepting, and watches the first one
// that gets no answer within cfg.timeout until cfg.window has passed since
// its connect().
//
// Clients are non-blocking sockets of their own, so that each one's
// TCP_INFO can be read while it waits: tcpi_total_retrans counts the SYNs
// it sent again and tcpi_rto is its retransmission timeout
// (net/ipv4/tcp.c tcp_get_info). A SYN that finds the accept queue full is
// dropped without an answer (net/ipv4/tcp_input.c tcp_conn_request) and
// counted in the listener's sk_drops (include/net/tcp.h tcp_listendrop), so
// the client retransmits it on its SYN timer (net/ipv4/tcp_timer.c
// tcp_retransmit_timer).
func probeListener(ctx context.Context, cfg probeConfig) (m probeMeasure, err error) {
	req := cfg.requested
	if req == 0 {
		req = backlog.ZeroBacklog
	}
	lc := kernel.ListenConfig{Backlog: req, Logger: slog.New(slog.DiscardHandler)}
	ln, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		return m, err
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	m.Address = addr.String()
	st, err := ln.KernelStats()
	if err != nil {
		return m, err
	}
	m.Stored, m.ReadBack, m.Queue, m.Drops = st.KernelBacklog, st.ReadBack, st.KernelLen, st.Drops
	if cfg.capacity+1 > cfg.maxClients {
		m.NotFilled = fmt.Sprintf("--max-clients %d", cfg.maxClients)
		return m, nil
	}
	// Each client holds a descriptor; leave room for the other listeners
	// and the runtime rather than fail half-way.
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && uint64(cfg.capacity+1) > lim.Cur/2 {
		m.NotFilled = fmt.Sprintf("needs %d descriptors; the limit is %d", cfg.capacity+1, lim.Cur)
		return m, nil
	}
	m.Filled = true

	var clients []*probeClient
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	// A host that lets in more than predicted is caught well before the
	// bound: twice the prediction, or 16 more.
	limit := min(cfg.maxClients, max(2*cfg.capacity+2, cfg.capacity+16))
	var left *probeClient
	for len(clients) < limit && left == nil {
		c, err := dialProbe(addr)
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			m.Filled, m.NotFilled = false, fmt.Sprintf("out of descriptors after %d clients", len(clients))
			return m, nil
		}
		if err != nil {
			return m, err
		}
		clients = append(clients, c)
		done, cerr := c.answer(ctx, cfg.timeout)
		switch {
		case ctx.Err() != nil:
			m.Interrupted = true
			return m, nil
		case done && cerr != nil:
			// Refused or reset at once: nothing more to watch.
			left = c
			if err := c.ended(cerr, &m.Overflow); err != nil {
				return m, err
			}
		case !done:
			left = c
		case queued(ln, m.Connected+1):
			m.Connected++
		default:
			m.NotQueued++
		}
	}
	if st, err := ln.KernelStats(); err == nil {
		m.Queue = st.KernelLen
	}
	if left == nil {
		return m, nil
	}
	if probeFull != nil {
		probeFull(m.Address)
	}
	if m.Overflow.Outcome == "" {
		if err := left.watch(ctx, cfg.window, &m.Overflow); err != nil {
			if ctx.Err() != nil {
				m.Interrupted = true
				return m, nil
			}
			return m, err
		}
	}
	// The drop count and the retransmissions, read so that neither has a
	// SYN the other lacks: the SYNs sent before and after the drops were
	// read are the same.
	for {
		sent := left.retransmits(&m.Overflow)
		st, err = ln.KernelStats()
		if err != nil {
			return m, err
		}
		if left.retransmits(&m.Overflow) == sent {
			m.Drops = st.Drops
			return m, nil
		}
	}
}

// probeClient is one client socket, connecting without blocking.
type probeClient struct {
	fd    int
	start time.Time
	seen  uint32        // retransmissions recorded
	look  time.Duration // when the last look at TCP_INFO began
}

func dialProbe(addr netip.AddrPort) (*probeClient, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c := &probeClient{fd: fd, start: time.Now()}
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	return c, nil
}

// close closes the socket. A socket still sending SYNs goes away without a
// word: nothing reaches the listener.
func (c *probeClient) close() { unix.Close(c.fd) }

// answer waits up to d for connect() to end. done reports whether it
// ended, and err is the error it ended with (nil when connected).
func (c *probeClient) answer(ctx context.Context, d time.Duration) (done bool, err error) {
	deadline := time.Now().Add(d)
	for ctx.Err() == nil {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(min(left, probeTick)/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) || n == 0 {
			continue
		}
		if err != nil {
			return true, os.NewSyscallError("poll", err)
		}
		soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return true, os.NewSyscallError("getsockopt", err)
		}
		if soerr != 0 {
			return true, unix.Errno(soerr)
		}
		return true, nil
	}
	return false, ctx.Err()
}

// watch follows the client until window has passed since its connect(),
// or its connect() ends, and records what it met in o.
func (c *probeClient) watch(ctx context.Context, window time.Duration, o *overflowMeasure) error {
	o.Outcome = "ignored"
	for {
		left := window - time.Since(c.start)
		if left <= 0 {
			return nil
		}
		done, err := c.answer(ctx, min(left, probeTick))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.retransmits(o)
		if done {
			return c.ended(err, o)
		}
	}
}

// ended records in o how connect() ended: err is nil when it connected.
// A client that gave up (ETIMEDOUT) stays "ignored": it never had an
// answer.
func (c *probeClient) ended(err error, o *overflowMeasure) error {
	o.Ended = time.Since(c.start)
	var errno unix.Errno
	switch {
	case err == nil:
		o.Outcome = "connected"
	case errors.As(err, &errno):
		o.Error = unix.ErrnoName(errno)
		switch errno {
		case unix.ECONNREFUSED:
			o.Outcome = "refused"
		case unix.ECONNRESET:
			o.Outcome = "reset"
		case unix.ETIMEDOUT:
			o.Outcome = "ignored"
		default:
			o.Outcome = "failed"
		}
	default:
		return err
	}
	return nil
}

// retransmits records the retransmissions TCP_INFO counts beyond those
// already seen: each one happened after the previous look began and
// before this one ended, however long the probe was kept from looking.
// It returns the count.
func (c *probeClient) retransmits(o *overflowMeasure) uint32 {
	before := time.Since(c.start)
	info, err := unix.GetsockoptTCPInfo(c.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	after := time.Since(c.start)
	if err != nil {
		return c.seen
	}
	for ; c.seen < info.Total_retrans; c.seen++ {
		o.Retransmits = append(o.Retransmits, after)
		o.After = append(o.After, c.look)
		o.RTO = append(o.RTO, time.Duration(info.Rto)*time.Microsecond)
	}
	c.look = before
	return c.seen
}
