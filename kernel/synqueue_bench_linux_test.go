package kernel_test

import (
	"math/rand/v2"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// BenchmarkSYNQueueUnderFlood measures what reading every listener's SYN
// queue costs on a host with 30,000 listeners (backlog 128 each, in a
// namespace of its own with SYN cookies off) while a flood of forged SYNs
// spread over all of them holds about flood request sockets: one
// SocketsWithoutHolders (listening and request sockets, both families)
// against one listing of the listening sockets alone (the sock_diag dump
// Sockets made before it read the SYN queue) and `ss -Hnt state
// syn-recv`, taking turns. ms/read, ms/listen-only and ms/ss-syn-recv are
// the three; requests is how many request sockets a reading counted. The
// listeners are held by helper processes (a test process may hold only
// 20,000 descriptors here).
func BenchmarkSYNQueueUnderFlood(b *testing.B) {
	netnstest.RequireRoot(b)
	const listeners = 30000
	for _, flood := range []int{0, 200000} {
		b.Run("requests="+strconv.Itoa(flood), func(b *testing.B) {
			ns := floodNamespace(b, 0)
			// One gateway with a permanent neighbour for every forged
			// source: without it each SYN-ACK needs a neighbour entry of
			// its own, the table overflows (gc_thresh3), and the
			// retransmission fails, which drops the request after a
			// second.
			netnstest.Run(b, "ip", "-n", ns, "neigh", "add", "198.18.255.254", "lladdr", "02:00:00:00:00:01", "dev", "v0", "nud", "permanent")
			netnstest.Run(b, "ip", "-n", ns, "route", "replace", "198.19.0.0/16", "via", "198.18.255.254", "dev", "v0", "onlink")
			netnstest.HoldListeners(b, ns, "198.18.0.1", 20000, listeners, 128)
			var err error
			netnstest.In(b, ns, func() {
				// Room for the flood's request sockets.
				exec.Command("sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=1000000").Run()
				r := rand.New(rand.NewPCG(5, 6))
				fd, serr := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
				if serr != nil {
					err = serr
					return
				}
				defer syscall.Close(fd)
				to := &syscall.SockaddrInet4{Addr: [4]byte{198, 18, 0, 1}}
				// Paced, so that loopback's input queue
				// (net.core.netdev_max_backlog, 1,000 by default) never
				// overflows.
				for i := range flood {
					syscall.Sendto(fd, forgedSYNTo(r, to.Addr, uint16(20000+r.IntN(listeners))), 0, to)
					if i%200 == 199 {
						time.Sleep(time.Millisecond)
					}
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			var requests int
			var synTime, listenTime, ssTime time.Duration
			netnstest.In(b, ns, func() {
				// Let loopback's backlog drain into request sockets.
				time.Sleep(500 * time.Millisecond)

				b.ResetTimer()
				for range b.N {
					t0 := time.Now()
					socks, err := kernel.SocketsWithoutHolders()
					synTime += time.Since(t0)
					if err != nil || len(socks) != listeners {
						b.Fatalf("%d sockets, %v", len(socks), err)
					}
					requests = 0
					for _, s := range socks {
						requests += s.SynQueue
					}
					t0 = time.Now()
					if _, err := kernel.ListeningOnly(); err != nil {
						b.Fatal(err)
					}
					listenTime += time.Since(t0)
					t0 = time.Now()
					if err := exec.Command("ss", "-Hnt", "state", "syn-recv").Run(); err != nil {
						b.Fatal(err)
					}
					ssTime += time.Since(t0)
				}
			})
			b.ReportMetric(float64(synTime.Microseconds())/1000/float64(b.N), "ms/read")
			b.ReportMetric(float64(listenTime.Microseconds())/1000/float64(b.N), "ms/listen-only")
			b.ReportMetric(float64(ssTime.Microseconds())/1000/float64(b.N), "ms/ss-syn-recv")
			b.ReportMetric(float64(requests), "requests")
			b.ReportMetric(0, "ns/op")
		})
	}
}
