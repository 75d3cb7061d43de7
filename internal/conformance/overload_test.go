package conformance

import (
	"context"
	"errors"
	"net"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
)

// TestOverloadBothTransports runs one sequence against the overload policy
// on both transports, on real waits. Four clients wait past the target;
// the first is served as a queue only forming is, and so is the second,
// half an interval later; an interval after the first, the queue stands:
// the other two, past the target, are reset, while a client that has just
// arrived is served. With the zero policy the same sequence serves all
// five, oldest first, and nothing is overdue. The rule is one piece of
// code behind both Accepts (internal/overload); this proves that each
// transport feeds it the same waits and acts alike on what it decides.
// Every sleep may run long on a busy machine without changing the
// outcome, as long as it stays under an interval, which the policy takes
// as the listener having been idle.
func TestOverloadBothTransports(t *testing.T) {
	const target, interval = 200 * time.Millisecond, 600 * time.Millisecond
	for _, tt := range []struct {
		name   string
		policy backlog.Overload
		// served lists the clients Accept returns, in order (A1..A4 are
		// 0..3, B is 4); the others are reset.
		served  []int
		overdue uint64
	}{
		{"off", backlog.Overload{}, []int{0, 1, 2, 3, 4}, 0},
		{"codel", backlog.Overload{Target: target, Interval: interval}, []int{0, 1, 4}, 2},
	} {
		for _, tp := range []string{transport.Netstack, transport.Kernel} {
			t.Run(tt.name+"/"+tp, func(t *testing.T) {
				if tp == transport.Kernel && runtime.GOOS != "linux" {
					t.Skip("the kernel transport reads a connection's wait on Linux only")
				}
				t.Parallel()
				ctx := context.Background()
				srv, err := transport.Open(ctx, transport.Config{Transport: tp, Backlog: 16, Overload: tt.policy})
				if err != nil {
					t.Fatal(err)
				}
				defer srv.Close()
				l := srv.Listener
				var clients []net.Conn
				dial := func() {
					c, err := srv.Dial(ctx)
					if err != nil {
						t.Fatal(err)
					}
					clients = append(clients, c)
					t.Cleanup(func() { c.Close() })
				}
				for range 4 {
					dial()
				}
				deadline := time.Now().Add(5 * time.Second)
				for l.Stats().Len < 4 {
					if time.Now().After(deadline) {
						t.Fatalf("the clients were not queued: %+v", l.Stats())
					}
					time.Sleep(time.Millisecond)
				}
				var served []int
				accept := func() {
					c, err := l.Accept()
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					for i, cl := range clients {
						if cl.LocalAddr().String() == c.RemoteAddr().String() {
							served = append(served, i)
							return
						}
					}
					t.Fatalf("accepted %v, none of the clients", c.RemoteAddr())
				}
				// Past the target: a queue forms, and its head is served;
				// half an interval later, still forming, the next.
				time.Sleep(target + target/2)
				accept()
				time.Sleep(interval / 2)
				accept()
				// An interval after the first it stands; B has just arrived.
				time.Sleep(interval/2 + interval/12)
				dial()
				for len(served) < len(tt.served) {
					accept()
				}
				if !slices.Equal(served, tt.served) {
					t.Errorf("served %v; want %v", served, tt.served)
				}
				for i, c := range clients {
					if slices.Contains(tt.served, i) {
						continue
					}
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("client %d, not served: read %v; want a reset", i, err)
					}
				}
				st := l.Stats()
				if !st.Observed(backlog.StatOverdue) || st.Overdue != tt.overdue {
					t.Errorf("overdue %d (observed %v); want %d", st.Overdue, st.Observed(backlog.StatOverdue), tt.overdue)
				}
			})
		}
	}
}
