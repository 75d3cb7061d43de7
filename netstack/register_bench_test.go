package netstack

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkListenerRegistration opens n listeners on one host, each on a
// port of its own, and closes them: the cost per listener stays the same
// however many there are, since the gate replaces one port's entry, not
// the whole table, to add or remove one.
func BenchmarkListenerRegistration(b *testing.B) {
	for _, n := range []int{1000, 5000, 10000} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				net := NewNetwork(nil)
				h, err := net.NewHost()
				if err != nil {
					b.Fatal(err)
				}
				ls := make([]*Listener, n)
				for i := range ls {
					if ls[i], err = h.Listen(ctx, "tcp4", fmt.Sprintf(":%d", 1024+i), nil); err != nil {
						b.Fatal(err)
					}
				}
				for _, l := range ls {
					l.Close()
				}
				net.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/listener")
		})
	}
}
