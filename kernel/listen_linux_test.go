package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
	"golang.org/x/sys/unix"
)

// dropWait is how long a client waits for a handshake the listener ignores:
// well below Linux's first SYN retransmission (1 s), so each client that
// times out sent exactly one SYN.
const dropWait = 250 * time.Millisecond

// TestBacklogHoldsNPlusOne checks Linux's accept-queue capacity with real
// clients: listen(N) without accepting lets exactly N+1 clients complete the
// handshake, every further SYN is dropped and counted in the socket's drop
// count, and the read-back agrees with ss.
func TestBacklogHoldsNPlusOne(t *testing.T) {
	requireSS(t)
	for _, tc := range []struct {
		network, addr string
		backlog, want int
	}{
		{"tcp4", "127.0.0.1:0", backlog.ZeroBacklog, 0},
		{"tcp4", "127.0.0.1:0", 1, 1},
		{"tcp4", "127.0.0.1:0", 5, 5},
		{"tcp6", "[::1]:0", 3, 3},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.network, tc.want), func(t *testing.T) {
			t.Parallel()
			ln := listen(t, &kernel.ListenConfig{Backlog: tc.backlog}, tc.network, tc.addr)
			const extra = 4
			connected, failed := fill(t, ln, tc.want+1+extra, dropWait)
			if len(connected) != tc.want+1 || failed != extra {
				t.Errorf("listen(%d): %d clients connected, %d timed out; want %d and %d", tc.want, len(connected), failed, tc.want+1, extra)
			}
			s, err := ln.KernelStats()
			if err != nil {
				t.Fatal(err)
			}
			if s.Backlog != tc.want || s.Len != tc.want+1 || s.Capacity != tc.want+1 {
				t.Errorf("Stats: Backlog %d, Len %d, Capacity %d; want %d, %d, %d", s.Backlog, s.Len, s.Capacity, tc.want, tc.want+1, tc.want+1)
			}
			if s.Drops != extra || s.Observed(backlog.StatListenDrops) {
				t.Errorf("Drops %d, ListenDrops %d (observed %v); want %d and unobserved (one dropped SYN per client that timed out, in sk_drops)", s.Drops, s.ListenDrops, s.Observed(backlog.StatListenDrops), extra)
			}
			ss := ssFor(t, ln)
			if ss.sendQ != s.Backlog || ss.recvQ != s.Len || !ss.hasDrops || ss.drops != s.Drops {
				t.Errorf("ss shows Send-Q %d, Recv-Q %d, d%d; listener read back %d, %d, %d", ss.sendQ, ss.recvQ, ss.drops, s.Backlog, s.Len, s.Drops)
			}
		})
	}
}

// TestSetBacklog resizes a live listener and documents what happens to
// connections already waiting: on Linux nothing is dropped; a smaller
// backlog only holds back new arrivals until accept() drains the queue.
func TestSetBacklog(t *testing.T) {
	requireSS(t)
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{Backlog: 2}, "tcp4", "127.0.0.1:0")
	first, _ := fill(t, ln, 3, dropWait)
	if len(first) != 3 {
		t.Fatalf("listen(2): %d clients connected; want 3", len(first))
	}

	if err := ln.SetBacklog(5); err != nil {
		t.Fatal(err)
	}
	if got, ss := ln.Backlog(), ssFor(t, ln); got != 5 || ss.sendQ != 5 || ss.recvQ != 3 {
		t.Errorf("after SetBacklog(5): Backlog %d, ss Send-Q %d, Recv-Q %d; want 5, 5, 3", got, ss.sendQ, ss.recvQ)
	}
	more, failed := fill(t, ln, 4, dropWait)
	if len(more) != 3 || failed != 1 {
		t.Errorf("after growing to 5: %d more clients connected, %d timed out; want 3 and 1", len(more), failed)
	}

	if err := ln.SetBacklog(1); err != nil {
		t.Fatal(err)
	}
	if ss := ssFor(t, ln); ss.sendQ != 1 || ss.recvQ != 6 {
		t.Errorf("after SetBacklog(1) with 6 waiting: ss Send-Q %d, Recv-Q %d; want 1 and 6 (nothing dropped)", ss.sendQ, ss.recvQ)
	}
	if late, _ := fill(t, ln, 1, dropWait); len(late) != 0 {
		t.Errorf("a client connected while 6 wait on a backlog of 1")
	}
	// Every waiting connection is still good.
	clients := append(first, more...)
	for i, c := range clients {
		fmt.Fprintf(c, "%d\n", i)
	}
	seen := make(map[string]bool)
	for range clients {
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		sc.SetReadDeadline(time.Now().Add(time.Second))
		var buf [8]byte
		n, err := sc.Read(buf[:])
		if err != nil {
			t.Errorf("reading from a connection that waited through the resize: %v", err)
		}
		seen[string(buf[:n])] = true
		sc.Close()
	}
	if len(seen) != len(clients) {
		t.Errorf("accepted %d distinct clients; want %d", len(seen), len(clients))
	}
	// Drained, the queue holds N+1 = 2 again.
	if after, failed := fill(t, ln, 3, dropWait); len(after) != 2 || failed != 1 {
		t.Errorf("after draining with backlog 1: %d connected, %d timed out; want 2 and 1", len(after), failed)
	}
}

