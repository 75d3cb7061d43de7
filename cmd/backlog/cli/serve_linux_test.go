package cli

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// TestServeNetstackOverTUN serves a Windows NT 4.0 Workstation queue from a
// user-space stack on a TUN device in a namespace of the test's own: kernel
// clients there connect until it is full, then get ECONNREFUSED.
func TestServeNetstackOverTUN(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t)
	// serve makes the TUN device on its own goroutine's thread, which
	// enters the namespace first.
	out, _ := startServeAfter(t, func() error { return netnstest.Enter(ns) },
		"--transport", "netstack", "--tun", "tun0", "--addr", "198.18.0.2/15",
		"--listen", "198.18.0.2:7", "--personality", "winnt4-workstation", "--backlog", "2",
		"--accept", "none", "--handler", "echo")
	out.await(t, servingOn)
	dial := func() (err error) {
		netnstest.In(t, ns, func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", "198.18.0.2:7", 2*time.Second); err == nil {
				t.Cleanup(func() { c.Close() })
			}
		})
		return err
	}
	for i := 0; i < 2; i++ {
		if err := dial(); err != nil {
			t.Fatalf("kernel client %d: %v\n%s", i, err, out)
		}
	}
	if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("third kernel client: %v; want ECONNREFUSED", err)
	}
}
