package kernel_test

import (
	"bufio"
	"compress/gzip"
	"net"
	"os"
	"regexp"
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

// instant is a moment as the wall clock and the kernel's jiffies have it.
type instant struct {
	wall    time.Time
	jiffies uint64
}

// jiffiesLine finds the jiffies in /proc/timer_list.
var jiffiesLine = regexp.MustCompile(`(?m)^jiffies: (\d+)$`)

// now returns the wall clock and the jiffies (from /proc/timer_list); it
// skips the test where the kernel does not show them.
func now(t *testing.T) instant {
	t.Helper()
	b, err := os.ReadFile("/proc/timer_list")
	m := jiffiesLine.FindSubmatch(b)
	if err != nil || m == nil {
		t.Skipf("no jiffies in /proc/timer_list: %v", err)
	}
	j, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return instant{time.Now(), j}
}

// TestQueueWaitWithinATick holds connections in the accept queue for
// chosen times and checks the wait Accept reads from the kernel (TCP_INFO
// tcpi_last_data_sent) against what the test sees: the kernel created the
// connection after the dial started and before the test saw it queued,
// and the reading happened between the test's clock readings around it.
//
// The kernel counts the wait in jiffies (net/ipv4/tcp.c tcp_get_info:
// jiffies_to_msecs of now minus lsndtime), so against the jiffies the
// test reads around those moments (/proc/timer_list) the figure is exact:
// as many ticks as passed, no fewer than between "queued" and the
// reading, no more than between the dial and it. Against the wall clock
// it is within one tick, plus however far the jiffies ran behind the wall
// clock over the same time and caught up (on a virtual machine whose
// vCPU is not scheduled for a while, ticks come late: this host has been
// seen 8 ms behind). With a personality emulated in front of the kernel's
// queue, the wait covers both queues. A client that sends its request
// before accept() does not change it: the figure counts the server's
// sending.
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
			var lowSum, highSum, slack time.Duration
			for _, hold := range []time.Duration{0, 90 * time.Millisecond, 330 * time.Millisecond} {
				dial0 := now(t)
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
				queued := now(t)
				time.Sleep(hold)
				a0 := now(t)
				sc, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				a1 := now(t)
				defer sc.Close()
				m, ok := kernel.QueueWaitOf(sc)
				r1 := now(t)
				if !ok {
					t.Fatal("no TCP_INFO")
				}
				// In ticks: exact.
				lowJ, highJ := time.Duration(a0.jiffies-queued.jiffies)*tick, time.Duration(r1.jiffies-dial0.jiffies)*tick
				if m < lowJ || m > highJ {
					t.Errorf("held %v: the kernel says %v; from %v to %v of jiffies passed", hold, m, lowJ, highJ)
				}
				// In wall time: within a tick, and whatever the jiffies
				// lagged.
				lag := (time.Duration(r1.jiffies-dial0.jiffies)*tick - r1.wall.Sub(dial0.wall)).Abs()
				low, high := a0.wall.Sub(queued.wall), r1.wall.Sub(dial0.wall)
				t.Logf("held %v: kernel %v; true wait from %v to %v; jiffies %v to %v; jiffies off the wall clock by %v",
					hold, m, low.Round(time.Millisecond/10), high.Round(time.Millisecond/10), lowJ, highJ, lag.Round(time.Millisecond/10))
				if m < low-tick-lag || m > high+tick+lag {
					t.Errorf("held %v: the kernel says %v; the true wait was from %v to %v, give or take a tick of %v and the jiffies' lag of %v", hold, m, low, high, tick, lag)
				}
				lowSum += a0.wall.Sub(queued.wall)
				highSum += a1.wall.Sub(dial0.wall)
				slack += tick + lag
			}
			s := ln.Stats()
			if !s.Observed(backlog.StatQueueWait) || s.QueueWait.Count != 3 {
				t.Fatalf("Stats.QueueWait %+v (observed %v); want 3 waits", s.QueueWait, s.Observed(backlog.StatQueueWait))
			}
			if sum := s.QueueWait.Sum; sum < lowSum-slack || sum > highSum+slack {
				t.Errorf("the waits Accept read add up to %v; the true waits to between %v and %v, give or take %v", sum, lowSum, highSum, slack)
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
