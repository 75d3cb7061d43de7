package kernel_test

import (
	"bufio"
	"compress/gzip"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// timerTick is the kernel's jiffy (CONFIG_HZ from /proc/config.gz), or
// 10 ms, the longest any configuration has, when the configuration
// cannot be read.
func timerTick(t *testing.T) time.Duration {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return 10 * time.Millisecond
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return 10 * time.Millisecond
	}
	sc := bufio.NewScanner(z)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			if hz, err := strconv.Atoi(v); err == nil && hz > 0 {
				return time.Second / time.Duration(hz)
			}
		}
	}
	return 10 * time.Millisecond
}

// TestQueueWaitWithinATick holds connections in the accept queue for
// chosen times and checks that the wait Accept reads from the kernel
// (TCP_INFO tcpi_last_data_sent) is within one timer tick of the true
// wait. The true wait is bracketed by what the test sees: the kernel
// created the connection after the dial started and before the test saw
// it queued, and the reading happened between the test's clock readings
// around it. With a personality emulated in front of the kernel's queue,
// the wait covers both queues. A client that sends its request before
// accept() does not change it: the figure counts the server's sending.
func TestQueueWaitWithinATick(t *testing.T) {
	tick := timerTick(t)
	t.Logf("timer tick %v", tick)
	for _, tc := range []struct {
		name string
		lc   kernel.ListenConfig
		data bool
	}{
		{"plain", kernel.ListenConfig{Backlog: 8}, false},
		{"request-sent", kernel.ListenConfig{Backlog: 8}, true},
		{"emulated", kernel.ListenConfig{Backlog: 8, Personality: backlog.MustLookup("linux")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ln := listen(t, &tc.lc, "tcp4", "127.0.0.1:0")
			var lowSum, highSum time.Duration
			for _, hold := range []time.Duration{0, 90 * time.Millisecond, 330 * time.Millisecond} {
				dial0 := time.Now()
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if tc.data {
					c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				}
				if !waitFor(5*time.Second, func() bool { return ln.Stats().Len == 1 }) {
					t.Fatal("the connection did not reach the queue")
				}
				queued := time.Now()
				time.Sleep(hold)
				a0 := time.Now()
				sc, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				a1 := time.Now()
				defer sc.Close()
				lowSum += a0.Sub(queued)
				highSum += a1.Sub(dial0)
				r0 := time.Now()
				m, ok := kernel.QueueWaitOf(sc)
				r1 := time.Now()
				if !ok {
					t.Fatal("no TCP_INFO")
				}
				low, high := r0.Sub(queued)-tick, r1.Sub(dial0)+tick
				t.Logf("held %v: kernel %v, true wait from %v to %v", hold, m, (low + tick).Round(time.Millisecond/10), (high - tick).Round(time.Millisecond/10))
				if m <= low || m >= high {
					t.Errorf("held %v: the kernel says %v; the true wait was from %v to %v, give or take a tick of %v", hold, m, low+tick, high-tick, tick)
				}
			}
			s := ln.Stats()
			if !s.Observed(backlog.StatQueueWait) || s.QueueWait.Count != 3 {
				t.Fatalf("Stats.QueueWait %+v (observed %v); want 3 waits", s.QueueWait, s.Observed(backlog.StatQueueWait))
			}
			if sum := s.QueueWait.Sum; sum <= lowSum-3*tick || sum >= highSum+3*tick {
				t.Errorf("the waits Accept read add up to %v; the true waits to between %v and %v", sum, lowSum, highSum)
			}
		})
	}
}

// TestQueueWaitSkipped: with SkipQueueWait, and on a unix-domain
// listener, the wait is unobserved, not zero.
func TestQueueWaitSkipped(t *testing.T) {
	ln := listen(t, &kernel.ListenConfig{SkipQueueWait: true}, "tcp4", "127.0.0.1:0")
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
	if s := ln.Stats(); s.Observed(backlog.StatQueueWait) || s.QueueWait.Count != 0 {
		t.Errorf("SkipQueueWait: %+v observed %v; want unobserved", s.QueueWait, s.Observed(backlog.StatQueueWait))
	}
	u := listen(t, &kernel.ListenConfig{}, "unix", t.TempDir()+"/s")
	if s := u.Stats(); s.Observed(backlog.StatQueueWait) {
		t.Errorf("a unix-domain listener observes the queue wait")
	}
}
