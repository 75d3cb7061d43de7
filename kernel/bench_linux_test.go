package kernel_test

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
	"github.com/backlog-dev/backlog/metrics"
)

// BenchmarkAccept measures accept throughput, in connections per second,
// of this package's listener against net.Listen on loopback, with the same
// client loop: plain, with Stats polled every 10 ms (a hundred times the
// once-a-second a dashboard needs), with the Prometheus collector of package
// metrics scraped every 10 ms, and with Linux's own rules emulated in user
// space; impl=net.Listen is net.Listen against a second net.Listen, which
// shows the method's own noise. Each connection is dialled, accepted, closed
// by the server, and closed with a reset by the client once it sees the
// end, so nothing lingers in TIME_WAIT.
//
// The candidate and its net.Listen baseline take turns, pairedChunk
// connections at a time, so that whatever else the machine does falls on
// both: ratio is the baseline's time over the candidate's, conn/s (and
// ns/op) and cpu-us/conn (CPU time of the whole process, client and server,
// from getrusage) are the candidate's alone.
func BenchmarkAccept(b *testing.B) {
	linux := backlog.Linux(backlog.DefaultLinuxConfig())
	cases := []struct {
		name    string
		lc      *kernel.ListenConfig // nil: net.Listen
		poll    bool
		metrics bool
	}{
		{name: "impl=net.Listen"},
		{name: "impl=kernel", lc: &kernel.ListenConfig{}},
		{name: "impl=kernel+stats", lc: &kernel.ListenConfig{}, poll: true},
		{name: "impl=kernel+metrics", lc: &kernel.ListenConfig{}, metrics: true},
		{name: "impl=kernel+personality", lc: &kernel.ListenConfig{Backlog: 4096, Personality: linux, Emulation: kernel.EmulateAfterAccept}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			base, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var ln net.Listener
			if tc.lc == nil {
				ln, err = net.Listen("tcp4", "127.0.0.1:0")
			} else {
				ln, err = tc.lc.Listen(b.Context(), "tcp4", "127.0.0.1:0")
			}
			if err != nil {
				b.Fatal(err)
			}
			var poll func()
			switch {
			case tc.poll:
				kl := ln.(*kernel.Listener)
				poll = func() { kl.Stats() }
			case tc.metrics:
				c := metrics.NewCollector()
				c.Add(ln.(*kernel.Listener), metrics.Labels{Listener: ln.Addr().String(), Personality: "linux", Transport: "kernel"})
				reg := prometheus.NewPedanticRegistry()
				reg.MustRegister(c)
				poll = func() {
					if _, err := reg.Gather(); err != nil {
						b.Error(err)
					}
				}
			}
			benchAccept(b, ln, base, poll)
		})
	}
}

// BenchmarkAcceptQueueWait measures what reading each accepted
// connection's time in the queue (one getsockopt TCP_INFO per Accept)
// costs: the listener as it is against one with ListenConfig.SkipQueueWait,
// taking turns as in BenchmarkAccept, so ratio is the throughput with the
// measure over the throughput without. impl=skip is the same against
// itself: the method's noise.
func BenchmarkAcceptQueueWait(b *testing.B) {
	for _, tc := range []struct {
		name string
		cand kernel.ListenConfig
	}{
		{"impl=skip", kernel.ListenConfig{SkipQueueWait: true}},
		{"impl=queuewait", kernel.ListenConfig{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			base, err := (&kernel.ListenConfig{SkipQueueWait: true}).Listen(b.Context(), "tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			cand, err := tc.cand.Listen(b.Context(), "tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			benchAccept(b, cand, base, nil)
			if s := cand.Stats(); s.Observed(backlog.StatQueueWait) != !tc.cand.SkipQueueWait {
				b.Errorf("queue wait observed %v with SkipQueueWait %v", s.Observed(backlog.StatQueueWait), tc.cand.SkipQueueWait)
			}
		})
	}
}

// pairedChunk is how many connections the candidate and the baseline take
// in turn.
const pairedChunk = 128

// benchAccept dials b.N connections to cand and as many to base, in turns,
// and reports cand's throughput and CPU per connection, and its throughput
// over base's. poll, if not nil, runs every 10 ms meanwhile.
func benchAccept(b *testing.B, cand, base net.Listener, poll func()) {
	var wg sync.WaitGroup
	for _, ln := range []net.Listener{cand, base} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	stop := make(chan struct{})
	if poll != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					poll()
				case <-stop:
					return
				}
			}
		}()
	}
	var candTime, baseTime, candCPU time.Duration
	b.ResetTimer()
	for done, turn := 0, 0; done < b.N; turn++ {
		n := min(pairedChunk, b.N-done)
		// Take turns at going first, so that neither always follows
		// the other.
		for i := range 2 {
			if (i+turn)%2 == 0 {
				d, _ := dialTurn(b, base.Addr().String(), n)
				baseTime += d
			} else {
				d, cpu := dialTurn(b, cand.Addr().String(), n)
				candTime, candCPU = candTime+d, candCPU+cpu
			}
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(candTime.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(float64(b.N)/candTime.Seconds(), "conn/s")
	b.ReportMetric(float64(candCPU.Microseconds())/float64(b.N), "cpu-us/conn")
	b.ReportMetric(baseTime.Seconds()/candTime.Seconds(), "ratio")
	close(stop)
	cand.Close()
	base.Close()
	wg.Wait()
}

// dialTurn makes n connections to addr from four clients at once and
// returns how long they took and the CPU time the process spent meanwhile.
func dialTurn(b *testing.B, addr string, n int) (elapsed, cpu time.Duration) {
	const clients = 4
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf [1]byte
			for next.Add(1) <= int64(n) {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					b.Error(err)
					return
				}
				c.Read(buf[:])
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}()
	}
	wg.Wait()
	return time.Since(start), cpuTime() - cpu0
}

// cpuTime returns the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStats measures one read-back of a listener's queue: what a
// once-a-second poll costs.
func BenchmarkStats(b *testing.B) {
	ln := listen(b, &kernel.ListenConfig{Backlog: 128}, "tcp4", "127.0.0.1:0")
	b.ReportAllocs()
	for b.Loop() {
		if s := ln.Stats(); s.Backlog != 128 {
			b.Fatalf("Backlog %d", s.Backlog)
		}
	}
}

// BenchmarkSockets measures one listing of the host's listening sockets
// with their holders: what `backlog top` pays each refresh.
func BenchmarkSockets(b *testing.B) {
	for b.Loop() {
		if _, err := kernel.Sockets(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadCounters measures one reading of the namespace counters.
func BenchmarkReadCounters(b *testing.B) {
	for b.Loop() {
		if _, err := kernel.ReadCounters(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueueWaitRead measures the read Accept adds per connection on
// Linux (getsockopt TCP_INFO on the accepted socket), to set against the
// CPU time a connection costs in BenchmarkAccept (cpu-us/conn).
func BenchmarkQueueWaitRead(b *testing.B) {
	ln := listen(b, &kernel.ListenConfig{}, "tcp4", "127.0.0.1:0")
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := kernel.QueueWaitOf(sc); !ok {
			b.Fatal("no TCP_INFO")
		}
	}
}
