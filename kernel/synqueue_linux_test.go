package kernel_test

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// sendForgedSYNs sends n SYNs from forged sources in 198.19.0.0/16 to
// dst:port from a raw socket of the calling thread's namespace.
func sendForgedSYNs(t *testing.T, r *rand.Rand, dst [4]byte, port uint16, n int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	to := &syscall.SockaddrInet4{Addr: dst}
	for range n {
		if err := syscall.Sendto(fd, forgedSYNTo(r, dst, port), 0, to); err != nil {
			t.Fatal(err)
		}
	}
}

// ssSynRecv counts, per local address and port, the request sockets that
// ss -Hn state syn-recv lists in the calling thread's namespace (ss runs
// there: a child process inherits the namespace of the thread that forks
// it).
func ssSynRecv(t *testing.T) map[string]int {
	t.Helper()
	out, err := exec.Command("ss", "-Hnt", "state", "syn-recv").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	n := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		// Recv-Q Send-Q Local Peer (no State column with a state filter).
		if f := strings.Fields(line); len(f) >= 4 {
			n[f[2]]++
		}
	}
	return n
}

// TestSynQueueMatchesSS makes half-open handshakes from forged sources, in
// a namespace of the test's own with SYN cookies off, to five listening
// addresses: a listener of its own, an SO_REUSEPORT group of two on the
// IPv4 wildcard, a dual-stack IPv6 wildcard that takes IPv4, and a port
// with both a specific listener and the wildcard. Sockets must count each
// address's request sockets as ss does, attribute them as the kernel's
// lookup did, say which sockets form a group, and Stats must report
// HalfOpen for a listener alone on its address and mark it unobserved for
// a member of a group, whose share the kernel does not tell.
func TestSynQueueMatchesSS(t *testing.T) {
	requireSS(t)
	ns := floodNamespace(t, 0)
	netnstest.Run(t, "ip", "-n", ns, "addr", "add", "198.18.0.2/32", "dev", "lo")
	var (
		lns []*kernel.Listener
		err error
	)
	open := func(lc kernel.ListenConfig, network, addr string) *kernel.Listener {
		var l *kernel.Listener
		netnstest.In(t, ns, func() { l, err = lc.Listen(context.Background(), network, addr) })
		if err != nil {
			t.Fatalf("listen %s %s: %v", network, addr, err)
		}
		t.Cleanup(func() { l.Close() })
		lns = append(lns, l)
		return l
	}
	alone := open(kernel.ListenConfig{Backlog: 64}, "tcp4", "198.18.0.1:80")
	shardA := open(kernel.ListenConfig{Backlog: 64, ReusePort: true}, "tcp4", "0.0.0.0:81")
	shardB := open(kernel.ListenConfig{Backlog: 64, ReusePort: true}, "tcp4", "0.0.0.0:81")
	dual := open(kernel.ListenConfig{Backlog: 64}, "tcp", ":82")
	// Both need SO_REUSEPORT to share the port; they form two groups of
	// one, since their addresses differ.
	specific := open(kernel.ListenConfig{Backlog: 64, ReusePort: true}, "tcp4", "198.18.0.1:83")
	wildcard := open(kernel.ListenConfig{Backlog: 64, ReusePort: true}, "tcp4", "0.0.0.0:83")
	quiet := open(kernel.ListenConfig{Backlog: 64}, "tcp4", "198.18.0.1:84")

	one, two := [4]byte{198, 18, 0, 1}, [4]byte{198, 18, 0, 2}
	sent := []struct {
		dst  [4]byte
		port uint16
		n    int
	}{{one, 80, 20}, {one, 81, 7}, {two, 81, 5}, {one, 82, 9}, {one, 83, 4}, {two, 83, 6}}
	want := map[*kernel.Listener]int{alone: 20, shardA: 12, shardB: 12, dual: 9, specific: 4, wildcard: 6, quiet: 0}
	wantSS := map[string]int{"198.18.0.1:80": 20, "198.18.0.1:81": 7, "198.18.0.2:81": 5, "[::ffff:198.18.0.1]:82": 9, "198.18.0.1:83": 4, "198.18.0.2:83": 6}
	r := rand.New(rand.NewPCG(3, 4))
	var ss map[string]int
	netnstest.In(t, ns, func() {
		for _, s := range sent {
			sendForgedSYNs(t, r, s.dst, s.port, s.n)
		}
		// An IPv4 SYN taken by the dual-stack listener makes an IPv6 request
		// socket to a v4-mapped address.
		// The SYNs go through loopback's backlog; wait until ss sees them
		// all. Each request socket lives a minute (five SYN-ACK
		// retransmissions), far longer than the test.
		waitFor(5*time.Second, func() bool {
			ss = ssSynRecv(t)
			total := 0
			for _, n := range ss {
				total += n
			}
			return total >= 51
		})
	})
	for addr, n := range wantSS {
		if ss[addr] != n {
			t.Errorf("ss lists %d request sockets on %s; the test sent %d SYNs (all of ss: %v)", ss[addr], addr, n, ss)
		}
	}

	var socks []kernel.Socket
	stats := map[*kernel.Listener]kernel.Stats{}
	netnstest.In(t, ns, func() {
		socks, err = kernel.Sockets()
		for _, l := range lns {
			stats[l], _ = l.KernelStats()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	byInode := map[uint64]kernel.Socket{}
	for _, s := range socks {
		byInode[s.Inode] = s
	}
	for _, l := range lns {
		st := stats[l]
		s, ok := byInode[st.Inode]
		if !ok {
			t.Errorf("Sockets does not list %v", l.Addr())
			continue
		}
		group := 1
		if l == shardA || l == shardB {
			group = 2
		}
		if s.SynQueue != want[l] || s.Group != group {
			t.Errorf("%v: SynQueue %d, Group %d; want %d and %d", s, s.SynQueue, s.Group, want[l], group)
		}
		if group > 1 {
			if st.Observed(backlog.StatHalfOpen) {
				t.Errorf("%v, a member of a group of %d: HalfOpen %d observed; want unobserved", s, group, st.HalfOpen)
			}
			continue
		}
		if !st.Observed(backlog.StatHalfOpen) || st.HalfOpen != want[l] {
			t.Errorf("%v: Stats HalfOpen %d (observed %v); want %d", s, st.HalfOpen, st.Observed(backlog.StatHalfOpen), want[l])
		}
	}
	if s := byInode[stats[dual].Inode]; !s.DualStack || s.Addr != netip.MustParseAddrPort("[::]:82") {
		t.Errorf("dual-stack listener listed as %v (dual %v)", s.Addr, s.DualStack)
	}

	// SocketByInode reads the same from the socket's own port.
	netnstest.In(t, ns, func() {
		var s kernel.Socket
		s, err = kernel.SocketByInode(stats[shardA].Inode)
		if err == nil && (s.SynQueue != 12 || s.Group != 2) {
			t.Errorf("SocketByInode(shard): SynQueue %d, Group %d; want 12 and 2", s.SynQueue, s.Group)
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	// Nobody completes these handshakes: the kernel sends each SYN-ACK
	// again after a second (net/ipv4/inet_connection_sock.c
	// reqsk_timer_handler), and every request socket then counts as
	// retransmitted.
	var s kernel.Socket
	ok := waitFor(10*time.Second, func() bool {
		netnstest.In(t, ns, func() { s, err = kernel.SocketByInode(stats[alone].Inode) })
		return err == nil && s.SynRetransmitted == 20
	})
	if !ok {
		t.Errorf("after the SYN-ACK timer: SynRetransmitted %d (%v); want all 20", s.SynRetransmitted, err)
	}
	if s.SynQueue != 20 {
		t.Errorf("SynQueue %d after the retransmissions; want still 20", s.SynQueue)
	}
}
