package kernel_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// dialAll connects n clients one after another; client i sends the byte
// '0'+i at once, so the server can tell who it accepted. The kernel always
// completes the handshake, but a reset can come back so fast that the dial
// itself reports it: such a client is nil in the result.
func dialAll(t *testing.T, ln *kernel.Listener, n int) []net.Conn {
	t.Helper()
	offered := func() uint64 {
		s := ln.Stats()
		return s.Queued + s.Refused + s.Ignored + s.Reset
	}
	base := offered()
	var cs []net.Conn
	for i := range n {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err == nil {
			conn := c
			t.Cleanup(func() { conn.Close() })
			// A reset that arrived first fails the write and is
			// consumed by it; a later read would only see EOF.
			_, err = c.Write([]byte{'0' + byte(i)})
		}
		switch {
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			c = nil
		case err != nil:
			t.Fatalf("client %d: %v", i, err)
		}
		cs = append(cs, c)
		// Let the emulation offer it before the next one arrives.
		want := base + uint64(i+1)
		waitFor(time.Second, func() bool { return offered() >= want })
	}
	return cs
}

// wasReset reports whether the server reset c: a read fails with
// ECONNRESET (or sees EOF right after it) within the wait. A client that is
// still queued reads nothing and times out.
func wasReset(c net.Conn, wait time.Duration) (bool, error) {
	if c == nil {
		return true, nil
	}
	c.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	_, err := c.Read(b[:])
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	}
	return false, fmt.Errorf("unexpected read result: %v", err)
}

// acceptID accepts one connection and returns the byte its client sent.
func acceptID(t *testing.T, ln *kernel.Listener) byte {
	t.Helper()
	ln.SetDeadline(time.Now().Add(2 * time.Second))
	defer ln.SetDeadline(time.Time{})
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		t.Fatalf("reading the client's id: %v", err)
	}
	return b[0] - '0'
}

// TestEmulationRefuses runs Windows NT 4.0 Workstation's rules on the
// kernel with real clients: listen(100) stores 5, a sixth client is
// refused (here: reset after its handshake), and listen(2) again resets the
// newest waiting connections beyond the new backlog.
func TestEmulationRefuses(t *testing.T) {
	t.Parallel()
	p := backlog.MustLookup("winnt4-workstation")
	h := new(logRecords)
	ln := listen(t, &kernel.ListenConfig{Backlog: 100, Personality: p, Emulation: kernel.EmulateAfterAccept, Logger: slog.New(h)}, "tcp4", "127.0.0.1:0")
	if got := ln.Backlog(); got != 5 {
		t.Errorf("Backlog %d; want 5", got)
	}
	if w := h.warnings(); len(w) != 1 || w[0]["stored"] != "5" || w[0]["personality"] != "winnt4-workstation" {
		t.Errorf("warnings %v; want one, stored=5 personality=winnt4-workstation", w)
	}
	cs := dialAll(t, ln, 7)
	for i, c := range cs {
		reset, err := wasReset(c, 200*time.Millisecond)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if want := i >= 5; reset != want {
			t.Errorf("client %d: reset %v; want %v", i, reset, want)
		}
	}
	s, _ := ln.KernelStats()
	if s.Len != 5 || s.Refused != 2 || s.Capacity != 5 || s.KernelLen != 0 {
		t.Errorf("Stats: Len %d, Refused %d, Capacity %d, KernelLen %d; want 5, 2, 5, 0", s.Len, s.Refused, s.Capacity, s.KernelLen)
	}

	if err := ln.SetBacklog(2); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs[:5] {
		reset, err := wasReset(c, 200*time.Millisecond)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if want := i >= 2; reset != want {
			t.Errorf("after listen(2): client %d reset %v; want %v", i, reset, want)
		}
	}
	for want := range byte(2) {
		if id := acceptID(t, ln); id != want {
			t.Errorf("accepted client %d; want %d", id, want)
		}
	}
	if s := ln.Stats(); s.Len != 0 || s.Reset != 3 || s.Accepted != 2 {
		t.Errorf("Stats: Len %d, Reset %d, Accepted %d; want 0, 3, 2", s.Len, s.Reset, s.Accepted)
	}
}

// TestEmulationKB295079 reproduces the Windows 2000 SP1 Winsock Direct
// defect with real clients: after accept() on a full queue, the freed slot
// comes back only once the accepting goroutine waits, so a client arriving
// in between is refused although a slot is free.
func TestEmulationKB295079(t *testing.T) {
	t.Parallel()
	p := backlog.MustLookup("kb295079")
	ln := listen(t, &kernel.ListenConfig{Backlog: 1, Personality: p, Emulation: kernel.EmulateAfterAccept}, "tcp4", "127.0.0.1:0")
	dialAll(t, ln, 1)
	if id := acceptID(t, ln); id != 0 {
		t.Fatalf("accepted client %d; want 0", id)
	}
	// The queue is empty, but the slot is owed until Accept waits.
	late := dialAll(t, ln, 1)[0]
	if reset, err := wasReset(late, time.Second); err != nil || !reset {
		t.Errorf("a client arriving before Accept waits again: reset %v (%v); want refused", reset, err)
	}
	if s := ln.Stats(); s.DeferredRefusals != 1 {
		t.Errorf("DeferredRefusals %d; want 1", s.DeferredRefusals)
	}
	// Once Accept waits, the slot is back.
	got := make(chan byte, 1)
	go func() {
		ln.SetDeadline(time.Now().Add(3 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			got <- 255
			return
		}
		c.Close()
		got <- 1
	}()
	waitFor(time.Second, func() bool { return ln.Stats().Unavailable == 0 })
	time.Sleep(20 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != 1 {
		t.Errorf("the client after Accept waited was not accepted")
	}
}

// TestEmulationRelistenFails checks gVisor's rule: listen() again fails
// when more connections wait than the new backlog holds, and changes
// nothing.
func TestEmulationRelistenFails(t *testing.T) {
	t.Parallel()
	p := backlog.GVisor()
	ln := listen(t, &kernel.ListenConfig{Backlog: 5, Personality: p, Emulation: kernel.EmulateAfterAccept}, "tcp4", "127.0.0.1:0")
	dialAll(t, ln, 4)
	err := ln.SetBacklog(1)
	var op *net.OpError
	if !errors.Is(err, backlog.ErrRelisten) || !errors.Is(err, syscall.EINVAL) || !errors.As(err, &op) {
		t.Errorf("SetBacklog(1) with 4 waiting: %v; want a *net.OpError wrapping backlog.ErrRelisten and EINVAL", err)
	}
	if got := ln.Backlog(); got != 5 {
		t.Errorf("Backlog after the failed listen(): %d; want 5", got)
	}
	if err := ln.SetBacklog(3); err != nil {
		t.Errorf("SetBacklog(3) with 4 waiting (capacity 4): %v", err)
	}
}

// TestEmulationCloseResets checks that Close resets every connection still
// queued and that no goroutine outlives it.
func TestEmulationCloseResets(t *testing.T) {
	t.Parallel()
	p := backlog.Linux(backlog.DefaultLinuxConfig())
	ln := listen(t, &kernel.ListenConfig{Backlog: 10, Personality: p, Emulation: kernel.EmulateAfterAccept}, "tcp4", "127.0.0.1:0")
	cs := dialAll(t, ln, 3)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if reset, err := wasReset(c, time.Second); err != nil || !reset {
			t.Errorf("client %d after Close: reset %v (%v); want reset", i, reset, err)
		}
	}
	if s := ln.Stats(); s.Reset != 3 {
		t.Errorf("Reset %d; want 3", s.Reset)
	}
}
