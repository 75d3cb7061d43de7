package netstack

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
)

// pair returns a network with a server and a client host, closed when the
// test ends.
func pair(t testing.TB, cfg *NetworkConfig) (n *Network, srv, cli *Host) {
	t.Helper()
	n = NewNetwork(cfg)
	t.Cleanup(func() { n.Close() })
	var err error
	if srv, err = n.NewHost(); err != nil {
		t.Fatal(err)
	}
	if cli, err = n.NewHost(); err != nil {
		t.Fatal(err)
	}
	return n, srv, cli
}

func listen(t testing.TB, h *Host, personality string, backlogN int) *Listener {
	t.Helper()
	l, err := h.Listen(context.Background(), "tcp", ":80", &ListenConfig{Personality: backlog.MustLookup(personality), Backlog: backlogN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestEcho(t *testing.T) {
	_, srv, cli := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	go echo(l)
	for _, target := range []string{"198.18.0.1:80", "[fdb1:ac6::1]:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := cli.Dial(ctx, "tcp", target)
		cancel()
		if err != nil {
			t.Fatalf("dial %s: %v", target, err)
		}
		msg := []byte("hello, " + target)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
			t.Fatalf("echo from %s: %q, %v", target, buf, err)
		}
		c.Close()
	}
	if s := l.Stats(); s.Accepted != 2 || s.Queued != 2 {
		t.Errorf("stats %+v; want 2 queued and accepted", s)
	}
}

func TestHostCloseFreesItsAddresses(t *testing.T) {
	n := NewNetwork(nil)
	defer n.Close()
	a := netip.MustParseAddr("10.1.2.3")
	h, err := n.NewHost(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.NewHost(a); err == nil {
		t.Fatal("two hosts got 10.1.2.3")
	}
	h.Close()
	if _, err := n.NewHost(a); err != nil {
		t.Fatalf("after Close, the address is still taken: %v", err)
	}
	n.Close()
	if _, err := n.NewHost(); err != ErrNetworkClosed {
		t.Errorf("NewHost on a closed network: %v; want ErrNetworkClosed", err)
	}
}

// TestDialOwnWildcardAddr: a listener on a wildcard address is reached
// through its own Addr, from its own host, as with the kernel's sockets.
func TestDialOwnWildcardAddr(t *testing.T) {
	_, srv, _ := pair(t, nil)
	for _, network := range []string{"tcp", "tcp4", "tcp6"} {
		l, err := srv.Listen(context.Background(), network, ":0", nil)
		if err != nil {
			t.Fatal(err)
		}
		go echo(l)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := srv.Dial(ctx, network, l.Addr().String())
		cancel()
		if err != nil {
			t.Fatalf("%s: dial %v: %v", network, l.Addr(), err)
		}
		c.Close()
		l.Close()
	}
}

// TestDialUnownedAddressIsUnreachable: no host of the network has the
// address, so the dial fails at once with EHOSTUNREACH instead of waiting
// for SYN retransmissions that nobody will answer.
func TestDialUnownedAddressIsUnreachable(t *testing.T) {
	_, _, cli := pair(t, nil)
	for _, target := range []string{"198.18.9.9:80", "[fdb1:ac6::99]:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Dial(ctx, "tcp", target)
		cancel()
		if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial %s: %v; want EHOSTUNREACH", target, err)
		}
	}
}
