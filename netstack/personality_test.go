package netstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
)

// outcome is what one client met.
type outcome string

const (
	connected outcome = "connected"
	refused   outcome = "refused"
	timedOut  outcome = "timed out"
	reset     outcome = "reset"
	otherErr  outcome = "other"
)

// try dials once with a timeout shorter than the client's first SYN
// retransmission, so that an ignored SYN shows as a timeout, and checks a
// connected client for a reset.
func try(t testing.TB, cli *Host, target string, timeout time.Duration) (outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := cli.Dial(ctx, "tcp", target)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused, err
	case errors.Is(err, context.DeadlineExceeded):
		return timedOut, err
	case errors.Is(err, syscall.ECONNRESET):
		// The handshake completed and the server's reset came before
		// the dialling goroutine looked: the same reset, seen earlier.
		return reset, err
	case err != nil:
		return otherErr, err
	}
	t.Cleanup(func() { c.Close() })
	// A server that resets after the handshake does so at once; a live
	// connection just has nothing to read.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return reset, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return connected, nil
	}
	return otherErr, err
}

// expectFull is what a client beyond the capacity meets, by personality.
func expectFull(p backlog.Personality) outcome {
	switch p.FullVerdict() {
	case "refuse":
		if p.OnFull == backlog.SYNAnswer {
			return reset // FreeBSD: the handshake completes, then RST
		}
		return refused
	}
	return timedOut // ignore; evict with nothing half-open to evict
}

// TestFullQueueOnTheWire listens with backlog 3 under every personality,
// never accepts, and dials one client after another: exactly the capacity
// connect, and the next ones meet what the personality documents: a reset
// at once, or silence (the client would retransmit). After one accept, the
// next client gets the freed slot.
func TestFullQueueOnTheWire(t *testing.T) {
	for _, p := range backlog.All() {
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			_, srv, cli := pair(t, nil)
			l := listen(t, srv, p.Name, 3)
			c := l.Capacity()
			for i := 0; i < c+2; i++ {
				want := connected
				if i >= c {
					want = expectFull(p)
				}
				got, err := try(t, cli, "198.18.0.1:80", 400*time.Millisecond)
				if got != want {
					t.Fatalf("client %d of capacity %d: %s (%v); want %s", i+1, c, got, err, want)
				}
			}
			if l.Len() != c {
				t.Errorf("Len() = %d; want %d", l.Len(), c)
			}
			if _, err := l.Accept(); err != nil {
				t.Fatal(err)
			}
			if p.DeferredSlotReturn {
				// The accepting thread is pre-empted one quantum later.
				waitFor(t, "the freed slot", func() bool { return l.Stats().Unavailable == 0 })
			}
			if got, err := try(t, cli, "198.18.0.1:80", 400*time.Millisecond); got != connected {
				t.Errorf("after one accept: %s (%v); want connected", got, err)
			}
		})
	}
}

// TestKB295079OnTheWire reproduces the Windows 2000 SP1 defect: a client
// arriving right after an accept on a full queue is refused, although a slot
// is free, until the accepting thread yields: when it blocks in accept()
// again, or is pre-empted one quantum after the accept. Every other Windows
// personality gives the slot at once. The quantum is made long where the
// test needs the thread not to be pre-empted, so that no timing decides.
func TestKB295079OnTheWire(t *testing.T) {
	fill := func(t *testing.T, p backlog.Personality) (*Host, *Listener) {
		_, srv, cli := pair(t, nil)
		l, err := srv.Listen(context.Background(), "tcp", ":80", &ListenConfig{Personality: p, Backlog: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		for i := 0; i < 2; i++ {
			if got, err := try(t, cli, "198.18.0.1:80", time.Second); got != connected {
				t.Fatalf("%s: client %d: %s (%v)", p, i, got, err)
			}
		}
		if _, err := l.Accept(); err != nil {
			t.Fatal(err)
		}
		return cli, l
	}
	for _, name := range []string{"win2000-sp1-wsd", "windows", "winnt4-server"} {
		p := backlog.MustLookup(name)
		p.Quantum = time.Hour
		cli, l := fill(t, p)
		want := connected
		if p.DeferredSlotReturn {
			want = refused
		}
		if got, err := try(t, cli, "198.18.0.1:80", time.Second); got != want {
			t.Errorf("%s: right after accept(): %s (%v); want %s", name, got, err, want)
		}
		if !p.DeferredSlotReturn {
			continue
		}
		if s := l.Stats(); s.DeferredRefusals != 1 {
			t.Errorf("%s: %d deferred refusals; want 1", name, s.DeferredRefusals)
		}
		// The thread takes the one waiting connection and blocks in
		// accept() again: that is a yield.
		if _, err := l.Accept(); err != nil {
			t.Fatal(err)
		}
		l.SetDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := l.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: Accept on an empty queue: %v; want a timeout", name, err)
		}
		if got, err := try(t, cli, "198.18.0.1:80", time.Second); got != connected {
			t.Errorf("%s: after accept() blocked: %s (%v); want connected", name, got, err)
		}
	}
	// With the default quantum, the slot comes back by itself.
	cli, l := fill(t, backlog.MustLookup("win2000-sp1-wsd"))
	waitFor(t, "the accepting thread to be pre-empted", func() bool { return l.Stats().Unavailable == 0 })
	if got, err := try(t, cli, "198.18.0.1:80", time.Second); got != connected {
		t.Errorf("after the quantum: %s (%v); want connected", got, err)
	}
}

// TestIgnoredClientConnectsLater checks "ignore": the client is not told
// anything, retransmits its SYN, and connects once a slot is free.
func TestIgnoredClientConnectsLater(t *testing.T) {
	_, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", backlog.ZeroBacklog)
	if l.Capacity() != 1 {
		t.Fatalf("capacity %d after SetBacklog(0); want 1", l.Capacity())
	}
	if got, err := try(t, cli, "198.18.0.1:80", time.Second); got != connected {
		t.Fatalf("first client: %s (%v)", got, err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := cli.Dial(ctx, "tcp", "198.18.0.1:80")
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := l.Accept(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the waiting client: %v", err)
	}
	// It got in with its first retransmission, a second after its SYN.
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("connected after %v; it should have waited for a SYN retransmission (1 s)", d)
	}
	if s := l.Stats(); s.ListenOverflows == 0 {
		t.Errorf("ListenOverflows = 0; the first SYN found the queue full")
	}
}

func ExampleHost_Listen() {
	n := NewNetwork(nil)
	defer n.Close()
	server, _ := n.NewHost()
	client, _ := n.NewHost()

	// A Windows NT 4.0 Workstation listener with backlog 5 that never
	// accepts.
	nt4 := backlog.MustLookup("winnt4-workstation")
	l, _ := server.Listen(context.Background(), "tcp", ":80", &ListenConfig{Personality: nt4, Backlog: 5})
	defer l.Close()

	for i := 1; i <= 6; i++ {
		c, err := client.Dial(context.Background(), "tcp", "198.18.0.1:80")
		if err != nil {
			fmt.Printf("client %d: refused: %v\n", i, errors.Is(err, syscall.ECONNREFUSED))
			continue
		}
		defer c.Close()
		fmt.Printf("client %d: connected\n", i)
	}
	// Output:
	// client 1: connected
	// client 2: connected
	// client 3: connected
	// client 4: connected
	// client 5: connected
	// client 6: refused: true
}
