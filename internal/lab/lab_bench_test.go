//go:build unix

package lab

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

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
	ps := backlog.All()
	var wall, longest, cpu time.Duration
	iters := 0
	for b.Loop() {
		cpu0 := cpuTime()
		start := time.Now()
		results := make([]Result, len(ps))
		errs := make([]error, len(ps))
		var wg sync.WaitGroup
		for i, p := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = Run(context.Background(), Config{
					Personality: p, Transport: Netstack, Backlog: 5,
					Arrival: 2 * time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 3 * time.Second,
				})
			}()
		}
		wg.Wait()
		wall += time.Since(start)
		cpu += cpuTime() - cpu0
		for i, err := range errs {
			if err != nil {
				b.Fatalf("%s: %v", ps[i].Name, err)
			}
			longest = max(longest, time.Duration(results[i].DurationMS*float64(time.Millisecond)))
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
