package netstack

import (
	"context"
	"net"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// benchBacklog is the backlog of every listener in the setup benchmark:
// Linux's somaxconn, which the "linux" personality grants in full.
const benchBacklog = 4096

// nativeListen listens on port of h with gVisor's own listening endpoint,
// which the gate does not govern: the baseline a user of gVisor would
// otherwise have. It returns the listener as gonet makes it.
func nativeListen(tb testing.TB, h *Host, port uint16, backlogN int) *gonet.TCPListener {
	tb.Helper()
	var wq waiter.Queue
	ep, terr := h.Stack().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		tb.Fatal(terr)
	}
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Port: port}); terr != nil {
		tb.Fatal(terr)
	}
	if terr := ep.Listen(backlogN); terr != nil {
		tb.Fatal(terr)
	}
	l := gonet.NewTCPListener(h.Stack(), &wq, ep)
	tb.Cleanup(func() { l.Close() })
	return l
}

// closeAll accepts every connection and closes it at once, until the
// listener closes; done is closed when it returns.
func closeAll(l net.Listener) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return done
}

// BenchmarkSetup measures connection setup on the in-process network: the
// same client host dials, with the same loop, a listener of this package
// (impl=backlog, the "linux" personality, every SYN and final ACK through
// the gate) and the baseline, gVisor's own listening endpoint on a host
// without a gate: its NIC sits on the network's link directly, so no packet
// of it passes through this package (newHostGated with gated false).
// impl=gvisor-ungated is a second listener of that host, which shows the
// method's own noise; impl=gvisor-gated gVisor's own listener on the gated
// host, which pays what the gate costs a packet it lets by;
// impl=gvisor-stateless gVisor's own listener on a third ungated host that
// answers every SYN with a cookie (TCPAlwaysUseSynCookies), keeping
// nothing of a handshake until its final ACK builds the connection: what
// gVisor spends when no endpoint is made at the SYN; impl=kernel
// the host kernel on loopback, for reference. Each connection is dialled,
// accepted and closed by the server, and reset by the client once it reads
// the end, so nothing lingers in TIME-WAIT.
//
// The candidate and the baseline take turns, setupChunk connections at a
// time, so that whatever else the machine does falls on both: ratio is the
// baseline's time over the candidate's, cpu-ratio the candidate's CPU per
// connection over the baseline's (the whole process's, client, network and
// server together, from getrusage), p99-ratio its connect() p99 over the
// baseline's. The rest is the candidate's alone: conn/s (and ns/op),
// connect() time percentiles (p50-us, p99-us, from Dial to its return) and
// cpu-us/conn.
func BenchmarkSetup(b *testing.B) {
	n, srv, cli := pair(b, nil)
	bare, err := n.newHost(false) // 198.18.0.3 and fdb1:ac6::3, as srv has two
	if err != nil {
		b.Fatal(err)
	}
	stateless, err := n.newHost(false)
	if err != nil {
		b.Fatal(err)
	}
	cookies := tcpip.TCPAlwaysUseSynCookies(true)
	if err := stateless.Stack().SetTransportProtocolOption(tcp.ProtocolNumber, &cookies); err != nil {
		b.Fatal(err)
	}
	gated := listen(b, srv, "linux", benchBacklog)
	native := nativeListen(b, bare, 80, benchBacklog)
	twin := nativeListen(b, bare, 81, benchBacklog)
	onGated := nativeListen(b, srv, 81, benchBacklog)
	noState := nativeListen(b, stateless, 80, benchBacklog)
	kl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	all := []net.Listener{gated, native, twin, onGated, noState, kl}
	var done []chan struct{}
	for _, l := range all {
		done = append(done, closeAll(l))
	}
	b.Cleanup(func() {
		for _, l := range all {
			l.Close()
		}
		for _, d := range done {
			<-d
		}
	})

	netstackDial := func(addr string) dialFunc {
		return func(ctx context.Context) (net.Conn, error) { return cli.Dial(ctx, "tcp", addr) }
	}
	var d net.Dialer
	kaddr := kl.Addr().String()
	on := func(h *Host, port string) string { return net.JoinHostPort(h.addrs[0].String(), port) }
	baseline := netstackDial(on(bare, "80"))
	cases := []struct {
		name string
		dial dialFunc
	}{
		{"impl=gvisor-ungated", netstackDial(on(bare, "81"))},
		{"impl=gvisor-gated", netstackDial(serverAddr + ":81")},
		{"impl=gvisor-stateless", netstackDial(on(stateless, "80"))},
		{"impl=backlog", netstackDial(serverAddr + ":80")},
		{"impl=kernel", func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp4", kaddr) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) { benchSetup(b, tc.dial, baseline) })
	}
}

type dialFunc func(context.Context) (net.Conn, error)

const (
	// setupClients is how many clients dial at once.
	setupClients = 4
	// setupChunk is how many connections the candidate and the baseline
	// make in turn.
	setupChunk = 128
)

// benchSetup makes b.N connections with cand and as many with base, in
// turns, and reports cand's throughput, connect-time percentiles and CPU
// per connection, and its throughput over base's.
func benchSetup(b *testing.B, cand, base dialFunc) {
	var candTime, baseTime, candCPU, baseCPU time.Duration
	var times, baseTimes []time.Duration
	var candHeap, baseHeap heapUse
	b.ResetTimer()
	for done, turn := 0, 0; done < b.N; turn++ {
		n := min(setupChunk, b.N-done)
		// Take turns at going first, so that neither always follows
		// the other.
		for i := range 2 {
			if (i+turn)%2 == 0 {
				d, cpu, ts, h := setupTurn(b, base, n)
				baseTime, baseCPU = baseTime+d, baseCPU+cpu
				baseTimes = append(baseTimes, ts...)
				baseHeap = baseHeap.add(h)
			} else {
				d, cpu, ts, h := setupTurn(b, cand, n)
				candTime, candCPU = candTime+d, candCPU+cpu
				times = append(times, ts...)
				candHeap = candHeap.add(h)
			}
		}
		done += n
	}
	b.StopTimer()
	slices.Sort(times)
	slices.Sort(baseTimes)
	b.ReportMetric(float64(candTime.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(float64(b.N)/candTime.Seconds(), "conn/s")
	b.ReportMetric(float64(candCPU.Microseconds())/float64(b.N), "cpu-us/conn")
	b.ReportMetric(baseTime.Seconds()/candTime.Seconds(), "ratio")
	if baseCPU > 0 {
		b.ReportMetric(candCPU.Seconds()/baseCPU.Seconds(), "cpu-ratio")
	}
	b.ReportMetric(float64(candHeap.objects)/float64(b.N), "allocs/conn")
	b.ReportMetric(float64(candHeap.bytes)/float64(b.N), "B/conn")
	if baseHeap.bytes > 0 {
		b.ReportMetric(float64(candHeap.bytes)/float64(baseHeap.bytes), "B-ratio")
	}
	if len(times) > 0 {
		b.ReportMetric(float64(percentile(times, 50).Nanoseconds())/1e3, "p50-us")
		b.ReportMetric(float64(percentile(times, 99).Nanoseconds())/1e3, "p99-us")
		b.ReportMetric(float64(percentile(times, 99))/float64(percentile(baseTimes, 99)), "p99-ratio")
	}
}

// heapUse is what the process allocated over a span: objects and bytes.
type heapUse struct{ objects, bytes uint64 }

func (h heapUse) add(o heapUse) heapUse { return heapUse{h.objects + o.objects, h.bytes + o.bytes} }

// heapNow reads the process's allocations so far, without stopping the
// world as runtime.ReadMemStats does.
func heapNow() heapUse {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return heapUse{s[0].Value.Uint64(), s[1].Value.Uint64()}
}

// setupTurn makes n connections with dial from setupClients clients at
// once, and returns how long they took, the CPU time the process spent
// meanwhile, each connect() time and what the process allocated: both
// ends of each connection, client and server, as the CPU time is.
func setupTurn(b *testing.B, dial dialFunc, n int) (elapsed, cpu time.Duration, times []time.Duration, heap heapUse) {
	var next atomic.Int64
	per := make([][]time.Duration, setupClients)
	var wg sync.WaitGroup
	cpu0, heap0 := cpuTime(), heapNow()
	start := time.Now()
	for i := range setupClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf [1]byte
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				c, err := dial(ctx)
				took := time.Since(t0)
				cancel()
				if err != nil {
					b.Error(err)
					return
				}
				per[i] = append(per[i], took)
				c.Read(buf[:]) // the server's close
				abortConn(c)
			}
		}()
	}
	wg.Wait()
	h := heapNow()
	return time.Since(start), cpuTime() - cpu0, slices.Concat(per...), heapUse{h.objects - heap0.objects, h.bytes - heap0.bytes}
}

