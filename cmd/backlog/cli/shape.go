package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

type shapeFlags struct {
	port        int
	addr        netip.Addr
	personality []backlog.Personality
	backlog     int
	interval    time.Duration
}

func shapeCommand() (*flags, runFunc) {
	fl := newFlags("shape", "--port PORT --personality NAME [flags]", `
Puts a listening socket of this host, whoever holds it (nginx, a Java
service, a Python script), under another system's listen() rules at the
SYN, until interrupted (SIGINT or SIGTERM, exit status 130): each SYN for
the port is decided from that listener's real queue and passed on, dropped
(the client retransmits) or refused with a reset. Needs Linux, root
(CAP_NET_ADMIN) and iptables. Everything it installs is removed when it
stops, and a killed shaper's rules let SYNs through until the next one
removes them.`)
	var f shapeFlags
	fl.add("port", "PORT", "the listener's port (required)", "", intValue{&f.port, 1, 65535, "a port"})
	fl.add("addr", "IP", "shape SYNs to this address only", "every address the listener has", ipValue{&f.addr})
	fl.personalityFlag(&f.personality, "the system whose rules to follow (required)", "", true)
	fl.add("backlog", "N", "the backlog the emulated system is given; 0: the listener's own stored backlog", "0", intValue{&f.backlog, 0, 1 << 30, "a backlog"})
	fl.durationFlag(&f.interval, "interval", "how often to show the queue; 0: never", time.Second, 0, time.Hour)
	return fl, func(ctx context.Context, e *env, args []string) error {
		if err := fl.onlyFlags(args); err != nil {
			return err
		}
		switch {
		case !fl.given("port"):
			return usagef("shape", "--port is required: the listening socket's port, 1 to 65535")
		case len(f.personality) == 0:
			return usagef("shape", "--personality is required: one of %s", strings.Join(backlog.Names(), ", "))
		}
		return runShape(ctx, e, f)
	}
}

// ipValue is an IPv4 or IPv6 address.
type ipValue struct{ p *netip.Addr }

func (v ipValue) String() string { return v.p.String() }
func (v ipValue) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return errors.New("give an IPv4 or IPv6 address, such as 127.0.0.1")
	}
	*v.p = a
	return nil
}

func runShape(ctx context.Context, e *env, f shapeFlags) error {
	ip := netip.IPv6Unspecified()
	if f.addr.IsValid() {
		ip = f.addr
	}
	p := f.personality[0]
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
	width := outputWidth(e.stdout)
	para(e.stdout, width, "", fmt.Sprintf("shaping %v (%s, its listen backlog %d)", sock.Addr, holder, sock.Backlog))
	para(e.stdout, width, "", fmt.Sprintf("as %s, listen(%d): backlog %d, %d can wait; when full: %s",
		p, st.Requested, st.Backlog, st.Capacity, p.FullVerdict()))
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
			printShapeLine(e, width, sh.Stats())
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

func printShapeLine(e *env, width int, s kernel.ShaperStats) {
	para(e.stdout, width, "", fmt.Sprintf("queued %d/%d, half-open %d; SYNs %d: passed %d, refused %d, dropped %d; listener's queue %d",
		s.Len, s.Capacity, s.HalfOpen, s.SYNs, s.Passed, s.Refused, s.Dropped, s.KernelLen))
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
