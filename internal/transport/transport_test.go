package transport

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOpenAndDial opens a listener on each transport, connects a client
// from a chosen port and accepts it there.
func TestOpenAndDial(t *testing.T) {
	nt4 := backlog.MustLookup("winnt4-workstation")
	type openCase struct {
		cfg          Config
		wantEmulated bool
		wantBacklog  int
	}
	cases := []openCase{
		{Config{Transport: Netstack, Personality: nt4, Backlog: 300}, false, 5},
		{Config{Transport: Netstack, Personality: backlog.MustLookup("linux"), Backlog: 0}, false, 0},
	}
	if runtime.GOOS == "linux" {
		cases = append(cases,
			openCase{Config{Transport: Kernel, Backlog: 7}, false, 7},
			// After accept(): the shaper would change this host's
			// firewall, outside a namespace of the test's own.
			openCase{Config{Transport: Kernel, Personality: nt4, Backlog: 300, Emulation: kernel.EmulateAfterAccept}, true, 5},
			openCase{Config{Transport: Kernel, Emulate: true, Backlog: 3, Emulation: kernel.EmulateAfterAccept}, true, 3},
		)
	}
	for _, c := range cases {
		srv, err := Open(context.Background(), c.cfg)
		if err != nil {
			t.Fatalf("%+v: %v", c.cfg, err)
		}
		if srv.Emulated != c.wantEmulated || srv.Listener.Backlog() != c.wantBacklog {
			t.Errorf("%s/%s: emulated %v, backlog %d; want %v, %d", srv.Transport, srv.Personality, srv.Emulated, srv.Listener.Backlog(), c.wantEmulated, c.wantBacklog)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cl, err := srv.DialFrom(ctx, 17001)
		cancel()
		if err != nil {
			t.Fatalf("%s: dial: %v", srv.Transport, err)
		}
		c, err := srv.Listener.Accept()
		if err != nil {
			t.Fatalf("%s: accept: %v", srv.Transport, err)
		}
		if p := c.RemoteAddr().(*net.TCPAddr).Port; p != 17001 {
			t.Errorf("%s: the client came from port %d; want 17001", srv.Transport, p)
		}
		c.Close()
		cl.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("%s: Close: %v", srv.Transport, err)
		}
	}
}

func TestUnknownTransport(t *testing.T) {
	if _, err := Open(context.Background(), Config{Transport: "carrier-pigeon"}); err == nil {
		t.Fatal("Open with an unknown transport succeeded")
	}
}
