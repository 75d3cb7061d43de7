package lab

import (
	"context"
	"fmt"
	"net"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/netstack"
)

func newWorld(transport string) (world, error) {
	switch transport {
	case Netstack:
		return newNetstackWorld()
	case Kernel:
		return newKernelWorld()
	}
	return nil, fmt.Errorf("unknown transport %q; valid: %s, %s", transport, Netstack, Kernel)
}

// listenBacklog turns a lab's requested backlog into a ListenConfig's: there,
// 0 means the default, and backlog.ZeroBacklog means 0.
func listenBacklog(requested int) int {
	if requested == 0 {
		return backlog.ZeroBacklog
	}
	return requested
}

// netstackWorld is two in-process hosts: a server and a client.
type netstackWorld struct {
	n        *netstack.Network
	srv, cli *netstack.Host
	target   string
}

func newNetstackWorld() (*netstackWorld, error) {
	n := netstack.NewNetwork(nil)
	srv, err := n.NewHost()
	if err != nil {
		n.Close()
		return nil, err
	}
	cli, err := n.NewHost()
	if err != nil {
		n.Close()
		return nil, err
	}
	return &netstackWorld{n: n, srv: srv, cli: cli, target: net.JoinHostPort(srv.Addrs()[0].String(), "80")}, nil
}

func (w *netstackWorld) listen(ctx context.Context, p backlog.Personality, requested int) (backlog.Listener, error) {
	return w.srv.Listen(ctx, "tcp", ":80", &netstack.ListenConfig{Personality: p, Backlog: listenBacklog(requested)})
}

func (w *netstackWorld) dial(ctx context.Context) (net.Conn, error) {
	return w.cli.Dial(ctx, "tcp", w.target)
}

func (w *netstackWorld) close() { w.n.Close() }
