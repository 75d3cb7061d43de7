package cli

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/backlog-dev/backlog/metrics"
)

type exporterFlags struct {
	listen    string
	allNetns  bool
	noHolders bool
	once      bool
}

func exporterCommand() (*flags, runFunc) {
	fl := newFlags("exporter", "[flags]", `
Serves Prometheus metrics for every listening TCP socket of this host,
whoever holds it, at http://ADDR/metrics, until interrupted: each socket's
queue length, backlog, capacity and drops (sk_drops), each listening
address's SYN queue and, for an SO_REUSEPORT group, how unevenly its
members are loaded; the namespace's TcpExt counters; build information and
the Go and process collectors. Each scrape reads the kernel afresh
(sock_diag). Linux only.

What it can read depends on its privileges: every socket's figures need
none; the processes of other users need CAP_SYS_PTRACE and
CAP_DAC_READ_SEARCH; --all-netns needs CAP_SYS_ADMIN (setns) and, for
namespaces that only a process holds, CAP_SYS_PTRACE.
Interrupted, it stops serving and exits with status 130.`)
	var f exporterFlags
	fl.addrFlag(&f.listen, "listen", "ADDR", "where to serve the metrics", ":9469", ":9469", true)
	fl.switchFlag(&f.allNetns, "all-netns", "every network namespace of the host (each container's), labelled netns; without it, the exporter's own")
	fl.switchFlag(&f.noHolders, "no-holders", "do not scan /proc for the process holding each socket (the process label is then empty)")
	fl.switchFlag(&f.once, "once", "write one scrape to stdout in the Prometheus text format and exit, instead of serving")
	return fl, func(ctx context.Context, e *env, args []string) error {
		if err := fl.onlyFlags(args); err != nil {
			return err
		}
		return runExporter(ctx, e, f)
	}
}

func runExporter(ctx context.Context, e *env, f exporterFlags) error {
	x := newExporter(metrics.HostConfig{AllNamespaces: f.allNetns, SkipHolders: f.noHolders})
	if f.once {
		return x.write(e.stdout)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", x)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "backlog exporter: every listening TCP socket of this host; metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(e.stdout, "backlog exporter: metrics on http://%s/metrics (namespaces: %s)\n", ln.Addr(), map[bool]string{true: "all", false: "own"}[f.allNetns])
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	<-errc
	fmt.Fprintln(e.stdout, "backlog exporter: stopped")
	return errInterrupted
}

// exporter is what `backlog exporter` serves: the host's sockets,
// written straight (metrics.HostCollector.WriteText), then the Go,
// process and build-information collectors through a registry.
type exporter struct {
	host *metrics.HostCollector
	reg  *prometheus.Registry
}

func newExporter(cfg metrics.HostConfig) *exporter {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		buildInfo(),
	)
	return &exporter{host: metrics.NewHostCollector(cfg), reg: reg}
}

// write writes one scrape in the text format.
func (x *exporter) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := x.host.WriteText(bw); err != nil {
		return err
	}
	mfs, gerr := x.reg.Gather()
	enc := expfmt.NewEncoder(bw, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if gerr != nil {
		return fmt.Errorf("some metrics could not be gathered: %s", strings.ReplaceAll(gerr.Error(), "\n", "; "))
	}
	return nil
}

// ServeHTTP serves a scrape, compressed when the scraper accepts gzip, as
// Prometheus does.
func (x *exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	var out io.Writer = w
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		defer gz.Close()
		out = gz
	}
	if err := x.write(out); err != nil {
		// Headers may be gone already; the scraper sees a cut-off body,
		// which it rejects.
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// buildInfo is backlog_exporter_build_info: the module version and VCS
// revision the binary was built from, and its Go version.
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "unknown", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = bi.Main.Version, bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "backlog_exporter_build_info",
		Help:        "1, with the version and VCS revision the exporter was built from and its Go version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	}, func() float64 { return 1 })
}

// errInterrupted ends a command that was interrupted (SIGINT, SIGTERM)
// after it said what it had done: the command exits with status 130.
var errInterrupted = errors.New("interrupted")
