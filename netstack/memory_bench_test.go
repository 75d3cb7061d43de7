package netstack

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// The memory benchmarks hold connections on a server host with no client
// host at all: the clients are forged packets from addresses no host owns,
// so that the heap measured is the server's alone. A network tap answers
// the server's SYN-ACKs with the final ACK when the connections are to
// complete.

// memConns is how many connections each memory measurement holds.
const memConns = 2000

// forger sends forged SYNs to port 80 of a server host and, if complete is
// set, answers each SYN-ACK with the final ACK. It counts the distinct
// connections the server answered.
type forger struct {
	n        *Network
	server   tcpip.Address
	in       chan []byte // the server's receive queue
	complete bool

	mu       sync.Mutex
	answered map[peer]bool
}

// peer is a forged client: its address and port.
type peer struct {
	addr tcpip.Address
	port uint16
}

func newForger(n *Network, h *Host, complete bool) *forger {
	f := &forger{n: n, server: addrOf(h.addrs[0]), in: h.link.(*port).in, complete: complete, answered: map[peer]bool{}}
	tap := f.see
	n.tap.Store(&tap)
	return f
}

func (f *forger) see(b []byte) {
	s, ok := parse(b, true) // as the forged client receives it
	if !ok || s.flags != header.TCPFlagSyn|header.TCPFlagAck || s.id.RemoteAddress != f.server {
		return
	}
	f.mu.Lock()
	f.answered[peer{s.id.LocalAddress, s.id.LocalPort}] = true
	f.mu.Unlock()
	if f.complete {
		f.n.deliver(f.server, tcpSpec{
			proto: ipv4.ProtocolNumber, src: s.id.LocalAddress, dst: f.server,
			sport: s.id.LocalPort, dport: 80,
			seq: s.ack, ack: s.seq + 1, flags: header.TCPFlagAck, window: 65535,
		}.build())
	}
}

func (f *forger) answeredCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.answered)
}

// syn sends the SYN of forged client i, from 198.19.0.0/16, waiting while
// the server's receive queue is more than half full.
func (f *forger) syn(i int) {
	for len(f.in) > cap(f.in)/2 {
		runtime.Gosched()
	}
	f.n.deliver(f.server, tcpSpec{
		proto: ipv4.ProtocolNumber, src: tcpip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), dst: f.server,
		sport: uint16(10000 + i>>16), dport: 80,
		seq: uint32(i) * 7919, flags: header.TCPFlagSyn, window: 65535, mss: 1460,
	}.build())
}

// heapAfterGC returns the live heap after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// memServer is a server host with a listener on port 80 for a memory
// measurement, and how to tell when it holds count connections.
type memServer struct {
	n    *Network
	host *Host
	// holds reports whether the server holds count connections in the
	// state measured.
	holds func(f *forger, count int) bool
	close func()
}

func newMemServer(b testing.TB, impl string, complete bool, count int) *memServer {
	n := NewNetwork(nil)
	h, err := n.NewHost()
	if err != nil {
		b.Fatal(err)
	}
	ms := &memServer{n: n, host: h}
	established := func() int { return int(h.Stack().Stats().TCP.CurrentEstablished.Value()) }
	switch impl {
	case "gvisor":
		l := nativeListen(b, h, 80, 2*count)
		ms.close = func() { l.Close(); n.Close() }
		if complete {
			ms.holds = func(_ *forger, c int) bool { return established() == c }
		} else {
			ms.holds = func(f *forger, c int) bool { return f.answeredCount() == c }
		}
	case "backlog":
		// Room for every connection measured, and no SYN cookies: each
		// one is held.
		p := backlog.MustLookup(fmt.Sprintf("linux:somaxconn=%d,syncookies=0,max_syn_backlog=%d", 2*count, 4*count))
		l, err := h.Listen(context.Background(), "tcp4", ":80", &ListenConfig{Personality: p, Backlog: 2 * count})
		if err != nil {
			b.Fatal(err)
		}
		ms.close = func() { l.Close(); n.Close() }
		if complete {
			ms.holds = func(_ *forger, c int) bool {
				h.gate.mu.Lock()
				inFlight := h.gate.conns.n
				h.gate.mu.Unlock()
				return l.Len() == c && inFlight == 0 && established() == c
			}
		} else {
			ms.holds = func(f *forger, c int) bool { return l.HalfOpen() == c && f.answeredCount() == c }
		}
	default:
		b.Fatalf("unknown impl %q", impl)
	}
	return ms
}

