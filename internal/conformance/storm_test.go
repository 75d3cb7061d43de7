// Package conformance runs the same behaviour checks against every transport:
// the in-process netstack, this host's kernel, and the kernel with a
// personality emulated in front of it.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
	"github.com/backlog-dev/backlog/kernel"
)

// A server is a listener and the way a client reaches it.
type server struct {
	l backlog.Listener
	// dial connects a client from a local port of its own, so that no two
	// clients of a storm share an address.
	dial func(ctx context.Context, port int) (net.Conn, error)
	// shutdown ends what the server needs besides the listener.
	shutdown func()
	// unseen bounds the clients that believe they are connected while
	// the server holds nothing for them in its queue: their final ACK was
	// dropped on a full queue (the handshake stays half-open and the
	// SYN-ACK is sent again) or their cookie ACK was.
	unseen func() uint64
}

// A tr is one transport the suite runs against.
type tr struct {
	name string
	cfg  transport.Config
}

func netstackTransport() tr { return tr{"netstack", transport.Config{Transport: transport.Netstack}} }

// kernelTransport listens on loopback; emulate puts the personality in
// front of the kernel's queue even where it is the host's own, otherwise the
// kernel's own rules apply to the host's personality.
func kernelTransport(emulate bool) tr {
	if emulate {
		return tr{"kernel-emulated", transport.Config{Transport: transport.Kernel, Emulate: true, Emulation: kernel.EmulateAfterAccept}}
	}
	return tr{"kernel", transport.Config{Transport: transport.Kernel, Emulation: kernel.EmulateAfterAccept}}
}

// start opens a listener with p and a backlog of n.
func (x tr) start(t *testing.T, p backlog.Personality, n int) server {
	cfg := x.cfg
	cfg.Personality, cfg.Backlog = p, n
	srv, err := transport.Open(context.Background(), cfg)
	if err != nil {
		if cfg.Transport == transport.Kernel {
			t.Skipf("no kernel listener: %v", err)
		}
		t.Fatal(err)
	}
	l := srv.Listener
	if cfg.Transport == transport.Netstack {
		return server{
			l:        l,
			dial:     srv.DialFrom,
			shutdown: func() { srv.Close() },
			unseen: func() uint64 {
				s := l.Stats()
				return uint64(s.HalfOpen) + s.SyncookiesSent - s.SyncookiesRecv
			},
		}
	}
	before, _ := kernel.ReadCounters()
	return server{
		l:        l,
		dial:     srv.DialFrom,
		shutdown: func() { srv.Close() },
		unseen: func() uint64 {
			// The kernel keeps no per-socket count of half-open
			// requests or cookies; its namespace-wide counters
			// since the start bound them: every dropped final ACK
			// is a ListenOverflows, every cookie a SyncookiesSent.
			now, _ := kernel.ReadCounters()
			d := now.Sub(before)
			return d.ListenOverflows + d.SyncookiesSent
		},
	}
}

// nextPort is the next client port portRange hands out.
var nextPort atomic.Int32

// portRange returns the first of n client ports no other test of the
// package uses: on the kernel's loopback every test's clients share one
// address. The ports lie below Linux's ephemeral range (32768 and up), so
// that no connection of the kernel's choosing holds one.
func portRange(n int) int {
	const lo, hi = 10000, 32000
	for {
		end := nextPort.Add(int32(n))
		start := int(end) - n
		if int(end) <= hi-lo {
			return lo + start
		}
		nextPort.CompareAndSwap(end, 0)
	}
}

// client is what one client met.
type client struct {
	local     string // its address, as the server sees it
	connected bool
	refused   bool
	timedOut  bool
	reset     chan struct{} // closed when a reset arrives
}

// stormConfig bounds one storm.
type stormConfig struct {
	clients int
	spread  time.Duration // clients start at random within this
	timeout time.Duration // each client's connect
}

