package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
)

// BenchmarkOverload is issue 14's benchmark: on this host's kernel over
// loopback, clients arrive open loop at 1.5 and 3 times what the
// application serves (8 workers, 20 ms a request: 400/s) and give up after
// 1 s; Go's net.Listen and our listener with CoDel, FIFO and newest
// first, take turns in the same run against the same load generator, one
// 3 s run each per iteration. Per policy it reports goodput per second and
// as a share of the capacity, the share of work wasted on clients gone,
// the p99 of the answered, and CPU per answer (the whole process's:
// clients, loopback and server). Run it with -benchtime=Nx for N rounds:
//
//	go test -run '^$' -bench BenchmarkOverload -benchtime 5x ./internal/lab
//
// `backlog lab --overload --rate 1.5x,3x --rounds 5` runs the same
// experiment with every policy and prints its tables.
func BenchmarkOverload(b *testing.B) {
	for _, load := range []float64{1.5, 3} {
		b.Run(fmt.Sprintf("%gx", load), func(b *testing.B) {
			cfg := OverloadConfig{
				Transport: transport.Kernel, Duration: 3 * time.Second, GiveUp: time.Second,
				Service: 20 * time.Millisecond, Workers: 8, Rounds: b.N,
			}
			cfg.Rate = load * cfg.Capacity()
			o := backlog.Overload{Target: 50 * time.Millisecond}
			for _, name := range []string{PolicyNetListen, PolicyCoDel, PolicyLIFO} {
				p, err := ParsePolicy(name, o, cfg.Capacity())
				if err != nil {
					b.Fatal(err)
				}
				cfg.Policies = append(cfg.Policies, p)
			}
			b.ResetTimer()
			res, err := RunOverload(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			for _, s := range res.Summary {
				name := strings.ReplaceAll(s.Policy, ".", "")
				b.ReportMetric(s.GoodputPerSec.Median, name+"-goodput/s")
				b.ReportMetric(s.GoodputOfCapacity.Median, name+"-of-capacity")
				if s.WastedFraction != nil {
					b.ReportMetric(100*s.WastedFraction.Median, name+"-wasted-%")
				}
				if s.P99MS != nil {
					b.ReportMetric(s.P99MS.Median, name+"-p99-ms")
				}
				if s.CPUPerAnswerUS != nil {
					b.ReportMetric(s.CPUPerAnswerUS.Median, name+"-cpu-µs/answer")
				}
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
