package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

func requireLinux(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag, TCP_INFO and /proc/net/netstat are Linux only")
	}
}

// queueListener listens on loopback with exactly backlog n (nobody
// accepts), connects clients to it one after another, each waiting until
// the kernel has queued it, then, with overflow, one more client whose SYN
// the full queue drops until its dial gives up. Everything is closed when
// the test ends.
func queueListener(t *testing.T, n, clients int, overflow bool) (*kernel.Listener, int) {
	t.Helper()
	if n == 0 {
		n = backlog.ZeroBacklog
	}
	ln, err := kernel.Listen("tcp4", "127.0.0.1:0", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	for i := range clients {
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatalf("client %d of %d: %v", i+1, clients, err)
		}
		t.Cleanup(func() { c.Close() })
		if !queued(ln, i+1) {
			t.Fatalf("client %d connected but is not in the queue", i+1)
		}
	}
	if overflow {
		if c, err := d.Dial("tcp4", ln.Addr().String()); err == nil {
			c.Close()
			t.Fatalf("a client got into a full queue (backlog %d, %d waiting)", n, clients)
		}
	}
	return ln, ln.Addr().(*net.TCPAddr).Port
}

func requireSS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) not installed")
	}
}

// ssListener returns what ss shows for the TCP listener on port: Recv-Q
// (the queue length) and Send-Q (the stored backlog).
func ssListener(port int) (recvQ, sendQ int, err error) {
	out, err := exec.Command("ss", "-Hlnt", "sport", "=", ":"+strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 || f[0] != "LISTEN" {
		return 0, 0, fmt.Errorf("no listener on port %d: %q", port, out)
	}
	recvQ, _ = strconv.Atoi(f[1])
	sendQ, _ = strconv.Atoi(f[2])
	return recvQ, sendQ, nil
}

// selfComm is this process's name, as top shows it.
func selfComm(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cells splits a line of a tabwriter table into its cells.
var cells = regexp.MustCompile(` {2,}`)

// realign replaces what varies from run to run in a table (the old strings
// of repl by the new ones, in every cell) and aligns it again, so that a
// placeholder of another width does not shift the columns. The first
// `keep` lines are taken as they are, after repl.
func realign(s string, keep int, repl *strings.Replacer) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	var b bytes.Buffer
	for _, l := range lines[:keep] {
		b.WriteString(repl.Replace(l) + "\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, l := range lines[keep:] {
		cs := cells.Split(l, -1)
		for i := range cs {
			cs[i] = repl.Replace(cs[i])
		}
		fmt.Fprintln(tw, strings.Join(cs, "\t"))
	}
	tw.Flush()
	return b.String()
}

// digits matches numbers in the counters' header line.
var digits = regexp.MustCompile(`[0-9]+(\.[0-9]+)?`)

// threeQueues makes the test's listeners: backlog 1 full with a dropped
// SYN, backlog 5 with one waiting, and backlog 0 empty.
func threeQueues(t *testing.T) (full, one, empty int) {
	_, full = queueListener(t, 1, 2, true)
	_, one = queueListener(t, 5, 1, false)
	_, empty = queueListener(t, 0, 0, false)
	return full, one, empty
}

func portArgs(ports ...int) []string {
	var args []string
	for _, p := range ports {
		args = append(args, "--port", strconv.Itoa(p))
	}
	return args
}

// TestTopOnceJSON checks that top reports the test's own listeners as the
// kernel holds them (and as ss shows them), with the keys scripts rely on,
// fullest first.
func TestTopOnceJSON(t *testing.T) {
	requireLinux(t)
	full, one, empty := threeQueues(t)
	args := append([]string{"top", "--once", "--json", "--interval", "50ms"}, portArgs(empty, one, full)...)
	code, out, errOut := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, r := range raw {
		for _, k := range []string{"local", "pid", "process", "queue", "backlog", "drops", "capacity", "queue_per_s", "drops_per_s", "uid", "inode"} {
			if _, ok := r[k]; !ok {
				t.Errorf("%v: no key %q", r["local"], k)
			}
		}
	}
	var rows []topRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		port                            int
		queue, backlog, capacity, drops int
	}{{full, 2, 1, 2, 1}, {one, 1, 5, 6, 0}, {empty, 0, 0, 1, 0}}
	if len(rows) != len(want) {
		t.Fatalf("%d rows; want %d: %s", len(rows), len(want), out)
	}
	comm := selfComm(t)
	for i, w := range want {
		r := rows[i]
		if r.Local != fmt.Sprintf("127.0.0.1:%d", w.port) || r.Queue != w.queue || r.Backlog != w.backlog || r.Capacity != w.capacity || r.Drops != uint64(w.drops) {
			t.Errorf("row %d: %s queue %d backlog %d capacity %d drops %d; want 127.0.0.1:%d %d %d %d %d",
				i, r.Local, r.Queue, r.Backlog, r.Capacity, r.Drops, w.port, w.queue, w.backlog, w.capacity, w.drops)
		}
		if r.PID != os.Getpid() || r.Process != comm {
			t.Errorf("%s: pid %d process %q; want %d %q", r.Local, r.PID, r.Process, os.Getpid(), comm)
		}
		if r.QueueRate == nil || r.DropRate == nil || *r.QueueRate != 0 || *r.DropRate != 0 {
			t.Errorf("%s: rates %v %v; want 0 and 0 (nothing changed between the readings)", r.Local, r.QueueRate, r.DropRate)
		}
		if _, err := exec.LookPath("ss"); err != nil {
			continue
		}
		if recvQ, sendQ, err := ssListener(w.port); err != nil || recvQ != r.Queue || sendQ != r.Backlog {
			t.Errorf("%s: ss Recv-Q %d Send-Q %d (%v); top says queue %d backlog %d", r.Local, recvQ, sendQ, err, r.Queue, r.Backlog)
		}
	}
}

// TestTopFilters checks --process and --limit: a name no process has
// matches nothing, and --limit keeps the fullest.
func TestTopFilters(t *testing.T) {
	requireLinux(t)
	full, one, _ := threeQueues(t)
	for _, tt := range []struct {
		args  []string
		ports []int
	}{
		{[]string{"--process", selfComm(t), "--limit", "1"}, []int{full}},
		{[]string{"--process", "no-such-process"}, nil},
		{[]string{"--process", "no-such-process", "--process", selfComm(t)}, []int{full, one}},
	} {
		args := append(append([]string{"top", "--once", "--json", "--interval", "10ms"}, portArgs(full, one)...), tt.args...)
		code, out, errOut := run(t, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", tt.args, code, errOut)
		}
		var rows []topRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, r := range rows {
			got = append(got, int(netip.MustParseAddrPort(r.Local).Port()))
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.ports) {
			t.Errorf("%q: ports %v; want %v", tt.args, got, tt.ports)
		}
	}
}

// TestTopGolden compares the text of one snapshot with the golden file,
// with ports, pid, process name and the host's counters replaced.
func TestTopGolden(t *testing.T) {
	requireLinux(t)
	full, one, empty := threeQueues(t)
	args := append([]string{"top", "--once", "--interval", "50ms"}, portArgs(one, empty, full)...)
	code, out, errOut := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	header, table, _ := strings.Cut(out, "\n")
	header = digits.ReplaceAllString(header, "N")
	header = strings.Replace(header, "N of N listening", "3 of N listening", 1)
	repl := strings.NewReplacer(
		strconv.Itoa(full), "PORT1", strconv.Itoa(one), "PORT2", strconv.Itoa(empty), "PORT3",
		strconv.Itoa(os.Getpid()), "PID", selfComm(t), "PROCESS")
	golden(t, "top_once.golden", header+"\n"+realign(table, 0, repl))
	if !strings.Contains(out, " 3 of ") {
		t.Errorf("header does not count the 3 sockets kept: %q", header)
	}
}

// syncBuffer is a bytes.Buffer safe to write from the command while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitOutput waits until cond holds for the output, or fails the test
// after a generous bound (this is no timing assertion: a healthy run takes
// a fraction of it).
func waitOutput(t *testing.T, out *syncBuffer, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := out.String()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the output:\n%s", what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTopStreams runs top without --once and without a terminal: it prints
// a table every interval, the first without rates, the later ones with;
// a client that joins the queue shows as a larger queue with a positive
// rate; cancelling the context ends it with status 0.
func TestTopStreams(t *testing.T) {
	requireLinux(t)
	ln, port := queueListener(t, 3, 1, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"top", "--interval", "20ms", "--port", strconv.Itoa(port)}, &out, &bytes.Buffer{})
	}()
	tables := func(s string) []string { return strings.Split(strings.TrimSpace(s), "\n\n") }
	rowOf := func(table string) []string {
		lines := strings.Split(table, "\n")
		return cells.Split(lines[len(lines)-1], -1)
	}
	s := waitOutput(t, &out, "second table", func(s string) bool { return len(tables(s)) >= 3 })
	first, second := rowOf(tables(s)[0]), rowOf(tables(s)[1])
	if first[3] != "1" || first[7] != "-" || first[8] != "-" {
		t.Errorf("first table: %q; want queue 1 and no rates", first)
	}
	if second[7] != "+0.0" || second[8] != "+0.0" {
		t.Errorf("second table: %q; want rates +0.0", second)
	}
	c, err := net.DialTimeout("tcp4", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The first table that sees the second client has a positive queue
	// rate.
	grown := func(s string) []string {
		for _, tb := range tables(s) {
			if r := rowOf(tb); r[3] == "2" {
				return r
			}
		}
		return nil
	}
	s = waitOutput(t, &out, "queue of 2", func(s string) bool { return grown(s) != nil })
	if r := grown(s); !strings.HasPrefix(r[7], "+") || r[7] == "+0.0" {
		t.Errorf("the queue grew to 2 with rate %q; want a positive rate", r[7])
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after cancel; want 0", code)
	}
}

// TestTopRows checks sorting and rates on readings made up for the test:
// fullest first, then most drops, then port; rates per second between the
// readings; none for a socket the first reading did not have.
func TestTopRows(t *testing.T) {
	sock := func(port uint16, inode uint64, queue, backlog int, drops uint64, proc string) kernel.Socket {
		return kernel.Socket{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), Inode: inode,
			Len: queue, Backlog: backlog, Drops: drops, PID: 1, Process: proc}
	}
	t0 := time.Unix(1000, 0)
	prev := topReading{at: t0, sockets: []kernel.Socket{
		sock(80, 1, 0, 9, 0, "nginx"), sock(81, 2, 1, 1, 4, "redis"), sock(82, 3, 3, 7, 10, "app"),
		sock(84, 5, 0, 4096, 0, "idle"),
	}}
	cur := topReading{at: t0.Add(2 * time.Second), sockets: []kernel.Socket{
		sock(80, 1, 4, 9, 0, "nginx"),   // 40% full, queue +2/s
		sock(81, 2, 1, 1, 10, "redis"),  // 50%, drops +3/s
		sock(82, 3, 4, 7, 12, "app"),    // 50%, more drops than 81
		sock(83, 4, 0, 0, 0, "new"),     // 0%, no rates; port before 84
		sock(84, 5, 0, 4096, 0, "idle"), // 0%, rates 0
	}}
	plusOne := func(n int) int { return n + 1 }
	rows := topRows(&prev, cur, topFilter{}, plusOne)
	var order []string
	for _, r := range rows {
		order = append(order, r.Process)
	}
	if got, want := strings.Join(order, " "), "app redis nginx new idle"; got != want {
		t.Errorf("order %q; want %q", got, want)
	}
	byName := map[string]topRow{}
	for _, r := range rows {
		byName[r.Process] = r
	}
	rateOf := func(p *float64) string {
		if p == nil {
			return "none"
		}
		return strconv.FormatFloat(*p, 'f', -1, 64)
	}
	for _, tt := range []struct{ name, queue, drops string }{
		{"nginx", "2", "0"}, {"redis", "0", "3"}, {"app", "0.5", "1"}, {"new", "none", "none"}, {"idle", "0", "0"},
	} {
		r := byName[tt.name]
		if rateOf(r.QueueRate) != tt.queue || rateOf(r.DropRate) != tt.drops {
			t.Errorf("%s: queue %s/s drops %s/s; want %s and %s", tt.name, rateOf(r.QueueRate), rateOf(r.DropRate), tt.queue, tt.drops)
		}
	}
	if r := byName["redis"]; r.Capacity != 2 || r.Full != 0.5 {
		t.Errorf("redis: capacity %d full %v; want 2 and 0.5", r.Capacity, r.Full)
	}
	if rows := topRows(nil, cur, topFilter{}, plusOne); rows[0].QueueRate != nil {
		t.Errorf("first reading has rates")
	}
	f := topFilter{ports: map[uint16]bool{80: true, 83: true}, processes: map[string]bool{"new": true}}
	if rows := topRows(&prev, cur, f, plusOne); len(rows) != 1 || rows[0].Process != "new" {
		t.Errorf("--port 80 --port 83 --process new kept %v; want only new", rows)
	}
}

func TestTopMisuse(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		mention string
	}{
		{[]string{"top", "--frob"}, "flag provided but not defined: -frob; flags: --interval, --json, --limit, --once, --port, --process"},
		{[]string{"top", "--interval", "0s"}, "--interval must be from 10ms to 1h"},
		{[]string{"top", "--interval", "2h"}, "--interval must be from 10ms to 1h"},
		{[]string{"top", "--interval", "soon"}, `invalid value "soon" for flag -interval`},
		{[]string{"top", "--port", "0"}, `--port "0": give a port from 1 to 65535`},
		{[]string{"top", "--port", "65536"}, `--port "65536": give a port from 1 to 65535`},
		{[]string{"top", "--port", "http"}, `--port "http": give a port from 1 to 65535`},
		{[]string{"top", "--json"}, "--json needs --once"},
		{[]string{"top", "--limit", "-1"}, "--limit must be 0 (all) or more"},
		{[]string{"top", "nginx"}, `unexpected argument "nginx"; top takes only flags`},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tt.mention) || out != "" {
			t.Errorf("backlog %q: exit %d, stdout %q, stderr %q; want exit 2, no output and one line mentioning %q", tt.args, code, out, errOut, tt.mention)
		}
	}
}