// TestDefaultBacklog checks that a Backlog of 0 gives what net.Listen gives,
// as ss reports both, and that Requested is that value.
func TestDefaultBacklog(t *testing.T) {
	requireSS(t)
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{}, "tcp4", "127.0.0.1:0")
	gol, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer gol.Close()
	goSS := ssListening(t, "t", "sport", "=", fmt.Sprintf(":%d", gol.Addr().(*net.TCPAddr).Port))
	if len(goSS) != 1 {
		t.Fatalf("ss lists %d sockets for net.Listen's port", len(goSS))
	}
	var want int
	for _, e := range goSS {
		want = e.sendQ
	}
	s := ln.Stats()
	if s.Backlog != want || ssFor(t, ln).sendQ != want || s.Requested != want {
		t.Errorf("Backlog 0: stored %d, ss %d, requested %d; net.Listen stored %d", s.Backlog, ssFor(t, ln).sendQ, s.Requested, want)
	}
}

// TestBacklogSaturates checks that backlogs beyond 32 bits become the
// maximum rather than their low 32 bits, and that negative values and
// MaxBacklog ask for the maximum.
func TestBacklogSaturates(t *testing.T) {
	t.Parallel()
	limit, err := kernel.Somaxconn()
	if err != nil {
		t.Fatal(err)
	}
	backlogs := []int{math.MaxInt, backlog.MaxBacklog, -1000, math.MinInt32}
	if strconv.IntSize == 64 {
		wide := int64(1<<32 + 3) // 3 if truncated to 32 bits
		backlogs = append(backlogs, int(wide))
	}
	for _, n := range backlogs {
		ln := listen(t, &kernel.ListenConfig{Backlog: n, Logger: discard}, "tcp4", "127.0.0.1:0")
		if got := ln.Backlog(); got != limit {
			t.Errorf("Backlog %d: stored %d; want somaxconn %d", n, got, limit)
		}
		ln.Close()
	}
}

// TestClampWarning checks the slog warning: exactly one when the kernel
// stores less than was asked, none for the default or the maximum, or when
// the request fits.
func TestClampWarning(t *testing.T) {
	t.Parallel()
	limit, err := kernel.Somaxconn()
	if err != nil {
		t.Fatal(err)
	}
	if limit >= math.MaxInt32 {
		t.Skip("somaxconn is at its maximum; nothing is clamped")
	}
	for _, tc := range []struct {
		backlog int
		warn    bool
	}{
		{limit + 1, true},
		{limit, false},
		{5, false},
		{0, false},
		{backlog.MaxBacklog, false},
		{unix.SOMAXCONN, false},
	} {
		h := new(logRecords)
		ln := listen(t, &kernel.ListenConfig{Backlog: tc.backlog, Logger: slog.New(h)}, "tcp4", "127.0.0.1:0")
		w := h.warnings()
		if !tc.warn {
			if len(w) != 0 {
				t.Errorf("Backlog %d: warned %v", tc.backlog, w)
			}
			continue
		}
		if len(w) != 1 {
			t.Fatalf("Backlog %d: %d warnings; want 1", tc.backlog, len(w))
		}
		if w[0]["requested"] != strconv.Itoa(tc.backlog) || w[0]["stored"] != strconv.Itoa(limit) || w[0]["somaxconn"] != strconv.Itoa(limit) {
			t.Errorf("warning %v; want requested=%d stored=%d somaxconn=%d", w[0], tc.backlog, limit, limit)
		}
		// Resizing beyond the limit warns again, once.
		if err := ln.SetBacklog(limit + 2); err != nil {
			t.Fatal(err)
		}
		if n := len(h.warnings()); n != 2 {
			t.Errorf("SetBacklog(somaxconn+2): %d warnings in all; want 2", n)
		}
	}
}

