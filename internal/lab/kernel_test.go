package lab

import (
	"runtime"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/transport"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// TestLabKernel runs the lab on this host's kernel, on loopback: its own
// rules hold N+1 and leave the rest without an answer; an emulated Windows NT
// 4.0 Workstation resets the clients it refuses, after their handshake,
// since the kernel completed it before the queue saw them.
func TestLabKernel(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the kernel transport reads back on Linux")
	}
	host, err := kernel.HostPersonality()
	if err != nil {
		t.Fatal(err)
	}
	r := runLab(t, Config{Personality: host, Transport: transport.Kernel, Backlog: 2, Clients: 6, Arrival: 10 * time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 300 * time.Millisecond})
	if r.Connected != 3 || r.TimedOut != 3 || r.InQueue != 3 || r.Capacity != 3 {
		t.Errorf("host kernel, listen(2): connected %d, timed out %d, in queue %d, capacity %d; want 3, 3, 3, 3", r.Connected, r.TimedOut, r.InQueue, r.Capacity)
	}
	r = runLab(t, Config{Personality: backlog.MustLookup("winnt4-workstation"), Transport: transport.Kernel, Emulation: kernel.EmulateAfterAccept, Backlog: 5, Clients: 8, Arrival: 10 * time.Millisecond, Accept: AcceptPolicy{Never: true}, Timeout: 300 * time.Millisecond})
	// The RST may reach a client before its connect() returns, which then
	// fails with ECONNRESET: connected and reset all the same.
	if r.Connected != 8 || r.Reset != 3 || r.Refused != 0 || r.Waiting != 5 || r.TimedOut != 0 || !r.Emulated {
		t.Errorf("emulated NT 4.0 Workstation: connected %d, reset %d, refused %d (%v), waiting %d, emulated %v; want 8 connected, 3 reset, 5 waiting",
			r.Connected, r.Reset, r.Refused, r.Errors, r.Waiting, r.Emulated)
	}
}
