package kernel_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// BenchmarkShaper is the connection rate on loopback in a namespace of its
// own, one client at a time (connect, accept, close), for a plain listener
// and the same under the SYN shaper, side by side: the difference per
// connection is the shaper's cost per SYN. "shape" is a plain listener
// under kernel.Shape, to compare with "unshaped"; "at-syn" is
// kernel.ListenConfig{Personality, Emulation: EmulateAtSYN}, to compare
// with "after-accept", the same emulation without the shaper. The personality (linux with a backlog
// of 4096) never turns a client away, so every SYN is passed.
//
//	go test ./kernel -run '^$' -bench Shaper -benchtime 3000x -count 3
func BenchmarkShaper(b *testing.B) {
	netnstest.RequireRoot(b)
	if _, err := exec.LookPath("iptables"); err != nil {
		b.Skip("needs iptables")
	}
	ns := netnstest.New(b)
	p := backlog.MustLookup("linux")
	for _, clients := range []int{1, 8} {
		for _, mode := range []string{"unshaped", "shape", "after-accept", "at-syn"} {
			b.Run(fmt.Sprintf("clients=%d/listener=%s", clients, mode), func(b *testing.B) {
				var (
					ln  net.Listener
					sh  *kernel.Shaper
					err error
				)
				netnstest.In(b, ns, func() {
					switch mode {
					case "at-syn":
						lc := kernel.ListenConfig{Backlog: 4096, Personality: p, Emulation: kernel.EmulateAtSYN}
						ln, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
					default:
						lc := kernel.ListenConfig{Backlog: 4096}
						ln, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
						if err == nil && mode == "shape" {
							sh, err = kernel.Shape(context.Background(), kernel.ShapeConfig{
								Addr: netip.MustParseAddrPort(ln.Addr().String()), Personality: p, Backlog: 4096,
							})
						}
					}
				})
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				if sh != nil {
					defer sh.Close()
				}
				accepted := make(chan struct{})
				go func() {
					defer close(accepted)
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
				addr := ln.Addr().String()
				var next atomic.Int64
				b.ResetTimer()
				var wg sync.WaitGroup
				for range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						netnstest.In(b, ns, func() {
							for next.Add(1) <= int64(b.N) {
								c, err := net.Dial("tcp4", addr)
								if err != nil {
									b.Error(err)
									return
								}
								c.Close()
							}
						})
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
				ln.Close()
				<-accepted
			})
		}
	}
}
