package conformance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
	"github.com/backlog-dev/backlog/netstack"
)

// The SYN shaper against the reference: the same scenario, with real
// clients of this host's kernel (Python's socket module, so the kernel's
// TCP with its own SYN retransmission), against three listeners in
// namespaces of their own:
//
//   - netstack attached to a TUN device: the exact reference;
//   - kernel.ListenConfig{Personality, Emulation: EmulateAtSYN};
//   - a Python listener, under kernel.Shape.
//
// Each must give the same outcome, client by client, in order: connected,
// refused at the SYN, ignored (a timeout, the SYN retransmitted once),
// connected after a retransmission (the server saw more than one SYN from
// it), or reset at the final ACK. What the server saw, not how long the
// client waited, tells a retransmission, so a slow machine does not change
// the outcome.

// requireShaper skips the test unless it can run: root, ip, iptables and
// python3.
func requireShaper(t *testing.T) {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, cmd := range []string{"iptables", "python3"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("needs %s", cmd)
		}
	}
}

// pyProc is a Python script running in a namespace, driven line by line.
type pyProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startPy(t *testing.T, ns, script string, args ...string) *pyProc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "python3", "-u", filepath.Join("testdata", script)}, args...)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &pyProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// ask writes a line and reads the answer.
func (p *pyProc) ask(t *testing.T, line string) string {
	t.Helper()
	ans, err := p.try(line)
	if err != nil {
		t.Fatal(err)
	}
	return ans
}

// try is ask for a goroutine other than the test's.
func (p *pyProc) try(line string) (string, error) {
	if line != "" {
		if _, err := io.WriteString(p.in, line+"\n"); err != nil {
			return "", err
		}
	}
	if !p.out.Scan() {
		return "", fmt.Errorf("python: no answer to %q: %v", line, p.out.Err())
	}
	return p.out.Text(), nil
}

// synServer is one listener under test.
type synServer struct {
	name  string
	ns    string
	host  string
	port  int
	stats func() backlog.Stats
	// accept makes the application accept one connection.
	accept func(t *testing.T)
	// settled reports whether the server has seen n handshakes complete.
	settled func(n int) bool
}

// synStep is one step of a scenario: dial clients one at a time, accept
// one, or dial a client, accept once its first SYN has been ignored, and
// let its retransmission in.
type synStep struct {
	dials, accepts int
	late           bool
}

type synScenario struct {
	personality string
	backlog     int
	steps       []synStep
}

var synScenarios = []synScenario{
	{"winnt4-workstation", 2, []synStep{{dials: 3}, {accepts: 1}, {dials: 2}}},
	{"linux", 1, []synStep{{dials: 3}, {late: true}}},
	{"bsd4.3", 1, []synStep{{dials: 3}, {late: true}}},
	{"darwin", 2, []synStep{{dials: 3}, {late: true}}},
	{"freebsd", 1, []synStep{{dials: 3}}},
}

// ignoredTimeout gives an ignored client one retransmission (at 1 s) and
// no second one (at 2 s).
const ignoredTimeout = "1.5"

func (sc synScenario) run(t *testing.T, srv synServer, client *pyProc) []string {
	t.Helper()
	var got []string
	completed := 0
	target := net.JoinHostPort(srv.host, strconv.Itoa(srv.port))
	line := func(timeout string) string { return srv.host + " " + strconv.Itoa(srv.port) + " " + timeout }
	// settle waits, after a client that completed its handshake, for the
	// server to see it, and names the outcome: what the client met, and
	// whether the server saw its SYN more than once (the first ignored)
	// since syns.
	settle := func(o string, syns uint64) (outcome string) {
		outcome = o
		if more := srv.stats().SYNs - syns; more > 1 && o != "timeout" {
			outcome += " after a retransmission"
		}
		if o == "connected" || o == "reset" {
			completed++
			// Its final ACK may still be on its way: the next client
			// starts once the server has seen the handshake end.
			if !waitUntil(5*time.Second, func() bool { return srv.settled(completed) }) {
				t.Fatalf("%s: %s: the server never saw handshake %d complete (%+v)", srv.name, target, completed, srv.stats())
			}
		}
		return outcome
	}
	for _, st := range sc.steps {
		for range st.accepts {
			srv.accept(t)
		}
		for range st.dials {
			syns := srv.stats().SYNs
			got = append(got, settle(strings.Fields(client.ask(t, line(ignoredTimeout)))[0], syns))
		}
		if st.late {
			before := srv.stats()
			type answer struct {
				s   string
				err error
			}
			res := make(chan answer, 1)
			go func() {
				s, err := client.try(line("5"))
				res <- answer{s, err}
			}()
			if !waitUntil(3*time.Second, func() bool { return srv.stats().Ignored > before.Ignored }) {
				<-res
				t.Fatalf("%s: the late client's SYN was never ignored", srv.name)
			}
			srv.accept(t)
			a := <-res
			if a.err != nil {
				t.Fatal(a.err)
			}
			got = append(got, settle(strings.Fields(a.s)[0], before.SYNs))
		}
	}
	return got
}

