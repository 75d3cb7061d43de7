package kernel_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// TestSocketsMatchSS lists the host's listening sockets and compares the
// ones this test creates with what ss -ltnmpe says about them: address,
// Recv-Q, Send-Q, drops, holder.
func TestSocketsMatchSS(t *testing.T) {
	requireSS(t)
	t.Parallel()
	lns := []*kernel.Listener{
		listen(t, &kernel.ListenConfig{Backlog: 7}, "tcp4", "127.0.0.1:0"),
		listen(t, &kernel.ListenConfig{Backlog: 3}, "tcp6", "[::1]:0"),
		listen(t, &kernel.ListenConfig{Backlog: 11}, "tcp", ":0"),
		listen(t, &kernel.ListenConfig{Backlog: backlog.ZeroBacklog}, "tcp6", "[::]:0"),
	}
	fill(t, lns[0], 2, dropWait)
	fill(t, lns[3], 3, dropWait) // 1 queued, 2 dropped
	socks, err := kernel.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	ss := ssListening(t, "tp")
	byInode := make(map[uint64]kernel.Socket)
	for _, s := range socks {
		byInode[s.Inode] = s
	}
	for _, ln := range lns {
		ks, _ := ln.KernelStats()
		s, ok := byInode[ks.Inode]
		if !ok {
			t.Errorf("Sockets does not list %v (inode %d)", ln.Addr(), ks.Inode)
			continue
		}
		e, ok := ss[ks.Inode]
		if !ok {
			t.Errorf("ss does not list %v (inode %d)", ln.Addr(), ks.Inode)
			continue
		}
		if s.String() != e.local || s.Len != e.recvQ || s.Backlog != e.sendQ || s.Drops != e.drops {
			t.Errorf("Sockets: %s Recv-Q %d Send-Q %d d%d; ss: %s %d %d d%d", s, s.Len, s.Backlog, s.Drops, e.local, e.recvQ, e.sendQ, e.drops)
		}
		if s.Backlog != ks.Backlog || s.Len != ks.Len || s.Drops != ks.Drops {
			t.Errorf("Sockets and the listener's own read-back differ: %+v vs %+v", s, ks)
		}
		holder := fmt.Sprintf(`(("%s",pid=%d,`, s.Process, s.PID)
		if s.PID != os.Getpid() || !strings.Contains(e.users, holder) {
			t.Errorf("holder %q pid %d; ss says %s; this process is %d", s.Process, s.PID, e.users, os.Getpid())
		}
		if s.UID != uint32(os.Getuid()) {
			t.Errorf("UID %d; want %d", s.UID, os.Getuid())
		}
		if s.Addr.Port() != uint16(port(ln)) {
			t.Errorf("port %d; listener is on %v", s.Addr.Port(), ln.Addr())
		}
	}
	if s := byInode[mustInode(t, lns[3])]; s.Len != 1 || s.Drops != 2 {
		t.Errorf("listen(0) with 3 clients: Len %d, Drops %d; want 1 and 2", s.Len, s.Drops)
	}
	if len(socks) < len(ss)/2 {
		t.Errorf("Sockets lists %d sockets, ss %d", len(socks), len(ss))
	}
}

func mustInode(t *testing.T, ln *kernel.Listener) uint64 {
	t.Helper()
	s, err := ln.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	return s.Inode
}

// TestSocketByInode checks the lookup of one socket, and that a closed
// socket is reported as not existing.
func TestSocketByInode(t *testing.T) {
	t.Parallel()
	ln := listen(t, &kernel.ListenConfig{Backlog: 9}, "tcp4", "127.0.0.1:0")
	fill(t, ln, 2, dropWait)
	inode := mustInode(t, ln)
	s, err := kernel.SocketByInode(inode)
	if err != nil {
		t.Fatal(err)
	}
	if s.Backlog != 9 || s.Len != 2 || s.Addr.String() != ln.Addr().String() || s.PID != 0 {
		t.Errorf("SocketByInode: %+v; want backlog 9, 2 queued, %v, no holder lookup", s, ln.Addr())
	}
	ln.Close()
	// A child process that another test forks at this moment holds a copy
	// of the descriptor until it execs, so the socket may outlive Close by
	// a moment.
	var err2 error
	if !waitFor(5*time.Second, func() bool {
		_, err2 = kernel.SocketByInode(inode)
		return errors.Is(err2, os.ErrNotExist)
	}) {
		t.Errorf("SocketByInode after Close: %v; want os.ErrNotExist", err2)
	}
}

