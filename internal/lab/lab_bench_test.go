//go:build unix

package lab

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/transport"

	"github.com/backlog-dev/backlog"
)

// BenchmarkLabAll runs what `backlog lab --personality all` runs with its
// defaults: every personality at once, on the in-process network, listen(5),
// three times the capacity in clients 2 ms apart, each given 3 s to connect,
// and an application that never accepts. Reported: the wall time of the
// whole (s/lab), which cannot be less than the 3 s a timed-out client
// waits, the longest single run (max-run-s) and the CPU time the process
// spent (cpu-s/lab).
func BenchmarkLabAll(b *testing.B) {
	var cfgs []Config
	for _, p := range backlog.All() {
		cfgs = append(cfgs, Config{
			Personality: p, Transport: transport.Netstack, Backlog: 5,
			Arrival: 2 * time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 3 * time.Second,
		})
	}
	var wall, longest, cpu time.Duration
	iters := 0
	for b.Loop() {
		cpu0 := cpuTime()
		start := time.Now()
		results, err := RunAll(context.Background(), cfgs)
		wall += time.Since(start)
		cpu += cpuTime() - cpu0
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			longest = max(longest, time.Duration(r.DurationMS*float64(time.Millisecond)))
		}
		iters++
	}
	n := float64(iters)
	b.ReportMetric(wall.Seconds()/n, "s/lab")
	b.ReportMetric(longest.Seconds(), "max-run-s")
	b.ReportMetric(cpu.Seconds()/n, "cpu-s/lab")
}

// cpuTime returns the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
