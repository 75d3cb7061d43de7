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
	"unicode/utf8"

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
		for _, k := range []string{"local", "pid", "process", "queued_now", "backlog", "drops", "capacity", "queued_now_per_s", "drops_per_s", "uid", "inode",
			"syn_queue", "syn_retransmitted", "group", "group_imbalance"} {
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
	first, rest, _ := strings.Cut(out, "\n")
	second, table, _ := strings.Cut(rest, "\n")
	header := digits.ReplaceAllString(first+"\n"+second, "N")
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
// a client that joins the queue shows as a larger queue; cancelling the
// context ends it with status 130.
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
	if first[3] != "1" || first[8] != "-" {
		t.Errorf("first table: %q; want queue 1 and no rate", first)
	}
	if second[8] != "+0.0" {
		t.Errorf("second table: %q; want rate +0.0", second)
	}
	c, err := net.DialTimeout("tcp4", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	grown := func(s string) []string {
		for _, tb := range tables(s) {
			if r := rowOf(tb); r[3] == "2" {
				return r
			}
		}
		return nil
	}
	waitOutput(t, &out, "queue of 2", func(s string) bool { return grown(s) != nil })
	cancel()
	if code := <-done; code != 130 {
		t.Errorf("exit %d after cancel; want 130, interrupted", code)
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

// TestTopGroups: the members of an SO_REUSEPORT group stand together
// where their fullest member sorts, each with the group's imbalance, and
// a line after them says what they share.
func TestTopGroups(t *testing.T) {
	at := func(addr string, port uint16, inode uint64, queue, backlog int, group int) kernel.Socket {
		return kernel.Socket{Addr: netip.AddrPortFrom(netip.MustParseAddr(addr), port), Inode: inode,
			Len: queue, Backlog: backlog, Group: group, SynQueue: 7 * (group - 1), PID: 1, Process: "p"}
	}
	cur := topReading{at: time.Unix(1000, 0), sockets: []kernel.Socket{
		at("0.0.0.0", 80, 10, 0, 9, 3), at("0.0.0.0", 80, 11, 9, 9, 3), at("0.0.0.0", 80, 12, 1, 9, 3),
		at("127.0.0.1", 81, 20, 5, 9, 1),
	}}
	plusOne := func(n int) int { return n + 1 }
	rows := topRows(nil, cur, topFilter{}, plusOne)
	var order []uint64
	for _, r := range rows {
		order = append(order, r.Inode)
	}
	if fmt.Sprint(order) != "[10 11 12 20]" {
		t.Errorf("order %v; want the group (its member 11 is 90%% full) first, by inode, then 20", order)
	}
	for _, r := range rows[:3] {
		if r.GroupImbalance == nil || *r.GroupImbalance != 0.9 || r.Group != 3 || r.SynQueue != 14 {
			t.Errorf("member %d: imbalance %v, group %d, syn %d; want 0.9, 3, 14", r.Inode, r.GroupImbalance, r.Group, r.SynQueue)
		}
	}
	if rows[3].GroupImbalance != nil {
		t.Errorf("a socket alone has an imbalance")
	}
	var b bytes.Buffer
	if err := writeTop(&b, nil, cur, rows, 0, topLayout{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(b.String(), "  └ reuseport group of 3: imbalance 90%, SYN-Q 14\n127.0.0.1:81") {
		t.Errorf("no group line after the group:\n%s", b.String())
	}
	if c := cells.Split(lines[3], -1); c[6] != "-" {
		t.Errorf("a member's SYN-Q cell %q; want -, the group's being on its line", c[6])
	}
}

// TestTopFitsTheScreen: at 80 columns and 24 lines, however long the
// process names and addresses, no line is wider than 80 and the view
// leaves a line free; the process and the address give way first.
func TestTopFitsTheScreen(t *testing.T) {
	var socks []kernel.Socket
	for i := range 40 {
		socks = append(socks, kernel.Socket{
			Addr:  netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1234:5678:9abc:def0:1234:5678"), uint16(60000+i)),
			Inode: uint64(i + 1), Len: 65000 + i, Backlog: 65535, Drops: 4294967295 - uint64(i), Group: 1,
			PID: 4194304, Process: "a-very-long-process-name-indeed",
		})
	}
	r := topReading{at: time.Unix(1000, 0), sockets: socks,
		counters: kernel.Counters{ListenOverflows: 18446744073709551615, ListenDrops: 18446744073709551615, SyncookiesSent: 1 << 40}}
	prev := r
	prev.at = time.Unix(999, 0)
	rows := topRows(&prev, r, topFilter{}, func(n int) int { return n + 1 })
	var b bytes.Buffer
	if err := writeTop(&b, &prev, r, rows, 0, topLayout{width: 80, height: 23}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) > 22 {
		t.Errorf("%d lines in 23 (one kept for the cursor):\n%s", len(lines), b.String())
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("%d columns: %q", n, l)
		}
	}
	if !strings.Contains(b.String(), "… ") || !strings.Contains(b.String(), "more") {
		t.Errorf("no line saying how many more:\n%s", b.String())
	}
	// The drops are SK_MEMINFO's 32 bits; the port stays whole.
	whole := regexp.MustCompile(`^\[2001:…:600[0-9][0-9] .* 42949672[0-9][0-9] `)
	for _, l := range lines[3 : len(lines)-1] {
		if !whole.MatchString(l) {
			t.Errorf("the numbers or the port were cut: %q", l)
		}
	}
}

// TestTopEscapesProcessNames: whatever a user names a process, nothing in
// it reaches the terminal as a control sequence.
func TestTopEscapesProcessNames(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":             "nginx",
		"\x1b[2J\x1b[Hroot": `\x1b[2J\x1b[Hroot`,
		"tab\there\nline":   `tab\x09here\x0aline`,
		"del\x7f":           `del\x7f`,
		"c1\u009b31m":       `c1\u009b31m`,
		"rtl\u202etxt":      `rtl\u202etxt`,
		"bad\xff":           `bad\xff`,
		`back\slash`:        `back\\slash`,
		"δ-ü":               "δ-ü",
	} {
		if got := escapeControl(in); got != want {
			t.Errorf("escapeControl(%q) = %q; want %q", in, got, want)
		}
	}
	r := topReading{at: time.Unix(1000, 0), sockets: []kernel.Socket{{
		Addr: netip.MustParseAddrPort("127.0.0.1:80"), Inode: 1, Backlog: 5, Group: 1, PID: 7, Process: "\x1b]0;owned\x07\x1b[2J",
	}}}
	var b bytes.Buffer
	writeTop(&b, nil, r, topRows(nil, r, topFilter{}, func(n int) int { return n + 1 }), 0, topLayout{})
	for _, c := range b.String() {
		if c < 0x20 && c != '\n' || c == 0x7f {
			t.Fatalf("a control character %#x reached the output: %q", c, b.String())
		}
	}
}