// TestNetworks checks the address families: "tcp" on a wildcard accepts
// IPv4 and IPv6 clients on one socket, "tcp6" only IPv6, "tcp4" only IPv4.
func TestNetworks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		network, addr string
		v4, v6        bool
	}{
		{"tcp", ":0", true, true},
		{"tcp", "0.0.0.0:0", true, true},
		{"tcp6", "[::]:0", false, true},
		{"tcp4", ":0", true, false},
		{"tcp", "localhost:0", true, false},
	} {
		ln := listen(t, &kernel.ListenConfig{Backlog: 8}, tc.network, tc.addr)
		p := port(ln)
		for _, client := range []struct {
			addr string
			want bool
		}{{fmt.Sprintf("127.0.0.1:%d", p), tc.v4}, {fmt.Sprintf("[::1]:%d", p), tc.v6}} {
			c, err := net.DialTimeout("tcp", client.addr, time.Second)
			if (err == nil) != client.want {
				t.Errorf("Listen(%q, %q): dial %s: %v; want success %v", tc.network, tc.addr, client.addr, err, client.want)
			}
			if err != nil {
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("dial %s: %v; want connection refused", client.addr, err)
				}
				continue
			}
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if sc.RemoteAddr().String() != c.LocalAddr().String() && sc.RemoteAddr().(*net.TCPAddr).Port != c.LocalAddr().(*net.TCPAddr).Port {
				t.Errorf("accepted %v; dialled from %v", sc.RemoteAddr(), c.LocalAddr())
			}
			if _, ok := sc.(*net.TCPConn); !ok {
				t.Errorf("accepted a %T; want *net.TCPConn", sc)
			}
			sc.Close()
			c.Close()
		}
		if got := ln.Backlog(); got != 8 {
			t.Errorf("Listen(%q, %q): Backlog %d; want 8", tc.network, tc.addr, got)
		}
		ln.Close()
	}
}

// TestListenErrors checks that failures are *net.OpErrors wrapping the
// system's errno.
func TestListenErrors(t *testing.T) {
	t.Parallel()
	taken := listen(t, &kernel.ListenConfig{}, "tcp4", "127.0.0.1:0")
	sock := filepath.Join(t.TempDir(), "s")
	listen(t, &kernel.ListenConfig{}, "unix", sock)
	for _, tc := range []struct {
		network, addr string
		want          error
	}{
		{"tcp4", taken.Addr().String(), syscall.EADDRINUSE},
		{"tcp4", "192.0.2.1:0", syscall.EADDRNOTAVAIL},
		{"unix", sock, syscall.EADDRINUSE},
		{"unix", filepath.Join(t.TempDir(), "missing", "s"), syscall.ENOENT},
	} {
		_, err := kernel.Listen(tc.network, tc.addr, 5)
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "listen" || !errors.Is(err, tc.want) {
			t.Errorf("Listen(%q, %q): %v; want a listen *net.OpError wrapping %v", tc.network, tc.addr, err, tc.want)
		}
	}
	_, err := kernel.Listen("udp", "127.0.0.1:0", 5)
	var unknown net.UnknownNetworkError
	if !errors.As(err, &unknown) {
		t.Errorf("Listen(udp): %v; want net.UnknownNetworkError", err)
	}
	_, err = kernel.Listen("tcp4", "[::1]:0", 5)
	var addrErr *net.AddrError
	if !errors.As(err, &addrErr) {
		t.Errorf("Listen(tcp4, [::1]:0): %v; want a *net.AddrError", err)
	}
}

