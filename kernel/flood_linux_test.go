package kernel_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// floodNamespace makes a namespace whose kernel listens on 198.18.0.1 and
// routes 198.19.0.0/16, the forged sources, through a veth whose other end
// sits in a second namespace with no addresses: SYN-ACKs to forged sources
// leave and vanish. (Linux answers a SYN only if it has a route back,
// net/ipv4/tcp_input.c tcp_conn_request via route_req.)
func floodNamespace(t testing.TB, syncookies int) string {
	ns, sink := netnstest.New(t), netnstest.New(t)
	netnstest.Run(t, "ip", "-n", ns, "addr", "add", "198.18.0.1/32", "dev", "lo")
	netnstest.Run(t, "ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", sink)
	netnstest.Run(t, "ip", "-n", ns, "link", "set", "v0", "up")
	netnstest.Run(t, "ip", "-n", sink, "link", "set", "v1", "up")
	netnstest.Run(t, "ip", "-n", ns, "route", "add", "198.19.0.0/16", "dev", "v0")
	netnstest.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.lo.rp_filter=0", "net.ipv4.conf.v0.rp_filter=0",
		"net.ipv4.tcp_syncookies="+strconv.Itoa(syncookies))
	return ns
}

// forgedSYN returns a SYN from a random address in 198.19.0.0/16 to
// 198.18.0.1:80, IP header included.
func forgedSYN(r *rand.Rand) []byte { return forgedSYNTo(r, [4]byte{198, 18, 0, 1}, 80) }

// forgedSYNTo returns a SYN from a random address in 198.19.0.0/16 to
// dst:port, IP header included.
func forgedSYNTo(r *rand.Rand, dst [4]byte, port uint16) []byte {
	b := make([]byte, 40)
	b[0], b[8], b[9] = 0x45, 64, syscall.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], 40)
	copy(b[12:], []byte{198, 19, byte(r.IntN(256)), byte(r.IntN(256))})
	copy(b[16:], dst[:])
	binary.BigEndian.PutUint16(b[10:], inetChecksum(b[:20], 0))
	tcp := b[20:]
	binary.BigEndian.PutUint16(tcp[0:], uint16(1024+r.IntN(60000)))
	binary.BigEndian.PutUint16(tcp[2:], port)
	binary.BigEndian.PutUint32(tcp[4:], r.Uint32())
	tcp[12], tcp[13] = 5<<4, 0x02 // 20-byte header, SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	pseudo += syscall.IPPROTO_TCP + 20
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(tcp, pseudo))
	return b
}

// inetChecksum is the Internet checksum (RFC 1071) of b, starting from sum.
func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// tcpMemPages reads the pages of TCP memory in use in the calling thread's
// namespace (/proc/net/sockstat, "TCP: ... mem N").
func tcpMemPages(t *testing.T) int {
	b, err := os.ReadFile("/proc/thread-self/net/sockstat")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "TCP:" {
			for i := 1; i+1 < len(f); i += 2 {
				if f[i] == "mem" {
					n, _ := strconv.Atoi(f[i+1])
					return n
				}
			}
		}
	}
	return 0
}

