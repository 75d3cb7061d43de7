package cli

import (
	"bufio"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// shapeBench is a namespace with a Python listener that never accepts,
// and the built command.
type shapeBench struct {
	ns, bin string
	port    int
}

func newShapeBench(t *testing.T) *shapeBench {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, cmd := range []string{"iptables", "python3"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("needs %s", cmd)
		}
	}
	b := &shapeBench{ns: netnstest.New(t), bin: requireBinary(t)}
	py := exec.Command("ip", "netns", "exec", b.ns, "python3", "-u", "-c",
		"import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(16)\nprint(s.getsockname()[1])\ntime.sleep(120)")
	out, _ := py.StdoutPipe()
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { py.Process.Kill(); py.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("python listener: no port")
	}
	b.port, _ = strconv.Atoi(sc.Text())
	return b
}

// start runs backlog shape in the namespace and waits for its first two
// lines, the socket and the rules; it returns the two.
func (b *shapeBench) start(t *testing.T, args ...string) (*exec.Cmd, *bufio.Scanner, string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", b.ns, b.bin, "shape", "--port", strconv.Itoa(b.port), "--interval", "0"}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "shaping 127.0.0.1:") {
		t.Fatalf("backlog shape: first line %q", sc.Text())
	}
	head := sc.Text()
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "as ") {
		t.Fatalf("backlog shape: second line %q", sc.Text())
	}
	return cmd, sc, head + " " + sc.Text()
}

func (b *shapeBench) dial(t *testing.T, timeout time.Duration) (err error) {
	t.Helper()
	netnstest.In(t, b.ns, func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.port), timeout); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	})
	return err
}

// rules returns the shaper's rules in the namespace.
func (b *shapeBench) rules(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", b.ns, "iptables-save").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v\n%s", err, out)
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "backlog-shape") {
			rules = append(rules, l)
		}
	}
	return rules
}

// TestShapeSIGTERM shapes a Python listener as Windows NT 4.0 Workstation
// with backlog 1: the second client is refused at the SYN. SIGTERM stops
// the command with its summary and status 130, and leaves no rule.
func TestShapeSIGTERM(t *testing.T) {
	b := newShapeBench(t)
	cmd, sc, _ := b.start(t, "--personality", "winnt4-workstation", "--backlog", "1")
	if r := b.rules(t); len(r) != 2 {
		t.Fatalf("rules while shaping: %q; want 2", r)
	}
	if err := b.dial(t, 2*time.Second); err != nil {
		t.Fatalf("first client: %v", err)
	}
	if err := b.dial(t, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("second client: %v; want ECONNREFUSED at the SYN", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit %v; want status 130", err)
	}
	for _, want := range []string{"stopped after", "rules removed", "refused      1"} {
		if !strings.Contains(rest.String(), want) {
			t.Errorf("summary %q lacks %q", rest.String(), want)
		}
	}
	if r := b.rules(t); len(r) != 0 {
		t.Errorf("rules after SIGTERM: %q", r)
	}
}

// TestShapeSIGKILL kills the shaper: its rules are left, but SYNs pass
// them (--queue-bypass), so the port is not black-holed; the next shaper
// removes them.
func TestShapeSIGKILL(t *testing.T) {
	b := newShapeBench(t)
	cmd, _, _ := b.start(t, "--personality", "winnt4-workstation", "--backlog", "1")
	if err := b.dial(t, 2*time.Second); err != nil {
		t.Fatalf("first client: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if r := b.rules(t); len(r) != 2 {
		t.Fatalf("rules after SIGKILL: %q; want the 2 left behind", r)
	}
	// Under the shaper this client would be refused; with it gone, the
	// kernel's own queue (listen(16)) takes it at once.
	if err := b.dial(t, 500*time.Millisecond); err != nil {
		t.Fatalf("client after SIGKILL: %v; the port must not be black-holed", err)
	}
	next, sc, _ := b.start(t, "--personality", "linux")
	if !sc.Scan() || sc.Text() != "removed 2 rules left by shapers that died" {
		t.Errorf("second line %q; want the stale rules reported", sc.Text())
	}
	if r := b.rules(t); len(r) != 2 {
		t.Errorf("rules with the new shaper: %q; want only its own 2", r)
	}
	next.Process.Signal(syscall.SIGTERM)
	for sc.Scan() {
	}
	next.Wait()
	if r := b.rules(t); len(r) != 0 {
		t.Errorf("rules at the end: %q", r)
	}
}