// TestReusePort checks SO_REUSEPORT: two listeners share a port with it
// and not without.
func TestReusePort(t *testing.T) {
	t.Parallel()
	lc := &kernel.ListenConfig{ReusePort: true}
	a := listen(t, lc, "tcp4", "127.0.0.1:0")
	b := listen(t, lc, "tcp4", a.Addr().String())
	if a.Addr().String() != b.Addr().String() {
		t.Fatalf("listeners on %v and %v", a.Addr(), b.Addr())
	}
	if _, err := kernel.Listen("tcp4", a.Addr().String(), 5); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen without ReusePort on a shared port: %v; want EADDRINUSE", err)
	}
}

// TestDeferAccept checks TCP_DEFER_ACCEPT: a client that sends nothing is
// not accepted, one that sends is.
func TestDeferAccept(t *testing.T) {
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{DeferAccept: 5 * time.Second}, "tcp4", "127.0.0.1:0")
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) })
	if err != nil || v == 0 {
		t.Fatalf("TCP_DEFER_ACCEPT reads %d, %v; want it set", v, err)
	}
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ln.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Fatal("accepted a client that sent nothing")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("Accept: %v; want a timeout", err)
	}
	talker, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer talker.Close()
	talker.Write([]byte("x"))
	ln.SetDeadline(time.Now().Add(2 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept after data: %v", err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != talker.LocalAddr().String() {
		t.Errorf("accepted %v; want the client that sent data, %v", c.RemoteAddr(), talker.LocalAddr())
	}
}

// TestFastOpen checks that TCP_FASTOPEN is set with the queue length asked.
func TestFastOpen(t *testing.T) {
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{FastOpen: 16}, "tcp4", "127.0.0.1:0")
	rc, _ := ln.SyscallConn()
	var v int
	var err error
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN) })
	if err != nil || v != 16 {
		t.Errorf("TCP_FASTOPEN reads %d, %v; want 16", v, err)
	}
}

// TestControl checks the Control hook: it sees the socket before bind, with
// the network and address, and its error aborts Listen.
func TestControl(t *testing.T) {
	t.Parallel()
	var gotNet, gotAddr string
	lc := &kernel.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		gotNet, gotAddr = network, address
		var err error
		c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8192) })
		return err
	}}
	ln := listen(t, lc, "tcp4", "127.0.0.1:0")
	if gotNet != "tcp4" || gotAddr != "127.0.0.1:0" {
		t.Errorf("Control got %q, %q; want tcp4, 127.0.0.1:0", gotNet, gotAddr)
	}
	rc, _ := ln.SyscallConn()
	var v int
	rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if v != 2*8192 { // the kernel doubles SO_RCVBUF (net/core/sock.c)
		t.Errorf("SO_RCVBUF %d; want %d", v, 2*8192)
	}
	refuse := errors.New("refused by the hook")
	lc.Control = func(string, string, syscall.RawConn) error { return refuse }
	if _, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0"); !errors.Is(err, refuse) {
		t.Errorf("Listen with a failing hook: %v; want its error", err)
	}
}

