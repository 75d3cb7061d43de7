package netstack

import (
	"context"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// flood sends count SYNs to the server's port 80 from random addresses in
// 198.19.0.0/16, where no host lives, as fast as the server's receive queue
// takes them, keeping at most depth of them waiting in it. The server is
// flooded as hard as it can absorb whatever depth is; depth only says how
// many forged SYNs a real client's packet may find ahead of it, a NIC's
// ring rather than the network's whole queue.
func flood(n *Network, count, depth int) {
	dst := tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
	n.mu.RLock()
	in := n.hosts[dst].link.(*port).in
	n.mu.RUnlock()
	for i := 0; i < count; i++ {
		for len(in) > depth {
			runtime.Gosched()
		}
		src := tcpip.AddrFrom4([4]byte{198, 19, byte(rand.IntN(256)), byte(rand.IntN(256))})
		n.deliver(dst, tcpSpec{
			proto: ipv4.ProtocolNumber, src: src, dst: dst,
			sport: uint16(1024 + rand.IntN(60000)), dport: 80,
			seq: rand.Uint32(), flags: header.TCPFlagSyn, window: 65535, mss: 1460,
		}.build())
	}
}

// floodDepth is how many forged SYNs the flood tests keep waiting for the
// server: a real client's SYN and final ACK each queue behind as many, so
// that what they meet is the personality's rules, not the time a busy
// machine takes to get through half of the network's queue (2,048
// packets, several seconds under the race detector).
const floodDepth = 64

type floodResult struct {
	connected, clients int
	maxHalfOpen        int
	maxGoroutines      int
	heapGrowth         uint64
	syns               uint64 // SYNs that reached the listener
}

// underFlood runs clients real dials (each allowed timeout) while count
// forged SYNs arrive, with an application accepting everything, and samples
// the server's half-open count, the goroutines and the heap.
func underFlood(t *testing.T, personality string, backlogN, count, clients int, timeout time.Duration) floodResult {
	t.Helper()
	n, srv, cli := pair(t, nil)
	l := listen(t, srv, personality, backlogN)
	go serveEach(l, func(c net.Conn) { c.Close() })
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseGoroutines := runtime.NumGoroutine()

	var res floodResult
	res.clients = clients
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			res.maxHalfOpen = max(res.maxHalfOpen, l.HalfOpen())
			res.maxGoroutines = max(res.maxGoroutines, runtime.NumGoroutine()-baseGoroutines)
		}
	}()
	var connected atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); flood(n, count, floodDepth) }()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if c, err := cli.Dial(ctx, "tcp", serverAddr+":80"); err == nil {
				connected.Add(1)
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	res.connected = int(connected.Load())
	res.syns = l.Stats().SYNs
	if res.syns < uint64(count)/2 {
		t.Fatalf("only %d of %d forged SYNs reached the listener (network dropped %d): the flood did not happen", res.syns, count, n.Dropped())
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if after.HeapAlloc > before.HeapAlloc {
		res.heapGrowth = after.HeapAlloc - before.HeapAlloc
	}
	t.Logf("%s: %d/%d real clients connected while %d SYNs reached the listener; max half-open %d, max extra goroutines %d, heap growth %d KiB",
		personality, res.connected, clients, res.syns, res.maxHalfOpen, res.maxGoroutines, res.heapGrowth>>10)
	return res
}

// TestSYNFloodWithCookies: with tcp_syncookies=1, forged SYNs fill the SYN
// queue and every further SYN is answered with a cookie; real clients, which
// answer their cookies, still connect (at least 99 %), and the state held is
// bounded by the backlog, not by the flood.
func TestSYNFloodWithCookies(t *testing.T) {
	const backlogN, clients = 64, 200
	res := underFlood(t, "linux", backlogN, 20000, clients, 5*time.Second)
	if res.connected*100 < clients*99 {
		t.Errorf("%d of %d real clients connected; want at least 99 %%", res.connected, clients)
	}
	if res.maxHalfOpen > backlogN+1 {
		t.Errorf("up to %d half-open; the SYN queue holds %d", res.maxHalfOpen, backlogN+1)
	}
	// The clients' own goroutines and connections come and go; nothing
	// grows with the 20000 forged SYNs.
	if res.maxGoroutines > clients+64 {
		t.Errorf("up to %d more goroutines during the flood", res.maxGoroutines)
	}
}

// TestSYNFloodWithoutCookies: with tcp_syncookies=0, the damage is the
// documented one and no worse: forged SYNs hold the SYN queue, real clients'
// SYNs are dropped (TCPReqQFullDrop) while it is full, and the state held is
// still bounded by the backlog.
func TestSYNFloodWithoutCookies(t *testing.T) {
	const backlogN = 64
	res := underFlood(t, "linux:syncookies=0", backlogN, 20000, 50, 500*time.Millisecond)
	if res.maxHalfOpen > backlogN+1 {
		t.Errorf("up to %d half-open; the SYN queue holds %d", res.maxHalfOpen, backlogN+1)
	}
	if res.connected > 50/2 {
		t.Errorf("%d of 50 real clients connected while forged SYNs held the SYN queue; want most dropped", res.connected)
	}
}

// TestSYNFloodHoldsWithinTheLimit floods systems without Linux's small SYN
// queue: Windows holds half-open handshakes in its backlog and refuses the
// rest, FreeBSD's syncache holds up to 15360 and answers the rest with
// cookies. Either way the state held stops at the configured limit, and
// FreeBSD's real clients get in through cookies.
func TestSYNFloodHoldsWithinTheLimit(t *testing.T) {
	for _, tt := range []struct {
		name       string
		limit      int
		minClients float64
	}{
		{"windows", 64, 0},
		{"freebsd", 512 * 30, 0.99},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := underFlood(t, tt.name, 64, 20000, 100, 3*time.Second)
			if res.maxHalfOpen > tt.limit {
				t.Errorf("up to %d half-open; the limit is %d", res.maxHalfOpen, tt.limit)
			}
			if got := float64(res.connected) / 100; got < tt.minClients {
				t.Errorf("%d of 100 real clients connected; want at least %.0f %%", res.connected, 100*tt.minClients)
			}
		})
	}
}
