package cli

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/backlog-dev/backlog/internal/lab"
	"github.com/backlog-dev/backlog/kernel"
)

// child is the built command running as a child process, its output
// watched as it comes.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr *lines
	done           chan struct{}
}

// startChild starts the built command with args; it is killed when the
// test ends if it still runs.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(requireBinary(t), args...), stdout: newLines(), stderr: newLines(), done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// interrupt sends SIGINT and waits for the child to exit; it returns the
// exit status.
func (c *child) interrupt(t *testing.T) int {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%v did not stop on SIGINT; stdout:\n%s\nstderr:\n%s", c.cmd.Args, c.stdout, c.stderr)
	}
	return c.cmd.ProcessState.ExitCode()
}

// outcome matches a summary row: "  unfinished    44   ...".
func outcome(label string, n int) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(label) + ` +` + strconv.Itoa(n) + `\b`)
}

// count reads a summary row's count, or -1.
func count(out, label string) int {
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(label) + ` +(\d+)`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func mustMatch(t *testing.T, what, out string, res ...*regexp.Regexp) {
	t.Helper()
	for _, re := range res {
		if !re.MatchString(out) {
			t.Errorf("%s has no %v:\n%s", what, re, out)
		}
	}
}

// TestLabInterrupt: linux rules without SYN cookies, backlog 5 and 50
// clients with 20 s each; once the queue holds its 6 and the others' SYNs
// are being ignored, SIGINT. The summary says the run was interrupted and
// counts every client that had not connected as unfinished, none as timed
// out (their 20 s were not over), and the command exits 130. (On a busy
// machine a few more than 6 may complete their handshake while the queue
// fills, their final ACK then dropped: they count as connected.)
func TestLabInterrupt(t *testing.T) {
	c := startChild(t, "lab", "--personality", "linux:syncookies=0", "--clients", "50", "--timeout", "20s", "--arrival", "1ms")
	c.stderr.await(t, regexp.MustCompile(`(answered; connected \d+, refused 0, reset 0, timed out 0; queue 6/6)`))
	if code := c.interrupt(t); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	out := c.stdout.String()
	mustMatch(t, "the summary", out, regexp.MustCompile(`^Interrupted after [0-9.]+s`), outcome("timed out", 0), outcome("refused", 0))
	if conn, unf := count(out, "connected"), count(out, "unfinished"); conn < 6 || conn+unf != 50 {
		t.Errorf("connected %d, unfinished %d; want 6 or more connected and the rest of the 50 unfinished:\n%s", conn, unf, out)
	}
	if strings.Contains(out, "no answer within") || strings.Contains(out, "canceled") {
		t.Errorf("the summary tells of timeouts or cancellations:\n%s", out)
	}
}

// TestLabInterruptJSON: the same with --json: an array, interrupted, and
// p50 known for those that connected.
func TestLabInterruptJSON(t *testing.T) {
	c := startChild(t, "lab", "--json", "--personality", "linux:syncookies=0", "--backlog", "1", "--clients", "10", "--timeout", "20s", "--arrival", "1ms")
	c.stderr.await(t, regexp.MustCompile(`(timed out 0; queue 2/2)`))
	if code := c.interrupt(t); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	var rs []lab.Result
	if err := json.Unmarshal([]byte(c.stdout.String()), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("%v: %s", err, c.stdout)
	}
	r := rs[0]
	if !r.Interrupted || r.TimedOut != 0 || r.Connected < 2 || r.Connected+r.Unfinished != 10 || r.ConnectMS.Count != r.Connected {
		t.Errorf("%+v; want interrupted, none timed out, 2 or more connected with their times, the rest unfinished", r)
	}
}

// TestLabOverloadInterrupt: the overload experiment interrupted in its
// second run prints the first run's row and not the second's, says the
// summary is partial, and exits 130.
func TestLabOverloadInterrupt(t *testing.T) {
	c := startChild(t, "lab", "--overload", "--policies", "codel,net.Listen", "--duration", "5s", "--rate", "2x")
	c.stderr.await(t, regexp.MustCompile(`(round 1/1 codel +\d+ clients)`))
	if code := c.interrupt(t); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	out := c.stdout.String()
	mustMatch(t, "the summary", out, regexp.MustCompile(`(?m)^codel +\d+ `), regexp.MustCompile(`(?m)^Interrupted: the summary has the runs that ended\.$`))
	if regexp.MustCompile(`(?m)^net\.Listen `).MatchString(out) {
		t.Errorf("the interrupted run is in the summary:\n%s", out)
	}
	if !strings.Contains(c.stderr.String(), "interrupted") {
		t.Errorf("stderr does not say it was interrupted:\n%s", c.stderr)
	}
}

// TestFillInterrupt: a kernel listener that never accepts, with backlog 1,
// holds 2 of 10 clients given 20 s each; SIGINT ends fill with the others
// unfinished and exit 130.
func TestFillInterrupt(t *testing.T) {
	l, err := (&kernel.ListenConfig{Backlog: 1}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := startChild(t, "fill", "--clients", "10", "--timeout", "20s", "--arrival", "1ms", l.Addr().String())
	c.stderr.await(t, regexp.MustCompile(`(answered; connected [2-9])`))
	if code := c.interrupt(t); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	out := c.stdout.String()
	mustMatch(t, "the summary", out, regexp.MustCompile(`^Interrupted after`), outcome("timed out", 0))
	if conn, unf := count(out, "connected"), count(out, "unfinished"); conn < 2 || conn+unf != 10 {
		t.Errorf("connected %d, unfinished %d; want 2 or more connected and the rest of the 10 unfinished:\n%s", conn, unf, out)
	}
}

// TestProbeInterrupt: the probe of backlog 1 watches its left-out client
// for 60 s; once the child's listener holds its 2, SIGINT. The probe
// prints the checks it made (the stored backlog), the others as skipped,
// no error lines, and exits 130.
func TestProbeInterrupt(t *testing.T) {
	c := startChild(t, "probe", "--personality", "linux", "--backlog", "1", "--watch", "60s")
	pid := c.cmd.Process.Pid
	if !waitFor(20*time.Second, func() bool {
		socks, err := kernel.Sockets()
		if err != nil {
			return false
		}
		for _, s := range socks {
			if s.PID == pid && s.Backlog == 1 && s.Len == 2 {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the probe's listener never held 2; stderr:\n%s", c.stderr)
	}
	if code := c.interrupt(t); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	out := c.stdout.String()
	mustMatch(t, "the probe's text", out, regexp.MustCompile(`^Interrupted`),
		regexp.MustCompile(`(?m)^\s*1  stored backlog +1 +1 +matches$`), regexp.MustCompile(`(?m)^\s*1  can wait +interrupted +2 +skipped$`),
		regexp.MustCompile(`The 1 checks made match linux`))
	if s := c.stderr.String(); s != "" {
		t.Errorf("stderr: %q", s)
	}
}

// TestServeInterrupt stops serve with SIGINT and with SIGTERM: each time
// it prints its summary and exits 130.
func TestServeInterrupt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		c := startChild(t, "serve", "--listen", "127.0.0.1:0", "--interval", "50ms")
		c.stderr.await(t, regexp.MustCompile(`(queue \d+/\d+)`)) // a view line
		c.cmd.Process.Signal(sig)
		<-c.done
		mustMatch(t, "serve's output", c.stdout.String(), regexp.MustCompile(`(?m)^stopped after \d+s: 0 accepted`))
		if code := c.cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("after %v: exit %d; want 130", sig, code)
		}
	}
}

// TestExporterInterrupt: the exporter serves until SIGINT, then says it
// stopped and exits 130.
func TestExporterInterrupt(t *testing.T) {
	c := startChild(t, "exporter", "--listen", "127.0.0.1:0", "--no-holders")
	c.stdout.await(t, regexp.MustCompile(`(metrics on http://\S+)`))
	if code := c.interrupt(t); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	mustMatch(t, "the exporter's output", c.stdout.String(), regexp.MustCompile(`(?m)^backlog exporter: stopped$`))
}

// TestLabOnATerminal runs lab --personality all on an 80x24 terminal
// and types Ctrl-C once every system's queue is full: the live table
// never has a line wider than 79 columns, the summary fits 80, and the
// command exits 130.
func TestLabOnATerminal(t *testing.T) {
	cmd := exec.Command(requireBinary(t), "lab", "--personality", "all", "--timeout", "20s", "--clients", "40")
	cmd.Env = append(os.Environ(), "COLUMNS=")
	master, screen := startOnTerminal(t, cmd, 24, 80)
	// Every system has met a full queue once lwip's row (the last) shows
	// 5 connected of its 40.
	full := regexp.MustCompile(`lwip\s.*\s5/40\s+5\s`)
	if !waitFor(30*time.Second, func() bool { return full.MatchString(escapes.ReplaceAllString(screen(), "")) }) {
		cmd.Process.Kill()
		t.Fatalf("no live table on the terminal:\n%q", screen())
	}
	typeCtrlC(t, cmd, master, screen, 30*time.Second)
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d; want 130", code)
	}
	waitFor(5*time.Second, func() bool { return strings.Contains(screen(), "UNFINISHED") && strings.HasSuffix(screen(), "\r\n") })
	text := escapes.ReplaceAllString(screen(), "")
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r", ""), "\n") {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("a line of %d columns: %q", n, l)
		}
	}
	if !strings.Contains(text, "Interrupted after") || !strings.Contains(text, "UNFINISHED") {
		t.Errorf("no interrupted summary on the terminal:\n%s", text)
	}
}
