package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1e9, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// overloaded opens a listener with the policy o on a clock the test moves.
func overloaded(t *testing.T, o backlog.Overload, backlogN int) (*kernel.Listener, *fakeClock) {
	t.Helper()
	ln := listen(t, &kernel.ListenConfig{Backlog: backlogN, Overload: o}, "tcp4", "127.0.0.1:0")
	clk := newFakeClock()
	kernel.SetOverloadClock(ln, clk.Now)
	return ln, clk
}

// dialQueued dials n clients one after another and waits until the kernel
// has queued all of them behind the want-n already waiting.
func dialQueued(t *testing.T, ln *kernel.Listener, n, want int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	if !waitFor(5*time.Second, func() bool { return ln.Stats().Len == want }) {
		t.Fatalf("the queue holds %d; want %d", ln.Stats().Len, want)
	}
	return cs
}

// acceptOne accepts with a deadline, so that a listener that wrongly
// sheds everything fails the test instead of hanging it, and returns
// which client it is, as an index into clients.
func acceptOne(t *testing.T, ln *kernel.Listener, clients []net.Conn) int {
	t.Helper()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	defer ln.SetDeadline(time.Time{})
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for i, cl := range clients {
		if cl.LocalAddr().String() == c.RemoteAddr().String() {
			return i
		}
	}
	t.Fatalf("accepted %v, none of the clients", c.RemoteAddr())
	return -1
}

// acceptInOrder accepts every client and checks that they come oldest
// first.
func acceptInOrder(t *testing.T, ln *kernel.Listener, clients []net.Conn) {
	t.Helper()
	for want := range clients {
		if got := acceptOne(t, ln, clients); got != want {
			t.Errorf("accept %d took client %d; want %d, oldest first", want, got, want)
		}
	}
}

// resetNow reports whether the server has reset the client's
// connection, waiting up to a second for a reset that must come, or 20 ms
// for one that must not (a reset sent before the test reads is there at
// once on loopback).
func resetNow(t *testing.T, c net.Conn, must bool) bool {
	t.Helper()
	wait := 20 * time.Millisecond
	if must {
		wait = time.Second
	}
	reset, err := wasReset(c, wait)
	if err != nil {
		t.Fatalf("a client: %v", err)
	}
	return reset
}

// stillFresh skips the rest of a test when the machine stalled so long
// that connections the test meant as fresh may have waited past target:
// the test then cannot know what the policy had to do with them. The
// kernel's figure is at most the time since the dial began, give or take
// a tick and what the ticks lagged (TestQueueWaitWithinATick).
func stillFresh(t *testing.T, since time.Time, target time.Duration) {
	t.Helper()
	if d := time.Since(since) + timerTick(t) + 10*time.Millisecond; d >= target {
		t.Skipf("the connections meant as fresh may have waited %v, past the %v target: the machine stalled", d, target)
	}
}

// TestOverloadOffChangesNothing: the zero Overload puts nothing in front
// of Accept: connections that waited long are served, oldest first, none
// reset, and Stats counts no overdue connection (observed, not unknown).
func TestOverloadOffChangesNothing(t *testing.T) {
	ln := listen(t, &kernel.ListenConfig{Backlog: 16}, "tcp4", "127.0.0.1:0")
	if kernel.Overloaded(ln) {
		t.Fatal("the zero Overload applies a policy")
	}
	clients := dialQueued(t, ln, 5, 5)
	time.Sleep(300 * time.Millisecond)
	acceptInOrder(t, ln, clients)
	s := ln.Stats()
	if s.Overdue != 0 || s.Reset != 0 || !s.Observed(backlog.StatOverdue) || s.QueueWait.Count != 5 {
		t.Errorf("Stats: overdue %d (observed %v), reset %d, %d waits; want 0 (observed), 0, 5", s.Overdue, s.Observed(backlog.StatOverdue), s.Reset, s.QueueWait.Count)
	}
	for i, c := range clients {
		if resetNow(t, c, false) {
			t.Errorf("client %d was reset", i)
		}
	}
	// With a Personality, the zero value is accepted too.
	listen(t, &kernel.ListenConfig{Personality: backlog.MustLookup("winnt4-workstation")}, "tcp4", "127.0.0.1:0")
}

