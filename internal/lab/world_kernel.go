package lab

import (
	"context"
	"net"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// kernelWorld is this host's kernel, on loopback. A personality other than
// the host's own is emulated: a queue with its rules in front of the
// kernel's (see package kernel for what that can and cannot reproduce).
type kernelWorld struct {
	addr string
}

func newKernelWorld() (world, error) { return &kernelWorld{}, nil }

func (w *kernelWorld) listen(ctx context.Context, p backlog.Personality, requested int) (backlog.Listener, error) {
	lc := kernel.ListenConfig{Backlog: listenBacklog(requested)}
	if host, err := kernel.HostPersonality(); err != nil || host.String() != p.String() {
		lc.Personality = &p
	}
	l, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w.addr = l.Addr().String()
	return l, nil
}

func (w *kernelWorld) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp4", w.addr)
}

func (w *kernelWorld) close() {}
