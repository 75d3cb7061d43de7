package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// helperListenEnv makes the test binary a helper process that listens.
const helperListenEnv = "BACKLOG_TEST_HELPER_LISTEN"

// TestHelperListener is not a test: run with helperListenEnv set to
// "ADDRESS BACKLOG", it listens there, prints "ready", and holds the
// socket until its standard input closes.
func TestHelperListener(t *testing.T) {
	spec := os.Getenv(helperListenEnv)
	if spec == "" {
		t.Skip("a helper process for TestExporterAllNamespaces")
	}
	f := strings.Fields(spec)
	n, _ := strconv.Atoi(f[1])
	ln, err := kernel.Listen("tcp4", f[0], n)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	ln.Close()
	os.Exit(0)
}

// TestExporterAllNamespaces runs the exporter with --all-netns against a
// namespace the test makes, where another process (this test binary as a
// helper) listens with two connections waiting, and where two
// SO_REUSEPORT shards of the test's own share an address. The scrape must
// show the other process's socket under its pid and name, labelled with
// the namespace's name; the two shards apart by inode, their group of two
// and its imbalance as their queues make it; the namespace read; and
// stay promlint-clean. Stopped, the exporter exits 130.
func TestExporterAllNamespaces(t *testing.T) {
	requireLinux(t)
	ns := netnstest.New(t)
	netnstest.Run(t, "ip", "-n", ns, "addr", "add", "198.18.0.1/32", "dev", "lo")

	// The other process, started from a thread in the namespace, which
	// it inherits.
	var (
		child *exec.Cmd
		err   error
	)
	netnstest.In(t, ns, func() {
		child = exec.Command(os.Args[0], "-test.run=^TestHelperListener$")
		child.Env = append(os.Environ(), helperListenEnv+"=198.18.0.1:80 7")
		child.Stderr = os.Stderr
		var stdout io.ReadCloser
		if stdout, err = child.StdoutPipe(); err != nil {
			return
		}
		stdin, perr := child.StdinPipe()
		if perr != nil {
			err = perr
			return
		}
		t.Cleanup(func() { stdin.Close(); child.Wait() })
		if err = child.Start(); err != nil {
			return
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if line != "ready\n" {
			err = fmt.Errorf("helper said %q", line)
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	// Two shards, and clients: two to the other process, five to the
	// shards, spread by the kernel's hash.
	var shards [2]*kernel.Listener
	netnstest.In(t, ns, func() {
		for i := range shards {
			if shards[i], err = (&kernel.ListenConfig{Backlog: 8, ReusePort: true}).Listen(t.Context(), "tcp4", "198.18.0.1:81"); err != nil {
				return
			}
			t.Cleanup(func() { shards[i].Close() })
		}
		for i, addr := range []string{"198.18.0.1:80", "198.18.0.1:80", "198.18.0.1:81", "198.18.0.1:81", "198.18.0.1:81", "198.18.0.1:81", "198.18.0.1:81"} {
			c, derr := net.DialTimeout("tcp4", addr, 2*time.Second)
			if derr != nil {
				err = fmt.Errorf("client %d: %w", i, derr)
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var lens [2]int
	var inodes [2]string
	if !waitFor(5*time.Second, func() bool {
		for i, s := range shards {
			ks, _ := s.KernelStats()
			lens[i], inodes[i] = ks.Len, strconv.FormatUint(ks.Inode, 10)
		}
		return lens[0]+lens[1] == 5
	}) {
		t.Fatalf("the shards hold %v; want 5 in all", lens)
	}

	out, stop := startCommand(t, nil, "exporter", "--listen", "127.0.0.1:0", "--all-netns")
	url := out.await(t, metricsOn)
	all := parseExposition(t, get(t, url))

	if up := find(all, "backlog_exporter_netns_up", map[string]string{"netns": ns}); len(up) != 1 || up[0].value != 1 {
		t.Errorf("netns_up for %s: %v", ns, up)
	}
	self, _ := kernel.CurrentNamespace()
	if up := find(all, "backlog_exporter_netns_up", map[string]string{"netns": self.Label()}); len(up) != 1 || up[0].value != 1 {
		t.Errorf("netns_up for the exporter's own namespace %s: %v", self.Label(), up)
	}
	info := find(all, "backlog_socket_info", map[string]string{"netns": ns, "address": "198.18.0.1:80"})
	if len(info) != 1 || info[0].labels["pid"] != strconv.Itoa(child.Process.Pid) || info[0].labels["process"] != commOf(t, child.Process.Pid) {
		t.Errorf("the other process's socket: %v; want pid %d, process %q", info, child.Process.Pid, commOf(t, child.Process.Pid))
	}
	q := find(all, "backlog_socket_queue_length", map[string]string{"netns": ns, "address": "198.18.0.1:80"})
	b := find(all, "backlog_socket_backlog", map[string]string{"netns": ns, "address": "198.18.0.1:80"})
	if len(q) != 1 || q[0].value != 2 || len(b) != 1 || b[0].value != 7 {
		t.Errorf("the other process's queue %v, backlog %v; want 2 and 7", q, b)
	}

	sel := map[string]string{"netns": ns, "address": "198.18.0.1:81"}
	fulls := map[string]float64{}
	for _, s := range find(all, "backlog_socket_queue_length", sel) {
		fulls[s.labels["inode"]] = s.value / 9
	}
	if len(fulls) != 2 {
		t.Fatalf("shards: %v; want two series, inodes %v", find(all, "backlog_socket_queue_length", sel), inodes)
	}
	for i, in := range inodes {
		if fulls[in] != float64(lens[i])/9 {
			t.Errorf("shard %s: exported %v full; holds %d of 9", in, fulls[in], lens[i])
		}
	}
	if g := find(all, "backlog_address_sockets", sel); len(g) != 1 || g[0].value != 2 {
		t.Errorf("group size %v; want 2", g)
	}
	want := fulls[inodes[0]] - fulls[inodes[1]]
	if want < 0 {
		want = -want
	}
	if im := find(all, "backlog_address_queue_imbalance", sel); len(im) != 1 || fmt.Sprintf("%.6f", im[0].value) != fmt.Sprintf("%.6f", want) {
		t.Errorf("imbalance %v; want %v", im, want)
	}
	if err := stop(); !errors.Is(err, errInterrupted) {
		t.Errorf("stopped exporter returned %v; want the interruption", err)
	}
}

// commOf is a process's name as /proc/PID/comm has it.
func commOf(t *testing.T, pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}