// TestOverloadBurstPasses is CoDel's interval rule on real connections:
// six clients that waited 250 ms, past the 100 ms target, are all served
// when the policy's clock says less than an interval passed while they
// were taken.
func TestOverloadBurstPasses(t *testing.T) {
	ln, _ := overloaded(t, backlog.Overload{Target: 100 * time.Millisecond, Interval: time.Second}, 16)
	clients := dialQueued(t, ln, 6, 6)
	time.Sleep(250 * time.Millisecond)
	acceptInOrder(t, ln, clients)
	s := ln.Stats()
	if s.Overdue != 0 || s.Reset != 0 {
		t.Errorf("a burst shorter than the interval: overdue %d, reset %d; want 0", s.Overdue, s.Reset)
	}
	if d, _ := s.QueueWait.Quantile(0.01); d < 200*time.Millisecond {
		t.Errorf("the waits Accept read start at %v; the test held them 250 ms", d)
	}
}

// TestOverloadShedsExactlyPastTarget: once the oldest waiting connection
// has stayed past the target for an interval, the connections past it are
// reset and those within it served, in order. X1..X4 wait 400 ms (target
// 300 ms, interval 200 ms); X1 is served when the policy first sees the
// wait, X2 half an interval later, X3 and X4 a whole interval later, when
// the queue stands, are reset; Y1 and Y2, dialled just before, are
// served.
func TestOverloadShedsExactlyPastTarget(t *testing.T) {
	const target = 300 * time.Millisecond
	ln, clk := overloaded(t, backlog.Overload{Target: target, Interval: 200 * time.Millisecond}, 16)
	xs := dialQueued(t, ln, 4, 4)
	time.Sleep(target + 100*time.Millisecond)
	for want := range 2 {
		if got := acceptOne(t, ln, xs); got != want {
			t.Fatalf("accept %d took X%d; want X%d", want+1, got+1, want+1)
		}
		clk.Add(100 * time.Millisecond)
	}
	fresh := time.Now()
	ys := dialQueued(t, ln, 2, 4)
	all := append(append([]net.Conn{}, xs...), ys...)
	got := []int{acceptOne(t, ln, all), acceptOne(t, ln, all)}
	stillFresh(t, fresh, target)
	if got[0] != 4 || got[1] != 5 {
		t.Errorf("accepts took clients %v; want Y1, Y2 (4, 5)", got)
	}
	for i, c := range xs {
		if reset := resetNow(t, c, i > 1); reset != (i > 1) {
			t.Errorf("X%d reset %v; want %v", i+1, reset, i > 1)
		}
	}
	for i, c := range ys {
		if resetNow(t, c, false) {
			t.Errorf("Y%d was reset", i+1)
		}
	}
	s := ln.Stats()
	if s.Overdue != 2 || s.Reset != 2 || s.Accepted != 6 || s.QueueWait.Count != 4 {
		t.Errorf("Stats: overdue %d, reset %d, accepted %d, %d waits; want 2, 2, 6, 4", s.Overdue, s.Reset, s.Accepted, s.QueueWait.Count)
	}
}

// TestOverloadLIFO: with LIFO, once the oldest has waited past the target
// the newest is served first, and the old ones, once the queue stands,
// are reset from the oldest up. A1..A3 wait 400 ms (target 300 ms): A1 is
// served oldest first, and the policy sees a queue forming; then B2 and
// B1, newest first, at once; half an interval later C2; an interval after
// A1, A2 and A3 are reset and C1 served.
func TestOverloadLIFO(t *testing.T) {
	const target = 300 * time.Millisecond
	ln, clk := overloaded(t, backlog.Overload{Target: target, Interval: 200 * time.Millisecond, LIFO: true}, 16)
	as := dialQueued(t, ln, 3, 3)
	time.Sleep(target + 100*time.Millisecond)
	if got := acceptOne(t, ln, as); got != 0 {
		t.Fatalf("first accept took A%d; want A1, oldest first until the policy has seen a wait past the target", got+1)
	}
	fresh := time.Now()
	bs := dialQueued(t, ln, 2, 4)
	all := append(append([]net.Conn{}, as...), bs...)
	got := []int{acceptOne(t, ln, all), acceptOne(t, ln, all)}
	clk.Add(100 * time.Millisecond)
	// A2 and A3 are held in user space now, not in the kernel's queue.
	cs := dialQueued(t, ln, 2, 2)
	all = append(all, cs...)
	got = append(got, acceptOne(t, ln, all))
	clk.Add(100 * time.Millisecond)
	got = append(got, acceptOne(t, ln, all))
	stillFresh(t, fresh, target)
	if want := []int{4, 3, 6, 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("accepts took %v; want B2, B1, C2, C1 (%v)", got, want)
	}
	for i, c := range as[1:] {
		if !resetNow(t, c, true) {
			t.Errorf("A%d was not reset", i+2)
		}
	}
	s := ln.Stats()
	if s.Overdue != 2 || s.Accepted != 7 || s.QueueWait.Count != 5 {
		t.Errorf("Stats: overdue %d, accepted %d, %d waits; want 2, 7, 5", s.Overdue, s.Accepted, s.QueueWait.Count)
	}
}