// TestSYNFloodFromNamespace floods a kernel listener (backlog 64) with
// forged SYNs from a raw socket while real clients connect, in a namespace
// of the test's own. With tcp_syncookies=1 the SYN queue fills, every further
// SYN is answered with a cookie, and at least 99 % of real clients connect;
// with tcp_syncookies=0 the forged SYNs hold the SYN queue and real clients'
// SYNs are dropped (TCPReqQFullDrop), the damage Linux documents, and no
// worse: the kernel's memory stays bounded by the backlog, not the flood.
func TestSYNFloodFromNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.Exclusive(t) // a flood fills every namespace's receive backlogs
	for _, tc := range []struct {
		name             string
		cookies          int
		clients          int
		timeout          time.Duration
		minOK, maxOK     float64
		counter          func(kernel.Counters) uint64
		counterName      string
		floodBeforeStart int
	}{
		{"syncookies=1", 1, 200, 3 * time.Second, 0.99, 1, func(c kernel.Counters) uint64 { return c.TCPReqQFullDoCookies }, "TCPReqQFullDoCookies", 5000},
		{"syncookies=0", 0, 40, 300 * time.Millisecond, 0, 0.5, func(c kernel.Counters) uint64 { return c.TCPReqQFullDrop }, "TCPReqQFullDrop", 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := floodNamespace(t, tc.cookies)
			var l *kernel.Listener
			var before kernel.Counters
			var memBefore int
			netnstest.In(t, ns, func() {
				var err error
				l, err = (&kernel.ListenConfig{Backlog: 64}).Listen(context.Background(), "tcp4", "198.18.0.1:80")
				if err != nil {
					t.Error(err)
					return
				}
				before, _ = kernel.ReadCounters()
				memBefore = tcpMemPages(t)
			})
			if l == nil {
				t.FailNow()
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()

			// The flood: from a raw socket in the namespace, until the
			// clients are done, at most 2,000,000 SYNs.
			var sent atomic.Int64
			stop := make(chan struct{})
			floodDone := make(chan error, 1)
			go func() {
				if err := netnstest.Enter(ns); err != nil {
					floodDone <- err
					return
				}
				fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
				if err != nil {
					floodDone <- err
					return
				}
				defer syscall.Close(fd)
				r := rand.New(rand.NewPCG(1, 2))
				to := &syscall.SockaddrInet4{Addr: [4]byte{198, 18, 0, 1}}
				for sent.Load() < 2_000_000 {
					select {
					case <-stop:
						floodDone <- nil
						return
					default:
					}
					if err := syscall.Sendto(fd, forgedSYN(r), 0, to); err == nil {
						sent.Add(1)
					}
				}
				floodDone <- nil
			}()
			for sent.Load() < int64(tc.floodBeforeStart) {
				time.Sleep(time.Millisecond)
			}

			// Real clients: four threads in the namespace, each
			// connecting one client after another.
			var ok atomic.Int32
			var wg sync.WaitGroup
			const threads = 4
			for i := 0; i < threads; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := netnstest.Enter(ns); err != nil {
						t.Error(err)
						return
					}
					for j := 0; j < tc.clients/threads; j++ {
						if c, err := net.DialTimeout("tcp4", "198.18.0.1:80", tc.timeout); err == nil {
							ok.Add(1)
							c.Close()
						}
						time.Sleep(2 * time.Millisecond)
					}
				}()
			}
			wg.Wait()
			close(stop)
			if err := <-floodDone; err != nil {
				t.Fatal(err)
			}
			var after kernel.Counters
			var memAfter int
			netnstest.In(t, ns, func() {
				after, _ = kernel.ReadCounters()
				memAfter = tcpMemPages(t)
			})
			d := after.Sub(before)
			share := float64(ok.Load()) / float64(tc.clients)
			t.Logf("%d forged SYNs; %d/%d real clients connected (%.1f %%); %s +%d, SyncookiesSent +%d, SyncookiesRecv +%d, ListenDrops +%d; TCP memory %d -> %d pages",
				sent.Load(), ok.Load(), tc.clients, 100*share, tc.counterName, tc.counter(d), d.SyncookiesSent, d.SyncookiesRecv, d.ListenDrops, memBefore, memAfter)
			if share < tc.minOK || share > tc.maxOK {
				t.Errorf("%.1f %% of real clients connected; want from %.0f %% to %.0f %%", 100*share, 100*tc.minOK, 100*tc.maxOK)
			}
			if tc.counter(d) == 0 {
				t.Errorf("%s did not rise: the flood never filled the SYN queue", tc.counterName)
			}
			// A request sock is well under a page; 65 of them, plus the
			// clients', stay within a few hundred pages whatever the flood.
			if memAfter > memBefore+512 {
				t.Errorf("TCP memory grew from %d to %d pages during the flood", memBefore, memAfter)
			}
		})
	}
}
