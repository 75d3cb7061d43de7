package kernel_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// BenchmarkAccept measures accept throughput, in connections per second,
// of net.Listen and of this package's listener with the same client loop in
// the same run: plain, with Stats polled every 10 ms (a hundred times the
// once-a-second a dashboard needs), and with Linux's own rules emulated in
// user space. Each connection is dialled, accepted, closed by the server,
// and closed with a reset by the client once it sees the end, so nothing
// lingers in TIME_WAIT. Compare the conn/s of the sub-benchmarks, over
// several -count runs.
func BenchmarkAccept(b *testing.B) {
	linux := backlog.Linux(backlog.DefaultLinuxConfig())
	cases := []struct {
		name string
		lc   *kernel.ListenConfig // nil: net.Listen
		poll bool
	}{
		{name: "net.Listen"},
		{name: "kernel", lc: &kernel.ListenConfig{}},
		{name: "kernel+stats", lc: &kernel.ListenConfig{}, poll: true},
		{name: "kernel+personality", lc: &kernel.ListenConfig{Backlog: 4096, Personality: &linux}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var ln net.Listener
			var err error
			if tc.lc == nil {
				ln, err = net.Listen("tcp4", "127.0.0.1:0")
			} else {
				ln, err = tc.lc.Listen(b.Context(), "tcp4", "127.0.0.1:0")
			}
			if err != nil {
				b.Fatal(err)
			}
			var poll func()
			if tc.poll {
				kl := ln.(*kernel.Listener)
				poll = func() { kl.Stats() }
			}
			benchAccept(b, ln, poll)
		})
	}
}

func benchAccept(b *testing.B, ln net.Listener, poll func()) {
	var wg sync.WaitGroup
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
	const clients = 4
	addr := ln.Addr().String()
	var next atomic.Int64
	var cwg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range clients {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			var buf [1]byte
			for next.Add(1) <= int64(b.N) {
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
	cwg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "conn/s")
	close(stop)
	ln.Close()
	wg.Wait()
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
