package netstack

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// tunHost attaches a user-space host at 198.18.0.2 to a TUN device in a new
// namespace, whose kernel has 198.18.0.1/15 on the device.
func tunHost(t *testing.T) (ns string, h *Host) {
	t.Helper()
	netnstest.RequireRoot(t)
	ns = netnstest.New(t)
	netnstest.In(t, ns, func() {
		var err error
		h, err = AttachTUN(TUNConfig{
			Name: "tun0", Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
			KernelPrefix: netip.MustParsePrefix("198.18.0.1/15"),
		})
		if err != nil {
			t.Errorf("AttachTUN: %v", err)
		}
	})
	if h == nil {
		t.FailNow()
	}
	t.Cleanup(func() { h.Close() })
	return ns, h
}

// kernelDial connects from the namespace with the kernel's TCP.
func kernelDial(t *testing.T, ns, addr string, timeout time.Duration) (c net.Conn, err error) {
	t.Helper()
	netnstest.In(t, ns, func() {
		// The socket is created here, in the namespace; the connect may
		// finish on any thread.
		c, err = (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
	})
	return c, err
}

// TestTUNKernelClientRefused: kernel clients in a namespace connect over TUN
// to a Windows NT 4.0 Workstation listener with backlog 2; the third gets
// ECONNREFUSED from its own kernel, at once.
func TestTUNKernelClientRefused(t *testing.T) {
	ns, h := tunHost(t)
	listen(t, h, "winnt4-workstation", 2)
	for i := 0; i < 2; i++ {
		c, err := kernelDial(t, ns, "198.18.0.2:80", 5*time.Second)
		if err != nil {
			t.Fatalf("kernel client %d: %v", i, err)
		}
		defer c.Close()
	}
	start := time.Now()
	_, err := kernelDial(t, ns, "198.18.0.2:80", 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("third kernel client: %v; want ECONNREFUSED", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v; it should be at once", d)
	}
}

// TestTUNKernelClientIgnoredThenServed: under the linux personality the
// kernel client beyond N+1 hears nothing, retransmits its SYN, and gets in
// once the application accepts; data then flows both ways.
func TestTUNKernelClientIgnoredThenServed(t *testing.T) {
	ns, h := tunHost(t)
	l := listen(t, h, "linux", 1)
	for i := 0; i < 2; i++ {
		c, err := kernelDial(t, ns, "198.18.0.2:80", 5*time.Second)
		if err != nil {
			t.Fatalf("kernel client %d: %v", i, err)
		}
		defer c.Close()
		// The client is connected once it has the SYN-ACK; its final ACK
		// may reach the device after the next client's SYN (the kernel
		// answers what is written to a TUN device in softirq context).
		// Each handshake is to finish at both ends first.
		waitFor(t, "the server to queue the client", func() bool { return l.Len() == i+1 })
	}
	if _, err := kernelDial(t, ns, "198.18.0.2:80", 500*time.Millisecond); err == nil {
		t.Fatalf("third kernel client connected; the queue (N+1 = 2) was full: %+v", l.Stats())
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		echo(l)
	}()
	c, err := kernelDial(t, ns, "198.18.0.2:80", 10*time.Second)
	if err != nil {
		t.Fatalf("kernel client after accepts: %v", err)
	}
	defer c.Close()
	msg := make([]byte, 200_000)
	for i := range msg {
		msg[i] = byte(i)
	}
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo over TUN: %v", err)
	}
}