func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// tunServer is the reference: netstack on a TUN device in ns, at
// 198.18.0.2, with the kernel's side at 198.18.0.1.
func tunServer(t *testing.T, ns string, p backlog.Personality, n int) synServer {
	var (
		h   *netstack.Host
		l   *netstack.Listener
		err error
	)
	netnstest.In(t, ns, func() {
		h, err = netstack.AttachTUN(netstack.TUNConfig{
			Name: "tun0", Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
			KernelPrefix: netip.MustParsePrefix("198.18.0.1/15"),
		})
	})
	if err != nil {
		t.Fatalf("AttachTUN: %v", err)
	}
	tunAttachments.Add(1)
	t.Cleanup(func() { h.Close() })
	l, err = h.Listen(context.Background(), "tcp", "198.18.0.2:80", &netstack.ListenConfig{Personality: p, Backlog: backlog.Exactly(n)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	// The device and its route up, the host reading it: a probe on
	// another port gets through before the scenario starts.
	probe, err := h.Listen(context.Background(), "tcp", "198.18.0.2:9", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if !waitUntil(10*time.Second, func() bool {
		var c net.Conn
		netnstest.In(t, ns, func() { c, err = net.DialTimeout("tcp", "198.18.0.2:9", 500*time.Millisecond) })
		if c != nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("netstack over TUN never answered a probe: %v", err)
	}
	return synServer{
		name: "netstack over TUN", ns: ns, host: "198.18.0.2", port: 80,
		stats:   l.Stats,
		accept:  func(t *testing.T) { acceptOne(t, l) },
		settled: func(n int) bool { s := l.Stats(); return int(s.Queued+s.Reset) >= n },
	}
}

func acceptOne(t *testing.T, l interface {
	Accept() (net.Conn, error)
	SetDeadline(time.Time) error
}) {
	t.Helper()
	l.SetDeadline(time.Now().Add(2 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	l.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
}

// kernelServer is kernel.ListenConfig with the personality, at the SYN,
// on loopback in ns.
func kernelSYNServer(t *testing.T, ns string, p backlog.Personality, n int) synServer {
	var (
		l   *kernel.Listener
		err error
	)
	netnstest.In(t, ns, func() {
		lc := kernel.ListenConfig{Personality: p, Backlog: backlog.Exactly(n), Emulation: kernel.EmulateAtSYN}
		l, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	})
	if err != nil {
		t.Fatalf("kernel listener at the SYN: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	if m, why := l.Emulation(); m != kernel.EmulateAtSYN {
		t.Fatalf("Emulation() = %v (%s); want syn", m, why)
	}
	return synServer{
		name: "kernel at the SYN", ns: ns, host: "127.0.0.1", port: l.Addr().(*net.TCPAddr).Port,
		stats:   l.Stats,
		accept:  func(t *testing.T) { acceptOne(t, l) },
		settled: func(n int) bool { s := l.Stats(); return int(s.Queued+s.Reset) >= n },
	}
}

// pythonServer is a Python listener in ns, under kernel.Shape.
func pythonServer(t *testing.T, ns string, p backlog.Personality, n int) synServer {
	py := startPy(t, ns, "server.py", "64")
	port, err := strconv.Atoi(py.ask(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	var sh *kernel.Shaper
	netnstest.In(t, ns, func() {
		sh, err = kernel.Shape(context.Background(), kernel.ShapeConfig{
			Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), Personality: p, Backlog: backlog.Exactly(n),
		})
	})
	if err != nil {
		t.Fatalf("Shape: %v", err)
	}
	t.Cleanup(func() { sh.Close() })
	var accepted atomic.Int32
	return synServer{
		name: "python under Shape", ns: ns, host: "127.0.0.1", port: port,
		stats: func() backlog.Stats { return sh.Stats().Stats },
		accept: func(t *testing.T) {
			py.ask(t, "accept")
			accepted.Add(1)
		},
		settled: func(n int) bool {
			var socks []kernel.Socket
			netnstest.In(t, ns, func() { socks, err = kernel.Sockets() })
			for _, s := range socks {
				if int(s.Addr.Port()) == port {
					return s.Len+int(accepted.Load()) >= n
				}
			}
			return false
		},
	}
}

func TestShaperMatchesTUN(t *testing.T) {
	requireShaper(t)
	for _, sc := range synScenarios {
		t.Run(sc.personality, func(t *testing.T) {
			p := backlog.MustLookup(sc.personality)
			var want []string
			for i, open := range []func(*testing.T, string, backlog.Personality, int) synServer{tunServer, kernelSYNServer, pythonServer} {
				ns := netnstest.New(t)
				srv := open(t, ns, p, sc.backlog)
				client := startPy(t, ns, "client.py")
				got := sc.run(t, srv, client)
				t.Logf("%s: %q", srv.name, got)
				if i == 0 {
					want = got
					continue
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s: %q (%v); netstack over TUN: %q", srv.name, got, srv.stats(), want)
				}
			}
		})
	}
}