// TestOverloadSizesBacklog: with SizeBacklog, once the queue stands the
// listener calls listen() again with the accept rate of the last interval
// times the target (here 2 served in 100 ms, 20 a second, times 300 ms:
// 6), read back from the kernel, and restores the application's 64 once
// an interval has passed without a wait past the target.
func TestOverloadSizesBacklog(t *testing.T) {
	const target = 300 * time.Millisecond
	ln, clk := overloaded(t, backlog.Overload{Target: target, Interval: 100 * time.Millisecond, SizeBacklog: true}, 64)
	fresh := time.Now()
	for range 10 {
		cs := dialQueued(t, ln, 1, 1)
		acceptOne(t, ln, cs)
		clk.Add(10 * time.Millisecond)
	}
	stillFresh(t, fresh, target)
	stale := dialQueued(t, ln, 3, 3)
	time.Sleep(target + 100*time.Millisecond)
	clk.Add(10 * time.Millisecond)
	acceptOne(t, ln, stale) // the rate of the first 100 ms: 100/s
	clk.Add(50 * time.Millisecond)
	acceptOne(t, ln, stale)
	clk.Add(50 * time.Millisecond)
	fresh = time.Now()
	f1 := dialQueued(t, ln, 1, 2)
	if got := acceptOne(t, ln, append(stale, f1...)); got != 3 {
		t.Fatalf("accepted client %d; want the fresh one, after the third stale one was reset", got)
	}
	stillFresh(t, fresh, target)
	if n, s := ln.Backlog(), ln.Stats(); n != 6 || s.Requested != 6 || s.Overdue != 1 {
		t.Errorf("once the queue stands: backlog %d, requested %d, overdue %d; want 6, 6, 1", n, s.Requested, s.Overdue)
	}
	clk.Add(100 * time.Millisecond)
	f2 := dialQueued(t, ln, 1, 1)
	acceptOne(t, ln, f2)
	if n := ln.Backlog(); n != 64 {
		t.Errorf("an interval after the last wait past the target: backlog %d; want 64 restored", n)
	}
}

// TestOverloadCloseResetsHeld: Close resets the connections the policy
// took from the kernel to serve newest first and has not served, and an
// Accept waiting for what another brings fails with net.ErrClosed.
func TestOverloadCloseResetsHeld(t *testing.T) {
	o := backlog.Overload{Target: 100 * time.Millisecond, Interval: time.Second, LIFO: true}
	ln, _ := overloaded(t, o, 16)
	cs := dialQueued(t, ln, 5, 5)
	time.Sleep(150 * time.Millisecond)
	if got := acceptOne(t, ln, cs); got != 0 {
		t.Fatalf("first accept took %d; want 0, the oldest", got)
	}
	if got := acceptOne(t, ln, cs); got != 4 {
		t.Fatalf("second accept took %d; want 4, the newest", got)
	}
	if n := ln.Stats().Len; n != 0 {
		t.Fatalf("the kernel still queues %d; the policy should hold them", n)
	}
	ln.Close()
	for i := 1; i <= 3; i++ {
		if !resetNow(t, cs[i], true) {
			t.Errorf("client %d, held at Close, was not reset", i)
		}
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v; want net.ErrClosed", err)
	}

	// Newest first with nothing waiting: one caller waits in the kernel's
	// accept, the other for what it brings; Close ends both.
	ln2, _ := overloaded(t, o, 16)
	stale := dialQueued(t, ln2, 1, 1)
	time.Sleep(150 * time.Millisecond)
	acceptOne(t, ln2, stale)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			c, err := ln2.Accept()
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	ln2.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Errorf("a waiting Accept returned %v at Close; want net.ErrClosed", err)
		}
	}
}

