package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
	"github.com/backlog-dev/backlog/internal/transport"
	"github.com/backlog-dev/backlog/metrics"
	"github.com/backlog-dev/backlog/netstack"
)

const serveUsage = `Usage: backlog serve [flags]

Runs a real server with the backlog you choose and shows its queue while it
runs, until interrupted (SIGINT or SIGTERM).

  --listen HOST:PORT   where to listen (default 127.0.0.1:8080)
  --transport T        kernel (default): this host's kernel; netstack: a
                       user-space stack attached to a TUN device (--tun, --addr)
  --tun NAME           the TUN device for netstack (created if missing)
  --addr CIDR          the user-space host's address on the TUN device, such
                       as 198.18.0.2/15; HOST in --listen is then that address
                       and the kernel's side of the device takes the first
                       other address of the prefix
  --backlog N          the backlog passed to listen() (default 128)
  --personality NAME   the system whose rules to follow (default: this
                       host's; on the kernel transport another is emulated)
  --accept PACE        none, max (default), or a rate such as 10/s
  --accept-after D     the first accept waits D
  --relisten D:N       call listen(N) again D after the start (repeatable)
  --handler H          http (default): a page describing the queue; echo
  --metrics ADDR       serve Prometheus metrics at http://ADDR/metrics
  --interval D         how often to show the queue (default 1s)
`

type serveFlags struct {
	listen, transport, tun, addr string
	backlog                      int
	personality                  string
	accept                       string
	acceptAfter                  time.Duration
	relisten                     relistenFlag
	handler                      string
	metrics                      string
	interval                     time.Duration
}

func runServe(ctx context.Context, e *env, args []string) error {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "")
	fs.StringVar(&f.transport, "transport", transport.Kernel, "")
	fs.StringVar(&f.tun, "tun", "", "")
	fs.StringVar(&f.addr, "addr", "", "")
	fs.IntVar(&f.backlog, "backlog", 128, "")
	fs.StringVar(&f.personality, "personality", "", "")
	fs.StringVar(&f.accept, "accept", "max", "")
	fs.DurationVar(&f.acceptAfter, "accept-after", 0, "")
	fs.Var(&f.relisten, "relisten", "")
	fs.StringVar(&f.handler, "handler", "http", "")
	fs.StringVar(&f.metrics, "metrics", "", "")
	fs.DurationVar(&f.interval, "interval", time.Second, "")
	rest, err := parseFlags(e, fs, serveUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	if len(rest) > 0 {
		return usagef("serve", "unexpected argument %q; serve takes only flags", rest[0])
	}
	policy, err := parseAccept("serve", f.accept)
	if err != nil {
		return err
	}
	policy.After = f.acceptAfter
	switch {
	case f.handler != "http" && f.handler != "echo":
		return usagef("serve", "unknown handler %q; valid: http, echo", f.handler)
	case f.transport != transport.Kernel && f.transport != transport.Netstack:
		return usagef("serve", "unknown transport %q; valid: kernel, netstack", f.transport)
	case f.transport == transport.Netstack && (f.tun == "" || f.addr == ""):
		return usagef("serve", "--transport netstack needs --tun NAME and --addr CIDR (the user-space host's address)")
	case f.transport == transport.Kernel && (f.tun != "" || f.addr != ""):
		return usagef("serve", "--tun and --addr go with --transport netstack")
	case f.interval <= 0:
		return usagef("serve", "--interval must be more than 0")
	}
	if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return usagef("serve", "--listen %q: give HOST:PORT, such as 127.0.0.1:8080", f.listen)
	}
	p := transport.Host()
	if f.personality != "" {
		ps, err := resolve("serve", []string{f.personality})
		if err != nil {
			return err
		}
		if len(ps) != 1 {
			return usagef("serve", "--personality takes one system, not all")
		}
		p = ps[0]
	}

	s := &server{e: e, f: f, p: p, policy: policy}
	if err := s.listen(ctx); err != nil {
		return err
	}
	defer s.close()
	return s.run(ctx)
}

// server is one backlog serve.
type server struct {
	e      *env
	f      serveFlags
	p      backlog.Personality
	policy lab.AcceptPolicy

	srv     *transport.Server
	l       backlog.Listener
	paced   net.Listener
	note    string // how the listener follows its personality
	metrics *http.Server
	http    *http.Server
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *server) listen(ctx context.Context) error {
	cfg := transport.Config{Transport: s.f.transport, Personality: s.p, Backlog: s.f.backlog, Network: "tcp", Address: s.f.listen}
	if s.f.transport == transport.Netstack {
		prefix, err := netip.ParsePrefix(s.f.addr)
		if err != nil || !prefix.Addr().Is4() {
			return usagef("serve", "--addr %q: give an IPv4 address with its prefix, such as 198.18.0.2/15", s.f.addr)
		}
		kernelSide, ok := otherAddr(prefix)
		if !ok {
			return usagef("serve", "--addr %q: the prefix has no room for the kernel's side", s.f.addr)
		}
		host, _, _ := net.SplitHostPort(s.f.listen)
		if host != "" && host != prefix.Addr().String() && host != "0.0.0.0" {
			return usagef("serve", "--listen %q: with --tun, HOST is the --addr address, %s", s.f.listen, prefix.Addr())
		}
		kernelPrefix := netip.PrefixFrom(kernelSide, prefix.Bits())
		cfg.TUN = &netstack.TUNConfig{Name: s.f.tun, Addrs: []netip.Addr{prefix.Addr()}, KernelPrefix: kernelPrefix}
		s.note = fmt.Sprintf("user space, on %s; the kernel's side is %v", s.f.tun, kernelPrefix)
	}
	srv, err := transport.Open(ctx, cfg)
	if err != nil {
		return err
	}
	if srv.Emulated {
		s.note = "emulated in front of the kernel's queue"
	}
	s.srv, s.l = srv, srv.Listener
	s.paced = lab.Paced(s.l, s.policy)
	return nil
}