// storm runs clients against s while the application accepts at random
// paces and listen() is called again with random backlogs, then checks that
// nothing was lost and nothing counted twice.
func storm(t *testing.T, s server, cfg stormConfig) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var rngMu sync.Mutex
	rand := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup

	// The application: bursts and pauses; it stops taking connections
	// before the last clients arrive, so that the queue holds some when
	// the listener closes.
	var acceptedMu sync.Mutex
	accepted := map[string]net.Conn{}
	appEnd := time.Now().Add(cfg.spread * 3 / 4)
	bg.Add(1)
	go func() {
		defer bg.Done()
		for ctx.Err() == nil && time.Now().Before(appEnd) {
			if rand(10) == 0 {
				time.Sleep(time.Duration(20+rand(60)) * time.Millisecond)
			}
			c, err := s.l.Accept()
			if err != nil {
				return
			}
			acceptedMu.Lock()
			if _, dup := accepted[c.RemoteAddr().String()]; dup {
				t.Errorf("accepted %v twice", c.RemoteAddr())
			}
			accepted[c.RemoteAddr().String()] = c
			acceptedMu.Unlock()
			time.Sleep(time.Duration(rand(3)) * time.Millisecond)
		}
	}()
	// listen() again, all the time.
	bg.Add(1)
	go func() {
		defer bg.Done()
		for ctx.Err() == nil {
			time.Sleep(time.Duration(10+rand(30)) * time.Millisecond)
			err := s.l.SetBacklog(rand(20))
			if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, net.ErrClosed) {
				t.Errorf("SetBacklog: %v", err)
			}
		}
	}()

	clients := make([]*client, cfg.clients)
	base := portRange(cfg.clients)
	var dials sync.WaitGroup
	var readers sync.WaitGroup
	var conns sync.Map
	for i := range clients {
		c := &client{reset: make(chan struct{})}
		clients[i] = c
		dials.Add(1)
		go func() {
			defer dials.Done()
			time.Sleep(time.Duration(rand(int(cfg.spread))))
			dctx, dcancel := context.WithTimeout(ctx, cfg.timeout)
			conn, err := s.dial(dctx, base+i)
			dcancel()
			switch {
			case err == nil:
				c.connected, c.local = true, conn.LocalAddr().String()
				conns.Store(c, conn)
				readers.Add(1)
				go func() {
					defer readers.Done()
					if _, err := conn.Read(make([]byte, 1)); isReset(err) {
						close(c.reset)
					}
				}()
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
				c.timedOut = true
			default:
				c.refused = true
			}
		}()
	}
	dials.Wait()
	cancel()
	// The application may be blocked in Accept: a past deadline ends it.
	s.l.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now())
	bg.Wait()
	// Nothing changes the queue any more; resets on their way arrive.
	time.Sleep(200 * time.Millisecond)

	// The listener's queue as it stands, then every client's state.
	stats := s.l.Stats()
	waiting := 0
	counted := map[string]bool{}
	acceptedMu.Lock()
	for _, c := range clients {
		n := 0
		for _, b := range []bool{c.connected, c.refused, c.timedOut} {
			if b {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("a client ended in %d outcomes", n)
		}
		if !c.connected {
			continue
		}
		if counted[c.local] {
			t.Fatalf("two clients with the address %s", c.local)
		}
		counted[c.local] = true
		_, wasAccepted := accepted[c.local]
		if isClosed(c.reset) && wasAccepted {
			t.Errorf("client %s was reset and also accepted", c.local)
		}
		if !isClosed(c.reset) && !wasAccepted {
			waiting++
		}
	}
	for addr := range accepted {
		if !counted[addr] {
			t.Errorf("accepted %s, which no client saw connected", addr)
		}
	}
	if uint64(len(accepted)) != stats.Accepted {
		t.Errorf("the listener counts %d accepted; the application took %d", stats.Accepted, len(accepted))
	}
	acceptedMu.Unlock()
	// What still waits is what the server's queue holds, apart from clients
	// whose final (cookie) ACK was dropped on a full queue.
	unseen := waiting - stats.Len
	if bound := s.unseen(); unseen < 0 || uint64(unseen) > bound {
		t.Errorf("%d clients wait and the queue holds %d: %d unseen, more than the %d dropped final ACKs and cookies allow", waiting, stats.Len, unseen, bound)
	}
	// Closing the listener resets what waits in its queue: every one of
	// those clients is reset. The others still waiting are clients the
	// server holds nothing for in its queue (unseen above); any of them may
	// be reset too, if an ACK of theirs (to a SYN-ACK sent again just
	// before the close) reaches the closed port, as on Linux, where
	// inet_csk_listen_stop drops request sockets without a word and a
	// later segment meets a reset. No accepted client may be reset.
	before := 0
	for _, c := range clients {
		if isClosed(c.reset) {
			before++
		}
	}
	s.l.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		after := 0
		for _, c := range clients {
			if isClosed(c.reset) {
				after++
			}
		}
		if n := after - before; n >= stats.Len {
			if n > waiting {
				t.Errorf("closing the listener with %d waiting in its queue and %d clients waiting reset %d clients", stats.Len, waiting, n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("closing the listener with %d waiting reset %d clients", stats.Len, after-before)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	conns.Range(func(_, c any) bool { c.(net.Conn).Close(); return true })
	for _, c := range accepted {
		c.Close()
	}
	readers.Wait()
	s.shutdown()
	connected, refused, timedOut := 0, 0, 0
	for _, c := range clients {
		switch {
		case c.connected:
			connected++
		case c.refused:
			refused++
		default:
			timedOut++
		}
	}
	t.Logf("%d clients: %d connected (%d accepted, %d reset, %d waiting at the end), %d refused, %d timed out; listener %+v",
		cfg.clients, connected, len(accepted), before, waiting, refused, timedOut, stats)
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestStormNothingLost runs a storm against every personality on netstack,
// the host's own rules on the kernel, and a few emulated on the kernel.
func TestStormNothingLost(t *testing.T) {
	cfg := stormConfig{clients: 300, spread: 400 * time.Millisecond, timeout: 1500 * time.Millisecond}
	type run struct {
		tr tr
		p  backlog.Personality
	}
	var runs []run
	for _, p := range backlog.All() {
		runs = append(runs, run{netstackTransport(), p})
	}
	if runtime.GOOS == "linux" {
		host, err := kernel.HostPersonality()
		if err == nil {
			runs = append(runs, run{kernelTransport(false), host})
		}
		for _, name := range []string{"winnt4-server", "freebsd", "darwin"} {
			runs = append(runs, run{kernelTransport(true), backlog.MustLookup(name)})
		}
	}
	for _, r := range runs {
		t.Run(fmt.Sprintf("%s/%s", r.tr.name, r.p.Name), func(t *testing.T) {
			t.Parallel()
			storm(t, r.tr.start(t, r.p, 8), cfg)
		})
	}
}