// TestAcceptDeadlineAndClose checks, with and without emulation, that a
// deadline ends a waiting Accept with a timeout, and that Close ends one with
// net.ErrClosed.
func TestAcceptDeadlineAndClose(t *testing.T) {
	t.Parallel()
	linux, _ := kernel.HostPersonality()
	for name, lc := range map[string]*kernel.ListenConfig{
		"kernel":   {Backlog: 4},
		"emulated": {Backlog: 4, Personality: linux, Emulation: kernel.EmulateAfterAccept},
	} {
		t.Run(name, func(t *testing.T) {
			ln := listen(t, lc, "tcp4", "127.0.0.1:0")
			start := time.Now()
			ln.SetDeadline(start.Add(100 * time.Millisecond))
			_, err := ln.Accept()
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Accept past the deadline: %v; want a timeout", err)
			}
			if d := time.Since(start); d < 90*time.Millisecond || d > time.Second {
				t.Errorf("Accept returned after %v; want about 100ms", d)
			}
			// Moving the deadline into the past wakes a waiting Accept.
			ln.SetDeadline(time.Time{})
			errc := make(chan error, 1)
			go func() { _, err := ln.Accept(); errc <- err }()
			time.Sleep(50 * time.Millisecond)
			ln.SetDeadline(time.Now().Add(-time.Second))
			select {
			case err := <-errc:
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					t.Errorf("Accept after the deadline moved to the past: %v; want a timeout", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("moving the deadline to the past did not wake Accept")
			}
			ln.SetDeadline(time.Time{})
			go func() { _, err := ln.Accept(); errc <- err }()
			time.Sleep(50 * time.Millisecond)
			if err := ln.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept after Close: %v; want net.ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not wake Accept")
			}
			if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("second Close: %v; want net.ErrClosed", err)
			}
			if err := ln.SetBacklog(3); !errors.Is(err, net.ErrClosed) {
				t.Errorf("SetBacklog after Close: %v; want net.ErrClosed", err)
			}
		})
	}
}

// TestAcceptedCount checks that Stats counts accepted connections.
func TestAcceptedCount(t *testing.T) {
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{Backlog: 16}, "tcp4", "127.0.0.1:0")
	const n = 7
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		sc.Close()
	}
	if s := ln.Stats(); s.Accepted != n || s.Len != 0 || s.Requested != 16 {
		t.Errorf("Stats: Accepted %d, Len %d, Requested %d; want %d, 0, 16", s.Accepted, s.Len, s.Requested, n)
	}
}

// TestUnix checks a unix-domain listener: N+1 clients connect, the rest
// are told to try again, the read-back agrees with ss -lx, a resize shows
// at once, and Close removes the socket file.
func TestUnix(t *testing.T) {
	requireSS(t)
	t.Parallel()
	path := filepath.Join(t.TempDir(), "backlog.sock")
	ln := listen(t, &kernel.ListenConfig{Backlog: 2}, "unix", path)
	var ok, again int
	for range 5 {
		c, err := net.Dial("unix", path)
		switch {
		case err == nil:
			ok++
			defer c.Close()
		case errors.Is(err, syscall.EAGAIN):
			again++
		default:
			t.Fatalf("dial: %v", err)
		}
	}
	if ok != 3 || again != 2 {
		t.Errorf("listen(2) on unix: %d connected, %d EAGAIN; want 3 and 2", ok, again)
	}
	s, err := ln.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	ss := ssFor(t, ln)
	if s.Backlog != 2 || s.Len != 3 || ss.sendQ != 2 || ss.recvQ != 3 {
		t.Errorf("Backlog %d, Len %d, ss Send-Q %d, Recv-Q %d; want 2, 3, 2, 3", s.Backlog, s.Len, ss.sendQ, ss.recvQ)
	}
	if err := ln.SetBacklog(9); err != nil {
		t.Fatal(err)
	}
	if got, ss := ln.Backlog(), ssFor(t, ln); got != 9 || ss.sendQ != 9 {
		t.Errorf("after SetBacklog(9): Backlog %d, ss Send-Q %d", got, ss.sendQ)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*net.UnixConn); !ok {
		t.Errorf("accepted a %T; want *net.UnixConn", c)
	}
	c.Close()
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v; want it removed", err)
	}
}

// TestStatsAfterClose checks that read-back fails cleanly after Close and
// Backlog keeps the last value.
func TestStatsAfterClose(t *testing.T) {
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{Backlog: 6}, "tcp4", "127.0.0.1:0")
	ln.Close()
	if _, err := ln.KernelStats(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("KernelStats after Close: %v; want net.ErrClosed", err)
	}
	if got := ln.Backlog(); got != 6 {
		t.Errorf("Backlog after Close: %d; want the last value, 6", got)
	}
}
