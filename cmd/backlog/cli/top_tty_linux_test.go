package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal of the given size and returns its
// master and slave ends.
func openPTY(t *testing.T, rows, cols uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// startOnTerminal starts cmd with a pseudo-terminal of the given size as
// its controlling terminal, and returns the terminal's master end and what
// the command has written to it so far.
func startOnTerminal(t *testing.T, cmd *exec.Cmd, rows, cols uint16) (master *os.File, screen func() string) {
	t.Helper()
	master, slave := openPTY(t, rows, cols)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var (
		mu  sync.Mutex
		out bytes.Buffer
	)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return master, func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
}

// typeCtrlC types Ctrl-C on the terminal, whose line discipline sends
// SIGINT, and waits up to timeout for the command to end; it returns what
// cmd.Wait returned.
func typeCtrlC(t *testing.T, cmd *exec.Cmd, master *os.File, screen func() string, timeout time.Duration) error {
	t.Helper()
	master.Write([]byte{3})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		t.Fatalf("%s did not stop on Ctrl-C:\n%q", cmd.Args[1], screen())
		return nil
	}
}

// escapes matches the terminal sequences top writes.
var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// TestTopInterruptedOnATerminal runs the built command on an 80x24
// pseudo-terminal, as its controlling terminal, and types Ctrl-C while
// it waits between two views: the terminal's line discipline sends
// SIGINT. Every line of the view fits 80 columns and the view 24 lines;
// top exits with status 130 and leaves the cursor shown at the start of
// the line after the echoed ^C, not in the middle of one.
func TestTopInterruptedOnATerminal(t *testing.T) {
	requireLinux(t)
	queueListener(t, 3, 1, false)
	bin := requireBinary(t)
	cmd := exec.Command(bin, "top", "--interval", "30s")
	master, screen := startOnTerminal(t, cmd, 24, 80)
	// The first view is drawn once it ends with "clear to the end".
	if !waitFor(20*time.Second, func() bool { return strings.Contains(screen(), "\x1b[J") }) {
		cmd.Process.Kill()
		t.Fatalf("no view on the terminal:\n%q", screen())
	}
	err := typeCtrlC(t, cmd, master, screen, 20*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("exit %v; want status 130", err)
	}
	waitFor(2*time.Second, func() bool { return strings.HasSuffix(screen(), "\r\n") })
	s := screen()
	view := s[strings.LastIndex(s, "\x1b[H"):strings.LastIndex(s, "\x1b[J")]
	lines := strings.Split(strings.TrimSuffix(escapes.ReplaceAllString(view, ""), "\r\n"), "\r\n")
	if len(lines) > 23 {
		t.Errorf("the view has %d lines on a 24-line terminal, none left for the cursor", len(lines))
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("a line of %d columns: %q", n, l)
		}
	}
	if !strings.Contains(view, "SYN-Q") {
		t.Errorf("no table in the view: %q", view)
	}
	// The view ends at the start of a line; the terminal echoes ^C there;
	// top shows the cursor again and ends that line.
	if tail := s[strings.LastIndex(s, "\x1b[J"):]; tail != "\x1b[J^C\x1b[?25h\r\n" {
		t.Errorf("the terminal after Ctrl-C ends with %q; want the view, ^C, the cursor shown, and a new line", tail)
	}
}