// BenchmarkMemory measures the heap a server host holds per connection:
// state=waiting, a completed connection waiting for accept(); state=half-open,
// a handshake whose final ACK never comes. impl=backlog is this package's
// listener ("linux" with room for every connection and SYN cookies off),
// impl=gvisor gVisor's own listening endpoint on the same kind of host.
// Each iteration holds memConns connections on a fresh host; B/conn is the
// growth of the live heap divided by memConns.
func BenchmarkMemory(b *testing.B) {
	for _, state := range []string{"waiting", "half-open"} {
		for _, impl := range []string{"gvisor", "backlog"} {
			b.Run(fmt.Sprintf("state=%s/impl=%s", state, impl), func(b *testing.B) {
				var total float64
				iters := 0
				for b.Loop() {
					total += measureMemory(b, impl, state == "waiting", memConns)
					iters++
				}
				b.ReportMetric(total/float64(iters), "B/conn")
			})
		}
	}
}

// measureMemory returns the live heap per connection that a server holds
// with count connections in the state asked for.
func measureMemory(b *testing.B, impl string, complete bool, count int) float64 {
	ms := newMemServer(b, impl, complete, count)
	defer ms.close()
	f := newForger(ms.n, ms.host, complete)
	before := heapAfterGC()
	for i := range count {
		f.syn(i)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !ms.holds(f, count) {
		if time.Now().After(deadline) {
			b.Fatalf("%s: the server never held %d connections (answered %d, network dropped %d)", impl, count, f.answeredCount(), ms.n.Dropped())
		}
		time.Sleep(time.Millisecond)
	}
	after := heapAfterGC()
	if !ms.holds(f, count) {
		b.Fatalf("%s: connections lost during the measurement", impl)
	}
	return (float64(after) - float64(before)) / float64(count)
}

// floodSYNs is how many forged SYNs each flood sends.
const floodSYNs = 20000

// BenchmarkFlood measures what a SYN flood costs a listener with the
// largest backlog its personality allows: floodSYNs SYNs from random
// addresses of 198.19.0.0/16 that never answer. personality=linux holds a
// full SYN queue and answers the rest with cookies; personality=windows holds
// at most its backlog and refuses the rest; impl=gvisor is gVisor's own
// listener (listen(4096); cookies once its queue is full). Reported: the SYNs
// the server took per second, the live heap it held when the flood ended
// (heap-KiB), the most goroutines above the idle count (goroutines), and
// for this package's listeners the most half-open connections held.
func BenchmarkFlood(b *testing.B) {
	for _, tc := range []struct{ impl, personality string }{
		{"gvisor", ""},
		{"backlog", "linux"},
		{"backlog", "windows"},
	} {
		name := "impl=" + tc.impl
		if tc.personality != "" {
			name = "personality=" + tc.personality + "/" + name
		}
		b.Run(name, func(b *testing.B) {
			var rate, heap, goroutines, halfOpen float64
			iters := 0
			for b.Loop() {
				r := measureFlood(b, tc.impl, tc.personality)
				rate += r.rate
				heap += r.heapKiB
				goroutines += float64(r.goroutines)
				halfOpen += float64(r.halfOpen)
				iters++
			}
			n := float64(iters)
			b.ReportMetric(rate/n, "SYN/s")
			b.ReportMetric(heap/n, "heap-KiB")
			b.ReportMetric(goroutines/n, "goroutines")
			if tc.impl == "backlog" {
				b.ReportMetric(halfOpen/n, "half-open")
			}
		})
	}
}

type floodMeasure struct {
	rate       float64
	heapKiB    float64
	goroutines int
	halfOpen   int
}

func measureFlood(b *testing.B, impl, personality string) floodMeasure {
	n := NewNetwork(nil)
	defer n.Close()
	h, err := n.NewHost()
	if err != nil {
		b.Fatal(err)
	}
	halfOpen := func() int { return 0 }
	if impl == "gvisor" {
		l := nativeListen(b, h, 80, 4096)
		defer l.Close()
	} else {
		l, err := h.Listen(context.Background(), "tcp4", ":80", &ListenConfig{Personality: backlog.MustLookup(personality)})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		halfOpen = l.HalfOpen
	}
	in := h.link.(*port).in
	before := heapAfterGC()
	idle := runtime.NumGoroutine()

	var res floodMeasure
	var maxG, maxHalf atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			maxG.Store(max(maxG.Load(), int64(runtime.NumGoroutine()-idle)))
			maxHalf.Store(max(maxHalf.Load(), int64(halfOpen())))
		}
	}()
	start := time.Now()
	flood(n, floodSYNs, n.queueLen/2) // the first host of a network is the server flood aims at
	for len(in) > 0 {
		runtime.Gosched()
	}
	elapsed := time.Since(start)
	close(stop)
	sampler.Wait()
	res.rate = floodSYNs / elapsed.Seconds()
	res.heapKiB = (float64(heapAfterGC()) - float64(before)) / 1024
	res.goroutines = int(maxG.Load())
	res.halfOpen = int(max(maxHalf.Load(), int64(halfOpen())))
	return res
}
