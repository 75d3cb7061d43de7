package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/kernel"
)

// lines is a writer that tests can watch while a command runs.
type lines struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func newLines() *lines { return &lines{wake: make(chan struct{}, 1)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// await waits until the output matches re and returns the first submatch.
func (l *lines) await(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(l.String()); m != nil {
			return m[1]
		}
		select {
		case <-l.wake:
		case <-deadline:
			t.Fatalf("no %v in output:\n%s", re, l.String())
		}
	}
}

var (
	servingOn = regexp.MustCompile(`serving \w+ on (\S+) `)
	metricsOn = regexp.MustCompile(`metrics on (http://\S+)`)
)

// startServe runs backlog serve in process until the returned stop is
// called; stop returns Run's error.
func startServe(t *testing.T, args ...string) (out *lines, stop func() error) {
	return startServeAfter(t, nil, args...)
}

// startServeAfter is startServe with serve's goroutine first calling
// before, which may fail the start.
func startServeAfter(t *testing.T, before func() error, args ...string) (out *lines, stop func() error) {
	t.Helper()
	return startCommand(t, before, "serve", args...)
}

// startCommand runs a command in process until the returned stop is
// called, its goroutine first calling before (if not nil), which may fail
// the start; stop returns Run's error. Its stdout and stderr both go to
// out.
func startCommand(t *testing.T, before func() error, cmd string, args ...string) (out *lines, stop func() error) {
	t.Helper()
	out = newLines()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		if before != nil {
			if err := before(); err != nil {
				errc <- err
				return
			}
		}
		errc <- Run(ctx, append([]string{cmd}, args...), out, out)
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s did not stop", cmd)
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return out, stop
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

func metricValue(t *testing.T, exposition, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\{[^}]*\} (\S+)$`).FindStringSubmatch(exposition)
	if m == nil {
		t.Fatalf("no %s in metrics:\n%s", name, exposition)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestServeHTTPAndMetrics serves HTTP on the kernel with metrics, answers a
// request, exports what it did, and stops cleanly when its context ends.
func TestServeHTTPAndMetrics(t *testing.T) {
	out, stop := startServe(t, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--backlog", "64", "--interval", "50ms")
	addr := out.await(t, servingOn)
	murl := out.await(t, metricsOn)
	if !strings.Contains(out.String(), "listen(64) stored 64, 65 can wait") {
		t.Errorf("start line does not give the stored backlog and capacity:\n%s", out)
	}
	if page := get(t, "http://"+addr+"/"); !strings.Contains(page, "backlog 64, 65 can wait") {
		t.Errorf("page: %q", page)
	}
	m := get(t, murl)
	if v := metricValue(t, m, "backlog_listener_accepted_total"); v < 1 {
		t.Errorf("accepted_total %v after a request", v)
	}
	if v := metricValue(t, m, "backlog_listener_queue_capacity"); v != 65 {
		t.Errorf("queue_capacity %v; want 65", v)
	}
	if err := stop(); !errors.Is(err, errInterrupted) {
		t.Errorf("serve returned %v when stopped; want errInterrupted (exit 130)", err)
	}
	if !strings.Contains(out.String(), "stopped after") {
		t.Errorf("no summary when stopped:\n%s", out)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still listening after stop")
	}
}

// TestServeFullQueue: a server that never accepts, with backlog 1, holds two
// connections; the SYNs of clients after them are dropped, which the
// metrics show.
func TestServeFullQueue(t *testing.T) {
	out, _ := startServe(t, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--backlog", "1", "--accept", "none", "--handler", "echo")
	addr := out.await(t, servingOn)
	murl := out.await(t, metricsOn)
	for i := 0; i < 4; i++ {
		if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
			defer c.Close()
		}
	}
	m := get(t, murl)
	if v := metricValue(t, m, "backlog_listener_queue_length"); v != 2 {
		t.Errorf("queue_length %v; want 2 (N+1)", v)
	}
	if v := metricValue(t, m, "backlog_listener_dropped_total"); v < 2 {
		t.Errorf("dropped_total %v; want the dropped SYNs of at least 2 clients", v)
	}
}

// TestServeReusePort runs two SO_REUSEPORT shards that never accept: the
// kernel lists them as a group of two on one address, their clients add up
// to what was dialled, the metrics keep them apart by inode, and the view
// shows each shard's queue and their imbalance.
func TestServeReusePort(t *testing.T) {
	requireLinux(t)
	out, _ := startServe(t, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--reuseport", "2",
		"--backlog", "16", "--accept", "none", "--handler", "echo", "--interval", "20ms")
	addr := out.await(t, servingOn)
	murl := out.await(t, metricsOn)
	const clients = 6
	for range clients {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	socks, err := kernel.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	var members []kernel.Socket
	for _, s := range socks {
		if s.Addr.String() == addr {
			members = append(members, s)
		}
	}
	if len(members) != 2 || members[0].Group != 2 || members[0].Len+members[1].Len != clients {
		t.Fatalf("the kernel lists %+v on %s; want a group of two holding %d", members, addr, clients)
	}
	all := parseExposition(t, get(t, murl))
	qs := find(all, "backlog_listener_queue_length", map[string]string{"listener": addr})
	if len(qs) != 2 || qs[0].labels["inode"] == qs[1].labels["inode"] || qs[0].value+qs[1].value != clients {
		t.Errorf("queue_length series %v; want two, by inode, adding up to %d", qs, clients)
	}
	view := regexp.MustCompile(`queue 6/34 \[(\d+) (\d+)\], imbalance (\d+)%`)
	m := view.FindStringSubmatch(out.await(t, regexp.MustCompile(`(queue 6/34 \[\d+ \d+\], imbalance \d+%)`)))
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	im, _ := strconv.Atoi(m[3])
	if a+b != clients || im != int(math.Round(100*math.Abs(float64(a-b))/17)) {
		t.Errorf("view %q: queues %d and %d, imbalance %d%%; want them to add to %d and differ by %.0f%% of 17", m[0], a, b, im, clients, 100*math.Abs(float64(a-b))/17)
	}
}
