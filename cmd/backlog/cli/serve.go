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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
	"github.com/backlog-dev/backlog/internal/transport"
	"github.com/backlog-dev/backlog/kernel"
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
  --reuseport N        N listeners on the address with SO_REUSEPORT, each
                       with its own accept loop (default 1, no SO_REUSEPORT;
                       kernel transport): the kernel spreads connections over
                       them, and the view shows each one's queue and how
                       unevenly they are loaded
  --metrics ADDR       serve Prometheus metrics at http://ADDR/metrics
  --interval D         how often to show the queue (default 1s)

The view shows the queue, the half-open handshakes, the counters and how
long accepted connections waited in the queue (p50 and p99, rounded up to
a bucket of the histogram); what the transport cannot see shows as n/a.
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
	reuseport                    int
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
	fs.IntVar(&f.reuseport, "reuseport", 1, "")
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
	case f.reuseport < 1 || f.reuseport > maxShards:
		return usagef("serve", "--reuseport %d: give from 1 to %d listeners", f.reuseport, maxShards)
	case f.reuseport > 1 && f.transport != transport.Kernel:
		return usagef("serve", "--reuseport %d needs --transport kernel: netstack has no SO_REUSEPORT", f.reuseport)
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

// maxShards bounds --reuseport.
const maxShards = 64

// server is one backlog serve.
type server struct {
	e      *env
	f      serveFlags
	p      backlog.Personality
	policy lab.AcceptPolicy

	// One of each per shard: the opened listener, and the same paced.
	srvs    []*transport.Server
	ls      []backlog.Listener
	paced   []net.Listener
	note    string // how the listener follows its personality
	metrics *http.Server
	http    *http.Server
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *server) listen(ctx context.Context) error {
	cfg := transport.Config{Transport: s.f.transport, Personality: s.p, Backlog: s.f.backlog, Network: "tcp", Address: s.f.listen,
		ReusePort: s.f.reuseport > 1}
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
	for i := range s.f.reuseport {
		srv, err := transport.Open(ctx, cfg)
		if err != nil {
			return err
		}
		if srv.Emulated {
			s.note = emulationNote(srv)
		}
		if i == 0 {
			// The other shards take the address the first one got.
			cfg.Address = srv.Listener.Addr().String()
		}
		s.srvs, s.ls = append(s.srvs, srv), append(s.ls, srv.Listener)
		s.paced = append(s.paced, lab.Paced(srv.Listener, s.policy))
	}
	if len(s.ls) > 1 {
		s.note += fmt.Sprintf("; %d listeners with SO_REUSEPORT", len(s.ls))
		s.note = strings.TrimPrefix(s.note, "; ")
	}
	return nil
}

// shardStats is what the shards report together: their Stats added up,
// the queue of each, and the socket drops (sk_drops) of kernel listeners.
type shardStats struct {
	backlog.Stats
	queues []int
	// drops is the kernel sockets' sk_drops, and haveDrops whether the
	// listeners are kernel sockets.
	drops     uint64
	haveDrops bool
	fulls     []float64
}

func (s *server) stats() shardStats {
	var out shardStats
	for i, l := range s.ls {
		var st backlog.Stats
		if k, ok := l.(interface{ KernelStats() (kernel.Stats, error) }); ok {
			ks, _ := k.KernelStats()
			st, out.drops, out.haveDrops = ks.Stats, out.drops+ks.Drops, true
		} else {
			st = l.Stats()
		}
		out.queues = append(out.queues, st.Len)
		out.fulls = append(out.fulls, fullness(st.Len, st.Capacity))
		if i == 0 {
			out.Stats = st
			continue
		}
		out.Stats = out.Add(st)
	}
	return out
}

// value formats one value of Stats, or n/a where it was not observed.
func value(st backlog.Stats, which backlog.Stat) string {
	v, ok := st.Get(which)
	if !ok {
		return "n/a"
	}
	return strconv.FormatInt(int64(v), 10)
}

// waitText is the view's queue-wait summary: "waited p50 <= 5ms, p99 <=
// 1s", or n/a.
func waitText(st backlog.Stats) string {
	if !st.Observed(backlog.StatQueueWait) {
		return "waited n/a"
	}
	h := st.QueueWait
	if h.Count == 0 {
		return "waited -"
	}
	q := func(p float64) string {
		if d, ok := h.Quantile(p); ok {
			return "<= " + d.String()
		}
		return "> " + backlog.QueueWaitBounds()[len(backlog.QueueWaitBounds())-1].String()
	}
	return fmt.Sprintf("waited p50 %s, p99 %s", q(0.5), q(0.99))
}

