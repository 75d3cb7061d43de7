package kernel_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// tcpExt reads the named TcpExt counters of the calling thread's
// namespace.
func tcpExt(t *testing.T, names ...string) map[string]uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	out := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "TcpExt:")
		if !ok {
			continue
		}
		if header == nil {
			header = strings.Fields(rest)
			continue
		}
		for i, v := range strings.Fields(rest) {
			for _, n := range names {
				if header[i] == n {
					out[n], _ = strconv.ParseUint(v, 10, 64)
				}
			}
		}
		break
	}
	return out
}

// TestSkDropsAreNotListenDrops shows what the socket's drop count
// (SocketStats.Drops, sk_drops) counts beyond the namespace's ListenDrops,
// in a namespace of the test's own, on a listen(0) socket with
// TCP_DEFER_ACCEPT, where the kernel holds a connection whose final ACK
// carries no data as a request socket (net/ipv4/tcp_minisocks.c
// tcp_check_req). Client A connects: its bare final ACK is dropped
// (TCPDeferAcceptDrop, in sk_drops only) and it stays half-open. Client B
// finds the SYN queue full and gets a SYN cookie, whose ACK makes a
// connection at once and fills the accept queue. A then sends data, which
// overflows the queue: ListenOverflows and ListenDrops once, sk_drops
// twice (once in tcp_listendrop, once more when tcp_v4_rcv discards the
// segment tcp_check_req did not turn into a connection). A resets: its
// reset, in the window but not at the expected sequence number, is
// answered with a challenge ACK (RFC 5961; TCPChallengeACK, in sk_drops
// only), which A's closed socket answers with a reset that ends the
// handshake (EmbryonicRsts, in sk_drops only). Once nothing is in flight,
//
//	sk_drops = TCPDeferAcceptDrop + 2 ListenOverflows + TCPChallengeACK + EmbryonicRsts
//
// and ListenDrops = ListenOverflows, however many times the clients
// retransmitted meanwhile.
func TestSkDropsAreNotListenDrops(t *testing.T) {
	ns := netnstest.New(t)
	names := []string{"ListenDrops", "ListenOverflows", "TCPDeferAcceptDrop", "TCPChallengeACK", "EmbryonicRsts"}
	var (
		ln     *kernel.Listener
		before map[string]uint64
		err    error
	)
	netnstest.In(t, ns, func() {
		if err = writeSysctl("net/ipv4/tcp_syncookies", 1); err != nil {
			return
		}
		ln, err = (&kernel.ListenConfig{Backlog: backlog.ZeroBacklog, DeferAccept: 30 * time.Second}).Listen(t.Context(), "tcp4", "127.0.0.1:0")
		before = tcpExt(t, names...)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var a, b net.Conn
	netnstest.In(t, ns, func() {
		if a, err = net.Dial("tcp4", ln.Addr().String()); err != nil {
			return
		}
		b, err = net.Dial("tcp4", ln.Addr().String())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if !waitFor(5*time.Second, func() bool { return ln.Stats().Len == 1 }) {
		t.Fatalf("queue %d; want B's cookie connection in it", ln.Stats().Len)
	}
	var mid map[string]uint64
	a.Write([]byte("a"))
	if !waitFor(5*time.Second, func() bool {
		netnstest.In(t, ns, func() { mid = tcpExt(t, names...) })
		return mid["ListenOverflows"] > before["ListenOverflows"]
	}) {
		t.Fatal("A's data did not overflow the queue")
	}
	a.(*net.TCPConn).SetLinger(0)
	a.Close()
	var after map[string]uint64
	var drops uint64
	// The reset ends the second handshake; then nothing is in flight.
	if !waitFor(5*time.Second, func() bool {
		netnstest.In(t, ns, func() { after = tcpExt(t, names...) })
		return after["EmbryonicRsts"] > before["EmbryonicRsts"]
	}) {
		t.Fatal("A's reset did not end its handshake")
	}
	s, _ := ln.KernelStats()
	drops = s.Drops
	d := map[string]uint64{}
	for _, n := range names {
		d[n] = after[n] - before[n]
	}
	t.Logf("sk_drops %d; namespace: %v", drops, d)
	if d["TCPDeferAcceptDrop"] < 1 || d["EmbryonicRsts"] != 1 {
		t.Errorf("TCPDeferAcceptDrop +%d, EmbryonicRsts +%d; want A's bare final ACK and its reset", d["TCPDeferAcceptDrop"], d["EmbryonicRsts"])
	}
	if d["ListenDrops"] != d["ListenOverflows"] || d["ListenOverflows"] < 1 {
		t.Errorf("ListenDrops +%d, ListenOverflows +%d; want equal, at least 1", d["ListenDrops"], d["ListenOverflows"])
	}
	if want := d["TCPDeferAcceptDrop"] + 2*d["ListenOverflows"] + d["TCPChallengeACK"] + d["EmbryonicRsts"]; drops != want {
		t.Errorf("sk_drops %d; want TCPDeferAcceptDrop + 2 ListenOverflows + TCPChallengeACK + EmbryonicRsts = %d", drops, want)
	}
	if drops <= d["ListenDrops"] {
		t.Errorf("sk_drops %d not above ListenDrops +%d", drops, d["ListenDrops"])
	}
}
