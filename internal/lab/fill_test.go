package lab

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// TestFill fills real kernel listeners on loopback.
func TestFill(t *testing.T) {
	// A listener that never accepts, with backlog 1: two wait (N+1).
	l, err := (&kernel.ListenConfig{Backlog: 1}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := Fill(context.Background(), FillConfig{Network: "tcp", Address: l.Addr().String(), Clients: 5, Arrival: 5 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if r.Connected != 2 || r.TimedOut != 3 || r.Connected+r.Refused+r.TimedOut+r.Failed+r.Unfinished != r.Clients || r.Interrupted {
		t.Errorf("backlog 1, never accepting: %+v; want 2 connected, 3 timed out", r)
	}

	// An emulated Windows NT 4.0 Workstation resets what it refuses.
	nt4 := backlog.MustLookup("winnt4-workstation")
	e, err := (&kernel.ListenConfig{Backlog: 2, Personality: nt4, Emulation: kernel.EmulateAfterAccept}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r = Fill(context.Background(), FillConfig{Network: "tcp", Address: e.Addr().String(), Clients: 5, Arrival: 5 * time.Millisecond, Timeout: time.Second, Hold: 200 * time.Millisecond})
	if r.Reset != 3 || r.Connected != 5 || r.TimedOut != 0 {
		t.Errorf("emulated NT 4.0, backlog 2: %+v; want 3 reset (after or during connect)", r)
	}

	// No listener at all: every client is refused.
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	r = Fill(context.Background(), FillConfig{Network: "tcp", Address: closed, Clients: 3, Timeout: time.Second})
	if r.Refused != 3 || r.Errors["ECONNREFUSED"] != 3 {
		t.Errorf("closed port: %+v; want 3 refused with ECONNREFUSED", r)
	}
}
