package backlog

import (
	"testing"
)

// The baseline for the queue benchmarks is a buffered channel, the
// smallest thing a Go program would otherwise use as a bounded queue.

func BenchmarkQueueOfferAccept(b *testing.B) {
	q, _ := NewQueue[int](MustLookup("linux"), 128)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.Offer(i)
		q.Accept()
	}
}

func BenchmarkQueueSYNEstablishedAccept(b *testing.B) {
	q, _ := NewQueue[int](MustLookup("linux"), 128)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.SYN(i)
		q.Established(i)
		q.Accept()
	}
}

func BenchmarkChannelBaseline(b *testing.B) {
	ch := make(chan int, 129)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		select {
		case ch <- i:
		default:
		}
		<-ch
	}
}

func BenchmarkQueueOfferAcceptParallel(b *testing.B) {
	q, _ := NewQueue[int](MustLookup("linux"), 4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			q.Offer(i)
			q.Accept()
			i++
		}
	})
}

func BenchmarkChannelBaselineParallel(b *testing.B) {
	ch := make(chan int, 4097)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			select {
			case ch <- i:
			default:
			}
			select {
			case <-ch:
			default:
			}
			i++
		}
	})
}