// abortConn closes c with a reset.
func abortConn(c net.Conn) {
	switch c := c.(type) {
	case *Conn:
		c.Abort()
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	default:
		c.Close()
	}
}

// percentile returns the p-th percentile of sorted, by the nearest-rank
// method.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// BenchmarkSetupByHost is BenchmarkSetup's backlog case laid out for a CPU
// profile: each host's goroutines carry a pprof label ("host"), and so do
// the goroutines of each side, so that
//
//	go test -run '^$' -bench SetupByHost -benchtime 20s -cpuprofile cpu.out ./netstack
//	go tool pprof -tags cpu.out
//
// splits the process's CPU by who spent it: srv, the gated host of this
// package's listener, against bare, the ungated host of gVisor's; srvapp
// and bareapp the accepting goroutines; cliA and cliB the client hosts
// (one per side, so that neither's work lands on the other's), appA and
// appB the dialling goroutines. -tagfocus host=^srv$ then profiles the
// gated host alone. The metrics are BenchmarkSetup's.
func BenchmarkSetupByHost(b *testing.B) {
	n := NewNetwork(nil)
	b.Cleanup(func() { n.Close() })
	host := func(label string, gated bool) (h *Host) {
		pprof.Do(context.Background(), pprof.Labels("host", label), func(context.Context) {
			var err error
			if h, err = n.newHost(gated); err != nil {
				b.Fatal(err)
			}
		})
		return h
	}
	srv, cliA := host("srv", true), host("cliA", true)    // 198.18.0.1, .2
	bare, cliB := host("bare", false), host("cliB", true) // .3, .4
	var gated *Listener
	var native net.Listener
	var done []chan struct{}
	pprof.Do(context.Background(), pprof.Labels("host", "srvapp"), func(context.Context) {
		gated = listen(b, srv, "linux", benchBacklog)
		done = append(done, closeAll(gated))
	})
	pprof.Do(context.Background(), pprof.Labels("host", "bareapp"), func(context.Context) {
		native = nativeListen(b, bare, 80, benchBacklog)
		done = append(done, closeAll(native))
	})
	b.Cleanup(func() {
		gated.Close()
		native.Close()
		for _, d := range done {
			<-d
		}
	})
	dial := func(cli *Host, addr, label string) dialFunc {
		return func(ctx context.Context) (net.Conn, error) {
			// The dialling goroutine, its read and its reset.
			pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("host", label)))
			return cli.Dial(ctx, "tcp", addr)
		}
	}
	benchSetup(b, dial(cliA, serverAddr+":80", "appA"), dial(cliB, "198.18.0.3:80", "appB"))
}
