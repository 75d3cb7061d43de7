package kernel_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/kernel"
)

// requireSS skips a test that compares with ss when iproute2 is missing.
func requireSS(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) not installed")
	}
}

// listen creates a kernel listener and closes it when the test ends.
func listen(t testing.TB, lc *kernel.ListenConfig, network, address string) *kernel.Listener {
	t.Helper()
	ln, err := lc.Listen(context.Background(), network, address)
	if err != nil {
		t.Fatalf("Listen(%q, %q): %v", network, address, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// ssEntry is one line of ss output for a listening socket.
type ssEntry struct {
	local        string
	recvQ, sendQ int
	inode        uint64
	drops        uint64 // skmem d, with -m
	hasDrops     bool
	users        string // users:((...)), with -p
}

// ssListening runs ss -Hlnem with the given extra flags ("t" or "x", and
// "p" for holders) and filter, and returns its entries by socket inode.
func ssListening(t testing.TB, flags string, filter ...string) map[uint64]ssEntry {
	t.Helper()
	args := append([]string{"-Hlnem" + flags}, filter...)
	out, err := exec.Command("ss", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ss %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	entries := make(map[uint64]ssEntry)
	var last uint64
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "tcp" || f[0] == "u_str" {
			f = f[1:]
		}
		if len(f) >= 1 && strings.HasPrefix(f[0], "skmem:(") {
			// With -m, TCP sockets continue on a second line.
			if e, ok := entries[last]; ok {
				e.drops, e.hasDrops = skmemDrops(f[0])
				entries[last] = e
			}
			continue
		}
		if len(f) < 5 || f[0] != "LISTEN" {
			continue
		}
		e := ssEntry{local: f[3]}
		e.recvQ, _ = strconv.Atoi(f[1])
		e.sendQ, _ = strconv.Atoi(f[2])
		unixSocket := strings.Contains(flags, "x")
		if unixSocket {
			// State Recv-Q Send-Q Local Inode Peer PeerInode ...;
			// a later ino: is the file's, not the socket's.
			e.inode, _ = strconv.ParseUint(f[4], 10, 64)
		}
		for _, x := range f[4:] {
			switch {
			case strings.HasPrefix(x, "ino:") && !unixSocket:
				e.inode, _ = strconv.ParseUint(x[4:], 10, 64)
			case strings.HasPrefix(x, "users:"):
				e.users = x
			case strings.HasPrefix(x, "skmem:("):
				e.drops, e.hasDrops = skmemDrops(x)
			}
		}
		entries[e.inode] = e
		last = e.inode
	}
	return entries
}

// skmemDrops returns the d field of an ss skmem:(...) block.
func skmemDrops(s string) (uint64, bool) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "skmem:("), ")")
	for _, kv := range strings.Split(s, ",") {
		if v, ok := strings.CutPrefix(kv, "d"); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// ssFor returns ss's entry for the kernel listener ln.
func ssFor(t testing.TB, ln *kernel.Listener) ssEntry {
	t.Helper()
	s, err := ln.KernelStats()
	if err != nil {
		t.Fatalf("KernelStats: %v", err)
	}
	flags, filter := "x", []string(nil)
	if ln.Addr().Network() != "unix" {
		flags, filter = "t", []string{"sport", "=", fmt.Sprintf(":%d", port(ln))}
	}
	e, ok := ssListening(t, flags, filter...)[s.Inode]
	if !ok {
		t.Fatalf("ss does not list the listener %v (inode %d)", ln.Addr(), s.Inode)
	}
	return e
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fill dials n clients one after another, each with the given timeout,
// against a listener nobody accepts on, and returns the connected ones. After
// each connect it waits until the kernel has queued it, so that the next SYN
// meets the queue the previous client left. Clients are closed when the
// test ends.
func fill(t testing.TB, ln *kernel.Listener, n int, timeout time.Duration) (connected []net.Conn, failed int) {
	t.Helper()
	d := net.Dialer{Timeout: timeout}
	for range n {
		c, err := d.Dial(ln.Addr().Network(), ln.Addr().String())
		if err != nil {
			failed++
			continue
		}
		t.Cleanup(func() { c.Close() })
		connected = append(connected, c)
		want := len(connected)
		waitFor(time.Second, func() bool { return ln.Stats().Len >= want })
	}
	return connected, failed
}

// logRecords is a slog.Handler that keeps what it is given.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// warnings returns the attributes of each warning logged, as strings.
func (h *logRecords) warnings() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.records {
		if r.Level != slog.LevelWarn {
			continue
		}
		m := map[string]string{"msg": r.Message}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// writeSysctl sets a sysctl of the calling thread's network namespace.
func writeSysctl(name string, v int) error {
	return os.WriteFile("/proc/sys/"+name, []byte(strconv.Itoa(v)), 0)
}

// discard is a logger that drops everything, for examples.
var discard = slog.New(slog.DiscardHandler)