// TestOverloadConcurrent: four workers under a policy that sheds, many
// clients in bursts: every client is served or reset, never both, never
// neither; the resets are what Stats counts as overdue; nothing leaks.
func TestOverloadConcurrent(t *testing.T) {
	for _, lifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("lifo=%v", lifo), func(t *testing.T) {
			t.Parallel()
			ln := listen(t, &kernel.ListenConfig{Backlog: 512, Overload: backlog.Overload{
				Target: 20 * time.Millisecond, Interval: 40 * time.Millisecond, LIFO: lifo,
			}}, "tcp4", "127.0.0.1:0")
			var workers sync.WaitGroup
			served := make(chan int, 4)
			for range 4 {
				workers.Add(1)
				go func() {
					defer workers.Done()
					n := 0
					defer func() { served <- n }()
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						time.Sleep(5 * time.Millisecond)
						c.Write([]byte("ok"))
						c.Close()
						n++
					}
				}()
			}
			const bursts, perBurst = 6, 40
			var clients sync.WaitGroup
			var mu sync.Mutex
			outcome := map[string]int{}
			for range bursts {
				for range perBurst {
					clients.Add(1)
					go func() {
						defer clients.Done()
						c, err := net.Dial("tcp4", ln.Addr().String())
						if err != nil {
							mu.Lock()
							defer mu.Unlock()
							if errors.Is(err, syscall.ECONNRESET) {
								// Shed before connect() returned: on a
								// busy machine the reset can reach the
								// socket before the connecting thread
								// runs again, and connect reports it.
								outcome["reset"]++
								return
							}
							outcome["dial: "+err.Error()]++
							return
						}
						defer c.Close()
						c.SetReadDeadline(time.Now().Add(30 * time.Second))
						b, err := io.ReadAll(c)
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil && string(b) == "ok":
							outcome["served"]++
						case errors.Is(err, syscall.ECONNRESET):
							outcome["reset"]++
						default:
							outcome[fmt.Sprintf("%q %v", b, err)]++
						}
					}()
				}
				time.Sleep(50 * time.Millisecond)
			}
			clients.Wait()
			ln.Close()
			workers.Wait()
			close(served)
			total := 0
			for n := range served {
				total += n
			}
			s := ln.Stats()
			if outcome["served"]+outcome["reset"] != bursts*perBurst || outcome["served"] != total {
				t.Errorf("outcomes %v with %d served by the workers; want %d served or reset", outcome, total, bursts*perBurst)
			}
			if uint64(outcome["reset"]) != s.Overdue || s.Accepted != s.Overdue+uint64(total) {
				t.Errorf("clients reset %d, Stats overdue %d, accepted %d, served %d", outcome["reset"], s.Overdue, s.Accepted, total)
			}
			t.Logf("%v; %d overdue", outcome, s.Overdue)
		})
	}
}

// TestOverloadRefused: a policy the listener cannot apply fails Listen
// with the reason.
func TestOverloadRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		lc      kernel.ListenConfig
		network string
		want    error
	}{
		{"negative target", kernel.ListenConfig{Overload: backlog.Overload{Target: -1}}, "tcp4", backlog.ErrOverload},
		{"lifo without a target", kernel.ListenConfig{Overload: backlog.Overload{LIFO: true}}, "tcp4", backlog.ErrOverload},
		{"no queue wait", kernel.ListenConfig{SkipQueueWait: true, Overload: backlog.Overload{Target: time.Second}}, "tcp4", backlog.ErrOverload},
		{"personality", kernel.ListenConfig{Personality: backlog.MustLookup("linux"), Overload: backlog.Overload{Target: time.Second}}, "tcp4", errors.ErrUnsupported},
		{"unix", kernel.ListenConfig{Overload: backlog.Overload{Target: time.Second}}, "unix", errors.ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if c.network == "unix" {
				addr = t.TempDir() + "/s"
			}
			ln, err := c.lc.Listen(context.Background(), c.network, addr)
			if err == nil {
				ln.Close()
			}
			if !errors.Is(err, c.want) {
				t.Errorf("Listen: %v; want an error wrapping %v", err, c.want)
			}
		})
	}
}
