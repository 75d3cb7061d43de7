package cli

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

const shapeUsage = `Usage: backlog shape --port PORT --personality NAME [flags]

Puts a listening socket of this host, whoever holds it (nginx, a Java
service, a Python script), under another system's listen() rules at the
SYN, until interrupted (SIGINT or SIGTERM): each SYN for the port is
decided from that listener's real queue and passed on, dropped (the client
retransmits) or refused with a reset. Needs Linux, root (CAP_NET_ADMIN) and
iptables. Everything it installs is removed when it stops, and a killed
shaper's rules let SYNs through until the next one removes them.

  --port PORT          the listener's port (required)
  --addr IP            shape SYNs to this address only (default: every
                       address the listener has)
  --personality NAME   the system whose rules to follow (required)
  --backlog N          the backlog the emulated system is given (default:
                       the listener's own stored backlog)
  --interval D         how often to show the queue (default 1s; 0: never)
`

type shapeFlags struct {
	port        int
	addr        string
	personality string
	backlog     int
	interval    time.Duration
}

func runShape(ctx context.Context, e *env, args []string) error {
	var f shapeFlags
	fs := flag.NewFlagSet("shape", flag.ContinueOnError)
	fs.IntVar(&f.port, "port", 0, "")
	fs.StringVar(&f.addr, "addr", "", "")
	fs.StringVar(&f.personality, "personality", "", "")
	fs.IntVar(&f.backlog, "backlog", 0, "")
	fs.DurationVar(&f.interval, "interval", time.Second, "")
	rest, err := parseFlags(e, fs, shapeUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	switch {
	case len(rest) > 0:
		return usagef("shape", "unexpected argument %q; shape takes only flags", rest[0])
	case f.port < 1 || f.port > 65535:
		return usagef("shape", "--port %d: give the listener's port, 1 to 65535", f.port)
	case f.personality == "":
		return usagef("shape", "--personality is required; valid: %s", personalityNames())
	case f.interval < 0:
		return usagef("shape", "--interval %v: give 0 (never) or more", f.interval)
	case f.backlog < 0:
		return usagef("shape", "--backlog %d: give 0 (the listener's own) or more", f.backlog)
	}
	ip := netip.IPv6Unspecified()
	if f.addr != "" {
		if ip, err = netip.ParseAddr(f.addr); err != nil {
			return usagef("shape", "--addr %q: give an IPv4 or IPv6 address, such as 127.0.0.1", f.addr)
		}
	}
	ps, err := resolve("shape", []string{f.personality})
	if err != nil {
		return err
	}
	if len(ps) != 1 {
		return usagef("shape", "--personality takes one system, not all")
	}
	p := ps[0]
	sh, err := kernel.Shape(ctx, kernel.ShapeConfig{Addr: netip.AddrPortFrom(ip, uint16(f.port)), Personality: p, Backlog: f.backlog})
	if err != nil {
		return fmt.Errorf("shape: %w", err)
	}
	start := time.Now()
	st := sh.Stats()
	sock := sh.Socket()
	holder := "held by another user's process"
	if sock.PID > 0 {
		holder = fmt.Sprintf("%s[%d]", sock.Process, sock.PID)
	}
	fmt.Fprintf(e.stdout, "shaping %v (%s, its listen backlog %d) as %s, listen(%d): backlog %d, %d can wait; when full: %s\n",
		sock.Addr, holder, sock.Backlog, p, st.Requested, st.Backlog, st.Capacity, p.FullVerdict())
	if st.StaleRules > 0 {
		fmt.Fprintf(e.stdout, "removed %d rules left by shapers that died\n", st.StaleRules)
	}
	var tick <-chan time.Time
	if f.interval > 0 {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			printShapeLine(e, sh.Stats())
		case <-ctx.Done():
			err := sh.Close()
			printShapeSummary(e, sh.Stats(), time.Since(start))
			if err != nil {
				return fmt.Errorf("shape: removing its rules: %w", err)
			}
			return errInterrupted
		}
	}
}

func personalityNames() string {
	names := backlog.Names()
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

func printShapeLine(e *env, s kernel.ShaperStats) {
	fmt.Fprintf(e.stdout, "queued %d/%d  half-open %d  SYNs %d: passed %d, refused %d, dropped %d  listener's queue %d\n",
		s.Len, s.Capacity, s.HalfOpen, s.SYNs, s.Passed, s.Refused, s.Dropped, s.KernelLen)
}

func printShapeSummary(e *env, s kernel.ShaperStats, d time.Duration) {
	fmt.Fprintf(e.stdout, "stopped after %s; rules removed\n", d.Round(time.Millisecond))
	fmt.Fprintf(e.stdout, "  SYNs         %d\n", s.SYNs)
	fmt.Fprintf(e.stdout, "  passed       %d\n", s.Passed)
	fmt.Fprintf(e.stdout, "  refused      %d   answered with a reset at the SYN\n", s.Refused)
	fmt.Fprintf(e.stdout, "  dropped      %d   ignored: the client retransmits\n", s.Dropped)
	fmt.Fprintf(e.stdout, "  queued       %d   completed into the personality's queue\n", s.Queued)
	fmt.Fprintf(e.stdout, "  reset        %d   at the final ACK\n", s.Reset)
	if s.Unreadable > 0 {
		fmt.Fprintf(e.stdout, "  unreadable   %d   passed undecided\n", s.Unreadable)
	}
}