// TestSocketsPerNamespace checks that Sockets and ReadCounters see the
// network namespace of the calling thread: a listener in a namespace the
// test creates, on an address of 198.18.0.0/15, is listed there and not
// on the host, and its overflows are counted there.
func TestSocketsPerNamespace(t *testing.T) {
	ns := netnstest.New(t)
	var (
		inode                  uint64
		inside                 []kernel.Socket
		before, after          kernel.Counters
		connected, failed, ipE int
		ln                     *kernel.Listener
		err                    error
	)
	addr := "127.0.0.1:0"
	netnstest.In(t, ns, func() {
		if _, lerr := exec.LookPath("ip"); lerr == nil {
			if exec.Command("ip", "addr", "add", "198.18.0.1/32", "dev", "lo").Run() == nil {
				addr = "198.18.0.1:0"
			} else {
				ipE++
			}
		}
		ln, err = kernel.Listen("tcp4", addr, backlog.ZeroBacklog)
		if err != nil {
			return
		}
		inode = mustInode(t, ln)
		before, err = kernel.ReadCounters()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	netnstest.In(t, ns, func() {
		c, f := fill(t, ln, 4, dropWait)
		connected, failed = len(c), f
	})
	netnstest.In(t, ns, func() {
		inside, err = kernel.Sockets()
		if err == nil {
			after, err = kernel.ReadCounters()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inside) != 1 || inside[0].Inode != inode || inside[0].Addr.String() != ln.Addr().String() {
		t.Errorf("Sockets in the namespace: %v; want only %v (inode %d)", inside, ln.Addr(), inode)
	}
	if inside[0].PID != os.Getpid() {
		t.Errorf("holder %d; want %d", inside[0].PID, os.Getpid())
	}
	outside, err := kernel.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range outside {
		if s.Inode == inode {
			t.Errorf("the namespace's listener shows on the host: %v", s)
		}
	}
	if connected != 1 || failed != 3 {
		t.Errorf("listen(0): %d connected, %d timed out; want 1 and 3", connected, failed)
	}
	d := after.Sub(before)
	if d.ListenOverflows != 3 || d.ListenDrops != 3 {
		t.Errorf("namespace counters rose by ListenOverflows %d, ListenDrops %d; want 3 and 3", d.ListenOverflows, d.ListenDrops)
	}
	if s, _ := ln.KernelStats(); s.Drops != d.ListenDrops {
		t.Errorf("socket drops %d; namespace ListenDrops rose by %d", s.Drops, d.ListenDrops)
	}
	if ipE > 0 {
		t.Logf("could not add 198.18.0.1; used %s", addr)
	}
}

// TestSyncookieCounters checks the SYN-cookie counters in a namespace with
// tcp_syncookies=2, where every SYN is answered with a cookie.
func TestSyncookieCounters(t *testing.T) {
	ns := netnstest.New(t)
	var (
		ln            *kernel.Listener
		before, after kernel.Counters
		err           error
	)
	netnstest.In(t, ns, func() {
		if err = writeSysctl("net/ipv4/tcp_syncookies", 2); err != nil {
			return
		}
		if ln, err = kernel.Listen("tcp4", "127.0.0.1:0", 16); err != nil {
			return
		}
		before, err = kernel.ReadCounters()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 3
	netnstest.In(t, ns, func() {
		for range n {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second); err != nil {
				return
			}
			c.Write([]byte("x"))
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	netnstest.In(t, ns, func() { after, err = kernel.ReadCounters() })
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	if d.SyncookiesSent != n || d.SyncookiesRecv != n || d.TCPReqQFullDoCookies != n || d.SyncookiesFailed != 0 {
		t.Errorf("with tcp_syncookies=2 and %d clients: %+v; want %d cookies sent, received and TCPReqQFullDoCookies", n, d, n)
	}
}
