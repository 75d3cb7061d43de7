package cli

import (
	"io"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
	"github.com/backlog-dev/backlog/metrics"
)

// BenchmarkExporterScrape measures one scrape of the exporter (gathering
// every series and writing them in the text format, as /metrics does
// without compression) of a namespace holding 1,000, 10,000 and 30,000
// listening sockets, against `ss -Hlnt` and `ss -Hlntp` in the same
// namespace, taking turns: ms/scrape with the holders looked up,
// ms/scrape-noholders without (--no-holders), ms/ss and ms/ss-p; the
// ratios are the exporter's time over ss's. The listeners are held by
// helper processes, so the holder scan reads their descriptor tables as
// it would a server's.
func BenchmarkExporterScrape(b *testing.B) {
	netnstest.RequireRoot(b)
	for _, n := range []int{1000, 10000, 30000} {
		b.Run("listeners="+strconv.Itoa(n), func(b *testing.B) {
			ns := netnstest.New(b)
			netnstest.Run(b, "ip", "-n", ns, "addr", "add", "198.18.0.1/32", "dev", "lo")
			netnstest.HoldListeners(b, ns, "198.18.0.1", 20000, n, 128)
			nsn, err := kernel.OpenNamespace(ns)
			if err != nil {
				b.Fatal(err)
			}
			scrape := func(cfg metrics.HostConfig) time.Duration {
				cfg.Namespaces = []kernel.Namespace{nsn}
				t0 := time.Now()
				if err := newExporter(cfg).write(io.Discard); err != nil {
					b.Fatal(err)
				}
				return time.Since(t0)
			}
			ss := func(flags string) time.Duration {
				var d time.Duration
				netnstest.In(b, ns, func() {
					t0 := time.Now()
					if err := exec.Command("ss", flags).Run(); err != nil {
						b.Fatal(err)
					}
					d = time.Since(t0)
				})
				return d
			}
			var withHolders, noHolders, plain, withP time.Duration
			b.ResetTimer()
			for i := range b.N {
				// Take turns at going first.
				if i%2 == 0 {
					withHolders += scrape(metrics.HostConfig{})
					plain += ss("-Hlnt")
				} else {
					plain += ss("-Hlnt")
					withHolders += scrape(metrics.HostConfig{})
				}
				noHolders += scrape(metrics.HostConfig{SkipHolders: true})
				withP += ss("-Hlntp")
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(ms(withHolders), "ms/scrape")
			b.ReportMetric(ms(noHolders), "ms/scrape-noholders")
			b.ReportMetric(ms(plain), "ms/ss")
			b.ReportMetric(ms(withP), "ms/ss-p")
			b.ReportMetric(float64(noHolders)/float64(plain), "noholders/ss")
			b.ReportMetric(float64(withHolders)/float64(withP), "scrape/ss-p")
			b.ReportMetric(0, "ns/op")
		})
	}
}
