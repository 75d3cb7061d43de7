package netstack

import (
	"context"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
)

// TestQueueWaitByTheHostClock holds two connections in the queue for
// chosen times on a virtual clock: the waits Stats reports are exactly
// those, in the buckets they belong to.
func TestQueueWaitByTheHostClock(t *testing.T) {
	clock := faketime.NewManualClock()
	_, srv, cli := pair(t, &NetworkConfig{Clock: clock})
	l := listen(t, srv, "linux", 5)
	if s := l.Stats(); !s.Observed(backlog.StatQueueWait) || s.QueueWait.Count != 0 {
		t.Fatalf("a new listener's wait: %+v observed %v; want none, observed", s.QueueWait, s.Observed(backlog.StatQueueWait))
	}
	var want backlog.QueueWait
	for _, hold := range []time.Duration{250 * time.Millisecond, 1500 * time.Millisecond} {
		c, err := cli.Dial(context.Background(), "tcp", serverAddr+":80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waitFor(t, "the connection to be queued", func() bool { return l.Len() == 1 })
		clock.Advance(hold)
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		want.Observe(hold)
	}
	if got := l.Stats().QueueWait; got != want {
		t.Errorf("QueueWait %+v; want %+v", got, want)
	}
}
