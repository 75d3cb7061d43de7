package cli

import (
	"context"
	"errors"
	"fmt"
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

type serveFlags struct {
	listen, transport, tun string
	addr                   netip.Prefix
	backlog                request
	personality            []backlog.Personality
	accept                 lab.AcceptPolicy
	relisten               []lab.Relisten
	handler                string
	metrics                string
	interval               time.Duration
	reuseport              int
	readHeader, read       time.Duration
	write, idle            time.Duration
	keepCaps               bool
}

func serveCommand() (*flags, runFunc) {
	fl := newFlags("serve", "[flags]", `
Runs a real server with the backlog you choose and shows its queue while it
runs, until interrupted (SIGINT or SIGTERM, exit status 130): the queue,
the half-open handshakes, the counters and how long accepted connections
waited in the queue (p50 and p99, rounded up to a bucket of the histogram);
what the transport cannot see shows as n/a. Run as root (for --tun), it
drops every capability once its device is open and its sockets are bound.`)
	var f serveFlags
	fl.addrFlag(&f.listen, "listen", "HOST:PORT", "where to listen; with --tun, HOST is the --addr address", "", "127.0.0.1:8080", true)
	fl.defs[len(fl.defs)-1].def = "127.0.0.1:8080, with --tun the --addr address and port 8080"
	fl.choiceFlag(&f.transport, "transport", "T", "kernel: this host's kernel; netstack: a user-space stack attached to a TUN device (--tun, --addr)", transport.Kernel, transport.Kernel, transport.Netstack)
	fl.add("tun", "NAME", "the TUN device for netstack, created if missing", "", tunValue{&f.tun})
	fl.add("addr", "CIDR", "the user-space host's address on the TUN device, such as 198.18.0.2/15; the kernel's side of the device takes the first other address of the prefix", "", prefixValue{&f.addr})
	fl.backlogFlag(&f.backlog, "backlog", "the backlog passed to listen(): an integer, SOMAXCONN or SOMAXCONN_HINT(N)", 128)
	fl.personalityFlag(&f.personality, "the system whose rules to follow; on the kernel transport another system than the host's is emulated", "this host's", true)
	fl.acceptFlags(&f.accept, "max")
	fl.relistenFlag(&f.relisten)
	fl.choiceFlag(&f.handler, "handler", "H", "http: a page describing the queue; echo: echoes what it reads", "http", "http", "echo")
	fl.intFlag(&f.reuseport, "reuseport", "N", "N listeners on the address with SO_REUSEPORT, each with its own accept loop (kernel transport); 1 is one listener without it", 1, 1, maxShards, "a number of listeners")
	fl.addrFlag(&f.metrics, "metrics", "ADDR", "serve Prometheus metrics at http://ADDR/metrics", "", "127.0.0.1:9090", true)
	fl.durationFlag(&f.interval, "interval", "how often to show the queue", time.Second, 10*time.Millisecond, time.Hour)
	fl.durationFlag(&f.readHeader, "read-header-timeout", "http: how long a client may take to send a request's header", 10*time.Second, time.Millisecond, time.Hour)
	fl.durationFlag(&f.read, "read-timeout", "http: how long a client may take to send a whole request", 30*time.Second, time.Millisecond, time.Hour)
	fl.durationFlag(&f.write, "write-timeout", "http: how long writing a response may take", 30*time.Second, time.Millisecond, time.Hour)
	fl.durationFlag(&f.idle, "idle-timeout", "how long a connection may stay idle (http: between requests; echo: between reads) before it is closed", time.Minute, time.Millisecond, 24*time.Hour)
	fl.switchFlag(&f.keepCaps, "keep-capabilities", "do not drop capabilities once set up")
	return fl, func(ctx context.Context, e *env, args []string) error {
		if err := fl.onlyFlags(args); err != nil {
			return err
		}
		switch {
		case f.transport == transport.Netstack && (f.tun == "" || !f.addr.IsValid()):
			return usagef("serve", "--transport netstack needs --tun NAME and --addr CIDR (the user-space host's address)")
		case f.transport == transport.Kernel && (f.tun != "" || f.addr.IsValid()):
			return usagef("serve", "--tun and --addr go with --transport netstack")
		case f.reuseport > 1 && f.transport != transport.Kernel:
			return fl.invalid("reuseport", "needs --transport kernel: netstack has no SO_REUSEPORT")
		}
		if f.listen == "" {
			f.listen = "127.0.0.1:8080"
			if f.transport == transport.Netstack {
				f.listen = net.JoinHostPort(f.addr.Addr().String(), "8080")
			}
		} else if f.transport == transport.Netstack {
			host, _, _ := net.SplitHostPort(f.listen)
			if host != "" && host != f.addr.Addr().String() && host != "0.0.0.0" {
				return fl.invalid("listen", fmt.Sprintf("with --tun, HOST is the --addr address, %s (or leave it out)", f.addr.Addr()))
			}
		}
		p := transport.Host()
		if len(f.personality) == 1 {
			p = f.personality[0]
		}
		s := &server{e: e, f: f, p: p, policy: f.accept}
		if err := s.listen(ctx); err != nil {
			s.close()
			return err
		}
		defer s.close()
		s.privileges = dropPrivileges(f.keepCaps)
		return s.run(ctx)
	}
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
	srvs  []*transport.Server
	ls    []backlog.Listener
	paced []net.Listener
	note  string // how the listener follows its personality
	// emulated is set when the personality is emulated in front of the
	// kernel's queue.
	emulated   bool
	emulation  lab.EmulationMode
	privileges string // what became of the process's capabilities
	metricsLn  net.Listener
	metrics    *http.Server
	http       *http.Server
	wg         sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *server) listen(ctx context.Context) error {
	cfg := transport.Config{Transport: s.f.transport, Personality: s.p, Backlog: s.f.backlog.value(s.p), Network: "tcp", Address: s.f.listen,
		ReusePort: s.f.reuseport > 1}
	if s.f.transport == transport.Netstack {
		prefix := s.f.addr
		kernelSide, ok := otherAddr(prefix)
		if !ok {
			return usagef("serve", "--addr %q: the prefix has no room for the kernel's side", prefix)
		}
		kernelPrefix := netip.PrefixFrom(kernelSide, prefix.Bits())
		cfg.TUN = &netstack.TUNConfig{Name: s.f.tun, Addrs: []netip.Addr{prefix.Addr()}, KernelPrefix: kernelPrefix}
		s.note = fmt.Sprintf("user space, on %s; the kernel's side is %v", s.f.tun, kernelPrefix)
	}
	if s.f.metrics != "" {
		// Bound first, so that a busy port fails before anything is
		// served, and named for what it is.
		ln, err := net.Listen("tcp", s.f.metrics)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w", s.f.metrics, err)
		}
		s.metricsLn = ln
	}
	for i := range s.f.reuseport {
		srv, err := transport.Open(ctx, cfg)
		if err != nil {
			if s.f.transport == transport.Netstack {
				return fmt.Errorf("--tun %s: %w", s.f.tun, err)
			}
			return fmt.Errorf("--listen %s: %w", s.f.listen, err)
		}
		if srv.Emulated {
			s.emulated = true
			s.emulation = emulationHow(srv)
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
	w, width := s.e.stdout, outputWidth(s.e.stdout)
	st := s.ls[0].Stats()
	para(w, width, "", fmt.Sprintf("serving %s on %s (%s, %s)", s.f.handler, s.ls[0].Addr(), s.f.transport, s.p))
	para(w, width, "", fmt.Sprintf("listen(%d) stored %d, %d can wait; accepting: %s", st.Requested, st.Backlog, st.Capacity, s.policy))
	if s.note != "" {
		para(w, width, "", fmt.Sprintf("%s: %s", s.p, s.note))
	}
	if s.emulated {
		para(w, width, "", emulationNote(s.p.String(), s.emulation))
	}
	if s.privileges != "" {
		para(w, width, "", s.privileges)
	}
	if s.metricsLn != nil {
		s.serveMetrics()
	}
	s.conns = map[net.Conn]struct{}{}
	if s.f.handler == "http" {
		s.http = &http.Server{Handler: http.HandlerFunc(s.page),
			ReadHeaderTimeout: s.f.readHeader, ReadTimeout: s.f.read, WriteTimeout: s.f.write, IdleTimeout: s.f.idle}
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
	drawn := 0 // lines of the live view on screen
	clear := func() {
		if live && drawn > 0 {
			fmt.Fprintf(s.e.stderr, "\r\x1b[2K%s", strings.Repeat("\x1b[1A\x1b[2K", drawn-1))
			drawn = 0
		}
	}
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
			clear()
			if err != nil {
				fmt.Fprintf(w, "after %s, listen(%d) again failed: %v\n", step.After, step.Backlog, err)
			} else {
				fmt.Fprintf(w, "after %s, listen(%d) again: backlog %d, %d can wait\n", step.After, step.Backlog, st.Backlog, st.Capacity)
			}
			continue
		case <-ctx.Done():
			clear()
			final := s.stats()
			para(w, width, "", fmt.Sprintf("stopped after %s: %d accepted, %s refused, %s ignored, %s reset, %s; %s",
				time.Since(start).Round(time.Second), final.Accepted, value(final.Stats, backlog.StatRefused),
				value(final.Stats, backlog.StatIgnored), value(final.Stats, backlog.StatReset), final.dropText(), waitText(final.Stats)))
			return errInterrupted
		case <-tick.C:
		}
		now := s.stats()
		line := now.line(prev, s.f.interval)
		prev = now
		if !live {
			fmt.Fprintln(s.e.stderr, line)
			continue
		}
		// Redrawn in place, wrapped a column short of the terminal's
		// width so that no line wraps on its own.
		clear()
		lines := wrap(line, outputWidth(s.e.stderr)-1)
		fmt.Fprint(s.e.stderr, strings.Join(lines, "\n"))
		drawn = len(lines)
	}
}

func (s *server) serveMetrics() {
	col := metrics.NewCollector()
	for _, l := range s.ls {
		// Shards share these labels; the collector tells them apart by
		// inode.
		col.Add(l, metrics.Labels{Listener: l.Addr().String(), Personality: s.p.String(), Transport: s.f.transport})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: s.f.readHeader, ReadTimeout: s.f.read, WriteTimeout: s.f.write, IdleTimeout: s.f.idle}
	fmt.Fprintf(s.e.stdout, "metrics on http://%s/metrics\n", s.metricsLn.Addr())
	ln := s.metricsLn
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.metrics.Serve(ln) }()
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
			s.echo(c)
		}()
	}
}

// echo writes back what c sends until it closes or stays idle longer than
// --idle-timeout.
func (s *server) echo(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		c.SetReadDeadline(time.Now().Add(s.f.idle))
		n, err := c.Read(buf)
		if n > 0 {
			c.SetWriteDeadline(time.Now().Add(s.f.write))
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
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
	} else if s.metricsLn != nil {
		s.metricsLn.Close()
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

// emulationHow says how an emulated personality is followed on the
// kernel: at the SYN, or after accept() and why.
func emulationHow(srv *transport.Server) lab.EmulationMode {
	if kl, ok := srv.Listener.(*kernel.Listener); ok {
		mode, why := kl.Emulation()
		return lab.EmulationMode{AtSYN: mode == kernel.EmulateAtSYN, Why: why}
	}
	return lab.EmulationMode{}
}