// otherAddr returns the first address of the prefix that is neither the
// network's own nor the one given.
func otherAddr(p netip.Prefix) (netip.Addr, bool) {
	a := p.Masked().Addr().Next()
	if a == p.Addr() {
		a = a.Next()
	}
	return a, p.Contains(a) && p.Contains(a.Next())
}

func (s *server) run(ctx context.Context) error {
	st := s.l.Stats()
	fmt.Fprintf(s.e.stdout, "serving %s on %s (%s, %s): listen(%d) stored %d, %d can wait; accepting: %s\n",
		s.f.handler, s.l.Addr(), s.f.transport, s.p, st.Requested, st.Backlog, st.Capacity, s.policy)
	if s.note != "" {
		fmt.Fprintf(s.e.stdout, "%s: %s\n", s.p, s.note)
	}
	if s.f.metrics != "" {
		if err := s.serveMetrics(); err != nil {
			return err
		}
	}
	s.conns = map[net.Conn]struct{}{}
	s.wg.Add(1)
	if s.f.handler == "http" {
		s.http = &http.Server{Handler: http.HandlerFunc(s.page), ReadHeaderTimeout: 10 * time.Second}
		go func() { defer s.wg.Done(); s.http.Serve(s.paced) }()
	} else {
		go func() { defer s.wg.Done(); s.echoLoop() }()
	}

	start := time.Now()
	live := isTerminal(s.e.stderr)
	tick := time.NewTicker(s.f.interval)
	defer tick.Stop()
	prev := s.l.Stats()
	steps := s.f.relisten
	var relisten <-chan time.Time
	if len(steps) > 0 {
		t := time.NewTimer(steps[0].After)
		defer t.Stop()
		relisten = t.C
	}
	for {
		select {
		case <-relisten:
			step := steps[0]
			steps = steps[1:]
			relisten = nil
			if len(steps) > 0 {
				t := time.NewTimer(time.Until(start.Add(steps[0].After)))
				defer t.Stop()
				relisten = t.C
			}
			err := s.l.SetBacklog(step.Backlog)
			st := s.l.Stats()
			if live {
				fmt.Fprint(s.e.stderr, "\r\x1b[2K")
			}
			if err != nil {
				fmt.Fprintf(s.e.stdout, "after %s, listen(%d) again failed: %v\n", step.After, step.Backlog, err)
			} else {
				fmt.Fprintf(s.e.stdout, "after %s, listen(%d) again: backlog %d, %d can wait\n", step.After, step.Backlog, st.Backlog, st.Capacity)
			}
			continue
		case <-ctx.Done():
			if live {
				fmt.Fprintln(s.e.stderr)
			}
			final := s.l.Stats()
			fmt.Fprintf(s.e.stdout, "stopped after %s: %d accepted, %d refused, %d ignored, %d reset, %d dropped\n",
				time.Since(start).Round(time.Second), final.Accepted, final.Refused, final.Ignored, final.Reset, final.ListenDrops)
			return nil
		case <-tick.C:
		}
		now := s.l.Stats()
		line := fmt.Sprintf("queue %d/%d, half-open %d; accepted %d (+%.0f/s), refused %d, ignored %d, reset %d, dropped %d",
			now.Len, now.Capacity, now.HalfOpen, now.Accepted, float64(now.Accepted-prev.Accepted)/s.f.interval.Seconds(),
			now.Refused, now.Ignored, now.Reset, now.ListenDrops)
		prev = now
		if live {
			fmt.Fprintf(s.e.stderr, "\r\x1b[2K%s", line)
		} else {
			fmt.Fprintln(s.e.stderr, line)
		}
	}
}

func (s *server) serveMetrics() error {
	col := metrics.NewCollector()
	col.Add(s.l, metrics.Labels{Listener: s.l.Addr().String(), Personality: s.p.String(), Transport: s.f.transport})
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	ln, err := net.Listen("tcp", s.f.metrics)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(s.e.stdout, "metrics on http://%s/metrics\n", ln.Addr())
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.metrics.Serve(ln) }()
	return nil
}

// echoLoop accepts at the chosen pace and echoes each connection on its own
// goroutine, until the listener closes.
func (s *server) echoLoop() {
	for {
		c, err := s.paced.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			io.Copy(c, c)
		}()
	}
}

func (s *server) page(w http.ResponseWriter, _ *http.Request) {
	st := s.l.Stats()
	fmt.Fprintf(w, "backlog serve: %s on %s (%s)\nlisten(%d): backlog %d, %d can wait; %d waiting now\naccepted %d, refused %d, ignored %d, reset %d, dropped %d\n",
		s.p, s.l.Addr(), s.f.transport, st.Requested, st.Backlog, st.Capacity, st.Len,
		st.Accepted, st.Refused, st.Ignored, st.Reset, st.ListenDrops)
}

// close stops everything and waits for every goroutine.
func (s *server) close() {
	if s.http != nil {
		s.http.Close() // the listener and every connection
	}
	if s.paced != nil {
		s.paced.Close()
	}
	if s.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.metrics.Shutdown(ctx)
		cancel()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.srv != nil {
		s.srv.Close()
	}
}
