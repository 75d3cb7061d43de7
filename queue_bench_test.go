package backlog

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// The baseline for the queue benchmarks is a buffered channel, the
// smallest thing a Go program would otherwise use as a bounded queue: a
// send that does not block stands for Offer, a receive that does not block
// for Accept. Every case is a sub-benchmark named op=…/impl=queue or
// impl=chan, so that benchstat -col /impl compares them; ns/op is per
// operation, or per sequence for the multi-step ops.

// benchCap is the capacity of the queue and of the channel.
const benchCap = 4096

func newBenchQueue(b *testing.B) *Queue[int] {
	q, err := NewQueue[int](MustLookup("linux"), benchCap)
	if err != nil {
		b.Fatal(err)
	}
	return q
}

func BenchmarkQueue(b *testing.B) {
	b.Run("op=offer/impl=queue", func(b *testing.B) {
		q := newBenchQueue(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if q.Len() == q.Capacity() {
				b.StopTimer()
				for _, ok := q.Accept(); ok; _, ok = q.Accept() {
				}
				b.StartTimer()
			}
			q.Offer(i)
		}
	})
	b.Run("op=offer/impl=chan", func(b *testing.B) {
		ch := make(chan int, benchCap)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if len(ch) == cap(ch) {
				b.StopTimer()
				for len(ch) > 0 {
					<-ch
				}
				b.StartTimer()
			}
			select {
			case ch <- i:
			default:
			}
		}
	})
	b.Run("op=accept/impl=queue", func(b *testing.B) {
		q := newBenchQueue(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if q.Len() == 0 {
				b.StopTimer()
				for j := range benchCap {
					q.Offer(i + j)
				}
				b.StartTimer()
			}
			q.Accept()
		}
	})
	b.Run("op=accept/impl=chan", func(b *testing.B) {
		ch := make(chan int, benchCap)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if len(ch) == 0 {
				b.StopTimer()
				for j := range benchCap {
					ch <- i + j
				}
				b.StartTimer()
			}
			select {
			case <-ch:
			default:
			}
		}
	})
	b.Run("op=offer+accept/impl=queue", func(b *testing.B) {
		q := newBenchQueue(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			q.Offer(i)
			q.Accept()
		}
	})
	b.Run("op=offer+accept/impl=chan", func(b *testing.B) {
		ch := make(chan int, benchCap)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			select {
			case ch <- i:
			default:
			}
			<-ch
		}
	})
	// The path a netstack listener takes: SYN, final ACK, accept().
	b.Run("op=syn+established+accept/impl=queue", func(b *testing.B) {
		q := newBenchQueue(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			q.SYN(i)
			q.Established(i)
			q.Accept()
		}
	})
	b.Run("op=stats/impl=queue", func(b *testing.B) {
		q := newBenchQueue(b)
		b.ReportAllocs()
		for b.Loop() {
			q.Stats()
		}
	})
}

// BenchmarkQueueParallel runs Offer and Accept from many goroutines at once
// on one queue: GOMAXPROCS×p goroutines for each goroutines=… case (p = 1
// and 8).
func BenchmarkQueueParallel(b *testing.B) {
	for _, p := range []int{1, 8} {
		b.Run(fmt.Sprintf("op=offer+accept/goroutines=%dxGOMAXPROCS/impl=queue", p), func(b *testing.B) {
			q := newBenchQueue(b)
			b.ReportAllocs()
			b.SetParallelism(p)
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					q.Offer(i)
					q.Accept()
				}
			})
		})
		b.Run(fmt.Sprintf("op=offer+accept/goroutines=%dxGOMAXPROCS/impl=chan", p), func(b *testing.B) {
			ch := make(chan int, benchCap)
			b.ReportAllocs()
			b.SetParallelism(p)
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					select {
					case ch <- i:
					default:
					}
					select {
					case <-ch:
					default:
					}
				}
			})
		})
		b.Run(fmt.Sprintf("op=syn+established+accept/goroutines=%dxGOMAXPROCS/impl=queue", p), func(b *testing.B) {
			q := newBenchQueue(b)
			b.ReportAllocs()
			b.SetParallelism(p)
			var id atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				// Each goroutine its own values: no two hold the same
				// half-open entry.
				base := int(id.Add(1)) << 32
				for i := 0; pb.Next(); i++ {
					q.SYN(base + i)
					q.Established(base + i)
					q.Accept()
				}
			})
		})
	}
}