// line is the view's line: the queue of each shard, the counters, the
// wait.
func (st shardStats) line(prev shardStats, interval time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "queue %d/%d", st.Len, st.Capacity)
	if len(st.queues) > 1 {
		qs := make([]string, len(st.queues))
		for i, q := range st.queues {
			qs[i] = strconv.Itoa(q)
		}
		lo, hi := slices.Min(st.fulls), slices.Max(st.fulls)
		fmt.Fprintf(&b, " [%s], imbalance %.0f%%", strings.Join(qs, " "), 100*(hi-lo))
	}
	fmt.Fprintf(&b, ", half-open %s; accepted %d (+%.0f/s), refused %s, ignored %s, reset %s, ",
		value(st.Stats, backlog.StatHalfOpen), st.Accepted, float64(st.Accepted-prev.Accepted)/interval.Seconds(),
		value(st.Stats, backlog.StatRefused), value(st.Stats, backlog.StatIgnored), value(st.Stats, backlog.StatReset))
	b.WriteString(st.dropText())
	b.WriteString("; " + waitText(st.Stats))
	return b.String()
}

// dropText says what was dropped: the queue's own ListenDrops where it
// keeps them, and a kernel socket's sk_drops.
func (st shardStats) dropText() string {
	var parts []string
	if st.Observed(backlog.StatListenDrops) {
		parts = append(parts, "dropped "+strconv.FormatUint(st.ListenDrops, 10))
	}
	if st.haveDrops {
		parts = append(parts, "socket drops "+strconv.FormatUint(st.drops, 10))
	}
	if len(parts) == 0 {
		return "dropped n/a"
	}
	return strings.Join(parts, ", ")
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
	st := s.ls[0].Stats()
	fmt.Fprintf(s.e.stdout, "serving %s on %s (%s, %s): listen(%d) stored %d, %d can wait; accepting: %s\n",
		s.f.handler, s.ls[0].Addr(), s.f.transport, s.p, st.Requested, st.Backlog, st.Capacity, s.policy)
	if s.note != "" {
		fmt.Fprintf(s.e.stdout, "%s: %s\n", s.p, s.note)
	}
	if s.f.metrics != "" {
		if err := s.serveMetrics(); err != nil {
			return err
		}
	}
	s.conns = map[net.Conn]struct{}{}
	if s.f.handler == "http" {
		s.http = &http.Server{Handler: http.HandlerFunc(s.page), ReadHeaderTimeout: 10 * time.Second}
	}
	for _, pl := range s.paced {
		s.wg.Add(1)
		if s.http != nil {
			go func() { defer s.wg.Done(); s.http.Serve(pl) }()
		} else {
			go func() { defer s.wg.Done(); s.echoLoop(pl) }()
		}
	}

	start := time.Now()
	live := isTerminal(s.e.stderr)
	tick := time.NewTicker(s.f.interval)
	defer tick.Stop()
	prev := s.stats()
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
			// Every shard listens again.
			var err error
			for _, l := range s.ls {
				if e := l.SetBacklog(step.Backlog); e != nil && err == nil {
					err = e
				}
			}
			st := s.stats()
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
			final := s.stats()
			fmt.Fprintf(s.e.stdout, "stopped after %s: %d accepted, %s refused, %s ignored, %s reset, %s; %s\n",
				time.Since(start).Round(time.Second), final.Accepted, value(final.Stats, backlog.StatRefused),
				value(final.Stats, backlog.StatIgnored), value(final.Stats, backlog.StatReset), final.dropText(), waitText(final.Stats))
			return nil
		case <-tick.C:
		}
		now := s.stats()
		line := now.line(prev, s.f.interval)
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
	for _, l := range s.ls {
		// Shards share these labels; the collector tells them apart by
		// inode.
		col.Add(l, metrics.Labels{Listener: l.Addr().String(), Personality: s.p.String(), Transport: s.f.transport})
	}
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

// echoLoop accepts from pl at the chosen pace and echoes each connection
// on its own goroutine, until the listener closes.
func (s *server) echoLoop(pl net.Listener) {
	for {
		c, err := pl.Accept()
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
	st := s.stats()
	fmt.Fprintf(w, "backlog serve: %s on %s (%s)\nlisten(%d): backlog %d, %d can wait; %d waiting now\naccepted %d, refused %s, ignored %s, reset %s, %s\n%s\n",
		s.p, s.ls[0].Addr(), s.f.transport, st.Requested, st.Backlog, st.Capacity, st.Len,
		st.Accepted, value(st.Stats, backlog.StatRefused), value(st.Stats, backlog.StatIgnored), value(st.Stats, backlog.StatReset),
		st.dropText(), waitText(st.Stats))
}

// close stops everything and waits for every goroutine.
func (s *server) close() {
	if s.http != nil {
		s.http.Close() // the listener and every connection
	}
	for _, pl := range s.paced {
		pl.Close()
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
	for _, srv := range s.srvs {
		srv.Close()
	}
}

// emulationNote says how an emulated personality is followed on the
// kernel: at the SYN, or after accept() and why.
func emulationNote(srv *transport.Server) string {
	note := "emulated in front of the kernel's queue"
	if kl, ok := srv.Listener.(*kernel.Listener); ok {
		switch mode, why := kl.Emulation(); {
		case mode == kernel.EmulateAtSYN:
			note = "followed at the SYN: every SYN is decided before the kernel answers it"
		case why != "":
			note += ", after accept(), not at the SYN: " + why
		}
	}
	return note
}
